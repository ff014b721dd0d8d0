//! The ranks of an MPI job as a [`World`] (the `mpi` feature): rsmpi over the system's MPI.
//! `mpirun -np N alexnet train …`, `srun alexnet train …` or an MPI Operator job start the
//! ranks; [`MpiWorld::from_launcher`] joins them when the environment says a launcher
//! started this process, so a plain `alexnet train` never initialises MPI.
use super::overlap::{BucketPlan, Filling, Overlapped, Put};
use super::{CollectiveError, World};
use mpi::collective::SystemOperation;
use mpi::datatype::PartitionMut;
use mpi::environment::Universe;
use mpi::request::{Request, Scope};
use mpi::topology::SimpleCommunicator;
use mpi::traits::*;
use mpi::{Count, Threading};

/// Variables that MPI launchers set in every rank's environment: Open MPI's `mpirun`, PMIx
/// (Open MPI 4+, Slurm's `srun --mpi=pmix`) and PMI-1/2 (MPICH's Hydra, `srun --mpi=pmi2`).
pub const LAUNCHER_VARS: [&str; 4] = ["OMPI_COMM_WORLD_SIZE", "PMIX_RANK", "PMI_SIZE", "PMI_RANK"];

/// The job's ranks: MPI stays initialised while this lives (dropping it finalises MPI).
pub struct MpiWorld {
    comm: SimpleCommunicator,
    /// This rank's place among the ranks on its machine and their number (MPI's
    /// shared-memory split).
    node_local: (usize, usize),
    // Declared after `comm`, so it is dropped (MPI_Finalize) after the communicator.
    _universe: Universe,
}

impl MpiWorld {
    /// Initialises MPI when a launcher started this process (one of [`LAUNCHER_VARS`] is
    /// set); `None` otherwise.
    pub fn from_launcher() -> Result<Option<MpiWorld>, CollectiveError> {
        if !LAUNCHER_VARS.iter().any(|v| std::env::var_os(v).is_some()) {
            return Ok(None);
        }
        // Only the main thread calls MPI; the engines' worker pools never do.
        let (universe, _level) =
            mpi::initialize_with_threading(Threading::Funneled).ok_or_else(|| {
                CollectiveError::Setup(
                    "MPI was already initialised in this process (a bug: the world is set up once)"
                        .into(),
                )
            })?;
        let comm = universe.world();
        // The ranks that can share memory are those of one machine: their split ranks them
        // in world order, which is what `--devices local` picks devices by.
        let node = comm.split_shared(comm.rank());
        let node_local = (node.rank() as usize, node.size() as usize);
        Ok(Some(MpiWorld {
            comm,
            node_local,
            _universe: universe,
        }))
    }
}

impl World for MpiWorld {
    fn rank(&self) -> usize {
        self.comm.rank() as usize
    }

    fn size(&self) -> usize {
        self.comm.size() as usize
    }

    fn all_reduce_sum(&self, buf: &mut [f32]) -> Result<(), CollectiveError> {
        // MPI's default error handler ends the job on a failed collective (a dead rank), so
        // a return here means every rank got the sum.
        let send = buf.to_vec();
        self.comm
            .all_reduce_into(&send[..], buf, SystemOperation::sum());
        Ok(())
    }

    fn all_reduce_overlapped(
        &self,
        plan: &BucketPlan,
        backward: &mut dyn FnMut(&mut Put<'_>),
    ) -> Result<Overlapped, CollectiveError> {
        // The buffers outlive the request scope (rsmpi's rule for immediate collectives):
        // each bucket's send and receive buffer is lent to its request when it starts.
        let mut send: Vec<Vec<f32>> = plan.sizes().iter().map(|&n| vec![0.0; n]).collect();
        let mut sums: Vec<Vec<f32>> = plan.sizes().iter().map(|&n| vec![0.0; n]).collect();
        let mut filling = Filling::new(plan);
        let mut seconds = 0.0;
        let mut send_slots: Vec<Option<&mut Vec<f32>>> = send.iter_mut().map(Some).collect();
        let mut recv_slots: Vec<Option<&mut Vec<f32>>> = sums.iter_mut().map(Some).collect();
        mpi::request::scope(|scope| {
            let mut pending = Vec::new();
            backward(&mut |t, values| {
                let Some((b, at, complete)) = filling.arrive(t, values.len()) else {
                    return;
                };
                if let Some(buf) = send_slots[b].as_mut() {
                    buf[at..at + values.len()].copy_from_slice(values);
                }
                let t0 = std::time::Instant::now();
                if complete {
                    if let (Some(s), Some(r)) = (send_slots[b].take(), recv_slots[b].take()) {
                        let req = self.comm.immediate_all_reduce_into(
                            scope,
                            frozen(s),
                            opened(r),
                            SystemOperation::sum(),
                        );
                        pending.push(Some(req));
                    }
                }
                // Open MPI moves a non-blocking collective on only inside MPI calls (no
                // progress thread): testing the started buckets after every hand-over keeps
                // them moving while backward computes.
                progress(&mut pending);
                seconds += t0.elapsed().as_secs_f64();
            });
            let t0 = std::time::Instant::now();
            for r in pending.into_iter().flatten() {
                r.wait();
            }
            seconds += t0.elapsed().as_secs_f64();
        });
        filling.finish()?;
        Ok(Overlapped { sums, seconds })
    }

    fn all_gather(&self, value: u64) -> Result<Vec<u64>, CollectiveError> {
        let mut out = vec![0u64; self.size()];
        self.comm.all_gather_into(&value, &mut out[..]);
        Ok(out)
    }

    fn abort(&self, code: i32) {
        self.comm.abort(code)
    }

    fn describe(&self) -> String {
        format!("MPI rank {} of {}", self.rank(), self.size())
    }

    fn all_reduce_sum_f64(&self, buf: &mut [f64]) -> Result<(), CollectiveError> {
        let send = buf.to_vec();
        self.comm
            .all_reduce_into(&send[..], buf, SystemOperation::sum());
        Ok(())
    }

    fn node_local(&self) -> (usize, usize) {
        self.node_local
    }

    fn all_gather_varcount_f32(
        &self,
        mine: &[f32],
        counts: &[usize],
    ) -> Result<Vec<f32>, CollectiveError> {
        super::check_counts(self, mine.len(), counts)?;
        let too_big = |n: usize| {
            Count::try_from(n).map_err(|_| {
                CollectiveError::Setup(format!(
                    "{}: an all-gather of {n} values is more than MPI counts in one call",
                    self.describe()
                ))
            })
        };
        let cs = counts
            .iter()
            .map(|&n| too_big(n))
            .collect::<Result<Vec<_>, _>>()?;
        let mut displs = Vec::with_capacity(cs.len());
        let mut at = 0usize;
        for &n in counts {
            displs.push(too_big(at)?);
            at += n;
        }
        let mut out = vec![0.0f32; at];
        let mut recv = PartitionMut::new(&mut out[..], &cs[..], &displs[..]);
        self.comm.all_gather_varcount_into(mine, &mut recv);
        Ok(out)
    }
}

/// A bucket's send buffer, lent to its request for the rest of the scope.
fn frozen(v: &mut Vec<f32>) -> &[f32] {
    v
}

/// A bucket's receive buffer, lent to its request for the rest of the scope.
fn opened(v: &mut Vec<f32>) -> &mut [f32] {
    v
}

/// Tests every started request once (completing those that are done).
fn progress<'a, S: Scope<'a>>(pending: &mut [Option<Request<'a, [f32], S>>]) {
    for slot in pending.iter_mut() {
        if let Some(r) = slot.take() {
            if let Err(r) = r.test() {
                *slot = Some(r);
            }
        }
    }
}
