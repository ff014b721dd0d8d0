//! The AlexNet model: configuration and geometry, parameters and init, safetensors checkpoints,
//! and the forward/backward graph over the GPU ops.
pub mod config;

pub use config::ModelConfig;
