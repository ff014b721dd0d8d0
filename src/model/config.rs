//! The network's configuration: the paper's model and the small variants tests use.
use crate::shape::Activation;
use serde::{Deserialize, Serialize};

/// Smallest input size for which the final pooling still yields 1×1 with the paper's
/// pooling (conv1 k11 s4, three 3/2 pools); [`ModelConfig::min_input_size`] for others.
pub const MIN_INPUT_SIZE: usize = 67;

/// The normalisation after conv1's and conv2's activation.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Norm {
    /// The paper's local response normalisation across channels.
    #[default]
    Lrn,
    /// Batch normalisation per channel (PyTorch's `BatchNorm2d`: batch statistics in training,
    /// running ones in evaluation, learnable scale and shift).
    Batch,
    /// None.
    None,
}

/// What the network looks like. The paper's model is [`ModelConfig::paper`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "ConfigFile")]
pub struct ModelConfig {
    /// Side of the square input crop (the paper: 227 in effect).
    pub input_size: usize,
    /// Widths of conv1..conv5, fc6, fc7 (the paper: 96, 256, 384, 384, 256, 4096, 4096).
    pub widths: [usize; 7],
    /// Number of classes (fc8's width).
    pub classes: usize,
    /// Channel groups of conv2, conv4 and conv5 (the paper's two columns: 2; 1 for a plain net).
    pub groups: usize,
    /// The normalisation after conv1 and conv2 (the paper: LRN). Config files and checkpoints
    /// from before it existed say `lrn = true/false`, which still reads as `lrn`/`none`.
    pub norm: Norm,
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

/// A `[model]` table or `alexnet.config` as written: [`ModelConfig`]'s keys, plus the old
/// `lrn` switch, which maps onto `norm`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
struct ConfigFile {
    input_size: usize,
    widths: [usize; 7],
    classes: usize,
    groups: usize,
    lrn: Option<bool>,
    norm: Option<Norm>,
    activation: Activation,
    input_scale: f32,
    pool_size: usize,
    pool_stride: usize,
    conv1_pad: usize,
}

impl Default for ConfigFile {
    fn default() -> Self {
        let p = ModelConfig::paper(1000);
        ConfigFile {
            input_size: p.input_size,
            widths: p.widths,
            classes: p.classes,
            groups: p.groups,
            lrn: None,
            norm: None,
            activation: p.activation,
            input_scale: p.input_scale,
            pool_size: p.pool_size,
            pool_stride: p.pool_stride,
            conv1_pad: p.conv1_pad,
        }
    }
}

impl TryFrom<ConfigFile> for ModelConfig {
    type Error = String;

    fn try_from(f: ConfigFile) -> Result<ModelConfig, String> {
        let norm = match (f.lrn, f.norm) {
            (None, n) => n.unwrap_or_default(),
            (Some(true), None) => Norm::Lrn,
            (Some(false), None) => Norm::None,
            (Some(lrn), Some(n)) if lrn == (n == Norm::Lrn) => n,
            (Some(lrn), Some(n)) => {
                return Err(format!(
                    "`lrn = {lrn}` contradicts `norm = \"{}\"`; `lrn` is the old spelling of `norm`: keep only `norm` (\"lrn\", \"batch\" or \"none\")",
                    n.name()
                ))
            }
        };
        Ok(ModelConfig {
            input_size: f.input_size,
            widths: f.widths,
            classes: f.classes,
            groups: f.groups,
            norm,
            activation: f.activation,
            input_scale: f.input_scale,
            pool_size: f.pool_size,
            pool_stride: f.pool_stride,
            conv1_pad: f.conv1_pad,
        })
    }
}

impl Norm {
    /// The name config files use.
    pub fn name(self) -> &'static str {
        match self {
            Norm::Lrn => "lrn",
            Norm::Batch => "batch",
            Norm::None => "none",
        }
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
            norm: Norm::Lrn,
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
            norm: Norm::None,
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
                && self.norm == other.norm
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
    fn old_lrn_switch_maps_onto_norm_and_contradictions_are_refused() {
        let read = |json: &str| serde_json::from_str::<ModelConfig>(json).map(|c| c.norm);
        assert_eq!(read("{}").unwrap(), Norm::Lrn);
        assert_eq!(read(r#"{"lrn": false}"#).unwrap(), Norm::None);
        assert_eq!(read(r#"{"lrn": true}"#).unwrap(), Norm::Lrn);
        assert_eq!(read(r#"{"norm": "batch"}"#).unwrap(), Norm::Batch);
        assert_eq!(
            read(r#"{"lrn": false, "norm": "batch"}"#).unwrap(),
            Norm::Batch
        );
        assert_eq!(read(r#"{"lrn": true, "norm": "lrn"}"#).unwrap(), Norm::Lrn);
        let err = read(r#"{"lrn": true, "norm": "batch"}"#)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("`lrn = true` contradicts `norm = \"batch\"`"),
            "{err}"
        );
        assert!(read(r#"{"lrn": false, "norm": "lrn"}"#).is_err());
        assert!(read(r#"{"norm": "group"}"#).is_err());
        assert!(
            read(r#"{"lrm": true}"#).is_err(),
            "unknown keys stay refused"
        );
        // What is written says `norm` only, and reads back the same.
        let mut c = ModelConfig::small(67, 8, 10);
        c.norm = Norm::Batch;
        let json = serde_json::to_string(&c).unwrap();
        assert!(
            json.contains(r#""norm":"batch""#) && !json.contains("lrn"),
            "{json}"
        );
        assert_eq!(serde_json::from_str::<ModelConfig>(&json).unwrap(), c);
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
        odd.norm = Norm::Lrn;
        assert_eq!(odd.variant(), "custom");
    }
}
