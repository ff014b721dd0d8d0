//! Data-parallel replicas (docs/distributed.md): N replicas of batch B are one device at
//! batch N·B. In one process on the CPU engine (the library's `CpuReplicas`, and `alexnet
//! train --devices cpu,cpu`), and across processes under `mpirun -np 2` when built with the
//! `mpi` feature. Augmentation and dropout stay on: both are drawn per global row.
mod common;

use common::steps::{assert_same_weights, steps_of, tiny, Lcg, Step, HYPER};

use alexnet::collective::Solo;
use alexnet::engine::input::InputStage;
use alexnet::engine::replicas::{CpuReplicas, Split};
use alexnet::engine::replicas_gpu::{ColumnReplicas, GpuReplicas, ReplicaNet};
use alexnet::engine::CpuStage;
use alexnet::gpu::{Gpu, Recorder};
use alexnet::model::{Checkpoint, ColumnNetwork, Init, ModelConfig, Network, Params};
use common::alexnet;
use std::path::Path;

const WIDTHS: &str = "8,16,24,24,16,64,64";
const STORED: usize = 70;

/// A mean image and three steps of `global` random images with random crops, flips,
/// lighting and dropout.
fn three_steps(global: usize) -> (Vec<f32>, Vec<Step>) {
    steps_of(global, 3, 67, 10)
}

/// Fails unless three steps moved conv1: equal weights would otherwise prove nothing.
fn assert_moved(before: &Params, after: &Params) {
    assert_same_weights(before, after, f32::INFINITY, "shapes");
    let moved = before.tensors[0]
        .data
        .iter()
        .zip(&after.tensors[0].data)
        .any(|(a, b)| a != b);
    assert!(
        moved,
        "three steps left conv1 unchanged: the test would prove nothing"
    );
}

/// Loss rows `[G,3]` within `tol` (relative, at least 1 absolute) of the one-device run's, in
/// the global batch's order.
fn assert_same_rows(got: &[f32], want: &[f32], tol: f32, what: &str) {
    assert_eq!(got.len(), want.len(), "{what}");
    for (i, (a, b)) in got.iter().zip(want).enumerate() {
        assert!(
            (a - b).abs() <= tol * b.abs().max(1.0),
            "{what}: loss row value {i}: {a} vs {b}"
        );
    }
}

#[test]
fn cpu_replicas_of_batch_b_are_one_device_at_the_global_batch_after_three_steps() {
    let cfg = tiny();
    let global = 12;
    let params = Params::init_with(&cfg, 9, Init::He).unwrap();
    let (mean, steps) = three_steps(global);
    let hyper = HYPER;

    let mut one = CpuStage::new(&cfg, global, STORED, &mean, &params, 2).unwrap();
    let mut one_stats = Vec::new();
    for (images, labels, draws, dropout) in &steps {
        one.input.set_images(images).unwrap();
        one.augment(draws).unwrap();
        one.net.upload_labels(labels).unwrap();
        one.net.forward(Some(*dropout)).unwrap();
        one.net.loss().unwrap();
        one.net.backward(Some(*dropout)).unwrap();
        one.net.sgd(hyper).unwrap();
        one_stats = one.net.stats().to_vec();
    }
    let want = one.net.download_params().unwrap();
    assert_moved(&params, &want);

    for local in [2, 3, 4] {
        let split = Split {
            global_batch: global,
            local,
            rank: 0,
            ranks: 1,
        };
        let reps = CpuReplicas::new(&cfg, split, STORED, &mean, &params, 2).unwrap();
        let mut stats = Vec::new();
        for (images, labels, draws, dropout) in &steps {
            stats = reps
                .step(&Solo, images, labels, draws, *dropout, hyper)
                .unwrap()
                .clone();
        }
        let got = reps.download_params().unwrap();
        assert_same_weights(&got, &want, 1e-4, &format!("{local} replicas"));
        let m = reps.download_momentum().unwrap();
        let m_one = one.net.download_momentum().unwrap();
        assert_same_weights(&m, &m_one, 1e-4, &format!("{local} replicas' momentum"));
        assert_same_rows(&stats, &one_stats, 1e-4, &format!("{local} replicas"));
    }
}

#[test]
fn gpu_replicas_on_two_logical_devices_are_one_device_at_the_global_batch_after_three_steps() {
    let cfg = tiny();
    let global = 12;
    let params = Params::init_with(&cfg, 9, Init::He).unwrap();
    let (mean, steps) = three_steps(global);
    let gpu = Gpu::best().expect("no GPU adapter: install mesa-vulkan-drivers (lavapipe)");
    let adapter = gpu.adapter.index;

    let net = Network::new(&gpu, &cfg, global, &params).unwrap();
    let input = InputStage::new(&gpu, global, STORED, cfg.input_size, &mean, cfg.input_scale);
    for (images, labels, draws, dropout) in &steps {
        input.upload_images(&gpu, images).unwrap();
        net.upload_labels(&gpu, labels).unwrap();
        let mut enc = gpu.encoder("one");
        {
            let mut rec = net.recorder(&gpu, &mut enc);
            input.record(&mut rec, draws, net.input()).unwrap();
            net.record_forward(&mut rec, Some(*dropout)).unwrap();
            net.record_loss(&mut rec).unwrap();
            net.record_backward(&mut rec, Some(*dropout)).unwrap();
            net.record_sgd(&mut rec, HYPER).unwrap();
        }
        gpu.submit(enc);
    }
    let want = net.download_params(&gpu).unwrap();
    let want_m = net.download_momentum(&gpu).unwrap();
    let want_rows = net.stats().download(&gpu).unwrap();
    assert_moved(&params, &want);

    let split = Split {
        global_batch: global,
        local: 2,
        rank: 0,
        ranks: 1,
    };
    let reps = GpuReplicas::new(&cfg, split, &[adapter, adapter], STORED, &mean, &params).unwrap();
    let mut rows = Vec::new();
    for (images, labels, draws, dropout) in &steps {
        rows = reps
            .step(&Solo, images, labels, draws, *dropout, HYPER)
            .unwrap()
            .clone();
    }
    assert_same_weights(
        &reps.download_params().unwrap(),
        &want,
        1e-4,
        "2 GPU replicas",
    );
    assert_same_weights(
        &reps.download_momentum().unwrap(),
        &want_m,
        1e-4,
        "2 GPU replicas' momentum",
    );
    // Both replicas took the same step, not only the first.
    let second = &reps.replicas()[1];
    let theirs = second.net.download_params(&second.gpu).unwrap();
    assert_same_weights(&theirs, &want, 1e-4, "the second GPU replica");
    // The GPU's GEMM tiles follow the batch size, so the replicas' sums run in another
    // order; the last step's losses come from weights already 1e-5 apart.
    assert_same_rows(&rows, &want_rows, 5e-4, "2 GPU replicas");
    let (sent, _) = reps.take_sent();
    assert_eq!(sent, 0, "a world of one sends nothing");

    let wrong = GpuReplicas::new(&cfg, split, &[adapter], STORED, &mean, &params);
    assert!(
        matches!(&wrong, Err(e) if e.to_string().contains("1 adapters for 2 replicas")),
        "one adapter for two replicas must be refused"
    );
}

#[test]
fn a_replicas_dropout_masks_are_its_rows_of_the_global_batchs_masks() {
    // Rows 2..6 of a [6, 53] batch on the CPU engine and the reference, bit for bit.
    let (first, rows, f) = (2usize, 4usize, 53usize);
    let mut rng = Lcg(7);
    let whole: Vec<f32> = (0..(first + rows) * f)
        .map(|_| rng.next() as f32 / u32::MAX as f32 - 0.5)
        .collect();
    let part = &whole[first * f..];
    let (seed, p) = (1234u32, 0.4f32);
    let want = alexnet::reference::dropout_forward(p, seed, &whole)[first * f..].to_vec();
    let mut got = part.to_vec();
    alexnet::cpu::dropout::dropout_in_place_at(p, seed, first * f, &mut got);
    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    assert_eq!(bits(&got), bits(&want), "CPU engine");
    let got = alexnet::reference::dropout_forward_at(p, seed, first * f, part);
    assert_eq!(bits(&got), bits(&want), "reference");
    let unshifted = alexnet::reference::dropout_forward(p, seed, part);
    assert_ne!(
        bits(&unshifted),
        bits(&want),
        "the offset must move the mask"
    );
}

#[test]
fn a_batch_that_does_not_split_is_refused_naming_both_counts() {
    let split = Split {
        global_batch: 10,
        local: 3,
        rank: 0,
        ranks: 1,
    };
    let e = split.rows().unwrap_err().to_string();
    assert!(
        e.contains("batch 10") && e.contains("3 equal replicas"),
        "{e}"
    );
    let over_ranks = Split {
        global_batch: 12,
        local: 2,
        rank: 1,
        ranks: 4,
    };
    let e = over_ranks.rows().unwrap_err().to_string();
    assert!(
        e.contains("8 equal replicas") && e.contains("4 processes"),
        "{e}"
    );
    assert_eq!(
        Split {
            ranks: 3,
            ..over_ranks
        }
        .rows()
        .unwrap(),
        2
    );
    assert_eq!(
        Split {
            ranks: 3,
            ..over_ranks
        }
        .replica(1),
        3
    );
}

fn train(args: &[&str]) -> (bool, String) {
    let mut all = vec!["train", "--quiet", "--input-size", "67", "--widths", WIDTHS];
    all.extend_from_slice(args);
    let (ok, _, err) = alexnet(&all);
    (ok, err)
}

/// Three replicas of batch 8 do not split evenly: refused naming both counts, before any run
/// folder is made.
fn assert_uneven_split_refused(data: &Path, odd: &Path, devices: &str) {
    let (ok, err) = train(&[
        data.to_str().unwrap(),
        "--out",
        odd.to_str().unwrap(),
        "--devices",
        devices,
        "--batch",
        "8",
        "--steps",
        "1",
    ]);
    assert!(
        !ok && err.contains("batch 8") && err.contains("3 equal replicas"),
        "{devices}: {err}"
    );
    assert!(
        !odd.exists(),
        "{devices}: a refused run left its folder behind"
    );
}

fn params(path: &Path) -> Params {
    Checkpoint::load(path, None).unwrap().params
}

/// The one-device run every replicated run must equal: 3 steps at batch 8 on the CPU engine,
/// augmentation and dropout on.
fn one_device_run(dir: &Path, data: &Path) -> Params {
    let out = dir.join("one");
    let (ok, err) = train(&[
        data.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--devices",
        "cpu",
        "--batch",
        "8",
        "--steps",
        "3",
        "--seed",
        "4",
    ]);
    assert!(ok, "one device: {err}");
    params(&out.join("last.safetensors"))
}

#[test]
fn train_with_two_cpu_replicas_is_the_one_device_run() {
    let dir = tempfile::tempdir().unwrap();
    let data = common::fashion_shards(dir.path(), 40);
    let want = one_device_run(dir.path(), &data);
    let out = dir.path().join("two");
    let (ok, err) = train(&[
        data.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--devices",
        "cpu,cpu",
        "--columns",
        "1",
        "--batch",
        "8",
        "--steps",
        "3",
        "--seed",
        "4",
    ]);
    assert!(ok, "two replicas: {err}");
    assert_same_weights(
        &params(&out.join("last.safetensors")),
        &want,
        1e-4,
        "--devices cpu,cpu",
    );

    let odd = dir.path().join("odd");
    assert_uneven_split_refused(&data, &odd, "cpu,cpu,cpu");
    let (ok, err) = train(&[
        data.to_str().unwrap(),
        "--out",
        odd.to_str().unwrap(),
        "--devices",
        "cpu,cpu,cpu,cpu",
        "--columns",
        "2",
        "--steps",
        "1",
    ]);
    assert!(!ok && err.contains("--columns 1"), "{err}");
}

/// `mpirun -np 2` (Open MPI, run as root in CI) on the CPU engine: the same weights as one
/// process at the global batch; rank 0 alone writes the run; a resume under another world
/// size continues the same run.
#[cfg(feature = "mpi")]
#[test]
fn mpirun_two_ranks_is_the_one_device_run_and_resumes_on_one() {
    use std::process::Command;
    let dir = tempfile::tempdir().unwrap();
    let data = common::fashion_shards(dir.path(), 40);
    let want = one_device_run(dir.path(), &data);
    let out = dir.path().join("mpi");
    let mpirun = |np: &str, steps: &str, resume: bool| {
        let mut c = Command::new("mpirun");
        c.env("OMPI_ALLOW_RUN_AS_ROOT", "1")
            .env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
            .env("OMPI_MCA_btl", "self,tcp")
            .args(["--oversubscribe", "-np", np, env!("CARGO_BIN_EXE_alexnet")])
            .args(["train", "--quiet", "--input-size", "67", "--widths", WIDTHS])
            .args([data.to_str().unwrap(), "--out", out.to_str().unwrap()])
            .args([
                "--devices",
                "cpu",
                "--batch",
                "8",
                "--seed",
                "4",
                "--steps",
                steps,
            ]);
        if resume {
            c.arg("--resume");
        }
        let o = c.output().unwrap();
        (
            o.status.success(),
            String::from_utf8_lossy(&o.stderr).into_owned(),
        )
    };
    let (ok, err) = mpirun("2", "3", false);
    assert!(ok, "mpirun -np 2: {err}");
    assert_same_weights(
        &params(&out.join("last.safetensors")),
        &want,
        1e-4,
        "mpirun -np 2",
    );
    let ck = Checkpoint::load(&out.join("last.safetensors"), None).unwrap();
    assert_eq!(
        ck.run_state.get("world_size").map(String::as_str),
        Some("2")
    );
    let metrics = std::fs::read_to_string(out.join("metrics.jsonl")).unwrap();
    assert!(
        metrics.contains("\"exchange\""),
        "no exchange record: {metrics}"
    );

    // Two steps on two ranks, then the third on one process: the uninterrupted run.
    std::fs::remove_dir_all(&out).unwrap();
    let (ok, err) = mpirun("2", "2", false);
    assert!(ok, "mpirun -np 2, 2 steps: {err}");
    let (ok, err) = mpirun("1", "3", true);
    assert!(ok, "resume on one rank: {err}");
    assert_same_weights(
        &params(&out.join("last.safetensors")),
        &want,
        1e-4,
        "resumed on 1 rank",
    );
}

/// `mpirun -np 2` with one GPU replica per rank (lavapipe): the one-device lavapipe run.
#[cfg(feature = "mpi")]
#[test]
fn mpirun_two_ranks_of_gpu_replicas_is_the_one_device_run() {
    use std::process::Command;
    let dir = tempfile::tempdir().unwrap();
    let data = common::fashion_shards(dir.path(), 40);
    let args = |out: &Path| -> Vec<String> {
        [
            "train",
            "--quiet",
            "--input-size",
            "67",
            "--widths",
            WIDTHS,
            data.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
            "--devices",
            "lavapipe",
            "--batch",
            "8",
            "--seed",
            "4",
            "--steps",
            "3",
        ]
        .map(String::from)
        .to_vec()
    };
    let one = dir.path().join("one");
    let a = args(&one);
    let (ok, _, err) = alexnet(&a.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(ok, "one device: {err}");
    let out = dir.path().join("mpi");
    let o = Command::new("mpirun")
        .env("OMPI_ALLOW_RUN_AS_ROOT", "1")
        .env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
        .env("OMPI_MCA_btl", "self,tcp")
        .args(["--oversubscribe", "-np", "2", env!("CARGO_BIN_EXE_alexnet")])
        .args(args(&out))
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "mpirun -np 2 --devices lavapipe: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert_same_weights(
        &params(&out.join("last.safetensors")),
        &params(&one.join("last.safetensors")),
        1e-4,
        "mpirun -np 2 on lavapipe",
    );
    let metrics = std::fs::read_to_string(out.join("metrics.jsonl")).unwrap();
    assert!(
        metrics.contains("\"exchange\""),
        "no exchange record: {metrics}"
    );
}

#[test]
fn train_with_two_gpu_replicas_is_the_one_device_run() {
    let dir = tempfile::tempdir().unwrap();
    let data = common::fashion_shards(dir.path(), 40);
    let run = |name: &str, devices: &[&str]| {
        let out = dir.path().join(name);
        let mut args = vec![
            data.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
            "--batch",
            "8",
            "--steps",
            "3",
            "--seed",
            "4",
            "--devices",
        ];
        args.extend_from_slice(devices);
        let (ok, err) = train(&args);
        assert!(ok, "--devices {devices:?}: {err}");
        out
    };
    let want = params(&run("one", &["lavapipe"]).join("last.safetensors"));
    let two = run("two", &["lavapipe,lavapipe", "--columns", "1"]);
    assert_same_weights(
        &params(&two.join("last.safetensors")),
        &want,
        1e-4,
        "--devices lavapipe,lavapipe --columns 1",
    );
    let metrics = std::fs::read_to_string(two.join("metrics.jsonl")).unwrap();
    assert!(
        metrics.contains("\"exchange\""),
        "no exchange record: {metrics}"
    );

    let odd = dir.path().join("odd");
    assert_uneven_split_refused(&data, &odd, "lavapipe,lavapipe,lavapipe");
    let (ok, err) = train(&[
        data.to_str().unwrap(),
        "--out",
        odd.to_str().unwrap(),
        "--devices",
        "cpu,lavapipe",
        "--columns",
        "1",
        "--batch",
        "8",
        "--steps",
        "1",
    ]);
    assert!(!ok && err.contains("mix the CPU engine"), "{err}");
}

/// Three steps of the paper's two columns on `gpus` at the batch of `steps`, as `train`
/// drives them: the weights, the momentum and the last step's loss rows.
fn two_column_run(
    gpus: [Gpu; 2],
    cfg: &ModelConfig,
    params: &Params,
    mean: &[f32],
    steps: &[Step],
) -> (Params, Params, Vec<f32>) {
    let global = steps[0].1.len();
    let inputs = [0, 1].map(|d| {
        InputStage::new(
            &gpus[d],
            global,
            STORED,
            cfg.input_size,
            mean,
            cfg.input_scale,
        )
    });
    let net = ColumnNetwork::new(gpus, cfg, global, params).unwrap();
    for (images, labels, draws, dropout) in steps {
        net.upload_labels(labels).unwrap();
        let mut encs = net.encoders("two");
        for (d, input) in inputs.iter().enumerate() {
            input.upload_images(net.gpu(d), images).unwrap();
            let mut rec = Recorder::new(net.gpu(d), &mut encs[d]);
            input.record(&mut rec, draws, net.input(d)).unwrap();
        }
        net.record_forward(&mut encs, Some(*dropout)).unwrap();
        net.record_loss(&mut encs).unwrap();
        net.record_backward(&mut encs, Some(*dropout)).unwrap();
        net.record_sgd(&mut encs, HYPER).unwrap();
        net.submit(encs);
    }
    (
        net.download_params().unwrap(),
        net.download_momentum().unwrap(),
        net.stats().download(net.gpu(0)).unwrap(),
    )
}

#[test]
fn two_replicas_of_two_columns_on_four_logical_devices_are_two_columns_at_the_global_batch() {
    let cfg = tiny();
    let global = 12;
    let params = Params::init_with(&cfg, 9, Init::He).unwrap();
    let (mean, steps) = three_steps(global);
    let g0 = Gpu::best().expect("no GPU adapter: install mesa-vulkan-drivers (lavapipe)");
    let adapter = g0.adapter.index;
    let g1 = Gpu::new(adapter).unwrap();
    let (want, want_m, want_rows) = two_column_run([g0, g1], &cfg, &params, &mean, &steps);
    assert_moved(&params, &want);

    let split = Split {
        global_batch: global,
        local: 2,
        rank: 0,
        ranks: 1,
    };
    let reps = ColumnReplicas::new(&cfg, split, &[adapter; 4], STORED, &mean, &params).unwrap();
    let mut rows = Vec::new();
    for (images, labels, draws, dropout) in &steps {
        rows = reps
            .step(&Solo, images, labels, draws, *dropout, HYPER)
            .unwrap()
            .clone();
    }
    let what = "2 replicas of 2 columns";
    assert_same_weights(&reps.download_params().unwrap(), &want, 1e-4, what);
    assert_same_weights(&reps.download_momentum().unwrap(), &want_m, 1e-4, what);
    // Both replicas took the same step, not only the first.
    let theirs = reps.replicas()[1].download_params().unwrap();
    assert_same_weights(&theirs, &want, 1e-4, "the second column replica");
    // As with whole-network replicas, the GEMM tiles follow the batch size.
    assert_same_rows(&rows, &want_rows, 5e-4, what);
    assert_eq!(reps.take_sent().0, 0, "a world of one sends nothing");

    let wrong = ColumnReplicas::new(&cfg, split, &[adapter; 3], STORED, &mean, &params);
    assert!(
        matches!(&wrong, Err(e) if e.to_string().contains("3 adapters for 2 replicas of 2")),
        "three adapters for two column replicas must be refused"
    );
}

#[test]
fn train_with_two_replicas_of_two_columns_is_the_two_column_run() {
    let dir = tempfile::tempdir().unwrap();
    let data = common::fashion_shards(dir.path(), 40);
    let run = |name: &str, devices: &[&str]| {
        let out = dir.path().join(name);
        let mut args = vec![
            data.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
            "--batch",
            "8",
            "--steps",
            "3",
            "--seed",
            "4",
            "--devices",
        ];
        args.extend_from_slice(devices);
        let (ok, err) = train(&args);
        assert!(ok, "--devices {devices:?}: {err}");
        out
    };
    let want = params(&run("two", &["lavapipe,lavapipe"]).join("last.safetensors"));
    let four = run(
        "four",
        &["lavapipe,lavapipe,lavapipe,lavapipe", "--columns", "2"],
    );
    assert_same_weights(
        &params(&four.join("last.safetensors")),
        &want,
        1e-4,
        "--devices lavapipe×4 --columns 2",
    );
    let metrics = std::fs::read_to_string(four.join("metrics.jsonl")).unwrap();
    assert!(
        metrics.contains("\"exchange\""),
        "no exchange record: {metrics}"
    );

    let odd = dir.path().join("odd");
    let refused = |devices: &str, batch: &str| {
        let (ok, err) = train(&[
            data.to_str().unwrap(),
            "--out",
            odd.to_str().unwrap(),
            "--devices",
            devices,
            "--columns",
            "2",
            "--batch",
            batch,
            "--steps",
            "1",
        ]);
        assert!(!ok, "--devices {devices} --batch {batch} ran");
        assert!(!odd.exists(), "{devices}: a refused run left its folder");
        err
    };
    let e = refused("lavapipe,lavapipe,lavapipe", "8");
    assert!(e.contains("in pairs") && e.contains("--columns 1"), "{e}");
    // 2 replicas of the columns do not split a batch of 9.
    let e = refused("lavapipe,lavapipe,lavapipe,lavapipe", "9");
    assert!(
        e.contains("batch 9") && e.contains("2 equal replicas"),
        "{e}"
    );
}

/// `mpirun -np 2` with one replica of the two columns per rank, each on two logical lavapipe
/// devices: the one-process run of two such replicas on four.
#[cfg(feature = "mpi")]
#[test]
fn mpirun_two_ranks_of_two_columns_is_the_four_device_run() {
    use std::process::Command;
    let dir = tempfile::tempdir().unwrap();
    let data = common::fashion_shards(dir.path(), 40);
    let args = |out: &Path, devices: &str| -> Vec<String> {
        [
            "train",
            "--quiet",
            "--input-size",
            "67",
            "--widths",
            WIDTHS,
            data.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
            "--devices",
            devices,
            "--columns",
            "2",
            "--batch",
            "8",
            "--seed",
            "4",
            "--steps",
            "3",
        ]
        .map(String::from)
        .to_vec()
    };
    let four = dir.path().join("four");
    let a = args(&four, "lavapipe,lavapipe,lavapipe,lavapipe");
    let (ok, _, err) = alexnet(&a.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(ok, "four devices in one process: {err}");
    let out = dir.path().join("mpi");
    let o = Command::new("mpirun")
        .env("OMPI_ALLOW_RUN_AS_ROOT", "1")
        .env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
        .env("OMPI_MCA_btl", "self,tcp")
        .args(["--oversubscribe", "-np", "2", env!("CARGO_BIN_EXE_alexnet")])
        .args(args(&out, "lavapipe,lavapipe"))
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "mpirun -np 2 --devices lavapipe,lavapipe: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert_same_weights(
        &params(&out.join("last.safetensors")),
        &params(&four.join("last.safetensors")),
        1e-4,
        "mpirun -np 2 of two columns each",
    );
    let ck = Checkpoint::load(&out.join("last.safetensors"), None).unwrap();
    assert_eq!(
        ck.run_state.get("world_size").map(String::as_str),
        Some("2")
    );
}

/// Rank 1 of a world of 2, simulated in one process: the other rank's validation counts are
/// what it adds into the f64 all-reduce.
struct SecondRank {
    other: [f64; 5],
}

impl alexnet::collective::World for SecondRank {
    fn rank(&self) -> usize {
        1
    }
    fn size(&self) -> usize {
        2
    }
    fn all_reduce_sum(&self, _: &mut [f32]) -> Result<(), alexnet::collective::CollectiveError> {
        panic!("validation sums its counts in f64");
    }
    fn all_gather(&self, v: u64) -> Result<Vec<u64>, alexnet::collective::CollectiveError> {
        Ok(vec![v, v])
    }
    fn abort(&self, _: i32) {}
    fn describe(&self) -> String {
        "rank 1 of 2 (simulated)".into()
    }
    fn all_reduce_sum_f64(
        &self,
        buf: &mut [f64],
    ) -> Result<(), alexnet::collective::CollectiveError> {
        buf.iter_mut().zip(self.other).for_each(|(b, o)| *b += o);
        Ok(())
    }
}

/// Validation split across ranks: rank 1 scores only its part (the second half of 15
/// images), and with rank 0's counts summed in it gets exactly the one-process score. A rank
/// that scored the whole set would count 15 + 7 images.
#[test]
fn a_ranks_validation_scores_its_part_and_the_sum_is_the_whole_score() {
    use alexnet::dataset::{part_of, ShardSet};
    use alexnet::train::engine::{Engine, EngineSpec};
    use alexnet::train::View;
    use std::rc::Rc;
    let dir = tempfile::tempdir().unwrap();
    let set = ShardSet::open(&[common::fashion_shards(dir.path(), 15)]).unwrap();
    let cfg = tiny();
    let params = Params::init_with(&cfg, 5, Init::He).unwrap();
    let mean = set.stats().mean_image();
    let spec = EngineSpec {
        model: &cfg,
        batch: 8,
        stored: set.size(),
        mean: &mean,
        precision: Default::default(),
    };
    let one = Engine::cpu(&spec, &params, 2).unwrap();
    let whole = one.evaluate(&spec, &set, View::Centre, 2).unwrap();
    assert!(whole.loss.is_finite(), "{whole:?}");
    let first = one
        .evaluate_rows(&spec, &set, part_of(15, 0, 2), View::Centre, 2)
        .unwrap();
    assert_eq!(first.count, 7);
    let world = Rc::new(SecondRank {
        other: first.to_sums(),
    });
    let rank1 = Engine::replicas(&spec, &params, 1, world, 2).unwrap();
    let got = rank1.validate(&spec, &set, View::Centre, 2).unwrap();
    assert_eq!(got.count, 15, "{got:?}");
    assert_eq!(
        (got.top1_accuracy, got.top5_accuracy, got.non_finite),
        (whole.top1_accuracy, whole.top5_accuracy, 0)
    );
    assert!(
        (got.loss - whole.loss).abs() <= 1e-6 * whole.loss,
        "{got:?} vs {whole:?}"
    );
}

/// The epoch records of a run folder: (val_loss, val_top1_error, val_top5_error).
#[cfg(feature = "mpi")]
fn val_records(out: &Path) -> Vec<(f64, f64, f64)> {
    std::fs::read_to_string(out.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|v| v.get("val_loss").is_some_and(|x| x.is_number()))
        .map(|v| {
            let f = |k: &str| v[k].as_f64().unwrap();
            (f("val_loss"), f("val_top1_error"), f("val_top5_error"))
        })
        .collect()
}

/// `mpirun -np 2` with a validation set of 15 images (not divisible by 2): each rank
/// validates its part and the summed counts give the one-process run's metrics (two CPU
/// replicas in one process: the same replicas, the whole set scored by one).
#[cfg(feature = "mpi")]
#[test]
fn mpirun_two_ranks_validate_a_split_set_and_report_the_one_process_metrics() {
    use std::process::Command;
    let dir = tempfile::tempdir().unwrap();
    let data = common::fashion_shards(&dir.path().join("train"), 40);
    let val = common::fashion_shards(&dir.path().join("val"), 15);
    let args = |out: &Path, devices: &str| -> Vec<String> {
        [
            "train",
            "--quiet",
            "--input-size",
            "67",
            "--widths",
            WIDTHS,
            data.to_str().unwrap(),
            "--val",
            val.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
            "--devices",
            devices,
            "--columns",
            "1",
            "--batch",
            "8",
            "--seed",
            "4",
            "--epochs",
            "2",
        ]
        .map(String::from)
        .to_vec()
    };
    let one = dir.path().join("one");
    let a = args(&one, "cpu,cpu");
    let (ok, _, err) = alexnet(&a.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(ok, "one process: {err}");
    let want = val_records(&one);
    assert_eq!(want.len(), 2, "one validation per epoch");
    assert!(
        want.iter().all(|w| w.0.is_finite() && w.0 > 0.0),
        "{want:?}"
    );
    let out = dir.path().join("mpi");
    let o = Command::new("mpirun")
        .env("OMPI_ALLOW_RUN_AS_ROOT", "1")
        .env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
        .env("OMPI_MCA_btl", "self,tcp")
        .args(["--oversubscribe", "-np", "2", env!("CARGO_BIN_EXE_alexnet")])
        .args(args(&out, "cpu"))
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "mpirun -np 2 --val: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let got = val_records(&out);
    assert_eq!(got.len(), want.len());
    for (g, w) in got.iter().zip(&want) {
        assert_eq!(
            (g.1, g.2),
            (w.1, w.2),
            "top-1/top-5 error: {got:?} vs {want:?}"
        );
        assert!((g.0 - w.0).abs() <= 1e-9 * w.0, "loss: {got:?} vs {want:?}");
    }
}

/// `mpirun -np 2 --devices local:lavapipe,lavapipe`: each rank takes its group of the list
/// (one lavapipe device), says so, and the run is the one-device run; `--devices local`
/// asks for one adapter per rank and this machine has one, so rank 1 is refused by name and
/// nothing is written.
#[cfg(feature = "mpi")]
#[test]
fn mpirun_ranks_pick_their_node_local_devices() {
    use std::process::Command;
    let dir = tempfile::tempdir().unwrap();
    let data = common::fashion_shards(dir.path(), 40);
    let args = |out: &Path, devices: &str| -> Vec<String> {
        [
            "train",
            "--quiet",
            "--input-size",
            "67",
            "--widths",
            WIDTHS,
            data.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
            "--devices",
            devices,
            "--batch",
            "8",
            "--seed",
            "4",
            "--steps",
            "3",
        ]
        .map(String::from)
        .to_vec()
    };
    // Each rank's stderr in a file of its own: through mpirun's terminal the two ranks'
    // lines can interleave mid-line.
    let logs = dir.path().join("logs");
    let mpirun = |out: &Path, devices: &str| {
        Command::new("mpirun")
            .env("OMPI_ALLOW_RUN_AS_ROOT", "1")
            .env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
            .env("OMPI_MCA_btl", "self,tcp")
            .args([
                "--oversubscribe",
                "--output-filename",
                logs.to_str().unwrap(),
            ])
            .args(["-np", "2", env!("CARGO_BIN_EXE_alexnet")])
            .args(args(out, devices))
            .output()
            .unwrap()
    };
    // Every rank's stderr file under `logs` (Open MPI writes `logs/1/rank.R/stderr`).
    let rank_logs = || -> Vec<String> {
        let mut found = Vec::new();
        let mut todo = vec![logs.clone()];
        while let Some(d) = todo.pop() {
            for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
                let p = e.path();
                if p.is_dir() {
                    todo.push(p);
                } else if p.file_name().is_some_and(|n| n == "stderr") {
                    found.push(std::fs::read_to_string(&p).unwrap());
                }
            }
        }
        found
    };
    let one = dir.path().join("one");
    let a = args(&one, "lavapipe");
    let (ok, _, err) = alexnet(&a.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(ok, "one device: {err}");
    let out = dir.path().join("mpi");
    let o = mpirun(&out, "local:lavapipe,lavapipe");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "local:lavapipe,lavapipe: {err}");
    let ranks = rank_logs();
    assert_eq!(ranks.len(), 2, "one stderr file per rank: {ranks:?}");
    for r in 0..2 {
        let line = format!("rank {r} (local rank {r}): --devices local:lavapipe,lavapipe takes");
        assert!(
            ranks.iter().any(|l| l.contains(&line)),
            "no {line:?} in {ranks:?}"
        );
    }
    std::fs::remove_dir_all(&logs).unwrap();
    assert_same_weights(
        &params(&out.join("last.safetensors")),
        &params(&one.join("last.safetensors")),
        1e-4,
        "mpirun -np 2 --devices local:lavapipe,lavapipe",
    );

    let refused = dir.path().join("refused");
    let o = mpirun(&refused, "local");
    assert!(!o.status.success(), "--devices local on one adapter ran");
    let err = rank_logs().concat() + &String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("rank 1 of 2 on its machine") && err.contains("fewer than its 2 ranks"),
        "{err}"
    );
    assert!(!refused.exists(), "a refused job left its run folder");
}

/// Rank 0's view of a world of two ranks whose other rank holds the same gradients, so a
/// bucket's sum is twice it: the exchange's bookkeeping runs for real (which tensors, which
/// order, where the sums land) without MPI.
struct Twin {
    calls: std::cell::RefCell<Vec<usize>>,
}

impl alexnet::collective::World for Twin {
    fn rank(&self) -> usize {
        0
    }
    fn size(&self) -> usize {
        2
    }
    fn all_reduce_sum(&self, buf: &mut [f32]) -> Result<(), alexnet::collective::CollectiveError> {
        buf.iter_mut().for_each(|v| *v += *v);
        self.calls.borrow_mut().push(buf.len());
        Ok(())
    }
    fn all_gather(&self, value: u64) -> Result<Vec<u64>, alexnet::collective::CollectiveError> {
        Ok(vec![value; 2])
    }
    fn abort(&self, _code: i32) {}
    fn describe(&self) -> String {
        "twin".into()
    }
}

/// Buckets filled during backward (fc8 first) give bit for bit the weights of the sum after
/// backward, with one and with two local replicas (the second adds the first's gradients as
/// it hands its own over) and with frozen layers (their tensors are not exchanged).
#[test]
fn the_all_reduce_overlapped_with_backward_is_the_one_after_it() {
    let cfg = tiny();
    let global = 8;
    let params = Params::init_with(&cfg, 5, Init::He).unwrap();
    let (mean, steps) = three_steps(global);
    for (local, freeze) in [(1, None), (2, None), (2, Some("conv2"))] {
        let split = Split {
            global_batch: global,
            local,
            rank: 0,
            ranks: 2,
        };
        let run = |overlap: Option<usize>| {
            let world = Twin {
                calls: Default::default(),
            };
            let mut reps = CpuReplicas::new(&cfg, split, STORED, &mean, &params, 2).unwrap();
            if let Some(block) = freeze {
                reps.freeze_through(block).unwrap();
            }
            reps.set_overlap(overlap).unwrap();
            let mut stats = Vec::new();
            // Rank 0 steps on its own rows of each global batch (what its loader reads).
            let rows = split.process_rows().unwrap();
            for (images, labels, draws, dropout) in &steps {
                let per = images.len() / labels.len();
                stats = reps
                    .step(
                        &world,
                        &images[rows.start * per..rows.end * per],
                        &labels[rows.clone()],
                        &draws[rows.clone()],
                        *dropout,
                        HYPER,
                    )
                    .unwrap()
                    .clone();
            }
            let plan = reps.bucket_plan().cloned();
            let calls = world.calls.into_inner();
            (reps.download_params().unwrap(), stats, calls, plan)
        };
        let what = format!("{local} local replica(s), freeze {freeze:?}");
        let (want, want_stats, blocking_calls, _) = run(None);
        match freeze {
            None => assert_moved(&params, &want),
            Some(_) => {
                let last = want.tensors.len() - 2;
                assert!(
                    want.tensors[0].data == params.tensors[0].data,
                    "conv1 moved"
                );
                assert!(
                    want.tensors[last].data != params.tensors[last].data,
                    "fc8 still"
                );
            }
        }
        // 3,000 values: several buckets at this model (18,266 parameters), so several sums start mid-backward.
        let (got, stats, calls, plan) = run(Some(3_000));
        let plan = plan.expect("overlap on, no bucket plan");
        assert!(plan.buckets().len() >= 3, "{what}: {:?}", plan.sizes());
        // Three steps: the plan's buckets in order, then the loss rows' sum, each step.
        let per_step: Vec<usize> = plan.sizes().iter().copied().chain([global * 3]).collect();
        assert_eq!(calls, per_step.repeat(3), "{what}");
        assert_ne!(
            calls, blocking_calls,
            "{what}: the same buckets as the blocking path"
        );
        // The first bucket holds fc8's tensors, the last parameters in list order.
        let last = cfg_tensors(&cfg) - 1;
        assert!(
            plan.buckets()[0].contains(&last),
            "{what}: {:?}",
            plan.buckets()
        );
        for (g, w) in got.tensors.iter().zip(&want.tensors) {
            assert!(g.data == w.data, "{what}: {} differs", g.spec.name);
        }
        assert_eq!(stats, want_stats, "{what}: loss rows");
        if freeze.is_some() {
            let frozen = plan.buckets().iter().flatten().min().copied();
            assert!(
                frozen > Some(3),
                "{what}: frozen conv1/conv2 tensors exchanged"
            );
        }
    }
}

fn cfg_tensors(cfg: &ModelConfig) -> usize {
    alexnet::model::param_specs(cfg).unwrap().len()
}

/// `mpirun -np 2 alexnet train` of the tiny model on `data` into `out`, with `extra` flags.
#[cfg(feature = "mpi")]
fn mpirun_train(data: &Path, out: &Path, extra: &[&str]) -> std::process::Command {
    let mut c = std::process::Command::new("mpirun");
    c.env("OMPI_ALLOW_RUN_AS_ROOT", "1")
        .env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
        .env("OMPI_MCA_btl", "self,tcp")
        .args(["--oversubscribe", "-np", "2", env!("CARGO_BIN_EXE_alexnet")])
        .args(["train", "--quiet", "--input-size", "67", "--widths", WIDTHS])
        .args([data.to_str().unwrap(), "--out", out.to_str().unwrap()])
        .args(["--batch", "8", "--seed", "4"])
        .args(extra);
    c
}

/// Over real MPI (immediate all-reduces started during backward, in buckets small enough
/// that there are several): the weights of the blocking after-backward exchange within 1e-6,
/// with one and two replicas per rank, and the one-device run within the usual 1e-4.
#[cfg(feature = "mpi")]
#[test]
fn mpirun_overlapped_allreduce_is_the_after_backward_one() {
    let dir = tempfile::tempdir().unwrap();
    let data = common::fashion_shards(dir.path(), 40);
    let want = one_device_run(dir.path(), &data);
    for devices in ["cpu", "cpu,cpu"] {
        let run = |name: &str, flags: &[&str]| {
            let out = dir.path().join(name);
            let mut args = vec!["--devices", devices, "--steps", "3"];
            args.extend_from_slice(flags);
            let mut c = mpirun_train(&data, &out, &args);
            let (ok, _, err) = common::run_with_timeout(&mut c, 300);
            assert!(ok, "mpirun -np 2 --devices {devices} {flags:?}: {err}");
            out
        };
        let tag = devices.replace(',', "-");
        let after = run(&format!("after-{tag}"), &["--no-overlap-allreduce"]);
        let during = run(
            &format!("during-{tag}"),
            &["--set", "allreduce_bucket=3000"],
        );
        let got = params(&during.join("last.safetensors"));
        let blocking = params(&after.join("last.safetensors"));
        assert_same_weights(&got, &blocking, 1e-6, &format!("overlapped, {devices}"));
        assert_same_weights(&got, &want, 1e-4, &format!("overlapped, {devices}"));
        let config = std::fs::read_to_string(after.join("config.toml")).unwrap();
        assert!(config.contains("overlap_allreduce = false"), "{config}");
        // Both exchanges carry every trainable value once a step.
        let bytes = |run: &Path| -> Vec<String> {
            std::fs::read_to_string(run.join("metrics.jsonl"))
                .unwrap()
                .lines()
                .filter_map(|l| l.split("\"bytes\":").nth(1))
                .map(|b| b.split([',', '}']).next().unwrap().to_string())
                .collect()
        };
        assert!(!bytes(&during).is_empty(), "no exchange bytes recorded");
        assert_eq!(bytes(&during), bytes(&after), "{devices}");
    }
}

/// One rank killed for real (SIGKILL by its own PID, which each rank's shell writes before
/// it becomes `alexnet`) once the run has logged a step: mpirun stops the job within a
/// bounded time with a non-zero status naming the rank, and the run folder holds no
/// temporary file and only checkpoints that load (at least the one written before the kill).
#[cfg(feature = "mpi")]
#[test]
fn mpirun_stops_the_job_when_a_rank_is_killed_and_leaves_no_partial_checkpoint() {
    use std::time::{Duration, Instant};
    let dir = tempfile::tempdir().unwrap();
    let data = common::fashion_shards(dir.path(), 40);
    let out = dir.path().join("run");
    let pids = dir.path().join("pids");
    std::fs::create_dir(&pids).unwrap();
    let mut c = std::process::Command::new("mpirun");
    c.env("OMPI_ALLOW_RUN_AS_ROOT", "1")
        .env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
        .env("OMPI_MCA_btl", "self,tcp")
        .args(["--oversubscribe", "-np", "2", "sh", "-c"])
        .arg(format!(
            "echo $$ > {}/rank-$OMPI_COMM_WORLD_RANK && exec \"$0\" \"$@\"",
            pids.display()
        ))
        .arg(env!("CARGO_BIN_EXE_alexnet"))
        .args(["train", "--quiet", "--input-size", "67", "--widths", WIDTHS])
        .args([data.to_str().unwrap(), "--out", out.to_str().unwrap()])
        .args(["--batch", "8", "--seed", "4", "--devices", "cpu"])
        // Long enough never to finish; a checkpoint and a step record every step, so the
        // kill lands among checkpoint writes.
        .args(["--steps", "100000", "--set", "checkpoint_every=1"])
        .args(["--set", "log_every=1", "--set", "val_every=1000"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped());
    let mut child = c.spawn().unwrap();
    let t0 = Instant::now();
    let metrics = out.join("metrics.jsonl");
    // A step logged and a checkpoint on disk: from here on, checkpoints are rewritten every
    // step, so the kill lands in a run that is writing them.
    let logged = || std::fs::read_to_string(&metrics).is_ok_and(|m| m.contains("\"step\""));
    while !(logged() && out.join("last.safetensors").exists()) {
        if let Some(s) = child.try_wait().unwrap() {
            panic!("mpirun ended ({s}) before a step was logged");
        }
        if t0.elapsed() > Duration::from_secs(240) {
            let _ = child.kill();
            panic!("no step logged in 240 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let pid = std::fs::read_to_string(pids.join("rank-1")).unwrap();
    let pid = pid.trim();
    let killed = std::process::Command::new("kill")
        .args(["-KILL", pid])
        .status()
        .unwrap();
    assert!(killed.success(), "kill -KILL {pid} (rank 1)");
    let t1 = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if t1.elapsed() > Duration::from_secs(60) {
            let _ = child.kill();
            let _ = child.wait();
            panic!("mpirun still running 60 s after rank 1 was killed: the job hangs");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
    assert!(
        !status.success(),
        "mpirun exited 0 after a rank died: {err}"
    );
    assert!(
        err.contains("rank 1"),
        "mpirun's error does not name rank 1: {err}"
    );
    let mut checkpoints = 0;
    for e in std::fs::read_dir(&out).unwrap() {
        let name = e.unwrap().file_name().to_string_lossy().into_owned();
        assert!(
            !name.ends_with(alexnet::atomic::TEMP_SUFFIX),
            "a temporary was left behind: {name}"
        );
        if name.ends_with(".safetensors") {
            Checkpoint::load(&out.join(&name), None)
                .unwrap_or_else(|e| panic!("{name} does not load: {e}"));
            checkpoints += 1;
        }
    }
    assert!(
        checkpoints > 0,
        "the checkpoint written before the kill is gone"
    );
}

/// One rank failing with an error of its own (its shard folder does not exist; the other
/// rank's does): it prints `error: rank 1 of 2: …` naming the folder and ends the whole job,
/// which exits non-zero within a bounded time, leaving no temporary file behind.
#[cfg(feature = "mpi")]
#[test]
fn a_rank_that_fails_with_an_error_names_itself_and_aborts_the_job() {
    let dir = tempfile::tempdir().unwrap();
    let data = common::fashion_shards(dir.path(), 40);
    let missing = dir.path().join("not-there");
    let out = dir.path().join("run");
    let rank = |shards: &Path| -> Vec<String> {
        let mut a: Vec<String> = ["-np", "1", env!("CARGO_BIN_EXE_alexnet")]
            .into_iter()
            .chain(["train", "--quiet", "--input-size", "67", "--widths", WIDTHS])
            .map(String::from)
            .collect();
        a.extend([shards.to_str().unwrap(), "--out", out.to_str().unwrap()].map(String::from));
        a.extend(["--batch", "8", "--devices", "cpu", "--steps", "50"].map(String::from));
        a
    };
    let mut c = std::process::Command::new("mpirun");
    c.env("OMPI_ALLOW_RUN_AS_ROOT", "1")
        .env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
        .env("OMPI_MCA_btl", "self,tcp")
        .arg("--oversubscribe")
        .args(rank(&data))
        .arg(":")
        .args(rank(&missing));
    let (ok, _, err) = common::run_with_timeout(&mut c, 120);
    assert!(!ok, "mpirun exited 0 with a failing rank: {err}");
    assert!(err.contains("error: rank 1 of 2:"), "{err}");
    assert!(
        err.contains("not-there"),
        "the error does not name the folder: {err}"
    );
    for e in std::fs::read_dir(&out).into_iter().flatten() {
        let name = e.unwrap().file_name().to_string_lossy().into_owned();
        assert!(
            !name.ends_with(alexnet::atomic::TEMP_SUFFIX),
            "a temporary was left behind: {name}"
        );
    }
}
