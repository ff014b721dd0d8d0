//! Errors of training and evaluation.
use std::path::PathBuf;

/// What can stop a training run or an evaluation.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TrainError {
    /// Reading shards failed.
    #[error(transparent)]
    Dataset(#[from] crate::dataset::DatasetError),
    /// A GPU operation failed.
    #[error(transparent)]
    Gpu(#[from] crate::gpu::GpuError),
    /// Building or running the network on the CPU engine failed.
    #[error(transparent)]
    Cpu(#[from] crate::cpu::CpuError),
    /// A device name does not fit this machine.
    #[error(transparent)]
    Device(#[from] crate::device::DeviceError),
    /// Building or running the network failed.
    #[error(transparent)]
    Network(#[from] crate::model::NetworkError),
    /// Choosing or running an engine failed.
    #[error(transparent)]
    Engine(#[from] crate::engine::EngineError),
    /// Reading or writing a checkpoint failed.
    #[error(transparent)]
    Checkpoint(#[from] crate::model::CheckpointError),
    /// The model's shapes are invalid.
    #[error(transparent)]
    Geometry(#[from] crate::model::GeometryError),
    /// The run configuration is invalid.
    #[error(transparent)]
    Config(#[from] super::config::ConfigError),
    /// Writing metrics failed.
    #[error(transparent)]
    Metrics(#[from] super::metrics::MetricsError),
    /// The data and the model or the training and validation sets do not fit together.
    #[error("{0}")]
    Mismatch(String),
    /// `--resume` asked for a change that would make the run's past steps a lie.
    #[error("--resume cannot change `{key}` ({from} → {to}): {why}. Resume with the run's own value (RUN/config.toml), or start a new run from these weights with it: `alexnet train … --init-from RUN/last.safetensors --out NEW`")]
    ResumeChange {
        /// The dotted config key.
        key: String,
        /// The run's value.
        from: String,
        /// The value asked for.
        to: String,
        /// Why it cannot change.
        why: String,
    },
    /// `--resume` of a run that already stands where its settings stop it.
    #[error("{0}")]
    NothingToTrain(String),
    /// An evaluation set without images: its loss would read 0 and its accuracy 1.
    #[error("{}: the set holds no images; a score over no images means nothing: pass shards that hold some (`alexnet inspect` counts them)", .0.display())]
    EmptySet(PathBuf),
    /// The run directory holds a run already.
    #[error("{} already holds a run (last.safetensors): pass --resume to continue it, or choose another --out", .0.display())]
    RunExists(PathBuf),
    /// `--resume` without a checkpoint to resume from.
    #[error("nothing to resume: {} does not exist; start the run without --resume", .0.display())]
    NothingToResume(PathBuf),
    /// A checkpoint's run state is unreadable.
    #[error("{}: run state `{key}` is missing or malformed; the file was not written by `alexnet train`", path.display())]
    RunState {
        /// The checkpoint.
        path: PathBuf,
        /// The metadata key.
        key: String,
    },
    /// Training diverged: the loss exploded or the weights stopped giving finite numbers.
    /// Nothing from the diverged steps was saved.
    #[error("training diverged at step {step}: {what}; {kept}. Train again with a lower --lr (it was {lr}; try {}) or check the data; to study divergence, --no-divergence-guard (divergence_guard = false) turns off the loss bounds (a NaN or inf loss still stops the run)", lr / 10.0)]
    Diverged {
        /// The step at which it was seen.
        step: u64,
        /// What was seen: the loss and the bound it crossed, or the tensor that is not finite.
        what: String,
        /// Which checkpoint survives, if any.
        kept: String,
        /// The learning rate in use.
        lr: f64,
    },
    /// A shard folder lacks shards its ingest planned.
    #[error("{0}; finish it with `alexnet ingest RAW OUT --resume` (the same settings), or pass --allow-incomplete (allow_incomplete = true in a config) to train on what is there")]
    Incomplete(crate::dataset::Incomplete),
    /// The settings need more memory than the machine has.
    #[error(transparent)]
    Memory(#[from] crate::memory::MemoryError),
    /// Another process writes the run directory.
    #[error(transparent)]
    Lock(#[from] crate::lock::LockError),
    /// Something not built yet was asked for.
    #[error("{0}")]
    NotBuilt(String),
    /// An I/O error on the run directory.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
}
