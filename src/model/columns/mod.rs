//! The paper's two-GPU model: every layer's kernels (conv1…conv5) and neurons (fc6…fc8) split
//! in two columns, one per engine, with the same math as one device.
//!
//! The split is a wrapper, [`Columns`], that is itself a [`crate::backend::Backend`] over two
//! engines (any [`ColumnEngine`]: two GPU devices, or two CPU or reference engines in the
//! tests), so the network walk ([`super::walk`]) drives it as it drives one engine. The
//! wrapper owns only what is the split's: where each tensor's halves live ([`ColBuf`]), the
//! exchanges where a layer reads both columns (conv3 and the fc layers gather their input;
//! their partial input gradients are summed), LRN's halo, and dropout's whole-tensor masks
//! ([`ops`] says which op does what). Exchanges go through the host; the step waits at each.
//! Parameters split along their first (output) axis: column d holds the d-th half of every
//! tensor, which is the d-th half of its flat data.
mod buf;
mod engine;
mod ops;
mod split;
#[cfg(test)]
mod tests;

pub use buf::{ColBuf, Form, LrnExt};
pub use engine::{ChannelCopy, ColumnEngine};
pub use split::{Columns, ColumnsError, ExchangeStats};

use super::geometry::Geometry;
use super::params::param_specs;
use super::walk::Walk;
use super::{ModelConfig, NetworkError, Params};
use crate::backend::{Dropout, Mode, SgdHyper};
use crate::gpu::backend::GpuPass;
use crate::gpu::step::{StepBuffer, StepScalars};
use crate::gpu::{BindCache, Gpu, Recorder, Tensor};
use std::cell::Cell;

type Result<T> = std::result::Result<T, NetworkError>;

/// Refuses a model the split cannot halve, naming the tensor: every parameter's first axis
/// (the widths, the classes) must be even.
pub fn check_split(config: &ModelConfig) -> Result<()> {
    for s in param_specs(config)? {
        if s.shape[0] % 2 != 0 {
            return Err(ColumnsError::Odd {
                layer: s.name.clone(),
                what: "the first axis",
                n: s.shape[0],
            }
            .into());
        }
    }
    Ok(())
}

/// The network split over two GPU devices for a fixed batch size: the walk over
/// [`Columns`] of two [`GpuPass`]es, and what each device keeps between passes.
pub struct ColumnNetwork {
    /// The configuration.
    pub config: ModelConfig,
    /// The whole model's layer shapes.
    pub geometry: Geometry,
    gpus: [Gpu; 2],
    walk: Walk<ColBuf<Tensor>>,
    caches: [BindCache; 2],
    steps: [StepBuffer; 2],
    values: [Cell<StepScalars>; 2],
    stats: Cell<ExchangeStats>,
}

impl ColumnNetwork {
    /// Allocates both columns for `batch` images on `gpus` and uploads `params` (the whole
    /// model, in the ordinary names; momentum starts at 0).
    pub fn new(
        gpus: [Gpu; 2],
        config: &ModelConfig,
        batch: usize,
        params: &Params,
    ) -> Result<ColumnNetwork> {
        check_split(config)?;
        let steps = [0, 1].map(|d| StepBuffer::new(&gpus[d], &StepScalars::default()));
        let values = [0, 1].map(|_| Cell::new(StepScalars::default()));
        let walk = {
            let mut be =
                Columns::new([0, 1].map(|d| GpuPass::idle(&gpus[d], &steps[d], &values[d])));
            let walk = Walk::new(&mut be, config, batch)?;
            // The input stages write the images into each device's whole input, and the
            // trainer reads the statistics and logits whole on device 0: make those now.
            for b in [walk.input(), walk.labels(), walk.stats(), walk.logits()] {
                be.whole_store(b)?;
            }
            walk.input().form.set(Form::Whole);
            // Parameters are split in one row: uploads go straight to each column's half,
            // with no whole copy kept on either device.
            for p in walk.params() {
                be.half_store(p, 1)?;
            }
            walk
        };
        let net = ColumnNetwork {
            config: config.clone(),
            geometry: walk.geometry.clone(),
            gpus,
            walk,
            caches: [BindCache::new(), BindCache::new()],
            steps,
            values,
            stats: Cell::new(ExchangeStats::default()),
        };
        net.upload_params(params)?;
        Ok(net)
    }

    /// Freezes `block` and every layer before it (`train --freeze`, [`Walk::freeze_through`]):
    /// the walk skips their backward and SGD, on both columns alike.
    pub fn freeze_through(&mut self, block: &str) -> Result<()> {
        self.walk.freeze_through(block)
    }

    /// Images per batch.
    pub fn batch(&self) -> usize {
        self.walk.batch()
    }

    /// Device `d` (0 or 1).
    pub fn gpu(&self, d: usize) -> &Gpu {
        &self.gpus[d]
    }

    /// Both devices.
    pub fn gpus(&self) -> &[Gpu; 2] {
        &self.gpus
    }

    fn whole_on<'a>(&self, b: &'a ColBuf<Tensor>, d: usize) -> &'a Tensor {
        // `new` made these whole stores; the walk never drops a store.
        b.whole_on(d)
            .unwrap_or_else(|| unreachable!("whole store of {} made in new", b.label))
    }

    /// Device `d`'s input `[N,3,I,I]`: both columns take the same images.
    pub fn input(&self, d: usize) -> &Tensor {
        self.whole_on(self.walk.input(), d)
    }

    /// Per-image (loss, top-1 hit, top-5 hit) `[N,3]` on device 0 after [`Self::record_loss`].
    pub fn stats(&self) -> &Tensor {
        self.whole_on(self.walk.stats(), 0)
    }

    /// The whole logits `[N,classes]` on device 0 after [`Self::record_loss`] (which gathers
    /// them).
    pub fn logits(&self) -> &Tensor {
        self.whole_on(self.walk.logits(), 0)
    }

    /// Exchange counters since the last call.
    pub fn take_exchange_stats(&self) -> ExchangeStats {
        self.stats.take()
    }

    /// The wrapper over both devices without recorders (allocating, uploads, downloads).
    fn idle(&self) -> Columns<GpuPass<'_, '_>> {
        Columns::new([0, 1].map(|d| GpuPass::idle(&self.gpus[d], &self.steps[d], &self.values[d])))
    }

    /// Runs `f` over the wrapper recording into `encs` (submitted at each exchange, going on
    /// after it), and adds its exchange counts.
    fn run(
        &self,
        encs: &mut [wgpu::CommandEncoder; 2],
        f: impl FnOnce(&Walk<ColBuf<Tensor>>, &mut Columns<GpuPass<'_, '_>>) -> Result<()>,
    ) -> Result<()> {
        let [e0, e1] = encs;
        let mut r0 = Recorder::new(&self.gpus[0], e0).with_cache(&self.caches[0]);
        let mut r1 = Recorder::new(&self.gpus[1], e1).with_cache(&self.caches[1]);
        let mut be = Columns::new([
            GpuPass::new(&mut r0, &self.steps[0], &self.values[0]),
            GpuPass::new(&mut r1, &self.steps[1], &self.values[1]),
        ]);
        let r = f(&self.walk, &mut be);
        let mut s = self.stats.get();
        s.add(be.take_stats());
        self.stats.set(s);
        r
    }

    /// Replaces the parameters (the whole model; each column takes its half).
    pub fn upload_params(&self, params: &Params) -> Result<()> {
        self.walk.upload_params(&mut self.idle(), params)
    }

    /// Replaces the SGD momentum.
    pub fn upload_momentum(&self, momentum: &Params) -> Result<()> {
        self.walk.upload_momentum(&mut self.idle(), momentum)
    }

    /// The whole model's parameters, both columns joined.
    pub fn download_params(&self) -> Result<Params> {
        self.walk.download_params(&mut self.idle())
    }

    /// The whole model's momentum.
    pub fn download_momentum(&self) -> Result<Params> {
        self.walk.download_momentum(&mut self.idle())
    }

    /// The gradients of the last backward pass (tests).
    pub fn download_grads(&self) -> Result<Params> {
        self.walk.download_grads(&mut self.idle())
    }

    /// Replaces the gradients a backward pass left (a data-parallel replica's: the mean over
    /// every replica), each column taking its half, so the next [`Self::record_sgd`] steps
    /// with them.
    pub fn upload_grads(&self, grads: &Params) -> Result<()> {
        self.walk.upload_grads(&mut self.idle(), grads)
    }

    /// Makes this network a data-parallel replica holding rows `first_row..` of a larger
    /// global batch ([`Walk::set_first_row`]). The wrapper masks dropout on the whole `[N,F]`
    /// tensor on both columns with the walk's seed, so the row offset is all it needs: the
    /// masks are those rows of the global batch's one-device masks.
    pub fn set_first_row(&mut self, first_row: usize) {
        self.walk.set_first_row(first_row);
    }

    /// Writes the batch's labels to both devices before the next submit.
    pub fn upload_labels(&self, labels: &[i32]) -> Result<()> {
        self.walk.upload_labels(&mut self.idle(), labels)
    }

    /// New encoders, one per device.
    pub fn encoders(&self, label: &str) -> [wgpu::CommandEncoder; 2] {
        [self.gpus[0].encoder(label), self.gpus[1].encoder(label)]
    }

    /// Submits both encoders; returns device 0's submission.
    pub fn submit(&self, encs: [wgpu::CommandEncoder; 2]) -> wgpu::SubmissionIndex {
        let [e0, e1] = encs;
        self.gpus[1].submit(e1);
        self.gpus[0].submit(e0)
    }

    /// Records the forward pass on both columns from their inputs to the logits. With
    /// `dropout`, the training view; without, the evaluation view.
    pub fn record_forward(
        &self,
        encs: &mut [wgpu::CommandEncoder; 2],
        dropout: Option<Dropout>,
    ) -> Result<()> {
        self.run(encs, |w, be| w.forward(be, Mode::from(dropout)))
    }

    /// Records the per-image loss and hits of the last forward pass (both devices compute
    /// them on the whole logits; device 0's are [`Self::stats`]).
    pub fn record_loss(&self, encs: &mut [wgpu::CommandEncoder; 2]) -> Result<()> {
        self.run(encs, |w, be| w.loss(be))
    }

    /// Records the backward pass: every column's parameter gradients (written, not
    /// accumulated). `dropout` must be what the forward pass used.
    pub fn record_backward(
        &self,
        encs: &mut [wgpu::CommandEncoder; 2],
        dropout: Option<Dropout>,
    ) -> Result<()> {
        self.run(encs, |w, be| w.backward(be, Mode::from(dropout)))
    }

    /// Records one SGD step on each column's parameters.
    pub fn record_sgd(&self, encs: &mut [wgpu::CommandEncoder; 2], hyper: SgdHyper) -> Result<()> {
        self.run(encs, |w, be| w.sgd(be, hyper))
    }
}
