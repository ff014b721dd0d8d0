//! Decoding one input file: format by content sniffing (never the extension), a pixel
//! limit checked from the header before decoding, EXIF orientation, and conversion to RGB
//! as Pillow's `convert("RGB")` does (grey replicated, alpha dropped, CMYK converted).
use image::{DynamicImage, ImageDecoder, ImageFormat, ImageReader, Limits, RgbImage};
use std::io::Cursor;

/// Pillow's default `MAX_IMAGE_PIXELS`: larger images are treated as decompression bombs.
pub const DEFAULT_MAX_PIXELS: u64 = 89_478_485;

/// An upright RGB image.
pub struct Decoded {
    /// The pixels after EXIF orientation.
    pub rgb: RgbImage,
}

/// Decodes `bytes` into an upright RGB image, or says why not (the reject reason).
pub fn decode_image(bytes: &[u8], max_pixels: u64) -> Result<Decoded, String> {
    if bytes.is_empty() {
        return Err("zero bytes".into());
    }
    let format = image::guess_format(bytes)
        .map_err(|_| "not an image (content matches no supported format)".to_string())?;
    if format == ImageFormat::Jpeg && jpeg_truncated(bytes) {
        // zune-jpeg fills missing scan data with grey instead of failing; Pillow refuses.
        return Err("truncated JPEG (no end-of-image marker after the last scan)".into());
    }
    let mut reader = ImageReader::with_format(Cursor::new(bytes), format);
    let mut limits = Limits::default();
    // The header check below is the real guard; this only stops a lying header from making
    // the decoder allocate far more (16-bit RGBA is 8 bytes per pixel).
    limits.max_alloc = Some(max_pixels.saturating_mul(8).saturating_add(1 << 20));
    reader.limits(limits);
    let mut decoder = reader
        .into_decoder()
        .map_err(|e| format!("undecodable {format:?}: {e}"))?;
    let (w, h) = decoder.dimensions();
    let pixels = w as u64 * h as u64;
    if pixels > max_pixels {
        return Err(format!(
            "over the pixel limit: {w}×{h} = {pixels} pixels > {max_pixels} (raise --max-pixels if it is genuine)"
        ));
    }
    if pixels == 0 {
        return Err(format!("empty image ({w}×{h})"));
    }
    let orientation = decoder
        .orientation()
        .unwrap_or(image::metadata::Orientation::NoTransforms);
    let mut img =
        DynamicImage::from_decoder(decoder).map_err(|e| format!("undecodable {format:?}: {e}"))?;
    img.apply_orientation(orientation);
    Ok(Decoded {
        rgb: img.into_rgb8(),
    })
}

/// True when a JPEG has no EOI marker after its last SOS marker. Inside entropy-coded data
/// 0xFF is always followed by 0x00 or a restart marker, so FF D9 there is the real end.
fn jpeg_truncated(bytes: &[u8]) -> bool {
    let last_sos = bytes.windows(2).rposition(|w| w == [0xFF, 0xDA]);
    match last_sos {
        None => true,
        Some(p) => !bytes[p..].windows(2).any(|w| w == [0xFF, 0xD9]),
    }
}
