//! Batch normalisation per channel, PyTorch's `BatchNorm2d` (docs/model.md, "Normalisation"):
//!
//! - training: each channel's mean μ and biased variance σ² over its M = N·H·W values,
//!   `x̂ = (x − μ)/√(σ² + ε)`, `y = γ·x̂ + β`; the running statistics move towards the batch's,
//!   `r ← (1 − m)·r + m·b`, the variance's from the unbiased estimate `σ²·M/(M − 1)`;
//! - evaluation: the same with the running mean and variance in place of the batch's.
//!
//! Backward (`s = 1/√(σ² + ε)`): `dβ = Σ dy`, `dγ = Σ dy·x̂`, and in training, where μ and σ²
//! depend on x, `dx = γ·s/M · (M·dy − Σ dy − x̂·Σ dy·x̂)`; in evaluation `dx = γ·s·dy`.
//!
//! Dims: x, y, dy, dx `[N,C,H,W]` with `hw` = H·W; γ, β, running statistics `[C]`.
use crate::shape::{BnShape, BN_EPS, BN_MOMENTUM};

/// What a forward pass normalised with, per channel: the mean and `1/√(var + ε)` (the
/// engines keep these `[2,C]` for backward).
#[derive(Clone, Debug, PartialEq)]
pub struct BnStats {
    /// Mean `[C]`.
    pub mean: Vec<f32>,
    /// `1/√(var + ε)` `[C]`.
    pub inv_std: Vec<f32>,
}

fn check(s: &BnShape, x: &[f32], per_c: [(&str, &[f32]); 2]) {
    assert_eq!(
        x.len(),
        s.len(),
        "batchnorm: x has {} values for {s:?}",
        x.len()
    );
    for (name, t) in per_c {
        assert_eq!(
            t.len(),
            s.c,
            "batchnorm: {name} has {} values for {} channels",
            t.len(),
            s.c
        );
    }
}

/// The values of channel `c` in `x`, image by image.
fn channel<'a>(s: &BnShape, x: &'a [f32], c: usize) -> impl Iterator<Item = f32> + 'a {
    let (hw, cc) = (s.hw, s.c);
    (0..s.n).flat_map(move |n| x[(n * cc + c) * hw..][..hw].iter().copied())
}

/// `y = γ·(x − mean)·inv_std + β`.
fn normalise(s: &BnShape, x: &[f32], gamma: &[f32], beta: &[f32], st: &BnStats) -> Vec<f32> {
    let mut y = vec![0.0; x.len()];
    for (i, (o, v)) in y.iter_mut().zip(x).enumerate() {
        let c = (i / s.hw) % s.c;
        let xh = (*v as f64 - st.mean[c] as f64) * st.inv_std[c] as f64;
        *o = (gamma[c] as f64 * xh + beta[c] as f64) as f32;
    }
    y
}

/// Training-mode forward: returns y and the batch statistics, and moves the running mean and
/// variance towards the batch's.
pub fn bn_forward_train(
    s: &BnShape,
    x: &[f32],
    gamma: &[f32],
    beta: &[f32],
    running_mean: &mut [f32],
    running_var: &mut [f32],
) -> (Vec<f32>, BnStats) {
    check(s, x, [("gamma", gamma), ("beta", beta)]);
    check(
        s,
        x,
        [("running_mean", running_mean), ("running_var", running_var)],
    );
    let m = s.per_channel() as f64;
    let mut st = BnStats {
        mean: vec![0.0; s.c],
        inv_std: vec![0.0; s.c],
    };
    for c in 0..s.c {
        let mean = channel(s, x, c).map(|v| v as f64).sum::<f64>() / m;
        let var = channel(s, x, c)
            .map(|v| (v as f64 - mean).powi(2))
            .sum::<f64>()
            / m;
        st.mean[c] = mean as f32;
        st.inv_std[c] = (1.0 / (var + BN_EPS as f64).sqrt()) as f32;
        // One value per channel has no unbiased variance; PyTorch refuses it, the engines
        // keep the biased one rather than divide by zero.
        let unbiased = var * m / (m - 1.0).max(1.0);
        let k = BN_MOMENTUM as f64;
        running_mean[c] = ((1.0 - k) * running_mean[c] as f64 + k * mean) as f32;
        running_var[c] = ((1.0 - k) * running_var[c] as f64 + k * unbiased) as f32;
    }
    (normalise(s, x, gamma, beta, &st), st)
}

/// The statistics evaluation normalises with: the running mean and `1/√(running var + ε)`.
pub fn bn_eval_stats(running_mean: &[f32], running_var: &[f32]) -> BnStats {
    BnStats {
        mean: running_mean.to_vec(),
        inv_std: running_var
            .iter()
            .map(|v| (1.0 / (*v as f64 + BN_EPS as f64).sqrt()) as f32)
            .collect(),
    }
}

/// Evaluation-mode forward: normalises with the running statistics, which stay as they are.
pub fn bn_forward_eval(
    s: &BnShape,
    x: &[f32],
    gamma: &[f32],
    beta: &[f32],
    running_mean: &[f32],
    running_var: &[f32],
) -> Vec<f32> {
    check(s, x, [("gamma", gamma), ("beta", beta)]);
    check(
        s,
        x,
        [("running_mean", running_mean), ("running_var", running_var)],
    );
    normalise(s, x, gamma, beta, &bn_eval_stats(running_mean, running_var))
}

/// The gradients (dx, dγ, dβ) of the forward that normalised with `st`; `train` says whether
/// the statistics were the batch's (then they depend on x) or the running ones.
pub fn bn_backward(
    s: &BnShape,
    train: bool,
    x: &[f32],
    gamma: &[f32],
    st: &BnStats,
    dy: &[f32],
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    check(s, x, [("gamma", gamma), ("mean", &st.mean)]);
    check(s, dy, [("inv_std", &st.inv_std), ("gamma", gamma)]);
    let m = s.per_channel() as f64;
    let (mut dgamma, mut dbeta) = (vec![0.0f32; s.c], vec![0.0f32; s.c]);
    let mut dx = vec![0.0f32; x.len()];
    for c in 0..s.c {
        let (mean, inv) = (st.mean[c] as f64, st.inv_std[c] as f64);
        let xh = |v: f32| (v as f64 - mean) * inv;
        let sum_dy: f64 = channel(s, dy, c).map(|d| d as f64).sum();
        let sum_dy_xh: f64 = channel(s, dy, c)
            .zip(channel(s, x, c))
            .map(|(d, v)| d as f64 * xh(v))
            .sum();
        dgamma[c] = sum_dy_xh as f32;
        dbeta[c] = sum_dy as f32;
        let g = gamma[c] as f64 * inv;
        for n in 0..s.n {
            let at = (n * s.c + c) * s.hw;
            for i in at..at + s.hw {
                let d = dy[i] as f64;
                dx[i] = if train {
                    (g / m * (m * d - sum_dy - xh(x[i]) * sum_dy_xh)) as f32
                } else {
                    (g * d) as f32
                };
            }
        }
    }
    (dx, dgamma, dbeta)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reference::gradcheck::{grad_check, weighted_sum};
    use crate::reference::random_tensor;

    /// A tiny awkward shape: 2 images, 3 channels, 5 positions.
    const S: BnShape = BnShape { n: 2, c: 3, hw: 5 };

    fn inputs() -> (Vec<f32>, Vec<f32>, Vec<f32>, Vec<f32>) {
        let x: Vec<f32> = random_tensor(1, S.len(), 2.0)
            .iter()
            .enumerate()
            .map(|(i, v)| v + ((i / S.hw) % S.c) as f32)
            .collect();
        let gamma: Vec<f32> = random_tensor(2, S.c, 0.5).iter().map(|v| 1.0 + v).collect();
        let beta = random_tensor(3, S.c, 0.5);
        let r = random_tensor(4, S.len(), 1.0);
        (x, gamma, beta, r)
    }

    #[test]
    fn training_normalises_each_channel_and_moves_the_running_statistics() {
        let (x, _, _, _) = inputs();
        let (ones, zeros) = (vec![1.0; S.c], vec![0.0; S.c]);
        let (mut rm, mut rv) = (vec![0.5; S.c], vec![2.0; S.c]);
        let (y, st) = bn_forward_train(&S, &x, &ones, &zeros, &mut rm, &mut rv);
        for c in 0..S.c {
            let v: Vec<f64> = channel(&S, &y, c).map(|v| v as f64).collect();
            let mean = v.iter().sum::<f64>() / 10.0;
            let var = v.iter().map(|a| (a - mean).powi(2)).sum::<f64>() / 10.0;
            assert!(mean.abs() < 1e-6, "channel {c}: mean {mean}");
            // Biased variance 1, less ε's share.
            assert!((var - 1.0).abs() < 1e-3, "channel {c}: variance {var}");
            let xs: Vec<f64> = channel(&S, &x, c).map(|v| v as f64).collect();
            let bm = xs.iter().sum::<f64>() / 10.0;
            let unbiased = xs.iter().map(|a| (a - bm).powi(2)).sum::<f64>() / 9.0;
            assert!((rm[c] as f64 - (0.9 * 0.5 + 0.1 * bm)).abs() < 1e-6);
            assert!((rv[c] as f64 - (0.9 * 2.0 + 0.1 * unbiased)).abs() < 1e-5);
            assert!((st.mean[c] as f64 - bm).abs() < 1e-6);
        }
        // Evaluation with those running statistics is a different, fixed affine map.
        let e = bn_forward_eval(&S, &x, &ones, &zeros, &rm, &rv);
        let i = 7;
        let c = (i / S.hw) % S.c;
        let want = (x[i] - rm[c]) / (rv[c] + BN_EPS).sqrt();
        assert!((e[i] - want).abs() < 1e-5, "{} vs {want}", e[i]);
    }

    #[test]
    fn gradients_match_finite_differences_in_both_modes() {
        let (x, gamma, beta, r) = inputs();
        let (rm0, rv0) = (random_tensor(5, S.c, 0.5), vec![0.7, 1.3, 2.1]);
        for train in [true, false] {
            let fwd = |x: &[f32], g: &[f32], b: &[f32]| -> Vec<f32> {
                if train {
                    let (mut rm, mut rv) = (rm0.clone(), rv0.clone());
                    bn_forward_train(&S, x, g, b, &mut rm, &mut rv).0
                } else {
                    bn_forward_eval(&S, x, g, b, &rm0, &rv0)
                }
            };
            let st = if train {
                let (mut rm, mut rv) = (rm0.clone(), rv0.clone());
                bn_forward_train(&S, &x, &gamma, &beta, &mut rm, &mut rv).1
            } else {
                bn_eval_stats(&rm0, &rv0)
            };
            let (dx, dg, db) = bn_backward(&S, train, &x, &gamma, &st, &r);
            let tag = if train { "train" } else { "eval" };
            grad_check(&format!("bn {tag} dx"), &x, &dx, 1e-2, 2e-3, 2e-2, |v| {
                weighted_sum(&fwd(v, &gamma, &beta), &r)
            });
            grad_check(
                &format!("bn {tag} dgamma"),
                &gamma,
                &dg,
                1e-2,
                2e-3,
                2e-2,
                |v| weighted_sum(&fwd(&x, v, &beta), &r),
            );
            grad_check(
                &format!("bn {tag} dbeta"),
                &beta,
                &db,
                1e-2,
                2e-3,
                2e-2,
                |v| weighted_sum(&fwd(&x, &gamma, v), &r),
            );
        }
    }
}
