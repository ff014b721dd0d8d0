//! Data-parallel replicas of the whole network on GPU devices: one one-device
//! [`Network`] per logical device (two may share an adapter), each holding its rows of the
//! global batch. The rule is [`super::replicas::CpuReplicas`]' (see there): every replica
//! runs forward, loss and backward on its rows; the gradients come to the host, are summed,
//! all-reduced over the [`World`] (so MPI ranks with GPU replicas join the same sum), scaled
//! to the mean and uploaded to every replica, which then applies the same SGD step.
//!
//! Every replica's forward and backward is submitted before the first gradient is read
//! back, so replicas on different adapters compute side by side; the exchange itself goes
//! through host memory (wgpu has no peer-to-peer copies).
use super::input::InputStage;
use super::replicas::{add_into, check_step, Exchange, Split};
use super::EngineError;
use crate::backend::{Dropout, SgdHyper};
use crate::collective::World;
use crate::gpu::Gpu;
use crate::model::{ModelConfig, Network, Params};
use crate::shape::AugmentDraw;
use std::cell::RefCell;

/// One replica: its device, its network for its rows, and its input stage.
pub struct GpuReplica {
    /// The device (its own wgpu device, even when another replica uses the same adapter).
    pub gpu: Gpu,
    /// The network, sized for the replica's rows.
    pub net: Network,
    /// Its input stage, sized for the same rows.
    pub input: InputStage,
}

/// This process's GPU replicas, the global batch's loss rows, and what the exchange carried.
pub struct GpuReplicas {
    reps: Vec<GpuReplica>,
    split: Split,
    rows: usize,
    /// Per-image (loss, top-1, top-5) `[global batch, 3]` of the last step, on every rank.
    stats: RefCell<Vec<f32>>,
    exchange: Exchange,
}

impl GpuReplicas {
    /// One replica of `config` with `params` per adapter of `adapters` (this process's share
    /// of `split`, so `adapters.len() == split.local`), each for its rows of the global batch
    /// of `stored`² images with the training set's mean image `mean` `[S,S,3]`.
    pub fn new(
        config: &ModelConfig,
        split: Split,
        adapters: &[usize],
        stored: usize,
        mean: &[f32],
        params: &Params,
    ) -> Result<GpuReplicas, EngineError> {
        if adapters.len() != split.local {
            return Err(EngineError::Mismatch(format!(
                "{} adapters for {} replicas in this process",
                adapters.len(),
                split.local
            )));
        }
        let rows = split.rows()?;
        let reps = adapters
            .iter()
            .enumerate()
            .map(|(r, &a)| {
                let gpu = Gpu::new(a)?;
                let mut net = Network::new(&gpu, config, rows, params)?;
                net.set_first_row(split.replica(r) * rows);
                let input = InputStage::new(
                    &gpu,
                    rows,
                    stored,
                    config.input_size,
                    mean,
                    config.input_scale,
                );
                Ok(GpuReplica { gpu, net, input })
            })
            .collect::<Result<Vec<_>, EngineError>>()?;
        Ok(GpuReplicas {
            reps,
            split,
            rows,
            stats: RefCell::new(vec![0.0; split.global_batch * 3]),
            exchange: Exchange::default(),
        })
    }

    /// Freezes `block` and every layer before it on every replica (`train --freeze`).
    pub fn freeze_through(&mut self, block: &str) -> Result<(), EngineError> {
        for r in &mut self.reps {
            r.net.freeze_through(block)?;
        }
        Ok(())
    }

    /// How the batch is split.
    pub fn split(&self) -> Split {
        self.split
    }

    /// This process's replicas.
    pub fn replicas(&self) -> &[GpuReplica] {
        &self.reps
    }

    /// This process's first replica (validation and checkpoints read its weights: every
    /// replica holds the same).
    pub fn first(&self) -> &GpuReplica {
        &self.reps[0]
    }

    /// One step on the global batch: `images` `[L,S,S,3]`, `labels` `[L]` and `draws` `[L]`
    /// are this process's rows of it (`Split::process_rows`; the whole batch in a world of
    /// one). Returns the global batch's per-image loss rows `[G,3]`.
    pub fn step(
        &self,
        world: &dyn World,
        images: &[u8],
        labels: &[i32],
        draws: &[AugmentDraw],
        dropout: Dropout,
        hyper: SgdHyper,
    ) -> Result<std::cell::Ref<'_, Vec<f32>>, EngineError> {
        let rows = self.rows;
        let per_image = check_step(self.split.local * rows, images, labels, draws)?;
        let range = |r: usize| {
            let first = self.split.replica(r) * rows;
            first..first + rows
        };
        for (r, rep) in self.reps.iter().enumerate() {
            let (gpu, net) = (&rep.gpu, &rep.net);
            // This replica's rows among this process's.
            let range = r * rows..(r + 1) * rows;
            rep.input
                .upload_images(gpu, &images[range.start * per_image..range.end * per_image])?;
            net.upload_labels(gpu, &labels[range.clone()])?;
            let mut enc = gpu.encoder("replica.forward_backward");
            {
                let mut rec = net.recorder(gpu, &mut enc);
                rep.input.record(&mut rec, &draws[range], net.input())?;
                net.record_forward(&mut rec, Some(dropout))?;
                net.record_loss(&mut rec)?;
                net.record_backward(&mut rec, Some(dropout))?;
            }
            gpu.submit(enc);
        }
        let mut stats = self.stats.borrow_mut();
        if world.size() > 1 {
            // Other ranks' rows arrive through the sum in the exchange.
            stats.iter_mut().for_each(|v| *v = 0.0);
        }
        let mut sum: Option<Params> = None;
        for (r, rep) in self.reps.iter().enumerate() {
            let range = range(r);
            let mine = rep.net.stats().download(&rep.gpu)?;
            stats[range.start * 3..range.end * 3].copy_from_slice(&mine);
            add_into(&mut sum, rep.net.download_grads(&rep.gpu)?);
        }
        let mean = self.exchange.mean(world, self.split, sum, &mut stats[..])?;
        for rep in &self.reps {
            let (gpu, net) = (&rep.gpu, &rep.net);
            net.upload_grads(gpu, &mean)?;
            let mut enc = gpu.encoder("replica.sgd");
            {
                let mut rec = net.recorder(gpu, &mut enc);
                net.record_sgd(&mut rec, hyper)?;
            }
            gpu.submit(enc);
        }
        drop(stats);
        Ok(self.stats.borrow())
    }

    /// Replaces every replica's momentum (resuming).
    pub fn upload_momentum(&self, m: &Params) -> Result<(), EngineError> {
        for r in &self.reps {
            r.net.upload_momentum(&r.gpu, m)?;
        }
        Ok(())
    }

    /// The parameters (every replica holds the same; the first one's).
    pub fn download_params(&self) -> Result<Params, EngineError> {
        let r = self.first();
        Ok(r.net.download_params(&r.gpu)?)
    }

    /// The momentum (the first replica's).
    pub fn download_momentum(&self) -> Result<Params, EngineError> {
        let r = self.first();
        Ok(r.net.download_momentum(&r.gpu)?)
    }

    /// Values sent through the world's all-reduce since the last call (gradients only; 0 in a
    /// world of one), and the seconds those all-reduce calls took.
    pub fn take_sent(&self) -> (usize, f64) {
        self.exchange.take()
    }
}
