//! Convolution forward and backward through im2col and [`super::gemm`].
//!
//! The batch is cut into one contiguous range of images per worker; a worker walks its range in
//! chunks of a few images, unrolls each chunk's input patches into its own `col` buffer
//! (`[Cin/g·K·K, images·OH·OW]` per group) and multiplies. Chunks gather several small images
//! into one product so the quickstart's 3×3 maps still give the GEMM a few hundred columns;
//! large maps (the paper's conv1: 3025 positions) go one image at a time and the product writes
//! straight into the output. Backward-weight sums into one partial gradient per worker, then
//! the partials are added in worker order, so a result depends on the worker count but not on
//! scheduling (resumed runs on one machine repeat bit for bit).
//!
//! Dims: N batch, C channels, H,W input, OH,OW output, P = OH·OW, g groups, Kd = Cin/g·K·K.
use super::gemm::{gemm, Mnk, Operand};
use super::views::{Back, WeightGrads, Weights};
use super::{act_backward_in_place, apply_act};
use crate::shape::{Activation, ConvShape};
use rayon::prelude::*;

/// Columns a chunk aims for: below a few hundred the product's packing overhead dominates.
const TARGET_COLUMNS: usize = 256;
/// Largest `col` buffer a chunk may fill, in floats (4 MiB): larger ones leave the L2 cache.
const MAX_COL: usize = 1 << 20;

/// How one convolution is cut into work.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConvPlan {
    /// Images per worker range (the last range may be shorter).
    pub per_worker: usize,
    /// Images per chunk within a range.
    pub per_chunk: usize,
    /// Rows of the unrolled input: `Cin/g·K·K`.
    pub kd: usize,
    /// Output positions per image: `OH·OW`.
    pub positions: usize,
}

impl ConvPlan {
    /// The plan of `s` over `workers` workers.
    pub fn new(s: &ConvShape, workers: usize) -> ConvPlan {
        let kd = s.c_in / s.groups * s.k * s.k;
        let positions = s.out_h() * s.out_w();
        let per_worker = s.n.div_ceil(workers.max(1)).max(1);
        let by_columns = TARGET_COLUMNS.div_ceil(positions.max(1));
        let by_memory = (MAX_COL / (kd * positions).max(1)).max(1);
        ConvPlan {
            per_worker,
            per_chunk: by_columns.min(by_memory).clamp(1, per_worker),
            kd,
            positions,
        }
    }

    /// Columns of the largest chunk.
    pub fn chunk_columns(&self) -> usize {
        self.per_chunk * self.positions
    }
}

/// One worker's buffers, sized once for the largest layer ([`ConvScratch::fit`]).
#[derive(Clone, Debug, Default)]
pub struct ConvScratch {
    /// Unrolled input `[Kd, columns]`.
    col: Vec<f32>,
    /// Gradient of the unrolled input `[Kd, columns]`.
    dcol: Vec<f32>,
    /// A chunk's output or output gradient gathered per group `[Cout/g, columns]`.
    gathered: Vec<f32>,
    /// This worker's partial weight gradient `[Cout, Cin/g, K, K]`.
    dw: Vec<f32>,
    /// This worker's partial bias gradient `[Cout]`.
    db: Vec<f32>,
}

impl ConvScratch {
    /// Grows the buffers to hold `s` run as `plan` (never shrinks them).
    pub fn fit(&mut self, s: &ConvShape, plan: &ConvPlan) {
        let cols = plan.chunk_columns();
        let grow = |v: &mut Vec<f32>, len: usize| {
            if v.len() < len {
                v.resize(len, 0.0);
            }
        };
        grow(&mut self.col, plan.kd * cols);
        grow(&mut self.dcol, plan.kd * cols);
        grow(&mut self.gathered, s.c_out / s.groups * cols);
        grow(&mut self.dw, s.weight_len());
        grow(&mut self.db, s.c_out);
    }
}

/// Unrolls images `img0..img0+count` of `x` `[N,Cin,H,W]`, group `g`, into `col`
/// `[Kd, count·P]`: row (ci, ky, kx), column (image, oy, ox), zeros where the window hangs
/// over the padding.
fn im2col(s: &ConvShape, x: &[f32], img0: usize, count: usize, g: usize, col: &mut [f32]) {
    let (oh, ow) = (s.out_h(), s.out_w());
    let p = oh * ow;
    let cols = count * p;
    let cg = s.c_in / s.groups;
    let plane = s.h * s.w;
    for ci in 0..cg {
        for ky in 0..s.k {
            for kx in 0..s.k {
                let row = &mut col[((ci * s.k + ky) * s.k + kx) * cols..][..cols];
                let (lo, hi) = valid_range(kx, s.pad, s.stride, s.w, ow);
                for img in 0..count {
                    let src = &x[((img0 + img) * s.c_in + g * cg + ci) * plane..][..plane];
                    for oy in 0..oh {
                        let dst = &mut row[img * p + oy * ow..][..ow];
                        let iy = (oy * s.stride + ky) as isize - s.pad as isize;
                        if iy < 0 || iy >= s.h as isize || lo >= hi {
                            dst.fill(0.0);
                            continue;
                        }
                        let line = &src[iy as usize * s.w..][..s.w];
                        dst[..lo].fill(0.0);
                        dst[hi..].fill(0.0);
                        let ix0 = lo * s.stride + kx - s.pad;
                        if s.stride == 1 {
                            dst[lo..hi].copy_from_slice(&line[ix0..ix0 + hi - lo]);
                        } else {
                            for (d, ix) in dst[lo..hi].iter_mut().zip((ix0..).step_by(s.stride)) {
                                *d = line[ix];
                            }
                        }
                    }
                }
            }
        }
    }
}

/// Adds `dcol` `[Kd, count·P]` back onto images `img0..img0+count` of `dx` (`dx` holds exactly
/// those images), group `g`: the transpose of [`im2col`].
fn col2im(s: &ConvShape, dcol: &[f32], count: usize, g: usize, dx: &mut [f32]) {
    let (oh, ow) = (s.out_h(), s.out_w());
    let p = oh * ow;
    let cols = count * p;
    let cg = s.c_in / s.groups;
    let plane = s.h * s.w;
    for ci in 0..cg {
        for ky in 0..s.k {
            for kx in 0..s.k {
                let row = &dcol[((ci * s.k + ky) * s.k + kx) * cols..][..cols];
                let (lo, hi) = valid_range(kx, s.pad, s.stride, s.w, ow);
                if lo >= hi {
                    continue;
                }
                let ix0 = lo * s.stride + kx - s.pad;
                for img in 0..count {
                    let dst = &mut dx[(img * s.c_in + g * cg + ci) * plane..][..plane];
                    for oy in 0..oh {
                        let iy = (oy * s.stride + ky) as isize - s.pad as isize;
                        if iy < 0 || iy >= s.h as isize {
                            continue;
                        }
                        let src = &row[img * p + oy * ow..][lo..hi];
                        let line = &mut dst[iy as usize * s.w..][..s.w];
                        if s.stride == 1 {
                            for (d, v) in line[ix0..ix0 + hi - lo].iter_mut().zip(src) {
                                *d += v;
                            }
                        } else {
                            for (v, ix) in src.iter().zip((ix0..).step_by(s.stride)) {
                                line[ix] += v;
                            }
                        }
                    }
                }
            }
        }
    }
}

/// Output columns `lo..hi` whose input column `ox·stride + kx − pad` lies inside `0..w`.
fn valid_range(kx: usize, pad: usize, stride: usize, w: usize, ow: usize) -> (usize, usize) {
    // First ox with ox·stride + kx ≥ pad; last with ox·stride + kx − pad ≤ w − 1.
    let lo = pad.saturating_sub(kx).div_ceil(stride);
    let hi = if w + pad > kx {
        ((w + pad - kx - 1) / stride + 1).min(ow)
    } else {
        0
    };
    (lo.min(ow), hi)
}

/// `y = act(w ⋆ x + b)`. x `[N,Cin,H,W]`, `p.w` `[Cout,Cin/g,K,K]`, `p.b` `[Cout]` → y
/// `[N,Cout,OH,OW]`.
/// `scratch` holds one entry per worker, each fitted to `s` ([`ConvScratch::fit`]).
pub fn conv_forward(
    s: &ConvShape,
    plan: &ConvPlan,
    act: Activation,
    x: &[f32],
    p: Weights<'_>,
    y: &mut [f32],
    scratch: &mut [ConvScratch],
) {
    let Weights { w, b } = p;
    let p = plan.positions;
    let out_img = s.c_out * p;
    let cgo = s.c_out / s.groups;
    let kd = plan.kd;
    y.par_chunks_mut(plan.per_worker * out_img)
        .zip(scratch.par_iter_mut())
        .enumerate()
        .for_each(|(wi, (yw, sc))| {
            let first = wi * plan.per_worker;
            let count = yw.len() / out_img;
            for c0 in (0..count).step_by(plan.per_chunk) {
                let nimg = plan.per_chunk.min(count - c0);
                let cols = nimg * p;
                for g in 0..s.groups {
                    let col = &mut sc.col[..kd * cols];
                    im2col(s, x, first + c0, nimg, g, col);
                    let wg = Operand::n(&w[g * cgo * kd..][..cgo * kd]);
                    let bias = &b[g * cgo..][..cgo];
                    if nimg == 1 {
                        let dst = &mut yw[(c0 * s.c_out + g * cgo) * p..][..cgo * p];
                        gemm(Mnk::new(cgo, p, kd), wg, Operand::n(col), 0.0, dst, 1);
                        for (row, &bv) in dst.chunks_exact_mut(p).zip(bias) {
                            for v in row.iter_mut() {
                                *v += bv;
                            }
                            apply_act(act, row);
                        }
                    } else {
                        let tmp = &mut sc.gathered[..cgo * cols];
                        gemm(Mnk::new(cgo, cols, kd), wg, Operand::n(col), 0.0, tmp, 1);
                        for (co, (src, &bv)) in tmp.chunks_exact(cols).zip(bias).enumerate() {
                            for img in 0..nimg {
                                let dst = &mut yw[((c0 + img) * s.c_out + g * cgo + co) * p..][..p];
                                for (d, v) in dst.iter_mut().zip(&src[img * p..][..p]) {
                                    *d = v + bv;
                                }
                                apply_act(act, dst);
                            }
                        }
                    }
                }
            }
        });
}

/// The gradients of [`conv_forward`]: `t.dy` `[N,Cout,OH,OW]` arrives as the gradient of the
/// activation's output and leaves as that of its input (act' from `t.y`, in place). Writes
/// `g.dw` `[Cout,Cin/g,K,K]` and `g.db` `[Cout]` (overwritten, not accumulated) and, when
/// given, `t.dx` `[N,Cin,H,W]`; `w` is the forward's weight.
pub fn conv_backward(
    s: &ConvShape,
    plan: &ConvPlan,
    act: Activation,
    t: Back<'_>,
    w: &[f32],
    g: WeightGrads<'_>,
    scratch: &mut [ConvScratch],
) {
    let Back { x, y, dy, dx } = t;
    let WeightGrads { dw, db } = g;
    act_backward_in_place(act, dy, y);
    let read = Read { dy, x, w };
    let in_img = s.c_in * s.h * s.w;
    let workers = s.n.div_ceil(plan.per_worker);
    match dx {
        Some(dx) => dx
            .par_chunks_mut(plan.per_worker * in_img)
            .zip(scratch.par_iter_mut())
            .enumerate()
            .for_each(|(wi, (dxw, sc))| backward_range(s, plan, wi, read, Some(dxw), sc)),
        None => scratch[..workers]
            .par_iter_mut()
            .enumerate()
            .for_each(|(wi, sc)| backward_range(s, plan, wi, read, None, sc)),
    }
    // The partials in worker order: the same sum whatever the scheduling.
    let parts = &scratch[..workers];
    dw.par_chunks_mut(4096).enumerate().for_each(|(i, out)| {
        let at = i * 4096;
        out.copy_from_slice(&parts[0].dw[at..at + out.len()]);
        for part in &parts[1..] {
            for (o, v) in out.iter_mut().zip(&part.dw[at..]) {
                *o += v;
            }
        }
    });
    db.copy_from_slice(&parts[0].db[..s.c_out]);
    for part in &parts[1..] {
        for (o, v) in db.iter_mut().zip(&part.db) {
            *o += v;
        }
    }
}

/// What every worker of [`conv_backward`] reads: the pre-activation's gradient
/// `[N,Cout,OH,OW]`, the forward's input and weight.
#[derive(Clone, Copy)]
struct Read<'a> {
    dy: &'a [f32],
    x: &'a [f32],
    w: &'a [f32],
}

/// Worker `wi`'s share of [`conv_backward`]: its images' contribution to `sc.dw`/`sc.db`, and
/// their input gradient in `dx` (which holds exactly those images).
fn backward_range(
    s: &ConvShape,
    plan: &ConvPlan,
    wi: usize,
    read: Read<'_>,
    mut dx: Option<&mut [f32]>,
    sc: &mut ConvScratch,
) {
    let Read { dy, x, w } = read;
    let p = plan.positions;
    let kd = plan.kd;
    let cgo = s.c_out / s.groups;
    let in_img = s.c_in * s.h * s.w;
    let first = wi * plan.per_worker;
    let count = plan.per_worker.min(s.n - first);
    sc.dw[..s.weight_len()].fill(0.0);
    sc.db[..s.c_out].fill(0.0);
    for c0 in (0..count).step_by(plan.per_chunk) {
        let nimg = plan.per_chunk.min(count - c0);
        let cols = nimg * p;
        if let Some(dx) = dx.as_deref_mut() {
            dx[c0 * in_img..(c0 + nimg) * in_img].fill(0.0);
        }
        for g in 0..s.groups {
            let dyg: &[f32] = if nimg == 1 {
                &dy[((first + c0) * s.c_out + g * cgo) * p..][..cgo * p]
            } else {
                let buf = &mut sc.gathered[..cgo * cols];
                for (co, row) in buf.chunks_exact_mut(cols).enumerate() {
                    for img in 0..nimg {
                        let src = &dy[((first + c0 + img) * s.c_out + g * cgo + co) * p..][..p];
                        row[img * p..][..p].copy_from_slice(src);
                    }
                }
                &sc.gathered[..cgo * cols]
            };
            for (d, row) in sc.db[g * cgo..][..cgo]
                .iter_mut()
                .zip(dyg.chunks_exact(cols))
            {
                *d += row.iter().sum::<f32>();
            }
            let col = &mut sc.col[..kd * cols];
            im2col(s, x, first + c0, nimg, g, col);
            let dwg = &mut sc.dw[g * cgo * kd..][..cgo * kd];
            gemm(
                Mnk::new(cgo, kd, cols),
                Operand::n(dyg),
                Operand::t(col),
                1.0,
                dwg,
                1,
            );
            if let Some(dx) = dx.as_deref_mut() {
                let wg = Operand::t(&w[g * cgo * kd..][..cgo * kd]);
                let dcol = &mut sc.dcol[..kd * cols];
                gemm(Mnk::new(kd, cols, cgo), wg, Operand::n(dyg), 0.0, dcol, 1);
                col2im(s, dcol, nimg, g, &mut dx[c0 * in_img..(c0 + nimg) * in_img]);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_range_matches_a_scan() {
        for (k, pad, stride, w) in [
            (11, 0, 4, 67),
            (5, 2, 1, 7),
            (3, 1, 1, 3),
            (3, 1, 2, 4),
            (5, 2, 3, 2),
        ] {
            let ow = (w + 2 * pad - k) / stride + 1;
            for kx in 0..k {
                let inside: Vec<usize> = (0..ow)
                    .filter(|&ox| {
                        let ix = (ox * stride + kx) as isize - pad as isize;
                        ix >= 0 && ix < w as isize
                    })
                    .collect();
                let (lo, hi) = valid_range(kx, pad, stride, w, ow);
                let got: Vec<usize> = (lo..hi).collect();
                assert_eq!(got, inside, "k{k} pad{pad} s{stride} w{w} kx{kx}");
            }
        }
    }

    #[test]
    fn plans_gather_small_maps_and_split_large_ones() {
        let s = |n, c_in, h, c_out, k, stride, pad, groups| ConvShape {
            n,
            c_in,
            h,
            w: h,
            c_out,
            k,
            stride,
            pad,
            groups,
        };
        // The quickstart's conv3: 3×3 maps, 64 images over 2 workers.
        let p = ConvPlan::new(&s(64, 64, 3, 96, 3, 1, 1, 1), 2);
        assert_eq!((p.per_worker, p.per_chunk, p.positions), (32, 29, 9));
        // The paper's conv1: one image a chunk.
        let p = ConvPlan::new(&s(16, 3, 227, 96, 11, 4, 0, 1), 2);
        assert_eq!((p.per_worker, p.per_chunk, p.kd), (8, 1, 363));
        // More workers than images: one image each.
        let p = ConvPlan::new(&s(3, 4, 5, 6, 3, 1, 1, 2), 8);
        assert_eq!((p.per_worker, p.per_chunk), (1, 1));
    }
}
