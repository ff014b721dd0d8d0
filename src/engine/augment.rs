//! Host-side augmentation draws: which crop, mirror and lighting shift each image gets. The
//! augment kernel applies them on the GPU; drawing them here keeps them reproducible from
//! (seed, step) and lets the CPU reference replay any batch.
use crate::backend::Dropout;
use crate::model::dropout_seed;
use crate::shape::{normal, stream_seed, uniform01, AugmentDraw};

/// Stream id of the augmentation draws (dropout uses 6 and 7, init its own namespace).
pub const AUGMENT_STREAM: u32 = 1;

/// Where training step s's randomness comes from: the trainer and the benches build each
/// step's augmentation draws and dropout masks through this one place, so a bench times the
/// same work a run does and a run can be replayed step by step.
#[derive(Clone, Copy, Debug)]
pub struct StepRandomness<'a> {
    /// The run's seed.
    pub run_seed: u64,
    /// Images per step.
    pub batch: usize,
    /// Side of the stored images.
    pub stored: usize,
    /// Side of the model's input (the crop).
    pub crop: usize,
    /// Dropout probability of fc6's and fc7's outputs.
    pub dropout: f32,
    /// Crop, mirror and lighting settings.
    pub settings: &'a AugmentSettings,
    /// The training pixels' colour statistics.
    pub pca: &'a Pca,
}

impl StepRandomness<'_> {
    /// The augmentation draws of step `step`: [`random_draws`] with the seed
    /// `stream_seed(run_seed, step, AUGMENT_STREAM)`.
    pub fn draws(&self, step: u64) -> Vec<AugmentDraw> {
        let seed = stream_seed(self.run_seed, step, AUGMENT_STREAM);
        random_draws(
            seed,
            self.batch,
            self.stored,
            self.crop,
            self.settings,
            self.pca,
        )
    }

    /// The dropout of step `step`: fc6's and fc7's masks from `dropout_seed(run_seed, step,
    /// 6 | 7)`.
    pub fn dropout(&self, step: u64) -> Dropout {
        Dropout {
            p: self.dropout,
            seeds: [
                dropout_seed(self.run_seed, step, 6),
                dropout_seed(self.run_seed, step, 7),
            ],
        }
    }
}

/// The paper's PCA colour statistics of the training pixels (0..255 units).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Pca {
    /// Eigenvalues of the RGB covariance, descending.
    pub eigenvalues: [f32; 3],
    /// Row i is unit eigenvector i as [r, g, b].
    pub eigenvectors: [[f32; 3]; 3],
}

/// How training images are augmented.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AugmentSettings {
    /// Random crops (else the centre crop).
    pub random_crop: bool,
    /// Mirror with probability ½.
    pub flip: bool,
    /// Standard deviation of the lighting coefficients αᵢ (the paper: 0.1; 0 turns it off).
    pub lighting_std: f32,
}

/// The offset of every centre crop (docs/network.md "Evaluation views"): `floor((larger − smaller) / 2)`.
pub fn centre_offset(stored: usize, crop: usize) -> u32 {
    ((stored - crop) / 2) as u32
}

/// The evaluation view for `n` images: centre crop, no mirror, no lighting.
pub fn centre_draws(n: usize, stored: usize, crop: usize) -> Vec<AugmentDraw> {
    let o = centre_offset(stored, crop);
    vec![
        AugmentDraw {
            x0: o,
            y0: o,
            ..Default::default()
        };
        n
    ]
}

/// The paper's ten views of one image, in order: centre, top-left, top-right, bottom-left,
/// bottom-right, then the same five mirrored.
pub fn ten_crop_draws(stored: usize, crop: usize) -> [AugmentDraw; 10] {
    let (c, m) = (centre_offset(stored, crop), (stored - crop) as u32);
    let corners = [(c, c), (0, 0), (m, 0), (0, m), (m, m)];
    std::array::from_fn(|v| {
        let (x0, y0) = corners[v % 5];
        AugmentDraw {
            x0,
            y0,
            flip: (v >= 5) as u32,
            ..Default::default()
        }
    })
}

/// Random draws for a training batch of `n` images from the stream `seed`.
///
/// Lighting follows the paper, `Σ αᵢ λᵢ pᵢ` with αᵢ ~ N(0, σ²), with λᵢ taken on the 0..1 pixel
/// scale (λ/255²) and the result returned in 0..255 units. The formula is not scale-free:
/// on 0..255 eigenvalues (thousands) it would shift colours by hundreds of levels; on the 0..1
/// scale it moves them by a few levels, the paper's intent and the convention of later
/// re-implementations.
pub fn random_draws(
    seed: u32,
    n: usize,
    stored: usize,
    crop: usize,
    settings: &AugmentSettings,
    pca: &Pca,
) -> Vec<AugmentDraw> {
    let span = (stored - crop + 1) as f32;
    let centre = centre_offset(stored, crop);
    (0..n as u32)
        .map(|b| {
            let pick = |k: u32| ((uniform01(seed, b * 4 + k) * span) as u32).min(span as u32 - 1);
            let (x0, y0) = if settings.random_crop {
                (pick(0), pick(1))
            } else {
                (centre, centre)
            };
            let flip = (settings.flip && uniform01(seed, b * 4 + 2) < 0.5) as u32;
            let mut shift = [0f32; 4];
            if settings.lighting_std > 0.0 {
                let lighting_seed = seed ^ 0x5bd1_e995;
                for i in 0..3 {
                    let alpha = settings.lighting_std * normal(lighting_seed, b * 3 + i as u32);
                    let scaled = alpha * pca.eigenvalues[i] / 255.0;
                    for (c, s) in shift.iter_mut().take(3).enumerate() {
                        *s += scaled * pca.eigenvectors[i][c];
                    }
                }
            }
            AugmentDraw {
                x0,
                y0,
                flip,
                _pad: 0,
                shift,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const PCA: Pca = Pca {
        eigenvalues: [4000.0, 300.0, 50.0],
        eigenvectors: [[0.58, 0.58, 0.57], [-0.7, 0.0, 0.71], [0.41, -0.82, 0.41]],
    };

    #[test]
    fn random_draws_cover_every_offset_and_mirror_half() {
        let s = AugmentSettings {
            random_crop: true,
            flip: true,
            lighting_std: 0.1,
        };
        let d = random_draws(11, 4000, 40, 33, &s, &PCA);
        let mut seen = [false; 8];
        for v in &d {
            assert!(v.x0 <= 7 && v.y0 <= 7);
            seen[v.x0 as usize] = true;
        }
        assert!(
            seen.iter().all(|s| *s),
            "some crop offsets never drawn: {seen:?}"
        );
        let flips = d.iter().filter(|v| v.flip == 1).count();
        assert!((1800..2200).contains(&flips), "{flips} mirrored of 4000");
        // The shift along the first eigenvector has std σ·λ₁/255.
        let proj: Vec<f32> = d
            .iter()
            .map(|v| (0..3).map(|c| v.shift[c] * PCA.eigenvectors[0][c]).sum())
            .collect();
        let var = proj.iter().map(|p| p * p).sum::<f32>() / proj.len() as f32;
        let want = 0.1 * 4000.0 / 255.0;
        assert!(
            (var.sqrt() / want - 1.0).abs() < 0.1,
            "std {} want {want}",
            var.sqrt()
        );
        assert_ne!(random_draws(12, 4, 40, 33, &s, &PCA), d[..4].to_vec());
    }

    #[test]
    fn no_augment_is_the_centre_view() {
        let s = AugmentSettings {
            random_crop: false,
            flip: false,
            lighting_std: 0.0,
        };
        assert_eq!(
            random_draws(3, 5, 256, 227, &s, &PCA),
            centre_draws(5, 256, 227)
        );
        assert_eq!(centre_offset(256, 227), 14);
        let ten = ten_crop_draws(256, 227);
        assert_eq!((ten[4].x0, ten[4].y0, ten[9].flip), (29, 29, 1));
    }
}
