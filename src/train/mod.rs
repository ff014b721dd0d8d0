//! Training: the configuration of a run, the loop (GPU augmentation, forward, backward, SGD),
//! the learning-rate schedule, the metrics log and evaluation.
pub use crate::engine::augment;
pub mod config;
pub mod divergence;
pub mod engine;
pub mod footprint;
pub mod metrics;
pub mod schedule;
pub mod settings;

pub use config::{Devices, Schedule, Shuffle, TrainConfig};
pub use settings::{Patch, Setting};
pub mod ensemble;
pub mod error;
pub mod eval;
pub mod eval_part;
pub use crate::engine::infer;
pub use crate::engine::input;
mod init_from;
mod prepare;
mod progress;
mod resume;
pub mod run;
pub mod signals;
pub mod tensorboard;
mod trainer;

pub use ensemble::{eval_checkpoints, Ensemble, EnsembleReport, EvalJob, MemberResult};
pub use error::TrainError;
pub use eval::{evaluate, evaluate_rows, EvalCounts, EvalResult, View};
pub use eval_part::{merge_parts, CheckpointId, EvalPart, EvalPartError};
pub use run::{train, TrainJob, TrainSummary};
