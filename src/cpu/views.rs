//! The slices one CPU kernel reads and writes, grouped as [`crate::backend`] groups an op's
//! buffers (`Pair`, `Grad`), so that a kernel takes its shape and a few named groups rather
//! than a row of loose slices whose order a caller can get wrong.

/// A layer's weight `[Fout,…]` and bias `[Fout]`.
#[derive(Clone, Copy, Debug)]
pub struct Weights<'a> {
    /// The weight.
    pub w: &'a [f32],
    /// The bias.
    pub b: &'a [f32],
}

/// Where a layer's weight and bias gradients go (overwritten, not accumulated).
#[derive(Debug)]
pub struct WeightGrads<'a> {
    /// The weight's gradient.
    pub dw: &'a mut [f32],
    /// The bias's gradient.
    pub db: &'a mut [f32],
}

/// What a layer's backward reads and writes besides its parameters.
#[derive(Debug)]
pub struct Back<'a> {
    /// What the forward read.
    pub x: &'a [f32],
    /// What the forward wrote (the activation's output).
    pub y: &'a [f32],
    /// The gradient of `y`, turned in place into that of the pre-activation.
    pub dy: &'a mut [f32],
    /// Where the gradient of `x` goes (overwritten), if anyone needs it.
    pub dx: Option<&'a mut [f32]>,
}
