//! A run's first named step: open and check the data, take the run folder (its lock),
//! load or initialise the weights and the run state, and open the metrics file. Nothing here
//! touches a device, so every mistake is reported before one is opened.
use super::engine::Placement;
use super::metrics::{MetricsWriter, Record, ResumeRecord};
use super::run::{RunState, TrainJob, LAST};
use super::schedule::LrSchedule;
use super::{TrainConfig, TrainError};
use crate::dataset::ShardSet;
use crate::engine::Parallel;
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
    /// The training data's digest ([`data_digest`]), recorded in every checkpoint.
    pub data_digest: String,
    /// Held until the run returns: a second `train --out` here stops instead of mixing files.
    /// Only rank 0 of an MPI job holds it (the other ranks write nothing there).
    _lock: Option<FolderLock>,
}

impl Prepared {
    /// Everything before the first step, in the order a user's mistakes are cheapest to
    /// report: data, configuration, run folder, weights. The run state and the metrics file
    /// come apart from the rest because the loop changes them while it borrows the rest.
    ///
    /// Rank 0 of an MPI job (and a run of one process) writes the run folder; the other ranks
    /// read what they need from it and get no metrics writer.
    pub fn open(job: &TrainJob) -> Result<(Prepared, RunState, Option<MetricsWriter>), TrainError> {
        let writer = crate::collective::world().rank() == 0;
        if job.resume && !job.out.join(LAST).exists() {
            return Err(TrainError::NothingToResume(job.out.join(LAST)));
        }
        let set = ShardSet::open(&job.data)?;
        let digest = data_digest(&set);
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
        if let Some(v) = val.as_ref().filter(|v| v.is_empty()) {
            return Err(TrainError::EmptySet(v.files()[0].clone()));
        }
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
        let placement = Placement::resolve(&cfg.devices, cfg.columns);
        let world = crate::collective::world();
        if world.size() > 1 {
            // `--devices local` may place one rank and not another: every rank hears of a
            // failure before rank 0 writes anything, so a refused job leaves no run folder.
            let placed = world
                .all_gather(u64::from(placement.is_ok()))
                .map_err(|e| TrainError::NotBuilt(e.to_string()))?;
            if let (Ok(_), Some(r)) = (&placement, placed.iter().position(|&ok| ok == 0)) {
                return Err(TrainError::NotBuilt(format!(
                    "rank {r} could not place its devices (its own error says why); nothing was written"
                )));
            }
        }
        let placement = match (placement?, cfg.parallel) {
            // Under mpirun each rank's one device is one worker of the split across ranks.
            (Placement::Cpu, Parallel::Hybrid) if world.size() > 1 => Placement::CpuHybrid(1),
            (p, parallel) => p.with_parallel(parallel)?,
        };
        if cfg.devices.is_local() {
            // Rank 0 alone writes the run's files: each rank says here what it took.
            let (local, _) = crate::engine::devices::node_local();
            eprintln!(
                "rank {} (local rank {local}): --devices {} takes {placement:?}",
                world.rank(),
                cfg.devices
            );
        }
        if let Placement::CpuHybrid(workers) = placement {
            check_hybrid(&cfg.model, workers, cfg.batch)?;
        } else {
            check_replicas(&placement, cfg.batch)?;
        }
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
        let lock = if writer {
            Some(FolderLock::folder(&job.out, "alexnet train")?)
        } else {
            None
        };
        let last_path = job.out.join(LAST);
        let mut resumed = Vec::new();

        let (params, momentum, mut st) = if job.resume {
            if !last_path.exists() {
                return Err(TrainError::NothingToResume(last_path));
            }
            let ck = Checkpoint::load(&last_path, None)?;
            let mut st = resume_state(&ck, &last_path)?;
            let saved_path = job.out.join("config.toml");
            let saved = if saved_path.exists() {
                TrainConfig::load(&saved_path)?
            } else {
                // A run folder without its config.toml: the checkpoint still knows the seed.
                let mut c = cfg.clone();
                c.seed = state_value(&ck, &last_path, "seed").unwrap_or(cfg.seed);
                c
            };
            let changes = super::resume::changes(&saved, cfg)?;
            // The data is not in the config: its statistics tell another set from the run's.
            // The data is known by the digest of its own mean image that every checkpoint of
            // the run records (a fine-tuned run trains with its --init-from's mean image, so
            // the checkpoint's statistics cannot tell); older checkpoints by their mean image.
            let same_data = match ck.run_state.get("data_digest") {
                Some(d) => *d == digest,
                None => ck.stats.as_ref().is_none_or(|s| {
                    s.size == set.size() && s.mean_image == set.stats().mean_image()
                }),
            };
            if !same_data {
                return Err(TrainError::Mismatch(format!(
                    "{}: the training data differs from the run's (its mean image is not the one {} was trained on); resume with the run's own data, or start a new run from these weights with --init-from {} --out NEW",
                    set.files()[0].display(),
                    last_path.display(),
                    last_path.display()
                )));
            }
            if ck.config != cfg.model {
                return Err(TrainError::Mismatch(format!(
                    "{} holds a different model than the configuration asks for; resume with the run's own config.toml",
                    last_path.display()
                )));
            }
            if changes
                .iter()
                .any(|c| c.key == "lr" || c.key.starts_with("schedule."))
            {
                st.schedule = super::resume::rebase(&st.schedule, cfg, st.epoch);
            }
            check_left_to_train(cfg, &set, &st, &job.out)?;
            resumed = changes;
            if let Some(s) = ck.stats.clone().filter(|s| s.size == set.size()) {
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
                epoch_loss_sum: 0.0,
                epoch_loss_steps: 0,
                epoch_seconds: 0.0,
            };
            (params, None, st)
        };
        // Saved before the metrics open: the TensorBoard file starts with it as text.
        if writer {
            cfg.save(&job.out.join("config.toml"))?;
        }
        let metrics = if !writer {
            None
        } else if job.resume {
            let mut m = MetricsWriter::resume(&job.out, st.step)?;
            if st.batch_in_epoch > 0 {
                let records = super::metrics::read_metrics(m.path())?;
                st.epoch_seconds =
                    super::metrics::seconds_in_epoch(&records, st.epoch + 1, cfg.batch);
            }
            if !resumed.is_empty() {
                let what: Vec<String> = resumed
                    .iter()
                    .map(|c| format!("{} {} → {}", c.key, c.from, c.to))
                    .collect();
                if job.progress {
                    eprintln!("resuming at step {} with {}", st.step, what.join(", "));
                }
                m.write(&Record::Resume(ResumeRecord {
                    step: st.step,
                    epoch: st.epoch,
                    changes: resumed,
                }))?;
            }
            Some(m)
        } else {
            Some(MetricsWriter::create(&job.out)?)
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
            data_digest: digest,
            _lock: lock,
        };
        Ok((prepared, st, metrics))
    }
}

/// Before any file is written: every worker of the hybrid split (this process's `workers`
/// on every rank) gets rows and fc neurons. Its shares need not be equal, so the global
/// batch need not divide among the workers as data parallelism's does.
fn check_hybrid(
    model: &crate::model::ModelConfig,
    workers: usize,
    batch: usize,
) -> Result<(), TrainError> {
    let world = crate::collective::world();
    Ok(crate::engine::hybrid::check(
        model,
        workers * world.size(),
        batch,
    )?)
}

/// Before any file is written: the global batch must split evenly among every replica of
/// the job (two devices under mpirun are one replica of the two columns per rank).
fn check_replicas(placement: &Placement, batch: usize) -> Result<(), TrainError> {
    let world = crate::collective::world();
    let local = match placement {
        Placement::CpuReplicas(n) => *n,
        Placement::GpuReplicas(a) => a.len(),
        Placement::ColumnReplicas(a) => a.len() / 2,
        _ => 1,
    };
    crate::engine::replicas::Split::in_world(batch, local, world.as_ref()).rows()?;
    Ok(())
}

/// The training data's statistics, as checkpoints store them.
/// A digest of the training data as the run sees it: FNV-1a over its image size and the bits
/// of its merged mean image. A resume compares it to tell another data set from the run's.
fn data_digest(set: &ShardSet) -> String {
    let size = (set.size() as u64).to_le_bytes();
    let bits: Vec<[u8; 4]> = set
        .stats()
        .mean_image()
        .iter()
        .map(|v| v.to_bits().to_le_bytes())
        .collect();
    let h =
        crate::digest::fnv1a_parts(std::iter::once(&size[..]).chain(bits.iter().map(|b| &b[..])));
    format!("{h:016x}")
}

fn data_stats(set: &ShardSet) -> DataStats {
    let (values, vectors) = set.stats().pca();
    DataStats {
        size: set.size(),
        mean_image: set.stats().mean_image(),
        pca_eigenvalues: values.map(|v| v as f32),
        pca_eigenvectors: vectors.map(|r| r.map(|v| v as f32)),
    }
}

/// A resumed run must have steps left under its (possibly changed) `epochs` and
/// `max_steps`; otherwise it would "finish" at once with nothing trained.
fn check_left_to_train(
    cfg: &TrainConfig,
    set: &ShardSet,
    st: &RunState,
    out: &Path,
) -> Result<(), TrainError> {
    let per_epoch = (set.len() / cfg.batch.max(1)) as u64;
    let planned = per_epoch * cfg.epochs as u64;
    let limit = cfg.max_steps.unwrap_or(u64::MAX).min(planned);
    if st.step < limit && st.epoch < cfg.epochs {
        return Ok(());
    }
    let why = match cfg.max_steps {
        Some(m) if m <= planned => format!(
            "max_steps = {m} (set by --steps) stops it there; resume with a larger --steps to train on"
        ),
        _ => format!(
            "epochs = {} of {per_epoch} steps each end there; resume with a larger --epochs to train on",
            cfg.epochs
        ),
    };
    Err(TrainError::NothingToTrain(format!(
        "{}: nothing to train: the run stands at step {} (epoch {} done, {} batches into the next), and {why}",
        out.display(),
        st.step,
        st.epoch,
        st.batch_in_epoch
    )))
}

/// Classes the rejects left without images are named (the model keeps an output for each);
/// a set with images of one class only is refused unless `allow_one_class` asks for it,
/// since a network trained on it learns to predict that class whatever it sees.
fn check_classes(cfg: &TrainConfig, set: &ShardSet) -> Result<(), TrainError> {
    let counts = set.class_counts()?;
    let names = set.classes();
    let empty: Vec<&str> = names
        .iter()
        .zip(&counts)
        .filter(|(_, &n)| n == 0)
        .map(|(c, _)| c.as_str())
        .collect();
    let data = set.files()[0].display();
    if !empty.is_empty() {
        let shown: Vec<&str> = empty.iter().take(10).copied().collect();
        let more = empty.len().saturating_sub(shown.len());
        eprintln!(
            "warning: {} of {} classes have no images in {data} ({}{}); their images were rejected or never there (see the ingest's rejects.jsonl); the model keeps an output for each, which it learns never to predict",
            empty.len(),
            names.len(),
            shown.join(", "),
            if more > 0 { format!(" and {more} more") } else { String::new() }
        );
    }
    let with_images: Vec<&str> = names
        .iter()
        .zip(&counts)
        .filter(|(_, &n)| n > 0)
        .map(|(c, _)| c.as_str())
        .collect();
    if with_images.len() <= 1 && !cfg.allow_one_class {
        return Err(TrainError::Mismatch(format!(
            "{data} holds images of one class only ({}): a network trained on it learns to predict that class whatever it sees; ingest at least two classes, or pass --allow-one-class (allow_one_class = true) to train on it anyway",
            with_images.first().copied().unwrap_or("none")
        )));
    }
    Ok(())
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
    check_classes(cfg, set)?;
    if let Some(v) = val {
        if v.classes() != set.classes() {
            let (t, w) = (set.classes(), v.classes());
            let differ = match (0..t.len().min(w.len())).find(|&i| t[i] != w[i]) {
                Some(i) => format!(
                    "class {i} is {:?} in the validation shards and {:?} in the training shards",
                    w[i], t[i]
                ),
                None => format!(
                    "the validation shards have {} classes, the training shards {}",
                    w.len(),
                    t.len()
                ),
            };
            return Err(TrainError::Mismatch(format!(
                "validation shards {} and training shards {} list different classes: {differ}; ingest both with the same --classes file",
                v.files()[0].display(),
                set.files()[0].display(),
            )));
        }
        if v.size() != set.size() {
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

fn optional<T: std::str::FromStr>(ck: &Checkpoint, key: &str) -> Option<T> {
    ck.run_state.get(key).and_then(|v| v.parse().ok())
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
        // Absent from checkpoints written before they were kept: the epoch record then
        // covers the steps after the resume only, as it used to.
        epoch_loss_sum: optional(ck, "epoch_loss_sum").unwrap_or(0.0),
        epoch_loss_steps: optional(ck, "epoch_loss_steps").unwrap_or(0),
        epoch_seconds: 0.0,
    })
}
