//! The paper's SGD step with momentum and weight decay (docs/network.md "SGD"):
//! `v ← μ·v − wd·lr·w − lr·g; w ← w + v`, weight decay on every parameter.

/// One in-place step over one parameter tensor. w, v, g: the parameter's shape, flat.
/// f32 arithmetic in the formula's order, as the WGSL kernel does it.
pub fn sgd_update(
    w: &mut [f32],
    v: &mut [f32],
    g: &[f32],
    lr: f32,
    momentum: f32,
    weight_decay: f32,
) {
    assert!(
        w.len() == v.len() && w.len() == g.len(),
        "sgd_update: w, v and g differ in length ({}, {}, {})",
        w.len(),
        v.len(),
        g.len()
    );
    for ((wi, vi), gi) in w.iter_mut().zip(v.iter_mut()).zip(g) {
        *vi = momentum * *vi - weight_decay * lr * *wi - lr * *gi;
        *wi += *vi;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_steps_by_hand() {
        let (mut w, mut v) = (vec![1.0f32, -2.0], vec![0.0f32, 0.5]);
        let g = [0.5f32, 1.0];
        sgd_update(&mut w, &mut v, &g, 0.1, 0.9, 0.01);
        // v0 = 0 − 0.001·1 − 0.05 = −0.051; v1 = 0.45 + 0.002 − 0.1 = 0.352
        assert!(
            (v[0] + 0.051).abs() < 1e-6 && (v[1] - 0.352).abs() < 1e-6,
            "{v:?}"
        );
        assert!(
            (w[0] - 0.949).abs() < 1e-6 && (w[1] + 1.648).abs() < 1e-6,
            "{w:?}"
        );
        sgd_update(&mut w, &mut v, &g, 0.1, 0.9, 0.01);
        // v0 = −0.0459 − 0.000949 − 0.05 = −0.096849
        assert!((v[0] + 0.096849).abs() < 1e-6, "{v:?}");
    }
}
