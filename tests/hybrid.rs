//! The hybrid split of "One weird trick" (docs/distributed.md): K workers, conv layers data
//! parallel on B rows each, fc layers model parallel over the K·B rows, are one device at
//! batch K·B; and what its exchanges carry per step is the formula the docs scale.
//! Augmentation and dropout stay on: both are drawn per global row.
mod common;

use common::steps::{assert_same_weights, steps_of, stored, tiny, Lcg, HYPER};

use alexnet::collective::{CollectiveError, Solo, World};
use alexnet::engine::hybrid::{exchange, CpuHybrid, HybridNet};
use alexnet::engine::replicas::{CpuReplicas, Split};
use alexnet::engine::CpuStage;
use alexnet::model::reference::{network_loss_and_grads, TrainMode};
use alexnet::model::{Checkpoint, Init, ModelConfig, Params};
use alexnet::reference::backend::RefBackend;
use std::path::Path;
use std::rc::Rc;

const STORED: usize = 70;

/// A world of one process: every worker of the split is here.
fn solo() -> Rc<dyn World> {
    Rc::new(Solo)
}

/// Fails unless the steps moved conv1 and fc6: equal weights would otherwise prove nothing.
fn assert_moved(before: &Params, after: &Params) {
    for name in ["conv1.weight", "fc6.weight"] {
        let (a, b) = (before.get(name).unwrap(), after.get(name).unwrap());
        assert!(
            a.data.iter().zip(&b.data).any(|(x, y)| x != y),
            "three steps left {name} unchanged: the test would prove nothing"
        );
    }
}

/// Checked against a broken exchange: with conv5's all-gather zeroing the last worker's rows
/// (2026-12-07, by hand, then restored) this failed at 2 workers with conv1.weight off by
/// 1.55 (relative 0.81), and the CLI test below with conv1.bias off by relative 1.4e-3.
#[test]
fn hybrid_of_k_workers_is_one_device_at_the_global_batch_after_three_steps() {
    let cfg = tiny();
    let global = 12;
    let params = Params::init_with(&cfg, 9, Init::He).unwrap();
    let (mean, steps) = steps_of(global, 3, 67, 10);

    let mut one = CpuStage::new(&cfg, global, STORED, &mean, &params, 2).unwrap();
    let mut want_rows = Vec::new();
    for (images, labels, draws, dropout) in &steps {
        one.input.set_images(images).unwrap();
        one.augment(draws).unwrap();
        one.net.upload_labels(labels).unwrap();
        one.net.forward(Some(*dropout)).unwrap();
        one.net.loss().unwrap();
        one.net.backward(Some(*dropout)).unwrap();
        one.net.sgd(HYPER).unwrap();
        want_rows.extend_from_slice(one.net.stats());
    }
    let want = one.net.download_params().unwrap();
    let want_m = one.net.download_momentum().unwrap();
    assert_moved(&params, &want);

    for workers in [2, 3] {
        let mut h =
            CpuHybrid::new(&cfg, workers, solo(), global, STORED, &mean, &params, 2).unwrap();
        let mut rows = Vec::new();
        for (images, labels, draws, dropout) in &steps {
            rows.extend(h.step(images, labels, draws, *dropout, HYPER).unwrap());
        }
        let what = format!("{workers} workers");
        assert_same_weights(&h.net.download_params().unwrap(), &want, 1e-4, &what);
        assert_same_weights(&h.net.download_momentum().unwrap(), &want_m, 1e-4, &what);
        assert_eq!(rows.len(), want_rows.len());
        // The loss rows of steps 2 and 3 come from weights that already differ by rounding
        // (the conv layers' GEMMs are blocked by the batch each engine sees), and the loss
        // amplifies it: 1.1e-4 was seen at 2 workers, as the GPU replicas' test sees.
        for (i, (a, b)) in rows.iter().zip(&want_rows).enumerate() {
            assert!(
                (a - b).abs() <= 5e-4 * b.abs().max(1.0),
                "{what}: loss row value {i}: {a} vs {b}"
            );
        }
    }
}

#[test]
fn hybrid_on_reference_workers_gives_the_reference_gradients() {
    // The wrapper is generic: two and three reference engines against the reference walk at
    // the global batch, dropout on, on preprocessed random images.
    let cfg = tiny();
    let global = 6;
    let params = Params::init_with(&cfg, 3, Init::He).unwrap();
    let mut rng = Lcg(7);
    let images: Vec<f32> = (0..global * 3 * 67 * 67)
        .map(|_| (rng.next() % 2001) as f32 / 1000.0 - 1.0)
        .collect();
    let labels: Vec<i32> = (0..global).map(|_| (rng.next() % 10) as i32).collect();
    let t = TrainMode {
        dropout: 0.5,
        run_seed: 11,
        step: 2,
    };
    let (_, _, want) =
        network_loss_and_grads(&cfg, &params, global, &images, &labels, Some(t)).unwrap();
    for workers in [2, 3] {
        let engines = (0..workers).map(|_| RefBackend::new()).collect();
        let mut net = HybridNet::new(engines, &cfg, global, &params).unwrap();
        net.upload_input(&images).unwrap();
        net.upload_labels(&labels).unwrap();
        net.forward(t.mode()).unwrap();
        net.loss().unwrap();
        net.backward(t.mode()).unwrap();
        let got = net.download_grads().unwrap();
        assert_same_weights(&got, &want, 1e-4, &format!("{workers} reference workers"));
    }
}

/// Ranks as threads of one test: each rank hands its values to a shared slot, and after a
/// barrier every rank reads every slot in rank order (a test double of MPI, not a collective
/// the program uses).
struct Threads {
    rank: usize,
    size: usize,
    barrier: std::sync::Arc<std::sync::Barrier>,
    slots: std::sync::Arc<std::sync::Mutex<Vec<Vec<f32>>>>,
}

impl Threads {
    /// Every rank's `mine`, by rank.
    fn exchange(&self, mine: &[f32]) -> Vec<Vec<f32>> {
        self.slots.lock().unwrap()[self.rank] = mine.to_vec();
        self.barrier.wait();
        let all = self.slots.lock().unwrap().clone();
        // No rank overwrites its slot before every rank has read it.
        self.barrier.wait();
        all
    }
}

impl World for Threads {
    fn rank(&self) -> usize {
        self.rank
    }
    fn size(&self) -> usize {
        self.size
    }
    fn all_reduce_sum(&self, buf: &mut [f32]) -> Result<(), CollectiveError> {
        let all = self.exchange(buf);
        buf.iter_mut().for_each(|v| *v = 0.0);
        for part in all {
            buf.iter_mut().zip(&part).for_each(|(a, x)| *a += x);
        }
        Ok(())
    }
    fn all_gather(&self, value: u64) -> Result<Vec<u64>, CollectiveError> {
        let all = self.exchange(&[value as f32]);
        Ok(all.iter().map(|v| v[0] as u64).collect())
    }
    fn all_gather_varcount_f32(
        &self,
        mine: &[f32],
        counts: &[usize],
    ) -> Result<Vec<f32>, CollectiveError> {
        let all = self.exchange(mine);
        assert_eq!(
            all.iter().map(Vec::len).collect::<Vec<_>>(),
            counts,
            "rank {}: the counts every rank passes are the lengths the ranks hand",
            self.rank
        );
        Ok(all.concat())
    }
    fn abort(&self, _code: i32) {}
    fn describe(&self) -> String {
        format!("thread rank {} of {}", self.rank, self.size)
    }
}

/// The split across ranks (here threads, each holding `local` reference workers) is the
/// reference walk at the global batch: every rank's gradients, assembled through the world's
/// all-gather and all-reduce, are the one-device gradients.
#[test]
fn hybrid_across_ranks_gives_the_reference_gradients_on_every_rank() {
    let cfg = tiny();
    let global = 7;
    let params = Params::init_with(&cfg, 3, Init::He).unwrap();
    let mut rng = Lcg(5);
    let images: Vec<f32> = (0..global * 3 * 67 * 67)
        .map(|_| (rng.next() % 2001) as f32 / 1000.0 - 1.0)
        .collect();
    let labels: Vec<i32> = (0..global).map(|_| (rng.next() % 10) as i32).collect();
    let t = TrainMode {
        dropout: 0.5,
        run_seed: 11,
        step: 2,
    };
    let (_, _, want) =
        network_loss_and_grads(&cfg, &params, global, &images, &labels, Some(t)).unwrap();
    // 7 images and fc widths of 64 and 10 over 2 or 3 ranks give unequal shares.
    for (ranks, local) in [(2, 1), (3, 1), (2, 2)] {
        let barrier = std::sync::Arc::new(std::sync::Barrier::new(ranks));
        let slots = std::sync::Arc::new(std::sync::Mutex::new(vec![Vec::new(); ranks]));
        std::thread::scope(|scope| {
            let handles: Vec<_> = (0..ranks)
                .map(|rank| {
                    let (barrier, slots) = (barrier.clone(), slots.clone());
                    let (cfg, params, images, labels) = (&cfg, &params, &images, &labels);
                    scope.spawn(move || {
                        let world: Rc<dyn World> = Rc::new(Threads {
                            rank,
                            size: ranks,
                            barrier,
                            slots,
                        });
                        let engines = (0..local).map(|_| RefBackend::new()).collect();
                        let mut net = HybridNet::over(engines, world, cfg, global, params).unwrap();
                        assert_eq!(net.workers(), ranks * local);
                        net.upload_input(images).unwrap();
                        net.upload_labels(labels).unwrap();
                        net.forward(t.mode()).unwrap();
                        net.loss().unwrap();
                        net.backward(t.mode()).unwrap();
                        net.download_grads().unwrap()
                    })
                })
                .collect();
            for (rank, h) in handles.into_iter().enumerate() {
                let got = h.join().unwrap();
                let what = format!("rank {rank} of {ranks}, {local} worker(s) each");
                assert_same_weights(&got, &want, 1e-4, &what);
            }
        });
    }
}

#[test]
fn hybrid_refuses_what_it_cannot_split_with_the_reason() {
    let cfg = tiny();
    let params = Params::init_with(&cfg, 1, Init::He).unwrap();
    let mean = vec![0.0; STORED * STORED * 3];
    let e = CpuHybrid::new(&cfg, 4, solo(), 3, STORED, &mean, &params, 1).unwrap_err();
    assert!(e.to_string().contains("batch 3"), "{e}");
    let e = CpuHybrid::new(&cfg, 11, solo(), 22, STORED, &mean, &params, 1).unwrap_err();
    assert!(e.to_string().contains("at most 10 workers"), "{e}");
    let mut bn = cfg.clone();
    bn.norm = alexnet::model::Norm::Batch;
    let p = Params::init_with(&bn, 1, Init::He).unwrap();
    let e = CpuHybrid::new(&bn, 2, solo(), 4, STORED, &mean, &p, 1).unwrap_err();
    assert!(e.to_string().contains("batch normalisation"), "{e}");
}

/// A world of two ranks where the other rank always sends what this one does: only for
/// counting what data parallelism's all-reduce carries through the run's own counter.
struct Mirror;
impl World for Mirror {
    fn rank(&self) -> usize {
        0
    }
    fn size(&self) -> usize {
        2
    }
    fn all_reduce_sum(&self, buf: &mut [f32]) -> Result<(), CollectiveError> {
        buf.iter_mut().for_each(|v| *v *= 2.0);
        Ok(())
    }
    fn all_gather(&self, value: u64) -> Result<Vec<u64>, CollectiveError> {
        Ok(vec![value, value])
    }
    fn abort(&self, _code: i32) {}
    fn describe(&self) -> String {
        "a mirror of one rank".into()
    }
}

/// One step of `cfg` on `workers` hybrid workers at `global` images: what worker 0 handed to
/// the collectives, checked against the formula; and what one data-parallel rank hands to
/// its all-reduce, through the counter the run records.
fn measure(cfg: &ModelConfig, workers: usize, global: usize) -> (exchange::Traffic, usize) {
    let params = Params::init_with(cfg, 5, Init::Paper).unwrap();
    let (mean, steps) = steps_of(global, 1, cfg.input_size, cfg.classes as u32);
    let (images, labels, draws, dropout) = &steps[0];
    let side = stored(cfg.input_size);
    let mut h = CpuHybrid::new(cfg, workers, solo(), global, side, &mean, &params, 0).unwrap();
    h.step(images, labels, draws, *dropout, HYPER).unwrap();
    let got = h.net.take_traffic();
    let want = exchange::predicted(cfg, workers, global).unwrap();
    assert_eq!(got, want, "{workers} workers at batch {global}");
    drop(h);
    let split = Split {
        global_batch: global,
        local: 1,
        rank: 0,
        ranks: 2,
    };
    let reps = CpuReplicas::new(cfg, split, side, &mean, &params, 0).unwrap();
    // A rank's step takes its own rows of the global batch (what its loader reads).
    let rows = split.process_rows().unwrap();
    let per = images.len() / labels.len();
    reps.step(
        &Mirror,
        &images[rows.start * per..rows.end * per],
        &labels[rows.clone()],
        &draws[rows],
        *dropout,
        HYPER,
    )
    .unwrap();
    let (dp, _) = reps.take_sent();
    (got, dp)
}

#[test]
fn hybrid_exchanges_carry_the_formula_and_less_than_data_parallel_at_the_quickstart_model() {
    let mut cfg = ModelConfig::small(67, 1, 10);
    cfg.widths = [16, 64, 96, 96, 64, 256, 256];
    for (workers, global) in [(2, 8), (3, 12), (2, 64)] {
        let (h, dp) = measure(&cfg, workers, global);
        let p: usize = Params::zeros(&cfg)
            .unwrap()
            .tensors
            .iter()
            .map(|t| t.data.len())
            .sum();
        assert_eq!(dp, p, "data parallel sends every parameter");
        println!(
            "quickstart model, {workers} workers × {} rows: hybrid {} bytes ({} exchanges: gathered {}, scattered {}, reduced {} values); data parallel {} bytes",
            global / workers,
            4 * h.values(),
            h.exchanges,
            h.gathered,
            h.scattered,
            h.reduced,
            4 * dp
        );
    }
}

/// The paper's model: one real step at 2 × 4 and 2 × 2 rows on the CPU engine (slow: run
/// with `--ignored`; its numbers are in docs/distributed.md).
#[test]
#[ignore]
fn hybrid_exchanges_carry_the_formula_at_the_papers_model() {
    let cfg = ModelConfig::paper(1000);
    for global in [8, 4] {
        let t0 = std::time::Instant::now();
        let (h, dp) = measure(&cfg, 2, global);
        println!(
            "paper model, 2 workers × {} rows: hybrid {} bytes ({} exchanges: gathered {}, scattered {}, reduced {} values); data parallel {} bytes; {:.1} s",
            global / 2,
            4 * h.values(),
            h.exchanges,
            h.gathered,
            h.scattered,
            h.reduced,
            4 * dp,
            t0.elapsed().as_secs_f64()
        );
    }
}

/// Three steps of `batch` on `devices` (augmentation and dropout on), with `extra` flags.
fn run(data: &Path, out: &Path, devices: &str, batch: &str, extra: &[&str]) -> (bool, String) {
    let mut args = vec!["train", "--quiet", "--input-size", "67", "--widths"];
    args.extend_from_slice(&["8,16,24,24,16,64,64", data.to_str().unwrap()]);
    args.extend_from_slice(&["--out", out.to_str().unwrap(), "--devices", devices]);
    args.extend_from_slice(&["--batch", batch, "--steps", "3", "--seed", "4"]);
    args.extend_from_slice(extra);
    let (ok, _, err) = common::alexnet(&args);
    (ok, err)
}

#[test]
fn train_with_parallel_hybrid_is_the_one_device_run_and_records_its_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let data = common::fashion_shards(dir.path(), 40);
    let one = dir.path().join("one");
    let (ok, err) = run(&data, &one, "cpu", "8", &[]);
    assert!(ok, "one device: {err}");
    let want = Checkpoint::load(&one.join("last.safetensors"), None).unwrap();
    let out = dir.path().join("hybrid");
    let (ok, err) = run(&data, &out, "cpu,cpu", "8", &["--parallel", "hybrid"]);
    assert!(ok, "--parallel hybrid: {err}");
    let got = Checkpoint::load(&out.join("last.safetensors"), None).unwrap();
    assert_same_weights(
        &got.params,
        &want.params,
        1e-4,
        "--devices cpu,cpu --parallel hybrid",
    );
    assert!(
        std::fs::read_to_string(out.join("config.toml"))
            .unwrap()
            .contains("parallel = \"hybrid\""),
        "config.toml must record the split, so --resume runs it again"
    );
    // Every step's exchanges, through the counter the run records.
    let per_step = exchange::predicted(&want.config, 2, 8).unwrap().values() * 4;
    let bytes: u64 = std::fs::read_to_string(out.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| v.pointer("/exchange/bytes").and_then(|b| b.as_u64()))
        .sum();
    assert_eq!(bytes, 3 * per_step, "exchange.bytes over 3 steps");

    for (devices, batch, extra, says) in [
        ("cpu", "8", "hybrid", "two or more workers"),
        ("cpu,cpu,cpu", "2", "hybrid", "batch 2"),
        ("0,0", "8", "hybrid", "--devices cpu,cpu"),
        ("cpu,cpu", "8", "model", "hybrid"),
    ] {
        let bad = dir.path().join("bad");
        let (ok, err) = run(&data, &bad, devices, batch, &["--parallel", extra]);
        assert!(!ok && err.contains(says), "{devices} {extra}: {err}");
        assert!(
            !bad.exists(),
            "{devices} {extra}: a refused run left its folder"
        );
    }
}

/// `mpirun -np 2 alexnet train … --devices cpu --parallel hybrid --batch BATCH --steps STEPS`
/// (Open MPI, run as root in CI): whether it succeeded, and its stderr.
#[cfg(feature = "mpi")]
fn mpirun_hybrid(data: &Path, out: &Path, batch: &str, steps: &str) -> (bool, String) {
    let o = std::process::Command::new("mpirun")
        .env("OMPI_ALLOW_RUN_AS_ROOT", "1")
        .env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
        .env("OMPI_MCA_btl", "self,tcp")
        .args(["--oversubscribe", "-np", "2", env!("CARGO_BIN_EXE_alexnet")])
        .args(["train", "--quiet", "--input-size", "67", "--widths"])
        .args(["8,16,24,24,16,64,64", data.to_str().unwrap()])
        .args(["--out", out.to_str().unwrap(), "--devices", "cpu"])
        .args(["--batch", batch, "--steps", steps, "--seed", "4"])
        .args(["--parallel", "hybrid"])
        .output()
        .unwrap();
    (
        o.status.success(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

/// `mpirun -np 2 … --devices cpu --parallel hybrid`: one worker per rank, the exchanges
/// through MPI, is the one-process split over two workers, at a batch that splits evenly and
/// at one that does not (shares of 4 and 3 rows); rank 0's record of the bytes per step is
/// the formula's; two steps on two ranks and the third resumed in one process are the
/// uninterrupted run.
#[cfg(feature = "mpi")]
#[test]
fn mpirun_two_ranks_of_one_hybrid_worker_is_the_one_process_split() {
    let dir = tempfile::tempdir().unwrap();
    let data = common::fashion_shards(dir.path(), 40);
    for batch in ["8", "7"] {
        let one = dir.path().join(format!("one{batch}"));
        let (ok, err) = run(&data, &one, "cpu,cpu", batch, &["--parallel", "hybrid"]);
        assert!(ok, "one process, batch {batch}: {err}");
        let want = Checkpoint::load(&one.join("last.safetensors"), None).unwrap();
        let out = dir.path().join(format!("mpi{batch}"));
        let (ok, err) = mpirun_hybrid(&data, &out, batch, "3");
        assert!(ok, "mpirun -np 2, batch {batch}: {err}");
        let got = Checkpoint::load(&out.join("last.safetensors"), None).unwrap();
        let what = format!("mpirun -np 2 --parallel hybrid --batch {batch}");
        assert_same_weights(&got.params, &want.params, 1e-4, &what);
        assert_eq!(
            got.run_state.get("world_size").map(String::as_str),
            Some("2"),
            "the checkpoint records the ranks"
        );
        let n: usize = batch.parse().unwrap();
        let per_step = exchange::predicted(&want.config, 2, n).unwrap().values() * 4;
        let bytes: Vec<u64> = std::fs::read_to_string(out.join("metrics.jsonl"))
            .unwrap()
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter_map(|v| v.pointer("/exchange/bytes").and_then(|b| b.as_u64()))
            .collect();
        assert_eq!(
            bytes.iter().sum::<u64>(),
            3 * per_step,
            "{what}: exchange.bytes {bytes:?}"
        );

        let cut = dir.path().join(format!("cut{batch}"));
        let (ok, err) = mpirun_hybrid(&data, &cut, batch, "2");
        assert!(ok, "mpirun -np 2, 2 steps, batch {batch}: {err}");
        // Else the resume would have nothing to do and its equality would prove nothing.
        let two = Checkpoint::load(&cut.join("last.safetensors"), None).unwrap();
        assert_moved(&two.params, &want.params);
        let (ok, err) = run(
            &data,
            &cut,
            "cpu,cpu",
            batch,
            &["--parallel", "hybrid", "--resume"],
        );
        assert!(ok, "resumed in one process, batch {batch}: {err}");
        let resumed = Checkpoint::load(&cut.join("last.safetensors"), None).unwrap();
        assert_same_weights(
            &resumed.params,
            &want.params,
            1e-4,
            &format!("{what}, resumed"),
        );
    }
    // Two ranks' workers at a batch of one: refused on every rank before anything is written.
    let bad = dir.path().join("bad");
    let (ok, err) = mpirun_hybrid(&data, &bad, "1", "1");
    assert!(
        !ok && err.contains("batch 1 gives some worker no image"),
        "{err}"
    );
    assert!(!bad.exists(), "a refused job left its run folder");
}
