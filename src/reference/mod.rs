//! Plain CPU implementations of every op of the network, forward beside backward: the truth the
//! WGSL kernels and the model graph are tested against.
//!
//! Rules of this module: obviously-right loops over the output, no tiling or reordering tricks,
//! f32 storage and f64 accumulation (so the reference is more exact than any kernel it judges).
//! Every backward is checked by central finite differences on tiny random shapes. Slices of the
//! wrong length are caller bugs and panic with the op and tensor named.
//!
//! Layouts (as in [`crate::shape`]): activations `[N,C,H,W]`, convolution weights
//! `[Cout,Cin/groups,K,K]`, linear weights `[out,in]`, all row-major f32.
pub mod activation;
pub mod augment;
pub mod backend;
pub mod batchnorm;
pub mod channels;
pub mod conv;
pub mod dropout;
pub mod linear;
pub mod lrn;
pub mod maxpool;
pub mod sgd;
pub mod softmax;

#[cfg(test)]
pub(crate) mod gradcheck;

pub use activation::{activation_backward, activation_forward};
pub use augment::augment_forward;
pub use backend::{RefBackend, RefBuf, RefError};
pub use batchnorm::{bn_backward, bn_eval_stats, bn_forward_eval, bn_forward_train, BnStats};
pub use channels::copy_channels;
pub use conv::{conv2d_backward_input, conv2d_backward_weight, conv2d_forward};
pub use dropout::{dropout_backward, dropout_forward, dropout_forward_at};
pub use linear::{linear_backward, linear_forward, matmul};
pub use lrn::{lrn_backward, lrn_forward};
pub use maxpool::{maxpool_backward, maxpool_forward};
pub use sgd::sgd_update;
pub use softmax::{softmax_cross_entropy, topk_correct};

/// Compares a computed tensor with the reference, element by element: element `i` passes when
/// `|got − want| ≤ atol + rtol·|want|` (and both are finite or identical).
///
/// On failure the message names the tensor, the first bad index with both values, how many
/// elements failed, and the largest absolute and relative errors, so a kernel test says where
/// to look. got and want: the same shape, any layout.
pub fn check_close(
    name: &str,
    got: &[f32],
    want: &[f32],
    atol: f32,
    rtol: f32,
) -> Result<(), String> {
    if got.len() != want.len() {
        return Err(format!(
            "{name}: length {} but the reference has {}; check the shape passed to the kernel",
            got.len(),
            want.len()
        ));
    }
    let mut first_bad: Option<usize> = None;
    let mut bad = 0usize;
    let (mut max_abs, mut max_rel) = (0.0f64, 0.0f64);
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let (g64, w64) = (g as f64, w as f64);
        let abs = (g64 - w64).abs();
        // NaN never compares ≤, so a NaN where the reference is finite counts as bad.
        let ok = g == w || abs <= atol as f64 + rtol as f64 * w64.abs();
        if g.is_finite() && w.is_finite() {
            max_abs = max_abs.max(abs);
            max_rel = max_rel.max(abs / w64.abs().max(f64::MIN_POSITIVE));
        }
        if !ok {
            bad += 1;
            first_bad.get_or_insert(i);
        }
    }
    match first_bad {
        None => Ok(()),
        Some(i) => Err(format!(
            "{name}: {bad} of {} elements differ (atol {atol:e}, rtol {rtol:e}); first at index {i}: \
             got {} want {}; max abs error {max_abs:e}, max rel error {max_rel:e}",
            got.len(),
            got[i],
            want[i]
        )),
    }
}

/// A deterministic random tensor of `len` elements drawn from N(0, std²) with the shared
/// counter-based generator ([`crate::shape::normal`]), so kernel tests and the CPU agree on
/// their inputs without a random-number crate.
pub fn random_tensor(seed: u32, len: usize, std: f32) -> Vec<f32> {
    (0..len)
        .map(|i| std * crate::shape::normal(seed, i as u32))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn check_close_accepts_within_tolerance_and_names_the_first_bad_index() {
        let want = random_tensor(1, 50, 1.0);
        let mut got = want.clone();
        got[3] += 1e-7;
        assert!(check_close("t", &got, &want, 1e-6, 0.0).is_ok());
        got[17] += 0.5;
        got[30] = f32::NAN;
        let err = check_close("conv.dx", &got, &want, 1e-6, 1e-5).unwrap_err();
        assert!(
            err.contains("conv.dx") && err.contains("index 17") && err.contains("2 of 50"),
            "{err}"
        );
        assert!(check_close("t", &got[..3], &want, 1.0, 1.0).is_err());
    }

    #[test]
    fn random_tensor_is_deterministic_and_scaled() {
        let a = random_tensor(9, 4000, 0.01);
        assert_eq!(a, random_tensor(9, 4000, 0.01));
        assert_ne!(a, random_tensor(10, 4000, 0.01));
        let var = a.iter().map(|v| (*v as f64).powi(2)).sum::<f64>() / a.len() as f64;
        assert!((var.sqrt() - 0.01).abs() < 0.0005, "std {}", var.sqrt());
    }
}
