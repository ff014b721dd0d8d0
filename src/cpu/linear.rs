//! Fully connected layers: `y = act(x·wᵀ + b)` and its gradients, three products on
//! [`super::gemm`] with its own column split across the workers (a layer is one product, too
//! few rows to cut the batch).
//!
//! Dims: N batch, Fin inputs, Fout outputs; x `[N,Fin]`, w `[Fout,Fin]`, y `[N,Fout]`.
use super::gemm::{gemm, Mnk, Operand};
use super::views::{Back, WeightGrads, Weights};
use super::{act_backward_in_place, apply_act};
use crate::shape::{Activation, LinearShape};
use rayon::prelude::*;

/// `y = act(x·wᵀ + b)` (no activation for `None`). x `[N,Fin]`, `p.w` `[Fout,Fin]`, `p.b`
/// `[Fout]` → y `[N,Fout]`.
pub fn linear_forward(
    s: &LinearShape,
    act: Option<Activation>,
    x: &[f32],
    p: Weights<'_>,
    y: &mut [f32],
    threads: usize,
) {
    let Weights { w, b } = p;
    gemm(
        Mnk::new(s.n, s.fout, s.fin),
        Operand::n(x),
        Operand::t(w),
        0.0,
        y,
        threads,
    );
    y.par_chunks_mut(s.fout).for_each(|row| {
        for (v, bv) in row.iter_mut().zip(b) {
            *v += bv;
        }
        if let Some(a) = act {
            apply_act(a, row);
        }
    });
}

/// The gradients of [`linear_forward`]: `t.dy` `[N,Fout]` arrives as the gradient of the
/// output and leaves as that of the pre-activation (act' from `t.y`, in place). Writes `g.dw`
/// `[Fout,Fin]`, `g.db` `[Fout]` and, when given, `t.dx` `[N,Fin]`; `w` is the forward's weight.
pub fn linear_backward(
    s: &LinearShape,
    act: Option<Activation>,
    t: Back<'_>,
    w: &[f32],
    g: WeightGrads<'_>,
    threads: usize,
) {
    let Back { x, y, dy, dx } = t;
    let WeightGrads { dw, db } = g;
    if let Some(a) = act {
        act_backward_in_place(a, dy, y);
    }
    let dy = &*dy;
    // dw = dyᵀ·x: [Fout,N]·[N,Fin].
    gemm(
        Mnk::new(s.fout, s.fin, s.n),
        Operand::t(dy),
        Operand::n(x),
        0.0,
        dw,
        threads,
    );
    db.par_chunks_mut(256).enumerate().for_each(|(i, out)| {
        for (j, o) in out.iter_mut().enumerate() {
            let col = i * 256 + j;
            *o = (0..s.n).map(|r| dy[r * s.fout + col]).sum();
        }
    });
    if let Some(dx) = dx {
        // dx = dy·w: [N,Fout]·[Fout,Fin].
        gemm(
            Mnk::new(s.n, s.fin, s.fout),
            Operand::n(dy),
            Operand::n(w),
            0.0,
            dx,
            threads,
        );
    }
}
