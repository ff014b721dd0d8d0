//! Engine choice: the layer between the commands' work (`train`, `export`, `predict`,
//! `forward`) and the engines. It owns the `--devices` grammar and where it lands
//! ([`devices`]), the host-side augmentation draws and the loader-to-engine input stage
//! ([`augment`], [`input`]), and a network in evaluation mode on whichever engine a device
//! names ([`infer`]). Commands above it never name a specific engine for inference; the
//! engines below it never see it.
pub mod augment;
pub mod devices;
pub mod hybrid;
pub mod infer;
pub mod input;
pub mod replica_net;
pub mod replicas;
pub mod replicas_gpu;

pub use devices::{Devices, Parallel, Placement};
pub use infer::{CpuStage, Inference, Scorer};

/// What can go wrong choosing, opening or running an engine.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EngineError {
    /// A GPU operation failed.
    #[error(transparent)]
    Gpu(#[from] crate::gpu::GpuError),
    /// The CPU engine failed.
    #[error(transparent)]
    Cpu(#[from] crate::cpu::CpuError),
    /// A device could not be resolved or opened.
    #[error(transparent)]
    Device(#[from] crate::device::DeviceError),
    /// The network could not be built or run.
    #[error(transparent)]
    Network(#[from] crate::model::NetworkError),
    /// The model and what it was asked for do not fit (an activation it does not report).
    #[error("{0}")]
    Mismatch(String),
    /// The devices asked for cannot run together.
    #[error("{0}")]
    NotBuilt(String),
}
