//! Resize so the short side is S (Lanczos3 or bilinear, anti-aliased), centre crop S×S, and
//! encode for the `image` column.
use crate::dataset::{Encoding, Resize};
use fast_image_resize::images::Image;
use fast_image_resize::{FilterType, PixelType, ResizeAlg, ResizeOptions, Resizer};
use image::{ImageEncoder, RgbImage};

/// Size of the image resized to short side `s`: the long side is `floor(s·long/short)`,
/// as torchvision's `Resize(s)` computes it.
pub fn resized_dims(w: u32, h: u32, s: u32) -> (u32, u32) {
    if w <= h {
        (s, ((s as u64 * h as u64) / w as u64) as u32)
    } else {
        (((s as u64 * w as u64) / h as u64) as u32, s)
    }
}

/// `[S,S,3]` RGB bytes: `rgb` resized to short side `s`, then its centre S×S starting at
/// `floor((larger - smaller)/2)`.
///
/// The crop is done inside the resizer (a source-space crop box with the same scale), so a
/// very elongated input never makes a huge intermediate image.
pub fn resize_crop(rgb: RgbImage, s: u32) -> Result<Vec<u8>, String> {
    resize_crop_with(rgb, s, Resize::Lanczos3)
}

/// [`resize_crop`] with `filter`. Both are fast_image_resize's convolutions, which follow
/// Pillow's: the filter's support is scaled by the downscale factor (antialiasing), so
/// [`Resize::Bilinear`] is Pillow's BILINEAR, the resize torchvision's `Resize(S)` does.
pub fn resize_crop_with(rgb: RgbImage, s: u32, filter: Resize) -> Result<Vec<u8>, String> {
    let (w, h) = rgb.dimensions();
    let (rw, rh) = resized_dims(w, h, s);
    let (ox, oy) = ((rw - s) / 2, (rh - s) / 2);
    let (sx, sy) = (w as f64 / rw as f64, h as f64 / rh as f64);
    let src = Image::from_vec_u8(w, h, rgb.into_raw(), PixelType::U8x3)
        .map_err(|e| format!("resize: {e}"))?;
    let mut dst = Image::new(s, s, PixelType::U8x3);
    let opts = ResizeOptions::new()
        .resize_alg(ResizeAlg::Convolution(match filter {
            Resize::Lanczos3 => FilterType::Lanczos3,
            Resize::Bilinear => FilterType::Bilinear,
        }))
        .crop(ox as f64 * sx, oy as f64 * sy, s as f64 * sx, s as f64 * sy);
    Resizer::new()
        .resize(&src, &mut dst, &opts)
        .map_err(|e| format!("resize: {e}"))?;
    Ok(dst.into_vec())
}

/// JPEG quality of `--encoding jpeg` (high, so the stored pixels stay close to raw).
pub const JPEG_QUALITY: u8 = 95;

/// Encodes `[S,S,3]` pixels for the `image` column; raw passes them through.
pub fn encode(encoding: Encoding, pixels: Vec<u8>, s: u32) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    match encoding {
        Encoding::Raw => return Ok(pixels),
        Encoding::Jpeg => image::codecs::jpeg::JpegEncoder::new_with_quality(
            &mut out,
            JPEG_QUALITY,
        )
        .write_image(&pixels, s, s, image::ExtendedColorType::Rgb8),
        Encoding::Png => image::codecs::png::PngEncoder::new(&mut out).write_image(
            &pixels,
            s,
            s,
            image::ExtendedColorType::Rgb8,
        ),
    }
    .map_err(|e| format!("encode {encoding}: {e}"))?;
    Ok(out)
}
