//! Ingest throughput on synthetic ImageNet-like JPEGs (500×375, quality 90, made from the
//! fixture photos): images/s, images/s per core, and where the time goes.
//!
//! `cargo bench --bench ingest` (optionally `-- N` images, default 600; under `cargo test` a
//! 12-image smoke run). The raw folder is
//! kept under `$CARGO_TARGET_TMPDIR/bench-ingest/raw` so `benches/ingest_baseline.py` can run
//! Pillow + pyarrow on the very same files.
use alexnet::dataset::Encoding;
use alexnet::ingest::{ingest, IngestConfig};
use std::path::PathBuf;

#[path = "common/photos.rs"]
mod photos;

fn main() {
    // `cargo bench` passes --bench; `cargo test --all-targets` runs this binary without it,
    // and then a small smoke run keeps the test suite fast.
    let bench = std::env::args().any(|a| a == "--bench");
    let n: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(if bench { 600 } else { 12 });
    let dir = if bench {
        "bench-ingest"
    } else {
        "bench-ingest-smoke"
    };
    let root = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(dir);
    let raw = root.join("raw");
    photos::ensure(&raw, n);
    let cores = std::thread::available_parallelism()
        .map(|c| c.get())
        .unwrap_or(1);
    println!(
        "ingest bench: {n} JPEGs 500×375 q90 → 256×256, {cores} threads ({})",
        raw.display()
    );
    for encoding in [Encoding::Raw, Encoding::Jpeg] {
        let out = root.join(format!("out-{encoding}"));
        let mut cfg = IngestConfig::new(&raw, &out);
        cfg.encoding = encoding;
        cfg.jobs = cores;
        cfg.overwrite = true;
        let s = ingest(&cfg).unwrap_or_else(|e| panic!("ingest failed: {e}"));
        let t = &s.times;
        let cpu = t.read + t.decode + t.resize + t.encode + t.write;
        let pct = |x: f64| 100.0 * x / cpu.max(1e-9);
        let ips = s.rows as f64 / s.seconds;
        println!(
            "{encoding:>4}: {:.2} s, {ips:.1} images/s, {:.1} images/s per core | thread time: read {:.0}% decode {:.0}% resize {:.0}% encode {:.0}% write(stats+parquet+zstd) {:.0}%",
            s.seconds,
            ips / cores as f64,
            pct(t.read),
            pct(t.decode),
            pct(t.resize),
            pct(t.encode),
            pct(t.write)
        );
        let bytes: u64 = std::fs::read_dir(&out)
            .map(|d| {
                d.filter_map(|e| e.ok()?.metadata().ok())
                    .map(|m| m.len())
                    .sum()
            })
            .unwrap_or(0);
        println!(
            "      {} rows, {:.1} MiB on disk",
            s.rows,
            bytes as f64 / 1048576.0
        );
    }
}
