//! Training: the configuration of a run, the learning-rate schedule and the metrics log (the
//! loop itself, SGD and evaluation join them here).
pub mod config;
pub mod metrics;
pub mod schedule;

pub use config::{Devices, Schedule, Shuffle, TrainConfig, TrainOverrides};
