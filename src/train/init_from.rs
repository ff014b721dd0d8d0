//! `train --init-from W`: start from another checkpoint's weights, fine-tuning in one command.
//!
//! When the configuration leaves the model at its default (the paper's, with the data's class
//! count), the run takes W's network whole: widths, groups, LRN, pooling, activation, conv1's
//! padding, input size and `input_scale`. A configuration that sets the model must match W's
//! (an error says what differs). When the data has another class count than W, fc8 is
//! initialised afresh (said on stderr). The run subtracts W's mean image rather than the data's,
//! since W's conv1 was trained on it (an imported torchvision model: ImageNet's channel means),
//! and takes the data's PCA lighting statistics when W has none (an import stores zeros).
use super::{TrainConfig, TrainError};
use crate::model::{Checkpoint, DataStats, ModelConfig, Params};
use std::path::Path;

/// What a run takes from W.
pub(super) struct InitFrom {
    /// W's parameters, fc8 re-initialised when the class count changed.
    pub params: Params,
    /// W's mean image (at the data's size) with the lighting statistics to train with.
    pub stats: DataStats,
}

/// Loads W, settles `cfg.model` (W's variant, or the configuration's when it sets one) and
/// returns the starting parameters and statistics. `data` are the training data's statistics.
pub(super) fn init_from(
    path: &Path,
    cfg: &mut TrainConfig,
    data: &DataStats,
) -> Result<InitFrom, TrainError> {
    let ck = Checkpoint::load(path, Some(cfg.model.input_size))?;
    let classes = cfg.model.classes;
    let w = &ck.config;
    if cfg.model == ModelConfig::paper(classes) {
        cfg.model = ModelConfig {
            classes,
            ..w.clone()
        };
    } else {
        check_same_network(path, w, &cfg.model)?;
    }
    let mut params = ck.params;
    if w.classes != classes {
        let fresh = Params::init_with(&cfg.model, cfg.seed, cfg.init)?;
        for name in ["fc8.weight", "fc8.bias"] {
            let new = fresh.get(name).cloned();
            if let (Some(slot), Some(new)) = (params.get_mut(name), new) {
                *slot = new;
            }
        }
        eprintln!(
            "{}: {} classes, the data {}: fc8 initialised afresh ({} init, seed {}); conv1–fc7 start from the checkpoint",
            path.display(),
            w.classes,
            classes,
            match cfg.init {
                crate::model::Init::Paper => "the paper's",
                crate::model::Init::He => "He's",
            },
            cfg.seed
        );
    }
    let stats = carried_stats(path, ck.stats.as_ref(), data)?;
    Ok(InitFrom { params, stats })
}

/// Same tensor shapes are not the same network: conv1's padding, LRN, pooling and the
/// activation change what the weights compute, and widths or groups change the shapes.
fn check_same_network(path: &Path, a: &ModelConfig, b: &ModelConfig) -> Result<(), TrainError> {
    if what_it_computes(a) == what_it_computes(b) {
        return Ok(());
    }
    Err(TrainError::Mismatch(format!(
        "{} holds {}; the configuration sets {}; leave the model out of the configuration to take the checkpoint's, or set it to match",
        path.display(),
        describe(a),
        describe(b),
    )))
}

/// The settings [`check_same_network`] compares, in one tuple so that the comparison and
/// the message cannot list different fields.
fn what_it_computes(c: &ModelConfig) -> impl PartialEq + std::fmt::Debug {
    (
        c.conv1_pad,
        c.norm,
        c.pool_size,
        c.pool_stride,
        c.activation,
        c.widths,
        c.groups,
    )
}

/// `the V variant (conv1 padding …, LRN …, pooling …/…, ACT, widths […], groups …)`.
fn describe(c: &ModelConfig) -> String {
    format!(
        "the {} variant (conv1 padding {}, norm {}, pooling {}/{}, {:?}, widths {:?}, groups {})",
        c.variant(),
        c.conv1_pad,
        c.norm.name(),
        c.pool_size,
        c.pool_stride,
        c.activation,
        c.widths,
        c.groups,
    )
}

/// W's mean image at the data's side S: as it is when W's is S×S; broadcast when it is one
/// colour per channel (an import's) of another side; otherwise an error. PCA statistics are
/// W's unless W has none (all eigenvalues 0), then the data's.
fn carried_stats(
    path: &Path,
    w: Option<&DataStats>,
    data: &DataStats,
) -> Result<DataStats, TrainError> {
    let Some(w) = w else {
        // A foreign state dict has no statistics: the data's are all there is.
        return Ok(data.clone());
    };
    let s = data.size;
    let mean_image = if w.size == s {
        w.mean_image.clone()
    } else {
        let first = &w.mean_image[..3];
        if w.mean_image.chunks_exact(3).any(|p| p != first) {
            return Err(TrainError::Mismatch(format!(
                "{}: its mean image is {}×{} but the data stores {s}×{s} images; ingest the data with --size {} to fine-tune from it",
                path.display(),
                w.size,
                w.size,
                w.size
            )));
        }
        first.iter().copied().cycle().take(s * s * 3).collect()
    };
    let lighting = w.pca_eigenvalues.iter().any(|&v| v != 0.0);
    Ok(DataStats {
        size: s,
        mean_image,
        pca_eigenvalues: if lighting {
            w.pca_eigenvalues
        } else {
            data.pca_eigenvalues
        },
        pca_eigenvectors: if lighting {
            w.pca_eigenvectors
        } else {
            data.pca_eigenvectors
        },
    })
}
