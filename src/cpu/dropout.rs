//! Inverted dropout with the mask of `reference::dropout`: element i of the `[N,F]` tensor is
//! kept iff `uniform01(seed, i) ≥ p`, kept values scaled by `1/(1−p)`. Bit for bit the same
//! mask as the reference and the WGSL kernel; it is drawn again in backward, never stored.
use super::activation::ELEMENTWISE_CHUNK;
use crate::shape::hash_u32;
use rayon::prelude::*;

/// `v[i] ← v[i]·mask(i)` in place (forward on a copy of the input, backward on the gradient).
pub fn dropout_in_place(p: f32, seed: u32, v: &mut [f32]) {
    dropout_in_place_at(p, seed, 0, v)
}

/// [`dropout_in_place`] on a slice that starts at element `offset` of the whole mask (a
/// data-parallel replica's rows of the global batch): `v[i] ← v[i]·mask(offset + i)`.
pub fn dropout_in_place_at(p: f32, seed: u32, offset: usize, v: &mut [f32]) {
    if p == 0.0 {
        return;
    }
    // uniform01(seed, i) = (hash(hash(seed) ^ i) >> 8)·2⁻²⁴: the outer hash once.
    let hs = hash_u32(seed);
    // p ≥ 1 drops everything; the guard avoids 0·∞ = NaN from the scale, as the reference.
    let keep = if p >= 1.0 { 0.0 } else { 1.0 / (1.0 - p) };
    v.par_chunks_mut(ELEMENTWISE_CHUNK)
        .enumerate()
        .for_each(|(c, chunk)| {
            let base = offset + c * ELEMENTWISE_CHUNK;
            for (j, x) in chunk.iter_mut().enumerate() {
                let u = (hash_u32(hs ^ (base + j) as u32) >> 8) as f32 * (1.0 / 16_777_216.0);
                *x *= if p >= 1.0 || u < p { 0.0 } else { keep };
            }
        });
}
