//! The shard reader and training loader over shards made by ingest.
mod common;
use alexnet::dataset::{
    footer_key_values, part_of, read_rows, record_batch, Encoding, Loader, LoaderConfig, Row,
    ShardSet, Shuffle, Stats,
};
use alexnet::ingest::{ingest, IngestConfig, RowOrder};
use common::*;
use std::path::{Path, PathBuf};

const S: usize = 32;

/// 2 shards of a 3-class tree with row groups of 3 images: many small groups.
fn shards(dir: &Path) -> ShardSet {
    let raw = dir.join("raw");
    make_tree(&raw, 3, 7, false);
    let mut cfg = IngestConfig::new(&raw, dir.join("out"));
    cfg.size = S;
    cfg.shard_rows = 12;
    cfg.row_group_bytes = 3 * S * S * 3;
    cfg.jobs = 2;
    // File order is class order here, so the checks below can name each row's label.
    cfg.order = RowOrder::Sorted;
    ingest(&cfg).unwrap();
    ShardSet::open(&[dir.join("out")]).unwrap()
}

fn cfg(batch: usize, shuffle: Shuffle, threads: usize) -> LoaderConfig {
    LoaderConfig {
        batch,
        seed: 42,
        shuffle,
        drop_last: false,
        threads,
        prefetch: 2,
        window_groups: 2,
        span: None,
        take: None,
    }
}

fn collect(
    set: &ShardSet,
    c: &LoaderConfig,
    epoch: u64,
    skip: usize,
) -> Vec<alexnet::dataset::Batch> {
    Loader::epoch(set, c, epoch, skip)
        .map(|b| b.unwrap())
        .collect()
}

#[test]
fn file_order_matches_random_access_and_drop_last() {
    let t = tempfile::tempdir().unwrap();
    let set = shards(t.path());
    assert_eq!(set.len(), 21);
    assert!(
        set.row_groups().len() >= 7,
        "want several row groups, got {}",
        set.row_groups().len()
    );
    let batches = collect(&set, &cfg(4, Shuffle::None, 2), 0, 0);
    assert_eq!(batches.len(), 6);
    assert_eq!(batches[5].len(), 1);
    let rows: Vec<u64> = batches.iter().flat_map(|b| b.rows.clone()).collect();
    assert_eq!(rows, (0..21).collect::<Vec<u64>>());
    let all = read_rows(&set, &rows).unwrap();
    let images: Vec<u8> = batches.iter().flat_map(|b| b.images.clone()).collect();
    assert!(images == all.images);
    assert_eq!(
        batches
            .iter()
            .flat_map(|b| b.labels.clone())
            .collect::<Vec<_>>(),
        all.labels
    );
    // Labels follow the sorted class folders, 7 images each.
    assert_eq!(all.labels, (0..21).map(|i| i / 7).collect::<Vec<i32>>());
    let mut dl = cfg(4, Shuffle::None, 2);
    dl.drop_last = true;
    let loader = Loader::epoch(&set, &dl, 0, 0);
    assert_eq!(loader.batches(), 5);
    assert!(loader.map(|b| b.unwrap()).all(|b| b.len() == 4));
}

#[test]
fn full_shuffle_is_a_deterministic_permutation() {
    let t = tempfile::tempdir().unwrap();
    let set = shards(t.path());
    let c = cfg(5, Shuffle::Full, 1);
    let a = collect(&set, &c, 3, 0);
    let rows: Vec<u64> = a.iter().flat_map(|b| b.rows.clone()).collect();
    let mut sorted = rows.clone();
    sorted.sort();
    assert_eq!(
        sorted,
        (0..21).collect::<Vec<u64>>(),
        "an epoch visits every row once"
    );
    assert_ne!(rows, sorted, "shuffled");
    // Same (seed, epoch), more threads: the same batches, pixels included.
    assert!(collect(&set, &cfg(5, Shuffle::Full, 4), 3, 0) == a);
    // Another epoch, another order.
    let other: Vec<u64> = collect(&set, &c, 4, 0)
        .iter()
        .flat_map(|b| b.rows.clone())
        .collect();
    assert_ne!(other, rows);
    // Resuming mid-epoch gives the rest of the same epoch.
    assert!(collect(&set, &c, 3, 2) == a[2..]);
    // Each batch's pixels and labels are those of its rows.
    for b in &a {
        let direct = read_rows(&set, &b.rows).unwrap();
        assert!(direct.images == b.images && direct.labels == b.labels);
    }
}

/// One rank's loader (`take`: its rows of every global batch) hands out exactly those rows of
/// the whole loader's batches, in the same batches, over JPEG shards it decodes only partly.
#[test]
fn a_ranks_loader_gives_its_rows_of_every_global_batch() {
    let t = tempfile::tempdir().unwrap();
    let raw = t.path().join("raw");
    make_tree(&raw, 3, 7, false);
    let mut ic = IngestConfig::new(&raw, t.path().join("out"));
    ic.size = S;
    ic.shard_rows = 12;
    ic.row_group_bytes = 3 * S * S * 3;
    ic.encoding = Encoding::Jpeg;
    ingest(&ic).unwrap();
    let set = ShardSet::open(&[t.path().join("out")]).unwrap();
    for (shuffle, drop_last) in [(Shuffle::Full, true), (Shuffle::None, false)] {
        let whole = LoaderConfig {
            drop_last,
            ..cfg(6, shuffle, 2)
        };
        let all = collect(&set, &whole, 1, 0);
        for take in [0..2, 2..6, 5..6] {
            let mine = LoaderConfig {
                take: Some(take.clone()),
                ..whole.clone()
            };
            let got = collect(&set, &mine, 1, 0);
            assert_eq!(got.len(), all.len(), "{take:?}: another batch count");
            let px = S * S * 3;
            for (g, a) in got.iter().zip(&all) {
                let r = take.start.min(a.len())..take.end.min(a.len());
                assert_eq!(g.rows, a.rows[r.clone()], "{take:?}");
                assert_eq!(g.labels, a.labels[r.clone()], "{take:?}");
                assert!(g.images == a.images[r.start * px..r.end * px], "{take:?}");
            }
        }
    }
    // The parts of a set are contiguous, cover it once and a span loader reads just them.
    for (len, parts) in [(21, 3), (21, 2), (5, 7), (0, 2)] {
        let ranges: Vec<_> = (0..parts).map(|p| part_of(len, p, parts)).collect();
        assert_eq!(ranges[0].start, 0);
        assert_eq!(ranges[parts - 1].end, len);
        assert!(ranges.windows(2).all(|w| w[0].end == w[1].start));
        assert!(ranges
            .iter()
            .all(|r| r.len() + 1 >= len / parts && r.len() <= len.div_ceil(parts)));
    }
    let plain = cfg(4, Shuffle::None, 2);
    let whole: Vec<u64> = collect(&set, &plain, 0, 0)
        .into_iter()
        .flat_map(|b| b.rows)
        .collect();
    let mut joined = Vec::new();
    for p in 0..3 {
        let c = LoaderConfig {
            span: Some(part_of(set.len(), p, 3)),
            ..plain.clone()
        };
        for b in collect(&set, &c, 0, 0) {
            assert_eq!(read_rows(&set, &b.rows).unwrap().images, b.images);
            joined.extend(b.rows);
        }
    }
    assert_eq!(joined, whole);
}

#[test]
fn dropping_a_loader_midway_stops_it_and_wait_time_is_counted() {
    let t = tempfile::tempdir().unwrap();
    let set = shards(t.path());
    let start = std::time::Instant::now();
    let mut loader = Loader::epoch(&set, &cfg(2, Shuffle::Full, 3), 0, 0);
    assert!(loader.next().unwrap().is_ok());
    assert!(loader.wait_time() <= start.elapsed());
    drop(loader); // must not hang with readers blocked on the gate or the channel
}

fn write_shard(path: &Path, size: usize, classes: &[String], version: Option<u64>) {
    let rows = vec![Row {
        image: vec![7; size * size * 3],
        label: 0,
        wnid: classes[0].clone(),
        source: "a/b.JPEG".into(),
        orig_width: 10,
        orig_height: 10,
    }];
    let mut stats = Stats::new(size);
    stats.add_image(&rows[0].image);
    let batch = record_batch(path, Encoding::Raw, classes, &rows).unwrap();
    let file = std::fs::File::create(path).unwrap();
    let mut w = parquet::arrow::ArrowWriter::try_new(file, batch.schema(), None).unwrap();
    w.write(&batch).unwrap();
    for mut kv in footer_key_values(&stats, Encoding::Raw, classes, &[]) {
        if let (Some(v), "alexnet") = (version, kv.key.as_str()) {
            kv.value = kv
                .value
                .map(|s| s.replace("\"format_version\":1", &format!("\"format_version\":{v}")));
        }
        w.append_key_value_metadata(kv);
    }
    w.close().unwrap();
}

#[test]
fn open_refuses_mismatched_shards_and_unknown_versions() {
    let t = tempfile::tempdir().unwrap();
    let classes = vec!["n1".to_string(), "n2".to_string()];
    let (a, b, c, d) = ["a", "b", "c", "d"]
        .map(|n| t.path().join(format!("{n}.parquet")))
        .into();
    write_shard(&a, 8, &classes, None);
    write_shard(&b, 16, &classes, None);
    write_shard(&c, 8, &["n2".to_string(), "n1".to_string()], None);
    write_shard(&d, 8, &classes, Some(99));
    // A file named twice is one file: its images count once.
    let ok = ShardSet::open(&[a.clone(), a.clone()]).unwrap();
    assert_eq!((ok.stats().count, ok.len(), ok.files().len()), (1, 1, 1));
    for (other, word) in [(&b, "size"), (&c, "classes")] {
        let err = ShardSet::open(&[a.clone(), other.clone()])
            .err()
            .unwrap()
            .to_string();
        assert!(
            err.contains("a.parquet")
                && err.contains(other.file_name().unwrap().to_str().unwrap())
                && err.contains(word),
            "{err}"
        );
    }
    let err = ShardSet::open(std::slice::from_ref(&d))
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("d.parquet") && err.contains("99"), "{err}");
    let empty: Vec<PathBuf> = Vec::new();
    assert!(ShardSet::open(&empty).is_err());
}
