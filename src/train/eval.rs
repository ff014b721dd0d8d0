//! Evaluation: loss, top-1 and top-5 accuracy on the centre crop, or the paper's ten views
//! (four corners and the centre, each mirrored) with their softmax outputs averaged.
use super::augment::{centre_draws, ten_crop_draws};
use super::infer::Scorer;
use super::input::pad_images;
use super::TrainError;
use crate::dataset::{Loader, LoaderConfig, ShardSet, Shuffle};
use std::ops::Range;

/// Which views of each image are scored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum View {
    /// The centre crop (docs/network.md "Evaluation views").
    Centre,
    /// The paper's ten views, softmax averaged.
    TenCrop,
}

/// The result of an evaluation, in `eval --json`'s field names.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize)]
pub struct EvalResult {
    /// Images scored.
    pub count: usize,
    /// Mean cross-entropy of the (averaged) softmax; NaN (`null` in JSON) when any image's
    /// logits were not finite, so a diverged model never shows a plausible loss.
    pub loss: f64,
    /// Fraction whose top class is the label, alone (a tie with another class is a miss).
    pub top1_accuracy: f64,
    /// Fraction whose label is among the five top classes, ties counted against it.
    pub top5_accuracy: f64,
    /// Images whose logits held NaN or inf in some view; each counted as a miss.
    pub non_finite: usize,
}

impl EvalResult {
    /// True when every image had finite logits (the model has not diverged).
    pub fn is_finite(&self) -> bool {
        self.non_finite == 0 && self.loss.is_finite()
    }
}

pub use crate::engine::infer::{log_softmax, softmax};

/// The running sums of an evaluation: counts, not rates, so that the sums of parts of a set
/// (validation split across ranks, `eval --shard` parts) add up to the whole set's.
#[derive(Clone, Copy, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct EvalCounts {
    /// Images scored.
    pub count: u64,
    /// Sum of the finite images' losses (the non-finite ones make the loss NaN instead).
    pub loss_sum: f64,
    /// Images whose top class is the label, alone.
    pub top1: u64,
    /// Images whose label is among the five top classes.
    pub top5: u64,
    /// Images whose logits held NaN or inf in some view.
    pub non_finite: u64,
}

impl EvalCounts {
    /// Adds one image: its class probabilities (averaged over views) and its loss, or `None`
    /// when some view's logits were not finite.
    pub(super) fn add(&mut self, probs: &[f64], label: usize, loss: Option<f64>) {
        self.count += 1;
        let Some(loss) = loss.filter(|l| l.is_finite()) else {
            // NaN compares false and inf ties: neither may pass for a correct answer.
            self.non_finite += 1;
            return;
        };
        let p = probs[label];
        // Rank = classes scoring at least as high as the label: a tie is a miss, so a model
        // that outputs the same score for every class is never "right".
        let rank = probs
            .iter()
            .enumerate()
            .filter(|&(j, &q)| j != label && q >= p)
            .count();
        self.loss_sum += loss;
        self.top1 += (rank < 1) as u64;
        self.top5 += (rank < 5) as u64;
    }

    /// The sums of `self` and `other` (two parts of one set).
    pub fn merge(&self, other: &EvalCounts) -> EvalCounts {
        EvalCounts {
            count: self.count + other.count,
            loss_sum: self.loss_sum + other.loss_sum,
            top1: self.top1 + other.top1,
            top5: self.top5 + other.top5,
            non_finite: self.non_finite + other.non_finite,
        }
    }

    /// The counts as five numbers for an all-reduce, and back ([`EvalCounts::from_sums`]).
    /// f64 holds every count exactly up to 2⁵³ images.
    pub fn to_sums(&self) -> [f64; 5] {
        [
            self.count as f64,
            self.loss_sum,
            self.top1 as f64,
            self.top5 as f64,
            self.non_finite as f64,
        ]
    }

    /// The counts [`EvalCounts::to_sums`] gave, summed over ranks.
    pub fn from_sums(s: &[f64; 5]) -> EvalCounts {
        EvalCounts {
            count: s[0] as u64,
            loss_sum: s[1],
            top1: s[2] as u64,
            top5: s[3] as u64,
            non_finite: s[4] as u64,
        }
    }

    /// The rates `eval` reports.
    pub fn result(&self) -> EvalResult {
        let n = self.count.max(1) as f64;
        EvalResult {
            count: self.count as usize,
            loss: if self.non_finite > 0 {
                f64::NAN
            } else {
                self.loss_sum / n
            },
            top1_accuracy: self.top1 as f64 / n,
            top5_accuracy: self.top5 as f64 / n,
            non_finite: self.non_finite as usize,
        }
    }
}

/// One image's scores over the views: averaged probabilities, the label's log-probability in
/// each view, and whether any view's logits were not finite.
pub(super) struct ImageScores {
    /// Class probabilities averaged over the views, in the order of the set's classes.
    pub(super) probs: Vec<f64>,
    /// The label's log-probability in each view.
    pub(super) label_logp: Vec<f64>,
    /// Some view's logits were not finite.
    pub(super) bad: bool,
}

impl ImageScores {
    /// The cross-entropy of the view-averaged softmax, −ln(mean_v p_v[label]), computed from
    /// log-probabilities so it stays exact where the probabilities underflow.
    pub(super) fn loss(&self) -> Option<f64> {
        if self.bad || self.label_logp.is_empty() {
            return None;
        }
        let max = self
            .label_logp
            .iter()
            .fold(f64::NEG_INFINITY, |m, &v| m.max(v));
        let sum: f64 = self.label_logp.iter().map(|&v| (v - max).exp()).sum();
        Some(-(max + (sum / self.label_logp.len() as f64).ln()))
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
    Ok(evaluate_each(net, set, 0..set.len(), view, threads, None, |_| {})?.result())
}

/// Scores the images `rows` (positions in file order) of `set`, as [`evaluate`] scores the
/// whole set, and returns the counts, which add up over parts to the whole set's. An empty
/// range scores nothing (a rank whose part of a small set is empty).
pub fn evaluate_rows(
    net: Scorer<'_>,
    set: &ShardSet,
    rows: Range<usize>,
    view: View,
    threads: usize,
) -> Result<EvalCounts, TrainError> {
    if rows.is_empty() && !set.is_empty() {
        return Ok(EvalCounts::default());
    }
    evaluate_each(net, set, rows, view, threads, None, |_| {})
}

/// One image as [`evaluate_each`] scored it.
pub(super) struct Scored<'a> {
    /// Its place among the images scored (from 0 at the first row of the range).
    pub(super) index: usize,
    /// Its label.
    pub(super) label: usize,
    /// Its scores, in the set's class order.
    pub(super) scores: &'a ImageScores,
    /// Its stored pixels `[S,S,3]`.
    pub(super) pixels: &'a [u8],
}

/// [`evaluate_rows`], handing every image's scores to `each` as well. `order[j]`, when given,
/// is the set's index of the network's class j (a network trained with the classes in another
/// order): logits are put in the set's order before anything is computed from them.
pub(super) fn evaluate_each(
    net: Scorer<'_>,
    set: &ShardSet,
    rows: Range<usize>,
    view: View,
    threads: usize,
    order: Option<&[usize]>,
    mut each: impl FnMut(Scored<'_>),
) -> Result<EvalCounts, TrainError> {
    if set.is_empty() {
        return Err(TrainError::EmptySet(set.files()[0].clone()));
    }
    let n = net.batch();
    let config = net.config();
    let crop = config.input_size;
    let classes = config.classes;
    if order.is_some_and(|o| o.len() != classes || o.iter().any(|&c| c >= classes)) {
        return Err(TrainError::Mismatch(format!(
            "the class order given for {} does not fit the model's {classes} classes",
            set.files()[0].display()
        )));
    }
    let cfg = LoaderConfig {
        batch: n,
        seed: 0,
        shuffle: Shuffle::None,
        drop_last: false,
        threads: threads.max(1),
        prefetch: 2,
        span: Some(rows),
        ..LoaderConfig::default()
    };
    let views: Vec<Vec<_>> = match view {
        View::Centre => vec![centre_draws(n, set.size(), crop)],
        View::TenCrop => ten_crop_draws(set.size(), crop)
            .iter()
            .map(|d| vec![*d; n])
            .collect(),
    };
    let px = set.size() * set.size() * 3;
    let mut tally = EvalCounts::default();
    let mut row_in_order = vec![0f32; classes];
    for batch in Loader::epoch(set, &cfg, 0, 0) {
        let mut batch = batch?;
        let have = batch.len();
        // The loader checks labels against the set's classes; the network may still have
        // fewer (a caller that skipped the class check), which must not index out of bounds.
        if let Some(&bad) = batch
            .labels
            .iter()
            .find(|&&l| l < 0 || l as usize >= classes)
        {
            return Err(TrainError::Mismatch(format!(
                "{}: label {bad} is outside the model's {classes} classes; evaluate with a checkpoint trained on these classes",
                set.files()[0].display()
            )));
        }
        pad_images(&mut batch.images, have, n);
        net.upload_images(&batch.images)?;
        let mut scores: Vec<ImageScores> = (0..have)
            .map(|_| ImageScores {
                probs: vec![0f64; classes],
                label_logp: Vec::with_capacity(views.len()),
                bad: false,
            })
            .collect();
        for draws in &views {
            net.forward(draws)?;
            let logits = net.download("logits")?;
            for ((row, sc), &label) in logits
                .chunks_exact(classes)
                .zip(scores.iter_mut())
                .zip(&batch.labels)
            {
                if row.iter().any(|v| !v.is_finite()) {
                    sc.bad = true;
                    continue;
                }
                let row = match order {
                    Some(order) => {
                        for (&to, &v) in order.iter().zip(row) {
                            row_in_order[to] = v;
                        }
                        &row_in_order[..]
                    }
                    None => row,
                };
                let lp = log_softmax(row);
                sc.label_logp.push(lp[label as usize]);
                for (acc, l) in sc.probs.iter_mut().zip(lp) {
                    *acc += l.exp() / views.len() as f64;
                }
            }
        }
        for (j, (sc, &label)) in scores.iter().zip(&batch.labels).enumerate() {
            tally.add(&sc.probs, label as usize, sc.loss());
            each(Scored {
                index: tally.count as usize - 1,
                label: label as usize,
                scores: sc,
                pixels: &batch.images[j * px..(j + 1) * px],
            });
        }
    }
    Ok(tally)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn add(t: &mut EvalCounts, logits: &[f32], label: usize) {
        let lp = log_softmax(logits);
        let finite = logits.iter().all(|v| v.is_finite());
        let probs: Vec<f64> = lp.iter().map(|v| v.exp()).collect();
        t.add(&probs, label, finite.then(|| -lp[label]));
    }

    #[test]
    fn tally_ranks_and_losses_are_exact() {
        let mut t = EvalCounts::default();
        let logits = [3.0, 1.0, 2.0, 0.0, -1.0, -2.0, -3.0];
        let p = softmax(&logits);
        add(&mut t, &logits, 0); // top-1
        add(&mut t, &logits, 2); // second
        add(&mut t, &logits, 6); // last of 7: outside the top 5
        let r = t.result();
        assert_eq!((r.count, r.non_finite), (3, 0));
        assert!((r.top1_accuracy - 1.0 / 3.0).abs() < 1e-12);
        assert!((r.top5_accuracy - 2.0 / 3.0).abs() < 1e-12);
        let want = -(p[0].ln() + p[2].ln() + p[6].ln()) / 3.0;
        assert!((r.loss - want).abs() < 1e-12);
        let s = softmax(&[1000.0, 1000.0]);
        assert!((s[0] - 0.5).abs() < 1e-12, "softmax must not overflow");
        // A confident wrong answer costs its real loss (200), not a clamped probability's.
        let mut t = EvalCounts::default();
        add(&mut t, &[200.0, 0.0], 1);
        assert!(
            (t.result().loss - 200.0).abs() < 1e-9,
            "{}",
            t.result().loss
        );
    }

    #[test]
    fn ties_and_non_finite_logits_are_misses() {
        // Every class scores the same (an all-zero fc8): no class is the top one.
        let mut t = EvalCounts::default();
        for label in 0..6 {
            add(&mut t, &[0.0; 6], label);
        }
        let r = t.result();
        assert_eq!((r.top1_accuracy, r.top5_accuracy), (0.0, 0.0), "{r:?}");
        assert!((r.loss - 6f64.ln()).abs() < 1e-12, "{r:?}");
        // A tie for first place with one other class: a top-1 miss, still in the top 5.
        let mut t = EvalCounts::default();
        add(&mut t, &[2.0, 2.0, 1.0, 0.0, -1.0, -2.0], 1);
        assert_eq!((t.top1, t.top5), (0, 1));
        // NaN and inf logits: misses, counted, and the loss says NaN instead of a number.
        let mut t = EvalCounts::default();
        add(&mut t, &[0.5, 2.0, -1.0], 1);
        add(&mut t, &[f32::NAN, 1.0, 0.0], 1);
        add(&mut t, &[0.0, f32::INFINITY, 0.0], 1);
        let r = t.result();
        assert_eq!((r.count, r.non_finite), (3, 2));
        assert!((r.top1_accuracy - 1.0 / 3.0).abs() < 1e-12, "{r:?}");
        assert!(r.loss.is_nan() && !r.is_finite(), "{r:?}");
        assert_eq!(
            serde_json::to_value(r).unwrap()["loss"],
            serde_json::Value::Null
        );
    }

    #[test]
    fn counts_of_parts_add_up_to_the_whole_and_survive_an_all_reduce() {
        let mut seed = 7u32;
        let mut next = || {
            seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            (seed >> 8) as f32 / (1u32 << 24) as f32 * 8.0 - 4.0
        };
        let images: Vec<(Vec<f32>, usize)> = (0..23)
            .map(|i| ((0..7).map(|_| next()).collect(), i % 7))
            .collect();
        let mut whole = EvalCounts::default();
        let mut parts = [EvalCounts::default(); 3];
        for (i, (logits, label)) in images.iter().enumerate() {
            add(&mut whole, logits, *label);
            add(&mut parts[i * 3 / images.len()], logits, *label);
        }
        assert!(whole.top1 > 0 && whole.top1 < whole.top5 && whole.top5 < whole.count);
        let merged = parts.iter().fold(EvalCounts::default(), |a, p| a.merge(p));
        assert_eq!(
            (merged.count, merged.top1, merged.top5, merged.non_finite),
            (whole.count, whole.top1, whole.top5, whole.non_finite)
        );
        assert!((merged.loss_sum - whole.loss_sum).abs() <= 1e-12 * whole.loss_sum.abs());
        let back = EvalCounts::from_sums(&merged.to_sums());
        assert_eq!(back, merged);
        assert_eq!(back.result().top1_accuracy, whole.result().top1_accuracy);
        // One part with a NaN image makes the merged loss NaN, never a plausible number.
        let mut bad = EvalCounts::default();
        add(&mut bad, &[f32::NAN, 0.0], 0);
        let r = merged.merge(&bad).result();
        assert!(
            r.loss.is_nan() && r.non_finite == 1 && r.count == 24,
            "{r:?}"
        );
    }

    #[test]
    fn ten_view_loss_is_the_loss_of_the_averaged_softmax() {
        let views = [[1.0f32, 0.0, -1.0], [-2.0, 3.0, 0.5]];
        let mut sc = ImageScores {
            probs: vec![0.0; 3],
            label_logp: Vec::new(),
            bad: false,
        };
        for v in &views {
            let lp = log_softmax(v);
            sc.label_logp.push(lp[2]);
            for (a, l) in sc.probs.iter_mut().zip(lp) {
                *a += l.exp() / 2.0;
            }
        }
        let want = -sc.probs[2].ln();
        assert!((sc.loss().unwrap() - want).abs() < 1e-12);
        sc.bad = true;
        assert_eq!(sc.loss(), None);
    }
}
