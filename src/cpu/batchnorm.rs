//! Batch normalisation per channel (`reference::batchnorm` has the formulas). The channel
//! sums run one channel per task, in f64 like the reference (a channel holds up to N·55²
//! values); normalising and the input gradient run one `[H,W]` plane per task.
//!
//! Dims: x, y, dy, dx `[N,C,H,W]` with P = H·W; γ, β, running statistics `[C]`; saved `[2,C]`
//! (the mean, then `1/√(var + ε)`).
use crate::shape::{BnShape, BN_EPS, BN_MOMENTUM};
use rayon::prelude::*;

/// Σ over channel c of `f(i)` for every index i of its values, in f64.
fn channel_sum(s: &BnShape, c: usize, f: impl Fn(usize) -> f64) -> f64 {
    (0..s.n)
        .map(|n| {
            let at = (n * s.c + c) * s.hw;
            (at..at + s.hw).map(&f).sum::<f64>()
        })
        .sum()
}

/// Forward: `p` is (γ, β), `running` (mean, var), `out` (y, saved). With `train`, the
/// batch's statistics (moving the running ones towards them); otherwise the running ones.
/// `saved` gets the mean and `1/√(var + ε)` used.
pub fn bn_forward(
    s: &BnShape,
    train: bool,
    x: &[f32],
    p: [&[f32]; 2],
    running: [&mut [f32]; 2],
    out: [&mut [f32]; 2],
) {
    let ([gamma, beta], [running_mean, running_var], [y, saved]) = (p, running, out);
    let (mean, inv) = saved.split_at_mut(s.c);
    if train {
        let m = s.per_channel() as f64;
        let stats: Vec<(f64, f64)> = (0..s.c)
            .into_par_iter()
            .map(|c| {
                let mu = channel_sum(s, c, |i| x[i] as f64) / m;
                let var = channel_sum(s, c, |i| (x[i] as f64 - mu).powi(2)) / m;
                (mu, var)
            })
            .collect();
        let k = BN_MOMENTUM as f64;
        for (c, (mu, var)) in stats.into_iter().enumerate() {
            mean[c] = mu as f32;
            inv[c] = (1.0 / (var + BN_EPS as f64).sqrt()) as f32;
            let unbiased = var * m / (m - 1.0).max(1.0);
            running_mean[c] = ((1.0 - k) * running_mean[c] as f64 + k * mu) as f32;
            running_var[c] = ((1.0 - k) * running_var[c] as f64 + k * unbiased) as f32;
        }
    } else {
        mean.copy_from_slice(running_mean);
        for (o, v) in inv.iter_mut().zip(running_var.iter()) {
            *o = (1.0 / (*v as f64 + BN_EPS as f64).sqrt()) as f32;
        }
    }
    let (mean, inv) = (&*mean, &*inv);
    y.par_chunks_mut(s.hw)
        .zip(x.par_chunks(s.hw))
        .enumerate()
        .for_each(|(plane, (y, x))| {
            let c = plane % s.c;
            let scale = gamma[c] * inv[c];
            let shift = beta[c] - mean[c] * scale;
            for (o, v) in y.iter_mut().zip(x) {
                *o = v * scale + shift;
            }
        });
}

/// Backward of [`bn_forward`] run with `train`, from `t` = (x, dy): `g` = (dγ, dβ), and dx
/// when given.
pub fn bn_backward(
    s: &BnShape,
    train: bool,
    t: [&[f32]; 2],
    gamma: &[f32],
    saved: &[f32],
    dx: Option<&mut [f32]>,
    g: [&mut [f32]; 2],
) {
    let ([x, dy], [dgamma, dbeta]) = (t, g);
    let (mean, inv) = saved.split_at(s.c);
    let sums: Vec<(f64, f64)> = (0..s.c)
        .into_par_iter()
        .map(|c| {
            let (mu, is) = (mean[c] as f64, inv[c] as f64);
            let sum_dy = channel_sum(s, c, |i| dy[i] as f64);
            let sum_dy_xh = channel_sum(s, c, |i| dy[i] as f64 * (x[i] as f64 - mu) * is);
            (sum_dy, sum_dy_xh)
        })
        .collect();
    for (c, (sd, sdx)) in sums.iter().enumerate() {
        dbeta[c] = *sd as f32;
        dgamma[c] = *sdx as f32;
    }
    let Some(dx) = dx else { return };
    let m = s.per_channel() as f32;
    dx.par_chunks_mut(s.hw)
        .zip(dy.par_chunks(s.hw).zip(x.par_chunks(s.hw)))
        .enumerate()
        .for_each(|(plane, (dx, (dy, x)))| {
            let c = plane % s.c;
            let g = gamma[c] * inv[c];
            if !train {
                for (o, d) in dx.iter_mut().zip(dy) {
                    *o = g * d;
                }
                return;
            }
            let (mean_dy, mean_dy_xh) = (sums[c].0 as f32 / m, sums[c].1 as f32 / m);
            for ((o, d), v) in dx.iter_mut().zip(dy).zip(x) {
                let xh = (v - mean[c]) * inv[c];
                *o = g * (d - mean_dy - xh * mean_dy_xh);
            }
        });
}
