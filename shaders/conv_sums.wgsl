// conv_sums.wgsl: the reductions of a convolution's backward pass that are not products,
// shared by the tiled (conv.wgsl) and direct (conv_direct.wgsl) kernels. Params and bindings:
// conv_common.wgsl, prepended.
//
//   backward_bias  db[c] (+)= Σ_{n,oh,ow} dY[n,c,oh,ow], in parallel over the batch and the
//                  positions: workgroup (c, slice) sums the images [slice·per, slice·per + per)
//                  of channel c (`per` = p.per images) with 256 invocations striding over them,
//                  then a tree in workgroup memory. With one slice (p.splits = 1) it stores
//                  into db; with more, into the partials [splits, C_out] that reduce_bias adds.
//                  1 `mat_a` = dY, 3 `out` = db or the partials. Workgroup 256, dispatch
//                  (C_out, splits, 1).
//   reduce_bias    db (+)= Σ_slice partial[slice]: 1 `mat_a` = partials, 3 `out` = db.
//                  Workgroup 256, one invocation per channel, dispatch ceil(C_out / 256) over
//                  x and y.
//   reduce_splits  dW (+)= Σ_split partial[split]
//                  1 `mat_a` = partials [splits, weight_len], 3 `out` = dW. Workgroup 256,
//                  one invocation per weight, dispatch ceil(weight_len / 256) over x and y.
//   reduce_splits_bias  reduce_splits of conv.wgsl's backward_weight_bias: each split's row is
//                  C_out·Cig·k·k weights then C_out biases; dW (+)= and db (+)= their sums.
//                  1 `mat_a` = partials [splits, weight_len + C_out], 3 `out` = dW,
//                  6 `out_db` = db. Dispatch ceil((weight_len + C_out) / 256) over x and y.
// flags bit 1: accumulate into `out` (and `out_db`).

@compute @workgroup_size(256)
fn reduce_splits(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lidx: u32) {
    let i = (wid.y * nwg.x + wid.x) * 256u + lidx;
    let weight_len = p.c_out * (p.c_in / p.groups) * p.k * p.k;
    if i >= weight_len {
        return;
    }
    var s = 0.0;
    for (var split = 0u; split < p.splits; split++) {
        s += mat_a[split * weight_len + i];
    }
    accumulate_store(i, s);
}

@compute @workgroup_size(256)
fn reduce_splits_bias(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lidx: u32) {
    let i = (wid.y * nwg.x + wid.x) * 256u + lidx;
    let weight_len = p.c_out * (p.c_in / p.groups) * p.k * p.k;
    let row = weight_len + p.c_out;
    if i >= row {
        return;
    }
    var s = 0.0;
    for (var split = 0u; split < p.splits; split++) {
        s += mat_a[split * row + i];
    }
    if i < weight_len {
        accumulate_store(i, s);
    } else {
        accumulate_db(i - weight_len, s);
    }
}

var<workgroup> partial: array<f32, 256>;

@compute @workgroup_size(256)
fn backward_bias(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lidx: u32) {
    let c = wid.x;
    let ohw = p.oh * p.ow;
    let b_end = min((wid.y + 1u) * p.per, p.n);
    // The invocation's (image, position), stepped by 256 flat elements a turn without dividing
    // in the loop: 256 = step_b images and step_q positions.
    var b = wid.y * p.per + lidx / ohw;
    var q = lidx % ohw;
    let step_b = 256u / ohw;
    let step_q = 256u % ohw;
    var s = 0.0;
    while b < b_end {
        s += mat_a[(b * p.c_out + c) * ohw + q];
        q += step_q;
        b += step_b;
        if q >= ohw {
            q -= ohw;
            b += 1u;
        }
    }
    partial[lidx] = s;
    workgroupBarrier();
    for (var stride = 128u; stride > 0u; stride >>= 1u) {
        if lidx < stride {
            partial[lidx] += partial[lidx + stride];
        }
        workgroupBarrier();
    }
    if lidx == 0u && c < p.c_out {
        if p.splits == 1u {
            accumulate_store(c, partial[0]);
        } else {
            out[wid.y * p.c_out + c] = partial[0];
        }
    }
}

@compute @workgroup_size(256)
fn reduce_bias(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lidx: u32) {
    let c = (wid.y * nwg.x + wid.x) * 256u + lidx;
    if c >= p.c_out {
        return;
    }
    var s = 0.0;
    for (var slice = 0u; slice < p.splits; slice++) {
        s += mat_a[slice * p.c_out + c];
    }
    accumulate_store(c, s);
}
