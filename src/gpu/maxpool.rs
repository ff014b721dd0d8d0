//! Launcher for `shaders/maxpool.wgsl`: overlapping max pooling; backward routes each window's
//! gradient to its first maximum by gathering (no atomics, nothing saved by forward).
use super::kernel::{self, Entry, Launch, Shader, Slot};
use super::{GpuError, Recorder, Result, Tensor};
use crate::shape::PoolShape;

/// This launcher's shader, for [`kernel::all_shaders`].
pub static SHADERS: &[&Shader] = &[&SHADER];

/// The shader.
pub static SHADER: Shader = Shader {
    name: "maxpool",
    source: include_str!("../../shaders/maxpool.wgsl"),
    prelude: &[],
    gemm_entries: &[],
};
static FORWARD: Entry = Entry {
    name: "forward",
    slots: &[Slot::Uniform, Slot::Read, Slot::ReadWrite],
};
static BACKWARD: Entry = Entry {
    name: "backward",
    slots: &[Slot::Uniform, Slot::Read, Slot::Read, Slot::ReadWrite],
};

/// The WGSL `Params` uniform.
#[repr(C)]
#[derive(Clone, Copy, Debug, bytemuck::Pod, bytemuck::Zeroable)]
pub struct PoolParams {
    /// N·C.
    pub planes: u32,
    /// Input height.
    pub h: u32,
    /// Input width.
    pub w: u32,
    /// Output height.
    pub oh: u32,
    /// Output width.
    pub ow: u32,
    /// Window.
    pub k: u32,
    /// Stride.
    pub stride: u32,
    /// Padding to 32 bytes.
    pub _pad: u32,
}

fn params(s: &PoolShape) -> Result<PoolParams> {
    if s.k == 0 || s.stride == 0 || s.h < s.k || s.w < s.k {
        return Err(GpuError::Invalid {
            op: "maxpool",
            reason: format!(
                "window {} stride {} does not fit {}×{}",
                s.k, s.stride, s.h, s.w
            ),
        });
    }
    kernel::u32_of("maxpool", s.input_len())?;
    Ok(PoolParams {
        planes: (s.n * s.c) as u32,
        h: s.h as u32,
        w: s.w as u32,
        oh: s.out_h() as u32,
        ow: s.out_w() as u32,
        k: s.k as u32,
        stride: s.stride as u32,
        _pad: 0,
    })
}

/// Record `y = maxpool(x)`: x `[N,C,H,W]`, y `[N,C,OH,OW]`.
pub fn forward(rec: &mut Recorder<'_>, s: &PoolShape, x: &Tensor, y: &Tensor) -> Result<()> {
    let gpu = rec.gpu();
    let p = params(s)?;
    kernel::expect_len("maxpool", "x", x, s.input_len())?;
    kernel::expect_len("maxpool", "y", y, s.output_len())?;
    let views = [
        kernel::whole(gpu, "maxpool", "x", x)?,
        kernel::whole(gpu, "maxpool", "y", y)?,
    ];
    let groups = kernel::grid_1d(gpu, "maxpool", (s.output_len() as u64).div_ceil(256))?;
    rec.launch(&Launch::new(
        &SHADER,
        &FORWARD,
        bytemuck::bytes_of(&p),
        &views,
        groups,
    ))
}

/// Record `dx = ∂L/∂x` (overwritten) from `dy` and the forward input `x`.
pub fn backward(
    rec: &mut Recorder<'_>,
    s: &PoolShape,
    x: &Tensor,
    dy: &Tensor,
    dx: &Tensor,
) -> Result<()> {
    let gpu = rec.gpu();
    let p = params(s)?;
    kernel::expect_len("maxpool", "x", x, s.input_len())?;
    kernel::expect_len("maxpool", "dy", dy, s.output_len())?;
    kernel::expect_len("maxpool", "dx", dx, s.input_len())?;
    let views = [
        kernel::whole(gpu, "maxpool", "x", x)?,
        kernel::whole(gpu, "maxpool", "dy", dy)?,
        kernel::whole(gpu, "maxpool", "dx", dx)?,
    ];
    let groups = kernel::grid_1d(gpu, "maxpool", (s.input_len() as u64).div_ceil(256))?;
    rec.launch(&Launch::new(
        &SHADER,
        &BACKWARD,
        bytemuck::bytes_of(&p),
        &views,
        groups,
    ))
}
