//! `ingest` and `inspect` against what a user's disk holds: links that loop, an output inside
//! the raw folder, a second writer, an unfinished or failed run, a full disk, names that are
//! not UTF-8, files edited after ingest (issue 13).
mod common;

use alexnet::dataset::ShardSet;
use common::*;
use std::path::{Path, PathBuf};
use std::process::Command;

const SIZE: &str = "48";

fn ingest(args: &[&str]) -> (bool, String, String) {
    let mut all = vec!["ingest", "--quiet", "--size", SIZE];
    all.extend_from_slice(args);
    alexnet(&all)
}

fn inspect_json(paths: &[&Path]) -> serde_json::Value {
    let mut args = vec!["inspect", "--json"];
    args.extend(paths.iter().map(|p| s(p)));
    let (ok, out, err) = alexnet(&args);
    assert!(ok, "inspect: {err}");
    serde_json::from_str(&out).unwrap()
}

fn sources(dir: &Path) -> Vec<String> {
    let set = ShardSet::open(&[dir.to_path_buf()]).unwrap();
    alexnet::export::shard_columns::read_shard_names(set.files())
        .unwrap()
        .sources
}

#[cfg(unix)]
#[test]
fn links_back_up_the_tree_and_loops_are_read_once() {
    use std::os::unix::fs::symlink;
    let t = tempfile::tempdir().unwrap();
    let raw = t.path().join("raw");
    let n = make_tree(&raw, 2, 4, false);
    let classes: Vec<PathBuf> = {
        let mut v: Vec<PathBuf> = std::fs::read_dir(&raw)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        v.sort();
        v
    };
    // Two links back to the root and a loop between the classes: followed naively, the
    // tree is infinite (the scan used to hang here).
    symlink("..", classes[0].join("up")).unwrap();
    symlink("..", classes[1].join("up")).unwrap();
    symlink(&classes[1], classes[0].join("other")).unwrap();
    symlink(&classes[0], classes[1].join("other")).unwrap();
    let out = t.path().join("out");
    let (ok, _, err) = run_with_timeout(
        Command::new(env!("CARGO_BIN_EXE_alexnet")).args([
            "ingest",
            "--quiet",
            "--size",
            SIZE,
            s(&raw),
            s(&out),
        ]),
        120,
    );
    assert!(ok, "{err}");
    let got = sources(&out);
    assert_eq!(got.len(), n, "each image once: {got:?}");
    assert!(got.iter().all(|s| s.matches('/').count() == 1), "{got:?}");
    let (ok, out_text, _) = alexnet(&["ingest", "--help"]);
    assert!(ok && out_text.contains("inode"), "{out_text}");
}

#[test]
fn an_output_inside_raw_is_refused_and_shard_folders_are_not_classes() {
    let t = tempfile::tempdir().unwrap();
    let raw = t.path().join("raw");
    make_tree(&raw, 2, 3, false);
    let inside = raw.join("out");
    let (ok, _, err) = ingest(&[s(&raw), s(&inside)]);
    assert!(!ok && err.contains("inside the raw folder"), "{err}");
    assert!(!inside.exists(), "the refused output was created");
    // An earlier version's output left in RAW: shards and no images.
    let first = t.path().join("first");
    ingest_ok(&["--size", SIZE, s(&raw), s(&first)]);
    std::fs::rename(&first, &inside).unwrap();
    let again = t.path().join("again");
    ingest_ok(&["--size", SIZE, s(&raw), s(&again)]);
    let v = inspect_json(&[&again]);
    assert_eq!(v["classes"].as_array().unwrap().len(), 2, "{v}");
    assert!(!v["classes"].to_string().contains("out"), "{v}");
}

#[test]
fn a_second_ingest_into_the_same_output_is_refused() {
    let t = tempfile::tempdir().unwrap();
    let raw = t.path().join("raw");
    make_tree(&raw, 2, 2, false);
    let out = t.path().join("out");
    std::fs::create_dir(&out).unwrap();
    // This test process is the first writer; the binary is the second.
    let held = alexnet::lock::FolderLock::folder(&out, "a test").unwrap();
    let (ok, _, err) = ingest(&[s(&raw), s(&out)]);
    assert!(!ok, "two ingests wrote one folder");
    assert!(
        err.contains("in use") && err.contains(&format!("process {}", std::process::id())),
        "{err}"
    );
    assert!(shard_bytes(&out).is_empty());
    drop(held);
    ingest_ok(&["--size", SIZE, s(&raw), s(&out)]);
    // A single-file output is locked the same way.
    let file = t.path().join("one.parquet");
    let lock = t.path().join(".one.parquet.lock");
    let held =
        alexnet::lock::FolderLock::acquire(&lock, &file, "a test", alexnet::lock::Mode::Exclusive)
            .unwrap();
    let (ok, _, err) = ingest(&[s(&raw), s(&file)]);
    assert!(!ok && err.contains("in use"), "{err}");
    drop(held);
}

#[test]
fn an_unfinished_ingest_is_reported_and_refused_by_train() {
    let t = tempfile::tempdir().unwrap();
    let raw = fashion_raw(t.path(), 40);
    let out = t.path().join("shards");
    // Half of a two-machine ingest: shards 0, 2, 4 of 5 (8 inputs each).
    ingest_ok(&[
        s(&raw),
        s(&out),
        "--size",
        "70",
        "--shard-rows",
        "8",
        "--shard",
        "0/2",
    ]);
    let (ok, text, err) = alexnet(&["inspect", s(&out)]);
    assert!(ok, "{err}");
    assert!(text.contains("incomplete: 24 of 40 inputs"), "{text}");
    let v = inspect_json(&[&out]);
    assert_eq!(v["incomplete"][0]["inputs"], 24, "{v}");
    assert_eq!(v["incomplete"][0]["total_inputs"], 40, "{v}");
    let w = "8,16,24,24,16,64,64";
    let train = |extra: &[&str]| {
        let run = t.path().join(format!("run{}", extra.len()));
        let mut args = vec!["train", "--quiet", "--input-size", "67", "--widths", w];
        args.extend([s(&out), "--out", s(&run), "--batch", "8", "--steps", "1"]);
        args.extend_from_slice(extra);
        alexnet(&args)
    };
    let (ok, _, err) = train(&[]);
    assert!(
        !ok && err.contains("incomplete: 24 of 40") && err.contains("--allow-incomplete"),
        "{err}"
    );
    let (ok, _, err) = train(&["--allow-incomplete"]);
    assert!(ok, "{err}");
    // The other machine's half completes the folder.
    ingest_ok(&[
        s(&raw),
        s(&out),
        "--size",
        "70",
        "--shard-rows",
        "8",
        "--shard",
        "1/2",
    ]);
    let v = inspect_json(&[&out]);
    assert_eq!(v["incomplete"], serde_json::json!([]), "{v}");
    assert_eq!(v["count"], 40);
    // A shard deleted later (or never written by a killed run) is noticed again.
    std::fs::remove_file(out.join("part-00003.parquet")).unwrap();
    let (_, text, _) = alexnet(&["inspect", s(&out)]);
    assert!(text.contains("incomplete: 32 of 40 inputs"), "{text}");
    // Files named one by one are the user's choice, not an unfinished folder.
    let v = inspect_json(&[&out.join("part-00000.parquet")]);
    assert_eq!(v["incomplete"], serde_json::json!([]), "{v}");
}

#[test]
fn a_strict_failure_writes_no_shard_holding_rejects() {
    let t = tempfile::tempdir().unwrap();
    let raw = t.path().join("raw");
    // 2 classes × 4 images, then 4 bad files that sort last: with 4 inputs a shard, in
    // sorted order, the last shard holds nothing but rejects.
    make_tree(&raw, 2, 4, true);
    let out = t.path().join("out");
    let args = [
        s(&raw),
        s(&out),
        "--shard-rows",
        "4",
        "--order",
        "sorted",
        "--strict",
    ];
    let (ok, _, err) = ingest(&args);
    assert!(!ok, "--strict passed with rejects");
    let shards = shard_bytes(&out);
    assert_eq!(
        shards.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>(),
        ["part-00000.parquet", "part-00001.parquet"],
        "a shard with rejects was written"
    );
    assert!(
        err.contains("rejected") && err.contains("--resume"),
        "{err}"
    );
    let set = ShardSet::open(std::slice::from_ref(&out)).unwrap();
    assert!(set.rejects().is_empty() && set.len() == 8);
    assert_eq!(
        std::fs::read_to_string(out.join("rejects.jsonl"))
            .unwrap()
            .lines()
            .count(),
        4
    );
    assert!(
        !set.incomplete().is_empty(),
        "the failed run looks complete"
    );
    // Fixed inputs (same names): --resume keeps the good shards and writes the rest.
    let good = jpeg_bytes(&load_rgb(&fixture("coffee.jpg")), 90);
    let last = raw.join(format!("n{:08}", 1000 + 7));
    for (name, _) in bad_files() {
        std::fs::write(last.join(name), &good).unwrap();
    }
    let mut again = args.to_vec();
    again.push("--resume");
    let (ok, _, err) = ingest(&again);
    assert!(ok, "{err}");
    let set = ShardSet::open(std::slice::from_ref(&out)).unwrap();
    assert_eq!((set.len(), set.rejects().len()), (12, 0));
    assert!(set.incomplete().is_empty());
}

#[cfg(unix)]
#[test]
fn a_full_disk_leaves_no_temporary_shard() {
    let t = tempfile::tempdir().unwrap();
    let raw = t.path().join("raw");
    make_tree(&raw, 2, 6, false);
    let out = t.path().join("out");
    // A file-size limit makes writes fail as a full disk does (EFBIG instead of ENOSPC),
    // with SIGXFSZ ignored so the write returns the error instead of killing the process.
    let script = format!(
        "trap '' XFSZ; ulimit -f 16; exec '{}' ingest --quiet --size 64 --shard-rows 100 '{}' '{}'",
        env!("CARGO_BIN_EXE_alexnet"),
        s(&raw),
        s(&out)
    );
    let (ok, _, err) = run_with_timeout(Command::new("sh").args(["-c", &script]), 120);
    assert!(!ok, "the write cannot have fitted in 8 KiB");
    assert!(err.contains("part-00000.parquet"), "{err}");
    let left: Vec<String> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".tmp") || n.ends_with(".parquet"))
        .collect();
    assert!(left.is_empty(), "left behind: {left:?}");
}

#[test]
fn smaller_things_a_disk_holds() {
    let t = tempfile::tempdir().unwrap();
    // --labels naming a missing file says so, even for a folder without images.
    let flat = t.path().join("flat");
    std::fs::create_dir(&flat).unwrap();
    let missing = t.path().join("LOC_val_solution.csv");
    let (ok, _, err) = ingest(&[s(&flat), s(&t.path().join("o")), "--labels", s(&missing)]);
    assert!(
        !ok && err.contains("LOC_val_solution.csv") && err.contains("no such file"),
        "{err}"
    );
    // --size beyond any memory: one line, nothing created.
    let raw = t.path().join("raw");
    make_tree(&raw, 2, 3, false);
    let big = t.path().join("big");
    let (ok, _, err) = alexnet(&["ingest", "--quiet", s(&raw), s(&big), "--size", "100000"]);
    assert!(
        !ok && err.contains("memory") && err.contains("--size 100000"),
        "{err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(!big.exists());

    // An OUT.parquet that is a folder: --overwrite could not replace it either.
    let dir_named_parquet = t.path().join("d.parquet");
    std::fs::create_dir(&dir_named_parquet).unwrap();
    let (ok, _, err) = ingest(&[s(&raw), s(&dir_named_parquet), "--overwrite"]);
    assert!(!ok && err.contains("is a directory"), "{err}");

    let out = t.path().join("out");
    ingest_ok(&["--size", SIZE, s(&raw), s(&out)]);
    let shard = out.join("part-00000.parquet");
    // A file given twice, or through its folder too, counts once.
    let once = inspect_json(&[&out])["count"].clone();
    assert_eq!(once, 6);
    assert_eq!(inspect_json(&[&shard, &shard])["count"], once);
    assert_eq!(inspect_json(&[&out, &shard])["count"], once);
    // A footer whose count disagrees with the rows (a row deleted by hand) is refused.
    let edited = t.path().join("edited.parquet");
    rewrite_shard(
        &shard,
        &edited,
        parquet::basic::Compression::ZSTD(Default::default()),
        |b| b.slice(1, b.num_rows() - 1),
    );
    let (ok, _, err) = alexnet(&["inspect", s(&edited)]);
    assert!(
        !ok && err.contains("footer says 6") && err.contains("holds 5"),
        "{err}"
    );
    // int32 labels, as raw shards were written before they took Hugging Face's int64
    // ClassLabel field, read as the same labels.
    let wide = t.path().join("narrow.parquet");
    rewrite_shard(&shard, &wide, parquet::basic::Compression::SNAPPY, |b| {
        let i = b.schema().index_of("label").unwrap();
        let labels = b
            .column(i)
            .as_any()
            .downcast_ref::<arrow_array::Int64Array>()
            .unwrap();
        let narrow: arrow_array::Int32Array = labels
            .iter()
            .map(|v| v.map(|l| i32::try_from(l).unwrap()))
            .collect();
        let mut fields: Vec<arrow_schema::Field> = b
            .schema()
            .fields()
            .iter()
            .map(|f| f.as_ref().clone())
            .collect();
        fields[i] = arrow_schema::Field::new("label", arrow_schema::DataType::Int32, false);
        let schema = arrow_schema::Schema::new_with_metadata(fields, b.schema().metadata().clone());
        let mut cols = b.columns().to_vec();
        cols[i] = std::sync::Arc::new(narrow);
        arrow_array::RecordBatch::try_new(std::sync::Arc::new(schema), cols).unwrap()
    });
    let rows = |p: &Path| {
        let set = ShardSet::open(&[p.to_path_buf()]).unwrap();
        alexnet::dataset::read_rows(&set, &(0..set.len() as u64).collect::<Vec<_>>()).unwrap()
    };
    let (a, b) = (rows(&shard), rows(&wide));
    assert_eq!(a.labels, b.labels);
    assert!(a.labels.iter().any(|&l| l != a.labels[0]), "{:?}", a.labels);
}

#[cfg(target_os = "linux")]
#[test]
fn a_name_that_is_not_utf8_is_a_reject_not_a_replacement_character() {
    use std::os::unix::ffi::OsStrExt;
    let t = tempfile::tempdir().unwrap();
    let raw = t.path().join("raw");
    make_tree(&raw, 2, 2, false);
    let class = raw.join(format!("n{:08}", 1000));
    let name = std::ffi::OsStr::from_bytes(b"caf\xe9.jpg");
    std::fs::copy(fixture("coffee.jpg"), class.join(name)).unwrap();
    let out = t.path().join("out");
    ingest_ok(&["--size", SIZE, s(&raw), s(&out)]);
    let got = sources(&out);
    assert_eq!(got.len(), 4, "{got:?}");
    assert!(!got.iter().any(|s| s.contains('\u{FFFD}')), "{got:?}");
    let rejects = std::fs::read_to_string(out.join("rejects.jsonl")).unwrap();
    assert!(rejects.contains("not valid UTF-8"), "{rejects}");
}
