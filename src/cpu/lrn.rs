//! The paper's cross-channel LRN (`reference::lrn` has the formula), one image per task.
//! Forward keeps the denominator's base `scale = k + α·Σ x²` for backward, as the GPU does.
//!
//! Dims: N batch, C channels, P = H·W positions; every tensor `[N,C,H,W]`.
use crate::shape::LrnParams;
use rayon::prelude::*;

/// `scale^−β`, with the paper's β = 0.75 as square roots: `powf` would cost more than the
/// rest of the layer (measured on the quickstart's conv1 and conv2 on the 2-core box).
#[inline]
fn pow_neg_beta(scale: f32, beta: f32) -> f32 {
    if beta == 0.75 {
        let r = scale.sqrt();
        1.0 / (r * r.sqrt())
    } else {
        scale.powf(-beta)
    }
}

/// The channel window of `c`, `max(0, c − size/2) ..= min(C − 1, c + size/2)`.
fn window(p: &LrnParams, channels: usize, c: usize) -> std::ops::RangeInclusive<usize> {
    let half = p.size / 2;
    c.saturating_sub(half)..=(c + half).min(channels - 1)
}

/// `y = x / scale^β`, `scale = k + α·Σ_window x²`. x → y, scale; all `[N,C,H,W]` with
/// `dims = [N,C,H,W]`.
pub fn lrn_forward(p: &LrnParams, dims: [usize; 4], x: &[f32], y: &mut [f32], scale: &mut [f32]) {
    let [_, c, h, w] = dims;
    let plane = h * w;
    let img = c * plane;
    y.par_chunks_mut(img)
        .zip(scale.par_chunks_mut(img))
        .zip(x.par_chunks(img))
        .for_each(|((y, s), x)| {
            for ch in 0..c {
                let s = &mut s[ch * plane..][..plane];
                s.fill(0.0);
                for j in window(p, c, ch) {
                    for (acc, &v) in s.iter_mut().zip(&x[j * plane..][..plane]) {
                        *acc += v * v;
                    }
                }
                let yc = &mut y[ch * plane..][..plane];
                for ((yv, sv), &xv) in yc.iter_mut().zip(s.iter_mut()).zip(&x[ch * plane..]) {
                    *sv = p.k + p.alpha * *sv;
                    *yv = xv * pow_neg_beta(*sv, p.beta);
                }
            }
        });
}

/// `dx[j] = dy[j]·scale[j]^−β − 2αβ·x[j]·Σ_{c ∈ window(j)} dy[c]·y[c]/scale[c]`, from the
/// forward's x, y and scale (`y/scale = x·scale^(−β−1)`). `dy` is used as scratch: it holds
/// `dy·y/scale` afterwards.
pub fn lrn_backward(
    p: &LrnParams,
    dims: [usize; 4],
    x: &[f32],
    y: &[f32],
    scale: &[f32],
    dy: &mut [f32],
    dx: &mut [f32],
) {
    let [_, c, h, w] = dims;
    let plane = h * w;
    let img = c * plane;
    let coef = 2.0 * p.alpha * p.beta;
    dx.par_chunks_mut(img)
        .zip(dy.par_chunks_mut(img))
        .zip(
            x.par_chunks(img)
                .zip(y.par_chunks(img))
                .zip(scale.par_chunks(img)),
        )
        .for_each(|((dx, dy), ((x, y), s))| {
            for (((d, t), &yv), &sv) in dx.iter_mut().zip(dy.iter_mut()).zip(y).zip(s) {
                *d = *t * pow_neg_beta(sv, p.beta);
                *t *= yv / sv;
            }
            for ch in 0..c {
                let (lo, hi) = (ch * plane, (ch + 1) * plane);
                for j in window(p, c, ch) {
                    let t = &dy[j * plane..][..plane];
                    for ((d, &xv), &tv) in dx[lo..hi].iter_mut().zip(&x[lo..hi]).zip(t) {
                        *d -= coef * xv * tv;
                    }
                }
            }
        });
}
