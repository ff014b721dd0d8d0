//! The network on one GPU: the [`Walk`] over the GPU engine, every buffer allocated once for a
//! batch size, and the forward, loss, backward and SGD passes recorded into the caller's
//! encoder through a [`Recorder`] that takes its bind groups from the network's own
//! [`BindCache`], so a training step is one submit and, after the first, allocates nothing.
use super::walk::{NetworkError, Walk};
use super::{Geometry, ModelConfig, Params};
use crate::backend::{Dropout, Mode, SgdHyper};
use crate::gpu::backend::GpuPass;
use crate::gpu::step::{StepBuffer, StepScalars};
use crate::gpu::{BindCache, Gpu, Recorder, Tensor};
use std::cell::Cell;

type Result<T> = std::result::Result<T, NetworkError>;

/// The network on one device for a fixed batch size.
pub struct Network {
    /// The configuration.
    pub config: ModelConfig,
    /// Layer shapes for [`Network::batch`].
    pub geometry: Geometry,
    walk: Walk<Tensor>,
    cache: BindCache,
    step: StepBuffer,
    step_values: Cell<StepScalars>,
}

impl Network {
    /// Allocates every buffer for `batch` images and uploads `params` (momentum starts at 0).
    pub fn new(gpu: &Gpu, config: &ModelConfig, batch: usize, params: &Params) -> Result<Network> {
        let step = StepBuffer::new(gpu, &StepScalars::default());
        let step_values = Cell::new(StepScalars::default());
        let walk = Walk::new(&mut GpuPass::idle(gpu, &step, &step_values), config, batch)?;
        let net = Network {
            config: config.clone(),
            geometry: walk.geometry.clone(),
            walk,
            cache: BindCache::new(),
            step,
            step_values,
        };
        net.upload_params(gpu, params)?;
        Ok(net)
    }

    /// Images per batch.
    pub fn batch(&self) -> usize {
        self.walk.batch()
    }

    /// A recorder into `enc` that takes bind groups from this network's cache.
    pub fn recorder<'a>(&'a self, gpu: &'a Gpu, enc: &'a mut wgpu::CommandEncoder) -> Recorder<'a> {
        Recorder::new(gpu, enc).with_cache(&self.cache)
    }

    /// Bind groups the network holds (a test checks this stops growing after one step).
    pub fn cached_bind_groups(&self) -> usize {
        self.cache.len()
    }

    fn idle<'r>(&'r self, gpu: &'r Gpu) -> GpuPass<'r, 'r> {
        GpuPass::idle(gpu, &self.step, &self.step_values)
    }

    fn pass<'r, 'a>(&'r self, rec: &'r mut Recorder<'a>) -> GpuPass<'r, 'a> {
        GpuPass::new(rec, &self.step, &self.step_values)
    }

    /// The input tensor `[N,3,I,I]` (preprocessed images): write it, or record into it.
    pub fn input(&self) -> &Tensor {
        self.walk.input()
    }

    /// The logits `[N,classes]` of the last forward pass.
    pub fn logits(&self) -> &Tensor {
        self.walk.logits()
    }

    /// Per-image (loss, top-1 hit, top-5 hit) `[N,3]` of the last [`Network::record_loss`].
    pub fn stats(&self) -> &Tensor {
        self.walk.stats()
    }

    /// The activations `alexnet forward` reports, by name, with their shapes: conv1..conv5
    /// (block outputs), fc6 and fc7 (after the activation, before dropout) and logits.
    pub fn activations(&self) -> Vec<(&'static str, Vec<usize>, &Tensor)> {
        self.walk.activations()
    }

    /// Freezes `block` and every layer before it (`train --freeze`, [`Walk::freeze_through`]).
    pub fn freeze_through(&mut self, block: &str) -> Result<()> {
        self.walk.freeze_through(block)
    }

    /// Replaces the parameters.
    pub fn upload_params(&self, gpu: &Gpu, params: &Params) -> Result<()> {
        self.walk.upload_params(&mut self.idle(gpu), params)
    }

    /// Replaces the SGD momentum (resuming a run).
    pub fn upload_momentum(&self, gpu: &Gpu, momentum: &Params) -> Result<()> {
        self.walk.upload_momentum(&mut self.idle(gpu), momentum)
    }

    /// Reads the parameters back (checkpoints).
    pub fn download_params(&self, gpu: &Gpu) -> Result<Params> {
        self.walk.download_params(&mut self.idle(gpu))
    }

    /// Reads the momentum back (checkpoints).
    pub fn download_momentum(&self, gpu: &Gpu) -> Result<Params> {
        self.walk.download_momentum(&mut self.idle(gpu))
    }

    /// Reads the gradients of the last backward pass back (data-parallel replicas, tests).
    pub fn download_grads(&self, gpu: &Gpu) -> Result<Params> {
        self.walk.download_grads(&mut self.idle(gpu))
    }

    /// Replaces the gradients (a data-parallel step's all-reduced mean, before
    /// [`Network::record_sgd`]).
    pub fn upload_grads(&self, gpu: &Gpu, grads: &Params) -> Result<()> {
        self.walk.upload_grads(&mut self.idle(gpu), grads)
    }

    /// Makes this network a replica holding rows `first_row..` of a larger global batch
    /// ([`Walk::set_first_row`]): its dropout masks are those rows of the global batch's.
    pub fn set_first_row(&mut self, first_row: usize) {
        self.walk.set_first_row(first_row);
    }

    /// Writes the batch's labels (class indices) before the next submit.
    pub fn upload_labels(&self, gpu: &Gpu, labels: &[i32]) -> Result<()> {
        self.walk.upload_labels(&mut self.idle(gpu), labels)
    }

    /// Records the forward pass from [`Network::input`] to the logits. With `dropout`, the
    /// training view (fc6 and fc7 masked, its seeds written for the next submit); without, the
    /// evaluation view.
    pub fn record_forward(&self, rec: &mut Recorder<'_>, dropout: Option<Dropout>) -> Result<()> {
        self.walk.forward(&mut self.pass(rec), Mode::from(dropout))
    }

    /// Records the per-image loss and top-1/top-5 hits of the last forward pass against the
    /// uploaded labels into [`Network::stats`].
    pub fn record_loss(&self, rec: &mut Recorder<'_>) -> Result<()> {
        self.walk.loss(&mut self.pass(rec))
    }

    /// Records the backward pass of the mean cross-entropy: every parameter's gradient (written,
    /// not accumulated). `dropout` must be what the forward pass used.
    pub fn record_backward(&self, rec: &mut Recorder<'_>, dropout: Option<Dropout>) -> Result<()> {
        self.walk.backward(&mut self.pass(rec), Mode::from(dropout))
    }

    /// Records one SGD step on every parameter from the last backward pass (the paper's
    /// update: `v ← μ·v − wd·lr·w − lr·g; w ← w + v`), writing `h` for the next submit.
    pub fn record_sgd(&self, rec: &mut Recorder<'_>, h: SgdHyper) -> Result<()> {
        self.walk.sgd(&mut self.pass(rec), h)
    }
}
