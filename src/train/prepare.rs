//! A run's first named step: open and check the data, take the run folder (its lock),
//! load or initialise the weights and the run state, and open the metrics file. Nothing here
//! touches a device, so every mistake is reported before one is opened.
use super::engine::Placement;
use super::metrics::MetricsWriter;
use super::run::{RunState, TrainJob, LAST};
use super::schedule::LrSchedule;
use super::{TrainConfig, TrainError};
use crate::dataset::ShardSet;
use crate::lock::FolderLock;
use crate::model::{Checkpoint, DataStats, Params};
use std::path::Path;

/// What a run starts from.
pub(super) struct Prepared {
    /// The configuration with the class count resolved.
    pub cfg: TrainConfig,
    pub set: ShardSet,
    pub val: Option<ShardSet>,
    pub stats: DataStats,
    pub params: Params,
    pub momentum: Option<Params>,
    /// Loader threads (the config's, or one per core).
    pub threads: usize,
    /// Where the network runs.
    pub placement: Placement,
    /// Held until the run returns: a second `train --out` here stops instead of mixing files.
    _lock: FolderLock,
}

impl Prepared {
    /// Everything before the first step, in the order a user's mistakes are cheapest to
    /// report: data, configuration, run folder, weights. The run state and the metrics file
    /// come apart from the rest because the loop changes them while it borrows the rest.
    pub fn open(job: &TrainJob) -> Result<(Prepared, RunState, MetricsWriter), TrainError> {
        if job.resume && !job.out.join(LAST).exists() {
            return Err(TrainError::NothingToResume(job.out.join(LAST)));
        }
        let set = ShardSet::open(&job.data)?;
        let mut resolved = job.config.clone();
        if job.classes_from_data {
            resolved.model.classes = set.classes().len();
        }
        let data = data_stats(&set);
        // A run keeps the statistics it started with: --init-from's checkpoint's, else the
        // data's; a resumed run its checkpoint's (below).
        let (init_params, mut stats) = match (&job.init_from, job.resume) {
            (Some(p), false) => {
                let i = super::init_from::init_from(p, &mut resolved, &data)?;
                (Some(i.params), i.stats)
            }
            _ => (None, data),
        };
        let cfg = &resolved;
        cfg.validate("the resolved configuration")?;
        let val = if job.val.is_empty() {
            None
        } else {
            Some(ShardSet::open(&job.val)?)
        };
        check_data(cfg, &set, val.as_ref())?;
        for gap in set
            .incomplete()
            .iter()
            .chain(val.iter().flat_map(|v| v.incomplete()))
        {
            if !cfg.allow_incomplete {
                return Err(TrainError::Incomplete(gap.clone()));
            }
            eprintln!("warning: {gap}; training on it as --allow-incomplete says");
        }
        super::footprint::check_fits(cfg, set.size())?;
        // Before any file is written: a device list that cannot train fails here.
        let placement = Placement::resolve(&cfg.devices)?;
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| TrainError::Io { path, source }
        };
        if job.out.exists() && !job.out.is_dir() {
            return Err(TrainError::Mismatch(format!(
                "{}: exists and is not a directory; --out names the run directory",
                job.out.display()
            )));
        }
        std::fs::create_dir_all(&job.out).map_err(io(&job.out))?;
        // Held until the run returns: a second `train --out` here stops instead of mixing files.
        let lock = FolderLock::folder(&job.out, "alexnet train")?;
        let last_path = job.out.join(LAST);

        let (params, momentum, st) = if job.resume {
            if !last_path.exists() {
                return Err(TrainError::NothingToResume(last_path));
            }
            let ck = Checkpoint::load(&last_path, None)?;
            if ck.config != cfg.model {
                return Err(TrainError::Mismatch(format!(
                    "{} holds a different model than the configuration asks for; resume with the run's own config.toml",
                    last_path.display()
                )));
            }
            let st = resume_state(&ck, &last_path)?;
            if let Some(s) = ck.stats.filter(|s| s.size == set.size()) {
                stats = s;
            }
            (ck.params, ck.momentum, st)
        } else {
            if last_path.exists() {
                return Err(TrainError::RunExists(job.out.clone()));
            }
            let params = match init_params {
                Some(p) => p,
                None => Params::init_with(&cfg.model, cfg.seed, cfg.init)?,
            };
            let st = RunState {
                step: 0,
                epoch: 0,
                batch_in_epoch: 0,
                schedule: LrSchedule::new(cfg.schedule.clone(), cfg.lr),
                best_error: None,
            };
            (params, None, st)
        };
        cfg.save(&job.out.join("config.toml"))?;
        let metrics = if job.resume {
            MetricsWriter::resume(&job.out, st.step)?
        } else {
            MetricsWriter::create(&job.out)?
        };
        let threads = if cfg.loader.threads == 0 {
            std::thread::available_parallelism().map_or(2, |n| n.get())
        } else {
            cfg.loader.threads
        };
        let prepared = Prepared {
            cfg: resolved,
            set,
            val,
            stats,
            params,
            momentum,
            threads,
            placement,
            _lock: lock,
        };
        Ok((prepared, st, metrics))
    }
}

/// The training data's statistics, as checkpoints store them.
fn data_stats(set: &ShardSet) -> DataStats {
    let (values, vectors) = set.stats().pca();
    DataStats {
        size: set.size(),
        mean_image: set.stats().mean_image(),
        pca_eigenvalues: values.map(|v| v as f32),
        pca_eigenvectors: vectors.map(|r| r.map(|v| v as f32)),
    }
}

/// The model and the data agree (classes, sizes, batch), or an error says what to change.
fn check_data(cfg: &TrainConfig, set: &ShardSet, val: Option<&ShardSet>) -> Result<(), TrainError> {
    let m = &cfg.model;
    if m.classes != set.classes().len() {
        return Err(TrainError::Mismatch(format!(
            "the model has {} classes but {} has {}; pass --classes {} or fix the config's model.classes",
            m.classes,
            set.files()[0].display(),
            set.classes().len(),
            set.classes().len()
        )));
    }
    if m.input_size > set.size() {
        return Err(TrainError::Mismatch(format!(
            "the model's input is {}² but the shards store {}² images; ingest with --size {} or lower --input-size",
            m.input_size,
            set.size(),
            m.input_size
        )));
    }
    if let Some(v) = val {
        if v.size() != set.size() || v.classes() != set.classes() {
            return Err(TrainError::Mismatch(format!(
                "validation shards {} (size {}, {} classes) do not match training shards {} (size {}, {} classes); ingest them with --size {} --classes {}",
                v.files()[0].display(),
                v.size(),
                v.classes().len(),
                set.files()[0].display(),
                set.size(),
                set.classes().len(),
                set.size(),
                set.files()[0].display()
            )));
        }
    }
    if set.len() < cfg.batch {
        return Err(TrainError::Mismatch(format!(
            "{} holds {} images, fewer than one batch of {}; lower --batch",
            set.files()[0].display(),
            set.len(),
            cfg.batch
        )));
    }
    Ok(())
}

fn state_value<T: std::str::FromStr>(
    ck: &Checkpoint,
    path: &Path,
    key: &str,
) -> Result<T, TrainError> {
    ck.run_state
        .get(key)
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| TrainError::RunState {
            path: path.into(),
            key: key.into(),
        })
}

/// The run state `last.safetensors` carries.
fn resume_state(ck: &Checkpoint, path: &Path) -> Result<RunState, TrainError> {
    let schedule_text = ck
        .run_state
        .get("schedule")
        .ok_or_else(|| TrainError::RunState {
            path: path.into(),
            key: "schedule".into(),
        })?;
    let schedule =
        LrSchedule::from_json(schedule_text, &path.display().to_string()).map_err(|_| {
            TrainError::RunState {
                path: path.into(),
                key: "schedule".into(),
            }
        })?;
    Ok(RunState {
        step: state_value(ck, path, "step")?,
        epoch: state_value(ck, path, "epoch")?,
        batch_in_epoch: state_value(ck, path, "batch_in_epoch")?,
        schedule,
        best_error: ck
            .run_state
            .get("best_val_top1_error")
            .and_then(|v| v.parse().ok()),
    })
}
