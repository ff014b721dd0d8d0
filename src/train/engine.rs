//! What runs a training step: the network on one GPU device, split in the paper's two
//! columns over two devices ([`crate::model::ColumnNetwork`]: the same walk over a backend
//! wrapping one GPU pass per device), or on the native CPU engine
//! ([`crate::cpu`]), or as data-parallel replicas of any of these. The loop in [`super::run`]
//! sees only this, so checkpoints, metrics and validation are the same for all.
use super::eval::{evaluate_rows, EvalCounts, EvalResult, View};
use super::infer::{CpuStage, Scorer};
use super::input::InputStage;
use super::TrainError;
use crate::dataset::ShardSet;
pub use crate::engine::devices::Placement;

use crate::collective::World;
use crate::engine::hybrid::CpuHybrid;
use crate::engine::replicas::{CpuReplicas, Split};
use crate::engine::replicas_gpu::{ColumnReplicas, GpuReplicas, ReplicaNet, Replicas};
use crate::gpu::coop::Precision;
use crate::gpu::sgd::SgdHyper;
use crate::gpu::{Gpu, GpuError, KernelTimer, Recorder, Tensor};
use crate::model::{ColumnNetwork, Dropout, ExchangeStats, ModelConfig, Network, Params};
use crate::shape::AugmentDraw;
use std::cell::{OnceCell, RefCell};
use std::rc::Rc;

/// The batch geometry and preprocessing both kinds of engine need.
pub struct EngineSpec<'a> {
    /// The model.
    pub model: &'a ModelConfig,
    /// Images per step.
    pub batch: usize,
    /// Side of the stored images.
    pub stored: usize,
    /// The training set's mean image `[S,S,3]`.
    pub mean: &'a [f32],
    /// The matrix products' precision on GPU adapters ([`Gpu::with_precision`]).
    pub precision: Precision,
}

/// One training step's inputs.
pub struct StepInput<'a> {
    /// `[B,S,S,3]` u8 images.
    pub images: &'a [u8],
    /// `[B]` class indices.
    pub labels: &'a [i32],
    /// The augmentation draws.
    pub draws: &'a [AugmentDraw],
    /// Dropout of this step.
    pub dropout: Dropout,
    /// The SGD hyper-parameters of this step.
    pub hyper: SgdHyper,
}

/// A network on one or two devices, with its input stage(s).
// One engine lives per run, so the variants' sizes do not matter.
#[allow(clippy::large_enum_variant)]
pub enum Engine {
    /// The whole network on one device.
    One {
        /// The device.
        gpu: Gpu,
        /// The network.
        net: Network,
        /// Its input stage.
        input: InputStage,
    },
    /// The two-column split.
    Two(Box<Columns>),
    /// The whole network on the native CPU engine.
    Cpu(Box<RefCell<CpuStage>>),
    /// Data-parallel replicas of the whole network on the CPU engine, in this process and,
    /// over MPI, in the job's other ranks.
    Replicas {
        /// This process's replicas.
        reps: Box<CpuReplicas>,
        /// The job's ranks the gradients are summed over.
        world: Rc<dyn World>,
    },
    /// The hybrid split of "One weird trick" over workers on the CPU engine.
    Hybrid(Box<HybridRun>),
    /// Data-parallel replicas of the whole network on GPU devices, one per logical device
    /// in this process and, over MPI, in the job's other ranks.
    GpuReplicas {
        /// This process's replicas.
        reps: Box<GpuReplicas>,
        /// The job's ranks the gradients are summed over.
        world: Rc<dyn World>,
    },
    /// Data-parallel replicas of the paper's two columns, one per pair of logical devices in
    /// this process and, over MPI, in the job's other ranks.
    ColumnReplicas {
        /// This process's replicas.
        reps: Box<ColumnReplicas>,
        /// The job's ranks the gradients are summed over.
        world: Rc<dyn World>,
    },
}

/// Where a run keeps the per-image loss rows of a logging window until it reads them: a GPU
/// buffer (read back once per window) or host memory.
pub enum LossHistory {
    /// On device 0 of a GPU engine.
    Gpu(Tensor),
    /// On the host (the CPU engine).
    Host(RefCell<Vec<f32>>),
}

/// A step handed to the engine: a GPU submission still running, or a CPU step already done.
pub enum Pending {
    /// Device 0's submission.
    Gpu(wgpu::SubmissionIndex),
    /// Finished when [`Engine::train_step`] returned.
    Done,
}

/// The two-column split and what goes with it.
pub struct Columns {
    /// Both columns.
    net: ColumnNetwork,
    /// One input stage per device (both augment the same batch the same way).
    inputs: [InputStage; 2],
    /// A one-device copy on device 0 for validation, built on first use.
    eval: OnceCell<(Network, InputStage)>,
}

/// The hybrid split and the one-engine copy that validates its weights.
pub struct HybridRun {
    /// The workers.
    net: RefCell<CpuHybrid>,
    /// The job's ranks, each holding as many workers.
    world: Rc<dyn World>,
    /// The whole network on the CPU engine for validation, built on first use.
    eval: OnceCell<RefCell<CpuStage>>,
}

fn input_stage(gpu: &Gpu, s: &EngineSpec<'_>) -> InputStage {
    InputStage::new(
        gpu,
        s.batch,
        s.stored,
        s.model.input_size,
        s.mean,
        s.model.input_scale,
    )
}

impl Engine {
    /// Opens the devices of `placement` and uploads `params`.
    pub fn open(
        placement: &Placement,
        s: &EngineSpec<'_>,
        params: &Params,
    ) -> Result<Engine, TrainError> {
        let world = crate::collective::world();
        let gpu_single = matches!(placement, Placement::Adapters(a) if world.size() == 1);
        if s.precision == Precision::Mixed && !gpu_single {
            eprintln!(
                "warning: --precision mixed is built for one GPU or the two-column split, not for {}; running the fp32 kernels",
                match placement {
                    Placement::Cpu | Placement::CpuReplicas(_) => "the CPU engine",
                    _ => "data-parallel GPU replicas",
                }
            );
        }
        match placement {
            Placement::Cpu if world.size() == 1 => Engine::cpu(s, params, 0),
            Placement::Cpu => Engine::replicas(s, params, 1, world, 0),
            Placement::CpuReplicas(n) => Engine::replicas(s, params, *n, world, 0),
            Placement::GpuReplicas(a) => Engine::gpu_replicas(s, params, a, world),
            Placement::CpuHybrid(n) => Engine::hybrid(s, params, *n, world),
            Placement::ColumnReplicas(a) => Engine::column_replicas(s, params, a, world),
            Placement::Adapters(a) if world.size() > 1 && a.len() == 1 => {
                Engine::gpu_replicas(s, params, a, world)
            }
            // Under mpirun, the paper's two columns on each rank are one replica of them.
            Placement::Adapters(a) if world.size() > 1 => {
                Engine::column_replicas(s, params, a, world)
            }
            Placement::Adapters(a) => Engine::new(a, s, params),
        }
    }

    /// Data-parallel replicas on the GPU `adapters` in this process (one replica each),
    /// summing gradients over `world` too; `s.batch` is the global batch, split among every
    /// replica of the job.
    pub fn gpu_replicas(
        s: &EngineSpec<'_>,
        params: &Params,
        adapters: &[usize],
        world: Rc<dyn World>,
    ) -> Result<Engine, TrainError> {
        let split = Split::in_world(s.batch, adapters.len(), world.as_ref());
        let reps = GpuReplicas::new(s.model, split, adapters, s.stored, s.mean, params)?;
        Ok(Engine::GpuReplicas {
            reps: Box::new(reps),
            world,
        })
    }

    /// Data-parallel replicas of the paper's two columns, one per consecutive pair of the GPU
    /// `adapters` in this process, summing gradients over `world` too; `s.batch` is the
    /// global batch, split among every replica of the job.
    pub fn column_replicas(
        s: &EngineSpec<'_>,
        params: &Params,
        adapters: &[usize],
        world: Rc<dyn World>,
    ) -> Result<Engine, TrainError> {
        let split = Split::in_world(s.batch, adapters.len() / 2, world.as_ref());
        let reps = ColumnReplicas::new(s.model, split, adapters, s.stored, s.mean, params)?;
        Ok(Engine::ColumnReplicas {
            reps: Box::new(reps),
            world,
        })
    }

    /// `local` data-parallel replicas on the CPU engine in this process, summing gradients
    /// over `world` too; `s.batch` is the global batch, split among every replica of the
    /// job. One pool of `threads` workers (0: one per core) runs the replicas in turn.
    pub fn replicas(
        s: &EngineSpec<'_>,
        params: &Params,
        local: usize,
        world: Rc<dyn World>,
        threads: usize,
    ) -> Result<Engine, TrainError> {
        let split = Split::in_world(s.batch, local, world.as_ref());
        let reps = CpuReplicas::new(s.model, split, s.stored, s.mean, params, threads)?;
        Ok(Engine::Replicas {
            reps: Box::new(reps),
            world,
        })
    }

    /// Sums gradients over the ranks bucket by bucket during backward (`Some(max values per
    /// bucket)`) or after it (`None`). The CPU replicas overlap; GPU replicas record their
    /// whole backward before any gradient can be read, so they always sum after it.
    pub fn set_overlap_allreduce(&mut self, bucket: Option<usize>) -> Result<(), TrainError> {
        if let Engine::Replicas { reps, .. } = self {
            reps.set_overlap(bucket)?;
        }
        Ok(())
    }

    /// Ranks summing gradients (1 unless replicas run across processes).
    pub fn world_size(&self) -> usize {
        match self {
            Engine::Replicas { world, .. }
            | Engine::GpuReplicas { world, .. }
            | Engine::ColumnReplicas { world, .. } => world.size(),
            Engine::Hybrid(h) => h.world.size(),
            _ => 1,
        }
    }

    /// Checks that every rank holds the same weights: each rank's digest of `params` and
    /// `momentum` against rank 0's. A divergence names the ranks that differ.
    pub fn check_same_on_every_rank(
        &self,
        params: &Params,
        momentum: &Params,
    ) -> Result<(), TrainError> {
        let world = match self {
            Engine::Replicas { world, .. }
            | Engine::GpuReplicas { world, .. }
            | Engine::ColumnReplicas { world, .. } => world,
            Engine::Hybrid(h) => &h.world,
            _ => return Ok(()),
        };
        if world.size() == 1 {
            return Ok(());
        }
        let parts = params
            .tensors
            .iter()
            .chain(&momentum.tensors)
            .map(|t| bytemuck::cast_slice::<f32, u8>(&t.data));
        let mine = crate::digest::fnv1a_parts(parts);
        let all = world
            .all_gather(mine)
            .map_err(|e| TrainError::NotBuilt(e.to_string()))?;
        let differ: Vec<String> = all
            .iter()
            .enumerate()
            .filter(|(_, d)| **d != all[0])
            .map(|(r, _)| r.to_string())
            .collect();
        if differ.is_empty() {
            return Ok(());
        }
        Err(TrainError::NotBuilt(format!(
            "the replicas diverged: rank(s) {} hold other weights than rank 0 (digest {:016x}); every rank must run the same binary on the same data and configuration; nothing was saved",
            differ.join(", "),
            all[0]
        )))
    }

    /// The hybrid split over `workers` workers on the CPU engine (one pool, one worker per
    /// core) here and as many on every other rank of `world`; `s.batch` is the global batch.
    pub fn hybrid(
        s: &EngineSpec<'_>,
        params: &Params,
        workers: usize,
        world: Rc<dyn World>,
    ) -> Result<Engine, TrainError> {
        let net = CpuHybrid::new(
            s.model,
            workers,
            world.clone(),
            s.batch,
            s.stored,
            s.mean,
            params,
            0,
        )?;
        Ok(Engine::Hybrid(Box::new(HybridRun {
            net: RefCell::new(net),
            world,
            eval: OnceCell::new(),
        })))
    }

    /// The whole network on the CPU engine with `threads` workers (0: one per core).
    pub fn cpu(s: &EngineSpec<'_>, params: &Params, threads: usize) -> Result<Engine, TrainError> {
        let stage = CpuStage::new(s.model, s.batch, s.stored, s.mean, params, threads)?;
        Ok(Engine::Cpu(Box::new(RefCell::new(stage))))
    }

    /// Opens the GPU devices of `adapters` (one, or two for the column split) and uploads `params`.
    pub fn new(
        adapters: &[usize],
        s: &EngineSpec<'_>,
        params: &Params,
    ) -> Result<Engine, TrainError> {
        match adapters {
            [a] => {
                let gpu = Gpu::with_precision(*a, s.precision)?;
                let net = Network::new(&gpu, s.model, s.batch, params)?;
                let input = input_stage(&gpu, s);
                Ok(Engine::One { gpu, net, input })
            }
            [a, b] => {
                let gpus = [
                    Gpu::with_precision(*a, s.precision)?,
                    Gpu::with_precision(*b, s.precision)?,
                ];
                let inputs = [input_stage(&gpus[0], s), input_stage(&gpus[1], s)];
                let net = ColumnNetwork::new(gpus, s.model, s.batch, params)?;
                Ok(Engine::Two(Box::new(Columns {
                    net,
                    inputs,
                    eval: OnceCell::new(),
                })))
            }
            _ => Err(TrainError::NotBuilt(format!(
                "{} devices: the paper's split has two columns, so training runs on one device or two",
                adapters.len()
            ))),
        }
    }

    /// Freezes `block` and every layer before it (`train --freeze`): no backward below it and
    /// no SGD on its tensors, on every engine (the two-column split runs the same walk).
    pub fn freeze_through(&mut self, block: &str) -> Result<(), TrainError> {
        match self {
            Engine::One { net, .. } => net.freeze_through(block)?,
            Engine::Cpu(c) => c.get_mut().net.freeze_through(block)?,
            Engine::Two(c) => c.net.freeze_through(block)?,
            Engine::Replicas { reps, .. } => reps.freeze_through(block)?,
            Engine::GpuReplicas { reps, .. } => reps.freeze_through(block)?,
            Engine::Hybrid(h) => h.net.get_mut().net.freeze_through(block)?,
            Engine::ColumnReplicas { reps, .. } => reps.freeze_through(block)?,
        }
        Ok(())
    }

    /// The GPU device that holds the loss statistics (device 0); `None` on the CPU engine
    /// and for replicas, whose loss rows are gathered on the host.
    pub fn gpu_device(&self) -> Option<&Gpu> {
        match self {
            Engine::One { gpu, .. } => Some(gpu),
            Engine::Two(c) => Some(c.net.gpu(0)),
            Engine::Cpu(_)
            | Engine::Replicas { .. }
            | Engine::GpuReplicas { .. }
            | Engine::Hybrid(_)
            | Engine::ColumnReplicas { .. } => None,
        }
    }

    /// What the engine runs on, in words (`alexnet train` prints it).
    pub fn describe(&self) -> String {
        match self {
            Engine::One { gpu, .. } => {
                format!("adapter [{}] {}", gpu.adapter.index, gpu.adapter.name)
            }
            Engine::Two(c) => format!(
                "two columns on adapters [{}] and [{}]",
                c.net.gpu(0).adapter.index,
                c.net.gpu(1).adapter.index
            ),
            Engine::Cpu(c) => format!(
                "the CPU engine, {} threads",
                c.borrow().net.device().threads()
            ),
            Engine::Replicas { reps, world } => {
                let sp = reps.split();
                let mut d = format!(
                    "{} data-parallel replica(s) of {} images on the CPU engine, {} threads",
                    sp.local,
                    sp.global_batch / sp.total(),
                    reps.threads()
                );
                if world.size() > 1 {
                    d += &format!(", {} ({} replicas in all)", world.describe(), sp.total());
                }
                d
            }
            Engine::Hybrid(h) => {
                let (world, h) = (&h.world, h.net.borrow());
                let mut d = format!(
                    "the hybrid split over {} workers of {} images on the CPU engine (conv layers data parallel, fc layers model parallel), {} threads",
                    h.net.workers(),
                    h.net.batch() / h.net.workers(),
                    h.threads()
                );
                if world.size() > 1 {
                    d += &format!(
                        ", {} ({} worker(s) per rank)",
                        world.describe(),
                        h.net.workers() / world.size()
                    );
                }
                d
            }
            Engine::GpuReplicas { reps, world } => describe_replicas(reps, world.as_ref()),
            Engine::ColumnReplicas { reps, world } => describe_replicas(reps, world.as_ref()),
        }
    }

    /// A buffer for `rows·3` loss values (rows of [`Engine::train_step`]'s `at`).
    pub fn loss_history(&self, len: usize) -> LossHistory {
        match self.gpu_device() {
            Some(gpu) => LossHistory::Gpu(Tensor::zeros(gpu, len, "loss.history")),
            None => LossHistory::Host(RefCell::new(vec![0.0; len])),
        }
    }

    /// Runs one step ([`Engine::step`] on a GPU engine, the whole step at once on the CPU
    /// engine) and copies its per-image loss rows into `hist` at byte `at`.
    pub fn train_step(
        &self,
        x: &StepInput<'_>,
        hist: &LossHistory,
        at: u64,
    ) -> Result<Pending, TrainError> {
        match (self, hist) {
            (
                Engine::Replicas { .. }
                | Engine::GpuReplicas { .. }
                | Engine::ColumnReplicas { .. },
                LossHistory::Host(rows),
            ) => {
                let stats = match self {
                    Engine::GpuReplicas { reps, world } => reps.step(
                        world.as_ref(),
                        x.images,
                        x.labels,
                        x.draws,
                        x.dropout,
                        x.hyper,
                    )?,
                    Engine::ColumnReplicas { reps, world } => reps.step(
                        world.as_ref(),
                        x.images,
                        x.labels,
                        x.draws,
                        x.dropout,
                        x.hyper,
                    )?,
                    Engine::Replicas { reps, world } => reps.step(
                        world.as_ref(),
                        x.images,
                        x.labels,
                        x.draws,
                        x.dropout,
                        x.hyper,
                    )?,
                    _ => unreachable!("matched above"),
                };
                store_rows(rows, at, &stats)
            }
            (Engine::Hybrid(h), LossHistory::Host(rows)) => {
                let stats = h
                    .net
                    .borrow_mut()
                    .step(x.images, x.labels, x.draws, x.dropout, x.hyper)?;
                store_rows(rows, at, &stats)
            }
            (Engine::Cpu(c), LossHistory::Host(rows)) => {
                let mut c = c.borrow_mut();
                c.input.set_images(x.images)?;
                c.augment(x.draws)?;
                let net = &mut c.net;
                net.upload_labels(x.labels)?;
                net.forward(Some(x.dropout))?;
                net.loss()?;
                net.backward(Some(x.dropout))?;
                net.sgd(x.hyper)?;
                let stats = net.stats();
                store_rows(rows, at, stats)
            }
            (_, LossHistory::Gpu(t)) if self.gpu_device().is_some() => {
                Ok(Pending::Gpu(self.step(x, t, at)?))
            }
            _ => Err(TrainError::NotBuilt(
                "a loss history made by another engine; make it with Engine::loss_history".into(),
            )),
        }
    }

    /// Blocks until `p` has finished.
    pub fn wait(&self, p: Pending) {
        if let (Pending::Gpu(idx), Some(gpu)) = (p, self.gpu_device()) {
            // A failed wait shows up in the next readback, which reports it.
            let _ = gpu.device.poll(wgpu::PollType::Wait {
                submission_index: Some(idx),
                timeout: None,
            });
        }
    }

    /// The loss rows of `hist` (waits for the GPU to finish writing them).
    pub fn read_history(&self, hist: &LossHistory) -> Result<Vec<f32>, TrainError> {
        match (hist, self.gpu_device()) {
            (LossHistory::Gpu(t), Some(gpu)) => Ok(t.download(gpu)?),
            (LossHistory::Host(rows), _) => Ok(rows.borrow().clone()),
            (LossHistory::Gpu(_), None) => Err(TrainError::NotBuilt(
                "a GPU loss history read on the CPU engine".into(),
            )),
        }
    }

    /// Replaces the momentum (resuming).
    pub fn upload_momentum(&self, m: &Params) -> Result<(), TrainError> {
        match self {
            Engine::One { gpu, net, .. } => net.upload_momentum(gpu, m)?,
            Engine::Two(c) => c.net.upload_momentum(m)?,
            Engine::Cpu(c) => c.borrow_mut().net.upload_momentum(m)?,
            Engine::Replicas { reps, .. } => reps.upload_momentum(m)?,
            Engine::GpuReplicas { reps, .. } => reps.upload_momentum(m)?,
            Engine::Hybrid(h) => h.net.borrow_mut().net.upload_momentum(m)?,
            Engine::ColumnReplicas { reps, .. } => reps.upload_momentum(m)?,
        }
        Ok(())
    }

    /// The whole model's parameters.
    pub fn download_params(&self) -> Result<Params, TrainError> {
        Ok(match self {
            Engine::One { gpu, net, .. } => net.download_params(gpu)?,
            Engine::Two(c) => c.net.download_params()?,
            Engine::Cpu(c) => c.borrow_mut().net.download_params()?,
            Engine::Replicas { reps, .. } => reps.download_params()?,
            Engine::GpuReplicas { reps, .. } => reps.download_params()?,
            Engine::Hybrid(h) => h.net.borrow_mut().net.download_params()?,
            Engine::ColumnReplicas { reps, .. } => reps.download_params()?,
        })
    }

    /// The whole model's momentum.
    pub fn download_momentum(&self) -> Result<Params, TrainError> {
        Ok(match self {
            Engine::One { gpu, net, .. } => net.download_momentum(gpu)?,
            Engine::Two(c) => c.net.download_momentum()?,
            Engine::Cpu(c) => c.borrow_mut().net.download_momentum()?,
            Engine::Replicas { reps, .. } => reps.download_momentum()?,
            Engine::GpuReplicas { reps, .. } => reps.download_momentum()?,
            Engine::Hybrid(h) => h.net.borrow_mut().net.download_momentum()?,
            Engine::ColumnReplicas { reps, .. } => reps.download_momentum()?,
        })
    }

    /// Exchange counters since the last call (zero on one device).
    pub fn take_exchange_stats(&self) -> ExchangeStats {
        match self {
            Engine::One { .. } | Engine::Cpu(_) => ExchangeStats::default(),
            // What this rank sent into the all-reduce (its gradient sum), in bytes, and the
            // seconds the all-reduce took (waiting for the slowest rank included).
            Engine::Replicas { .. }
            | Engine::GpuReplicas { .. }
            | Engine::ColumnReplicas { .. } => {
                let (values, seconds) = match self {
                    Engine::Replicas { reps, .. } => reps.take_sent(),
                    Engine::GpuReplicas { reps, .. } => reps.take_sent(),
                    Engine::ColumnReplicas { reps, .. } => reps.take_sent(),
                    _ => (0, 0.0),
                };
                ExchangeStats {
                    bytes: (values * 4) as u64,
                    wait_s: seconds,
                    ..ExchangeStats::default()
                }
            }
            Engine::Two(c) => c.net.take_exchange_stats(),
            // What worker 0 handed to the split's collectives (activations gathered,
            // activation gradients reduce-scattered, conv gradients all-reduced), in bytes.
            Engine::Hybrid(h) => {
                let t = h.net.borrow_mut().net.take_traffic();
                ExchangeStats {
                    exchanges: t.exchanges,
                    bytes: t.values() * 4,
                    ..ExchangeStats::default()
                }
            }
        }
    }

    /// Runs one step on a GPU engine: upload, augment, forward, loss, backward, SGD, and a copy
    /// of the per-image loss rows into `hist` at byte `at`. Returns device 0's last submission.
    /// The CPU engine has no GPU buffer to copy into: it runs through [`Engine::train_step`].
    pub fn step(
        &self,
        x: &StepInput<'_>,
        hist: &Tensor,
        at: u64,
    ) -> Result<wgpu::SubmissionIndex, TrainError> {
        self.step_timed(x, hist, at, None)
    }

    /// [`Engine::step`], with every dispatch of one device timed by `timer` (its resolve is
    /// recorded at the end of the step; read it after the step with [`KernelTimer::read`]).
    /// The two-column split is not timed per kernel.
    pub fn step_timed(
        &self,
        x: &StepInput<'_>,
        hist: &Tensor,
        at: u64,
        timer: Option<&KernelTimer>,
    ) -> Result<wgpu::SubmissionIndex, TrainError> {
        let row_bytes = (x.labels.len() * 3 * 4) as u64;
        match self {
            Engine::Cpu(_) | Engine::Replicas { .. } | Engine::GpuReplicas { .. } | Engine::ColumnReplicas { .. } | Engine::Hybrid(_) => Err(TrainError::NotBuilt(
                "Engine::step records into a GPU buffer; the CPU engine and replicas step through Engine::train_step".into(),
            )),
            Engine::One { gpu, .. } => {
                let cb = self.record_step(x, hist, at, timer)?;
                Ok(gpu.queue.submit(cb))
            }
            Engine::Two(c) => {
                let (net, inputs) = (&c.net, &c.inputs);
                net.upload_labels(x.labels)?;
                let mut encs = net.encoders("train.step");
                for (d, input) in inputs.iter().enumerate() {
                    input.upload_images(net.gpu(d), x.images)?;
                    let mut rec = Recorder::new(net.gpu(d), &mut encs[d]);
                    input.record(&mut rec, x.draws, net.input(d))?;
                }
                net.record_forward(&mut encs, Some(x.dropout))?;
                net.record_loss(&mut encs)?;
                net.record_backward(&mut encs, Some(x.dropout))?;
                net.record_sgd(&mut encs, x.hyper)?;
                encs[0].copy_buffer_to_buffer(&net.stats().buffer, 0, &hist.buffer, at, row_bytes);
                Ok(net.submit(encs))
            }
        }
    }

    /// Uploads the step's inputs and records the step on one device without submitting it, so
    /// the recording can be timed apart from the GPU (the step bench). `None` for the
    /// two-column split, which submits at its exchanges, and for the CPU engine.
    pub fn record_step(
        &self,
        x: &StepInput<'_>,
        hist: &Tensor,
        at: u64,
        timer: Option<&KernelTimer>,
    ) -> Result<Option<wgpu::CommandBuffer>, TrainError> {
        let Engine::One { gpu, net, input } = self else {
            return Ok(None);
        };
        let row_bytes = (x.labels.len() * 3 * 4) as u64;
        input.upload_images(gpu, x.images)?;
        net.upload_labels(gpu, x.labels)?;
        let mut enc = gpu.encoder("train.step");
        {
            let mut rec = net.recorder(gpu, &mut enc).with_timer(timer);
            input.record(&mut rec, x.draws, net.input())?;
            net.record_forward(&mut rec, Some(x.dropout))?;
            net.record_loss(&mut rec)?;
            net.record_backward(&mut rec, Some(x.dropout))?;
            net.record_sgd(&mut rec, x.hyper)?;
        }
        if let Some(t) = timer {
            t.resolve(&mut enc);
        }
        enc.copy_buffer_to_buffer(&net.stats().buffer, 0, &hist.buffer, at, row_bytes);
        Ok(Some(enc.finish()))
    }

    /// Scores `set` with the current weights (one device; the column split's weights are
    /// copied into a one-device network on device 0, which computes the same function; the
    /// CPU engine scores with its own network).
    pub fn evaluate(
        &self,
        s: &EngineSpec<'_>,
        set: &ShardSet,
        view: View,
        threads: usize,
    ) -> Result<EvalResult, TrainError> {
        Ok(self
            .evaluate_rows(s, set, 0..set.len(), view, threads)?
            .result())
    }

    /// Validation: [`Engine::evaluate`] of the whole `set`, split across the job's ranks
    /// when there are several: each rank scores its contiguous part
    /// ([`crate::dataset::part_of`]) and the counts are summed through the world, so every
    /// rank gets the whole set's result (and takes the same decisions from it).
    pub fn validate(
        &self,
        s: &EngineSpec<'_>,
        set: &ShardSet,
        view: View,
        threads: usize,
    ) -> Result<EvalResult, TrainError> {
        let world = match self {
            Engine::Replicas { world, .. }
            | Engine::GpuReplicas { world, .. }
            | Engine::ColumnReplicas { world, .. }
                if world.size() > 1 =>
            {
                world
            }
            _ => return self.evaluate(s, set, view, threads),
        };
        let rows = crate::dataset::part_of(set.len(), world.rank(), world.size());
        let mine = self.evaluate_rows(s, set, rows, view, threads)?;
        let mut sums = mine.to_sums();
        world
            .all_reduce_sum_f64(&mut sums)
            .map_err(|e| TrainError::NotBuilt(e.to_string()))?;
        Ok(EvalCounts::from_sums(&sums).result())
    }

    /// The counts of the images `rows` (positions in file order) of `set`, scored as
    /// [`Engine::evaluate`] scores them.
    pub fn evaluate_rows(
        &self,
        s: &EngineSpec<'_>,
        set: &ShardSet,
        rows: std::ops::Range<usize>,
        view: View,
        threads: usize,
    ) -> Result<EvalCounts, TrainError> {
        let each = |scorer: Scorer<'_>| evaluate_rows(scorer, set, rows.clone(), view, threads);
        match self {
            Engine::One { gpu, net, input } => each(Scorer::Gpu { gpu, net, input }),
            Engine::Cpu(c) => each(Scorer::Cpu(c)),
            Engine::Replicas { reps, .. } => each(Scorer::Cpu(reps.first())),
            Engine::Hybrid(h) => {
                let params = h.net.borrow_mut().net.download_params()?;
                if h.eval.get().is_none() {
                    let one = CpuStage::new(s.model, s.batch, s.stored, s.mean, &params, 0)?;
                    let _ = h.eval.set(RefCell::new(one));
                }
                let one = h.eval.get().ok_or_else(|| {
                    TrainError::NotBuilt(
                        "the hybrid split's validation network could not be built".into(),
                    )
                })?;
                one.borrow_mut().net.upload_params(&params)?;
                each(Scorer::Cpu(one))
            }
            Engine::GpuReplicas { reps, .. } => {
                let (gpu, net, input) = reps.first().scorer()?;
                each(Scorer::Gpu { gpu, net, input })
            }
            Engine::ColumnReplicas { reps, .. } => {
                let (gpu, net, input) = reps.first().scorer()?;
                each(Scorer::Gpu { gpu, net, input })
            }
            Engine::Two(c) => {
                let (net, eval) = (&c.net, &c.eval);
                let params = net.download_params()?;
                let gpu = net.gpu(0);
                if eval.get().is_none() {
                    let one = Network::new(gpu, s.model, s.batch, &params)?;
                    let _ = eval.set((one, input_stage(gpu, s)));
                }
                let (one, input) = eval.get().ok_or_else(|| {
                    TrainError::Gpu(GpuError::Invalid {
                        op: "evaluate",
                        reason: "the validation network could not be built".into(),
                    })
                })?;
                one.upload_params(gpu, &params)?;
                let net = one;
                each(Scorer::Gpu { gpu, net, input })
            }
        }
    }

    /// The rows of every global batch this process trains on (and its loader reads): its
    /// replicas' share under MPI, the whole batch otherwise (replicas in one process share
    /// its memory, so one loader reads the batch for all of them).
    pub fn process_rows(&self, batch: usize) -> std::ops::Range<usize> {
        let split = match self {
            Engine::Replicas { reps, .. } => reps.split(),
            Engine::GpuReplicas { reps, .. } => reps.split(),
            Engine::ColumnReplicas { reps, .. } => reps.split(),
            _ => return 0..batch,
        };
        // The engine was built on this split, so it divides.
        split.process_rows().unwrap_or(0..batch)
    }
}

/// Copies a host step's per-image loss rows into the host loss history at byte `at`.
fn store_rows(
    rows: &std::cell::RefCell<Vec<f32>>,
    at: u64,
    stats: &[f32],
) -> Result<Pending, TrainError> {
    let mut rows = rows.borrow_mut();
    let (from, have) = (at as usize / 4, rows.len());
    let dst = rows.get_mut(from..from + stats.len()).ok_or_else(|| {
        TrainError::NotBuilt(format!(
            "loss history of {have} values has no room for {} at {from}",
            stats.len()
        ))
    })?;
    dst.copy_from_slice(stats);
    Ok(Pending::Done)
}

/// `train`'s words for GPU replicas: how many, their rows, their devices, and the world.
fn describe_replicas<R: ReplicaNet>(reps: &Replicas<R>, world: &dyn World) -> String {
    let sp = reps.split();
    let on: Vec<String> = reps.replicas().iter().map(R::describe).collect();
    let what = if R::DEVICES == 2 {
        "of the two columns "
    } else {
        ""
    };
    let mut d = format!(
        "{} data-parallel replica(s) {what}of {} images on adapters {}",
        sp.local,
        sp.global_batch / sp.total(),
        on.join(", ")
    );
    if world.size() > 1 {
        d += &format!(", {} ({} replicas in all)", world.describe(), sp.total());
    }
    d
}
