//! `alexnet eval` of one network or an ensemble (the paper's Section 7): every checkpoint
//! scores the shards with its own preprocessing, one after another so that only one network
//! is in memory at a time, and the ensemble's answer is the mean of their softmax outputs
//! (over the ten views too). Networks trained with the classes in another order are mapped
//! by wnid (the `classes` key `train` records in every checkpoint).
use super::eval::{evaluate_each, EvalCounts, ImageScores};
use super::infer::Inference;
use super::input::checkpoint_mean;
use super::{EvalResult, TrainError, View};
use crate::dataset::part_of;
use crate::dataset::ShardSet;
use crate::device::Device;
use crate::model::Checkpoint;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

/// The checkpoint metadata key holding the wnids of the model's classes, in label order, as
/// a JSON list (written by `train`; absent from older and imported checkpoints).
pub const CLASSES_KEY: &str = "classes";

/// The wnids a checkpoint's metadata records for its classes, if it records them.
pub fn checkpoint_classes(
    meta: &BTreeMap<String, String>,
    path: &Path,
) -> Result<Option<Vec<String>>, String> {
    let Some(text) = meta.get(CLASSES_KEY) else {
        return Ok(None);
    };
    serde_json::from_str(text).map(Some).map_err(|e| {
        format!(
            "{}: metadata `{CLASSES_KEY}` is not a JSON list of class names ({e}); the file is damaged: train again or use another checkpoint",
            path.display()
        )
    })
}

/// Where each of a network's classes (`member`, in its label order) sits in `reference`:
/// `None` when the order is the same, else `order[j]` = the reference index of class j. Both
/// must hold the same classes; the error names the first class that differs.
pub fn class_order(
    reference: &[String],
    reference_name: &str,
    member: &[String],
    member_name: &str,
) -> Result<Option<Vec<usize>>, String> {
    if member == reference {
        return Ok(None);
    }
    let differs = |what: String| {
        if member.len() == reference.len() {
            format!(
                "{what}; every network of an ensemble, and the data, must have the same classes"
            )
        } else {
            format!(
                "{member_name} has {} classes but {reference_name} has {} classes (the first that differs: {what}); pass the class list (or shards) the model was trained with",
                member.len(),
                reference.len()
            )
        }
    };
    let at: HashMap<&str, usize> = reference
        .iter()
        .enumerate()
        .map(|(i, w)| (w.as_str(), i))
        .collect();
    let mut seen = vec![usize::MAX; reference.len()];
    let mut order = Vec::with_capacity(member.len());
    for (j, w) in member.iter().enumerate() {
        let Some(&i) = at.get(w.as_str()) else {
            return Err(differs(format!(
                "{member_name}: its class {j} `{w}` is not among the classes of {reference_name}"
            )));
        };
        if seen[i] != usize::MAX {
            return Err(format!(
                "{member_name}: class `{w}` is listed twice (classes {} and {j}); the checkpoint's `{CLASSES_KEY}` metadata is damaged",
                seen[i]
            ));
        }
        seen[i] = j;
        order.push(i);
    }
    if let Some(i) = seen.iter().position(|&j| j == usize::MAX) {
        return Err(differs(format!(
            "{reference_name}: its class {i} `{}` is not among the classes of {member_name}",
            reference[i]
        )));
    }
    Ok(Some(order))
}

/// An `alexnet eval` request.
#[derive(Clone, Debug)]
pub struct EvalJob {
    /// The checkpoints: one network, or the members of an ensemble.
    pub checkpoints: Vec<PathBuf>,
    /// Shards to score.
    pub data: Vec<PathBuf>,
    /// Centre crop or ten views.
    pub view: View,
    /// Images per batch.
    pub batch: usize,
    /// The device (`auto`: a GPU if there is one, else the CPU engine).
    pub device: Device,
    /// Input size of a foreign checkpoint without `input_size` metadata.
    pub input_size: Option<usize>,
    /// Images, from the first, whose stored pixels are kept (for the predictions sheet).
    pub keep: usize,
    /// The matrix products' precision on a GPU (`eval --precision`).
    pub precision: crate::gpu::coop::Precision,
    /// Score only part I of N (`eval --shard I/N`, 0-based): the set's rows in file order
    /// cut in N contiguous runs ([`part_of`]).
    pub part: Option<(usize, usize)>,
}

/// One network's own score.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct MemberResult {
    /// Its checkpoint.
    pub checkpoint: PathBuf,
    /// Its score alone.
    #[serde(flatten)]
    pub result: EvalResult,
}

/// What `eval --json` prints: the ensemble's score (the one network's, for one checkpoint)
/// and every member's own.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct EnsembleReport {
    /// The score of the averaged softmax.
    #[serde(flatten)]
    pub ensemble: EvalResult,
    /// Each network alone, in the order given.
    pub members: Vec<MemberResult>,
}

/// An evaluation with its per-image probabilities.
#[derive(Clone, Debug)]
pub struct Ensemble {
    /// The scores.
    pub report: EnsembleReport,
    /// The data's classes (wnids), the order of `probs`' columns.
    pub classes: Vec<String>,
    /// The averaged softmax `[N, classes]`, images in the shards' order.
    pub probs: Vec<f64>,
    /// Each image's label.
    pub labels: Vec<usize>,
    /// The stored side S of the images.
    pub size: usize,
    /// The first `keep` images' stored pixels `[keep,S,S,3]`.
    pub kept: Vec<u8>,
    /// The ensemble's counts (what `report.ensemble` was computed from).
    pub counts: EvalCounts,
    /// Each member's counts, in the order given.
    pub member_counts: Vec<EvalCounts>,
    /// The rows scored: positions in the set's file order.
    pub rows: std::ops::Range<usize>,
    /// Rows in the whole set (all parts).
    pub data_rows: usize,
    /// A digest of the set's content ([`set_digest`]).
    pub data_digest: String,
}

/// The running sums of the members' answers, one row per image.
struct Pool {
    classes: usize,
    members: usize,
    probs: Vec<f64>,
    label_logp: Vec<Vec<f64>>,
    bad: Vec<bool>,
    labels: Vec<usize>,
}

impl Pool {
    /// Adds one member's scores of image `i`; the first member grows the pool.
    fn add(&mut self, i: usize, label: usize, sc: &ImageScores) -> Result<(), String> {
        if i == self.labels.len() {
            self.labels.push(label);
            self.probs.resize(self.probs.len() + self.classes, 0.0);
            self.label_logp.push(Vec::new());
            self.bad.push(false);
        }
        if self.labels.get(i) != Some(&label) {
            return Err(format!(
                "image {i} read differently by two members (label {label}); were the shards changed during the evaluation?"
            ));
        }
        let row = &mut self.probs[i * self.classes..(i + 1) * self.classes];
        for (a, p) in row.iter_mut().zip(&sc.probs) {
            *a += p / self.members as f64;
        }
        self.label_logp[i].extend_from_slice(&sc.label_logp);
        self.bad[i] |= sc.bad;
        Ok(())
    }

    /// The ensemble's score: each image's averaged softmax, its loss from every member's
    /// and view's log-probability of the label (exact where probabilities underflow).
    fn result(&self) -> EvalCounts {
        let mut tally = EvalCounts::default();
        for (i, &label) in self.labels.iter().enumerate() {
            let sc = ImageScores {
                probs: Vec::new(),
                label_logp: self.label_logp[i].clone(),
                bad: self.bad[i],
            };
            let row = &self.probs[i * self.classes..(i + 1) * self.classes];
            tally.add(row, label, sc.loss());
        }
        tally
    }
}

/// Scores the shards with every checkpoint of `job`, one at a time, and averages their
/// softmax outputs. Each network subtracts its own mean image and takes its own input size
/// and scale; classes are mapped by wnid where a checkpoint records them. Every checkpoint's
/// classes are checked before any is run.
pub fn eval_checkpoints(job: &EvalJob) -> Result<Ensemble, TrainError> {
    if job.checkpoints.is_empty() {
        return Err(TrainError::Mismatch(
            "no checkpoint to evaluate; pass --checkpoint (once per network of an ensemble)".into(),
        ));
    }
    if job.batch == 0 {
        return Err(TrainError::Mismatch(
            "--batch 0: evaluation needs at least one image per batch (default 128)".into(),
        ));
    }
    let set = ShardSet::open(&job.data)?;
    for gap in set.incomplete() {
        eprintln!("warning: {gap}; scoring the images that are there");
    }
    // First: a score over no images would be a perfect loss of 0, whatever else is wrong.
    if set.is_empty() {
        return Err(TrainError::EmptySet(set.files()[0].clone()));
    }
    let first = set.files()[0].display().to_string();
    let classes = set.classes().to_vec();
    // The class lists first, from the metadata alone: a mismatch in the last member must not
    // wait for the others to be scored.
    for path in &job.checkpoints {
        if let Some(meta) = Checkpoint::read_metadata(path) {
            if let Some(wnids) = checkpoint_classes(&meta, path).map_err(TrainError::Mismatch)? {
                class_order(&classes, &first, &wnids, &path.display().to_string())
                    .map_err(TrainError::Mismatch)?;
            }
        }
    }
    let rows = match job.part {
        Some((i, n)) => part_of(set.len(), i, n),
        None => 0..set.len(),
    };
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    let mut pool = Pool {
        classes: classes.len(),
        members: job.checkpoints.len(),
        probs: Vec::new(),
        label_logp: Vec::new(),
        bad: Vec::new(),
        labels: Vec::new(),
    };
    let mut kept = Vec::new();
    let mut members = Vec::new();
    let mut member_counts = Vec::new();
    for (m, path) in job.checkpoints.iter().enumerate() {
        let ck = Checkpoint::load(path, job.input_size)?;
        if ck.config.classes != classes.len() {
            return Err(TrainError::Mismatch(format!(
                "{} predicts {} classes but {first} has {}",
                path.display(),
                ck.config.classes,
                classes.len()
            )));
        }
        let order = match checkpoint_classes(&ck.run_state, path).map_err(TrainError::Mismatch)? {
            Some(w) => class_order(&classes, &first, &w, &path.display().to_string())
                .map_err(TrainError::Mismatch)?,
            None => None,
        };
        let (mean, _) = checkpoint_mean(&ck, path, &set).map_err(TrainError::Mismatch)?;
        let batch = job.batch.min(rows.len().max(1));
        let net = Inference::open_at(
            job.precision,
            job.device,
            &ck.config,
            batch,
            set.size(),
            &mean,
            &ck.params,
        )?;
        drop(ck);
        let mut broken = None;
        let result = evaluate_each(
            net.scorer(),
            &set,
            rows.clone(),
            job.view,
            threads,
            order.as_deref(),
            |s| {
                if let Err(e) = pool.add(s.index, s.label, s.scores) {
                    broken.get_or_insert(e);
                }
                if m == 0 && s.index < job.keep {
                    kept.extend_from_slice(s.pixels);
                }
            },
        )?;
        if let Some(e) = broken {
            return Err(TrainError::Mismatch(format!("{first}: {e}")));
        }
        if pool.labels.len() as u64 != result.count {
            return Err(TrainError::Mismatch(format!(
                "{first}: {} read {} images but the first network {}; were the shards changed during the evaluation?",
                path.display(),
                result.count,
                pool.labels.len()
            )));
        }
        members.push(MemberResult {
            checkpoint: path.clone(),
            result: result.result(),
        });
        member_counts.push(result);
    }
    let counts = pool.result();
    Ok(Ensemble {
        report: EnsembleReport {
            ensemble: counts.result(),
            members,
        },
        counts,
        member_counts,
        data_rows: set.len(),
        data_digest: set_digest(&set),
        rows,
        classes,
        probs: pool.probs,
        labels: pool.labels,
        size: set.size(),
        kept,
    })
}

/// A digest of what a set holds, wherever its files lie: FNV-1a over the image size, the
/// classes, every row group's row count and the bits of the merged mean image. Parts of one
/// evaluation run on other machines must agree on it (`eval --merge`).
pub fn set_digest(set: &ShardSet) -> String {
    let mut parts: Vec<Vec<u8>> = vec![(set.size() as u64).to_le_bytes().to_vec()];
    for c in set.classes() {
        parts.push(c.as_bytes().to_vec());
        parts.push(vec![0]);
    }
    for g in set.row_groups() {
        parts.push((g.rows as u64).to_le_bytes().to_vec());
    }
    parts.push(
        set.stats()
            .mean_image()
            .iter()
            .flat_map(|v| v.to_bits().to_le_bytes())
            .collect(),
    );
    let h = crate::digest::fnv1a_parts(parts.iter().map(Vec::as_slice));
    format!("{h:016x}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn classes_map_by_wnid_in_any_order() {
        let r = names(&["n1", "n2", "n3", "n4"]);
        assert_eq!(class_order(&r, "data", &r, "A").unwrap(), None);
        let m = names(&["n3", "n1", "n4", "n2"]);
        assert_eq!(
            class_order(&r, "data", &m, "A").unwrap(),
            Some(vec![2, 0, 3, 1])
        );
    }

    #[test]
    fn a_class_mismatch_names_the_first_class_that_differs() {
        let r = names(&["n1", "n2", "n3"]);
        let e = class_order(&r, "data", &names(&["n1", "n9", "n3"]), "B.safetensors").unwrap_err();
        assert!(
            e.contains("B.safetensors") && e.contains("class 1 `n9`"),
            "{e}"
        );
        let e = class_order(&r, "data", &names(&["n3", "n1"]), "B").unwrap_err();
        assert!(e.contains("data: its class 1 `n2`"), "{e}");
        let e = class_order(&r, "data", &names(&["n1", "n1", "n3"]), "B").unwrap_err();
        assert!(e.contains("twice"), "{e}");
        let e = class_order(&r, "data", &names(&["n1", "n2", "n3", "n4"]), "B").unwrap_err();
        assert!(
            e.contains("class 3 `n4`") && e.contains("B has 4 classes but data has 3"),
            "{e}"
        );
    }

    #[test]
    fn recorded_classes_are_read_and_damage_is_named() {
        let p = Path::new("A.safetensors");
        let mut meta = BTreeMap::new();
        assert_eq!(checkpoint_classes(&meta, p).unwrap(), None);
        meta.insert(CLASSES_KEY.into(), r#"["n1","n2"]"#.into());
        assert_eq!(
            checkpoint_classes(&meta, p).unwrap(),
            Some(names(&["n1", "n2"]))
        );
        meta.insert(CLASSES_KEY.into(), "n1,n2".into());
        let e = checkpoint_classes(&meta, p).unwrap_err();
        assert!(
            e.contains("A.safetensors") && e.contains("`classes`"),
            "{e}"
        );
    }

    #[test]
    fn the_pool_averages_members_and_its_loss_is_that_of_the_mean() {
        let mut pool = Pool {
            classes: 3,
            members: 2,
            probs: Vec::new(),
            label_logp: Vec::new(),
            bad: Vec::new(),
            labels: Vec::new(),
        };
        let a = [0.7, 0.2, 0.1];
        let b = [0.1, 0.3, 0.6];
        for p in [a, b] {
            let sc = ImageScores {
                probs: p.to_vec(),
                label_logp: vec![p[2].ln()],
                bad: false,
            };
            pool.add(0, 2, &sc).unwrap();
        }
        let want = [0.4, 0.25, 0.35];
        for (g, w) in pool.probs.iter().zip(want) {
            assert!((g - w).abs() < 1e-12, "{:?}", pool.probs);
        }
        let r = pool.result().result();
        // The label is second by the mean (0.35 < 0.4): a top-1 miss though member b had it first.
        assert_eq!((r.top1_accuracy, r.top5_accuracy), (0.0, 1.0));
        assert!((r.loss + 0.35f64.ln()).abs() < 1e-12, "{r:?}");
        let sc = ImageScores {
            probs: a.to_vec(),
            label_logp: vec![],
            bad: false,
        };
        assert!(pool.add(0, 1, &sc).unwrap_err().contains("image 0"));
    }
}
