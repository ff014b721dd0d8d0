//! Channel slices of `[N,C,HW]` tensors, the data movement of the two-column split.

/// `dst[:, dst_off..dst_off+k] (+)= src[:, src_off..src_off+k]` for `n` images of `hw` values
/// per channel (`[n, k, hw]` is what moves, as `crate::gpu::channels::Move`); `src` has `src_c`
/// channels per image, `dst` has `dst_c`.
pub fn copy_channels(
    [n, k, hw]: [usize; 3],
    (src, (src_c, src_off)): (&[f32], (usize, usize)),
    (dst, (dst_c, dst_off)): (&mut [f32], (usize, usize)),
    accumulate: bool,
) {
    assert_eq!(src.len(), n * src_c * hw, "copy_channels: src length");
    assert_eq!(dst.len(), n * dst_c * hw, "copy_channels: dst length");
    assert!(
        src_off + k <= src_c && dst_off + k <= dst_c,
        "copy_channels: slice"
    );
    for i in 0..n {
        for c in 0..k {
            let from = ((i * src_c + src_off + c) * hw)..((i * src_c + src_off + c + 1) * hw);
            let to = (i * dst_c + dst_off + c) * hw;
            for (j, &v) in src[from].iter().enumerate() {
                if accumulate {
                    dst[to + j] += v;
                } else {
                    dst[to + j] = v;
                }
            }
        }
    }
}
