//! Launcher for `shaders/softmax_xent.wgsl`: per-sample loss and top-1/top-5 hits (forward),
//! `(softmax − onehot)/N` (backward).
use super::kernel::{self, Entry, Launch, Shader, Slot};
use super::{GpuError, Recorder, Result, Tensor};

/// This launcher's shader, for [`kernel::all_shaders`].
pub static SHADERS: &[&Shader] = &[&SHADER];

/// The shader.
pub static SHADER: Shader = Shader {
    name: "softmax_xent",
    source: include_str!("../../shaders/softmax_xent.wgsl"),
    prelude: &[],
    gemm_entries: &[],
};
static FORWARD: Entry = Entry {
    name: "forward",
    slots: &[Slot::Uniform, Slot::Read, Slot::Read, Slot::ReadWrite],
};
static BACKWARD: Entry = Entry {
    name: "backward",
    slots: &[Slot::Uniform, Slot::Read, Slot::Read, Slot::ReadWrite],
};

/// The WGSL `Params` uniform.
#[repr(C)]
#[derive(Clone, Copy, Debug, bytemuck::Pod, bytemuck::Zeroable)]
pub struct XentParams {
    /// Batch.
    pub n: u32,
    /// Classes.
    pub classes: u32,
    /// 1 / batch.
    pub inv_n: f32,
    /// Padding to 16 bytes.
    pub _pad: u32,
}

fn params(n: usize, classes: usize, logits: &Tensor, labels: &Tensor) -> Result<XentParams> {
    if n == 0 || classes == 0 || n > 65535 {
        return Err(GpuError::Invalid {
            op: "softmax_xent",
            reason: format!("batch {n} must be 1..=65535 and classes {classes} positive"),
        });
    }
    kernel::expect_len("softmax_xent", "logits", logits, n * classes)?;
    kernel::expect_len("softmax_xent", "labels", labels, n)?;
    Ok(XentParams {
        n: n as u32,
        classes: kernel::u32_of("softmax_xent", classes)?,
        inv_n: 1.0 / n as f32,
        _pad: 0,
    })
}

/// Record the per-sample `stats` `[N,3]` = (loss, top1 hit, top5 hit) for `logits` `[N,C]`
/// and `labels` `[N]` (u32, from [`Tensor::from_u32`]).
pub fn forward(
    rec: &mut Recorder<'_>,
    n: usize,
    classes: usize,
    logits: &Tensor,
    labels: &Tensor,
    stats: &Tensor,
) -> Result<()> {
    let gpu = rec.gpu();
    let p = params(n, classes, logits, labels)?;
    kernel::expect_len("softmax_xent", "stats", stats, n * 3)?;
    let views = [
        kernel::whole(gpu, "softmax_xent", "logits", logits)?,
        kernel::whole(gpu, "softmax_xent", "labels", labels)?,
        kernel::whole(gpu, "softmax_xent", "stats", stats)?,
    ];
    rec.launch(&Launch::new(
        &SHADER,
        &FORWARD,
        bytemuck::bytes_of(&p),
        &views,
        [n as u32, 1, 1],
    ))
}

/// Record `dlogits` `[N,C]` = (softmax(logits) − onehot(labels)) / N: the gradient of the
/// batch-mean loss.
pub fn backward(
    rec: &mut Recorder<'_>,
    n: usize,
    classes: usize,
    logits: &Tensor,
    labels: &Tensor,
    dlogits: &Tensor,
) -> Result<()> {
    let gpu = rec.gpu();
    let p = params(n, classes, logits, labels)?;
    kernel::expect_len("softmax_xent", "dlogits", dlogits, n * classes)?;
    let views = [
        kernel::whole(gpu, "softmax_xent", "logits", logits)?,
        kernel::whole(gpu, "softmax_xent", "labels", labels)?,
        kernel::whole(gpu, "softmax_xent", "dlogits", dlogits)?,
    ];
    rec.launch(&Launch::new(
        &SHADER,
        &BACKWARD,
        bytemuck::bytes_of(&p),
        &views,
        [n as u32, 1, 1],
    ))
}

/// Mean loss, top-1 and top-5 accuracy of downloaded `stats` `[N,3]`.
pub fn summarize(stats: &[f32]) -> (f32, f32, f32) {
    let n = (stats.len() / 3).max(1) as f32;
    let sum = |j: usize| stats.chunks_exact(3).map(|r| r[j]).sum::<f32>() / n;
    (sum(0), sum(1), sum(2))
}
