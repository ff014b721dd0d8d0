//! All-reduce overlapped with backward, as PyTorch's DDP does it: the gradient tensors are
//! grouped into buckets in the order backward finishes them (fc8 first), and a bucket's sum
//! is started the moment its last tensor is handed over, while backward goes on with the
//! layers below. [`BucketPlan`] is that grouping (every rank builds the same one, so every
//! rank starts the same buckets in the same order); [`Filling`] is the bookkeeping of one
//! step's hand-over, shared by the blocking fallback here and the MPI world's immediate
//! collectives (`mpi.rs`).
use super::{CollectiveError, World};

/// The default most values per bucket of an overlapped exchange (4 MiB of f32): small enough
/// that the first bucket (fc8, fc7) is complete early in backward, large enough that a step
/// is a few messages, not one per tensor.
pub const OVERLAP_BUCKET_VALUES: usize = 1 << 20;

/// Which gradient tensors go into which bucket, in backward order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BucketPlan {
    /// Tensor indices per bucket, in hand-over order.
    buckets: Vec<Vec<usize>>,
    /// Per tensor index: (bucket, offset in it, values); `None` for tensors not exchanged.
    place: Vec<Option<(usize, usize, usize)>>,
    /// Values per bucket.
    sizes: Vec<usize>,
}

impl BucketPlan {
    /// Buckets of whole tensors taken in `order` (indices into `lens`, the values of every
    /// tensor), each closed before it would pass `max_values` (a larger tensor is a bucket
    /// alone). Tensors not in `order` are not exchanged.
    pub fn new(
        order: &[usize],
        lens: &[usize],
        max_values: usize,
    ) -> Result<Self, CollectiveError> {
        let mut place = vec![None; lens.len()];
        let mut buckets: Vec<Vec<usize>> = Vec::new();
        let mut sizes: Vec<usize> = Vec::new();
        for &t in order {
            let len = *lens.get(t).ok_or_else(|| {
                CollectiveError::Setup(format!(
                    "bucket plan: tensor {t} is not one of the {} tensors",
                    lens.len()
                ))
            })?;
            if place[t].is_some() {
                return Err(CollectiveError::Setup(format!(
                    "bucket plan: tensor {t} is handed over twice in backward"
                )));
            }
            if sizes.last().is_none_or(|&s| s + len > max_values) {
                buckets.push(Vec::new());
                sizes.push(0);
            }
            let b = buckets.len() - 1;
            place[t] = Some((b, sizes[b], len));
            buckets[b].push(t);
            sizes[b] += len;
        }
        Ok(BucketPlan {
            buckets,
            place,
            sizes,
        })
    }

    /// Tensor indices per bucket, in the order the buckets start.
    pub fn buckets(&self) -> &[Vec<usize>] {
        &self.buckets
    }

    /// Values per bucket.
    pub fn sizes(&self) -> &[usize] {
        &self.sizes
    }

    /// Values exchanged per step (every bucket once).
    pub fn values(&self) -> usize {
        self.sizes.iter().sum()
    }

    /// Copies the summed buckets `sums` (as [`World::all_reduce_overlapped`] returns them)
    /// into `tensors`, indexed as the plan's tensors; tensors not exchanged keep their values.
    pub fn scatter(&self, sums: &[Vec<f32>], tensors: &mut [&mut [f32]]) {
        for (t, dst) in tensors.iter_mut().enumerate() {
            if let Some(Some((b, at, len))) = self.place.get(t) {
                dst.copy_from_slice(&sums[*b][*at..at + len]);
            }
        }
    }
}

/// One step's hand-over of tensors into a [`BucketPlan`]'s buckets: where each goes, and
/// which buckets are complete. Errors (a tensor of the wrong size, or handed over twice) are
/// bugs in the caller; they are kept, not thrown, so that the buckets already started are
/// still waited for.
#[derive(Debug)]
pub struct Filling<'p> {
    plan: &'p BucketPlan,
    missing: Vec<usize>,
    seen: Vec<bool>,
    error: Option<CollectiveError>,
}

impl<'p> Filling<'p> {
    /// Nothing handed over yet.
    pub fn new(plan: &'p BucketPlan) -> Self {
        Filling {
            plan,
            missing: plan.buckets.iter().map(Vec::len).collect(),
            seen: vec![false; plan.place.len()],
            error: None,
        }
    }

    /// Tensor `t` with `len` values arrives: where to copy it (bucket, offset) and whether
    /// that bucket is now complete; `None` for a tensor the plan does not exchange or one
    /// that is wrong (kept for [`Filling::finish`]).
    pub fn arrive(&mut self, t: usize, len: usize) -> Option<(usize, usize, bool)> {
        if self.error.is_some() {
            return None;
        }
        let (b, at, want) = (*self.plan.place.get(t)?)?;
        if want != len || self.seen[t] {
            self.error = Some(CollectiveError::Diverged(format!(
                "overlapped all-reduce: gradient tensor {t} handed over {} with {len} values (the plan has {want})",
                if self.seen[t] { "twice" } else { "once" }
            )));
            return None;
        }
        self.seen[t] = true;
        self.missing[b] -= 1;
        Some((b, at, self.missing[b] == 0))
    }

    /// After the hand-over: an error if something was wrong or a bucket never completed
    /// (its sum was never started, so the ranks no longer agree on what comes next).
    pub fn finish(self) -> Result<(), CollectiveError> {
        if let Some(e) = self.error {
            return Err(e);
        }
        match self.missing.iter().position(|&m| m > 0) {
            Some(b) => Err(CollectiveError::Diverged(format!(
                "overlapped all-reduce: backward handed over {} of bucket {b}'s {} tensors",
                self.plan.buckets[b].len() - self.missing[b],
                self.plan.buckets[b].len()
            ))),
            None => Ok(()),
        }
    }
}

/// What an overlapped exchange gives back.
#[derive(Debug, Default)]
pub struct Overlapped {
    /// Every bucket's sum over the world, in plan order.
    pub sums: Vec<Vec<f32>>,
    /// Seconds spent inside the collective (starting, progressing and waiting for the
    /// sums; not the backward that ran in between).
    pub seconds: f64,
}

/// The hand-over a backward runs with: `put(tensor index, values)` once per exchanged tensor.
pub type Put<'a> = dyn FnMut(usize, &[f32]) + 'a;

/// The blocking fallback of [`World::all_reduce_overlapped`]: each bucket is summed with
/// [`World::all_reduce_sum`] as soon as it is complete, inside the hand-over (so a world
/// without immediate collectives still sends in backward order, it just waits each time).
pub fn all_reduce_in_turn<W: World + ?Sized>(
    world: &W,
    plan: &BucketPlan,
    backward: &mut dyn FnMut(&mut Put<'_>),
) -> Result<Overlapped, CollectiveError> {
    let mut sums: Vec<Vec<f32>> = plan.sizes.iter().map(|&n| vec![0.0; n]).collect();
    let mut filling = Filling::new(plan);
    let mut seconds = 0.0;
    let mut failed: Option<CollectiveError> = None;
    backward(&mut |t, values| {
        let Some((b, at, complete)) = filling.arrive(t, values.len()) else {
            return;
        };
        sums[b][at..at + values.len()].copy_from_slice(values);
        if complete && failed.is_none() {
            let t0 = std::time::Instant::now();
            if let Err(e) = world.all_reduce_sum(&mut sums[b]) {
                failed = Some(e);
            }
            seconds += t0.elapsed().as_secs_f64();
        }
    });
    if let Some(e) = failed {
        return Err(e);
    }
    filling.finish()?;
    Ok(Overlapped { sums, seconds })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;

    #[test]
    fn buckets_follow_backward_order_and_close_before_the_limit() {
        // Six tensors; backward hands over 5,4 (fc8), 3,2, 1,0.
        let lens = [300, 3, 50, 5, 40, 4];
        let plan = BucketPlan::new(&[4, 5, 2, 3, 0, 1], &lens, 100).unwrap();
        assert_eq!(plan.buckets(), &[vec![4, 5, 2, 3], vec![0], vec![1]]);
        assert_eq!(plan.sizes(), &[99, 300, 3]);
        assert_eq!(plan.values(), 402);
        let missing = BucketPlan::new(&[4, 5], &lens, 100).unwrap();
        assert_eq!(
            missing.values(),
            44,
            "tensors not in the order are not exchanged"
        );
        assert!(BucketPlan::new(&[1, 1], &lens, 100).is_err());
        assert!(BucketPlan::new(&[6], &lens, 100).is_err());
    }

    /// A world of `n` ranks seen from rank 0: every other rank holds `k·buf`, so the sum
    /// is `buf·(1 + … + n)`; it logs each call between the hand-overs it records.
    struct Logged<'a> {
        n: usize,
        log: &'a RefCell<Vec<String>>,
    }
    impl World for Logged<'_> {
        fn rank(&self) -> usize {
            0
        }
        fn size(&self) -> usize {
            self.n
        }
        fn all_reduce_sum(&self, buf: &mut [f32]) -> Result<(), CollectiveError> {
            let k = (self.n * (self.n + 1) / 2) as f32;
            buf.iter_mut().for_each(|v| *v *= k);
            self.log.borrow_mut().push(format!("sum {}", buf.len()));
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
    fn a_bucket_is_summed_as_soon_as_its_last_tensor_arrives_and_lands_in_place() {
        let log = RefCell::new(Vec::new());
        let w = Logged { n: 2, log: &log };
        let lens = [7, 2, 13, 3];
        let data: Vec<Vec<f32>> = lens
            .iter()
            .enumerate()
            .map(|(t, &n)| (0..n).map(|i| (t * 17 + i) as f32 * 0.25 - 3.0).collect())
            .collect();
        let plan = BucketPlan::new(&[2, 3, 0, 1], &lens, 16).unwrap();
        let out = w
            .all_reduce_overlapped(&plan, &mut |put| {
                for t in [2, 3, 0, 1] {
                    log.borrow_mut().push(format!("put {t}"));
                    put(t, &data[t]);
                }
            })
            .unwrap();
        assert_eq!(
            *log.borrow(),
            ["put 2", "put 3", "sum 16", "put 0", "put 1", "sum 9"],
            "the first bucket must go out before backward hands over the rest"
        );
        let mut got: Vec<Vec<f32>> = lens.iter().map(|&n| vec![f32::NAN; n]).collect();
        let mut views: Vec<&mut [f32]> = got.iter_mut().map(|t| t.as_mut_slice()).collect();
        plan.scatter(&out.sums, &mut views);
        for (g, d) in got.iter().zip(&data) {
            let want: Vec<f32> = d.iter().map(|v| v * 3.0).collect();
            assert_eq!(g, &want);
        }
    }

    #[test]
    fn a_backward_that_stops_early_or_hands_over_a_wrong_tensor_is_an_error() {
        let log = RefCell::new(Vec::new());
        let w = Logged { n: 2, log: &log };
        let lens = [4, 4];
        let plan = BucketPlan::new(&[1, 0], &lens, 4).unwrap();
        let short = w.all_reduce_overlapped(&plan, &mut |put| put(1, &[1.0; 4]));
        assert!(short.unwrap_err().to_string().contains("bucket 1"));
        let wrong = w.all_reduce_overlapped(&plan, &mut |put| {
            put(1, &[1.0; 4]);
            put(0, &[1.0; 3]);
        });
        assert!(wrong.unwrap_err().to_string().contains("tensor 0"));
    }
}
