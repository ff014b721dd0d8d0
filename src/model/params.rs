//! The network's parameters as named f32 tensors, in PyTorch's names, layouts and order
//! (`conv1.weight` [C1,3,11,11], `conv1.bias` [C1], … `fc8.bias` [classes]), and the paper's init.
use super::config::{ModelConfig, Norm};
use super::geometry::{Geometry, GeometryError};
use super::seeds::INIT_STREAM;
use crate::shape::{normal, stream_seed};

/// Standard deviation of the paper's weight init, N(0, 0.01²).
pub const INIT_STD: f32 = 0.01;
/// Layers whose bias the paper initialises to 1 (so their ReLUs start with positive inputs);
/// every other bias starts at 0.
pub const BIAS_ONE_LAYERS: [&str; 5] = ["conv2", "conv4", "conv5", "fc6", "fc7"];

/// Name and shape of one parameter tensor.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParamSpec {
    /// PyTorch state-dict name, e.g. `conv2.weight`.
    pub name: String,
    /// PyTorch shape: conv `[out, in/groups, k, k]`, linear `[out, in]`, bias `[out]`.
    pub shape: Vec<usize>,
}

impl ParamSpec {
    /// Number of elements.
    pub fn len(&self) -> usize {
        self.shape.iter().product()
    }
    /// Whether the tensor has no elements (never for a valid config).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Whether it is a buffer, not a parameter: a batch normalisation's running statistics,
    /// saved in checkpoints but given no gradient, no momentum and no SGD step.
    pub fn is_buffer(&self) -> bool {
        self.name.ends_with(".running_mean") || self.name.ends_with(".running_var")
    }

    /// The layer prefix (`conv2` of `conv2.weight`).
    pub fn layer(&self) -> &str {
        self.name.split('.').next().unwrap_or(&self.name)
    }
}

/// The name prefix of the batch normalisation after conv block `i` (0-based): `bn1`, `bn2`,
/// as torchvision names a BatchNorm2d after its convolution.
pub fn bn_prefix(i: usize) -> String {
    format!("bn{}", i + 1)
}

/// The tensors of `cfg` in state-dict order: for each of conv1…conv5, fc6…fc8 its `.weight`
/// then its `.bias`; with `norm = "batch"`, after conv1's and conv2's, their batch
/// normalisation's `bn<i>.weight` (γ), `.bias` (β), `.running_mean` and `.running_var` (the
/// last two are buffers, [`ParamSpec::is_buffer`]).
pub fn param_specs(cfg: &ModelConfig) -> Result<Vec<ParamSpec>, GeometryError> {
    let g = Geometry::new(cfg, 1)?;
    let mut specs = Vec::with_capacity(24);
    for (i, s) in g.convs.iter().enumerate() {
        let c = &s.conv;
        specs.push(ParamSpec {
            name: format!("{}.weight", s.name),
            shape: vec![c.c_out, c.c_in / c.groups, c.k, c.k],
        });
        specs.push(ParamSpec {
            name: format!("{}.bias", s.name),
            shape: vec![c.c_out],
        });
        if s.norm == Norm::Batch {
            for role in BN_ROLES {
                specs.push(ParamSpec {
                    name: format!("{}.{role}", bn_prefix(i)),
                    shape: vec![c.c_out],
                });
            }
        }
    }
    for f in &g.fcs {
        specs.push(ParamSpec {
            name: format!("{}.weight", f.name),
            shape: vec![f.linear.fout, f.linear.fin],
        });
        specs.push(ParamSpec {
            name: format!("{}.bias", f.name),
            shape: vec![f.linear.fout],
        });
    }
    Ok(specs)
}

/// A batch normalisation's tensors in state-dict order, with the values they start from
/// (PyTorch's): γ 1, β 0, running mean 0, running variance 1.
const BN_ROLES: [&str; 4] = ["weight", "bias", "running_mean", "running_var"];

/// Sets a batch normalisation tensor to its start value; false for any other tensor.
fn bn_init(t: &mut Tensor) -> bool {
    if !t.spec.name.starts_with("bn") {
        return false;
    }
    let one = t.spec.name.ends_with(".weight") || t.spec.name.ends_with(".running_var");
    t.data.fill(if one { 1.0 } else { 0.0 });
    true
}

/// The input's assumed standard deviation for [`Init::He`]: the network sees mean-subtracted
/// pixel values on the 0..255 scale (the paper's preprocessing), whose spread is about 64, not
/// the unit variance He's rule assumes; conv1's weights are divided by it.
pub const HE_INPUT_STD: f32 = 64.0;

/// How weights start.
#[derive(
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    serde::Serialize,
    serde::Deserialize,
    clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum Init {
    /// The paper's: N(0, 0.01²), biases 1 in conv2, conv4, conv5, fc6, fc7. Made for the full
    /// widths; in narrow variants the signal shrinks layer by layer and learning stalls.
    #[default]
    Paper,
    /// He et al. (2015): N(0, 2/fan_in), zero biases, conv1 divided by [`HE_INPUT_STD`];
    /// keeps narrow variants trainable.
    He,
}

/// One named f32 tensor.
#[derive(Clone, Debug, PartialEq)]
pub struct Tensor {
    /// Name and shape.
    pub spec: ParamSpec,
    /// The values, row-major in `spec.shape`.
    pub data: Vec<f32>,
}

/// A full set of tensors in [`param_specs`] order: the weights, or anything shaped like them
/// (gradients, momentum).
#[derive(Clone, Debug, PartialEq)]
pub struct Params {
    /// The tensors, in state-dict order.
    pub tensors: Vec<Tensor>,
}

impl Params {
    /// All zeros (momentum at the start of training, gradient accumulators).
    pub fn zeros(cfg: &ModelConfig) -> Result<Params, GeometryError> {
        let tensors = param_specs(cfg)?
            .into_iter()
            .map(|spec| Tensor {
                data: vec![0.0; spec.len()],
                spec,
            })
            .collect();
        Ok(Params { tensors })
    }

    /// The paper's init: weights N(0, 0.01²), biases 1 in [`BIAS_ONE_LAYERS`] and 0 elsewhere.
    /// Deterministic in `seed`: tensor t, element i is `0.01 · normal(stream_seed(seed, 0,
    /// INIT_STREAM + t), i)`, so a tensor's values do not depend on the other tensors' sizes.
    pub fn init(cfg: &ModelConfig, seed: u64) -> Result<Params, GeometryError> {
        Self::init_with(cfg, seed, Init::Paper)
    }

    /// Init by `rule`; [`Init::Paper`] is [`Params::init`]. [`Init::He`] draws weights from
    /// N(0, 2/fan_in) (fan_in = C_in/groups·K·K or in-features; conv1 also divided by
    /// [`HE_INPUT_STD`]) with zero biases, from the same random streams.
    pub fn init_with(cfg: &ModelConfig, seed: u64, rule: Init) -> Result<Params, GeometryError> {
        let mut p = Params::zeros(cfg)?;
        if rule == Init::He {
            for (t, tensor) in p.tensors.iter_mut().enumerate() {
                if bn_init(tensor) {
                    continue;
                }
                if tensor.spec.name.ends_with(".weight") {
                    let fan_in: usize = tensor.spec.shape[1..].iter().product();
                    let mut std = (2.0 / fan_in as f32).sqrt();
                    if tensor.spec.layer() == "conv1" {
                        // The input's spread: about HE_INPUT_STD pixel levels, times the scale.
                        std /= (HE_INPUT_STD * cfg.input_scale).max(1.0);
                    }
                    let s = stream_seed(seed, 0, INIT_STREAM + t as u32);
                    for (i, v) in tensor.data.iter_mut().enumerate() {
                        *v = std * normal(s, i as u32);
                    }
                }
            }
            return Ok(p);
        }
        for (t, tensor) in p.tensors.iter_mut().enumerate() {
            if bn_init(tensor) {
                continue;
            }
            if tensor.spec.name.ends_with(".weight") {
                let s = stream_seed(seed, 0, INIT_STREAM + t as u32);
                for (i, v) in tensor.data.iter_mut().enumerate() {
                    *v = INIT_STD * normal(s, i as u32);
                }
            } else if BIAS_ONE_LAYERS.contains(&tensor.spec.layer()) {
                tensor.data.fill(1.0);
            }
        }
        Ok(p)
    }

    /// The tensor called `name`.
    pub fn get(&self, name: &str) -> Option<&Tensor> {
        self.tensors.iter().find(|t| t.spec.name == name)
    }

    /// The tensor called `name`, mutable.
    pub fn get_mut(&mut self, name: &str) -> Option<&mut Tensor> {
        self.tensors.iter_mut().find(|t| t.spec.name == name)
    }

    /// Total number of scalars (about 61 million for the paper's 1000-class model).
    pub fn count(&self) -> usize {
        self.tensors.iter().map(|t| t.data.len()).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paper_names_shapes_and_count() {
        let specs = param_specs(&ModelConfig::paper(1000)).unwrap();
        let got: Vec<(&str, &[usize])> = specs
            .iter()
            .map(|s| (s.name.as_str(), s.shape.as_slice()))
            .collect();
        let want: Vec<(&str, &[usize])> = vec![
            ("conv1.weight", &[96, 3, 11, 11]),
            ("conv1.bias", &[96]),
            ("conv2.weight", &[256, 48, 5, 5]),
            ("conv2.bias", &[256]),
            ("conv3.weight", &[384, 256, 3, 3]),
            ("conv3.bias", &[384]),
            ("conv4.weight", &[384, 192, 3, 3]),
            ("conv4.bias", &[384]),
            ("conv5.weight", &[256, 192, 3, 3]),
            ("conv5.bias", &[256]),
            ("fc6.weight", &[4096, 9216]),
            ("fc6.bias", &[4096]),
            ("fc7.weight", &[4096, 4096]),
            ("fc7.bias", &[4096]),
            ("fc8.weight", &[1000, 4096]),
            ("fc8.bias", &[1000]),
        ];
        assert_eq!(got, want);
        // The paper's "60 million parameters" (two-GPU grouping included).
        let total: usize = specs.iter().map(|s| s.len()).sum();
        assert_eq!(total, 60_965_224);
    }

    #[test]
    fn batch_norm_adds_its_tensors_after_conv1_and_conv2() {
        let mut cfg = ModelConfig::small(67, 16, 5);
        cfg.norm = Norm::Batch;
        let specs = param_specs(&cfg).unwrap();
        let names: Vec<&str> = specs.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(
            names[..14],
            [
                "conv1.weight",
                "conv1.bias",
                "bn1.weight",
                "bn1.bias",
                "bn1.running_mean",
                "bn1.running_var",
                "conv2.weight",
                "conv2.bias",
                "bn2.weight",
                "bn2.bias",
                "bn2.running_mean",
                "bn2.running_var",
                "conv3.weight",
                "conv3.bias"
            ]
        );
        assert_eq!(specs.len(), 24);
        assert_eq!(specs[4].shape, vec![cfg.widths[0]]);
        assert_eq!(specs[8].shape, vec![cfg.widths[1]]);
        let buffers: Vec<&str> = specs
            .iter()
            .filter(|s| s.is_buffer())
            .map(|s| s.name.as_str())
            .collect();
        assert_eq!(
            buffers,
            [
                "bn1.running_mean",
                "bn1.running_var",
                "bn2.running_mean",
                "bn2.running_var"
            ]
        );
        for rule in [Init::Paper, Init::He] {
            let p = Params::init_with(&cfg, 1, rule).unwrap();
            for (name, want) in [
                ("bn1.weight", 1.0),
                ("bn1.bias", 0.0),
                ("bn2.bias", 0.0),
                ("bn2.running_mean", 0.0),
                ("bn2.running_var", 1.0),
            ] {
                let t = p.get(name).unwrap();
                assert!(
                    t.data.iter().all(|v| *v == want),
                    "{rule:?} {name}: {:?}",
                    t.data
                );
            }
            // The paper's bias of 1 stays on conv2's own bias.
            if rule == Init::Paper {
                assert!(p.get("conv2.bias").unwrap().data.iter().all(|v| *v == 1.0));
            }
        }
    }

    #[test]
    fn init_statistics_and_biases() {
        let cfg = ModelConfig::small(67, 4, 10);
        let a = Params::init(&cfg, 1).unwrap();
        for t in &a.tensors {
            let n = t.data.len() as f64;
            if t.spec.name.ends_with(".weight") {
                let mean = t.data.iter().map(|v| *v as f64).sum::<f64>() / n;
                let std = (t
                    .data
                    .iter()
                    .map(|v| (*v as f64 - mean).powi(2))
                    .sum::<f64>()
                    / n)
                    .sqrt();
                // Standard error of the std estimate is ≈ 0.01/√(2n); the smallest tensor has > 900.
                assert!(
                    (std - 0.01).abs() < 0.01 * 4.0 / (2.0 * n).sqrt() + 1e-4,
                    "{}: std {std}",
                    t.spec.name
                );
                assert!(
                    mean.abs() < 0.01 * 4.0 / n.sqrt(),
                    "{}: mean {mean}",
                    t.spec.name
                );
            } else {
                let want = if BIAS_ONE_LAYERS.contains(&t.spec.layer()) {
                    1.0
                } else {
                    0.0
                };
                assert!(
                    t.data.iter().all(|v| *v == want),
                    "{}: bias should be {want}",
                    t.spec.name
                );
            }
        }
        assert_eq!(a, Params::init(&cfg, 1).unwrap());
        let he = Params::init_with(&cfg, 1, Init::He).unwrap();
        let w = &he.get("conv2.weight").unwrap();
        let fan_in: usize = w.spec.shape[1..].iter().product();
        let var = w.data.iter().map(|v| (v * v) as f64).sum::<f64>() / w.data.len() as f64;
        assert!(
            (var * fan_in as f64 / 2.0 - 1.0).abs() < 0.1,
            "He variance {var}"
        );
        assert!(he.get("fc6.bias").unwrap().data.iter().all(|&b| b == 0.0));
        let b = Params::init(&cfg, 2).unwrap();
        assert_ne!(a.get("conv1.weight"), b.get("conv1.weight"));
        // Tensors draw from distinct streams: conv2's first weights are not conv1's.
        assert_ne!(a.tensors[0].data[..8], a.tensors[2].data[..8]);
    }
}
