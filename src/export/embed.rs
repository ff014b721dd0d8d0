//! `neighbors --query-image FILE --checkpoint W`: a new image's feature vector, computed as
//! `export-features` computed the rows of the file it is compared with. The image is decoded
//! and resized as `ingest` stored the file's shards (short side to S, centre S×S, with the
//! shards' `--resize` filter), then takes the evaluation view (centre crop of the model's
//! input minus the same mean image, times `input_scale`) and the file's layer is read out.
use super::features_file::FeaturesMeta;
use super::ExportError;
use crate::dataset::{Resize, ShardSet};
use crate::device::Device;
use crate::engine::augment::centre_draws;
use crate::engine::input::checkpoint_mean;
use crate::engine::Inference;
use crate::ingest::{decode_image, read_image_file, resize_crop_with, DEFAULT_MAX_PIXELS};
use crate::model::Checkpoint;
use std::path::Path;

/// A query image's stored pixels `[S,S,3]` and its feature vector.
pub struct Embedded {
    /// The image as the shards would store it (the contact sheet's query tile).
    pub pixels: Vec<u8>,
    /// The activation of the features file's layer, flattened.
    pub vector: Vec<f32>,
}

/// Embeds `image` through `checkpoint` for comparison with the features file `features`
/// (whose footer is `meta`), on `device`.
pub fn embed_image(
    image: &Path,
    checkpoint: &Path,
    features: &Path,
    meta: &FeaturesMeta,
    device: Device,
) -> Result<Embedded, ExportError> {
    let mismatch = |what: String| ExportError::Mismatch(what);
    let ck = Checkpoint::load(checkpoint, Some(meta.input_size))?;
    if ck.config.input_size != meta.input_size {
        return Err(mismatch(format!(
            "{}: the model's input is {}² but {} was exported with a {}² input; pass the checkpoint the features were exported with",
            checkpoint.display(),
            ck.config.input_size,
            features.display(),
            meta.input_size
        )));
    }
    // The shards the file was made from give the mean image it used and the resize filter
    // its images were stored with; without them, the checkpoint's own.
    let shards = meta.shard_paths(features);
    let set = if shards.iter().all(|p| p.exists()) && !shards.is_empty() {
        Some(ShardSet::open(&shards)?)
    } else {
        None
    };
    let (side, mean, filter) = match (&set, &ck.stats) {
        (Some(set), _) => {
            let (mean, _) = checkpoint_mean(&ck, checkpoint, set).map_err(mismatch)?;
            (set.size(), mean, set.resize())
        }
        (None, Some(stats)) => {
            let key = crate::dataset::resize::CHECKPOINT_KEY;
            let filter = crate::dataset::resize::recorded(
                ck.run_state.get(key).map(String::as_str),
                Resize::Lanczos3,
            )
            .map_err(|e| mismatch(format!("{}: {e}", checkpoint.display())))?;
            (stats.size, stats.mean_image.clone(), filter)
        }
        (None, None) => {
            return Err(mismatch(format!(
                "{}: the checkpoint holds no mean image and the shards {} was exported from are not found; export the features again from shards that are there",
                checkpoint.display(),
                features.display()
            )))
        }
    };
    if side != meta.stored_size {
        return Err(mismatch(format!(
            "{}: its images are stored at {side}² but {} was exported from {}² shards; pass the checkpoint the features were exported with",
            checkpoint.display(),
            features.display(),
            meta.stored_size
        )));
    }
    let reject = |reason: String| mismatch(format!("{}: {reason}", image.display()));
    let bytes = read_image_file(image, DEFAULT_MAX_PIXELS).map_err(reject)?;
    let decoded = decode_image(&bytes, DEFAULT_MAX_PIXELS).map_err(reject)?;
    let pixels = resize_crop_with(decoded.rgb, side as u32, filter).map_err(reject)?;

    let engine = Inference::open(device, &ck.config, 1, side, &mean, &ck.params)?;
    let net = engine.scorer();
    net.upload_images(&pixels)?;
    net.forward(&centre_draws(1, side, ck.config.input_size))?;
    let vector = net.download(&meta.layer)?;
    if vector.len() != meta.width {
        return Err(mismatch(format!(
            "{}: its {} activation has {} values but {} holds vectors of {}; pass the checkpoint the features were exported with",
            checkpoint.display(),
            meta.layer,
            vector.len(),
            features.display(),
            meta.width
        )));
    }
    if vector.iter().any(|v| !v.is_finite()) {
        return Err(mismatch(format!(
            "{}: {} gives NaN or inf {} activations for it; the weights diverged",
            image.display(),
            checkpoint.display(),
            meta.layer
        )));
    }
    Ok(Embedded { pixels, vector })
}
