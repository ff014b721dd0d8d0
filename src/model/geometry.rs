//! The network's layer shapes for one configuration and batch size: what every kernel launch,
//! buffer allocation and checkpoint shape check is sized from.
//!
//! The paper's stack: conv1 k11 s4 p0 (`conv1_pad`) → act → [LRN] → pool 3/2 (`pool_size`/`pool_stride`) · conv2 k5 p2 (groups) → act →
//! [LRN] → pool · conv3 k3 p1 → act · conv4 k3 p1 (groups) → act · conv5 k3 p1 (groups) → act →
//! pool · flatten (C,H,W order) · fc6 → act → dropout · fc7 → act → dropout · fc8.
use super::config::{ModelConfig, Norm};
pub use crate::shape::LinearShape;
use crate::shape::{ConvShape, PoolShape};
use thiserror::Error;

/// A configuration that does not describe a buildable network.
#[derive(Debug, Error)]
pub enum GeometryError {
    /// `ModelConfig::validate` refused the configuration.
    #[error("invalid model config: {0}")]
    Config(String),
    /// A batch of zero images.
    #[error("batch size must be at least 1")]
    EmptyBatch,
}

/// One convolutional block: the convolution, the activation, then optionally LRN and pooling.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConvStage {
    /// Parameter prefix and activation name: `conv1` … `conv5`.
    pub name: &'static str,
    /// The convolution (its output is also the activation's and the LRN's shape).
    pub conv: ConvShape,
    /// The normalisation after the activation (conv1 and conv2: `ModelConfig::norm`; the
    /// others: none).
    pub norm: Norm,
    /// The max pooling after the activation/LRN (conv1, conv2, conv5), if any.
    pub pool: Option<PoolShape>,
}

impl ConvStage {
    /// `[N,C,H,W]` of the convolution's output (before pooling).
    pub fn conv_dims(&self) -> [usize; 4] {
        [
            self.conv.n,
            self.conv.c_out,
            self.conv.out_h(),
            self.conv.out_w(),
        ]
    }
    /// `[N,C,H,W]` of the block's output (after pooling when there is one).
    pub fn out_dims(&self) -> [usize; 4] {
        match self.pool {
            Some(p) => [p.n, p.c, p.out_h(), p.out_w()],
            None => self.conv_dims(),
        }
    }
    /// Elements of the block's output.
    pub fn out_len(&self) -> usize {
        self.out_dims().iter().product()
    }
}

/// One fully connected block: the linear layer, then (fc6, fc7) the activation and dropout.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FcStage {
    /// Parameter prefix and activation name: `fc6`, `fc7`, `fc8`.
    pub name: &'static str,
    /// The linear layer.
    pub linear: LinearShape,
    /// Whether the activation and dropout follow (false for fc8, whose output is the logits).
    pub hidden: bool,
}

/// Shapes of every layer for one batch size.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Geometry {
    /// Batch size N.
    pub batch: usize,
    /// Input side I (images are `[N,3,I,I]`).
    pub input_size: usize,
    /// conv1 … conv5.
    pub convs: [ConvStage; 5],
    /// Features after flattening conv5's pooled output in C,H,W order (9216 for the paper).
    pub flatten: usize,
    /// fc6, fc7, fc8.
    pub fcs: [FcStage; 3],
}

impl Geometry {
    /// The layer shapes of `cfg` for batches of `batch` images.
    pub fn new(cfg: &ModelConfig, batch: usize) -> Result<Geometry, GeometryError> {
        cfg.validate().map_err(GeometryError::Config)?;
        if batch == 0 {
            return Err(GeometryError::EmptyBatch);
        }
        let w = cfg.widths;
        // (kernel, stride, pad, groups, normalisation after it, pooled after it), per the paper.
        let plan = [
            (11, 4, cfg.conv1_pad, 1, cfg.norm, true),
            (5, 1, 2, cfg.groups, cfg.norm, true),
            (3, 1, 1, 1, Norm::None, false),
            (3, 1, 1, cfg.groups, Norm::None, false),
            (3, 1, 1, cfg.groups, Norm::None, true),
        ];
        let names = ["conv1", "conv2", "conv3", "conv4", "conv5"];
        let (mut c, mut side) = (3, cfg.input_size);
        let mut stages = Vec::with_capacity(5);
        for (i, &(k, stride, pad, groups, norm, pooled)) in plan.iter().enumerate() {
            let conv = ConvShape {
                n: batch,
                c_in: c,
                h: side,
                w: side,
                c_out: w[i],
                k,
                stride,
                pad,
                groups,
            };
            let pool = pooled.then(|| PoolShape {
                n: batch,
                c: w[i],
                h: conv.out_h(),
                w: conv.out_w(),
                k: cfg.pool_size,
                stride: cfg.pool_stride,
            });
            let stage = ConvStage {
                name: names[i],
                conv,
                norm,
                pool,
            };
            [_, c, side, _] = stage.out_dims();
            stages.push(stage);
        }
        let convs = [stages[0], stages[1], stages[2], stages[3], stages[4]];
        let flatten = c * side * side;
        let fc = |name, fin, fout, hidden| FcStage {
            name,
            linear: LinearShape {
                n: batch,
                fin,
                fout,
            },
            hidden,
        };
        let fcs = [
            fc("fc6", flatten, w[5], true),
            fc("fc7", w[5], w[6], true),
            fc("fc8", w[6], cfg.classes, false),
        ];
        Ok(Geometry {
            batch,
            input_size: cfg.input_size,
            convs,
            flatten,
            fcs,
        })
    }

    /// Elements of the input batch `[N,3,I,I]`.
    pub fn input_len(&self) -> usize {
        self.batch * 3 * self.input_size * self.input_size
    }

    /// Elements of the logits `[N,classes]`.
    pub fn logits_len(&self) -> usize {
        self.batch * self.fcs[2].linear.fout
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_paper_geometry() {
        let g = Geometry::new(&ModelConfig::paper(1000), 2).unwrap();
        let dims: Vec<[usize; 4]> = g.convs.iter().map(|s| s.out_dims()).collect();
        assert_eq!(
            dims,
            vec![
                [2, 96, 27, 27],
                [2, 256, 13, 13],
                [2, 384, 13, 13],
                [2, 384, 13, 13],
                [2, 256, 6, 6]
            ]
        );
        assert_eq!(g.convs[0].conv_dims(), [2, 96, 55, 55]);
        assert_eq!(g.flatten, 9216);
        assert_eq!(g.convs[1].conv.weight_len(), 256 * 48 * 25);
        assert_eq!(g.convs[2].conv.groups, 1);
        assert_eq!(g.convs[4].conv.groups, 2);
        assert!(g.convs[0].norm == Norm::Lrn && g.convs[1].norm == Norm::Lrn);
        assert_eq!(g.convs[2].norm, Norm::None);
        assert_eq!(
            g.fcs.map(|f| (f.linear.fin, f.linear.fout)),
            [(9216, 4096), (4096, 4096), (4096, 1000)]
        );
        assert_eq!(g.input_len(), 2 * 3 * 227 * 227);
    }

    #[test]
    fn the_smallest_input_ends_at_one_pixel() {
        let cfg = ModelConfig::small(67, 16, 5);
        let g = Geometry::new(&cfg, 1).unwrap();
        assert_eq!(g.convs[4].out_dims(), [1, cfg.widths[4], 1, 1]);
        assert_eq!(g.flatten, cfg.widths[4]);
        assert!(Geometry::new(&ModelConfig::small(66, 16, 5), 1).is_err());
        assert!(Geometry::new(&cfg, 0).is_err());
    }
}
