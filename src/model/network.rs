//! The network on one GPU: every activation, gradient and parameter buffer allocated once for a
//! batch size, and the forward, loss, backward and SGD passes recorded into the caller's
//! encoder through a [`Recorder`] that takes its bind groups from the network's own
//! [`BindCache`], so a training step is one submit and, after the first, allocates nothing.
//!
//! Forward (per conv stage: conv+bias+activation, fused → [LRN] → [pool]):
//! `input → conv1..conv5 → flatten → fc6 → act → dropout → fc7 → act → dropout → fc8 → logits`.
//! Backward is the forward read in reverse. Dropout writes a copy (`fc6.dropped`) so the
//! activation's own output stays intact for its backward and for `alexnet forward`.
use super::geometry::{ConvStage, Geometry, GeometryError};
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

/// Buffers of one conv stage.
struct StageBufs {
    /// conv + bias, then the activation in place: `[N,C,OH,OW]`.
    act: Tensor,
    /// LRN output and its saved scale, when the stage has LRN.
    lrn: Option<(Tensor, Tensor)>,
    /// Pool output, when the stage pools.
    pool: Option<Tensor>,
    /// Gradient w.r.t. `act` (the activation's output, then its input, in place).
    d_act: Tensor,
    /// Gradient w.r.t. the LRN output.
    d_lrn: Option<Tensor>,
    /// Gradient w.r.t. the pool output.
    d_pool: Option<Tensor>,
}

impl StageBufs {
    fn output(&self) -> &Tensor {
        self.pool
            .as_ref()
            .or(self.lrn.as_ref().map(|(b, _)| b))
            .unwrap_or(&self.act)
    }
    /// Where the gradient of the stage's output goes.
    fn d_output(&self) -> &Tensor {
        self.d_pool
            .as_ref()
            .or(self.d_lrn.as_ref())
            .unwrap_or(&self.d_act)
    }
}

/// Buffers of one hidden fully connected layer.
struct HiddenBufs {
    /// x·Wᵀ + b, then the activation in place: `[N,F]`.
    act: Tensor,
    /// The dropout output (a copy of `act` with the mask applied) `[N,F]`.
    dropped: Tensor,
    /// Gradient w.r.t. `dropped`, then `act`, then the pre-activation, in place.
    d: Tensor,
}

/// The network on one device for a fixed batch size.
pub struct Network {
    /// The configuration.
    pub config: ModelConfig,
    /// Layer shapes for [`Network::batch`].
    pub geometry: Geometry,
    specs: Vec<ParamSpec>,
    params: Vec<Tensor>,
    grads: Vec<Tensor>,
    momentum: Vec<Tensor>,
    input: Tensor,
    labels: Tensor,
    stages: Vec<StageBufs>,
    hidden: Vec<HiddenBufs>,
    logits: Tensor,
    d_logits: Tensor,
    d_input_of_fc6: Tensor,
    stats: Tensor,
    lrn: LrnParams,
    cache: BindCache,
    step: StepBuffer,
    step_values: Cell<StepScalars>,
}

impl Network {
    /// Allocates every buffer for `batch` images and uploads `params` (momentum starts at 0).
    pub fn new(gpu: &Gpu, config: &ModelConfig, batch: usize, params: &Params) -> Result<Network> {
        let geometry = Geometry::new(config, batch)?;
        let specs = param_specs(config)?;
        let mk = |len: usize, label: String| Tensor::zeros(gpu, len, &label);
        let mut p = Vec::with_capacity(specs.len());
        let mut g = Vec::with_capacity(specs.len());
        let mut v = Vec::with_capacity(specs.len());
        for s in &specs {
            p.push(mk(s.len(), format!("{}.param", s.name)));
            g.push(mk(s.len(), format!("{}.grad", s.name)));
            v.push(mk(s.len(), format!("{}.momentum", s.name)));
        }
        let stages = geometry
            .convs
            .iter()
            .map(|st| {
                let conv_len: usize = st.conv_dims().iter().product();
                let lrn = st.lrn.then(|| {
                    (
                        mk(conv_len, format!("{}.lrn", st.name)),
                        mk(conv_len, format!("{}.lrn_scale", st.name)),
                    )
                });
                StageBufs {
                    act: mk(conv_len, format!("{}.act", st.name)),
                    pool: st
                        .pool
                        .map(|_| mk(st.out_len(), format!("{}.pool", st.name))),
                    d_act: mk(conv_len, format!("{}.d_act", st.name)),
                    d_lrn: st.lrn.then(|| mk(conv_len, format!("{}.d_lrn", st.name))),
                    d_pool: st
                        .pool
                        .map(|_| mk(st.out_len(), format!("{}.d_pool", st.name))),
                    lrn,
                }
            })
            .collect();
        let hidden = geometry.fcs[..2]
            .iter()
            .map(|f| {
                let len = f.linear.n * f.linear.fout;
                HiddenBufs {
                    act: mk(len, format!("{}.act", f.name)),
                    dropped: mk(len, format!("{}.dropped", f.name)),
                    d: mk(len, format!("{}.d", f.name)),
                }
            })
            .collect();
        let net = Network {
            config: config.clone(),
            input: mk(geometry.input_len(), "input".into()),
            labels: mk(batch, "labels".into()),
            logits: mk(geometry.logits_len(), "fc8.logits".into()),
            d_logits: mk(geometry.logits_len(), "fc8.d_logits".into()),
            d_input_of_fc6: mk(batch * geometry.flatten, "fc6.d_input".into()),
            stats: mk(batch * 3, "loss.stats".into()),
            geometry,
            specs,
            params: p,
            grads: g,
            momentum: v,
            stages,
            hidden,
            lrn: LrnParams::default(),
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
        &self.logits
    }

    /// Per-image (loss, top-1 hit, top-5 hit) `[N,3]` of the last [`Network::record_loss`].
    pub fn stats(&self) -> &Tensor {
        &self.stats
    }

    /// The activations `alexnet forward` reports, by name, with their shapes: conv1..conv5
    /// (stage outputs), fc6 and fc7 (after the activation, before dropout) and logits.
    pub fn activations(&self) -> Vec<(&'static str, Vec<usize>, &Tensor)> {
        let mut out: Vec<(&'static str, Vec<usize>, &Tensor)> = self
            .geometry
            .convs
            .iter()
            .zip(&self.stages)
            .map(|(st, b)| (st.name, st.out_dims().to_vec(), b.output()))
            .collect();
        for (f, h) in self.geometry.fcs[..2].iter().zip(&self.hidden) {
            out.push((f.name, vec![f.linear.n, f.linear.fout], &h.act));
        }
        let f8 = &self.geometry.fcs[2].linear;
        out.push(("logits", vec![f8.n, f8.fout], &self.logits));
        out
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

    fn param(&self, layer: &str, kind: &str) -> (&Tensor, &Tensor) {
        // Names come from the same geometry as the specs, so the lookup cannot miss; index 0
        // would be a wrong but safe fallback never reached.
        let i = self
            .specs
            .iter()
            .position(|s| {
                s.name.strip_prefix(layer).and_then(|r| r.strip_prefix('.')) == Some(kind)
            })
            .unwrap_or(0);
        (&self.params[i], &self.grads[i])
    }

    fn stage_input(&self, i: usize) -> &Tensor {
        if i == 0 {
            &self.input
        } else {
            self.stages[i - 1].output()
        }
    }

    /// Records the forward pass from [`Network::input`] to the logits. With `dropout`, the
    /// training view (fc6 and fc7 masked, its seeds written for the next submit); without, the
    /// evaluation view.
    pub fn record_forward(&self, rec: &mut Recorder<'_>, dropout: Option<Dropout>) -> Result<()> {
        let gpu = rec.gpu();
        let act = self.config.activation;
        let dropout = dropout.filter(|d| d.p > 0.0);
        if let Some(d) = dropout {
            self.write_step(gpu, |v| v.seeds[..2].copy_from_slice(&d.seeds));
        }
        for (i, (st, b)) in self.geometry.convs.iter().zip(&self.stages).enumerate() {
            rec.set_scope(st.name);
            let (w, _) = self.param(st.name, "weight");
            let (bias, _) = self.param(st.name, "bias");
            let x = self.stage_input(i);
            gpu::conv::forward(rec, &st.conv, x, w, bias, &b.act, Some(act))?;
            let mut cur = &b.act;
            if let Some((out, scale)) = &b.lrn {
                let [n, c, h, w] = st.conv_dims();
                gpu::lrn::forward(rec, n, c, h * w, &self.lrn, cur, out, scale)?;
                cur = out;
            }
            if let (Some(ps), Some(out)) = (&st.pool, &b.pool) {
                gpu::maxpool::forward(rec, ps, cur, out)?;
            }
        }
        let mut x = self.stages[4].output();
        for (j, (f, h)) in self.geometry.fcs[..2].iter().zip(&self.hidden).enumerate() {
            rec.set_scope(f.name);
            let (w, _) = self.param(f.name, "weight");
            let (bias, _) = self.param(f.name, "bias");
            gpu::gemm::linear_forward(rec, &f.linear, x, w, Some(bias), &h.act, Some(act))?;
            x = &h.act;
            if let Some(d) = dropout {
                rec.encoder().copy_buffer_to_buffer(
                    &h.act.buffer,
                    0,
                    &h.dropped.buffer,
                    0,
                    h.act.bytes(),
                );
                let seed = SeedSlot {
                    step: &self.step,
                    slot: j as u32,
                };
                gpu::dropout::forward(rec, &h.dropped, seed, d.p)?;
                x = &h.dropped;
            }
        }
        let f8 = &self.geometry.fcs[2];
        rec.set_scope(f8.name);
        let (w, _) = self.param(f8.name, "weight");
        let (bias, _) = self.param(f8.name, "bias");
        gpu::gemm::linear_forward(rec, &f8.linear, x, w, Some(bias), &self.logits, None)?;
        Ok(())
    }

    /// Records the per-image loss and top-1/top-5 hits of the last forward pass against the
    /// uploaded labels into [`Network::stats`].
    pub fn record_loss(&self, rec: &mut Recorder<'_>) -> Result<()> {
        let l = self.geometry.fcs[2].linear;
        rec.set_scope("loss");
        gpu::softmax_xent::forward(rec, l.n, l.fout, &self.logits, &self.labels, &self.stats)?;
        Ok(())
    }

    /// Records the backward pass of the mean cross-entropy: every parameter's gradient (written,
    /// not accumulated). `dropout` must be what the forward pass used.
    pub fn record_backward(&self, rec: &mut Recorder<'_>, dropout: Option<Dropout>) -> Result<()> {
        let act = self.config.activation;
        let dropout = dropout.filter(|d| d.p > 0.0);
        let l8 = self.geometry.fcs[2].linear;
        rec.set_scope("loss");
        gpu::softmax_xent::backward(
            rec,
            l8.n,
            l8.fout,
            &self.logits,
            &self.labels,
            &self.d_logits,
        )?;
        // Fully connected layers, fc8 down to fc6.
        let mut dy = &self.d_logits;
        for j in (0..3).rev() {
            let f = &self.geometry.fcs[j];
            rec.set_scope(f.name);
            let x = match j {
                0 => self.stages[4].output(),
                _ if dropout.is_some() => &self.hidden[j - 1].dropped,
                _ => &self.hidden[j - 1].act,
            };
            let (w, dw) = self.param(f.name, "weight");
            let (_, db) = self.param(f.name, "bias");
            gpu::gemm::linear_backward_weight(rec, &f.linear, dy, x, dw, false)?;
            gpu::gemm::linear_backward_bias(rec, &f.linear, dy, db, false)?;
            let dx = if j == 0 {
                &self.d_input_of_fc6
            } else {
                &self.hidden[j - 1].d
            };
            gpu::gemm::linear_backward_input(rec, &f.linear, dy, w, dx, false)?;
            if j > 0 {
                let h = &self.hidden[j - 1];
                if let Some(d) = dropout {
                    let seed = SeedSlot {
                        step: &self.step,
                        slot: (j - 1) as u32,
                    };
                    gpu::dropout::backward(rec, &h.d, seed, d.p)?;
                }
                gpu::activation::backward(rec, act, &h.d, &h.act)?;
            }
            dy = dx;
        }
        // The flatten is a view: fc6's input gradient is conv5's output gradient.
        let last = self.stages[4].d_output();
        rec.encoder().copy_buffer_to_buffer(
            &self.d_input_of_fc6.buffer,
            0,
            &last.buffer,
            0,
            last.bytes(),
        );
        for i in (0..5).rev() {
            let st: &ConvStage = &self.geometry.convs[i];
            rec.set_scope(st.name);
            let b = &self.stages[i];
            let pre_pool = b.lrn.as_ref().map(|(o, _)| o).unwrap_or(&b.act);
            let d_pre_pool = b.d_lrn.as_ref().unwrap_or(&b.d_act);
            if let (Some(ps), Some(dp)) = (&st.pool, &b.d_pool) {
                gpu::maxpool::backward(rec, ps, pre_pool, dp, d_pre_pool)?;
            }
            if let (Some((_, scale)), Some(dl)) = (&b.lrn, &b.d_lrn) {
                let [n, c, h, w] = st.conv_dims();
                gpu::lrn::backward(rec, n, c, h * w, &self.lrn, &b.act, scale, dl, &b.d_act)?;
            }
            gpu::activation::backward(rec, act, &b.d_act, &b.act)?;
            let (w, dw) = self.param(st.name, "weight");
            let (_, db) = self.param(st.name, "bias");
            gpu::conv::backward_weight(rec, &st.conv, &b.d_act, self.stage_input(i), dw, false)?;
            gpu::conv::backward_bias(rec, &st.conv, &b.d_act, db, false)?;
            if i > 0 {
                let dx = self.stages[i - 1].d_output();
                gpu::conv::backward_input(rec, &st.conv, &b.d_act, w, dx, false)?;
            }
        }
        Ok(())
    }

    /// Records one SGD step on every parameter from the last backward pass (DESIGN.md:
    /// `v ← μ·v − wd·lr·w − lr·g; w ← w + v`), writing `h` for the next submit.
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
