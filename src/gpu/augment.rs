//! Launcher for `shaders/augment.wgsl`: stored u8 images to model inputs (crop, mirror, PCA
//! lighting, mean subtraction), with the draws made on the host.
use super::kernel::{self, Entry, Launch, Shader, Slot};
use super::{Gpu, GpuError, Recorder, Result, Tensor};
use crate::shape::{AugmentDraw, AugmentShape};

/// This launcher's shader, for [`kernel::all_shaders`].
pub static SHADERS: &[&Shader] = &[&SHADER];

/// The shader.
pub static SHADER: Shader = Shader {
    name: "augment",
    source: include_str!("../../shaders/augment.wgsl"),
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
    ],
};

/// The WGSL `AugmentParams` uniform.
#[repr(C)]
#[derive(Clone, Copy, Debug, bytemuck::Pod, bytemuck::Zeroable)]
pub struct AugmentParams {
    /// Images.
    pub n: u32,
    /// Side S of the stored images.
    pub stored: u32,
    /// Side I of the crop.
    pub crop: u32,
    /// Factor applied to every output value (the model's input scale).
    pub scale: f32,
}

/// f32 words a batch of `n` stored images occupies in the packed-bytes tensor
/// ([`upload_images`] packs four bytes per word).
pub fn image_words(s: &AugmentShape) -> usize {
    (s.n * s.stored * s.stored * 3).div_ceil(4)
}

/// f32 words of `n` [`AugmentDraw`]s.
pub fn draw_words(n: usize) -> usize {
    n * std::mem::size_of::<AugmentDraw>() / 4
}

/// Write a batch of stored images `[N,S,S,3]` u8 into `images` (of [`image_words`] words),
/// ordered before the next submit. The tail of the last word is zero-padded.
pub fn upload_images(gpu: &Gpu, images: &Tensor, bytes: &[u8]) -> Result<()> {
    if bytes.len().div_ceil(4) != images.len {
        return Err(GpuError::Invalid {
            op: "augment",
            reason: format!(
                "{} image bytes do not fill tensor `{}` of {} words",
                bytes.len(),
                images.label,
                images.len
            ),
        });
    }
    let whole = bytes.len() / 4 * 4;
    gpu.queue.write_buffer(&images.buffer, 0, &bytes[..whole]);
    if whole < bytes.len() {
        let mut tail = [0u8; 4];
        tail[..bytes.len() - whole].copy_from_slice(&bytes[whole..]);
        gpu.queue.write_buffer(&images.buffer, whole as u64, &tail);
    }
    Ok(())
}

/// Write `draws` into `t` (of [`draw_words`] words), ordered before the next submit.
pub fn upload_draws(gpu: &Gpu, t: &Tensor, draws: &[AugmentDraw]) -> Result<()> {
    kernel::expect_len("augment", "draws", t, draw_words(draws.len()))?;
    gpu.queue
        .write_buffer(&t.buffer, 0, bytemuck::cast_slice(draws));
    Ok(())
}

/// Record `out` `[N,3,I,I]` = (crop + shift − mean) · `scale` from `images` (packed `[N,S,S,3]`
/// u8), `mean` `[S,S,3]` and `draws` `[N]`.
pub fn forward(
    rec: &mut Recorder<'_>,
    s: &AugmentShape,
    images: &Tensor,
    mean: &Tensor,
    draws: &Tensor,
    out: &Tensor,
    scale: f32,
) -> Result<()> {
    let gpu = rec.gpu();
    if s.crop > s.stored || s.crop == 0 {
        return Err(GpuError::Invalid {
            op: "augment",
            reason: format!("crop {} does not fit stored images of {}", s.crop, s.stored),
        });
    }
    kernel::expect_len("augment", "images", images, image_words(s))?;
    kernel::expect_len("augment", "mean", mean, s.stored * s.stored * 3)?;
    kernel::expect_len("augment", "draws", draws, draw_words(s.n))?;
    let total = s.n * 3 * s.crop * s.crop;
    kernel::expect_len("augment", "out", out, total)?;
    let p = AugmentParams {
        n: kernel::u32_of("augment", s.n)?,
        stored: s.stored as u32,
        crop: s.crop as u32,
        scale,
    };
    kernel::u32_of("augment", image_words(s) * 4)?;
    let views = [
        kernel::whole(gpu, "augment", "images", images)?,
        kernel::whole(gpu, "augment", "mean", mean)?,
        kernel::whole(gpu, "augment", "draws", draws)?,
        kernel::whole(gpu, "augment", "out", out)?,
    ];
    let groups = kernel::grid_1d(gpu, "augment", (total as u64).div_ceil(256))?;
    rec.launch(&Launch::new(
        &SHADER,
        &FORWARD,
        bytemuck::bytes_of(&p),
        &views,
        groups,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn params_match_the_wgsl_uniform() {
        assert_eq!(std::mem::size_of::<AugmentParams>(), 16);
        assert_eq!(std::mem::size_of::<AugmentDraw>(), 32);
    }
}
