//! Launcher for `shaders/batchnorm.wgsl`: batch normalisation per channel, forward (batch or
//! running statistics) and backward, one workgroup per channel.
use super::kernel::{self, Entry, Launch, Shader, Slot};
use super::{GpuError, Recorder, Result, Tensor};
use crate::shape::{BnShape, BN_EPS, BN_MOMENTUM};

/// This launcher's shader, for [`kernel::all_shaders`].
pub static SHADERS: &[&Shader] = &[&SHADER];

/// The shader.
pub static SHADER: Shader = Shader {
    name: "batchnorm",
    source: include_str!("../../shaders/batchnorm.wgsl"),
    prelude: &[],
    gemm_entries: &[],
};
static FORWARD: Entry = Entry {
    name: "forward",
    slots: &[
        Slot::Uniform,
        Slot::Read,
        Slot::Read,
        Slot::Read,
        Slot::ReadWrite,
        Slot::ReadWrite,
        Slot::ReadWrite,
        Slot::ReadWrite,
    ],
};
static BACKWARD: Entry = Entry {
    name: "backward",
    slots: &[
        Slot::Uniform,
        Slot::Read,
        Slot::Read,
        Slot::Read,
        Slot::Read,
        Slot::ReadWrite,
        Slot::ReadWrite,
        Slot::ReadWrite,
    ],
};
static BACKWARD_PARAMS: Entry = Entry {
    name: "backward_params",
    slots: &[
        Slot::Uniform,
        Slot::Read,
        Slot::Read,
        Slot::Read,
        Slot::Read,
        Slot::ReadWrite,
        Slot::ReadWrite,
    ],
};

/// The WGSL `Params` uniform.
#[repr(C)]
#[derive(Clone, Copy, Debug, bytemuck::Pod, bytemuck::Zeroable)]
pub struct BnParams {
    /// Batch.
    pub n: u32,
    /// Channels.
    pub c: u32,
    /// H·W.
    pub hw: u32,
    /// 1: the batch's statistics (training); 0: the running ones.
    pub train: u32,
    /// ε.
    pub eps: f32,
    /// Running-average momentum.
    pub momentum: f32,
    /// Padding to 32 bytes.
    pub _pad: [u32; 2],
}

fn params(s: &BnShape, train: bool) -> Result<BnParams> {
    if s.is_empty() {
        return Err(GpuError::Invalid {
            op: "batchnorm",
            reason: format!("shape {s:?} has no values"),
        });
    }
    kernel::u32_of("batchnorm", s.len())?;
    Ok(BnParams {
        n: s.n as u32,
        c: s.c as u32,
        hw: s.hw as u32,
        train: train as u32,
        eps: BN_EPS,
        momentum: BN_MOMENTUM,
        _pad: [0; 2],
    })
}

/// One workgroup per channel, along x (a device allows at least 65535).
fn groups(s: &BnShape) -> Result<[u32; 3]> {
    Ok([kernel::u32_of("batchnorm", s.c)?, 1, 1])
}

/// Record `y` from `x` `[N,C,H,W]` with `p` = (γ, β) and `running` = (mean, var), moving
/// the running statistics when `train`; `saved` `[2,C]` gets the mean and `1/√(var + ε)`.
pub fn forward(
    rec: &mut Recorder<'_>,
    s: &BnShape,
    train: bool,
    x: &Tensor,
    p: [&Tensor; 2],
    running: [&Tensor; 2],
    out: [&Tensor; 2],
) -> Result<()> {
    let gpu = rec.gpu();
    let u = params(s, train)?;
    let (len, c) = (s.len(), s.c);
    let ops: [(&'static str, &Tensor, usize); 7] = [
        ("x", x, len),
        ("gamma", p[0], c),
        ("beta", p[1], c),
        ("running_mean", running[0], c),
        ("running_var", running[1], c),
        ("y", out[0], len),
        ("saved", out[1], 2 * c),
    ];
    let mut views = Vec::with_capacity(ops.len());
    for (name, t, want) in ops {
        kernel::expect_len("batchnorm", name, t, want)?;
        views.push(kernel::whole(gpu, "batchnorm", name, t)?);
    }
    rec.launch(&Launch::new(
        &SHADER,
        &FORWARD,
        bytemuck::bytes_of(&u),
        &views,
        groups(s)?,
    ))
}

/// Record the gradients of [`forward`] run with `train`, from `t` = (x, dy) and
/// `st` = (γ, saved): `g` = (dγ, dβ), and `dx` when given.
pub fn backward(
    rec: &mut Recorder<'_>,
    s: &BnShape,
    train: bool,
    t: [&Tensor; 2],
    st: [&Tensor; 2],
    g: [&Tensor; 2],
    dx: Option<&Tensor>,
) -> Result<()> {
    let gpu = rec.gpu();
    let u = params(s, train)?;
    let (len, c) = (s.len(), s.c);
    let mut ops: Vec<(&'static str, &Tensor, usize)> = vec![
        ("x", t[0], len),
        ("dy", t[1], len),
        ("gamma", st[0], c),
        ("saved", st[1], 2 * c),
        ("dgamma", g[0], c),
        ("dbeta", g[1], c),
    ];
    if let Some(d) = dx {
        ops.push(("dx", d, len));
    }
    let mut views = Vec::with_capacity(ops.len());
    for (name, t, want) in ops {
        kernel::expect_len("batchnorm", name, t, want)?;
        views.push(kernel::whole(gpu, "batchnorm", name, t)?);
    }
    let entry = if dx.is_some() {
        &BACKWARD
    } else {
        &BACKWARD_PARAMS
    };
    rec.launch(&Launch::new(
        &SHADER,
        entry,
        bytemuck::bytes_of(&u),
        &views,
        groups(s)?,
    ))
}
