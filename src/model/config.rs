//! The network's configuration: the paper's model and the small variants tests use.
use crate::shape::Activation;
use serde::{Deserialize, Serialize};

/// Smallest input size for which the final pooling still yields 1×1 (conv1 k11 s4, three 3/2 pools).
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
        }
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
        if self.input_size < MIN_INPUT_SIZE {
            return Err(format!(
                "input size {} is too small: the smallest that leaves a 1×1 map after the last pooling is {MIN_INPUT_SIZE}",
                self.input_size
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
