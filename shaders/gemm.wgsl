// gemm.wgsl: f32 GEMM, C[M,N] = act(alpha·op(A)·op(B) (+ bias[N]) (+ C)), all matrices
// row-major with leading dimensions lda/ldb/ldc and element offsets into their bindings (the
// launcher binds windows of tensors larger than one binding). The tile loop is the generated
// core of src/gpu/tiles.rs; this file gives it the operands and the epilogue.
//
// The three products of a fully connected layer, one GEMM entry each:
//   forward          C = A·Bᵀ (+ bias, act): y[M=batch, N=out] = x[M,K=in] · W[N,K]ᵀ + b
//   backward_input   C = A·B:               dX[M,N=in] = dY[M,K=out] · W[K,N]
//   backward_weight  C = Aᵀ·B:              dW[M=out,N=in] = dY[K=batch,M]ᵀ · X[K,N]
// and two plain entries:
//   reduce           C = epilogue(Σ_s partial[s])  (split-K; see below)
//   backward_bias    c[N] (+)= Σ_m A[m, n]         (bias gradient: column sums of dY)
//
// Bindings: 0 `p` Params (uniform); 1 `a` read (reduce: the partials); 2 `b` read (GEMM
// entries); 3 `c` read_write; 4 `bias` [N] read (forward and reduce; read when flags bit 0).
// flags: bit 0 add bias, bit 1 accumulate (C += result instead of C = result).
// act: 0 none, 1 ReLU, 2 tanh, applied last (the forward's fused activation).
//
// Split-K: with splits > 1 the GEMM entries cover K in `splits` slices of `per` (a multiple
// of the tile's K step), one per workgroup_id.z, and write raw products to `c` = a scratch
// [splits, M, N]; `reduce` (workgroup 256, one invocation per element of C, dispatch
// ceil(M·N / 256) over x and y) sums them and applies alpha, bias, accumulation and act.
// Without splits the GEMM entries apply that epilogue themselves. Every load is guarded by
// m < M, n < N, k < K and every store by m < M, n < N.

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
    splits: u32,
    per: u32,
    act: u32,
    _pad: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> a: array<f32>;
@group(0) @binding(2) var<storage, read> b: array<f32>;
@group(0) @binding(3) var<storage, read_write> c: array<f32>;
@group(0) @binding(4) var<storage, read> bias: array<f32>;

// A row or column that does not exist: its loads give 0.
const NONE: u32 = 0xffffffffu;

fn gemm_part(z: u32) -> Part {
    let begin = min(z * p.per, p.k);
    return Part(0u, z, begin, min(begin + p.per, p.k));
}

// op(A) = A [M,K] (forward, backward_input): row m starts at a_off + m·lda.
fn a_rows(m: u32) -> u32 {
    return select(NONE, p.a_off + m * p.lda, m < p.m);
}
fn a_rows_at(t: Part, r: u32, k: u32) -> f32 {
    if r == NONE || k >= t.k_end {
        return 0.0;
    }
    return a[r + k];
}
// op(B) = B [K,N] (backward_input, backward_weight): column n starts at b_off + n.
fn b_cols(n: u32) -> u32 {
    return select(NONE, p.b_off + n, n < p.n);
}
fn b_cols_at(t: Part, c0: u32, k: u32) -> f32 {
    if c0 == NONE || k >= t.k_end {
        return 0.0;
    }
    return b[c0 + k * p.ldb];
}

fn activate(x: f32) -> f32 {
    if p.act == 1u {
        // Not max(x, 0): a NaN must survive the ReLU (WGSL leaves max of a NaN undefined).
        return select(x, 0.0, x < 0.0);
    } else if p.act == 2u {
        return tanh(x);
    }
    return x;
}

// C[m, n] from the product `v` (unscaled), or its split-K partial.
fn store1(t: Part, m: u32, n: u32, v: f32) {
    if n >= p.n {
        return;
    }
    if p.splits > 1u {
        c[(t.split * p.m + m) * p.n + n] = v;
        return;
    }
    let idx = p.c_off + m * p.ldc + n;
    var y = p.alpha * v;
    if (p.flags & 1u) != 0u {
        y += bias[p.bias_off + n];
    }
    if (p.flags & 2u) != 0u {
        y += c[idx];
    }
    c[idx] = activate(y);
}

fn store4(t: Part, m: u32, n: u32, v: vec4<f32>) {
    if m >= p.m {
        return;
    }
    store1(t, m, n, v.x);
    store1(t, m, n + 1u, v.y);
    store1(t, m, n + 2u, v.z);
    store1(t, m, n + 3u, v.w);
}

// forward: C = A·Bᵀ, B = W [N,K] (k contiguous).
fn fwd_part(z: u32) -> Part {
    return gemm_part(z);
}
fn fwd_a_row(t: Part, m: u32) -> u32 {
    return a_rows(m);
}
fn fwd_a_at(t: Part, r: u32, k: u32) -> f32 {
    return a_rows_at(t, r, k);
}
fn fwd_b_col(t: Part, n: u32) -> u32 {
    return select(NONE, p.b_off + n * p.ldb, n < p.n);
}
fn fwd_b_at(t: Part, c0: u32, k: u32) -> f32 {
    if c0 == NONE || k >= t.k_end {
        return 0.0;
    }
    return b[c0 + k];
}
fn fwd_store4(t: Part, m: u32, n: u32, v: vec4<f32>) {
    store4(t, m, n, v);
}

// backward_input: C = A·B.
fn bwi_part(z: u32) -> Part {
    return gemm_part(z);
}
fn bwi_a_row(t: Part, m: u32) -> u32 {
    return a_rows(m);
}
fn bwi_a_at(t: Part, r: u32, k: u32) -> f32 {
    return a_rows_at(t, r, k);
}
fn bwi_b_col(t: Part, n: u32) -> u32 {
    return b_cols(n);
}
fn bwi_b_at(t: Part, c0: u32, k: u32) -> f32 {
    return b_cols_at(t, c0, k);
}
fn bwi_store4(t: Part, m: u32, n: u32, v: vec4<f32>) {
    store4(t, m, n, v);
}

// backward_weight: C = Aᵀ·B, A stored [K,M] (m contiguous): op(A)[m, k] = a[a_off + k·lda + m].
fn bww_part(z: u32) -> Part {
    return gemm_part(z);
}
fn bww_a_row(t: Part, m: u32) -> u32 {
    return select(NONE, p.a_off + m, m < p.m);
}
fn bww_a_at(t: Part, r: u32, k: u32) -> f32 {
    if r == NONE || k >= t.k_end {
        return 0.0;
    }
    return a[r + k * p.lda];
}
fn bww_b_col(t: Part, n: u32) -> u32 {
    return b_cols(n);
}
fn bww_b_at(t: Part, c0: u32, k: u32) -> f32 {
    return b_cols_at(t, c0, k);
}
fn bww_store4(t: Part, m: u32, n: u32, v: vec4<f32>) {
    store4(t, m, n, v);
}

@compute @workgroup_size(256)
fn reduce(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lidx: u32) {
    let i = (wid.y * nwg.x + wid.x) * 256u + lidx;
    if i >= p.m * p.n {
        return;
    }
    var s = 0.0;
    for (var split = 0u; split < p.splits; split++) {
        s += a[split * p.m * p.n + i];
    }
    let m = i / p.n;
    let n = i % p.n;
    let idx = p.c_off + m * p.ldc + n;
    var y = p.alpha * s;
    if (p.flags & 1u) != 0u {
        y += bias[p.bias_off + n];
    }
    if (p.flags & 2u) != 0u {
        y += c[idx];
    }
    c[idx] = activate(y);
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
