//! The augmentation as plain loops: crop, optional mirror, PCA lighting shift, mean subtraction.
use crate::shape::{AugmentDraw, AugmentShape};

/// Turns stored images into model inputs.
///
/// `images` [N,S,S,3] u8 (H,W,C), `mean` [S,S,3] f32 (0..255), `draws` [N] → [N,3,I,I] f32.
/// Output pixel (c, y, x) of image b reads stored pixel (y0 + y, x0 + x'), x' = I−1−x when
/// mirrored, adds `shift[c]`, subtracts the mean image at that same stored position and
/// multiplies by `scale` (the model's input scale, 1 in the paper).
pub fn augment_forward(
    s: &AugmentShape,
    images: &[u8],
    mean: &[f32],
    draws: &[AugmentDraw],
    scale: f32,
) -> Vec<f32> {
    let (ss, i) = (s.stored, s.crop);
    let mut out = vec![0f32; s.n * 3 * i * i];
    for (b, d) in draws.iter().enumerate().take(s.n) {
        for c in 0..3 {
            for y in 0..i {
                for x in 0..i {
                    let xs = if d.flip != 0 { i - 1 - x } else { x };
                    let src = ((d.y0 as usize + y) * ss + d.x0 as usize + xs) * 3 + c;
                    let v = (images[b * ss * ss * 3 + src] as f32 + d.shift[c] - mean[src]) * scale;
                    out[((b * 3 + c) * i + y) * i + x] = v;
                }
            }
        }
    }
    out
}
