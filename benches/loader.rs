//! The input pipeline alone: images/s the training loader delivers (read Parquet, decode,
//! shuffle, assemble batches) from 256² raw shards and from `--encoding jpeg` shards, by
//! loader thread count, and per thread. A GPU that trains at R images/s never waits only if
//! the loader keeps above R: PyTorch's DataLoader fed 1,185 images/s from JPEG folders on a
//! 16-core H200 box (2026-11-27), and our fp32 goal of 6,200 images/s asks for about 400 per
//! core of 16 (800 with the other half of the cores busy elsewhere).
//!
//! `cargo bench --bench loader [-- --quick]`. Data: synthetic 500×375 JPEGs from the fixture
//! photos, ingested once per run into a temporary folder (`$ALEXNET_BENCH_DIR` or the system's
//! temporary directory).
use alexnet::dataset::{Encoding, Loader, LoaderConfig, ShardSet, Shuffle};
use alexnet::ingest::{ingest, IngestConfig};
use std::path::{Path, PathBuf};
use std::time::Instant;

#[path = "common/photos.rs"]
mod photos;

fn scratch() -> PathBuf {
    std::env::var_os("ALEXNET_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir)
        .join("alexnet-bench-loader")
}

fn shards(raw: &Path, root: &Path, encoding: Encoding, images: usize) -> Result<PathBuf, String> {
    let out = root.join(format!("shards-{encoding}"));
    let mut cfg = IngestConfig::new(raw, &out);
    cfg.size = 256;
    cfg.encoding = encoding;
    cfg.overwrite = true;
    // Row groups of 128 images, so every thread count has groups to decode in parallel (a
    // loader thread decodes whole row groups; ImageNet's 1,281,167 images make 10,000 such).
    cfg.shard_rows = 128;
    cfg.jobs = std::thread::available_parallelism().map_or(1, |c| c.get());
    let t = Instant::now();
    ingest(&cfg).map_err(|e| e.to_string())?;
    println!(
        "ingested {images} JPEGs as {encoding} 256² shards in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    Ok(out)
}

/// Images/s of one epoch through the loader with `threads` threads.
fn epoch_rate(set: &ShardSet, threads: usize) -> Result<f64, String> {
    let cfg = LoaderConfig {
        batch: 128,
        seed: 1,
        shuffle: Shuffle::Full,
        drop_last: true,
        threads,
        prefetch: 4,
        ..LoaderConfig::default()
    };
    let t = Instant::now();
    let mut images = 0usize;
    let mut checksum = 0u64;
    for b in Loader::epoch(set, &cfg, 0, 0) {
        let b = b.map_err(|e| e.to_string())?;
        images += b.len();
        // Touch the pixels as the upload would, so nothing is optimised away.
        checksum = checksum.wrapping_add(b.images.iter().step_by(4096).map(|&v| v as u64).sum());
    }
    let secs = t.elapsed().as_secs_f64();
    if images == 0 || checksum == 0 {
        return Err("the loader gave no images".into());
    }
    Ok(images as f64 / secs)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if !args.iter().any(|a| a == "--bench") {
        println!("loader bench: run with `cargo bench --bench loader [-- --quick]`");
        return;
    }
    let quick = args.iter().any(|a| a == "--quick");
    let images = if quick { 512 } else { 3840 };
    let root = scratch();
    let raw = root.join("raw");
    photos::ensure(&raw, images);
    let cores = std::thread::available_parallelism().map_or(1, |c| c.get());
    let mut threads: Vec<usize> = [1, 2, 4, 8, 16, 32]
        .into_iter()
        .filter(|&t| t <= cores)
        .collect();
    if !threads.contains(&cores) {
        threads.push(cores);
    }
    println!("{cores} cores; batches of 128, full shuffle, one epoch per row\n");
    println!("| shards | loader threads | images/s | images/s per thread |");
    println!("|---|---|---|---|");
    for encoding in [Encoding::Raw, Encoding::Jpeg] {
        let set = match shards(&raw, &root, encoding, images)
            .and_then(|d| ShardSet::open(&[d]).map_err(|e| e.to_string()))
        {
            Ok(s) => s,
            Err(e) => {
                println!("| {encoding} | error: {e} | | |");
                continue;
            }
        };
        for &t in &threads {
            match epoch_rate(&set, t) {
                Ok(r) => println!("| {encoding} | {t} | {r:.0} | {:.0} |", r / t as f64),
                Err(e) => println!("| {encoding} | {t} | error: {e} | |"),
            }
        }
    }
}
