//! Pipeline files (`pipelines/NAME.toml`): a run described end to end as an ordered list of
//! stages, each one `alexnet` command with its arguments, run by `alexnet run`
//! (docs/pipelines.md). A stage is a [`Command`]: `kind` names the command and the other keys
//! are its arguments, read by the same struct the command line fills.
//!
//! ```toml
//! work_dir = "../runs/quickstart"      # relative to this file's directory
//!
//! [[stage]]
//! kind = "import-idx"                  # any command: ingest, train, eval, export-features, …
//! images = "/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz"
//! labels = "/usr/share/datasets/fashion-mnist/train-labels-idx1-ubyte.gz"
//! out = "raw/train"                    # relative to work_dir
//! ```
//!
//! **Paths.** `work_dir`, when relative, is taken from the pipeline file's directory, so a
//! pipeline means the same from any current directory. Every relative path inside a stage
//! (inputs and outputs alike) is taken from `work_dir`, so one stage's output is the next
//! one's input by the same short name; absolute paths are used as they are (external data).
//!
//! **Resuming.** `work_dir/.pipeline/NN-kind.json` records each stage's resolved arguments
//! and whether it finished ([`run`]). A later run skips a finished stage whose arguments and
//! outputs are unchanged, continues one that did not finish, and re-runs one whose arguments
//! changed, except that a stage which would continue its old output (`ingest`, `train`) stops
//! with an error instead of mixing two settings in one output. `--force` runs every stage.
//!
//! The file is checked whole before any stage runs: an unknown kind, a missing or unknown
//! field, or a train input size larger than the images its data was ingested at is reported
//! with the stage's number (from 1) and kind.
use crate::commands::{Command, ConfigSource};
use std::path::{Path, PathBuf};

mod run;
pub mod select;
mod set;
#[cfg(test)]
mod tests;

pub use run::{
    run_pipeline, run_pipeline_file, run_pipeline_only, run_pipeline_only_file, LibraryRunner,
    StageOutcome, StageRunner,
};
pub use select::stage_names;

/// An error from a stage's own code, passed through with its cause chain.
pub type StageError = Box<dyn std::error::Error + Send + Sync>;

/// What can go wrong reading or running a pipeline.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PipelineError {
    /// The pipeline file could not be read.
    #[error("{path}: cannot read the pipeline")]
    Read {
        /// The pipeline file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not TOML, or its top level has unknown fields.
    #[error("{path}: not a valid pipeline (top level: `work_dir` and `[[stage]]` tables)")]
    Parse {
        /// The pipeline file.
        path: PathBuf,
        /// The TOML error, with line and column.
        source: toml::de::Error,
    },
    /// A stage is malformed; `problem` says which field and what to change.
    #[error("{path}: stage {index} ({kind}): {problem}")]
    Stage {
        /// The pipeline file.
        path: PathBuf,
        /// The stage's number, from 1.
        index: usize,
        /// The stage's kind as written.
        kind: String,
        /// What is wrong.
        problem: String,
    },
    /// The file has no stages.
    #[error("{path}: no [[stage]] tables; add at least one (see pipelines/quickstart.toml)")]
    Empty {
        /// The pipeline file.
        path: PathBuf,
    },
    /// A stage ran and failed.
    #[error("{path}: stage {index} ({kind}) failed; fix the cause and re-run `alexnet run`, finished stages are skipped")]
    Failed {
        /// The pipeline file.
        path: PathBuf,
        /// The stage's number, from 1.
        index: usize,
        /// The stage's kind.
        kind: &'static str,
        /// The stage's error.
        source: StageError,
    },
    /// A `--set KEY=VALUE` could not be applied.
    #[error("{path}: {problem}")]
    Set {
        /// The pipeline file.
        path: PathBuf,
        /// Which `--set` and why.
        problem: String,
    },
    /// A stage that continues its output (ingest, train) was asked to with other arguments
    /// than the output was made with.
    #[error("{path}: stage {index} ({kind}): its arguments changed since it ran ({changes}), and {outputs} holds work done with the old ones; continuing it would mix the two. To start the stage again, delete {outputs} (or give the stage another `out`) and re-run `alexnet run`; to continue the old work, restore the old arguments")]
    Changed {
        /// The pipeline file.
        path: PathBuf,
        /// The stage's number, from 1.
        index: usize,
        /// The stage's kind.
        kind: &'static str,
        /// What changed: `key: old → new`, comma separated.
        changes: String,
        /// The outputs that hold the old work.
        outputs: String,
    },
    /// `alexnet run --only NAME` names no stage.
    #[error("{path}: no stage `{name}`; the stages are {names} (or a stage's number, from 1; `alexnet run {path} --list` prints them)")]
    NoStage {
        /// The pipeline file.
        path: PathBuf,
        /// The name given.
        name: String,
        /// The stages' names, comma separated.
        names: String,
    },
    /// `alexnet run --only` on a stage whose input an earlier stage has not finished making.
    #[error("{path}: stage {index} ({kind}) reads {input}, which stage {before} ({before_name}) makes and has not finished; run `alexnet run {path} --only {before_name}` first")]
    NotReady {
        /// The pipeline file.
        path: PathBuf,
        /// The stage asked for, from 1.
        index: usize,
        /// Its kind.
        kind: &'static str,
        /// The input it lacks.
        input: PathBuf,
        /// The stage that makes it, from 1.
        before: usize,
        /// That stage's name.
        before_name: String,
    },
    /// The work directory or a stage record could not be written.
    #[error("{path}: cannot write")]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

/// A parsed, resolved and checked pipeline.
#[derive(Clone, Debug, PartialEq)]
pub struct Pipeline {
    /// The file it came from.
    pub path: PathBuf,
    /// Where stage outputs go (resolved).
    pub work_dir: PathBuf,
    /// The stages, in order, with every path resolved.
    pub stages: Vec<Command>,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPipeline {
    work_dir: PathBuf,
    #[serde(default)]
    stage: Vec<toml::Table>,
}

impl Pipeline {
    /// Reads, resolves and checks a pipeline file; nothing runs.
    pub fn load(path: &Path) -> Result<Pipeline, PipelineError> {
        Self::load_with(path, &[])
    }

    /// [`Pipeline::load`] with `--set KEY=VALUE` changes applied to the file first.
    pub fn load_with(path: &Path, sets: &[String]) -> Result<Pipeline, PipelineError> {
        let text = std::fs::read_to_string(path).map_err(|source| PipelineError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse_with(path, &text, sets)
    }

    /// Parses pipeline text as if read from `path` (which sets the base of `work_dir`).
    pub fn parse(path: &Path, text: &str) -> Result<Pipeline, PipelineError> {
        Self::parse_with(path, text, &[])
    }

    fn parse_with(path: &Path, text: &str, sets: &[String]) -> Result<Pipeline, PipelineError> {
        let parse_err = |source| PipelineError::Parse {
            path: path.to_path_buf(),
            source,
        };
        let mut doc: toml::Table = toml::from_str(text).map_err(parse_err)?;
        set::apply(&mut doc, sets).map_err(|problem| PipelineError::Set {
            path: path.to_path_buf(),
            problem,
        })?;
        let raw: RawPipeline = toml::Value::Table(doc).try_into().map_err(parse_err)?;
        let dir = path.parent().unwrap_or(Path::new(""));
        let work_dir = dir.join(&raw.work_dir);
        if raw.stage.is_empty() {
            return Err(PipelineError::Empty {
                path: path.to_path_buf(),
            });
        }
        let mut stages = Vec::new();
        for (i, table) in raw.stage.into_iter().enumerate() {
            let (kind, stage) = parse_stage(table);
            let mut stage = stage.map_err(|problem| PipelineError::Stage {
                path: path.to_path_buf(),
                index: i + 1,
                kind,
                problem,
            })?;
            stage.resolve_paths(&work_dir, dir);
            stages.push(stage);
        }
        let p = Pipeline {
            path: path.to_path_buf(),
            work_dir,
            stages,
        };
        p.check()?;
        Ok(p)
    }

    /// Checks values within and across stages.
    fn check(&self) -> Result<(), PipelineError> {
        let err = |index: usize, stage: &Command, problem: String| PipelineError::Stage {
            path: self.path.clone(),
            index,
            kind: stage.name().to_string(),
            problem,
        };
        for (i, stage) in self.stages.iter().enumerate() {
            let index = i + 1;
            self.check_order(i)?;
            if let Command::Train(t) = stage {
                if let Some(ConfigSource::File(f)) = &t.config {
                    if is_pipeline_file(f) {
                        return Err(err(index, stage, format!("config {} is a pipeline; a train stage takes a config file (as RUN/config.toml) or a [stage.config] table", f.display())));
                    }
                }
            }
            stage.check().map_err(|p| err(index, stage, p))?;
            let Command::Train(t) = stage else { continue };
            // The crop must fit in the stored images; catch it now rather than after an hour
            // of ingest.
            let effective = t
                .effective_config()
                .map_err(|e| err(index, stage, e.to_string()))?;
            let input = effective.model.input_size;
            // Without a config or --classes the class count comes from the data at run time.
            let classes_set = t.config.is_some() || t.classes.is_some();
            for data in t.data.iter().chain(&t.val) {
                let ingest = self.stages[..i].iter().find_map(|st| match st {
                    Command::Ingest(g) if &g.out == data => Some(g),
                    _ => None,
                });
                let known = ingest.and_then(|g| self.known_classes(i, g));
                if let Some((n, how)) =
                    known.filter(|(n, _)| classes_set && *n != effective.model.classes)
                {
                    return Err(err(
                        index,
                        stage,
                        format!(
                            "its model has {} classes (config.model.classes; 1000 when the config leaves it out), but {} will hold {n} ({how}); set model.classes = {n} in the stage's config, or classes = {n}",
                            effective.model.classes,
                            data.display()
                        ),
                    ));
                }
                if let Some(g) = ingest.filter(|g| g.size < input) {
                    return Err(err(
                        index,
                        stage,
                        format!(
                            "config.model.input_size {input} is larger than the size {} that {} is ingested at; raise the ingest size or lower input_size",
                            g.size,
                            data.display()
                        ),
                    ));
                }
            }
        }
        Ok(())
    }
}

impl Pipeline {
    /// The class count ingest stage `g` (before stage `before`) will write, when it can be
    /// known before anything runs: its `--classes` text file, an earlier `import-idx` of
    /// Fashion-MNIST, or RAW's class folders when RAW exists now. With a reason, for messages.
    fn known_classes(
        &self,
        before: usize,
        g: &crate::commands::IngestArgs,
    ) -> Option<(usize, String)> {
        if let Some(list) = &g.classes {
            return crate::ingest::read_class_list(list).ok().map(|c| {
                (
                    c.len(),
                    format!("its ingest's class list {}", list.display()),
                )
            });
        }
        if g.labels.is_some() {
            return None;
        }
        let idx = self.stages[..before].iter().find_map(|s| match s {
            Command::ImportIdx(a) if a.out == g.raw => Some(a),
            _ => None,
        });
        if let Some(a) = idx {
            return (a.classes.as_deref() == Some("fashion-mnist")).then(|| {
                (
                    10,
                    format!("{} is Fashion-MNIST's 10 classes", g.raw.display()),
                )
            });
        }
        let entries = std::fs::read_dir(&g.raw).ok()?;
        let mut n = 0;
        for e in entries.flatten() {
            let p = e.path();
            let hidden = e.file_name().to_string_lossy().starts_with('.');
            // A folder holding shards (an earlier output) is not a class, as ingest decides.
            let shards = std::fs::read_dir(&p).ok().is_some_and(|mut d| {
                d.any(|f| f.is_ok_and(|f| f.path().extension().is_some_and(|x| x == "parquet")))
            });
            if p.is_dir() && !hidden && !shards {
                n += 1;
            }
        }
        (n > 0).then(|| (n, format!("{} has {n} class folders", g.raw.display())))
    }

    /// A stage must not read what only a later stage writes: missing now and made by no
    /// earlier stage, it would fail with a bare "No such file or directory" after the stages
    /// before it ran.
    fn check_order(&self, i: usize) -> Result<(), PipelineError> {
        let stage = &self.stages[i];
        let made_by = |range: std::ops::Range<usize>, p: &Path| {
            range.into_iter().find(|&j| {
                self.stages[j]
                    .outputs()
                    .iter()
                    .any(|out| p == *out || p.starts_with(out))
            })
        };
        for p in stage.inputs() {
            if p.exists() || made_by(0..i, p).is_some() {
                continue;
            }
            if let Some(j) = made_by(i + 1..self.stages.len(), p) {
                return Err(PipelineError::Stage {
                    path: self.path.clone(),
                    index: i + 1,
                    kind: stage.name().to_string(),
                    problem: format!(
                        "it reads {}, which stage {} ({}) writes later; move that stage before this one",
                        p.display(),
                        j + 1,
                        self.stages[j].name()
                    ),
                });
            }
        }
        Ok(())
    }
}

/// A stage table as a command: `kind` names it, the other keys are its arguments by their
/// long names in snake case. Returns the kind as written, for messages.
fn parse_stage(mut table: toml::Table) -> (String, Result<Command, String>) {
    let names = crate::commands::names();
    let kind = match table.remove("kind") {
        Some(toml::Value::String(k)) => k,
        Some(other) => {
            return (
                "?".into(),
                Err(format!("`kind` must be a string, not {other}")),
            )
        }
        None => {
            return (
                "?".into(),
                Err(format!("missing field `kind`; one of {}", names.join(", "))),
            )
        }
    };
    if !names.contains(&kind) {
        let problem = format!("unknown kind {kind:?}; the kinds are {}", names.join(", "));
        return (kind, Err(problem));
    }
    // The keys a command takes are its clap arguments' ids, so a stage accepts exactly what
    // the command line does (serde alone cannot refuse unknown keys of flattened structs).
    let keys = crate::commands::argument_keys(&kind);
    // Older spellings that serde still reads (`report`'s single `run`).
    let aliases: &[&str] = if kind == "report" { &["run"] } else { &[] };
    if let Some(bad) = table
        .keys()
        .find(|k| !keys.contains(k) && !aliases.contains(&k.as_str()))
    {
        let problem = format!("unknown field `{bad}`; {kind} takes {}", keys.join(", "));
        return (kind, Err(problem));
    }
    let mut outer = toml::Table::new();
    outer.insert(kind.clone(), toml::Value::Table(table));
    let parsed = toml::Value::Table(outer)
        .try_into::<Command>()
        // The span of a value built in memory means nothing; keep the message.
        .map_err(|e| e.message().trim().to_string());
    (kind, parsed)
}

fn is_pipeline_file(path: &Path) -> bool {
    // A pipeline is recognised by its top-level `[[stage]]` array; anything else is a config.
    std::fs::read_to_string(path)
        .ok()
        .and_then(|text| toml::from_str::<toml::Table>(&text).ok())
        .is_some_and(|t| t.contains_key("stage"))
}
