// conv_sums.wgsl: the two reductions of a convolution's backward pass that are not products,
// shared by the tiled (conv.wgsl) and direct (conv_direct.wgsl) kernels. Params and bindings:
// conv_common.wgsl, prepended.
//
//   backward_bias  db[c] (+)= Σ_{n,oh,ow} dY[n,c,oh,ow]
//                  1 `mat_a` = dY, 3 `out` = db. Workgroup 256, dispatch (C_out, 1, 1).
//   reduce_splits  dW (+)= Σ_split partial[split]
//                  1 `mat_a` = partials [splits, weight_len], 3 `out` = dW. Workgroup 256,
//                  one invocation per weight, dispatch ceil(weight_len / 256) over x and y.
// flags bit 1: accumulate into `out`.

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

var<workgroup> partial: array<f32, 256>;

@compute @workgroup_size(256)
fn backward_bias(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lidx: u32) {
    let c = wid.x;
    let ohw = p.oh * p.ow;
    let total = p.n * ohw;
    var s = 0.0;
    for (var i = lidx; i < total; i += 256u) {
        let b = i / ohw;
        let q = i % ohw;
        s += mat_a[(b * p.c_out + c) * ohw + q];
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
        accumulate_store(c, partial[0]);
    }
}
