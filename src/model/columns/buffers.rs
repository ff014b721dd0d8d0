//! One column's buffers, per layer of the layer list, with the column's own shapes.
//!
//! A layer's output lives in one of two forms: conv, LRN and pooling layers hold their own
//! column's channels; a linear layer holds its own neurons and, after the exchange that follows
//! it, both columns' (`full_out`), and a dropout layer holds the masked whole (`y`). A layer
//! that reads both columns ([`ColumnInput::Both`]) gets its whole input exchanged into
//! `full_in` when its producer holds only its own half, and its backward pass leaves a partial
//! gradient of that whole input in `d_in`, which the columns sum.
use super::super::layers::{ColumnInput, Layer, Op};
use super::super::params::ParamSpec;
use super::super::NetworkError;
use crate::gpu::{Gpu, GpuError, Tensor};
use crate::shape::{Activation, ConvShape, LinearShape, LrnParams, PoolShape};

type Result<T> = std::result::Result<T, NetworkError>;

/// A layer's op with the column's own shapes.
#[derive(Clone, Copy, Debug)]
pub(super) enum ColOp {
    /// The column's half of the output channels.
    Conv(ConvShape, Activation),
    /// LRN over the own channels plus the halo (`ext_c` channels).
    Lrn(LrnParams),
    /// Pooling of the own channels.
    Pool(PoolShape),
    /// The column's half of the neurons.
    Linear(LinearShape, Option<Activation>),
    /// Dropout over the whole `[N,F]` (`len` values), identical on both columns.
    Dropout { slot: u32 },
}

/// A column's LRN over its own channels plus `halo` channels of the other column's: enough
/// for the scale of the halo's inner channels, which the backward pass needs.
pub(super) struct LrnExt {
    /// Channels of the extended tensors (own + halo).
    pub ext_c: usize,
    /// Own channels.
    pub own_c: usize,
    /// `[N,ext_c,hw]` values per channel.
    pub hw: usize,
    /// Where the own channels start in the extended tensors (0 on column 0, the halo on 1).
    pub own_at: usize,
    /// Where the halo starts.
    pub halo_at: usize,
    pub ext_x: Tensor,
    pub ext_y: Tensor,
    pub scale: Tensor,
    pub d_ext_y: Tensor,
    pub d_ext_x: Tensor,
}

/// One column's buffers of one layer.
pub(super) struct ColLayer {
    pub op: ColOp,
    /// Own output (a dropout layer: the masked whole).
    pub y: Tensor,
    /// Gradient of the own output (none for dropout: its consumer masks partial gradients).
    pub dy: Option<Tensor>,
    /// The exchanged whole input, when the producer holds only its own half.
    pub full_in: Option<Tensor>,
    /// Partial gradient of the whole input (layers reading both columns).
    pub d_in: Option<Tensor>,
    /// Linear layers: both columns' neurons after the exchange.
    pub full_out: Option<Tensor>,
    /// LRN's extended tensors.
    pub lrn: Option<LrnExt>,
}

impl ColLayer {
    /// The output in the whole form, if the layer has one (linear and dropout layers).
    pub fn whole_out(&self) -> Option<&Tensor> {
        match self.op {
            ColOp::Linear(..) => self.full_out.as_ref(),
            ColOp::Dropout { .. } => Some(&self.y),
            _ => None,
        }
    }
}

/// One device's half of the network.
pub(super) struct Column {
    pub params: Vec<Tensor>,
    pub grads: Vec<Tensor>,
    pub momentum: Vec<Tensor>,
    pub input: Tensor,
    pub labels: Tensor,
    pub layers: Vec<ColLayer>,
    pub d_logits: Tensor,
    pub stats: Tensor,
}

/// Half of `n`, or an error naming `what` when `n` is odd.
pub(super) fn halves(what: &str, n: usize) -> Result<usize> {
    if n % 2 != 0 {
        return Err(GpuError::Invalid {
            op: "columns",
            reason: format!("{what} is {n}; the two-column split needs it even"),
        }
        .into());
    }
    Ok(n / 2)
}

/// Channels of a layer's own output `[N,C,…]` (neurons for `[N,F]`).
fn own_channels(l: &Layer) -> Result<usize> {
    halves(&format!("{} width", l.block), l.out[1])
}

impl Column {
    /// Column `d`'s buffers for the layer list `list` of batch `n` and input length
    /// `input_len`; `halo` is the LRN halo in channels.
    pub fn new(
        gpu: &Gpu,
        d: usize,
        list: &[Layer],
        specs: &[ParamSpec],
        input_len: usize,
        halo: usize,
    ) -> Result<Column> {
        let mk = |len: usize, label: &str| Tensor::zeros(gpu, len, &format!("col{d}.{label}"));
        let set = |what: &str| -> Vec<Tensor> {
            specs
                .iter()
                .map(|s| mk(s.len() / 2, &format!("{}.{what}", s.name)))
                .collect()
        };
        let n = list.first().map_or(1, |l| l.out[0]);
        let mut layers: Vec<ColLayer> = Vec::with_capacity(list.len());
        for (i, l) in list.iter().enumerate() {
            let name = |what: &str| format!("{}.{what}", l.block);
            let own_len = || -> Result<usize> { Ok(l.out_len() / l.out[1] * own_channels(l)?) };
            // A reader of both columns needs the whole input exchanged when its producer
            // holds only its own half (a conv, LRN or pooling output).
            let producer_whole = i > 0 && layers[i - 1].whole_out().is_some();
            let needs_gather = l.columns == ColumnInput::Both && !producer_whole;
            let in_len = || match l.op {
                Op::Conv { shape, .. } => shape.input_len(),
                Op::Linear { shape, .. } => shape.n * shape.fin,
                _ => 0,
            };
            let (op, y, dy) = match l.op {
                Op::BatchNorm { .. } => {
                    return Err(GpuError::Invalid {
                        op: "columns",
                        reason: "model.norm = \"batch\" does not run split over two columns yet; train it on one GPU or the CPU engine (--devices)".into(),
                    }
                    .into())
                }
                Op::Conv { shape, act } => {
                    let c_out = halves(&name("width"), shape.c_out)?;
                    let own = match l.columns {
                        ColumnInput::Own => ConvShape {
                            c_in: halves(&name("input channels"), shape.c_in)?,
                            c_out,
                            groups: halves(&name("groups"), shape.groups)?,
                            ..shape
                        },
                        _ => ConvShape { c_out, ..shape },
                    };
                    if own.groups != 1 && l.columns != ColumnInput::Own {
                        return Err(GpuError::Invalid {
                            op: "columns",
                            reason: format!(
                                "{} reads both columns but has {} groups",
                                l.block, shape.groups
                            ),
                        }
                        .into());
                    }
                    let len = own.output_len();
                    (
                        ColOp::Conv(own, act),
                        mk(len, &name("act")),
                        Some(mk(len, &name("d_act"))),
                    )
                }
                Op::Lrn { params, .. } => {
                    let len = own_len()?;
                    (
                        ColOp::Lrn(params),
                        mk(len, &name("lrn")),
                        Some(mk(len, &name("d_lrn"))),
                    )
                }
                Op::MaxPool(p) => {
                    let own = PoolShape {
                        c: halves(&name("width"), p.c)?,
                        ..p
                    };
                    let len = own.output_len();
                    (
                        ColOp::Pool(own),
                        mk(len, &name("pool")),
                        Some(mk(len, &name("d_pool"))),
                    )
                }
                Op::Linear { shape, act } => {
                    let own = LinearShape {
                        fout: halves(&name("width"), shape.fout)?,
                        ..shape
                    };
                    let len = own.n * own.fout;
                    (
                        ColOp::Linear(own, act),
                        mk(len, &name("act")),
                        Some(mk(len, &name("d"))),
                    )
                }
                Op::Dropout { len, slot } => {
                    (ColOp::Dropout { slot }, mk(len, &name("dropped")), None)
                }
            };
            let lrn = match l.op {
                Op::Lrn { dims, .. } => {
                    let own_c = own_channels(l)?;
                    if own_c < halo {
                        return Err(GpuError::Invalid {
                            op: "columns",
                            reason: format!(
                                "{} has {own_c} channels per column, fewer than the LRN halo of {halo}",
                                l.block
                            ),
                        }
                        .into());
                    }
                    let (ext_c, hw) = (own_c + halo, dims[2] * dims[3]);
                    let ext = |what: &str| mk(n * ext_c * hw, &name(what));
                    Some(LrnExt {
                        ext_c,
                        own_c,
                        hw,
                        own_at: if d == 0 { 0 } else { halo },
                        halo_at: if d == 0 { own_c } else { 0 },
                        ext_x: ext("lrn_ext_x"),
                        ext_y: ext("lrn_ext_y"),
                        scale: ext("lrn_scale"),
                        d_ext_y: ext("lrn_d_ext_y"),
                        d_ext_x: ext("lrn_d_ext_x"),
                    })
                }
                _ => None,
            };
            let both = l.columns == ColumnInput::Both;
            layers.push(ColLayer {
                op,
                y,
                dy,
                full_in: needs_gather.then(|| mk(in_len(), &name("full_in"))),
                d_in: both.then(|| mk(in_len(), &name("d_in"))),
                full_out: matches!(l.op, Op::Linear { .. }).then(|| mk(l.out_len(), &name("full"))),
                lrn,
            });
        }
        let logits_len = list.last().map_or(0, |l| l.out_len());
        Ok(Column {
            params: set("param"),
            grads: set("grad"),
            momentum: set("momentum"),
            input: mk(input_len, "input"),
            labels: mk(n, "labels"),
            layers,
            d_logits: mk(logits_len, "d_logits"),
            stats: mk(n * 3, "stats"),
        })
    }
}
