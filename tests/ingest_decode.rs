//! Decoding and preprocessing: every odd format decodes to the expected picture, every bad
//! kind is rejected with a reason, and resize/crop matches Pillow and the crop rule.
mod common;
use alexnet::ingest::{decode_image, resize_crop, resized_dims, DEFAULT_MAX_PIXELS};
use common::*;
use image::{ExtendedColorType, RgbImage};

fn decode(bytes: &[u8]) -> RgbImage {
    decode_image(bytes, DEFAULT_MAX_PIXELS).unwrap().rgb
}

#[test]
fn committed_odd_formats_decode_to_the_reference() {
    let reference = load_rgb(&fixture("chelsea_small.png"));
    // (file, tolerance in mean |Δ| per value): JPEG re-encoding and palette quantisation
    // lose a little; a wrong colour conversion or orientation is off by tens.
    for (name, tol) in [
        ("chelsea_cmyk.jpg", 4.0),
        ("chelsea_progressive.jpg", 2.0),
        ("chelsea_exif6.jpg", 2.0),
        ("chelsea_palette.png", 4.0),
    ] {
        let got = decode(&std::fs::read(fixture(name)).unwrap());
        assert_eq!(
            got.dimensions(),
            reference.dimensions(),
            "{name}: upright size"
        );
        let d = mean_abs_diff(got.as_raw(), reference.as_raw());
        eprintln!("{name}: mean |Δ| {d:.2}");
        assert!(
            d < tol,
            "{name}: mean |Δ| {d:.2} vs the RGB original (tolerance {tol})"
        );
    }
}

#[test]
fn cmyk_is_not_inverted_or_channel_swapped() {
    // A stronger check than the mean: per-channel means must match the original's.
    let reference = load_rgb(&fixture("chelsea_small.png"));
    let got = decode(&std::fs::read(fixture("chelsea_cmyk.jpg")).unwrap());
    for c in 0..3 {
        let mean = |im: &RgbImage| {
            im.pixels().map(|p| p[c] as f64).sum::<f64>() / (im.width() * im.height()) as f64
        };
        let (a, b) = (mean(&got), mean(&reference));
        assert!(
            (a - b).abs() < 3.0,
            "channel {c}: CMYK decode mean {a:.1} vs original {b:.1}"
        );
    }
}

#[test]
fn derived_formats_decode_exactly() {
    let reference = load_rgb(&fixture("chelsea_small.png"));
    let (w, h) = reference.dimensions();
    let raw = reference.as_raw();
    // 16-bit RGB: v·257 must come back as v.
    let wide: Vec<u8> = raw
        .iter()
        .flat_map(|&v| (v as u16 * 257).to_be_bytes())
        .collect();
    let wide_native: Vec<u8> = wide
        .chunks(2)
        .flat_map(|c| u16::from_be_bytes([c[0], c[1]]).to_ne_bytes())
        .collect();
    let png16 = png_bytes(&wide_native, w, h, ExtendedColorType::Rgb16);
    assert_eq!(decode(&png16).as_raw(), raw, "16-bit PNG");
    // Alpha is dropped, colour kept (Pillow convert("RGB")).
    let rgba: Vec<u8> = raw
        .chunks(3)
        .enumerate()
        .flat_map(|(i, p)| [p[0], p[1], p[2], (i * 37 % 256) as u8])
        .collect();
    let alpha = png_bytes(&rgba, w, h, ExtendedColorType::Rgba8);
    assert_eq!(decode(&alpha).as_raw(), raw, "RGBA PNG");
    // Grey is replicated into R, G and B.
    let grey: Vec<u8> = raw
        .chunks(3)
        .map(|p| ((p[0] as u32 * 3 + p[1] as u32 * 5 + p[2] as u32 * 2) / 10) as u8)
        .collect();
    let got = decode(&png_bytes(&grey, w, h, ExtendedColorType::L8));
    let want: Vec<u8> = grey.iter().flat_map(|&g| [g, g, g]).collect();
    assert_eq!(got.as_raw(), &want, "greyscale PNG");
    // A PNG whose name says JPEG: the decoder sniffs content (bytes only reach it anyway,
    // and the CLI test stores this under a .JPEG name).
    assert_eq!(
        decode(&png_bytes(raw, w, h, ExtendedColorType::Rgb8)).as_raw(),
        raw
    );
    // Grey JPEG.
    let mut gj = Vec::new();
    image::ImageEncoder::write_image(
        image::codecs::jpeg::JpegEncoder::new_with_quality(&mut gj, 95),
        &grey,
        w,
        h,
        ExtendedColorType::L8,
    )
    .unwrap();
    let got = decode(&gj);
    assert!(
        got.pixels().all(|p| p[0] == p[1] && p[1] == p[2]),
        "grey JPEG must give R=G=B"
    );
    assert!(mean_abs_diff(got.as_raw(), &want) < 2.0);
}

#[test]
fn bad_kinds_are_rejected_with_a_reason() {
    for (name, bytes, word) in bad_kinds() {
        let err = decode_image(&bytes, DEFAULT_MAX_PIXELS)
            .err()
            .unwrap_or_else(|| panic!("{name} decoded"));
        assert!(err.contains(word), "{name}: reason `{err}` lacks `{word}`");
    }
    let ok = std::fs::read(fixture("coffee.jpg")).unwrap();
    let (w, h) = load_rgb(&fixture("coffee.jpg")).dimensions();
    let limit = (w * h) as u64 - 1;
    let err = decode_image(&ok, limit).err().unwrap();
    assert!(err.contains("pixel limit"), "{err}");
    assert!(decode_image(&ok, limit + 1).is_ok());
}

#[test]
fn resize_matches_pillow_lanczos() {
    // coffee_pillow_s64.png: Pillow LANCZOS to short side 64, centre crop (make_fixtures.py).
    let ours = resize_crop(decode(&std::fs::read(fixture("coffee.jpg")).unwrap()), 64).unwrap();
    let pillow = load_rgb(&fixture("coffee_pillow_s64.png"));
    let d = mean_abs_diff(&ours, pillow.as_raw());
    assert!(d < 2.0, "mean |Δ| vs Pillow {d:.2}");
}

#[test]
fn crop_starts_at_floor_half_difference() {
    assert_eq!(resized_dims(500, 375, 256), (341, 256));
    assert_eq!(resized_dims(375, 500, 256), (256, 341));
    // At scale 1 the resize is the identity, so the crop offset shows directly.
    for (w, h) in [(101u32, 50u32), (50, 101), (90, 50)] {
        let img = RgbImage::from_fn(w, h, |x, y| {
            image::Rgb([x as u8, y as u8, (x * 7 + y) as u8])
        });
        let got = resize_crop(img.clone(), 50).unwrap();
        let (ox, oy) = ((w - 50) / 2, (h - 50) / 2);
        let want = image::imageops::crop_imm(&img, ox, oy, 50, 50).to_image();
        assert_eq!(got, want.into_raw(), "{w}×{h}");
    }
}
