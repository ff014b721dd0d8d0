//! A whole training step (augment, forward, loss, backward, SGD) in images/s, on synthetic
//! data, per adapter, on one device and split in the paper's two columns over two logical
//! devices of that adapter: the number to put beside PyTorch's on the same card, and the cost
//! of the split with the time its exchanges take.
//!
//! `cargo bench --bench step` (the paper's model, batch 128: GPUs only) or
//! `cargo bench --bench step -- --quick` (the quickstart's small model, which lavapipe can run).
//!
//! First table: one step with every dispatch timed by GPU timestamps, by layer and kernel (ms,
//! GFLOP, TFLOP/s, share of the step): where the time goes. Second: images/s per adapter.
//! `--tile BMxBNxBK/TMxTN` runs every matrix product of the one-device rows on that tile
//! (the two-column rows keep the defaults), to try a configuration on a card without a
//! rebuild. `--precision mixed` runs the kernel table and the one-device row with the
//! cooperative-matrix (f16 tensor-core) candidates in the tuner's choice, where the adapter
//! has them (elsewhere it says so and runs fp32).
//! Timing: two warm-up steps, then `steps` steps through the training loop's own
//! [`Engine::step`], one wait at the end, so the number includes submit overhead but no host
//! readback of the loss. The PCIe column is the exchanged bytes over 25 GB/s (PCIe 4.0 x16
//! in practice): what two physical GPUs would spend copying, if nothing overlapped. On a CPU
//! adapter a "1, tiled conv" row runs the GPUs' convolution kernels in place of its own direct
//! ones, as their baseline.
//!
//! A second table runs the real training loop (`alexnet::train::train`) on shards ingested
//! from synthetic ImageNet-like JPEGs: loader threads reading Parquet, staging, upload, GPU
//! augmentation, the step. Its images/s beside the first table's says whether the loader keeps
//! up; "GPU waited" is the time the step loop spent waiting for a batch. The first logged window
//! (pipeline compilation, the loader's first reads) is left out.
use alexnet::gpu::conv::ConvKernels;
use alexnet::gpu::coop::Precision;
use alexnet::gpu::sgd::SgdHyper;
use alexnet::gpu::tiles::TileConfig;
use alexnet::gpu::{list_adapters, AdapterSummary, KernelTimer, Tensor};
use alexnet::ingest::{ingest, IngestConfig};
use alexnet::model::{Init, ModelConfig, Params};
use alexnet::shape::uniform01;
use alexnet::train::augment::{AugmentSettings, Pca, StepRandomness};
use alexnet::train::engine::{Engine, EngineSpec, StepInput};
use alexnet::train::metrics::{read_metrics, Record};
use alexnet::train::{train, Devices, TrainConfig, TrainJob};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

#[path = "common/photos.rs"]
mod photos;

const PCIE_BYTES_PER_S: f64 = 25e9;
/// `Engine::new` opens GPU engines only; the CPU engine has its own bench (`benches/cpu.rs`).
const NOT_GPU: &str = "the step bench times GPU engines";

struct Row {
    secs: f64,
    exchanges: u64,
    bytes: u64,
    wait_s: f64,
    host_s: f64,
    /// CPU seconds uploading and recording the timed steps (the two-column split: also
    /// submitting and exchanging, which it does as it goes).
    record_s: f64,
    /// CPU seconds in `queue.submit` (one device).
    submit_s: f64,
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    // `cargo test --all-targets` runs this without --bench: only check that it starts.
    if !args.iter().any(|a| a == "--bench") {
        println!("step bench: run with `cargo bench --bench step [-- --quick]`");
        return;
    }
    let quick = args.iter().any(|a| a == "--quick");
    // `--precision mixed`: the cooperative-matrix (f16) candidates join the tuner's where the
    // adapter has them; only the kernel table and the one-device row run (the fp32 run of
    // the same script has the rest).
    let precision = match args
        .iter()
        .position(|a| a == "--precision")
        .map(|i| args.get(i + 1).map(|v| v.parse::<Precision>()))
    {
        None => Precision::Fp32,
        Some(Some(Ok(p))) => p,
        Some(Some(Err(e))) => {
            eprintln!("{e}");
            std::process::exit(2);
        }
        Some(None) => {
            eprintln!("--precision needs a value: fp32 or mixed");
            std::process::exit(2);
        }
    };
    let mixed = precision == Precision::Mixed;
    // `--tile BMxBNxBK/TMxTN`: every matrix product on that tile (to try one on a new card).
    let tile = match args
        .iter()
        .position(|a| a == "--tile")
        .map(|i| args.get(i + 1))
    {
        None => None,
        Some(v) => match v.map(|v| TileConfig::parse(v)) {
            Some(Ok(t)) => Some(t),
            Some(Err(e)) => {
                eprintln!("{e}");
                std::process::exit(2);
            }
            None => {
                eprintln!("--tile needs a value such as 128x128x8/8x8");
                std::process::exit(2);
            }
        },
    };
    let (cfg, stored, batch, steps) = if quick {
        let mut c = ModelConfig::small(67, 1, 10);
        c.widths = [16, 32, 96, 96, 64, 256, 256];
        (c, 76, 128, 5u64)
    } else {
        (ModelConfig::paper(1000), 256, 128, 20u64)
    };
    println!(
        "model input {} widths {:?} classes {}, batch {batch}, {steps} timed steps",
        cfg.input_size, cfg.widths, cfg.classes
    );
    let params = Params::init_with(&cfg, 1, Init::Paper).expect("valid config");
    let mean = vec![120.0f32; stored * stored * 3];
    let spec = EngineSpec {
        model: &cfg,
        batch,
        stored,
        mean: &mean,
        precision,
    };
    let images: Vec<u8> = (0..batch * stored * stored * 3)
        .map(|i| (uniform01(3, i as u32) * 256.0) as u8)
        .collect();
    let labels: Vec<i32> = (0..batch).map(|i| (i % cfg.classes) as i32).collect();
    let pca = Pca {
        eigenvalues: [5000.0, 400.0, 60.0],
        eigenvectors: [[0.58, 0.58, 0.57], [-0.7, 0.0, 0.71], [0.41, -0.82, 0.41]],
    };
    let settings = AugmentSettings {
        random_crop: true,
        flip: true,
        lighting_std: 0.1,
    };
    let randomness = StepRandomness {
        run_seed: 1,
        batch,
        stored,
        crop: cfg.input_size,
        dropout: 0.5,
        settings: &settings,
        pca: &pca,
    };
    let run = |engine: &Engine| -> Result<Row, Box<dyn std::error::Error>> {
        let gpu = engine.gpu_device().ok_or(NOT_GPU)?;
        let hist = Tensor::zeros(gpu, batch * 3, "bench.loss");
        let step = |s: u64| -> Result<(f64, f64), Box<dyn std::error::Error>> {
            let draws = randomness.draws(s);
            let x = StepInput {
                images: &images,
                labels: &labels,
                draws: &draws,
                dropout: randomness.dropout(s),
                hyper: SgdHyper {
                    lr: 0.01,
                    momentum: 0.9,
                    weight_decay: 5e-4,
                },
            };
            // One device: recording and submitting timed apart; the split submits as it goes.
            let t = Instant::now();
            match engine.record_step(&x, &hist, 0, None)? {
                Some(cb) => {
                    let recorded = t.elapsed().as_secs_f64();
                    let t = Instant::now();
                    gpu.queue.submit(Some(cb));
                    Ok((recorded, t.elapsed().as_secs_f64()))
                }
                None => {
                    engine.step(&x, &hist, 0)?;
                    Ok((t.elapsed().as_secs_f64(), 0.0))
                }
            }
        };
        for s in 0..2 {
            step(s)?;
        }
        gpu.wait()?;
        engine.take_exchange_stats();
        let t = Instant::now();
        let (mut record_s, mut submit_s) = (0.0, 0.0);
        for s in 0..steps {
            let (r, u) = step(2 + s)?;
            record_s += r;
            submit_s += u;
        }
        gpu.wait()?;
        let secs = t.elapsed().as_secs_f64();
        let ex = engine.take_exchange_stats();
        Ok(Row {
            secs,
            exchanges: ex.exchanges,
            bytes: ex.bytes,
            wait_s: ex.wait_s,
            host_s: ex.host_s,
            record_s,
            submit_s,
        })
    };
    let draws: Vec<_> = (0..2u64).map(|s| randomness.draws(s)).collect();
    let inputs: Vec<StepInput> = draws
        .iter()
        .enumerate()
        .map(|(s, d)| StepInput {
            images: &images,
            labels: &labels,
            draws: d,
            dropout: randomness.dropout(s as u64),
            hyper: SgdHyper {
                lr: 0.01,
                momentum: 0.9,
                weight_decay: 5e-4,
            },
        })
        .collect();
    let adapters: Vec<_> = list_adapters()
        .into_iter()
        // The paper-size run is for GPUs: a CPU adapter would take many minutes a step.
        .filter(|a| quick || a.device_type != wgpu::DeviceType::Cpu)
        .collect();
    if adapters.is_empty() {
        println!("no adapter to bench (CPU adapters run only with --quick)");
        return;
    }
    for a in &adapters {
        if let Err(e) = kernel_table(a.index, &spec, &params, &inputs, tile) {
            println!("\n[{}] {}: kernel table failed: {e}", a.index, a.name);
        }
    }

    println!(
        "| adapter | devices | ms/step | images/s | vs 1 device | upload+record ms/step (CPU) | submit ms/step (CPU) | exchanges/step | MB/step | exchange wait ms/step | host copy ms/step | PCIe ms/step (est.) |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|");
    let mut compute_rate = BTreeMap::new();
    for a in &adapters {
        // On a CPU adapter, also one device with the GPUs' tiled convolutions: the baseline of
        // the direct kernels it runs by default.
        let mut setups = vec![(vec![a.index], None, "1")];
        if a.device_type == wgpu::DeviceType::Cpu {
            setups.push((vec![a.index], Some(ConvKernels::Tiled), "1, tiled conv"));
        }
        if !mixed {
            setups.push((vec![a.index, a.index], None, "2 logical"));
        }
        for (adapters, kernels, label) in setups {
            let result = Engine::new(&adapters, &spec, &params)
                .map(|mut eng| {
                    if let Engine::One { gpu, .. } = &mut eng {
                        gpu.tile_override = tile;
                        if let Some(k) = kernels {
                            gpu.conv_kernels = k;
                        }
                    }
                    eng
                })
                .map_err(|e| e.to_string())
                .and_then(|eng| run(&eng).map_err(|e| e.to_string()));
            match result {
                Ok(r) => {
                    let per = |v: f64| v * 1e3 / steps as f64;
                    let rate = (steps * batch as u64) as f64 / r.secs;
                    // The one-device rate: the baseline of this adapter's rows and of the loop table.
                    let base = *compute_rate.entry(a.index).or_insert(rate);
                    let mb = r.bytes as f64 / steps as f64 / 1e6;
                    println!(
                        "| [{}] {} ({:?}) | {label} | {:.1} | {:.0} | {:.2}× | {:.2} | {:.2} | {} | {:.1} | {:.1} | {:.2} | {:.2} |",
                        a.index,
                        a.name,
                        a.backend,
                        per(r.secs),
                        rate,
                        rate / base,
                        per(r.record_s),
                        per(r.submit_s),
                        r.exchanges / steps,
                        mb,
                        per(r.wait_s),
                        per(r.host_s),
                        mb * 1e6 / PCIE_BYTES_PER_S * 1e3,
                    );
                }
                Err(e) => println!("| [{}] {} | {label} | error: {e} |", a.index, a.name),
            }
        }
    }
    // The line scripts/gpu_bench.sh reads for the ratio against PyTorch.
    if let Some((i, r)) = compute_rate.iter().next() {
        println!(
            "\nRESULT images_per_s={r:.1} (adapter [{i}], one device, compute only, {precision})"
        );
    }
    if mixed {
        return;
    }
    loop_table(&cfg, stored, batch, quick, &adapters, &compute_rate);
}

/// One device's step with every dispatch timed on the GPU, grouped by layer and kernel: the
/// table that says where a step's time goes.
fn kernel_table(
    adapter: usize,
    spec: &EngineSpec<'_>,
    params: &Params,
    inputs: &[StepInput<'_>],
    tile: Option<TileConfig>,
) -> Result<(), Box<dyn std::error::Error>> {
    let mut engine = Engine::new(&[adapter], spec, params)?;
    if let Engine::One { gpu, .. } = &mut engine {
        gpu.tile_override = tile;
    }
    let gpu = engine.gpu_device().ok_or(NOT_GPU)?;
    let Some(timer) = KernelTimer::new(gpu, 1024) else {
        println!(
            "\n[{adapter}] {}: no timestamp queries, no kernel table",
            gpu.adapter.name
        );
        return Ok(());
    };
    let hist = Tensor::zeros(gpu, spec.batch * 3, "bench.loss");
    // Warm-up (pipelines, scratch sizes), then one timed step.
    engine.step(&inputs[0], &hist, 0)?;
    gpu.wait()?;
    let t = Instant::now();
    engine.step_timed(&inputs[1], &hist, 0, Some(&timer))?;
    let times = timer.read(gpu)?;
    let wall = t.elapsed().as_secs_f64() * 1e3;
    let mut rows: Vec<(String, usize, f64, f64)> = Vec::new();
    for k in &times {
        match rows.iter_mut().find(|r| r.0 == k.label) {
            Some(r) => {
                r.1 += 1;
                r.2 += k.ms;
                r.3 += k.flops;
            }
            None => rows.push((k.label.clone(), 1, k.ms, k.flops)),
        }
    }
    let total: f64 = rows.iter().map(|r| r.2).sum();
    let flops: f64 = rows.iter().map(|r| r.3).sum();
    println!(
        "\n[{adapter}] {}: one step, every dispatch timed (GPU timestamps; each dispatch in its own pass)\n",
        gpu.adapter.name
    );
    println!("| layer kernel | calls | ms | GFLOP | TFLOP/s | share |");
    println!("|---|---|---|---|---|---|");
    let mut sorted = rows.clone();
    sorted.sort_by(|a, b| b.2.total_cmp(&a.2));
    for (label, calls, ms, f) in &sorted {
        let tf = if *f > 0.0 {
            format!("{:.2}", f / (ms * 1e-3) / 1e12)
        } else {
            "-".into()
        };
        println!(
            "| {label} | {calls} | {ms:.3} | {:.1} | {tf} | {:.1}% |",
            f / 1e9,
            100.0 * ms / total.max(1e-12)
        );
    }
    println!(
        "| **step** | {} | {total:.2} | {:.1} | {:.2} | 100% |",
        times.len(),
        flops / 1e9,
        flops / (total * 1e-3) / 1e12
    );
    println!(
        "\nsum of dispatch times {total:.2} ms = {:.0} images/s at batch {}; wall time of the timed step {wall:.1} ms",
        spec.batch as f64 / (total * 1e-3),
        spec.batch
    );
    Ok(())
}

/// The training loop with its loader, per adapter, beside the compute-only rate.
fn loop_table(
    cfg: &ModelConfig,
    stored: usize,
    batch: usize,
    quick: bool,
    adapters: &[AdapterSummary],
    compute_rate: &BTreeMap<usize, f64>,
) {
    // Enough rows that the loader reads several shards and reshuffles each epoch.
    let (images, window, windows) = if quick { (400, 2, 3) } else { (2560, 10, 8) };
    // A scratch folder of the machine it runs on (the GPU box has no build tree).
    let root = std::env::var_os("ALEXNET_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir)
        .join("alexnet-bench-step");
    let raw = root.join("raw");
    photos::ensure(&raw, images);
    let shards = root.join(format!("shards-{stored}"));
    let mut ing = IngestConfig::new(&raw, &shards);
    ing.size = stored;
    ing.overwrite = true;
    ing.jobs = std::thread::available_parallelism().map_or(1, |c| c.get());
    let t = Instant::now();
    if let Err(e) = ingest(&ing) {
        println!("ingest of the synthetic JPEGs failed: {e}");
        return;
    }
    println!(
        "\ntraining loop with the loader: {images} synthetic JPEGs ingested at {stored}×{stored} in {:.1} s, \
         {} windows of {window} steps timed after one warm-up window",
        t.elapsed().as_secs_f64(),
        windows
    );
    println!("| adapter | compute only images/s | with loader images/s | ratio | GPU waited for data ms/step |");
    println!("|---|---|---|---|---|");
    for a in adapters {
        let out = root.join(format!("run-{}", a.index));
        let _ = std::fs::remove_dir_all(&out);
        let config = TrainConfig {
            model: cfg.clone(),
            init: Init::Paper,
            batch,
            epochs: 1000,
            max_steps: Some(((windows + 1) * window) as u64),
            log_every: window as u64,
            devices: Devices::new(vec![a.index]).expect("one adapter"),
            ..TrainConfig::default()
        };
        let job = TrainJob {
            data: vec![shards.clone()],
            val: vec![],
            out: out.clone(),
            config,
            resume: false,
            init_from: None,
            progress: false,
            classes_from_data: false,
        };
        let compute = compute_rate.get(&a.index).copied().unwrap_or(f64::NAN);
        match train(&job)
            .map_err(|e| e.to_string())
            .and_then(|_| timed_windows(&out, batch))
        {
            Ok((rate, wait_per_step)) => println!(
                "| [{}] {} | {compute:.0} | {rate:.0} | {:.2}× | {:.2} |",
                a.index,
                a.name,
                rate / compute,
                wait_per_step * 1e3
            ),
            Err(e) => println!(
                "| [{}] {} | {compute:.0} | error: {e} | | |",
                a.index, a.name
            ),
        }
    }
}

/// Images/s and data wait per step over the logged windows after the first.
fn timed_windows(run: &Path, batch: usize) -> Result<(f64, f64), String> {
    let records = read_metrics(&run.join("metrics.jsonl")).map_err(|e| e.to_string())?;
    let steps: Vec<_> = records
        .iter()
        .filter_map(|r| match r {
            Record::Step(s) => Some(s),
            _ => None,
        })
        .collect();
    let timed = steps
        .get(1..)
        .filter(|t| !t.is_empty())
        .ok_or("too few logged windows")?;
    let mut prev = steps[0].step;
    let (mut n_steps, mut secs, mut wait) = (0.0, 0.0, 0.0);
    for s in timed {
        // Each window's images/s and data wait cover that window's steps alone.
        let n = (s.step - prev) as f64;
        prev = s.step;
        n_steps += n;
        secs += n * batch as f64 / s.images_per_s;
        wait += s.data_wait_s;
    }
    Ok((n_steps * batch as f64 / secs, wait / n_steps))
}
