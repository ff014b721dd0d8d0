//! The training loop as named steps over a [`Prepared`] run: [`Trainer::step`] queues one
//! batch, [`Trainer::close_window`] queues a copy of a logging window's loss rows,
//! [`Trainer::log_window`] reads one back (checking for divergence, writing the step
//! record), [`Trainer::end_epoch`] validates, moves the schedule and checkpoints, and
//! [`Trainer::save`] writes weights only once they are known to be good.
//!
//! A window's rows are read while the next window's steps run (a [`ReadbackRing`]), so the
//! queue never drains for logging. Before anything is saved (a checkpoint, a stop, an
//! epoch's end) every window still in flight is read, so no checkpoint is written before the
//! divergence check has seen every step before it.
use super::augment::{AugmentSettings, Pca, StepRandomness};
use super::divergence::LossGuard;
use super::engine::{Engine, EngineSpec, LossHistory, Pending, StepInput};
use super::eval::View;
use super::metrics::{EpochRecord, ExchangeRecord, MetricsWriter, Record, StepRecord};
use super::prepare::Prepared;
use super::progress::{epoch_line, progress_bar, report_step, say};
use super::run::{RunState, TrainJob, TrainSummary, BEST, LAST};
use super::signals::StopSignals;
use super::{TrainConfig, TrainError};
use crate::dataset::{Batch, Loader, LoaderConfig, ShardSet, Shuffle as LoaderShuffle};
use crate::gpu::sgd::SgdHyper;
use crate::gpu::ReadbackRing;
use crate::model::{Checkpoint, DataStats};
use std::collections::{BTreeMap, VecDeque};
use std::path::Path;
use std::time::{Duration, Instant};

/// The steps queued since the last readback.
struct Window {
    steps: usize,
    start: Instant,
    /// The loader's total wait when the window began.
    waited_before: Duration,
}

/// What a closed window's record needs once its rows are back.
struct Closed {
    last_step: u64,
    epoch: usize,
    lr: f64,
    steps: usize,
    seconds: f64,
    waited: Duration,
    exchange: Option<ExchangeRecord>,
}

/// How an epoch's step loop ended.
enum EpochEnd {
    /// Every batch of the epoch was trained.
    Complete,
    /// `max_steps` was reached inside the epoch (the position is saved for `--resume`).
    Cut,
    /// A signal arrived; its checkpoint is written.
    Stopped(i32),
}

/// A run in progress: the prepared inputs, the engine and the loop's state.
pub(super) struct Trainer<'p> {
    job: &'p TrainJob,
    cfg: &'p TrainConfig,
    set: &'p ShardSet,
    val: Option<&'p ShardSet>,
    stats: &'p DataStats,
    data_digest: &'p str,
    spec: EngineSpec<'p>,
    engine: Engine,
    /// A batch of real images (validation if there is a set, else training) whose logits
    /// must be finite before weights count as good.
    sample: ShardSet,
    threads: usize,
    st: RunState,
    /// `None` on an MPI rank other than 0 (rank 0 writes the run's records).
    metrics: Option<MetricsWriter>,
    settings: AugmentSettings,
    pca: Pca,
    loader_cfg: LoaderConfig,
    /// The rows of every global batch this process trains on (what its loader reads).
    rows: std::ops::Range<usize>,
    steps_per_epoch: u64,
    total_steps: u64,
    log_every: usize,
    /// The per-image loss rows of one logging window: on device 0, or on the host.
    hist: LossHistory,
    /// Where closed windows' rows come back on a GPU engine, oldest first.
    ring: Option<ReadbackRing>,
    /// Closed windows' rows on the CPU engine (already on the host when the step returns).
    host_rows: VecDeque<Vec<f32>>,
    /// What closed windows' records need, oldest first.
    closed: VecDeque<Closed>,
    stop: StopSignals,
    guard: LossGuard,
    bar: indicatif::ProgressBar,
    summary: TrainSummary,
    train_secs: f64,
    trained_images: u64,
    /// When this process began the current epoch (its seconds before a resume are in
    /// `st.epoch_seconds`).
    epoch_started: Instant,
}

impl<'p> Trainer<'p> {
    /// Opens the engine on the run's devices with its weights (and momentum, on resume).
    pub fn new(
        job: &'p TrainJob,
        p: &'p Prepared,
        st: RunState,
        metrics: Option<MetricsWriter>,
    ) -> Result<Self, TrainError> {
        let cfg = &p.cfg;
        let batch = cfg.batch;
        let spec = EngineSpec {
            model: &cfg.model,
            batch,
            stored: p.set.size(),
            mean: &p.stats.mean_image,
            precision: cfg.precision,
        };
        let mut engine = Engine::open(&p.placement, &spec, &p.params)?;
        engine.set_overlap_allreduce(cfg.overlap_allreduce.then_some(cfg.allreduce_bucket))?;
        if let Some(block) = &cfg.freeze {
            engine.freeze_through(block)?;
        }
        if let Some(m) = &p.momentum {
            engine.upload_momentum(m)?;
        }
        let on = cfg.augment.enabled;
        let settings = AugmentSettings {
            random_crop: on,
            flip: on && cfg.augment.flip,
            lighting_std: if on {
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
            threads: p.threads,
            prefetch: cfg.loader.prefetch.max(1),
            // Under MPI each rank reads and decodes only the rows it trains on.
            take: (engine.world_size() > 1).then(|| engine.process_rows(batch)),
            ..LoaderConfig::default()
        };
        let rows = engine.process_rows(batch);
        let steps_per_epoch = (p.set.len() / batch) as u64;
        let total_steps = cfg
            .max_steps
            .unwrap_or(u64::MAX)
            .min(steps_per_epoch * cfg.epochs as u64);
        let log_every = cfg.log_every.max(1) as usize;
        let hist = engine.loss_history(log_every * batch * 3);
        // Two slots: the window being read and the one just closed.
        let ring = engine
            .gpu_device()
            .map(|gpu| ReadbackRing::new(gpu, log_every * batch * 3, 2, "loss.history"));
        let bar = progress_bar(job.progress, total_steps.saturating_sub(st.step));
        let summary = TrainSummary {
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
        Ok(Trainer {
            job,
            cfg,
            set: &p.set,
            val: p.val.as_ref(),
            stats: &p.stats,
            data_digest: &p.data_digest,
            sample: p.val.as_ref().unwrap_or(&p.set).head(batch),
            spec,
            engine,
            threads: p.threads,
            st,
            metrics,
            settings,
            pca: Pca {
                eigenvalues: p.stats.pca_eigenvalues,
                eigenvectors: p.stats.pca_eigenvectors,
            },
            loader_cfg,
            rows,
            steps_per_epoch,
            total_steps,
            log_every,
            hist,
            ring,
            host_rows: VecDeque::new(),
            closed: VecDeque::new(),
            stop: StopSignals::install(),
            guard: if cfg.divergence_guard {
                LossGuard::new(cfg.model.classes)
            } else {
                LossGuard::new(cfg.model.classes).without_bounds()
            },
            bar,
            summary,
            train_secs: 0.0,
            trained_images: 0,
            epoch_started: Instant::now(),
        })
    }

    /// Epochs until the configured count or `max_steps`, a signal, or an error.
    pub fn run(mut self) -> Result<TrainSummary, TrainError> {
        while self.st.epoch < self.cfg.epochs && self.st.step < self.total_steps {
            self.epoch_started = Instant::now();
            match self.epoch()? {
                EpochEnd::Stopped(signal) => {
                    self.summary.interrupted = true;
                    self.summary.stop_signal = Some(signal);
                    break;
                }
                EpochEnd::Cut => {
                    self.save(false, false)?;
                    break;
                }
                EpochEnd::Complete => self.end_epoch()?,
            }
        }
        self.bar.finish_and_clear();
        self.summary.steps = self.st.step;
        self.summary.epochs = self.st.epoch;
        self.summary.images_per_s = self.trained_images as f64 / self.train_secs.max(1e-9);
        Ok(self.summary)
    }

    /// The step loop of one epoch, from where the run stands in it.
    fn epoch(&mut self) -> Result<EpochEnd, TrainError> {
        let mut loader = Loader::epoch(
            self.set,
            &self.loader_cfg,
            self.st.epoch as u64,
            self.st.batch_in_epoch,
        );
        let mut pending: VecDeque<Pending> = VecDeque::new();
        let mut window = Window {
            steps: 0,
            start: Instant::now(),
            waited_before: loader.wait_time(),
        };
        let mut stopped = None;
        while self.st.step < self.total_steps {
            let Some(b) = loader.next() else { break };
            let lr = self.step(&b?, &mut window, &mut pending)?;
            stopped = self.stop.received();
            let checkpoint_now =
                self.cfg.checkpoint_every > 0 && self.st.step % self.cfg.checkpoint_every == 0;
            let epoch_end = self.st.batch_in_epoch as u64 >= self.steps_per_epoch;
            let sync = checkpoint_now
                || stopped.is_some()
                || epoch_end
                || self.st.step == self.total_steps;
            if window.steps == self.log_every || sync {
                let waited = loader.wait_time() - window.waited_before;
                self.close_window(&window, lr, waited)?;
                // The window just closed stays in flight unless something is about to be
                // saved or the epoch ends.
                let keep = usize::from(!sync);
                while self.closed.len() > keep {
                    let (mean, n) = self.log_window()?;
                    self.st.epoch_loss_sum += mean * n as f64;
                    self.st.epoch_loss_steps += n as u64;
                }
                if sync {
                    pending.clear();
                }
                window = Window {
                    steps: 0,
                    start: Instant::now(),
                    waited_before: loader.wait_time(),
                };
                if checkpoint_now || stopped.is_some() {
                    self.save(false, false)?;
                }
            }
            self.bar.inc(1);
            if stopped.is_some() {
                break;
            }
        }
        self.summary.data_wait_s += loader.wait_time().as_secs_f64();
        Ok(match stopped {
            Some(signal) => EpochEnd::Stopped(signal),
            None if (self.st.batch_in_epoch as u64) < self.steps_per_epoch => EpochEnd::Cut,
            None => EpochEnd::Complete,
        })
    }

    /// Queues one training step on `b` (its loss rows land in the window's slot) and keeps
    /// at most two steps queued ahead of the GPU. Returns the step's learning rate.
    fn step(
        &mut self,
        b: &Batch,
        window: &mut Window,
        pending: &mut VecDeque<Pending>,
    ) -> Result<f64, TrainError> {
        let cfg = self.cfg;
        let st = &mut self.st;
        st.step += 1;
        st.batch_in_epoch += 1;
        let lr = st
            .schedule
            .begin_step(st.step, self.steps_per_epoch * cfg.epochs as u64);
        // With augmentation off, `settings` asks for the centre crop and no noise, which
        // is the evaluation view docs/network.md's "Evaluation views" names.
        let randomness = StepRandomness {
            run_seed: cfg.seed,
            batch: cfg.batch,
            stored: self.set.size(),
            crop: cfg.model.input_size,
            dropout: cfg.dropout as f32,
            settings: &self.settings,
            pca: &self.pca,
        };
        let draws = randomness.draws(st.step);
        let dropout = randomness.dropout(st.step);
        let batch = cfg.batch;
        let input = StepInput {
            images: &b.images,
            labels: &b.labels,
            // Draws are per global row: this process's rows take theirs.
            draws: &draws[self.rows.clone()],
            dropout,
            hyper: SgdHyper {
                lr: lr as f32,
                momentum: cfg.momentum as f32,
                weight_decay: cfg.weight_decay as f32,
            },
        };
        let row_bytes = (batch * 3 * 4) as u64;
        let at = window.steps as u64 * row_bytes;
        pending.push_back(self.engine.train_step(&input, &self.hist, at)?);
        window.steps += 1;
        if pending.len() > 2 {
            if let Some(p) = pending.pop_front() {
                self.engine.wait(p);
            }
        }
        Ok(lr)
    }

    /// Queues the copy of the window's loss rows and notes what its record needs.
    fn close_window(
        &mut self,
        window: &Window,
        lr: f64,
        waited: Duration,
    ) -> Result<(), TrainError> {
        let len = window.steps * self.cfg.batch * 3;
        match (&mut self.ring, &self.hist, self.engine.gpu_device()) {
            (Some(ring), LossHistory::Gpu(t), Some(gpu)) => ring.start(gpu, t, len)?,
            _ => {
                let rows = self.engine.read_history(&self.hist)?;
                self.host_rows.push_back(rows[..len].to_vec());
            }
        }
        let seconds = window.start.elapsed().as_secs_f64();
        self.train_secs += seconds;
        self.trained_images += (window.steps * self.cfg.batch) as u64;
        self.closed.push_back(Closed {
            last_step: self.st.step,
            epoch: self.st.epoch + 1,
            lr,
            steps: window.steps,
            seconds,
            waited,
            exchange: (self.cfg.devices.len() > 1 || self.engine.world_size() > 1).then(|| {
                let e = self.engine.take_exchange_stats();
                ExchangeRecord {
                    wait_s: e.wait_s,
                    host_s: e.host_s,
                    bytes: e.bytes,
                }
            }),
        });
        Ok(())
    }

    /// Reads the oldest closed window's loss rows, stops the run if any step's loss
    /// diverged, and writes its step record. Returns the window's mean loss and its steps.
    fn log_window(&mut self) -> Result<(f64, usize), TrainError> {
        let rows = match (&mut self.ring, self.engine.gpu_device()) {
            (Some(ring), Some(gpu)) => ring.collect(gpu)?,
            _ => self.host_rows.pop_front(),
        };
        let (Some(w), Some(rows)) = (self.closed.pop_front(), rows) else {
            return Err(TrainError::NotBuilt(
                "a logging window was read back twice (a bug in the training loop)".into(),
            ));
        };
        let (batch, n) = (self.cfg.batch, w.steps);
        let step_losses: Vec<f64> = rows
            .chunks_exact(batch * 3)
            .map(|s| s.chunks_exact(3).map(|r| r[0] as f64).sum::<f64>() / batch as f64)
            .collect();
        // Every step of the window, so one exploding step cannot hide in a mean.
        for (j, &l) in step_losses.iter().enumerate() {
            if let Err(why) = self.guard.check(l) {
                self.bar.finish_and_clear();
                let at = w.last_step + 1 + j as u64 - n as u64;
                let what = format!("the training loss was {l:.4e}, {why}");
                return Err(diverged(&self.job.out, at, what, w.lr));
            }
        }
        let loss = step_losses.iter().sum::<f64>() / n as f64;
        let hits: f64 = rows.chunks_exact(3).map(|r| r[1] as f64).sum();
        self.summary.last_loss = loss;
        let rec = StepRecord {
            step: w.last_step,
            epoch: w.epoch,
            loss,
            lr: w.lr,
            top1_error: Some(1.0 - hits / (n * batch) as f64),
            images_per_s: (n * batch) as f64 / w.seconds.max(1e-9),
            data_wait_s: w.waited.as_secs_f64(),
            exchange: w.exchange,
        };
        report_step(&self.bar, self.job.progress, &rec, self.cfg.epochs);
        if let Some(m) = &mut self.metrics {
            m.write(&Record::Step(rec))?;
        }
        Ok((loss, n))
    }

    /// After an epoch's last step: validation, the schedule, the checkpoints, the epoch
    /// record; a validation with non-finite logits stops the run.
    fn end_epoch(&mut self) -> Result<(), TrainError> {
        let (loss_sum, steps) = (self.st.epoch_loss_sum, self.st.epoch_loss_steps);
        let seconds_before = self.st.epoch_seconds;
        self.st.epoch_loss_sum = 0.0;
        self.st.epoch_loss_steps = 0;
        self.st.epoch_seconds = 0.0;
        let st = &mut self.st;
        st.epoch += 1;
        st.batch_in_epoch = 0;
        let val_result =
            match self.val {
                Some(v) if st.epoch % self.cfg.val_every.max(1) == 0 => Some(
                    self.engine
                        .validate(&self.spec, v, View::Centre, self.threads)?,
                ),
                _ => None,
            };
        let val_error = val_result.map(|r| 1.0 - r.top1_accuracy);
        let improved = match (val_error, st.best_error) {
            (Some(e), Some(b)) => e < b,
            (Some(_), None) => true,
            _ => self.val.is_none(),
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
            say(&self.bar, self.job.progress, &line);
        }
        let val_finite = val_result.map(|r| r.is_finite());
        if val_finite != Some(false) {
            self.save(improved, val_finite == Some(true))?;
        }
        let rec = EpochRecord {
            epoch: self.st.epoch,
            step: self.st.step,
            train_loss: if steps > 0 {
                loss_sum / steps as f64
            } else {
                f64::NAN
            },
            val_loss: val_result.map(|r| r.loss),
            val_top1_error: val_error,
            val_top5_error: val_result.map(|r| 1.0 - r.top5_accuracy),
            lr: lr_used,
            seconds: seconds_before + self.epoch_started.elapsed().as_secs_f64(),
        };
        say(&self.bar, self.job.progress, &epoch_line(&rec));
        if let Some(m) = &mut self.metrics {
            m.write(&Record::Epoch(rec))?;
        }
        if let Some(r) = val_result.filter(|r| !r.is_finite()) {
            self.bar.finish_and_clear();
            let what = format!(
                "the weights give NaN or inf logits on {} of {} validation images",
                r.non_finite, r.count
            );
            return Err(diverged(&self.job.out, self.st.step, what, lr_used));
        }
        self.summary.last_val = val_result.or(self.summary.last_val);
        Ok(())
    }

    /// Writes `last` (and `best` if asked) once the weights are good: finite, and giving
    /// finite logits on the sample batch, unless `logits_checked` says a full validation
    /// just did. Otherwise nothing is written and the run stops as diverged.
    fn save(&self, best_too: bool, logits_checked: bool) -> Result<(), TrainError> {
        let st = &self.st;
        let mut run_state = BTreeMap::new();
        run_state.insert("step".into(), st.step.to_string());
        run_state.insert("epoch".into(), st.epoch.to_string());
        run_state.insert("batch_in_epoch".into(), st.batch_in_epoch.to_string());
        run_state.insert("schedule".into(), st.schedule.to_json());
        run_state.insert("lr".into(), st.schedule.lr().to_string());
        run_state.insert("seed".into(), self.cfg.seed.to_string());
        run_state.insert("data_digest".into(), self.data_digest.to_owned());
        // What the data's images were resized with, for predict to resize new ones alike.
        run_state.insert(
            crate::dataset::resize::CHECKPOINT_KEY.into(),
            self.set.resize().as_str().into(),
        );
        // The wnids in label order, so that `eval` and `predict` can average networks whose
        // data listed the classes in another order (mapped by name, not by number).
        run_state.insert(
            super::ensemble::CLASSES_KEY.into(),
            serde_json::to_string(self.set.classes()).unwrap_or_default(),
        );
        run_state.insert("epoch_loss_sum".into(), st.epoch_loss_sum.to_string());
        run_state.insert("epoch_loss_steps".into(), st.epoch_loss_steps.to_string());
        if let Some(b) = st.best_error {
            run_state.insert("best_val_top1_error".into(), b.to_string());
        }
        let world = self.engine.world_size();
        if world > 1 {
            // Informational: a resume may use another world size (the global batch is what
            // the saved position counts in).
            run_state.insert("world_size".into(), world.to_string());
        }
        let params = self.engine.download_params()?;
        let diverged_here = |what| diverged(&self.job.out, st.step, what, st.schedule.lr());
        // A step's loss is measured before its update: weights can blow up on the very step
        // whose loss still looked fine. Never let such weights replace the last good file.
        if let Some(t) = params
            .tensors
            .iter()
            .find(|t| t.data.iter().any(|v| !v.is_finite()))
        {
            return Err(diverged_here(format!("{} holds NaN or inf", t.spec.name)));
        }
        if !logits_checked {
            let r = self
                .engine
                .evaluate(&self.spec, &self.sample, View::Centre, self.threads)?;
            if !r.is_finite() {
                return Err(diverged_here(format!(
                    "the weights are finite but give NaN or inf logits on {} of {} images of {}",
                    r.non_finite,
                    r.count,
                    self.sample.files()[0].display()
                )));
            }
        }
        let momentum = self.engine.download_momentum()?;
        // Every rank checks the weights it would have written against rank 0's before rank 0
        // writes: a drift between ranks stops the run instead of being saved.
        self.engine.check_same_on_every_rank(&params, &momentum)?;
        if self.metrics.is_none() {
            return Ok(());
        }
        let ck = Checkpoint {
            config: self.cfg.model.clone(),
            params,
            momentum: Some(momentum),
            stats: Some(self.stats.clone()),
            run_state,
            foreign: false,
        };
        ck.save(&self.job.out.join(LAST))?;
        if best_too {
            ck.save(&self.job.out.join(BEST))?;
        }
        Ok(())
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
