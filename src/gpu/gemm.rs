//! Launcher for `shaders/gemm.wgsl`: f32 GEMM in the three forms of a fully connected layer
//! (`y = act(x·Wᵀ + b)`, `dX = dY·W`, `dW = dYᵀ·X`) plus the bias gradient, on the generated
//! tile core of [`super::tiles`]. The tile configuration follows the adapter and the product's
//! height ([`tile_for`]); products with few tiles and a long K (the fully connected layers at
//! batch 128 make 8 to 72 tiles, a GPU has over a hundred SMs) are split along K into
//! partials summed by a `reduce` pass ([`splits_for`]). Operands larger than one storage
//! binding (fc6's 151 MB weight on lavapipe's 128 MiB limit) are split along that operand's
//! row dimension into chunks whose windows fit; a split of the reduction dimension K
//! accumulates the chunks.
use super::gemm_plan::span;
pub use super::gemm_plan::{plan, GemmChunk};
use super::kernel::{self, Entry, Launch, Program, Shader, Slot, View};
use super::tiles::{GemmEntry, TileConfig, PART_WGSL};
use super::tuner;
use super::{Gpu, GpuError, Recorder, Result, Tensor};
use crate::shape::{Activation, LinearShape};

/// This launcher's shader, for [`kernel::all_shaders`].
pub static SHADERS: &[&Shader] = &[&SHADER];

/// The shader.
pub static SHADER: Shader = Shader {
    name: "gemm",
    source: include_str!("../../shaders/gemm.wgsl"),
    prelude: &[PART_WGSL],
    gemm_entries: &[
        GemmEntry {
            name: "forward",
            prefix: "fwd",
            a_k_contiguous: true,
            b_k_contiguous: true,
        },
        GemmEntry {
            name: "backward_input",
            prefix: "bwi",
            a_k_contiguous: true,
            b_k_contiguous: false,
        },
        GemmEntry {
            name: "backward_weight",
            prefix: "bww",
            a_k_contiguous: false,
            b_k_contiguous: false,
        },
    ],
};
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
    slots: &[
        Slot::Uniform,
        Slot::Read,
        Slot::Read,
        Slot::ReadWrite,
        Slot::Read,
    ],
};
static BACKWARD_WEIGHT: Entry = Entry {
    name: "backward_weight",
    slots: &[
        Slot::Uniform,
        Slot::Read,
        Slot::Read,
        Slot::ReadWrite,
        Slot::Read,
    ],
};
static REDUCE: Entry = Entry {
    name: "reduce",
    slots: &[
        Slot::Uniform,
        Slot::Read,
        Slot::Unused,
        Slot::ReadWrite,
        Slot::Read,
    ],
};
static BACKWARD_BIAS: Entry = Entry {
    name: "backward_bias",
    slots: &[Slot::Uniform, Slot::Read, Slot::Unused, Slot::ReadWrite],
};

/// The WGSL `Params` uniform.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, bytemuck::Pod, bytemuck::Zeroable)]
pub struct GemmParams {
    /// Rows of C.
    pub m: u32,
    /// Columns of C.
    pub n: u32,
    /// Reduction length.
    pub k: u32,
    /// Bit 0: add bias; bit 1: accumulate into C.
    pub flags: u32,
    /// Element offset of A inside its binding.
    pub a_off: u32,
    /// Element offset of B inside its binding.
    pub b_off: u32,
    /// Element offset of C inside its binding.
    pub c_off: u32,
    /// Element offset of the bias inside its binding.
    pub bias_off: u32,
    /// Leading dimension (row stride) of A as stored.
    pub lda: u32,
    /// Leading dimension of B as stored.
    pub ldb: u32,
    /// Leading dimension of C.
    pub ldc: u32,
    /// Scale of the product (bias and the accumulated C are not scaled).
    pub alpha: f32,
    /// Split-K factor (1: no split).
    pub splits: u32,
    /// K per split, a multiple of the tile's K step.
    pub per: u32,
    /// Fused activation: 0 none, 1 ReLU, 2 tanh.
    pub act: u32,
    /// Padding to 64 bytes.
    pub _pad: u32,
}

/// Which product: the layout of A and B as stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GemmForm {
    /// `C = A·Bᵀ`: A `[M,K]`, B `[N,K]` (linear forward).
    ABt,
    /// `C = A·B`: A `[M,K]`, B `[K,N]` (linear backward to the input).
    AB,
    /// `C = Aᵀ·B`: A `[K,M]`, B `[K,N]` (linear backward to the weight).
    AtB,
}

/// How the tiled kernels pick their tiles: for a GPU, or for a CPU adapter (lavapipe), where
/// smaller tiles and no split-K run best. Set from the adapter's type; tests set `Gpu` on
/// lavapipe to check the GPU configurations.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TilePolicy {
    /// Tiles up to 128×128 with 8×8 outputs a thread, rows fitted to narrow products, split-K.
    Gpu,
    /// [`TileConfig::SMALL`], no split-K.
    Cpu,
}

impl TilePolicy {
    /// `Cpu` on a CPU adapter, `Gpu` on everything else.
    pub fn for_device(device_type: wgpu::DeviceType) -> TilePolicy {
        if device_type == wgpu::DeviceType::Cpu {
            TilePolicy::Cpu
        } else {
            TilePolicy::Gpu
        }
    }
}

/// Workgroups a split-K aims for: about two per SM of the largest GPUs (132 on an H200).
pub const TARGET_WORKGROUPS: usize = 256;

/// The tile for a product of `m` rows on `gpu`: 128×128 for tall products; for up to 128 rows
/// a tile exactly as tall as the product rounded to 8 (conv1's 96 and conv2's 48 channels a
/// group, the batch of a fully connected layer), so no thread computes rows that do not exist;
/// between, 96 rows where that wastes less. Falls back to [`TileConfig::SMALL`] when the
/// adapter's workgroup limits are too small.
pub fn tile_for(gpu: &Gpu, m: usize) -> TileConfig {
    let small = TileConfig::SMALL;
    if let Some(t) = gpu.tile_override.filter(|t| fits(gpu, t)) {
        return t;
    }
    if gpu.tiles == TilePolicy::Cpu {
        return small;
    }
    let bm = if m <= 128 {
        (m.max(1).div_ceil(8) * 8) as u32
    } else if m.div_ceil(96) * 96 < m.div_ceil(128) * 128 {
        96
    } else {
        128
    };
    let t = TileConfig {
        bm,
        ..TileConfig::LARGE
    };
    if fits(gpu, &t) {
        t
    } else {
        small
    }
}

/// Whether `t` is valid and within the device's workgroup limits (a cooperative-matrix
/// tile also needs a device made with that feature: [`Gpu::coop`]).
pub fn fits(gpu: &Gpu, t: &TileConfig) -> bool {
    t.check().is_ok()
        && (t.core == super::tiles::Core::Fma || gpu.coop)
        && t.threads() <= gpu.limits.max_compute_invocations_per_workgroup
        && t.shared_bytes() <= gpu.limits.max_compute_workgroup_storage_size
}

/// Split-K factor for an `m`×`n` product of depth `k` with tile `t`: enough workgroups for
/// [`TARGET_WORKGROUPS`], each slice at least 16 K steps, partials within `max_scratch`
/// bytes; 1 on a CPU adapter.
pub fn splits_for(
    gpu: &Gpu,
    t: &TileConfig,
    m: usize,
    n: usize,
    k: usize,
    max_scratch: u64,
) -> usize {
    if gpu.tiles == TilePolicy::Cpu {
        return 1;
    }
    let tiles = m.div_ceil(t.bm as usize) * n.div_ceil(t.bn as usize);
    let by_k = (k / (16 * t.bk as usize)).max(1);
    let by_mem = ((max_scratch / ((m * n) as u64 * 4).max(1)) as usize).max(1);
    TARGET_WORKGROUPS
        .div_ceil(tiles.max(1))
        .min(by_k)
        .min(by_mem)
        .clamp(1, 64)
}

/// K per split for `splits` slices of `k`, a multiple of the tile's K step.
pub fn per_split(k: usize, splits: usize, bk: u32) -> usize {
    let bk = bk as usize;
    k.div_ceil(splits.max(1)).div_ceil(bk) * bk
}

/// One GEMM: `c[M,N] = act(alpha · op(a)·op(b) (+ bias[N]) (+ c))`. All tensors row-major and
/// dense (leading dimensions are the stored row lengths).
pub struct GemmArgs<'a> {
    /// The product's form.
    pub form: GemmForm,
    /// Rows of C.
    pub m: usize,
    /// Columns of C.
    pub n: usize,
    /// Reduction length.
    pub k: usize,
    /// Left operand.
    pub a: &'a Tensor,
    /// Right operand.
    pub b: &'a Tensor,
    /// Output `[M,N]`.
    pub c: &'a Tensor,
    /// Bias `[N]`, added to every row (form [`GemmForm::ABt`] only).
    pub bias: Option<&'a Tensor>,
    /// Add to C instead of overwriting it (gradient accumulation).
    pub accumulate: bool,
    /// Scale of the product.
    pub alpha: f32,
    /// Activation applied last (form [`GemmForm::ABt`] only).
    pub act: Option<Activation>,
}

/// Rows and row length of an operand as stored.
pub(crate) struct Stored {
    pub(crate) rows: usize,
    pub(crate) cols: usize,
}

impl GemmArgs<'_> {
    pub(crate) fn a_stored(&self) -> Stored {
        match self.form {
            GemmForm::AtB => Stored {
                rows: self.k,
                cols: self.m,
            },
            _ => Stored {
                rows: self.m,
                cols: self.k,
            },
        }
    }
    pub(crate) fn b_stored(&self) -> Stored {
        match self.form {
            GemmForm::ABt => Stored {
                rows: self.n,
                cols: self.k,
            },
            _ => Stored {
                rows: self.k,
                cols: self.n,
            },
        }
    }
}

/// Record `args` with the tile and split-K [`tuner::choose`] picks (the tuned table, or the
/// adapter's policy when tuning is off).
pub fn record(rec: &mut Recorder<'_>, args: &GemmArgs<'_>) -> Result<()> {
    let product = tuner::Product::Gemm {
        form: args.form,
        m: args.m,
        n: args.n,
        k: args.k,
    };
    let c = tuner::choose(rec.gpu(), &product)?;
    record_with(rec, args, c.tile, c.splits)
}

fn act_code(act: Option<Activation>) -> u32 {
    match act {
        None => 0,
        Some(Activation::Relu) => 1,
        Some(Activation::Tanh) => 2,
    }
}

/// Record `args` with tile `t` and `splits` K slices (`None`: [`splits_for`]); for tuning
/// and for tests of every configuration on any adapter.
pub fn record_with(
    rec: &mut Recorder<'_>,
    args: &GemmArgs<'_>,
    t: TileConfig,
    splits: Option<usize>,
) -> Result<()> {
    let gpu = rec.gpu();
    t.check()
        .map_err(|reason| GpuError::Invalid { op: "gemm", reason })?;
    let (sa, sb) = (args.a_stored(), args.b_stored());
    kernel::expect_len("gemm", "a", args.a, sa.rows * sa.cols)?;
    kernel::expect_len("gemm", "b", args.b, sb.rows * sb.cols)?;
    kernel::expect_len("gemm", "c", args.c, args.m * args.n)?;
    if (args.bias.is_some() || args.act.is_some()) && args.form != GemmForm::ABt {
        return Err(GpuError::Invalid {
            op: "gemm",
            reason: "a fused bias or activation needs the A·Bᵀ form".into(),
        });
    }
    if let Some(bias) = args.bias {
        kernel::expect_len("gemm", "bias", bias, args.n)?;
    }
    for t in [args.a, args.b, args.c] {
        kernel::u32_of("gemm", t.len)?;
    }
    let entry = match args.form {
        GemmForm::ABt => &FORWARD,
        GemmForm::AB => &BACKWARD_INPUT,
        GemmForm::AtB => &BACKWARD_WEIGHT,
    };
    let program = Program::Tiled(&SHADER, t);
    let limit = gpu.max_binding();
    let max_scratch = limit.min(256 << 20);
    for ch in plan(args, limit, gpu.offset_alignment())? {
        let a_rows = if args.form == GemmForm::AtB {
            ch.k
        } else {
            ch.m
        };
        let a_cols = if args.form == GemmForm::AtB {
            ch.m
        } else {
            ch.k
        };
        let b_rows = if args.form == GemmForm::ABt {
            ch.n
        } else {
            ch.k
        };
        let b_cols = if args.form == GemmForm::ABt {
            ch.k
        } else {
            ch.n
        };
        let (va, a_off) = kernel::window(
            gpu,
            "gemm",
            "a",
            args.a,
            ch.a_start,
            span(a_rows, a_cols, sa.cols),
            limit,
        )?;
        let (vb, b_off) = kernel::window(
            gpu,
            "gemm",
            "b",
            args.b,
            ch.b_start,
            span(b_rows, b_cols, sb.cols),
            limit,
        )?;
        let (vc, c_off) = kernel::window(
            gpu,
            "gemm",
            "c",
            args.c,
            ch.c_start,
            span(ch.m, ch.n, args.n),
            limit,
        )?;
        // The bias binding is always declared; bind A's window when there is no bias.
        let (vbias, bias_off) = match args.bias {
            Some(bias) => kernel::window(gpu, "gemm", "bias", bias, ch.bias_start, ch.n, limit)?,
            None => (va, 0),
        };
        let splits = splits
            .unwrap_or_else(|| splits_for(gpu, &t, ch.m, ch.n, ch.k, max_scratch))
            .clamp(1, ch.k.max(1));
        let per = per_split(ch.k, splits, t.bk);
        let splits = ch.k.div_ceil(per.max(1)).max(1);
        let params = GemmParams {
            m: ch.m as u32,
            n: ch.n as u32,
            k: ch.k as u32,
            flags: u32::from(ch.add_bias) | (u32::from(ch.accumulate) << 1),
            a_off,
            b_off,
            c_off,
            bias_off,
            lda: sa.cols as u32,
            ldb: sb.cols as u32,
            ldc: args.n as u32,
            alpha: args.alpha,
            splits: splits as u32,
            per: per.max(1) as u32,
            act: act_code(args.act),
            _pad: 0,
        };
        let groups = [
            ch.n.div_ceil(t.bn as usize) as u32,
            ch.m.div_ceil(t.bm as usize) as u32,
            splits as u32,
        ];
        let flops = 2.0 * (ch.m * ch.n * ch.k) as f64;
        if splits == 1 {
            let views = [va, vb, vc, vbias];
            rec.launch(&Launch {
                program,
                flops,
                ..Launch::new(&SHADER, entry, bytemuck::bytes_of(&params), &views, groups)
            })?;
            continue;
        }
        let bytes = (splits * ch.m * ch.n) as u64 * 4;
        if bytes > limit {
            return Err(GpuError::BindingTooLarge {
                op: "gemm",
                tensor: "split-K partials",
                bytes,
                limit,
            });
        }
        let scratch = gpu.scratch_buffer("gemm.partials", bytes);
        let part = View {
            buffer: &scratch,
            offset: 0,
            size: bytes,
        };
        let views = [va, vb, part, vbias];
        rec.launch(&Launch {
            program,
            flops,
            ..Launch::new(&SHADER, entry, bytemuck::bytes_of(&params), &views, groups)
        })?;
        let groups = kernel::grid_1d(gpu, "gemm", ((ch.m * ch.n) as u64).div_ceil(256))?;
        let views = [part, vc, vbias];
        rec.launch(&Launch::new(
            &SHADER,
            &REDUCE,
            bytemuck::bytes_of(&params),
            &views,
            groups,
        ))?;
    }
    Ok(())
}

/// Record `y[N,Fout] = act(x[N,Fin]·w[Fout,Fin]ᵀ + bias)`: a fully connected layer in PyTorch's
/// weight layout, its activation fused when `act` is given.
pub fn linear_forward(
    rec: &mut Recorder<'_>,
    s: &LinearShape,
    x: &Tensor,
    w: &Tensor,
    bias: Option<&Tensor>,
    y: &Tensor,
    act: Option<Activation>,
) -> Result<()> {
    record(
        rec,
        &GemmArgs {
            form: GemmForm::ABt,
            m: s.n,
            n: s.fout,
            k: s.fin,
            a: x,
            b: w,
            c: y,
            bias,
            accumulate: false,
            alpha: 1.0,
            act,
        },
    )
}

/// Record `dx[N,Fin] (+)= dy[N,Fout]·w[Fout,Fin]`.
pub fn linear_backward_input(
    rec: &mut Recorder<'_>,
    s: &LinearShape,
    dy: &Tensor,
    w: &Tensor,
    dx: &Tensor,
    accumulate: bool,
) -> Result<()> {
    record(
        rec,
        &GemmArgs {
            form: GemmForm::AB,
            m: s.n,
            n: s.fin,
            k: s.fout,
            a: dy,
            b: w,
            c: dx,
            bias: None,
            accumulate,
            alpha: 1.0,
            act: None,
        },
    )
}

/// Record `dw[Fout,Fin] (+)= dy[N,Fout]ᵀ·x[N,Fin]`.
pub fn linear_backward_weight(
    rec: &mut Recorder<'_>,
    s: &LinearShape,
    dy: &Tensor,
    x: &Tensor,
    dw: &Tensor,
    accumulate: bool,
) -> Result<()> {
    record(
        rec,
        &GemmArgs {
            form: GemmForm::AtB,
            m: s.fout,
            n: s.fin,
            k: s.n,
            a: dy,
            b: x,
            c: dw,
            bias: None,
            accumulate,
            alpha: 1.0,
            act: None,
        },
    )
}

/// Record `db[Fout] (+)= Σ_n dy[n, :]` for `dy` `[N,Fout]`.
pub fn linear_backward_bias(
    rec: &mut Recorder<'_>,
    s: &LinearShape,
    dy: &Tensor,
    db: &Tensor,
    accumulate: bool,
) -> Result<()> {
    let gpu = rec.gpu();
    let (m, n) = (s.n, s.fout);
    kernel::expect_len("gemm", "dy", dy, m * n)?;
    kernel::expect_len("gemm", "db", db, n)?;
    let params = GemmParams {
        m: kernel::u32_of("gemm", m)?,
        n: kernel::u32_of("gemm", n)?,
        flags: u32::from(accumulate) << 1,
        lda: n as u32,
        ldc: n as u32,
        alpha: 1.0,
        splits: 1,
        ..GemmParams::default()
    };
    let views = [
        kernel::whole(gpu, "gemm", "dy", dy)?,
        kernel::whole(gpu, "gemm", "db", db)?,
    ];
    let groups = [n.div_ceil(256) as u32, 1, 1];
    rec.launch(&Launch::new(
        &SHADER,
        &BACKWARD_BIAS,
        bytemuck::bytes_of(&params),
        &views,
        groups,
    ))
}
