//! Running a pipeline: each stage through the one command dispatcher, with a record per stage
//! (`work_dir/.pipeline/NN-kind.json`: the resolved arguments and whether the stage finished)
//! that decides what a second run does.
use super::{Pipeline, PipelineError, StageError};
use crate::commands::{Command, Rerun};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::path::{Path, PathBuf};

/// Runs each stage. `alexnet run` uses [`LibraryRunner`]; tests use a mock.
pub trait StageRunner {
    /// Runs one stage's command; returns its exit status (not 0: it was stopped, e.g. by a
    /// signal, and did not finish).
    fn run(&self, stage: Command) -> Result<i32, StageError>;
    /// Called before each stage (`index` from 1 of `total`), with whether it is skipped as
    /// done. The default prints one progress line to stderr.
    fn on_stage(&self, index: usize, total: usize, stage: &Command, skipped: bool) {
        let what = if skipped { " (done, skipped)" } else { "" };
        eprintln!("[{index}/{total}] {}{what}", stage.name());
    }
}

/// The runner behind `alexnet run`: every stage through [`crate::commands::execute`], the
/// function the command line calls.
pub struct LibraryRunner;

impl StageRunner for LibraryRunner {
    fn run(&self, stage: Command) -> Result<i32, StageError> {
        crate::commands::execute(stage)
    }
}

/// What happened to each stage.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StageOutcome {
    /// The stage's number, from 1.
    pub index: usize,
    /// Its kind.
    pub kind: &'static str,
    /// True when it was already done and did not run.
    pub skipped: bool,
}

/// A stage's record: the arguments it last ran with and whether that run finished.
#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct Record {
    args: Value,
    finished: bool,
}

fn record_path(work_dir: &Path, index: usize, stage: &Command) -> PathBuf {
    work_dir
        .join(".pipeline")
        .join(format!("{index:02}-{}.json", stage.name()))
}

/// A record from an older version (or damaged) reads as none: the stage is then treated as
/// one this pipeline has no record of.
fn read_record(path: &Path) -> Option<Record> {
    let text = std::fs::read_to_string(path).ok()?;
    serde_json::from_str(&text).ok()
}

/// The arguments that decide what a stage writes, as JSON: everything but the keys that only
/// change what is printed.
fn stage_args(stage: &Command) -> Value {
    // Paths, numbers, strings and plain enums: serialisation cannot fail; a failure would only
    // give a null record, which never matches, so the stage re-runs rather than being skipped.
    let mut v = serde_json::to_value(stage).unwrap_or(Value::Null);
    if let Some(Value::Object(args)) = v.get_mut(stage.name()) {
        for k in stage.cosmetic_keys() {
            args.remove(*k);
        }
    }
    v
}

/// `key: old → new` for each value that differs, keys dotted (`config.lr: 0.01 → 0.02`).
fn changes(old: &Value, new: &Value) -> String {
    fn walk(prefix: &str, old: &Value, new: &Value, out: &mut Vec<String>) {
        match (old, new) {
            (Value::Object(a), Value::Object(b)) => {
                let mut keys: Vec<&String> = a.keys().chain(b.keys()).collect();
                keys.sort();
                keys.dedup();
                for k in keys {
                    let p = if prefix.is_empty() {
                        k.clone()
                    } else {
                        format!("{prefix}.{k}")
                    };
                    let (x, y) = (a.get(k), b.get(k));
                    walk(
                        &p,
                        x.unwrap_or(&Value::Null),
                        y.unwrap_or(&Value::Null),
                        out,
                    );
                }
            }
            (a, b) if a != b => out.push(format!("`{prefix}`: {a} → {b}")),
            _ => {}
        }
    }
    let mut out = Vec::new();
    // Both are `{kind: {args}}`; the kind is the same, so start inside it.
    let inner = |v: &Value| v.as_object().and_then(|o| o.values().next()).cloned();
    walk(
        "",
        &inner(old).unwrap_or(Value::Null),
        &inner(new).unwrap_or(Value::Null),
        &mut out,
    );
    if out.is_empty() {
        "the record could not be compared".into()
    } else {
        out.join(", ")
    }
}

/// Runs every stage of `path` in order with `runner`, after applying `sets` (`KEY=VALUE`) to
/// the file, skipping the stages already done (unless `force`). Stops at the first failure.
pub fn run_pipeline(
    path: &Path,
    sets: &[String],
    runner: &dyn StageRunner,
    force: bool,
) -> Result<Vec<StageOutcome>, PipelineError> {
    let p = Pipeline::load_with(path, sets)?;
    make_records_dir(&p)?;
    (0..p.stages.len())
        .map(|i| run_stage(&p, i, runner, force))
        .collect()
}

/// Runs only the stage `name` of `path` (`alexnet run --only`: a name from
/// [`super::select::stage_names`], or a number from 1), as [`run_pipeline`] runs it, once the
/// earlier stages it reads from have finished; those are not run (a job array runs each
/// stage as its own job).
pub fn run_pipeline_only(
    path: &Path,
    sets: &[String],
    name: &str,
    runner: &dyn StageRunner,
    force: bool,
) -> Result<StageOutcome, PipelineError> {
    let p = Pipeline::load_with(path, sets)?;
    let i = super::select::find_stage(&p, name)?;
    super::select::check_inputs_ready(&p, i, |j| {
        read_record(&record_path(&p.work_dir, j + 1, &p.stages[j])).map(|r| r.finished)
    })?;
    make_records_dir(&p)?;
    run_stage(&p, i, runner, force)
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> PipelineError {
    let path = path.to_path_buf();
    move |source| PipelineError::Io { path, source }
}

fn make_records_dir(p: &Pipeline) -> Result<(), PipelineError> {
    let records = p.work_dir.join(".pipeline");
    std::fs::create_dir_all(&records).map_err(io_err(&records))
}

/// Runs stage `i` (from 0) unless it is done, as its record and outputs say.
fn run_stage(
    p: &Pipeline,
    i: usize,
    runner: &dyn StageRunner,
    force: bool,
) -> Result<StageOutcome, PipelineError> {
    let total = p.stages.len();
    let stage = &p.stages[i];
    let index = i + 1;
    let record_file = record_path(&p.work_dir, index, stage);
    let args = stage_args(stage);
    let record = read_record(&record_file);
    let outputs = stage.outputs();
    let same = record.as_ref().is_some_and(|r| r.args == args);
    let done = !force
        && same
        && record.as_ref().is_some_and(|r| r.finished)
        && outputs.iter().all(|o| o.exists());
    runner.on_stage(index, total, stage, done);
    if !done {
        let existing: Vec<&Path> = outputs.iter().copied().filter(|o| o.exists()).collect();
        match &record {
            Some(r) if !same && !existing.is_empty() && stage.rerun() == Rerun::Continues => {
                return Err(PipelineError::Changed {
                    path: p.path.clone(),
                    index,
                    kind: stage.name(),
                    changes: changes(&r.args, &args),
                    outputs: existing
                        .iter()
                        .map(|o| o.display().to_string())
                        .collect::<Vec<_>>()
                        .join(", "),
                });
            }
            Some(r) if !same => eprintln!(
                "stage {index} ({}): its arguments changed since it ran ({}); running it again",
                stage.name(),
                changes(&r.args, &args)
            ),
            None if !existing.is_empty() && stage.rerun() == Rerun::Continues => eprintln!(
                "stage {index} ({}): {} exists but this pipeline has no record of making it; continuing it as `alexnet {} --resume` would",
                stage.name(),
                existing[0].display(),
                stage.name()
            ),
            _ => {}
        }
        // Recorded as unfinished first: if this run dies, the stage must not look done,
        // and the next run knows which arguments the partial output was made with.
        let write = |finished: bool| {
            let r = Record {
                args: args.clone(),
                finished,
            };
            let text = serde_json::to_string_pretty(&r).unwrap_or_default();
            crate::atomic::write_bytes(&record_file, text.as_bytes())
                .map_err(|e| io_err(&record_file)(e.into()))
        };
        write(false)?;
        let mut command = stage.clone();
        command.prepare_rerun(record.is_some());
        let failed = |source: StageError| PipelineError::Failed {
            path: p.path.clone(),
            index,
            kind: stage.name(),
            source,
        };
        match runner.run(command).map_err(failed)? {
            0 => {}
            code => {
                return Err(failed(
                    format!("{} stopped before it finished (exit status {code}); run the pipeline again to continue", stage.name())
                        .into(),
                ))
            }
        }
        write(true)?;
    }
    Ok(StageOutcome {
        index,
        kind: stage.name(),
        skipped: done,
    })
}

/// `alexnet run PIPELINE [--set KEY=VALUE]… [--force]`: [`run_pipeline`] with the
/// [`LibraryRunner`].
pub fn run_pipeline_file(
    path: &Path,
    sets: &[String],
    force: bool,
) -> Result<Vec<StageOutcome>, PipelineError> {
    run_pipeline(path, sets, &LibraryRunner, force)
}

/// `alexnet run PIPELINE --only NAME`: [`run_pipeline_only`] with the [`LibraryRunner`].
pub fn run_pipeline_only_file(
    path: &Path,
    sets: &[String],
    name: &str,
    force: bool,
) -> Result<StageOutcome, PipelineError> {
    run_pipeline_only(path, sets, name, &LibraryRunner, force)
}
