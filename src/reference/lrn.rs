//! Local response normalisation across channels, the paper's formula (section 3.3):
//! `b[c] = a[c] / (k + α · Σ_{c' ∈ window(c)} a[c']²)^β`, window of `size` channels centred on c
//! and clipped at the first and last channel; α is NOT divided by the size (PyTorch's
//! `LocalResponseNorm` divides it, so its α must be `size · α` to match).
//!
//! Dims: N batch, C channels, H,W spatial. Computed in f64 from f32 storage.
use crate::shape::LrnParams;

/// Channel window of `c`: `[max(0, c − size/2), min(C−1, c + size/2)]`, symmetric, so
/// `j ∈ window(c)` exactly when `c ∈ window(j)` (the backward relies on it).
fn window(p: &LrnParams, channels: usize, c: usize) -> std::ops::RangeInclusive<usize> {
    let half = p.size / 2;
    c.saturating_sub(half)..=(c + half).min(channels - 1)
}

/// The denominators' base `k + α·Σ a²` for every element. x `[N,C,H,W]` → scale `[N,C,H,W]` (f64).
fn scales(p: &LrnParams, n: usize, c: usize, h: usize, w: usize, x: &[f32]) -> Vec<f64> {
    assert_eq!(
        x.len(),
        n * c * h * w,
        "lrn: `x` has {} elements, N·C·H·W = {}",
        x.len(),
        n * c * h * w
    );
    let plane = h * w;
    let mut s = vec![0.0f64; x.len()];
    for b in 0..n {
        for ch in 0..c {
            for i in 0..plane {
                let sum: f64 = window(p, c, ch)
                    .map(|j| (x[(b * c + j) * plane + i] as f64).powi(2))
                    .sum();
                s[(b * c + ch) * plane + i] = p.k as f64 + p.alpha as f64 * sum;
            }
        }
    }
    s
}

/// `y = x / scale^β`. x `[N,C,H,W]` → y `[N,C,H,W]`.
pub fn lrn_forward(p: &LrnParams, n: usize, c: usize, h: usize, w: usize, x: &[f32]) -> Vec<f32> {
    let s = scales(p, n, c, h, w, x);
    x.iter()
        .zip(&s)
        .map(|(&v, &sc)| (v as f64 * sc.powf(-p.beta as f64)) as f32)
        .collect()
}

/// `dx[j] = dy[j]·scale[j]^−β − 2αβ·x[j]·Σ_{c ∈ window(j)} dy[c]·x[c]·scale[c]^(−β−1)`, from the
/// forward INPUT x (the scales are recomputed).
///
/// x `[N,C,H,W]`, dy `[N,C,H,W]` → dx `[N,C,H,W]`.
pub fn lrn_backward(
    p: &LrnParams,
    n: usize,
    c: usize,
    h: usize,
    w: usize,
    x: &[f32],
    dy: &[f32],
) -> Vec<f32> {
    assert_eq!(
        dy.len(),
        x.len(),
        "lrn_backward: `dy` and `x` differ in length"
    );
    let s = scales(p, n, c, h, w, x);
    let (alpha, beta) = (p.alpha as f64, p.beta as f64);
    let plane = h * w;
    // t[c] = dy[c]·x[c]·scale[c]^(−β−1): what each output sends back through its denominator.
    let t: Vec<f64> = (0..x.len())
        .map(|i| dy[i] as f64 * x[i] as f64 * s[i].powf(-beta - 1.0))
        .collect();
    let mut dx = vec![0.0f32; x.len()];
    for b in 0..n {
        for j in 0..c {
            for i in 0..plane {
                let at = (b * c + j) * plane + i;
                let cross: f64 = window(p, c, j).map(|ch| t[(b * c + ch) * plane + i]).sum();
                let direct = dy[at] as f64 * s[at].powf(-beta);
                dx[at] = (direct - 2.0 * alpha * beta * x[at] as f64 * cross) as f32;
            }
        }
    }
    dx
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reference::gradcheck::{grad_check, weighted_sum};
    use crate::reference::random_tensor;

    #[test]
    fn gradients_with_a_strong_alpha() {
        // The paper's α = 1e-4 makes the cross term tiny; a large α tests that term for real.
        let p = LrnParams {
            size: 5,
            k: 2.0,
            alpha: 0.5,
            beta: 0.75,
        };
        let (n, c, h, w) = (2, 7, 3, 2);
        let x = random_tensor(1, n * c * h * w, 1.5);
        let r = random_tensor(2, x.len(), 1.0);
        let dx = lrn_backward(&p, n, c, h, w, &x, &r);
        grad_check("lrn.dx", &x, &dx, 1e-2, 2e-3, 2e-3, |xp| {
            weighted_sum(&lrn_forward(&p, n, c, h, w, xp), &r)
        });
    }

    #[test]
    fn gradients_with_the_paper_constants() {
        let p = LrnParams::default();
        let (n, c, h, w) = (1, 6, 2, 2);
        let x = random_tensor(3, n * c * h * w, 20.0);
        let r = random_tensor(4, x.len(), 1.0);
        let dx = lrn_backward(&p, n, c, h, w, &x, &r);
        grad_check("lrn.dx", &x, &dx, 5e-2, 2e-3, 2e-3, |xp| {
            weighted_sum(&lrn_forward(&p, n, c, h, w, xp), &r)
        });
    }

    #[test]
    fn forward_by_hand_at_the_channel_edge() {
        // Channel 0 of 3 with size 5: the window is clipped to channels 0..=2.
        let p = LrnParams {
            size: 5,
            k: 1.0,
            alpha: 0.1,
            beta: 0.5,
        };
        let y = lrn_forward(&p, 1, 3, 1, 1, &[1.0, 2.0, 3.0]);
        let want = 1.0 / (1.0f64 + 0.1 * 14.0).sqrt();
        assert!((y[0] as f64 - want).abs() < 1e-6, "{} vs {want}", y[0]);
        // Size 3: channel 0 sees 0..=1 only.
        let p3 = LrnParams { size: 3, ..p };
        let y3 = lrn_forward(&p3, 1, 3, 1, 1, &[1.0, 2.0, 3.0]);
        assert!((y3[0] as f64 - 1.0 / 1.5f64.sqrt()).abs() < 1e-6);
    }
}
