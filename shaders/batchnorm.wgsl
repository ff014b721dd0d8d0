// batchnorm.wgsl: batch normalisation per channel, PyTorch's BatchNorm2d
// (src/reference/batchnorm.rs has the formulas the tests hold this to):
//   training:   μ, σ² (biased) over channel c's M = N·H·W values, x̂ = (x − μ)·s, s = 1/√(σ² + ε),
//               y = γ·x̂ + β; running ← (1 − m)·running + m·batch (the variance's unbiased, σ²·M/(M − 1))
//   evaluation: the same with the running mean and variance, which stay as they are
// backward:     dβ = Σ dy, dγ = Σ dy·x̂; training dx = γ·s/M·(M·dy − Σ dy − x̂·Σ dy·x̂),
//               evaluation dx = γ·s·dy.
//
// Params (binding 0, uniform): n, c, hw (= H·W), train (1: batch statistics), eps, momentum.
//
// forward:          1 `x` [N,C,H,W] read, 2 `gamma` [C] read, 3 `beta` [C] read,
//                   4 `running_mean` [C] read_write, 5 `running_var` [C] read_write,
//                   6 `y` [N,C,H,W] read_write, 7 `saved` [2,C] read_write (μ then s).
// backward:         1 `x` read, 2 `dy` read, 3 `gamma` read, 4 `saved` read,
//                   5 `dgamma` [C] read_write, 6 `dbeta` [C] read_write, 7 `dx` read_write.
// backward_params:  bindings 1–6 of backward, without dx.
//
// One workgroup of 256 per channel (dispatch C workgroups along x): each invocation sums a
// strided share of the channel's values, the workgroup adds the shares in a tree; the mean is
// taken before the squared deviations are summed (two passes, as the reference does).

struct Params {
    n: u32,
    c: u32,
    hw: u32,
    train: u32,
    eps: f32,
    momentum: f32,
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<uniform> p: Params;

// Bindings differ per entry point; each entry uses only its own names.
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> gamma: array<f32>;
@group(0) @binding(3) var<storage, read> beta: array<f32>;
@group(0) @binding(4) var<storage, read_write> running_mean: array<f32>;
@group(0) @binding(5) var<storage, read_write> running_var: array<f32>;
@group(0) @binding(6) var<storage, read_write> y: array<f32>;
@group(0) @binding(7) var<storage, read_write> saved_out: array<f32>;

@group(0) @binding(2) var<storage, read> dy: array<f32>;
@group(0) @binding(3) var<storage, read> gamma_b: array<f32>;
@group(0) @binding(4) var<storage, read> saved_in: array<f32>;
@group(0) @binding(5) var<storage, read_write> dgamma: array<f32>;
@group(0) @binding(6) var<storage, read_write> dbeta: array<f32>;
@group(0) @binding(7) var<storage, read_write> dx: array<f32>;

var<workgroup> red_a: array<f32, 256>;
var<workgroup> red_b: array<f32, 256>;

// Index in [N,C,H,W] of channel ch's k-th value (image-major, then position).
fn at(ch: u32, k: u32) -> u32 {
    let img = k / p.hw;
    return (img * p.c + ch) * p.hw + (k - img * p.hw);
}

// The workgroup's sums of a and b (every invocation gets them).
fn reduce2(lid: u32, a: f32, b: f32) -> vec2<f32> {
    red_a[lid] = a;
    red_b[lid] = b;
    workgroupBarrier();
    for (var s = 128u; s > 0u; s >>= 1u) {
        if lid < s {
            red_a[lid] += red_a[lid + s];
            red_b[lid] += red_b[lid + s];
        }
        workgroupBarrier();
    }
    let r = vec2<f32>(red_a[0], red_b[0]);
    // Nobody overwrites the sums before everyone has read them.
    workgroupBarrier();
    return r;
}

@compute @workgroup_size(256)
fn forward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let ch = wid.x;
    let m = p.n * p.hw;
    var mean: f32;
    var inv: f32;
    if p.train == 1u {
        var s = 0.0;
        for (var k = lid; k < m; k += 256u) {
            s += x[at(ch, k)];
        }
        mean = reduce2(lid, s, 0.0).x / f32(m);
        var q = 0.0;
        for (var k = lid; k < m; k += 256u) {
            let d = x[at(ch, k)] - mean;
            q += d * d;
        }
        let var_b = reduce2(lid, q, 0.0).x / f32(m);
        inv = 1.0 / sqrt(var_b + p.eps);
        if lid == 0u {
            // One value per channel has no unbiased variance: keep the biased one.
            let unbiased = var_b * f32(m) / f32(max(m, 2u) - 1u);
            running_mean[ch] = (1.0 - p.momentum) * running_mean[ch] + p.momentum * mean;
            running_var[ch] = (1.0 - p.momentum) * running_var[ch] + p.momentum * unbiased;
        }
    } else {
        mean = running_mean[ch];
        inv = 1.0 / sqrt(running_var[ch] + p.eps);
    }
    if lid == 0u {
        saved_out[ch] = mean;
        saved_out[p.c + ch] = inv;
    }
    let scale = gamma[ch] * inv;
    let shift = beta[ch] - mean * scale;
    for (var k = lid; k < m; k += 256u) {
        let i = at(ch, k);
        y[i] = x[i] * scale + shift;
    }
}

// Σ dy and Σ dy·x̂ of channel ch, written to dβ and dγ.
fn param_grads(ch: u32, lid: u32) -> vec2<f32> {
    let m = p.n * p.hw;
    let mean = saved_in[ch];
    let inv = saved_in[p.c + ch];
    var sd = 0.0;
    var sdx = 0.0;
    for (var k = lid; k < m; k += 256u) {
        let i = at(ch, k);
        sd += dy[i];
        sdx += dy[i] * (x[i] - mean) * inv;
    }
    let r = reduce2(lid, sd, sdx);
    if lid == 0u {
        dbeta[ch] = r.x;
        dgamma[ch] = r.y;
    }
    return r;
}

@compute @workgroup_size(256)
fn backward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let ch = wid.x;
    let r = param_grads(ch, lid);
    let m = p.n * p.hw;
    let mean = saved_in[ch];
    let inv = saved_in[p.c + ch];
    let g = gamma_b[ch] * inv;
    let mean_dy = r.x / f32(m);
    let mean_dy_xh = r.y / f32(m);
    for (var k = lid; k < m; k += 256u) {
        let i = at(ch, k);
        if p.train == 1u {
            dx[i] = g * (dy[i] - mean_dy - (x[i] - mean) * inv * mean_dy_xh);
        } else {
            dx[i] = g * dy[i];
        }
    }
}

@compute @workgroup_size(256)
fn backward_params(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    _ = param_grads(wid.x, lid);
}
