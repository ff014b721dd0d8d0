//! Every shipped pipeline (`pipelines/*.toml`) run end to end by `alexnet run`, every stage,
//! at miniature scale: the file as shipped, with its paths and sizes changed by `--set` onto
//! data this test makes (an ImageNet-layout folder; the first images of Fashion-MNIST).
mod common;

use alexnet::export::FeatureFile;
use common::{alexnet, jpeg_bytes, s};
use image::RgbImage;
use std::path::{Path, PathBuf};

const WNIDS: [&str; 3] = ["n01440764", "n01443537", "n01484850"];
const TRAIN_PER_CLASS: usize = 8;
const VAL: usize = 6;

/// A picture of class `c`: its own colour and stripe direction, with per-image noise.
fn picture(c: usize, i: usize) -> RgbImage {
    let (w, h) = (48 + (i % 3) as u32 * 8, 40 + (i % 2) as u32 * 12);
    RgbImage::from_fn(w, h, |x, y| {
        let stripe = match c {
            0 => x / 6 % 2,
            1 => y / 6 % 2,
            _ => (x + y) / 6 % 2,
        } as u8;
        let noise = ((x * 31 + y * 17 + i as u32 * 7) % 23) as u8;
        let mut px = [40u8, 40, 40];
        px[c] = 150 + stripe * 80;
        image::Rgb(px.map(|v| v.saturating_add(noise)))
    })
}

/// ImageNet's layout in miniature: train/<wnid>/*.JPEG, a flat val/ with
/// LOC_val_solution.csv-style labels, and the wnids in label order.
fn mini_imagenet(root: &Path) {
    for (c, wnid) in WNIDS.iter().enumerate() {
        let dir = root.join("train").join(wnid);
        std::fs::create_dir_all(&dir).unwrap();
        for i in 0..TRAIN_PER_CLASS {
            let name = format!("{wnid}_{i}.JPEG");
            std::fs::write(dir.join(name), jpeg_bytes(&picture(c, i), 90)).unwrap();
        }
    }
    let val = root.join("val");
    std::fs::create_dir_all(&val).unwrap();
    let mut csv = String::from("ImageId,PredictionString\n");
    for i in 0..VAL {
        let (c, id) = (i % WNIDS.len(), format!("ILSVRC2012_val_{:08}", i + 1));
        let img = picture(c, 100 + i);
        std::fs::write(val.join(format!("{id}.JPEG")), jpeg_bytes(&img, 90)).unwrap();
        csv += &format!("{id},{} 1 2 30 40\n", WNIDS[c]);
    }
    std::fs::write(root.join("val_labels.csv"), csv).unwrap();
    std::fs::write(root.join("synsets.txt"), WNIDS.join("\n") + "\n").unwrap();
}

/// The network at miniature scale: the smallest input whose last pool is 1×1, widths ÷8.
const SMALL_MODEL: [&str; 6] = [
    "train.config.model.input_size=67",
    "train.config.model.widths=[12, 32, 48, 48, 32, 512, 512]",
    "train.config.epochs=2",
    "train.config.batch=8",
    "train.config.log_every=1",
    "train.quiet=true",
];

/// The same by train's flags, for pipelines whose train stages take a config file.
const SMALL_MODEL_FLAGS: [&str; 5] = [
    "train.input_size=67",
    "train.widths=12,32,48,48,32,512,512",
    "train.epochs=2",
    "train.batch=8",
    "train.quiet=true",
];

/// Whether a shipped pipeline trains an ensemble (its members' train stages take a config
/// file and a seed, its eval stage every member).
fn is_ensemble(name: &str) -> bool {
    name.ends_with("-ensemble.toml")
}

/// The `--set`s that shrink each shipped pipeline onto the data under `data`.
fn miniature(name: &str, data: &Path, work: &Path) -> Vec<String> {
    let d = |p: &str| s(&data.join(p)).to_string();
    let mut sets = vec![format!("work_dir={}", s(work))];
    match name {
        "imagenet-ensemble.toml" => {
            mini_imagenet(data);
            sets.extend([
                format!("1.raw={}", d("train")),
                format!("2.raw={}", d("val")),
                format!("2.labels={}", d("val_labels.csv")),
                format!("ingest.classes={}", d("synsets.txt")),
                format!("eval.classes={}", d("synsets.txt")),
                "ingest.size=76".into(),
                "ingest.quiet=true".into(),
                "train.classes=3".into(),
            ]);
            sets.extend(SMALL_MODEL_FLAGS.map(String::from));
            return sets;
        }
        "fashion-mnist-ensemble.toml" => {
            assert!(
                Path::new(common::FM).is_dir(),
                "{} is missing: install Debian's dataset-fashion-mnist (scripts/test.sh does)",
                common::FM
            );
            sets.extend(["import-idx.limit=40".into(), "ingest.quiet=true".into()]);
            sets.extend(SMALL_MODEL_FLAGS.map(String::from));
            return sets;
        }
        "imagenet.toml" => {
            mini_imagenet(data);
            sets.extend([
                format!("1.raw={}", d("train")),
                format!("2.raw={}", d("val")),
                format!("2.labels={}", d("val_labels.csv")),
                format!("ingest.classes={}", d("synsets.txt")),
                "ingest.size=76".into(),
                "ingest.quiet=true".into(),
                "train.config.model.classes=3".into(),
                "export-features.quiet=true".into(),
            ]);
        }
        "quickstart.toml" => {
            assert!(
                Path::new(common::FM).is_dir(),
                "{} is missing: install Debian's dataset-fashion-mnist (scripts/test.sh does)",
                common::FM
            );
            sets.extend([
                "import-idx.limit=40".into(),
                "ingest.quiet=true".into(),
                "train.config.batch=8".into(),
            ]);
        }
        other => {
            panic!("pipelines/{other} has no miniature here: add its --set lines to this test")
        }
    }
    sets.extend(SMALL_MODEL.map(String::from));
    sets
}

fn run(pipeline: &Path, sets: &[String]) -> (bool, String) {
    let mut args = vec!["run".to_string(), s(pipeline).to_string()];
    for set in sets {
        args.extend(["--set".to_string(), set.clone()]);
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (ok, out, err) = alexnet(&args);
    (ok, format!("{out}{err}"))
}

fn shipped() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("pipelines");
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    files.sort();
    files
}

#[test]
fn every_shipped_pipeline_runs_end_to_end_at_miniature_scale() {
    let files = shipped();
    assert!(files.len() >= 2, "{files:?}");
    for file in files {
        let name = file.file_name().unwrap().to_string_lossy().into_owned();
        let tmp = tempfile::tempdir().unwrap();
        let work = tmp.path().join("work");
        let sets = miniature(&name, &tmp.path().join("data"), &work);
        let stages = alexnet::pipeline::Pipeline::load_with(&file, &sets)
            .unwrap_or_else(|e| panic!("{name}: {e}"))
            .stages;

        let (ok, log) = run(&file, &sets);
        assert!(ok, "{name}: {log}");
        for (i, stage) in stages.iter().enumerate() {
            let line = format!("[{}/{}] {}\n", i + 1, stages.len(), stage.name());
            assert!(log.contains(&line), "{name}: no {line:?} in: {log}");
            for out in stage.outputs() {
                assert!(
                    out.exists(),
                    "{name}: stage {} wrote no {}",
                    i + 1,
                    out.display()
                );
            }
        }
        let eval = ["eval-ten-crop.json", "eval.json", "eval-ensemble.json"]
            .map(|f| work.join(f))
            .into_iter()
            .find(|p| p.exists())
            .unwrap_or_else(|| panic!("{name}: no eval result"));
        let r: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&eval).unwrap()).unwrap();
        assert!(r["count"].as_u64().unwrap() > 0, "{name}: {r}");
        assert!(r["top1_accuracy"].as_f64().is_some(), "{name}: {r}");
        if is_ensemble(&name) {
            let members = r["members"].as_array().unwrap();
            assert_eq!(members.len(), 5, "{name}: five seeds: {r}");
            for (i, m) in members.iter().enumerate() {
                let want = format!("run-s{}/best.safetensors", i + 1);
                assert!(
                    m["checkpoint"].as_str().unwrap().ends_with(&want),
                    "{name}: {m}"
                );
                assert_eq!(m["count"], r["count"], "{name}: {m}");
            }
            let seed = std::fs::read_to_string(work.join("run-s3/config.toml")).unwrap();
            assert!(seed.contains("seed = 3"), "{name}: {seed}");
            assert!(work.join("predictions.png").is_file(), "{name}");
        } else {
            assert!(work.join("run/report.png").is_file(), "{name}");
        }

        if name == "imagenet.toml" {
            assert_eq!(r["count"], VAL, "every val image, ten views each");
            let f = FeatureFile::open(&work.join("features-val.parquet")).unwrap();
            assert_eq!((f.len(), f.width), (VAL, 512), "fc7 of every val image");
            let mut wnids = f.wnids.clone();
            wnids.sort();
            wnids.dedup();
            assert_eq!(wnids, WNIDS, "the val labels follow the synset list");
        }

        // A second run finds every stage done.
        let (ok, log) = run(&file, &sets);
        assert!(ok, "{name}: {log}");
        assert_eq!(
            log.matches("(done, skipped)").count(),
            stages.len(),
            "{name}: {log}"
        );
        // A changed rate does not continue the old run with the new one.
        let mut changed = sets.clone();
        changed.push(if is_ensemble(&name) {
            "train.lr=0.001".into()
        } else {
            "train.config.lr=0.001".into()
        });
        let (ok, log) = run(&file, &changed);
        assert!(!ok, "{name}: {log}");
        assert!(
            (log.contains("(train): its arguments changed since it ran (`config.lr`:")
                || log.contains("(train): its arguments changed since it ran (`lr`:"))
                && log.contains("delete"),
            "{name}: {log}"
        );
    }
}

#[test]
fn the_ablation_pipeline_runs_every_variant_and_tabulates_each_claim() {
    let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("pipelines/ablations/fashion-mnist.toml");
    assert!(
        Path::new(common::FM).is_dir(),
        "{} is missing: install Debian's dataset-fashion-mnist (scripts/test.sh does)",
        common::FM
    );
    let tmp = tempfile::tempdir().unwrap();
    let work = tmp.path().join("work");
    // Two batches of base.toml's 64 a run, one epoch, validation on 128 test images.
    let sets: Vec<String> = [
        format!("work_dir={}", s(&work)),
        "import-idx.limit=128".into(),
        "ingest.quiet=true".into(),
        "train.steps=2".into(),
        "train.quiet=true".into(),
    ]
    .into();
    let (ok, log) = run(&file, &sets);
    assert!(ok, "{log}");
    // Each run got base.toml with its one change and its seed.
    let config = |run: &str| std::fs::read_to_string(work.join(run).join("config.toml")).unwrap();
    assert!(config("baseline-s1").contains("norm = \"lrn\""));
    assert!(
        config("no-lrn-s2").contains("norm = \"none\"") && config("no-lrn-s2").contains("seed = 2")
    );
    assert!(config("pool-2x2-s3").contains("pool_size = 2"));
    assert!(config("tanh-s1").contains("activation = \"tanh\""));
    assert!(config("one-column-s1").contains("groups = 1"));
    assert!(config("no-augment-s1").contains("enabled = false"));
    // One table per claim: the baseline's three seeds against the variant's.
    for claim in [
        "tanh",
        "no-lrn",
        "pool-2x2",
        "no-dropout",
        "no-lighting",
        "no-augment",
        "one-column",
    ] {
        let md = std::fs::read_to_string(work.join(format!("{claim}.md"))).unwrap();
        assert!(
            md.contains("| baseline | 3 |") && md.contains(&format!("| {claim} | 3 |")),
            "{claim}: {md}"
        );
        assert!(work.join(format!("{claim}.png")).is_file());
    }
    let all = std::fs::read_to_string(work.join("all.md")).unwrap();
    assert_eq!(
        all.lines().filter(|l| l.contains(" | 3 | ")).count(),
        8,
        "{all}"
    );
}

#[test]
fn run_list_prints_the_stage_names_and_only_runs_one_stage() {
    let dir = tempfile::tempdir().unwrap();
    common::make_tree(&dir.path().join("raw"), 2, 2, false);
    let raw = s(&dir.path().join("raw")).to_string();
    let pipeline = dir.path().join("p.toml");
    std::fs::write(
        &pipeline,
        format!(
            "work_dir = \"work\"\n\n[[stage]]\nkind = \"ingest\"\nraw = \"{raw}\"\nout = \"shards/a\"\nsize = 40\nquiet = true\n\n[[stage]]\nkind = \"ingest\"\nraw = \"{raw}\"\nout = \"shards/b\"\nsize = 48\nquiet = true\n"
        ),
    )
    .unwrap();
    let p = s(&pipeline);
    // One name per line on stdout, nothing run.
    let (ok, list, err) = alexnet(&["run", p, "--list"]);
    assert!(ok, "{err}");
    assert_eq!(list, "shards/a\nshards/b\n");
    let work = dir.path().join("work");
    assert!(!work.join("shards/a").exists());
    // --only runs that stage alone; the other stays unmade.
    let (ok, _, err) = alexnet(&["run", p, "--only", "shards/b"]);
    assert!(ok, "{err}");
    assert!(work.join("shards/b").is_dir() && !work.join("shards/a").exists());
    // A name that is not a stage fails (runtime error: 1), listing the names; --list with
    // --force is a usage error (2).
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_alexnet"))
        .args(["run", p, "--only", "shards/c"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("no stage `shards/c`") && err.contains("shards/a, shards/b"));
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_alexnet"))
        .args(["run", p, "--list", "--force"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}
