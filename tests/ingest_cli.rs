//! `alexnet ingest` / `alexnet inspect` end to end through the built binary.
// Index loops read like the maths for 3×3 matrices.
#![allow(clippy::needless_range_loop)]
mod common;
use alexnet::dataset::{read_rows, Encoding, ShardSet};
use common::*;
use std::path::{Path, PathBuf};

const SIZE: &str = "48";

fn open(paths: &[&Path]) -> ShardSet {
    ShardSet::open(
        &paths
            .iter()
            .map(|p| p.to_path_buf())
            .collect::<Vec<PathBuf>>(),
    )
    .unwrap()
}

fn all_rows(set: &ShardSet) -> alexnet::dataset::Batch {
    read_rows(set, &(0..set.len() as u64).collect::<Vec<_>>()).unwrap()
}

fn rejects(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn every_input_is_a_row_or_a_reject_and_bad_kinds_have_reasons() {
    let t = tempfile::tempdir().unwrap();
    let raw = t.path().join("raw");
    let n = make_tree(&raw, 3, 4, true);
    // A PNG named .JPEG is a good image, found by content.
    let png = std::fs::read(fixture("chelsea_small.png")).unwrap();
    std::fs::write(raw.join("n00001000/png_named.JPEG"), png).unwrap();
    let out = t.path().join("out");
    ingest_ok(&[s(&raw), s(&out), "--size", SIZE, "--shard-rows", "5"]);
    let set = open(&[&out]);
    let rj = rejects(&out.join("rejects.jsonl"));
    assert_eq!(set.len() + rj.len(), n + 1, "rows + rejects = inputs");
    for (name, _, word) in bad_kinds() {
        let hit = rj
            .iter()
            .find(|r| r["source"].as_str().unwrap().ends_with(name));
        let reason = hit.unwrap_or_else(|| panic!("{name} not rejected"))["reason"]
            .as_str()
            .unwrap();
        assert!(reason.contains(word), "{name}: {reason}");
    }
    assert_eq!(
        set.rejects().len(),
        rj.len(),
        "footers carry the rejects too"
    );
    let batch = all_rows(&set);
    assert_eq!(batch.images.len(), set.len() * 48 * 48 * 3);
    // Labels index the sorted class folders.
    assert_eq!(set.classes(), ["n00001000", "n00001007", "n00001014"]);
    assert!(batch.labels.iter().all(|&l| (0..3).contains(&l)));
    // --strict turns the same rejects into a failure.
    let (ok, _, err) = alexnet(&[
        "ingest",
        "--quiet",
        s(&raw),
        s(&t.path().join("strict")),
        "--size",
        SIZE,
        "--strict",
    ]);
    assert!(!ok && err.contains("rejected"), "{err}");
}

#[test]
fn same_bytes_whatever_jobs() {
    let t = tempfile::tempdir().unwrap();
    let raw = t.path().join("raw");
    make_tree(&raw, 2, 6, true);
    let (a, b) = (t.path().join("a"), t.path().join("b"));
    ingest_ok(&[
        s(&raw),
        s(&a),
        "--size",
        SIZE,
        "--shard-rows",
        "4",
        "--jobs",
        "1",
    ]);
    ingest_ok(&[
        s(&raw),
        s(&b),
        "--size",
        SIZE,
        "--shard-rows",
        "4",
        "--jobs",
        "2",
    ]);
    let (sa, sb) = (shard_bytes(&a), shard_bytes(&b));
    assert_eq!(sa.len(), 4);
    assert!(sa == sb, "shards differ between --jobs 1 and --jobs 2");
    assert_eq!(
        std::fs::read(a.join("rejects.jsonl")).unwrap(),
        std::fs::read(b.join("rejects.jsonl")).unwrap()
    );
}

#[test]
fn resume_after_a_kill_redoes_only_what_is_missing() {
    let t = tempfile::tempdir().unwrap();
    let raw = t.path().join("raw");
    make_tree(&raw, 2, 6, true);
    let out = t.path().join("out");
    let args = [s(&raw), s(&out), "--size", SIZE, "--shard-rows", "4"];
    ingest_ok(&args);
    let full = shard_bytes(&out);
    let full_rejects = std::fs::read(out.join("rejects.jsonl")).unwrap();
    // Simulate a kill: one shard never renamed (a dead writer's temp left), one missing,
    // rejects not written.
    std::fs::rename(
        out.join("part-00001.parquet"),
        out.join(".part-00001.parquet.alexnet-4194304-0.tmp"),
    )
    .unwrap();
    std::fs::remove_file(out.join("part-00003.parquet")).unwrap();
    std::fs::remove_file(out.join("rejects.jsonl")).unwrap();
    // A reader never sees the temp file as a shard.
    assert_eq!(open(&[&out]).files().len(), 2);
    // Without --resume the existing output is an error that says what to do; the dead
    // writer's temporary is removed first, with a note naming it.
    let mut plain = vec!["ingest", "--quiet"];
    plain.extend_from_slice(&args);
    let (ok, _, err) = alexnet(&plain);
    let errors: Vec<&str> = err
        .lines()
        .filter(|l| !l.starts_with("note: removed"))
        .collect();
    assert!(
        !ok && err.contains("--resume") && errors.len() == 1,
        "{err}"
    );
    assert!(
        err.contains(".part-00001.parquet.alexnet-4194304-0.tmp"),
        "{err}"
    );
    assert!(!out
        .join(".part-00001.parquet.alexnet-4194304-0.tmp")
        .exists());
    let kept_mtime = std::fs::metadata(out.join("part-00000.parquet"))
        .unwrap()
        .modified()
        .unwrap();
    let mut resume = args.to_vec();
    resume.push("--resume");
    ingest_ok(&resume);
    assert!(
        shard_bytes(&out) == full,
        "resumed shards differ from a clean run"
    );
    assert_eq!(
        std::fs::read(out.join("rejects.jsonl")).unwrap(),
        full_rejects
    );
    assert!(!out
        .join(".part-00001.parquet.alexnet-4194304-0.tmp")
        .exists());
    let mtime = std::fs::metadata(out.join("part-00000.parquet"))
        .unwrap()
        .modified()
        .unwrap();
    assert_eq!(mtime, kept_mtime, "a complete shard was rewritten");
    // --overwrite rebuilds everything, same bytes.
    let mut over = args.to_vec();
    over.push("--overwrite");
    ingest_ok(&over);
    assert!(shard_bytes(&out) == full);
    // --resume over shards cut from other inputs refuses to mix them.
    for rows in ["3", "5"] {
        let (ok, _, err) = alexnet(&[
            "ingest",
            "--quiet",
            s(&raw),
            s(&out),
            "--size",
            SIZE,
            "--shard-rows",
            rows,
            "--resume",
        ]);
        assert!(
            !ok && err.contains("--overwrite"),
            "--shard-rows {rows}: {err}"
        );
    }
    // --resume with other settings refuses to mix.
    let (ok, _, err) = alexnet(&[
        "ingest",
        "--quiet",
        s(&raw),
        s(&out),
        "--size",
        "32",
        "--shard-rows",
        "4",
        "--resume",
    ]);
    assert!(!ok && err.contains("--overwrite"), "{err}");
}

#[test]
fn two_shard_halves_read_as_one_run() {
    let t = tempfile::tempdir().unwrap();
    let raw = t.path().join("raw");
    make_tree(&raw, 3, 5, true);
    let (one, split) = (t.path().join("one"), t.path().join("split"));
    ingest_ok(&[s(&raw), s(&one), "--size", SIZE, "--shard-rows", "3"]);
    ingest_ok(&[
        s(&raw),
        s(&split),
        "--size",
        SIZE,
        "--shard-rows",
        "3",
        "--shard",
        "1/2",
    ]);
    ingest_ok(&[
        s(&raw),
        s(&split),
        "--size",
        SIZE,
        "--shard-rows",
        "3",
        "--shard",
        "0/2",
    ]);
    let (a, b) = (open(&[&one]), open(&[&split]));
    assert_eq!(a.stats(), b.stats());
    assert!(all_rows(&a) == all_rows(&b));
    assert!(shard_bytes(&one) == shard_bytes(&split));
    let (r0, r1) = (
        rejects(&split.join("rejects-0-of-2.jsonl")),
        rejects(&split.join("rejects-1-of-2.jsonl")),
    );
    assert_eq!(
        r0.len() + r1.len(),
        rejects(&one.join("rejects.jsonl")).len()
    );
    // inspect --json of the union prints the merged statistics in footer names.
    let (ok, json, err) = alexnet(&["inspect", "--json", s(&split)]);
    assert!(ok, "{err}");
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v["count"].as_u64().unwrap(), a.stats().count);
    assert_eq!(v["pixel_sum"][1].as_u64().unwrap(), a.stats().pixel_sum[1]);
    assert_eq!(
        v["pixel_outer_sum"][0][2].as_u64().unwrap(),
        a.stats().pixel_outer_sum[0][2]
    );
    assert!((v["rgb_cov"][1][1].as_f64().unwrap() - a.stats().rgb_cov()[1][1]).abs() < 1e-9);
    // Several paths read as one set too.
    let parts: Vec<PathBuf> = a.files().to_vec();
    let (ok, text, _) = alexnet(&["inspect", s(&parts[0]), s(&parts[1])]);
    assert!(ok && text.contains("files:        2"), "{text}");
}

#[test]
fn statistics_equal_a_direct_computation_over_stored_pixels() {
    let t = tempfile::tempdir().unwrap();
    let raw = t.path().join("raw");
    make_tree(&raw, 2, 4, false);
    for enc in ["raw", "jpeg", "png"] {
        let out = t.path().join(format!("{enc}.parquet"));
        ingest_ok(&[s(&raw), s(&out), "--size", SIZE, "--encoding", enc]);
        assert!(t.path().join(format!("{enc}.rejects.jsonl")).exists());
        let set = open(&[&out]);
        let px = all_rows(&set).images;
        let n = (px.len() / 3) as f64;
        let mut mean = [0f64; 3];
        for p in px.chunks(3) {
            for c in 0..3 {
                mean[c] += p[c] as f64 / n;
            }
        }
        let mut cov = [[0f64; 3]; 3];
        for p in px.chunks(3) {
            for i in 0..3 {
                for j in 0..3 {
                    cov[i][j] += (p[i] as f64 - mean[i]) * (p[j] as f64 - mean[j]) / n;
                }
            }
        }
        let st = set.stats();
        for i in 0..3 {
            assert!((st.rgb_mean()[i] - mean[i]).abs() < 1e-6, "{enc}: mean");
            for j in 0..3 {
                assert!(
                    (st.rgb_cov()[i][j] - cov[i][j]).abs() < 1e-6,
                    "{enc}: cov[{i}][{j}]"
                );
            }
        }
        let img = 48 * 48 * 3;
        let mean_image = st.mean_image();
        for k in [0, img / 2 + 1, img - 1] {
            let direct: f64 = px.chunks(img).map(|im| im[k] as f64).sum::<f64>() / set.len() as f64;
            assert!(
                (mean_image[k] as f64 - direct).abs() < 1e-3,
                "{enc}: mean image at {k}"
            );
        }
        let enc_expected = match enc {
            "raw" => Encoding::Raw,
            "jpeg" => Encoding::Jpeg,
            _ => Encoding::Png,
        };
        assert_eq!(set.encoding(), enc_expected);
    }
    // PNG is lossless: same pixels as raw. JPEG is close.
    let raw_px = all_rows(&open(&[&t.path().join("raw.parquet")])).images;
    assert!(all_rows(&open(&[&t.path().join("png.parquet")])).images == raw_px);
    let d = mean_abs_diff(
        &all_rows(&open(&[&t.path().join("jpeg.parquet")])).images,
        &raw_px,
    );
    assert!(d < 3.0, "jpeg vs raw mean |Δ| {d}");
}

#[test]
fn shuffled_order_is_a_seeded_permutation_of_the_sorted_one() {
    let t = tempfile::tempdir().unwrap();
    let raw = t.path().join("raw");
    make_tree(&raw, 3, 8, false);
    let rows = |name: &str, extra: &[&str]| {
        let out = t.path().join(name);
        let mut args = vec![s(&raw), s(&out), "--size", SIZE, "--shard-rows", "5"];
        args.extend_from_slice(extra);
        ingest_ok(&args);
        let b = all_rows(&open(&[&out]));
        let px = b.images.len() / b.len();
        b.labels
            .iter()
            .zip(b.images.chunks_exact(px))
            .map(|(&l, img)| (l, img.to_vec()))
            .collect::<Vec<_>>()
    };
    let sorted = rows("sorted", &["--order", "sorted"]);
    let shuffled = rows("shuffled", &[]);
    let again = rows("again", &["--seed", "0"]);
    let other = rows("other", &["--seed", "1"]);
    let labels = |v: &[(i32, Vec<u8>)]| v.iter().map(|r| r.0).collect::<Vec<_>>();
    assert!(labels(&sorted).windows(2).all(|w| w[0] <= w[1]));
    assert!(
        !labels(&shuffled).windows(2).all(|w| w[0] <= w[1]),
        "the default order is still class-sorted"
    );
    assert_eq!(shuffled, again, "the same seed gives the same order");
    assert_ne!(shuffled, other, "another seed gives another order");
    let mut a = shuffled.clone();
    let mut b = sorted.clone();
    a.sort();
    b.sort();
    assert_eq!(a, b, "shuffling lost or changed rows");
}

#[test]
fn val_folder_labels_line_up_with_train() {
    let t = tempfile::tempdir().unwrap();
    let train_raw = t.path().join("train");
    make_tree(&train_raw, 3, 2, false);
    let train = t.path().join("train_shards");
    ingest_ok(&[s(&train_raw), s(&train), "--size", SIZE]);
    let classes = open(&[&train]).classes().to_vec();
    // A flat val folder of train images; the wnid of each is known.
    let val = t.path().join("val");
    std::fs::create_dir_all(&val).unwrap();
    let mut csv = String::from("ImageId,PredictionString\n");
    let mut gt = String::new();
    // Devkit ids follow another order than sorted wnids: synsets list them reversed.
    let synsets: Vec<&String> = classes.iter().rev().collect();
    let mut want = Vec::new();
    for (i, c) in [2usize, 0, 1, 1, 2].iter().enumerate() {
        let name = format!("ILSVRC2012_val_{:08}", i + 1);
        let src = std::fs::read_dir(train_raw.join(&classes[*c]))
            .unwrap()
            .next()
            .unwrap()
            .unwrap()
            .path();
        std::fs::copy(src, val.join(format!("{name}.JPEG"))).unwrap();
        csv += &format!("{name},{} 1 2 3 4\n", classes[*c]);
        gt += &format!(
            "{}\n",
            synsets.iter().position(|w| **w == classes[*c]).unwrap() + 1
        );
        want.push(*c as i32);
    }
    let synset_path = t.path().join("synsets.txt");
    std::fs::write(
        &synset_path,
        synsets
            .iter()
            .map(|w| format!("{w} some name\n"))
            .collect::<String>(),
    )
    .unwrap();
    std::fs::write(t.path().join("LOC_val_solution.csv"), &csv).unwrap();
    std::fs::write(t.path().join("gt.txt"), &gt).unwrap();
    let (a, b) = (
        t.path().join("val_a.parquet"),
        t.path().join("val_b.parquet"),
    );
    ingest_ok(&[
        s(&val),
        s(&a),
        "--size",
        SIZE,
        "--labels",
        s(&t.path().join("LOC_val_solution.csv")),
        "--classes",
        s(&train),
        "--order",
        "sorted",
    ]);
    ingest_ok(&[
        s(&val),
        s(&b),
        "--size",
        SIZE,
        "--labels",
        s(&t.path().join("gt.txt")),
        "--synsets",
        s(&synset_path),
        "--classes",
        s(&train),
        "--order",
        "sorted",
    ]);
    for out in [&a, &b] {
        let set = open(&[out]);
        assert_eq!(set.classes(), classes.as_slice());
        assert_eq!(all_rows(&set).labels, want, "{}", out.display());
    }
    // Wrong label files are clear errors.
    std::fs::write(t.path().join("short.txt"), "1\n2\n").unwrap();
    let (ok, _, err) = alexnet(&[
        "ingest",
        "--quiet",
        s(&val),
        s(&t.path().join("c.parquet")),
        "--labels",
        s(&t.path().join("short.txt")),
        "--synsets",
        s(&synset_path),
    ]);
    assert!(!ok && err.contains("does not match"), "{err}");
    let partial: String = csv.lines().take(3).map(|l| format!("{l}\n")).collect();
    std::fs::write(t.path().join("partial.csv"), partial).unwrap();
    let (ok, _, err) = alexnet(&[
        "ingest",
        "--quiet",
        s(&val),
        s(&t.path().join("d.parquet")),
        "--labels",
        s(&t.path().join("partial.csv")),
    ]);
    assert!(!ok && err.contains("no label for 3"), "{err}");
    std::fs::write(
        t.path().join("two.txt"),
        format!("{}\n{}\n", classes[0], classes[1]),
    )
    .unwrap();
    let (ok, _, err) = alexnet(&[
        "ingest",
        "--quiet",
        s(&train_raw),
        s(&t.path().join("e")),
        "--classes",
        s(&t.path().join("two.txt")),
    ]);
    assert!(!ok && err.contains(&classes[2]), "{err}");
}

#[test]
fn clear_one_line_errors() {
    let t = tempfile::tempdir().unwrap();
    let empty = t.path().join("empty");
    std::fs::create_dir_all(empty.join("n0001")).unwrap();
    let cases: Vec<(Vec<String>, &str)> = vec![
        (
            vec![
                s(&t.path().join("nope")).into(),
                s(&t.path().join("o")).into(),
            ],
            "no such folder",
        ),
        (
            vec![s(&empty).into(), s(&t.path().join("o")).into()],
            "no .jpg",
        ),
    ];
    for (args, word) in cases {
        let mut all = vec!["ingest".to_string(), "--quiet".into()];
        all.extend(args);
        let all: Vec<&str> = all.iter().map(|a| a.as_str()).collect();
        let (ok, _, err) = alexnet(&all);
        assert!(!ok, "{all:?} succeeded");
        assert!(
            err.contains(word) && err.trim().lines().count() == 1,
            "{all:?}: {err}"
        );
    }
    let raw = t.path().join("raw");
    make_tree(&raw, 1, 2, false);
    let out = t.path().join("x.parquet");
    ingest_ok(&[s(&raw), s(&out), "--size", SIZE]);
    let (ok, _, err) = alexnet(&["ingest", "--quiet", s(&raw), s(&out), "--size", SIZE]);
    assert!(!ok && err.contains("already exists"), "{err}");
    let (ok, _, err) = alexnet(&["inspect", s(&t.path().join("nothing"))]);
    assert!(!ok && err.contains("nothing"), "{err}");
}

#[test]
fn pyarrow_reads_the_schema_when_available() {
    let have = std::process::Command::new("python3")
        .args(["-c", "import pyarrow"])
        .status()
        .is_ok_and(|s| s.success());
    if !have {
        eprintln!("pyarrow not installed: skipping the pyarrow cross-check (the parquet-crate checks above still ran)");
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let raw = t.path().join("raw");
    make_tree(&raw, 2, 2, false);
    let out = t.path().join("x.parquet");
    ingest_ok(&[s(&raw), s(&out), "--size", SIZE, "--encoding", "jpeg"]);
    let script = r#"
import sys, json, io, pyarrow.parquet as pq
t = pq.read_table(sys.argv[1])
assert t.column_names == ["image", "label", "wnid", "source", "orig_width", "orig_height"], t.column_names
assert str(t.schema.field("image").type) == "struct<bytes: binary, path: string>"
hf = json.loads(t.schema.metadata[b"huggingface"])["info"]["features"]
assert hf["image"]["_type"] == "Image" and hf["label"]["_type"] == "ClassLabel"
meta = json.loads(pq.read_metadata(sys.argv[1]).metadata[b"alexnet"])
assert meta["count"] == t.num_rows and hf["label"]["names"] == meta["classes"]
assert t.column("image")[0]["bytes"].as_py()[:2] == b"\xff\xd8"
print("ok")
"#;
    let o = std::process::Command::new("python3")
        .args(["-c", script, s(&out)])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}
