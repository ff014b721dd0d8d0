//! Softmax cross-entropy (mean over the batch) and top-k accuracy.
//!
//! Dims: N batch, K classes. Labels are class indices in `0..K`; anything else is a caller bug
//! (the dataset layer validates labels) and panics with the offending row.

/// Checks the label of row `i` and returns it as an index.
fn label_index(labels: &[i32], i: usize, classes: usize) -> usize {
    let l = labels[i];
    assert!(
        l >= 0 && (l as usize) < classes,
        "softmax: label {l} of row {i} is outside 0..{classes}"
    );
    l as usize
}

/// Mean cross-entropy `−(1/N)·Σ log softmax(logits)[label]` and its gradient
/// `(softmax − onehot)/N`, with the max subtracted before exponentiating.
///
/// logits `[N,K]`, labels `[N]` → (loss, dlogits `[N,K]`).
pub fn softmax_cross_entropy(
    n: usize,
    classes: usize,
    logits: &[f32],
    labels: &[i32],
) -> (f32, Vec<f32>) {
    assert_eq!(
        logits.len(),
        n * classes,
        "softmax_cross_entropy: `logits` has {} elements, N·K = {}",
        logits.len(),
        n * classes
    );
    assert_eq!(
        labels.len(),
        n,
        "softmax_cross_entropy: `labels` has {} elements, N = {n}",
        labels.len()
    );
    let mut loss = 0.0f64;
    let mut d = vec![0.0f32; logits.len()];
    for i in 0..n {
        let row = &logits[i * classes..(i + 1) * classes];
        let label = label_index(labels, i, classes);
        let max = row.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v)) as f64;
        let sum: f64 = row.iter().map(|&v| (v as f64 - max).exp()).sum();
        loss += sum.ln() + max - row[label] as f64;
        for (j, &v) in row.iter().enumerate() {
            let p = (v as f64 - max).exp() / sum;
            let onehot = if j == label { 1.0 } else { 0.0 };
            d[i * classes + j] = ((p - onehot) / n as f64) as f32;
        }
    }
    ((loss / n as f64) as f32, d)
}

/// Rows whose label is among the `k` largest logits. A class tied with the label's logit does
/// not push it down (rank = number of strictly larger logits), so ties count as correct.
///
/// logits `[N,K]`, labels `[N]` → count in `0..=N`.
pub fn topk_correct(n: usize, classes: usize, logits: &[f32], labels: &[i32], k: usize) -> usize {
    assert_eq!(
        logits.len(),
        n * classes,
        "topk_correct: `logits` has {} elements, N·K = {}",
        logits.len(),
        n * classes
    );
    (0..n)
        .filter(|&i| {
            let row = &logits[i * classes..(i + 1) * classes];
            let target = row[label_index(labels, i, classes)];
            row.iter().filter(|&&v| v > target).count() < k
        })
        .count()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reference::gradcheck::grad_check;
    use crate::reference::random_tensor;

    #[test]
    fn gradient_and_known_value() {
        let (n, k) = (4, 6);
        let logits = random_tensor(1, n * k, 2.0);
        let labels = [0, 5, 2, 2];
        let (_, d) = softmax_cross_entropy(n, k, &logits, &labels);
        grad_check("softmax.dlogits", &logits, &d, 1e-2, 1e-4, 1e-3, |p| {
            softmax_cross_entropy(n, k, p, &labels).0 as f64
        });
        // Uniform logits: loss is ln K whatever the label.
        let (l, _) = softmax_cross_entropy(1, 4, &[3.0, 3.0, 3.0, 3.0], &[1]);
        assert!((l - 4f32.ln()).abs() < 1e-6);
        // Large logits must not overflow.
        let (l, d) = softmax_cross_entropy(1, 2, &[1000.0, 0.0], &[1]);
        assert!((l - 1000.0).abs() < 1e-3 && d.iter().all(|v| v.is_finite()));
    }

    #[test]
    fn topk_counts() {
        #[rustfmt::skip]
        let logits = [
            0.1, 0.9, 0.5, 0.3, // label 1: rank 0
            0.1, 0.9, 0.5, 0.3, // label 2: rank 1
            0.1, 0.9, 0.5, 0.3, // label 0: rank 3
        ];
        let labels = [1, 2, 0];
        assert_eq!(topk_correct(3, 4, &logits, &labels, 1), 1);
        assert_eq!(topk_correct(3, 4, &logits, &labels, 2), 2);
        assert_eq!(topk_correct(3, 4, &logits, &labels, 4), 3);
    }
}
