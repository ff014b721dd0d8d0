//! 2-D convolution with groups, stride and zero padding: forward, gradient to the input,
//! gradient to the weights and bias. Plain loops over the output, accumulated in f64 so the
//! result is a trustworthy reference for the WGSL kernels whatever their summation order.
//!
//! Dims: N batch, Cin/Cout channels (all groups), H,W input, OH,OW output, K kernel,
//! G groups, Cig = Cin/G and Cog = Cout/G channels per group.
use crate::shape::ConvShape;

/// Checks that the slices have the lengths `s` implies; a mismatch is a bug in the caller.
fn check_len(op: &str, tensor: &str, got: usize, want: usize) {
    assert_eq!(
        got, want,
        "{op}: `{tensor}` has {got} elements, the ConvShape needs {want}"
    );
}

/// Input coordinate of output row/col `o`, kernel offset `k`, or `None` inside the padding.
fn input_coord(s: &ConvShape, o: usize, k: usize, size: usize) -> Option<usize> {
    let i = (o * s.stride + k) as isize - s.pad as isize;
    (i >= 0 && (i as usize) < size).then_some(i as usize)
}

/// `y = conv(x, w) + b`.
///
/// x `[N,Cin,H,W]`, w `[Cout,Cin/G,K,K]`, b `[Cout]` → y `[N,Cout,OH,OW]`.
pub fn conv2d_forward(s: &ConvShape, x: &[f32], w: &[f32], b: &[f32]) -> Vec<f32> {
    check_len("conv2d_forward", "x", x.len(), s.input_len());
    check_len("conv2d_forward", "w", w.len(), s.weight_len());
    check_len("conv2d_forward", "b", b.len(), s.c_out);
    let (oh, ow) = (s.out_h(), s.out_w());
    let (cig, cog) = (s.c_in / s.groups, s.c_out / s.groups);
    let mut y = vec![0.0f32; s.output_len()];
    for n in 0..s.n {
        for co in 0..s.c_out {
            let g = co / cog;
            for oy in 0..oh {
                for ox in 0..ow {
                    let mut acc = b[co] as f64;
                    for ci in 0..cig {
                        let cin = g * cig + ci;
                        for ky in 0..s.k {
                            let Some(iy) = input_coord(s, oy, ky, s.h) else {
                                continue;
                            };
                            for kx in 0..s.k {
                                let Some(ix) = input_coord(s, ox, kx, s.w) else {
                                    continue;
                                };
                                let xv = x[((n * s.c_in + cin) * s.h + iy) * s.w + ix];
                                let wv = w[((co * cig + ci) * s.k + ky) * s.k + kx];
                                acc += xv as f64 * wv as f64;
                            }
                        }
                    }
                    y[((n * s.c_out + co) * oh + oy) * ow + ox] = acc as f32;
                }
            }
        }
    }
    y
}

/// Gradient of the loss to the input: every output element scatters `dy · w` back onto the
/// input pixels its window read (windows overlap when stride < K, so this accumulates).
///
/// dy `[N,Cout,OH,OW]`, w `[Cout,Cin/G,K,K]` → dx `[N,Cin,H,W]`.
pub fn conv2d_backward_input(s: &ConvShape, dy: &[f32], w: &[f32]) -> Vec<f32> {
    check_len("conv2d_backward_input", "dy", dy.len(), s.output_len());
    check_len("conv2d_backward_input", "w", w.len(), s.weight_len());
    let (oh, ow) = (s.out_h(), s.out_w());
    let (cig, cog) = (s.c_in / s.groups, s.c_out / s.groups);
    let mut dx = vec![0.0f64; s.input_len()];
    for n in 0..s.n {
        for co in 0..s.c_out {
            let g = co / cog;
            for oy in 0..oh {
                for ox in 0..ow {
                    let d = dy[((n * s.c_out + co) * oh + oy) * ow + ox] as f64;
                    for ci in 0..cig {
                        let cin = g * cig + ci;
                        for ky in 0..s.k {
                            let Some(iy) = input_coord(s, oy, ky, s.h) else {
                                continue;
                            };
                            for kx in 0..s.k {
                                let Some(ix) = input_coord(s, ox, kx, s.w) else {
                                    continue;
                                };
                                let wv = w[((co * cig + ci) * s.k + ky) * s.k + kx] as f64;
                                dx[((n * s.c_in + cin) * s.h + iy) * s.w + ix] += d * wv;
                            }
                        }
                    }
                }
            }
        }
    }
    dx.into_iter().map(|v| v as f32).collect()
}

/// Gradients of the loss to the weights (`dw = Σ dy · x` over batch and output pixels) and to
/// the bias (`db = Σ dy`). Both are overwritten, not accumulated.
///
/// dy `[N,Cout,OH,OW]`, x `[N,Cin,H,W]` → (dw `[Cout,Cin/G,K,K]`, db `[Cout]`).
pub fn conv2d_backward_weight(s: &ConvShape, dy: &[f32], x: &[f32]) -> (Vec<f32>, Vec<f32>) {
    check_len("conv2d_backward_weight", "dy", dy.len(), s.output_len());
    check_len("conv2d_backward_weight", "x", x.len(), s.input_len());
    let (oh, ow) = (s.out_h(), s.out_w());
    let (cig, cog) = (s.c_in / s.groups, s.c_out / s.groups);
    let mut dw = vec![0.0f64; s.weight_len()];
    let mut db = vec![0.0f64; s.c_out];
    for n in 0..s.n {
        for co in 0..s.c_out {
            let g = co / cog;
            for oy in 0..oh {
                for ox in 0..ow {
                    let d = dy[((n * s.c_out + co) * oh + oy) * ow + ox] as f64;
                    db[co] += d;
                    for ci in 0..cig {
                        let cin = g * cig + ci;
                        for ky in 0..s.k {
                            let Some(iy) = input_coord(s, oy, ky, s.h) else {
                                continue;
                            };
                            for kx in 0..s.k {
                                let Some(ix) = input_coord(s, ox, kx, s.w) else {
                                    continue;
                                };
                                let xv = x[((n * s.c_in + cin) * s.h + iy) * s.w + ix] as f64;
                                dw[((co * cig + ci) * s.k + ky) * s.k + kx] += d * xv;
                            }
                        }
                    }
                }
            }
        }
    }
    (
        dw.into_iter().map(|v| v as f32).collect(),
        db.into_iter().map(|v| v as f32).collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reference::gradcheck::{grad_check, weighted_sum};
    use crate::reference::random_tensor;

    fn shape(stride: usize, pad: usize, groups: usize, k: usize) -> ConvShape {
        ConvShape {
            n: 2,
            c_in: 4,
            h: 9,
            w: 8,
            c_out: 6,
            k,
            stride,
            pad,
            groups,
        }
    }

    /// Checks all three gradients of one shape against central differences of `Σ r·y`.
    fn check_shape(s: ConvShape) {
        let x = random_tensor(1, s.input_len(), 1.0);
        let w = random_tensor(2, s.weight_len(), 0.5);
        let b = random_tensor(3, s.c_out, 0.5);
        let r = random_tensor(4, s.output_len(), 1.0);
        let dx = conv2d_backward_input(&s, &r, &w);
        let (dw, db) = conv2d_backward_weight(&s, &r, &x);
        // The op is linear in each argument, so a large step has no truncation error.
        let eps = 0.25;
        grad_check("conv.dx", &x, &dx, eps, 1e-4, 1e-4, |xp| {
            weighted_sum(&conv2d_forward(&s, xp, &w, &b), &r)
        });
        grad_check("conv.dw", &w, &dw, eps, 1e-4, 1e-4, |wp| {
            weighted_sum(&conv2d_forward(&s, &x, wp, &b), &r)
        });
        grad_check("conv.db", &b, &db, eps, 1e-4, 1e-4, |bp| {
            weighted_sum(&conv2d_forward(&s, &x, &w, bp), &r)
        });
    }

    #[test]
    fn gradients_stride1_pad_groups2() {
        check_shape(shape(1, 1, 2, 3));
    }

    #[test]
    fn gradients_stride4_no_pad() {
        check_shape(ConvShape {
            h: 15,
            w: 15,
            ..shape(4, 0, 1, 5)
        });
    }

    #[test]
    fn gradients_stride2_pad2_groups2() {
        check_shape(shape(2, 2, 2, 5));
    }

    #[test]
    fn forward_matches_a_hand_computed_value() {
        // 1 channel 3×3 input 1..9, kernel [[1,2],[3,4]], stride 1, no padding:
        // y[0,0] = 1·1 + 2·2 + 4·3 + 5·4 = 37, and each step right adds 10, each step down 30.
        let s = ConvShape {
            n: 1,
            c_in: 1,
            h: 3,
            w: 3,
            c_out: 1,
            k: 2,
            stride: 1,
            pad: 0,
            groups: 1,
        };
        let x: Vec<f32> = (1..=9).map(|v| v as f32).collect();
        let y = conv2d_forward(&s, &x, &[1.0, 2.0, 3.0, 4.0], &[0.5]);
        assert_eq!(y, vec![37.5, 47.5, 67.5, 77.5]);
    }

    #[test]
    fn groups_do_not_mix_channels() {
        // With 2 groups, output channel 0 must not depend on input channels of group 1.
        let s = ConvShape {
            n: 1,
            c_in: 4,
            h: 5,
            w: 5,
            c_out: 2,
            k: 3,
            stride: 1,
            pad: 1,
            groups: 2,
        };
        let mut x = random_tensor(5, s.input_len(), 1.0);
        let w = random_tensor(6, s.weight_len(), 1.0);
        let b = [0.1, -0.2];
        let y0 = conv2d_forward(&s, &x, &w, &b);
        for v in &mut x[2 * 25..] {
            *v += 3.0;
        }
        let y1 = conv2d_forward(&s, &x, &w, &b);
        assert_eq!(y0[..25], y1[..25]);
        assert_ne!(y0[25..], y1[25..]);
    }
}
