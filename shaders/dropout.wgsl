// dropout.wgsl: inverted dropout, in place; the mask is never stored. Element i (global index
// `base + i`) is kept when uniform01(seed, base + i) >= p_drop, and kept values are scaled by
// 1/(1 − p_drop); backward recomputes the same mask from (seed, index). Needs random.wgsl.
//
// Params (binding 0, uniform): n (elements in this chunk), base (global index of element 0 of
// the chunk), slot (which of the step's seeds), p_drop, scale = 1/(1 − p_drop).
// Step (binding 2, uniform, src/gpu/step.rs `StepScalars`): the seed is `seeds[slot]`; it
// changes every step, so it lives apart from the params (the bind group stays the same).
//
// forward:   binding 1 `data` [n] read_write: x on entry, y on exit.
// backward:  binding 1 `data` [n] read_write: dY on entry, dX on exit.
//
// Workgroup 256; dispatch ceil(n / 256) workgroups spread over x (≤ 65535) and y; guards i < n.

struct Params {
    n: u32,
    base: u32,
    slot: u32,
    p_drop: f32,
    scale: f32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> data: array<f32>;

struct Step {
    lr: f32,
    momentum: f32,
    weight_decay: f32,
    _pad: u32,
    seeds: vec4<u32>,
}

@group(0) @binding(2) var<uniform> s: Step;

fn apply(i: u32) {
    let keep = uniform01(s.seeds[p.slot], p.base + i) >= p.p_drop;
    // Multiply by the mask (not select 0): a dropped negative value becomes −0.0 as on the
    // CPU, so GPU and reference agree bit for bit.
    data[i] = data[i] * select(0.0, p.scale, keep);
}

@compute @workgroup_size(256)
fn forward(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let i = (wid.y * nwg.x + wid.x) * 256u + lid;
    if i < p.n {
        apply(i);
    }
}

// The mask and scale are the same as forward's: dX = dY · mask / (1 − p).
@compute @workgroup_size(256)
fn backward(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let i = (wid.y * nwg.x + wid.x) * 256u + lid;
    if i < p.n {
        apply(i);
    }
}
