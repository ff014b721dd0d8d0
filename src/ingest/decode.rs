//! Decoding one input file: format by content sniffing (never the extension), a pixel
//! limit checked from the header before decoding, EXIF orientation, and conversion to RGB
//! as Pillow's `convert("RGB")` does (grey replicated, alpha dropped, CMYK converted).
use image::{DynamicImage, ImageDecoder, ImageFormat, ImageReader, Limits, RgbImage};
use std::io::{Cursor, Read};
use std::path::Path;

/// Pillow's default `MAX_IMAGE_PIXELS`: larger images are treated as decompression bombs.
pub const DEFAULT_MAX_PIXELS: u64 = 89_478_485;

/// Bytes an image file may hold beyond its pixels (EXIF, ICC profiles, thumbnails, XMP).
const METADATA_ALLOWANCE: u64 = 64 << 20;

/// How much of a file is read to find the image's size in its header.
const HEAD_BYTES: u64 = 1 << 20;

/// The most bytes a file of `pixels` pixels is read for: 8 bytes a pixel (16-bit RGBA, the
/// widest layout an uncompressed or stored image uses) plus [`METADATA_ALLOWANCE`].
pub fn byte_cap(pixels: u64) -> u64 {
    pixels.saturating_mul(8).saturating_add(METADATA_ALLOWANCE)
}

/// What a path is when it is not a regular file, in words.
fn kind(t: std::fs::FileType) -> &'static str {
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        if t.is_fifo() {
            return "a FIFO";
        }
        if t.is_char_device() {
            return "a character device";
        }
        if t.is_block_device() {
            return "a block device";
        }
        if t.is_socket() {
            return "a socket";
        }
    }
    if t.is_dir() {
        return "a folder";
    }
    "not a regular file"
}

/// Reads an input image file, or says why not (the reject reason). Only regular files are
/// read (a FIFO, a device such as `/dev/zero`, or a socket is refused without being opened
/// for reading, since reading one blocks forever or never ends), and never more bytes than
/// the image its header describes can need, nor than an image within `max_pixels` can
/// ([`byte_cap`]): a sparse 20 GB file named `x.jpg` is refused from its size alone.
pub fn read_image_file(path: &Path, max_pixels: u64) -> Result<Vec<u8>, String> {
    let meta = std::fs::metadata(path).map_err(|e| format!("unreadable: {e}"))?;
    if !meta.is_file() {
        return Err(format!(
            "{}, not a regular file; only regular image files are read",
            kind(meta.file_type())
        ));
    }
    let mut opts = std::fs::OpenOptions::new();
    opts.read(true);
    #[cfg(unix)]
    {
        // Opening a FIFO for reading blocks until a writer appears: should the path have
        // been swapped for one since the check above, this open returns at once instead.
        use std::os::unix::fs::OpenOptionsExt;
        opts.custom_flags(libc::O_NONBLOCK);
    }
    let file = opts.open(path).map_err(|e| format!("unreadable: {e}"))?;
    let meta = file.metadata().map_err(|e| format!("unreadable: {e}"))?;
    if !meta.is_file() {
        return Err(format!(
            "{}, not a regular file; only regular image files are read",
            kind(meta.file_type())
        ));
    }
    let len = meta.len();
    let cap = byte_cap(max_pixels);
    if len > cap {
        return Err(format!(
            "{len} bytes, more than any image within the pixel limit ({max_pixels} pixels) can need ({cap} bytes); not read"
        ));
    }
    let mut bytes = Vec::new();
    (&file)
        .take(HEAD_BYTES)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("unreadable: {e}"))?;
    let dims = ImageReader::new(Cursor::new(&bytes[..]))
        .with_guessed_format()
        .ok()
        .and_then(|r| r.into_dimensions().ok());
    let limit = match dims {
        Some((w, h)) => {
            let need = byte_cap(w as u64 * h as u64).min(cap);
            if len > need {
                return Err(format!(
                    "{len} bytes, but its header describes a {w}×{h} image, which needs at most {need}; not read"
                ));
            }
            need
        }
        None => cap,
    };
    (&file)
        .take((limit + 1).saturating_sub(bytes.len() as u64))
        .read_to_end(&mut bytes)
        .map_err(|e| format!("unreadable: {e}"))?;
    if bytes.len() as u64 > limit {
        return Err(format!(
            "grew past {limit} bytes while being read; not read further"
        ));
    }
    Ok(bytes)
}

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
        .map_err(|e| format!("undecodable {format:?}: {}", e.to_string().trim_end()))?;
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
    let mut img = DynamicImage::from_decoder(decoder)
        .map_err(|e| format!("undecodable {format:?}: {}", e.to_string().trim_end()))?;
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
