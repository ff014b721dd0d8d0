// lrn.wgsl: the paper's local response normalisation across channels,
//   s[c] = k + alpha · Σ_{c' = c − size/2}^{c + size/2} a[c']²   (clipped to 0..C−1; alpha not / size)
//   b[c] = a[c] · s[c]^(−beta)
// backward, with the forward's input a, output b and saved scale s:
//   da[c] = db[c] · s[c]^(−beta) − 2·alpha·beta · a[c] · Σ_{c' : |c' − c| ≤ size/2} db[c'] · b[c'] / s[c']
// The window's terms read b and s as the forward left them (a division each), so an element
// costs one pow, its own s^(−beta), rather than one per channel of its window.
//
// Params (binding 0, uniform): n, c, hw (= H·W), half (= size/2), k, alpha, beta.
//
// forward:  1 `a` [N,C,H,W] read, 2 `b` [N,C,H,W] read_write (output), 3 `scale` [N,C,H,W]
//           read_write (s, saved for backward).
// backward: 1 `a` read, 2 `scale` read, 3 `db` read, 4 `da` read_write, 5 `b` read (the
//           forward's output).
//
// Workgroup 256, one invocation per element; dispatch ceil(N·C·H·W / 256) workgroups spread
// over x (≤ 65535) and y. Guards i < N·C·H·W; channel windows are clipped to 0..C−1.

struct Params {
    n: u32,
    c: u32,
    hw: u32,
    half: u32,
    k: f32,
    alpha: f32,
    beta: f32,
    _pad: u32,
}

@group(0) @binding(0) var<uniform> p: Params;

// Bindings differ per entry point; each entry uses only its own names.
@group(0) @binding(1) var<storage, read> a: array<f32>;
@group(0) @binding(2) var<storage, read_write> b_out: array<f32>;
@group(0) @binding(3) var<storage, read_write> scale_out: array<f32>;

@group(0) @binding(2) var<storage, read> scale_in: array<f32>;
@group(0) @binding(3) var<storage, read> db: array<f32>;
@group(0) @binding(4) var<storage, read_write> da: array<f32>;
@group(0) @binding(5) var<storage, read> b_in: array<f32>;

fn index(wid: vec3<u32>, nwg: vec3<u32>, lid: u32) -> u32 {
    return (wid.y * nwg.x + wid.x) * 256u + lid;
}

// By the bits: comparisons with a NaN may be folded away by a shader compiler.
fn is_nan(v: f32) -> bool {
    return (bitcast<u32>(v) & 0x7fffffffu) > 0x7f800000u;
}

// pow(x, y), NaN for a NaN x: WGSL leaves pow of a NaN undefined, and lavapipe returns 0,
// which would hide a NaN in the window (the reference and PyTorch keep it).
fn pow_nan(x: f32, y: f32) -> f32 {
    return select(pow(x, y), x, is_nan(x));
}

@compute @workgroup_size(256)
fn forward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let i = index(wid, nwg, lid);
    if i >= p.n * p.c * p.hw {
        return;
    }
    let ch = (i / p.hw) % p.c;
    // Index of channel 0 at this pixel of this image.
    let base = i - ch * p.hw;
    let lo = select(0u, ch - p.half, ch >= p.half);
    let hi = min(ch + p.half, p.c - 1u);
    var sum = 0.0;
    for (var cc = lo; cc <= hi; cc++) {
        let v = a[base + cc * p.hw];
        sum += v * v;
    }
    let s = p.k + p.alpha * sum;
    scale_out[i] = s;
    b_out[i] = a[i] * pow_nan(s, -p.beta);
}

@compute @workgroup_size(256)
fn backward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let i = index(wid, nwg, lid);
    if i >= p.n * p.c * p.hw {
        return;
    }
    let ch = (i / p.hw) % p.c;
    let base = i - ch * p.hw;
    let lo = select(0u, ch - p.half, ch >= p.half);
    let hi = min(ch + p.half, p.c - 1u);
    var sum = 0.0;
    for (var cc = lo; cc <= hi; cc++) {
        let j = base + cc * p.hw;
        sum += db[j] * b_in[j] / scale_in[j];
    }
    da[i] = db[i] * pow_nan(scale_in[i], -p.beta) - 2.0 * p.alpha * p.beta * a[i] * sum;
}
