// The paper's augmentation on the GPU: random crop, horizontal mirror, PCA lighting, mean subtraction.
//
// Bindings:
//   0 params  uniform  AugmentParams
//   1 images  storage  [N,S,S,3] u8 packed four to a u32 (little-endian), H,W,C order
//   2 mean    storage  [S,S,3] f32, the training set's mean image (0..255)
//   3 draws   storage  [N] Draw: crop corner, mirror flag, lighting shift (host-drawn, so the CPU
//                      reference can replay them)
//   4 out     storage  [N,3,I,I] f32, the model input: (pixel + shift − mean) · scale
// Workgroup 256 threads, one output element each; ceil(N·3·I·I / 256) workgroups spread over x
// (≤ the per-dimension limit) and y, as every element-wise kernel here.

struct AugmentParams {
    n: u32,
    stored: u32,
    crop: u32,
    scale: f32, // multiplies the result: the model's input_scale (1 in the paper)
}

struct Draw {
    x0: u32,
    y0: u32,
    flip: u32,
    _pad: u32,
    shift: vec4<f32>,
}

@group(0) @binding(0) var<uniform> params: AugmentParams;
@group(0) @binding(1) var<storage, read> images: array<u32>;
@group(0) @binding(2) var<storage, read> mean: array<f32>;
@group(0) @binding(3) var<storage, read> draws: array<Draw>;
@group(0) @binding(4) var<storage, read_write> out: array<f32>;

@compute @workgroup_size(256)
fn forward(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let idx = (wid.y * nwg.x + wid.x) * 256u + lid;
    let i = params.crop;
    let total = params.n * 3u * i * i;
    if (idx >= total) {
        return;
    }
    let x = idx % i;
    let y = (idx / i) % i;
    let c = (idx / (i * i)) % 3u;
    let b = idx / (3u * i * i);
    let d = draws[b];
    var xs = x;
    if (d.flip != 0u) {
        xs = i - 1u - x;
    }
    let s = params.stored;
    let src = ((d.y0 + y) * s + d.x0 + xs) * 3u + c;
    let byte_index = b * s * s * 3u + src;
    let byte = (images[byte_index / 4u] >> ((byte_index % 4u) * 8u)) & 0xffu;
    out[idx] = (f32(byte) + d.shift[c] - mean[src]) * params.scale;
}
