// activation.wgsl: ReLU and tanh, in place.
//
// Params (binding 0, uniform): n (elements in this chunk), kind (0 = ReLU, 1 = tanh).
//
// forward:   binding 1 `data` [n] read_write: x on entry, y = f(x) on exit.
// backward:  binding 1 `data` [n] read_write: dY on entry, dX on exit;
//            binding 2 `y` [n] read: the forward output. dX = dY·(y > 0) for ReLU,
//            dY·(1 − y²) for tanh (both from y, so the input need not be kept).
//
// Workgroup 256; dispatch ceil(n / 256) workgroups spread over x (≤ 65535) and y. Each
// invocation guards `i < n`.

struct Params {
    n: u32,
    kind: u32,
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> data: array<f32>;
@group(0) @binding(2) var<storage, read> y: array<f32>;

fn linear_index(wid: vec3<u32>, nwg: vec3<u32>, lid: u32) -> u32 {
    return (wid.y * nwg.x + wid.x) * 256u + lid;
}

@compute @workgroup_size(256)
fn forward(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let i = linear_index(wid, nwg, lid);
    if i >= p.n {
        return;
    }
    let x = data[i];
    if p.kind == 0u {
        // Not max(x, 0): WGSL leaves max of a NaN undefined (lavapipe returns 0), and a NaN
        // must reach the loss as it does in the reference and PyTorch.
        data[i] = select(x, 0.0, x < 0.0);
    } else {
        data[i] = tanh(x);
    }
}

@compute @workgroup_size(256)
fn backward(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let i = linear_index(wid, nwg, lid);
    if i >= p.n {
        return;
    }
    let yi = y[i];
    if p.kind == 0u {
        // A NaN output passes its gradient on, as PyTorch's threshold_backward does.
        data[i] = select(data[i], 0.0, yi <= 0.0);
    } else {
        data[i] = data[i] * (1.0 - yi * yi);
    }
}
