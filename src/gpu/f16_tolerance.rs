//! The tolerance of a product computed from f16-rounded operands with f32 accumulation (the
//! cooperative-matrix tiles of [`super::coop`]), derived here and shown, on the reference's
//! emulation of such a product, to pass a correct kernel and fail broken ones.

/// f16's unit roundoff: round-to-nearest into an 11-bit significand.
pub const F16_UNIT: f64 = 1.0 / 2048.0;

/// Standard deviations of the f16 rounding error [`f16_tolerance`] allows.
pub const SIGMAS: f64 = 10.0;

/// The per-element tolerance of a product `Σ_k a_k·b_k` computed from f16-rounded `a`, `b`
/// with f32 accumulation, given `sq = Σ_k (a_k·b_k)²` (the same product of the squared
/// operands) and the f32 reference `want`.
///
/// Why: rounding x to f16 gives x(1+δ) with |δ| ≤ u = 2⁻¹¹; for data that are not exactly
/// representable δ is spread evenly over [-u, u], variance u²/3. A term's error is
/// a·b·(δa + δb) to first order, variance (ab)²·2u²/3, and the K terms' errors are
/// independent, so the sum's error has standard deviation σ = u·√(2/3)·√Σ(ab)² (about
/// 2⁻¹¹·√K·rms(ab): the "√K" of unit-scale inputs). The bound is [`SIGMAS`]·σ: a correct
/// kernel exceeds it with probability far below 10⁻²⁰ per element, while a kernel that
/// accumulates in f16 (error growing like K, not √K, once K is in the hundreds) or drops or
/// shifts a term (an error of order |ab|, i.e. √K·σ/u) exceeds it; the f32 checks'
/// 1e-4 + 1e-4·|want| is added for the f32 accumulation and the epilogue.
pub fn f16_tolerance(sq: f32, want: f32) -> f64 {
    SIGMAS * F16_UNIT * (2.0f64 / 3.0).sqrt() * (sq as f64).max(0.0).sqrt()
        + 1e-4
        + 1e-4 * (want as f64).abs()
}

/// Compare `got` with the f32 reference `want` at [`f16_tolerance`] per element (`sq`:
/// the squared operands' product); `Err` names `name`, the first bad index, how many are
/// bad and the largest error as a multiple of its tolerance.
pub fn check_f16(name: &str, got: &[f32], want: &[f32], sq: &[f32]) -> Result<(), String> {
    if got.len() != want.len() || sq.len() != want.len() {
        return Err(format!(
            "{name}: length {} but the reference has {} (bounds: {})",
            got.len(),
            want.len(),
            sq.len()
        ));
    }
    let mut first: Option<usize> = None;
    let (mut bad, mut worst) = (0usize, 0.0f64);
    for (i, ((&g, &w), &q)) in got.iter().zip(want).zip(sq).enumerate() {
        let tol = f16_tolerance(q, w);
        let err = (g as f64 - w as f64).abs();
        // NaN never compares ≤, so a NaN where the reference is finite counts as bad.
        let ok = g == w || err <= tol;
        if err.is_finite() {
            worst = worst.max(err / tol);
        }
        if !ok {
            bad += 1;
            first.get_or_insert(i);
        }
    }
    match first {
        None => Ok(()),
        Some(i) => Err(format!(
            "{name}: {bad} of {} elements beyond the f16 tolerance (first at index {i}: got {}, want {}; largest error {worst:.1}× its tolerance)",
            want.len(),
            got[i],
            want[i]
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reference::random_tensor;

    /// `x` rounded to f16 and back (what the cooperative core's shared tiles hold).
    fn round_f16(x: f32) -> f32 {
        half::f16::from_f32(x).to_f32()
    }

    /// `c[m,n] = Σ_k a[m,k]·b[n,k]` in f64 after `round` on every operand, then `acc` on
    /// every partial sum (f32 or f16 accumulation), `shift` moving the K window.
    fn product(
        (m, n, k): (usize, usize, usize),
        a: &[f32],
        b: &[f32],
        round: fn(f32) -> f32,
        acc: fn(f64) -> f64,
        shift: usize,
    ) -> Vec<f32> {
        let mut c = vec![0f32; m * n];
        for i in 0..m {
            for j in 0..n {
                let mut s = 0f64;
                for l in 0..k {
                    let (x, y) = match l + shift {
                        ls if ls < k => (a[i * k + ls], b[j * k + ls]),
                        _ => (0.0, 0.0),
                    };
                    s = acc(s + round(x) as f64 * round(y) as f64);
                }
                c[i * n + j] = s as f32;
            }
        }
        c
    }

    #[test]
    fn the_f16_tolerance_passes_f16_inputs_and_fails_broken_variants() {
        let keep = |x: f32| x;
        let f32_acc = |s: f64| s as f32 as f64;
        let f16_acc = |s: f64| round_f16(s as f32) as f64;
        for (case, dims) in [(67, 45, 129), (37, 29, 1000), (9, 7, 4096)]
            .into_iter()
            .enumerate()
        {
            let (m, n, k) = dims;
            let a = random_tensor(11 + case as u32, m * k, 1.0);
            let b = random_tensor(23 + case as u32, n * k, 1.0);
            let sq = |v: &[f32]| v.iter().map(|x| x * x).collect::<Vec<f32>>();
            let want = product(dims, &a, &b, keep, |s| s, 0);
            let bound = product(dims, &sq(&a), &sq(&b), keep, |s| s, 0);
            let name = format!("{m}x{n}x{k}");
            // The emulated mixed product (what a correct cooperative kernel computes).
            let mixed = product(dims, &a, &b, round_f16, f32_acc, 0);
            check_f16(&name, &mixed, &want, &bound).unwrap();
            // Its error is real (f16 inputs differ from f32), and within the bound by a margin.
            let worst = mixed
                .iter()
                .zip(&want)
                .zip(&bound)
                .map(|((g, w), q)| (g - w).abs() as f64 / f16_tolerance(*q, *w))
                .fold(0.0, f64::max);
            assert!(worst > 0.01 && worst < 0.7, "{name}: worst ratio {worst}");
            // The plain f32 check at the f32 core's 1e-4 would refuse it once K is long: the
            // mixed kernels need their own tolerance.
            if k >= 1000 {
                assert!(crate::reference::check_close(&name, &mixed, &want, 1e-4, 1e-4).is_err());
            }
            // Accumulating in f16 fails once K is in the hundreds.
            if k >= 1000 {
                let bad = product(dims, &a, &b, round_f16, f16_acc, 0);
                let e = check_f16(&name, &bad, &want, &bound).unwrap_err();
                assert!(e.contains("beyond the f16 tolerance"), "{e}");
            }
            // A K window shifted by one (the broken variant's bug) fails at every size.
            let shifted = product(dims, &a, &b, round_f16, f32_acc, 1);
            assert!(check_f16(&name, &shifted, &want, &bound).is_err(), "{name}");
            // Rounding to 8 significant bits (bf16-like inputs) is beyond f16's bound.
            let coarse = |x: f32| f32::from_bits((x.to_bits() + 0x8000) & 0xffff_0000);
            let bf = product(dims, &a, &b, coarse, f32_acc, 0);
            assert!(check_f16(&name, &bf, &want, &bound).is_err(), "{name}");
        }
    }

    #[test]
    fn check_f16_reports_nan_and_lengths() {
        let e = check_f16("y", &[f32::NAN], &[1.0], &[1.0]).unwrap_err();
        assert!(e.contains("index 0"), "{e}");
        assert!(check_f16("y", &[1.0], &[1.0, 2.0], &[1.0]).is_err());
    }
}
