//! Neighbour search over a features file with a known answer, and the conv1 filter image;
//! no GPU needed.
use alexnet::export::filters::filters_size;
use alexnet::export::{neighbors, FeatureWriter, FeaturesMeta, NeighborsConfig};
use alexnet::model::{Checkpoint, ModelConfig, Params};

fn meta(width: usize) -> FeaturesMeta {
    FeaturesMeta {
        layer: "fc7".into(),
        width,
        checkpoint: "synthetic".into(),
        data: Vec::new(),
        input_size: 67,
        stored_size: 72,
        mean_image: "checkpoint".into(),
    }
}

#[test]
fn a_perturbed_copy_is_found_across_row_groups() {
    // 5000 rows span two row groups (4096 rows each); rows 10 and 4500 are near copies.
    let (rows, dim) = (5000usize, 64usize);
    let mut data: Vec<f32> = (0..rows * dim)
        .map(|i| alexnet::shape::normal(3, i as u32))
        .collect();
    for d in 0..dim {
        data[4500 * dim + d] = data[10 * dim + d] + 0.01 * alexnet::shape::normal(4, d as u32);
    }
    let t = tempfile::tempdir().unwrap();
    let path = t.path().join("f.parquet");
    let mut w = FeatureWriter::create(&path, &meta(dim)).unwrap();
    let sources: Vec<String> = (0..rows).map(|r| format!("c/img_{r:05}.JPEG")).collect();
    let wnids = vec!["c"; rows];
    let labels: Vec<i32> = (0..rows as i32).map(|r| r % 5).collect();
    for start in (0..rows).step_by(1000) {
        let end = (start + 1000).min(rows);
        let src: Vec<&str> = sources[start..end].iter().map(|s| s.as_str()).collect();
        w.write(
            &src,
            &labels[start..end],
            &wnids[start..end],
            &data[start * dim..end * dim],
        )
        .unwrap();
    }
    w.finish().unwrap();
    let file = alexnet::export::FeatureFile::open(&path).unwrap();
    assert_eq!((file.len(), file.row_groups()), (rows, 2));

    let ask = |query: &str, k: usize| {
        neighbors(&NeighborsConfig {
            features: path.clone(),
            query: query.into(),
            k,
            sheet: None,
            data: Vec::new(),
            overwrite: false,
            query_image: None,
        })
        .unwrap()
    };
    let r = ask("c/img_00010.JPEG", 5);
    assert_eq!(r.query.row, Some(10));
    assert_eq!(r.neighbors[0].row, Some(4500));
    assert_eq!(r.neighbors[0].source, "c/img_04500.JPEG");
    let exact = |a: usize, b: usize| -> f64 {
        (0..dim)
            .map(|d| (data[a * dim + d] as f64 - data[b * dim + d] as f64).powi(2))
            .sum::<f64>()
            .sqrt()
    };
    assert!((r.neighbors[0].distance - exact(10, 4500)).abs() < 1e-9);
    // The rest agree with brute force over every other row.
    let mut all: Vec<(f64, usize)> = (0..rows)
        .filter(|&j| j != 10)
        .map(|j| (exact(10, j), j))
        .collect();
    all.sort_by(|a, b| a.0.total_cmp(&b.0));
    let got: Vec<usize> = r.neighbors.iter().filter_map(|n| n.row).collect();
    let want: Vec<usize> = all.iter().take(5).map(|e| e.1).collect();
    assert_eq!(got, want);

    let r = ask("4500", 1);
    assert_eq!((r.query.row, r.neighbors[0].row), (Some(4500), Some(10)));
    assert!(r.to_string().contains("c/img_00010.JPEG"));

    let err = neighbors(&NeighborsConfig {
        features: path.clone(),
        query: "5000".into(),
        k: 1,
        sheet: Some(t.path().join("s.png")),
        data: Vec::new(),
        overwrite: false,
        query_image: None,
    })
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("`5000`") && err.contains("below 5000"),
        "{err}"
    );
    let err = neighbors(&NeighborsConfig {
        features: path.clone(),
        query: "1".into(),
        k: 1,
        sheet: Some(t.path().join("s.png")),
        data: Vec::new(),
        overwrite: false,
        query_image: None,
    })
    .unwrap_err()
    .to_string();
    assert!(err.contains("--data"), "{err}");
}

#[test]
fn a_writer_dropped_before_finish_leaves_nothing() {
    let t = tempfile::tempdir().unwrap();
    let path = t.path().join("f.parquet");
    let mut w = FeatureWriter::create(&path, &meta(2)).unwrap();
    w.write(&["a"], &[0], &["c"], &[1.0, 2.0]).unwrap();
    // A wrong number of floats is refused, naming the file.
    let err = w
        .write(&["b"], &[0], &["c"], &[1.0])
        .unwrap_err()
        .to_string();
    assert!(err.contains("f.parquet"), "{err}");
    drop(w);
    let left: Vec<_> = std::fs::read_dir(t.path()).unwrap().collect();
    assert!(left.is_empty(), "left behind: {left:?}");
}

#[test]
fn filters_draw_conv1_as_two_group_blocks() {
    let cfg = ModelConfig::small(67, 16, 3);
    assert_eq!(cfg.groups, 2);
    let ck = Checkpoint::new(cfg.clone(), Params::init(&cfg, 5).unwrap());
    let t = tempfile::tempdir().unwrap();
    let w = t.path().join("w.safetensors");
    ck.save(&w).unwrap();
    let out = t.path().join("filters.png");
    let bin = env!("CARGO_BIN_EXE_alexnet");
    let o = std::process::Command::new(bin)
        .args([
            "filters",
            "--checkpoint",
            w.to_str().unwrap(),
            out.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let img = image::open(&out).unwrap().into_rgb8();
    let count = cfg.widths[0];
    assert_eq!(img.dimensions(), filters_size(count, 11, 2, 4));
    // Each kernel is stretched to 0..255: a random kernel shows many colours, with both ends.
    let mut colours: Vec<[u8; 3]> = img.pixels().map(|p| p.0).collect();
    colours.sort();
    colours.dedup();
    assert!(colours.len() > 100, "only {} colours", colours.len());
    let flat: Vec<u8> = img.pixels().flat_map(|p| p.0).collect();
    assert!(flat.contains(&0) && flat.contains(&255));
    // The first kernel's own pixels span 0..255 (normalised per kernel).
    let (lo, hi) = (1..45u32)
        .flat_map(|y| (1..45u32).map(move |x| (x, y)))
        .flat_map(|(x, y)| img.get_pixel(x, y).0)
        .fold((255u8, 0u8), |(a, b), v| (a.min(v), b.max(v)));
    assert_eq!((lo, hi), (0, 255));
}
