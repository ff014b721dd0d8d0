//! The training loop: shards stream from a background loader, each batch is uploaded as u8,
//! augmented on the GPU, and one encoder holds the whole step (augment, forward, loss,
//! backward, SGD). The host reads back only the per-image loss rows, once per logging window,
//! and never queues more than two steps ahead of the GPU.
use super::augment::{random_draws, AugmentSettings, Pca};
use super::divergence::LossGuard;
use super::engine::{Engine, EngineSpec, Placement, StepInput};
use super::eval::{EvalResult, View};
use super::metrics::{EpochRecord, ExchangeRecord, MetricsWriter, Record, StepRecord};
use super::schedule::LrSchedule;
use super::signals::StopSignals;
use super::{TrainConfig, TrainError};
use crate::dataset::{Loader, LoaderConfig, ShardSet, Shuffle as LoaderShuffle};
use crate::gpu::sgd::SgdHyper;
use crate::lock::FolderLock;
use crate::model::{dropout_seed, Checkpoint, DataStats, Dropout, Params};
use crate::shape::stream_seed;
use std::collections::{BTreeMap, VecDeque};
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Stream id of the augmentation draws (dropout uses 6 and 7, init its own namespace).
pub const AUGMENT_STREAM: u32 = 1;
/// The checkpoint written every `checkpoint_every` steps and at each epoch end.
pub const LAST: &str = "last.safetensors";
/// The checkpoint of the best validation top-1 error so far.
pub const BEST: &str = "best.safetensors";

/// A training run: data, output and the resolved configuration.
#[derive(Clone, Debug)]
pub struct TrainJob {
    /// Training shards (files and/or directories).
    pub data: Vec<PathBuf>,
    /// Validation shards; empty for none.
    pub val: Vec<PathBuf>,
    /// The run directory.
    pub out: PathBuf,
    /// The resolved configuration (saved as `RUN/config.toml`).
    pub config: TrainConfig,
    /// Continue from `RUN/last.safetensors`.
    pub resume: bool,
    /// Start from these weights instead of the paper's init.
    pub init_from: Option<PathBuf>,
    /// Draw a progress bar (on a terminal) or print progress lines.
    pub progress: bool,
    /// Take the class count from the training shards instead of the configuration (the
    /// command line does this unless `--classes` is given).
    pub classes_from_data: bool,
}

/// How a run ended (`train --json` prints it).
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct TrainSummary {
    /// Steps done in all.
    pub steps: u64,
    /// Epochs completed.
    pub epochs: usize,
    /// Mean loss of the last logging window.
    pub last_loss: f64,
    /// The last validation result, if any.
    pub last_val: Option<EvalResult>,
    /// True when Ctrl-C or SIGTERM stopped the run (a checkpoint was written).
    pub interrupted: bool,
    /// The signal that stopped the run, if one did (the CLI exits with 128 + it).
    pub stop_signal: Option<i32>,
    /// Training images per second over the run (validation excluded).
    pub images_per_s: f64,
    /// Seconds the step loop waited for the loader.
    pub data_wait_s: f64,
    /// What trained, in words ([`Engine::describe`]): an adapter, two columns, or the CPU
    /// engine with its thread count.
    pub engine: String,
}

/// The run state a checkpoint carries so `--resume` continues exactly.
struct RunState {
    step: u64,
    epoch: usize,
    batch_in_epoch: usize,
    schedule: LrSchedule,
    best_error: Option<f64>,
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

/// Everything a checkpoint write needs besides the state.
struct Saver<'a> {
    engine: &'a Engine,
    spec: &'a EngineSpec<'a>,
    stats: &'a DataStats,
    config: &'a TrainConfig,
    out: &'a Path,
    /// A batch of real images (validation if there is a set, else training) whose logits
    /// must be finite before weights count as good.
    sample: ShardSet,
    threads: usize,
}

impl Saver<'_> {
    /// Writes `last` (and `best` if asked) once the weights are good: finite, and giving
    /// finite logits on the sample batch, unless `logits_checked` says a full validation
    /// just did. Otherwise nothing is written and the run stops as diverged.
    fn save(&self, st: &RunState, best_too: bool, logits_checked: bool) -> Result<(), TrainError> {
        let mut run_state = BTreeMap::new();
        run_state.insert("step".into(), st.step.to_string());
        run_state.insert("epoch".into(), st.epoch.to_string());
        run_state.insert("batch_in_epoch".into(), st.batch_in_epoch.to_string());
        run_state.insert("schedule".into(), st.schedule.to_json());
        run_state.insert("lr".into(), st.schedule.lr().to_string());
        run_state.insert("seed".into(), self.config.seed.to_string());
        if let Some(b) = st.best_error {
            run_state.insert("best_val_top1_error".into(), b.to_string());
        }
        let params = self.engine.download_params()?;
        // A step's loss is measured before its update: weights can blow up on the very step
        // whose loss still looked fine. Never let such weights replace the last good file.
        if let Some(t) = params
            .tensors
            .iter()
            .find(|t| t.data.iter().any(|v| !v.is_finite()))
        {
            return Err(self.diverged(st, format!("{} holds NaN or inf", t.spec.name)));
        }
        if !logits_checked {
            let r = self
                .engine
                .evaluate(self.spec, &self.sample, View::Centre, self.threads)?;
            if !r.is_finite() {
                return Err(self.diverged(
                    st,
                    format!(
                        "the weights are finite but give NaN or inf logits on {} of {} images of {}",
                        r.non_finite,
                        r.count,
                        self.sample.files()[0].display()
                    ),
                ));
            }
        }
        let ck = Checkpoint {
            config: self.config.model.clone(),
            params,
            momentum: Some(self.engine.download_momentum()?),
            stats: Some(self.stats.clone()),
            run_state,
            foreign: false,
        };
        ck.save(&self.out.join(LAST))?;
        if best_too {
            ck.save(&self.out.join(BEST))?;
        }
        Ok(())
    }

    fn diverged(&self, st: &RunState, what: String) -> TrainError {
        diverged(self.out, st.step, what, st.schedule.lr())
    }
}

/// The error of a run that diverged at `step`, saying which checkpoint survives.
fn diverged(out: &Path, step: u64, what: String, lr: f64) -> TrainError {
    let last = out.join(LAST);
    let kept = match Checkpoint::read_metadata(&last).and_then(|m| m.get("step").cloned()) {
        Some(at) => format!(
            "nothing was saved after it: {} (step {at}) holds the last good weights, which --init-from can start from",
            last.display()
        ),
        None => "no checkpoint was written".into(),
    };
    TrainError::Diverged {
        step,
        what,
        kept,
        lr,
    }
}

/// Trains as `job` says; see the module docs for the data flow.
pub fn train(job: &TrainJob) -> Result<TrainSummary, TrainError> {
    if job.resume && !job.out.join(LAST).exists() {
        return Err(TrainError::NothingToResume(job.out.join(LAST)));
    }
    let set = ShardSet::open(&job.data)?;
    let mut resolved = job.config.clone();
    if job.classes_from_data {
        resolved.model.classes = set.classes().len();
    }
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
    let _lock = FolderLock::folder(&job.out, "alexnet train")?;
    let last_path = job.out.join(LAST);

    let (params, momentum, mut st) = if job.resume {
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
        (ck.params, ck.momentum, st)
    } else {
        if last_path.exists() {
            return Err(TrainError::RunExists(job.out.clone()));
        }
        let params = match &job.init_from {
            Some(p) => {
                let ck = Checkpoint::load(p, Some(cfg.model.input_size))?;
                if ck.config.widths != cfg.model.widths
                    || ck.config.classes != cfg.model.classes
                    || ck.config.groups != cfg.model.groups
                {
                    return Err(TrainError::Mismatch(format!(
                        "{} holds widths {:?}, {} classes, groups {}; the run asks for widths {:?}, {} classes, groups {}",
                        p.display(),
                        ck.config.widths,
                        ck.config.classes,
                        ck.config.groups,
                        cfg.model.widths,
                        cfg.model.classes,
                        cfg.model.groups
                    )));
                }
                ck.params
            }
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
    let mut metrics = if job.resume {
        MetricsWriter::resume(&job.out, st.step)?
    } else {
        MetricsWriter::create(&job.out)?
    };

    let stats = data_stats(&set);
    let pca = Pca {
        eigenvalues: stats.pca_eigenvalues,
        eigenvectors: stats.pca_eigenvectors,
    };
    let (batch, stored, crop) = (cfg.batch, set.size(), cfg.model.input_size);
    let spec = EngineSpec {
        model: &cfg.model,
        batch,
        stored,
        mean: &stats.mean_image,
    };
    let engine = Engine::open(&placement, &spec, &params)?;
    if let Some(m) = &momentum {
        engine.upload_momentum(m)?;
    }
    let threads = if cfg.loader.threads == 0 {
        std::thread::available_parallelism().map_or(2, |n| n.get())
    } else {
        cfg.loader.threads
    };
    let saver = Saver {
        engine: &engine,
        spec: &spec,
        stats: &stats,
        config: cfg,
        out: &job.out,
        sample: val.as_ref().unwrap_or(&set).head(batch),
        threads,
    };
    let settings = AugmentSettings {
        random_crop: cfg.augment.enabled,
        flip: cfg.augment.enabled && cfg.augment.flip,
        lighting_std: if cfg.augment.enabled {
            cfg.augment.lighting_std as f32
        } else {
            0.0
        },
    };
    let loader_cfg = LoaderConfig {
        batch,
        seed: cfg.seed,
        shuffle: match cfg.shuffle {
            super::Shuffle::None => LoaderShuffle::None,
            super::Shuffle::Full => LoaderShuffle::Full,
        },
        drop_last: true,
        threads,
        prefetch: cfg.loader.prefetch.max(1),
        ..LoaderConfig::default()
    };
    let steps_per_epoch = (set.len() / batch) as u64;
    let total_steps = cfg
        .max_steps
        .unwrap_or(u64::MAX)
        .min(steps_per_epoch * cfg.epochs as u64);
    let log_every = cfg.log_every.max(1) as usize;
    let hist = engine.loss_history(log_every * batch * 3);
    let row_bytes = (batch * 3 * 4) as u64;
    let stop = StopSignals::install();
    let mut guard = LossGuard::new(cfg.model.classes);
    let bar = progress_bar(job.progress, total_steps.saturating_sub(st.step));

    let mut summary = TrainSummary {
        steps: st.step,
        epochs: st.epoch,
        last_loss: f64::NAN,
        last_val: None,
        interrupted: false,
        stop_signal: None,
        images_per_s: 0.0,
        data_wait_s: 0.0,
        engine: engine.describe(),
    };
    let mut train_secs = 0.0;
    let mut trained_images = 0u64;
    while st.epoch < cfg.epochs && st.step < total_steps {
        let epoch_t0 = Instant::now();
        let mut loader = Loader::epoch(&set, &loader_cfg, st.epoch as u64, st.batch_in_epoch);
        let (mut epoch_loss, mut epoch_steps) = (0.0f64, 0u64);
        let mut pending = VecDeque::new();
        let mut window = (0usize, Instant::now(), loader.wait_time());
        let mut stopped = None;
        while st.step < total_steps {
            let Some(b) = loader.next() else { break };
            let b = b?;
            st.step += 1;
            st.batch_in_epoch += 1;
            let lr = st
                .schedule
                .begin_step(st.step, steps_per_epoch * cfg.epochs as u64);
            // With augmentation off, `settings` asks for the centre crop and no noise, which
            // is the evaluation view docs/network.md's "Evaluation views" names.
            let seed = stream_seed(cfg.seed, st.step, AUGMENT_STREAM);
            let draws = random_draws(seed, batch, stored, crop, &settings, &pca);
            let dropout = Dropout {
                p: cfg.dropout as f32,
                seeds: [
                    dropout_seed(cfg.seed, st.step, 6),
                    dropout_seed(cfg.seed, st.step, 7),
                ],
            };
            let step = StepInput {
                images: &b.images,
                labels: &b.labels,
                draws: &draws,
                dropout,
                hyper: SgdHyper {
                    lr: lr as f32,
                    momentum: cfg.momentum as f32,
                    weight_decay: cfg.weight_decay as f32,
                },
            };
            pending.push_back(engine.train_step(&step, &hist, window.0 as u64 * row_bytes)?);
            window.0 += 1;
            if pending.len() > 2 {
                if let Some(idx) = pending.pop_front() {
                    engine.wait(idx);
                }
            }
            stopped = stop.received();
            let checkpoint_now = cfg.checkpoint_every > 0 && st.step % cfg.checkpoint_every == 0;
            let epoch_end = st.batch_in_epoch as u64 >= steps_per_epoch;
            if window.0 == log_every
                || checkpoint_now
                || stopped.is_some()
                || epoch_end
                || st.step == total_steps
            {
                let rows = engine.read_history(&hist)?;
                pending.clear();
                let n = window.0;
                let step_losses: Vec<f64> = rows[..n * batch * 3]
                    .chunks_exact(batch * 3)
                    .map(|s| s.chunks_exact(3).map(|r| r[0] as f64).sum::<f64>() / batch as f64)
                    .collect();
                // Every step of the window, so one exploding step cannot hide in a mean.
                for (j, &l) in step_losses.iter().enumerate() {
                    if let Err(why) = guard.check(l) {
                        bar.finish_and_clear();
                        let at = st.step + 1 + j as u64 - n as u64;
                        let what = format!("the training loss was {l:.4e}, {why}");
                        return Err(diverged(&job.out, at, what, lr));
                    }
                }
                let loss = step_losses.iter().sum::<f64>() / n as f64;
                let dt = window.1.elapsed().as_secs_f64();
                let waited = (loader.wait_time() - window.2).as_secs_f64();
                train_secs += dt;
                trained_images += (n * batch) as u64;
                epoch_loss += loss * n as f64;
                epoch_steps += n as u64;
                summary.last_loss = loss;
                let rec = StepRecord {
                    step: st.step,
                    epoch: st.epoch + 1,
                    loss,
                    lr,
                    images_per_s: (n * batch) as f64 / dt.max(1e-9),
                    data_wait_s: waited,
                    exchange: (cfg.devices.len() > 1).then(|| {
                        let e = engine.take_exchange_stats();
                        ExchangeRecord {
                            wait_s: e.wait_s,
                            host_s: e.host_s,
                            bytes: e.bytes,
                        }
                    }),
                };
                report_step(&bar, job.progress, &rec, cfg.epochs);
                metrics.write(&Record::Step(rec))?;
                window = (0, Instant::now(), loader.wait_time());
                if checkpoint_now || stopped.is_some() {
                    saver.save(&st, false, false)?;
                }
            }
            bar.inc(1);
            if stopped.is_some() {
                break;
            }
        }
        summary.data_wait_s += loader.wait_time().as_secs_f64();
        drop(loader);
        if stopped.is_some() {
            summary.interrupted = true;
            summary.stop_signal = stopped;
            break;
        }
        if (st.batch_in_epoch as u64) < steps_per_epoch {
            // Stopped by max_steps inside the epoch: keep the position for --resume.
            saver.save(&st, false, false)?;
            break;
        }
        st.epoch += 1;
        st.batch_in_epoch = 0;
        let val_result = match &val {
            Some(v) if st.epoch % cfg.val_every.max(1) == 0 => {
                Some(engine.evaluate(&spec, v, View::Centre, threads)?)
            }
            _ => None,
        };
        let val_error = val_result.map(|r| 1.0 - r.top1_accuracy);
        let improved = match (val_error, st.best_error) {
            (Some(e), Some(b)) => e < b,
            (Some(_), None) => true,
            _ => val.is_none(),
        };
        if let (true, Some(e)) = (improved, val_error) {
            st.best_error = Some(e);
        }
        let lr_used = st.schedule.lr();
        if let Some(change) = st.schedule.end_epoch(st.epoch, val_error) {
            let line = format!(
                "epoch {}: learning rate {} → {}",
                st.epoch, change.from, change.to
            );
            say(&bar, job.progress, &line);
        }
        let val_finite = val_result.map(|r| r.is_finite());
        if val_finite != Some(false) {
            saver.save(&st, improved, val_finite == Some(true))?;
        }
        let rec = EpochRecord {
            epoch: st.epoch,
            step: st.step,
            train_loss: if epoch_steps > 0 {
                epoch_loss / epoch_steps as f64
            } else {
                f64::NAN
            },
            val_loss: val_result.map(|r| r.loss),
            val_top1_error: val_error,
            val_top5_error: val_result.map(|r| 1.0 - r.top5_accuracy),
            lr: lr_used,
            seconds: epoch_t0.elapsed().as_secs_f64(),
        };
        say(&bar, job.progress, &epoch_line(&rec));
        metrics.write(&Record::Epoch(rec))?;
        if let Some(r) = val_result.filter(|r| !r.is_finite()) {
            bar.finish_and_clear();
            let what = format!(
                "the weights give NaN or inf logits on {} of {} validation images",
                r.non_finite, r.count
            );
            return Err(diverged(&job.out, st.step, what, lr_used));
        }
        summary.last_val = val_result.or(summary.last_val);
    }
    bar.finish_and_clear();
    summary.steps = st.step;
    summary.epochs = st.epoch;
    summary.images_per_s = trained_images as f64 / train_secs.max(1e-9);
    Ok(summary)
}

fn progress_bar(enabled: bool, steps: u64) -> indicatif::ProgressBar {
    if !enabled {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(steps);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{bar:30} {pos}/{len} steps  {msg}  [{elapsed_precise} < {eta_precise}]",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    bar
}

/// A line above the bar, or on stderr when there is no terminal to draw one (indicatif drops
/// the lines of a hidden bar), or nowhere under `--quiet`.
fn say(bar: &indicatif::ProgressBar, progress: bool, line: &str) {
    if !progress {
        return;
    }
    if bar.is_hidden() {
        eprintln!("{line}");
    } else {
        bar.println(line);
    }
}

fn report_step(bar: &indicatif::ProgressBar, progress: bool, r: &StepRecord, epochs: usize) {
    if !progress {
        return;
    }
    let mut msg = format!(
        "epoch {}/{epochs}  loss {:.4}  lr {:.2e}  {:.0} img/s  data wait {:.1}s",
        r.epoch, r.loss, r.lr, r.images_per_s, r.data_wait_s
    );
    if let Some(e) = r.exchange {
        msg += &format!("  exchanges {:.1}s", e.wait_s + e.host_s);
    }
    if bar.is_hidden() {
        // Not a terminal (CI, a log file): plain lines instead of a redrawn bar.
        eprintln!("step {}  {msg}", r.step);
    } else {
        bar.set_message(msg);
    }
}

fn epoch_line(r: &EpochRecord) -> String {
    let val = match (r.val_loss, r.val_top1_error, r.val_top5_error) {
        (Some(l), Some(t1), Some(t5)) => format!(
            "  val loss {l:.4}  top-1 error {:.2}%  top-5 error {:.2}%",
            t1 * 100.0,
            t5 * 100.0
        ),
        _ => String::new(),
    };
    format!(
        "epoch {} done (step {}): train loss {:.4}{val}  {:.0}s",
        r.epoch, r.step, r.train_loss, r.seconds
    )
}
