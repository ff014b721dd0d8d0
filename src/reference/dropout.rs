//! Inverted dropout with a recomputable mask: element i is kept iff `uniform01(seed, i) ≥ p`, and
//! kept values are scaled by `1/(1−p)` so evaluation needs no rescaling. The mask is never
//! stored: backward draws it again from the same seed, as the WGSL kernel does.
//!
//! The model uses `stream_seed(run_seed, step, layer)` as the seed (see `model::reference`).
use crate::shape::uniform01;

/// Whether element `i` survives, and the factor kept elements are multiplied by.
fn mask(p: f32, seed: u32, i: usize) -> f32 {
    // p ≥ 1 drops everything; guarding it avoids 0·∞ = NaN from the 1/(1−p) scale.
    if p >= 1.0 || uniform01(seed, i as u32) < p {
        0.0
    } else {
        1.0 / (1.0 - p)
    }
}

/// `y[i] = x[i]·mask(i)`; p = 0 is the identity. x: any shape (flat index i) → y: the same.
pub fn dropout_forward(p: f32, seed: u32, x: &[f32]) -> Vec<f32> {
    dropout_forward_at(p, seed, 0, x)
}

/// [`dropout_forward`] of a slice that starts at element `offset` of the whole mask:
/// `y[i] = x[i]·mask(offset + i)` (a data-parallel replica's rows of the global batch).
pub fn dropout_forward_at(p: f32, seed: u32, offset: usize, x: &[f32]) -> Vec<f32> {
    if p == 0.0 {
        return x.to_vec();
    }
    x.iter()
        .enumerate()
        .map(|(i, &v)| v * mask(p, seed, offset + i))
        .collect()
}

/// `dx[i] = dy[i]·mask(i)` with the forward's p and seed. dy: any shape → dx: the same.
pub fn dropout_backward(p: f32, seed: u32, dy: &[f32]) -> Vec<f32> {
    dropout_forward(p, seed, dy)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reference::gradcheck::{grad_check, weighted_sum};
    use crate::reference::random_tensor;

    #[test]
    fn gradient_and_mask_statistics() {
        let x: Vec<f32> = random_tensor(1, 10_000, 1.0)
            .into_iter()
            .map(|v| v + 3.0)
            .collect();
        let y = dropout_forward(0.5, 42, &x);
        let kept = y.iter().filter(|v| **v != 0.0).count();
        assert!((kept as f64 / 10_000.0 - 0.5).abs() < 0.02, "kept {kept}");
        for (a, b) in x.iter().zip(&y) {
            assert!(*b == 0.0 || (*b - 2.0 * a).abs() < 1e-6);
        }
        // Mean is preserved in expectation.
        let (mx, my) = (x.iter().sum::<f32>() / 1e4, y.iter().sum::<f32>() / 1e4);
        assert!((mx - my).abs() < 0.1, "{mx} vs {my}");
        assert_ne!(
            y,
            dropout_forward(0.5, 43, &x),
            "different seeds must give different masks"
        );
        assert_eq!(dropout_forward(0.0, 42, &x), x);

        let small = &x[..50];
        let r = random_tensor(2, 50, 1.0);
        let dx = dropout_backward(0.3, 7, &r);
        grad_check("dropout.dx", small, &dx, 0.25, 1e-5, 1e-5, |p| {
            weighted_sum(&dropout_forward(0.3, 7, p), &r)
        });
    }
}
