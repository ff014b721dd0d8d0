//! alexnet: the 2012 paper's pipeline with today's parts.
//!
//! Layers only look down: `train`/`export` use `model` and `dataset`; `model` uses `gpu`;
//! `ingest` uses `dataset` for the shard schema. `gpu` knows nothing of AlexNet and `model`
//! knows nothing of Parquet.
#![warn(missing_docs)]

pub mod atomic;
pub mod backend;
pub mod collective;
pub mod commands;
pub mod cpu;
pub mod dataset;
pub mod device;
pub mod digest;
pub mod engine;
pub mod export;
pub mod gpu;
pub mod ingest;
/// IDX import, kept at its old path for callers of `alexnet::idx`.
pub use ingest::idx;
pub mod lock;
pub mod memory;
pub mod model;
pub mod output_check;
pub mod pipeline;
pub mod predict;
pub mod protobuf;
pub mod reference;
pub mod shape;
pub mod train;
