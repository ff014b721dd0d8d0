//! `export-features` and `neighbors` end to end on lavapipe: a tiny shard set made by ingest
//! (three photos, a shifted copy of one, and random-noise images), a small network.
mod common;
use alexnet::dataset::{read_rows, ShardSet};
use alexnet::export::shard_columns::read_shard_names;
use alexnet::export::{export_features, ExportConfig, FeatureFile, Layer};
use alexnet::gpu::Gpu;
use alexnet::ingest::{ingest, IngestConfig};
use alexnet::model::{Checkpoint, DataStats, ModelConfig, Network, Params};
use arrow_schema::DataType;
use common::*;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// Stored side S and model input I: the centre crop starts at (72 − 67) / 2 = 2.
const S: usize = 72;
const I: usize = 67;
const CLASSES: usize = 2;

fn model() -> ModelConfig {
    ModelConfig::small(I, 16, CLASSES)
}

/// The shards (3 files, row groups of 2 images) and the checkpoint, built once per process.
struct Fixture {
    dir: PathBuf,
    shards: PathBuf,
    checkpoint: PathBuf,
}

fn noise_png(seed: u32) -> Vec<u8> {
    let data: Vec<u8> = (0..90 * 90 * 3)
        .map(|i| (alexnet::shape::uniform01(seed, i) * 255.0) as u8)
        .collect();
    png_bytes(&data, 90, 90, image::ExtendedColorType::Rgb8)
}

fn built() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("export_features");
        let _ = std::fs::remove_dir_all(&dir);
        let (photos, noise) = (dir.join("raw/n00000001"), dir.join("raw/n00000002"));
        std::fs::create_dir_all(&photos).unwrap();
        std::fs::create_dir_all(&noise).unwrap();
        let chelsea = load_rgb(&fixture("chelsea.jpg"));
        let (w, h) = chelsea.dimensions();
        // Shifted by 3 of 451 columns: after resizing to 72, well under one pixel.
        let shifted = image::imageops::crop_imm(&chelsea, 3, 0, w - 3, h).to_image();
        std::fs::write(photos.join("chelsea.jpg"), jpeg_bytes(&chelsea, 95)).unwrap();
        std::fs::write(photos.join("chelsea_shifted.jpg"), jpeg_bytes(&shifted, 95)).unwrap();
        for p in ["astronaut", "coffee", "rocket"] {
            std::fs::copy(
                fixture(&format!("{p}.jpg")),
                photos.join(format!("{p}.jpg")),
            )
            .unwrap();
        }
        for k in 0..5 {
            std::fs::write(noise.join(format!("noise_{k}.png")), noise_png(k + 1)).unwrap();
        }
        let shards = dir.join("shards");
        let mut cfg = IngestConfig::new(dir.join("raw"), &shards);
        cfg.size = S;
        cfg.shard_rows = 4;
        cfg.row_group_bytes = 2 * S * S * 3;
        cfg.jobs = 2;
        cfg.progress = false;
        ingest(&cfg).unwrap();
        // A mean image unlike the data's, so the test sees which one export subtracts.
        // The paper's N(0, 0.01²) shrinks a random net's signal to ~1e-4 by fc7; He scaling
        // (std √(2/fan-in)) keeps it, so unrelated images get clearly different vectors.
        let mut params = Params::init(&model(), 7).unwrap();
        for t in params.tensors.iter_mut().filter(|t| t.spec.shape.len() > 1) {
            let fan_in: usize = t.spec.shape[1..].iter().product();
            let gain = (2.0 / fan_in as f32).sqrt() / 0.01;
            t.data.iter_mut().for_each(|v| *v *= gain);
        }
        let mut ck = Checkpoint::new(model(), params);
        ck.stats = Some(DataStats {
            size: S,
            mean_image: (0..S * S * 3)
                .map(|i| 90.0 + (i % 13) as f32 * 5.0)
                .collect(),
            pca_eigenvalues: [1.0, 0.5, 0.25],
            pca_eigenvectors: [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]],
        });
        let checkpoint = dir.join("w.safetensors");
        ck.save(&checkpoint).unwrap();
        Fixture {
            dir,
            shards,
            checkpoint,
        }
    })
}

/// The evaluation view of `images` `[n,S,S,3]` on the CPU: `[n,3,I,I]`, centre crop − mean.
fn evaluation_view(images: &[u8], mean: &[f32]) -> Vec<f32> {
    let o = (S - I) / 2;
    let n = images.len() / (S * S * 3);
    let mut out = vec![0f32; n * 3 * I * I];
    for b in 0..n {
        for c in 0..3 {
            for y in 0..I {
                for x in 0..I {
                    let src = ((y + o) * S + (x + o)) * 3 + c;
                    out[((b * 3 + c) * I + y) * I + x] =
                        images[b * S * S * 3 + src] as f32 - mean[src];
                }
            }
        }
    }
    out
}

/// The layer `name` of the network for every image of the set, fed the CPU-made view.
fn network_layer(ck: &Checkpoint, mean: &[f32], name: &str) -> (Vec<f32>, usize) {
    let set = ShardSet::open(&[built().shards.clone()]).unwrap();
    let rows: Vec<u64> = (0..set.len() as u64).collect();
    let px = read_rows(&set, &rows).unwrap();
    let gpu = Gpu::best().expect("no GPU adapter: install mesa-vulkan-drivers");
    let net = Network::new(&gpu, &ck.config, set.len(), &ck.params).unwrap();
    net.input()
        .upload(&gpu, &evaluation_view(&px.images, mean))
        .unwrap();
    let mut enc = gpu.encoder("test.forward");
    net.record_forward(&mut net.recorder(&gpu, &mut enc), None)
        .unwrap();
    gpu.submit(enc);
    let acts = net.activations();
    let (_, shape, t) = acts.iter().find(|(n, _, _)| *n == name).unwrap();
    (t.download(&gpu).unwrap(), shape[1..].iter().product())
}

fn all_features(path: &Path) -> (FeatureFile, Vec<f32>) {
    let f = FeatureFile::open(path).unwrap();
    let mut v = Vec::new();
    for g in 0..f.row_groups() {
        v.extend(f.read_group(g).unwrap());
    }
    (f, v)
}

fn assert_close(what: &str, got: &[f32], want: &[f32]) {
    assert_eq!(got.len(), want.len(), "{what}: lengths");
    let scale = want.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-12);
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(
            (g - w).abs() <= 1e-5 * scale + 1e-5 * w.abs(),
            "{what}: index {i}: exported {g}, network {w} (max |value| {scale})"
        );
    }
}

#[test]
fn exported_fc7_is_the_networks_fc7_of_the_evaluation_view() {
    let f = built();
    let out = f.dir.join("fc7.parquet");
    let mut cfg = ExportConfig::new(f.checkpoint.clone(), vec![f.shards.clone()], out.clone());
    cfg.batch = 4; // 10 images: two full batches and a padded one
    cfg.progress = false;
    cfg.device = alexnet::device::Device::Cpu;
    let summary = export_features(&cfg).unwrap();
    assert!(!summary.used_data_mean);
    assert_eq!(summary.rows, 10);
    assert!(
        !f.dir.join(".fc7.parquet.tmp").exists(),
        "temporary left behind"
    );

    let ck = Checkpoint::load(&f.checkpoint, None).unwrap();
    let mean = ck.stats.as_ref().unwrap().mean_image.clone();
    let (want, width) = network_layer(&ck, &mean, "fc7");
    assert_eq!(width, model().widths[6]);
    assert_eq!(summary.width, width);
    let (file, got) = all_features(&out);
    assert_close("fc7 (CPU engine)", &got, &want);
    // The same export through the WGSL kernels (a GPU, or lavapipe without one).
    let gpu_out = f.dir.join("fc7_adapter0.parquet");
    let mut gpu_cfg = cfg.clone();
    gpu_cfg.out = gpu_out.clone();
    gpu_cfg.device = alexnet::device::Device::Adapter(0);
    export_features(&gpu_cfg).unwrap();
    assert_close("fc7 (adapter 0)", &all_features(&gpu_out).1, &want);

    // Names and labels in shard order.
    let set = ShardSet::open(std::slice::from_ref(&f.shards)).unwrap();
    let names = read_shard_names(set.files()).unwrap();
    assert_eq!(file.sources, names.sources);
    assert_eq!(file.wnids, names.wnids);
    let labels = read_rows(&set, &(0..10).collect::<Vec<u64>>())
        .unwrap()
        .labels;
    assert_eq!(file.labels, labels);
    assert!(file.sources.iter().any(|s| s == "n00000001/chelsea.jpg"));

    // The Parquet schema other tools see.
    let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(
        std::fs::File::open(&out).unwrap(),
    )
    .unwrap();
    assert_eq!(reader.metadata().file_metadata().num_rows(), 10);
    let schema = reader.schema();
    let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
    assert_eq!(names, ["source", "label", "wnid", "features"]);
    assert_eq!(schema.field(1).data_type(), &DataType::Int32);
    match schema.field(3).data_type() {
        DataType::FixedSizeList(item, w) => {
            assert_eq!(item.data_type(), &DataType::Float32);
            assert_eq!(*w as usize, width);
        }
        other => panic!("features is {other:?}, want a fixed-size list of f32"),
    }
    let prov = file.provenance.as_ref().expect("footer provenance");
    assert_eq!((prov.layer.as_str(), prov.width), ("fc7", width));
    assert_eq!(prov.mean_image, "checkpoint");
}

#[test]
fn without_statistics_the_datas_mean_image_is_used_for_conv5() {
    let f = built();
    let mut ck = Checkpoint::load(&f.checkpoint, None).unwrap();
    ck.stats = None;
    let bare = f.dir.join("bare.safetensors");
    ck.save(&bare).unwrap();
    let out = f.dir.join("conv5.parquet");
    let mut cfg = ExportConfig::new(bare, vec![f.shards.clone()], out.clone());
    cfg.layer = Layer::Conv5;
    cfg.progress = false;
    let summary = export_features(&cfg).unwrap();
    assert!(summary.used_data_mean);
    let set = ShardSet::open(std::slice::from_ref(&f.shards)).unwrap();
    let (want, width) = network_layer(&ck, &set.stats().mean_image(), "conv5");
    assert_eq!(summary.width, width);
    let (_, got) = all_features(&out);
    assert_close("conv5", &got, &want);
}

#[test]
fn mismatched_sizes_are_refused_with_a_hint() {
    let f = built();
    let mut ck = Checkpoint::load(&f.checkpoint, None).unwrap();
    if let Some(s) = ck.stats.as_mut() {
        s.size = 64;
        s.mean_image.truncate(64 * 64 * 3);
    }
    let wrong = f.dir.join("wrong_size.safetensors");
    ck.save(&wrong).unwrap();
    let out = f.dir.join("never.parquet");
    let cfg = ExportConfig::new(wrong, vec![f.shards.clone()], out.clone());
    let err = export_features(&cfg).unwrap_err().to_string();
    assert!(err.contains("64") && err.contains("--size 64"), "{err}");

    let big = ModelConfig::small(75, 16, CLASSES);
    let ck = Checkpoint::new(big.clone(), Params::init(&big, 1).unwrap());
    let too_big = f.dir.join("too_big.safetensors");
    ck.save(&too_big).unwrap();
    let cfg = ExportConfig::new(too_big, vec![f.shards.clone()], out.clone());
    let err = export_features(&cfg).unwrap_err().to_string();
    assert!(err.contains("75") && err.contains("--size 75"), "{err}");
    assert!(!out.exists());
}

#[test]
fn cli_shifted_copy_is_the_nearest_neighbour_and_the_sheet_shows_it() {
    let f = built();
    let out = f.dir.join("cli_fc7.parquet");
    let (ok, stdout, err) = alexnet(&[
        "export-features",
        "--quiet",
        "--checkpoint",
        s(&f.checkpoint),
        "--batch",
        "8",
        s(&f.shards),
        s(&out),
    ]);
    assert!(ok, "export-features failed: {err}");
    assert!(stdout.contains("10 rows"), "{stdout}");

    let sheet = f.dir.join("sheet.png");
    let (ok, table, err) = alexnet(&[
        "neighbors",
        s(&out),
        "--query",
        "n00000001/chelsea.jpg",
        "-k",
        "3",
        "--sheet",
        s(&sheet),
    ]);
    assert!(ok, "neighbors failed: {err}");
    let lines: Vec<&str> = table.lines().collect();
    assert!(lines[1].contains("n00000001/chelsea.jpg"), "{table}");
    assert!(
        lines[2].contains("n00000001/chelsea_shifted.jpg"),
        "the shifted copy should be rank 1:\n{table}"
    );
    assert_eq!(lines.len(), 1 + 1 + 3 + 1, "{table}");

    // And back: the shifted copy's nearest neighbour is the original (by row index).
    let file = FeatureFile::open(&out).unwrap();
    let shifted_row = file
        .sources
        .iter()
        .position(|s| s == "n00000001/chelsea_shifted.jpg")
        .unwrap();
    let (ok, table, err) = alexnet(&[
        "neighbors",
        s(&out),
        "--query",
        &shifted_row.to_string(),
        "-k",
        "1",
    ]);
    assert!(ok, "neighbors failed: {err}");
    assert!(
        table
            .lines()
            .nth(2)
            .unwrap()
            .ends_with("n00000001/chelsea.jpg"),
        "{table}"
    );

    // The sheet: query then 3 neighbours, the first tile is the query's stored pixels.
    let img = image::open(&sheet).unwrap().into_rgb8();
    assert_eq!(
        img.dimensions(),
        alexnet::export::neighbors::sheet_size(4, S)
    );
    let set = ShardSet::open(std::slice::from_ref(&f.shards)).unwrap();
    let q = file
        .sources
        .iter()
        .position(|s| s == "n00000001/chelsea.jpg")
        .unwrap();
    let px = read_rows(&set, &[q as u64]).unwrap().images;
    let layout = alexnet::export::neighbors::SheetLayout::new(4, S);
    let ((x0, y0), k) = (layout.origin(0), layout.scale);
    for (y, x) in [(0, 0), (10, 50), (S - 1, S - 1)] {
        let i = (y * S + x) * 3;
        assert_eq!(
            img.get_pixel(x0 + x as u32 * k, y0 + y as u32 * k).0,
            [px[i], px[i + 1], px[i + 2]],
            "query tile pixel ({x},{y})"
        );
    }

    let (ok, _, err) = alexnet(&["neighbors", s(&out), "--query", "no/such.jpg"]);
    assert!(
        !ok && err.contains("no/such.jpg") && err.contains("row index"),
        "{err}"
    );
}

#[test]
fn cli_query_image_is_embedded_as_export_features_embeds_its_rows() {
    let f = built();
    let out = f.dir.join("query_image_fc7.parquet");
    let (ok, _, err) = alexnet(&[
        "export-features",
        "--quiet",
        "--checkpoint",
        s(&f.checkpoint),
        "--devices",
        "cpu",
        s(&f.shards),
        s(&out),
    ]);
    assert!(ok, "export-features failed: {err}");
    // The very file ingest stored as n00000001/chelsea.jpg: its vector is that row's (up to
    // the float rounding of another batch size), and the shifted copy comes next.
    let image = f.dir.join("raw/n00000001/chelsea.jpg");
    let sheet = f.dir.join("query_image_sheet.png");
    let (ok, json, err) = alexnet(&[
        "neighbors",
        s(&out),
        "--query-image",
        s(&image),
        "--checkpoint",
        s(&f.checkpoint),
        "--devices",
        "cpu",
        "-k",
        "3",
        "--json",
        "--sheet",
        s(&sheet),
    ]);
    assert!(ok, "neighbors --query-image failed: {err}");
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v["query"]["source"], s(&image));
    assert!(v["query"].get("row").is_none(), "{v}");
    let n = v["neighbors"].as_array().unwrap();
    assert_eq!(n[0]["source"], "n00000001/chelsea.jpg", "{v}");
    assert_eq!(n[1]["source"], "n00000001/chelsea_shifted.jpg", "{v}");
    let (d0, d1) = (
        n[0]["distance"].as_f64().unwrap(),
        n[1]["distance"].as_f64().unwrap(),
    );
    assert!(
        d1 > 0.0 && d0 < 1e-3 * d1,
        "itself at {d0}, the shifted copy at {d1}"
    );
    // The sheet's query tile is the image as the shards store it.
    let img = image::open(&sheet).unwrap().into_rgb8();
    let set = ShardSet::open(std::slice::from_ref(&f.shards)).unwrap();
    let row = n[0]["row"].as_u64().unwrap();
    let px = read_rows(&set, &[row]).unwrap().images;
    let layout = alexnet::export::neighbors::SheetLayout::new(4, S);
    let ((x0, y0), k) = (layout.origin(0), layout.scale);
    for (y, x) in [(0, 0), (10, 50), (S - 1, S - 1)] {
        let i = (y * S + x) * 3;
        assert_eq!(
            img.get_pixel(x0 + x as u32 * k, y0 + y as u32 * k).0,
            [px[i], px[i + 1], px[i + 2]],
            "query tile pixel ({x},{y})"
        );
    }
    // Without the checkpoint: a usage error; a file that is no image: named.
    let (ok, _, err) = alexnet(&["neighbors", s(&out), "--query-image", s(&image)]);
    assert!(!ok && err.contains("--checkpoint"), "{err}");
    let (ok, _, err) = alexnet(&[
        "neighbors",
        s(&out),
        "--query-image",
        s(&f.checkpoint),
        "--checkpoint",
        s(&f.checkpoint),
        "--devices",
        "cpu",
    ]);
    assert!(!ok && err.contains("w.safetensors"), "{err}");
}

/// `alexnet ARGS` run in `dir`.
fn alexnet_in(dir: &Path, args: &[&str]) -> (bool, String, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_alexnet"))
        .current_dir(dir)
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn features_file_finds_its_shards_from_any_directory() {
    let f = built();
    // Exported with relative paths, from the fixture's directory, into a subdirectory.
    std::fs::create_dir_all(f.dir.join("feats")).unwrap();
    let ck = s(&f.checkpoint);
    let args = ["export-features", "--quiet", "--checkpoint", ck, "shards"];
    let (ok, _, err) = alexnet_in(&f.dir, &[&args[..], &["feats/rel.parquet"]].concat());
    assert!(ok, "export-features failed: {err}");
    let out = f.dir.join("feats/rel.parquet");
    let meta = FeatureFile::open(&out).unwrap().provenance.unwrap();
    assert!(
        meta.data.iter().all(|d| d.starts_with("../shards/")),
        "stored relative to the features file: {:?}",
        meta.data
    );
    // Read from elsewhere: the sheet still finds the pixels.
    let elsewhere = tempfile::tempdir().unwrap();
    let sheet = elsewhere.path().join("sheet.png");
    let (ok, _, err) = alexnet_in(
        elsewhere.path(),
        &[
            "neighbors",
            s(&out),
            "--query",
            "0",
            "-k",
            "2",
            "--sheet",
            "sheet.png",
        ],
    );
    assert!(ok, "neighbors --sheet from another directory failed: {err}");
    assert!(image::open(&sheet).is_ok());
    // Moved together with its shards, it still works.
    let moved = elsewhere.path().join("moved");
    std::fs::create_dir_all(moved.join("feats")).unwrap();
    std::fs::create_dir_all(moved.join("shards")).unwrap();
    std::fs::copy(&out, moved.join("feats/rel.parquet")).unwrap();
    for e in std::fs::read_dir(&f.shards).unwrap() {
        let p = e.unwrap().path();
        std::fs::copy(&p, moved.join("shards").join(p.file_name().unwrap())).unwrap();
    }
    let (ok, _, err) = alexnet_in(
        Path::new("/"),
        &[
            "neighbors",
            s(&moved.join("feats/rel.parquet")),
            "--query",
            "1",
            "--sheet",
            s(&moved.join("s.png")),
        ],
    );
    assert!(ok, "moved with its shards: {err}");
}
