// softmax_xent.wgsl: softmax cross-entropy over logits [N, C] with integer labels [N], and the
// per-sample metrics. Numerically stable: every exp is of (z − max z).
//
// Params (binding 0, uniform): n (batch), classes (C), inv_n (1/N, the loss is the batch mean).
//
// forward:  1 `logits` [N,C] read, 2 `labels` [N] u32 read, 3 `stats` [N,3] read_write:
//           per sample (loss = logsumexp(z) − z[label], top1, top5) where topK = 1.0 when the
//           label's rank r = #{c : z_c > z_l} is below K, else 0.0 (ties count in the label's
//           favour, as `reference::topk_correct` does).
//           The batch loss is the mean of stats[:,0] (the caller reduces N numbers).
// backward: 1 `logits`, 2 `labels`, 3 `dlogits` [N,C] read_write:
//           dlogits = (softmax(z) − onehot(label)) / N.
// A label ≥ C gives a NaN loss and no one-hot term, so bad labels show up in the metrics.
//
// One workgroup of 256 invocations per sample, strided over classes, tree reductions in
// workgroup memory; dispatch (N, 1, 1) (N ≤ 65535).

struct Params {
    n: u32,
    classes: u32,
    inv_n: f32,
    _pad: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> logits: array<f32>;
@group(0) @binding(2) var<storage, read> labels: array<u32>;
@group(0) @binding(3) var<storage, read_write> stats: array<f32>;

@group(0) @binding(3) var<storage, read_write> dlogits: array<f32>;

var<workgroup> red: array<f32, 256>;

// Max over the workgroup of each invocation's `v` (uniform control flow required).
fn reduce_max(lid: u32, v: f32) -> f32 {
    red[lid] = v;
    workgroupBarrier();
    for (var s = 128u; s > 0u; s >>= 1u) {
        if lid < s {
            red[lid] = max(red[lid], red[lid + s]);
        }
        workgroupBarrier();
    }
    let r = red[0];
    workgroupBarrier();
    return r;
}

fn reduce_sum(lid: u32, v: f32) -> f32 {
    red[lid] = v;
    workgroupBarrier();
    for (var s = 128u; s > 0u; s >>= 1u) {
        if lid < s {
            red[lid] += red[lid + s];
        }
        workgroupBarrier();
    }
    let r = red[0];
    workgroupBarrier();
    return r;
}

// (max z, Σ exp(z − max)) of sample `row`.
fn max_and_sum(row: u32, lid: u32) -> vec2<f32> {
    let base = row * p.classes;
    var m = -3.4028235e38;
    for (var c = lid; c < p.classes; c += 256u) {
        m = max(m, logits[base + c]);
    }
    m = reduce_max(lid, m);
    var s = 0.0;
    for (var c = lid; c < p.classes; c += 256u) {
        s += exp(logits[base + c] - m);
    }
    s = reduce_sum(lid, s);
    return vec2<f32>(m, s);
}

@compute @workgroup_size(256)
fn forward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let row = wid.x;
    let ms = max_and_sum(row, lid);
    let base = row * p.classes;
    let label = labels[row];
    let valid = label < p.classes;
    let zl = logits[base + min(label, p.classes - 1u)];
    var rank = 0.0;
    for (var c = lid; c < p.classes; c += 256u) {
        let z = logits[base + c];
        if z > zl {
            rank += 1.0;
        }
    }
    rank = reduce_sum(lid, rank);
    if lid == 0u {
        let loss = ms.x + log(ms.y) - zl;
        let nan = bitcast<f32>(0x7fc00000u);
        stats[row * 3u] = select(nan, loss, valid);
        stats[row * 3u + 1u] = select(0.0, 1.0, valid && rank < 1.0);
        stats[row * 3u + 2u] = select(0.0, 1.0, valid && rank < 5.0);
    }
}

@compute @workgroup_size(256)
fn backward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let row = wid.x;
    let ms = max_and_sum(row, lid);
    let base = row * p.classes;
    let label = labels[row];
    for (var c = lid; c < p.classes; c += 256u) {
        let prob = exp(logits[base + c] - ms.x) / ms.y;
        let onehot = select(0.0, 1.0, c == label);
        dlogits[base + c] = (prob - onehot) * p.inv_n;
    }
}
