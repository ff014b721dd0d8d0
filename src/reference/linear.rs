//! Matrix product and the fully connected layer (PyTorch's `[out,in]` weight layout).
//!
//! Dims: N batch, Fin/Fout features; for [`matmul`], C is `[m,n]` and the shared dimension k.
use crate::shape::LinearShape;

/// `C = op(A) · op(B)` with f64 accumulation, where op transposes when asked.
///
/// a: `[m,k]`, or `[k,m]` if `trans_a`; b: `[k,n]`, or `[n,k]` if `trans_b` → c `[m,n]`.
pub fn matmul(
    m: usize,
    n: usize,
    k: usize,
    a: &[f32],
    trans_a: bool,
    b: &[f32],
    trans_b: bool,
) -> Vec<f32> {
    assert_eq!(
        a.len(),
        m * k,
        "matmul: `a` has {} elements, m·k = {}",
        a.len(),
        m * k
    );
    assert_eq!(
        b.len(),
        k * n,
        "matmul: `b` has {} elements, k·n = {}",
        b.len(),
        k * n
    );
    let at = |i: usize, p: usize| if trans_a { a[p * m + i] } else { a[i * k + p] };
    let bt = |p: usize, j: usize| if trans_b { b[j * k + p] } else { b[p * n + j] };
    let mut c = vec![0.0f32; m * n];
    for i in 0..m {
        for j in 0..n {
            let acc: f64 = (0..k).map(|p| at(i, p) as f64 * bt(p, j) as f64).sum();
            c[i * n + j] = acc as f32;
        }
    }
    c
}

/// `y = x · wᵀ + b`.
///
/// x `[N,Fin]`, w `[Fout,Fin]`, b `[Fout]` → y `[N,Fout]`.
pub fn linear_forward(s: &LinearShape, x: &[f32], w: &[f32], b: &[f32]) -> Vec<f32> {
    let LinearShape { n, fin, fout } = *s;
    assert_eq!(
        b.len(),
        fout,
        "linear_forward: `b` has {} elements, Fout = {fout}",
        b.len()
    );
    let mut y = matmul(n, fout, fin, x, false, w, true);
    for row in y.chunks_exact_mut(fout) {
        for (v, bias) in row.iter_mut().zip(b) {
            *v += bias;
        }
    }
    y
}

/// Gradients of the fully connected layer: `dx = dy · w`, `dw = dyᵀ · x`, `db = Σ_N dy`
/// (all overwritten, not accumulated).
///
/// dy `[N,Fout]`, x `[N,Fin]`, w `[Fout,Fin]` → (dx `[N,Fin]`, dw `[Fout,Fin]`, db `[Fout]`).
pub fn linear_backward(
    s: &LinearShape,
    dy: &[f32],
    x: &[f32],
    w: &[f32],
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let LinearShape { n, fin, fout } = *s;
    assert_eq!(
        dy.len(),
        n * fout,
        "linear_backward: `dy` has {} elements, N·Fout = {}",
        dy.len(),
        n * fout
    );
    let dx = matmul(n, fin, fout, dy, false, w, false);
    let dw = matmul(fout, fin, n, dy, true, x, false);
    let db = (0..fout)
        .map(|j| (0..n).map(|i| dy[i * fout + j] as f64).sum::<f64>() as f32)
        .collect();
    (dx, dw, db)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reference::gradcheck::{grad_check, weighted_sum};
    use crate::reference::random_tensor;

    /// Transposes a row-major `[r,c]` matrix.
    fn transpose(r: usize, c: usize, a: &[f32]) -> Vec<f32> {
        (0..c * r).map(|i| a[(i % r) * c + i / r]).collect()
    }

    #[test]
    fn matmul_small_by_hand_and_all_transposes_agree() {
        // [[1,2],[3,4]] · [[5,6],[7,8]] = [[19,22],[43,50]]
        assert_eq!(
            matmul(2, 2, 2, &[1., 2., 3., 4.], false, &[5., 6., 7., 8.], false),
            vec![19., 22., 43., 50.]
        );
        let (m, n, k) = (3, 5, 4);
        let a = random_tensor(1, m * k, 1.0);
        let b = random_tensor(2, k * n, 1.0);
        let c = matmul(m, n, k, &a, false, &b, false);
        let (at, bt) = (transpose(m, k, &a), transpose(k, n, &b));
        for (ta, tb) in [(true, false), (false, true), (true, true)] {
            let got = matmul(
                m,
                n,
                k,
                if ta { &at } else { &a },
                ta,
                if tb { &bt } else { &b },
                tb,
            );
            crate::reference::check_close("matmul", &got, &c, 1e-6, 1e-6).unwrap();
        }
    }

    #[test]
    fn linear_gradients() {
        let (n, fin, fout) = (3, 7, 5);
        let s = LinearShape { n, fin, fout };
        let x = random_tensor(1, n * fin, 1.0);
        let w = random_tensor(2, fout * fin, 0.5);
        let b = random_tensor(3, fout, 0.5);
        let r = random_tensor(4, n * fout, 1.0);
        let (dx, dw, db) = linear_backward(&s, &r, &x, &w);
        let f = |x: &[f32], w: &[f32], b: &[f32]| weighted_sum(&linear_forward(&s, x, w, b), &r);
        grad_check("linear.dx", &x, &dx, 0.25, 1e-4, 1e-4, |p| f(p, &w, &b));
        grad_check("linear.dw", &w, &dw, 0.25, 1e-4, 1e-4, |p| f(&x, p, &b));
        grad_check("linear.db", &b, &db, 0.25, 1e-4, 1e-4, |p| f(&x, &w, p));
    }
}
