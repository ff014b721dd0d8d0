//! Launcher for `shaders/conv.wgsl` (GPUs: an implicit GEMM on the generated tile core) and
//! `shaders/conv_direct.wgsl` (CPU adapters), with `shaders/conv_sums.wgsl` for the bias
//! gradient and the split-K reduction: convolution without an im2col buffer, forward with bias
//! (and the activation, fused), backward to the input, the weight and the bias (on the tiled
//! kernels a column of the weight gradient's product where it fits, [`folds_bias`]). Each operand
//! is bound whole, so it must fit one storage binding ([`GpuError::BindingTooLarge`]
//! otherwise).
use super::gemm::{self, TilePolicy};
use super::kernel::{self, Entry, Launch, Program, Shader, Slot};
use super::tiles::{GemmEntry, TileConfig, PART_WGSL};
use super::tuner;
use super::{Gpu, GpuError, Recorder, Result, Tensor};
use crate::shape::{Activation, ConvShape};

/// This launcher's shaders (tiled, direct and the bias/weight sums), for [`kernel::all_shaders`].
pub static SHADERS: &[&Shader] = &[&SHADER, &DIRECT_SHADER, &SUMS_SHADER];

/// `shaders/conv_common.wgsl`: the uniform, bindings and stores the convolution shaders share.
pub const COMMON_WGSL: &str = include_str!("../../shaders/conv_common.wgsl");
/// The shader of GPUs: an implicit GEMM on the generated tile core.
pub static SHADER: Shader = Shader {
    name: "conv",
    source: include_str!("../../shaders/conv.wgsl"),
    prelude: &[COMMON_WGSL, PART_WGSL],
    gemm_entries: &[
        GemmEntry {
            name: "forward",
            prefix: "cf",
            a_k_contiguous: true,
            b_k_contiguous: false,
        },
        GemmEntry {
            name: "backward_input",
            prefix: "ci",
            a_k_contiguous: true,
            b_k_contiguous: false,
        },
        GemmEntry {
            name: "backward_weight",
            prefix: "cw",
            a_k_contiguous: true,
            b_k_contiguous: true,
        },
        GemmEntry {
            name: "backward_weight_bias",
            prefix: "cb",
            a_k_contiguous: true,
            b_k_contiguous: true,
        },
    ],
};
/// The shader of CPU adapters: the same entry points without shared memory.
pub static DIRECT_SHADER: Shader = Shader {
    name: "conv_direct",
    source: include_str!("../../shaders/conv_direct.wgsl"),
    prelude: &[COMMON_WGSL],
    gemm_entries: &[],
};
/// The bias gradient and the split-K reduction, shared by both.
pub static SUMS_SHADER: Shader = Shader {
    name: "conv_sums",
    source: include_str!("../../shaders/conv_sums.wgsl"),
    prelude: &[COMMON_WGSL],
    gemm_entries: &[],
};
/// `conv_direct.wgsl`'s invocations per workgroup, and rows and columns per invocation.
const DIRECT_WG: usize = 64;
const DIRECT_TM: usize = 8;
const DIRECT_TN: usize = 4;

/// Which kernels run the convolutions of a device (forward, backward to the input and to the
/// weight; the bias gradient and the split-K reduction are shared).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConvKernels {
    /// `conv.wgsl`: implicit GEMM through workgroup-shared tiles, for GPUs.
    Tiled,
    /// `conv_direct.wgsl`: operands read straight from the buffers, for CPU adapters, where
    /// shared tiles and barriers cost more than they save.
    Direct,
}

impl ConvKernels {
    /// Direct on a CPU adapter (lavapipe), tiled on everything else.
    pub fn for_device(device_type: wgpu::DeviceType) -> ConvKernels {
        if device_type == wgpu::DeviceType::Cpu {
            ConvKernels::Direct
        } else {
            ConvKernels::Tiled
        }
    }
}

/// The tile of a convolution product of `rows` rows a group: [`gemm::tile_for`]'s choice,
/// except that a CPU adapter running the tiled kernels (a test or a baseline) gets tiles
/// fitted to narrow rows as on a GPU, since [`TileConfig::SMALL`] would spend most of a narrow
/// layer's work on rows that do not exist.
pub fn tile_for(gpu: &Gpu, rows: usize) -> TileConfig {
    if gpu.tiles == TilePolicy::Cpu && rows < 64 && gpu.tile_override.is_none() {
        let bm = (rows.max(1).div_ceil(8) * 8) as u32;
        return TileConfig {
            bm,
            tm: 8,
            ..TileConfig::SMALL
        };
    }
    gemm::tile_for(gpu, rows)
}

/// The tile and split-K of one of `s`'s products: [`tuner::choose`] on the tiled kernels
/// (the tuned table, or the policy's [`tile_for`]); the direct kernels have no tiles.
fn choice(gpu: &Gpu, s: &ConvShape, entry: tuner::ConvEntry) -> Result<tuner::Choice> {
    let product = tuner::Product::Conv { entry, shape: *s };
    match gpu.conv_kernels {
        ConvKernels::Tiled => tuner::choose(gpu, &product),
        ConvKernels::Direct => Ok(product.heuristic(gpu)),
    }
}

/// Shader, entry point, override constants, workgroup grid and (tiled kernels) offset table
/// of one dispatch.
struct Plan {
    program: Program,
    entry: &'static Entry,
    constants: Vec<(&'static str, f64)>,
    groups: [u32; 3],
    table: Option<wgpu::Buffer>,
}

impl Plan {
    /// `views` with the offset table appended when the entry binds one.
    fn views<'a>(&'a self, views: &[kernel::View<'a>]) -> Vec<kernel::View<'a>> {
        let mut v = views.to_vec();
        if let Some(t) = &self.table {
            v.push(kernel::View {
                buffer: t,
                offset: 0,
                size: t.size(),
            });
        }
        v
    }
}

/// The three products of a convolution, for the entry and offset table of each.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Product {
    Forward,
    BackwardInput,
    BackwardWeight,
    /// The weight gradient with the bias gradient as one more column (tiled only).
    BackwardWeightBias,
}

/// `conv.wgsl`'s `tab` for `product` of `s`: per reduction index k, four numbers the gathers
/// add instead of dividing k in the K loop (the layout is in conv.wgsl, above `tab`).
fn offset_table(s: &ConvShape, product: Product) -> Vec<u32> {
    let u = |v: usize| v as u32;
    let (kk, hw, ohw) = (s.k * s.k, s.h * s.w, s.out_h() * s.out_w());
    let (cig, cog) = (s.c_in / s.groups, s.c_out / s.groups);
    let mut t = Vec::new();
    match product {
        Product::Forward => {
            for ci in 0..cig {
                for kh in 0..s.k {
                    for kw in 0..s.k {
                        t.extend([0, u(ci * hw), u(kh), u(kw)]);
                    }
                }
            }
        }
        Product::BackwardInput => {
            let split = |v: usize| u(v / s.stride) | u(v % s.stride) << 16;
            for co in 0..cog {
                for kh in 0..s.k {
                    for kw in 0..s.k {
                        let a = co * cig * kk + kh * s.k + kw;
                        t.extend([u(a), u(co * ohw), split(kh), split(kw)]);
                    }
                }
            }
        }
        Product::BackwardWeight | Product::BackwardWeightBias => {
            for b in 0..s.n {
                for oy in 0..s.out_h() {
                    for ox in 0..s.out_w() {
                        let a = b * s.c_out * ohw + oy * s.out_w() + ox;
                        let x = b * s.c_in * hw;
                        t.extend([u(a), u(x), u(oy * s.stride), u(ox * s.stride)]);
                    }
                }
            }
        }
    }
    t
}

/// The kept offset table of `product` of `s` ([`offset_table`], made on first use).
fn table(gpu: &Gpu, s: &ConvShape, product: Product) -> Result<wgpu::Buffer> {
    // The folded bias column reads the weight gradient's table.
    let product = match product {
        Product::BackwardWeightBias => Product::BackwardWeight,
        p => p,
    };
    let rows = match product {
        Product::Forward => (s.c_in / s.groups) * s.k * s.k,
        Product::BackwardInput => (s.c_out / s.groups) * s.k * s.k,
        Product::BackwardWeight | Product::BackwardWeightBias => s.n * s.out_h() * s.out_w(),
    };
    let bytes = rows as u64 * 16;
    if bytes > gpu.max_binding() {
        return Err(GpuError::BindingTooLarge {
            op: "conv",
            tensor: "offset table",
            bytes,
            limit: gpu.max_binding(),
        });
    }
    let name = match product {
        Product::Forward => "conv.forward.tab",
        Product::BackwardInput => "conv.backward_input.tab",
        Product::BackwardWeight | Product::BackwardWeightBias => "conv.backward_weight.tab",
    };
    let key = [
        s.n, s.c_in, s.h, s.w, s.c_out, s.k, s.stride, s.pad, s.groups,
    ];
    Ok(gpu.table_buffer((name, key), || offset_table(s, product)))
}

/// The override constants of `conv.wgsl` for shape `s`.
fn shape_constants(s: &ConvShape) -> Vec<(&'static str, f64)> {
    let f = |v: usize| v as f64;
    vec![
        ("CN", f(s.n)),
        ("CI", f(s.c_in)),
        ("CH", f(s.h)),
        ("CW", f(s.w)),
        ("CO", f(s.c_out)),
        ("KS", f(s.k)),
        ("CS", f(s.stride)),
        ("CP", f(s.pad)),
        ("CG", f(s.groups)),
        ("COH", f(s.out_h())),
        ("COW", f(s.out_w())),
    ]
}

/// Program, entry, constants, grid and table of one convolution GEMM: `rows` × `cols` per
/// group, `z` = groups (times splits for the weight gradient), with tile `t` on the tiled path.
fn plan(
    gpu: &Gpu,
    s: &ConvShape,
    product: Product,
    rows: usize,
    cols: usize,
    z: usize,
    t: TileConfig,
) -> Result<Plan> {
    Ok(match gpu.conv_kernels {
        ConvKernels::Tiled => Plan {
            program: Program::Tiled(&SHADER, t),
            entry: match product {
                Product::Forward => &TILED_FORWARD,
                Product::BackwardInput => &TILED_BACKWARD_INPUT,
                Product::BackwardWeight => &TILED_BACKWARD_WEIGHT,
                Product::BackwardWeightBias => &TILED_BACKWARD_WEIGHT_BIAS,
            },
            constants: shape_constants(s),
            groups: grid(gpu, rows, cols, z, (t.bm as usize, t.bn as usize))?,
            table: Some(table(gpu, s, product)?),
        },
        ConvKernels::Direct => Plan {
            program: Program::Static(&DIRECT_SHADER),
            entry: match product {
                Product::Forward => &FORWARD,
                Product::BackwardInput => &BACKWARD_INPUT,
                Product::BackwardWeight | Product::BackwardWeightBias => &BACKWARD_WEIGHT,
            },
            constants: Vec::new(),
            groups: grid(gpu, rows, cols, z, (DIRECT_TM, DIRECT_WG * DIRECT_TN))?,
            table: None,
        },
    })
}

static FORWARD: Entry = Entry {
    name: "forward",
    slots: &[
        Slot::Uniform,
        Slot::Read,
        Slot::Read,
        Slot::ReadWrite,
        Slot::Read,
    ],
};
static BACKWARD_INPUT: Entry = Entry {
    name: "backward_input",
    slots: &[Slot::Uniform, Slot::Read, Slot::Read, Slot::ReadWrite],
};
static BACKWARD_WEIGHT: Entry = Entry {
    name: "backward_weight",
    slots: &[Slot::Uniform, Slot::Read, Slot::Read, Slot::ReadWrite],
};
/// The tiled kernels' entries: the direct ones' bindings and the offset table at 5.
static TILED_FORWARD: Entry = Entry {
    name: "forward",
    slots: &[
        Slot::Uniform,
        Slot::Read,
        Slot::Read,
        Slot::ReadWrite,
        Slot::Read,
        Slot::Read,
    ],
};
static TILED_BACKWARD_INPUT: Entry = Entry {
    name: "backward_input",
    slots: &[
        Slot::Uniform,
        Slot::Read,
        Slot::Read,
        Slot::ReadWrite,
        Slot::Unused,
        Slot::Read,
    ],
};
static TILED_BACKWARD_WEIGHT: Entry = Entry {
    name: "backward_weight",
    slots: &[
        Slot::Uniform,
        Slot::Read,
        Slot::Read,
        Slot::ReadWrite,
        Slot::Unused,
        Slot::Read,
    ],
};
/// backward_weight's bindings and `out_db` at 6.
static TILED_BACKWARD_WEIGHT_BIAS: Entry = Entry {
    name: "backward_weight_bias",
    slots: &[
        Slot::Uniform,
        Slot::Read,
        Slot::Read,
        Slot::ReadWrite,
        Slot::Unused,
        Slot::Read,
        Slot::ReadWrite,
    ],
};
static REDUCE_SPLITS_BIAS: Entry = Entry {
    name: "reduce_splits_bias",
    slots: &[
        Slot::Uniform,
        Slot::Read,
        Slot::Unused,
        Slot::ReadWrite,
        Slot::Unused,
        Slot::Unused,
        Slot::ReadWrite,
    ],
};
static REDUCE_SPLITS: Entry = Entry {
    name: "reduce_splits",
    slots: &[Slot::Uniform, Slot::Read, Slot::Unused, Slot::ReadWrite],
};
static BACKWARD_BIAS: Entry = Entry {
    name: "backward_bias",
    slots: &[Slot::Uniform, Slot::Read, Slot::Unused, Slot::ReadWrite],
};
static REDUCE_BIAS: Entry = Entry {
    name: "reduce_bias",
    slots: &[Slot::Uniform, Slot::Read, Slot::Unused, Slot::ReadWrite],
};

/// The WGSL `Params` uniform.
#[repr(C)]
#[derive(Clone, Copy, Debug, bytemuck::Pod, bytemuck::Zeroable)]
pub struct ConvParams {
    /// Batch.
    pub n: u32,
    /// Input channels.
    pub c_in: u32,
    /// Input height.
    pub h: u32,
    /// Input width.
    pub w: u32,
    /// Output channels.
    pub c_out: u32,
    /// Kernel size.
    pub k: u32,
    /// Stride.
    pub stride: u32,
    /// Padding.
    pub pad: u32,
    /// Groups.
    pub groups: u32,
    /// Output height.
    pub oh: u32,
    /// Output width.
    pub ow: u32,
    /// Bit 1: accumulate into the output.
    pub flags: u32,
    /// backward_weight's split-K factor (1 elsewhere).
    pub splits: u32,
    /// The tiled backward_weight's K per split.
    pub per: u32,
    /// The forward's fused activation: 0 none, 1 ReLU, 2 tanh.
    pub act: u32,
    /// Padding to 64 bytes.
    pub _pad: u32,
}

fn params(s: &ConvShape, accumulate: bool) -> Result<ConvParams> {
    let bad = |reason: String| Err(GpuError::Invalid { op: "conv", reason });
    if s.groups == 0 || s.c_in % s.groups != 0 || s.c_out % s.groups != 0 {
        return bad(format!(
            "groups {} must divide c_in {} and c_out {}",
            s.groups, s.c_in, s.c_out
        ));
    }
    if s.k == 0 || s.stride == 0 || s.h + 2 * s.pad < s.k || s.w + 2 * s.pad < s.k || s.n == 0 {
        return bad(format!(
            "kernel {} stride {} does not fit the input {}×{} with padding {}",
            s.k, s.stride, s.h, s.w, s.pad
        ));
    }
    for len in [s.input_len(), s.output_len(), s.weight_len()] {
        kernel::u32_of("conv", len)?;
    }
    let u = |v: usize| v as u32;
    Ok(ConvParams {
        n: u(s.n),
        c_in: u(s.c_in),
        h: u(s.h),
        w: u(s.w),
        c_out: u(s.c_out),
        k: u(s.k),
        stride: u(s.stride),
        pad: u(s.pad),
        groups: u(s.groups),
        oh: u(s.out_h()),
        ow: u(s.out_w()),
        flags: u32::from(accumulate) << 1,
        splits: 1,
        per: 0,
        act: 0,
        _pad: 0,
    })
}

/// The grid over `rows` × `cols` when one workgroup covers `tile` = (rows, cols).
fn grid(gpu: &Gpu, rows: usize, cols: usize, z: usize, tile: (usize, usize)) -> Result<[u32; 3]> {
    let x = cols.div_ceil(tile.1);
    let max = gpu.limits.max_compute_workgroups_per_dimension as usize;
    if x > max || z > max {
        return Err(GpuError::TooLarge {
            op: "conv",
            size: x.max(z) as u64,
        });
    }
    Ok([x as u32, rows.div_ceil(tile.0) as u32, z as u32])
}

/// Record `y = act(conv(x, w) + bias)`: x `[N,C_in,H,W]`, w `[C_out,C_in/G,k,k]`, bias
/// `[C_out]`, y `[N,C_out,OH,OW]`; no activation when `act` is `None`.
pub fn forward(
    rec: &mut Recorder<'_>,
    s: &ConvShape,
    x: &Tensor,
    w: &Tensor,
    bias: &Tensor,
    y: &Tensor,
    act: Option<Activation>,
) -> Result<()> {
    let gpu = rec.gpu();
    let mut p = params(s, false)?;
    p.act = match act {
        None => 0,
        Some(Activation::Relu) => 1,
        Some(Activation::Tanh) => 2,
    };
    kernel::expect_len("conv", "x", x, s.input_len())?;
    kernel::expect_len("conv", "w", w, s.weight_len())?;
    kernel::expect_len("conv", "bias", bias, s.c_out)?;
    kernel::expect_len("conv", "y", y, s.output_len())?;
    let views = [
        kernel::whole(gpu, "conv", "w", w)?,
        kernel::whole(gpu, "conv", "x", x)?,
        kernel::whole(gpu, "conv", "y", y)?,
        kernel::whole(gpu, "conv", "bias", bias)?,
    ];
    let rows = s.c_out / s.groups;
    let cols = s.n * s.out_h() * s.out_w();
    let t = choice(gpu, s, tuner::ConvEntry::Forward)?.tile;
    let pl = plan(gpu, s, Product::Forward, rows, cols, s.groups, t)?;
    let views = pl.views(&views);
    rec.launch(&Launch {
        program: pl.program,
        constants: &pl.constants,
        flops: 2.0 * s.macs() as f64,
        ..Launch::new(&SHADER, pl.entry, bytemuck::bytes_of(&p), &views, pl.groups)
    })
}

/// Record `dx (+)= ∂L/∂x` from `dy` `[N,C_out,OH,OW]` and `w`.
pub fn backward_input(
    rec: &mut Recorder<'_>,
    s: &ConvShape,
    dy: &Tensor,
    w: &Tensor,
    dx: &Tensor,
    accumulate: bool,
) -> Result<()> {
    let gpu = rec.gpu();
    let p = params(s, accumulate)?;
    kernel::expect_len("conv", "dy", dy, s.output_len())?;
    kernel::expect_len("conv", "w", w, s.weight_len())?;
    kernel::expect_len("conv", "dx", dx, s.input_len())?;
    let views = [
        kernel::whole(gpu, "conv", "w", w)?,
        kernel::whole(gpu, "conv", "dy", dy)?,
        kernel::whole(gpu, "conv", "dx", dx)?,
    ];
    let rows = s.c_in / s.groups;
    let t = choice(gpu, s, tuner::ConvEntry::BackwardInput)?.tile;
    let pl = plan(
        gpu,
        s,
        Product::BackwardInput,
        rows,
        s.n * s.h * s.w,
        s.groups,
        t,
    )?;
    let views = pl.views(&views);
    rec.launch(&Launch {
        program: pl.program,
        constants: &pl.constants,
        flops: 2.0 * s.macs() as f64,
        ..Launch::new(
            &SHADER,
            pl.entry,
            bytemuck::bytes_of(&p),
            &views,
            pl.groups,
        )
    })
}

/// Split-K factor of the tiled backward_weight with tile `t`: enough workgroups for
/// [`gemm::TARGET_WORKGROUPS`] (its K = N·OH·OW is long and its M×N small), each slice at
/// least 16 K steps, partials within `max_scratch` bytes.
pub fn weight_splits(s: &ConvShape, t: &TileConfig, max_scratch: u64) -> usize {
    let m = s.c_out / s.groups;
    let n = (s.c_in / s.groups) * s.k * s.k;
    let k = s.n * s.out_h() * s.out_w();
    let tiles = m.div_ceil(t.bm as usize) * n.div_ceil(t.bn as usize) * s.groups;
    let by_k = (k / (16 * t.bk as usize)).max(1);
    gemm::TARGET_WORKGROUPS
        .div_ceil(tiles)
        .min(by_k)
        .min(splits_within(s, max_scratch))
        .clamp(1, 256)
}

/// Split factor of the direct backward_weight, which splits over the batch: enough
/// workgroups (64) for every core of a CPU, partials within `max_scratch` bytes.
pub fn direct_weight_splits(s: &ConvShape, max_scratch: u64) -> usize {
    let rows = (s.c_out / s.groups).div_ceil(DIRECT_TM);
    let cols = ((s.c_in / s.groups) * s.k * s.k).div_ceil(DIRECT_WG * DIRECT_TN);
    let tiles = (rows * cols * s.groups).max(1);
    64usize
        .div_ceil(tiles)
        .min(s.n)
        .min(splits_within(s, max_scratch))
        .max(1)
}

/// The most weight-gradient partials (each a whole `dw`, and `db` beside it when the bias
/// gradient is folded in) that fit `max_scratch` bytes; 1 at least.
fn splits_within(s: &ConvShape, max_scratch: u64) -> usize {
    let row = (s.weight_len() + s.c_out) as u64 * 4;
    ((max_scratch / row.max(1)) as usize).max(1)
}

/// Whether the weight gradient of `s` with tile `t` also makes the bias gradient, as one
/// more column of its product (`conv.wgsl`'s backward_weight_bias): only when that column
/// falls in the last column tile's spare columns, Cig·k·k not a multiple of the tile's
/// width. Otherwise it would add a whole column of tiles (conv3's 256·9 = 2,304 columns are
/// 18 tiles of 128: a 19th is 5.6% more of its largest product) to save a pass that reads dY
/// once (33 MB for conv3 at batch 128, tens of microseconds on an H100), so the separate
/// bias pass stays.
pub fn folds_bias(s: &ConvShape, t: &TileConfig) -> bool {
    ((s.c_in / s.groups) * s.k * s.k) % t.bn as usize != 0
}

/// The split-K factor [`backward_weight`] uses for `s` on this device.
fn default_weight_splits(gpu: &Gpu, s: &ConvShape) -> Result<usize> {
    let max_scratch = gpu.max_binding().min(256 << 20);
    Ok(match gpu.conv_kernels {
        ConvKernels::Tiled => {
            let c = choice(gpu, s, tuner::ConvEntry::BackwardWeight)?;
            c.splits
                .unwrap_or_else(|| weight_splits(s, &c.tile, max_scratch))
        }
        ConvKernels::Direct => direct_weight_splits(s, max_scratch),
    })
}

/// Record `dw (+)= ∂L/∂w` from `dy` and the forward input `x`. Long reductions are split over
/// several workgroups into a scratch buffer, then summed (see [`weight_splits`]).
pub fn backward_weight(
    rec: &mut Recorder<'_>,
    s: &ConvShape,
    dy: &Tensor,
    x: &Tensor,
    dw: &Tensor,
    accumulate: bool,
) -> Result<()> {
    let splits = default_weight_splits(rec.gpu(), s)?;
    weight_pass(rec, s, [dy, x], [dw], None, accumulate, splits)
}

/// [`backward_weight`] with an explicit split-K factor (tests and tuning).
pub fn backward_weight_split(
    rec: &mut Recorder<'_>,
    s: &ConvShape,
    dy: &Tensor,
    x: &Tensor,
    dw: &Tensor,
    accumulate: bool,
    splits: usize,
) -> Result<()> {
    weight_pass(rec, s, [dy, x], [dw], None, accumulate, splits)
}

/// Record `g` = (dw, db) (+)= (∂L/∂w, ∂L/∂b) from `t` = (dy, x): on the tiled kernels with
/// the bias column folded into the weight gradient's product where [`folds_bias`] says so,
/// otherwise [`backward_weight`] then [`backward_bias`].
pub fn backward_params(
    rec: &mut Recorder<'_>,
    s: &ConvShape,
    t: [&Tensor; 2],
    g: [&Tensor; 2],
    accumulate: bool,
) -> Result<()> {
    let splits = default_weight_splits(rec.gpu(), s)?;
    backward_params_split(rec, s, t, g, accumulate, splits)
}

/// [`backward_params`] with an explicit split-K factor for the weight gradient (tests).
pub fn backward_params_split(
    rec: &mut Recorder<'_>,
    s: &ConvShape,
    t: [&Tensor; 2],
    g: [&Tensor; 2],
    accumulate: bool,
    splits: usize,
) -> Result<()> {
    let gpu = rec.gpu();
    let tile = choice(gpu, s, tuner::ConvEntry::BackwardWeight)?.tile;
    if gpu.conv_kernels == ConvKernels::Tiled && folds_bias(s, &tile) {
        return weight_pass(rec, s, t, [g[0]], Some(g[1]), accumulate, splits);
    }
    weight_pass(rec, s, t, [g[0]], None, accumulate, splits)?;
    backward_bias(rec, s, t[0], g[1], accumulate)
}

/// The weight gradient's product (and the bias gradient's column when `db` is given), split
/// `splits` ways over K, and the reduction of the splits.
fn weight_pass(
    rec: &mut Recorder<'_>,
    s: &ConvShape,
    [dy, x]: [&Tensor; 2],
    [dw]: [&Tensor; 1],
    db: Option<&Tensor>,
    accumulate: bool,
    splits: usize,
) -> Result<()> {
    let gpu = rec.gpu();
    let mut p = params(s, accumulate)?;
    kernel::expect_len("conv", "dy", dy, s.output_len())?;
    kernel::expect_len("conv", "x", x, s.input_len())?;
    kernel::expect_len("conv", "dw", dw, s.weight_len())?;
    if let Some(db) = db {
        kernel::expect_len("conv", "db", db, s.c_out)?;
    }
    let rows = s.c_out / s.groups;
    let t = choice(gpu, s, tuner::ConvEntry::BackwardWeight)?.tile;
    let k = s.n * s.out_h() * s.out_w();
    let mut splits = splits.clamp(1, k.max(1));
    if gpu.conv_kernels == ConvKernels::Tiled {
        // Slices start on K-step boundaries; recount so none is empty.
        let per = gemm::per_split(k, splits, t.bk);
        p.per = kernel::u32_of("conv", per)?;
        splits = k.div_ceil(per.max(1)).max(1);
    }
    p.splits = kernel::u32_of("conv", splits)?;
    let (product, cols) = match db {
        Some(_) => (Product::BackwardWeightBias, 1),
        None => (Product::BackwardWeight, 0),
    };
    let pl = plan(
        gpu,
        s,
        product,
        rows,
        (s.c_in / s.groups) * s.k * s.k + cols,
        s.groups * splits,
        t,
    )?;
    let dy_v = kernel::whole(gpu, "conv", "dy", dy)?;
    let x_v = kernel::whole(gpu, "conv", "x", x)?;
    let dw_v = kernel::whole(gpu, "conv", "dw", dw)?;
    let db_v = db
        .map(|db| kernel::whole(gpu, "conv", "db", db))
        .transpose()?;
    let flops = 2.0 * s.macs() as f64;
    let launch = |rec: &mut Recorder<'_>, views: &[kernel::View<'_>]| {
        rec.launch(&Launch {
            program: pl.program,
            constants: &pl.constants,
            flops,
            ..Launch::new(
                &SHADER,
                pl.entry,
                bytemuck::bytes_of(&p),
                views,
                pl.groups,
            )
        })
    };
    if splits == 1 {
        let mut views = pl.views(&[dy_v, x_v, dw_v]);
        views.extend(db_v);
        return launch(rec, &views);
    }
    let row = s.weight_len() + if db.is_some() { s.c_out } else { 0 };
    let bytes = (splits * row) as u64 * 4;
    if bytes > gpu.max_binding() {
        return Err(GpuError::BindingTooLarge {
            op: "conv",
            tensor: "dw partials",
            bytes,
            limit: gpu.max_binding(),
        });
    }
    let scratch = gpu.scratch_buffer("conv.dw_partials", bytes);
    let part = kernel::View {
        buffer: &scratch,
        offset: 0,
        size: bytes,
    };
    let mut views = pl.views(&[dy_v, x_v, part]);
    views.extend(db_v);
    launch(rec, &views)?;
    let groups = kernel::grid_1d(gpu, "conv", (row as u64).div_ceil(256))?;
    let (entry, views) = match db_v {
        Some(db_v) => (&REDUCE_SPLITS_BIAS, vec![part, dw_v, db_v]),
        None => (&REDUCE_SPLITS, vec![part, dw_v]),
    };
    rec.launch(&Launch::new(
        &SUMS_SHADER,
        entry,
        bytemuck::bytes_of(&p),
        &views,
        groups,
    ))
}

/// Slices of the batch the bias gradient sums in parallel: about four times
/// [`gemm::TARGET_WORKGROUPS`] workgroups over all channels (one workgroup per channel left
/// most of a large GPU idle, each looping over the whole batch), at most one an image.
pub fn bias_splits(s: &ConvShape) -> usize {
    (4 * gemm::TARGET_WORKGROUPS)
        .div_ceil(s.c_out.max(1))
        .min(s.n)
        .clamp(1, 256)
}

/// Record `db (+)= Σ_{n,oh,ow} dy`, over [`bias_splits`] slices of the batch.
pub fn backward_bias(
    rec: &mut Recorder<'_>,
    s: &ConvShape,
    dy: &Tensor,
    db: &Tensor,
    accumulate: bool,
) -> Result<()> {
    backward_bias_split(rec, s, dy, db, accumulate, bias_splits(s))
}

/// [`backward_bias`] over `splits` slices of the batch (tests): each slice's sums go into a
/// scratch of partials `[splits, C_out]` that a second dispatch adds into `db`.
pub fn backward_bias_split(
    rec: &mut Recorder<'_>,
    s: &ConvShape,
    dy: &Tensor,
    db: &Tensor,
    accumulate: bool,
    splits: usize,
) -> Result<()> {
    let gpu = rec.gpu();
    let mut p = params(s, accumulate)?;
    kernel::expect_len("conv", "dy", dy, s.output_len())?;
    kernel::expect_len("conv", "db", db, s.c_out)?;
    let per = s.n.div_ceil(splits.clamp(1, s.n));
    // Recount so no slice is empty.
    let splits = s.n.div_ceil(per);
    p.per = kernel::u32_of("conv", per)?;
    p.splits = kernel::u32_of("conv", splits)?;
    let dy_v = kernel::whole(gpu, "conv", "dy", dy)?;
    let db_v = kernel::whole(gpu, "conv", "db", db)?;
    let groups = [
        kernel::u32_of("conv", s.c_out)?,
        kernel::u32_of("conv", splits)?,
        1,
    ];
    if splits == 1 {
        let views = [dy_v, db_v];
        let l = Launch::new(
            &SUMS_SHADER,
            &BACKWARD_BIAS,
            bytemuck::bytes_of(&p),
            &views,
            groups,
        );
        return rec.launch(&l);
    }
    let bytes = (splits * s.c_out) as u64 * 4;
    let scratch = gpu.scratch_buffer("conv.db_partials", bytes);
    let part = kernel::View {
        buffer: &scratch,
        offset: 0,
        size: bytes,
    };
    let views = [dy_v, part];
    rec.launch(&Launch::new(
        &SUMS_SHADER,
        &BACKWARD_BIAS,
        bytemuck::bytes_of(&p),
        &views,
        groups,
    ))?;
    let views = [part, db_v];
    let groups = kernel::grid_1d(gpu, "conv", (s.c_out as u64).div_ceil(256))?;
    rec.launch(&Launch::new(
        &SUMS_SHADER,
        &REDUCE_BIAS,
        bytemuck::bytes_of(&p),
        &views,
        groups,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The body of WGSL function `name` in `src`, without comments.
    fn body(src: &str, name: &str) -> String {
        let start = src
            .find(&format!("fn {name}("))
            .unwrap_or_else(|| panic!("no fn {name}"));
        let len = src[start..].find("\n}\n").expect("function end");
        src[start..start + len]
            .lines()
            .map(|l| l.split("//").next().unwrap_or(""))
            .collect::<Vec<_>>()
            .join("\n")
    }

    #[test]
    fn the_k_loop_gathers_do_not_divide() {
        // What the generated core calls per gathered element, every K step.
        for prefix in ["cf", "ci", "cw"] {
            for part in ["a_at", "b_at"] {
                let f = format!("{prefix}_{part}");
                let b = body(SHADER.source, &f);
                assert!(b.contains("k >= t.k_end"), "{f}: not found whole:\n{b}");
                assert!(!b.contains('/') && !b.contains('%'), "{f} divides:\n{b}");
            }
        }
    }

    #[test]
    fn offset_tables_have_a_row_per_reduction_index() {
        let s = ConvShape {
            n: 3,
            c_in: 6,
            h: 9,
            w: 7,
            c_out: 10,
            k: 5,
            stride: 2,
            pad: 2,
            groups: 2,
        };
        let rows = |p| offset_table(&s, p).len() / 4;
        assert_eq!(rows(Product::Forward), 3 * 25);
        assert_eq!(rows(Product::BackwardInput), 5 * 25);
        assert_eq!(rows(Product::BackwardWeight), 3 * s.out_h() * s.out_w());
        // backward_input's kernel offsets split by the stride: kh = 3 is 1·2 + 1.
        let t = offset_table(&s, Product::BackwardInput);
        let row = 3 * 5 + 4; // co 0, kh 3, kw 4
        assert_eq!(t[4 * row + 2], 1 | 1 << 16);
        assert_eq!(t[4 * row + 3], 2);
    }
}
