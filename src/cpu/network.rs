//! The network on the CPU engine: [`crate::model::layers`]' list looped over as the GPU
//! [`crate::model::Network`] does — forward in order, backward in reverse, each layer with an
//! output and an output-gradient buffer, a layer's backward writing its input's gradient
//! straight into the previous layer's gradient buffer (fc6's into conv5's pooling: the
//! flatten is a view), dropout writing a masked copy and masking its input layer's gradient in
//! place, the activation fused into conv and linear with act' applied in backward.
use super::conv::{conv_backward, conv_forward, ConvPlan, ConvScratch};
use super::dropout::dropout_in_place;
use super::linear::{linear_backward, linear_forward};
use super::lrn::{lrn_backward, lrn_forward};
use super::maxpool::{maxpool_backward, maxpool_forward};
use super::sgd::sgd_step;
use super::softmax::{softmax_xent_backward, softmax_xent_forward};
use super::{CpuDevice, CpuError};
use crate::gpu::sgd::SgdHyper;
use crate::model::layers::{self, input_of, Layer, Op};
use crate::model::{param_specs, Dropout, Geometry, ModelConfig, ParamSpec, Params};
use crate::shape::LrnParams;

type Result<T> = std::result::Result<T, CpuError>;

/// Buffers of one layer.
#[derive(Debug, Default)]
struct LayerBufs {
    /// Output `[N,…]` (a dropout layer's: the masked copy).
    y: Vec<f32>,
    /// Gradient of the output; empty for a dropout layer, whose gradient is its input
    /// layer's, masked in place.
    dy: Vec<f32>,
    /// LRN's saved `k + α·Σx²`.
    scale: Vec<f32>,
    /// Max pooling's first-maximum index of each window within its plane.
    arg: Vec<u32>,
}

/// The network on host memory for a fixed batch size.
#[derive(Debug)]
pub struct CpuNetwork {
    /// The configuration.
    pub config: ModelConfig,
    /// Layer shapes for [`CpuNetwork::batch`].
    pub geometry: Geometry,
    device: CpuDevice,
    layers: Vec<Layer>,
    specs: Vec<ParamSpec>,
    params: Vec<Vec<f32>>,
    grads: Vec<Vec<f32>>,
    momentum: Vec<Vec<f32>>,
    input: Vec<f32>,
    labels: Vec<i32>,
    bufs: Vec<LayerBufs>,
    stats: Vec<f32>,
    plans: Vec<Option<ConvPlan>>,
    scratch: Vec<ConvScratch>,
}

/// The index of the layer whose gradient buffer stands for layer `j`'s output gradient (a
/// dropout layer's is its input layer's; dropout never starts the list).
fn grad_owner(list: &[Layer], mut j: usize) -> usize {
    while j > 0 && matches!(list[j].op, Op::Dropout { .. }) {
        j -= 1;
    }
    j
}

/// Two distinct elements of `v`, both mutable (a weight's and its bias's gradients).
fn two_mut<T>(v: &mut [T], a: usize, b: usize) -> (&mut T, &mut T) {
    assert_ne!(a, b, "a weight and its bias are distinct parameters");
    if a < b {
        let (lo, hi) = v.split_at_mut(b);
        (&mut lo[a], &mut hi[0])
    } else {
        let (lo, hi) = v.split_at_mut(a);
        (&mut hi[0], &mut lo[b])
    }
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
        let geometry = Geometry::new(config, batch)?;
        let specs = param_specs(config)?;
        let list = layers::layers(&geometry, LrnParams::default(), config.activation);
        let workers = device.threads();
        let plans: Vec<Option<ConvPlan>> = list
            .iter()
            .map(|l| match l.op {
                Op::Conv { shape, .. } => Some(ConvPlan::new(&shape, workers)),
                _ => None,
            })
            .collect();
        let mut scratch = vec![ConvScratch::default(); workers];
        for (l, plan) in list.iter().zip(&plans) {
            if let (Op::Conv { shape, .. }, Some(plan)) = (l.op, plan) {
                scratch.iter_mut().for_each(|s| s.fit(&shape, plan));
            }
        }
        let bufs = list
            .iter()
            .map(|l| {
                let len = l.out_len();
                LayerBufs {
                    y: vec![0.0; len],
                    dy: if matches!(l.op, Op::Dropout { .. }) {
                        Vec::new()
                    } else {
                        vec![0.0; len]
                    },
                    scale: if matches!(l.op, Op::Lrn { .. }) {
                        vec![0.0; len]
                    } else {
                        Vec::new()
                    },
                    arg: if matches!(l.op, Op::MaxPool(_)) {
                        vec![0; len]
                    } else {
                        Vec::new()
                    },
                }
            })
            .collect();
        let zeros = |s: &ParamSpec| vec![0.0f32; s.len()];
        let mut net = CpuNetwork {
            config: config.clone(),
            input: vec![0.0; geometry.input_len()],
            labels: vec![0; batch],
            stats: vec![0.0; batch * 3],
            geometry,
            device: device.clone(),
            layers: list,
            params: specs.iter().map(zeros).collect(),
            grads: specs.iter().map(zeros).collect(),
            momentum: specs.iter().map(zeros).collect(),
            specs,
            bufs,
            plans,
            scratch,
        };
        net.upload_params(params)?;
        Ok(net)
    }

    /// Images per batch.
    pub fn batch(&self) -> usize {
        self.geometry.batch
    }

    /// The worker pool it runs on.
    pub fn device(&self) -> &CpuDevice {
        &self.device
    }

    fn upload_set(specs: &[ParamSpec], dst: &mut [Vec<f32>], src: &Params) -> Result<()> {
        for (spec, d) in specs.iter().zip(dst.iter_mut()) {
            match src.get(&spec.name) {
                Some(t) if t.data.len() == spec.len() => d.copy_from_slice(&t.data),
                t => {
                    return Err(CpuError::ParamShape {
                        name: spec.name.clone(),
                        expected: spec.len(),
                        got: t.map_or(0, |t| t.data.len()),
                    })
                }
            }
        }
        Ok(())
    }

    fn download_set(&self, src: &[Vec<f32>]) -> Result<Params> {
        let mut out = Params::zeros(&self.config)?;
        for (t, dst) in src.iter().zip(out.tensors.iter_mut()) {
            dst.data.copy_from_slice(t);
        }
        Ok(out)
    }

    /// Replaces the parameters.
    pub fn upload_params(&mut self, params: &Params) -> Result<()> {
        Self::upload_set(&self.specs, &mut self.params, params)
    }

    /// Replaces the SGD momentum (resuming a run).
    pub fn upload_momentum(&mut self, momentum: &Params) -> Result<()> {
        Self::upload_set(&self.specs, &mut self.momentum, momentum)
    }

    /// A copy of the parameters (checkpoints).
    pub fn download_params(&self) -> Result<Params> {
        self.download_set(&self.params)
    }

    /// A copy of the momentum (checkpoints).
    pub fn download_momentum(&self) -> Result<Params> {
        self.download_set(&self.momentum)
    }

    /// A copy of the gradients of the last backward pass (tests).
    pub fn download_grads(&self) -> Result<Params> {
        self.download_set(&self.grads)
    }

    /// The input `[N,3,I,I]` (preprocessed images), to write into.
    pub fn input_mut(&mut self) -> &mut [f32] {
        &mut self.input
    }

    /// Copies preprocessed images `[N,3,I,I]` into the input.
    pub fn upload_input(&mut self, images: &[f32]) -> Result<()> {
        if images.len() != self.input.len() {
            return Err(CpuError::Input {
                what: "images",
                reason: format!(
                    "{} values for a batch of {} images of 3×{}² ({} values)",
                    images.len(),
                    self.batch(),
                    self.config.input_size,
                    self.input.len()
                ),
            });
        }
        self.input.copy_from_slice(images);
        Ok(())
    }

    /// Sets the batch's labels (class indices in `0..classes`) for the next loss and backward.
    pub fn upload_labels(&mut self, labels: &[i32]) -> Result<()> {
        let classes = self.config.classes;
        if labels.len() != self.batch() {
            return Err(CpuError::Input {
                what: "labels",
                reason: format!("{} labels for a batch of {}", labels.len(), self.batch()),
            });
        }
        if let Some((i, l)) = labels
            .iter()
            .enumerate()
            .find(|(_, &l)| l < 0 || l as usize >= classes)
        {
            return Err(CpuError::Input {
                what: "labels",
                reason: format!("label {l} of image {i} is outside the model's {classes} classes"),
            });
        }
        self.labels.copy_from_slice(labels);
        Ok(())
    }

    /// The logits `[N,classes]` of the last forward pass.
    pub fn logits(&self) -> &[f32] {
        &self.bufs[self.layers.len() - 1].y
    }

    /// Per-image (loss, top-1 hit, top-5 hit) `[N,3]` of the last [`CpuNetwork::loss`].
    pub fn stats(&self) -> &[f32] {
        &self.stats
    }

    /// The activations `alexnet forward` reports, by name, with their shapes: conv1..conv5
    /// (block outputs), fc6 and fc7 (after the activation, before dropout) and logits.
    pub fn activations(&self) -> Vec<(&'static str, Vec<usize>, &[f32])> {
        self.layers
            .iter()
            .zip(&self.bufs)
            .filter_map(|(l, b)| l.reports.map(|name| (name, l.out.clone(), b.y.as_slice())))
            .collect()
    }

    /// The forward pass from the input to the logits. With `dropout` (p > 0), the training
    /// view (fc6 and fc7 masked with its seeds); without, the evaluation view.
    pub fn forward(&mut self, dropout: Option<Dropout>) {
        let device = self.device.clone();
        device.install(|| self.forward_on_pool(dropout.filter(|d| d.p > 0.0)));
    }

    fn forward_on_pool(&mut self, dropout: Option<Dropout>) {
        let training = dropout.is_some();
        let threads = self.device.threads();
        for i in 0..self.layers.len() {
            let l = &self.layers[i];
            let (before, rest) = self.bufs.split_at_mut(i);
            let b = &mut rest[0];
            let x: &[f32] = match input_of(&self.layers, i, training) {
                Some(j) => &before[j].y,
                None => &self.input,
            };
            match (l.op, l.params) {
                (Op::Conv { shape, act }, Some((w, bias))) => {
                    let plan = self.plans[i].as_ref().expect("every conv layer has a plan");
                    let (w, bias) = (&self.params[w], &self.params[bias]);
                    conv_forward(&shape, plan, act, x, w, bias, &mut b.y, &mut self.scratch);
                }
                (Op::Linear { shape, act }, Some((w, bias))) => {
                    let (w, bias) = (&self.params[w], &self.params[bias]);
                    linear_forward(&shape, act, x, w, bias, &mut b.y, threads);
                }
                (Op::Lrn { dims, params }, _) => {
                    lrn_forward(&params, dims, x, &mut b.y, &mut b.scale)
                }
                (Op::MaxPool(p), _) => maxpool_forward(&p, x, &mut b.y, &mut b.arg),
                (Op::Dropout { slot, .. }, _) => {
                    if let Some(d) = dropout {
                        b.y.copy_from_slice(x);
                        dropout_in_place(d.p, d.seeds[slot as usize], &mut b.y);
                    }
                }
                // `layers` gives every conv and linear layer its parameters.
                (Op::Conv { .. } | Op::Linear { .. }, None) => {
                    unreachable!("layer {} has no parameters", l.block)
                }
            }
        }
    }

    /// The per-image loss and top-1/top-5 hits of the last forward pass against the labels,
    /// into [`CpuNetwork::stats`].
    pub fn loss(&mut self) {
        let classes = self.config.classes;
        let last = self.layers.len() - 1;
        softmax_xent_forward(classes, &self.bufs[last].y, &self.labels, &mut self.stats);
    }

    /// The backward pass of the mean cross-entropy: every parameter's gradient (written, not
    /// accumulated). `dropout` must be what the forward pass used.
    pub fn backward(&mut self, dropout: Option<Dropout>) {
        let device = self.device.clone();
        device.install(|| self.backward_on_pool(dropout.filter(|d| d.p > 0.0)));
    }

    fn backward_on_pool(&mut self, dropout: Option<Dropout>) {
        let training = dropout.is_some();
        let threads = self.device.threads();
        let last = self.layers.len() - 1;
        {
            let b = &mut self.bufs[last];
            softmax_xent_backward(self.config.classes, &b.y, &self.labels, &mut b.dy);
        }
        for i in (0..self.layers.len()).rev() {
            let l = &self.layers[i];
            let (before, rest) = self.bufs.split_at_mut(i);
            if let Op::Dropout { slot, .. } = l.op {
                // Its gradient is its input layer's own buffer: the mask goes on in place.
                if let Some(d) = dropout {
                    let owner = grad_owner(&self.layers, i - 1);
                    dropout_in_place(d.p, d.seeds[slot as usize], &mut before[owner].dy);
                }
                continue;
            }
            let LayerBufs { y, dy, scale, arg } = &mut rest[0];
            // x: the output this layer read; dx: the gradient buffer that stands for it.
            let (x, dx): (&[f32], Option<&mut [f32]>) = match input_of(&self.layers, i, training) {
                None => (&self.input, None),
                Some(j) => {
                    let owner = grad_owner(&self.layers, j);
                    let (lo, hi) = before.split_at_mut(j);
                    let xj = &mut hi[0];
                    if owner == j {
                        (&xj.y, Some(&mut xj.dy))
                    } else {
                        (&xj.y, Some(&mut lo[owner].dy))
                    }
                }
            };
            match (l.op, l.params) {
                (Op::Conv { shape, act }, Some((w, bias))) => {
                    let plan = self.plans[i].as_ref().expect("every conv layer has a plan");
                    let (gw, gb) = two_mut(&mut self.grads, w, bias);
                    let w = &self.params[w];
                    conv_backward(
                        &shape,
                        plan,
                        act,
                        y,
                        dy,
                        x,
                        w,
                        gw,
                        gb,
                        dx,
                        &mut self.scratch,
                    );
                }
                (Op::Linear { shape, act }, Some((w, bias))) => {
                    let (gw, gb) = two_mut(&mut self.grads, w, bias);
                    let w = &self.params[w];
                    linear_backward(&shape, act, y, dy, x, w, gw, gb, dx, threads);
                }
                (Op::Lrn { dims, params }, _) => {
                    if let Some(dx) = dx {
                        lrn_backward(&params, dims, x, y, scale, dy, dx);
                    }
                }
                (Op::MaxPool(p), _) => {
                    if let Some(dx) = dx {
                        maxpool_backward(&p, arg, dy, dx);
                    }
                }
                (Op::Dropout { .. }, _) => {}
                (Op::Conv { .. } | Op::Linear { .. }, None) => {
                    unreachable!("layer {} has no parameters", l.block)
                }
            }
        }
    }

    /// One SGD step on every parameter from the last backward pass (the paper's update:
    /// `v ← μ·v − wd·lr·w − lr·g; w ← w + v`).
    pub fn sgd(&mut self, h: SgdHyper) {
        let device = self.device.clone();
        device.install(|| {
            for ((w, v), g) in self
                .params
                .iter_mut()
                .zip(self.momentum.iter_mut())
                .zip(&self.grads)
            {
                sgd_step(w, v, g, h.lr, h.momentum, h.weight_decay);
            }
        });
    }
}
