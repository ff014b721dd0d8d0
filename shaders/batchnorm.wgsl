// batchnorm.wgsl: batch normalisation per channel, PyTorch's BatchNorm2d
// (src/reference/batchnorm.rs has the formulas the tests hold this to):
//   training:   μ, σ² (biased) over channel c's M = N·H·W values, x̂ = (x − μ)·s, s = 1/√(σ² + ε),
//               y = γ·x̂ + β; running ← (1 − m)·running + m·batch (the variance's unbiased, σ²·M/(M − 1))
//   evaluation: the same with the running mean and variance, which stay as they are
// backward:     dβ = Σ dy, dγ = Σ dy·x̂; training dx = γ·s/M·(M·dy − Σ dy − x̂·Σ dy·x̂),
//               evaluation dx = γ·s·dy.
//
// Why several passes: one workgroup per channel (the first kernel) left a large GPU idle and
// made each workgroup walk the whole batch (conv1 at batch 128: 96 workgroups of 387,200
// values each). Here a channel's M values are cut into `slices` runs of `per` consecutive
// values (image-major, then position), and workgroup (channel, slice) reduces one run; a small
// pass merges the slices of each channel; the element-wise pass then covers all values with
// every workgroup busy. src/gpu/batchnorm.rs picks the slices (about four workgroups per
// target workgroup of the GPU) and records the passes:
//
//   forward, training:   stats (C, slices) → merge (⌈C/256⌉) → normalise (⌈len/2048⌉)
//   forward, evaluation: eval_stats (⌈C/256⌉) → normalise
//   backward:            grad_stats (C, slices) → grad_merge (⌈C/256⌉) [→ grad_input (⌈len/2048⌉)]
//
// Variance without cancellation: f32 Σx² − M·μ² loses everything when the mean is large
// against the spread (μ = 1000, σ = 0.01: Σx² ≈ 4e11 where the answer is 39 at M = 387,200).
// Each invocation instead sums d = x − x₀ and d² about its own first value x₀ (a value of the
// same channel, so |μ − x₀| is of the order of σ and d is exact by Sterbenz's lemma when x is
// near x₀), turns them into a count, mean and M2 = Σ(x − mean)² with one division, and the
// counts, means and M2s are merged in a tree, then across slices, with Chan et al.'s formula:
//   n = na + nb, δ = μb − μa, μ = μa + δ·nb/n, M2 = M2a + M2b + δ²·na·nb/n.
// The means travel as offsets from the channel's first value K (image 0, position 0), which
// are of the order of σ: carried as themselves, each of the ~20 merges would round μ to the
// f32 grid at |μ| (6e-5 at 1000), and the errors would add up; as offsets only the final
// K + offset rounds once.
//
// No division per value: each invocation finds its first value's (image, position) with one
// division and then steps 256 values at a time with a carry (the step's parts come from the
// host in Params: a plane crossing adds `wrap_i`), as conv_sums.wgsl's bias gradient does.
// The element-wise passes step the flat index and carry the channel the same way.
//
// Bindings (each entry uses only its own names; a binding number has one meaning per entry):
//   stats        1 x, 8 part (partials [2, slices, C]: means − K, then M2s)
//   merge        1 x (for K), 4 running_mean, 5 running_var, 7 saved_out ([2, C]: μ then s), 8 part
//   eval_stats   4 running_mean, 5 running_var, 7 saved_out
//   normalise    1 x, 2 gamma, 3 beta, 6 y, 7 saved_out
//   grad_stats   1 x, 2 dy, 4 saved_in, 8 part (partials [2, slices, C]: Σdy then Σdy·x̂)
//   grad_merge   5 dgamma, 6 dbeta, 8 part
//   grad_input   1 x, 2 dy, 3 gamma_b, 4 saved_in, 5 dgamma, 6 dbeta, 7 dx (dγ, dβ are the sums)

struct Params {
    n: u32,
    c: u32,
    hw: u32,
    train: u32,
    eps: f32,
    momentum: f32,
    // Slices per channel and values per slice (the last may hold fewer).
    slices: u32,
    per: u32,
    // A step of 256 values: 256 % hw positions, and in flat indices of a channel's walk
    // (256 / hw)·C·hw + 256 % hw; a plane crossing adds (C − 1)·hw more.
    step_q: u32,
    step_i: u32,
    wrap_i: u32,
    // (256 / hw) % C: channels a flat step of 256 moves on before a plane crossing's carry.
    step_c: u32,
}

@group(0) @binding(0) var<uniform> p: Params;

@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> gamma: array<f32>;
@group(0) @binding(3) var<storage, read> beta: array<f32>;
@group(0) @binding(4) var<storage, read_write> running_mean: array<f32>;
@group(0) @binding(5) var<storage, read_write> running_var: array<f32>;
@group(0) @binding(6) var<storage, read_write> y: array<f32>;
@group(0) @binding(7) var<storage, read_write> saved_out: array<f32>;
@group(0) @binding(8) var<storage, read_write> part: array<f32>;

@group(0) @binding(2) var<storage, read> dy: array<f32>;
@group(0) @binding(3) var<storage, read> gamma_b: array<f32>;
@group(0) @binding(4) var<storage, read> saved_in: array<f32>;
@group(0) @binding(5) var<storage, read_write> dgamma: array<f32>;
@group(0) @binding(6) var<storage, read_write> dbeta: array<f32>;
@group(0) @binding(7) var<storage, read_write> dx: array<f32>;

// Values per invocation of the element-wise passes (2,048 a workgroup).
const PER_THREAD: u32 = 8u;

var<workgroup> red: array<vec3<f32>, 256>;

// An invocation's walk over its values of one channel's slice: flat index i, position q in
// the plane, index k in the channel's M values, and the slice's end.
struct Walk {
    i: u32,
    q: u32,
    k: u32,
    end: u32,
}

fn walk_start(ch: u32, slice: u32, lid: u32) -> Walk {
    let k = slice * p.per + lid;
    // The one division of the walk.
    let b = k / p.hw;
    let q = k - b * p.hw;
    let end = min(slice * p.per + p.per, p.n * p.hw);
    return Walk((b * p.c + ch) * p.hw + q, q, k, end);
}

fn walk_next(w: ptr<function, Walk>) {
    (*w).k += 256u;
    (*w).q += p.step_q;
    (*w).i += p.step_i;
    if (*w).q >= p.hw {
        (*w).q -= p.hw;
        (*w).i += p.wrap_i;
    }
}

// Chan et al.'s merge of (count, mean, M2) pairs; an empty side leaves the other as it is.
fn chan(a: vec3<f32>, b: vec3<f32>) -> vec3<f32> {
    if b.x == 0.0 {
        return a;
    }
    if a.x == 0.0 {
        return b;
    }
    let n = a.x + b.x;
    let d = b.y - a.y;
    let f = b.x / n;
    return vec3<f32>(n, a.y + d * f, a.z + b.z + d * d * a.x * f);
}

// Values of slice `slice` of a channel.
fn slice_count(slice: u32) -> f32 {
    return f32(min(p.per, p.n * p.hw - slice * p.per));
}

@compute @workgroup_size(256)
fn stats(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let ch = wid.x;
    let slice = wid.y;
    var w = walk_start(ch, slice, lid);
    var x0 = 0.0;
    if w.k < w.end {
        x0 = x[w.i];
    }
    var cnt = 0.0;
    var s1 = 0.0;
    var s2 = 0.0;
    while w.k < w.end {
        let d = x[w.i] - x0;
        s1 += d;
        s2 += d * d;
        cnt += 1.0;
        walk_next(&w);
    }
    var mine = vec3<f32>(0.0);
    if cnt > 0.0 {
        let dm = s1 / cnt;
        // Σ(d − dm)² = Σd² − dm·Σd; rounding may take it a hair below 0.
        mine = vec3<f32>(cnt, (x0 - x[ch * p.hw]) + dm, max(s2 - dm * s1, 0.0));
    }
    red[lid] = mine;
    workgroupBarrier();
    for (var s = 128u; s > 0u; s >>= 1u) {
        if lid < s {
            red[lid] = chan(red[lid], red[lid + s]);
        }
        workgroupBarrier();
    }
    if lid == 0u {
        part[slice * p.c + ch] = red[0].y;
        part[(p.slices + slice) * p.c + ch] = red[0].z;
    }
}

@compute @workgroup_size(256)
fn merge(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let ch = wid.x * 256u + lid;
    if ch >= p.c {
        return;
    }
    var acc = vec3<f32>(0.0);
    for (var slice = 0u; slice < p.slices; slice++) {
        let b = vec3<f32>(slice_count(slice), part[slice * p.c + ch], part[(p.slices + slice) * p.c + ch]);
        acc = chan(acc, b);
    }
    let m = f32(p.n * p.hw);
    let var_b = acc.z / m;
    // One value per channel has no unbiased variance: keep the biased one (M2 is 0 then).
    let unbiased = acc.z / f32(max(p.n * p.hw, 2u) - 1u);
    let mean = x[ch * p.hw] + acc.y;
    running_mean[ch] = (1.0 - p.momentum) * running_mean[ch] + p.momentum * mean;
    running_var[ch] = (1.0 - p.momentum) * running_var[ch] + p.momentum * unbiased;
    saved_out[ch] = mean;
    saved_out[p.c + ch] = 1.0 / sqrt(var_b + p.eps);
}

@compute @workgroup_size(256)
fn eval_stats(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let ch = wid.x * 256u + lid;
    if ch >= p.c {
        return;
    }
    saved_out[ch] = running_mean[ch];
    saved_out[p.c + ch] = 1.0 / sqrt(running_var[ch] + p.eps);
}

// An invocation's walk over the flat values of an element-wise pass: its first flat index and
// that value's position and channel.
struct Flat {
    i: u32,
    q: u32,
    c: u32,
}

fn flat_start(wid: vec3<u32>, nwg: vec3<u32>, lid: u32) -> Flat {
    let i = (wid.y * nwg.x + wid.x) * (256u * PER_THREAD) + lid;
    // The pass's divisions: two per invocation, none per value.
    let plane = i / p.hw;
    return Flat(i, i - plane * p.hw, plane % p.c);
}

fn flat_next(f: ptr<function, Flat>) {
    (*f).i += 256u;
    (*f).q += p.step_q;
    (*f).c += p.step_c;
    if (*f).q >= p.hw {
        (*f).q -= p.hw;
        (*f).c += 1u;
    }
    // step_c < C and the carry adds one, so one subtraction brings c back below C.
    if (*f).c >= p.c {
        (*f).c -= p.c;
    }
}

@compute @workgroup_size(256)
fn normalise(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let len = p.n * p.c * p.hw;
    var f = flat_start(wid, nwg, lid);
    for (var j = 0u; j < PER_THREAD; j++) {
        if f.i >= len {
            break;
        }
        let ch = f.c;
        // (x − μ) first: x·scale + (β − μ·scale) would cancel when μ is large against σ.
        y[f.i] = (x[f.i] - saved_out[ch]) * (gamma[ch] * saved_out[p.c + ch]) + beta[ch];
        flat_next(&f);
    }
}

@compute @workgroup_size(256)
fn grad_stats(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let ch = wid.x;
    let slice = wid.y;
    let mean = saved_in[ch];
    var w = walk_start(ch, slice, lid);
    var sd = 0.0;
    var sdx = 0.0;
    while w.k < w.end {
        let g = dy[w.i];
        sd += g;
        sdx += g * (x[w.i] - mean);
        walk_next(&w);
    }
    red[lid] = vec3<f32>(sd, sdx, 0.0);
    workgroupBarrier();
    for (var s = 128u; s > 0u; s >>= 1u) {
        if lid < s {
            red[lid] += red[lid + s];
        }
        workgroupBarrier();
    }
    if lid == 0u {
        part[slice * p.c + ch] = red[0].x;
        // Σ dy·x̂ = s·Σ dy·(x − μ): the scale once per slice, not per value.
        part[(p.slices + slice) * p.c + ch] = red[0].y * saved_in[p.c + ch];
    }
}

@compute @workgroup_size(256)
fn grad_merge(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let ch = wid.x * 256u + lid;
    if ch >= p.c {
        return;
    }
    var sd = 0.0;
    var sdx = 0.0;
    for (var slice = 0u; slice < p.slices; slice++) {
        sd += part[slice * p.c + ch];
        sdx += part[(p.slices + slice) * p.c + ch];
    }
    dbeta[ch] = sd;
    dgamma[ch] = sdx;
}

@compute @workgroup_size(256)
fn grad_input(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let len = p.n * p.c * p.hw;
    let inv_m = 1.0 / f32(p.n * p.hw);
    var f = flat_start(wid, nwg, lid);
    for (var j = 0u; j < PER_THREAD; j++) {
        if f.i >= len {
            break;
        }
        let ch = f.c;
        let inv = saved_in[p.c + ch];
        let g = gamma_b[ch] * inv;
        if p.train == 1u {
            let xh = (x[f.i] - saved_in[ch]) * inv;
            dx[f.i] = g * (dy[f.i] - dbeta[ch] * inv_m - xh * (dgamma[ch] * inv_m));
        } else {
            dx[f.i] = g * dy[f.i];
        }
        flat_next(&f);
    }
}
