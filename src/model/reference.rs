//! The whole network on the reference engine: the network walk ([`super::walk`]) run over
//! [`RefBackend`], whose ops are `crate::reference`'s plain loops. Forward to every named
//! activation, backward to the gradient of every parameter, and an SGD step over all
//! parameters: the truth the GPU and CPU engines are tested against.
//!
//! Training mode applies dropout after the activations of fc6 and fc7, with the masks of
//! [`crate::model::dropout_seed`]: fc6's seed is `stream_seed(run_seed, step, 6)`, fc7's
//! `stream_seed(run_seed, step, 7)`; element i of the `[N,F]` tensor is kept iff
//! `uniform01(seed, i) ≥ p`. LRN uses the paper's constants ([`crate::shape::LrnParams::default`]).
//!
//! Dims: N batch, I input side, K classes; activations `[N,C,H,W]`, fc activations `[N,F]`.
#[cfg(test)]
use super::layers::input_of;
use super::layers::Layer;
use super::walk::{NetworkError, Walk};
use super::{dropout_seed, Geometry, ModelConfig, Params};
use crate::backend::{Dropout, Mode};
use crate::reference::backend::{RefBackend, RefBuf};
use crate::reference::{sgd_update, softmax_cross_entropy};

/// Dropout during training: the probability and where its random streams come from.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TrainMode {
    /// Drop probability of fc6's and fc7's outputs (the paper: 0.5; 0 disables dropout).
    pub dropout: f32,
    /// The run's seed.
    pub run_seed: u64,
    /// The training step (each step draws new masks).
    pub step: u64,
}

impl TrainMode {
    /// The dropout seed of fc layer `layer` (6 or 7).
    pub fn seed(&self, layer: u32) -> u32 {
        dropout_seed(self.run_seed, self.step, layer)
    }

    /// The walk's mode for this step.
    pub fn mode(&self) -> Mode {
        Mode::Train(Dropout {
            p: self.dropout,
            seeds: [self.seed(6), self.seed(7)],
        })
    }
}

/// Every layer's output of one forward pass.
#[derive(Clone, Debug)]
pub struct Forward {
    /// fc8's output `[N,K]`.
    pub logits: Vec<f32>,
    geometry: Geometry,
    layers: Vec<Layer>,
    /// The input images `[N,3,I,I]`.
    #[cfg(test)]
    input: Vec<f32>,
    /// Output of each layer (a dropout layer's holds zeros outside training).
    outputs: Vec<Vec<f32>>,
    #[cfg(test)]
    train: bool,
}

impl Forward {
    /// The activations `alexnet forward` reports (`conv1` … `conv5` after their blocks,
    /// `fc6` and `fc7` after the activation and before dropout, `logits`), with their shapes.
    pub fn named(&self) -> Vec<(&'static str, Vec<usize>, &[f32])> {
        self.layers
            .iter()
            .zip(&self.outputs)
            .filter_map(|(l, y)| l.reports.map(|n| (n, l.out.clone(), y.as_slice())))
            .collect()
    }

    /// The activation reported as `name`, if there is one.
    pub fn activation(&self, name: &str) -> Option<&[f32]> {
        self.named()
            .into_iter()
            .find(|(n, _, _)| *n == name)
            .map(|(_, _, y)| y)
    }

    /// The layer shapes this pass ran with.
    pub fn geometry(&self) -> &Geometry {
        &self.geometry
    }

    /// What layer `i` read: the previous layer's output, or the images.
    #[cfg(test)]
    fn x(&self, i: usize) -> &[f32] {
        match input_of(&self.layers, i, self.train) {
            Some(j) => &self.outputs[j],
            None => &self.input,
        }
    }
}

/// The walk on a fresh reference engine with `params` and `images` uploaded and its forward
/// pass run.
fn run_forward(
    cfg: &ModelConfig,
    params: &Params,
    batch: usize,
    images: &[f32],
    mode: Mode,
) -> Result<(RefBackend, Walk<RefBuf>), NetworkError> {
    let mut be = RefBackend::new();
    let walk = Walk::new(&mut be, cfg, batch)?;
    walk.upload_params(&mut be, params)?;
    walk.upload_input(&mut be, images)?;
    walk.forward(&mut be, mode)?;
    Ok((be, walk))
}

#[cfg_attr(not(test), allow(unused_variables))]
fn collect(be: &RefBackend, walk: &Walk<RefBuf>, images: &[f32], mode: Mode) -> Forward {
    let outputs: Vec<Vec<f32>> = walk.outputs().map(|(_, b)| be.slice(b).to_vec()).collect();
    Forward {
        logits: be.slice(walk.logits()).to_vec(),
        geometry: walk.geometry.clone(),
        layers: walk.layers().to_vec(),
        #[cfg(test)]
        input: images.to_vec(),
        outputs,
        #[cfg(test)]
        train: mode.dropout().is_some(),
    }
}

/// Runs the network on `images` `[N,3,I,I]` (already preprocessed). `train`: `Some` applies
/// dropout as described in the module docs; `None` is evaluation.
pub fn network_forward(
    cfg: &ModelConfig,
    params: &Params,
    batch: usize,
    images: &[f32],
    train: Option<TrainMode>,
) -> Result<Forward, NetworkError> {
    let mode = train.map_or(Mode::Eval, |t| t.mode());
    let (be, walk) = run_forward(cfg, params, batch, images, mode)?;
    Ok(collect(&be, &walk, images, mode))
}

/// One training evaluation: forward, mean softmax cross-entropy on `labels` `[N]`, backward.
/// Returns (loss, the forward pass, the gradients, named and ordered as `params`).
pub fn network_loss_and_grads(
    cfg: &ModelConfig,
    params: &Params,
    batch: usize,
    images: &[f32],
    labels: &[i32],
    train: Option<TrainMode>,
) -> Result<(f32, Forward, Params), NetworkError> {
    let mode = train.map_or(Mode::Eval, |t| t.mode());
    let (mut be, walk) = run_forward(cfg, params, batch, images, mode)?;
    walk.upload_labels(&mut be, labels)?;
    walk.backward(&mut be, mode)?;
    let fwd = collect(&be, &walk, images, mode);
    let (loss, _) = softmax_cross_entropy(batch, cfg.classes, &fwd.logits, labels);
    let computed = walk.download_grads(&mut be)?;
    let mut grads = params.clone();
    for t in grads.tensors.iter_mut() {
        let g = computed
            .get(&t.spec.name)
            .ok_or_else(|| NetworkError::ParamShape {
                name: t.spec.name.clone(),
                expected: t.data.len(),
                got: 0,
            })?;
        t.data.clone_from(&g.data);
    }
    Ok((loss, fwd, grads))
}

/// The paper's SGD step ([`sgd_update`]) on every parameter: `v ← μ·v − wd·lr·w − lr·g;
/// w ← w + v`, weight decay on every tensor, biases and batch normalisation's γ and β
/// included (docs/network.md, "SGD"); buffers (running statistics) take no step.
pub fn network_sgd_step(
    params: &mut Params,
    velocity: &mut Params,
    grads: &Params,
    lr: f32,
    momentum: f32,
    weight_decay: f32,
) -> Result<(), NetworkError> {
    for w in params.tensors.iter_mut().filter(|t| !t.spec.is_buffer()) {
        let name = &w.spec.name;
        let want = w.data.len();
        let bad = |got: usize| NetworkError::ParamShape {
            name: name.clone(),
            got,
            expected: want,
        };
        let v = velocity.get_mut(name).ok_or_else(|| bad(0))?;
        let g = grads.get(name).ok_or_else(|| bad(0))?;
        if v.data.len() != want {
            return Err(bad(v.data.len()));
        }
        if g.data.len() != want {
            return Err(bad(g.data.len()));
        }
        sgd_update(
            &mut w.data,
            &mut v.data,
            &g.data,
            lr,
            momentum,
            weight_decay,
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::layers::Op;
    use crate::model::Norm;
    use crate::reference::{check_close, conv2d_forward, linear_forward, random_tensor};
    use crate::shape::Activation;

    /// A tiny network: input 67 (final map 1×1), a few channels per layer.
    fn tiny(groups: usize, norm: Norm, activation: Activation) -> ModelConfig {
        ModelConfig {
            input_size: 67,
            widths: [4, 6, 8, 6, 4, 12, 10],
            classes: 5,
            groups,
            norm,
            activation,
            input_scale: 1.0,
            pool_size: 3,
            pool_stride: 2,
            conv1_pad: 0,
        }
    }

    /// Random parameters with variance 0.5/fan-in: signals neither vanish nor explode through
    /// eight layers (the paper's N(0, 0.01²) would leave early gradients below finite-difference
    /// noise), and tanh stays out of saturation, where near-equal values make pooling switch.
    fn scaled_params(cfg: &ModelConfig, seed: u32) -> Params {
        let mut p = Params::zeros(cfg).unwrap();
        for (t, tensor) in p.tensors.iter_mut().enumerate() {
            let shape = &tensor.spec.shape;
            let std = if shape.len() > 1 {
                (0.5 / shape[1..].iter().product::<usize>() as f32).sqrt()
            } else {
                0.2
            };
            tensor.data = random_tensor(seed + t as u32, tensor.data.len(), std);
            // A batch normalisation's scale and running variance near 1 (a variance must be
            // positive).
            let name = &tensor.spec.name;
            if name.starts_with("bn") && (name.ends_with(".weight") || name.ends_with("_var")) {
                tensor.data.iter_mut().for_each(|v| *v = 1.0 + v.abs());
            }
        }
        p
    }

    /// Mean cross-entropy in f64 from the logits, so the finite differences below are not
    /// limited by an f32 loss's resolution. logits `[N,K]`, labels `[N]`.
    fn loss64(classes: usize, logits: &[f32], labels: &[i32]) -> f64 {
        let rows = logits.chunks_exact(classes);
        let n = rows.len() as f64;
        rows.zip(labels)
            .map(|(row, &l)| {
                let max = row.iter().fold(f64::NEG_INFINITY, |m, &v| m.max(v as f64));
                let sum: f64 = row.iter().map(|&v| (v as f64 - max).exp()).sum();
                sum.ln() + max - row[l as usize] as f64
            })
            .sum::<f64>()
            / n
    }

    /// Smallest gap between the largest and second-largest value of any pooling window of a
    /// forward pass. A step of ε on one weight moves a pooled value by about ε·|input|, so with
    /// every gap above 5e-4 the 3e-4 step below rarely switches a window's maximum.
    fn min_pool_gap(f: &Forward) -> f32 {
        let mut min = f32::INFINITY;
        for (i, l) in f.layers.iter().enumerate() {
            let Op::MaxPool(p) = l.op else { continue };
            for plane in f.x(i).chunks_exact(p.h * p.w) {
                for oy in 0..p.out_h() {
                    for ox in 0..p.out_w() {
                        let (mut first, mut second) = (f32::NEG_INFINITY, f32::NEG_INFINITY);
                        for ky in 0..p.k {
                            for kx in 0..p.k {
                                let v = plane[(oy * p.stride + ky) * p.w + ox * p.stride + kx];
                                if v > first {
                                    (first, second) = (v, first);
                                } else if v > second {
                                    second = v;
                                }
                            }
                        }
                        // A window of ReLU zeros has no gradient to misroute; skip it.
                        if first > 0.0 || second < first {
                            min = min.min(first - second);
                        }
                    }
                }
            }
        }
        min
    }

    /// Smallest |pre-activation| of any unit (conv and hidden fc layers): how close a forward
    /// pass is to a ReLU kink.
    fn min_preactivation(f: &Forward, params: &Params) -> f32 {
        let get = |name: String| params.get(&name).unwrap().data.as_slice();
        let mut min = f32::INFINITY;
        for (i, l) in f.layers.iter().enumerate() {
            let (w, b) = (
                get(format!("{}.weight", l.block)),
                get(format!("{}.bias", l.block)),
            );
            let pre = match l.op {
                Op::Conv { shape, .. } => conv2d_forward(&shape, f.x(i), w, b),
                Op::Linear {
                    shape,
                    act: Some(_),
                } => linear_forward(&shape, f.x(i), w, b),
                _ => continue,
            };
            min = pre.iter().fold(min, |m, v| m.min(v.abs()));
        }
        min
    }

    /// Checks every parameter's gradient against central differences of the f64 loss at 16
    /// elements spread over each tensor.
    ///
    /// Max pooling and ReLU are not smooth: when a step moves a window's two largest values
    /// past each other, the difference quotient mixes two slopes. A conv1 weight feeds about a
    /// hundred pooling windows, so the input is chosen without near-ties (see
    /// [`min_pool_gap`]), and small steps that avoid ReLU kinks meet f32 rounding. So each
    /// element is tried at steps 3e-3, 1e-3 and 3e-4 and the closest quotient counts: a correct
    /// gradient matches at one of them, a wrong one at none. The bar: every sampled element within 25% (+1% of the
    /// tensor's largest gradient), all but two within 2% (+0.2% of the largest). A real bug
    /// (wrong layout, missing term, wrong sign) breaks most elements of a tensor.
    fn check_network(cfg: &ModelConfig, train: Option<TrainMode>) {
        let n = 2;
        let params = scaled_params(cfg, 11);
        // Inputs whose pooling windows hold no near-equal maxima (see min_pool_gap) and, for
        // ReLU, no unit near its kink.
        let smooth_enough = |x: &Vec<f32>| {
            let f = network_forward(cfg, &params, n, x, train).unwrap();
            min_pool_gap(&f) > 5e-4
                && (cfg.activation != Activation::Relu || min_preactivation(&f, &params) > 3e-4)
        };
        let images = (1..400)
            .map(|seed| random_tensor(seed, n * 3 * 67 * 67, 1.0))
            .find(smooth_enough)
            .expect("no test input without near-ties in pooling among 400 seeds");
        let labels = [3, 1];
        let loss = |p: &Params| -> f64 {
            let f = network_forward(cfg, p, n, &images, train).unwrap();
            loss64(cfg.classes, &f.logits, &labels)
        };
        let (l0, _, grads) =
            network_loss_and_grads(cfg, &params, n, &images, &labels, train).unwrap();
        assert!((l0 as f64 - loss(&params)).abs() < 1e-5);
        let mut probe = params.clone();
        for (ti, g) in grads.tensors.iter().enumerate() {
            if g.spec.is_buffer() {
                // Running statistics are not parameters: nothing writes their gradient.
                assert!(g.data.iter().all(|v| *v == 0.0), "{}", g.spec.name);
                continue;
            }
            let len = g.data.len();
            let scale = g.data.iter().fold(0.0f64, |m, v| m.max(v.abs() as f64));
            assert!(
                scale > 1e-7,
                "{}: gradient is zero everywhere; the test network is degenerate",
                g.spec.name
            );
            let mut idx: Vec<usize> = (0..16).map(|k| (k * len / 16 + k * 7) % len).collect();
            idx.dedup();
            let mut loose_fail = Vec::new();
            let mut tight_fail = Vec::new();
            for &i in &idx {
                let x = params.tensors[ti].data[i];
                let analytic = g.data[i] as f64;
                let mut best = f64::NAN;
                for eps in [3e-3f32, 1e-3, 3e-4] {
                    probe.tensors[ti].data[i] = x + eps;
                    let lp = loss(&probe);
                    probe.tensors[ti].data[i] = x - eps;
                    let lm = loss(&probe);
                    let numeric = (lp - lm) / ((x + eps) as f64 - (x - eps) as f64);
                    if best.is_nan() || (numeric - analytic).abs() < (best - analytic).abs() {
                        best = numeric;
                    }
                }
                probe.tensors[ti].data[i] = x;
                let err = (best - analytic).abs();
                let report = format!("[{i}] analytic {analytic:e} numeric {best:e}");
                if err > 0.25 * best.abs() + 1e-2 * scale {
                    loose_fail.push(report.clone());
                }
                if err > 2e-2 * best.abs() + 2e-3 * scale {
                    tight_fail.push(report);
                }
            }
            assert!(
                loose_fail.is_empty() && tight_fail.len() <= 2,
                "{cfg:?}: gradient of `{}` differs from finite differences (largest |g| {scale:e}); \
                 beyond 25%: {loose_fail:?}; beyond 2%: {tight_fail:?}",
                g.spec.name
            );
        }
    }

    #[test]
    fn gradients_groups2_lrn_relu_with_dropout() {
        let train = TrainMode {
            dropout: 0.5,
            run_seed: 5,
            step: 3,
        };
        check_network(&tiny(2, Norm::Lrn, Activation::Relu), Some(train));
    }

    #[test]
    fn gradients_batch_norm_relu_with_dropout() {
        let train = TrainMode {
            dropout: 0.5,
            run_seed: 5,
            step: 3,
        };
        check_network(&tiny(2, Norm::Batch, Activation::Relu), Some(train));
    }

    #[test]
    fn gradients_batch_norm_evaluation_mode() {
        // Running statistics: the normalisation is a fixed affine map per channel.
        check_network(&tiny(1, Norm::Batch, Activation::Tanh), None);
    }

    #[test]
    fn gradients_non_overlapping_pooling() {
        let mut cfg = tiny(2, Norm::Lrn, Activation::Relu);
        (cfg.pool_size, cfg.pool_stride) = (2, 2);
        check_network(&cfg, None);
    }

    #[test]
    fn gradients_groups1_lrn_tanh() {
        check_network(&tiny(1, Norm::Lrn, Activation::Tanh), None);
    }

    #[test]
    fn gradients_groups2_no_lrn_tanh_with_dropout() {
        let train = TrainMode {
            dropout: 0.3,
            run_seed: 9,
            step: 0,
        };
        check_network(&tiny(2, Norm::None, Activation::Tanh), Some(train));
    }

    #[test]
    fn forward_shapes_and_dropout_modes() {
        let cfg = ModelConfig::small(75, 16, 5);
        let params = Params::init(&cfg, 4).unwrap();
        let images = random_tensor(2, 3 * 3 * 75 * 75, 1.0);
        let eval = network_forward(&cfg, &params, 3, &images, None).unwrap();
        let names: Vec<(&str, Vec<usize>)> = eval
            .named()
            .into_iter()
            .map(|(n, s, a)| {
                assert_eq!(a.len(), s.iter().product::<usize>(), "{n}");
                (n, s)
            })
            .collect();
        let w = cfg.widths;
        assert_eq!(
            names,
            vec![
                ("conv1", vec![3, w[0], 8, 8]),
                ("conv2", vec![3, w[1], 3, 3]),
                ("conv3", vec![3, w[2], 3, 3]),
                ("conv4", vec![3, w[3], 3, 3]),
                ("conv5", vec![3, w[4], 1, 1]),
                ("fc6", vec![3, w[5]]),
                ("fc7", vec![3, w[6]]),
                ("logits", vec![3, 5]),
            ]
        );
        let no_drop = network_forward(
            &cfg,
            &params,
            3,
            &images,
            Some(TrainMode {
                dropout: 0.0,
                run_seed: 1,
                step: 0,
            }),
        )
        .unwrap();
        assert_eq!(no_drop.logits, eval.logits);
        let t = |step| {
            Some(TrainMode {
                dropout: 0.5,
                run_seed: 1,
                step,
            })
        };
        let a = network_forward(&cfg, &params, 3, &images, t(0)).unwrap();
        let b = network_forward(&cfg, &params, 3, &images, t(1)).unwrap();
        assert_ne!(a.logits, eval.logits);
        assert_ne!(a.logits, b.logits, "each step must draw new masks");
        assert_eq!(
            a.activation("fc6"),
            eval.activation("fc6"),
            "fc6 is reported before dropout"
        );
        assert!(network_forward(&cfg, &params, 2, &images, None).is_err());
    }

    #[test]
    fn sgd_step_lowers_the_loss_and_matches_the_formula() {
        let cfg = tiny(2, Norm::Lrn, Activation::Relu);
        let mut params = scaled_params(&cfg, 3);
        let images = random_tensor(4, 4 * 3 * 67 * 67, 1.0);
        let labels = [0, 1, 2, 4];
        let (l0, _, g) = network_loss_and_grads(&cfg, &params, 4, &images, &labels, None).unwrap();
        let before = params.clone();
        let mut v = Params::zeros(&cfg).unwrap();
        network_sgd_step(&mut params, &mut v, &g, 0.01, 0.9, 0.0005).unwrap();
        // From zero momentum: v = −wd·lr·w − lr·g and w' = w + v.
        for ((w0, w1), (gt, vt)) in before
            .tensors
            .iter()
            .zip(&params.tensors)
            .zip(g.tensors.iter().zip(&v.tensors))
        {
            let want: Vec<f32> = w0
                .data
                .iter()
                .zip(&gt.data)
                .map(|(w, g)| -0.0005 * 0.01 * w - 0.01 * g)
                .collect();
            check_close(&vt.spec.name, &vt.data, &want, 1e-9, 1e-5).unwrap();
            let moved: Vec<f32> = w0.data.iter().zip(&vt.data).map(|(w, d)| w + d).collect();
            check_close(&w1.spec.name, &w1.data, &moved, 0.0, 0.0).unwrap();
        }
        let (l1, _, _) = network_loss_and_grads(&cfg, &params, 4, &images, &labels, None).unwrap();
        assert!(
            l1 < l0,
            "one SGD step should lower the loss on its own batch: {l0} -> {l1}"
        );
    }
}
