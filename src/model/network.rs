//! The network on one GPU: every activation, gradient and parameter buffer allocated once for a
//! batch size, and the forward, loss, backward and SGD passes recorded into the caller's
//! encoder through a [`Recorder`] that takes its bind groups from the network's own
//! [`BindCache`], so a training step is one submit and, after the first, allocates nothing.
//!
//! The graph is [`super::layers`]'s list, looped over: forward in order, backward in reverse.
//! Each layer has an output buffer and an output-gradient buffer; a layer's backward writes
//! the gradient of its input straight into the previous layer's gradient buffer (fc6's into
//! conv5's pooling: the flatten is a view). Dropout writes a copy (`fc6.dropped`), so the
//! activation's own output stays intact for its backward and for `alexnet forward`; its
//! gradient is fc6's own buffer, masked in place.
use super::geometry::{Geometry, GeometryError};
use super::layers::{self, input_of, Layer, Op};
use super::params::{param_specs, ParamSpec, Params};
use super::ModelConfig;
use crate::gpu::dropout::SeedSlot;
use crate::gpu::sgd::SgdHyper;
use crate::gpu::step::{StepBuffer, StepScalars};
use crate::gpu::{self, BindCache, Gpu, GpuError, Recorder, Tensor};
use crate::shape::LrnParams;
use std::cell::Cell;

/// What can go wrong building or running the network.
#[derive(Debug, thiserror::Error)]
pub enum NetworkError {
    /// The configuration or batch is invalid.
    #[error(transparent)]
    Geometry(#[from] GeometryError),
    /// A kernel launch or readback failed.
    #[error(transparent)]
    Gpu(#[from] GpuError),
    /// Parameters given do not match the network.
    #[error("parameter `{name}` has {got} values, the network needs {expected}")]
    ParamShape {
        /// Tensor name.
        name: String,
        /// Values the network needs.
        expected: usize,
        /// Values given.
        got: usize,
    },
}

type Result<T> = std::result::Result<T, NetworkError>;

/// The values of `spec` in `src`, or [`NetworkError::ParamShape`] when missing or mis-sized.
pub(crate) fn param_data<'a>(src: &'a Params, spec: &ParamSpec) -> Result<&'a [f32]> {
    match src.get(&spec.name) {
        Some(t) if t.data.len() == spec.len() => Ok(&t.data),
        t => Err(NetworkError::ParamShape {
            name: spec.name.clone(),
            expected: spec.len(),
            got: t.map_or(0, |t| t.data.len()),
        }),
    }
}

/// Dropout of one training step: the probability and the mask seeds of fc6 and fc7
/// ([`super::seeds::dropout_seed`]).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Dropout {
    /// Probability of dropping a unit.
    pub p: f32,
    /// Seeds of the fc6 and fc7 masks.
    pub seeds: [u32; 2],
}

/// Buffers of one layer.
struct LayerBufs {
    /// Output `[N,…]` (a dropout layer's: the masked copy).
    y: Tensor,
    /// Gradient of the output; `None` for a dropout layer, whose gradient is its input
    /// layer's, masked in place.
    dy: Option<Tensor>,
    /// LRN's saved scale.
    scale: Option<Tensor>,
}

/// The network on one device for a fixed batch size.
pub struct Network {
    /// The configuration.
    pub config: ModelConfig,
    /// Layer shapes for [`Network::batch`].
    pub geometry: Geometry,
    layers: Vec<Layer>,
    specs: Vec<ParamSpec>,
    params: Vec<Tensor>,
    grads: Vec<Tensor>,
    momentum: Vec<Tensor>,
    input: Tensor,
    labels: Tensor,
    bufs: Vec<LayerBufs>,
    stats: Tensor,
    cache: BindCache,
    step: StepBuffer,
    step_values: Cell<StepScalars>,
}

impl Network {
    /// Allocates every buffer for `batch` images and uploads `params` (momentum starts at 0).
    pub fn new(gpu: &Gpu, config: &ModelConfig, batch: usize, params: &Params) -> Result<Network> {
        let geometry = Geometry::new(config, batch)?;
        let specs = param_specs(config)?;
        let list = layers::layers(&geometry, LrnParams::default(), config.activation);
        let mk = |len: usize, label: String| Tensor::zeros(gpu, len, &label);
        let mut p = Vec::with_capacity(specs.len());
        let mut g = Vec::with_capacity(specs.len());
        let mut v = Vec::with_capacity(specs.len());
        for s in &specs {
            p.push(mk(s.len(), format!("{}.param", s.name)));
            g.push(mk(s.len(), format!("{}.grad", s.name)));
            v.push(mk(s.len(), format!("{}.momentum", s.name)));
        }
        let bufs = list
            .iter()
            .map(|l| {
                let kind = match l.op {
                    Op::Conv { .. } => "conv",
                    Op::Lrn { .. } => "lrn",
                    Op::MaxPool(_) => "pool",
                    Op::Linear { .. } => "linear",
                    Op::Dropout { .. } => "dropped",
                };
                let len = l.out_len();
                LayerBufs {
                    y: mk(len, format!("{}.{kind}", l.block)),
                    dy: (!matches!(l.op, Op::Dropout { .. }))
                        .then(|| mk(len, format!("{}.d_{kind}", l.block))),
                    scale: matches!(l.op, Op::Lrn { .. })
                        .then(|| mk(len, format!("{}.lrn_scale", l.block))),
                }
            })
            .collect();
        let net = Network {
            config: config.clone(),
            input: mk(geometry.input_len(), "input".into()),
            labels: mk(batch, "labels".into()),
            stats: mk(batch * 3, "loss.stats".into()),
            geometry,
            layers: list,
            specs,
            params: p,
            grads: g,
            momentum: v,
            bufs,
            cache: BindCache::new(),
            step: StepBuffer::new(gpu, &StepScalars::default()),
            step_values: Cell::new(StepScalars::default()),
        };
        net.upload_params(gpu, params)?;
        Ok(net)
    }

    /// Images per batch.
    pub fn batch(&self) -> usize {
        self.geometry.batch
    }

    /// A recorder into `enc` that takes bind groups from this network's cache.
    pub fn recorder<'a>(&'a self, gpu: &'a Gpu, enc: &'a mut wgpu::CommandEncoder) -> Recorder<'a> {
        Recorder::new(gpu, enc).with_cache(&self.cache)
    }

    /// Bind groups the network holds (a test checks this stops growing after one step).
    pub fn cached_bind_groups(&self) -> usize {
        self.cache.len()
    }

    fn write_step(&self, gpu: &Gpu, f: impl FnOnce(&mut StepScalars)) {
        let mut v = self.step_values.get();
        f(&mut v);
        self.step_values.set(v);
        self.step.write(gpu, &v);
    }

    /// The input tensor `[N,3,I,I]` (preprocessed images): write it, or record into it.
    pub fn input(&self) -> &Tensor {
        &self.input
    }

    /// The logits `[N,classes]` of the last forward pass.
    pub fn logits(&self) -> &Tensor {
        &self.bufs[self.layers.len() - 1].y
    }

    /// Per-image (loss, top-1 hit, top-5 hit) `[N,3]` of the last [`Network::record_loss`].
    pub fn stats(&self) -> &Tensor {
        &self.stats
    }

    /// The activations `alexnet forward` reports, by name, with their shapes: conv1..conv5
    /// (block outputs), fc6 and fc7 (after the activation, before dropout) and logits.
    pub fn activations(&self) -> Vec<(&'static str, Vec<usize>, &Tensor)> {
        self.layers
            .iter()
            .zip(&self.bufs)
            .filter_map(|(l, b)| l.reports.map(|name| (name, l.out.clone(), &b.y)))
            .collect()
    }

    fn upload_set(&self, gpu: &Gpu, dst: &[Tensor], src: &Params) -> Result<()> {
        for (spec, t) in self.specs.iter().zip(dst) {
            t.upload(gpu, param_data(src, spec)?)?;
        }
        Ok(())
    }

    fn download_set(&self, gpu: &Gpu, src: &[Tensor]) -> Result<Params> {
        let mut out = Params::zeros(&self.config)?;
        for (t, dst) in src.iter().zip(out.tensors.iter_mut()) {
            dst.data = t.download(gpu)?;
        }
        Ok(out)
    }

    /// Replaces the parameters.
    pub fn upload_params(&self, gpu: &Gpu, params: &Params) -> Result<()> {
        self.upload_set(gpu, &self.params, params)
    }

    /// Replaces the SGD momentum (resuming a run).
    pub fn upload_momentum(&self, gpu: &Gpu, momentum: &Params) -> Result<()> {
        self.upload_set(gpu, &self.momentum, momentum)
    }

    /// Reads the parameters back (checkpoints).
    pub fn download_params(&self, gpu: &Gpu) -> Result<Params> {
        self.download_set(gpu, &self.params)
    }

    /// Reads the momentum back (checkpoints).
    pub fn download_momentum(&self, gpu: &Gpu) -> Result<Params> {
        self.download_set(gpu, &self.momentum)
    }

    /// Reads the gradients of the last backward pass back (tests).
    pub fn download_grads(&self, gpu: &Gpu) -> Result<Params> {
        self.download_set(gpu, &self.grads)
    }

    /// Writes the batch's labels (class indices) before the next submit.
    pub fn upload_labels(&self, gpu: &Gpu, labels: &[i32]) -> Result<()> {
        let words: Vec<u32> = labels.iter().map(|&l| l as u32).collect();
        if words.len() != self.batch() {
            return Err(GpuError::Invalid {
                op: "labels",
                reason: format!("{} labels for a batch of {}", words.len(), self.batch()),
            }
            .into());
        }
        gpu.queue
            .write_buffer(&self.labels.buffer, 0, bytemuck::cast_slice(&words));
        Ok(())
    }

    /// The output of the layer `layer i` reads: the previous layer's, or the input images.
    fn x(&self, i: usize, training: bool) -> &Tensor {
        match input_of(&self.layers, i, training) {
            Some(j) => &self.bufs[j].y,
            None => &self.input,
        }
    }

    /// The gradient buffer of layer `i`'s output (a dropout layer's is its input layer's).
    fn dy(&self, i: usize) -> &Tensor {
        let mut j = i;
        loop {
            if let Some(d) = &self.bufs[j].dy {
                return d;
            }
            // Only dropout layers have no buffer, and one never starts the list.
            j -= 1;
        }
    }

    /// Records the forward pass from [`Network::input`] to the logits. With `dropout`, the
    /// training view (fc6 and fc7 masked, its seeds written for the next submit); without, the
    /// evaluation view.
    pub fn record_forward(&self, rec: &mut Recorder<'_>, dropout: Option<Dropout>) -> Result<()> {
        let dropout = dropout.filter(|d| d.p > 0.0);
        if let Some(d) = dropout {
            self.write_step(rec.gpu(), |v| v.seeds[..2].copy_from_slice(&d.seeds));
        }
        let training = dropout.is_some();
        for (i, (l, b)) in self.layers.iter().zip(&self.bufs).enumerate() {
            rec.set_scope(l.block);
            let x = self.x(i, training);
            match (l.op, l.params) {
                (Op::Conv { shape, act }, Some((w, bias))) => {
                    let (w, bias) = (&self.params[w], &self.params[bias]);
                    gpu::conv::forward(rec, &shape, x, w, bias, &b.y, Some(act))?;
                }
                (Op::Linear { shape, act }, Some((w, bias))) => {
                    let (w, bias) = (&self.params[w], &self.params[bias]);
                    gpu::gemm::linear_forward(rec, &shape, x, w, Some(bias), &b.y, act)?;
                }
                (Op::Lrn { dims, params }, _) => {
                    let [n, c, h, w] = dims;
                    let scale = b.scale.as_ref().ok_or_else(|| param_missing(l))?;
                    gpu::lrn::forward(rec, n, c, h * w, &params, x, &b.y, scale)?;
                }
                (Op::MaxPool(p), _) => gpu::maxpool::forward(rec, &p, x, &b.y)?,
                (Op::Dropout { slot, .. }, _) => {
                    if let Some(d) = dropout {
                        rec.encoder().copy_buffer_to_buffer(
                            &x.buffer,
                            0,
                            &b.y.buffer,
                            0,
                            x.bytes(),
                        );
                        let seed = SeedSlot {
                            step: &self.step,
                            slot,
                        };
                        gpu::dropout::forward(rec, &b.y, seed, d.p)?;
                    }
                }
                (Op::Conv { .. } | Op::Linear { .. }, None) => {
                    return Err(param_missing(l));
                }
            }
        }
        Ok(())
    }

    /// Records the per-image loss and top-1/top-5 hits of the last forward pass against the
    /// uploaded labels into [`Network::stats`].
    pub fn record_loss(&self, rec: &mut Recorder<'_>) -> Result<()> {
        let l = self.geometry.fcs[2].linear;
        rec.set_scope("loss");
        gpu::softmax_xent::forward(rec, l.n, l.fout, self.logits(), &self.labels, &self.stats)?;
        Ok(())
    }

    /// Records the backward pass of the mean cross-entropy: every parameter's gradient (written,
    /// not accumulated). `dropout` must be what the forward pass used.
    pub fn record_backward(&self, rec: &mut Recorder<'_>, dropout: Option<Dropout>) -> Result<()> {
        let dropout = dropout.filter(|d| d.p > 0.0);
        let training = dropout.is_some();
        let last = self.layers.len() - 1;
        let l8 = self.geometry.fcs[2].linear;
        rec.set_scope("loss");
        gpu::softmax_xent::backward(
            rec,
            l8.n,
            l8.fout,
            self.logits(),
            &self.labels,
            self.dy(last),
        )?;
        for (i, (l, b)) in self.layers.iter().zip(&self.bufs).enumerate().rev() {
            rec.set_scope(l.block);
            let x = self.x(i, training);
            let dy = self.dy(i);
            let dx = input_of(&self.layers, i, training).map(|j| self.dy(j));
            match (l.op, l.params) {
                (Op::Conv { shape, act }, Some((w, bias))) => {
                    gpu::activation::backward(rec, act, dy, &b.y)?;
                    gpu::conv::backward_weight(rec, &shape, dy, x, &self.grads[w], false)?;
                    gpu::conv::backward_bias(rec, &shape, dy, &self.grads[bias], false)?;
                    if let Some(dx) = dx {
                        gpu::conv::backward_input(rec, &shape, dy, &self.params[w], dx, false)?;
                    }
                }
                (Op::Linear { shape, act }, Some((w, bias))) => {
                    if let Some(act) = act {
                        gpu::activation::backward(rec, act, dy, &b.y)?;
                    }
                    gpu::gemm::linear_backward_weight(rec, &shape, dy, x, &self.grads[w], false)?;
                    gpu::gemm::linear_backward_bias(rec, &shape, dy, &self.grads[bias], false)?;
                    if let Some(dx) = dx {
                        let w = &self.params[w];
                        gpu::gemm::linear_backward_input(rec, &shape, dy, w, dx, false)?;
                    }
                }
                (Op::Lrn { dims, params }, _) => {
                    let [n, c, h, w] = dims;
                    if let (Some(dx), Some(scale)) = (dx, &b.scale) {
                        gpu::lrn::backward(rec, n, c, h * w, &params, x, scale, dy, dx)?;
                    }
                }
                (Op::MaxPool(p), _) => {
                    if let Some(dx) = dx {
                        gpu::maxpool::backward(rec, &p, x, dy, dx)?;
                    }
                }
                (Op::Dropout { slot, .. }, _) => {
                    // Its gradient buffer is fc6's (fc7's) own: the mask goes on in place.
                    if let Some(d) = dropout {
                        let seed = SeedSlot {
                            step: &self.step,
                            slot,
                        };
                        gpu::dropout::backward(rec, dy, seed, d.p)?;
                    }
                }
                (Op::Conv { .. } | Op::Linear { .. }, None) => {
                    return Err(param_missing(l));
                }
            }
        }
        Ok(())
    }

    /// Records one SGD step on every parameter from the last backward pass (the paper's
    /// update: `v ← μ·v − wd·lr·w − lr·g; w ← w + v`), writing `h` for the next submit.
    pub fn record_sgd(&self, rec: &mut Recorder<'_>, h: SgdHyper) -> Result<()> {
        self.write_step(rec.gpu(), |v| {
            v.lr = h.lr;
            v.momentum = h.momentum;
            v.weight_decay = h.weight_decay;
        });
        rec.set_scope("sgd");
        for ((w, v), g) in self.params.iter().zip(&self.momentum).zip(&self.grads) {
            gpu::sgd::step(rec, w, v, g, &self.step)?;
        }
        Ok(())
    }
}

/// A layer whose parameters or saved buffers are missing: a bug in the layer list, reported
/// instead of running with wrong numbers.
fn param_missing(l: &Layer) -> NetworkError {
    NetworkError::Gpu(GpuError::Invalid {
        op: "network",
        reason: format!(
            "layer {} ({:?}) lacks its parameters or buffers",
            l.block, l.op
        ),
    })
}
