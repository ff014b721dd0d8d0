//! Launcher for `shaders/activation.wgsl`: ReLU / tanh forward and backward, in place.
use super::kernel::{self, Entry, Launch, Shader, Slot};
use super::{Recorder, Result, Tensor};
use crate::shape::Activation;

/// This launcher's shader, for [`kernel::all_shaders`].
pub static SHADERS: &[&Shader] = &[&SHADER];

/// The shader.
pub static SHADER: Shader = Shader {
    name: "activation",
    source: include_str!("../../shaders/activation.wgsl"),
    prelude: &[],
    gemm_entries: &[],
};
static FORWARD: Entry = Entry {
    name: "forward",
    slots: &[Slot::Uniform, Slot::ReadWrite],
};
static BACKWARD: Entry = Entry {
    name: "backward",
    slots: &[Slot::Uniform, Slot::ReadWrite, Slot::Read],
};

/// The WGSL `Params` uniform.
#[repr(C)]
#[derive(Clone, Copy, Debug, bytemuck::Pod, bytemuck::Zeroable)]
pub struct ActivationParams {
    /// Elements in this dispatch.
    pub n: u32,
    /// 0 = ReLU, 1 = tanh.
    pub kind: u32,
    /// Padding to 16 bytes.
    pub _pad: [u32; 2],
}

fn kind(a: Activation) -> u32 {
    match a {
        Activation::Relu => 0,
        Activation::Tanh => 1,
    }
}

/// Record `x ← f(x)` over the whole tensor.
pub fn forward(rec: &mut Recorder<'_>, act: Activation, x: &Tensor) -> Result<()> {
    let gpu = rec.gpu();
    for (start, n) in kernel::elementwise_chunks(gpu, x.len, gpu.max_binding()) {
        let (v, _) = kernel::window(gpu, "activation", "x", x, start, n, gpu.max_binding())?;
        let params = ActivationParams {
            n: kernel::u32_of("activation", n)?,
            kind: kind(act),
            _pad: [0; 2],
        };
        let groups = kernel::grid_1d(gpu, "activation", (n as u64).div_ceil(256))?;
        rec.launch(&Launch::new(
            &SHADER,
            &FORWARD,
            bytemuck::bytes_of(&params),
            &[v],
            groups,
        ))?;
    }
    Ok(())
}

/// Record `dy ← dy · f'(y)` (dy becomes dX), `y` the forward output, same length.
pub fn backward(rec: &mut Recorder<'_>, act: Activation, dy: &Tensor, y: &Tensor) -> Result<()> {
    let gpu = rec.gpu();
    kernel::expect_len("activation", "y", y, dy.len)?;
    for (start, n) in kernel::elementwise_chunks(gpu, dy.len, gpu.max_binding()) {
        let (vd, _) = kernel::window(gpu, "activation", "dy", dy, start, n, gpu.max_binding())?;
        let (vy, _) = kernel::window(gpu, "activation", "y", y, start, n, gpu.max_binding())?;
        let params = ActivationParams {
            n: kernel::u32_of("activation", n)?,
            kind: kind(act),
            _pad: [0; 2],
        };
        let groups = kernel::grid_1d(gpu, "activation", (n as u64).div_ceil(256))?;
        rec.launch(&Launch::new(
            &SHADER,
            &BACKWARD,
            bytemuck::bytes_of(&params),
            &[vd, vy],
            groups,
        ))?;
    }
    Ok(())
}
