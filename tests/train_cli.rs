//! `alexnet train` and `alexnet eval` end to end on real Fashion-MNIST images (Debian's
//! `dataset-fashion-mnist`), with a tiny model on the default device (the CPU engine on a
//! machine without a GPU); the tests that name adapter 0 run the WGSL kernels (lavapipe there).
mod common;

use alexnet::dataset::{read_rows, ShardSet};
use alexnet::model::reference::{network_loss_and_grads, network_sgd_step};
use alexnet::model::{Checkpoint, Init, ModelConfig, Params};
use alexnet::reference::{augment_forward, check_close};
use alexnet::shape::AugmentShape;
use alexnet::train::augment::centre_draws;
use alexnet::train::metrics::{read_metrics, Record};
use common::alexnet;
use std::path::{Path, PathBuf};

const WIDTHS: &str = "8,16,24,24,16,64,64";

fn shards(dir: &Path, n: usize) -> PathBuf {
    common::fashion_shards(dir, n)
}

fn train(args: &[&str]) -> (bool, String) {
    train_loud(&[&["--quiet"], args].concat())
}

/// `alexnet train` on the tiny model, with whatever progress output `args` ask for.
fn train_loud(args: &[&str]) -> (bool, String) {
    let mut all = vec!["train", "--input-size", "67", "--widths", WIDTHS];
    all.extend_from_slice(args);
    let (ok, _, err) = alexnet(&all);
    (ok, err)
}

fn params(path: &Path) -> Params {
    Checkpoint::load(path, None).unwrap().params
}

#[test]
fn one_step_on_the_cpu_engine_is_the_reference_sgd_step_on_the_first_batch() {
    one_step_is_the_reference_sgd_step_on_the_first_batch("cpu");
}

#[test]
fn one_step_on_adapter_0_is_the_reference_sgd_step_on_the_first_batch() {
    // The WGSL kernels: a real GPU, or lavapipe on a machine without one.
    one_step_is_the_reference_sgd_step_on_the_first_batch("0");
}

fn one_step_is_the_reference_sgd_step_on_the_first_batch(devices: &str) {
    let dir = tempfile::tempdir().unwrap();
    let data = shards(dir.path(), 40);
    let cfg = {
        let mut c = ModelConfig::small(67, 1, 10);
        c.widths = [8, 16, 24, 24, 16, 64, 64];
        c
    };
    let init = Params::init_with(&cfg, 9, Init::He).unwrap();
    let w0 = dir.path().join("w0.safetensors");
    Checkpoint::new(cfg.clone(), init.clone())
        .save(&w0)
        .unwrap();
    let run = dir.path().join("run");
    let (ok, err) = train(&[
        data.to_str().unwrap(),
        "--out",
        run.to_str().unwrap(),
        "--init-from",
        w0.to_str().unwrap(),
        "--no-augment",
        "--dropout",
        "0",
        "--shuffle",
        "none",
        "--steps",
        "1",
        "--batch",
        "6",
        "--lr",
        "0.02",
        "--devices",
        devices,
    ]);
    assert!(ok, "train --devices {devices} failed: {err}");

    // The same step by the CPU reference: the first 6 rows, centre crop minus the mean image.
    let set = ShardSet::open(&[data]).unwrap();
    let batch = read_rows(&set, &(0..6).collect::<Vec<u64>>()).unwrap();
    let s = AugmentShape {
        n: 6,
        stored: 70,
        crop: 67,
    };
    let images = augment_forward(
        &s,
        &batch.images,
        &set.stats().mean_image(),
        &centre_draws(6, 70, 67),
        1.0,
    );
    let (_, _, grads) =
        network_loss_and_grads(&cfg, &init, 6, &images, &batch.labels, None).unwrap();
    let mut want = init.clone();
    let mut velocity = Params::zeros(&cfg).unwrap();
    network_sgd_step(&mut want, &mut velocity, &grads, 0.02, 0.9, 5e-4).unwrap();
    let got = params(&run.join("last.safetensors"));
    for ((g, w), w0) in got.tensors.iter().zip(&want.tensors).zip(&init.tensors) {
        // Compare the change, so a step that did nothing cannot pass on the unchanged weights.
        let dg: Vec<f32> = g.data.iter().zip(&w0.data).map(|(a, b)| a - b).collect();
        let dw: Vec<f32> = w.data.iter().zip(&w0.data).map(|(a, b)| a - b).collect();
        let scale = dw.iter().fold(0f32, |m, v| m.max(v.abs()));
        assert!(
            scale > 0.0,
            "{}: the reference step changed nothing",
            w.spec.name
        );
        check_close(
            &format!("--devices {devices} {}", w.spec.name),
            &dg,
            &dw,
            2e-3 * scale,
            2e-3,
        )
        .unwrap();
    }
}

#[test]
fn resume_on_the_cpu_engine_gives_the_same_weights_as_an_uninterrupted_run() {
    resume_gives_the_same_weights_as_an_uninterrupted_run("cpu");
}

#[test]
fn resume_on_adapter_0_gives_the_same_weights_as_an_uninterrupted_run() {
    resume_gives_the_same_weights_as_an_uninterrupted_run("0");
}

fn resume_gives_the_same_weights_as_an_uninterrupted_run(devices: &str) {
    let dir = tempfile::tempdir().unwrap();
    let data = shards(dir.path(), 40);
    let d = data.to_str().unwrap();
    // Augmentation and dropout on (the defaults): the resumed run must redraw the same crops,
    // flips, lighting and masks.
    let common_args = [
        "--batch",
        "8",
        "--seed",
        "4",
        "--init",
        "he",
        "--epochs",
        "3",
        "--devices",
        devices,
    ];
    let a = dir.path().join("a");
    let mut args = vec![d, "--out", a.to_str().unwrap(), "--steps", "7"];
    args.extend_from_slice(&common_args);
    let (ok, err) = train(&args);
    assert!(ok, "{err}");
    // 5 steps an epoch: stop at 3, resume to 7, crossing an epoch boundary.
    let b = dir.path().join("b");
    let mut args = vec![d, "--out", b.to_str().unwrap(), "--steps", "3"];
    args.extend_from_slice(&common_args);
    assert!(train(&args).0);
    let mut args = vec![d, "--out", b.to_str().unwrap(), "--steps", "7", "--resume"];
    args.extend_from_slice(&common_args);
    let (ok, err) = train(&args);
    assert!(ok, "resume failed: {err}");
    let (pa, pb) = (
        params(&a.join("last.safetensors")),
        params(&b.join("last.safetensors")),
    );
    let start = Params::init_with(
        &Checkpoint::load(&a.join("last.safetensors"), None)
            .unwrap()
            .config,
        4,
        Init::He,
    )
    .unwrap();
    assert!(pa != start, "--devices {devices}: training changed nothing");
    // Not assert_eq: on failure it would print every weight.
    assert!(
        pa == pb,
        "--devices {devices}: the resumed run differs from the uninterrupted one"
    );
    let momentum = |run: &Path| {
        Checkpoint::load(&run.join("last.safetensors"), None)
            .unwrap()
            .momentum
    };
    assert!(
        momentum(&a).is_some() && momentum(&a) == momentum(&b),
        "--devices {devices}: the resumed run's momentum differs"
    );
    let lines = std::fs::read_to_string(b.join("metrics.jsonl")).unwrap();
    assert!(lines.contains("\"kind\":\"epoch\""), "{lines}");
}

#[test]
fn cosine_rate_moves_every_step_and_a_resumed_run_follows_the_same_curve() {
    let dir = tempfile::tempdir().unwrap();
    let data = shards(dir.path(), 40);
    let d = data.to_str().unwrap();
    let cfg = dir.path().join("cosine.toml");
    std::fs::write(
        &cfg,
        "lr = 0.02\nepochs = 2\nbatch = 8\nseed = 3\ninit = \"he\"\nlog_every = 1\n\
         [schedule]\nkind = \"cosine\"\nmin_lr = 0.002\n[model]\nclasses = 10\n",
    )
    .unwrap();
    let c = cfg.to_str().unwrap();
    let a = dir.path().join("a");
    let (ok, err) = train(&[d, "--config", c, "--out", a.to_str().unwrap()]);
    assert!(ok, "{err}");
    // 5 steps an epoch, 10 planned: step s runs at 0.002 + 0.018·(1 + cos(π(s−1)/10))/2.
    let records = read_metrics(&a.join("metrics.jsonl")).unwrap();
    let lrs: Vec<f64> = records
        .iter()
        .filter_map(|r| match r {
            Record::Step(s) => Some(s.lr),
            _ => None,
        })
        .collect();
    assert_eq!(lrs.len(), 10, "{records:?}");
    for (i, got) in lrs.iter().enumerate() {
        let want = 0.002 + 0.018 * 0.5 * (1.0 + (std::f64::consts::PI * i as f64 / 10.0).cos());
        assert!(
            (got - want).abs() < 1e-9 * want,
            "step {}: lr {got}, want {want}",
            i + 1
        );
    }
    // A run cut at step 4 and resumed lands on the same weights: the curve is planned from
    // the epochs, not from --steps.
    let b = dir.path().join("b");
    let out_b = b.to_str().unwrap();
    assert!(train(&[d, "--config", c, "--out", out_b, "--steps", "4"]).0);
    let (ok, err) = train(&[d, "--config", c, "--out", out_b, "--resume"]);
    assert!(ok, "resume failed: {err}");
    // Not assert_eq: on failure it would print every weight.
    assert!(
        params(&a.join("last.safetensors")) == params(&b.join("last.safetensors")),
        "the resumed cosine run differs from the uninterrupted one"
    );
}

#[test]
fn two_devices_train_as_one_and_their_checkpoint_serves_one() {
    let dir = tempfile::tempdir().unwrap();
    let data = shards(dir.path(), 40);
    let d = data.to_str().unwrap();
    // Augmentation and dropout on: both columns must draw the same crops, flips, lighting and
    // masks as the one-device run.
    let common_args = [
        "--batch", "8", "--seed", "6", "--init", "he", "--steps", "3", "--val", d,
    ];
    let one = dir.path().join("one");
    let two = dir.path().join("two");
    for (out, devices) in [(&one, "0"), (&two, "2")] {
        let mut args = vec![d, "--out", out.to_str().unwrap(), "--devices", devices];
        args.extend_from_slice(&common_args);
        let (ok, err) = train(&args);
        assert!(ok, "--devices {devices}: {err}");
    }
    let ck = Checkpoint::load(&one.join("last.safetensors"), None).unwrap();
    let start = Params::init_with(&ck.config, 6, Init::He).unwrap();
    let (p1, p2) = (ck.params, params(&two.join("last.safetensors")));
    for ((s, a), b) in start.tensors.iter().zip(&p1.tensors).zip(&p2.tensors) {
        let (mut num, mut den) = (0f64, 0f64);
        for ((&w0, &w1), &w2) in s.data.iter().zip(&a.data).zip(&b.data) {
            let (d1, d2) = (w1 as f64 - w0 as f64, w2 as f64 - w0 as f64);
            num += (d2 - d1).powi(2);
            den += d1 * d1;
        }
        assert!(den > 0.0, "{} did not move", s.spec.name);
        let rel = (num / den).sqrt();
        assert!(
            rel <= 1e-4,
            "{}: change differs by {rel:e} (relative)",
            s.spec.name
        );
    }
    let log = |dir: &Path| std::fs::read_to_string(dir.join("metrics.jsonl")).unwrap();
    assert!(
        log(&two).contains("\"exchange\":{\"wait_s\""),
        "{}",
        log(&two)
    );
    assert!(!log(&one).contains("exchange"), "{}", log(&one));
    // The checkpoint holds the whole model in the ordinary names: one device evaluates it.
    let (ok, out, err) = alexnet(&[
        "eval",
        "--checkpoint",
        two.join("last.safetensors").to_str().unwrap(),
        d,
        "--json",
    ]);
    assert!(ok, "eval of the two-device checkpoint: {err}");
    assert!(out.contains("top1_accuracy"), "{out}");
    // Three devices are data-parallel replicas (docs/distributed.md; tests/replicas.rs runs
    // them), whose global batch must split evenly; three columns do not exist.
    let (ok, err) = train(&[d, "--out", "unused", "--devices", "0,0,0", "--batch", "7"]);
    assert!(
        !ok && err.contains("batch 7 does not split into 3 equal replicas"),
        "{err}"
    );
    let (ok, out, err) = alexnet(&["devices", "--devices", "0,0,0"]);
    assert!(ok, "{err}");
    assert!(
        out.contains("data-parallel replicas of the whole network, one per device")
            && out.contains("device 2: adapter [0]"),
        "{out}"
    );
    // Replicas of the columns take the devices in pairs (tests/replicas.rs runs them).
    let (ok, err) = train(&[d, "--out", "unused", "--devices", "0,0,0", "--columns", "2"]);
    assert!(!ok && err.contains("in pairs"), "{err}");
    let (ok, out, err) = alexnet(&["devices", "--devices", "2"]);
    assert!(ok, "{err}");
    assert!(out.contains("device 1: adapter [0]"), "{out}");
    let (ok, _, err) = alexnet(&["devices", "--devices", "0,7"]);
    assert!(!ok && err.contains("adapter 7 does not exist"), "{err}");
}

#[test]
fn ctrl_c_writes_a_checkpoint_and_resume_continues_from_it() {
    let dir = tempfile::tempdir().unwrap();
    let data = shards(dir.path(), 40);
    let d = data.to_str().unwrap();
    let cfg = dir.path().join("log_each_step.toml");
    std::fs::write(&cfg, "log_every = 1\ninit = \"he\"\n").unwrap();
    let run = dir.path().join("run");
    let r = run.to_str().unwrap();
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_alexnet"))
        .args([
            "train",
            "--quiet",
            "--input-size",
            "67",
            "--widths",
            WIDTHS,
            d,
            "--out",
            r,
            "--config",
            cfg.to_str().unwrap(),
            "--classes",
            "10",
            "--batch",
            "8",
            "--steps",
            "100000",
        ])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // The handler is installed before the first step, whose record proves it is in place.
    let t0 = std::time::Instant::now();
    while !std::fs::read_to_string(run.join("metrics.jsonl"))
        .unwrap_or_default()
        .contains("\"kind\":\"step\"")
    {
        assert!(t0.elapsed().as_secs() < 300, "no step logged in 5 minutes");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let pid = child.id().to_string();
    assert!(std::process::Command::new("kill")
        .args(["-INT", &pid])
        .status()
        .unwrap()
        .success());
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    // Not 0: `train && eval` must not carry on as if training had finished.
    assert_eq!(
        out.status.code(),
        Some(130),
        "Ctrl-C should exit with 130: {err}"
    );
    assert!(err.contains("interrupted by SIGINT"), "{err}");
    let step = |p: &Path| -> u64 {
        Checkpoint::load(p, None).unwrap().run_state["step"]
            .parse()
            .unwrap()
    };
    let last = run.join("last.safetensors");
    let stopped = step(&last);
    assert!((1..100000).contains(&stopped), "stopped at step {stopped}");
    let to = (stopped + 2).to_string();
    let (ok, err) = train(&[d, "--out", r, "--resume", "--steps", &to]);
    assert!(ok, "resume after Ctrl-C: {err}");
    assert_eq!(step(&last), stopped + 2);
}

#[test]
fn a_diverging_loss_stops_the_run_with_a_clear_message() {
    let dir = tempfile::tempdir().unwrap();
    let data = shards(dir.path(), 16);
    let cfg = dir.path().join("c.toml");
    std::fs::write(&cfg, "log_every = 1\ninit = \"he\"\n[model]\ninput_size = 67\nwidths = [8, 16, 24, 24, 16, 64, 64]\nclasses = 10\n").unwrap();
    let run = dir.path().join("run");
    let (ok, _, err) = alexnet(&[
        "train",
        "--quiet",
        data.to_str().unwrap(),
        "--config",
        cfg.to_str().unwrap(),
        "--out",
        run.to_str().unwrap(),
        "--lr",
        "1e12",
        "--batch",
        "8",
        "--steps",
        "8",
    ]);
    assert!(!ok, "a run at lr 1e12 should stop");
    assert!(
        err.contains("diverged at step") && err.contains("--lr"),
        "{err}"
    );
    // An epoch ended (2 steps of 8) before the loss blew up: that checkpoint is kept, and it
    // must hold the last good, finite weights.
    let last = run.join("last.safetensors");
    if last.exists() {
        let p = params(&last);
        assert!(
            p.tensors
                .iter()
                .all(|t| t.data.iter().all(|v| v.is_finite())),
            "the kept checkpoint holds non-finite weights"
        );
    }
}

#[test]
fn bad_inputs_give_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let data = shards(dir.path(), 16);
    let missing = dir.path().join("no-such-shards");
    let (ok, err) = train(&[
        missing.to_str().unwrap(),
        "--out",
        dir.path().join("r").to_str().unwrap(),
    ]);
    assert!(!ok && err.contains("no-such-shards"), "{err}");
    let (ok, err) = train(&[
        data.to_str().unwrap(),
        "--out",
        dir.path().join("r2").to_str().unwrap(),
        "--resume",
    ]);
    assert!(!ok && err.contains("nothing to resume"), "{err}");
    let r3 = dir.path().join("r3");
    let (ok, _, err) = alexnet(&[
        "train",
        "--quiet",
        data.to_str().unwrap(),
        "--input-size",
        "71",
        "--out",
        r3.to_str().unwrap(),
    ]);
    assert!(!ok && err.contains("--size"), "{err}");
}

#[test]
fn a_small_variant_learns_and_eval_reports_json() {
    // 3,000 real images, 3 epochs of 93 steps: measured at 70% top-1 on these images.
    let dir = tempfile::tempdir().unwrap();
    let data = shards(dir.path(), 3000);
    let run = dir.path().join("run");
    let (ok, err) = train(&[
        data.to_str().unwrap(),
        "--out",
        run.to_str().unwrap(),
        "--init",
        "he",
        "--lr",
        "0.0002",
        "--batch",
        "32",
        "--epochs",
        "3",
        "--no-augment",
        "--dropout",
        "0",
        "--seed",
        "1",
    ]);
    assert!(ok, "{err}");
    let records = read_metrics(&run.join("metrics.jsonl")).unwrap();
    let losses: Vec<f64> = records
        .iter()
        .filter_map(|r| match r {
            Record::Epoch(e) => Some(e.train_loss),
            _ => None,
        })
        .collect();
    assert_eq!(losses.len(), 3, "{records:?}");
    // Well below chance level (ln 10 = 2.30) by the last epoch, and still falling.
    assert!(
        losses[2] < losses[1] && losses[2] < 0.6 * std::f64::consts::LN_10,
        "training loss did not fall: {losses:?}"
    );
    let (ok, out, err) = alexnet(&[
        "eval",
        "--json",
        "--checkpoint",
        run.join("last.safetensors").to_str().unwrap(),
        data.to_str().unwrap(),
    ]);
    assert!(ok, "{err}");
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(v["count"], 3000);
    let top1 = v["top1_accuracy"].as_f64().unwrap();
    assert!(
        top1 > 0.4,
        "top-1 {top1} on its training images after 3 epochs (chance: 0.1)"
    );
    assert!(v["top5_accuracy"].as_f64().unwrap() >= top1);
}

#[test]
fn epoch_results_reach_a_log_file_and_quiet_silences_them() {
    // stderr is a pipe here, as in CI or `alexnet run ... 2> log`: no bar is drawn, and the
    // epoch's validation line must still be printed.
    let dir = tempfile::tempdir().unwrap();
    let data = shards(dir.path(), 40);
    let run = |quiet: bool, out: &str| {
        let out = dir.path().join(out);
        let mut args = vec![
            data.to_str().unwrap(),
            "--val",
            data.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
            "--batch",
            "16",
            "--epochs",
            "1",
        ];
        if quiet {
            args.push("--quiet");
        }
        let (ok, err) = train_loud(&args);
        assert!(ok, "train: {err}");
        err
    };
    let loud = run(false, "loud");
    assert!(
        loud.lines()
            .any(|l| l.starts_with("epoch 1") && l.contains("top-1 error")),
        "no epoch line in the log:\n{loud}"
    );
    let quiet = run(true, "quiet");
    assert!(
        !quiet.lines().any(|l| l.starts_with("epoch ")) && !quiet.contains("img/s"),
        "--quiet printed progress:\n{quiet}"
    );
}

#[test]
fn the_cpu_engine_is_listed_named_and_scores_as_adapter_0_does() {
    let dir = tempfile::tempdir().unwrap();
    let data = shards(dir.path(), 40);
    let d = data.to_str().unwrap();
    let run = dir.path().join("run");
    let (ok, out, err) = alexnet(&[
        "train",
        "--quiet",
        "--json",
        "--input-size",
        "67",
        "--widths",
        WIDTHS,
        d,
        "--out",
        run.to_str().unwrap(),
        "--devices",
        "cpu",
        "--batch",
        "8",
        "--steps",
        "3",
        "--seed",
        "2",
        "--init",
        "he",
    ]);
    assert!(ok, "train --devices cpu: {err}");
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(v["steps"], 3, "{v}");
    let engine = v["engine"].as_str().unwrap_or_default();
    assert!(engine.starts_with("the CPU engine, "), "{v}");
    let saved = std::fs::read_to_string(run.join("config.toml")).unwrap();
    assert!(saved.contains("devices = \"cpu\""), "{saved}");

    // The same checkpoint scored by the CPU engine and by the WGSL kernels on adapter 0.
    let ck = run.join("last.safetensors");
    let eval = |device: &str| {
        let (ok, out, err) = alexnet(&[
            "eval",
            "--json",
            "--device",
            device,
            "--checkpoint",
            ck.to_str().unwrap(),
            d,
        ]);
        assert!(ok, "eval --device {device}: {err}");
        let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
        (
            v["count"].as_u64().unwrap(),
            v["loss"].as_f64().unwrap(),
            v["top1_accuracy"].as_f64().unwrap(),
        )
    };
    let (cpu, gpu) = (eval("cpu"), eval("0"));
    assert_eq!((cpu.0, gpu.0), (40, 40));
    assert!(
        (cpu.1 - gpu.1).abs() <= 1e-4 * gpu.1.abs(),
        "loss: cpu {} adapter 0 {}",
        cpu.1,
        gpu.1
    );
    // One image may flip between two near-equal logits.
    assert!(
        (cpu.2 - gpu.2).abs() <= 1.0 / 40.0,
        "top-1: {cpu:?} {gpu:?}"
    );

    let (ok, out, err) = alexnet(&["devices"]);
    assert!(ok, "{err}");
    assert!(out.contains("[cpu] the CPU engine (native, "), "{out}");
    let (ok, out, err) = alexnet(&["devices", "--devices", "cpu"]);
    assert!(ok, "{err}");
    assert!(out.contains("the whole network on the CPU engine"), "{out}");
    let (ok, out, err) = alexnet(&["devices", "--json", "--devices", "cpu"]);
    assert!(ok, "{err}");
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert!(v["cpu"]["threads"].as_u64().unwrap() >= 1, "{v}");
    assert_eq!(v["plan"]["adapters"], serde_json::json!(["cpu"]), "{v}");

    // The CPU engine is one device: no column split with it.
    let (ok, err) = train(&[d, "--out", "unused", "--batch", "8", "--devices", "cpu,0"]);
    assert!(!ok && err.contains("one device"), "{err}");
    let (ok, _, err) = alexnet(&["devices", "--devices", "cpu,0"]);
    assert!(!ok && err.contains("one device"), "{err}");
    let (ok, _, err) = alexnet(&["eval", "--device", "gpu7", "--checkpoint", "x", d]);
    assert!(!ok && err.contains("\"gpu7\" is not a device"), "{err}");
}

#[test]
fn init_from_another_variant_is_refused_naming_both() {
    let dir = tempfile::tempdir().unwrap();
    let data = shards(dir.path(), 12);
    // Same tensor shapes as the run's model, but conv1 padded by 2 and no LRN (torchvision's).
    let mut cfg = ModelConfig::small(67, 1, 10);
    cfg.widths = [8, 16, 24, 24, 16, 64, 64];
    (cfg.conv1_pad, cfg.norm) = (2, alexnet::model::Norm::None);
    let w = dir.path().join("tv.safetensors");
    Checkpoint::new(cfg.clone(), Params::init_with(&cfg, 1, Init::He).unwrap())
        .save(&w)
        .unwrap();
    let run = dir.path().join("run");
    let (ok, err) = train(&[
        data.to_str().unwrap(),
        "--out",
        run.to_str().unwrap(),
        "--init-from",
        w.to_str().unwrap(),
        "--steps",
        "1",
        "--batch",
        "6",
    ]);
    assert!(!ok, "trained from another variant's weights");
    assert!(
        err.contains("conv1 padding 2")
            && err.contains("conv1 padding 0")
            && err.contains("variant"),
        "{err}"
    );
    assert!(!run.join("last.safetensors").exists());
}
