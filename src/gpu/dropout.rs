//! Launcher for `shaders/dropout.wgsl`: inverted dropout in place, mask recomputed from
//! `(seed, element index)` in backward, bit-identical to [`crate::shape::uniform01`].
use super::kernel::{self, Entry, Launch, Shader, Slot};
use super::step::StepBuffer;
use super::{GpuError, Recorder, Result, Tensor};

/// This launcher's shader, for [`kernel::all_shaders`].
pub static SHADERS: &[&Shader] = &[&SHADER];

/// The shader (random.wgsl prepended).
pub static SHADER: Shader = Shader {
    name: "dropout",
    source: include_str!("../../shaders/dropout.wgsl"),
    prelude: &[super::kernel::RANDOM_WGSL],
    gemm_entries: &[],
};
static FORWARD: Entry = Entry {
    name: "forward",
    slots: &[Slot::Uniform, Slot::ReadWrite, Slot::Uniform],
};
static BACKWARD: Entry = Entry {
    name: "backward",
    slots: &[Slot::Uniform, Slot::ReadWrite, Slot::Uniform],
};

/// The WGSL `Params` uniform.
#[repr(C)]
#[derive(Clone, Copy, Debug, bytemuck::Pod, bytemuck::Zeroable)]
pub struct DropoutParams {
    /// Elements in this dispatch.
    pub n: u32,
    /// Global index of the dispatch's first element (the random stream's counter).
    pub base: u32,
    /// Which of the step's seeds ([`StepBuffer`]) draws the mask.
    pub slot: u32,
    /// Drop probability.
    pub p_drop: f32,
    /// 1 / (1 − p_drop).
    pub scale: f32,
    /// Padding to 32 bytes.
    pub _pad: [u32; 3],
}

fn run(
    rec: &mut Recorder<'_>,
    entry: &'static Entry,
    x: &Tensor,
    seed: SeedSlot<'_>,
    p_drop: f32,
    offset: u32,
) -> Result<()> {
    let gpu = rec.gpu();
    if !(0.0..1.0).contains(&p_drop) {
        return Err(GpuError::Invalid {
            op: "dropout",
            reason: format!("drop probability {p_drop} is not in [0, 1)"),
        });
    }
    if seed.slot >= 4 {
        return Err(GpuError::Invalid {
            op: "dropout",
            reason: format!("seed slot {} is not in 0..4", seed.slot),
        });
    }
    kernel::u32_of("dropout", x.len + offset as usize)?;
    for (start, n) in kernel::elementwise_chunks(gpu, x.len, gpu.max_binding()) {
        let (v, _) = kernel::window(gpu, "dropout", "x", x, start, n, gpu.max_binding())?;
        let params = DropoutParams {
            n: n as u32,
            base: offset + start as u32,
            slot: seed.slot,
            p_drop,
            scale: 1.0 / (1.0 - p_drop),
            _pad: [0; 3],
        };
        let groups = kernel::grid_1d(gpu, "dropout", (n as u64).div_ceil(256))?;
        let views = [v, seed.step.view()];
        rec.launch(&Launch::new(
            &SHADER,
            entry,
            bytemuck::bytes_of(&params),
            &views,
            groups,
        ))?;
    }
    Ok(())
}

/// Where a dropout's seed is: `step.seeds[slot]` (written every step, see [`StepBuffer`]).
#[derive(Clone, Copy)]
pub struct SeedSlot<'a> {
    /// The step's buffer.
    pub step: &'a StepBuffer,
    /// Index into its seeds (0..4).
    pub slot: u32,
}

/// Record `x ← x · mask / (1 − p)`: element i kept when `uniform01(seed, i) >= p_drop`.
pub fn forward(rec: &mut Recorder<'_>, x: &Tensor, seed: SeedSlot<'_>, p_drop: f32) -> Result<()> {
    run(rec, &FORWARD, x, seed, p_drop, 0)
}

/// [`forward`] on a tensor that starts at element `offset` of the whole mask (a
/// data-parallel replica's rows of the global batch): element i draws `mask(offset + i)`.
pub fn forward_at(
    rec: &mut Recorder<'_>,
    x: &Tensor,
    seed: SeedSlot<'_>,
    p_drop: f32,
    offset: u32,
) -> Result<()> {
    run(rec, &FORWARD, x, seed, p_drop, offset)
}

/// Record `dy ← dy · mask / (1 − p)` with the forward's seed (dy becomes dX).
pub fn backward(
    rec: &mut Recorder<'_>,
    dy: &Tensor,
    seed: SeedSlot<'_>,
    p_drop: f32,
) -> Result<()> {
    run(rec, &BACKWARD, dy, seed, p_drop, 0)
}
