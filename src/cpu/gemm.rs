//! The one matrix product every convolution and fully connected layer of the CPU engine goes
//! through: `C = A·B` (or `C += A·B`) on row-major f32 buffers, either operand read transposed,
//! on `matrixmultiply`'s packed AVX2/FMA kernels.
//!
//! Why `matrixmultiply` and not `gemm` (candle's): measured on the 2-core development box
//! (Xeon with AVX-512, 2026-11-30, `gemm` 0.19 without its nightly AVX-512 kernels, which
//! need a nightly compiler), on this engine's own shapes — the quickstart's conv1 forward
//! (16×14400×363) 18.4 GFLOP/s against 10.1, conv2 backward-weight 46 against 31, fc6 64×256×64
//! 102 against 38; the paper's conv3 forward (384×2704×2304) 43 against 32 and fc6 backward
//! weight (4096×9216×16) 18.5 against 5.0, single-threaded. It won on every shape measured, and
//! it was already a dependency (through nalgebra).
//!
//! Shapes: A is `[m,k]` (stored `[k,m]` when `a_t`), B is `[k,n]` (stored `[n,k]` when `b_t`),
//! C is `[m,n]`, all row-major and dense.
use rayon::prelude::*;

/// Below this many multiply-adds a product runs on one thread: splitting it costs more than
/// it saves (a rayon hand-off is a few microseconds).
const PARALLEL_MACS: usize = 1 << 18;

/// An operand: its row-major buffer and whether the product reads it transposed.
#[derive(Clone, Copy, Debug)]
pub struct Operand<'a> {
    /// The stored values.
    pub data: &'a [f32],
    /// Read transposed: the buffer holds the matrix's transpose.
    pub t: bool,
}

impl<'a> Operand<'a> {
    /// A row-major matrix read as stored.
    pub fn n(data: &'a [f32]) -> Self {
        Operand { data, t: false }
    }
    /// A row-major matrix read as its transpose.
    pub fn t(data: &'a [f32]) -> Self {
        Operand { data, t: true }
    }
    /// (row stride, column stride) of the `rows`×`cols` matrix this operand stands for.
    fn strides(&self, rows: usize, cols: usize) -> (isize, isize) {
        if self.t {
            (1, rows as isize)
        } else {
            (cols as isize, 1)
        }
    }
}

/// The sizes of a product `C[m,n] = A[m,k]·B[k,n]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Mnk {
    /// Rows of A and C.
    pub m: usize,
    /// Columns of B and C.
    pub n: usize,
    /// The reduced dimension.
    pub k: usize,
}

impl Mnk {
    /// `C[m,n] = A[m,k]·B[k,n]`.
    pub const fn new(m: usize, n: usize, k: usize) -> Mnk {
        Mnk { m, n, k }
    }
}

/// A raw pointer that may cross to another rayon worker: each worker writes a disjoint block
/// of columns of C, which slices cannot express (the blocks interleave in memory).
#[derive(Clone, Copy)]
struct SendPtr(*mut f32);
// SAFETY: the pointer is only dereferenced by `sgemm` inside `gemm`, on disjoint column blocks.
unsafe impl Send for SendPtr {}
unsafe impl Sync for SendPtr {}

/// `C = A·B + beta·C` with `d`'s `m`, `n`, `k` as in the module docs (`beta` 0 or 1). Uses up to
/// `threads` workers of the current rayon pool, splitting C's columns (or rows, when it has
/// few columns) into blocks.
///
/// Panics when a buffer is shorter than its shape needs: every caller derives both from one
/// layer shape, so a mismatch is a bug in this module, and checking here keeps the unsafe call
/// below in bounds.
pub fn gemm(d: Mnk, a: Operand<'_>, b: Operand<'_>, beta: f32, c: &mut [f32], threads: usize) {
    let Mnk { m, n, k } = d;
    assert!(
        a.data.len() >= m * k && b.data.len() >= k * n && c.len() >= m * n,
        "cpu gemm: {m}×{n}×{k} with buffers of {}, {} and {}",
        a.data.len(),
        b.data.len(),
        c.len()
    );
    if m == 0 || n == 0 {
        return;
    }
    let (rsa, csa) = a.strides(m, k);
    let (rsb, csb) = b.strides(k, n);
    let parts = if m * n * k < PARALLEL_MACS {
        1
    } else {
        threads.max(1)
    };
    // Split the longer side of C, in blocks that are multiples of the 8-wide micro-kernel.
    let split_cols = n >= m;
    let long = if split_cols { n } else { m };
    let block = long.div_ceil(parts).next_multiple_of(8).min(long);
    let blocks = long.div_ceil(block);
    let cp = SendPtr(c.as_mut_ptr());
    let run = |i: usize| {
        let lo = i * block;
        let len = block.min(long - lo);
        let (mm, nn) = if split_cols { (m, len) } else { (len, n) };
        // SAFETY: the assert above keeps every read of A and B and every write of C inside
        // the buffers: block i covers columns (or rows) lo..lo+len of C, and the operand
        // offsets below move to the same columns of B (rows of A). Blocks are disjoint, so
        // no two workers write one element.
        unsafe {
            let (ap, bp, cp) = (a.data.as_ptr(), b.data.as_ptr(), cp);
            let (ap, bp, cpp) = if split_cols {
                (ap, bp.offset(lo as isize * csb), cp.0.add(lo))
            } else {
                (ap.offset(lo as isize * rsa), bp, cp.0.add(lo * n))
            };
            matrixmultiply::sgemm(
                mm, k, nn, 1.0, ap, rsa, csa, bp, rsb, csb, beta, cpp, n as isize, 1,
            );
        }
    };
    if blocks == 1 {
        run(0);
    } else {
        (0..blocks).into_par_iter().for_each(run);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reference::{check_close, random_tensor};

    /// C = A·B in f64 with A `[m,k]`, B `[k,n]` given row-major.
    fn naive(m: usize, n: usize, k: usize, a: &[f32], b: &[f32]) -> Vec<f32> {
        let mut c = vec![0f32; m * n];
        for i in 0..m {
            for j in 0..n {
                let s: f64 = (0..k)
                    .map(|p| a[i * k + p] as f64 * b[p * n + j] as f64)
                    .sum();
                c[i * n + j] = s as f32;
            }
        }
        c
    }

    fn transpose(rows: usize, cols: usize, x: &[f32]) -> Vec<f32> {
        let mut t = vec![0f32; x.len()];
        for r in 0..rows {
            for c in 0..cols {
                t[c * rows + r] = x[r * cols + c];
            }
        }
        t
    }

    #[test]
    fn every_transpose_form_split_or_not_and_accumulate() {
        for &(m, n, k) in &[
            (1, 7, 5),
            (3, 70, 33),
            (67, 45, 129),
            (130, 131, 37),
            (9, 600, 70),
        ] {
            let a = random_tensor(1, m * k, 1.0);
            let b = random_tensor(2, k * n, 1.0);
            let want = naive(m, n, k, &a, &b);
            let (at, bt) = (transpose(m, k, &a), transpose(k, n, &b));
            for threads in [1, 3] {
                for (ao, bo) in [
                    (Operand::n(&a), Operand::n(&b)),
                    (Operand::t(&at), Operand::n(&b)),
                    (Operand::n(&a), Operand::t(&bt)),
                    (Operand::t(&at), Operand::t(&bt)),
                ] {
                    let mut c = random_tensor(3, m * n, 1.0);
                    gemm(Mnk::new(m, n, k), ao, bo, 0.0, &mut c, threads);
                    let name = format!("gemm {m}×{n}×{k} t=({},{}) x{threads}", ao.t, bo.t);
                    check_close(&name, &c, &want, 1e-4, 1e-4).unwrap();
                    let before = c.clone();
                    gemm(Mnk::new(m, n, k), ao, bo, 1.0, &mut c, threads);
                    let twice: Vec<f32> = before.iter().map(|v| 2.0 * v).collect();
                    check_close(&format!("{name} +="), &c, &twice, 1e-4, 1e-4).unwrap();
                }
            }
        }
    }
}
