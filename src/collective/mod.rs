//! The collective a data-parallel run sums its gradients through, behind one small trait:
//! a world of one process ([`Solo`], where the sum over ranks is the identity) or the ranks
//! of an MPI job (`mpi.rs`, the `mpi` cargo feature, rsmpi over the system's Open MPI or
//! MPICH). Replicas inside one process are summed on the host before this is called
//! (`engine::replicas`), so a rank hands the world one sum of its own replicas.
//!
//! The world is process-wide (MPI is initialised once per process): the binary installs it
//! with [`install`] on its main thread before a command runs, and the training loop (on that
//! thread) reads it with [`world`]. It is kept per thread because an MPI communicator is a
//! handle only the thread that initialised MPI may use (`Threading::Funneled`).
use std::cell::RefCell;
use std::rc::Rc;

#[cfg(feature = "mpi")]
pub mod mpi;
pub mod overlap;

pub use overlap::{BucketPlan, Overlapped, Put};

/// What can go wrong in a collective operation.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CollectiveError {
    /// Two ranks disagree about something every rank must agree on.
    #[error("{0}")]
    Diverged(String),
    /// The world could not be set up.
    #[error("{0}")]
    Setup(String),
}

/// The ranks of a data-parallel job, and the operations they do together. Every rank must
/// call every operation in the same order with buffers of the same length.
pub trait World {
    /// This process's rank, from 0.
    fn rank(&self) -> usize;
    /// Number of ranks.
    fn size(&self) -> usize;
    /// `buf ← Σ_ranks buf`, element by element, on every rank.
    fn all_reduce_sum(&self, buf: &mut [f32]) -> Result<(), CollectiveError>;
    /// Sums `plan`'s buckets over the world while `backward` runs: `backward` hands each
    /// gradient tensor to its `put` as soon as it is final, and a bucket's sum starts when its
    /// last tensor arrives. Returns when every bucket is summed. Every rank must use the
    /// same plan. This default sums each bucket with [`World::all_reduce_sum`] as it
    /// completes (blocking); the MPI world starts immediate all-reduces instead.
    fn all_reduce_overlapped(
        &self,
        plan: &BucketPlan,
        backward: &mut dyn FnMut(&mut Put<'_>),
    ) -> Result<Overlapped, CollectiveError> {
        overlap::all_reduce_in_turn(self, plan, backward)
    }
    /// Every rank's `value`, by rank.
    fn all_gather(&self, value: u64) -> Result<Vec<u64>, CollectiveError>;
    /// Ends the whole job after this rank failed: every other rank stops too. Returns only
    /// in a world of one (then the caller's error ends the process as usual).
    fn abort(&self, code: i32);
    /// What the world is, in words (`"MPI, 4 ranks"`).
    fn describe(&self) -> String;
    /// `buf ← Σ_ranks buf` in f64, for a few counts and sums that must stay exact (a
    /// validation split across ranks). The default serves a world of one; a world of more
    /// ranks overrides it.
    fn all_reduce_sum_f64(&self, buf: &mut [f64]) -> Result<(), CollectiveError> {
        let _ = buf;
        if self.size() == 1 {
            return Ok(());
        }
        Err(CollectiveError::Setup(format!(
            "{}: this world has no f64 all-reduce (a bug: every world of several ranks needs one)",
            self.describe()
        )))
    }
    /// This process's rank among the ranks on its own machine (from 0) and how many ranks
    /// run there: what picks its devices under `--devices local`. `(0, 1)` in a world of one.
    fn node_local(&self) -> (usize, usize) {
        (0, 1)
    }
    /// Every rank's `mine`, concatenated in rank order, where rank r hands `counts[r]`
    /// values (parts of unequal length: the hybrid split's activations). Every rank passes
    /// the same `counts`. The default serves a world of one; a world of more ranks overrides it.
    fn all_gather_varcount_f32(
        &self,
        mine: &[f32],
        counts: &[usize],
    ) -> Result<Vec<f32>, CollectiveError> {
        check_counts(self, mine.len(), counts)?;
        if self.size() == 1 {
            return Ok(mine.to_vec());
        }
        Err(CollectiveError::Setup(format!(
            "{}: this world has no variable-count all-gather (a bug: every world of several ranks needs one)",
            self.describe()
        )))
    }
}

/// A world of one process: no other rank to sum with.
#[derive(Clone, Copy, Debug, Default)]
pub struct Solo;

impl World for Solo {
    fn rank(&self) -> usize {
        0
    }
    fn size(&self) -> usize {
        1
    }
    fn all_reduce_sum(&self, _buf: &mut [f32]) -> Result<(), CollectiveError> {
        Ok(())
    }
    fn all_gather(&self, value: u64) -> Result<Vec<u64>, CollectiveError> {
        Ok(vec![value])
    }
    fn abort(&self, _code: i32) {}
    fn describe(&self) -> String {
        "one process".into()
    }
}

thread_local! {
    static WORLD: RefCell<Option<Rc<dyn World>>> = const { RefCell::new(None) };
}

/// Makes `w` this thread's world (the main thread's: the one that runs commands).
pub fn install(w: Rc<dyn World>) {
    WORLD.with(|cell| *cell.borrow_mut() = Some(w));
}

/// Takes this thread's world back (the binary drops it before exiting, which finalises MPI).
pub fn uninstall() -> Option<Rc<dyn World>> {
    WORLD.with(|cell| cell.borrow_mut().take())
}

/// What [`World::all_gather_varcount_f32`] requires of its arguments on every world: one
/// count per rank, and this rank's count the length it hands.
pub(crate) fn check_counts<W: World + ?Sized>(
    world: &W,
    mine: usize,
    counts: &[usize],
) -> Result<(), CollectiveError> {
    if counts.len() != world.size() || counts.get(world.rank()) != Some(&mine) {
        return Err(CollectiveError::Diverged(format!(
            "{}: an all-gather of {mine} values with counts {counts:?} (a bug: one count per rank, this rank's the length it hands)",
            world.describe()
        )));
    }
    Ok(())
}

/// This thread's world: what [`install`] set, else [`Solo`].
pub fn world() -> Rc<dyn World> {
    WORLD.with(|cell| cell.borrow().clone().unwrap_or_else(|| Rc::new(Solo)))
}

/// The most values one all-reduce call carries: gradients go out in buckets of whole
/// tensors up to this size (16 MiB of f32), so a step's exchange is a few large messages
/// rather than one per tensor or one copy of the whole model.
pub const BUCKET_VALUES: usize = 4 << 20;

/// Sums `tensors` over the world in buckets of whole tensors of at most [`BUCKET_VALUES`]
/// values (a larger tensor is a bucket alone). Returns the values sent.
pub fn all_reduce_buckets(
    world: &dyn World,
    tensors: &mut [&mut [f32]],
) -> Result<usize, CollectiveError> {
    if world.size() == 1 {
        return Ok(0);
    }
    let mut sent = 0;
    let mut bucket: Vec<f32> = Vec::with_capacity(BUCKET_VALUES);
    let mut members: Vec<usize> = Vec::new();
    let mut flush =
        |bucket: &mut Vec<f32>, members: &mut Vec<usize>, tensors: &mut [&mut [f32]]| {
            if members.is_empty() {
                return Ok(());
            }
            world.all_reduce_sum(bucket)?;
            let mut at = 0;
            for &m in members.iter() {
                let t = &mut tensors[m];
                t.copy_from_slice(&bucket[at..at + t.len()]);
                at += t.len();
            }
            sent += bucket.len();
            bucket.clear();
            members.clear();
            Ok::<(), CollectiveError>(())
        };
    for i in 0..tensors.len() {
        if !bucket.is_empty() && bucket.len() + tensors[i].len() > BUCKET_VALUES {
            flush(&mut bucket, &mut members, tensors)?;
        }
        bucket.extend_from_slice(tensors[i]);
        members.push(i);
    }
    flush(&mut bucket, &mut members, tensors)?;
    Ok(sent)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    /// A world of `n` ranks simulated in one process by one rank's view: every other rank
    /// holds `k·buf` (k = rank + 1), so the sum is `buf·(1 + … + n)`, and it records the
    /// bucket sizes.
    struct Scaled {
        n: usize,
        calls: Mutex<Vec<usize>>,
    }
    impl World for Scaled {
        fn rank(&self) -> usize {
            0
        }
        fn size(&self) -> usize {
            self.n
        }
        fn all_reduce_sum(&self, buf: &mut [f32]) -> Result<(), CollectiveError> {
            let k = (self.n * (self.n + 1) / 2) as f32;
            buf.iter_mut().for_each(|v| *v *= k);
            self.calls.lock().unwrap().push(buf.len());
            Ok(())
        }
        fn all_gather(&self, value: u64) -> Result<Vec<u64>, CollectiveError> {
            Ok(vec![value; self.n])
        }
        fn abort(&self, _code: i32) {}
        fn describe(&self) -> String {
            "test".into()
        }
    }

    #[test]
    fn buckets_keep_tensors_whole_and_put_every_value_back_in_place() {
        let w = Scaled {
            n: 3,
            calls: Mutex::new(Vec::new()),
        };
        let lens = [5, BUCKET_VALUES - 10, 7, BUCKET_VALUES + 11, 2];
        let mut data: Vec<Vec<f32>> = lens
            .iter()
            .enumerate()
            .map(|(t, &n)| (0..n).map(|i| (t * 31 + i % 97) as f32 - 40.0).collect())
            .collect();
        let want: Vec<Vec<f32>> = data
            .iter()
            .map(|t| t.iter().map(|v| v * 6.0).collect())
            .collect();
        let mut views: Vec<&mut [f32]> = data.iter_mut().map(|t| t.as_mut_slice()).collect();
        let sent = all_reduce_buckets(&w, &mut views).unwrap();
        assert_eq!(sent, lens.iter().sum::<usize>());
        assert_eq!(
            *w.calls.lock().unwrap(),
            vec![BUCKET_VALUES - 5, 7, BUCKET_VALUES + 11, 2]
        );
        assert!(data == want, "a value landed in the wrong place");
    }

    #[test]
    fn solo_gathers_its_own_part_and_refuses_counts_that_do_not_match_it() {
        let mine = [0.5f32, -3.0, 7.25];
        assert_eq!(Solo.all_gather_varcount_f32(&mine, &[3]).unwrap(), mine);
        for bad in [&[2usize][..], &[3, 1][..], &[][..]] {
            let e = Solo.all_gather_varcount_f32(&mine, bad).unwrap_err();
            assert!(e.to_string().contains("one count per rank"), "{bad:?}: {e}");
        }
    }

    #[test]
    fn solo_sums_nothing() {
        let mut a = vec![1.5f32, -2.0];
        let mut views: Vec<&mut [f32]> = vec![a.as_mut_slice()];
        assert_eq!(all_reduce_buckets(&Solo, &mut views).unwrap(), 0);
        assert_eq!(a, vec![1.5, -2.0]);
    }
}
