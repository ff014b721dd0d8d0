// conv_common.wgsl: what conv.wgsl and conv_direct.wgsl share, prepended to both (see
// `Shader::prelude`): the uniform `Params` (src/gpu/conv.rs `ConvParams`), the bindings and
// the store that honours flags bit 1 (accumulate into `out`).

struct Params {
    n: u32,
    c_in: u32,
    h: u32,
    w: u32,
    c_out: u32,
    k: u32,
    stride: u32,
    pad: u32,
    groups: u32,
    oh: u32,
    ow: u32,
    flags: u32,
    splits: u32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> mat_a: array<f32>;
@group(0) @binding(2) var<storage, read> mat_b: array<f32>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;
@group(0) @binding(4) var<storage, read> bias: array<f32>;

fn accumulate_store(idx: u32, v: f32) {
    if (p.flags & 2u) != 0u {
        out[idx] = out[idx] + v;
    } else {
        out[idx] = v;
    }
}
