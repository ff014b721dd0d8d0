//! The training configuration: every knob of a run, with the paper's values as defaults, the
//! command-line overrides on top, and the round trip to the `RUN/config.toml` a run saves.
//!
//! Everything here is plain data checked by [`TrainConfig::validate`]; nothing below the CLI
//! sees a raw string except [`Devices`], which parses the `--devices` spelling once.
use crate::model::ModelConfig;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::str::FromStr;

/// What can go wrong reading, checking or writing a training configuration.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The configuration file could not be read.
    #[error("{path}: cannot read the training config")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not valid TOML or has fields a `TrainConfig` does not know.
    #[error("{path}: not a valid training config (see pipelines/imagenet.toml for every field)")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The TOML error, with line and column.
        source: toml::de::Error,
    },
    /// A value is out of range; `origin` says where it came from (a file, or the command line).
    #[error("{origin}: {problem}")]
    Invalid {
        /// The file, or "command line" for overrides.
        origin: String,
        /// What is wrong and what to change.
        problem: String,
    },
    /// The configuration could not be written.
    #[error("{path}: cannot write the training config")]
    Write {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The configuration could not be turned into TOML (a value TOML cannot hold).
    #[error("cannot serialise the training config to TOML")]
    Serialize(#[from] toml::ser::Error),
}

fn invalid(origin: &str, problem: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        origin: origin.to_string(),
        problem: problem.into(),
    }
}

/// Everything a training run needs besides its data. Defaults are the paper's.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrainConfig {
    /// The network.
    pub model: ModelConfig,
    /// How weights start: `paper` (N(0, 0.01²), biases 1 in conv2/4/5 and fc6/7) or `he`
    /// (N(0, 2/fan_in), zero biases; for narrow variants, which stall under the paper's).
    pub init: crate::model::Init,
    /// Passes over the training set (the paper: about 90).
    pub epochs: usize,
    /// Images per SGD step, over all devices together (the paper: 128).
    pub batch: usize,
    /// Initial learning rate (the paper: 0.01).
    pub lr: f64,
    /// Momentum of the SGD velocity (the paper: 0.9).
    pub momentum: f64,
    /// Weight decay, applied to every parameter (the paper: 0.0005).
    pub weight_decay: f64,
    /// Dropout probability in fc6 and fc7 (the paper: 0.5; 0 disables it).
    pub dropout: f64,
    /// How the learning rate changes over the run.
    pub schedule: Schedule,
    /// Seed of every random stream of the run (init, shuffling, augmentation, dropout).
    pub seed: u64,
    /// Order in which training rows are read.
    pub shuffle: Shuffle,
    /// Data augmentation on the GPU.
    pub augment: Augment,
    /// Write `last.safetensors` every this many steps (0: only at the end of each epoch).
    pub checkpoint_every: u64,
    /// Append a step record to `metrics.jsonl` every this many steps.
    pub log_every: u64,
    /// Evaluate on the validation set every this many epochs.
    pub val_every: usize,
    /// Stop after this many steps in all, whatever `epochs` says (for smoke runs and tests).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_steps: Option<u64>,
    /// The background loader.
    pub loader: LoaderConfig,
    /// Which devices train, in the `--devices` spelling (`"auto"`, `"cpu"`, `"0"`, `"0,1"`, `"2"`).
    pub devices: Devices,
    /// Columns per replica (`--columns`): 2 runs the paper's split over two devices, 1 runs
    /// the whole network on each device as data-parallel replicas. Unset: 2 for two GPU
    /// devices, else 1 (docs/distributed.md).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub columns: Option<usize>,
    /// How several devices share the network (`--parallel`): data parallel (the default)
    /// or the hybrid split (docs/distributed.md).
    #[serde(skip_serializing_if = "is_data_parallel")]
    pub parallel: crate::engine::Parallel,
    /// Train on a shard folder that lacks some of the shards its ingest planned (a killed
    /// or unfinished ingest); without it such a folder is refused.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub allow_incomplete: bool,
    /// Stop a run whose loss leaves its bounds (docs/training.md, "Divergence"); off, only a
    /// NaN or infinite loss stops it. Always written to config.toml, so a run without the
    /// guard says so.
    pub divergence_guard: bool,
    /// Train on a set whose images are all of one class (refused unless asked for: the
    /// network would learn to predict that class whatever it sees).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub allow_one_class: bool,
    /// Train only the layers after this block (`conv1` … `fc7`): it and every layer before it
    /// keep the weights (and momentum) the run starts with (`--freeze`, for fine-tuning).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub freeze: Option<String>,
    /// `fp32` (the default) or `mixed`: the f16 tensor-core (cooperative-matrix) kernels may
    /// join the tuner's candidates on a GPU that has them (docs/devices.md, "Mixed
    /// precision"); elsewhere the run falls back to fp32 with a warning. Written to
    /// config.toml only when `mixed`.
    #[serde(skip_serializing_if = "crate::gpu::coop::Precision::is_fp32")]
    pub precision: crate::gpu::coop::Precision,
    /// Across MPI ranks, sum each bucket of gradients while backward is still computing the
    /// layers below it (DDP's overlap; the CPU engine). `false` (`--no-overlap-allreduce`):
    /// sum them all after backward. The weights are the same either way.
    #[serde(skip_serializing_if = "is_true")]
    pub overlap_allreduce: bool,
    /// Most gradient values per bucket of the overlapped all-reduce (buckets are whole
    /// tensors, filled from fc8 down; smaller buckets start earlier, larger ones are fewer
    /// messages).
    #[serde(skip_serializing_if = "is_default_bucket")]
    pub allreduce_bucket: usize,
}

fn is_true(v: &bool) -> bool {
    *v
}

fn is_default_bucket(v: &usize) -> bool {
    *v == crate::collective::overlap::OVERLAP_BUCKET_VALUES
}

impl Default for TrainConfig {
    fn default() -> Self {
        TrainConfig {
            model: ModelConfig::default(),
            init: crate::model::Init::Paper,
            epochs: 90,
            batch: 128,
            lr: 0.01,
            momentum: 0.9,
            weight_decay: 5e-4,
            dropout: 0.5,
            schedule: Schedule::default(),
            seed: 0,
            shuffle: Shuffle::Full,
            augment: Augment::default(),
            checkpoint_every: 0,
            log_every: 10,
            val_every: 1,
            max_steps: None,
            loader: LoaderConfig::default(),
            devices: Devices::default(),
            columns: None,
            parallel: crate::engine::Parallel::Data,
            allow_incomplete: false,
            divergence_guard: true,
            allow_one_class: false,
            freeze: None,
            precision: crate::gpu::coop::Precision::Fp32,
            overlap_allreduce: true,
            allreduce_bucket: crate::collective::overlap::OVERLAP_BUCKET_VALUES,
        }
    }
}

/// The learning-rate schedule, tagged by `kind` in TOML (`[schedule] kind = "plateau"`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum Schedule {
    /// The paper's rule: multiply by `factor` when the validation top-1 error has not improved
    /// for `patience` epochs, never going below `min_lr`.
    Plateau {
        /// Epochs without a new best validation error before the rate drops.
        patience: usize,
        /// Multiplier applied at each drop (the paper: 0.1).
        factor: f64,
        /// The rate never drops below this; once there, it stays.
        min_lr: f64,
    },
    /// Multiply by `factor` after each listed epoch (epochs counted from 1).
    Steps {
        /// Epoch numbers after which the rate drops, strictly increasing.
        milestones: Vec<usize>,
        /// Multiplier applied at each milestone.
        factor: f64,
    },
    /// Half a cosine from `lr` down to `min_lr` over the whole run (`epochs` × steps per epoch),
    /// recomputed every step: no plateau to wait for and no sudden drop, which suits short runs
    /// such as the quickstart, where each epoch the paper's rule waits costs a large share.
    Cosine {
        /// The rate of the last step (default 0).
        #[serde(default)]
        min_lr: f64,
    },
}

impl Default for Schedule {
    /// Patience 5: the paper dropped the rate three times in about 90 epochs, so a plateau
    /// lasted tens of epochs; validation error on 50,000 images wobbles by a few tenths of a
    /// percent, so one epoch without a new best is common while the net still learns, and
    /// patience 1 would drop the rate on noise. Five epochs costs at most ~5% of the run per
    /// drop. `min_lr` 1e-5 allows exactly the paper's three drops from 0.01.
    fn default() -> Self {
        Schedule::Plateau {
            patience: 5,
            factor: 0.1,
            min_lr: 1e-5,
        }
    }
}

/// Order in which training rows are read.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Shuffle {
    /// File order, row order: reproducible by any framework reading the same shards.
    None,
    /// A fresh permutation of all rows each epoch, from the run's seed.
    Full,
}

impl FromStr for Shuffle {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "none" => Ok(Shuffle::None),
            "full" => Ok(Shuffle::Full),
            other => Err(format!("shuffle must be none or full, not {other:?}")),
        }
    }
}

/// The paper's augmentation: random crops, horizontal flips, PCA lighting noise.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Augment {
    /// Off: the evaluation view (centre crop minus the mean image, no flip, no noise).
    pub enabled: bool,
    /// Mirror half of the images left to right.
    pub flip: bool,
    /// Standard deviation of the PCA lighting coefficients (the paper: 0.1; 0 disables it).
    pub lighting_std: f64,
}

impl Default for Augment {
    fn default() -> Self {
        Augment {
            enabled: true,
            flip: true,
            lighting_std: 0.1,
        }
    }
}

/// The background loader that decodes shards into batches.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LoaderConfig {
    /// Reader threads (0: one per core).
    pub threads: usize,
    /// Batches prepared ahead of the GPU.
    pub prefetch: usize,
}

impl Default for LoaderConfig {
    fn default() -> Self {
        LoaderConfig {
            threads: 0,
            prefetch: 4,
        }
    }
}

pub use crate::engine::devices::{Devices, MAX_DEVICES};

impl TrainConfig {
    /// Reads and validates a configuration file (a `RUN/config.toml` or a hand-written one).
    pub fn load(path: &Path) -> Result<TrainConfig, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let cfg: TrainConfig = toml::from_str(&text).map_err(|source| ConfigError::Parse {
            path: path.to_path_buf(),
            source,
        })?;
        cfg.validate(&path.display().to_string())?;
        Ok(cfg)
    }

    /// The configuration as TOML, which [`TrainConfig::load`] reads back to an equal value.
    pub fn to_toml(&self) -> Result<String, ConfigError> {
        Ok(toml::to_string(self)?)
    }

    /// Writes the configuration as TOML, atomically (a temporary file, then a rename), so a
    /// crash never leaves half a `config.toml` beside a run.
    pub fn save(&self, path: &Path) -> Result<(), ConfigError> {
        let text = self.to_toml()?;
        crate::atomic::write_bytes(path, text.as_bytes()).map_err(|e| ConfigError::Write {
            path: path.to_path_buf(),
            source: e.into(),
        })
    }

    /// Checks every value; `origin` (a file name, or "command line") starts the message.
    pub fn validate(&self, origin: &str) -> Result<(), ConfigError> {
        let err = |p: String| Err(invalid(origin, p));
        if let Err(p) = self.model.validate() {
            return err(format!("model: {p}"));
        }
        if let Some(f) = self.freeze.as_deref() {
            if !crate::model::freeze::FREEZABLE.contains(&f) {
                return err(format!(
                    "freeze: no layer `{f}` to freeze through; name one of {} (it and every layer before it keep their weights)",
                    crate::model::freeze::FREEZABLE.join(", ")
                ));
            }
        }
        if self.epochs == 0 {
            return err("epochs must be at least 1".into());
        }
        if self.allreduce_bucket == 0 {
            return err(format!(
                "allreduce_bucket must be at least 1 gradient value (default {})",
                crate::collective::overlap::OVERLAP_BUCKET_VALUES
            ));
        }
        if self.batch == 0 {
            return err("batch must be at least 1 (the paper: 128)".into());
        }
        if !(self.lr.is_finite() && self.lr > 0.0) {
            return err(format!(
                "lr {} must be a positive number (the paper: 0.01)",
                self.lr
            ));
        }
        if !(0.0..1.0).contains(&self.momentum) {
            return err(format!(
                "momentum {} must be in [0, 1) (the paper: 0.9)",
                self.momentum
            ));
        }
        if !(self.weight_decay.is_finite() && self.weight_decay >= 0.0) {
            return err(format!(
                "weight_decay {} must be 0 or more (the paper: 0.0005)",
                self.weight_decay
            ));
        }
        if !(0.0..1.0).contains(&self.dropout) {
            return err(format!(
                "dropout {} must be in [0, 1): it is the probability of dropping a unit (the paper: 0.5)",
                self.dropout
            ));
        }
        match &self.schedule {
            Schedule::Plateau {
                patience,
                factor,
                min_lr,
            } => {
                if *patience == 0 {
                    return err("schedule.patience must be at least 1 epoch".into());
                }
                check_factor(origin, *factor)?;
                if !(min_lr.is_finite() && *min_lr >= 0.0 && *min_lr <= self.lr) {
                    return err(format!(
                        "schedule.min_lr {min_lr} must be between 0 and lr = {}",
                        self.lr
                    ));
                }
            }
            Schedule::Steps { milestones, factor } => {
                check_factor(origin, *factor)?;
                if milestones.is_empty() {
                    return err(
                        "schedule.milestones must list at least one epoch (--milestones 30,60,80)"
                            .into(),
                    );
                }
                if milestones.first() == Some(&0) || milestones.windows(2).any(|w| w[0] >= w[1]) {
                    return err(format!(
                        "schedule.milestones {milestones:?} must be epoch numbers from 1, strictly increasing"
                    ));
                }
            }
            Schedule::Cosine { min_lr } => {
                if !(min_lr.is_finite() && *min_lr >= 0.0 && *min_lr <= self.lr) {
                    return err(format!(
                        "schedule.min_lr {min_lr} must be between 0 and lr = {}",
                        self.lr
                    ));
                }
            }
        }
        if !(self.augment.lighting_std.is_finite() && self.augment.lighting_std >= 0.0) {
            return err(format!(
                "augment.lighting_std {} must be 0 or more (the paper: 0.1)",
                self.augment.lighting_std
            ));
        }
        if self.log_every == 0 {
            return err("log_every must be at least 1 step".into());
        }
        if self.val_every == 0 {
            return err("val_every must be at least 1 epoch".into());
        }
        if self.max_steps == Some(0) {
            return err("max_steps (--steps) must be at least 1".into());
        }
        if self.loader.prefetch == 0 {
            return err("loader.prefetch must be at least 1 batch".into());
        }
        if self.devices.is_empty() {
            return err("devices must name at least one device".into());
        }
        self.devices.check_columns(self.columns).or_else(err)
    }
}

fn is_data_parallel(p: &crate::engine::Parallel) -> bool {
    *p == crate::engine::Parallel::Data
}

fn check_factor(origin: &str, factor: f64) -> Result<(), ConfigError> {
    if factor > 0.0 && factor < 1.0 {
        Ok(())
    } else {
        Err(invalid(
            origin,
            format!("schedule.factor {factor} must be between 0 and 1 (the paper: 0.1)"),
        ))
    }
}

#[cfg(test)]
mod tests {

    use super::*;
    use crate::device::Device;

    #[test]
    fn defaults_are_the_paper() {
        let c = TrainConfig::default();
        assert_eq!(c.model, ModelConfig::paper(1000));
        assert_eq!((c.epochs, c.batch), (90, 128));
        assert_eq!(
            (c.lr, c.momentum, c.weight_decay, c.dropout),
            (0.01, 0.9, 5e-4, 0.5)
        );
        assert!(c.augment.enabled && c.augment.flip && c.augment.lighting_std == 0.1);
        assert_eq!(c.devices.list(), &[Device::Auto]);
        c.validate("test").unwrap();
    }

    #[test]
    fn toml_round_trip_keeps_every_field() {
        let c = TrainConfig {
            model: ModelConfig::small(67, 8, 10),
            schedule: Schedule::Steps {
                milestones: vec![30, 60, 80],
                factor: 0.1,
            },
            max_steps: Some(17),
            shuffle: Shuffle::None,
            devices: "1,".parse().unwrap(),
            lr: 0.0123456789,
            ..Default::default()
        };
        let text = c.to_toml().unwrap();
        let back: TrainConfig = toml::from_str(&text).unwrap();
        assert_eq!(back, c, "{text}");
        assert!(text.contains("devices = \"1,\""), "{text}");
        assert!(text.contains("kind = \"steps\""), "{text}");
    }

    #[test]
    fn save_and_load() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("config.toml");
        let c = TrainConfig {
            seed: 42,
            ..Default::default()
        };
        c.save(&p).unwrap();
        assert_eq!(TrainConfig::load(&p).unwrap(), c);
        // Nothing beside it: the writer's temporary is gone.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn partial_file_takes_defaults_and_unknown_fields_are_rejected() {
        let c: TrainConfig = toml::from_str("epochs = 3\n[schedule]\nkind = \"plateau\"\npatience = 2\nfactor = 0.5\nmin_lr = 0.0\n").unwrap();
        assert_eq!(c.epochs, 3);
        assert_eq!(c.batch, 128);
        assert_eq!(
            c.schedule,
            Schedule::Plateau {
                patience: 2,
                factor: 0.5,
                min_lr: 0.0
            }
        );
        let c: TrainConfig = toml::from_str("[schedule]\nkind = \"cosine\"\n").unwrap();
        assert_eq!(c.schedule, Schedule::Cosine { min_lr: 0.0 });
        let e = toml::from_str::<TrainConfig>("epoch = 3\n").unwrap_err();
        assert!(e.to_string().contains("epoch"), "{e}");
        let e = toml::from_str::<TrainConfig>("[augment]\nflips = true\n").unwrap_err();
        assert!(e.to_string().contains("flips"), "{e}");
        let e = toml::from_str::<TrainConfig>(
            "[schedule]\nkind = \"steps\"\nmilestones = [1]\nfactor = 0.1\npatience = 3\n",
        )
        .unwrap_err();
        assert!(e.to_string().contains("patience"), "{e}");
    }

    #[test]
    fn load_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("bad.toml");
        std::fs::write(&p, "lr = -1.0\n").unwrap();
        let e = TrainConfig::load(&p).unwrap_err().to_string();
        assert!(e.contains("bad.toml") && e.contains("lr -1"), "{e}");
        // A parse error names the file; the TOML detail is its cause, which `main` prints.
        std::fs::write(&p, "epoch = 3\n").unwrap();
        let e = TrainConfig::load(&p).unwrap_err();
        assert!(e.to_string().contains("bad.toml"), "{e}");
        let cause = std::error::Error::source(&e).unwrap().to_string();
        assert!(cause.contains("unknown field `epoch`"), "{cause}");
        let e = TrainConfig::load(&dir.path().join("none.toml"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("none.toml"), "{e}");
    }

    #[test]
    fn schedule_validation() {
        let bad = [
            Schedule::Steps {
                milestones: vec![30, 30],
                factor: 0.1,
            },
            Schedule::Steps {
                milestones: vec![0, 60],
                factor: 0.1,
            },
            Schedule::Steps {
                milestones: vec![30, 60],
                factor: 1.5,
            },
            Schedule::Steps {
                milestones: vec![],
                factor: 0.1,
            },
            Schedule::Plateau {
                patience: 0,
                factor: 0.1,
                min_lr: 0.0,
            },
            Schedule::Plateau {
                patience: 1,
                factor: 0.1,
                min_lr: 1.0,
            },
            Schedule::Cosine { min_lr: 1.0 },
            Schedule::Cosine { min_lr: -1e-4 },
        ];
        for schedule in bad {
            let c = TrainConfig {
                schedule: schedule.clone(),
                ..Default::default()
            };
            let e = c.validate("t.toml").unwrap_err().to_string();
            assert!(e.contains("schedule."), "{schedule:?}: {e}");
        }
    }
}
