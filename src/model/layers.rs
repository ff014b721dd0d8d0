//! The network as one list of layers, resolved once from a [`Geometry`]: each layer's op and
//! shapes, its parameters (indices into [`super::param_specs`]), what it reports to `alexnet
//! forward`, and how the paper's two-column split treats it. The one-device network, the
//! two-column network and the CPU reference loop over this list (forward in order, backward in
//! reverse), so the stack is written down once.
//!
//! The list is a chain: every layer reads the output of the layer before it (the first reads
//! the input images). A [`Op::Dropout`] layer is the identity outside training, and then the
//! next layer reads its input directly. The flatten between conv5's pooling and fc6 is a view
//! (`[N,C,H,W]` is `[N, C·H·W]` in C,H,W order), not a layer.
use super::config::Norm;
use super::geometry::Geometry;
use crate::shape::{Activation, BnShape, ConvShape, LinearShape, LrnParams, PoolShape};

/// What a layer computes.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Op {
    /// Convolution + bias, then the activation: `y = act(w ⋆ x + b)`.
    Conv {
        /// The convolution.
        shape: ConvShape,
        /// The activation applied to its output.
        act: Activation,
    },
    /// The paper's cross-channel LRN over `[N,C,H,W]` (alpha not divided by the window).
    Lrn {
        /// `[N,C,H,W]` of input and output.
        dims: [usize; 4],
        /// Window and constants.
        params: LrnParams,
    },
    /// Batch normalisation per channel (PyTorch's `BatchNorm2d`); the layer's `params` are
    /// γ and β.
    BatchNorm {
        /// `[N,C,H·W]` of input and output.
        shape: BnShape,
        /// Indices of the running mean and variance in [`super::param_specs`] order (buffers:
        /// no gradient, no SGD step).
        running: (usize, usize),
    },
    /// Max pooling; the gradient goes to each window's first maximum.
    MaxPool(PoolShape),
    /// Fully connected + bias, then the activation when `act` is set (fc6, fc7):
    /// `y = act(x·wᵀ + b)`.
    Linear {
        /// The product.
        shape: LinearShape,
        /// The activation, `None` for fc8 (its output is the logits).
        act: Option<Activation>,
    },
    /// Inverted dropout during training, identity otherwise; the mask of element i is
    /// `uniform01(seed, i) ≥ p` with the step's seed number `slot`.
    Dropout {
        /// Elements of the `[N,F]` tensor.
        len: usize,
        /// Which of the step's seeds (0 after fc6, 1 after fc7).
        slot: u32,
    },
}

/// How the paper's two-column split runs a layer: each column owns half the output channels
/// (or neurons) of every conv and linear layer and runs its LRN, pooling and dropout on them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ColumnInput {
    /// The layer reads only its own column's half of its input (a grouped convolution, one
    /// group per column; LRN, pooling and dropout, which act per channel or per element).
    Own,
    /// The layer reads the whole input, which both columns already hold (conv1 on the images).
    Shared,
    /// The layer reads both columns' halves: the input is exchanged before the layer, and in
    /// backward each column's partial input gradient is summed with the other's.
    Both,
}

/// One layer of the chain.
#[derive(Clone, Debug, PartialEq)]
pub struct Layer {
    /// The block it belongs to (`conv1` … `fc8`): its parameters' prefix and its timing scope.
    pub block: &'static str,
    /// What it computes.
    pub op: Op,
    /// Indices of its weight and bias (a batch normalisation's γ and β) in
    /// [`super::param_specs`] order.
    pub params: Option<(usize, usize)>,
    /// The activation name `alexnet forward` reports this layer's output under (each block's
    /// last layer before dropout: conv1 after its pooling, fc6 after its activation, …).
    pub reports: Option<&'static str>,
    /// Dims of the output: `[N,C,H,W]` or `[N,F]`.
    pub out: Vec<usize>,
    /// How the two-column split feeds it.
    pub columns: ColumnInput,
}

impl Layer {
    /// Elements of the output.
    pub fn out_len(&self) -> usize {
        self.out.iter().product()
    }

    /// Floating-point operations of its forward pass (its backward does twice as many for
    /// conv and linear layers).
    pub fn forward_flops(&self) -> f64 {
        match self.op {
            Op::Conv { shape, .. } => 2.0 * shape.macs() as f64,
            Op::Linear { shape, .. } => 2.0 * shape.macs() as f64,
            _ => 0.0,
        }
    }
}

/// The layers of `g`, in forward order. `lrn` gives the LRN constants (the paper's:
/// [`LrnParams::default`]).
pub fn layers(g: &Geometry, lrn: LrnParams, act: Activation) -> Vec<Layer> {
    let mut out = Vec::with_capacity(16);
    let mut param = 0;
    for (i, st) in g.convs.iter().enumerate() {
        let conv_dims = st.conv_dims().to_vec();
        let last_of_block = |has_more: bool| (!has_more).then_some(st.name);
        out.push(Layer {
            block: st.name,
            op: Op::Conv {
                shape: st.conv,
                act,
            },
            params: Some((param, param + 1)),
            reports: last_of_block(st.norm != Norm::None || st.pool.is_some()),
            out: conv_dims.clone(),
            columns: match (i, st.conv.groups) {
                (0, _) => ColumnInput::Shared,
                (_, 1) => ColumnInput::Both,
                _ => ColumnInput::Own,
            },
        });
        param += 2;
        if st.norm == Norm::Batch {
            let [n, c, h, w] = st.conv_dims();
            out.push(Layer {
                block: st.name,
                op: Op::BatchNorm {
                    shape: BnShape { n, c, hw: h * w },
                    running: (param + 2, param + 3),
                },
                params: Some((param, param + 1)),
                reports: last_of_block(st.pool.is_some()),
                out: conv_dims.clone(),
                columns: ColumnInput::Own,
            });
            param += 4;
        }
        if st.norm == Norm::Lrn {
            out.push(Layer {
                block: st.name,
                op: Op::Lrn {
                    dims: st.conv_dims(),
                    params: lrn,
                },
                params: None,
                reports: last_of_block(st.pool.is_some()),
                out: conv_dims.clone(),
                columns: ColumnInput::Own,
            });
        }
        if let Some(p) = st.pool {
            out.push(Layer {
                block: st.name,
                op: Op::MaxPool(p),
                params: None,
                reports: Some(st.name),
                out: st.out_dims().to_vec(),
                columns: ColumnInput::Own,
            });
        }
    }
    for (j, f) in g.fcs.iter().enumerate() {
        let l = f.linear;
        out.push(Layer {
            block: f.name,
            op: Op::Linear {
                shape: l,
                act: f.hidden.then_some(act),
            },
            params: Some((param, param + 1)),
            reports: Some(if f.hidden { f.name } else { "logits" }),
            out: vec![l.n, l.fout],
            columns: ColumnInput::Both,
        });
        param += 2;
        if f.hidden {
            out.push(Layer {
                block: f.name,
                op: Op::Dropout {
                    len: l.n * l.fout,
                    slot: j as u32,
                },
                params: None,
                reports: None,
                out: vec![l.n, l.fout],
                columns: ColumnInput::Own,
            });
        }
    }
    out
}

/// Index of the layer whose output layer `i` reads (`None`: the input images), skipping
/// dropout layers when not `training`.
pub fn input_of(list: &[Layer], i: usize, training: bool) -> Option<usize> {
    let mut j = i.checked_sub(1)?;
    while !training && matches!(list[j].op, Op::Dropout { .. }) {
        j = j.checked_sub(1)?;
    }
    Some(j)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{param_specs, ModelConfig};

    #[test]
    fn the_paper_stack_in_order() {
        let cfg = ModelConfig::paper(1000);
        let g = Geometry::new(&cfg, 2).unwrap();
        let list = layers(&g, LrnParams::default(), Activation::Relu);
        let kinds: Vec<String> = list
            .iter()
            .map(|l| {
                let k = match l.op {
                    Op::Conv { .. } => "conv",
                    Op::Lrn { .. } => "lrn",
                    Op::BatchNorm { .. } => "bn",
                    Op::MaxPool(_) => "pool",
                    Op::Linear { .. } => "linear",
                    Op::Dropout { .. } => "dropout",
                };
                format!("{}:{k}", l.block)
            })
            .collect();
        assert_eq!(
            kinds.join(" "),
            "conv1:conv conv1:lrn conv1:pool conv2:conv conv2:lrn conv2:pool conv3:conv \
             conv4:conv conv5:conv conv5:pool fc6:linear fc6:dropout fc7:linear fc7:dropout \
             fc8:linear"
        );
        // Every parameter pair names its own block's weight and bias.
        let specs = param_specs(&cfg).unwrap();
        for l in &list {
            if let Some((w, b)) = l.params {
                assert_eq!(specs[w].name, format!("{}.weight", l.block));
                assert_eq!(specs[b].name, format!("{}.bias", l.block));
            }
        }
        let reported: Vec<_> = list.iter().filter_map(|l| l.reports).collect();
        assert_eq!(
            reported,
            ["conv1", "conv2", "conv3", "conv4", "conv5", "fc6", "fc7", "logits"]
        );
        assert_eq!(list[9].out, vec![2, 256, 6, 6]);
        let cols: Vec<_> = list.iter().map(|l| l.columns).collect();
        assert_eq!(cols[0], ColumnInput::Shared);
        assert_eq!(cols[3], ColumnInput::Own, "conv2 is grouped");
        assert_eq!(cols[6], ColumnInput::Both, "conv3 reads both columns");
        assert_eq!(cols[10], ColumnInput::Both, "fc6 reads both columns");
    }

    #[test]
    fn dropout_is_skipped_outside_training() {
        let mut cfg = ModelConfig::small(67, 16, 5);
        cfg.norm = Norm::None;
        let g = Geometry::new(&cfg, 1).unwrap();
        let list = layers(&g, LrnParams::default(), Activation::Tanh);
        let fc7 = list
            .iter()
            .position(|l| l.block == "fc7" && matches!(l.op, Op::Linear { .. }))
            .unwrap();
        assert_eq!(input_of(&list, fc7, true), Some(fc7 - 1));
        assert_eq!(input_of(&list, fc7, false), Some(fc7 - 2));
        assert_eq!(input_of(&list, 0, true), None);
        assert!(!list.iter().any(|l| matches!(l.op, Op::Lrn { .. })));
    }

    #[test]
    fn batch_norm_takes_lrns_place_with_its_own_tensors() {
        let mut cfg = ModelConfig::small(67, 16, 5);
        cfg.norm = Norm::Batch;
        let g = Geometry::new(&cfg, 2).unwrap();
        let list = layers(&g, LrnParams::default(), Activation::Relu);
        let specs = param_specs(&cfg).unwrap();
        let bns: Vec<&Layer> = list
            .iter()
            .filter(|l| matches!(l.op, Op::BatchNorm { .. }))
            .collect();
        assert_eq!(bns.len(), 2);
        assert!(!list.iter().any(|l| matches!(l.op, Op::Lrn { .. })));
        for (i, l) in bns.iter().enumerate() {
            let Op::BatchNorm { shape, running } = l.op else {
                unreachable!()
            };
            let (gamma, beta) = l.params.unwrap();
            let bn = format!("bn{}", i + 1);
            assert_eq!(specs[gamma].name, format!("{bn}.weight"));
            assert_eq!(specs[beta].name, format!("{bn}.bias"));
            assert_eq!(specs[running.0].name, format!("{bn}.running_mean"));
            assert_eq!(specs[running.1].name, format!("{bn}.running_var"));
            assert_eq!(shape.c, cfg.widths[i]);
            assert_eq!(shape.len(), l.out_len());
        }
        // It follows the conv (after its activation) and precedes the pooling.
        assert!(matches!(list[1].op, Op::BatchNorm { .. }));
        assert!(matches!(list[2].op, Op::MaxPool(_)));
        // The layers after it still name their own parameters.
        for l in &list {
            if let (Some((w, b)), Op::Conv { .. } | Op::Linear { .. }) = (l.params, l.op) {
                assert_eq!(specs[w].name, format!("{}.weight", l.block));
                assert_eq!(specs[b].name, format!("{}.bias", l.block));
            }
        }
    }
}
