//! Nothing hung, nothing clobbered, nothing left behind (issue 24): special files given as
//! images, outputs pointed at inputs or at a run's files, and commands interrupted or killed
//! half way, all through the built binary.
mod common;

use alexnet::dataset::ShardSet;
use alexnet::model::{Checkpoint, DataStats, Init, ModelConfig, Params};
use common::{alexnet, fashion_shards, make_tree, run_with_timeout, s};
use std::path::{Path, PathBuf};
use std::process::Command;

/// A checkpoint of a tiny model with `data`'s statistics.
fn checkpoint(dir: &Path, data: &Path) -> PathBuf {
    let set = ShardSet::open(&[data.to_path_buf()]).unwrap();
    let mut cfg = ModelConfig::small(67, 1, 10);
    cfg.widths = [8, 16, 24, 24, 16, 64, 64];
    let mut ck = Checkpoint::new(cfg.clone(), Params::init_with(&cfg, 5, Init::He).unwrap());
    let (vals, vecs) = set.stats().pca();
    ck.stats = Some(DataStats {
        size: set.size(),
        mean_image: set.stats().mean_image(),
        pca_eigenvalues: vals.map(|v| v as f32),
        pca_eigenvectors: vecs.map(|r| r.map(|v| v as f32)),
    });
    let path = dir.join("w.safetensors");
    ck.save(&path).unwrap();
    path
}

/// Names in `dir` that are temporaries (end in `.tmp`).
fn temporaries(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".tmp"))
        .collect()
}

/// `alexnet ARGS` under a virtual-memory ceiling (KiB) and a time limit, so a command that
/// reads a device forever fails the test instead of hanging CI or eating the machine.
fn bounded(args: &[&str], kib: u64, secs: u64) -> (bool, String, String) {
    let quoted: Vec<String> = args.iter().map(|a| format!("'{a}'")).collect();
    let script = format!(
        "ulimit -v {kib}; exec '{}' {}",
        env!("CARGO_BIN_EXE_alexnet"),
        quoted.join(" ")
    );
    run_with_timeout(Command::new("sh").args(["-c", &script]), secs)
}

/// A FIFO, a link to /dev/zero and a sparse 20 GB file, each named like an image, in `dir`.
#[cfg(unix)]
fn special_files(dir: &Path) {
    let fifo = dir.join("p.jpg");
    let ok = Command::new("mkfifo").arg(&fifo).status().unwrap();
    assert!(ok.success(), "mkfifo failed");
    std::os::unix::fs::symlink("/dev/zero", dir.join("x.jpg")).unwrap();
    let big = std::fs::File::create(dir.join("big.jpg")).unwrap();
    big.set_len(20 << 30).unwrap();
}

#[cfg(unix)]
#[test]
fn special_files_are_rejects_and_never_read() {
    let t = tempfile::tempdir().unwrap();
    let raw = t.path().join("raw");
    // With the bad kinds too (corrupt, truncated, empty …): no reason ends in a newline.
    make_tree(&raw, 2, 3, true);
    special_files(&raw.join("n00001000"));
    let out = t.path().join("out");
    // 4 GiB of address space: reading /dev/zero or the sparse file whole cannot fit.
    let (ok, _, err) = bounded(
        &["ingest", "--quiet", "--size", "32", s(&raw), s(&out)],
        4 << 20,
        120,
    );
    assert!(ok, "{err}");
    let rejects = std::fs::read_to_string(out.join("rejects.jsonl")).unwrap();
    let reason = |name: &str| -> String {
        rejects
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
            .find(|r| r["source"].as_str().unwrap().ends_with(name))
            .unwrap_or_else(|| panic!("no reject for {name}: {rejects}"))["reason"]
            .as_str()
            .unwrap()
            .to_string()
    };
    assert!(
        reason("p.jpg").contains("a FIFO, not a regular file"),
        "{rejects}"
    );
    assert!(reason("x.jpg").contains("a character device"), "{rejects}");
    assert!(reason("big.jpg").contains("21474836480 bytes"), "{rejects}");
    for l in rejects.lines() {
        let r: serde_json::Value = serde_json::from_str(l).unwrap();
        assert!(!r["reason"].as_str().unwrap().contains('\n'), "{l}");
    }
    assert_eq!(ShardSet::open(std::slice::from_ref(&out)).unwrap().len(), 6);
    assert!(temporaries(&out).is_empty());
}

#[cfg(unix)]
#[test]
fn special_files_in_a_flat_labelled_folder_are_rejects_and_never_read() {
    let t = tempfile::tempdir().unwrap();
    let flat = t.path().join("flat");
    std::fs::create_dir(&flat).unwrap();
    for n in ["a.JPEG", "b.JPEG"] {
        std::fs::copy(common::fixture("coffee.jpg"), flat.join(n)).unwrap();
    }
    special_files(&flat);
    let csv = t.path().join("labels.csv");
    let mut rows = String::from("ImageId,PredictionString\n");
    for (id, wnid) in [
        ("a", "n1"),
        ("b", "n2"),
        ("p", "n1"),
        ("x", "n2"),
        ("big", "n1"),
    ] {
        rows.push_str(&format!("{id},{wnid} 0 0 1 1\n"));
    }
    std::fs::write(&csv, rows).unwrap();
    let out = t.path().join("out");
    // Same ceiling and limit as the class-folder case: a read of the FIFO hangs, one of
    // /dev/zero or the sparse file cannot fit.
    let (ok, _, err) = bounded(
        &[
            "ingest",
            "--quiet",
            "--size",
            "32",
            s(&flat),
            s(&out),
            "--labels",
            s(&csv),
        ],
        4 << 20,
        120,
    );
    assert!(ok, "{err}");
    let rejects = std::fs::read_to_string(out.join("rejects.jsonl")).unwrap();
    let reason = |name: &str| -> String {
        rejects
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
            .find(|r| r["source"].as_str().unwrap() == name)
            .unwrap_or_else(|| panic!("no reject for {name}: {rejects}"))["reason"]
            .as_str()
            .unwrap()
            .to_string()
    };
    assert!(
        reason("p.jpg").contains("a FIFO, not a regular file"),
        "{rejects}"
    );
    assert!(reason("x.jpg").contains("a character device"), "{rejects}");
    assert!(reason("big.jpg").contains("21474836480 bytes"), "{rejects}");
    assert_eq!(rejects.lines().count(), 3, "{rejects}");
    assert_eq!(ShardSet::open(std::slice::from_ref(&out)).unwrap().len(), 2);
    assert!(temporaries(&out).is_empty());
}

#[cfg(unix)]
#[test]
fn predict_refuses_special_files_and_skips_what_is_not_an_image() {
    let t = tempfile::tempdir().unwrap();
    let data = fashion_shards(t.path(), 8);
    let ck = checkpoint(t.path(), &data);
    let dir = t.path().join("photos");
    make_tree(&dir, 1, 1, false);
    special_files(&dir);
    std::fs::write(dir.join("notes.txt"), "not a photo").unwrap();
    let (ok, out, err) = bounded(
        &[
            "predict",
            "--devices",
            "cpu",
            "--checkpoint",
            s(&ck),
            s(&dir),
        ],
        8 << 20,
        120,
    );
    // Three files could not be classified; the photo was.
    assert!(!ok, "{out}\n{err}");
    assert!(err.contains("3 of 4 files"), "{err}");
    assert!(
        err.contains("a FIFO") && err.contains("a character device"),
        "{err}"
    );
    assert!(err.contains("21474836480 bytes"), "{err}");
    assert!(
        err.contains("skipped 1 file") && err.contains("notes.txt"),
        "{err}"
    );
    assert!(out.contains("%"), "{out}");
    // The pixel limit it names is a flag predict has; --top 0 is refused.
    let (ok, _, err) = alexnet(&[
        "predict",
        "--devices",
        "cpu",
        "--checkpoint",
        s(&ck),
        "--max-pixels",
        "10",
        s(&dir.join("n00001000")),
    ]);
    assert!(!ok && err.contains("--max-pixels"), "{err}");
    let (ok, _, err) = alexnet(&["predict", "--checkpoint", s(&ck), "--top", "0", s(&dir)]);
    assert!(!ok && err.contains("--top 0"), "{err}");
    let raw = t.path().join("raw2");
    make_tree(&raw, 1, 1, false);
    let o = t.path().join("o");
    let (ok, _, err) = alexnet(&["ingest", "--max-pixels", "0", s(&raw), s(&o)]);
    assert!(!ok && err.contains("--max-pixels 0"), "{err}");
    assert!(!o.exists());
}

#[cfg(unix)]
#[test]
fn an_interrupted_ingest_leaves_no_temporary() {
    let t = tempfile::tempdir().unwrap();
    let raw = t.path().join("raw");
    make_tree(&raw, 4, 40, false);
    let out = t.path().join("out");
    // One shard for everything, so its temporary exists for the whole run.
    let mut child = Command::new(env!("CARGO_BIN_EXE_alexnet"))
        .args(["ingest", "--quiet", "--jobs", "1", "--size", "256"])
        .args(["--shard-rows", "1000", s(&raw), s(&out)])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let t0 = std::time::Instant::now();
    let mut seen = false;
    while t0.elapsed().as_secs() < 60 {
        if child.try_wait().unwrap().is_some() {
            break;
        }
        if out.is_dir() && !temporaries(&out).is_empty() {
            seen = true;
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    assert!(
        seen,
        "the ingest ended before its shard's temporary was seen"
    );
    // SAFETY: kill on a child process this test spawned and has not reaped.
    unsafe {
        libc::kill(child.id() as libc::pid_t, libc::SIGINT);
    }
    let status = child.wait().unwrap();
    assert!(!status.success());
    use std::os::unix::process::ExitStatusExt;
    assert!(
        status.signal() == Some(libc::SIGINT) || status.code() == Some(130),
        "{status:?}"
    );
    assert!(temporaries(&out).is_empty(), "{:?}", temporaries(&out));
}

#[test]
fn outputs_never_replace_inputs_or_run_files() {
    let t = tempfile::tempdir().unwrap();
    let data = fashion_shards(t.path(), 8);
    let ck = checkpoint(t.path(), &data);
    let shard = data.join("part-00000.parquet");
    let shard_bytes = std::fs::read(&shard).unwrap();
    let ck_bytes = std::fs::read(&ck).unwrap();

    // filters over another checkpoint: the extension is not a PNG's.
    let other = t.path().join("other.safetensors");
    std::fs::copy(&ck, &other).unwrap();
    let (ok, _, err) = alexnet(&["filters", "--checkpoint", s(&ck), s(&other)]);
    assert!(!ok && err.contains(".png"), "{err}");
    assert_eq!(std::fs::read(&other).unwrap(), ck_bytes);
    // An existing image needs --overwrite.
    let png = t.path().join("f.png");
    let (ok, _, err) = alexnet(&["filters", "--checkpoint", s(&ck), s(&png)]);
    assert!(ok, "{err}");
    let (ok, _, err) = alexnet(&["filters", "--checkpoint", s(&ck), s(&png)]);
    assert!(!ok && err.contains("--overwrite"), "{err}");
    let (ok, _, err) = alexnet(&["filters", "--checkpoint", s(&ck), s(&png), "--overwrite"]);
    assert!(ok, "{err}");

    // neighbors --sheet over a shard, or into the shard folder.
    let f7 = t.path().join("f7.parquet");
    let (ok, _, err) = alexnet(&[
        "export-features",
        "--quiet",
        "--devices",
        "cpu",
        "--checkpoint",
        s(&ck),
        s(&data),
        s(&f7),
    ]);
    assert!(ok, "{err}");
    for sheet in [shard.clone(), data.join("sheet.png")] {
        let (ok, _, err) = alexnet(&["neighbors", s(&f7), "--query", "0", "--sheet", s(&sheet)]);
        assert!(!ok, "{}: {err}", sheet.display());
    }
    assert_eq!(std::fs::read(&shard).unwrap(), shard_bytes);
    assert!(!data.join("sheet.png").exists());

    // eval --out naming a folder: refused before anything runs, and nothing left in it.
    let folder = t.path().join("results");
    std::fs::create_dir(&folder).unwrap();
    let (ok, _, err) = alexnet(&[
        "eval",
        "--checkpoint",
        s(&ck),
        s(&data),
        "--out",
        s(&folder),
    ]);
    assert!(!ok && err.contains("is a folder"), "{err}");
    assert_eq!(std::fs::read_dir(&folder).unwrap().count(), 0);
    assert!(temporaries(t.path()).is_empty());

    // report: never over the run's checkpoint; its own report.png is fine; a run named
    // twice is refused instead of counted twice.
    let run = t.path().join("run");
    std::fs::create_dir(&run).unwrap();
    std::fs::copy(&ck, run.join("last.safetensors")).unwrap();
    let line = r#"{"kind":"step","step":1,"epoch":1,"loss":2.3,"lr":0.01,"images_per_s":100.0,"data_wait_s":0.1}"#;
    std::fs::write(run.join("metrics.jsonl"), format!("{line}\n")).unwrap();
    let last = run.join("last.safetensors");
    let (ok, _, err) = alexnet(&["report", s(&run), "--out", s(&last)]);
    assert!(!ok, "{err}");
    assert_eq!(std::fs::read(&last).unwrap(), ck_bytes);
    let (ok, _, err) = alexnet(&["report", s(&run)]);
    assert!(ok && run.join("report.png").exists(), "{err}");
    let again = run.join("..").join("run");
    let (ok, _, err) = alexnet(&["report", s(&run), s(&again), "--table"]);
    assert!(!ok && err.contains("same run"), "{err}");
}

#[test]
fn stale_temporaries_are_removed_and_live_ones_kept() {
    let t = tempfile::tempdir().unwrap();
    let data = fashion_shards(t.path(), 8);
    let ck = checkpoint(t.path(), &data);
    // A writer that was killed (pid_max is at most 2^22) and one still running (this test).
    let dead = t.path().join(".f.png.alexnet-4194304-0.tmp");
    let live = t
        .path()
        .join(format!(".g.png.alexnet-{}-0.tmp", std::process::id()));
    std::fs::write(&dead, b"half").unwrap();
    std::fs::write(&live, b"busy").unwrap();
    let (ok, _, err) = alexnet(&[
        "filters",
        "--checkpoint",
        s(&ck),
        s(&t.path().join("f.png")),
    ]);
    assert!(ok, "{err}");
    assert!(
        err.contains("removed") && err.contains(".f.png.alexnet-4194304-0.tmp"),
        "{err}"
    );
    assert!(!dead.exists());
    assert!(live.exists());
}

#[test]
fn labels_classes_and_shard_parts_that_disagree_are_refused() {
    let t = tempfile::tempdir().unwrap();
    // The same image with two labels: both lines are quoted.
    let flat = t.path().join("flat");
    std::fs::create_dir(&flat).unwrap();
    for n in ["img1.JPEG", "img2.JPEG"] {
        std::fs::copy(common::fixture("coffee.jpg"), flat.join(n)).unwrap();
    }
    let csv = t.path().join("labels.csv");
    std::fs::write(
        &csv,
        "ImageId,PredictionString\nimg1,a 0\nimg2,b 0\nimg1,b 0\n",
    )
    .unwrap();
    let o = t.path().join("o1");
    let (ok, _, err) = alexnet(&["ingest", "--quiet", s(&flat), s(&o), "--labels", s(&csv)]);
    assert!(
        !ok && err.contains("line 2 `img1,a 0`") && err.contains("line 4 `img1,b 0`"),
        "{err}"
    );

    // A class listed twice.
    let raw = t.path().join("raw");
    make_tree(&raw, 2, 6, false);
    let classes = t.path().join("classes.txt");
    std::fs::write(&classes, "n00001000\nn00001007\nn00001000\n").unwrap();
    let o = t.path().join("o2");
    let (ok, _, err) = alexnet(&[
        "ingest",
        "--quiet",
        s(&raw),
        s(&o),
        "--classes",
        s(&classes),
    ]);
    assert!(!ok && err.contains("again on line 3"), "{err}");

    // --shard parts made with different seeds: the second part, inspect and train refuse.
    let out = t.path().join("shards");
    let part = |i: &str, seed: &str, out: &Path| {
        let args = ["ingest", "--quiet", "--size", "32", "--shard-rows", "3"];
        let mut v = args.to_vec();
        v.extend(["--shard", i, "--seed", seed, s(&raw), s(out)]);
        alexnet(&v)
    };
    let (ok, _, err) = part("0/2", "1", &out);
    assert!(ok, "{err}");
    let (ok, _, err) = part("1/2", "2", &out);
    assert!(
        !ok && err.contains("another part") && err.contains("--seed 1"),
        "{err}"
    );
    let other = t.path().join("other");
    let (ok, _, err) = part("1/2", "2", &other);
    assert!(ok, "{err}");
    for e in std::fs::read_dir(&other).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "parquet") {
            std::fs::copy(&p, out.join(p.file_name().unwrap())).unwrap();
        }
    }
    let (ok, _, err) = alexnet(&["inspect", s(&out)]);
    assert!(!ok && err.contains("row order"), "{err}");
    let run = t.path().join("run");
    let (ok, _, err) = alexnet(&["train", s(&out), "--out", s(&run), "--steps", "1"]);
    assert!(!ok && err.contains("row order"), "{err}");
}

#[test]
fn messages_say_things_once_and_gpu_listing_is_quiet() {
    // A cause already quoted in the message is not printed again below it.
    let (ok, _, err) = alexnet(&["inspect", "/nonexistent/x.parquet"]);
    assert!(!ok);
    let first = err.lines().next().unwrap().to_string();
    for l in err.lines().skip(1) {
        if let Some(cause) = l.trim().strip_prefix("caused by: ") {
            assert!(!first.contains(cause), "{err}");
        }
    }
    // No session: Mesa's libwayland must not complain on the user's terminal.
    let out = Command::new(env!("CARGO_BIN_EXE_alexnet"))
        .arg("devices")
        .env_remove("XDG_RUNTIME_DIR")
        .env_remove("WAYLAND_DISPLAY")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(!err.contains("XDG_RUNTIME_DIR"), "{err}");
}

#[test]
fn an_ingest_file_output_never_joins_a_shard_folder() {
    let t = tempfile::tempdir().unwrap();
    let raw = t.path().join("raw");
    make_tree(&raw, 2, 2, false);
    let shards = t.path().join("shards");
    let (ok, _, err) = alexnet(&["ingest", "--quiet", "--size", "32", s(&raw), s(&shards)]);
    assert!(ok, "{err}");
    let extra = shards.join("extra.parquet");
    let (ok, _, err) = alexnet(&["ingest", "--quiet", "--size", "32", s(&raw), s(&extra)]);
    assert!(
        !ok && err.contains("a folder written by alexnet ingest"),
        "{err}"
    );
    assert!(!extra.exists());
}
