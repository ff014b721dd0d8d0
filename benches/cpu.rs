//! The CPU engine beside lavapipe and PyTorch on the same cores, in one run: a whole training
//! step (augmentation, forward, loss, backward, SGD with momentum) in images/s, for the
//! quickstart's model at batch 64 and the paper's at batch 16.
//!
//! `cargo bench --bench cpu` (both models), `cargo bench --bench cpu -- --quick` (the
//! quickstart's model only), `-- --threads N` (the CPU engine and PyTorch on N threads; default
//! one per core: on a loaded box, `--threads 1` compares the two without PyTorch's OpenMP
//! workers spinning at barriers while other processes hold the cores). PyTorch runs `benches/torch_alexnet.py --device cpu` in the Python
//! named by `--python PATH` or `ALEXNET_TORCH_PYTHON` (default: `.venv/bin/python`, else
//! `python3`); without torch its rows say why and the run goes on.
//!
//! Our engines run the training loop's own `Engine::train_step` on synthetic u8 images (so
//! they also pay for the crop, mirror and lighting the loop does on the host); PyTorch's input
//! is already a float tensor. Same model, fp32, dropout 0.5, LRN, groups 2. The load average is
//! printed before and after: on a shared box other work takes cores from every row alike.
use alexnet::device::{Device, Resolved};
use alexnet::gpu::sgd::SgdHyper;
use alexnet::model::{Init, ModelConfig, Params};
use alexnet::shape::uniform01;
use alexnet::train::augment::{AugmentSettings, Pca, StepRandomness};
use alexnet::train::engine::{Engine as TrainEngine, EngineSpec, StepInput};
use std::path::Path;
use std::process::Command;
use std::time::Instant;

type Res<T> = Result<T, Box<dyn std::error::Error>>;

/// One model to time: the name `torch_alexnet.py --model` knows, the config, stored side,
/// batch, and timed steps on the CPU engine and on lavapipe.
struct Case {
    name: &'static str,
    cfg: ModelConfig,
    stored: usize,
    batch: usize,
    cpu_steps: u64,
    lavapipe_steps: u64,
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    // `cargo test --all-targets` runs this without --bench: only check that it starts.
    if !args.iter().any(|a| a == "--bench") {
        println!("cpu bench: run with `cargo bench --bench cpu [-- --quick] [--python PATH]`");
        return;
    }
    let quick = args.iter().any(|a| a == "--quick");
    let flag = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1).cloned())
    };
    let threads = match flag("--threads").map(|t| t.parse::<usize>()) {
        None => alexnet::cpu::CpuDevice::default_threads(),
        Some(Ok(t)) if t > 0 => t,
        Some(_) => {
            eprintln!("--threads takes a positive count");
            std::process::exit(2);
        }
    };
    let python = flag("--python")
        .or_else(|| std::env::var("ALEXNET_TORCH_PYTHON").ok())
        .unwrap_or_else(|| {
            let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python");
            if venv.exists() {
                venv.display().to_string()
            } else {
                "python3".into()
            }
        });

    let quickstart = {
        let mut c = ModelConfig::small(67, 2, 10);
        c.widths = [16, 64, 96, 96, 64, 256, 256];
        c
    };
    let mut cases = vec![Case {
        name: "quickstart",
        cfg: quickstart,
        stored: 76,
        batch: 64,
        cpu_steps: 30,
        lavapipe_steps: 6,
    }];
    if !quick {
        cases.push(Case {
            name: "paper",
            cfg: ModelConfig::paper(1000),
            stored: 256,
            batch: 16,
            cpu_steps: 6,
            lavapipe_steps: 2,
        });
    }
    println!(
        "{} cores, {threads} threads, load average before: {}",
        alexnet::cpu::CpuDevice::default_threads(),
        load_average()
    );
    let lavapipe = match Device::Lavapipe.resolve() {
        Ok(Resolved::Adapter(i)) => Some(i),
        _ => None,
    };
    println!("\n| model | batch | engine | ms/step | images/s | vs PyTorch CPU |");
    println!("|---|---|---|---|---|---|");
    for case in &cases {
        let torch = torch_rate(&python, case, threads);
        let mut rows: Vec<(String, Result<f64, String>)> = Vec::new();
        rows.push((
            format!("CPU engine ({threads} threads)"),
            ours(case, Engine::Cpu(threads), case.cpu_steps).map_err(|e| e.to_string()),
        ));
        rows.push((
            "lavapipe (WGSL)".into(),
            match lavapipe {
                Some(i) => {
                    ours(case, Engine::Adapter(i), case.lavapipe_steps).map_err(|e| e.to_string())
                }
                None => Err("no lavapipe adapter (apt-get install mesa-vulkan-drivers)".into()),
            },
        ));
        rows.push((format!("PyTorch CPU ({threads} threads)"), torch.clone()));
        for (engine, rate) in rows {
            match rate {
                Ok(r) => {
                    let ratio = match &torch {
                        Ok(t) => format!("{:.2}×", r / t),
                        Err(_) => "n/a".into(),
                    };
                    // Whole images/s for the quickstart, tenths for the paper's few.
                    let digits = if r < 100.0 { 1 } else { 0 };
                    println!(
                        "| {} | {} | {engine} | {:.1} | {r:.digits$} | {ratio} |",
                        case.name,
                        case.batch,
                        case.batch as f64 / r * 1e3
                    );
                }
                Err(e) => println!("| {} | {} | {engine} | | | {e} |", case.name, case.batch),
            }
        }
    }
    println!("\nload average after: {}", load_average());
}

/// Which of our engines a row times.
#[derive(Clone, Copy)]
enum Engine {
    /// The CPU engine on this many threads.
    Cpu(usize),
    /// A wgpu adapter by index.
    Adapter(usize),
}

/// Images/s of `steps` training steps after two warm-up steps.
fn ours(case: &Case, which: Engine, steps: u64) -> Res<f64> {
    let (cfg, stored, batch) = (&case.cfg, case.stored, case.batch);
    let params = Params::init_with(cfg, 1, Init::Paper)?;
    let mean = vec![120.0f32; stored * stored * 3];
    let spec = EngineSpec {
        model: cfg,
        batch,
        stored,
        mean: &mean,
        precision: Default::default(),
    };
    let engine = match which {
        Engine::Cpu(threads) => TrainEngine::cpu(&spec, &params, threads)?,
        Engine::Adapter(i) => TrainEngine::new(&[i], &spec, &params)?,
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
    let hist = engine.loss_history(batch * 3);
    let randomness = StepRandomness {
        run_seed: 1,
        batch,
        stored,
        crop: cfg.input_size,
        dropout: 0.5,
        settings: &settings,
        pca: &pca,
    };
    let step = |s: u64| -> Res<()> {
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
        let p = engine.train_step(&x, &hist, 0)?;
        engine.wait(p);
        Ok(())
    };
    for s in 0..2 {
        step(s)?;
    }
    let t = Instant::now();
    for s in 0..steps {
        step(2 + s)?;
    }
    let secs = t.elapsed().as_secs_f64();
    let loss = engine.read_history(&hist)?;
    if !loss.iter().all(|v| v.is_finite()) {
        return Err("the loss is not finite: the bench is broken".into());
    }
    Ok((steps * batch as u64) as f64 / secs)
}

/// PyTorch's images/s for `case` on `threads` CPU threads, from `torch_alexnet.py`'s JSON line.
fn torch_rate(python: &str, case: &Case, threads: usize) -> Result<f64, String> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/torch_alexnet.py");
    let steps = case.cpu_steps.to_string();
    let out = Command::new(python)
        .arg(&script)
        .args([
            "--device",
            "cpu",
            "--model",
            case.name,
            "--precisions",
            "fp32",
        ])
        .args(["--batch", &case.batch.to_string(), "--steps", &steps])
        .args(["--warmup", "2", "--threads", &threads.to_string()])
        .output()
        .map_err(|e| format!("{python}: {e} (give --python PATH to a Python with torch)"))?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        let last = err.lines().last().unwrap_or("").to_string();
        return Err(format!("{python} torch_alexnet.py failed: {last}"));
    }
    let json = text.lines().last().unwrap_or("");
    let v: serde_json::Value = serde_json::from_str(json)
        .map_err(|e| format!("torch_alexnet.py printed {json:?}: {e}"))?;
    v["fp32"]
        .as_f64()
        .ok_or_else(|| format!("torch_alexnet.py printed no fp32 rate: {json}"))
}

/// `/proc/loadavg`'s first three fields, or why not.
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|e| format!("unknown ({e})"))
}
