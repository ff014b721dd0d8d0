//! ImageNet-like JPEGs for the benches: crops of the fixture photos scaled to 500×375 (or
//! 375×500), quality 90, in ten class folders `n00000000`..`n00000009`.
use image::ImageEncoder;
use rayon::prelude::*;
use std::path::Path;

const PHOTOS: [&str; 6] = [
    "astronaut",
    "coffee",
    "chelsea",
    "rocket",
    "motorcycle_left",
    "hubble_deep_field",
];

/// Number of JPEGs under `raw`'s class folders (0 when it does not exist).
pub fn count(raw: &Path) -> usize {
    (0..10)
        .map(|c| {
            std::fs::read_dir(raw.join(format!("n{c:08}")))
                .map(|d| d.count())
                .unwrap_or(0)
        })
        .sum()
}

/// Write `n` JPEGs under `raw` (replacing what is there) unless it already holds exactly `n`.
pub fn ensure(raw: &Path, n: usize) {
    if count(raw) == n {
        return;
    }
    let _ = std::fs::remove_dir_all(raw);
    // From the working directory when it holds the fixtures (a bench binary carried to another
    // machine, run from the checkout there), else from the tree it was built in.
    let local = Path::new("tests/fixtures/ingest");
    let dir = if local.is_dir() {
        local.to_path_buf()
    } else {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/ingest")
    };
    let photos: Vec<image::RgbImage> = PHOTOS
        .iter()
        .map(|p| image::open(dir.join(format!("{p}.jpg"))).map(|i| i.into_rgb8()))
        .collect::<Result<_, _>>()
        .unwrap_or_else(|e| panic!("fixture photos unreadable: {e}"));
    for c in 0..10 {
        let class = raw.join(format!("n{c:08}"));
        std::fs::create_dir_all(&class).unwrap_or_else(|e| panic!("{}: {e}", class.display()));
    }
    (0..n).into_par_iter().for_each(|i| {
        let src = &photos[i % photos.len()];
        let (w, h) = src.dimensions();
        // A different crop of each photo, so no two files are the same.
        let k = i as u32;
        let crop = image::imageops::crop_imm(src, k % 17, k % 13, w - 20, h - 16).to_image();
        let (tw, th) = if i % 4 == 3 { (375, 500) } else { (500, 375) };
        let img = image::imageops::resize(&crop, tw, th, image::imageops::FilterType::Triangle);
        let mut bytes = Vec::new();
        image::codecs::jpeg::JpegEncoder::new_with_quality(&mut bytes, 90)
            .write_image(img.as_raw(), tw, th, image::ExtendedColorType::Rgb8)
            .unwrap_or_else(|e| panic!("encode: {e}"));
        let path = raw
            .join(format!("n{:08}", i % 10))
            .join(format!("img_{i:06}.JPEG"));
        std::fs::write(&path, bytes).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    });
}
