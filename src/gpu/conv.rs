//! Launcher for `shaders/conv.wgsl` (GPUs) and `shaders/conv_direct.wgsl` (CPU adapters):
//! convolution without an im2col buffer, forward with bias, backward to the input, the weight
//! and the bias. Each operand is bound whole, so it must fit one storage binding
//! ([`GpuError::BindingTooLarge`] otherwise).
use super::gemm::GemmTiles;
use super::kernel::{self, Entry, Shader, Slot};
use super::{Gpu, GpuError, Result, Tensor};
use crate::shape::ConvShape;

/// `shaders/conv_common.wgsl`: the uniform, bindings and store both convolution shaders share.
pub const COMMON_WGSL: &str = include_str!("../../shaders/conv_common.wgsl");
/// The shader of GPUs: shared-memory tiles.
pub static SHADER: Shader = Shader {
    name: "conv",
    source: include_str!("../../shaders/conv.wgsl"),
    prelude: &[COMMON_WGSL],
};
/// The shader of CPU adapters: the same entry points without shared memory.
pub static DIRECT_SHADER: Shader = Shader {
    name: "conv_direct",
    source: include_str!("../../shaders/conv_direct.wgsl"),
    prelude: &[COMMON_WGSL],
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

/// Shader, override constants and workgroup grid of one dispatch.
type Launch = (&'static Shader, Vec<(&'static str, f64)>, [u32; 3]);

/// Shader, override constants and grid of one convolution GEMM: `rows` × `cols` per group,
/// `z` = groups (times splits for the weight gradient).
fn launch(gpu: &Gpu, rows: usize, cols: usize, z: usize) -> Result<Launch> {
    Ok(match gpu.conv_kernels {
        ConvKernels::Tiled => {
            let t = tiles_for_rows(rows);
            let tile = (4 * t.wg_m as usize, 4 * t.wg_n as usize);
            (
                &SHADER,
                constants(t).to_vec(),
                grid(gpu, rows, cols, z, tile)?,
            )
        }
        ConvKernels::Direct => {
            let tile = (DIRECT_TM, DIRECT_WG * DIRECT_TN);
            (&DIRECT_SHADER, Vec::new(), grid(gpu, rows, cols, z, tile)?)
        }
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
static REDUCE_SPLITS: Entry = Entry {
    name: "reduce_splits",
    slots: &[Slot::Uniform, Slot::Read, Slot::Unused, Slot::ReadWrite],
};
static BACKWARD_BIAS: Entry = Entry {
    name: "backward_bias",
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
    /// Padding to 64 bytes.
    pub _pad: [u32; 3],
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
        _pad: [0; 3],
    })
}

/// Tiles for a GEMM of `m` rows: 64-row tiles, or fewer rows when `m` is small. A narrow layer
/// (8 or 16 output channels a group in the small variants) would otherwise spend 75–88% of
/// every tile's multiply-adds on rows that do not exist; measured on lavapipe, conv1 of the
/// quickstart model (16 channels) took half of the training step that way.
pub fn tiles_for_rows(m: usize) -> GemmTiles {
    let wg_m = match m {
        0..=8 => 2,
        9..=16 => 4,
        17..=32 => 8,
        _ => 16,
    };
    GemmTiles {
        wg_m,
        ..GemmTiles::default()
    }
}

fn constants(t: GemmTiles) -> [(&'static str, f64); 3] {
    [
        ("WG_M", f64::from(t.wg_m)),
        ("WG_N", f64::from(t.wg_n)),
        ("TILE_K", f64::from(t.tile_k)),
    ]
}

/// The grid over `rows` × `cols` when one workgroup covers `tile` = (rows, cols).
fn grid(gpu: &Gpu, rows: usize, cols: usize, z: usize, tile: (usize, usize)) -> Result<[u32; 3]> {
    let x = cols.div_ceil(tile.1);
    let max = gpu.limits.max_compute_workgroups_per_dimension as usize;
    if x > max {
        return Err(GpuError::TooLarge {
            op: "conv",
            size: cols as u64,
        });
    }
    Ok([x as u32, rows.div_ceil(tile.0) as u32, z as u32])
}

/// Record `y = conv(x, w) + bias`: x `[N,C_in,H,W]`, w `[C_out,C_in/G,k,k]`, bias `[C_out]`,
/// y `[N,C_out,OH,OW]`.
pub fn forward(
    gpu: &Gpu,
    encoder: &mut wgpu::CommandEncoder,
    s: &ConvShape,
    x: &Tensor,
    w: &Tensor,
    bias: &Tensor,
    y: &Tensor,
) -> Result<()> {
    let p = params(s, false)?;
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
    let (shader, constants, groups) = launch(
        gpu,
        s.c_out / s.groups,
        s.n * s.out_h() * s.out_w(),
        s.groups,
    )?;
    kernel::record(
        gpu,
        encoder,
        shader,
        &FORWARD,
        &constants,
        bytemuck::bytes_of(&p),
        &views,
        groups,
    )
}

/// Record `dx (+)= ∂L/∂x` from `dy` `[N,C_out,OH,OW]` and `w`.
#[allow(clippy::too_many_arguments)]
pub fn backward_input(
    gpu: &Gpu,
    encoder: &mut wgpu::CommandEncoder,
    s: &ConvShape,
    dy: &Tensor,
    w: &Tensor,
    dx: &Tensor,
    accumulate: bool,
) -> Result<()> {
    let p = params(s, accumulate)?;
    kernel::expect_len("conv", "dy", dy, s.output_len())?;
    kernel::expect_len("conv", "w", w, s.weight_len())?;
    kernel::expect_len("conv", "dx", dx, s.input_len())?;
    let views = [
        kernel::whole(gpu, "conv", "w", w)?,
        kernel::whole(gpu, "conv", "dy", dy)?,
        kernel::whole(gpu, "conv", "dx", dx)?,
    ];
    let (shader, constants, groups) = launch(gpu, s.c_in / s.groups, s.n * s.h * s.w, s.groups)?;
    kernel::record(
        gpu,
        encoder,
        shader,
        &BACKWARD_INPUT,
        &constants,
        bytemuck::bytes_of(&p),
        &views,
        groups,
    )
}

/// Split-K factor for backward_weight: enough workgroups to fill a large GPU (~1024), each
/// split at least 8 K-steps long, partials within `max_scratch` bytes.
pub fn weight_splits(s: &ConvShape, t: GemmTiles, max_scratch: u64) -> usize {
    let m = s.c_out / s.groups;
    let n = (s.c_in / s.groups) * s.k * s.k;
    let k = s.n * s.out_h() * s.out_w();
    let tiles = m.div_ceil(4 * t.wg_m as usize) * n.div_ceil(4 * t.wg_n as usize) * s.groups;
    let by_k = (k / (8 * t.tile_k as usize)).max(1);
    let by_mem = splits_within(s, max_scratch);
    1024usize
        .div_ceil(tiles)
        .min(by_k)
        .min(by_mem)
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

/// The most weight-gradient partials (each a whole `dw`) that fit `max_scratch` bytes; 1 at least.
fn splits_within(s: &ConvShape, max_scratch: u64) -> usize {
    ((max_scratch / (s.weight_len() as u64 * 4).max(1)) as usize).max(1)
}

/// Record `dw (+)= ∂L/∂w` from `dy` and the forward input `x`. Long reductions are split over
/// several workgroups into a scratch buffer, then summed (see [`weight_splits`]).
#[allow(clippy::too_many_arguments)]
pub fn backward_weight(
    gpu: &Gpu,
    encoder: &mut wgpu::CommandEncoder,
    s: &ConvShape,
    dy: &Tensor,
    x: &Tensor,
    dw: &Tensor,
    accumulate: bool,
) -> Result<()> {
    let max_scratch = gpu.max_binding().min(256 << 20);
    let splits = match gpu.conv_kernels {
        ConvKernels::Tiled => weight_splits(s, tiles_for_rows(s.c_out / s.groups), max_scratch),
        ConvKernels::Direct => direct_weight_splits(s, max_scratch),
    };
    backward_weight_split(gpu, encoder, s, dy, x, dw, accumulate, splits)
}

/// [`backward_weight`] with an explicit split-K factor (tests and tuning).
#[allow(clippy::too_many_arguments)]
pub fn backward_weight_split(
    gpu: &Gpu,
    encoder: &mut wgpu::CommandEncoder,
    s: &ConvShape,
    dy: &Tensor,
    x: &Tensor,
    dw: &Tensor,
    accumulate: bool,
    splits: usize,
) -> Result<()> {
    let mut p = params(s, accumulate)?;
    kernel::expect_len("conv", "dy", dy, s.output_len())?;
    kernel::expect_len("conv", "x", x, s.input_len())?;
    kernel::expect_len("conv", "dw", dw, s.weight_len())?;
    let splits = splits.max(1);
    p.splits = kernel::u32_of("conv", splits)?;
    let (shader, constants, mut groups) = launch(
        gpu,
        s.c_out / s.groups,
        (s.c_in / s.groups) * s.k * s.k,
        s.groups * splits,
    )?;
    if groups[2] > gpu.limits.max_compute_workgroups_per_dimension {
        return Err(GpuError::TooLarge {
            op: "conv",
            size: u64::from(groups[2]),
        });
    }
    let dy_v = kernel::whole(gpu, "conv", "dy", dy)?;
    let x_v = kernel::whole(gpu, "conv", "x", x)?;
    if splits == 1 {
        let views = [dy_v, x_v, kernel::whole(gpu, "conv", "dw", dw)?];
        return kernel::record(
            gpu,
            encoder,
            shader,
            &BACKWARD_WEIGHT,
            &constants,
            bytemuck::bytes_of(&p),
            &views,
            groups,
        );
    }
    let bytes = (splits * s.weight_len()) as u64 * 4;
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
    kernel::record(
        gpu,
        encoder,
        shader,
        &BACKWARD_WEIGHT,
        &constants,
        bytemuck::bytes_of(&p),
        &[dy_v, x_v, part],
        groups,
    )?;
    groups = kernel::grid_1d(gpu, "conv", (s.weight_len() as u64).div_ceil(256))?;
    let views = [part, kernel::whole(gpu, "conv", "dw", dw)?];
    kernel::record(
        gpu,
        encoder,
        &SHADER,
        &REDUCE_SPLITS,
        &[],
        bytemuck::bytes_of(&p),
        &views,
        groups,
    )
}

/// Record `db (+)= Σ_{n,oh,ow} dy`.
pub fn backward_bias(
    gpu: &Gpu,
    encoder: &mut wgpu::CommandEncoder,
    s: &ConvShape,
    dy: &Tensor,
    db: &Tensor,
    accumulate: bool,
) -> Result<()> {
    let p = params(s, accumulate)?;
    kernel::expect_len("conv", "dy", dy, s.output_len())?;
    kernel::expect_len("conv", "db", db, s.c_out)?;
    let views = [
        kernel::whole(gpu, "conv", "dy", dy)?,
        kernel::whole(gpu, "conv", "db", db)?,
    ];
    let groups = [kernel::u32_of("conv", s.c_out)?, 1, 1];
    kernel::record(
        gpu,
        encoder,
        &SHADER,
        &BACKWARD_BIAS,
        &[],
        bytemuck::bytes_of(&p),
        &views,
        groups,
    )
}
