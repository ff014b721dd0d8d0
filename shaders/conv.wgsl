// conv.wgsl: 2-D convolution (square kernel, stride, zero padding, channel groups) as an
// implicit GEMM on the generated tile core of src/gpu/tiles.rs: the im2col matrix is never
// stored, each tile load gathers from the image. This file gives the core its operands and
// epilogues; Params, bindings, accumulate_store and activate come from conv_common.wgsl.
// Layouts: x [N,C_in,H,W], y [N,C_out,OH,OW], w [C_out, C_in/G, k, k], bias [C_out].
// Cig = C_in/G, Cog = C_out/G; group g = workgroup_id.z (backward_weight: z = g·splits + split).
//
//   forward          y = act(w ⋆ x + bias)  GEMM M = Cog, N = N·OH·OW, K = Cig·k·k   (prefix cf)
//   backward_input   dX (+)= wᵀ ⋆ dY        GEMM M = Cig, N = N·H·W,   K = Cog·k·k   (prefix ci)
//   backward_weight  dW (+)= dY ⋆ x         GEMM M = Cog, N = Cig·k·k, K = N·OH·OW   (prefix cw)
//
// Bindings (conv_common.wgsl): 1 `mat_a`, 2 `mat_b`, 3 `out`, 4 `bias`:
//   forward:         mat_a = w, mat_b = x,  out = y, bias
//   backward_input:  mat_a = w, mat_b = dY, out = dX
//   backward_weight: mat_a = dY, mat_b = x, out = dW, or the partials [splits, C_out·Cig·k·k]
//                    that conv_sums.wgsl's reduce_splits adds into dW when splits > 1
// and 5 `tab`: the entry's offset table (below), made once per shape by src/gpu/conv.rs
// (`offset_table`, which must agree with this file) and kept.
// Params used: flags bit 1 (accumulate: backward_input, backward_weight), act (forward),
// splits and per (backward_weight's split-K: K slices of `per`, a multiple of the K step).
//
// The layer's shape is in override constants, so each layer has its own pipeline. A thread
// decomposes its output column (image, row, column) once per tile slot; the reduction index k
// of a K step, (channel, kh, kw) or (image, oy, ox), is not divided out in the K loop but read
// from `tab[k]`, which holds what the gathers need of it: the K loop has no integer division
// (dividing per gathered element cost 4–6 multiply-shift sequences). Every gather checks the
// image bounds and every store m < M, n < N.
// Dispatch: (ceil(N_gemm / BN), ceil(M_gemm / BM), G) and G·splits for backward_weight.

override CN: u32 = 1u;
override CI: u32 = 1u;
override CH: u32 = 1u;
override CW: u32 = 1u;
override CO: u32 = 1u;
override KS: u32 = 1u;
override CS: u32 = 1u;
override CP: u32 = 0u;
override CG: u32 = 1u;
override COH: u32 = 1u;
override COW: u32 = 1u;

override CIG: u32 = CI / CG;
override COG: u32 = CO / CG;
override KK: u32 = KS * KS;
override HW: u32 = CH * CW;
override OHW: u32 = COH * COW;

// A row or column that does not exist: its loads give 0.
const NONE: u32 = 0xffffffffu;

// Per reduction index k of the entry's K (forward Cig·k·k, backward_input Cog·k·k,
// backward_weight N·OH·OW), what does not depend on the output position:
//   forward          (0, ci·H·W, kh, kw)                     for k = (ci, kh, kw)
//   backward_input   (co·Cig·k·k + kh·k + kw, co·OH·OW,       for k = (co, kh, kw)
//                     kh/s | (kh%s) << 16, kw/s | (kw%s) << 16)
//   backward_weight  (b·C_out·OH·OW + oy·OW + ox, b·C_in·H·W, oy·s, ox·s)   for k = (b, oy, ox)
@group(0) @binding(5) var<storage, read> tab: array<vec4<u32>>;

// Where an output position's receptive field starts: the image's first element for group g,
// and the top-left input coordinate (may be negative: padding).
struct Field {
    base: u32,
    iy: i32,
    ix: i32,
}

// ---- forward: A = w [Cog, Cig·k·k] (k contiguous), B = im2col of x.

fn cf_part(z: u32) -> Part {
    return Part(z, 0u, 0u, CIG * KK);
}
fn cf_a_row(t: Part, m: u32) -> u32 {
    return select(NONE, (t.g * COG + m) * CIG * KK, m < COG);
}
fn cf_a_at(t: Part, r: u32, k: u32) -> f32 {
    if r == NONE || k >= t.k_end {
        return 0.0;
    }
    return mat_a[r + k];
}
fn cf_b_col(t: Part, n: u32) -> Field {
    if n >= CN * OHW {
        return Field(NONE, 0, 0);
    }
    let b = n / OHW;
    let q = n % OHW;
    let oy = q / COW;
    let ox = q % COW;
    return Field((b * CI + t.g * CIG) * HW, i32(oy * CS) - i32(CP), i32(ox * CS) - i32(CP));
}
fn cf_b_at(t: Part, f: Field, k: u32) -> f32 {
    if f.base == NONE || k >= t.k_end {
        return 0.0;
    }
    let e = tab[k];
    // Negative coordinates wrap to large unsigned ones, so one comparison checks both sides.
    let iy = u32(f.iy + i32(e.z));
    let ix = u32(f.ix + i32(e.w));
    if iy >= CH || ix >= CW {
        return 0.0;
    }
    return mat_b[f.base + e.y + iy * CW + ix];
}
fn cf_store1(co: u32, n: u32, v: f32) {
    if n < CN * OHW {
        out[((n / OHW) * CO + co) * OHW + n % OHW] = activate(v + bias[co]);
    }
}
fn cf_store4(t: Part, m: u32, n: u32, v: vec4<f32>) {
    if m >= COG {
        return;
    }
    let co = t.g * COG + m;
    cf_store1(co, n, v.x);
    cf_store1(co, n + 1u, v.y);
    cf_store1(co, n + 2u, v.z);
    cf_store1(co, n + 3u, v.w);
}

// ---- backward_input: A[ci, (co, r)] = w[g·Cog + co, ci, r], B[(co, kh, kw), (b, iy, ix)] =
// dY[b, g·Cog + co, (iy + pad − kh)/s, (ix + pad − kw)/s] where the division is exact and the
// output position exists. With iy + pad = a·s + ra (once per column) and kh = c·s + rc (from
// the table), the division is exact when ra = rc, and its quotient is a − c.

// A column of backward_input: the image's first element of the group's dY channels, and
// iy + pad, ix + pad as quotient and remainder by the stride.
struct FieldI {
    base: u32,
    yq: i32,
    yr: u32,
    xq: i32,
    xr: u32,
}

fn ci_part(z: u32) -> Part {
    return Part(z, 0u, 0u, COG * KK);
}
fn ci_a_row(t: Part, m: u32) -> u32 {
    return select(NONE, (t.g * COG * CIG + m) * KK, m < CIG);
}
fn ci_a_at(t: Part, r: u32, k: u32) -> f32 {
    if r == NONE || k >= t.k_end {
        return 0.0;
    }
    return mat_a[r + tab[k].x];
}
fn ci_b_col(t: Part, n: u32) -> FieldI {
    if n >= CN * HW {
        return FieldI(NONE, 0, 0u, 0, 0u);
    }
    let b = n / HW;
    let q = n % HW;
    let y = q / CW + CP;
    let x = q % CW + CP;
    return FieldI((b * CO + t.g * COG) * OHW, i32(y / CS), y % CS, i32(x / CS), x % CS);
}
fn ci_b_at(t: Part, f: FieldI, k: u32) -> f32 {
    if f.base == NONE || k >= t.k_end {
        return 0.0;
    }
    let e = tab[k];
    if f.yr != (e.z >> 16u) || f.xr != (e.w >> 16u) {
        return 0.0;
    }
    // A negative quotient wraps to a large unsigned one, so one comparison checks both sides.
    let oy = u32(f.yq - i32(e.z & 0xffffu));
    let ox = u32(f.xq - i32(e.w & 0xffffu));
    if oy >= COH || ox >= COW {
        return 0.0;
    }
    return mat_b[f.base + e.y + oy * COW + ox];
}
fn ci_store1(t: Part, m: u32, n: u32, v: f32) {
    if n < CN * HW {
        accumulate_store(((n / HW) * CI + t.g * CIG + m) * HW + n % HW, v);
    }
}
fn ci_store4(t: Part, m: u32, n: u32, v: vec4<f32>) {
    if m >= CIG {
        return;
    }
    ci_store1(t, m, n, v.x);
    ci_store1(t, m, n + 1u, v.y);
    ci_store1(t, m, n + 2u, v.z);
    ci_store1(t, m, n + 3u, v.w);
}

// ---- backward_weight: A[co, (b, q)] = dY[b, g·Cog + co, q] (k contiguous), B[(b, oy, ox),
// (ci, kh, kw)] = x[b, g·Cig + ci, oy·s + kh − pad, ox·s + kw − pad] (k contiguous too:
// neighbouring threads read neighbouring output positions of one weight).

fn cw_part(z: u32) -> Part {
    let split = z % p.splits;
    let begin = min(split * p.per, CN * OHW);
    return Part(z / p.splits, split, begin, min(begin + p.per, CN * OHW));
}
fn cw_a_row(t: Part, m: u32) -> u32 {
    return select(NONE, (t.g * COG + m) * OHW, m < COG);
}
fn cw_a_at(t: Part, r: u32, k: u32) -> f32 {
    if r == NONE || k >= t.k_end {
        return 0.0;
    }
    return mat_a[r + tab[k].x];
}
fn cw_b_col(t: Part, n: u32) -> Field {
    if n >= CIG * KK {
        return Field(NONE, 0, 0);
    }
    let r = n % KK;
    return Field((t.g * CIG + n / KK) * HW, i32(r / KS) - i32(CP), i32(r % KS) - i32(CP));
}
fn cw_b_at(t: Part, f: Field, k: u32) -> f32 {
    if f.base == NONE || k >= t.k_end {
        return 0.0;
    }
    let e = tab[k];
    let iy = u32(i32(e.z) + f.iy);
    let ix = u32(i32(e.w) + f.ix);
    if iy >= CH || ix >= CW {
        return 0.0;
    }
    return mat_b[f.base + e.y + iy * CW + ix];
}
fn cw_store1(t: Part, m: u32, n: u32, v: f32) {
    if n >= CIG * KK {
        return;
    }
    let idx = (t.g * COG + m) * CIG * KK + n;
    if p.splits == 1u {
        accumulate_store(idx, v);
    } else {
        out[t.split * CO * CIG * KK + idx] = v;
    }
}
fn cw_store4(t: Part, m: u32, n: u32, v: vec4<f32>) {
    if m >= COG {
        return;
    }
    cw_store1(t, m, n, v.x);
    cw_store1(t, m, n + 1u, v.y);
    cw_store1(t, m, n + 2u, v.z);
    cw_store1(t, m, n + 3u, v.w);
}

// ---- backward_weight_bias: backward_weight with the bias gradient as one more column of its
// product (prefix cb). db[co] = Σ_k dY[co, k] is A times a column of ones, so column
// Cig·k·k of B gives 1.0 at every k and that column of C is db: it comes out of the tiles the
// weight gradient runs anyway, without a second read of dY (src/gpu/conv.rs uses it only
// where the column fits in the last column tile's spare columns, `folds_bias`).
// Bindings: backward_weight's, and 6 `out_db` = db (written when splits = 1). With split-K,
// each split's row of partials in `out` is C_out·Cig·k·k weights then C_out biases, which
// conv_sums.wgsl's reduce_splits_bias adds into dW and db.

// The column of ones, as a Field no image position has.
const ONES: u32 = 0xfffffffeu;

fn cb_part(z: u32) -> Part {
    return cw_part(z);
}
fn cb_a_row(t: Part, m: u32) -> u32 {
    return cw_a_row(t, m);
}
fn cb_a_at(t: Part, r: u32, k: u32) -> f32 {
    return cw_a_at(t, r, k);
}
fn cb_b_col(t: Part, n: u32) -> Field {
    if n == CIG * KK {
        return Field(ONES, 0, 0);
    }
    return cw_b_col(t, n);
}
fn cb_b_at(t: Part, f: Field, k: u32) -> f32 {
    if f.base == ONES {
        return select(0.0, 1.0, k < t.k_end);
    }
    return cw_b_at(t, f, k);
}
fn cb_store1(t: Part, m: u32, n: u32, v: f32) {
    let wl = CO * CIG * KK;
    if n < CIG * KK {
        let idx = (t.g * COG + m) * CIG * KK + n;
        if p.splits == 1u {
            accumulate_store(idx, v);
        } else {
            out[t.split * (wl + CO) + idx] = v;
        }
    } else if n == CIG * KK {
        let co = t.g * COG + m;
        if p.splits == 1u {
            accumulate_db(co, v);
        } else {
            out[t.split * (wl + CO) + wl + co] = v;
        }
    }
}
fn cb_store4(t: Part, m: u32, n: u32, v: vec4<f32>) {
    if m >= COG {
        return;
    }
    cb_store1(t, m, n, v.x);
    cb_store1(t, m, n + 1u, v.y);
    cb_store1(t, m, n + 2u, v.z);
    cb_store1(t, m, n + 3u, v.w);
}
