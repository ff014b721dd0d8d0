//! End to end through the binary: `import-idx`, `report` and `run` as a user types them.
use std::path::Path;
use std::process::{Command, Output};

const DATA: &str = "/usr/share/datasets/fashion-mnist";

fn alexnet(args: &[&str], cwd: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_alexnet"))
        .args(args)
        .current_dir(cwd)
        .output()
        .expect("the alexnet binary runs")
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn data(name: &str) -> String {
    let p = Path::new(DATA).join(name);
    assert!(
        p.exists(),
        "{}: missing; install it with `apt-get install dataset-fashion-mnist`",
        p.display()
    );
    p.to_string_lossy().into_owned()
}

#[test]
fn import_idx_writes_class_folders_once() {
    let dir = tempfile::tempdir().unwrap();
    let (images, labels) = (
        data("t10k-images-idx3-ubyte.gz"),
        data("t10k-labels-idx1-ubyte.gz"),
    );
    let args = [
        "import-idx",
        &images,
        &labels,
        "raw/test",
        "--classes",
        "fashion-mnist",
        "--limit",
        "25",
    ];
    let o = alexnet(&args, dir.path());
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        text(&o).contains("wrote 25 images in 10 class folders"),
        "{}",
        text(&o)
    );
    let pngs: usize = std::fs::read_dir(dir.path().join("raw/test"))
        .unwrap()
        .map(|d| std::fs::read_dir(d.unwrap().path()).unwrap().count())
        .sum();
    assert_eq!(pngs, 25);
    let o = alexnet(&args, dir.path());
    assert!(
        o.status.success() && text(&o).contains("already held"),
        "{}",
        text(&o)
    );

    // Swapped arguments: a runtime failure (exit status 1, not the parser's 2) and a message that says what is wrong.
    let o = alexnet(&["import-idx", &labels, &images, "raw/x"], dir.path());
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o).contains("swapped"), "{}", text(&o));
}

#[test]
fn report_needs_metrics_and_draws_them() {
    let dir = tempfile::tempdir().unwrap();
    let o = alexnet(&["report", "run"], dir.path());
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o).contains("metrics.jsonl"), "{}", text(&o));
    // A usage mistake is the parser's: status 2, distinct from a failure at run time.
    let o = alexnet(&["report", "run", "--no-such-flag"], dir.path());
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("--no-such-flag"), "{}", text(&o));

    std::fs::create_dir(dir.path().join("run")).unwrap();
    let lines = [
        r#"{"kind":"step","step":1,"epoch":1,"loss":2.3,"lr":0.01,"images_per_s":100.0,"data_wait_s":0.1}"#,
        r#"{"kind":"step","step":2,"epoch":1,"loss":null,"lr":0.01,"images_per_s":100.0,"data_wait_s":0.1}"#,
        r#"{"kind":"step","step":3,"epoch":1,"loss":1.9,"lr":0.01,"images_per_s":100.0,"data_wait_s":0.1}"#,
        r#"{"kind":"epoch","epoch":1,"step":3,"train_loss":2.1,"val_loss":2.0,"val_top1_error":0.6,"val_top5_error":0.2,"lr":0.01,"seconds":5.0}"#,
    ];
    std::fs::write(
        dir.path().join("run/metrics.jsonl"),
        lines.join("\n") + "\n",
    )
    .unwrap();
    let o = alexnet(&["report", "run", "--out", "curves.png"], dir.path());
    assert!(o.status.success(), "{}", text(&o));
    let img = image::open(dir.path().join("curves.png")).unwrap();
    use alexnet::export::plot::{REPORT_HEIGHT, REPORT_WIDTH};
    assert_eq!((img.width(), img.height()), (REPORT_WIDTH, REPORT_HEIGHT));
}

#[test]
fn report_compares_runs_by_seed_group_and_writes_the_table() {
    let dir = tempfile::tempdir().unwrap();
    // Group `a` (two seeds) reaches 25% training error at steps 2 and 3; `b` never does.
    for (run, errs, val) in [
        ("runs/a-s1", [0.6, 0.2, 0.1], 0.30),
        ("runs/a-s2", [0.5, 0.4, 0.2], 0.40),
        ("runs/b", [0.9, 0.8, 0.7], 0.75),
    ] {
        std::fs::create_dir_all(dir.path().join(run)).unwrap();
        let mut lines: Vec<String> = errs
            .iter()
            .enumerate()
            .map(|(i, e)| {
                format!(
                    r#"{{"kind":"step","step":{},"epoch":1,"loss":1.0,"lr":0.01,"top1_error":{e},"images_per_s":200.0,"data_wait_s":0.0}}"#,
                    i + 1
                )
            })
            .collect();
        lines.push(format!(
            r#"{{"kind":"epoch","epoch":1,"step":3,"train_loss":1.0,"val_loss":1.0,"val_top1_error":{val},"val_top5_error":0.1,"lr":0.01,"seconds":1.0}}"#
        ));
        std::fs::write(
            dir.path().join(run).join("metrics.jsonl"),
            lines.join("\n") + "\n",
        )
        .unwrap();
    }
    let o = alexnet(
        &["report", "runs/a-s1", "runs/a-s2", "runs/b", "--table"],
        dir.path(),
    );
    assert!(o.status.success(), "{}", text(&o));
    let table = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(table.contains("| a | 2 | 35.00 ± 7.07 |"), "{table}");
    assert!(table.contains("| b | 1 | 75.00 |"), "{table}");
    assert!(
        table.contains("| 2 ± 1 |") || table.contains("| 3 ± 1 |"),
        "{table}"
    );
    assert!(table.contains("not reached in 3"), "{table}");
    // Default outputs: beside the runs, in their common parent.
    let runs = dir.path().join("runs");
    assert_eq!(
        std::fs::read_to_string(runs.join("report.md")).unwrap(),
        table
    );
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(runs.join("report.json")).unwrap()).unwrap();
    assert_eq!(json["groups"][0]["runs"].as_array().unwrap().len(), 2);
    let img = image::open(runs.join("report.png")).unwrap();
    use alexnet::export::compare::{COMPARE_HEIGHT, COMPARE_WIDTH};
    assert_eq!((img.width(), img.height()), (COMPARE_WIDTH, COMPARE_HEIGHT));
    // A second table over an input is refused; a threshold out of range too.
    let o = alexnet(
        &[
            "report",
            "runs/b",
            "--table",
            "--out",
            "runs/b/metrics.jsonl",
        ],
        dir.path(),
    );
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let o = alexnet(
        &["report", "runs/b", "--table", "--threshold", "0"],
        dir.path(),
    );
    assert!(
        !o.status.success() && text(&o).contains("--threshold"),
        "{}",
        text(&o)
    );
}

#[test]
fn run_executes_a_pipeline_and_skips_it_the_second_time() {
    let dir = tempfile::tempdir().unwrap();
    let pipeline = format!(
        r#"
work_dir = "work"
[[stage]]
kind = "import-idx"
images = "{}"
labels = "{}"
classes = "fashion-mnist"
out = "raw/train"
limit = 12
"#,
        data("train-images-idx3-ubyte.gz"),
        data("train-labels-idx1-ubyte.gz")
    );
    std::fs::write(dir.path().join("p.toml"), pipeline).unwrap();
    let o = alexnet(&["run", "p.toml"], dir.path());
    assert!(o.status.success(), "{}", text(&o));
    assert!(dir.path().join("work/raw/train/00_tshirt_top").is_dir());
    let o = alexnet(&["run", "p.toml"], dir.path());
    assert!(
        text(&o).contains("[1/1] import-idx (done, skipped)"),
        "{}",
        text(&o)
    );

    std::fs::write(
        dir.path().join("bad.toml"),
        "work_dir = \"w\"\n[[stage]]\nkind = \"train\"\nout = \"run\"\n",
    )
    .unwrap();
    let o = alexnet(&["run", "bad.toml"], dir.path());
    assert_eq!(o.status.code(), Some(1));
    assert!(
        text(&o).contains("stage 1 (train): missing field `data`"),
        "{}",
        text(&o)
    );
}
