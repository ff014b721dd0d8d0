//! The command line for scripts and shells: `predict` (preprocessed as ingest and eval do),
//! `--json` outputs, the train flags `--momentum`, `--weight-decay` and `--schedule`,
//! examples in every `--help`, and the completions and man pages generated from clap.
mod common;

use common::*;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// Side of the stored images; the small model's input is 67.
const S: &str = "72";

/// A raw tree of two classes, its raw shards and a checkpoint trained two steps on them
/// (with flags that must reach the saved config), built once per process.
struct Run {
    raw: PathBuf,
    shards: PathBuf,
    run: PathBuf,
    train_json: serde_json::Value,
}

fn trained() -> &'static Run {
    static R: OnceLock<Run> = OnceLock::new();
    R.get_or_init(|| {
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("cli_scripts");
        let _ = std::fs::remove_dir_all(&dir);
        let raw = dir.join("raw");
        make_tree(&raw, 2, 4, false);
        let shards = dir.join("shards");
        ingest_ok(&[s(&raw), s(&shards), "--size", S]);
        let run = dir.join("run");
        let (ok, out, err) = alexnet(&[
            "train",
            s(&shards),
            "--out",
            s(&run),
            "--steps",
            "2",
            "--batch",
            "4",
            "--input-size",
            "67",
            "--widths",
            "8,16,24,24,16,32,32",
            "--init",
            "he",
            "--momentum",
            "0.8",
            "--weight-decay",
            "0.001",
            "--schedule",
            "cosine",
            "--min-lr",
            "0.0001",
            "--quiet",
            "--json",
        ]);
        assert!(ok, "train failed: {err}");
        let train_json = serde_json::from_str(out.trim()).unwrap_or_else(|e| {
            panic!("train --json printed no JSON object ({e}):\n{out}");
        });
        Run {
            raw,
            shards,
            run,
            train_json,
        }
    })
}

#[test]
fn train_flags_reach_the_config_and_json_summarises_the_run() {
    let r = trained();
    let v = &r.train_json;
    assert_eq!(v["steps"], 2, "{v}");
    assert!(v["last_loss"].as_f64().is_some_and(f64::is_finite), "{v}");
    assert_eq!(v["interrupted"], false);
    assert_eq!(v["out"].as_str(), Some(s(&r.run)));
    let config = std::fs::read_to_string(r.run.join("config.toml")).unwrap();
    let config: toml::Value = toml::from_str(&config).unwrap();
    assert_eq!(config["momentum"].as_float(), Some(0.8));
    assert_eq!(config["weight_decay"].as_float(), Some(0.001));
    assert_eq!(config["schedule"]["kind"].as_str(), Some("cosine"));
    assert_eq!(config["schedule"]["min_lr"].as_float(), Some(0.0001));

    let bad = [
        (vec!["--schedule", "steps"], "--milestones"),
        (vec!["--momentum", "1.5"], "momentum"),
        (vec!["--weight-decay=-1"], "weight_decay"),
    ];
    for (flags, want) in bad {
        let mut args = vec![
            "train",
            s(&r.shards),
            "--out",
            "/nonexistent/never",
            "--quiet",
        ];
        args.extend(flags.iter().copied());
        let (ok, _, err) = alexnet(&args);
        assert!(!ok && err.contains(want), "{flags:?}: {err}");
    }
}

/// Logits of the stored images, through `export-features --layer logits` (the evaluation
/// view of the shards), by source path.
fn logits_by_source(r: &Run) -> Vec<(String, Vec<f32>)> {
    // Beside the run, not in it: a run folder's files are train's own.
    let out = r.run.with_file_name("logits.parquet");
    let ck = r.run.join("last.safetensors");
    let (ok, _, err) = alexnet(&[
        "export-features",
        "--quiet",
        "--checkpoint",
        s(&ck),
        "--layer",
        "logits",
        "--overwrite",
        s(&r.shards),
        s(&out),
    ]);
    assert!(ok, "export-features failed: {err}");
    let f = alexnet::export::FeatureFile::open(&out).unwrap();
    (0..f.len())
        .map(|i| (f.sources[i].clone(), f.row(i).unwrap()))
        .collect()
}

#[test]
fn predict_equals_the_evaluation_of_ingested_images_and_names_classes() {
    let r = trained();
    let ck = r.run.join("last.safetensors");
    let names = r.run.join("names.txt");
    std::fs::write(
        &names,
        "n00001000 first class\nn00001007 second class, the other\n",
    )
    .unwrap();
    let class_dir = r.raw.join("n00001007");
    let single = r.raw.join("n00001000/img_001.jpg");
    let (ok, out, err) = alexnet(&[
        "predict",
        "--checkpoint",
        s(&ck),
        "--classes",
        s(&names),
        "--json",
        s(&class_dir),
        s(&single),
    ]);
    assert!(ok, "predict failed: {err}");
    let answers: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(
        answers.len(),
        5,
        "four files in the folder and one more:\n{out}"
    );
    let want = logits_by_source(r);
    for a in &answers {
        let path = a["path"].as_str().unwrap();
        let source = path
            .strip_prefix(&format!("{}/", s(&r.raw)))
            .unwrap_or_else(|| panic!("{path} is not under the raw tree"));
        let logits = &want.iter().find(|(src, _)| src == source).unwrap().1;
        let probs = alexnet::train::eval::softmax(logits);
        let top = a["top"].as_array().unwrap();
        assert_eq!(top.len(), 2, "two classes: top-5 shows both");
        let p: Vec<f64> = top
            .iter()
            .map(|c| c["probability"].as_f64().unwrap())
            .collect();
        assert!((p[0] + p[1] - 1.0).abs() < 1e-9 && p[0] >= p[1], "{a}");
        let best = top[0]["label"].as_u64().unwrap() as usize;
        assert!(
            (p[0] - probs[best]).abs() < 1e-5,
            "{source}: predict says {} for class {best}, the evaluation view of the stored image {}",
            p[0],
            probs[best]
        );
        let wnid = ["n00001000", "n00001007"][best];
        let name = ["first class", "second class, the other"][best];
        assert_eq!(top[0]["wnid"], wnid);
        assert_eq!(top[0]["name"], name);
    }

    // A file that is not an image: named with the reason, the others still answered, exit ≠ 0.
    let mixed = r.run.join("mixed");
    std::fs::create_dir_all(&mixed).unwrap();
    std::fs::copy(&single, mixed.join("a.jpg")).unwrap();
    std::fs::write(mixed.join("b.jpg"), b"not a picture").unwrap();
    let (ok, out, err) = alexnet(&["predict", "--checkpoint", s(&ck), s(&mixed)]);
    assert!(!ok, "a bad file must fail the run");
    assert!(out.contains("a.jpg") && out.contains('%'), "{out}");
    assert!(
        err.contains("b.jpg") && err.contains("not an image"),
        "{err}"
    );

    // A class list of the wrong length is refused before any work.
    std::fs::write(&names, "n1\nn2\nn3\n").unwrap();
    let (ok, _, err) = alexnet(&[
        "predict",
        "--checkpoint",
        s(&ck),
        "--classes",
        s(&names),
        s(&single),
    ]);
    assert!(
        !ok && err.contains("3 classes") && err.contains("has 2"),
        "{err}"
    );
}

#[test]
fn devices_and_neighbors_print_json() {
    let (ok, out, err) = alexnet(&["devices", "--json", "--devices", "0,0"]);
    assert!(ok, "devices --json failed: {err}");
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    let adapters = v["adapters"].as_array().unwrap();
    assert!(!adapters.is_empty());
    assert!(adapters[0]["name"].as_str().is_some_and(|n| !n.is_empty()));
    assert!(
        adapters[0]["max_storage_buffer_binding_size"]
            .as_u64()
            .unwrap()
            > 0
    );
    assert_eq!(v["plan"]["columns"], 2);
    let (ok, _, err) = alexnet(&["devices", "--json", "--devices", "7,"]);
    assert!(!ok && err.contains("adapter 7 does not exist"), "{err}");

    let r = trained();
    let feats = r.run.with_file_name("fc7.parquet");
    let ck = r.run.join("last.safetensors");
    let args = [
        "export-features",
        "--quiet",
        "--overwrite",
        "--checkpoint",
        s(&ck),
    ];
    let (ok, _, err) = alexnet(&[&args[..], &[s(&r.shards), s(&feats)]].concat());
    assert!(ok, "{err}");
    let (ok, out, err) = alexnet(&["neighbors", s(&feats), "--query", "3", "-k", "2", "--json"]);
    assert!(ok, "{err}");
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(v["query"]["row"], 3);
    let n = v["neighbors"].as_array().unwrap();
    assert_eq!(n.len(), 2);
    assert!(n[0]["distance"].as_f64().unwrap() <= n[1]["distance"].as_f64().unwrap());
    assert!(n[0]["source"].as_str().unwrap().starts_with("n0000"));
}

#[test]
fn every_command_has_examples_and_docs_come_from_clap() {
    let commands = [
        "devices",
        "train",
        "eval",
        "forward",
        "ingest",
        "inspect",
        "report",
        "import-idx",
        "import",
        "export-features",
        "export",
        "neighbors",
        "filters",
        "run",
        "predict",
        "completions",
        "man",
    ];
    let (ok, top, _) = alexnet(&["--help"]);
    assert!(ok && top.contains("Examples:"), "{top}");
    for c in commands {
        assert!(top.contains(c), "`{c}` missing from --help");
        let (ok, help, err) = alexnet(&[c, "--help"]);
        assert!(ok, "{c} --help: {err}");
        let examples = help
            .split("Examples:")
            .nth(1)
            .unwrap_or_else(|| panic!("{c} --help has no examples:\n{help}"));
        assert!(
            examples.contains(&format!("alexnet {c}")),
            "{c}'s examples do not run {c}"
        );
    }
    let (_, ingest, _) = alexnet(&["ingest", "--help"]);
    assert!(
        ingest.contains("H,W,C") && ingest.contains("RGB"),
        "raw layout"
    );
    let (_, inspect, _) = alexnet(&["inspect", "--help"]);
    assert!(inspect.contains("mean image"), "mean image");

    let (ok, bash, _) = alexnet(&["completions", "bash"]);
    assert!(ok && bash.contains("_alexnet") && bash.contains("--weight-decay"));
    let (ok, _, err) = alexnet(&["completions", "tcsh"]);
    assert!(!ok && err.contains("tcsh"), "{err}");
    let dir = tempfile::tempdir().unwrap();
    let (ok, out, err) = alexnet(&["man", s(dir.path())]);
    assert!(ok, "man failed: {err}");
    assert_eq!(out.lines().count(), 1 + commands.len(), "{out}");
    let train = std::fs::read_to_string(dir.path().join("alexnet-train.1")).unwrap();
    assert!(
        train.starts_with(".ie") || train.contains(".TH"),
        "not roff"
    );
    assert!(train.contains("momentum") && train.contains(".SH EXAMPLES"));
}
