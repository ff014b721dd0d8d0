//! Exact, mergeable image statistics: integer sums over pixels (0..255) and per-pixel sums
//! for the mean image, from which the mean, covariance and PCA are derived.
use super::DatasetError;
use nalgebra::{Matrix3, SymmetricEigen};

/// Integer sums over a set of S×S RGB images. Merging is exact and order-independent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stats {
    /// Image side S.
    pub size: usize,
    /// Number of images.
    pub count: u64,
    /// Number of pixels (count·S·S).
    pub pixel_count: u64,
    /// Σ x over pixels, per channel.
    pub pixel_sum: [u64; 3],
    /// Σ x·xᵀ over pixels.
    pub pixel_outer_sum: [[u64; 3]; 3],
    /// Per-position sums over images, H,W,C order, S·S·3 values.
    pub mean_image_sum: Vec<u64>,
}

impl Stats {
    /// Empty statistics for S×S images.
    pub fn new(size: usize) -> Self {
        Self {
            size,
            count: 0,
            pixel_count: 0,
            pixel_sum: [0; 3],
            pixel_outer_sum: [[0; 3]; 3],
            mean_image_sum: vec![0; size * size * 3],
        }
    }

    /// Adds one image, `image` `[S,S,3]` u8.
    ///
    /// # Panics
    /// When `image` is not S·S·3 bytes: callers build images of the set's size, so a
    /// mismatch is a bug, not bad data.
    pub fn add_image(&mut self, image: &[u8]) {
        assert_eq!(
            image.len(),
            self.mean_image_sum.len(),
            "image is not S*S*3 bytes"
        );
        // Per-image sums fit u64 easily (65536·255² ≪ 2⁶⁴); accumulate locally, then add.
        let mut s = [0u64; 3];
        let mut o = [0u64; 6]; // rr rg rb gg gb bb
        for px in image.chunks_exact(3) {
            let (r, g, b) = (px[0] as u64, px[1] as u64, px[2] as u64);
            s[0] += r;
            s[1] += g;
            s[2] += b;
            o[0] += r * r;
            o[1] += r * g;
            o[2] += r * b;
            o[3] += g * g;
            o[4] += g * b;
            o[5] += b * b;
        }
        for (acc, v) in self.pixel_sum.iter_mut().zip(s) {
            *acc += v;
        }
        let idx = [[0, 1, 2], [1, 3, 4], [2, 4, 5]];
        for (i, row) in idx.iter().enumerate() {
            for (j, &k) in row.iter().enumerate() {
                self.pixel_outer_sum[i][j] += o[k];
            }
        }
        for (acc, &x) in self.mean_image_sum.iter_mut().zip(image) {
            *acc += x as u64;
        }
        self.count += 1;
        self.pixel_count += (self.size * self.size) as u64;
    }

    /// Adds `other`'s sums to these.
    pub fn merge(&mut self, other: &Stats) -> Result<(), DatasetError> {
        if other.size != self.size {
            return Err(DatasetError::StatsSize {
                a: self.size,
                b: other.size,
            });
        }
        self.count += other.count;
        self.pixel_count += other.pixel_count;
        for c in 0..3 {
            self.pixel_sum[c] += other.pixel_sum[c];
            for d in 0..3 {
                self.pixel_outer_sum[c][d] += other.pixel_outer_sum[c][d];
            }
        }
        for (a, b) in self.mean_image_sum.iter_mut().zip(&other.mean_image_sum) {
            *a += b;
        }
        Ok(())
    }

    /// Mean pixel [r,g,b] in 0..255; zeros when empty.
    pub fn rgb_mean(&self) -> [f64; 3] {
        if self.pixel_count == 0 {
            return [0.0; 3];
        }
        let n = self.pixel_count as f64;
        self.pixel_sum.map(|s| s as f64 / n)
    }

    /// Population covariance of pixels (divided by `pixel_count`); zeros when empty.
    pub fn rgb_cov(&self) -> [[f64; 3]; 3] {
        let mut cov = [[0.0; 3]; 3];
        if self.pixel_count == 0 {
            return cov;
        }
        let n = self.pixel_count as f64;
        for (i, row) in cov.iter_mut().enumerate() {
            for (j, v) in row.iter_mut().enumerate() {
                // Centre in integers first: n·Σxy − Σx·Σy is exact in i128, which avoids the
                // cancellation of E[xy] − E[x]E[y] in f64.
                let nxy = self.pixel_count as i128 * self.pixel_outer_sum[i][j] as i128;
                let sxsy = self.pixel_sum[i] as i128 * self.pixel_sum[j] as i128;
                *v = (nxy - sxsy) as f64 / (n * n);
            }
        }
        cov
    }

    /// Eigen-decomposition of [`Stats::rgb_cov`]: eigenvalues descending, and row i the unit
    /// eigenvector of eigenvalue i with its largest-magnitude component made positive, so the
    /// result does not depend on the solver's sign choice.
    pub fn pca(&self) -> ([f64; 3], [[f64; 3]; 3]) {
        let c = self.rgb_cov();
        let m = Matrix3::from_fn(|i, j| c[i][j]);
        let eig = SymmetricEigen::new(m);
        let mut pairs: Vec<(f64, [f64; 3])> = (0..3)
            .map(|k| {
                let v = eig.eigenvectors.column(k);
                let mut v = [v[0], v[1], v[2]];
                let big = (0..3).fold(0, |b, i| if v[i].abs() > v[b].abs() { i } else { b });
                if v[big] < 0.0 {
                    v = v.map(|x| -x);
                }
                (eig.eigenvalues[k], v)
            })
            .collect();
        pairs.sort_by(|a, b| b.0.total_cmp(&a.0));
        (
            [pairs[0].0, pairs[1].0, pairs[2].0],
            [pairs[0].1, pairs[1].1, pairs[2].1],
        )
    }

    /// Mean image `[S,S,3]` (H,W,C), values in 0..255; zeros when empty.
    pub fn mean_image(&self) -> Vec<f32> {
        let n = self.count.max(1) as f64;
        self.mean_image_sum
            .iter()
            .map(|&s| (s as f64 / n) as f32)
            .collect()
    }
}

#[cfg(test)]
#[allow(clippy::needless_range_loop)] // index loops read like the maths
mod tests {
    use super::*;

    fn image(size: usize, seed: u64) -> Vec<u8> {
        let mut x = seed;
        (0..size * size * 3)
            .map(|_| {
                x = x
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                (x >> 56) as u8
            })
            .collect()
    }

    #[test]
    fn merge_equals_one_pass_and_cov_matches_f64() {
        let imgs: Vec<Vec<u8>> = (0..5).map(|k| image(4, k)).collect();
        let mut all = Stats::new(4);
        let (mut a, mut b) = (Stats::new(4), Stats::new(4));
        for (k, im) in imgs.iter().enumerate() {
            all.add_image(im);
            if k < 2 {
                a.add_image(im)
            } else {
                b.add_image(im)
            }
        }
        a.merge(&b).unwrap();
        assert_eq!(a, all);
        let px: Vec<[f64; 3]> = imgs
            .iter()
            .flat_map(|im| {
                im.chunks(3)
                    .map(|p| [p[0] as f64, p[1] as f64, p[2] as f64])
            })
            .collect();
        let n = px.len() as f64;
        let mean: Vec<f64> = (0..3)
            .map(|c| px.iter().map(|p| p[c]).sum::<f64>() / n)
            .collect();
        let cov = all.rgb_cov();
        for i in 0..3 {
            assert!((all.rgb_mean()[i] - mean[i]).abs() < 1e-9);
            for j in 0..3 {
                let d: f64 = px
                    .iter()
                    .map(|p| (p[i] - mean[i]) * (p[j] - mean[j]))
                    .sum::<f64>()
                    / n;
                assert!(
                    (cov[i][j] - d).abs() < 1e-6,
                    "cov[{i}][{j}] {} vs {d}",
                    cov[i][j]
                );
            }
        }
        let (vals, vecs) = all.pca();
        assert!(vals[0] >= vals[1] && vals[1] >= vals[2]);
        for (k, v) in vecs.iter().enumerate() {
            // C·v = λ·v
            for i in 0..3 {
                let cv: f64 = (0..3).map(|j| cov[i][j] * v[j]).sum();
                assert!((cv - vals[k] * v[i]).abs() < 1e-6);
            }
        }
        assert!(a.merge(&Stats::new(5)).is_err());
    }
}
