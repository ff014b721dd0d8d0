//! Inputs normalised the torchvision way, turned into what a checkpoint's network takes.
//!
//! torchvision feeds `(pixel/255 − mean) / std` per channel (`transforms.Normalize` with
//! ImageNet's mean and std). Our network takes `(pixel − mean image) · input_scale`, the mean
//! image being the checkpoint's (`alexnet import torchvision` folds the std into conv1 and
//! stores 255·mean as a one-colour mean image, with input_scale 1/255). So a torchvision
//! tensor is first turned back into pixels, `255 · (x · std + mean)`, then given the
//! checkpoint's own view: minus the centre H×W crop of its mean image, times input_scale.
use super::Checkpoint;

/// ImageNet's channel means, as torchvision normalises with them.
pub const IMAGENET_MEAN: [f32; 3] = [0.485, 0.456, 0.406];
/// ImageNet's channel standard deviations, as torchvision normalises with them.
pub const IMAGENET_STD: [f32; 3] = [0.229, 0.224, 0.225];

/// Why torchvision-normalised inputs cannot be converted.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NormalizeError {
    /// The checkpoint has no mean image to subtract.
    #[error("the checkpoint has no mean image (stats.mean_image), which --normalize needs; use a checkpoint `alexnet train` or `alexnet import` wrote")]
    NoMeanImage,
    /// The images do not fit the mean image.
    #[error("images are {h}×{w}; --normalize needs square images no larger than the checkpoint's {s}×{s} mean image")]
    Size {
        /// Input height.
        h: usize,
        /// Input width.
        w: usize,
        /// Side of the mean image.
        s: usize,
    },
}

/// `images` [N,3,H,W], normalised as torchvision does, as the network's input for `ck`.
pub fn from_imagenet(
    ck: &Checkpoint,
    shape: &[usize],
    images: &[f32],
) -> Result<Vec<f32>, NormalizeError> {
    let stats = ck.stats.as_ref().ok_or(NormalizeError::NoMeanImage)?;
    let (h, w, s) = (shape[2], shape[3], stats.size);
    if h != w || h > s {
        return Err(NormalizeError::Size { h, w, s });
    }
    let input_scale = ck.config.input_scale;
    let o = (s - h) / 2;
    let mut out = Vec::with_capacity(images.len());
    for (i, &x) in images.iter().enumerate() {
        let (c, y, xx) = ((i / (h * w)) % 3, (i / w) % h, i % w);
        let pixel = 255.0 * (x * IMAGENET_STD[c] + IMAGENET_MEAN[c]);
        let mean = stats.mean_image[((o + y) * s + o + xx) * 3 + c];
        out.push((pixel - mean) * input_scale);
    }
    Ok(out)
}

/// Reads `images` [N,3,H,W] f32 from the safetensors file `input`, converts them with
/// [`from_imagenet`] and writes them as `images` to `out`. Errors are in words, naming `input`.
pub fn convert_file(
    ck: &Checkpoint,
    input: &std::path::Path,
    out: &std::path::Path,
) -> Result<(), String> {
    let name = input.display();
    let bytes = std::fs::read(input).map_err(|e| format!("{name}: {e}"))?;
    let st = safetensors::SafeTensors::deserialize(&bytes)
        .map_err(|e| format!("{name}: not a safetensors file: {e}"))?;
    let t = st
        .tensor("images")
        .map_err(|_| format!("{name}: no tensor `images` [N,3,H,W] f32 in the file"))?;
    if t.dtype() != safetensors::Dtype::F32 || t.shape().len() != 4 || t.shape()[1] != 3 {
        return Err(format!(
            "{name}: `images` is {:?} {:?}; it must be f32 [N,3,H,W]",
            t.dtype(),
            t.shape()
        ));
    }
    let shape = t.shape().to_vec();
    let converted = from_imagenet(ck, &shape, &super::checkpoint::f32_values(t.data()))
        .map_err(|e| format!("{name}: {e}"))?;
    let raw: Vec<u8> = converted.iter().flat_map(|v| v.to_le_bytes()).collect();
    let view = safetensors::tensor::TensorView::new(safetensors::Dtype::F32, shape, &raw)
        .map_err(|e| format!("{name}: {e}"))?;
    safetensors::serialize_to_file([("images", view)], None, out)
        .map_err(|e| format!("{}: {e}", out.display()))
}
