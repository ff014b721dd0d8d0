//! Finite-difference gradient checks for the reference ops and the whole network (tests only).
use crate::reference::check_close;

/// `Σ y·r` in f64: a scalar loss whose gradient to `y` is `r`, so `backward(dy = r)` must equal
/// the derivative of this sum. y, r: the same shape.
pub(crate) fn weighted_sum(y: &[f32], r: &[f32]) -> f64 {
    assert_eq!(y.len(), r.len(), "weighted_sum: y and r differ in length");
    y.iter().zip(r).map(|(a, b)| *a as f64 * *b as f64).sum()
}

/// Checks `analytic` (the gradient of `loss` at `x`) against central differences with step
/// `eps`, at every index when `x` is small and at an even sample of at most 200 indices
/// otherwise. The step actually taken is measured after f32 rounding.
pub(crate) fn grad_check(
    name: &str,
    x: &[f32],
    analytic: &[f32],
    eps: f32,
    atol: f32,
    rtol: f32,
    loss: impl Fn(&[f32]) -> f64,
) {
    assert_eq!(
        x.len(),
        analytic.len(),
        "{name}: gradient and input differ in length"
    );
    let stride = x.len().div_ceil(200).max(1);
    let idx: Vec<usize> = (0..x.len()).step_by(stride).collect();
    let mut xp = x.to_vec();
    let mut numeric = Vec::with_capacity(idx.len());
    for &i in &idx {
        let (plus, minus) = (x[i] + eps, x[i] - eps);
        xp[i] = plus;
        let lp = loss(&xp);
        xp[i] = minus;
        let lm = loss(&xp);
        xp[i] = x[i];
        numeric.push(((lp - lm) / (plus as f64 - minus as f64)) as f32);
    }
    let got: Vec<f32> = idx.iter().map(|&i| analytic[i]).collect();
    if let Err(e) = check_close(name, &got, &numeric, atol, rtol) {
        panic!("finite-difference check failed (indices sampled every {stride}): {e}");
    }
    // A gradient that is zero everywhere would pass a check against a zero numeric one; make
    // sure the test exercises something.
    assert!(
        numeric.iter().any(|v| v.abs() > 1e-6),
        "{name}: numeric gradient is all zero; the test input is degenerate"
    );
}
