//! The training loop: shards stream from a background loader, each batch is uploaded as u8,
//! augmented on the GPU, and one encoder holds the whole step (augment, forward, loss,
//! backward, SGD); on the CPU engine the same step runs on host memory. The host reads back only the per-image loss rows, once per logging window,
//! and never queues more than two steps ahead of the GPU.
//!
//! The run goes through named steps: [`Prepared::open`] (data, folder, weights; no device),
//! then [`Trainer`] (engine, epochs of steps, logging windows, epoch ends, checkpoints).
use super::eval::EvalResult;
use super::prepare::Prepared;
use super::schedule::LrSchedule;
use super::trainer::Trainer;
use super::{TrainConfig, TrainError};
use std::path::PathBuf;

pub use crate::engine::augment::AUGMENT_STREAM;
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
    /// What trained, in words ([`super::engine::Engine::describe`]): an adapter, two
    /// columns, or the CPU engine with its thread count.
    pub engine: String,
}

/// The run state a checkpoint carries so `--resume` continues exactly.
pub(super) struct RunState {
    pub step: u64,
    pub epoch: usize,
    pub batch_in_epoch: usize,
    pub schedule: LrSchedule,
    pub best_error: Option<f64>,
    /// The current epoch's partial sums up to `step`, so the epoch record after a mid-epoch
    /// resume is the uninterrupted run's: the sum of the logged windows' mean loss times
    /// their steps and those steps (both in the checkpoint), and the seconds spent (from the
    /// step records in metrics.jsonl: a time in the checkpoint would make two identical runs'
    /// checkpoints differ).
    pub epoch_loss_sum: f64,
    pub epoch_loss_steps: u64,
    pub epoch_seconds: f64,
}

/// Trains as `job` says; see the module docs for the data flow.
pub fn train(job: &TrainJob) -> Result<TrainSummary, TrainError> {
    let fresh = !job.out.exists();
    let result = (|| {
        let (prepared, state, metrics) = Prepared::open(job)?;
        Trainer::new(job, &prepared, state, metrics)?.run()
    })();
    // Only rank 0 of an MPI job writes the folder, so only it may take back what it made.
    if result.is_err() && fresh && crate::collective::world().rank() == 0 {
        remove_unstarted(&job.out);
    }
    result
}

/// Removes a run folder this call created when the run failed before it wrote anything worth
/// keeping: only the lock, the config and an empty metrics file are there (a run that logged
/// steps before diverging keeps its folder, which says how it diverged).
fn remove_unstarted(out: &std::path::Path) {
    const OURS: [&str; 3] = [
        crate::lock::LOCK_FILE,
        "config.toml",
        super::metrics::METRICS_FILE,
    ];
    let Ok(entries) = std::fs::read_dir(out) else {
        return;
    };
    let names: Vec<std::ffi::OsString> = entries.flatten().map(|e| e.file_name()).collect();
    let only_ours = names.iter().all(|n| OURS.iter().any(|o| n == *o));
    let metrics = out.join(super::metrics::METRICS_FILE);
    let no_records = std::fs::metadata(&metrics).map_or(true, |m| m.len() == 0);
    if only_ours && no_records {
        for n in &names {
            let _ = std::fs::remove_file(out.join(n));
        }
        let _ = std::fs::remove_dir(out);
    }
}
