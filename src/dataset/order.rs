//! The order in which an epoch visits rows: a deterministic function of (seed, epoch).
//!
//! `Shuffle::Full` is a two-level shuffle so an epoch never needs the whole set in memory:
//! the row groups of all files are permuted, cut into windows of `window_groups` groups,
//! and the rows of each window are permuted among themselves. The loader then holds at most
//! about two windows of decoded row groups.
use super::{ShardSet, Shuffle};

/// splitmix64: tiny, fast, and good enough to drive Fisher–Yates deterministically.
pub(crate) struct SplitMix64(pub(crate) u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in 0..n (n > 0); the multiply-shift bias is below 2⁻³² for any n we shuffle.
    fn below(&mut self, n: usize) -> usize {
        ((self.next() as u128 * n as u128) >> 64) as usize
    }

    pub(crate) fn shuffle<T>(&mut self, v: &mut [T]) {
        for i in (1..v.len()).rev() {
            let j = self.below(i + 1);
            v.swap(i, j);
        }
    }
}

/// Global row indices in the order epoch `epoch` visits them.
pub fn epoch_order(
    set: &ShardSet,
    shuffle: Shuffle,
    seed: u64,
    epoch: u64,
    window_groups: usize,
) -> Vec<u64> {
    let groups = set.row_groups();
    match shuffle {
        Shuffle::None => (0..set.len() as u64).collect(),
        Shuffle::Full => {
            let mut rng = SplitMix64(seed ^ epoch.wrapping_mul(0xD1B5_4A32_D192_ED03));
            let mut perm: Vec<usize> = (0..groups.len()).collect();
            rng.shuffle(&mut perm);
            let mut order = Vec::with_capacity(set.len());
            for window in perm.chunks(window_groups.max(1)) {
                let start = order.len();
                for &g in window {
                    let rg = groups[g];
                    order.extend(rg.first_row..rg.first_row + rg.rows as u64);
                }
                rng.shuffle(&mut order[start..]);
            }
            order
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fisher_yates_is_a_permutation_and_seeded() {
        let mut a: Vec<u32> = (0..1000).collect();
        let mut b = a.clone();
        SplitMix64(7).shuffle(&mut a);
        SplitMix64(8).shuffle(&mut b);
        assert_ne!(a, b);
        let mut s = a.clone();
        s.sort();
        assert_eq!(s, (0..1000).collect::<Vec<_>>());
        let mut c: Vec<u32> = (0..1000).collect();
        SplitMix64(7).shuffle(&mut c);
        assert_eq!(a, c);
    }
}
