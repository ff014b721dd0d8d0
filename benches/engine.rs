//! Kernel throughput per adapter: GEMM (4096³ and the three fc6 products at batch 128) and each
//! paper convolution forward/backward at batch 128, as time per call and GFLOP/s.
//!
//! `cargo bench --bench engine` (full sizes, for GPUs) or `cargo bench --bench engine -- --quick`
//! (small sizes that finish on lavapipe). `--adapter I` benches one adapter only; `--quickstart`
//! times the quickstart model's convolutions (batch 64) in place of the paper's; `--only S`
//! keeps the rows whose name holds S; `--sweep` times every tile configuration (and split-K
//! factor for fc6) instead of the default table, to choose the launchers' defaults on a new
//! card. Convolution rows name their kernels (`Tiled` for GPUs, `Direct` for CPU adapters); a
//! CPU adapter, or `--both`, times both, its own first.
//!
//! Timing: one warm-up call (pipeline compilation), then `iters` calls recorded into one
//! encoder. With GPU timestamps (NVIDIA through Vulkan, lavapipe) the time is the sum of the
//! calls' dispatches as the GPU measured them, divided by `iters`; without, wall clock from
//! submit to completion.
use std::time::Instant;

use alexnet::gpu::conv::ConvKernels;
use alexnet::gpu::gemm::{GemmArgs, GemmForm, TilePolicy};
use alexnet::gpu::tiles::TileConfig;
use alexnet::gpu::{conv, gemm, list_adapters, Gpu, KernelTimer, Recorder, Tensor};
use alexnet::model::{Geometry, ModelConfig};
use alexnet::shape::{Activation, ConvShape, LinearShape};

/// Records one call of the kernel under test.
type Record = Box<dyn Fn(&mut Recorder<'_>) -> alexnet::gpu::Result<()>>;

struct Case {
    name: String,
    flops: f64,
    record: Record,
}

fn time(gpu: &Gpu, case: &Case, iters: usize) -> alexnet::gpu::Result<f64> {
    let mut enc = gpu.encoder("bench.warmup");
    (case.record)(&mut Recorder::new(gpu, &mut enc))?;
    gpu.submit(enc);
    gpu.wait()?;
    let timer = KernelTimer::new(gpu, 64 * iters as u32);
    let start = Instant::now();
    let mut enc = gpu.encoder("bench.iter");
    {
        let mut rec = Recorder::new(gpu, &mut enc).with_timer(timer.as_ref());
        for _ in 0..iters {
            (case.record)(&mut rec)?;
        }
    }
    if let Some(t) = &timer {
        t.resolve(&mut enc);
    }
    gpu.submit(enc);
    gpu.wait()?;
    let wall = start.elapsed().as_secs_f64();
    Ok(match &timer {
        Some(t) => t.read(gpu)?.iter().map(|k| k.ms).sum::<f64>() / 1e3 / iters as f64,
        None => wall / iters as f64,
    })
}

fn filled(gpu: &Gpu, len: usize, label: &str) -> Tensor {
    // Small non-zero values: timing must not depend on denormals or zeros.
    let data: Vec<f32> = (0..len).map(|i| ((i % 97) as f32 - 48.0) * 1e-3).collect();
    Tensor::from_slice(gpu, &data, label)
}

fn gemm_cases(gpu: &Gpu, label: &str, m: usize, n: usize, k: usize) -> Vec<Case> {
    use std::rc::Rc;
    let s = LinearShape {
        n: m,
        fin: k,
        fout: n,
    };
    let x = Rc::new(filled(gpu, m * k, "bench.x"));
    let w = Rc::new(filled(gpu, n * k, "bench.w"));
    let b = Rc::new(filled(gpu, n, "bench.b"));
    let y = Rc::new(filled(gpu, m * n, "bench.y"));
    let flops = 2.0 * (m * n * k) as f64;
    let mut out = Vec::new();
    {
        let (x, w, b, y) = (x.clone(), w.clone(), b.clone(), y.clone());
        out.push(Case {
            name: format!("{label} y=relu(x·Wᵀ+b) {m}×{n}×{k}"),
            flops,
            record: Box::new(move |e| {
                gemm::linear_forward(e, &s, &x, &w, Some(&b), &y, Some(Activation::Relu))
            }),
        });
    }
    {
        let (x, w, y) = (x.clone(), w.clone(), y.clone());
        out.push(Case {
            name: format!("{label} dX=dY·W"),
            flops,
            record: Box::new(move |e| gemm::linear_backward_input(e, &s, &y, &w, &x, false)),
        });
    }
    out.push(Case {
        name: format!("{label} dW=dYᵀ·X"),
        flops,
        record: Box::new(move |e| gemm::linear_backward_weight(e, &s, &y, &x, &w, false)),
    });
    out
}

/// Every tile configuration worth trying on a GPU, for `--sweep`.
fn sweep_tiles() -> Vec<TileConfig> {
    let t = |bm, bn, bk, tm, tn| TileConfig {
        bm,
        bn,
        bk,
        tm,
        tn,
        twist: Default::default(),
        core: Default::default(),
    };
    vec![
        t(128, 128, 8, 8, 8),
        t(128, 128, 16, 8, 8),
        t(128, 64, 8, 8, 4),
        t(64, 128, 8, 4, 8),
        t(128, 64, 16, 8, 8),
        t(64, 64, 8, 8, 8),
        t(64, 64, 16, 4, 4),
        t(64, 64, 8, 4, 4),
    ]
}

fn sweep_cases(gpu: &Gpu, big: usize, fc: (usize, usize, usize)) -> Vec<Case> {
    use std::rc::Rc;
    let mut out = Vec::new();
    // One set of operands as large as the largest case; each case views a prefix.
    let len = (big * big).max(fc.1 * fc.2).max(fc.0 * fc.2);
    let (a, b, c) = (
        Rc::new(filled(gpu, len, "bench.a")),
        Rc::new(filled(gpu, len, "bench.b")),
        Rc::new(filled(gpu, len, "bench.c")),
    );
    let case = |form: GemmForm, dims: (usize, usize, usize), tile: TileConfig, splits: usize| {
        let (m, n, k) = dims;
        let (a, b, c) = (a.clone(), b.clone(), c.clone());
        Case {
            name: format!(
                "gemm {form:?} {m}×{n}×{k} tile {} splits {splits}",
                tile.tag()
            ),
            flops: 2.0 * (m * n * k) as f64,
            record: Box::new(move |e| {
                let (sa, sb) = match form {
                    GemmForm::ABt => (m * k, n * k),
                    GemmForm::AB => (m * k, k * n),
                    GemmForm::AtB => (k * m, k * n),
                };
                // Views of the right length over the shared buffers.
                let a = Tensor {
                    buffer: a.buffer.clone(),
                    len: sa,
                    label: "bench.a".into(),
                };
                let b = Tensor {
                    buffer: b.buffer.clone(),
                    len: sb,
                    label: "bench.b".into(),
                };
                let c = Tensor {
                    buffer: c.buffer.clone(),
                    len: m * n,
                    label: "bench.c".into(),
                };
                let args = GemmArgs {
                    form,
                    m,
                    n,
                    k,
                    a: &a,
                    b: &b,
                    c: &c,
                    bias: None,
                    accumulate: false,
                    alpha: 1.0,
                    act: None,
                };
                gemm::record_with(e, &args, tile, Some(splits))
            }),
        }
    };
    for tile in sweep_tiles() {
        for form in [GemmForm::ABt, GemmForm::AB, GemmForm::AtB] {
            out.push(case(form, (big, big, big), tile, 1));
        }
    }
    // fc6 at batch 128: forward (M = batch), backward to the input, and to the weight.
    let (b, o, i) = fc;
    for tile in sweep_tiles() {
        for splits in [1, 4, 8, 16] {
            out.push(case(GemmForm::ABt, (b, o, i), tile, splits));
            out.push(case(GemmForm::AB, (b, i, o), tile, splits));
        }
        out.push(case(GemmForm::AtB, (o, i, b), tile, 1));
    }
    out
}

fn conv_cases(gpu: &Gpu, name: &str, s: ConvShape) -> Vec<Case> {
    use std::rc::Rc;
    let x = Rc::new(filled(gpu, s.input_len(), "bench.x"));
    let w = Rc::new(filled(gpu, s.weight_len(), "bench.w"));
    let b = Rc::new(filled(gpu, s.c_out, "bench.b"));
    let y = Rc::new(filled(gpu, s.output_len(), "bench.y"));
    let flops = 2.0 * s.macs() as f64;
    let tag = format!(
        "{name} n{} {}→{} {}×{} k{} s{} g{}",
        s.n, s.c_in, s.c_out, s.h, s.w, s.k, s.stride, s.groups
    );
    let mut out = Vec::new();
    {
        let (x, w, b, y) = (x.clone(), w.clone(), b.clone(), y.clone());
        out.push(Case {
            name: format!("{tag} fwd+relu"),
            flops,
            record: Box::new(move |e| conv::forward(e, &s, &x, &w, &b, &y, Some(Activation::Relu))),
        });
    }
    if name != "conv1" {
        // conv1's input is the image: the network never computes its gradient.
        let (x, w, y) = (x.clone(), w.clone(), y.clone());
        out.push(Case {
            name: format!("{tag} bwd dX"),
            flops,
            record: Box::new(move |e| conv::backward_input(e, &s, &y, &w, &x, false)),
        });
    }
    out.push(Case {
        name: format!("{tag} bwd dW"),
        flops,
        record: Box::new(move |e| conv::backward_weight(e, &s, &y, &x, &w, false)),
    });
    out
}

/// The five convolutions of a model at batch `n`, from the model's own geometry.
fn model_convs(cfg: &ModelConfig, n: usize) -> Vec<(String, ConvShape)> {
    Geometry::new(cfg, n)
        .expect("a valid model")
        .convs
        .iter()
        .map(|c| (c.name.to_string(), c.conv))
        .collect()
}

/// The convolutions of `pipelines/quickstart.toml`'s model (67×67 input, widths 16, 64, 96,
/// 96, 64) at its batch of 64: what a training step on lavapipe spends its time in.
fn quickstart_convs() -> Vec<(String, ConvShape)> {
    let mut cfg = ModelConfig::small(67, 1, 10);
    cfg.widths = [16, 64, 96, 96, 64, 256, 256];
    model_convs(&cfg, 64)
}

fn row(gpu: &Gpu, case: &Case, name: &str, iters: usize) {
    match time(gpu, case, iters) {
        Ok(t) => println!(
            "| {:<62} | {:>9.3} | {:>9.0} | {:>6.2} |",
            name,
            t * 1e3,
            case.flops / t / 1e9,
            case.flops / t / 1e12
        ),
        Err(e) => println!("| {name:<62} | skipped: {e} | | |"),
    }
    // Show each row as soon as it is timed, also when piped.
    let _ = std::io::Write::flush(&mut std::io::stdout());
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    // `cargo bench` passes --bench; `cargo test --all-targets` runs this binary without it, and
    // then it only checks that it starts: timing belongs to `cargo bench`, not the test suite.
    if !args.iter().any(|a| a == "--bench") {
        println!("engine bench: run with `cargo bench --bench engine [-- --quick]`");
        return;
    }
    let has = |flag: &str| args.iter().any(|a| a == flag);
    let quick = has("--quick");
    let sweep = has("--sweep");
    let only: Option<usize> = args
        .iter()
        .position(|a| a == "--adapter")
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok());
    let adapters = list_adapters();
    if adapters.is_empty() {
        eprintln!("no GPU adapter found: install a GPU driver, or `apt-get install mesa-vulkan-drivers` for the software one");
        std::process::exit(2);
    }
    for a in adapters.iter().filter(|a| match only {
        Some(i) => i == a.index,
        // Full sizes are for GPUs: a CPU adapter would take many minutes a row.
        None => quick || a.device_type != wgpu::DeviceType::Cpu,
    }) {
        let mut gpu = match Gpu::new(a.index) {
            Ok(g) => g,
            Err(e) => {
                eprintln!("adapter {}: {e}", a.index);
                continue;
            }
        };
        let timing = if KernelTimer::new(&gpu, 1).is_some() {
            "GPU timestamps"
        } else {
            "wall clock"
        };
        println!(
            "\n[{}] {} ({:?}, {:?}){}, {timing}\n",
            a.index,
            a.name,
            a.backend,
            a.device_type,
            if quick { ", --quick sizes" } else { "" }
        );
        println!(
            "| {:<62} | {:>9} | {:>9} | {:>6} |",
            "kernel", "ms", "GFLOP/s", "TFLOP/s"
        );
        println!(
            "|{}|{}|{}|{}|",
            "-".repeat(64),
            "-".repeat(11),
            "-".repeat(11),
            "-".repeat(8)
        );
        let (iters, big, fc, batch) = if quick {
            (3, 512, (16, 512, 1152), 2)
        } else {
            (10, 4096, (128, 4096, 9216), 128)
        };
        let filter = args
            .iter()
            .position(|a| a == "--only")
            .and_then(|i| args.get(i + 1));
        let wanted = |c: &&Case| filter.is_none_or(|f| c.name.contains(f.as_str()));
        if sweep {
            // The GPU's configurations, on any adapter (a CPU adapter runs them too, slowly).
            gpu.tiles = TilePolicy::Gpu;
            for case in sweep_cases(&gpu, big, fc).iter().filter(wanted) {
                row(&gpu, case, &case.name, iters);
            }
            continue;
        }
        let mut cases = gemm_cases(&gpu, "gemm", big, big, big);
        cases.truncate(1);
        cases.extend(gemm_cases(&gpu, "fc6", fc.0, fc.1, fc.2));
        for case in cases.iter().filter(wanted) {
            row(&gpu, case, &case.name, iters);
        }
        let shapes = if has("--quickstart") {
            quickstart_convs()
        } else {
            model_convs(&ModelConfig::paper(1000), batch)
        };
        let convs: Vec<Case> = shapes
            .into_iter()
            .flat_map(|(name, s)| conv_cases(&gpu, &name, s))
            .collect();
        // The adapter's own convolution kernels, and on a CPU adapter (or with --both) the
        // other ones beside them as the baseline. Not on a GPU by default: the direct kernels
        // are not meant for it, and the paper-size rows would spend the device's time.
        let chosen = gpu.conv_kernels;
        let mut kinds = vec![chosen];
        if chosen == ConvKernels::Direct || has("--both") {
            kinds.push(match chosen {
                ConvKernels::Tiled => ConvKernels::Direct,
                ConvKernels::Direct => ConvKernels::Tiled,
            });
        }
        for case in convs.iter().filter(wanted) {
            for &kernels in &kinds {
                gpu.conv_kernels = kernels;
                row(&gpu, case, &format!("{} {kernels:?}", case.name), iters);
            }
            gpu.conv_kernels = chosen;
        }
    }
}
