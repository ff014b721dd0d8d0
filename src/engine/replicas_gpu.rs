//! Data-parallel replicas on GPU devices: one network per replica, each holding its rows of
//! the global batch: the whole network on one logical device ([`GpuReplicas`]; two may
//! share an adapter), or the paper's two columns on two ([`ColumnReplicas`], `--columns 2`
//! with four or more devices). The rule is [`super::replicas::CpuReplicas`]' (see there):
//! every replica runs forward, loss and backward on its rows; the gradients come to the
//! host, are summed, all-reduced over the [`World`] (so MPI ranks with GPU replicas join the
//! same sum), scaled to the mean and uploaded to every replica, which then applies the same
//! SGD step.
//!
//! Every replica's forward and backward is submitted before the first gradient is read
//! back, so replicas on different adapters compute side by side (a column replica waits at
//! its own exchanges, so column replicas overlap less); the exchange itself goes through
//! host memory (wgpu has no peer-to-peer copies).
use super::replicas::{add_into, check_step, Exchange, Split};
use super::EngineError;
use crate::backend::{Dropout, SgdHyper};
use crate::collective::World;
use crate::model::{ModelConfig, Params};
use crate::shape::AugmentDraw;
use std::cell::RefCell;

pub use super::replica_net::{ColumnReplica, GpuReplica, ReplicaNet};

/// Replicas of the whole network, one per logical device.
pub type GpuReplicas = Replicas<GpuReplica>;

/// Replicas of the paper's two columns, one per pair of logical devices.
pub type ColumnReplicas = Replicas<ColumnReplica>;

/// This process's GPU replicas, the global batch's loss rows, and what the exchange carried.
pub struct Replicas<R> {
    reps: Vec<R>,
    split: Split,
    rows: usize,
    /// Per-image (loss, top-1, top-5) `[global batch, 3]` of the last step, on every rank.
    stats: RefCell<Vec<f32>>,
    exchange: Exchange,
}

impl<R: ReplicaNet> Replicas<R> {
    /// One replica of `config` with `params` per `R::DEVICES` adapters of `adapters` (in
    /// order: this process's share of `split`, so `adapters.len() == split.local ·
    /// R::DEVICES`), each for its rows of the global batch of `stored`² images with the
    /// training set's mean image `mean` `[S,S,3]`.
    pub fn new(
        config: &ModelConfig,
        split: Split,
        adapters: &[usize],
        stored: usize,
        mean: &[f32],
        params: &Params,
    ) -> Result<Replicas<R>, EngineError> {
        if adapters.len() != split.local * R::DEVICES {
            return Err(EngineError::Mismatch(format!(
                "{} adapters for {} replicas of {} device(s) in this process",
                adapters.len(),
                split.local,
                R::DEVICES
            )));
        }
        let rows = split.rows()?;
        let reps = adapters
            .chunks(R::DEVICES)
            .enumerate()
            .map(|(r, a)| {
                let mut rep = R::open(a, config, rows, stored, mean, params)?;
                rep.set_first_row(split.replica(r) * rows);
                Ok(rep)
            })
            .collect::<Result<Vec<_>, EngineError>>()?;
        Ok(Replicas {
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
            r.freeze_through(block)?;
        }
        Ok(())
    }

    /// How the batch is split.
    pub fn split(&self) -> Split {
        self.split
    }

    /// This process's replicas.
    pub fn replicas(&self) -> &[R] {
        &self.reps
    }

    /// This process's first replica (validation and checkpoints read its weights: every
    /// replica holds the same).
    pub fn first(&self) -> &R {
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
            // This replica's rows among this process's.
            let range = r * rows..(r + 1) * rows;
            rep.submit_forward_backward(
                &images[range.start * per_image..range.end * per_image],
                &labels[range.clone()],
                &draws[range],
                dropout,
            )?;
        }
        let mut stats = self.stats.borrow_mut();
        if world.size() > 1 {
            // Other ranks' rows arrive through the sum in the exchange.
            stats.iter_mut().for_each(|v| *v = 0.0);
        }
        let mut sum: Option<Params> = None;
        for (r, rep) in self.reps.iter().enumerate() {
            let range = range(r);
            let mine = rep.stats()?;
            stats[range.start * 3..range.end * 3].copy_from_slice(&mine);
            add_into(&mut sum, rep.download_grads()?);
        }
        let mean = self.exchange.mean(world, self.split, sum, &mut stats[..])?;
        for rep in &self.reps {
            rep.submit_sgd(&mean, hyper)?;
        }
        drop(stats);
        Ok(self.stats.borrow())
    }

    /// Replaces every replica's momentum (resuming).
    pub fn upload_momentum(&self, m: &Params) -> Result<(), EngineError> {
        for r in &self.reps {
            r.upload_momentum(m)?;
        }
        Ok(())
    }

    /// The parameters (every replica holds the same; the first one's).
    pub fn download_params(&self) -> Result<Params, EngineError> {
        self.first().download_params()
    }

    /// The momentum (the first replica's).
    pub fn download_momentum(&self) -> Result<Params, EngineError> {
        self.first().download_momentum()
    }

    /// Values sent through the world's all-reduce since the last call (gradients only; 0 in a
    /// world of one), and the seconds those all-reduce calls took.
    pub fn take_sent(&self) -> (usize, f64) {
        self.exchange.take()
    }
}
