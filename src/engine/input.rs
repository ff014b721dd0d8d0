//! The GPU side of the input pipeline: a batch of stored u8 images, the draws and the mean
//! image on the device, and the augment kernel that writes the network's input.
use crate::dataset::ShardSet;
use crate::gpu::{augment, Gpu, GpuError, Recorder, Tensor};
use crate::model::Checkpoint;
use crate::shape::{AugmentDraw, AugmentShape};
use std::path::Path;

/// Device buffers that turn a loader batch into a network input. The stored images are
/// double-buffered: batch k+1's upload goes to the other buffer than batch k's, so it never
/// waits for step k's augment kernel to finish reading.
pub struct InputStage {
    shape: AugmentShape,
    images: [Tensor; 2],
    /// Which of `images` the last upload wrote.
    current: std::cell::Cell<usize>,
    draws: Tensor,
    mean: Tensor,
    scale: f32,
}

impl InputStage {
    /// Buffers for batches of `n` stored `stored`² images cropped to `crop`², with the training
    /// set's mean image `[S,S,3]` (0..255) and the model's input scale.
    pub fn new(
        gpu: &Gpu,
        n: usize,
        stored: usize,
        crop: usize,
        mean: &[f32],
        scale: f32,
    ) -> InputStage {
        let shape = AugmentShape { n, stored, crop };
        let words = augment::image_words(&shape);
        InputStage {
            images: [
                Tensor::zeros(gpu, words, "augment.images0"),
                Tensor::zeros(gpu, words, "augment.images1"),
            ],
            current: std::cell::Cell::new(0),
            draws: Tensor::zeros(gpu, augment::draw_words(n), "augment.draws"),
            mean: Tensor::from_slice(gpu, mean, "augment.mean"),
            shape,
            scale,
        }
    }

    /// Uploads a batch `[N,S,S,3]` u8 (exactly N images) for the next submit, into the
    /// buffer the previous upload did not use.
    pub fn upload_images(&self, gpu: &Gpu, images: &[u8]) -> Result<(), GpuError> {
        let next = 1 - self.current.get();
        augment::upload_images(gpu, &self.images[next], images)?;
        self.current.set(next);
        Ok(())
    }

    /// Uploads the draws and records the augment kernel writing `out` `[N,3,I,I]`.
    pub fn record(
        &self,
        rec: &mut Recorder<'_>,
        draws: &[AugmentDraw],
        out: &Tensor,
    ) -> Result<(), GpuError> {
        augment::upload_draws(rec.gpu(), &self.draws, draws)?;
        rec.set_scope("input");
        augment::forward(
            rec,
            &self.shape,
            &self.images[self.current.get()],
            &self.mean,
            &self.draws,
            out,
            self.scale,
        )
    }
}

/// Pads a batch of `have` images `[have,S,S,3]` to `n` by repeating its last image, so a short
/// last batch runs through a network sized for `n`; callers only count the first `have`.
pub fn pad_images(images: &mut Vec<u8>, have: usize, n: usize) {
    if have == 0 || have >= n {
        return;
    }
    let px = images.len() / have;
    let last = images[(have - 1) * px..have * px].to_vec();
    for _ in have..n {
        images.extend_from_slice(&last);
    }
}

/// The mean image `[S,S,3]` a checkpoint's model subtracts on `set` (docs/statistics.md: the
/// checkpoint's own; one made elsewhere falls back to the data's, with a warning), after
/// checking that the model's input and the checkpoint's statistics fit the stored size.
/// Returns the mean and whether it is the data's; the error says what to do.
pub fn checkpoint_mean(
    ck: &Checkpoint,
    path: &Path,
    set: &ShardSet,
) -> Result<(Vec<f32>, bool), String> {
    let first = set.files()[0].display().to_string();
    let (crop, stored) = (ck.config.input_size, set.size());
    if crop > stored {
        return Err(format!(
            "{}: the model's input is {crop}² but {first} stores {stored}² images; use shards ingested with --size {crop} or more",
            path.display()
        ));
    }
    match &ck.stats {
        Some(s) if s.size != stored => Err(format!(
            "{}: the checkpoint's mean image is {}² but {first} stores {stored}² images; use shards ingested with --size {} like the training data",
            path.display(),
            s.size,
            s.size
        )),
        Some(s) => Ok((s.mean_image.clone(), false)),
        None => {
            eprintln!(
                "warning: {} holds no data statistics (made by another framework?); subtracting the mean image of {first} and the other shards instead",
                path.display()
            );
            Ok((set.stats().mean_image(), true))
        }
    }
}
