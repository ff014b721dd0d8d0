//! The paper's SGD step, `v ← μ·v − wd·lr·w − lr·g; w ← w + v`, in f32 in the formula's order
//! (the reference's and the WGSL kernel's), so one step agrees with them to the last bit.
use super::activation::ELEMENTWISE_CHUNK;
use rayon::prelude::*;

/// One in-place step over one parameter tensor; w, v, g: its shape, flat.
pub fn sgd_step(
    w: &mut [f32],
    v: &mut [f32],
    g: &[f32],
    lr: f32,
    momentum: f32,
    weight_decay: f32,
) {
    w.par_chunks_mut(ELEMENTWISE_CHUNK)
        .zip(v.par_chunks_mut(ELEMENTWISE_CHUNK))
        .zip(g.par_chunks(ELEMENTWISE_CHUNK))
        .for_each(|((w, v), g)| {
            for ((wi, vi), gi) in w.iter_mut().zip(v.iter_mut()).zip(g) {
                *vi = momentum * *vi - weight_decay * lr * *wi - lr * *gi;
                *wi += *vi;
            }
        });
}
