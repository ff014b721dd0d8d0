//! The AlexNet model: configuration and geometry, parameters and init, safetensors checkpoints,
//! and the forward/backward graph over the GPU ops.
pub mod checkpoint;
pub mod columns;
pub mod config;
pub mod forward;
pub mod geometry;
pub mod import;
pub mod layers;
pub mod network;
pub mod normalize;
pub mod params;
pub mod seeds;

pub use checkpoint::{Checkpoint, CheckpointError, DataStats};
pub use columns::{ColumnNetwork, ExchangeStats};
pub use config::ModelConfig;
pub use geometry::{ConvStage, FcStage, Geometry, GeometryError, LinearShape};
pub use network::{Dropout, Network, NetworkError};
pub use params::{param_specs, Init, ParamSpec, Params, Tensor};
pub use seeds::dropout_seed;
