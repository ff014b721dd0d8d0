//! Data-parallel replicas of the whole network on the CPU engine: the global batch is split
//! into equal row ranges, one per replica (this process's replicas and, over MPI, every other
//! rank's); each replica runs forward, loss and backward on its rows, the gradients are
//! summed (in this process on the host, then over the [`World`] in buckets) and scaled by
//! 1/replicas, and every replica applies the same SGD step. Since the loss is the mean over
//! the batch, the mean of the replicas' gradients is the gradient of the global batch: the
//! run is the one-device run at the global batch, whatever the split.
//!
//! Augmentation draws and dropout masks are per global row (the caller draws them for the
//! global batch; each replica's network masks its rows as the global batch's, see
//! `Walk::set_first_row`), so they do not depend on the split either.
//!
//! The replicas of one process run one after another on one shared worker pool (the CPU
//! engine already spreads each op over every core, so running them side by side would only
//! split the same cores). Over more than one rank, the last replica's backward hands each
//! layer's gradients (added to the earlier replicas' sum) to the world as soon as they are
//! final, and buckets of them are summed while backward goes on with the layers below
//! ([`crate::collective::overlap`]; [`CpuReplicas::set_overlap`] turns it off, and the
//! gradients are then summed after backward).
use super::infer::CpuStage;
use super::EngineError;
use crate::backend::{Dropout, SgdHyper};
use crate::collective::{all_reduce_buckets, BucketPlan, Overlapped, World};
use crate::cpu::{CpuDevice, HostInput};
use crate::model::{param_specs, CpuNetwork, ModelConfig, Params};
use crate::shape::AugmentDraw;
use std::cell::{Cell, RefCell};

/// How a global batch is split: this process's replicas among the job's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Split {
    /// Images per step over the whole job.
    pub global_batch: usize,
    /// Replicas in this process.
    pub local: usize,
    /// This process's rank and the number of ranks.
    pub rank: usize,
    /// Ranks in the job.
    pub ranks: usize,
}

impl Split {
    /// `local` replicas in this process, among every rank of `world`, at `global_batch`
    /// images per step.
    pub fn in_world(global_batch: usize, local: usize, world: &dyn World) -> Split {
        Split {
            global_batch,
            local,
            rank: world.rank(),
            ranks: world.size(),
        }
    }

    /// Replicas in the whole job.
    pub fn total(&self) -> usize {
        self.local * self.ranks
    }

    /// Images per replica, or why the batch does not split.
    pub fn rows(&self) -> Result<usize, EngineError> {
        let total = self.total();
        if total == 0 || self.global_batch % total != 0 {
            return Err(EngineError::NotBuilt(format!(
                "batch {} does not split into {total} equal replicas ({} per process × {} processes); choose a batch divisible by {total}",
                self.global_batch, self.local, self.ranks
            )));
        }
        Ok(self.global_batch / total)
    }

    /// The global replica index of this process's replica `r`.
    pub fn replica(&self, r: usize) -> usize {
        self.rank * self.local + r
    }

    /// This process's rows of every global batch (its replicas' rows, which are
    /// consecutive), or why the batch does not split: what its loader reads.
    pub fn process_rows(&self) -> Result<std::ops::Range<usize>, EngineError> {
        let rows = self.rows()?;
        let first = self.replica(0) * rows;
        Ok(first..first + self.local * rows)
    }
}

/// This process's replicas, the global batch's loss rows, and what the exchange carried.
#[derive(Debug)]
pub struct CpuReplicas {
    stages: Vec<RefCell<CpuStage>>,
    split: Split,
    rows: usize,
    /// Per-image (loss, top-1, top-5) `[global batch, 3]` of the last step, on every rank.
    stats: RefCell<Vec<f32>>,
    exchange: Exchange,
    /// Most values per bucket of the all-reduce overlapped with backward; `None`: summed
    /// after backward.
    overlap: Option<usize>,
    /// The buckets of the overlapped all-reduce (rebuilt when the trainable layers change).
    plan: Option<BucketPlan>,
}

/// The host side of a replicated step, shared by the CPU and the GPU replicas: the local
/// gradient sum all-reduced over the world in buckets and scaled to the mean, and what that
/// carried.
#[derive(Debug, Default)]
pub(crate) struct Exchange {
    /// Values sent through the world's all-reduce since the last [`Exchange::take`].
    sent: Cell<usize>,
    /// Seconds spent in the world's all-reduce over the same span (waiting for the slowest
    /// rank included).
    seconds: Cell<f64>,
}

impl Exchange {
    /// The mean over every replica of the job of `sum` (this process's replicas' gradient
    /// sum; `None` if it has none), and on more than one rank the other ranks' loss rows
    /// added into `stats` (each rank wrote only its own rows, the rest left at zero).
    pub(crate) fn mean(
        &self,
        world: &dyn World,
        split: Split,
        sum: Option<Params>,
        stats: &mut [f32],
    ) -> Result<Params, EngineError> {
        let Some(mut sum) = sum else {
            return Err(EngineError::NotBuilt(
                "a replicated step with no replicas".into(),
            ));
        };
        let mut views: Vec<&mut [f32]> = sum
            .tensors
            .iter_mut()
            .map(|t| t.data.as_mut_slice())
            .collect();
        let t0 = std::time::Instant::now();
        let sent = all_reduce_buckets(world, &mut views)
            .map_err(|e| EngineError::NotBuilt(e.to_string()))?;
        self.record(sent, t0.elapsed().as_secs_f64());
        self.finish(world, split, sum, stats)
    }

    /// Counts `sent` values and `seconds` in the all-reduce.
    pub(crate) fn record(&self, sent: usize, seconds: f64) {
        self.seconds.set(self.seconds.get() + seconds);
        self.sent.set(self.sent.get() + sent);
    }

    /// The mean from the job's gradient sum `sum` (already summed over the world), and the
    /// other ranks' loss rows added into `stats` as in [`Exchange::mean`].
    pub(crate) fn finish(
        &self,
        world: &dyn World,
        split: Split,
        mut sum: Params,
        stats: &mut [f32],
    ) -> Result<Params, EngineError> {
        let scale = 1.0 / split.total() as f32;
        for t in &mut sum.tensors {
            t.data.iter_mut().for_each(|v| *v *= scale);
        }
        if world.size() > 1 {
            world
                .all_reduce_sum(stats)
                .map_err(|e| EngineError::NotBuilt(e.to_string()))?;
        }
        Ok(sum)
    }

    /// Values sent and seconds spent since the last call.
    pub(crate) fn take(&self) -> (usize, f64) {
        (self.sent.replace(0), self.seconds.replace(0.0))
    }
}

/// Adds one replica's gradients into the running sum (the first one becomes it).
pub(crate) fn add_into(sum: &mut Option<Params>, grads: Params) {
    match sum {
        None => *sum = Some(grads),
        Some(acc) => {
            for (a, b) in acc.tensors.iter_mut().zip(&grads.tensors) {
                a.data.iter_mut().zip(&b.data).for_each(|(x, y)| *x += y);
            }
        }
    }
}

/// Checks a replicated step's inputs against this process's `g` rows of the global batch.
pub(crate) fn check_step(
    g: usize,
    images: &[u8],
    labels: &[i32],
    draws: &[AugmentDraw],
) -> Result<usize, EngineError> {
    let bad = |what: &str, got: usize, per: usize| {
        EngineError::Mismatch(format!(
            "replicated step: {got} values of {what} for this process's {g} rows of the global batch ({per} per image)"
        ))
    };
    if labels.len() != g {
        return Err(bad("labels", labels.len(), 1));
    }
    if draws.len() != g {
        return Err(bad("augmentation draws", draws.len(), 1));
    }
    if g == 0 || images.len() % g != 0 {
        return Err(bad("image bytes", images.len(), images.len() / g.max(1)));
    }
    Ok(images.len() / g)
}

impl CpuReplicas {
    /// `split.local` replicas of `config` with `params`, each for its rows of the global batch
    /// of `stored`² images, on one pool of `threads` workers (0: one per core).
    pub fn new(
        config: &ModelConfig,
        split: Split,
        stored: usize,
        mean: &[f32],
        params: &Params,
        threads: usize,
    ) -> Result<CpuReplicas, EngineError> {
        let rows = split.rows()?;
        let device = CpuDevice::new(threads)?;
        let stages = (0..split.local)
            .map(|r| {
                let mut net = CpuNetwork::new(&device, config, rows, params)?;
                net.set_first_row(split.replica(r) * rows);
                let input =
                    HostInput::new(rows, stored, config.input_size, mean, config.input_scale);
                Ok(RefCell::new(CpuStage { net, input }))
            })
            .collect::<Result<Vec<_>, EngineError>>()?;
        Ok(CpuReplicas {
            stages,
            split,
            rows,
            stats: RefCell::new(vec![0.0; split.global_batch * 3]),
            exchange: Exchange::default(),
            overlap: None,
            plan: None,
        })
    }

    /// Freezes `block` and every layer before it on every replica (`train --freeze`).
    pub fn freeze_through(&mut self, block: &str) -> Result<(), EngineError> {
        for s in &mut self.stages {
            s.get_mut().net.freeze_through(block)?;
        }
        self.replan()
    }

    /// Sums the gradients over the world during backward, in buckets of at most
    /// `bucket_values` values filled in backward order (`Some`), or after backward in
    /// parameter order (`None`, as before overlapping was built). Either gives the same
    /// weights: each value is the same sum over the same ranks.
    pub fn set_overlap(&mut self, bucket_values: Option<usize>) -> Result<(), EngineError> {
        self.overlap = bucket_values;
        self.replan()
    }

    /// The buckets of the overlapped all-reduce, if it is on.
    pub fn bucket_plan(&self) -> Option<&BucketPlan> {
        self.plan.as_ref()
    }

    fn replan(&mut self) -> Result<(), EngineError> {
        self.plan = match self.overlap {
            None => None,
            Some(max) => {
                let s = self.stages[0].borrow();
                let lens: Vec<usize> = param_specs(&s.net.config)
                    .map_err(crate::model::NetworkError::from)?
                    .iter()
                    .map(|p| p.len())
                    .collect();
                let plan = BucketPlan::new(&s.net.backward_order(), &lens, max.max(1))
                    .map_err(|e| EngineError::NotBuilt(e.to_string()))?;
                Some(plan)
            }
        };
        Ok(())
    }

    /// How the batch is split.
    pub fn split(&self) -> Split {
        self.split
    }

    /// This process's first replica (validation and checkpoints read its weights: every
    /// replica holds the same).
    pub fn first(&self) -> &RefCell<CpuStage> {
        &self.stages[0]
    }

    /// Worker threads of the shared pool.
    pub fn threads(&self) -> usize {
        self.stages[0].borrow().net.device().threads()
    }

    /// One step on the global batch: `images` `[L,S,S,3]`, `labels` `[L]` and `draws` `[L]`
    /// are this process's rows of it ([`Split::process_rows`]; the whole batch in a world
    /// of one). Returns the global batch's per-image loss rows `[G,3]`.
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
        let mut stats = self.stats.borrow_mut();
        if world.size() > 1 {
            // Other ranks' rows arrive through the sum below.
            stats.iter_mut().for_each(|v| *v = 0.0);
        }
        let mut sum: Option<Params> = None;
        let last = self.stages.len() - 1;
        let mut summed = false;
        for (r, stage) in self.stages.iter().enumerate() {
            let first = self.split.replica(r) * rows;
            let range = first..first + rows;
            // The same rows among this process's.
            let mine = r * rows..(r + 1) * rows;
            let mut s = stage.borrow_mut();
            s.input
                .set_images(&images[mine.start * per_image..mine.end * per_image])?;
            s.augment(&draws[mine.clone()])?;
            let net = &mut s.net;
            net.upload_labels(&labels[mine])?;
            net.forward(Some(dropout))?;
            net.loss()?;
            match self.plan.as_ref().filter(|_| r == last && world.size() > 1) {
                Some(plan) => {
                    let out = backward_overlapped(world, plan, net, dropout, sum.as_ref())?;
                    add_into(&mut sum, net.download_grads()?);
                    if let Some(sum) = sum.as_mut() {
                        let mut views: Vec<&mut [f32]> = sum
                            .tensors
                            .iter_mut()
                            .map(|t| t.data.as_mut_slice())
                            .collect();
                        plan.scatter(&out.sums, &mut views);
                    }
                    self.exchange.record(plan.values(), out.seconds);
                    summed = true;
                }
                None => {
                    net.backward(Some(dropout))?;
                    add_into(&mut sum, net.download_grads()?);
                }
            }
            stats[range.start * 3..range.end * 3].copy_from_slice(net.stats());
        }
        let sum = match sum {
            Some(sum) if summed => self
                .exchange
                .finish(world, self.split, sum, &mut stats[..])?,
            sum => self.exchange.mean(world, self.split, sum, &mut stats[..])?,
        };
        for stage in &self.stages {
            let mut s = stage.borrow_mut();
            s.net.upload_grads(&sum)?;
            s.net.sgd(hyper)?;
        }
        drop(stats);
        Ok(self.stats.borrow())
    }

    /// Replaces every replica's momentum (resuming).
    pub fn upload_momentum(&self, m: &Params) -> Result<(), EngineError> {
        for s in &self.stages {
            s.borrow_mut().net.upload_momentum(m)?;
        }
        Ok(())
    }

    /// The parameters (every replica holds the same; the first one's).
    pub fn download_params(&self) -> Result<Params, EngineError> {
        Ok(self.stages[0].borrow_mut().net.download_params()?)
    }

    /// The momentum (the first replica's).
    pub fn download_momentum(&self) -> Result<Params, EngineError> {
        Ok(self.stages[0].borrow_mut().net.download_momentum()?)
    }

    /// Values sent through the world's all-reduce since the last call (gradients only; 0 in a
    /// world of one), and the seconds those all-reduce calls took.
    pub fn take_sent(&self) -> (usize, f64) {
        self.exchange.take()
    }
}

/// The last replica's backward with its gradients, plus `earlier` (the other local
/// replicas' sum), summed over the world in `plan`'s buckets as they become final.
fn backward_overlapped(
    world: &dyn World,
    plan: &BucketPlan,
    net: &mut CpuNetwork,
    dropout: Dropout,
    earlier: Option<&Params>,
) -> Result<Overlapped, EngineError> {
    let mut failed = None;
    let mut scratch: Vec<f32> = Vec::new();
    let out = world.all_reduce_overlapped(plan, &mut |put| {
        let run = net.backward_observed(Some(dropout), &mut |t, g| match earlier {
            // The same addition, in the same order, as `add_into` on the blocking path.
            Some(acc) => {
                scratch.clear();
                scratch.extend(acc.tensors[t].data.iter().zip(g).map(|(a, b)| a + b));
                put(t, &scratch);
            }
            None => put(t, g),
        });
        if let Err(e) = run {
            failed = Some(e);
        }
    });
    if let Some(e) = failed {
        return Err(e.into());
    }
    out.map_err(|e| EngineError::NotBuilt(e.to_string()))
}
