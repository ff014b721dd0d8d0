//! Random training steps and weight comparisons shared by the data-parallel and hybrid
//! tests: both check a split run against one device at the global batch.
use alexnet::backend::{Dropout, SgdHyper};
use alexnet::engine::augment::{random_draws, AugmentSettings, Pca};
use alexnet::model::{ModelConfig, Params};
use alexnet::shape::AugmentDraw;

/// The stored side for a model input of `crop`: a few pixels of room for random crops.
pub fn stored(crop: usize) -> usize {
    crop + 3
}

/// A model small enough for three steps on lavapipe in seconds, with every layer kind.
pub fn tiny() -> ModelConfig {
    let mut c = ModelConfig::small(67, 1, 10);
    c.widths = [8, 16, 24, 24, 16, 64, 64];
    c
}

/// A reproducible stream of awkward values (never constant, never all zero).
pub struct Lcg(pub u64);
impl Lcg {
    /// The next 31 bits.
    pub fn next(&mut self) -> u32 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 33) as u32
    }
}

/// Largest |a − b| of each tensor over its largest |b|; panics naming the first tensor past
/// `tol`.
pub fn assert_same_weights(got: &Params, want: &Params, tol: f32, what: &str) {
    for (g, w) in got.tensors.iter().zip(&want.tensors) {
        assert_eq!(g.spec.name, w.spec.name);
        let scale = w.data.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-12);
        let diff = g
            .data
            .iter()
            .zip(&w.data)
            .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
        assert!(
            diff / scale <= tol,
            "{what}: {} differs by {diff:e} (relative {:e} > {tol:e})",
            g.spec.name,
            diff / scale
        );
    }
}

/// One step of the global batch: images, labels, augmentation draws and dropout.
pub type Step = (Vec<u8>, Vec<i32>, Vec<AugmentDraw>, Dropout);

/// The SGD settings of every step.
pub const HYPER: SgdHyper = SgdHyper {
    lr: 0.02,
    momentum: 0.9,
    weight_decay: 5e-4,
};

/// A mean image and `steps` steps of `global` random images with random crops, flips,
/// lighting and dropout, for a model of input `crop` and `classes` classes.
pub fn steps_of(global: usize, steps: u32, crop: usize, classes: u32) -> (Vec<f32>, Vec<Step>) {
    let mut rng = Lcg(42);
    let stored = stored(crop);
    let mean: Vec<f32> = (0..stored * stored * 3)
        .map(|_| 100.0 + (rng.next() % 50) as f32)
        .collect();
    let pca = Pca {
        eigenvalues: [900.0, 80.0, 9.0],
        eigenvectors: [[0.58, 0.58, 0.57], [-0.7, 0.0, 0.71], [0.41, -0.82, 0.41]],
    };
    let settings = AugmentSettings {
        random_crop: true,
        flip: true,
        lighting_std: 0.1,
    };
    let steps = (0..steps)
        .map(|k| {
            let images: Vec<u8> = (0..global * stored * stored * 3)
                .map(|_| rng.next() as u8)
                .collect();
            let labels: Vec<i32> = (0..global).map(|_| (rng.next() % classes) as i32).collect();
            let draws = random_draws(100 + k, global, stored, crop, &settings, &pca);
            let dropout = Dropout {
                p: 0.5,
                seeds: [rng.next(), rng.next()],
            };
            (images, labels, draws, dropout)
        })
        .collect();
    (mean, steps)
}
