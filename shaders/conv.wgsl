// conv.wgsl: 2-D convolution (square kernel k, stride s, zero padding, channel groups) as an
// implicit GEMM: the im2col matrix is never stored, each tile load gathers from the image.
// Layouts: x [N,C_in,H,W], y [N,C_out,OH,OW], w [C_out, C_in/G, k, k], bias [C_out].
// Cig = C_in/G, Cog = C_out/G; group g = workgroup_id.z.
//
//   forward          y = w ⋆ x + bias      GEMM M = Cog, N = N·OH·OW, K = Cig·k·k
//   backward_input   dX = wᵀ ⋆ dY          GEMM M = Cig, N = N·H·W,   K = Cog·k·k
//   backward_weight  dW (+)= dY ⋆ x        GEMM M = Cog, N = Cig·k·k, K = N·OH·OW
//   backward_bias    db[c] (+)= Σ_{n,oh,ow} dY[n,c,oh,ow]
//
// Params, bindings and accumulate_store: conv_common.wgsl, prepended.
// Bindings: 0 `p` Params (uniform);
//   forward:         1 `mat_a` = w, 2 `mat_b` = x,  3 `out` = y (read_write), 4 `bias` read
//   backward_input:  1 `mat_a` = w, 2 `mat_b` = dY, 3 `out` = dX
//   backward_weight: 1 `mat_a` = dY, 2 `mat_b` = x, 3 `out` = dW
//   backward_bias:   1 `mat_a` = dY, 3 `out` = db
//   reduce_splits:   1 `mat_a` = partials, 3 `out` = dW (see the entry point)
// flags bit 1: accumulate into `out` (backward_input, backward_weight, backward_bias).
// splits: backward_weight's split-K factor (its K = N·OH·OW is long and its M×N is small, so
// one tile per output would leave a GPU idle). With splits > 1 it writes partial sums to
// `out` = a scratch [splits, C_out·Cig·k·k] and reduce_splits adds them into dW; its
// dispatch z is G·splits.
//
// GEMM entries: workgroup (WG_N, WG_M) threads, a (4·WG_M)×(4·WG_N) tile, 4×4 outputs per
// thread, K step TILE_K (override constants, defaults 16/16/16); dispatch
// (ceil(N_gemm / BN), ceil(M_gemm / BM), G). Every gather checks its image bounds and every
// store m < M, n < N. backward_bias: workgroup 256, dispatch (C_out, 1, 1).

override WG_M: u32 = 16u;
override WG_N: u32 = 16u;
override TILE_K: u32 = 16u;

const TM: u32 = 4u;
const TN: u32 = 4u;

const MODE_FORWARD: u32 = 0u;
const MODE_BACKWARD_INPUT: u32 = 1u;
const MODE_BACKWARD_WEIGHT: u32 = 2u;

// Rows of the shared tiles are padded by one float: the k-contiguous loads store with a row
// stride, and an unpadded stride of 64 floats would put a warp's stores in one memory bank.
var<workgroup> As: array<f32, (WG_M * 4u + 1u) * TILE_K>;
var<workgroup> Bs: array<f32, (WG_N * 4u + 1u) * TILE_K>;

struct Dims {
    m: u32,
    n: u32,
    k: u32,
}

fn gemm_dims(mode: u32) -> Dims {
    let cig = p.c_in / p.groups;
    let cog = p.c_out / p.groups;
    let kk = p.k * p.k;
    if mode == MODE_FORWARD {
        return Dims(cog, p.n * p.oh * p.ow, cig * kk);
    } else if mode == MODE_BACKWARD_INPUT {
        return Dims(cig, p.n * p.h * p.w, cog * kk);
    }
    return Dims(cog, cig * kk, p.n * p.oh * p.ow);
}

// op(A)[m, kk] for group g (caller checked m < M, kk < K).
fn load_a(mode: u32, g: u32, m: u32, kk: u32) -> f32 {
    let cig = p.c_in / p.groups;
    let cog = p.c_out / p.groups;
    let k2 = p.k * p.k;
    if mode == MODE_FORWARD {
        return mat_a[(g * cog + m) * cig * k2 + kk];
    } else if mode == MODE_BACKWARD_INPUT {
        // A[ci, (co, r)] = w[g·Cog + co, ci, r]
        let co = kk / k2;
        let r = kk % k2;
        return mat_a[((g * cog + co) * cig + m) * k2 + r];
    }
    // A[co, (b, q)] = dY[b, g·Cog + co, q]
    let ohw = p.oh * p.ow;
    let b = kk / ohw;
    let q = kk % ohw;
    return mat_a[(b * p.c_out + g * cog + m) * ohw + q];
}

// op(B)[kk, col] for group g (caller checked kk < K, col < N); zero outside the image.
fn load_b(mode: u32, g: u32, kk: u32, col: u32) -> f32 {
    let cig = p.c_in / p.groups;
    let cog = p.c_out / p.groups;
    let k2 = p.k * p.k;
    if mode == MODE_FORWARD {
        // B[(ci, kh, kw), (b, oy, ox)] = x[b, g·Cig + ci, oy·s + kh − pad, ox·s + kw − pad]
        let ci = kk / k2;
        let r = kk % k2;
        let kh = r / p.k;
        let kw = r % p.k;
        let ohw = p.oh * p.ow;
        let b = col / ohw;
        let q = col % ohw;
        let oy = q / p.ow;
        let ox = q % p.ow;
        let iy = i32(oy * p.stride + kh) - i32(p.pad);
        let ix = i32(ox * p.stride + kw) - i32(p.pad);
        if iy < 0 || ix < 0 || iy >= i32(p.h) || ix >= i32(p.w) {
            return 0.0;
        }
        return mat_b[((b * p.c_in + g * cig + ci) * p.h + u32(iy)) * p.w + u32(ix)];
    } else if mode == MODE_BACKWARD_INPUT {
        // B[(co, kh, kw), (b, iy, ix)] = dY[b, g·Cog + co, (iy + pad − kh)/s, (ix + pad − kw)/s]
        // where the division is exact and the output position exists.
        let co = kk / k2;
        let r = kk % k2;
        let kh = r / p.k;
        let kw = r % p.k;
        let hw = p.h * p.w;
        let b = col / hw;
        let q = col % hw;
        let iy = q / p.w;
        let ix = q % p.w;
        let ty = i32(iy + p.pad) - i32(kh);
        let tx = i32(ix + p.pad) - i32(kw);
        if ty < 0 || tx < 0 {
            return 0.0;
        }
        let uy = u32(ty);
        let ux = u32(tx);
        if uy % p.stride != 0u || ux % p.stride != 0u {
            return 0.0;
        }
        let oy = uy / p.stride;
        let ox = ux / p.stride;
        if oy >= p.oh || ox >= p.ow {
            return 0.0;
        }
        return mat_b[((b * p.c_out + g * cog + co) * p.oh + oy) * p.ow + ox];
    }
    // B[(b, oy, ox), (ci, kh, kw)] = x[b, g·Cig + ci, oy·s + kh − pad, ox·s + kw − pad]
    let ohw = p.oh * p.ow;
    let b = kk / ohw;
    let q = kk % ohw;
    let oy = q / p.ow;
    let ox = q % p.ow;
    let ci = col / k2;
    let r = col % k2;
    let kh = r / p.k;
    let kw = r % p.k;
    let iy = i32(oy * p.stride + kh) - i32(p.pad);
    let ix = i32(ox * p.stride + kw) - i32(p.pad);
    if iy < 0 || ix < 0 || iy >= i32(p.h) || ix >= i32(p.w) {
        return 0.0;
    }
    return mat_b[((b * p.c_in + g * cig + ci) * p.h + u32(iy)) * p.w + u32(ix)];
}

// The tile at (m0, n0) of group g; `mode` is a literal at every call.
fn conv_tile(mode: u32, g: u32, m0: u32, n0: u32, k_begin: u32, k_end: u32, tx: u32, ty: u32, lidx: u32) -> array<vec4<f32>, 4> {
    let d = gemm_dims(mode);
    let bm = WG_M * TM;
    let bn = WG_N * TN;
    let threads = WG_M * WG_N;
    var acc: array<vec4<f32>, 4>;
    for (var k0 = k_begin; k0 < k_end; k0 += TILE_K) {
        for (var e = lidx; e < bm * TILE_K; e += threads) {
            let kk = e % TILE_K;
            let mm = e / TILE_K;
            var v = 0.0;
            if m0 + mm < d.m && k0 + kk < k_end {
                v = load_a(mode, g, m0 + mm, k0 + kk);
            }
            As[kk * (bm + 1u) + mm] = v;
        }
        for (var e = lidx; e < bn * TILE_K; e += threads) {
            let nn = e % bn;
            let kk = e / bn;
            var v = 0.0;
            if n0 + nn < d.n && k0 + kk < k_end {
                v = load_b(mode, g, k0 + kk, n0 + nn);
            }
            Bs[kk * (bn + 1u) + nn] = v;
        }
        workgroupBarrier();
        for (var kk = 0u; kk < TILE_K; kk++) {
            let ai = kk * (bm + 1u) + ty * TM;
            let bi = kk * (bn + 1u) + tx * TN;
            let av = vec4<f32>(As[ai], As[ai + 1u], As[ai + 2u], As[ai + 3u]);
            let bv = vec4<f32>(Bs[bi], Bs[bi + 1u], Bs[bi + 2u], Bs[bi + 3u]);
            acc[0] += av.x * bv;
            acc[1] += av.y * bv;
            acc[2] += av.z * bv;
            acc[3] += av.w * bv;
        }
        workgroupBarrier();
    }
    return acc;
}

@compute @workgroup_size(WG_N, WG_M)
fn forward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>, @builtin(local_invocation_index) lidx: u32) {
    let g = wid.z;
    let m0 = wid.y * WG_M * TM;
    let n0 = wid.x * WG_N * TN;
    let d = gemm_dims(MODE_FORWARD);
    let acc = conv_tile(MODE_FORWARD, g, m0, n0, 0u, d.k, lid.x, lid.y, lidx);
    let cog = p.c_out / p.groups;
    let ohw = p.oh * p.ow;
    for (var i = 0u; i < TM; i++) {
        let m = m0 + lid.y * TM + i;
        if m >= d.m {
            break;
        }
        let co = g * cog + m;
        let bv = bias[co];
        for (var j = 0u; j < TN; j++) {
            let col = n0 + lid.x * TN + j;
            if col < d.n {
                let b = col / ohw;
                let q = col % ohw;
                out[(b * p.c_out + co) * ohw + q] = acc[i][j] + bv;
            }
        }
    }
}

@compute @workgroup_size(WG_N, WG_M)
fn backward_input(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>, @builtin(local_invocation_index) lidx: u32) {
    let g = wid.z;
    let m0 = wid.y * WG_M * TM;
    let n0 = wid.x * WG_N * TN;
    let d = gemm_dims(MODE_BACKWARD_INPUT);
    let acc = conv_tile(MODE_BACKWARD_INPUT, g, m0, n0, 0u, d.k, lid.x, lid.y, lidx);
    let cig = p.c_in / p.groups;
    let hw = p.h * p.w;
    for (var i = 0u; i < TM; i++) {
        let m = m0 + lid.y * TM + i;
        if m >= d.m {
            break;
        }
        for (var j = 0u; j < TN; j++) {
            let col = n0 + lid.x * TN + j;
            if col < d.n {
                let b = col / hw;
                let q = col % hw;
                accumulate_store((b * p.c_in + g * cig + m) * hw + q, acc[i][j]);
            }
        }
    }
}

@compute @workgroup_size(WG_N, WG_M)
fn backward_weight(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>, @builtin(local_invocation_index) lidx: u32) {
    // z = g·splits + split: split-K over N·OH·OW, which is long while Cog × Cig·k·k is small.
    let g = wid.z / p.splits;
    let split = wid.z % p.splits;
    let m0 = wid.y * WG_M * TM;
    let n0 = wid.x * WG_N * TN;
    let d = gemm_dims(MODE_BACKWARD_WEIGHT);
    // Split length rounded to TILE_K so splits start on tile boundaries.
    let per = ((d.k + p.splits - 1u) / p.splits + TILE_K - 1u) / TILE_K * TILE_K;
    let k_begin = min(split * per, d.k);
    let k_end = min(k_begin + per, d.k);
    let acc = conv_tile(MODE_BACKWARD_WEIGHT, g, m0, n0, k_begin, k_end, lid.x, lid.y, lidx);
    let cog = p.c_out / p.groups;
    let weight_len = p.c_out * d.n;
    for (var i = 0u; i < TM; i++) {
        let m = m0 + lid.y * TM + i;
        if m >= d.m {
            break;
        }
        for (var j = 0u; j < TN; j++) {
            let col = n0 + lid.x * TN + j;
            if col < d.n {
                let idx = (g * cog + m) * d.n + col;
                if p.splits == 1u {
                    accumulate_store(idx, acc[i][j]);
                } else {
                    // Partial sums [splits, C_out, Cig·k·k], summed by reduce_splits.
                    out[split * weight_len + idx] = acc[i][j];
                }
            }
        }
    }
}

// dW (+)= Σ_split partial[split]: binding 1 `mat_a` = partials [splits, weight_len] read,
// binding 3 `out` = dW read_write. Workgroup 256, one invocation per weight, dispatch
// ceil(weight_len / 256) spread over x and y.
@compute @workgroup_size(256)
fn reduce_splits(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lidx: u32) {
    let i = (wid.y * nwg.x + wid.x) * 256u + lidx;
    let weight_len = p.c_out * (p.c_in / p.groups) * p.k * p.k;
    if i >= weight_len {
        return;
    }
    var s = 0.0;
    for (var split = 0u; split < p.splits; split++) {
        s += mat_a[split * weight_len + i];
    }
    accumulate_store(i, s);
}

var<workgroup> partial: array<f32, 256>;

@compute @workgroup_size(256)
fn backward_bias(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lidx: u32) {
    let c = wid.x;
    let ohw = p.oh * p.ow;
    let total = p.n * ohw;
    var s = 0.0;
    for (var i = lidx; i < total; i += 256u) {
        let b = i / ohw;
        let q = i % ohw;
        s += mat_a[(b * p.c_out + c) * ohw + q];
    }
    partial[lidx] = s;
    workgroupBarrier();
    for (var stride = 128u; stride > 0u; stride >>= 1u) {
        if lidx < stride {
            partial[lidx] += partial[lidx + stride];
        }
        workgroupBarrier();
    }
    if lidx == 0u && c < p.c_out {
        accumulate_store(c, partial[0]);
    }
}
