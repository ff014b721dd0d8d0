//! The hybrid scheme of Krizhevsky's "One weird trick for parallelizing convolutional neural
//! networks" (2014) over K workers: the convolutional layers (with their ReLU, LRN and
//! pooling) are data parallel, each worker running them on its share of the global batch's
//! rows with every conv weight whole, and their weight gradients summed over the workers
//! before the step; the fully connected layers are model parallel, each worker holding its
//! share of every fc layer's output neurons (those rows of the weight and bias) and computing
//! them for the whole global batch, so their ~58.6 M parameters (the paper's model) are never
//! exchanged. What crosses instead:
//! - forward: conv5's pooled activations, all gathered at once (the paper's first variant:
//!   every worker sends its rows to every other, then all compute fc6 on all of them), and
//!   each fc layer's neurons gathered before the next fc layer (or the loss) reads them;
//! - backward: each fc layer's input gradient, a partial sum over the workers' neurons,
//!   reduce-scattered into neurons (fc7, fc8) or into the workers' rows (fc6 to conv5);
//! - at the step: the conv weight gradients, all-reduced.
//!
//! Like the two-column split (`crate::model::columns`) it is a wrapper backend ([`Hybrid`]):
//! the one walk (`crate::model::walk`) runs over it at the global batch, and each op says in
//! which form ([`buf::Form`]) it reads and writes its tensors. The loss is the mean over the
//! global batch, so each worker's conv gradient is its rows' share and their sum is the
//! one-device gradient; dropout masks are drawn over the whole `[global batch, neurons]`
//! tensor, so each (global row, neuron) gets the one-device mask. The run is the one-device
//! run at the global batch, whatever K.
//!
//! In one process the workers' engines run one after another and the exchanges meet on the
//! host; [`exchange::Traffic`] counts what each worker would hand to MPI's collectives.
pub mod buf;
pub mod exchange;
mod ops;

use super::EngineError;
use crate::backend::{Backend, Dropout, Mode, SgdHyper};
use crate::collective::{Solo, World};
use crate::cpu::{CpuBackend, CpuDevice, HostInput};
use crate::model::{ModelConfig, NetworkError, Norm, Params, Walk};
use crate::shape::AugmentDraw;
pub use buf::{Form, HBuf, Part};
pub use exchange::Traffic;
use std::rc::Rc;

/// K engines driven as one [`Backend`] by the walk: data parallel below fc6, model parallel
/// from it on. The workers are this process's engines; over MPI every rank holds the same
/// number of them and rank r's are the workers `r·L .. (r+1)·L` of the K = L·ranks in all.
pub struct Hybrid<B: Backend> {
    workers: Vec<B>,
    /// The other ranks' workers: the exchanges go through it ([`Solo`]: none).
    world: Rc<dyn World>,
    traffic: Traffic,
}

impl<B: Backend> std::fmt::Debug for Hybrid<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hybrid")
            .field("local workers", &self.workers.len())
            .field("world", &self.world.describe())
            .field("traffic", &self.traffic)
            .finish()
    }
}

impl<B: Backend> Hybrid<B> {
    /// The split over these workers' engines (one per worker), all in this process.
    pub fn new(workers: Vec<B>) -> Hybrid<B> {
        Hybrid::over(workers, Rc::new(Solo))
    }

    /// The split over these workers here and as many on every other rank of `world`.
    pub fn over(workers: Vec<B>, world: Rc<dyn World>) -> Hybrid<B> {
        Hybrid {
            workers,
            world,
            traffic: Traffic::default(),
        }
    }

    /// Workers in all (every rank's).
    pub fn workers(&self) -> usize {
        self.workers.len() * self.world.size()
    }

    /// The place among every rank's workers of this process's worker `i`.
    fn global(&self, i: usize) -> usize {
        self.world.rank() * self.workers.len() + i
    }

    /// What the split's collectives carried since the last call.
    pub fn take_traffic(&mut self) -> Traffic {
        std::mem::take(&mut self.traffic)
    }
}

/// Batch normalisation's statistics would be per worker's rows in the conv layers (not the
/// one-device run) and its running statistics would drift apart: refused.
fn no_batch_norm() -> NetworkError {
    NetworkError::Input {
        what: "model.norm",
        reason: "batch normalisation is not built for the hybrid split; use model.norm = \"lrn\" or \"none\", or data-parallel replicas (--parallel data)".into(),
    }
}

/// Why `config` cannot be split over `workers` at `global_batch`, if it cannot.
pub fn check(config: &ModelConfig, workers: usize, global_batch: usize) -> Result<(), EngineError> {
    let refuse = |why: String| {
        Err(EngineError::NotBuilt(format!(
            "the hybrid split over {workers} workers: {why}"
        )))
    };
    if workers == 0 {
        return refuse("no workers".into());
    }
    if config.norm == Norm::Batch {
        return refuse(no_batch_norm().to_string());
    }
    if global_batch < workers {
        return refuse(format!(
            "batch {global_batch} gives some worker no image; choose a batch of at least {workers} (a multiple of {workers} gives each the same share)"
        ));
    }
    let narrowest = config.widths[5].min(config.widths[6]).min(config.classes);
    if narrowest < workers {
        return refuse(format!(
            "an fc layer of {narrowest} neurons gives some worker none; use at most {narrowest} workers"
        ));
    }
    Ok(())
}

/// The network split over K workers' engines at one global batch: the walk over [`Hybrid`].
#[derive(Debug)]
pub struct HybridNet<B: Backend> {
    be: Hybrid<B>,
    walk: Walk<HBuf<B::Buf>>,
}

type NetResult<T> = Result<T, NetworkError>;

// Stated through the wrapper's own impl: a bound on `B::Error` here would shadow the
// identity conversion the walk needs for the wrapper's errors.
impl<B> HybridNet<B>
where
    B: Backend,
    Hybrid<B>: Backend<Buf = HBuf<B::Buf>, Error = NetworkError>,
{
    /// Every buffer for a global batch of `batch` images over `workers` (one engine each),
    /// with `params` whole on each (momentum 0).
    pub fn new(
        workers: Vec<B>,
        config: &ModelConfig,
        batch: usize,
        params: &Params,
    ) -> Result<HybridNet<B>, EngineError> {
        HybridNet::over(workers, Rc::new(Solo), config, batch, params)
    }

    /// [`HybridNet::new`] with as many workers again on every other rank of `world` (each
    /// rank builds its own with the same arguments).
    pub fn over(
        workers: Vec<B>,
        world: Rc<dyn World>,
        config: &ModelConfig,
        batch: usize,
        params: &Params,
    ) -> Result<HybridNet<B>, EngineError> {
        check(config, workers.len() * world.size(), batch)?;
        let mut be = Hybrid::over(workers, world);
        let walk = Walk::new(&mut be, config, batch)?;
        walk.upload_params(&mut be, params)?;
        Ok(HybridNet { be, walk })
    }

    /// Workers.
    pub fn workers(&self) -> usize {
        self.be.workers()
    }

    /// Images per step over every worker.
    pub fn batch(&self) -> usize {
        self.walk.batch()
    }

    /// Preprocessed images `[N,3,I,I]` of the global batch (each worker's conv1 reads its rows).
    pub fn upload_input(&mut self, images: &[f32]) -> NetResult<()> {
        self.walk.upload_input(&mut self.be, images)
    }

    /// The global batch's labels.
    pub fn upload_labels(&mut self, labels: &[i32]) -> NetResult<()> {
        self.walk.upload_labels(&mut self.be, labels)
    }

    /// Forward to the logits in `mode`'s view.
    pub fn forward(&mut self, mode: impl Into<Mode>) -> NetResult<()> {
        self.walk.forward(&mut self.be, mode.into())
    }

    /// The per-image loss of the last forward pass.
    pub fn loss(&mut self) -> NetResult<()> {
        self.walk.loss(&mut self.be)
    }

    /// Every gradient of the mean loss; `mode` is the forward's.
    pub fn backward(&mut self, mode: impl Into<Mode>) -> NetResult<()> {
        self.walk.backward(&mut self.be, mode.into())
    }

    /// One SGD step (the conv gradients' all-reduce happens here).
    pub fn sgd(&mut self, h: SgdHyper) -> NetResult<()> {
        self.walk.sgd(&mut self.be, h)
    }

    /// Per-image (loss, top-1, top-5) `[N,3]` of the last loss.
    pub fn stats(&mut self) -> NetResult<Vec<f32>> {
        let HybridNet { be, walk } = self;
        be.download(walk.stats())
    }

    /// The logits `[N,classes]` of the last forward pass.
    pub fn logits(&mut self) -> NetResult<Vec<f32>> {
        let HybridNet { be, walk } = self;
        be.download(walk.logits())
    }

    /// The whole model's parameters, assembled from the workers' shares.
    pub fn download_params(&mut self) -> NetResult<Params> {
        self.walk.download_params(&mut self.be)
    }

    /// The whole model's momentum.
    pub fn download_momentum(&mut self) -> NetResult<Params> {
        self.walk.download_momentum(&mut self.be)
    }

    /// The gradients of the last backward pass, summed (tests).
    pub fn download_grads(&mut self) -> NetResult<Params> {
        self.walk.download_grads(&mut self.be)
    }

    /// Replaces the momentum (resuming).
    pub fn upload_momentum(&mut self, m: &Params) -> NetResult<()> {
        self.walk.upload_momentum(&mut self.be, m)
    }

    /// Freezes `block` and every layer before it.
    pub fn freeze_through(&mut self, block: &str) -> NetResult<()> {
        self.walk.freeze_through(block)
    }

    /// What the split's collectives carried since the last call.
    pub fn take_traffic(&mut self) -> Traffic {
        self.be.take_traffic()
    }
}

/// The hybrid split on the CPU engine: K workers' engines on one shared pool (they run in
/// turn, as the CPU replicas do), with the global batch's input stage.
#[derive(Debug)]
pub struct CpuHybrid {
    /// The split network.
    pub net: HybridNet<CpuBackend>,
    device: CpuDevice,
    input: HostInput,
    images: Vec<f32>,
}

impl CpuHybrid {
    /// `workers` workers in this process (and as many on every other rank of `world`) for a
    /// global batch of `batch` images of `stored`² with the training set's mean image, on a
    /// pool of `threads` (0: one per core).
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        config: &ModelConfig,
        workers: usize,
        world: Rc<dyn World>,
        batch: usize,
        stored: usize,
        mean: &[f32],
        params: &Params,
        threads: usize,
    ) -> Result<CpuHybrid, EngineError> {
        check(config, workers * world.size(), batch)?;
        let device = CpuDevice::new(threads)?;
        let engines = (0..workers).map(|_| CpuBackend::new(&device)).collect();
        let net = HybridNet::over(engines, world, config, batch, params)?;
        let input = HostInput::new(batch, stored, config.input_size, mean, config.input_scale);
        let images = vec![0.0; batch * 3 * config.input_size * config.input_size];
        Ok(CpuHybrid {
            net,
            device,
            input,
            images,
        })
    }

    /// Worker threads of the pool.
    pub fn threads(&self) -> usize {
        self.device.threads()
    }

    /// One training step on the global batch (`images` `[N,S,S,3]`, `labels` and `draws`
    /// `[N]`): augment, forward, loss, backward, SGD. Returns the loss rows `[N,3]`.
    pub fn step(
        &mut self,
        images: &[u8],
        labels: &[i32],
        draws: &[AugmentDraw],
        dropout: Dropout,
        hyper: SgdHyper,
    ) -> Result<Vec<f32>, EngineError> {
        super::replicas::check_step(self.net.batch(), images, labels, draws)?;
        self.input.set_images(images)?;
        let (input, out) = (&self.input, &mut self.images);
        self.device.install(|| input.augment(draws, out))?;
        let net = &mut self.net;
        net.upload_input(&self.images)?;
        net.upload_labels(labels)?;
        net.forward(Some(dropout))?;
        net.loss()?;
        net.backward(Some(dropout))?;
        net.sgd(hyper)?;
        Ok(net.stats()?)
    }
}
