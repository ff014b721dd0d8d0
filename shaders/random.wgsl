// random.wgsl: counter-based random numbers, bit-identical to src/shape.rs (`hash_u32`,
// `uniform01`), so the CPU can recompute any mask or noise the GPU drew. No bindings, no entry
// points: the loader prepends this file to the shaders that need it (dropout).

// lowbias32 (C. Wellons).
fn hash_u32(x_in: u32) -> u32 {
    var x = x_in;
    x ^= x >> 16u;
    x *= 0x7feb352du;
    x ^= x >> 15u;
    x *= 0x846ca68bu;
    x ^= x >> 16u;
    return x;
}

// Uniform in [0, 1): 24 bits of hash(hash(seed) ^ index), exact in f32.
fn uniform01(seed: u32, index: u32) -> f32 {
    return f32(hash_u32(hash_u32(seed) ^ index) >> 8u) * (1.0 / 16777216.0);
}
