//! The network's configuration: the paper's model and the small variants tests use.
use crate::shape::Activation;
use serde::{Deserialize, Serialize};

/// Smallest input size for which the final pooling still yields 1×1 with the paper's
/// pooling (conv1 k11 s4, three 3/2 pools); [`ModelConfig::min_input_size`] for others.
pub const MIN_INPUT_SIZE: usize = 67;

/// What the network looks like. The paper's model is [`ModelConfig::paper`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ModelConfig {
    /// Side of the square input crop (the paper: 227 in effect).
    pub input_size: usize,
    /// Widths of conv1..conv5, fc6, fc7 (the paper: 96, 256, 384, 384, 256, 4096, 4096).
    pub widths: [usize; 7],
    /// Number of classes (fc8's width).
    pub classes: usize,
    /// Channel groups of conv2, conv4 and conv5 (the paper's two columns: 2; 1 for a plain net).
    pub groups: usize,
    /// Local response normalisation after conv1 and conv2.
    pub lrn: bool,
    /// The nonlinearity.
    pub activation: Activation,
    /// Factor on the preprocessed input, (pixel − mean) · input_scale. The paper feeds raw
    /// mean-subtracted pixel values (1.0); narrow variants with He's init train better on
    /// unit-scale inputs (1/64). Stored in checkpoints, so evaluation scales the same way.
    pub input_scale: f32,
    /// Window of every max pooling (the paper: 3, overlapping with stride 2; 2 with stride 2
    /// is the non-overlapping pooling its section 3.4 compares against).
    pub pool_size: usize,
    /// Stride of every max pooling (the paper: 2).
    pub pool_stride: usize,
    /// Zero padding of conv1 (the paper: 0; torchvision's AlexNet, the 2014 variant: 2).
    pub conv1_pad: usize,
}

impl Default for ModelConfig {
    fn default() -> Self {
        Self::paper(1000)
    }
}

impl ModelConfig {
    /// The paper's network with `classes` outputs.
    pub fn paper(classes: usize) -> Self {
        ModelConfig {
            input_size: 227,
            widths: [96, 256, 384, 384, 256, 4096, 4096],
            classes,
            groups: 2,
            lrn: true,
            activation: Activation::Relu,
            input_scale: 1.0,
            pool_size: 3,
            pool_stride: 2,
            conv1_pad: 0,
        }
    }

    /// torchvision's AlexNet (the 2014 "one weird trick" variant): conv1 64 wide with padding
    /// 2, then 192, 384, 256, 256; no LRN, no groups; 224 input, whose pooled conv5 map is
    /// the 6×6 its adaptive average pooling leaves unchanged.
    pub fn torchvision(classes: usize) -> Self {
        ModelConfig {
            input_size: 224,
            widths: [64, 192, 384, 256, 256, 4096, 4096],
            classes,
            groups: 1,
            lrn: false,
            activation: Activation::Relu,
            input_scale: 1.0 / 255.0,
            pool_size: 3,
            pool_stride: 2,
            conv1_pad: 2,
        }
    }

    /// The variant's name in messages: `paper`, `torchvision`, or `custom`.
    pub fn variant(&self) -> &'static str {
        let same_shape = |other: &ModelConfig| {
            self.conv1_pad == other.conv1_pad
                && self.lrn == other.lrn
                && self.groups == other.groups
                && (self.pool_size, self.pool_stride) == (other.pool_size, other.pool_stride)
        };
        if same_shape(&Self::paper(self.classes)) {
            "paper"
        } else if same_shape(&Self::torchvision(self.classes)) {
            "torchvision"
        } else {
            "custom"
        }
    }

    /// The smallest input side that leaves conv5's pooled map at least 1×1 with this
    /// pooling: conv1's output must hold three poolings, stride 4 after an 11-pixel kernel
    /// over the padded input.
    pub fn min_input_size(&self) -> usize {
        let (k, s) = (self.pool_size.max(1), self.pool_stride.max(1));
        let mut side = 1;
        for _ in 0..3 {
            side = (side - 1) * s + k;
        }
        ((side - 1) * 4 + 11)
            .saturating_sub(2 * self.conv1_pad)
            .max(1)
    }

    /// A small variant for tests: every width divided by `div` (rounded up to a multiple of
    /// `groups`), the given input size.
    pub fn small(input_size: usize, div: usize, classes: usize) -> Self {
        let mut c = Self::paper(classes);
        c.input_size = input_size;
        for w in c.widths.iter_mut() {
            *w = (*w / div).max(c.groups).div_ceil(c.groups) * c.groups;
        }
        c
    }

    /// Checks the configuration, with a message that says what to change.
    pub fn validate(&self) -> Result<(), String> {
        if self.pool_size == 0 || self.pool_stride == 0 || self.pool_stride > self.pool_size {
            return Err(format!(
                "pool_size {} with pool_stride {}: both must be at least 1 and the stride at most the window, or pixels are skipped (the paper: 3 and 2; non-overlapping: 2 and 2)",
                self.pool_size, self.pool_stride
            ));
        }
        if self.input_size < self.min_input_size() {
            return Err(format!(
                "input size {} is too small: the smallest that leaves a 1×1 map after the last pooling is {}",
                self.input_size,
                self.min_input_size()
            ));
        }
        if !(self.input_scale.is_finite() && self.input_scale > 0.0) {
            return Err(format!(
                "input_scale {} must be a positive number (the paper: 1)",
                self.input_scale
            ));
        }
        if self.groups == 0 || self.classes == 0 || self.widths.contains(&0) {
            return Err("widths, classes and groups must all be at least 1".into());
        }
        for (i, w) in self.widths[..5].iter().enumerate() {
            if w % self.groups != 0 {
                return Err(format!(
                    "conv{} width {w} is not divisible by groups = {}",
                    i + 1,
                    self.groups
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn smallest_input_leaves_a_one_pixel_map() {
        let mut c = ModelConfig::small(67, 8, 10);
        assert_eq!(c.min_input_size(), MIN_INPUT_SIZE);
        for (k, s) in [(3, 2), (2, 2), (3, 1), (4, 3)] {
            (c.pool_size, c.pool_stride) = (k, s);
            let min = c.min_input_size();
            let side = |i: usize| {
                let mut side = (i - 11) / 4 + 1;
                for _ in 0..3 {
                    side = side.checked_sub(k).map_or(0, |d| d / s + 1);
                }
                side
            };
            assert_eq!(side(min), 1, "pool {k}/{s}: input {min}");
            assert_eq!(side(min - 1), 0, "pool {k}/{s}: input {}", min - 1);
            c.input_size = min;
            assert!(c.validate().is_ok());
            c.input_size = min - 1;
            assert!(c.validate().unwrap_err().contains(&min.to_string()));
        }
        (c.pool_size, c.pool_stride) = (2, 3);
        assert!(c.validate().unwrap_err().contains("pool_stride 3"));
    }

    #[test]
    fn torchvision_variant_has_torchvision_shapes() {
        let c = ModelConfig::torchvision(1000);
        c.validate().unwrap();
        let g = crate::model::geometry::Geometry::new(&c, 2).unwrap();
        assert_eq!(g.convs[0].conv_dims(), [2, 64, 55, 55]);
        assert_eq!(g.flatten, 256 * 6 * 6);
        assert_eq!(c.variant(), "torchvision");
        assert_eq!(ModelConfig::paper(10).variant(), "paper");
        // Two pixels of padding each side: the smallest input is 4 below the paper's.
        assert_eq!(c.min_input_size(), MIN_INPUT_SIZE - 4);
        let mut odd = c.clone();
        odd.lrn = true;
        assert_eq!(odd.variant(), "custom");
    }
}
