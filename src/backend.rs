//! The one interface every engine offers the model: the ops of the network, forward beside
//! backward, on buffers the engine owns, with shapes passed as the structs of
//! [`crate::shape`]. The GPU engine records each op into a pass that the caller submits; the
//! CPU engine and the reference run each op as it is called. The network walk
//! (`crate::model::walk`) is written once over this trait, so an engine never sees the layer
//! list, AlexNet or another engine, and a new engine is one implementation of [`Backend`].
//!
//! Conventions shared by every implementation:
//! - Gradients of weights and biases are written, not accumulated.
//! - The activation is fused into conv and linear: forward applies it, backward turns `dy`
//!   (the gradient of the activation's output) into the gradient of its input, in place.
//! - `dx` is `None` where nobody needs the input's gradient (conv1 reads the images).
//! - A buffer handed to an op has exactly the length the op's shape asks for; engines check
//!   it and report the op and tensor (a mismatch is a bug in the caller, not user data).
use crate::shape::{Activation, BnShape, ConvShape, LinearShape, LrnParams, PoolShape};

/// The optimizer's hyper-parameters for one step.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SgdHyper {
    /// Learning rate.
    pub lr: f32,
    /// Momentum μ (the paper: 0.9).
    pub momentum: f32,
    /// Weight decay (the paper: 0.0005, applied to every parameter).
    pub weight_decay: f32,
}

/// Dropout of one training step: the probability and the mask seeds of the network's dropout
/// layers by slot (the paper's net: fc6's and fc7's, see `crate::model::dropout_seed`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Dropout {
    /// Probability of dropping a unit.
    pub p: f32,
    /// Seeds of the masks, by slot.
    pub seeds: [u32; 2],
}

/// What a pass is for: training (dropout on, with this step's masks) or evaluation.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Mode {
    /// The evaluation view: dropout is the identity.
    Eval,
    /// A training step's view.
    Train(Dropout),
}

impl Mode {
    /// The dropout this pass applies: `None` in evaluation and when p is 0 (then the
    /// training and evaluation views are the same function, and the walk skips the copies).
    pub fn dropout(&self) -> Option<Dropout> {
        match self {
            Mode::Train(d) if d.p > 0.0 => Some(*d),
            _ => None,
        }
    }
}

impl From<Option<Dropout>> for Mode {
    fn from(d: Option<Dropout>) -> Mode {
        d.map_or(Mode::Eval, Mode::Train)
    }
}

/// A dropout mask: its seed and the slot it is kept in (the GPU keeps each step's seeds in one
/// uniform so its bind groups never change).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MaskSeed {
    /// Which of the step's seeds.
    pub slot: u32,
    /// The seed: element i is kept iff `uniform01(seed, offset + i) ≥ p`.
    pub seed: u32,
    /// Where the buffer starts in the global batch's mask: a data-parallel replica holding
    /// rows r.. of the global batch masks its element i as the global element `r·F + i`, so
    /// the masks do not depend on how the batch is split (0 on one device).
    pub offset: u32,
}

/// A weight and its bias (or their gradients).
#[derive(Clone, Copy, Debug)]
pub struct Pair<'a, T> {
    /// The weight.
    pub w: &'a T,
    /// The bias.
    pub b: &'a T,
}

/// The tensors a layer's backward reads and writes.
#[derive(Clone, Copy, Debug)]
pub struct Grad<'a, T> {
    /// What the forward read.
    pub x: &'a T,
    /// What the forward wrote.
    pub y: &'a T,
    /// The gradient of `y` (conv and linear turn it into that of the pre-activation, in place).
    pub dy: &'a T,
    /// Where the gradient of `x` goes (overwritten), if anyone needs it.
    pub dx: Option<&'a T>,
}

/// A batch normalisation's state besides γ and β: the running statistics `[C]` (buffers, not
/// parameters: no gradient, no momentum, saved in checkpoints beside them) and what its
/// forward keeps for backward.
#[derive(Clone, Copy, Debug)]
pub struct BnState<'a, T> {
    /// The running mean `[C]`.
    pub mean: &'a T,
    /// The running (unbiased) variance `[C]`.
    pub var: &'a T,
    /// `[2,C]`: the mean and `1/√(var + ε)` the last forward normalised with.
    pub saved: &'a T,
}

impl Mode {
    /// Whether batch normalisation uses the batch's statistics and moves the running ones:
    /// every training pass, with or without dropout.
    pub fn batch_stats(&self) -> bool {
        matches!(self, Mode::Train(_))
    }
}

/// The ops of the network on one engine. `Buf` is the engine's f32 buffer; it knows its
/// length, and the op's shape struct says how to read it.
pub trait Backend {
    /// A buffer of f32 values on this engine.
    type Buf;
    /// What can go wrong on this engine.
    type Error: std::error::Error + Send + Sync + 'static;

    /// A zero-filled buffer of `len` values; `label` (`"<block>.<role>"`) names it in errors
    /// and debuggers.
    fn alloc(&mut self, len: usize, label: &str) -> Result<Self::Buf, Self::Error>;
    /// Overwrites `dst` with `data` (same length), in order with the ops around it.
    fn upload(&mut self, dst: &Self::Buf, data: &[f32]) -> Result<(), Self::Error>;
    /// Overwrites `dst` with class indices (same length as `dst`), as the loss reads them.
    fn upload_labels(&mut self, dst: &Self::Buf, labels: &[i32]) -> Result<(), Self::Error>;
    /// A copy of `src` as of the work submitted so far.
    fn download(&mut self, src: &Self::Buf) -> Result<Vec<f32>, Self::Error>;
    /// Names the block the following ops belong to (per-kernel timing); no-op by default.
    fn scope(&mut self, _block: &'static str) {}
    /// `dst ← src` (same length).
    fn copy(&mut self, src: &Self::Buf, dst: &Self::Buf) -> Result<(), Self::Error>;

    /// `y = act(w ⋆ x + b)`: x `[N,Cin,H,W]`, y `[N,Cout,OH,OW]`.
    fn conv_forward(
        &mut self,
        s: &ConvShape,
        act: Activation,
        x: &Self::Buf,
        p: Pair<'_, Self::Buf>,
        y: &Self::Buf,
    ) -> Result<(), Self::Error>;
    /// The gradients of [`Backend::conv_forward`] into `g` and `t.dx`.
    fn conv_backward(
        &mut self,
        s: &ConvShape,
        act: Activation,
        t: Grad<'_, Self::Buf>,
        w: &Self::Buf,
        g: Pair<'_, Self::Buf>,
    ) -> Result<(), Self::Error>;
    /// `y = act(x·wᵀ + b)` (no activation: fc8): x `[N,Fin]`, y `[N,Fout]`.
    fn linear_forward(
        &mut self,
        s: &LinearShape,
        act: Option<Activation>,
        x: &Self::Buf,
        p: Pair<'_, Self::Buf>,
        y: &Self::Buf,
    ) -> Result<(), Self::Error>;
    /// The gradients of [`Backend::linear_forward`] into `g` and `t.dx`.
    fn linear_backward(
        &mut self,
        s: &LinearShape,
        act: Option<Activation>,
        t: Grad<'_, Self::Buf>,
        w: &Self::Buf,
        g: Pair<'_, Self::Buf>,
    ) -> Result<(), Self::Error>;
    /// Cross-channel LRN of `[N,C,H,W]`; `saved` (same length) keeps what backward needs.
    fn lrn_forward(
        &mut self,
        p: &LrnParams,
        dims: [usize; 4],
        x: &Self::Buf,
        y: &Self::Buf,
        saved: &Self::Buf,
    ) -> Result<(), Self::Error>;
    /// The gradient of [`Backend::lrn_forward`] into `t.dx` (a no-op without one).
    fn lrn_backward(
        &mut self,
        p: &LrnParams,
        dims: [usize; 4],
        t: Grad<'_, Self::Buf>,
        saved: &Self::Buf,
    ) -> Result<(), Self::Error>;
    /// Batch normalisation of `[N,C,H,W]` per channel (`crate::reference::batchnorm` has the
    /// formulas): `p` is (γ, β); in a [`Mode::batch_stats`] pass it normalises with the batch's
    /// statistics and moves the running ones of `st` towards them, otherwise with the running
    /// ones; either way `st.saved` keeps what it normalised with.
    fn bn_forward(
        &mut self,
        s: &BnShape,
        mode: Mode,
        x: &Self::Buf,
        p: Pair<'_, Self::Buf>,
        st: BnState<'_, Self::Buf>,
        y: &Self::Buf,
    ) -> Result<(), Self::Error>;
    /// The gradients of [`Backend::bn_forward`] run in `mode`: (dγ, dβ) into `g`, and `t.dx`
    /// when there is one. `gamma` is γ, `saved` the forward's.
    fn bn_backward(
        &mut self,
        s: &BnShape,
        mode: Mode,
        t: Grad<'_, Self::Buf>,
        gamma: &Self::Buf,
        saved: &Self::Buf,
        g: Pair<'_, Self::Buf>,
    ) -> Result<(), Self::Error>;
    /// A buffer for what max pooling of `s` keeps for its backward (`None`: backward
    /// recomputes from the input).
    fn pool_saved(&mut self, _s: &PoolShape) -> Result<Option<Self::Buf>, Self::Error> {
        Ok(None)
    }
    /// Max pooling; `saved` is [`Backend::pool_saved`]'s buffer.
    fn maxpool_forward(
        &mut self,
        s: &PoolShape,
        x: &Self::Buf,
        y: &Self::Buf,
        saved: Option<&Self::Buf>,
    ) -> Result<(), Self::Error>;
    /// Sends each window's gradient to its first maximum, into `t.dx` (a no-op without one).
    fn maxpool_backward(
        &mut self,
        s: &PoolShape,
        t: Grad<'_, Self::Buf>,
        saved: Option<&Self::Buf>,
    ) -> Result<(), Self::Error>;
    /// Inverted dropout in place: `v ← v · mask / (1 − p)`. The same call masks a gradient.
    fn dropout(&mut self, p: f32, seed: MaskSeed, v: &Self::Buf) -> Result<(), Self::Error>;
    /// Per-image (loss, top-1 hit, top-5 hit) `[N,3]` of logits `[N,K]` against labels `[N]`.
    fn softmax_xent_forward(
        &mut self,
        classes: usize,
        logits: &Self::Buf,
        labels: &Self::Buf,
        stats: &Self::Buf,
    ) -> Result<(), Self::Error>;
    /// The gradient of the mean cross-entropy to the logits, `[N,K]`.
    fn softmax_xent_backward(
        &mut self,
        classes: usize,
        logits: &Self::Buf,
        labels: &Self::Buf,
        dlogits: &Self::Buf,
    ) -> Result<(), Self::Error>;
    /// The paper's update on one tensor: `v ← μ·v − wd·lr·w − lr·g; w ← w + v`.
    fn sgd(
        &mut self,
        h: SgdHyper,
        w: &Self::Buf,
        v: &Self::Buf,
        g: &Self::Buf,
    ) -> Result<(), Self::Error>;
}
