//! Launcher for `shaders/sgd.wgsl`: `v ← μ·v − wd·lr·w − lr·g; w ← w + v` in one pass, the
//! hyper-parameters read from the step's [`StepBuffer`].
use super::kernel::{self, Entry, Launch, Shader, Slot};
use super::step::StepBuffer;
use super::{Recorder, Result, Tensor};

/// This launcher's shader, for [`kernel::all_shaders`].
pub static SHADERS: &[&Shader] = &[&SHADER];

/// The shader.
pub static SHADER: Shader = Shader {
    name: "sgd",
    source: include_str!("../../shaders/sgd.wgsl"),
    prelude: &[],
    gemm_entries: &[],
};
static STEP: Entry = Entry {
    name: "step",
    slots: &[
        Slot::Uniform,
        Slot::ReadWrite,
        Slot::ReadWrite,
        Slot::Read,
        Slot::Uniform,
    ],
};

/// The WGSL `Params` uniform.
#[repr(C)]
#[derive(Clone, Copy, Debug, bytemuck::Pod, bytemuck::Zeroable)]
pub struct SgdParams {
    /// Elements in this dispatch.
    pub n: u32,
    /// Padding to 16 bytes.
    pub _pad: [u32; 3],
}

pub use crate::backend::SgdHyper;

/// Record one SGD step on `w` (momentum `v`, gradient `g`, all the same length) with the
/// hyper-parameters in `step`. Tensors larger than one binding (fc6's weight on lavapipe)
/// are updated in chunks.
pub fn step(
    rec: &mut Recorder<'_>,
    w: &Tensor,
    v: &Tensor,
    g: &Tensor,
    step: &StepBuffer,
) -> Result<()> {
    let gpu = rec.gpu();
    kernel::expect_len("sgd", "v", v, w.len)?;
    kernel::expect_len("sgd", "g", g, w.len)?;
    let limit = gpu.max_binding();
    for (start, n) in kernel::elementwise_chunks(gpu, w.len, limit) {
        let (vw, _) = kernel::window(gpu, "sgd", "w", w, start, n, limit)?;
        let (vv, _) = kernel::window(gpu, "sgd", "v", v, start, n, limit)?;
        let (vg, _) = kernel::window(gpu, "sgd", "g", g, start, n, limit)?;
        let params = SgdParams {
            n: kernel::u32_of("sgd", n)?,
            _pad: [0; 3],
        };
        let groups = kernel::grid_1d(gpu, "sgd", (n as u64).div_ceil(256))?;
        let views = [vw, vv, vg, step.view()];
        rec.launch(&Launch::new(
            &SHADER,
            &STEP,
            bytemuck::bytes_of(&params),
            &views,
            groups,
        ))?;
    }
    Ok(())
}
