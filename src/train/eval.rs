//! Evaluation: loss, top-1 and top-5 accuracy on the centre crop, or the paper's ten views
//! (four corners and the centre, each mirrored) with their softmax outputs averaged.
use super::augment::{centre_draws, ten_crop_draws};
use super::infer::{Inference, Scorer};
use super::input::{checkpoint_mean, pad_images};
use super::TrainError;
use crate::dataset::{Loader, LoaderConfig, ShardSet, Shuffle};
use crate::device::Device;

/// Which views of each image are scored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum View {
    /// The centre crop (DESIGN.md's evaluation view).
    Centre,
    /// The paper's ten views, softmax averaged.
    TenCrop,
}

/// The result of an evaluation, in `eval --json`'s field names.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize)]
pub struct EvalResult {
    /// Images scored.
    pub count: usize,
    /// Mean cross-entropy of the (averaged) softmax.
    pub loss: f64,
    /// Fraction whose top class is the label.
    pub top1_accuracy: f64,
    /// Fraction whose label is among the five top classes.
    pub top5_accuracy: f64,
}

/// Softmax of one row of logits, in f64.
pub fn softmax(logits: &[f32]) -> Vec<f64> {
    let max = logits.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v)) as f64;
    let e: Vec<f64> = logits.iter().map(|&v| (v as f64 - max).exp()).collect();
    let s: f64 = e.iter().sum();
    e.into_iter().map(|v| v / s).collect()
}

/// Running sums of an evaluation.
#[derive(Default)]
struct Tally {
    count: usize,
    loss: f64,
    top1: usize,
    top5: usize,
}

impl Tally {
    fn add(&mut self, probs: &[f64], label: usize) {
        let p = probs[label];
        // Rank = how many classes score strictly higher; ties go the label's way.
        let rank = probs.iter().filter(|&&q| q > p).count();
        self.count += 1;
        self.loss -= p.max(1e-45).ln();
        self.top1 += (rank < 1) as usize;
        self.top5 += (rank < 5) as usize;
    }

    fn result(&self) -> EvalResult {
        let n = self.count.max(1) as f64;
        EvalResult {
            count: self.count,
            loss: self.loss / n,
            top1_accuracy: self.top1 as f64 / n,
            top5_accuracy: self.top5 as f64 / n,
        }
    }
}

/// Scores every image of `set` in file order with `net` (evaluation view, no dropout), on
/// whichever engine holds it. Its input stage must hold the mean image the model trained with.
pub fn evaluate(
    net: Scorer<'_>,
    set: &ShardSet,
    view: View,
    threads: usize,
) -> Result<EvalResult, TrainError> {
    let n = net.batch();
    let config = net.config();
    let crop = config.input_size;
    let classes = config.classes;
    let cfg = LoaderConfig {
        batch: n,
        seed: 0,
        shuffle: Shuffle::None,
        drop_last: false,
        threads: threads.max(1),
        prefetch: 2,
        ..LoaderConfig::default()
    };
    let views: Vec<Vec<_>> = match view {
        View::Centre => vec![centre_draws(n, set.size(), crop)],
        View::TenCrop => ten_crop_draws(set.size(), crop)
            .iter()
            .map(|d| vec![*d; n])
            .collect(),
    };
    let mut tally = Tally::default();
    for batch in Loader::epoch(set, &cfg, 0, 0) {
        let mut batch = batch?;
        let have = batch.len();
        pad_images(&mut batch.images, have, n);
        net.upload_images(&batch.images)?;
        let mut probs = vec![0f64; have * classes];
        for draws in &views {
            net.forward(draws)?;
            let logits = net.download("logits")?;
            for (i, row) in logits.chunks_exact(classes).take(have).enumerate() {
                for (acc, p) in probs[i * classes..(i + 1) * classes]
                    .iter_mut()
                    .zip(softmax(row))
                {
                    *acc += p / views.len() as f64;
                }
            }
        }
        for (i, &label) in batch.labels.iter().enumerate() {
            tally.add(&probs[i * classes..(i + 1) * classes], label as usize);
        }
    }
    Ok(tally.result())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tally_ranks_with_ties_in_the_labels_favour() {
        let mut t = Tally::default();
        let p = softmax(&[3.0, 1.0, 2.0, 0.0, -1.0, -2.0, -3.0]);
        t.add(&p, 0); // top-1
        t.add(&p, 2); // second
        t.add(&p, 6); // last of 7: outside the top 5
        let r = t.result();
        assert_eq!(r.count, 3);
        assert!((r.top1_accuracy - 1.0 / 3.0).abs() < 1e-12);
        assert!((r.top5_accuracy - 2.0 / 3.0).abs() < 1e-12);
        let want = -(p[0].ln() + p[2].ln() + p[6].ln()) / 3.0;
        assert!((r.loss - want).abs() < 1e-12);
        let s = softmax(&[1000.0, 1000.0]);
        assert!((s[0] - 0.5).abs() < 1e-12, "softmax must not overflow");
    }
}

/// An `alexnet eval` request.
#[derive(Clone, Debug)]
pub struct EvalJob {
    /// The checkpoint.
    pub checkpoint: std::path::PathBuf,
    /// Shards to score.
    pub data: Vec<std::path::PathBuf>,
    /// Centre crop or ten views.
    pub view: View,
    /// Images per batch.
    pub batch: usize,
    /// The device (`auto`: a GPU if there is one, else the CPU engine).
    pub device: Device,
    /// Input size of a foreign checkpoint without `input_size` metadata.
    pub input_size: Option<usize>,
}

/// Loads a checkpoint and scores it on a shard set, with the checkpoint's own mean image
/// (or, for a checkpoint made elsewhere, the data's, with a warning on stderr).
pub fn eval_checkpoint(job: &EvalJob) -> Result<EvalResult, TrainError> {
    let ck = crate::model::Checkpoint::load(&job.checkpoint, job.input_size)?;
    let set = ShardSet::open(&job.data)?;
    if ck.config.classes != set.classes().len() {
        return Err(TrainError::Mismatch(format!(
            "{} predicts {} classes but {} has {}",
            job.checkpoint.display(),
            ck.config.classes,
            set.files()[0].display(),
            set.classes().len()
        )));
    }
    let (mean, _) = checkpoint_mean(&ck, &job.checkpoint, &set).map_err(TrainError::Mismatch)?;
    let batch = job.batch.clamp(1, set.len().max(1));
    let net = Inference::open(job.device, &ck.config, batch, set.size(), &mean, &ck.params)?;
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    evaluate(net.scorer(), &set, job.view, threads)
}
