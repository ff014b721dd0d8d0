//! Nearest-neighbour search on the CPU: synthetic `rows × dim` f32 vectors in memory (default
//! 100,000 × 4096, the size of ImageNet's fc7 features / 12.8), one query and eight queries
//! per pass, as time per pass, rows/s and GB/s of vectors read.
//!
//! `cargo bench --bench neighbors` or `cargo bench --bench neighbors -- ROWS DIM`.
use alexnet::export::nearest;
use rayon::prelude::*;
use std::time::Instant;

fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let rows = args.first().copied().unwrap_or(100_000);
    let dim = args.get(1).copied().unwrap_or(4096);
    let k = 6;
    let t = Instant::now();
    let mut data = vec![0f32; rows * dim];
    data.par_chunks_mut(dim).enumerate().for_each(|(r, row)| {
        let seed = alexnet::shape::hash_u32(r as u32 ^ 0x9e37_79b9);
        for (i, v) in row.iter_mut().enumerate() {
            // ReLU-like features: non-negative, about half zero.
            *v = alexnet::shape::normal(seed, i as u32).max(0.0);
        }
    });
    println!(
        "{rows} × {dim} f32 ({:.2} GB) generated in {:.1}s; {} rayon threads",
        (rows * dim * 4) as f64 / 1e9,
        t.elapsed().as_secs_f64(),
        rayon::current_num_threads()
    );
    for nq in [1usize, 8] {
        let queries: Vec<Vec<f32>> = (0..nq)
            .map(|j| data[(j * 7919 % rows) * dim..][..dim].to_vec())
            .collect();
        let skip: Vec<Option<usize>> = (0..nq).map(|j| Some(j * 7919 % rows)).collect();
        // One warm-up pass, then the best of three.
        let _ = nearest(&queries, &skip, &data, dim, 0, k);
        let mut best = f64::INFINITY;
        for _ in 0..3 {
            let t = Instant::now();
            let r = nearest(&queries, &skip, &data, dim, 0, k);
            best = best.min(t.elapsed().as_secs_f64());
            assert_eq!(r.len(), nq);
        }
        println!(
            "{nq} quer{} k={k}: {:.3}s per pass, {:.2} M rows/s, {:.2} GB/s of vectors, {:.2} GFLOP/s",
            if nq == 1 { "y" } else { "ies" },
            best,
            rows as f64 / best / 1e6,
            (rows * dim * 4) as f64 / best / 1e9,
            // 2 flops per element for ‖x‖², 2 per element per query for q·x.
            (2 * rows * dim * (nq + 1)) as f64 / best / 1e9
        );
    }
    file_pass(&data[..rows.min(20_000) * dim], dim, k);
}

/// The whole `neighbors` path on a features file: Parquet decode (zstd) plus the search.
fn file_pass(data: &[f32], dim: usize, k: usize) {
    let rows = data.len() / dim;
    let dir = std::env::temp_dir().join(format!("alexnet-neighbors-bench-{}", std::process::id()));
    let _ = std::fs::create_dir_all(&dir);
    let path = dir.join("features.parquet");
    let meta = alexnet::export::FeaturesMeta {
        layer: "fc7".into(),
        width: dim,
        checkpoint: "synthetic".into(),
        data: Vec::new(),
        input_size: 227,
        stored_size: 256,
        mean_image: "checkpoint".into(),
    };
    let t = Instant::now();
    let sources: Vec<String> = (0..rows).map(|r| format!("bench/{r:07}.JPEG")).collect();
    let labels = vec![0i32; rows];
    let wnids = vec!["bench"; rows];
    let run = || -> Result<(), alexnet::export::ExportError> {
        let mut w = alexnet::export::FeatureWriter::create(&path, &meta)?;
        for start in (0..rows).step_by(1024) {
            let end = (start + 1024).min(rows);
            let src: Vec<&str> = sources[start..end].iter().map(|s| s.as_str()).collect();
            w.write(
                &src,
                &labels[start..end],
                &wnids[start..end],
                &data[start * dim..end * dim],
            )?;
        }
        w.finish()?;
        Ok(())
    };
    if let Err(e) = run() {
        eprintln!("file pass skipped: {e}");
        return;
    }
    let written = t.elapsed().as_secs_f64();
    let bytes = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
    let t = Instant::now();
    let r = alexnet::export::neighbors(&alexnet::export::NeighborsConfig {
        features: path.clone(),
        query: "17".into(),
        k,
        sheet: None,
        data: Vec::new(),
        overwrite: false,
        query_image: None,
    });
    let searched = t.elapsed().as_secs_f64();
    let _ = std::fs::remove_dir_all(&dir);
    match r {
        Ok(_) => println!(
            "file of {rows} rows ({:.2} GB on disk, written in {written:.1}s): neighbors took {searched:.2}s, {:.2} M rows/s",
            bytes as f64 / 1e9,
            rows as f64 / searched / 1e6
        ),
        Err(e) => eprintln!("file pass failed: {e}"),
    }
}
