//! The pipeline's reading, checking, skipping and re-running, with a mock runner that makes
//! each stage's outputs as the real command would.
use super::*;
use crate::commands::{execute, load_train_config, Command};
use crate::train::TrainConfig;
use std::cell::RefCell;

/// Records each call (kind, and the command as it was run) and creates the stage's outputs,
/// as the real commands would; a train stage leaves `last.safetensors` in its run folder.
#[derive(Default)]
struct Mock {
    calls: RefCell<Vec<String>>,
    ran: RefCell<Vec<Command>>,
    fail: Option<&'static str>,
    code: i32,
}

impl StageRunner for Mock {
    fn run(&self, stage: Command) -> Result<i32, StageError> {
        self.calls.borrow_mut().push(stage.name().to_string());
        self.ran.borrow_mut().push(stage.clone());
        if self.fail == Some(stage.name()) {
            return Err("boom".into());
        }
        for o in stage.outputs() {
            // Folders (raw, shards, run) have no extension; files do.
            if o.extension().is_none() {
                std::fs::create_dir_all(o).unwrap();
            } else {
                std::fs::create_dir_all(o.parent().unwrap()).unwrap();
                std::fs::write(o, b"x").unwrap();
            }
        }
        if let Command::Train(t) = &stage {
            std::fs::write(t.out.join(crate::train::run::LAST), b"x").unwrap();
        }
        Ok(if stage.name() == "train" {
            self.code
        } else {
            0
        })
    }
    fn on_stage(&self, _: usize, _: usize, _: &Command, _: bool) {}
}

const KINDS: [&str; 6] = [
    "import-idx",
    "ingest",
    "train",
    "eval",
    "export-features",
    "report",
];

const ALL: &str = r#"
work_dir = "work"

[[stage]]
kind = "import-idx"
images = "/data/imgs.gz"
labels = "/data/labels.gz"
classes = "fashion-mnist"
out = "raw/train"
limit = 100

[[stage]]
kind = "ingest"
raw = "raw/train"
out = "shards/train"
size = 76

[[stage]]
kind = "train"
data = "shards/train"
out = "run"
[stage.config]
epochs = 2
[stage.config.model]
input_size = 67
widths = [16, 32, 48, 48, 32, 256, 256]
classes = 10

[[stage]]
kind = "eval"
checkpoint = "run/best.safetensors"
data = "shards/train"
out = "eval.json"

[[stage]]
kind = "export-features"
checkpoint = "run/best.safetensors"
data = "shards/train"
out = "features.parquet"

[[stage]]
kind = "report"
run = "run"
"#;

fn write_pipeline(dir: &Path, text: &str) -> PathBuf {
    let p = dir.join("pipelines").join("p.toml");
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(&p, text).unwrap();
    p
}

#[test]
fn paths_resolve_against_work_dir_which_resolves_against_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_pipeline(dir.path(), ALL);
    let p = Pipeline::load(&path).unwrap();
    let work = dir.path().join("pipelines").join("work");
    assert_eq!(p.work_dir, work);
    let kinds: Vec<&str> = p.stages.iter().map(Command::name).collect();
    assert_eq!(kinds, KINDS);
    match &p.stages[0] {
        Command::ImportIdx(s) => {
            assert_eq!(s.images, Path::new("/data/imgs.gz"));
            assert_eq!(s.out, work.join("raw/train"));
            assert_eq!(s.classes.as_deref(), Some("fashion-mnist"));
            assert_eq!(s.limit, Some(100));
        }
        other => panic!("{other:?}"),
    }
    match &p.stages[1] {
        Command::Ingest(s) => {
            assert_eq!((s.raw.clone(), s.size), (work.join("raw/train"), 76));
            assert_eq!(s.encoding, crate::dataset::Encoding::Raw);
            assert_eq!(s.shard_rows, 1024, "unset keys take the command's defaults");
        }
        other => panic!("{other:?}"),
    }
    match &p.stages[2] {
        Command::Train(s) => {
            assert_eq!(s.data, [work.join("shards/train")]);
            let c = s.effective_config().unwrap();
            assert_eq!(c.epochs, 2);
            assert_eq!(c.batch, 128, "unset fields keep the paper's values");
            assert_eq!(c.model.classes, 10);
            assert_eq!(c.model.groups, 2);
        }
        other => panic!("{other:?}"),
    }
    match &p.stages[5] {
        Command::Report(s) => assert_eq!(s.out.as_deref(), Some(&*work.join("run/report.png"))),
        other => panic!("{other:?}"),
    }
}

#[test]
fn runs_in_order_then_skips_done_stages_and_reruns_changed_ones() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_pipeline(dir.path(), ALL);
    let mock = Mock::default();
    let out = run_pipeline(&path, &[], &mock, false).unwrap();
    assert_eq!(*mock.calls.borrow(), KINDS);
    assert!(out.iter().all(|o| !o.skipped));

    let again = Mock::default();
    let out = run_pipeline(&path, &[], &again, false).unwrap();
    assert!(again.calls.borrow().is_empty(), "{:?}", again.calls);
    assert!(out.iter().all(|o| o.skipped));

    // Changed arguments of a stage that recomputes its output re-run it; a deleted output
    // re-runs its stage; a changed progress flag changes nothing.
    write_pipeline(
        dir.path(),
        &ALL.replace(
            "out = \"features.parquet\"",
            "out = \"features.parquet\"\nbatch = 7",
        )
        .replace("out = \"run\"", "out = \"run\"\nquiet = true"),
    );
    std::fs::remove_file(dir.path().join("pipelines/work/eval.json")).unwrap();
    let changed = Mock::default();
    run_pipeline(&path, &[], &changed, false).unwrap();
    assert_eq!(*changed.calls.borrow(), ["eval", "export-features"]);
    match &changed.ran.borrow()[1] {
        Command::ExportFeatures(e) => assert!(e.overwrite, "its own old output is replaced"),
        other => panic!("{other:?}"),
    }

    let forced = Mock::default();
    run_pipeline(&path, &[], &forced, true).unwrap();
    assert_eq!(*forced.calls.borrow(), KINDS);
    match &forced.ran.borrow()[..3] {
        [_, Command::Ingest(i), Command::Train(t)] => {
            assert!(i.resume && t.resume, "a second run continues what is there");
        }
        other => panic!("{other:?}"),
    };
}

#[test]
fn a_changed_train_stage_stops_saying_what_changed_and_how_to_continue() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_pipeline(dir.path(), ALL);
    run_pipeline(&path, &[], &Mock::default(), false).unwrap();
    write_pipeline(dir.path(), &ALL.replace("epochs = 2", "epochs = 3"));
    let changed = Mock::default();
    let e = run_pipeline(&path, &[], &changed, false)
        .unwrap_err()
        .to_string();
    assert!(changed.calls.borrow().is_empty(), "{:?}", changed.calls);
    for want in [
        "stage 3 (train): its arguments changed",
        "`config.epochs`: 2 → 3",
        "delete",
        "pipelines/work/run",
    ] {
        assert!(e.contains(want), "want {want:?} in: {e}");
    }
    // --force does not mix them either.
    assert!(run_pipeline(&path, &[], &Mock::default(), true).is_err());
    // With the old run gone, the stage starts from scratch; the report, inside it, is redone.
    std::fs::remove_dir_all(dir.path().join("pipelines/work/run")).unwrap();
    let fresh = Mock::default();
    run_pipeline(&path, &[], &fresh, false).unwrap();
    assert_eq!(*fresh.calls.borrow(), ["train", "report"]);
    match &fresh.ran.borrow()[0] {
        Command::Train(t) => assert!(!t.resume),
        other => panic!("{other:?}"),
    }
    // The same for an ingest whose size changed.
    write_pipeline(
        dir.path(),
        &ALL.replace("epochs = 2", "epochs = 3")
            .replace("size = 76", "size = 80"),
    );
    let e = run_pipeline(&path, &[], &Mock::default(), false)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("stage 2 (ingest)") && e.contains("`size`: 76 → 80"),
        "{e}"
    );
}

#[test]
fn an_interrupted_stage_continues_with_the_same_arguments() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_pipeline(dir.path(), ALL);
    let stopped = Mock {
        code: 130,
        ..Default::default()
    };
    let e = run_pipeline(&path, &[], &stopped, false).unwrap_err();
    let cause = std::error::Error::source(&e).unwrap().to_string();
    assert!(
        cause.contains("run the pipeline again to continue"),
        "{cause}"
    );
    let next = Mock::default();
    run_pipeline(&path, &[], &next, false).unwrap();
    assert_eq!(next.calls.borrow()[0], "train");
    match &next.ran.borrow()[0] {
        Command::Train(t) => assert!(t.resume, "an unfinished run is resumed"),
        other => panic!("{other:?}"),
    };
}

#[test]
fn set_changes_values_before_the_file_is_checked() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_pipeline(dir.path(), ALL);
    let sets = [
        "work_dir=elsewhere",
        "ingest.size=70",
        "train.config.model.input_size=70",
        "4.ten_crop=true",
    ]
    .map(String::from);
    let p = Pipeline::load_with(&path, &sets).unwrap();
    assert_eq!(p.work_dir, dir.path().join("pipelines/elsewhere"));
    match (&p.stages[1], &p.stages[3]) {
        (Command::Ingest(i), Command::Eval(e)) => assert!(i.size == 70 && e.ten_crop),
        other => panic!("{other:?}"),
    }
    // The cross-stage check sees the new values.
    let e = Pipeline::load_with(&path, &["ingest.size=50".to_string()])
        .unwrap_err()
        .to_string();
    assert!(e.contains("larger than the size 50"), "{e}");
}

#[test]
fn every_command_but_run_can_be_a_stage() {
    let dir = tempfile::tempdir().unwrap();
    let text = r#"
work_dir = "w"
[[stage]]
kind = "devices"
devices = "0,1"
[[stage]]
kind = "inspect"
data = ["a", "b"]
[[stage]]
kind = "forward"
checkpoint = "c"
input = "i"
out = "o"
devices = "1,"
[[stage]]
kind = "neighbors"
features = "f.parquet"
query = "3"
k = 2
[[stage]]
kind = "filters"
checkpoint = "c"
out = "f.png"
[[stage]]
kind = "predict"
checkpoint = "c"
inputs = "photos"
device = 1
[[stage]]
kind = "man"
dir = "man"
[[stage]]
kind = "completions"
shell = "bash"
"#;
    let p = Pipeline::load(&write_pipeline(dir.path(), text)).unwrap();
    let names: Vec<&str> = p.stages.iter().map(Command::name).collect();
    assert_eq!(
        names,
        [
            "devices",
            "inspect",
            "forward",
            "neighbors",
            "filters",
            "predict",
            "man",
            "completions"
        ]
    );
    match &p.stages[2] {
        Command::Forward(f) => assert_eq!(f.device.device(), Ok(crate::device::Device::Adapter(1))),
        other => panic!("{other:?}"),
    }
    let nested = "work_dir = \"w\"\n[[stage]]\nkind = \"run\"\npipeline = \"p.toml\"\n";
    let e = Pipeline::load(&write_pipeline(dir.path(), nested))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("stage 1 (run): a pipeline cannot run another pipeline"),
        "{e}"
    );
}

#[test]
fn a_failed_stage_stops_the_run_and_is_not_recorded() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_pipeline(dir.path(), ALL);
    let mock = Mock {
        fail: Some("train"),
        ..Default::default()
    };
    let e = run_pipeline(&path, &[], &mock, false).unwrap_err();
    assert_eq!(*mock.calls.borrow(), ["import-idx", "ingest", "train"]);
    let msg = e.to_string();
    assert!(msg.contains("stage 3 (train) failed"), "{msg}");
    assert_eq!(std::error::Error::source(&e).unwrap().to_string(), "boom");
    let next = Mock::default();
    run_pipeline(&path, &[], &next, false).unwrap();
    assert_eq!(
        *next.calls.borrow(),
        ["train", "eval", "export-features", "report"]
    );
}

#[test]
fn malformed_stages_name_the_stage_and_field() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        (
            ALL.replace("kind = \"eval\"", "kind = \"evaluate\""),
            "stage 4 (evaluate): unknown kind",
        ),
        (
            ALL.replace("raw = \"raw/train\"\n", ""),
            "stage 2 (ingest): missing field `raw`",
        ),
        (
            ALL.replace("size = 76", "size = 76\nsise = 3"),
            "stage 2 (ingest): unknown field `sise`",
        ),
        (
            ALL.replace("epochs = 2", "epochs = 0"),
            "stage 3 (train): config: epochs",
        ),
        (
            ALL.replace("input_size = 67", "input_size = 99"),
            "input_size 99 is larger than the size 76",
        ),
        (
            ALL.replace("kind = \"report\"\n", ""),
            "stage 6 (?): missing field `kind`",
        ),
        (ALL.replace("work_dir = \"work\"", ""), "work_dir"),
        ("work_dir = \"w\"\n".to_string(), "no [[stage]]"),
    ];
    for (text, want) in cases {
        let path = write_pipeline(dir.path(), &text);
        let e = Pipeline::load(&path).unwrap_err().to_string();
        assert!(
            e.contains(want) && e.contains("p.toml"),
            "want {want:?} in: {e}"
        );
    }
}

#[test]
fn library_runner_imports_real_idx_and_draws_a_report() {
    use crate::train::metrics::{MetricsWriter, Record, StepRecord};
    let dir = tempfile::tempdir().unwrap();
    let text = r#"
work_dir = "."
[[stage]]
kind = "import-idx"
images = "/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz"
labels = "/usr/share/datasets/fashion-mnist/t10k-labels-idx1-ubyte.gz"
classes = "fashion-mnist"
out = "raw/test"
limit = 20

[[stage]]
kind = "report"
run = "run"
out = "curves.png"
"#;
    let path = write_pipeline(dir.path(), text);
    let run = dir.path().join("pipelines/run");
    std::fs::create_dir_all(&run).unwrap();
    let mut w = MetricsWriter::create(&run).unwrap();
    for step in 1..=5 {
        w.write(&Record::Step(StepRecord {
            step,
            epoch: 1,
            loss: 2.0 / step as f64,
            lr: 0.01,
            top1_error: None,
            images_per_s: 1.0,
            data_wait_s: 0.0,
            exchange: None,
        }))
        .unwrap();
    }
    let out = run_pipeline_file(&path, &[], false).unwrap();
    assert_eq!(out.len(), 2);
    assert!(dir.path().join("pipelines/raw/test/09_ankle_boot").is_dir());
    assert!(dir.path().join("pipelines/curves.png").is_file());
    let again = run_pipeline_file(&path, &[], false).unwrap();
    assert!(again.iter().all(|o| o.skipped));
}

#[test]
fn library_runner_ingest_reports_the_missing_folder() {
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        "work_dir = \"{}\"\n[[stage]]\nkind = \"ingest\"\nraw = \"no-such-raw\"\nout = \"o\"\n",
        dir.path().display()
    );
    let p = Pipeline::parse(&dir.path().join("p.toml"), &text).unwrap();
    let e = execute(p.stages[0].clone()).unwrap_err().to_string();
    assert!(e.contains("no-such-raw"), "{e}");
    assert!(
        !dir.path().join("o").exists(),
        "no output for a failed ingest"
    );
}

#[test]
fn train_config_from_a_pipeline_or_a_plain_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_pipeline(dir.path(), ALL);
    let c = load_train_config(&path).unwrap();
    assert_eq!((c.epochs, c.model.input_size), (2, 67));

    let plain = dir.path().join("config.toml");
    let want = TrainConfig {
        seed: 9,
        ..Default::default()
    };
    want.save(&plain).unwrap();
    assert_eq!(load_train_config(&plain).unwrap(), want);

    let none = write_pipeline(
        dir.path(),
        "work_dir = \".\"\n[[stage]]\nkind = \"report\"\nrun = \"r\"\n",
    );
    let e = load_train_config(&none).unwrap_err().to_string();
    assert!(e.contains("0 train stages"), "{e}");
    let two = ALL.replace(
        "[[stage]]\nkind = \"eval\"",
        "[[stage]]\nkind = \"train\"\ndata = \"d\"\nout = \"r2\"\n[[stage]]\nkind = \"eval\"",
    );
    let e = load_train_config(&write_pipeline(dir.path(), &two))
        .unwrap_err()
        .to_string();
    assert!(e.contains("2 train stages"), "{e}");
}

#[test]
fn shipped_pipelines_parse() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("pipelines");
    let train_config = |name: &str| {
        let p = Pipeline::load(&root.join(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
        let t = p
            .stages
            .iter()
            .find_map(|s| match s {
                Command::Train(t) => Some(t.effective_config().unwrap()),
                _ => None,
            })
            .unwrap_or_else(|| panic!("{name}: no train stage"));
        (p, t)
    };
    let (_, q) = train_config("quickstart.toml");
    assert_eq!(q.model.input_size, 67);
    assert_eq!(q.model.classes, 10);
    let (i, t) = train_config("imagenet.toml");
    assert_eq!(t, TrainConfig::default(), "imagenet.toml is the paper");
    let kinds: Vec<&str> = i.stages.iter().map(Command::name).collect();
    assert_eq!(
        kinds,
        [
            "ingest",
            "ingest",
            "train",
            "eval",
            "export-features",
            "report"
        ]
    );
}

#[test]
fn a_stage_reading_a_later_stage_s_output_is_refused_before_anything_runs() {
    let dir = tempfile::tempdir().unwrap();
    let swapped = r#"
work_dir = "work"

[[stage]]
kind = "ingest"
raw = "raw/train"
out = "shards/train"

[[stage]]
kind = "import-idx"
images = "/data/imgs.gz"
labels = "/data/labels.gz"
out = "raw/train"
"#;
    let e = Pipeline::parse(&dir.path().join("p.toml"), swapped)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("stage 1 (ingest)") && e.contains("stage 2 (import-idx) writes later"),
        "{e}"
    );
    // A checkpoint inside a later train stage's run folder counts too.
    let eval_first = ALL.replace(
        "[[stage]]\nkind = \"train\"",
        "[[stage]]\nkind = \"eval\"\ncheckpoint = \"run/last.safetensors\"\ndata = \"shards/train\"\n\n[[stage]]\nkind = \"train\"",
    );
    let e = Pipeline::parse(&dir.path().join("p.toml"), &eval_first)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("run/last.safetensors") && e.contains("(train) writes later"),
        "{e}"
    );
    // In order, the same stages parse.
    Pipeline::parse(&dir.path().join("p.toml"), ALL).unwrap();
}

#[test]
fn a_train_stage_whose_classes_differ_from_its_ingest_s_is_refused_before_anything_runs() {
    let dir = tempfile::tempdir().unwrap();
    // The quickstart's shape without `model.classes`: 1000 by default, 10 in the data.
    let no_classes = ALL.replace("classes = 10\n", "");
    let e = Pipeline::parse(&dir.path().join("p.toml"), &no_classes)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("stage 3 (train)")
            && e.contains("1000 classes")
            && e.contains("model.classes = 10"),
        "{e}"
    );
    // A RAW that exists: its class folders count.
    let raw = dir.path().join("raw");
    for c in ["a", "b", "c"] {
        std::fs::create_dir_all(raw.join(c)).unwrap();
    }
    let text = format!(
        "work_dir = \"{}\"\n[[stage]]\nkind = \"ingest\"\nraw = \"raw\"\nout = \"s\"\n[[stage]]\nkind = \"train\"\ndata = \"s\"\n[stage.config.model]\nclasses = 4\n",
        dir.path().display()
    );
    let e = Pipeline::parse(&dir.path().join("p.toml"), &text)
        .unwrap_err()
        .to_string();
    assert!(e.contains("3 class folders"), "{e}");
    Pipeline::parse(
        &dir.path().join("p.toml"),
        &text.replace("classes = 4", "classes = 3"),
    )
    .unwrap();
}

#[test]
fn stages_are_named_by_what_they_make_and_run_one_at_a_time_once_their_inputs_are_done() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_pipeline(dir.path(), ALL);
    let p = Pipeline::load(&path).unwrap();
    assert_eq!(
        stage_names(&p),
        [
            "raw/train",
            "shards/train",
            "run",
            "eval.json",
            "features.parquet",
            "run/report.png"
        ]
    );
    let only = |name: &str| {
        let mock = Mock::default();
        let r = run_pipeline_only(&path, &[], name, &mock, false);
        let calls = mock.calls.borrow().clone();
        (r, calls)
    };
    // The run reads shards/train, which nothing has made yet: refused, naming the stage to
    // run first, and nothing runs.
    let (r, calls) = only("run");
    let e = r.unwrap_err().to_string();
    assert!(
        e.contains("stage 3 (train) reads")
            && e.contains("stage 2 (shards/train) makes and has not finished")
            && e.contains("--only shards/train` first"),
        "{e}"
    );
    assert!(calls.is_empty(), "{calls:?}");
    assert_eq!(only("raw/train").1, ["import-idx"]);
    // A trailing slash (shell completion) and the stage's number name it too.
    assert_eq!(only("shards/train/").1, ["ingest"]);
    assert_eq!(only("3").1, ["train"]);
    // Done: skipped, as a whole-pipeline run would.
    let (r, calls) = only("run");
    assert!(r.unwrap().skipped && calls.is_empty(), "{calls:?}");
    // The whole pipeline then runs only what is left.
    let rest = Mock::default();
    run_pipeline(&path, &[], &rest, false).unwrap();
    assert_eq!(*rest.calls.borrow(), ["eval", "export-features", "report"]);

    for bad in ["nope", "0", "7"] {
        let e = only(bad).0.unwrap_err().to_string();
        assert!(
            e.contains(&format!("no stage `{bad}`")) && e.contains("raw/train, shards/train, run,"),
            "{e}"
        );
    }
}

#[test]
fn stages_sharing_an_output_or_making_nothing_are_named_by_number_and_kind() {
    let dir = tempfile::tempdir().unwrap();
    let text = ALL
        .replace("out = \"eval.json\"", "out = \"same.json\"")
        .replace("out = \"features.parquet\"", "out = \"/tmp/outside.parquet\"")
        + "\n[[stage]]\nkind = \"eval\"\ncheckpoint = \"run/best.safetensors\"\ndata = \"shards/train\"\nout = \"same.json\"\n";
    let path = write_pipeline(dir.path(), &text);
    let p = Pipeline::load(&path).unwrap();
    let names = stage_names(&p);
    assert_eq!(
        names[3..],
        ["04-eval", "05-export-features", "run/report.png", "07-eval"]
    );
}

#[test]
fn the_ablation_pipeline_lists_its_24_runs_by_their_folders() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("pipelines/ablations/fashion-mnist.toml");
    let p = Pipeline::load(&path).unwrap();
    let names = stage_names(&p);
    let runs: Vec<&String> = names
        .iter()
        .zip(&p.stages)
        .filter(|(_, s)| s.name() == "train")
        .map(|(n, _)| n)
        .collect();
    assert_eq!(runs.len(), 24);
    assert_eq!(runs[0], "baseline-s1");
    let mut unique = names.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), names.len(), "{names:?}");
}
