//! The AlexNet model: configuration and geometry, parameters and init, safetensors checkpoints,
//! and the forward/backward graph over the GPU ops.
pub mod checkpoint;
pub mod columns;
pub mod config;
pub mod cpu_network;
pub mod forward;
pub mod freeze;
pub mod geometry;
pub mod import;
pub mod layers;
pub mod network;
pub mod normalize;
pub mod params;
pub mod reference;
pub mod seeds;
pub mod walk;

pub use crate::backend::{Dropout, Mode};
pub use checkpoint::{Checkpoint, CheckpointError, DataStats};
pub use columns::{ColumnNetwork, ExchangeStats};
pub use config::{ModelConfig, Norm};
pub use cpu_network::CpuNetwork;
pub use geometry::{ConvStage, FcStage, Geometry, GeometryError, LinearShape};
pub use network::Network;
pub use params::{param_specs, Init, ParamSpec, Params, Tensor};
pub use seeds::dropout_seed;
pub use walk::{NetworkError, Walk};
