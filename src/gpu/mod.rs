//! The WGSL compute engine: wgpu instance, adapters and devices ([`context`]), f32 tensors in
//! storage buffers ([`tensor`]), the pipeline cache and dispatch plumbing ([`kernel`]), and one
//! launcher per shader in `shaders/` (GEMM, convolution, activation, LRN, max pooling, dropout,
//! softmax cross-entropy, SGD).
//!
//! Launchers only *record*: each takes a [`Recorder`] around the caller's
//! [`wgpu::CommandEncoder`] and adds dispatches to it, so a whole training step is one encoder
//! and one submit; with a [`BindCache`] a step that was recorded before allocates nothing, and
//! with a [`KernelTimer`] every dispatch is timed on the GPU. Reading results back
//! ([`Tensor::download`]) is a separate, blocking call meant for tests and metrics.
//!
//! The layer knows nothing of AlexNet: shapes come in as [`crate::shape`] types or plain sizes.
//!
//! ```no_run
//! use alexnet::gpu::{gemm, Gpu, Recorder, Tensor};
//! use alexnet::shape::{Activation, LinearShape};
//! # fn main() -> alexnet::gpu::Result<()> {
//! let gpu = Gpu::new(0)?; // adapter 0 of `alexnet devices`, with the adapter's full limits
//! let s = LinearShape { n: 128, fin: 9216, fout: 4096 };
//! let x = Tensor::from_slice(&gpu, &vec![0.5; s.n * s.fin], "fc6.input");
//! let w = Tensor::zeros(&gpu, s.fout * s.fin, "fc6.weight");
//! let b = Tensor::zeros(&gpu, s.fout, "fc6.bias");
//! let y = Tensor::zeros(&gpu, s.n * s.fout, "fc6.output");
//! let mut encoder = gpu.encoder("train.step");
//! let mut rec = Recorder::new(&gpu, &mut encoder);
//! // y = ReLU(x·Wᵀ + b), the activation fused into the product's epilogue
//! gemm::linear_forward(&mut rec, &s, &x, &w, Some(&b), &y, Some(Activation::Relu))?;
//! drop(rec); // ends the compute pass
//! gpu.submit(encoder); // one submit for everything recorded
//! let host: Vec<f32> = y.download(&gpu)?; // blocking readback: tests and metrics only
//! # Ok(()) }
//! ```

pub mod backend;
pub mod context;
pub mod coop;
pub mod f16_tolerance;

/// Declares the launcher modules (one per shader family, each with a `SHADERS` list) and
/// builds [`kernel::all_shaders`] from them, so a launcher cannot be added without its
/// shaders joining the list.
macro_rules! launchers {
    ($($name:ident),* $(,)?) => {
        $(pub mod $name;)*
        /// Every launcher's shaders, in the order the launchers are declared.
        fn launcher_shaders() -> Vec<&'static kernel::Shader> {
            [$($name::SHADERS),*].concat()
        }
    };
}
launchers!(
    activation,
    augment,
    batchnorm,
    channels,
    conv,
    dropout,
    gemm,
    lrn,
    maxpool,
    sgd,
    softmax_xent
);
pub mod gemm_plan;
pub mod kernel;
pub mod readback;
pub mod recorder;
pub mod selftest;
pub mod step;
pub mod tensor;
pub mod tiles;
pub mod tune_cache;
pub mod tuner;

pub use context::{list_adapters, print_devices, AdapterSummary, Gpu};
pub use readback::ReadbackRing;
pub use recorder::{BindCache, KernelTime, KernelTimer, Recorder};
pub use tensor::Tensor;

/// Everything that can go wrong in the GPU layer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GpuError {
    /// wgpu sees no adapter at all.
    #[error(
        "no GPU adapter found: install a GPU driver, or `apt-get install mesa-vulkan-drivers` for the software one"
    )]
    NoAdapter,
    /// The requested adapter index does not exist.
    #[error(
        "adapter {index} does not exist: only {count} adapter(s) found (run `alexnet devices`)"
    )]
    AdapterIndex {
        /// The index asked for.
        index: usize,
        /// How many adapters there are.
        count: usize,
    },
    /// The adapter refused to create a device.
    #[error("could not create a device on adapter {index} ({name}): {source}")]
    RequestDevice {
        /// Adapter index.
        index: usize,
        /// Adapter name.
        name: String,
        /// wgpu's reason.
        source: wgpu::RequestDeviceError,
    },
    /// A tensor's size does not match what the op needs.
    #[error("{op}: tensor `{tensor}` has {got} elements, expected {expected}")]
    Shape {
        /// The op (shader) name.
        op: &'static str,
        /// Which operand.
        tensor: &'static str,
        /// Elements the op needs.
        expected: usize,
        /// Elements the tensor holds.
        got: usize,
    },
    /// Invalid op arguments (zero sizes, bad groups, probabilities out of range).
    #[error("{op}: {reason}")]
    Invalid {
        /// The op (shader) name.
        op: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// An operand is larger than one storage binding may be and the op cannot split it.
    #[error(
        "{op}: tensor `{tensor}` needs a {bytes}-byte binding but the device allows {limit}; use a smaller batch or a GPU with a larger max_storage_buffer_binding_size"
    )]
    BindingTooLarge {
        /// The op (shader) name.
        op: &'static str,
        /// Which operand.
        tensor: &'static str,
        /// Bytes the binding needs.
        bytes: u64,
        /// The device's binding limit.
        limit: u64,
    },
    /// A size does not fit the u32 indices the shaders use.
    #[error("{op}: size {size} does not fit the shaders' 32-bit indices")]
    TooLarge {
        /// The op (shader) name.
        op: &'static str,
        /// The offending size.
        size: u64,
    },
    /// Mapping a staging buffer for readback failed.
    #[error("reading back tensor `{label}` failed: {reason}")]
    Readback {
        /// The tensor's label.
        label: String,
        /// What failed.
        reason: String,
    },
    /// wgpu reported a validation or out-of-memory error inside an error scope.
    #[error("wgpu error during {what}: {source}")]
    Wgpu {
        /// What was being done.
        what: String,
        /// wgpu's error.
        source: wgpu::Error,
    },
}

/// Result type of the GPU layer.
pub type Result<T> = std::result::Result<T, GpuError>;
