//! Max pooling without padding. Forward records where each window's FIRST maximum is (row-major
//! scan, a later equal value does not take it: ReLU outputs are full of equal zeros), so
//! backward routes each gradient there without scanning again; overlapping windows add up.
//!
//! Dims: N batch, C channels, H,W input, OH,OW output; one `[H,W]` plane per task.
use crate::shape::PoolShape;
use rayon::prelude::*;

/// Planes per parallel task: a quickstart plane is a few dozen outputs.
const PLANES_PER_TASK: usize = 16;

/// `y = max over each window`, `arg` = the index of its first maximum within the plane.
/// x `[N,C,H,W]` → y `[N,C,OH,OW]`, arg `[N,C,OH,OW]`.
pub fn maxpool_forward(s: &PoolShape, x: &[f32], y: &mut [f32], arg: &mut [u32]) {
    let (oh, ow) = (s.out_h(), s.out_w());
    let (plane, out) = (s.h * s.w, oh * ow);
    y.par_chunks_mut(out * PLANES_PER_TASK)
        .zip(arg.par_chunks_mut(out * PLANES_PER_TASK))
        .zip(x.par_chunks(plane * PLANES_PER_TASK))
        .for_each(|((y, arg), x)| {
            for ((y, arg), x) in y
                .chunks_exact_mut(out)
                .zip(arg.chunks_exact_mut(out))
                .zip(x.chunks_exact(plane))
            {
                for oy in 0..oh {
                    for ox in 0..ow {
                        let mut best = oy * s.stride * s.w + ox * s.stride;
                        for ky in 0..s.k {
                            let row = (oy * s.stride + ky) * s.w + ox * s.stride;
                            for i in row..row + s.k {
                                // Strictly greater: an equal later value leaves the first.
                                // A NaN is the maximum (the first one), as in PyTorch.
                                if x[i] > x[best] || (x[i].is_nan() && !x[best].is_nan()) {
                                    best = i;
                                }
                            }
                        }
                        y[oy * ow + ox] = x[best];
                        arg[oy * ow + ox] = best as u32;
                    }
                }
            }
        });
}

/// `dx[arg] += dy` per window, from the forward's `arg`. dy `[N,C,OH,OW]` → dx `[N,C,H,W]`
/// (overwritten).
pub fn maxpool_backward(s: &PoolShape, arg: &[u32], dy: &[f32], dx: &mut [f32]) {
    let (plane, out) = (s.h * s.w, s.out_h() * s.out_w());
    dx.par_chunks_mut(plane * PLANES_PER_TASK)
        .zip(dy.par_chunks(out * PLANES_PER_TASK))
        .zip(arg.par_chunks(out * PLANES_PER_TASK))
        .for_each(|((dx, dy), arg)| {
            dx.fill(0.0);
            for ((dx, dy), arg) in dx
                .chunks_exact_mut(plane)
                .zip(dy.chunks_exact(out))
                .zip(arg.chunks_exact(out))
            {
                for (&d, &a) in dy.iter().zip(arg) {
                    dx[a as usize] += d;
                }
            }
        });
}
