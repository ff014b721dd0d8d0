//! A checkpoint as an ONNX model, for onnxruntime, TensorRT, OpenVINO and the like.
//!
//! The graph takes `pixels` [N,3,I,I] float32: crops of the stored images as pixel values
//! 0..255 (RGB, C,H,W; I the model's input size; N any batch), subtracts the centre I×I crop of
//! the checkpoint's mean image, multiplies by the model's `input_scale`, runs the network of
//! the checkpoint (any variant: LRN or not, groups, pooling, ReLU or tanh, conv1's padding) and
//! gives `logits` [N,classes]. Fed the centre crop of a stored image it gives what `alexnet
//! eval` scores; docs/outputs.md states the arithmetic.
//!
//! The model is ONNX IR 8, opset 17, built with [`crate::protobuf`] (no crate writes ONNX
//! without pulling in a whole inference runtime; see that module for why by hand).
use crate::model::params::bn_prefix;
use crate::model::{Checkpoint, ModelConfig, Norm};
use crate::protobuf::Msg;
use crate::shape::{Activation, BN_EPS};

/// The graph's input name.
pub const INPUT: &str = "pixels";
/// The graph's output name.
pub const OUTPUT: &str = "logits";
const OPSET: i64 = 17;
const IR_VERSION: i64 = 8;
// TensorProto.DataType and AttributeProto.AttributeType values.
const FLOAT: i64 = 1;
const ATTR_FLOAT: i64 = 1;
const ATTR_INT: i64 = 2;
const ATTR_INTS: i64 = 7;

/// Why a checkpoint cannot be exported.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OnnxError {
    /// The graph subtracts the mean image, which the checkpoint lacks.
    #[error("the checkpoint has no mean image (stats.mean_image), which the ONNX graph subtracts; export a checkpoint `alexnet train` or `alexnet import` wrote")]
    NoMeanImage,
    /// The mean image is smaller than the model's input.
    #[error("the checkpoint's mean image is {stored}×{stored}, smaller than the model's {input}×{input} input")]
    MeanTooSmall {
        /// Side of the mean image.
        stored: usize,
        /// The model's input size.
        input: usize,
    },
    /// A parameter tensor is missing (a checkpoint always has them all).
    #[error("the checkpoint has no tensor `{0}`")]
    MissingTensor(String),
}

/// One `AttributeProto`.
fn attr_int(name: &str, v: i64) -> Msg {
    Msg::new().string(1, name).int(3, v).int(20, ATTR_INT)
}

fn attr_ints(name: &str, vs: &[i64]) -> Msg {
    Msg::new()
        .string(1, name)
        .packed_ints(8, vs)
        .int(20, ATTR_INTS)
}

fn attr_float(name: &str, v: f32) -> Msg {
    Msg::new().string(1, name).float(2, v).int(20, ATTR_FLOAT)
}

/// A float `TensorProto` initializer with its values as raw little-endian bytes.
fn initializer(name: &str, dims: &[usize], data: &[f32]) -> Msg {
    let dims: Vec<i64> = dims.iter().map(|&d| d as i64).collect();
    let raw: Vec<u8> = data.iter().flat_map(|v| v.to_le_bytes()).collect();
    Msg::new()
        .packed_ints(1, &dims)
        .int(2, FLOAT)
        .string(8, name)
        .bytes(9, &raw)
}

/// A float tensor `ValueInfoProto`; a `None` dimension is the symbolic batch `N`.
fn value_info(name: &str, dims: &[Option<usize>]) -> Msg {
    let mut shape = Msg::new();
    for d in dims {
        let dim = match d {
            Some(v) => Msg::new().int(1, *v as i64),
            None => Msg::new().string(2, "N"),
        };
        shape = shape.msg(1, &dim);
    }
    let tensor = Msg::new().int(1, FLOAT).msg(2, &shape);
    Msg::new()
        .string(1, name)
        .msg(2, &Msg::new().msg(1, &tensor))
}

/// The graph under construction: nodes in order, initializers.
struct Graph {
    nodes: Vec<Msg>,
    inits: Vec<Msg>,
    last: String,
}

impl Graph {
    fn node(&mut self, op: &str, name: &str, extra_inputs: &[&str], attrs: Vec<Msg>) {
        let mut n = Msg::new().string(1, &self.last);
        for i in extra_inputs {
            n = n.string(1, i);
        }
        n = n.string(2, name).string(3, name).string(4, op);
        for a in &attrs {
            n = n.msg(5, a);
        }
        self.nodes.push(n);
        self.last = name.to_string();
    }

    fn param(&mut self, ck: &Checkpoint, name: &str) -> Result<(), OnnxError> {
        let t = ck
            .params
            .get(name)
            .ok_or_else(|| OnnxError::MissingTensor(name.into()))?;
        self.inits.push(initializer(name, &t.spec.shape, &t.data));
        Ok(())
    }

    fn act(&mut self, cfg: &ModelConfig, name: &str) {
        let op = match cfg.activation {
            Activation::Relu => "Relu",
            Activation::Tanh => "Tanh",
        };
        self.node(op, &format!("{name}.act"), &[], vec![]);
    }

    fn conv(
        &mut self,
        ck: &Checkpoint,
        name: &str,
        k: i64,
        stride: i64,
        pad: i64,
        group: i64,
    ) -> Result<(), OnnxError> {
        let (w, b) = (format!("{name}.weight"), format!("{name}.bias"));
        self.param(ck, &w)?;
        self.param(ck, &b)?;
        let attrs = vec![
            attr_ints("kernel_shape", &[k, k]),
            attr_ints("strides", &[stride, stride]),
            attr_ints("pads", &[pad, pad, pad, pad]),
            attr_int("group", group),
        ];
        self.node("Conv", name, &[&w, &b], attrs);
        Ok(())
    }

    /// The normalisation after conv block `i` (`name`): LRN, batch normalisation in its
    /// evaluation form (running statistics), or none.
    fn norm(&mut self, ck: &Checkpoint, i: usize, name: &str) -> Result<(), OnnxError> {
        match ck.config.norm {
            Norm::Lrn => {
                // ONNX divides alpha by the window size, as PyTorch does; the paper does not.
                let attrs = vec![
                    attr_int("size", 5),
                    attr_float("alpha", 5.0 * 1e-4),
                    attr_float("beta", 0.75),
                    attr_float("bias", 2.0),
                ];
                self.node("LRN", &format!("{name}.lrn"), &[], attrs);
            }
            Norm::Batch => {
                let bn = bn_prefix(i);
                let inputs =
                    ["weight", "bias", "running_mean", "running_var"].map(|r| format!("{bn}.{r}"));
                for t in &inputs {
                    self.param(ck, t)?;
                }
                let refs: Vec<&str> = inputs.iter().map(String::as_str).collect();
                let attrs = vec![attr_float("epsilon", BN_EPS)];
                self.node("BatchNormalization", &bn, &refs, attrs);
            }
            Norm::None => {}
        }
        Ok(())
    }

    fn pool(&mut self, cfg: &ModelConfig, name: &str) {
        let (k, s) = (cfg.pool_size as i64, cfg.pool_stride as i64);
        let attrs = vec![
            attr_ints("kernel_shape", &[k, k]),
            attr_ints("strides", &[s, s]),
        ];
        self.node("MaxPool", &format!("{name}.pool"), &[], attrs);
    }

    fn linear(&mut self, ck: &Checkpoint, name: &str) -> Result<(), OnnxError> {
        let (w, b) = (format!("{name}.weight"), format!("{name}.bias"));
        self.param(ck, &w)?;
        self.param(ck, &b)?;
        // Gemm with transB: the weight is [out, in], as in the checkpoint.
        self.node("Gemm", name, &[&w, &b], vec![attr_int("transB", 1)]);
        Ok(())
    }
}

/// The ONNX model of `ck` as bytes (see the module doc for the graph's input and output).
pub fn onnx_model(ck: &Checkpoint) -> Result<Vec<u8>, OnnxError> {
    let cfg = &ck.config;
    let stats = ck.stats.as_ref().ok_or(OnnxError::NoMeanImage)?;
    let (s, i) = (stats.size, cfg.input_size);
    if s < i {
        return Err(OnnxError::MeanTooSmall {
            stored: s,
            input: i,
        });
    }
    // The centre crop of the mean image as [1,3,I,I], where eval takes its view.
    let o = (s - i) / 2;
    let mut mean = vec![0f32; 3 * i * i];
    for c in 0..3 {
        for y in 0..i {
            for x in 0..i {
                mean[(c * i + y) * i + x] = stats.mean_image[((o + y) * s + o + x) * 3 + c];
            }
        }
    }
    let mut g = Graph {
        nodes: Vec::new(),
        inits: vec![
            initializer("mean_image_crop", &[1, 3, i, i], &mean),
            initializer("input_scale", &[], &[cfg.input_scale]),
        ],
        last: INPUT.into(),
    };
    g.node("Sub", "centred", &["mean_image_crop"], vec![]);
    g.node("Mul", "scaled", &["input_scale"], vec![]);
    let groups = cfg.groups as i64;
    g.conv(ck, "conv1", 11, 4, cfg.conv1_pad as i64, 1)?;
    g.act(cfg, "conv1");
    g.norm(ck, 0, "conv1")?;
    g.pool(cfg, "conv1");
    g.conv(ck, "conv2", 5, 1, 2, groups)?;
    g.act(cfg, "conv2");
    g.norm(ck, 1, "conv2")?;
    g.pool(cfg, "conv2");
    g.conv(ck, "conv3", 3, 1, 1, 1)?;
    g.act(cfg, "conv3");
    g.conv(ck, "conv4", 3, 1, 1, groups)?;
    g.act(cfg, "conv4");
    g.conv(ck, "conv5", 3, 1, 1, groups)?;
    g.act(cfg, "conv5");
    g.pool(cfg, "conv5");
    g.node("Flatten", "flatten", &[], vec![attr_int("axis", 1)]);
    g.linear(ck, "fc6")?;
    g.act(cfg, "fc6");
    g.linear(ck, "fc7")?;
    g.act(cfg, "fc7");
    g.linear(ck, "fc8")?;
    g.node("Identity", OUTPUT, &[], vec![]);

    let mut graph = Msg::new();
    for n in &g.nodes {
        graph = graph.msg(1, n);
    }
    graph = graph.string(2, "alexnet");
    for t in &g.inits {
        graph = graph.msg(5, t);
    }
    graph = graph
        .string(
            10,
            "pixels: [N,3,I,I] float crops, RGB 0..255; logits: [N,classes]. The mean image's centre crop and input_scale are applied inside.",
        )
        .msg(11, &value_info(INPUT, &[None, Some(3), Some(i), Some(i)]))
        .msg(12, &value_info(OUTPUT, &[None, Some(cfg.classes)]));
    let config = serde_json::to_string(cfg).unwrap_or_default();
    let model = Msg::new()
        .int(1, IR_VERSION)
        .string(2, "alexnet")
        .string(3, env!("CARGO_PKG_VERSION"))
        .msg(7, &graph)
        .msg(8, &Msg::new().string(1, "").int(2, OPSET))
        .msg(
            14,
            &Msg::new().string(1, "alexnet.config").string(2, &config),
        );
    Ok(model.into_bytes())
}
