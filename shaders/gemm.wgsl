// gemm.wgsl: tiled f32 GEMM, C[M,N] = alpha·op(A)·op(B) (+ bias[N]) (+ C if accumulating),
// all matrices row-major with leading dimensions lda/ldb/ldc and element offsets into their
// bindings (the launcher binds windows of tensors larger than one binding).
//
// The three entry points are the fully connected layer's three products:
//   forward          C = A·Bᵀ (+ bias): y[M=batch, N=out] = x[M,K=in] · W[N,K]ᵀ + b
//   backward_input   C = A·B:           dX[M,N=in] = dY[M,K=out] · W[K,N]
//   backward_weight  C = Aᵀ·B:          dW[M=out,N=in] = dY[K=batch,M]ᵀ · X[K,N]
//   backward_bias    c[N] (+)= Σ_m A[m, n]   (bias gradient: column sums of dY)
//
// Bindings: 0 `p` Params (uniform); 1 `a` read; 2 `b` read (not backward_bias);
//           3 `c` read_write; 4 `bias` [N] read (forward only; used when flags bit 0).
// flags: bit 0 add bias, bit 1 accumulate (C += result instead of C = result).
//
// Tiling: a workgroup of WG_N×WG_M threads computes a BM×BN tile (BM = 4·WG_M, BN = 4·WG_N)
// with 4×4 outputs per thread in registers, stepping K by TILE_K through workgroup-shared
// tiles. WG_M, WG_N, TILE_K are override constants (defaults 16, 16, 16: 64×64 tiles).
// Dispatch: (ceil(N / BN), ceil(M / BM), 1). backward_bias: workgroup 256, dispatch
// (ceil(N / 256), 1, 1). Every load and store is guarded by m < M, n < N, k < K.

struct Params {
    m: u32,
    n: u32,
    k: u32,
    flags: u32,
    a_off: u32,
    b_off: u32,
    c_off: u32,
    bias_off: u32,
    lda: u32,
    ldb: u32,
    ldc: u32,
    alpha: f32,
}

override WG_M: u32 = 16u;
override WG_N: u32 = 16u;
override TILE_K: u32 = 16u;

const TM: u32 = 4u;
const TN: u32 = 4u;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> a: array<f32>;
@group(0) @binding(2) var<storage, read> b: array<f32>;
@group(0) @binding(3) var<storage, read_write> c: array<f32>;
@group(0) @binding(4) var<storage, read> bias: array<f32>;

// As[kk * (BM + 1) + mm] = op(A)[m0 + mm, k0 + kk]; Bs[kk * (BN + 1) + nn] = op(B)[k0 + kk, n0 + nn].
// Rows of the shared tiles are padded by one float: the k-contiguous loads store with a row
// stride, and an unpadded stride of 64 floats would put a warp's stores in one memory bank.
var<workgroup> As: array<f32, (WG_M * 4u + 1u) * TILE_K>;
var<workgroup> Bs: array<f32, (WG_N * 4u + 1u) * TILE_K>;

// The BM×BN tile at (m0, n0), returned as 4 rows of 4 columns per thread. `ta`/`tb` are
// literals at every call, so the branches fold away after inlining.
fn gemm_tile(ta: bool, tb: bool, m0: u32, n0: u32, tx: u32, ty: u32, lidx: u32) -> array<vec4<f32>, 4> {
    let bm = WG_M * TM;
    let bn = WG_N * TN;
    let threads = WG_M * WG_N;
    var acc: array<vec4<f32>, 4>;
    for (var k0 = 0u; k0 < p.k; k0 += TILE_K) {
        // Consecutive threads read consecutive addresses of whichever index is contiguous.
        for (var e = lidx; e < bm * TILE_K; e += threads) {
            var mm: u32;
            var kk: u32;
            if ta {
                mm = e % bm;
                kk = e / bm;
            } else {
                kk = e % TILE_K;
                mm = e / TILE_K;
            }
            let gm = m0 + mm;
            let gk = k0 + kk;
            var v = 0.0;
            if gm < p.m && gk < p.k {
                if ta {
                    v = a[p.a_off + gk * p.lda + gm];
                } else {
                    v = a[p.a_off + gm * p.lda + gk];
                }
            }
            As[kk * (bm + 1u) + mm] = v;
        }
        for (var e = lidx; e < bn * TILE_K; e += threads) {
            var nn: u32;
            var kk: u32;
            if tb {
                kk = e % TILE_K;
                nn = e / TILE_K;
            } else {
                nn = e % bn;
                kk = e / bn;
            }
            let gn = n0 + nn;
            let gk = k0 + kk;
            var v = 0.0;
            if gn < p.n && gk < p.k {
                if tb {
                    v = b[p.b_off + gn * p.ldb + gk];
                } else {
                    v = b[p.b_off + gk * p.ldb + gn];
                }
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

fn store(gm: u32, gn: u32, v: f32) {
    let idx = p.c_off + gm * p.ldc + gn;
    var out = v;
    if (p.flags & 2u) != 0u {
        out += c[idx];
    }
    c[idx] = out;
}

@compute @workgroup_size(WG_N, WG_M)
fn forward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>, @builtin(local_invocation_index) lidx: u32) {
    let m0 = wid.y * WG_M * TM;
    let n0 = wid.x * WG_N * TN;
    let acc = gemm_tile(false, true, m0, n0, lid.x, lid.y, lidx);
    for (var i = 0u; i < TM; i++) {
        let gm = m0 + lid.y * TM + i;
        for (var j = 0u; j < TN; j++) {
            let gn = n0 + lid.x * TN + j;
            if gm < p.m && gn < p.n {
                var v = p.alpha * acc[i][j];
                if (p.flags & 1u) != 0u {
                    v += bias[p.bias_off + gn];
                }
                store(gm, gn, v);
            }
        }
    }
}

@compute @workgroup_size(WG_N, WG_M)
fn backward_input(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>, @builtin(local_invocation_index) lidx: u32) {
    let m0 = wid.y * WG_M * TM;
    let n0 = wid.x * WG_N * TN;
    let acc = gemm_tile(false, false, m0, n0, lid.x, lid.y, lidx);
    for (var i = 0u; i < TM; i++) {
        let gm = m0 + lid.y * TM + i;
        for (var j = 0u; j < TN; j++) {
            let gn = n0 + lid.x * TN + j;
            if gm < p.m && gn < p.n {
                store(gm, gn, p.alpha * acc[i][j]);
            }
        }
    }
}

@compute @workgroup_size(WG_N, WG_M)
fn backward_weight(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>, @builtin(local_invocation_index) lidx: u32) {
    let m0 = wid.y * WG_M * TM;
    let n0 = wid.x * WG_N * TN;
    let acc = gemm_tile(true, false, m0, n0, lid.x, lid.y, lidx);
    for (var i = 0u; i < TM; i++) {
        let gm = m0 + lid.y * TM + i;
        for (var j = 0u; j < TN; j++) {
            let gn = n0 + lid.x * TN + j;
            if gm < p.m && gn < p.n {
                store(gm, gn, p.alpha * acc[i][j]);
            }
        }
    }
}

// One invocation per column n: consecutive invocations read consecutive addresses of a row.
@compute @workgroup_size(256)
fn backward_bias(@builtin(global_invocation_id) gid: vec3<u32>) {
    let n = gid.x;
    if n >= p.n {
        return;
    }
    var s = 0.0;
    for (var m = 0u; m < p.m; m++) {
        s += a[p.a_off + m * p.lda + n];
    }
    let idx = p.c_off + n;
    if (p.flags & 2u) != 0u {
        s += c[idx];
    }
    c[idx] = s;
}
