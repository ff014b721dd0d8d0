//! `alexnet train`: flags over a configuration (a file, a pipeline stage's inline table, the
//! saved `RUN/config.toml` on `--resume`, or the paper's defaults).
use super::{print_stdout, serde_args, CommandError};
use crate::train::config::ConfigError;
use crate::train::settings::{parse_milestones, parse_widths, ScheduleKind};
use crate::train::{Devices, Patch, Shuffle, TrainConfig, TrainJob};
use clap::Args;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// Where a run's configuration comes from besides the flags.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(untagged)]
pub enum ConfigSource {
    /// `--config FILE`: a config (as RUN/config.toml) or a pipeline with one train stage.
    File(PathBuf),
    /// A pipeline stage's `[stage.config]` table.
    Inline(Box<TrainConfig>),
}

impl std::str::FromStr for ConfigSource {
    type Err = std::convert::Infallible;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(ConfigSource::File(s.into()))
    }
}

impl<'de> Deserialize<'de> for ConfigSource {
    /// A string is a file; a table is the configuration itself, read with TrainConfig's own
    /// errors (an untagged enum would hide them behind "did not match any variant").
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match toml::Value::deserialize(d)? {
            toml::Value::String(s) => Ok(ConfigSource::File(s.into())),
            toml::Value::Table(t) => toml::Value::Table(t)
                .try_into()
                .map(|c| ConfigSource::Inline(Box::new(c)))
                .map_err(|e: toml::de::Error| serde::de::Error::custom(e.message().trim())),
            other => Err(serde::de::Error::custom(format!(
                "config must be a file name or a table, not {}",
                other.type_str()
            ))),
        }
    }
}

fn default_out() -> PathBuf {
    PathBuf::from("runs/alexnet")
}

/// `alexnet train`.
#[derive(Clone, Debug, PartialEq, Args, Serialize, Deserialize)]
pub struct TrainArgs {
    /// Training shards: .parquet files and/or directories of shards.
    #[arg(required = true)]
    #[serde(with = "serde_args::one_or_many")]
    pub data: Vec<PathBuf>,
    /// Validation shards (drive the learning-rate schedule and best.safetensors).
    #[arg(long)]
    #[serde(default, with = "serde_args::one_or_many")]
    pub val: Vec<PathBuf>,
    /// A training config (TOML, as RUN/config.toml) or a pipeline file with one train stage.
    #[arg(long)]
    #[serde(default)]
    pub config: Option<ConfigSource>,
    /// The run directory.
    #[arg(long, default_value = "runs/alexnet")]
    #[serde(default = "default_out")]
    pub out: PathBuf,
    /// Passes over the training set.
    #[arg(long)]
    #[serde(default)]
    pub epochs: Option<usize>,
    /// Stop after this many steps in all.
    #[arg(long)]
    #[serde(default)]
    pub steps: Option<u64>,
    /// Images per step.
    #[arg(long)]
    #[serde(default)]
    pub batch: Option<usize>,
    /// Initial learning rate. A schedule floor (`min_lr`) above it is scaled down by the same
    /// factor, so a small rate keeps the schedule's shape.
    #[arg(long)]
    #[serde(default)]
    pub lr: Option<f64>,
    /// Seed of every random stream (init, shuffle, augmentation, dropout).
    #[arg(long)]
    #[serde(default)]
    pub seed: Option<u64>,
    /// Devices: `auto` (the first GPU, else the CPU engine; the default), `cpu`, `lavapipe`,
    /// adapters `0`, `0,1`, `0,0`, or a count such as `2` (see `alexnet devices`).
    #[arg(long)]
    #[serde(default)]
    pub devices: Option<Devices>,
    /// Columns per replica: 2 splits the network into the paper's two columns over two
    /// GPU devices (with 4, 6, … devices: one replica of the columns per consecutive pair,
    /// `0,1,2,3`, `0,0,0,0`), 1 runs it whole on every device as data-parallel replicas
    /// (`cpu,cpu`, `0,1,2,3`, `0,0`: all on the CPU engine or all on GPU devices). With
    /// replicas the batch is split among them. Default: 2 for two GPU devices, else 1.
    #[arg(long)]
    #[serde(default)]
    pub columns: Option<usize>,
    /// How several devices share the network: `data` (the default: replicas, or the
    /// paper's columns) or `hybrid` ("One weird trick": conv layers data parallel, fc
    /// layers model parallel; `--devices cpu,cpu[,…]`, one worker per entry, and under
    /// mpirun as many on every rank).
    #[arg(long)]
    #[serde(default)]
    pub parallel: Option<crate::engine::Parallel>,
    /// Continue RUN from RUN/last.safetensors (with RUN/config.toml unless --config is given).
    #[arg(long)]
    #[serde(default)]
    pub resume: bool,
    /// Start from these weights instead of the paper's init.
    #[arg(long)]
    #[serde(default)]
    pub init_from: Option<PathBuf>,
    /// Train only the layers after LAYER (`conv1` … `fc7`); it and every layer before it keep
    /// their starting weights (with --init-from: fine-tune the classifier, `--freeze conv5`).
    #[arg(long, value_name = "LAYER")]
    #[serde(default)]
    pub freeze: Option<String>,
    /// Train on the evaluation view: centre crop, no flip, no lighting noise.
    #[arg(long)]
    #[serde(default)]
    pub no_augment: bool,
    /// Dropout probability of fc6 and fc7 (0 turns it off).
    #[arg(long)]
    #[serde(default)]
    pub dropout: Option<f64>,
    /// Row order: `full` (a new permutation each epoch) or `none` (file order).
    #[arg(long)]
    #[serde(default)]
    pub shuffle: Option<Shuffle>,
    /// Side of the model's input crop.
    #[arg(long)]
    #[serde(default)]
    pub input_size: Option<usize>,
    /// Widths of conv1..conv5, fc6, fc7: seven comma-separated numbers.
    #[arg(long, value_parser = parse_widths)]
    #[serde(default, with = "serde_args::comma_list_opt")]
    pub widths: Option<[usize; 7]>,
    /// Number of classes [default: the shards' class count].
    #[arg(long)]
    #[serde(default)]
    pub classes: Option<usize>,
    /// Weight init: `paper` (N(0, 0.01²)) or `he` (N(0, 2/fan_in); for narrow variants).
    #[arg(long, value_enum)]
    #[serde(default)]
    pub init: Option<crate::model::Init>,
    /// SGD momentum (the paper: 0.9).
    #[arg(long)]
    #[serde(default)]
    pub momentum: Option<f64>,
    /// Weight decay on every parameter (the paper: 0.0005).
    #[arg(long)]
    #[serde(default)]
    pub weight_decay: Option<f64>,
    /// Learning-rate schedule: `plateau` (the paper's: ÷10 when validation error stops
    /// improving), `steps` (÷10 after each of --milestones) or `cosine` (down to --min-lr).
    #[arg(long, value_enum)]
    #[serde(default)]
    pub schedule: Option<ScheduleKind>,
    /// Epochs after which `steps` divides the rate, e.g. 30,60,80.
    #[arg(long, value_parser = parse_milestones)]
    #[serde(default, with = "serde_args::comma_list_opt")]
    pub milestones: Option<Vec<usize>>,
    /// The lowest rate of `plateau` and `cosine`.
    #[arg(long)]
    #[serde(default)]
    pub min_lr: Option<f64>,
    /// `fp32` (default), or `mixed`: f16 tensor-core kernels (f32 accumulation, f32 master
    /// weights) join the tuner's candidates on a GPU with cooperative matrices; elsewhere
    /// the run warns and uses fp32 (docs/devices.md, "Mixed precision").
    #[arg(long, value_enum)]
    #[serde(default)]
    pub precision: Option<crate::gpu::coop::Precision>,
    /// Set any key of the training config (config.toml's dotted names; the value is TOML):
    /// `--set model.lrn=false --set augment.lighting_std=0 --set model.pool_size=2`. Applied
    /// after --config and the other flags; a pipeline stage gives a list, `set = [...]`.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    #[serde(default)]
    pub set: Vec<String>,
    /// Keep training when the loss leaves its bounds (100·ln(classes), or 100× its running
    /// value), for a run that studies divergence; a NaN or inf loss still stops it.
    /// Recorded in config.toml as `divergence_guard = false`.
    #[arg(long)]
    #[serde(default)]
    pub no_divergence_guard: bool,
    /// Under MPI, sum the gradients over the ranks after backward instead of bucket by
    /// bucket during it (docs/distributed.md). Recorded as `overlap_allreduce = false`.
    #[arg(long)]
    // Left out of a pipeline's stage record when off, so records written before the flag
    // existed still match and their stages are not taken for changed.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub no_overlap_allreduce: bool,
    /// Train on a set whose images are all of one class (refused otherwise: the network
    /// would learn to predict it whatever it sees).
    #[arg(long)]
    #[serde(default)]
    pub allow_one_class: bool,
    /// Print the end-of-run summary as one JSON object on stdout.
    #[arg(long)]
    #[serde(default)]
    pub json: bool,
    /// Train on shard folders that lack some of the shards their ingest planned (a killed or
    /// unfinished ingest, or a `--shard I/N` part); without it they are refused.
    #[arg(long)]
    #[serde(default)]
    pub allow_incomplete: bool,
    /// No progress output.
    #[arg(long)]
    #[serde(default)]
    pub quiet: bool,
}

impl TrainArgs {
    /// The flags as settings over the configuration, in a fixed order, then every `--set`.
    pub fn patch(&self) -> Result<Patch, ConfigError> {
        let mut p = Patch::default();
        macro_rules! flag {
            ($field:ident, $flag:literal, $key:literal) => {
                if let Some(v) = &self.$field {
                    p.push($flag, $key, v)?;
                }
            };
        }
        flag!(epochs, "--epochs", "epochs");
        flag!(steps, "--steps", "max_steps");
        flag!(batch, "--batch", "batch");
        flag!(lr, "--lr", "lr");
        flag!(seed, "--seed", "seed");
        flag!(devices, "--devices", "devices");
        flag!(columns, "--columns", "columns");
        flag!(parallel, "--parallel", "parallel");
        flag!(dropout, "--dropout", "dropout");
        flag!(shuffle, "--shuffle", "shuffle");
        flag!(input_size, "--input-size", "model.input_size");
        flag!(widths, "--widths", "model.widths");
        flag!(classes, "--classes", "model.classes");
        flag!(init, "--init", "init");
        flag!(freeze, "--freeze", "freeze");
        flag!(momentum, "--momentum", "momentum");
        flag!(weight_decay, "--weight-decay", "weight_decay");
        flag!(schedule, "--schedule", "schedule.kind");
        flag!(milestones, "--milestones", "schedule.milestones");
        flag!(min_lr, "--min-lr", "schedule.min_lr");
        flag!(precision, "--precision", "precision");
        if self.no_augment {
            p.push("--no-augment", "augment.enabled", &false)?;
        }
        if self.allow_incomplete {
            p.push("--allow-incomplete", "allow_incomplete", &true)?;
        }
        if self.no_divergence_guard {
            p.push("--no-divergence-guard", "divergence_guard", &false)?;
        }
        if self.no_overlap_allreduce {
            p.push("--no-overlap-allreduce", "overlap_allreduce", &false)?;
        }
        if self.allow_one_class {
            p.push("--allow-one-class", "allow_one_class", &true)?;
        }
        for assignment in &self.set {
            p.push_assignment(assignment)?;
        }
        Ok(p)
    }

    /// The run's configuration: the base (`--config`, an inline table, RUN/config.toml on
    /// `--resume`, else the paper's) with the flags on top, validated.
    pub fn effective_config(&self) -> Result<TrainConfig, CommandError> {
        let saved = self.out.join("config.toml");
        let mut config = match (&self.config, self.resume) {
            (Some(ConfigSource::File(path)), _) => load_train_config(path)?,
            (Some(ConfigSource::Inline(c)), _) => {
                c.validate("config")?;
                (**c).clone()
            }
            (None, true) if saved.exists() => TrainConfig::load(&saved)?,
            _ => TrainConfig::default(),
        };
        config.apply(&self.patch()?)?;
        Ok(config)
    }
}

/// What can go wrong reading `train --config FILE`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigFileError {
    /// The file is unusable as a config (unreadable, not TOML, a bad value).
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A pipeline file without exactly one train stage.
    #[error("{path}: {count} train stages; `train --config` takes a pipeline with exactly one, or a plain config file such as RUN/config.toml")]
    TrainStages {
        /// The pipeline file.
        path: PathBuf,
        /// How many train stages it has.
        count: usize,
    },
    /// The pipeline's train stage is malformed.
    #[error("{path}: stage {index} (train): {problem}")]
    Stage {
        /// The pipeline file.
        path: PathBuf,
        /// The stage's number, from 1.
        index: usize,
        /// What is wrong.
        problem: String,
    },
}

/// True when `table` is a pipeline (it has a top-level `[[stage]]` array).
pub(crate) fn is_pipeline(table: &toml::Table) -> bool {
    table.contains_key("stage")
}

/// The training configuration in a file given to `train --config`: a plain config (as a run's
/// `RUN/config.toml`), or a pipeline file, whose single train stage's configuration (its
/// `[stage.config]` with the stage's own flags on top) is used. Reads the stage as
/// `alexnet run` does (the same keys, a `config` file taken from the pipeline's directory)
/// without running or checking the rest of the pipeline.
pub fn load_train_config(path: &Path) -> Result<TrainConfig, ConfigFileError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let doc: toml::Table = match toml::from_str(&text) {
        Ok(doc) if is_pipeline(&doc) => doc,
        _ => return Ok(TrainConfig::load(path)?),
    };
    let stages = doc["stage"].as_array().map(Vec::as_slice).unwrap_or(&[]);
    let trains: Vec<(usize, &toml::Table)> = stages
        .iter()
        .enumerate()
        .filter_map(|(i, s)| s.as_table().map(|t| (i + 1, t)))
        .filter(|(_, t)| t.get("kind").and_then(toml::Value::as_str) == Some("train"))
        .collect();
    let [(index, table)] = trains[..] else {
        return Err(ConfigFileError::TrainStages {
            path: path.to_path_buf(),
            count: trains.len(),
        });
    };
    let stage_err = |problem: String| ConfigFileError::Stage {
        path: path.to_path_buf(),
        index,
        problem,
    };
    let mut table = table.clone();
    table.remove("kind");
    let keys = super::argument_keys("train");
    if let Some(bad) = table.keys().find(|k| !keys.contains(k)) {
        return Err(stage_err(format!(
            "unknown field `{bad}`; train takes {}",
            keys.join(", ")
        )));
    }
    let mut args: TrainArgs = toml::Value::Table(table)
        .try_into()
        .map_err(|e: toml::de::Error| stage_err(e.message().trim().to_string()))?;
    if let Some(ConfigSource::File(p)) = &mut args.config {
        *p = path.parent().unwrap_or(Path::new("")).join(&*p);
    }
    args.effective_config()
        .map_err(|e| stage_err(e.to_string()))
}

pub(super) fn run(a: TrainArgs) -> Result<i32, CommandError> {
    let config = a.effective_config()?;
    let job = TrainJob {
        classes_from_data: a.classes.is_none() && a.config.is_none() && !a.resume,
        data: a.data,
        val: a.val,
        out: a.out,
        config,
        resume: a.resume,
        init_from: a.init_from,
        progress: !a.quiet,
    };
    let s = crate::train::train(&job)?;
    // A stopped run is not a finished one: `train && eval` must not carry on.
    let code = s.stop_signal.map_or(0, crate::train::signals::exit_code);
    // Every rank of an MPI job ends with the same summary: rank 0 prints it, once.
    if crate::collective::world().rank() != 0 {
        return Ok(code);
    }
    if a.json {
        let mut v = serde_json::to_value(&s)?;
        v["out"] = serde_json::json!(job.out);
        print_stdout(&(v.to_string() + "\n"))?;
        return Ok(code);
    }
    let val = s
        .last_val
        .map(|v| {
            format!(
                ", validation top-1 error {:.2}%",
                (1.0 - v.top1_accuracy) * 100.0
            )
        })
        .unwrap_or_default();
    let how = match s.stop_signal {
        Some(sig) => format!("interrupted by {}", crate::train::signals::signal_name(sig)),
        None if s.interrupted => "interrupted".into(),
        None => "done".into(),
    };
    eprintln!(
        "{how}: {} steps, {} epochs, last loss {:.4}{val}, {:.0} images/s on {}; checkpoints in {}",
        s.steps,
        s.epochs,
        s.last_loss,
        s.images_per_s,
        s.engine,
        job.out.display()
    );
    Ok(code)
}
