//! `alexnet import torchvision`: torchvision's AlexNet state dict (what
//! `safetensors.torch.save_file(model.state_dict(), …)` writes) as one of our checkpoints, so
//! `eval`, `export-features`, `neighbors` and `predict` run on its pretrained weights.
//!
//! torchvision feeds conv1 `(pixel/255 − mean_c) / std_c` with ImageNet's per-channel mean
//! and std; we feed it `(pixel − mean_image) · input_scale`. With the mean image set to
//! `255 · mean_c` everywhere, `input_scale = 1/255`, and conv1's weights of input channel c
//! divided by `std_c`, conv1 sees the same sums (its zero padding pads zeros in both), so the
//! logits are torchvision's to float rounding. Its adaptive average pooling is the identity
//! at 224 (conv5's pooled map is already 6×6), and its dropout sits before fc6 and fc7 rather
//! than after: the same function in evaluation, which is what an import is for.
use super::checkpoint::{Checkpoint, CheckpointError, DataStats};
use super::config::ModelConfig;
use super::params::Params;
use safetensors::{Dtype, SafeTensors};
use std::collections::BTreeMap;
use std::path::Path;

/// ImageNet's per-channel mean, as torchvision's preprocessing uses it (0..1 scale).
pub const IMAGENET_MEAN: [f32; 3] = [0.485, 0.456, 0.406];
/// ImageNet's per-channel standard deviation (0..1 scale).
pub const IMAGENET_STD: [f32; 3] = [0.229, 0.224, 0.225];
/// Side of the stored images torchvision's evaluation resizes to before its 224 crop.
pub const STORED: usize = 256;

/// torchvision's tensor names and ours, in our parameter order.
const NAMES: [(&str, &str); 8] = [
    ("features.0", "conv1"),
    ("features.3", "conv2"),
    ("features.6", "conv3"),
    ("features.8", "conv4"),
    ("features.10", "conv5"),
    ("classifier.1", "fc6"),
    ("classifier.4", "fc7"),
    ("classifier.6", "fc8"),
];

/// What an import made.
#[derive(Clone, Debug, PartialEq)]
pub struct Imported {
    /// The checkpoint (config, weights with conv1 folded, the constant mean image).
    pub checkpoint: Checkpoint,
}

/// Reads torchvision's AlexNet state dict at `path` as a checkpoint of the `torchvision`
/// variant. Widths and classes come from the tensors (a fine-tuned head of 10 classes works);
/// the layer structure must be torchvision's.
pub fn import_torchvision(path: &Path) -> Result<Imported, CheckpointError> {
    let bytes = std::fs::read(path).map_err(|source| CheckpointError::Read {
        path: path.into(),
        source,
    })?;
    let st = SafeTensors::deserialize(&bytes).map_err(|source| CheckpointError::Format {
        path: path.into(),
        source,
    })?;
    let bad = |reason: String| CheckpointError::Import {
        path: path.into(),
        reason,
    };
    let read = |name: &str| -> Result<(Vec<usize>, Vec<f32>), CheckpointError> {
        let t = st.tensor(name).map_err(|_| {
            bad(format!(
                "no tensor `{name}`; expected torchvision's AlexNet state dict (features.0 … classifier.6), saved with safetensors.torch.save_file(model.state_dict(), FILE)"
            ))
        })?;
        if t.dtype() != Dtype::F32 {
            return Err(bad(format!(
                "`{name}` is {:?}; save the state dict as float32 (model.float())",
                t.dtype()
            )));
        }
        Ok((t.shape().to_vec(), super::checkpoint::f32_values(t.data())))
    };
    let mut tensors = BTreeMap::new();
    // Errors name the file's tensors, which the user can look up; ours follow in brackets.
    let mut their_name = BTreeMap::new();
    for (theirs, ours) in NAMES {
        for part in ["weight", "bias"] {
            tensors.insert(format!("{ours}.{part}"), read(&format!("{theirs}.{part}"))?);
            their_name.insert(format!("{ours}.{part}"), format!("{theirs}.{part}"));
        }
    }
    let out_dim = |name: &str| tensors[&format!("{name}.weight")].0[0];
    let mut widths = [0usize; 7];
    for (w, name) in widths
        .iter_mut()
        .zip(["conv1", "conv2", "conv3", "conv4", "conv5", "fc6", "fc7"])
    {
        *w = out_dim(name);
    }
    let mut config = ModelConfig::torchvision(out_dim("fc8"));
    config.widths = widths;
    let mut params = Params::zeros(&config).map_err(|e| bad(e.to_string()))?;
    for t in &mut params.tensors {
        let (shape, data) = &tensors[&t.spec.name];
        if *shape != t.spec.shape {
            return Err(bad(format!(
                "`{}` ({} here) has shape {shape:?}, but torchvision's AlexNet with these widths has {:?} (conv2 takes conv1's {} channels in one group, fc6 conv5's {}·6·6)",
                their_name[&t.spec.name], t.spec.name, t.spec.shape, widths[0], widths[4]
            )));
        }
        t.data.clone_from(data);
    }
    // conv1's weights absorb the per-channel std: w[o, c, :, :] / std_c.
    let conv1 = &mut params.tensors[0];
    let plane = 11 * 11;
    for (i, w) in conv1.data.iter_mut().enumerate() {
        *w /= IMAGENET_STD[(i / plane) % 3];
    }
    let mean_image = (0..STORED * STORED * 3)
        .map(|i| IMAGENET_MEAN[i % 3] * 255.0)
        .collect();
    let stats = DataStats {
        size: STORED,
        mean_image,
        // torchvision ships no lighting statistics; training from these weights takes its
        // data's own, and evaluation needs none.
        pca_eigenvalues: [0.0; 3],
        pca_eigenvectors: [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]],
    };
    let mut run_state = BTreeMap::new();
    run_state.insert("imported_from".into(), "torchvision".into());
    Ok(Imported {
        checkpoint: Checkpoint {
            config,
            params,
            momentum: None,
            stats: Some(stats),
            run_state,
            foreign: false,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::reference::network_forward;
    use crate::reference::random_tensor;
    use safetensors::tensor::TensorView;

    /// A torchvision-shaped state dict with small widths, and the same tensors by our names.
    fn state_dict(widths: [usize; 7], classes: usize) -> (Vec<u8>, Params) {
        let mut cfg = ModelConfig::torchvision(classes);
        cfg.widths = widths;
        let mut p = Params::zeros(&cfg).unwrap();
        for (i, t) in p.tensors.iter_mut().enumerate() {
            t.data = random_tensor((40 + i) as _, t.data.len(), 0.05);
        }
        let bytes: Vec<Vec<u8>> = p
            .tensors
            .iter()
            .map(|t| t.data.iter().flat_map(|v| v.to_le_bytes()).collect())
            .collect();
        let views: Vec<(String, TensorView)> = p
            .tensors
            .iter()
            .zip(&bytes)
            .map(|(t, b)| {
                let (layer, part) = t.spec.name.split_once('.').unwrap();
                let theirs = NAMES.iter().find(|(_, o)| *o == layer).unwrap().0;
                (
                    format!("{theirs}.{part}"),
                    TensorView::new(Dtype::F32, t.spec.shape.clone(), b).unwrap(),
                )
            })
            .collect();
        (safetensors::serialize(views, None).unwrap(), p)
    }

    #[test]
    fn imported_weights_on_raw_pixels_give_torchvision_s_logits() {
        let widths = [8, 12, 16, 12, 8, 20, 20];
        let (bytes, raw) = state_dict(widths, 5);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tv.safetensors");
        std::fs::write(&path, bytes).unwrap();
        let ck = import_torchvision(&path).unwrap().checkpoint;
        assert_eq!(ck.config.widths, widths);
        assert_eq!((ck.config.classes, ck.config.variant()), (5, "torchvision"));
        // A 224 crop of pixels 0..255, and torchvision's normalisation of it.
        let n = 2;
        let side = 224;
        let pixels: Vec<f32> = random_tensor(7, n * 3 * side * side, 1.0)
            .iter()
            .map(|v| ((v + 1.0) * 127.5).clamp(0.0, 255.0).round())
            .collect();
        let plane = side * side;
        let normalised: Vec<f32> = pixels
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let c = (i / plane) % 3;
                (p / 255.0 - IMAGENET_MEAN[c]) / IMAGENET_STD[c]
            })
            .collect();
        // Ours: (pixel − mean image) · input_scale, into the folded weights.
        let mean = &ck.stats.as_ref().unwrap().mean_image;
        let ours_in: Vec<f32> = pixels
            .iter()
            .enumerate()
            .map(|(i, p)| (p - mean[((i % plane) * 3) + (i / plane) % 3]) * ck.config.input_scale)
            .collect();
        let ours = network_forward(&ck.config, &ck.params, n, &ours_in, None).unwrap();
        // torchvision: its own weights on its normalised input (input_scale 1, same layers).
        let mut tv_cfg = ck.config.clone();
        tv_cfg.input_scale = 1.0;
        let theirs = network_forward(&tv_cfg, &raw, n, &normalised, None).unwrap();
        let scale = theirs.logits.iter().fold(0f32, |m, v| m.max(v.abs()));
        assert!(scale > 1e-3, "degenerate logits");
        for (a, b) in ours.logits.iter().zip(&theirs.logits) {
            assert!((a - b).abs() <= 1e-4 * scale, "{a} vs {b}");
        }
    }

    #[test]
    fn other_files_are_refused_with_what_to_do() {
        let dir = tempfile::tempdir().unwrap();
        let (bytes, _) = state_dict([8, 12, 16, 12, 8, 20, 20], 5);
        let tv = dir.path().join("tv.safetensors");
        std::fs::write(&tv, &bytes).unwrap();
        // Loaded as a checkpoint, torchvision's file names the command that converts it.
        let e = Checkpoint::load(&tv, Some(224)).unwrap_err().to_string();
        assert!(e.contains("alexnet import torchvision"), "{e}");
        // One of our checkpoints is not a torchvision state dict.
        let ck = import_torchvision(&tv).unwrap().checkpoint;
        let ours = dir.path().join("ours.safetensors");
        ck.save(&ours).unwrap();
        let e = import_torchvision(&ours).unwrap_err().to_string();
        assert!(e.contains("features.0.weight"), "{e}");
        // A shape error names the file's tensor: conv2 fed by a conv1 of another width.
        let (mut bytes, _) = state_dict([8, 12, 16, 12, 8, 20, 20], 5);
        let (other, _) = state_dict([6, 12, 16, 12, 8, 20, 20], 5);
        let st = SafeTensors::deserialize(&other).unwrap();
        let mut views: Vec<(String, safetensors::tensor::TensorView<'_>)> = Vec::new();
        let mine = SafeTensors::deserialize(&bytes).unwrap();
        for name in mine.names() {
            let from = if name.starts_with("features.0.") {
                &st
            } else {
                &mine
            };
            views.push((name.to_string(), from.tensor(name).unwrap()));
        }
        bytes = safetensors::serialize(views, None).unwrap();
        std::fs::write(&tv, &bytes).unwrap();
        let e = import_torchvision(&tv).unwrap_err().to_string();
        assert!(e.contains("`features.3.weight` (conv2.weight here)"), "{e}");
    }
}
