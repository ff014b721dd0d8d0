//! The tile and split-K choice of every matrix product, measured on the device it runs on.
//!
//! [`choose`] is what the launchers ask (`gemm::record`, the convolution launchers). It
//! answers, in order: a choice forced for the current thread ([`with_choice`]: the
//! self-test and the tuner's own timing runs), the device's `tile_override`
//! (`ALEXNET_TILE`), the fixed heuristics ([`super::gemm::tile_for`],
//! [`super::conv::tile_for`]) when tuning is off or the device is a CPU adapter with its CPU
//! policy, else the tuned table. A product not in the table is tuned when it is first
//! recorded: its candidate tiles are self-tested ([`super::selftest`]) and the ones that
//! pass are timed with every split-K factor that makes about 1, 2 or 3 workgroups per
//! multiprocessor; the fastest is kept and the table written to the cache
//! ([`super::tune_cache`]). A later run with the same key reads it and times nothing.
use std::cell::Cell;
use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::Instant;

use super::conv;
use super::gemm::{self, GemmArgs, GemmForm, TilePolicy};
use super::kernel::Program;
use super::selftest::{self, Family};
use super::tiles::TileConfig;
use super::tune_cache::{self, CacheKey, ProductEntry, Timed, TuneFile};
use super::{Gpu, GpuError, KernelTimer, Recorder, Result, Tensor};
use crate::shape::{Activation, ConvShape};

/// A tile and split-K factor for one product.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Choice {
    /// The tile.
    pub tile: TileConfig,
    /// The split-K factor; `None` lets the launcher's heuristic decide (and products
    /// without split-K ignore it).
    pub splits: Option<usize>,
}

/// Which of a convolution's three products.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConvEntry {
    /// `y = conv(x, w)`.
    Forward,
    /// `dx` from `dy` and `w`.
    BackwardInput,
    /// `dw` from `dy` and `x` (the only one with split-K).
    BackwardWeight,
}

/// One matrix product a network records.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Product {
    /// A dense GEMM of `gemm::record` (`m`×`n`, depth `k`).
    Gemm {
        /// Which form.
        form: GemmForm,
        /// Rows of C.
        m: usize,
        /// Columns of C.
        n: usize,
        /// Reduction length.
        k: usize,
    },
    /// A convolution product.
    Conv {
        /// Which of the three.
        entry: ConvEntry,
        /// The convolution.
        shape: ConvShape,
    },
}

impl Product {
    /// The table's key: entry and sizes, e.g. `gemm.forward 128x4096x9216` (M×N×K) or
    /// `conv.forward n128 3x227x227 k11 s4 p0 g1 o96`.
    pub fn label(&self) -> String {
        match self {
            Product::Gemm { form, m, n, k } => {
                let e = match form {
                    GemmForm::ABt => "forward",
                    GemmForm::AB => "backward_input",
                    GemmForm::AtB => "backward_weight",
                };
                format!("gemm.{e} {m}x{n}x{k}")
            }
            Product::Conv { entry, shape: s } => {
                let e = match entry {
                    ConvEntry::Forward => "forward",
                    ConvEntry::BackwardInput => "backward_input",
                    ConvEntry::BackwardWeight => "backward_weight",
                };
                format!(
                    "conv.{e} n{} {}x{}x{} k{} s{} p{} g{} o{}",
                    s.n, s.c_in, s.h, s.w, s.k, s.stride, s.pad, s.groups, s.c_out
                )
            }
        }
    }

    /// The GEMM view: rows and columns of C per group, depth, groups.
    pub fn dims(&self) -> (usize, usize, usize, usize) {
        match *self {
            Product::Gemm { m, n, k, .. } => (m, n, k, 1),
            Product::Conv { entry, shape: s } => {
                let g = s.groups;
                let (ci, co) = (s.c_in / g, s.c_out / g);
                match entry {
                    ConvEntry::Forward => (co, s.n * s.out_h() * s.out_w(), ci * s.k * s.k, g),
                    ConvEntry::BackwardInput => (ci, s.n * s.h * s.w, co * s.k * s.k, g),
                    ConvEntry::BackwardWeight => {
                        (co, ci * s.k * s.k, s.n * s.out_h() * s.out_w(), g)
                    }
                }
            }
        }
    }

    /// Floating-point operations (what the launchers report to the kernel timer).
    pub fn flops(&self) -> f64 {
        match self {
            Product::Gemm { m, n, k, .. } => 2.0 * (m * n * k) as f64,
            Product::Conv { shape, .. } => 2.0 * shape.macs() as f64,
        }
    }

    /// The kernels this product runs on (what the self-test must have passed).
    pub fn family(&self) -> Family {
        match self {
            Product::Gemm { .. } => Family::Gemm,
            Product::Conv { .. } => Family::Conv,
        }
    }

    /// Whether the product has a split-K factor to tune.
    pub fn splits_k(&self) -> bool {
        matches!(
            self,
            Product::Gemm { .. }
                | Product::Conv {
                    entry: ConvEntry::BackwardWeight,
                    ..
                }
        )
    }

    /// The fixed heuristics' choice (what runs with tuning off).
    pub fn heuristic(&self, gpu: &Gpu) -> Choice {
        let (m, ..) = self.dims();
        let tile = match self {
            Product::Gemm { .. } => gemm::tile_for(gpu, m),
            Product::Conv { .. } => conv::tile_for(gpu, m),
        };
        Choice { tile, splits: None }
    }
}

/// How the tuner behaves on a device.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TuneMode {
    /// The fixed heuristics: nothing is timed or read.
    Off,
    /// Use the cached table; tune (and cache) the products it lacks.
    Cached,
    /// Tune every product again, ignoring the cache (and rewrite it).
    Full,
}

impl std::str::FromStr for TuneMode {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<TuneMode, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "off" => Ok(TuneMode::Off),
            "cached" | "on" => Ok(TuneMode::Cached),
            "full" => Ok(TuneMode::Full),
            other => Err(format!(
                "tune mode `{other}`: expected off (fixed heuristics), cached (use the cache, tune what it lacks) or full (tune everything again)"
            )),
        }
    }
}

/// A device's tuning settings.
#[derive(Clone, Debug, PartialEq)]
pub struct Settings {
    /// What the tuner does.
    pub mode: TuneMode,
    /// Where the table is cached; `None`: nowhere (every run tunes).
    pub cache_dir: Option<PathBuf>,
    /// The candidate tiles; `None`: [`candidates_for`] and the heuristic's tile. Tests
    /// narrow it (the list is then taken as it is).
    pub candidates: Option<Vec<TileConfig>>,
    /// Timed repetitions per candidate (the median is kept).
    pub reps: usize,
    /// Print a line per tuned product on stderr.
    pub verbose: bool,
    /// The adapter's multiprocessor count when given (`ALEXNET_SMS`), over what
    /// [`multiprocessors`] would look up.
    pub multiprocessors: Option<usize>,
}

impl Settings {
    /// The defaults for an adapter of `device_type`: tuning on for GPUs (`cached`), off for
    /// CPU adapters, whose launchers use their own policy; `ALEXNET_TUNE=off|cached|full`
    /// overrides the mode. The cache is [`tune_cache::default_dir`].
    pub fn from_env(device_type: wgpu::DeviceType) -> std::result::Result<Settings, String> {
        let mode = match std::env::var("ALEXNET_TUNE") {
            Ok(v) if !v.trim().is_empty() => v
                .parse::<TuneMode>()
                .map_err(|e| format!("ALEXNET_TUNE: {e}"))?,
            _ if device_type == wgpu::DeviceType::Cpu => TuneMode::Off,
            _ => TuneMode::Cached,
        };
        let multiprocessors = match std::env::var("ALEXNET_SMS") {
            Ok(v) if !v.trim().is_empty() => match v.trim().parse::<usize>() {
                Ok(n) if n > 0 => Some(n),
                _ => {
                    return Err(format!(
                        "ALEXNET_SMS `{v}`: expected the adapter's multiprocessor count (SMs, CUs), a positive integer such as 132"
                    ))
                }
            },
            _ => None,
        };
        Ok(Settings {
            mode,
            cache_dir: tune_cache::default_dir(),
            candidates: None,
            reps: 5,
            verbose: true,
            multiprocessors,
        })
    }
}

/// What a device has learned: the table (loaded from the cache or tuned) and counters.
#[derive(Debug, Default)]
pub struct State {
    /// Whether the cache was consulted.
    loaded: bool,
    /// The table and self-test outcomes (written back to the cache after each tuning).
    file: TuneFile,
    /// Candidates timed by this device so far (0 when everything came from the cache).
    pub timed: usize,
    /// Warnings met (an unreadable cache, a cache that cannot be written).
    pub warnings: Vec<String>,
}

thread_local! {
    static FORCED: Cell<Option<Choice>> = const { Cell::new(None) };
}

/// Run `f` with every product recorded on this thread using `choice` (restored afterwards,
/// also when `f` panics).
pub fn with_choice<T>(choice: Choice, f: impl FnOnce() -> T) -> T {
    struct Restore(Option<Choice>);
    impl Drop for Restore {
        fn drop(&mut self) {
            FORCED.with(|c| c.set(self.0));
        }
    }
    let _restore = Restore(FORCED.with(|c| c.replace(Some(choice))));
    f()
}

/// The choice for `p` on `gpu` (see the module doc).
pub fn choose(gpu: &Gpu, p: &Product) -> Result<Choice> {
    if let Some(c) = FORCED.with(|c| c.get()) {
        return Ok(c);
    }
    if gpu.tuning.mode == TuneMode::Off
        || gpu.tiles == TilePolicy::Cpu
        || gpu.tile_override.is_some()
    {
        return Ok(p.heuristic(gpu));
    }
    let label = p.label();
    if let Some(c) = lookup(gpu, &label) {
        return Ok(c);
    }
    let entry = tune(gpu, p)?;
    let choice = parse_entry(&entry).ok_or_else(|| GpuError::Invalid {
        op: "tuner",
        reason: format!("{label}: the winner {} is not a tile", entry.tile),
    })?;
    let mut st = lock(gpu);
    st.file.products.insert(label, entry);
    save(gpu, &mut st);
    Ok(choice)
}

fn lock(gpu: &Gpu) -> std::sync::MutexGuard<'_, State> {
    // Inserts are single calls, so a poisoned state is still consistent.
    gpu.tuner.lock().unwrap_or_else(|e| e.into_inner())
}

fn parse_entry(e: &ProductEntry) -> Option<Choice> {
    TileConfig::parse(&e.tile).ok().map(|tile| Choice {
        tile,
        splits: e.splits,
    })
}

fn warn(gpu: &Gpu, st: &mut State, line: String) {
    if gpu.tuning.verbose {
        eprintln!("warning: {line}");
    }
    st.warnings.push(line);
}

/// The table entry for `label`, loading the cache on first use in `cached` mode.
fn lookup(gpu: &Gpu, label: &str) -> Option<Choice> {
    let mut st = lock(gpu);
    if !st.loaded {
        st.loaded = true;
        load_cache(gpu, &mut st);
    }
    // A tile this device cannot run (a cooperative one after the feature went away) is
    // tuned again rather than dispatched.
    st.file
        .products
        .get(label)
        .and_then(parse_entry)
        .filter(|c| gemm::fits(gpu, &c.tile))
}

/// Read the cache into `st` once: everything in `cached` mode; in `full` mode only the
/// self-test's outcomes (the products are timed again).
fn load_cache(gpu: &Gpu, st: &mut State) {
    st.loaded = true;
    if let (TuneMode::Cached | TuneMode::Full, Some(dir)) =
        (gpu.tuning.mode, gpu.tuning.cache_dir.as_ref())
    {
        let (file, warning) = tune_cache::load(dir, &cache_key(gpu));
        if let Some(w) = warning {
            warn(gpu, st, w);
        }
        if let Some(mut f) = file {
            if gpu.tuning.mode == TuneMode::Full {
                f.products.clear();
            }
            st.file = f;
        }
    }
    st.file.key = Some(cache_key(gpu));
}

fn save(gpu: &Gpu, st: &mut State) {
    if let Some(dir) = gpu.tuning.cache_dir.as_ref() {
        if let Err(w) = tune_cache::save(dir, &cache_key(gpu), &st.file) {
            warn(gpu, st, w);
        }
    }
}

/// The cache key of `gpu`: adapter, driver, crate version and the hash of the WGSL of
/// every default candidate tile (any change to the generator or the shaders changes it;
/// a mixed-precision device's candidates include the cooperative tiles, so its table is
/// apart from the fp32 one).
pub fn cache_key(gpu: &Gpu) -> CacheKey {
    let a = &gpu.adapter;
    let mut text = String::new();
    for t in candidates_for(gpu) {
        for shader in [&gemm::SHADER, &conv::SHADER] {
            text.push_str(&Program::Tiled(shader, t).source());
        }
    }
    text.push_str(&conv::SUMS_SHADER.full_source());
    CacheKey {
        adapter: a.name.clone(),
        backend: format!("{:?} {:?}", a.backend, a.device_type),
        driver: a.driver.clone(),
        version: env!("CARGO_PKG_VERSION").to_string(),
        wgsl: format!("{:016x}", tune_cache::fnv1a(text.as_bytes())),
    }
}

/// The tiles the tuner tries on `gpu`: [`candidates`] with the cooperative-matrix tiles
/// when the device was made with that feature ([`Gpu::coop`]: `--precision mixed` on an
/// adapter that has it).
pub fn candidates_for(gpu: &Gpu) -> Vec<TileConfig> {
    candidates(gpu.coop)
}

/// [`candidate_tiles`], then [`super::coop::candidate_tiles`] when `coop`.
pub fn candidates(coop: bool) -> Vec<TileConfig> {
    let mut t = candidate_tiles();
    if coop {
        t.extend(super::coop::candidate_tiles());
    }
    t
}

/// The f32 tiles the tuner tries besides the heuristic's: 128×128×8 of 8×8 a thread, its halves
/// 128×64 and 64×128, the 64×64×8 of 4×4 a probe measured at 19 TFLOP/s on an H200, and
/// 64×64 with a 16-deep K step.
pub fn candidate_tiles() -> Vec<TileConfig> {
    let l = TileConfig::LARGE;
    vec![
        l,
        TileConfig { bn: 64, ..l },
        TileConfig { bm: 64, ..l },
        TileConfig {
            bk: 8,
            ..TileConfig::SMALL
        },
        TileConfig::SMALL,
    ]
}

/// Multiprocessor counts assumed for a GPU nobody has named: a small part, the old
/// assumption, an A100 and an H100/H200. Split-K factors are offered for each, so the tuner's
/// timing finds the one that fits the card it runs on.
pub const FALLBACK_MULTIPROCESSORS: [usize; 4] = [40, 64, 108, 132];

/// Multiprocessors by adapter name: Vulkan reports no SM/CU count and wgpu passes none on,
/// so the name is the best proxy (SXM parts after their PCIe part where they share a prefix).
pub fn known_multiprocessors(adapter_name: &str) -> Option<(usize, &'static str)> {
    let name = adapter_name.to_ascii_uppercase();
    let known: [(&str, usize); 12] = [
        ("H100 PCIE", 114),
        ("H100", 132),
        ("H200", 132),
        ("H800", 132),
        ("GH200", 132),
        ("A100", 108),
        ("L40S", 142),
        ("L40", 142),
        ("L4", 58),
        ("A10", 72),
        ("RTX 4090", 128),
        ("T4", 40),
    ];
    known
        .into_iter()
        .find(|(k, _)| name.contains(k))
        .map(|(k, n)| (n, k))
}

/// The multiprocessor counts the tuner's split-K factors are made for, and where they come
/// from: the setting (`ALEXNET_SMS`) when given; the host's threads on a CPU adapter; the
/// table of [`known_multiprocessors`]; else every count of [`FALLBACK_MULTIPROCESSORS`].
pub fn multiprocessor_counts(gpu: &Gpu) -> (Vec<usize>, String) {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    counts_for(
        &gpu.adapter.name,
        gpu.adapter.device_type,
        gpu.tuning.multiprocessors,
        threads,
    )
}

fn counts_for(
    name: &str,
    device_type: wgpu::DeviceType,
    setting: Option<usize>,
    threads: usize,
) -> (Vec<usize>, String) {
    if let Some(n) = setting {
        return (vec![n], format!("{n} (ALEXNET_SMS)"));
    }
    if device_type == wgpu::DeviceType::Cpu {
        return (
            vec![threads],
            format!("{threads} host threads (CPU adapter)"),
        );
    }
    match known_multiprocessors(name) {
        Some((n, k)) => (vec![n], format!("{n} SMs ({k}, by adapter name)")),
        None => (
            FALLBACK_MULTIPROCESSORS.to_vec(),
            format!(
                "unknown card: split-K made for {FALLBACK_MULTIPROCESSORS:?} multiprocessors (set ALEXNET_SMS to the card's count)"
            ),
        ),
    }
}

/// The adapter's multiprocessor count (the first of [`multiprocessor_counts`]: 64 for an
/// unknown card) and where it comes from.
pub fn multiprocessors(gpu: &Gpu) -> (usize, String) {
    let (counts, source) = multiprocessor_counts(gpu);
    let n = if counts.len() > 1 { 64 } else { counts[0] };
    (n, source)
}

/// The split-K factors worth timing for `p` with tile `t`: 1 and, for each of
/// [`multiprocessor_counts`] and f = 1, 2, 3, the factor next to f workgroups per
/// multiprocessor (below or above) whose workgroups fill their last wave best: 270
/// workgroups on 132 SMs run a third wave of 6 (68% of the three waves busy), 216 fill two
/// waves to 82%. Each slice at least 4 K steps, partials within the scratch limit.
pub fn split_candidates(gpu: &Gpu, p: &Product, t: &TileConfig) -> Vec<usize> {
    if !p.splits_k() {
        return vec![1];
    }
    let (m, n, k, g) = p.dims();
    let tiles = (m.div_ceil(t.bm as usize) * n.div_ceil(t.bn as usize) * g).max(1);
    let max_by_k = (k / (4 * t.bk as usize)).max(1);
    let scratch = gpu.max_binding().min(256 << 20);
    let max_by_mem = ((scratch / ((m * n * g) as u64 * 4).max(1)) as usize).max(1);
    let mut out = BTreeSet::from([1]);
    let most = max_by_k.min(max_by_mem).min(256);
    for count in multiprocessor_counts(gpu).0 {
        for f in 1..=3 {
            let below = ((f * count) / tiles).clamp(1, most);
            let above = (f * count).div_ceil(tiles).clamp(1, most);
            // Ties go to the larger factor (more workgroups to hide latency with).
            let best = if wave_fill(tiles * below, count) > wave_fill(tiles * above, count) {
                below
            } else {
                above
            };
            out.insert(best);
        }
    }
    out.into_iter().collect()
}

/// The share of `waves` · `count` slots that `workgroups` keep busy, one workgroup a
/// multiprocessor at a time.
pub fn wave_fill(workgroups: usize, count: usize) -> f64 {
    let waves = workgroups.div_ceil(count.max(1)).max(1);
    workgroups as f64 / (waves * count.max(1)) as f64
}

/// Random operands for timing one product (uniform in [-1, 1): never zeros).
struct Operands {
    tensors: Vec<Tensor>,
}

fn operands(gpu: &Gpu, p: &Product) -> Operands {
    let fill = |len: usize, seed: u32, label: &str| {
        let data: Vec<f32> = (0..len)
            .map(|i| 2.0 * crate::shape::uniform01(seed, i as u32) - 1.0)
            .collect();
        Tensor::from_slice(gpu, &data, label)
    };
    let lens: Vec<usize> = match *p {
        Product::Gemm { form, m, n, k } => match form {
            GemmForm::ABt => vec![m * k, n * k, m * n, n],
            GemmForm::AB => vec![m * k, k * n, m * n],
            GemmForm::AtB => vec![k * m, k * n, m * n],
        },
        Product::Conv { entry, shape: s } => match entry {
            ConvEntry::Forward => vec![s.input_len(), s.weight_len(), s.c_out, s.output_len()],
            ConvEntry::BackwardInput => vec![s.output_len(), s.weight_len(), s.input_len()],
            ConvEntry::BackwardWeight => vec![s.output_len(), s.input_len(), s.weight_len()],
        },
    };
    Operands {
        tensors: lens
            .iter()
            .enumerate()
            .map(|(i, &len)| fill(len, 7 + i as u32, "tuner.operand"))
            .collect(),
    }
}

/// Record `p` once on `ops` (with whatever [`choose`] answers: the caller forces it).
fn record(rec: &mut Recorder<'_>, p: &Product, ops: &Operands) -> Result<()> {
    let t = &ops.tensors;
    match *p {
        Product::Gemm { form, m, n, k } => {
            let fwd = form == GemmForm::ABt;
            gemm::record(
                rec,
                &GemmArgs {
                    form,
                    m,
                    n,
                    k,
                    a: &t[0],
                    b: &t[1],
                    c: &t[2],
                    bias: fwd.then(|| &t[3]),
                    accumulate: false,
                    alpha: 1.0,
                    act: fwd.then_some(Activation::Relu),
                },
            )
        }
        Product::Conv { entry, shape: s } => match entry {
            ConvEntry::Forward => {
                conv::forward(rec, &s, &t[0], &t[1], &t[2], &t[3], Some(Activation::Relu))
            }
            ConvEntry::BackwardInput => conv::backward_input(rec, &s, &t[0], &t[1], &t[2], false),
            ConvEntry::BackwardWeight => conv::backward_weight(rec, &s, &t[0], &t[1], &t[2], false),
        },
    }
}

/// Median milliseconds of `reps` runs of `p` with `choice` (GPU timestamps when the device
/// has them, else the host clock around each submit).
pub fn time_choice(gpu: &Gpu, p: &Product, choice: Choice, reps: usize) -> Result<f64> {
    let ops = operands(gpu, p);
    time_on(gpu, p, &ops, choice, reps)
}

fn time_on(gpu: &Gpu, p: &Product, ops: &Operands, choice: Choice, reps: usize) -> Result<f64> {
    let reps = reps.max(1);
    with_choice(choice, || {
        // The first run compiles the pipelines and is not counted.
        let mut enc = gpu.encoder("tuner.warmup");
        record(&mut Recorder::new(gpu, &mut enc), p, ops)?;
        gpu.submit(enc);
        gpu.wait()?;
        let mut times = Vec::with_capacity(reps);
        match KernelTimer::new(gpu, 64 * reps as u32) {
            Some(timer) => {
                let mut enc = gpu.encoder("tuner.timed");
                let mut per_rep = Vec::with_capacity(reps);
                {
                    let mut rec = Recorder::new(gpu, &mut enc).with_timer(Some(&timer));
                    for _ in 0..reps {
                        let before = timer.len();
                        record(&mut rec, p, ops)?;
                        per_rep.push(timer.len() - before);
                    }
                }
                timer.resolve(&mut enc);
                gpu.submit(enc);
                let rows = timer.read(gpu)?;
                let mut it = rows.iter();
                for n in per_rep {
                    times.push(it.by_ref().take(n).map(|r| r.ms).sum::<f64>());
                }
            }
            None => {
                for _ in 0..reps {
                    let start = Instant::now();
                    let mut enc = gpu.encoder("tuner.timed");
                    record(&mut Recorder::new(gpu, &mut enc), p, ops)?;
                    gpu.submit(enc);
                    gpu.wait()?;
                    times.push(start.elapsed().as_secs_f64() * 1e3);
                }
            }
        }
        times.sort_by(f64::total_cmp);
        Ok(times[times.len() / 2])
    })
}

/// The self-test outcomes of `tiles` on `gpu`, running the self-test for those it has not
/// seen (its outcomes are cached with the table).
fn selftested(gpu: &Gpu, tiles: &[TileConfig]) -> Vec<selftest::Outcome> {
    let missing: Vec<TileConfig> = {
        let mut st = lock(gpu);
        if !st.loaded {
            load_cache(gpu, &mut st);
        }
        tiles
            .iter()
            .copied()
            .filter(|t| !st.file.selftest.contains_key(&t.tag()))
            .collect()
    };
    if !missing.is_empty() {
        let report = selftest::run(gpu, &missing);
        if gpu.tuning.verbose {
            for line in report.dropped() {
                eprintln!("self-test: {line}");
            }
        }
        record_selftest(gpu, &report);
    }
    let st = lock(gpu);
    let mut out = Vec::new();
    for t in tiles {
        if let Some(checks) = st.file.selftest.get(&t.tag()) {
            for (name, error) in checks {
                if let Some(check) = selftest::Check::from_name(name) {
                    out.push(selftest::Outcome {
                        tile: *t,
                        check,
                        error: error.clone(),
                    });
                }
            }
        }
    }
    out
}

/// Keep `report`'s outcomes in `gpu`'s table (and its cache, when tuning is on), so the
/// tuner does not run those variants' self-test again.
pub fn record_selftest(gpu: &Gpu, report: &selftest::Report) {
    let mut st = lock(gpu);
    if !st.loaded {
        load_cache(gpu, &mut st);
    }
    for o in &report.outcomes {
        st.file
            .selftest
            .entry(o.tile.tag())
            .or_default()
            .insert(o.check.name().to_string(), o.error.clone());
    }
    if gpu.tuning.mode != TuneMode::Off {
        save(gpu, &mut st);
    }
}

/// Self-test the candidates of `p`, time those that passed, and return the table entry.
fn tune(gpu: &Gpu, p: &Product) -> Result<ProductEntry> {
    let label = p.label();
    let start = Instant::now();
    // The default candidates and the heuristic's tile, so tuning never ends worse than
    // the fixed choice; a narrowed list (tests) is taken as it is.
    let mut tiles = gpu.tuning.candidates.clone().unwrap_or_else(|| {
        let mut t = candidates_for(gpu);
        let h = p.heuristic(gpu).tile;
        if !t.contains(&h) {
            t.push(h);
        }
        t
    });
    tiles.retain(|t| gemm::fits(gpu, t));
    let outcomes = selftested(gpu, &tiles);
    let family = p.family();
    let passed = |t: &TileConfig, split: bool| selftest::usable(&outcomes, t, family, split);
    let mut candidates = Vec::new();
    for t in &tiles {
        for s in split_candidates(gpu, p, t) {
            if passed(t, s > 1) {
                candidates.push(Choice {
                    tile: *t,
                    splits: p.splits_k().then_some(s),
                });
            }
        }
    }
    if candidates.is_empty() {
        let failures: Vec<String> = outcomes
            .iter()
            .filter_map(|o| {
                o.error
                    .as_ref()
                    .map(|e| format!("{} {}: {e}", o.tile.tag(), o.check.name()))
            })
            .collect();
        return Err(GpuError::Invalid {
            op: "tuner",
            reason: format!(
                "{label}: no kernel variant passed the self-test on {}:\n  {}",
                gpu.adapter.name,
                failures.join("\n  ")
            ),
        });
    }
    if gpu.tuning.verbose {
        eprintln!(
            "tuning {label} on {} ({} candidates; first use, cached afterwards)",
            gpu.adapter.name,
            candidates.len()
        );
    }
    let ops = operands(gpu, p);
    let flops = p.flops();
    let mut timed = Vec::with_capacity(candidates.len());
    for c in &candidates {
        let ms = time_on(gpu, p, &ops, *c, gpu.tuning.reps)?;
        lock(gpu).timed += 1;
        timed.push(Timed {
            tile: c.tile.tag(),
            splits: c.splits,
            ms,
            gflops: flops / (ms.max(1e-9) * 1e6),
        });
    }
    timed.sort_by(|a, b| a.ms.total_cmp(&b.ms));
    let best = &timed[0];
    if gpu.tuning.verbose {
        eprintln!(
            "tuned {label}: {}{} at {:.0} GFLOP/s ({} candidates in {:.1} s)",
            best.tile,
            best.splits
                .map(|s| format!(" split {s}"))
                .unwrap_or_default(),
            best.gflops,
            timed.len(),
            start.elapsed().as_secs_f64()
        );
    }
    Ok(ProductEntry {
        tile: best.tile.clone(),
        splits: best.splits,
        candidates: timed,
    })
}

/// The table's entry for `p`, if `p` was tuned or read from the cache on `gpu`.
pub fn entry(gpu: &Gpu, p: &Product) -> Option<ProductEntry> {
    lock(gpu).file.products.get(&p.label()).cloned()
}

/// Candidates timed on `gpu` so far (0 when every choice came from the cache).
pub fn timed_count(gpu: &Gpu) -> usize {
    lock(gpu).timed
}

/// Warnings the tuner met on `gpu` (an unreadable cache, a cache that cannot be written).
pub fn warnings(gpu: &Gpu) -> Vec<String> {
    lock(gpu).warnings.clone()
}

/// Forget what `gpu` learned, as a new process would (the cache stays on disk).
pub fn forget(gpu: &Gpu) {
    *lock(gpu) = State::default();
}

/// The path of `gpu`'s cache file, when it has a cache directory.
pub fn cache_path(gpu: &Gpu) -> Option<PathBuf> {
    gpu.tuning
        .cache_dir
        .as_ref()
        .map(|d| d.join(cache_key(gpu).file_name()))
}

/// The table as text: per product (named by `names`), every candidate with its time and
/// GFLOP/s, the winner marked `*`.
pub fn table_text(gpu: &Gpu, products: &[(String, Product)]) -> String {
    let mut out = format!(
        "tuning table, {} ({}): multiprocessors: {}\n",
        gpu.adapter.name,
        gpu.adapter.driver,
        multiprocessors(gpu).1
    );
    out += &format!(
        "{:<28} {:<16} {:>6} {:>10} {:>10}\n",
        "product", "tile", "split", "ms", "GFLOP/s"
    );
    for (name, p) in products {
        let Some(e) = entry(gpu, p) else {
            out += &format!("{name:<28} (not tuned)\n");
            continue;
        };
        for (i, c) in e.candidates.iter().enumerate() {
            out += &format!(
                "{:<28} {:<16} {:>6} {:>10.3} {:>10.1}{}\n",
                if i == 0 { name.as_str() } else { "" },
                c.tile,
                c.splits.map_or("-".to_string(), |s| s.to_string()),
                c.ms,
                c.gflops,
                if i == 0 { " *" } else { "" }
            );
        }
        if e.candidates.is_empty() {
            out += &format!("{name:<28} {:<16} (from an older table)\n", e.tile);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multiprocessor_counts_come_from_the_setting_the_name_or_the_fallback() {
        use wgpu::DeviceType::{Cpu, DiscreteGpu};
        let h100 = "NVIDIA H100 80GB HBM3";
        assert_eq!(counts_for(h100, DiscreteGpu, None, 2).0, vec![132]);
        assert_eq!(counts_for("NVIDIA H200", DiscreteGpu, None, 2).0, vec![132]);
        assert_eq!(
            counts_for("NVIDIA H100 PCIe", DiscreteGpu, None, 2).0,
            vec![114]
        );
        // The setting wins over the name and the CPU adapter's threads.
        let (c, why) = counts_for(h100, DiscreteGpu, Some(66), 2);
        assert_eq!((c, why.contains("ALEXNET_SMS")), (vec![66], true));
        assert_eq!(counts_for("llvmpipe", Cpu, Some(7), 2).0, vec![7]);
        assert_eq!(counts_for("llvmpipe (LLVM 15)", Cpu, None, 2).0, vec![2]);
        // An unknown card gets every fallback count, and says how to set its own.
        let (c, why) = counts_for("Some Future GPU", DiscreteGpu, None, 2);
        assert_eq!(c, FALLBACK_MULTIPROCESSORS.to_vec());
        assert!(why.contains("ALEXNET_SMS"), "{why}");
    }

    #[test]
    fn tune_modes_parse_and_bad_ones_say_what_is_accepted() {
        assert_eq!("off".parse::<TuneMode>(), Ok(TuneMode::Off));
        assert_eq!(" Cached ".parse::<TuneMode>(), Ok(TuneMode::Cached));
        assert_eq!("full".parse::<TuneMode>(), Ok(TuneMode::Full));
        let e = "fast".parse::<TuneMode>().unwrap_err();
        assert!(
            e.contains("`fast`") && e.contains("off") && e.contains("full"),
            "{e}"
        );
    }

    #[test]
    fn cooperative_candidates_join_only_with_both_features_and_32_wide_subgroups() {
        use crate::gpu::coop;
        use crate::gpu::tiles::Core;
        use wgpu::Features as F;
        let coop_tiles = coop::candidate_tiles();
        let both = F::EXPERIMENTAL_COOPERATIVE_MATRIX | F::SHADER_F16 | F::TIMESTAMP_QUERY;
        for (features, subgroups, offered) in [
            (F::empty(), (32, 32), false),
            (F::SHADER_F16, (32, 32), false),
            (F::EXPERIMENTAL_COOPERATIVE_MATRIX, (32, 32), false),
            (both, (32, 64), false),
            (both, (0, 0), false),
            (both, (32, 32), true),
        ] {
            let list = candidates(coop::availability(features, subgroups).is_ok());
            let what = format!("{features:?} {subgroups:?}");
            assert!(
                candidate_tiles().iter().all(|t| list.contains(t)),
                "{what}: the f32 tiles are always candidates"
            );
            assert_eq!(
                list.iter().filter(|t| t.core == Core::Coop).count(),
                if offered { coop_tiles.len() } else { 0 },
                "{what}"
            );
            assert_eq!(
                coop_tiles.iter().all(|t| list.contains(t)),
                offered,
                "{what}"
            );
        }
    }

    #[test]
    fn product_labels_tell_entries_and_shapes_apart() {
        let s = ConvShape::paper_conv1(128);
        let conv = |entry| Product::Conv { entry, shape: s };
        assert_eq!(
            conv(ConvEntry::Forward).label(),
            "conv.forward n128 3x227x227 k11 s4 p0 g1 o96"
        );
        assert_ne!(
            conv(ConvEntry::Forward).label(),
            conv(ConvEntry::BackwardInput).label()
        );
        let fc6 = Product::Gemm {
            form: GemmForm::ABt,
            m: 128,
            n: 4096,
            k: 9216,
        };
        assert_eq!(fc6.label(), "gemm.forward 128x4096x9216");
        // conv1 forward as a GEMM: 96 rows, N·55·55 columns, 3·11·11 deep.
        assert_eq!(conv(ConvEntry::Forward).dims(), (96, 128 * 55 * 55, 363, 1));
        assert_eq!(
            conv(ConvEntry::BackwardWeight).dims(),
            (96, 363, 128 * 55 * 55, 1)
        );
        assert!(conv(ConvEntry::BackwardWeight).splits_k());
        assert!(!conv(ConvEntry::Forward).splits_k());
    }
}
