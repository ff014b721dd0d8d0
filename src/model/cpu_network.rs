//! The network on the CPU engine: the [`Walk`] over a [`CpuBackend`], with the host-side views
//! (logits, statistics, activations as slices) the trainer, `alexnet forward` and the tests
//! read without a copy. Every op runs when it is called.
use super::walk::{NetworkError, Walk};
use super::{Geometry, ModelConfig, Params};
use crate::backend::{Mode, SgdHyper};
use crate::cpu::{CpuBackend, CpuBuf, CpuDevice};

type Result<T> = std::result::Result<T, NetworkError>;

/// The network on host memory for a fixed batch size.
#[derive(Debug)]
pub struct CpuNetwork {
    /// The configuration.
    pub config: ModelConfig,
    /// Layer shapes for [`CpuNetwork::batch`].
    pub geometry: Geometry,
    be: CpuBackend,
    walk: Walk<CpuBuf>,
}

impl CpuNetwork {
    /// Allocates every buffer for `batch` images on `device` and copies `params` in
    /// (momentum starts at 0).
    pub fn new(
        device: &CpuDevice,
        config: &ModelConfig,
        batch: usize,
        params: &Params,
    ) -> Result<CpuNetwork> {
        let mut be = CpuBackend::new(device);
        let walk = Walk::new(&mut be, config, batch)?;
        walk.upload_params(&mut be, params)?;
        Ok(CpuNetwork {
            config: config.clone(),
            geometry: walk.geometry.clone(),
            be,
            walk,
        })
    }

    /// Images per batch.
    pub fn batch(&self) -> usize {
        self.walk.batch()
    }

    /// The worker pool it runs on.
    pub fn device(&self) -> &CpuDevice {
        self.be.device()
    }

    /// Replaces the parameters.
    pub fn upload_params(&mut self, params: &Params) -> Result<()> {
        self.walk.upload_params(&mut self.be, params)
    }

    /// Replaces the SGD momentum (resuming a run).
    pub fn upload_momentum(&mut self, momentum: &Params) -> Result<()> {
        self.walk.upload_momentum(&mut self.be, momentum)
    }

    /// Freezes `block` and every layer before it (`train --freeze`, [`Walk::freeze_through`]).
    pub fn freeze_through(&mut self, block: &str) -> Result<()> {
        self.walk.freeze_through(block)
    }

    /// A copy of the parameters (checkpoints).
    pub fn download_params(&mut self) -> Result<Params> {
        self.walk.download_params(&mut self.be)
    }

    /// A copy of the momentum (checkpoints).
    pub fn download_momentum(&mut self) -> Result<Params> {
        self.walk.download_momentum(&mut self.be)
    }

    /// Replaces the gradients (a data-parallel step's all-reduced sum, before
    /// [`CpuNetwork::sgd`]).
    pub fn upload_grads(&mut self, grads: &Params) -> Result<()> {
        self.walk.upload_grads(&mut self.be, grads)
    }

    /// Makes this network a replica holding rows `first_row..` of a larger global batch
    /// ([`Walk::set_first_row`]).
    pub fn set_first_row(&mut self, first_row: usize) {
        self.walk.set_first_row(first_row);
    }

    /// A copy of the gradients of the last backward pass (tests).
    pub fn download_grads(&mut self) -> Result<Params> {
        self.walk.download_grads(&mut self.be)
    }

    /// The input `[N,3,I,I]` (preprocessed images), to write into.
    pub fn input_mut(&mut self) -> &mut [f32] {
        self.be.slice_mut(self.walk.input())
    }

    /// Copies preprocessed images `[N,3,I,I]` into the input.
    pub fn upload_input(&mut self, images: &[f32]) -> Result<()> {
        self.walk.upload_input(&mut self.be, images)
    }

    /// Sets the batch's labels (class indices in `0..classes`) for the next loss and backward.
    pub fn upload_labels(&mut self, labels: &[i32]) -> Result<()> {
        self.walk.upload_labels(&mut self.be, labels)
    }

    /// The logits `[N,classes]` of the last forward pass.
    pub fn logits(&self) -> &[f32] {
        self.be.slice(self.walk.logits())
    }

    /// Per-image (loss, top-1 hit, top-5 hit) `[N,3]` of the last [`CpuNetwork::loss`].
    pub fn stats(&self) -> &[f32] {
        self.be.slice(self.walk.stats())
    }

    /// The activations `alexnet forward` reports, by name, with their shapes.
    pub fn activations(&self) -> Vec<(&'static str, Vec<usize>, &[f32])> {
        self.walk
            .activations()
            .into_iter()
            .map(|(n, dims, b)| (n, dims, self.be.slice(b)))
            .collect()
    }

    /// The forward pass from the input to the logits in `mode`'s view (an
    /// `Option<Dropout>` converts: `None` is evaluation).
    pub fn forward(&mut self, mode: impl Into<Mode>) -> Result<()> {
        self.walk.forward(&mut self.be, mode.into())
    }

    /// The per-image loss and top-1/top-5 hits of the last forward pass against the labels,
    /// into [`CpuNetwork::stats`].
    pub fn loss(&mut self) -> Result<()> {
        self.walk.loss(&mut self.be)
    }

    /// The backward pass of the mean cross-entropy: every parameter's gradient (written, not
    /// accumulated). `mode` must be what the forward pass used.
    pub fn backward(&mut self, mode: impl Into<Mode>) -> Result<()> {
        self.walk.backward(&mut self.be, mode.into())
    }

    /// [`CpuNetwork::backward`], handing each layer's parameter gradients to
    /// `ready(tensor index, values)` as soon as they are final, in
    /// [`CpuNetwork::backward_order`] (the CPU engine runs each op to completion, so the
    /// values are the finished gradients while the layers below are still to run).
    pub fn backward_observed(
        &mut self,
        mode: impl Into<Mode>,
        ready: &mut dyn FnMut(usize, &[f32]),
    ) -> Result<()> {
        let walk = &self.walk;
        walk.backward_observed(&mut self.be, mode.into(), &mut |be, tensors| {
            for &i in tensors {
                ready(i, be.slice(&walk.grads()[i]));
            }
            Ok(())
        })
    }

    /// The tensors [`CpuNetwork::backward_observed`] hands over, in its order
    /// ([`Walk::backward_order`]).
    pub fn backward_order(&self) -> Vec<usize> {
        self.walk.backward_order()
    }

    /// One SGD step on every parameter from the last backward pass.
    pub fn sgd(&mut self, h: SgdHyper) -> Result<()> {
        self.walk.sgd(&mut self.be, h)
    }
}
