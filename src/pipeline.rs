//! Pipeline files (`pipelines/NAME.toml`): a run described end to end as an ordered list of
//! stages, each one `alexnet` command with its arguments, run by `alexnet run`.
//!
//! ```toml
//! work_dir = "../runs/quickstart"      # relative to this file's directory
//!
//! [[stage]]
//! kind = "import-idx"                  # import-idx | ingest | train | eval | export-features | report
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
//! **Resuming.** After a stage succeeds, `work_dir/.pipeline/NN-kind.json` records its resolved
//! arguments. A later run skips a stage whose record matches its arguments and whose outputs
//! all exist, so an interrupted pipeline continues at the stage that did not finish, and
//! changing a stage's arguments re-runs it. `--force` runs every stage again.
//!
//! The file is checked whole before any stage runs: an unknown kind, a missing or unknown
//! field, or a train input size larger than the images its data was ingested at is reported
//! with the stage's number (from 1) and kind.
use crate::idx::{ClassNames, ImportIdxConfig};
use crate::train::TrainConfig;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

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
    /// A training configuration file is unusable.
    #[error(transparent)]
    Config(#[from] crate::train::config::ConfigError),
    /// `train --config` got a pipeline without exactly one train stage.
    #[error("{path}: {count} train stages; `train --config` takes a pipeline with exactly one, or a plain config file such as RUN/config.toml")]
    TrainStages {
        /// The pipeline file.
        path: PathBuf,
        /// How many train stages it has.
        count: usize,
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

/// `import-idx`: IDX files to class folders of PNGs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImportIdxStage {
    /// The images file.
    pub images: PathBuf,
    /// The labels file.
    pub labels: PathBuf,
    /// The folder to create.
    pub out: PathBuf,
    /// `fashion-mnist`, or a class-name file (a path, resolved like the others).
    #[serde(default)]
    pub classes: Option<String>,
    /// Import only the first N images.
    #[serde(default)]
    pub limit: Option<usize>,
}

/// Image encoding in the shards (docs/shards.md: raw, jpeg or png).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ShardEncoding {
    /// S·S·3 bytes of RGB.
    Raw,
    /// JPEG bytes in the Hugging Face image struct.
    Jpeg,
    /// PNG bytes in the Hugging Face image struct.
    Png,
}

/// `ingest`: image folders to Parquet shards.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IngestStage {
    /// The raw folder (`RAW/<class>/*`).
    pub raw: PathBuf,
    /// The output: a directory of shards, or one `.parquet` file.
    pub out: PathBuf,
    /// Side of the stored square images (the paper: 256).
    #[serde(default = "default_size")]
    pub size: usize,
    /// Image encoding in the shards.
    #[serde(default = "default_encoding")]
    pub encoding: ShardEncoding,
    /// A labels file mapping images to classes (ILSVRC validation).
    #[serde(default)]
    pub labels: Option<PathBuf>,
    /// The class list in label order (so validation uses the training labels).
    #[serde(default)]
    pub classes: Option<PathBuf>,
    /// Rows per shard.
    #[serde(default)]
    pub shard_rows: Option<usize>,
    /// Decoding threads.
    #[serde(default)]
    pub jobs: Option<usize>,
    /// Fail on the first bad image instead of listing it in rejects.jsonl.
    #[serde(default)]
    pub strict: bool,
    /// Row order: `shuffled` (the default; fixed by `seed`) or `sorted`.
    #[serde(default)]
    pub order: ShardOrder,
    /// Seed of the shuffled order.
    #[serde(default)]
    pub seed: u64,
}

/// Row order of an ingest stage's output.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ShardOrder {
    /// A seeded permutation, so row groups mix the classes.
    #[default]
    Shuffled,
    /// Class, then file name.
    Sorted,
}

fn default_size() -> usize {
    256
}
fn default_encoding() -> ShardEncoding {
    ShardEncoding::Raw
}

/// `train`: a training run; its configuration is inline, as `[stage.config]` tables.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainStage {
    /// The training shards.
    pub data: PathBuf,
    /// The validation shards (drive the plateau schedule).
    #[serde(default)]
    pub val: Option<PathBuf>,
    /// The run directory.
    pub out: PathBuf,
    /// Start from these weights instead of the paper's init.
    #[serde(default)]
    pub init_from: Option<PathBuf>,
    /// The run's configuration (defaults: the paper's).
    #[serde(default)]
    pub config: TrainConfig,
}

/// `eval`: top-1/top-5 of a checkpoint on a data set.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EvalStage {
    /// The checkpoint.
    pub checkpoint: PathBuf,
    /// The shards to evaluate on.
    pub data: PathBuf,
    /// The paper's ten-crop evaluation instead of the centre crop.
    #[serde(default)]
    pub ten_crop: bool,
    /// Where the result JSON (`eval --json`) is written; without it the result is printed.
    #[serde(default)]
    pub out: Option<PathBuf>,
}

/// `export-features`: one layer's activations for every image, as Parquet.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExportFeaturesStage {
    /// The checkpoint.
    pub checkpoint: PathBuf,
    /// The shards.
    pub data: PathBuf,
    /// The output `.parquet` file.
    pub out: PathBuf,
    /// The layer (the paper's retrieval: fc7).
    #[serde(default = "default_layer")]
    pub layer: String,
}

fn default_layer() -> String {
    "fc7".into()
}

/// `report`: a run's curves as a PNG.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReportStage {
    /// The run directory.
    pub run: PathBuf,
    /// The image; resolved to `RUN/report.png` when not given.
    #[serde(default)]
    pub out: Option<PathBuf>,
}

/// One stage with its arguments, paths resolved.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Stage {
    /// See [`ImportIdxStage`].
    ImportIdx(ImportIdxStage),
    /// See [`IngestStage`].
    Ingest(IngestStage),
    /// See [`TrainStage`] (boxed: its config is most of the enum's size).
    Train(Box<TrainStage>),
    /// See [`EvalStage`].
    Eval(EvalStage),
    /// See [`ExportFeaturesStage`].
    ExportFeatures(ExportFeaturesStage),
    /// See [`ReportStage`].
    Report(ReportStage),
}

/// The stage kinds, as written in `kind = "..."`.
pub const STAGE_KINDS: [&str; 6] = [
    "import-idx",
    "ingest",
    "train",
    "eval",
    "export-features",
    "report",
];

impl Stage {
    /// The kind as written in the file.
    pub fn kind(&self) -> &'static str {
        match self {
            Stage::ImportIdx(_) => "import-idx",
            Stage::Ingest(_) => "ingest",
            Stage::Train(_) => "train",
            Stage::Eval(_) => "eval",
            Stage::ExportFeatures(_) => "export-features",
            Stage::Report(_) => "report",
        }
    }

    /// The paths the stage creates; all must exist for the stage to count as done.
    pub fn outputs(&self) -> Vec<&Path> {
        match self {
            Stage::ImportIdx(s) => vec![&s.out],
            Stage::Ingest(s) => vec![&s.out],
            Stage::Train(s) => vec![&s.out],
            Stage::Eval(s) => s.out.iter().map(PathBuf::as_path).collect(),
            Stage::ExportFeatures(s) => vec![&s.out],
            Stage::Report(s) => s.out.iter().map(PathBuf::as_path).collect(),
        }
    }

    fn resolve(&mut self, base: &Path) {
        let r = |p: &mut PathBuf| *p = base.join(&*p);
        let ro = |p: &mut Option<PathBuf>| {
            if let Some(p) = p {
                *p = base.join(&*p);
            }
        };
        match self {
            Stage::ImportIdx(s) => {
                r(&mut s.images);
                r(&mut s.labels);
                r(&mut s.out);
                if let Some(c) = &mut s.classes {
                    if c != "fashion-mnist" {
                        *c = base.join(&*c).to_string_lossy().into_owned();
                    }
                }
            }
            Stage::Ingest(s) => {
                r(&mut s.raw);
                r(&mut s.out);
                ro(&mut s.labels);
                ro(&mut s.classes);
            }
            Stage::Train(s) => {
                r(&mut s.data);
                ro(&mut s.val);
                r(&mut s.out);
                ro(&mut s.init_from);
            }
            Stage::Eval(s) => {
                r(&mut s.checkpoint);
                r(&mut s.data);
                ro(&mut s.out);
            }
            Stage::ExportFeatures(s) => {
                r(&mut s.checkpoint);
                r(&mut s.data);
                r(&mut s.out);
            }
            Stage::Report(s) => {
                r(&mut s.run);
                s.out = Some(match &s.out {
                    Some(p) => base.join(p),
                    None => s.run.join("report.png"),
                });
            }
        }
    }
}

/// A parsed, resolved and checked pipeline.
#[derive(Clone, Debug, PartialEq)]
pub struct Pipeline {
    /// The file it came from.
    pub path: PathBuf,
    /// Where stage outputs go (resolved).
    pub work_dir: PathBuf,
    /// The stages, in order.
    pub stages: Vec<Stage>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPipeline {
    work_dir: PathBuf,
    #[serde(default)]
    stage: Vec<toml::Table>,
}

impl Pipeline {
    /// Reads, resolves and checks a pipeline file; nothing runs.
    pub fn load(path: &Path) -> Result<Pipeline, PipelineError> {
        let text = std::fs::read_to_string(path).map_err(|source| PipelineError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(path, &text)
    }

    /// Parses pipeline text as if read from `path` (which sets the base of `work_dir`).
    pub fn parse(path: &Path, text: &str) -> Result<Pipeline, PipelineError> {
        let raw: RawPipeline = toml::from_str(text).map_err(|source| PipelineError::Parse {
            path: path.to_path_buf(),
            source,
        })?;
        let dir = path.parent().unwrap_or(Path::new(""));
        let work_dir = dir.join(&raw.work_dir);
        let stage_err = |index: usize, kind: &str, problem: String| PipelineError::Stage {
            path: path.to_path_buf(),
            index,
            kind: kind.to_string(),
            problem,
        };
        if raw.stage.is_empty() {
            return Err(PipelineError::Empty {
                path: path.to_path_buf(),
            });
        }
        let mut stages = Vec::new();
        for (i, mut table) in raw.stage.into_iter().enumerate() {
            let index = i + 1;
            let kind = match table.remove("kind") {
                Some(toml::Value::String(k)) => k,
                Some(other) => {
                    return Err(stage_err(
                        index,
                        "?",
                        format!("`kind` must be a string, not {other}"),
                    ))
                }
                None => {
                    return Err(stage_err(
                        index,
                        "?",
                        format!("missing field `kind`; one of {}", STAGE_KINDS.join(", ")),
                    ))
                }
            };
            fn typed<T: DeserializeOwned>(t: toml::Table) -> Result<T, String> {
                toml::Value::Table(t)
                    .try_into()
                    .map_err(|e: toml::de::Error| {
                        // The span of a value built in memory means nothing; keep the message.
                        e.message().trim().to_string()
                    })
            }
            let parsed = match kind.as_str() {
                "import-idx" => typed(table).map(Stage::ImportIdx),
                "ingest" => typed(table).map(Stage::Ingest),
                "train" => typed::<TrainStage>(table).map(|t| Stage::Train(Box::new(t))),
                "eval" => typed(table).map(Stage::Eval),
                "export-features" => typed(table).map(Stage::ExportFeatures),
                "report" => typed(table).map(Stage::Report),
                other => Err(format!(
                    "unknown kind {other:?}; the kinds are {}",
                    STAGE_KINDS.join(", ")
                )),
            };
            let mut stage = parsed.map_err(|p| stage_err(index, &kind, p))?;
            stage.resolve(&work_dir);
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
        let err = |index: usize, kind: &str, problem: String| PipelineError::Stage {
            path: self.path.clone(),
            index,
            kind: kind.to_string(),
            problem,
        };
        for (i, stage) in self.stages.iter().enumerate() {
            let index = i + 1;
            match stage {
                Stage::ImportIdx(s) if s.limit == Some(0) => {
                    return Err(err(index, "import-idx", "limit must be at least 1".into()));
                }
                Stage::Ingest(s) if s.size == 0 => {
                    return Err(err(index, "ingest", "size must be at least 1".into()));
                }
                Stage::Train(s) => {
                    s.config
                        .validate("config")
                        .map_err(|e| err(index, "train", e.to_string()))?;
                    // The crop must fit in the stored images; catch it now rather than after
                    // an hour of ingest.
                    let input = s.config.model.input_size;
                    for data in std::iter::once(&s.data).chain(&s.val) {
                        let ingest = self.stages[..i].iter().find_map(|st| match st {
                            Stage::Ingest(g) if &g.out == data => Some(g),
                            _ => None,
                        });
                        if let Some(g) = ingest.filter(|g| g.size < input) {
                            return Err(err(
                                index,
                                "train",
                                format!(
                                    "config.model.input_size {input} is larger than the size {} that {} is ingested at; raise the ingest size or lower input_size",
                                    g.size,
                                    data.display()
                                ),
                            ));
                        }
                    }
                }
                Stage::ExportFeatures(s) if s.layer.is_empty() => {
                    return Err(err(index, "export-features", "layer is empty".into()));
                }
                _ => {}
            }
        }
        Ok(())
    }
}

/// The training configuration in a file given to `train --config`: a plain config (as a run's
/// `RUN/config.toml`), or a pipeline file, whose single train stage's `[stage.config]` is used.
pub fn load_train_config(path: &Path) -> Result<TrainConfig, PipelineError> {
    let text = std::fs::read_to_string(path).map_err(|source| PipelineError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    // A pipeline is recognised by its top-level `[[stage]]` array; anything else is a config.
    let is_pipeline = toml::from_str::<toml::Table>(&text)
        .map(|t| t.contains_key("stage"))
        .unwrap_or(false);
    if !is_pipeline {
        return Ok(TrainConfig::load(path)?);
    }
    let p = Pipeline::parse(path, &text)?;
    let mut trains: Vec<TrainConfig> = p
        .stages
        .iter()
        .filter_map(|s| match s {
            Stage::Train(t) => Some(t.config.clone()),
            _ => None,
        })
        .collect();
    match trains.len() {
        1 => Ok(trains.remove(0)),
        count => Err(PipelineError::TrainStages {
            path: path.to_path_buf(),
            count,
        }),
    }
}

/// Runs each kind of stage. `alexnet run` uses [`LibraryRunner`]; tests use a mock.
///
/// `import_idx` and `report` have provided implementations over this crate's functions;
/// the others are the training and data commands, which the implementor supplies.
pub trait StageRunner {
    /// Runs an `import-idx` stage.
    fn import_idx(&self, stage: &ImportIdxStage) -> Result<(), StageError> {
        run_import_idx(stage)
    }
    /// Runs an `ingest` stage.
    fn ingest(&self, stage: &IngestStage) -> Result<(), StageError>;
    /// Runs a `train` stage.
    fn train(&self, stage: &TrainStage) -> Result<(), StageError>;
    /// Runs an `eval` stage.
    fn eval(&self, stage: &EvalStage) -> Result<(), StageError>;
    /// Runs an `export-features` stage.
    fn export_features(&self, stage: &ExportFeaturesStage) -> Result<(), StageError>;
    /// Runs a `report` stage.
    fn report(&self, stage: &ReportStage) -> Result<(), StageError> {
        run_report(stage)
    }
    /// Called before each stage (`index` from 1 of `total`), with whether it is skipped as
    /// done. The default prints one progress line to stderr.
    fn on_stage(&self, index: usize, total: usize, stage: &Stage, skipped: bool) {
        let what = if skipped { " (done, skipped)" } else { "" };
        eprintln!("[{index}/{total}] {}{what}", stage.kind());
    }
}

/// The `import-idx` stage over [`crate::idx::import_idx`].
pub fn run_import_idx(s: &ImportIdxStage) -> Result<(), StageError> {
    let classes = match &s.classes {
        Some(c) => c.parse::<ClassNames>()?,
        None => ClassNames::Numbers,
    };
    crate::idx::import_idx(&ImportIdxConfig {
        images: s.images.clone(),
        labels: s.labels.clone(),
        out: s.out.clone(),
        classes,
        limit: s.limit,
    })?;
    Ok(())
}

/// The `report` stage over [`crate::export::plot::write_report`].
pub fn run_report(s: &ReportStage) -> Result<(), StageError> {
    crate::export::plot::write_report(&s.run, s.out.as_deref())?;
    Ok(())
}

/// A stage kind whose library code is not part of this build.
/// The runner behind `alexnet run`: every stage over this crate's library functions.
pub struct LibraryRunner;

impl StageRunner for LibraryRunner {
    fn ingest(&self, s: &IngestStage) -> Result<(), StageError> {
        let mut cfg = crate::ingest::IngestConfig::new(&s.raw, &s.out);
        cfg.size = s.size;
        cfg.encoding = match s.encoding {
            ShardEncoding::Raw => crate::dataset::Encoding::Raw,
            ShardEncoding::Jpeg => crate::dataset::Encoding::Jpeg,
            ShardEncoding::Png => crate::dataset::Encoding::Png,
        };
        cfg.labels = s.labels.clone();
        cfg.classes = s.classes.clone();
        if let Some(r) = s.shard_rows {
            cfg.shard_rows = r;
        }
        if let Some(j) = s.jobs {
            cfg.jobs = j;
        }
        cfg.strict = s.strict;
        cfg.order = match s.order {
            ShardOrder::Shuffled => crate::ingest::RowOrder::Shuffled(s.seed),
            ShardOrder::Sorted => crate::ingest::RowOrder::Sorted,
        };
        // A stage that stopped half way keeps its complete shards.
        cfg.resume = s.out.exists();
        cfg.progress = true;
        let summary = crate::ingest::ingest(&cfg)?;
        eprintln!("{summary}");
        Ok(())
    }
    fn train(&self, s: &TrainStage) -> Result<(), StageError> {
        let job = crate::train::TrainJob {
            data: vec![s.data.clone()],
            val: s.val.iter().cloned().collect(),
            out: s.out.clone(),
            config: s.config.clone(),
            // A run that stopped half way continues where it left off.
            resume: s.out.join(crate::train::run::LAST).exists(),
            init_from: s.init_from.clone(),
            progress: true,
            classes_from_data: false,
        };
        let r = crate::train::train(&job)?;
        eprintln!(
            "trained {} steps, {} epochs, last loss {:.4}, {:.0} images/s",
            r.steps, r.epochs, r.last_loss, r.images_per_s
        );
        if r.interrupted {
            return Err("training was interrupted; run the pipeline again to continue".into());
        }
        Ok(())
    }
    fn eval(&self, s: &EvalStage) -> Result<(), StageError> {
        let job = crate::train::EvalJob {
            checkpoint: s.checkpoint.clone(),
            data: vec![s.data.clone()],
            view: if s.ten_crop {
                crate::train::View::TenCrop
            } else {
                crate::train::View::Centre
            },
            batch: 128,
            device: crate::device::Device::Auto,
            input_size: None,
        };
        let r = crate::train::eval_checkpoint(&job)?;
        if r.non_finite > 0 {
            eprintln!(
                "warning: {} of {} images got NaN or inf logits and count as misses: {} has diverged",
                r.non_finite,
                r.count,
                s.checkpoint.display()
            );
        }
        let json = serde_json::to_string(&r)?;
        eprintln!(
            "eval: {} images, top-1 accuracy {:.2}%, top-5 accuracy {:.2}%, loss {:.4}",
            r.count,
            r.top1_accuracy * 100.0,
            r.top5_accuracy * 100.0,
            r.loss
        );
        match &s.out {
            Some(path) => {
                let tmp = path.with_extension("json.tmp");
                std::fs::write(&tmp, json + "\n")?;
                std::fs::rename(&tmp, path)?;
            }
            None => println!("{json}"),
        }
        Ok(())
    }
    fn export_features(&self, _: &ExportFeaturesStage) -> Result<(), StageError> {
        Err(
            "the export-features stage is not built yet (issue 6); remove it from the pipeline"
                .into(),
        )
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

/// The record that a stage finished with these arguments.
fn record_path(work_dir: &Path, index: usize, stage: &Stage) -> PathBuf {
    work_dir
        .join(".pipeline")
        .join(format!("{index:02}-{}.json", stage.kind()))
}

fn stage_json(stage: &Stage) -> String {
    // Paths, numbers and plain enums: serialisation cannot fail; a failure would only mean
    // an empty record, which never matches, so the stage re-runs rather than being skipped.
    serde_json::to_string_pretty(stage).unwrap_or_default()
}

/// Runs every stage of `path` in order with `runner`, skipping the stages already done (unless
/// `force`). Stops at the first failure.
pub fn run_pipeline(
    path: &Path,
    runner: &dyn StageRunner,
    force: bool,
) -> Result<Vec<StageOutcome>, PipelineError> {
    let p = Pipeline::load(path)?;
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| PipelineError::Io { path, source }
    };
    let records = p.work_dir.join(".pipeline");
    std::fs::create_dir_all(&records).map_err(io(&records))?;
    let total = p.stages.len();
    let mut outcomes = Vec::new();
    for (i, stage) in p.stages.iter().enumerate() {
        let index = i + 1;
        let record = record_path(&p.work_dir, index, stage);
        let args = stage_json(stage);
        let done = !force
            && std::fs::read_to_string(&record).is_ok_and(|r| r == args)
            && stage.outputs().iter().all(|o| o.exists());
        runner.on_stage(index, total, stage, done);
        if !done {
            // Drop the old record first: if this run dies, the stage must not look done.
            if record.exists() {
                std::fs::remove_file(&record).map_err(io(&record))?;
            }
            let result = match stage {
                Stage::ImportIdx(s) => runner.import_idx(s),
                Stage::Ingest(s) => runner.ingest(s),
                Stage::Train(s) => runner.train(s),
                Stage::Eval(s) => runner.eval(s),
                Stage::ExportFeatures(s) => runner.export_features(s),
                Stage::Report(s) => runner.report(s),
            };
            result.map_err(|source| PipelineError::Failed {
                path: p.path.clone(),
                index,
                kind: stage.kind(),
                source,
            })?;
            std::fs::write(&record, &args).map_err(io(&record))?;
        }
        outcomes.push(StageOutcome {
            index,
            kind: stage.kind(),
            skipped: done,
        });
    }
    Ok(outcomes)
}

/// `alexnet run PIPELINE [--force]`: [`run_pipeline`] with the [`LibraryRunner`].
pub fn run_pipeline_file(path: &Path, force: bool) -> Result<Vec<StageOutcome>, PipelineError> {
    run_pipeline(path, &LibraryRunner, force)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;

    /// Records each call and creates the stage's outputs, as the real commands would.
    #[derive(Default)]
    struct Mock {
        calls: RefCell<Vec<String>>,
        fail: Option<&'static str>,
    }

    impl Mock {
        fn call(&self, stage: Stage) -> Result<(), StageError> {
            self.calls.borrow_mut().push(stage.kind().to_string());
            if self.fail == Some(stage.kind()) {
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
            Ok(())
        }
    }

    impl StageRunner for Mock {
        fn import_idx(&self, s: &ImportIdxStage) -> Result<(), StageError> {
            self.call(Stage::ImportIdx(s.clone()))
        }
        fn ingest(&self, s: &IngestStage) -> Result<(), StageError> {
            self.call(Stage::Ingest(s.clone()))
        }
        fn train(&self, s: &TrainStage) -> Result<(), StageError> {
            self.call(Stage::Train(Box::new(s.clone())))
        }
        fn eval(&self, s: &EvalStage) -> Result<(), StageError> {
            self.call(Stage::Eval(s.clone()))
        }
        fn export_features(&self, s: &ExportFeaturesStage) -> Result<(), StageError> {
            self.call(Stage::ExportFeatures(s.clone()))
        }
        fn report(&self, s: &ReportStage) -> Result<(), StageError> {
            self.call(Stage::Report(s.clone()))
        }
        fn on_stage(&self, _: usize, _: usize, _: &Stage, _: bool) {}
    }

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
        let kinds: Vec<&str> = p.stages.iter().map(Stage::kind).collect();
        assert_eq!(kinds, STAGE_KINDS);
        match &p.stages[0] {
            Stage::ImportIdx(s) => {
                assert_eq!(s.images, Path::new("/data/imgs.gz"));
                assert_eq!(s.out, work.join("raw/train"));
                assert_eq!(s.classes.as_deref(), Some("fashion-mnist"));
                assert_eq!(s.limit, Some(100));
            }
            other => panic!("{other:?}"),
        }
        match &p.stages[1] {
            Stage::Ingest(s) => {
                assert_eq!((s.raw.clone(), s.size), (work.join("raw/train"), 76));
                assert_eq!(s.encoding, ShardEncoding::Raw);
            }
            other => panic!("{other:?}"),
        }
        match &p.stages[2] {
            Stage::Train(s) => {
                assert_eq!(s.config.epochs, 2);
                assert_eq!(s.config.batch, 128, "unset fields keep the paper's values");
                assert_eq!(s.config.model.classes, 10);
                assert_eq!(s.config.model.groups, 2);
            }
            other => panic!("{other:?}"),
        }
        match &p.stages[5] {
            Stage::Report(s) => assert_eq!(s.out.as_deref(), Some(&*work.join("run/report.png"))),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn runs_in_order_then_skips_done_stages_and_reruns_changed_ones() {
        let dir = tempfile::tempdir().unwrap();
        let path = write_pipeline(dir.path(), ALL);
        let mock = Mock::default();
        let out = run_pipeline(&path, &mock, false).unwrap();
        assert_eq!(*mock.calls.borrow(), STAGE_KINDS);
        assert!(out.iter().all(|o| !o.skipped));

        let again = Mock::default();
        let out = run_pipeline(&path, &again, false).unwrap();
        assert!(again.calls.borrow().is_empty(), "{:?}", again.calls);
        assert!(out.iter().all(|o| o.skipped));

        // Changed arguments re-run that stage; a deleted output re-runs its stage.
        write_pipeline(dir.path(), &ALL.replace("epochs = 2", "epochs = 3"));
        std::fs::remove_file(dir.path().join("pipelines/work/eval.json")).unwrap();
        let changed = Mock::default();
        run_pipeline(&path, &changed, false).unwrap();
        assert_eq!(*changed.calls.borrow(), ["train", "eval"]);

        let forced = Mock::default();
        run_pipeline(&path, &forced, true).unwrap();
        assert_eq!(*forced.calls.borrow(), STAGE_KINDS);
    }

    #[test]
    fn a_failed_stage_stops_the_run_and_is_not_recorded() {
        let dir = tempfile::tempdir().unwrap();
        let path = write_pipeline(dir.path(), ALL);
        let mock = Mock {
            fail: Some("train"),
            ..Default::default()
        };
        let e = run_pipeline(&path, &mock, false).unwrap_err();
        assert_eq!(*mock.calls.borrow(), ["import-idx", "ingest", "train"]);
        let msg = e.to_string();
        assert!(msg.contains("stage 3 (train) failed"), "{msg}");
        assert_eq!(std::error::Error::source(&e).unwrap().to_string(), "boom");
        let next = Mock::default();
        run_pipeline(&path, &next, false).unwrap();
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
                images_per_s: 1.0,
                data_wait_s: 0.0,
                exchange: None,
            }))
            .unwrap();
        }
        let out = run_pipeline_file(&path, false).unwrap();
        assert_eq!(out.len(), 2);
        assert!(dir.path().join("pipelines/raw/test/09_ankle_boot").is_dir());
        assert!(dir.path().join("pipelines/curves.png").is_file());
        let again = run_pipeline_file(&path, false).unwrap();
        assert!(again.iter().all(|o| o.skipped));
    }

    #[test]
    fn library_runner_ingest_reports_the_missing_folder() {
        let dir = tempfile::tempdir().unwrap();
        let e = LibraryRunner
            .ingest(&IngestStage {
                raw: dir.path().join("no-such-raw"),
                out: dir.path().join("o"),
                size: 256,
                encoding: ShardEncoding::Raw,
                labels: None,
                classes: None,
                shard_rows: None,
                jobs: None,
                strict: false,
                order: ShardOrder::Shuffled,
                seed: 0,
            })
            .unwrap_err()
            .to_string();
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
        for name in ["quickstart.toml", "imagenet.toml"] {
            let p = Pipeline::load(&root.join(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert!(p.stages.iter().any(|s| s.kind() == "train"), "{name}");
        }
        let q = Pipeline::load(&root.join("quickstart.toml")).unwrap();
        let train = q
            .stages
            .iter()
            .find_map(|s| match s {
                Stage::Train(t) => Some(t),
                _ => None,
            })
            .unwrap();
        assert_eq!(train.config.model.input_size, 67);
        assert_eq!(train.config.model.classes, 10);
        let i = Pipeline::load(&root.join("imagenet.toml")).unwrap();
        let train = i
            .stages
            .iter()
            .find_map(|s| match s {
                Stage::Train(t) => Some(t),
                _ => None,
            })
            .unwrap();
        assert_eq!(
            train.config,
            TrainConfig::default(),
            "imagenet.toml is the paper"
        );
    }
}
