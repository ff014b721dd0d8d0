//! `alexnet devices --selftest` and `alexnet devices --tune`: the kernel self-test and the
//! tuner's table on one adapter, for the network's products at a batch size.
use super::{print_stdout, CommandError, DevicesArgs};
use crate::device::Resolved;
use crate::gpu::conv::ConvKernels;
use crate::gpu::coop::Precision;
use crate::gpu::gemm::{GemmForm, TilePolicy};
use crate::gpu::selftest;
use crate::gpu::tiles::TileConfig;
use crate::gpu::tuner::{self, ConvEntry, Product, TuneMode};
use crate::gpu::Gpu;
use crate::model::config::ModelConfig;
use crate::model::geometry::Geometry;
use crate::train::Devices;

/// Every matrix product of one column of the network at `batch`, named by layer.
fn products(small: Option<usize>, batch: usize) -> Result<Vec<(String, Product)>, CommandError> {
    let cfg = match small {
        Some(div) => ModelConfig::small(crate::model::config::MIN_INPUT_SIZE, div, 10),
        None => ModelConfig::paper(1000),
    };
    let geo = Geometry::new(&cfg, batch).map_err(|e| format!("--batch {batch}: {e}"))?;
    let mut out = Vec::new();
    for c in &geo.convs {
        for (e, name) in [
            (ConvEntry::Forward, "forward"),
            (ConvEntry::BackwardInput, "backward_input"),
            (ConvEntry::BackwardWeight, "backward_weight"),
        ] {
            out.push((
                format!("{}.{name}", c.name),
                Product::Conv {
                    entry: e,
                    shape: c.conv,
                },
            ));
        }
    }
    for f in &geo.fcs {
        let s = f.linear;
        for (form, name, m, n, k) in [
            (GemmForm::ABt, "forward", s.n, s.fout, s.fin),
            (GemmForm::AB, "backward_input", s.n, s.fin, s.fout),
            (GemmForm::AtB, "backward_weight", s.fout, s.fin, s.n),
        ] {
            out.push((
                format!("{}.{name}", f.name),
                Product::Gemm { form, m, n, k },
            ));
        }
    }
    Ok(out)
}

/// The adapter of `--devices` (one), else the first GPU, else the first adapter, running the
/// tiled kernels with the GPU policy (also on lavapipe, whose default is the direct kernels).
fn open(spec: Option<&str>, precision: Precision) -> Result<Gpu, CommandError> {
    let mut gpu = match spec {
        None => Gpu::best_with(precision)?,
        Some(s) => {
            let device = s
                .parse::<Devices>()
                .and_then(|d| d.single())
                .map_err(|e| format!("--devices: {e}"))?;
            match device
                .resolve_among(&crate::gpu::list_adapters())
                .map_err(|e| format!("--devices {s}: {e}"))?
            {
                Resolved::Adapter(i) => Gpu::with_precision(i, precision)?,
                Resolved::Cpu => {
                    return Err(format!(
                        "--devices {s}: the CPU engine runs no WGSL kernels; name an adapter (`alexnet devices` lists them) or `lavapipe`"
                    )
                    .into())
                }
            }
        }
    };
    gpu.tiles = TilePolicy::Gpu;
    gpu.conv_kernels = ConvKernels::Tiled;
    gpu.tile_override = None;
    Ok(gpu)
}

pub(super) fn run(a: &DevicesArgs) -> Result<(), CommandError> {
    let mode = match a.tune.as_deref() {
        None => None,
        Some(m) => Some(m.parse::<TuneMode>().map_err(|e| format!("--tune: {e}"))?),
    };
    let mut gpu = open(a.devices.as_deref(), a.precision)?;
    gpu.tuning.verbose = !a.json;
    match mode {
        Some(TuneMode::Off) => {
            return Err("--tune off: nothing to print; give --tune cached or --tune full".into())
        }
        Some(m) => gpu.tuning.mode = m,
        // The self-test's outcomes go to the cache, which the tuner then reads.
        None => gpu.tuning.mode = TuneMode::Cached,
    }
    let products = products(a.small, a.batch)?;
    let mut json = serde_json::json!({
        "adapter": gpu.adapter.name,
        "driver": gpu.adapter.driver,
        "multiprocessors": tuner::multiprocessors(&gpu).1,
        "precision": a.precision,
        "cooperative_matrix": gpu.coop,
        "fallback": gpu.fallback,
    });
    if !a.json && a.precision == Precision::Mixed {
        match &gpu.fallback {
            None => println!(
                "precision mixed: the cooperative-matrix (f16) tiles join the candidates on {}",
                gpu.adapter.name
            ),
            Some(why) => println!(
                "precision mixed: no cooperative-matrix tiles on {} ({why}); fp32 tiles only",
                gpu.adapter.name
            ),
        }
    }
    let mut failed = None;
    if a.selftest {
        // The tuner's candidates and every tile the fixed heuristics pick for these products.
        let mut tiles: Vec<TileConfig> = tuner::candidates_for(&gpu);
        for (_, p) in &products {
            let t = p.heuristic(&gpu).tile;
            if !tiles.contains(&t) {
                tiles.push(t);
            }
        }
        let report = selftest::run(&gpu, &tiles);
        // The tuner reads these outcomes instead of running the self-test again.
        tuner::record_selftest(&gpu, &report);
        let empty = report.empty_families();
        if !empty.is_empty() {
            failed = Some(format!(
                "no kernel variant passed the self-test for {empty:?} on {}: see the report above",
                gpu.adapter.name
            ));
        }
        if a.json {
            json["selftest"] = report.json();
        } else {
            println!(
                "self-test on {} ({}):\n{}",
                gpu.adapter.name,
                gpu.adapter.driver,
                report.table()
            );
        }
    }
    if let (Some(_), None) = (mode, &failed) {
        let start = std::time::Instant::now();
        for (_, p) in &products {
            tuner::choose(&gpu, p)?;
        }
        let seconds = start.elapsed().as_secs_f64();
        let timed = tuner::timed_count(&gpu);
        let cache = tuner::cache_path(&gpu).map_or(
            "no cache directory (set XDG_CACHE_HOME or HOME)".into(),
            |p| p.display().to_string(),
        );
        if a.json {
            let rows: Vec<serde_json::Value> = products
                .iter()
                .map(|(name, p)| {
                    serde_json::json!({
                        "layer": name,
                        "product": p.label(),
                        "table": tuner::entry(&gpu, p),
                    })
                })
                .collect();
            json["tune"] = serde_json::json!({
                "batch": a.batch,
                "seconds": seconds,
                "timed": timed,
                "cache": cache,
                "products": rows,
            });
        } else {
            print!("{}", tuner::table_text(&gpu, &products));
            println!(
                "{} products at batch {} in {seconds:.1} s ({timed} candidates timed; table: {cache})",
                products.len(),
                a.batch
            );
        }
    }
    if a.json {
        print_stdout(&(json.to_string() + "\n"))?;
    }
    match failed {
        Some(f) => Err(f.into()),
        None => Ok(()),
    }
}
