//! The nonlinearities (ReLU, tanh). Backward is written in terms of the forward OUTPUT y, so the
//! GPU can apply it in place without keeping the pre-activation.
use crate::shape::Activation;

/// `y = relu(x)` or `tanh(x)`, element-wise. x: any shape → y: the same.
pub fn activation_forward(a: Activation, x: &[f32]) -> Vec<f32> {
    match a {
        // Not `v.max(0.0)`, which returns 0 for a NaN: PyTorch's ReLU keeps it.
        Activation::Relu => x.iter().map(|&v| if v < 0.0 { 0.0 } else { v }).collect(),
        Activation::Tanh => x.iter().map(|&v| v.tanh()).collect(),
    }
}

/// `dx = dy · (y > 0)` (`dy` where y is NaN) for ReLU, `dx = dy · (1 − y²)` for tanh, from the forward output y.
/// dy, y: the same shape → dx: that shape.
pub fn activation_backward(a: Activation, dy: &[f32], y: &[f32]) -> Vec<f32> {
    assert_eq!(
        dy.len(),
        y.len(),
        "activation_backward: `dy` and `y` differ in length"
    );
    match a {
        Activation::Relu => dy
            .iter()
            .zip(y)
            // `y <= 0` as PyTorch's threshold_backward: a NaN output passes its gradient.
            .map(|(&d, &v)| if v <= 0.0 { 0.0 } else { d })
            .collect(),
        Activation::Tanh => dy.iter().zip(y).map(|(&d, &v)| d * (1.0 - v * v)).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reference::gradcheck::{grad_check, weighted_sum};
    use crate::reference::random_tensor;

    #[test]
    fn gradients_both_activations() {
        // Keep inputs away from ReLU's kink so the central difference does not straddle it.
        let x: Vec<f32> = random_tensor(1, 64, 1.0)
            .into_iter()
            .map(|v| {
                if v.abs() < 0.05 {
                    v + 0.1f32.copysign(v)
                } else {
                    v
                }
            })
            .collect();
        let r = random_tensor(2, 64, 1.0);
        for a in [Activation::Relu, Activation::Tanh] {
            let y = activation_forward(a, &x);
            let dx = activation_backward(a, &r, &y);
            grad_check(&format!("{a:?}.dx"), &x, &dx, 1e-2, 1e-3, 1e-3, |p| {
                weighted_sum(&activation_forward(a, p), &r)
            });
        }
    }

    #[test]
    fn relu_zeroes_negatives_only() {
        let y = activation_forward(Activation::Relu, &[-2.0, 0.5, 3.0, -0.1]);
        assert_eq!(y, vec![0.0, 0.5, 3.0, 0.0]);
    }
}
