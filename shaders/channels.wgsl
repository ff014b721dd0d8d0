// channels.wgsl: copy (or add) a run of channels from one [N,C,HW] tensor into another.
//
// The two-column split moves data between devices as channel slices: a column's half of a
// layer's output into the full-width input of conv3 or a fully connected layer, the LRN
// window's neighbour channels across the column boundary, and the halves of partial input
// gradients that the other column sums. One kernel covers all of them, packing a strided
// slice into a contiguous buffer (for the host copy) and unpacking it on the other side.
//
// Params (binding 0, uniform): n images, hw (values per channel), k (channels moved),
// src_c/src_off (source channels per image, first channel moved), dst_c/dst_off (the same for
// the destination), accumulate (0: dst = src, 1: dst += src).
//
// copy: binding 1 `src` read, binding 2 `dst` read_write. Element (i, c, s) of the slice reads
//       src[(i·src_c + src_off + c)·hw + s] and writes dst[(i·dst_c + dst_off + c)·hw + s].
//
// Workgroup 256; ceil(n·k·hw / 256) workgroups over x (≤ 65535) and y.

struct Params {
    n: u32,
    hw: u32,
    k: u32,
    src_c: u32,
    src_off: u32,
    dst_c: u32,
    dst_off: u32,
    accumulate: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> src: array<f32>;
@group(0) @binding(2) var<storage, read_write> dst: array<f32>;

@compute @workgroup_size(256)
fn copy(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let i = (wid.y * nwg.x + wid.x) * 256u + lid;
    if i >= p.n * p.k * p.hw {
        return;
    }
    let s = i % p.hw;
    let t = i / p.hw;
    let c = t % p.k;
    let img = t / p.k;
    let si = (img * p.src_c + p.src_off + c) * p.hw + s;
    let di = (img * p.dst_c + p.dst_off + c) * p.hw + s;
    if p.accumulate != 0u {
        dst[di] = dst[di] + src[si];
    } else {
        dst[di] = src[si];
    }
}
