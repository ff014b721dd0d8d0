//! The network, once: [`super::layers`]' list walked over any [`Backend`] — forward in order,
//! the loss, backward in reverse, SGD on every parameter. The GPU engine, the CPU engine and
//! the reference all run through this walk; what differs between them is only how an op runs.
//!
//! The walk owns the decisions that are the network's, not an op's:
//! - every layer has an output buffer and an output-gradient buffer; a layer's backward writes
//!   the gradient of its input straight into the previous layer's gradient buffer (fc6's into
//!   conv5's pooling: the flatten is a view, `[N,C,H,W]` is `[N, C·H·W]` in C,H,W order);
//! - dropout writes a masked copy (so the activation's own output stays intact for its backward
//!   and for `alexnet forward`) and has no gradient buffer: its gradient is its input layer's,
//!   masked in place; outside training the next layer reads the dropout's input directly;
//! - conv1's input gradient is not computed (nobody reads it);
//! - layers before [`Walk::freeze_through`]'s boundary have no backward and no SGD step.
use super::geometry::{Geometry, GeometryError};
use super::layers::{self, input_of, Layer, Op};
use super::params::{param_specs, ParamSpec, Params};
use super::ModelConfig;
use crate::backend::{Backend, BnState, Grad, MaskSeed, Mode, Pair, SgdHyper};
use crate::shape::LrnParams;

/// What can go wrong building or running the network on any engine.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NetworkError {
    /// The configuration or batch is invalid.
    #[error(transparent)]
    Geometry(#[from] GeometryError),
    /// A GPU kernel launch or readback failed.
    #[error(transparent)]
    Gpu(#[from] crate::gpu::GpuError),
    /// The CPU engine failed.
    #[error(transparent)]
    Cpu(#[from] crate::cpu::CpuError),
    /// The reference engine was given buffers that do not fit an op.
    #[error(transparent)]
    Reference(#[from] crate::reference::backend::RefError),
    /// The two-column split cannot run this network (an odd width, names the layer).
    #[error(transparent)]
    Columns(#[from] super::columns::ColumnsError),
    /// Parameters given do not match the network.
    #[error("parameter `{name}` has {got} values, the network needs {expected}; load parameters made for this model config")]
    ParamShape {
        /// Tensor name.
        name: String,
        /// Values the network needs.
        expected: usize,
        /// Values given.
        got: usize,
    },
    /// `train --freeze` names a block that is not one a run can freeze through.
    #[error("--freeze {layer}: no layer `{layer}` to freeze through; name one of {valid} (it and every layer before it keep their weights)")]
    Freeze {
        /// The name given.
        layer: String,
        /// The names it takes.
        valid: String,
    },
    /// An input (images, labels) does not fit the network.
    #[error("network input `{what}`: {reason}")]
    Input {
        /// Which input.
        what: &'static str,
        /// What is wrong, with the sizes expected.
        reason: String,
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

/// Buffers of one layer.
#[derive(Debug)]
struct LayerBufs<T> {
    /// Output `[N,…]` (a dropout layer's: the masked copy).
    y: T,
    /// Gradient of the output; `None` for a dropout layer (its input layer's is used).
    dy: Option<T>,
    /// What the op keeps for its backward (LRN's scale, the CPU engine's pooling indices).
    saved: Option<T>,
}

/// The network's buffers on one engine for a fixed batch size, and the walk over its layers.
/// `T` is the engine's buffer type; every method takes the engine to run on.
#[derive(Debug)]
pub struct Walk<T> {
    /// The configuration.
    pub config: ModelConfig,
    /// Layer shapes for the batch size.
    pub geometry: Geometry,
    layers: Vec<Layer>,
    specs: Vec<ParamSpec>,
    params: Vec<T>,
    grads: Vec<T>,
    momentum: Vec<T>,
    input: T,
    labels: T,
    stats: T,
    bufs: Vec<LayerBufs<T>>,
    /// Layers before this index are frozen (0: none).
    first_trainable: usize,
    /// The global batch row of this walk's first image (a data-parallel replica's share;
    /// 0 on one device): dropout masks are drawn per global row.
    first_row: usize,
}

/// The short name of an op in buffer labels (`"conv2.d_lrn"`).
fn kind(op: &Op) -> &'static str {
    match op {
        Op::Conv { .. } => "conv",
        Op::Lrn { .. } => "lrn",
        Op::BatchNorm { .. } => "bn",
        Op::MaxPool(_) => "pool",
        Op::Linear { .. } => "linear",
        Op::Dropout { .. } => "dropped",
    }
}

impl<T> Walk<T> {
    /// Allocates every buffer for `batch` images on `be`, all zero (parameters included:
    /// upload them with [`Walk::upload_params`]).
    pub fn new<B>(be: &mut B, config: &ModelConfig, batch: usize) -> Result<Walk<T>>
    where
        B: Backend<Buf = T>,
        NetworkError: From<B::Error>,
    {
        let geometry = Geometry::new(config, batch)?;
        let specs = param_specs(config)?;
        let list = layers::layers(&geometry, LrnParams::default(), config.activation);
        let mut set = |role: &str| -> Result<Vec<T>> {
            specs
                .iter()
                .map(|s| Ok(be.alloc(s.len(), &format!("{}.{role}", s.name))?))
                .collect()
        };
        let (params, grads, momentum) = (set("param")?, set("grad")?, set("momentum")?);
        let mut bufs = Vec::with_capacity(list.len());
        for l in &list {
            let (k, len) = (kind(&l.op), l.out_len());
            let y = be.alloc(len, &format!("{}.{k}", l.block))?;
            let dy = match l.op {
                Op::Dropout { .. } => None,
                _ => Some(be.alloc(len, &format!("{}.d_{k}", l.block))?),
            };
            let saved = match l.op {
                Op::Lrn { .. } => Some(be.alloc(len, &format!("{}.lrn_scale", l.block))?),
                Op::BatchNorm { shape, .. } => {
                    Some(be.alloc(2 * shape.c, &format!("{}.bn_stats", l.block))?)
                }
                Op::MaxPool(p) => be.pool_saved(&p)?,
                _ => None,
            };
            bufs.push(LayerBufs { y, dy, saved });
        }
        Ok(Walk {
            config: config.clone(),
            input: be.alloc(geometry.input_len(), "input")?,
            labels: be.alloc(batch, "labels")?,
            stats: be.alloc(batch * 3, "loss.stats")?,
            geometry,
            layers: list,
            specs,
            params,
            grads,
            momentum,
            bufs,
            first_trainable: 0,
            first_row: 0,
        })
    }

    /// Images per batch.
    pub fn batch(&self) -> usize {
        self.geometry.batch
    }

    /// Makes this walk a data-parallel replica holding rows `first_row..` of a larger global
    /// batch: its dropout masks become those rows of the global batch's masks, so a run's
    /// result does not depend on how its batch is split.
    pub fn set_first_row(&mut self, first_row: usize) {
        self.first_row = first_row;
    }

    /// The element offset of layer `l`'s `[N,F]` output in the global batch's mask.
    fn mask_offset(&self, l: &Layer) -> u32 {
        (self.first_row * (l.out_len() / self.batch().max(1))) as u32
    }

    /// The layer list it walks.
    pub fn layers(&self) -> &[Layer] {
        &self.layers
    }

    /// The input `[N,3,I,I]` (preprocessed images): upload into it, or let an input stage
    /// write it.
    pub fn input(&self) -> &T {
        &self.input
    }

    /// The labels `[N]` the loss reads.
    pub fn labels(&self) -> &T {
        &self.labels
    }

    /// The logits `[N,classes]` of the last forward pass.
    pub fn logits(&self) -> &T {
        &self.bufs[self.layers.len() - 1].y
    }

    /// Per-image (loss, top-1 hit, top-5 hit) `[N,3]` of the last [`Walk::loss`].
    pub fn stats(&self) -> &T {
        &self.stats
    }

    /// The parameter tensors in [`param_specs`] order (the column wrapper's exchanges).
    pub fn params(&self) -> &[T] {
        &self.params
    }

    /// The gradient tensors in [`param_specs`] order (read them in a
    /// [`Walk::backward_observed`] observer).
    pub fn grads(&self) -> &[T] {
        &self.grads
    }

    /// The activations `alexnet forward` reports, by name, with their shapes: conv1..conv5
    /// (block outputs), fc6 and fc7 (after the activation, before dropout) and logits.
    pub fn activations(&self) -> Vec<(&'static str, Vec<usize>, &T)> {
        self.layers
            .iter()
            .zip(&self.bufs)
            .filter_map(|(l, b)| l.reports.map(|name| (name, l.out.clone(), &b.y)))
            .collect()
    }

    /// Each layer's output buffer, in list order (tests and the reference's [`Walk`] views).
    pub fn outputs(&self) -> impl Iterator<Item = (&Layer, &T)> {
        self.layers.iter().zip(self.bufs.iter().map(|b| &b.y))
    }

    /// Freezes `block` and every layer before it (`train --freeze`): backward stops above them,
    /// so nothing below the boundary is computed, and SGD leaves their parameters and momentum
    /// as they are.
    pub fn freeze_through(&mut self, block: &str) -> Result<()> {
        self.first_trainable = super::freeze::first_trainable(&self.layers, block)?;
        Ok(())
    }

    /// How many tensors, from the first in [`param_specs`] order, are frozen.
    fn frozen_params(&self) -> usize {
        self.layers[self.first_trainable..]
            .iter()
            .find_map(|l| l.params.map(|(w, _)| w))
            .unwrap_or(self.params.len())
    }

    /// Checks `images` against the input and uploads it.
    pub fn upload_input<B>(&self, be: &mut B, images: &[f32]) -> Result<()>
    where
        B: Backend<Buf = T>,
        NetworkError: From<B::Error>,
    {
        let want = self.geometry.input_len();
        if images.len() != want {
            return Err(NetworkError::Input {
                what: "images",
                reason: format!(
                    "{} values for a batch of {} images of 3×{}² ({want} values)",
                    images.len(),
                    self.batch(),
                    self.config.input_size,
                ),
            });
        }
        Ok(be.upload(&self.input, images)?)
    }

    /// Checks the batch's labels (one per image, each in `0..classes`) and uploads them for
    /// the next loss and backward.
    pub fn upload_labels<B>(&self, be: &mut B, labels: &[i32]) -> Result<()>
    where
        B: Backend<Buf = T>,
        NetworkError: From<B::Error>,
    {
        let classes = self.config.classes;
        if labels.len() != self.batch() {
            return Err(NetworkError::Input {
                what: "labels",
                reason: format!("{} labels for a batch of {}", labels.len(), self.batch()),
            });
        }
        if let Some((i, l)) = labels
            .iter()
            .enumerate()
            .find(|(_, &l)| l < 0 || l as usize >= classes)
        {
            return Err(NetworkError::Input {
                what: "labels",
                reason: format!("label {l} of image {i} is outside the model's {classes} classes"),
            });
        }
        Ok(be.upload_labels(&self.labels, labels)?)
    }

    fn upload_set<B>(be: &mut B, specs: &[ParamSpec], dst: &[T], src: &Params) -> Result<()>
    where
        B: Backend<Buf = T>,
        NetworkError: From<B::Error>,
    {
        for (spec, t) in specs.iter().zip(dst) {
            be.upload(t, param_data(src, spec)?)?;
        }
        Ok(())
    }

    fn download_set<B>(&self, be: &mut B, src: &[T]) -> Result<Params>
    where
        B: Backend<Buf = T>,
        NetworkError: From<B::Error>,
    {
        let mut out = Params::zeros(&self.config)?;
        for (t, dst) in src.iter().zip(out.tensors.iter_mut()) {
            dst.data = be.download(t)?;
        }
        Ok(out)
    }

    /// Replaces the parameters.
    pub fn upload_params<B>(&self, be: &mut B, params: &Params) -> Result<()>
    where
        B: Backend<Buf = T>,
        NetworkError: From<B::Error>,
    {
        Self::upload_set(be, &self.specs, &self.params, params)
    }

    /// Replaces the SGD momentum (resuming a run).
    pub fn upload_momentum<B>(&self, be: &mut B, momentum: &Params) -> Result<()>
    where
        B: Backend<Buf = T>,
        NetworkError: From<B::Error>,
    {
        Self::upload_set(be, &self.specs, &self.momentum, momentum)
    }

    /// A copy of the parameters (checkpoints).
    pub fn download_params<B>(&self, be: &mut B) -> Result<Params>
    where
        B: Backend<Buf = T>,
        NetworkError: From<B::Error>,
    {
        self.download_set(be, &self.params)
    }

    /// A copy of the momentum (checkpoints).
    pub fn download_momentum<B>(&self, be: &mut B) -> Result<Params>
    where
        B: Backend<Buf = T>,
        NetworkError: From<B::Error>,
    {
        self.download_set(be, &self.momentum)
    }

    /// Replaces the gradients (a data-parallel step's all-reduced sum, before [`Walk::sgd`]).
    pub fn upload_grads<B>(&self, be: &mut B, grads: &Params) -> Result<()>
    where
        B: Backend<Buf = T>,
        NetworkError: From<B::Error>,
    {
        Self::upload_set(be, &self.specs, &self.grads, grads)
    }

    /// A copy of the gradients of the last backward pass (tests).
    pub fn download_grads<B>(&self, be: &mut B) -> Result<Params>
    where
        B: Backend<Buf = T>,
        NetworkError: From<B::Error>,
    {
        self.download_set(be, &self.grads)
    }

    /// The output layer `i` reads: the previous layer's, or the input images.
    fn x(&self, i: usize, training: bool) -> &T {
        match input_of(&self.layers, i, training) {
            Some(j) => &self.bufs[j].y,
            None => &self.input,
        }
    }

    /// The gradient buffer of layer `i`'s output (a dropout layer's is its input layer's).
    fn dy(&self, i: usize) -> &T {
        let mut j = i;
        loop {
            if let Some(d) = &self.bufs[j].dy {
                return d;
            }
            // Only dropout layers have no buffer, and one never starts the list.
            j -= 1;
        }
    }

    /// The (weight, bias) indices of a conv or linear layer.
    fn pair(l: &Layer) -> Result<(usize, usize)> {
        l.params.ok_or_else(|| NetworkError::ParamShape {
            name: format!("{}.weight", l.block),
            expected: 1,
            got: 0,
        })
    }

    /// The forward pass from [`Walk::input`] to the logits, in `mode`'s view.
    pub fn forward<B>(&self, be: &mut B, mode: Mode) -> Result<()>
    where
        B: Backend<Buf = T>,
        NetworkError: From<B::Error>,
    {
        let dropout = mode.dropout();
        let training = dropout.is_some();
        for (i, (l, b)) in self.layers.iter().zip(&self.bufs).enumerate() {
            be.scope(l.block);
            let x = self.x(i, training);
            match l.op {
                Op::Conv { shape, act } => {
                    let (w, bias) = Self::pair(l)?;
                    let p = Pair {
                        w: &self.params[w],
                        b: &self.params[bias],
                    };
                    be.conv_forward(&shape, act, x, p, &b.y)?;
                }
                Op::Linear { shape, act } => {
                    let (w, bias) = Self::pair(l)?;
                    let p = Pair {
                        w: &self.params[w],
                        b: &self.params[bias],
                    };
                    be.linear_forward(&shape, act, x, p, &b.y)?;
                }
                Op::Lrn { dims, params } => {
                    let saved = b.saved.as_ref().ok_or_else(|| missing(l))?;
                    be.lrn_forward(&params, dims, x, &b.y, saved)?;
                }
                Op::BatchNorm { shape, running } => {
                    let (gamma, beta) = Self::pair(l)?;
                    let p = Pair {
                        w: &self.params[gamma],
                        b: &self.params[beta],
                    };
                    let st = BnState {
                        mean: &self.params[running.0],
                        var: &self.params[running.1],
                        saved: b.saved.as_ref().ok_or_else(|| missing(l))?,
                    };
                    be.bn_forward(&shape, mode, x, p, st, &b.y)?;
                }
                Op::MaxPool(p) => be.maxpool_forward(&p, x, &b.y, b.saved.as_ref())?,
                Op::Dropout { slot, .. } => {
                    if let Some(d) = dropout {
                        be.copy(x, &b.y)?;
                        be.dropout(d.p, seed(d.seeds, slot, self.mask_offset(l)), &b.y)?;
                    }
                }
            }
        }
        Ok(())
    }

    /// The per-image loss and top-1/top-5 hits of the last forward pass against the uploaded
    /// labels, into [`Walk::stats`].
    pub fn loss<B>(&self, be: &mut B) -> Result<()>
    where
        B: Backend<Buf = T>,
        NetworkError: From<B::Error>,
    {
        be.scope("loss");
        let classes = self.config.classes;
        Ok(be.softmax_xent_forward(classes, self.logits(), &self.labels, &self.stats)?)
    }

    /// The backward pass of the mean cross-entropy: every parameter's gradient (written, not
    /// accumulated). `mode` must be what the forward pass used.
    pub fn backward<B>(&self, be: &mut B, mode: Mode) -> Result<()>
    where
        B: Backend<Buf = T>,
        NetworkError: From<B::Error>,
    {
        self.backward_observed(be, mode, &mut |_, _| Ok(()))
    }

    /// The parameter tensors (indices in [`param_specs`] order) whose gradients
    /// [`Walk::backward_observed`] hands over, in the order it hands them: trainable layers
    /// from the last to the first, weight then bias. A data-parallel run fills its all-reduce
    /// buckets in this order, so the first bucket is complete while backward is still at the
    /// top of the network.
    pub fn backward_order(&self) -> Vec<usize> {
        self.layers[self.first_trainable..]
            .iter()
            .rev()
            .filter_map(|l| l.params)
            .flat_map(|(w, b)| [w, b])
            .collect()
    }

    /// [`Walk::backward`], calling `ready(be, tensors)` as soon as a layer's parameter
    /// gradients are final (before the layers below it run), with the layer's tensor indices
    /// in [`param_specs`] order; the calls follow [`Walk::backward_order`]. On an engine that
    /// records work for later submission (the GPU), "final" means recorded, not computed.
    pub fn backward_observed<B>(
        &self,
        be: &mut B,
        mode: Mode,
        ready: &mut dyn FnMut(&mut B, &[usize]) -> Result<()>,
    ) -> Result<()>
    where
        B: Backend<Buf = T>,
        NetworkError: From<B::Error>,
    {
        let dropout = mode.dropout();
        let training = dropout.is_some();
        let last = self.layers.len() - 1;
        be.scope("loss");
        let classes = self.config.classes;
        be.softmax_xent_backward(classes, self.logits(), &self.labels, self.dy(last))?;
        let trainable = self.layers.iter().zip(&self.bufs).enumerate();
        for (i, (l, b)) in trainable.skip(self.first_trainable).rev() {
            be.scope(l.block);
            let t = Grad {
                x: self.x(i, training),
                y: &b.y,
                dy: self.dy(i),
                // The first trainable layer's input gradient has no reader, like conv1's.
                dx: input_of(&self.layers, i, training)
                    .filter(|_| i > self.first_trainable)
                    .map(|j| self.dy(j)),
            };
            match l.op {
                Op::Conv { shape, act } => {
                    let (w, bias) = Self::pair(l)?;
                    let g = Pair {
                        w: &self.grads[w],
                        b: &self.grads[bias],
                    };
                    be.conv_backward(&shape, act, t, &self.params[w], g)?;
                }
                Op::Linear { shape, act } => {
                    let (w, bias) = Self::pair(l)?;
                    let g = Pair {
                        w: &self.grads[w],
                        b: &self.grads[bias],
                    };
                    be.linear_backward(&shape, act, t, &self.params[w], g)?;
                }
                Op::Lrn { dims, params } => {
                    let saved = b.saved.as_ref().ok_or_else(|| missing(l))?;
                    be.lrn_backward(&params, dims, t, saved)?;
                }
                Op::BatchNorm { shape, .. } => {
                    let (gamma, beta) = Self::pair(l)?;
                    let g = Pair {
                        w: &self.grads[gamma],
                        b: &self.grads[beta],
                    };
                    let saved = b.saved.as_ref().ok_or_else(|| missing(l))?;
                    be.bn_backward(&shape, mode, t, &self.params[gamma], saved, g)?;
                }
                Op::MaxPool(p) => be.maxpool_backward(&p, t, b.saved.as_ref())?,
                Op::Dropout { slot, .. } => {
                    // Its gradient buffer is its input layer's own: the mask goes on in place.
                    if let Some(d) = dropout {
                        be.dropout(d.p, seed(d.seeds, slot, self.mask_offset(l)), t.dy)?;
                    }
                }
            }
            // The same rule as `backward_order`: a layer with parameters has just written
            // all of their gradients.
            if let Some((w, b)) = l.params {
                ready(be, &[w, b])?;
            }
        }
        Ok(())
    }

    /// One SGD step on every trainable parameter from the last backward pass (buffers, a batch
    /// normalisation's running statistics, are not parameters and take none; frozen layers'
    /// tensors take none either).
    pub fn sgd<B>(&self, be: &mut B, h: SgdHyper) -> Result<()>
    where
        B: Backend<Buf = T>,
        NetworkError: From<B::Error>,
    {
        be.scope("sgd");
        let tensors = self.params.iter().zip(&self.momentum).zip(&self.grads);
        let frozen = self.frozen_params();
        for (((w, v), g), spec) in tensors.zip(&self.specs).skip(frozen) {
            if !spec.is_buffer() {
                be.sgd(h, w, v, g)?;
            }
        }
        Ok(())
    }
}

/// The mask seed of dropout slot `slot`, for a buffer starting at mask element `offset`.
fn seed(seeds: [u32; 2], slot: u32, offset: u32) -> MaskSeed {
    MaskSeed {
        slot,
        seed: seeds[slot as usize],
        offset,
    }
}

/// A layer whose saved buffer is missing: a bug in the walk, reported instead of running with
/// wrong numbers.
fn missing(l: &Layer) -> NetworkError {
    NetworkError::Input {
        what: "layer buffers",
        reason: format!("layer {} ({:?}) lacks its saved buffer", l.block, l.op),
    }
}
