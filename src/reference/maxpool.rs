//! Max pooling without padding (the paper's overlapping 3×3 windows with stride 2).
//!
//! The gradient of each window goes to its FIRST maximum in row-major scan order (a later equal
//! value does not take it), and overlapping windows accumulate onto shared inputs. The kernels
//! must break ties the same way for bit-level agreement on inputs with repeated values (ReLU
//! outputs are full of zeros).
//!
//! Dims: N batch, C channels, H,W input, OH,OW output, K window.
use crate::shape::PoolShape;

/// Flat input index of the first maximum of output element (b, ch, oy, ox)'s window.
fn argmax(s: &PoolShape, x: &[f32], b: usize, ch: usize, oy: usize, ox: usize) -> usize {
    let base = (b * s.c + ch) * s.h * s.w;
    let mut best = base + oy * s.stride * s.w + ox * s.stride;
    for ky in 0..s.k {
        for kx in 0..s.k {
            let i = base + (oy * s.stride + ky) * s.w + ox * s.stride + kx;
            // Strictly greater: an equal later value leaves the first maximum in place. A NaN
            // is the maximum (its first occurrence), as in PyTorch: pooling never hides one.
            if x[i] > x[best] || (x[i].is_nan() && !x[best].is_nan()) {
                best = i;
            }
        }
    }
    best
}

/// `y = max over each K×K window`. x `[N,C,H,W]` → y `[N,C,OH,OW]`.
pub fn maxpool_forward(s: &PoolShape, x: &[f32]) -> Vec<f32> {
    assert_eq!(
        x.len(),
        s.input_len(),
        "maxpool_forward: `x` has {} elements, the PoolShape needs {}",
        x.len(),
        s.input_len()
    );
    let (oh, ow) = (s.out_h(), s.out_w());
    let mut y = Vec::with_capacity(s.output_len());
    for b in 0..s.n {
        for ch in 0..s.c {
            for oy in 0..oh {
                for ox in 0..ow {
                    y.push(x[argmax(s, x, b, ch, oy, ox)]);
                }
            }
        }
    }
    y
}

/// `dx[argmax(window)] += dy[window]`, from the forward input x (the argmax is recomputed).
///
/// x `[N,C,H,W]`, dy `[N,C,OH,OW]` → dx `[N,C,H,W]`.
pub fn maxpool_backward(s: &PoolShape, x: &[f32], dy: &[f32]) -> Vec<f32> {
    assert_eq!(
        x.len(),
        s.input_len(),
        "maxpool_backward: `x` has {} elements, the PoolShape needs {}",
        x.len(),
        s.input_len()
    );
    assert_eq!(
        dy.len(),
        s.output_len(),
        "maxpool_backward: `dy` has {} elements, the PoolShape needs {}",
        dy.len(),
        s.output_len()
    );
    let (oh, ow) = (s.out_h(), s.out_w());
    // f64 so a pixel shared by up to four windows sums exactly as the kernels' reference.
    let mut dx = vec![0.0f64; x.len()];
    let mut o = 0;
    for b in 0..s.n {
        for ch in 0..s.c {
            for oy in 0..oh {
                for ox in 0..ow {
                    dx[argmax(s, x, b, ch, oy, ox)] += dy[o] as f64;
                    o += 1;
                }
            }
        }
    }
    dx.into_iter().map(|v| v as f32).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reference::gradcheck::{grad_check, weighted_sum};
    use crate::reference::random_tensor;

    #[test]
    fn gradients_without_ties() {
        let s = PoolShape {
            n: 2,
            c: 3,
            h: 7,
            w: 9,
            k: 3,
            stride: 2,
        };
        // Distinct values at least 0.01 apart, in a scrambled order, so a ±1e-3 step never
        // changes which element is the maximum.
        let len = s.input_len();
        let x: Vec<f32> = (0..len)
            .map(|i| ((i * 37) % len) as f32 * 0.01 - 1.0)
            .collect();
        let r = random_tensor(2, s.output_len(), 1.0);
        let dx = maxpool_backward(&s, &x, &r);
        grad_check("maxpool.dx", &x, &dx, 1e-3, 1e-3, 1e-3, |p| {
            weighted_sum(&maxpool_forward(&s, p), &r)
        });
    }

    #[test]
    fn ties_go_to_the_first_maximum_and_overlaps_accumulate() {
        // One 3×5 plane, windows at columns 0..3 and 2..5 share column 2.
        let s = PoolShape {
            n: 1,
            c: 1,
            h: 3,
            w: 5,
            k: 3,
            stride: 2,
        };
        #[rustfmt::skip]
        let x = [
            0.0, 1.0, 9.0, 2.0, 0.0,
            9.0, 0.0, 0.0, 0.0, 1.0,
            0.0, 0.0, 3.0, 0.0, 0.0,
        ];
        assert_eq!(maxpool_forward(&s, &x), vec![9.0, 9.0]);
        let dx = maxpool_backward(&s, &x, &[1.5, 2.0]);
        // Both windows' first maximum in row-major order is x[0,2] (before x[1,0]).
        let mut want = [0.0f32; 15];
        want[2] = 3.5;
        assert_eq!(dx, want);
    }
}
