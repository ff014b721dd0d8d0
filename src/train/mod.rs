//! Training: the loop, SGD, the learning-rate schedule, metrics, evaluation.
pub mod augment;
