//! Honest numbers and safe files under bad input, for `train`, `eval`, `forward`, `filters`
//! and `export-features`: what a user's disk and a diverging run throw at them (issue 13).
//! Real Fashion-MNIST images, the tiny model, lavapipe.
mod common;

use alexnet::dataset::ShardSet;
use alexnet::model::{Checkpoint, DataStats, Init, ModelConfig, Params};
use common::{alexnet, fashion_shards, rewrite_shard, s, with_labels};
use parquet::basic::{Compression, GzipLevel};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

const WIDTHS: [usize; 7] = [8, 16, 24, 24, 16, 64, 64];

fn tiny() -> ModelConfig {
    let mut c = ModelConfig::small(67, 1, 10);
    c.widths = WIDTHS;
    c
}

fn widths_arg() -> String {
    WIDTHS.map(|w| w.to_string()).join(",")
}

/// A checkpoint of the tiny model (He init, seed 5) with `data`'s statistics, after `edit`.
fn checkpoint(dir: &Path, name: &str, data: &Path, edit: impl FnOnce(&mut Params)) -> PathBuf {
    let set = ShardSet::open(&[data.to_path_buf()]).unwrap();
    let cfg = tiny();
    let mut params = Params::init_with(&cfg, 5, Init::He).unwrap();
    edit(&mut params);
    let mut ck = Checkpoint::new(cfg, params);
    let (vals, vecs) = set.stats().pca();
    ck.stats = Some(DataStats {
        size: set.size(),
        mean_image: set.stats().mean_image(),
        pca_eigenvalues: vals.map(|v| v as f32),
        pca_eigenvectors: vecs.map(|r| r.map(|v| v as f32)),
    });
    let path = dir.join(name);
    ck.save(&path).unwrap();
    path
}

fn tensor<'a>(p: &'a mut Params, name: &str) -> &'a mut Vec<f32> {
    &mut p
        .tensors
        .iter_mut()
        .find(|t| t.spec.name == name)
        .unwrap()
        .data
}

fn eval_json(ck: &Path, data: &Path) -> serde_json::Value {
    let (ok, out, err) = alexnet(&["eval", "--json", "--checkpoint", s(ck), s(data)]);
    assert!(ok, "eval {}: {err}", ck.display());
    serde_json::from_str(out.trim()).unwrap()
}

/// `alexnet train` on the tiny model, quiet, with `args`; returns (success, stderr).
fn train(args: &[&str]) -> (bool, String) {
    let w = widths_arg();
    let mut all = vec!["train", "--quiet", "--input-size", "67", "--widths", &w];
    all.extend_from_slice(args);
    let (ok, _, err) = alexnet(&all);
    (ok, err)
}

#[test]
fn ties_and_nan_logits_count_as_misses() {
    let dir = tempfile::tempdir().unwrap();
    let data = fashion_shards(dir.path(), 40);
    // fc8 all zeros: every class gets the same score for every real image.
    let zero = checkpoint(dir.path(), "zero.safetensors", &data, |p| {
        tensor(p, "fc8.weight").fill(0.0);
        tensor(p, "fc8.bias").fill(0.0);
    });
    let v = eval_json(&zero, &data);
    assert_eq!(v["count"], 40);
    assert_eq!(v["top1_accuracy"], 0.0, "a tie scored as a hit: {v}");
    assert_eq!(v["top5_accuracy"], 0.0, "a tie scored as a hit: {v}");
    let loss = v["loss"].as_f64().unwrap();
    assert!(
        (loss - 10f64.ln()).abs() < 1e-6,
        "uniform output costs ln 10: {v}"
    );
    // One NaN bias: refused when loading, naming the tensor (issue 24: it used to score).
    let nan = checkpoint(dir.path(), "nan.safetensors", &data, |p| {
        tensor(p, "fc8.bias")[3] = f32::NAN;
    });
    let (ok, _, err) = alexnet(&["eval", "--json", "--checkpoint", s(&nan), s(&data)]);
    assert!(!ok && err.contains("`fc8.bias`"), "{err}");
    // Finite weights whose logits overflow: fc8's row 3 at 1e38 gives +inf for every image
    // with any fc7 activity, and such rows count as misses.
    let inf = checkpoint(dir.path(), "inf.safetensors", &data, |p| {
        let fin = WIDTHS[6];
        tensor(p, "fc8.weight")[3 * fin..4 * fin].fill(1e38);
    });
    let (ok, out, err) = alexnet(&["eval", "--json", "--checkpoint", s(&inf), s(&data)]);
    assert!(ok, "{err}");
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    let bad = v["non_finite"].as_u64().unwrap();
    assert!(bad > 0, "{v}");
    assert!(
        v["top1_accuracy"].as_f64().unwrap() <= (40 - bad) as f64 / 40.0,
        "{v}"
    );
    assert!(
        v["loss"].is_null(),
        "the loss must not hide NaN logits: {v}"
    );
    assert!(
        err.contains("NaN or inf") && err.contains("diverged"),
        "{err}"
    );
    // A model that works is still scored normally: its real scores are not ties.
    let fine = checkpoint(dir.path(), "fine.safetensors", &data, |_| {});
    let v = eval_json(&fine, &data);
    assert_eq!(v["non_finite"], 0, "{v}");
    assert!(v["top5_accuracy"].as_f64().unwrap() > 0.0, "{v}");
    assert!(v["loss"].as_f64().unwrap().is_finite(), "{v}");
}

#[test]
fn a_diverging_run_stops_before_writing_a_bad_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let data = fashion_shards(dir.path(), 40);
    let cfg = dir.path().join("c.toml");
    std::fs::write(&cfg, "log_every = 1\ninit = \"he\"\n").unwrap();
    let run = dir.path().join("run");
    // Measured without the guard: at lr 10 the loss is 8.5e7 on step 2 and 1e32 on step 5,
    // still finite, so the epoch ended and validation saved a best.safetensors whose
    // logits were inf.
    let (ok, err) = train(&[
        s(&data),
        "--val",
        s(&data),
        "--config",
        s(&cfg),
        "--out",
        s(&run),
        "--classes",
        "10",
        "--lr",
        "10",
        "--batch",
        "8",
        "--epochs",
        "3",
    ]);
    assert!(!ok, "a run at lr 10 must stop");
    assert!(
        err.contains("diverged at step") && err.contains("--lr") && err.contains("try 1"),
        "{err}"
    );
    for name in ["last.safetensors", "best.safetensors"] {
        let p = run.join(name);
        if p.exists() {
            let v = eval_json(&p, &data);
            assert_eq!(v["non_finite"], 0, "{name} holds diverged weights: {v}");
        }
    }
    // With a checkpoint every step, the step-1 weights (finite, with finite logits) are
    // kept and named; nothing after them is written.
    let every = dir.path().join("every.toml");
    std::fs::write(
        &every,
        "log_every = 1\ncheckpoint_every = 1\ninit = \"he\"\n",
    )
    .unwrap();
    let run2 = dir.path().join("run2");
    let (ok, err2) = train(&[
        s(&data),
        "--config",
        s(&every),
        "--out",
        s(&run2),
        "--classes",
        "10",
        "--lr",
        "10",
        "--batch",
        "8",
    ]);
    assert!(
        !ok && err2.contains("(step 1) holds the last good weights"),
        "{err2}"
    );
    let v = eval_json(&run2.join("last.safetensors"), &data);
    assert_eq!(v["non_finite"], 0, "{v}");
    if let Ok(records) = alexnet::train::metrics::read_metrics(&run.join("metrics.jsonl")) {
        for r in records {
            if let alexnet::train::metrics::Record::Epoch(e) = r {
                assert!(
                    e.train_loss.is_finite() && e.train_loss < 100.0 * 10f64.ln(),
                    "an exploded epoch was recorded as done: {e:?}"
                );
            }
        }
    }
}

#[test]
fn labels_outside_the_class_list_are_named_by_file_and_row() {
    let dir = tempfile::tempdir().unwrap();
    let data = fashion_shards(dir.path(), 40);
    let ck = checkpoint(dir.path(), "w.safetensors", &data, |_| {});
    // The shard edited by hand: row 3 gets label 99 and row 7 gets −1, of 10 classes.
    let edited = dir.path().join("edited");
    std::fs::create_dir(&edited).unwrap();
    let shard = edited.join("part-00000.parquet");
    let mut seen = 0;
    rewrite_shard(
        &data.join("part-00000.parquet"),
        &shard,
        Compression::ZSTD(Default::default()),
        |b| {
            let col = b.column_by_name("label").unwrap();
            let labels = col
                .as_any()
                .downcast_ref::<arrow_array::Int64Array>()
                .unwrap();
            let new: Vec<i32> = (0..b.num_rows())
                .map(|i| match seen + i {
                    3 => 99,
                    7 => -1,
                    _ => i32::try_from(labels.value(i)).unwrap(),
                })
                .collect();
            seen += b.num_rows();
            with_labels(b, new)
        },
    );
    let (ok, _, err) = alexnet(&["eval", "--checkpoint", s(&ck), s(&edited)]);
    assert!(!ok && !err.contains("panicked"), "{err}");
    assert!(
        err.contains("part-00000.parquet") && err.contains("row 3") && err.contains("label 99"),
        "{err}"
    );
    let (ok, err) = train(&[
        s(&edited),
        "--out",
        s(&dir.path().join("r")),
        "--batch",
        "8",
    ]);
    assert!(
        !ok && err.contains("row 3") && err.contains("label 99"),
        "{err}"
    );
}

/// Starts a long `train` into `run` that logs every step; returns it once it has logged one.
fn long_train(data: &Path, run: &Path, cfg: &Path) -> std::process::Child {
    let w = widths_arg();
    let child = Command::new(env!("CARGO_BIN_EXE_alexnet"))
        .args(["train", "--quiet", "--input-size", "67", "--widths", &w])
        .args([s(data), "--out", s(run), "--config", s(cfg)])
        .args(["--classes", "10", "--batch", "8", "--steps", "100000"])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let t0 = std::time::Instant::now();
    while !std::fs::read_to_string(run.join("metrics.jsonl"))
        .unwrap_or_default()
        .contains("\"kind\":\"step\"")
    {
        assert!(t0.elapsed().as_secs() < 300, "no step logged in 5 minutes");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    child
}

fn kill(sig: &str, pid: u32) {
    assert!(Command::new("kill")
        .args([sig, &pid.to_string()])
        .status()
        .unwrap()
        .success());
}

fn step_of(ck: &Path) -> u64 {
    Checkpoint::load(ck, None).unwrap().run_state["step"]
        .parse()
        .unwrap()
}

#[test]
fn one_writer_per_run_and_a_killed_writer_frees_the_run() {
    let dir = tempfile::tempdir().unwrap();
    let data = fashion_shards(dir.path(), 40);
    let cfg = dir.path().join("c.toml");
    std::fs::write(&cfg, "log_every = 1\ncheckpoint_every = 1\ninit = \"he\"\n").unwrap();
    let run = dir.path().join("run");
    let mut first = long_train(&data, &run, &cfg);
    let t0 = std::time::Instant::now();
    while !run.join("last.safetensors").exists() {
        assert!(t0.elapsed().as_secs() < 300, "no checkpoint in 5 minutes");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    // A second process resuming the live run would interleave metrics.jsonl and the
    // checkpoints; a fresh one with other settings would replace config.toml.
    for extra in [&["--resume", "--steps", "3"][..], &["--batch", "4"][..]] {
        let mut args = vec![s(&data), "--out", s(&run)];
        args.extend_from_slice(extra);
        let (ok, err) = train(&args);
        assert!(!ok, "a second writer ran beside the first ({extra:?})");
        assert!(
            err.contains("in use") && err.contains(&format!("process {}", first.id())),
            "{err}"
        );
    }
    // kill -9 leaves the lock file behind; the lock itself dies with the process.
    kill("-KILL", first.id());
    first.wait().unwrap();
    assert!(run.join(".alexnet.lock").exists());
    let stopped = step_of(&run.join("last.safetensors"));
    let to = (stopped + 1).to_string();
    let (ok, err) = train(&[s(&data), "--out", s(&run), "--resume", "--steps", &to]);
    assert!(ok, "the killed run's lock was not recovered: {err}");
    assert_eq!(step_of(&run.join("last.safetensors")), stopped + 1);
}

#[test]
fn sigterm_writes_a_checkpoint_and_exits_non_zero() {
    let dir = tempfile::tempdir().unwrap();
    let data = fashion_shards(dir.path(), 40);
    let cfg = dir.path().join("c.toml");
    std::fs::write(&cfg, "log_every = 1\ninit = \"he\"\n").unwrap();
    let run = dir.path().join("run");
    let child = long_train(&data, &run, &cfg);
    kill("-TERM", child.id());
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(143), "{err}");
    assert!(err.contains("interrupted by SIGTERM"), "{err}");
    let stopped = step_of(&run.join("last.safetensors"));
    assert!((1..100000).contains(&stopped), "stopped at step {stopped}");
    let to = (stopped + 1).to_string();
    let (ok, err) = train(&[s(&data), "--out", s(&run), "--resume", "--steps", &to]);
    assert!(ok, "resume after SIGTERM: {err}");
}

#[test]
fn snappy_gzip_and_lz4_shards_train() {
    let dir = tempfile::tempdir().unwrap();
    let data = fashion_shards(dir.path(), 24);
    // What pyarrow writes by default (snappy), and the other codecs users' files carry.
    let mixed = dir.path().join("mixed");
    std::fs::create_dir(&mixed).unwrap();
    let codecs = [
        Compression::SNAPPY,
        Compression::GZIP(GzipLevel::default()),
        Compression::LZ4_RAW,
    ];
    // Three copies of one shard, one per codec, each a complete set of its own rows.
    for (i, c) in codecs.into_iter().enumerate() {
        rewrite_shard(
            &data.join("part-00000.parquet"),
            &mixed.join(format!("copy-{i}.parquet")),
            c,
            |b| b,
        );
    }
    let (ok, out, err) = alexnet(&["inspect", "--json", s(&mixed)]);
    assert!(ok, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["count"], 72, "{v}");
    let (ok, err) = train(&[
        s(&mixed),
        "--out",
        s(&dir.path().join("run")),
        "--batch",
        "8",
        "--epochs",
        "1",
        "--shuffle",
        "none",
    ]);
    assert!(ok, "training on snappy/gzip/lz4 shards: {err}");
}

#[test]
fn identical_runs_write_identical_checkpoints_and_a_tiny_rate_is_accepted() {
    let dir = tempfile::tempdir().unwrap();
    let data = fashion_shards(dir.path(), 24);
    let run = |name: &str, lr: &str| {
        let out = dir.path().join(name);
        let (ok, err) = train(&[
            s(&data),
            "--out",
            s(&out),
            "--batch",
            "8",
            "--steps",
            "2",
            "--seed",
            "3",
            "--lr",
            lr,
        ]);
        assert!(ok, "--lr {lr}: {err}");
        std::fs::read(out.join("last.safetensors")).unwrap()
    };
    let (a, b) = (run("a", "0.001"), run("b", "0.001"));
    assert!(a == b, "two identical runs wrote different checkpoints");
    // 1e-6 is below the paper schedule's floor of 1e-5, which used to refuse it.
    let c = run("c", "1e-6");
    assert!(c != a);
}

#[test]
fn outputs_that_are_inputs_or_exist_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let data = fashion_shards(dir.path(), 24);
    let ck = checkpoint(dir.path(), "w.safetensors", &data, |_| {});
    let shard = data.join("part-00000.parquet");
    let before = std::fs::read(&shard).unwrap();
    for extra in [None, Some("--overwrite")] {
        let mut args = vec![
            "export-features",
            "--quiet",
            "--checkpoint",
            s(&ck),
            s(&data),
        ];
        args.push(s(&shard));
        args.extend(extra);
        let (ok, _, err) = alexnet(&args);
        assert!(!ok && err.contains("also an input"), "{err}");
        // Inside the data folder it would be read as a shard next time.
        let mut args = vec![
            "export-features",
            "--quiet",
            "--checkpoint",
            s(&ck),
            s(&data),
        ];
        let inside = data.join("features.parquet");
        args.push(s(&inside));
        args.extend(extra);
        let (ok, _, err) = alexnet(&args);
        assert!(!ok && err.contains("read as one of its shards"), "{err}");
        assert!(!inside.exists());
    }
    assert!(
        std::fs::read(&shard).unwrap() == before,
        "the input shard changed"
    );
    let feats = dir.path().join("f.parquet");
    let export = |extra: &[&str]| {
        let mut args = vec![
            "export-features",
            "--quiet",
            "--checkpoint",
            s(&ck),
            s(&data),
        ];
        args.push(s(&feats));
        args.extend_from_slice(extra);
        alexnet(&args)
    };
    assert!(export(&[]).0);
    let written = std::fs::read(&feats).unwrap();
    let (ok, _, err) = export(&["--layer", "logits"]);
    assert!(!ok && err.contains("--overwrite"), "{err}");
    assert!(std::fs::read(&feats).unwrap() == written);
    let (ok, _, err) = export(&["--layer", "logits", "--overwrite"]);
    assert!(ok, "{err}");
    assert!(std::fs::read(&feats).unwrap() != written);

    // forward: its input and its checkpoint are never its output.
    let images = dir.path().join("x.safetensors");
    let n = 2 * 3 * 67 * 67;
    let pixels: Vec<f32> = (0..n).map(|i| ((i * 37) % 251) as f32 - 125.0).collect();
    let view = safetensors::tensor::TensorView::new(
        safetensors::Dtype::F32,
        vec![2, 3, 67, 67],
        bytemuck::cast_slice(&pixels),
    )
    .unwrap();
    safetensors::serialize_to_file([("images", view)], None, &images).unwrap();
    let input_bytes = std::fs::read(&images).unwrap();
    for (out, word) in [(&images, "also an input"), (&ck, "also an input")] {
        let (ok, _, err) = alexnet(&[
            "forward",
            "--checkpoint",
            s(&ck),
            "--input",
            s(&images),
            "--out",
            s(out),
            "--overwrite",
        ]);
        assert!(!ok && err.contains(word), "{err}");
    }
    assert!(std::fs::read(&images).unwrap() == input_bytes);
    let acts = dir.path().join("acts.safetensors");
    let fwd = |extra: Option<&str>| {
        let mut args = vec!["forward", "--checkpoint", s(&ck), "--input", s(&images)];
        args.extend(["--out", s(&acts)]);
        args.extend(extra);
        alexnet(&args)
    };
    assert!(fwd(None).0);
    let (ok, _, err) = fwd(None);
    assert!(!ok && err.contains("--overwrite"), "{err}");
    assert!(fwd(Some("--overwrite")).0);
    // filters would draw its PNG over the checkpoint.
    let (ok, _, err) = alexnet(&["filters", "--checkpoint", s(&ck), s(&ck)]);
    assert!(!ok && err.contains("also an input"), "{err}");
    assert!(Checkpoint::load(&ck, None).is_ok());
}

#[test]
fn sizes_that_cannot_fit_and_zero_sizes_are_refused_in_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let data = fashion_shards(dir.path(), 16);
    let run = dir.path().join("run");
    let (ok, _, err) = alexnet(&[
        "train",
        "--quiet",
        s(&data),
        "--out",
        s(&run),
        "--input-size",
        "67",
        "--widths",
        "100000000,16,24,24,16,64,64",
        "--batch",
        "8",
    ]);
    assert!(!ok, "a 145 GB model was not refused");
    assert!(
        err.contains("memory") && err.contains("--widths") && !err.contains("memory allocation of"),
        "{err}"
    );
    assert_eq!(
        err.lines().filter(|l| l.starts_with("error")).count(),
        1,
        "{err}"
    );
    // --out naming a file, not a folder.
    let file = dir.path().join("notes.txt");
    std::fs::write(&file, "x").unwrap();
    let (ok, err) = train(&[s(&data), "--out", s(&file), "--batch", "8"]);
    assert!(!ok && err.contains("not a directory"), "{err}");
    let ck = checkpoint(dir.path(), "w.safetensors", &data, |_| {});
    let png = dir.path().join("f.png");
    let (ok, _, err) = alexnet(&[
        "filters",
        "--checkpoint",
        s(&ck),
        s(&png),
        "--scale",
        "100000",
    ]);
    assert!(
        !ok && err.contains("memory") && err.contains("--scale"),
        "{err}"
    );
    let (ok, _, err) = alexnet(&["filters", "--checkpoint", s(&ck), s(&png), "--scale", "0"]);
    assert!(!ok && err.contains("--scale 0"), "{err}");
    let (ok, _, err) = alexnet(&["eval", "--checkpoint", s(&ck), s(&data), "--batch", "0"]);
    assert!(!ok && err.contains("--batch 0"), "{err}");
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".tmp") || n == "f.png")
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn features_with_nan_are_not_exported() {
    let dir = tempfile::tempdir().unwrap();
    let data = fashion_shards(dir.path(), 16);
    // Finite weights whose logits overflow (a NaN weight is refused when loading): fc8's
    // row 0 at 1e38 gives +inf for every image with any fc7 activity.
    let ck = checkpoint(dir.path(), "inf.safetensors", &data, |p| {
        tensor(p, "fc8.weight")[..WIDTHS[6]].fill(1e38);
    });
    let out = dir.path().join("f.parquet");
    let (ok, _, err) = alexnet(&[
        "export-features",
        "--quiet",
        "--checkpoint",
        s(&ck),
        s(&data),
        s(&out),
        "--layer",
        "logits",
    ]);
    assert!(
        !ok && err.contains("NaN or inf") && err.contains("row "),
        "{err}"
    );
    let left: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .filter(|n| n.to_string_lossy().contains("f.parquet"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
}
