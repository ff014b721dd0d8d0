//! The paper's two-GPU model: every layer's kernels (conv1…conv5) and neurons (fc6…fc8) split
//! in two columns, one per device, with the same math as [`super::Network`] on one device.
//! Like it, a loop over the layer list ([`super::layers`]), whose [`ColumnInput`] says how the
//! split feeds each layer.
//!
//! Where a layer reads both columns its input is exchanged: conv3 (and any conv with
//! `groups = 1` after conv1) gets the whole previous output, fc6 the whole flattened conv5;
//! every linear layer's output is exchanged after it, so fc7, fc8 and the loss read whole
//! tensors (both devices compute the loss). LRN's window crosses the column boundary, so each
//! column's LRN runs over its channels plus a halo of `2·⌊size/2⌋` channels from the other
//! column (enough for the scale of the halo's inner channels, which the backward pass needs),
//! and the backward pass exchanges the same halo of output gradients. A layer that read both
//! columns gets, in backward, a partial input gradient from each column; each column sums its
//! own half (one exchange), while the layer's weight gradients are computed.
//!
//! Dropout masks are drawn over the whole `[N,F]` layer after the exchange (and applied to the
//! partial gradients before their sum, which commutes), so they equal the one-device masks.
//! Parameters split along their first (output) axis: column d holds the d-th half of every
//! tensor, which is the d-th half of its flat data. Exchanges go through the host
//! ([`exchange`]); the step waits at each one.
// `d` indexes the devices, their columns and their encoders together.
#![allow(clippy::needless_range_loop)]
mod backward;
mod buffers;
pub mod exchange;
mod forward;
mod moves;

use super::geometry::Geometry;
use super::layers::{self, Layer};
use super::params::{param_specs, ParamSpec, Params};
use super::walk::param_data;
use super::{ModelConfig, NetworkError};
use crate::gpu::step::{StepBuffer, StepScalars};
use crate::gpu::{self, BindCache, Gpu, GpuError, Recorder, Tensor};
use crate::shape::LrnParams;
use buffers::{halves, Column};
pub use exchange::ExchangeStats;
use exchange::Exchanger;
use std::cell::Cell;

type Result<T> = std::result::Result<T, NetworkError>;

/// The network split over two devices for a fixed batch size.
pub struct ColumnNetwork {
    /// The configuration.
    pub config: ModelConfig,
    /// The whole model's layer shapes.
    pub geometry: Geometry,
    gpus: [Gpu; 2],
    specs: Vec<ParamSpec>,
    layers: Vec<Layer>,
    cols: [Column; 2],
    ex: Exchanger,
    caches: [BindCache; 2],
    steps: [StepBuffer; 2],
    step_values: Cell<StepScalars>,
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
        let geometry = Geometry::new(config, batch)?;
        let specs = param_specs(config)?;
        for s in &specs {
            halves(&format!("the first axis of {}", s.name), s.shape[0])?;
        }
        let lrn = LrnParams::default();
        let halo = 2 * (lrn.size / 2);
        let list = layers::layers(&geometry, lrn, config.activation);
        let input_len = geometry.input_len();
        let cols = [
            Column::new(&gpus[0], 0, &list, &specs, input_len, halo)?,
            Column::new(&gpus[1], 1, &list, &specs, input_len, halo)?,
        ];
        let steps = [0, 1].map(|d| StepBuffer::new(&gpus[d], &StepScalars::default()));
        let net = ColumnNetwork {
            config: config.clone(),
            geometry,
            gpus,
            specs,
            layers: list,
            cols,
            ex: Exchanger::default(),
            caches: [BindCache::new(), BindCache::new()],
            steps,
            step_values: Cell::new(StepScalars::default()),
        };
        net.upload_params(params)?;
        Ok(net)
    }

    /// Images per batch.
    pub fn batch(&self) -> usize {
        self.geometry.batch
    }

    /// Device `d` (0 or 1).
    pub fn gpu(&self, d: usize) -> &Gpu {
        &self.gpus[d]
    }

    /// Both devices.
    pub fn gpus(&self) -> &[Gpu; 2] {
        &self.gpus
    }

    /// Column `d`'s input `[N,3,I,I]`: both columns take the same images.
    pub fn input(&self, d: usize) -> &Tensor {
        &self.cols[d].input
    }

    /// Per-image (loss, top-1 hit, top-5 hit) `[N,3]` on device 0 after [`Self::record_loss`].
    pub fn stats(&self) -> &Tensor {
        &self.cols[0].stats
    }

    /// The whole logits `[N,classes]` on column `d` after a forward pass.
    fn logits_of(&self, d: usize) -> Result<&Tensor> {
        self.cols[d]
            .layers
            .last()
            .and_then(|l| l.full_out.as_ref())
            .ok_or_else(|| {
                NetworkError::Gpu(GpuError::Invalid {
                    op: "columns",
                    reason: "the layer list does not end in a linear layer".into(),
                })
            })
    }

    /// The whole logits `[N,classes]` on device 0 after a forward pass.
    pub fn logits(&self) -> &Tensor {
        // The layer list always ends in fc8 (a linear layer), which has a whole output.
        self.logits_of(0).unwrap_or(&self.cols[0].d_logits)
    }

    /// Exchange counters since the last call.
    pub fn take_exchange_stats(&self) -> ExchangeStats {
        self.ex.take_stats()
    }

    fn upload_set(&self, pick: impl Fn(&Column) -> &Vec<Tensor>, src: &Params) -> Result<()> {
        for (i, spec) in self.specs.iter().enumerate() {
            let data = param_data(src, spec)?;
            let half = spec.len() / 2;
            for d in 0..2 {
                pick(&self.cols[d])[i].upload(&self.gpus[d], &data[d * half..(d + 1) * half])?;
            }
        }
        Ok(())
    }

    fn download_set(&self, pick: impl Fn(&Column) -> &Vec<Tensor>) -> Result<Params> {
        let mut out = Params::zeros(&self.config)?;
        for (i, dst) in out.tensors.iter_mut().enumerate() {
            let mut data = pick(&self.cols[0])[i].download(&self.gpus[0])?;
            data.extend(pick(&self.cols[1])[i].download(&self.gpus[1])?);
            dst.data = data;
        }
        Ok(out)
    }

    /// Replaces the parameters (the whole model; each column takes its half).
    pub fn upload_params(&self, params: &Params) -> Result<()> {
        self.upload_set(|c| &c.params, params)
    }

    /// Replaces the SGD momentum.
    pub fn upload_momentum(&self, momentum: &Params) -> Result<()> {
        self.upload_set(|c| &c.momentum, momentum)
    }

    /// The whole model's parameters, both columns joined.
    pub fn download_params(&self) -> Result<Params> {
        self.download_set(|c| &c.params)
    }

    /// The whole model's momentum.
    pub fn download_momentum(&self) -> Result<Params> {
        self.download_set(|c| &c.momentum)
    }

    /// The gradients of the last backward pass (tests).
    pub fn download_grads(&self) -> Result<Params> {
        self.download_set(|c| &c.grads)
    }

    /// Writes the batch's labels to both devices before the next submit.
    pub fn upload_labels(&self, labels: &[i32]) -> Result<()> {
        if labels.len() != self.batch() {
            return Err(GpuError::Invalid {
                op: "labels",
                reason: format!("{} labels for a batch of {}", labels.len(), self.batch()),
            }
            .into());
        }
        let words: Vec<u32> = labels.iter().map(|&l| l as u32).collect();
        for d in 0..2 {
            self.gpus[d].queue.write_buffer(
                &self.cols[d].labels.buffer,
                0,
                bytemuck::cast_slice(&words),
            );
        }
        Ok(())
    }

    /// A recorder into `enc` on device `d`, with that device's bind-group cache.
    fn rec<'a>(&'a self, d: usize, enc: &'a mut wgpu::CommandEncoder) -> Recorder<'a> {
        Recorder::new(&self.gpus[d], enc).with_cache(&self.caches[d])
    }

    fn write_step(&self, f: impl FnOnce(&mut StepScalars)) {
        let mut v = self.step_values.get();
        f(&mut v);
        self.step_values.set(v);
        for d in 0..2 {
            self.steps[d].write(&self.gpus[d], &v);
        }
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

    /// Records the per-image loss and hits of the last forward pass (both devices compute
    /// them; device 0's are [`Self::stats`]).
    pub fn record_loss(&self, encs: &mut [wgpu::CommandEncoder; 2]) -> Result<()> {
        let l = self.geometry.fcs[2].linear;
        for d in 0..2 {
            let c = &self.cols[d];
            let logits = self.logits_of(d)?;
            let mut rec = self.rec(d, &mut encs[d]);
            rec.set_scope("loss");
            gpu::softmax_xent::forward(&mut rec, l.n, l.fout, logits, &c.labels, &c.stats)?;
        }
        Ok(())
    }

    /// Records one SGD step on each column's parameters (the update of [`super::Network`]).
    pub fn record_sgd(
        &self,
        encs: &mut [wgpu::CommandEncoder; 2],
        hyper: gpu::sgd::SgdHyper,
    ) -> Result<()> {
        self.write_step(|v| {
            v.lr = hyper.lr;
            v.momentum = hyper.momentum;
            v.weight_decay = hyper.weight_decay;
        });
        for d in 0..2 {
            let c = &self.cols[d];
            let mut rec = self.rec(d, &mut encs[d]);
            rec.set_scope("sgd");
            for ((w, v), g) in c.params.iter().zip(&c.momentum).zip(&c.grads) {
                gpu::sgd::step(&mut rec, w, v, g, &self.steps[d])?;
            }
        }
        Ok(())
    }
}
