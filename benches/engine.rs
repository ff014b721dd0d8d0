//! Kernel throughput per adapter: GEMM (4096³ and the fc6 shapes) and each paper convolution
//! forward/backward at batch 128, as time per call and GFLOP/s.
//!
//! `cargo bench --bench engine` (full sizes, for GPUs) or `cargo bench --bench engine -- --quick`
//! (small sizes that finish on lavapipe). `--adapter I` benches one adapter only; `--quickstart`
//! times the quickstart model's convolutions (batch 64) in place of the paper's; `--only S`
//! keeps the rows whose name holds S. Convolution rows name their kernels (`Tiled` for GPUs,
//! `Direct` for CPU adapters); a CPU adapter, or `--both`, times both, its own first.
//! Timing: one warm-up call, then `iters` calls each recorded in its own encoder and submitted
//! back to back, and one wait at the end (wall clock, so it includes submit overhead).
use std::time::Instant;

use alexnet::gpu::conv::ConvKernels;
use alexnet::gpu::{conv, gemm, list_adapters, Gpu, Tensor};
use alexnet::model::{Geometry, ModelConfig};
use alexnet::shape::ConvShape;

/// Records one call of the kernel under test.
type Recorder = Box<dyn Fn(&Gpu, &mut wgpu::CommandEncoder) -> alexnet::gpu::Result<()>>;

struct Case {
    name: String,
    flops: f64,
    record: Recorder,
}

fn time(gpu: &Gpu, case: &Case, iters: usize) -> alexnet::gpu::Result<f64> {
    let mut enc = gpu.encoder("bench.warmup");
    (case.record)(gpu, &mut enc)?;
    gpu.submit(enc);
    gpu.wait()?;
    let start = Instant::now();
    for _ in 0..iters {
        let mut enc = gpu.encoder("bench.iter");
        (case.record)(gpu, &mut enc)?;
        gpu.submit(enc);
    }
    gpu.wait()?;
    Ok(start.elapsed().as_secs_f64() / iters as f64)
}

fn filled(gpu: &Gpu, len: usize, label: &str) -> Tensor {
    // Small non-zero values: timing must not depend on denormals or zeros.
    let data: Vec<f32> = (0..len).map(|i| ((i % 97) as f32 - 48.0) * 1e-3).collect();
    Tensor::from_slice(gpu, &data, label)
}

fn gemm_cases(gpu: &Gpu, label: &str, m: usize, n: usize, k: usize) -> Vec<Case> {
    use std::rc::Rc;
    let x = Rc::new(filled(gpu, m * k, "bench.x"));
    let w = Rc::new(filled(gpu, n * k, "bench.w"));
    let b = Rc::new(filled(gpu, n, "bench.b"));
    let y = Rc::new(filled(gpu, m * n, "bench.y"));
    let flops = 2.0 * (m * n * k) as f64;
    let mut out = Vec::new();
    {
        let (x, w, b, y) = (x.clone(), w.clone(), b.clone(), y.clone());
        out.push(Case {
            name: format!("{label} y=x·Wᵀ+b {m}×{n}×{k}"),
            flops,
            record: Box::new(move |g, e| gemm::linear_forward(g, e, &x, &w, Some(&b), &y, m, n, k)),
        });
    }
    {
        let (x, w, y) = (x.clone(), w.clone(), y.clone());
        out.push(Case {
            name: format!("{label} dX=dY·W"),
            flops,
            record: Box::new(move |g, e| {
                gemm::linear_backward_input(g, e, &y, &w, &x, m, n, k, false)
            }),
        });
    }
    out.push(Case {
        name: format!("{label} dW=dYᵀ·X"),
        flops,
        record: Box::new(move |g, e| {
            gemm::linear_backward_weight(g, e, &y, &x, &w, m, n, k, false)
        }),
    });
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
            name: format!("{tag} fwd"),
            flops,
            record: Box::new(move |g, e| conv::forward(g, e, &s, &x, &w, &b, &y)),
        });
    }
    {
        let (x, w, y) = (x.clone(), w.clone(), y.clone());
        out.push(Case {
            name: format!("{tag} bwd dX"),
            flops,
            record: Box::new(move |g, e| conv::backward_input(g, e, &s, &y, &w, &x, false)),
        });
    }
    out.push(Case {
        name: format!("{tag} bwd dW"),
        flops,
        record: Box::new(move |g, e| conv::backward_weight(g, e, &s, &y, &x, &w, false)),
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
        .into_iter()
        .map(|(name, s)| (format!("qs {name}"), s))
        .collect()
}

fn row(gpu: &Gpu, case: &Case, name: &str, iters: usize) {
    match time(gpu, case, iters) {
        Ok(t) => println!(
            "{:<58} {:>10.3} {:>10.1}",
            name,
            t * 1e3,
            case.flops / t / 1e9
        ),
        Err(e) => println!("{name:<58} skipped: {e}"),
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
    let quick = args.iter().any(|a| a == "--quick");
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
    for a in adapters
        .iter()
        .filter(|a| only.is_none_or(|i| i == a.index))
    {
        let mut gpu = match Gpu::new(a.index) {
            Ok(g) => g,
            Err(e) => {
                eprintln!("adapter {}: {e}", a.index);
                continue;
            }
        };
        println!(
            "\n[{}] {} ({:?}, {:?}){}",
            a.index,
            a.name,
            a.backend,
            a.device_type,
            if quick { "  --quick sizes" } else { "" }
        );
        println!("{:<58} {:>10} {:>10}", "kernel", "ms", "GFLOP/s");
        let (iters, big, fc, batch) = if quick {
            (3, 512, (16, 512, 1152), 2)
        } else {
            (10, 4096, (128, 4096, 9216), 128)
        };
        let mut cases = gemm_cases(&gpu, "gemm", big, big, big);
        cases.truncate(1);
        if args.iter().any(|a| a == "--sweep") {
            cases.clear();
            let (x, w, y) = (
                filled(&gpu, big * big, "bench.x"),
                filled(&gpu, big * big, "bench.w"),
                filled(&gpu, big * big, "bench.y"),
            );
            let (x, w, y) = (
                std::rc::Rc::new(x),
                std::rc::Rc::new(w),
                std::rc::Rc::new(y),
            );
            for (wg_m, wg_n, tile_k) in [
                (16, 16, 8),
                (16, 16, 16),
                (16, 16, 32),
                (8, 8, 16),
                (8, 16, 16),
                (16, 8, 16),
                (8, 8, 32),
                (4, 16, 16),
            ] {
                for form in [gemm::GemmForm::ABt, gemm::GemmForm::AB, gemm::GemmForm::AtB] {
                    let (x, w, y) = (x.clone(), w.clone(), y.clone());
                    let tiles = gemm::GemmTiles { wg_m, wg_n, tile_k };
                    cases.push(Case {
                        name: format!("gemm {form:?} {big}³ tiles {wg_m}×{wg_n}×{tile_k}"),
                        flops: 2.0 * (big * big * big) as f64,
                        record: Box::new(move |g, e| {
                            let args = gemm::GemmArgs {
                                form,
                                m: big,
                                n: big,
                                k: big,
                                a: &x,
                                b: &w,
                                c: &y,
                                bias: None,
                                accumulate: false,
                                alpha: 1.0,
                            };
                            gemm::record_with_tiles(g, e, &args, tiles)
                        }),
                    });
                }
            }
        }
        cases.extend(gemm_cases(&gpu, "fc6", fc.0, fc.1, fc.2));
        let mut convs = Vec::new();
        if !args.iter().any(|a| a == "--sweep") {
            let shapes = if args.iter().any(|a| a == "--quickstart") {
                quickstart_convs()
            } else {
                model_convs(&ModelConfig::paper(1000), batch)
            };
            for (name, s) in shapes {
                convs.extend(conv_cases(&gpu, &name, s));
            }
        } else {
            cases.retain(|c| c.name.contains("tiles"));
        }
        let filter = args
            .iter()
            .position(|a| a == "--only")
            .and_then(|i| args.get(i + 1));
        let wanted = |c: &&Case| filter.is_none_or(|f| c.name.contains(f.as_str()));
        for case in cases.iter().filter(wanted) {
            row(&gpu, case, &case.name, iters);
        }
        // The adapter's own convolution kernels, and on a CPU adapter (or with --both) the
        // other ones beside them as the baseline. Not on a GPU by default: the direct kernels
        // are not meant for it, and the paper-size rows would spend the device's time.
        let chosen = gpu.conv_kernels;
        let mut kinds = vec![chosen];
        if chosen == ConvKernels::Direct || args.iter().any(|a| a == "--both") {
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
