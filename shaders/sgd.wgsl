// sgd.wgsl: the paper's momentum SGD with weight decay, one pass per parameter tensor:
//   v ← μ·v − wd·lr·w − lr·g;  w ← w + v
// (the optimizer has no backward; its one entry point is `step`).
//
// Params (binding 0, uniform): n (elements in this chunk).
// Step (binding 4, uniform, src/gpu/step.rs `StepScalars`): lr, momentum μ, weight_decay wd,
// which change every step and so live apart from the params (the bind group stays the same).
//
// step:  binding 1 `w` [n] read_write (parameters), binding 2 `v` [n] read_write (momentum),
//        binding 3 `g` [n] read (gradient).
//
// Workgroup 256; dispatch ceil(n / 256) workgroups spread over x (≤ 65535) and y; guards i < n.

struct Params {
    n: u32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

struct Step {
    lr: f32,
    momentum: f32,
    weight_decay: f32,
    _pad: u32,
    seeds: vec4<u32>,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> w: array<f32>;
@group(0) @binding(2) var<storage, read_write> v: array<f32>;
@group(0) @binding(3) var<storage, read> g: array<f32>;
@group(0) @binding(4) var<uniform> s: Step;

@compute @workgroup_size(256)
fn step(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let i = (wid.y * nwg.x + wid.x) * 256u + lid;
    if i >= p.n {
        return;
    }
    let wi = w[i];
    let vi = s.momentum * v[i] - s.weight_decay * s.lr * wi - s.lr * g[i];
    v[i] = vi;
    w[i] = wi + vi;
}
