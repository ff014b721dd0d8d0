//! The nonlinearities, fused into the convolution and linear epilogues in forward and applied
//! to the output gradient in place in backward (from the forward output, as the GPU does).
use crate::shape::Activation;
use rayon::prelude::*;

/// Elements per parallel task of the element-wise passes: large enough that a task outweighs
/// its hand-off, small enough that both cores get work on the quickstart's tensors.
pub(crate) const ELEMENTWISE_CHUNK: usize = 1 << 14;

/// `v ← act(v)` over a slice (one thread).
pub fn apply_act(act: Activation, v: &mut [f32]) {
    match act {
        // Not `max(0.0)`, which turns a NaN into 0: a NaN must reach the loss.
        Activation::Relu => v.iter_mut().for_each(|x| {
            if *x < 0.0 {
                *x = 0.0
            }
        }),
        Activation::Tanh => v.iter_mut().for_each(|x| *x = x.tanh()),
    }
}

/// `dy ← dy·act'(y)` from the forward output y: `y > 0` for ReLU, `1 − y²` for tanh.
/// dy, y: the same shape.
pub fn act_backward_in_place(act: Activation, dy: &mut [f32], y: &[f32]) {
    dy.par_chunks_mut(ELEMENTWISE_CHUNK)
        .zip(y.par_chunks(ELEMENTWISE_CHUNK))
        .for_each(|(d, y)| match act {
            Activation::Relu => d.iter_mut().zip(y).for_each(|(d, &y)| {
                if y <= 0.0 {
                    *d = 0.0;
                }
            }),
            Activation::Tanh => d.iter_mut().zip(y).for_each(|(d, &y)| *d *= 1.0 - y * y),
        });
}
