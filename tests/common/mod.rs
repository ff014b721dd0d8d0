//! Helpers shared by the ingest tests: fixtures, derived odd files, raw trees, comparisons.
#![allow(dead_code)]
pub mod steps;

use image::{ImageEncoder, RgbImage};
use std::path::{Path, PathBuf};

pub fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/ingest")
        .join(name)
}

pub fn load_rgb(path: &Path) -> RgbImage {
    image::open(path).unwrap().into_rgb8()
}

/// Mean absolute difference per channel value; panics on a size mismatch.
pub fn mean_abs_diff(a: &[u8], b: &[u8]) -> f64 {
    assert_eq!(a.len(), b.len(), "images differ in size");
    a.iter()
        .zip(b)
        .map(|(&x, &y)| (x as f64 - y as f64).abs())
        .sum::<f64>()
        / a.len() as f64
}

pub fn png_bytes(data: &[u8], w: u32, h: u32, ct: image::ExtendedColorType) -> Vec<u8> {
    let mut out = Vec::new();
    image::codecs::png::PngEncoder::new(&mut out)
        .write_image(data, w, h, ct)
        .unwrap();
    out
}

pub fn jpeg_bytes(img: &RgbImage, quality: u8) -> Vec<u8> {
    let mut out = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, quality)
        .write_image(
            img.as_raw(),
            img.width(),
            img.height(),
            image::ExtendedColorType::Rgb8,
        )
        .unwrap();
    out
}

/// A variant of a photo (crop + optional mirror), so trees have many distinct images.
pub fn variant(img: &RgbImage, k: u32) -> RgbImage {
    let (w, h) = img.dimensions();
    let (cw, ch) = (w - (k % 5) * 9 - 1, h - (k % 3) * 11 - 1);
    let mut out = image::imageops::crop_imm(img, (k % 5) * 3, (k % 3) * 2, cw, ch).to_image();
    if k % 2 == 1 {
        out = image::imageops::flip_horizontal(&out);
    }
    out
}

pub const PHOTOS: [&str; 6] = [
    "astronaut",
    "coffee",
    "chelsea",
    "rocket",
    "motorcycle_left",
    "hubble_deep_field",
];

/// A raw tree of `classes` class folders with `per_class` JPEG variants each, plus, when
/// `bad` is set, one of each bad kind in the last class. Returns the number of inputs.
pub fn make_tree(root: &Path, classes: usize, per_class: usize, bad: bool) -> usize {
    let photos: Vec<RgbImage> = PHOTOS
        .iter()
        .map(|p| load_rgb(&fixture(&format!("{p}.jpg"))))
        .collect();
    let mut n = 0;
    for c in 0..classes {
        let dir = root.join(format!("n{:08}", 1000 + c * 7));
        std::fs::create_dir_all(&dir).unwrap();
        for i in 0..per_class {
            let k = (c * per_class + i) as u32;
            let img = variant(&photos[(c + i) % photos.len()], k);
            // Mixed extension case on purpose: ImageNet uses .JPEG.
            let ext = ["JPEG", "jpg", "Jpeg"][i % 3];
            std::fs::write(dir.join(format!("img_{i:03}.{ext}")), jpeg_bytes(&img, 90)).unwrap();
            n += 1;
        }
    }
    if bad {
        let dir = root.join(format!("n{:08}", 1000 + (classes - 1) * 7));
        for (name, bytes) in bad_files() {
            std::fs::write(dir.join(name), bytes).unwrap();
            n += 1;
        }
        // Not an image extension: ignored, not an input.
        std::fs::write(dir.join("notes.txt"), "x").unwrap();
    }
    n
}

/// (file name, bytes, expected word in the reject reason) of each bad-file kind.
pub fn bad_kinds() -> Vec<(&'static str, Vec<u8>, &'static str)> {
    let coffee = std::fs::read(fixture("coffee.jpg")).unwrap();
    let png = std::fs::read(fixture("chelsea_small.png")).unwrap();
    vec![
        ("zz_zero.JPEG", Vec::new(), "zero bytes"),
        (
            "zz_truncated.JPEG",
            coffee[..coffee.len() / 2].to_vec(),
            "truncated",
        ),
        (
            "zz_truncated_png.png",
            png[..png.len() / 2].to_vec(),
            "undecodable",
        ),
        (
            "zz_text.JPEG",
            b"this is not a picture\n".to_vec(),
            "not an image",
        ),
    ]
}

pub fn bad_files() -> Vec<(&'static str, Vec<u8>)> {
    bad_kinds().into_iter().map(|(n, b, _)| (n, b)).collect()
}

/// Runs the built binary; returns (success, stdout, stderr).
pub fn alexnet(args: &[&str]) -> (bool, String, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_alexnet"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

pub fn ingest_ok(args: &[&str]) {
    let mut all = vec!["ingest", "--quiet"];
    all.extend_from_slice(args);
    let (ok, _, err) = alexnet(&all);
    assert!(ok, "alexnet {all:?} failed: {err}");
}

pub fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Sorted (name, bytes) of the .parquet files in a folder.
pub fn shard_bytes(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut v: Vec<(String, Vec<u8>)> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "parquet"))
        .map(|p| {
            (
                p.file_name().unwrap().to_string_lossy().into_owned(),
                std::fs::read(&p).unwrap(),
            )
        })
        .collect();
    v.sort();
    v
}

pub const FM: &str = "/usr/share/datasets/fashion-mnist";

/// `n` real images (the first n of Fashion-MNIST's training set) as class folders of PNGs.
pub fn fashion_raw(dir: &Path, n: usize) -> PathBuf {
    assert!(
        Path::new(FM).is_dir(),
        "{FM} is missing: install Debian's dataset-fashion-mnist (scripts/test.sh does)"
    );
    let raw = dir.join("raw");
    let (ok, _, err) = alexnet(&[
        "import-idx",
        &format!("{FM}/train-images-idx3-ubyte.gz"),
        &format!("{FM}/train-labels-idx1-ubyte.gz"),
        raw.to_str().unwrap(),
        "--classes",
        "fashion-mnist",
        "--limit",
        &n.to_string(),
    ]);
    assert!(ok, "import-idx: {err}");
    raw
}

/// `n` real images as shards stored at 70×70, 64 rows a shard.
pub fn fashion_shards(dir: &Path, n: usize) -> PathBuf {
    let raw = fashion_raw(dir, n);
    let out = dir.join("shards");
    ingest_ok(&[
        raw.to_str().unwrap(),
        out.to_str().unwrap(),
        "--size",
        "70",
        "--shard-rows",
        "64",
    ]);
    out
}

/// Copies shard `src` to `dst` as another writer would: every row through `edit`, the
/// footer's key-value entries kept, the data compressed with `codec`.
pub fn rewrite_shard(
    src: &Path,
    dst: &Path,
    codec: parquet::basic::Compression,
    mut edit: impl FnMut(arrow_array::RecordBatch) -> arrow_array::RecordBatch,
) {
    use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
    let file = std::fs::File::open(src).unwrap();
    let builder = ParquetRecordBatchReaderBuilder::try_new(file).unwrap();
    let kv: Vec<parquet::file::metadata::KeyValue> = builder
        .metadata()
        .file_metadata()
        .key_value_metadata()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        // The writer stores its own Arrow schema.
        .filter(|e| e.key != "ARROW:schema")
        .collect();
    let reader = builder.build().unwrap();
    let props = parquet::file::properties::WriterProperties::builder()
        .set_compression(codec)
        .set_key_value_metadata(Some(kv))
        .build();
    let mut w = None;
    for b in reader {
        let b = edit(b.unwrap());
        // The edit may change a column's type: the file takes the edited schema.
        let w = w.get_or_insert_with(|| {
            let out = std::fs::File::create(dst).unwrap();
            parquet::arrow::ArrowWriter::try_new(out, b.schema(), Some(props.clone())).unwrap()
        });
        w.write(&b).unwrap();
    }
    w.unwrap().close().unwrap();
}

/// `batch` with its `label` column replaced.
pub fn with_labels(batch: arrow_array::RecordBatch, labels: Vec<i32>) -> arrow_array::RecordBatch {
    let i = batch.schema().index_of("label").unwrap();
    let mut cols = batch.columns().to_vec();
    // Shards hold labels as int64 (Hugging Face's ClassLabel field).
    let wide: Vec<i64> = labels.into_iter().map(i64::from).collect();
    cols[i] = std::sync::Arc::new(arrow_array::Int64Array::from(wide));
    arrow_array::RecordBatch::try_new(batch.schema(), cols).unwrap()
}

/// Runs `cmd`, killing it if it takes longer than `secs`; returns (success, stdout, stderr),
/// or panics naming the command on a timeout.
pub fn run_with_timeout(cmd: &mut std::process::Command, secs: u64) -> (bool, String, String) {
    use std::io::Read;
    let mut child = cmd
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let t0 = std::time::Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let (mut out, mut err) = (String::new(), String::new());
            child
                .stdout
                .take()
                .unwrap()
                .read_to_string(&mut out)
                .unwrap();
            child
                .stderr
                .take()
                .unwrap()
                .read_to_string(&mut err)
                .unwrap();
            return (status.success(), out, err);
        }
        if t0.elapsed().as_secs() > secs {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{cmd:?} did not finish in {secs} s");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}
