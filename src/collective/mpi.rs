//! The ranks of an MPI job as a [`World`] (the `mpi` feature): rsmpi over the system's MPI.
//! `mpirun -np N alexnet train …`, `srun alexnet train …` or an MPI Operator job start the
//! ranks; [`MpiWorld::from_launcher`] joins them when the environment says a launcher
//! started this process, so a plain `alexnet train` never initialises MPI.
use super::{CollectiveError, World};
use mpi::collective::SystemOperation;
use mpi::environment::Universe;
use mpi::topology::SimpleCommunicator;
use mpi::traits::*;
use mpi::Threading;

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
}
