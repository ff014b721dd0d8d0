// conv_common.wgsl: what conv.wgsl, conv_direct.wgsl and conv_sums.wgsl share, prepended to
// each (see `Shader::prelude`): the uniform `Params` (src/gpu/conv.rs `ConvParams`), the
// bindings, the store that honours flags bit 1 (accumulate into `out`) and the forward's
// fused activation (`act`: 0 none, 1 ReLU, 2 tanh, applied after the bias).
// `per` is the tiled backward_weight's K per split (a multiple of its K step).

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
    per: u32,
    act: u32,
    _pad: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> mat_a: array<f32>;
@group(0) @binding(2) var<storage, read> mat_b: array<f32>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;
@group(0) @binding(4) var<storage, read> bias: array<f32>;
// The bias gradient where a weight-gradient entry makes it too (conv.wgsl's
// backward_weight_bias, conv_sums.wgsl's reduce_splits_bias).
@group(0) @binding(6) var<storage, read_write> out_db: array<f32>;

fn accumulate_store(idx: u32, v: f32) {
    if (p.flags & 2u) != 0u {
        out[idx] = out[idx] + v;
    } else {
        out[idx] = v;
    }
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

// accumulate_store for `out_db`.
fn accumulate_db(idx: u32, v: f32) {
    if (p.flags & 2u) != 0u {
        out_db[idx] = out_db[idx] + v;
    } else {
        out_db[idx] = v;
    }
}
