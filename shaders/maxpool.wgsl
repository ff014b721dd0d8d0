// maxpool.wgsl: max pooling, k×k window, stride s, no padding (the paper: 3×3, stride 2, so
// windows overlap). The gradient of a window goes to its FIRST maximum in row-major scan order.
//
// Params (binding 0, uniform): n·c (planes), h, w, oh, ow, k, stride.
//
// forward:  1 `x` [N,C,H,W] read, 2 `y` [N,C,OH,OW] read_write. One invocation per output.
// backward: 1 `x` [N,C,H,W] read (forward input), 2 `dy` [N,C,OH,OW] read,
//           3 `dx` [N,C,H,W] read_write. One invocation per INPUT element, gathering over the
//           windows that cover it and recomputing each window's argmax: overlapping windows
//           add up without atomics, and nothing is stored by forward.
//
// Workgroup 256; dispatch ceil(elements / 256) workgroups spread over x (≤ 65535) and y.
// Guards the element index; windows lie inside the image by construction (no padding).

struct Params {
    planes: u32,
    h: u32,
    w: u32,
    oh: u32,
    ow: u32,
    k: u32,
    stride: u32,
    _pad: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> y: array<f32>;

@group(0) @binding(2) var<storage, read> dy: array<f32>;
@group(0) @binding(3) var<storage, read_write> dx: array<f32>;

fn index(wid: vec3<u32>, nwg: vec3<u32>, lid: u32) -> u32 {
    return (wid.y * nwg.x + wid.x) * 256u + lid;
}

// By the bits: comparisons with a NaN may be folded away by a shader compiler.
fn is_nan(v: f32) -> bool {
    return (bitcast<u32>(v) & 0x7fffffffu) > 0x7f800000u;
}

// Offset (in the plane) of the first maximum of window (oy, ox); `plane` is the plane's start.
fn argmax(plane: u32, oy: u32, ox: u32) -> u32 {
    let y0 = oy * p.stride;
    let x0 = ox * p.stride;
    var best_at = y0 * p.w + x0;
    var best = x[plane + best_at];
    for (var dy_ = 0u; dy_ < p.k; dy_++) {
        for (var dx_ = 0u; dx_ < p.k; dx_++) {
            let at = (y0 + dy_) * p.w + x0 + dx_;
            let v = x[plane + at];
            // Strictly greater: ties keep the earlier element. A NaN is the maximum (its
            // first occurrence takes the gradient), as in PyTorch, so a NaN is never pooled away.
            if v > best || (is_nan(v) && !is_nan(best)) {
                best = v;
                best_at = at;
            }
        }
    }
    return best_at;
}

@compute @workgroup_size(256)
fn forward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let i = index(wid, nwg, lid);
    let per_plane = p.oh * p.ow;
    if i >= p.planes * per_plane {
        return;
    }
    let plane = (i / per_plane) * p.h * p.w;
    let q = i % per_plane;
    y[i] = x[plane + argmax(plane, q / p.ow, q % p.ow)];
}

@compute @workgroup_size(256)
fn backward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let i = index(wid, nwg, lid);
    let hw = p.h * p.w;
    if i >= p.planes * hw {
        return;
    }
    let pl = i / hw;
    let plane = pl * hw;
    let at = i % hw;
    let iy = at / p.w;
    let ix = at % p.w;
    // Windows oy with oy·s ≤ iy < oy·s + k, inside 0..OH−1.
    let oy_lo = select(0u, (iy + p.stride - p.k) / p.stride, iy + p.stride >= p.k);
    let oy_hi = min(iy / p.stride, p.oh - 1u);
    let ox_lo = select(0u, (ix + p.stride - p.k) / p.stride, ix + p.stride >= p.k);
    let ox_hi = min(ix / p.stride, p.ow - 1u);
    var g = 0.0;
    for (var oy = oy_lo; oy <= oy_hi; oy++) {
        for (var ox = ox_lo; ox <= ox_hi; ox++) {
            if argmax(plane, oy, ox) == at {
                g += dy[pl * p.oh * p.ow + oy * p.ow + ox];
            }
        }
    }
    dx[i] = g;
}
