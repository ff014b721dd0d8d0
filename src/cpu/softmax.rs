//! Softmax cross-entropy: per-image loss and top-1/top-5 hits, and the gradient of the batch
//! mean. Same contract as `shaders/softmax_xent.wgsl`: rank = classes scoring strictly above
//! the label, so ties count for the label as in `reference::topk_correct`.
//!
//! Dims: N batch, K classes; logits `[N,K]`, labels `[N]`, stats `[N,3]`.

/// Per image (loss = logsumexp(z) − z[label], top-1 hit, top-5 hit) into `stats` `[N,3]`.
/// Labels must be in `0..K` (checked where they enter the network).
pub fn softmax_xent_forward(classes: usize, logits: &[f32], labels: &[i32], stats: &mut [f32]) {
    for ((z, &l), st) in logits
        .chunks_exact(classes)
        .zip(labels)
        .zip(stats.chunks_exact_mut(3))
    {
        let zl = z[l as usize];
        let max = z.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v)) as f64;
        let sum: f64 = z.iter().map(|&v| (v as f64 - max).exp()).sum();
        let rank = z.iter().filter(|&&v| v > zl).count();
        st[0] = (sum.ln() + max - zl as f64) as f32;
        st[1] = (rank < 1) as u32 as f32;
        st[2] = (rank < 5) as u32 as f32;
    }
}

/// `dlogits = (softmax(z) − onehot(label)) / N`. logits `[N,K]`, labels `[N]` → dlogits `[N,K]`.
pub fn softmax_xent_backward(classes: usize, logits: &[f32], labels: &[i32], dlogits: &mut [f32]) {
    let inv_n = 1.0 / labels.len() as f64;
    for ((z, &l), d) in logits
        .chunks_exact(classes)
        .zip(labels)
        .zip(dlogits.chunks_exact_mut(classes))
    {
        let max = z.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v)) as f64;
        let sum: f64 = z.iter().map(|&v| (v as f64 - max).exp()).sum();
        for (j, (dv, &v)) in d.iter_mut().zip(z).enumerate() {
            let onehot = if j == l as usize { 1.0 } else { 0.0 };
            *dv = (((v as f64 - max).exp() / sum - onehot) * inv_n) as f32;
        }
    }
}
