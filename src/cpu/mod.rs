//! The CPU engine: the ops of [`crate::backend::Backend`] on host memory, for machines without
//! a GPU (the network walk runs over it as over the GPU). Every op forward and backward, the loss, SGD and the input augmentation, with rayon
//! across the cores and the convolutions and fully connected layers on one GEMM
//! ([`gemm`], `matrixmultiply`). Every buffer is allocated once per batch size.
//!
//! This is the fast engine; `crate::reference` stays the plain truth it is tested against
//! (the suite in `tests/ops/`), as the WGSL kernels are. Files are named for the op they
//! hold, forward beside backward, shapes in the doc comments.
pub mod activation;
pub mod augment;
pub mod backend;
pub mod batchnorm;
pub mod conv;
pub mod dropout;
pub mod gemm;
pub mod linear;
pub mod lrn;
pub mod maxpool;
pub mod sgd;
pub mod softmax;
pub mod views;

pub use activation::{act_backward_in_place, apply_act};
pub use augment::HostInput;
pub use backend::{CpuBackend, CpuBuf};

use std::sync::Arc;

/// What can go wrong building or running the CPU engine.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CpuError {
    /// An input (images, labels, draws) does not fit the network.
    #[error("cpu engine: {what}: {reason}")]
    Input {
        /// Which input.
        what: &'static str,
        /// What is wrong, with the sizes expected.
        reason: String,
    },
    /// The worker threads could not be started.
    #[error("cpu engine: cannot start {threads} worker threads: {reason}")]
    Threads {
        /// Threads asked for.
        threads: usize,
        /// The cause.
        reason: String,
    },
}

/// The CPU engine's workers: a rayon pool of its own, so the data loader's threads and the
/// global pool stay apart from the compute.
#[derive(Clone)]
pub struct CpuDevice {
    pool: Arc<rayon::ThreadPool>,
}

impl std::fmt::Debug for CpuDevice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "CpuDevice({} threads)", self.threads())
    }
}

impl CpuDevice {
    /// A pool of `threads` workers (0: one per core, [`CpuDevice::default_threads`]).
    pub fn new(threads: usize) -> Result<CpuDevice, CpuError> {
        let threads = if threads == 0 {
            Self::default_threads()
        } else {
            threads
        };
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .thread_name(|i| format!("alexnet-cpu-{i}"))
            .build()
            .map_err(|e| CpuError::Threads {
                threads,
                reason: e.to_string(),
            })?;
        Ok(CpuDevice {
            pool: Arc::new(pool),
        })
    }

    /// One worker per core the process may use.
    pub fn default_threads() -> usize {
        std::thread::available_parallelism().map_or(1, |n| n.get())
    }

    /// Workers in the pool.
    pub fn threads(&self) -> usize {
        self.pool.current_num_threads()
    }

    /// Runs `f` on the pool (rayon calls inside it use these workers).
    pub fn install<R: Send>(&self, f: impl FnOnce() -> R + Send) -> R {
        self.pool.install(f)
    }
}

/// What `alexnet devices` prints about the CPU engine.
pub fn describe(threads: usize) -> String {
    format!(
        "[cpu] the CPU engine (native, {threads} thread{}; --devices cpu)\n    matrix products: matrixmultiply ({})\n",
        if threads == 1 { "" } else { "s" },
        simd_level()
    )
}

/// The widest vector instructions `matrixmultiply` picks at run time on this machine.
fn simd_level() -> &'static str {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
        {
            return "AVX2+FMA";
        }
        if std::arch::is_x86_feature_detected!("avx") {
            return "AVX";
        }
        "SSE2"
    }
    #[cfg(target_arch = "aarch64")]
    {
        "NEON"
    }
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    {
        "portable"
    }
}
