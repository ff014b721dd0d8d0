//! The input stage on the host: stored u8 images `[N,S,S,3]` (H,W,C) to the network's input
//! `[N,3,I,I]`: crop at the draw's corner, optional mirror, PCA lighting shift, mean image
//! subtracted, times the model's input scale. The arithmetic is `reference::augment_forward`'s,
//! in its order, so both agree to the bit.
use super::CpuError;
use crate::shape::{AugmentDraw, AugmentShape};
use rayon::prelude::*;

/// A batch of stored images and what turns them into network inputs, sized once.
#[derive(Clone, Debug)]
pub struct HostInput {
    shape: AugmentShape,
    images: Vec<u8>,
    mean: Vec<f32>,
    scale: f32,
}

impl HostInput {
    /// A stage for batches of `n` stored `stored`² images cropped to `crop`², with the training
    /// set's mean image `[S,S,3]` (0..255) and the model's input scale.
    pub fn new(n: usize, stored: usize, crop: usize, mean: &[f32], scale: f32) -> HostInput {
        HostInput {
            shape: AugmentShape { n, stored, crop },
            images: vec![0; n * stored * stored * 3],
            mean: mean.to_vec(),
            scale,
        }
    }

    /// The geometry of the stage.
    pub fn shape(&self) -> AugmentShape {
        self.shape
    }

    /// Keeps a batch `[N,S,S,3]` for the next [`HostInput::augment`]; an error when it is
    /// not exactly N images (saying how many bytes were expected).
    pub fn set_images(&mut self, images: &[u8]) -> Result<(), CpuError> {
        if images.len() != self.images.len()
            || self.mean.len() != self.images.len() / self.shape.n.max(1)
        {
            return Err(CpuError::Input {
                what: "images",
                reason: format!(
                "{} image bytes and a mean image of {} values for a batch of {} images of {}²×3 (want {} and {})",
                images.len(),
                self.mean.len(),
                self.shape.n,
                self.shape.stored,
                self.images.len(),
                self.shape.stored * self.shape.stored * 3
            )});
        }
        self.images.copy_from_slice(images);
        Ok(())
    }

    /// Writes the network input `[N,3,I,I]` for `draws` `[N]` into `out`.
    pub fn augment(&self, draws: &[AugmentDraw], out: &mut [f32]) -> Result<(), CpuError> {
        let AugmentShape { n, stored, crop } = self.shape;
        let bad_draw = draws
            .iter()
            .any(|d| d.x0 as usize + crop > stored || d.y0 as usize + crop > stored);
        if draws.len() != n || out.len() != n * 3 * crop * crop || bad_draw {
            return Err(CpuError::Input {
                what: "augmentation draws",
                reason: format!(
                    "{} draws (crops inside the {stored}² image: {}) and an input of {} values for a batch of {n} crops of {crop}²",
                    draws.len(),
                    !bad_draw,
                    out.len()
                ),
            });
        }
        let px = stored * stored * 3;
        out.par_chunks_mut(3 * crop * crop)
            .zip(draws.par_iter())
            .enumerate()
            .for_each(|(b, (out, d))| {
                let img = &self.images[b * px..][..px];
                for c in 0..3 {
                    for y in 0..crop {
                        let row = &mut out[(c * crop + y) * crop..][..crop];
                        let base = (d.y0 as usize + y) * stored + d.x0 as usize;
                        for (x, o) in row.iter_mut().enumerate() {
                            let xs = if d.flip != 0 { crop - 1 - x } else { x };
                            let src = (base + xs) * 3 + c;
                            *o = (img[src] as f32 + d.shift[c] - self.mean[src]) * self.scale;
                        }
                    }
                }
            });
        Ok(())
    }
}
