//! Launcher for `shaders/lrn.wgsl`: the paper's cross-channel LRN, forward (saving the scale)
//! and backward.
use super::kernel::{self, Entry, Launch, Shader, Slot};
use super::{GpuError, Recorder, Result, Tensor};
use crate::backend::Grad;
use crate::shape::LrnParams;

/// This launcher's shader, for [`kernel::all_shaders`].
pub static SHADERS: &[&Shader] = &[&SHADER];

/// The shader.
pub static SHADER: Shader = Shader {
    name: "lrn",
    source: include_str!("../../shaders/lrn.wgsl"),
    prelude: &[],
    gemm_entries: &[],
};
static FORWARD: Entry = Entry {
    name: "forward",
    slots: &[Slot::Uniform, Slot::Read, Slot::ReadWrite, Slot::ReadWrite],
};
static BACKWARD: Entry = Entry {
    name: "backward",
    slots: &[
        Slot::Uniform,
        Slot::Read,
        Slot::Read,
        Slot::Read,
        Slot::ReadWrite,
        Slot::Read,
    ],
};

/// The WGSL `Params` uniform.
#[repr(C)]
#[derive(Clone, Copy, Debug, bytemuck::Pod, bytemuck::Zeroable)]
pub struct LrnShaderParams {
    /// Batch.
    pub n: u32,
    /// Channels.
    pub c: u32,
    /// H·W.
    pub hw: u32,
    /// size / 2.
    pub half: u32,
    /// k.
    pub k: f32,
    /// alpha.
    pub alpha: f32,
    /// beta.
    pub beta: f32,
    /// Padding to 32 bytes.
    pub _pad: u32,
}

fn params(n: usize, c: usize, hw: usize, lrn: &LrnParams) -> Result<LrnShaderParams> {
    if lrn.size % 2 == 0 || c == 0 {
        return Err(GpuError::Invalid {
            op: "lrn",
            reason: format!("window {} must be odd and channels {c} positive", lrn.size),
        });
    }
    kernel::u32_of("lrn", n * c * hw)?;
    Ok(LrnShaderParams {
        n: n as u32,
        c: c as u32,
        hw: hw as u32,
        half: (lrn.size / 2) as u32,
        k: lrn.k,
        alpha: lrn.alpha,
        beta: lrn.beta,
        _pad: 0,
    })
}

/// Record `b = lrn(a)` and the saved `scale` for activations of `dims` `[N,C,H,W]`.
pub fn forward(
    rec: &mut Recorder<'_>,
    lrn: &LrnParams,
    dims: [usize; 4],
    a: &Tensor,
    b: &Tensor,
    scale: &Tensor,
) -> Result<()> {
    let gpu = rec.gpu();
    let [n, c, h, w] = dims;
    let hw = h * w;
    let p = params(n, c, hw, lrn)?;
    let len = n * c * hw;
    kernel::expect_len("lrn", "a", a, len)?;
    kernel::expect_len("lrn", "b", b, len)?;
    kernel::expect_len("lrn", "scale", scale, len)?;
    let views = [
        kernel::whole(gpu, "lrn", "a", a)?,
        kernel::whole(gpu, "lrn", "b", b)?,
        kernel::whole(gpu, "lrn", "scale", scale)?,
    ];
    let groups = kernel::grid_1d(gpu, "lrn", (len as u64).div_ceil(256))?;
    rec.launch(&Launch::new(
        &SHADER,
        &FORWARD,
        bytemuck::bytes_of(&p),
        &views,
        groups,
    ))
}

/// Record `t.dx = ∂L/∂a` `[N,C,H,W]` (`dims`) from `t.dy`, the forward's input `t.x` and
/// output `t.y`, and its saved `scale`; nothing without a `t.dx`.
pub fn backward(
    rec: &mut Recorder<'_>,
    lrn: &LrnParams,
    dims: [usize; 4],
    t: Grad<'_, Tensor>,
    scale: &Tensor,
) -> Result<()> {
    let Some(da) = t.dx else { return Ok(()) };
    let (a, b, db) = (t.x, t.y, t.dy);
    let gpu = rec.gpu();
    let [n, c, h, w] = dims;
    let hw = h * w;
    let p = params(n, c, hw, lrn)?;
    let len = n * c * hw;
    for (name, t) in [("a", a), ("b", b), ("scale", scale), ("db", db), ("da", da)] {
        kernel::expect_len("lrn", name, t, len)?;
    }
    let views = [
        kernel::whole(gpu, "lrn", "a", a)?,
        kernel::whole(gpu, "lrn", "scale", scale)?,
        kernel::whole(gpu, "lrn", "db", db)?,
        kernel::whole(gpu, "lrn", "da", da)?,
        kernel::whole(gpu, "lrn", "b", b)?,
    ];
    let groups = kernel::grid_1d(gpu, "lrn", (len as u64).div_ceil(256))?;
    rec.launch(&Launch::new(
        &SHADER,
        &BACKWARD,
        bytemuck::bytes_of(&p),
        &views,
        groups,
    ))
}
