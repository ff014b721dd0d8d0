//! `alexnet predict`: the top-5 classes of image files, preprocessed exactly as the data a
//! checkpoint was trained and evaluated on: decoded and resized as `ingest` stores images
//! (short side to S, centre S×S crop, S = the side of the checkpoint's mean image), then the
//! evaluation view on a GPU or the CPU engine (centre crop of the model's input, minus the mean image's
//! crop, times `input_scale`), then the network without dropout and a softmax. Several
//! checkpoints make an ensemble: each preprocesses with its own mean image and sizes, they
//! run one after another, and their softmax outputs are averaged (classes mapped by wnid).
//!
//! It sits above `ingest` (decoding and resizing) and `train` (the input stage), as
//! `pipeline` does, because it strings both together.
use crate::dataset::Resize;
use crate::dataset::ShardSet;
use crate::device::Device;
use crate::engine::augment::centre_draws;
use crate::engine::infer::softmax;
use crate::engine::input::{checkpoint_mean, pad_images};
use crate::engine::Inference;
use crate::gpu::GpuError;
use crate::ingest::{decode_image, resize_crop_with, DEFAULT_MAX_PIXELS};
use crate::model::{Checkpoint, CheckpointError, NetworkError};
use crate::train::ensemble::{checkpoint_classes, class_order};
use serde::Serialize;
use std::path::{Path, PathBuf};

/// Images per batch.
const BATCH: usize = 16;

/// What can go wrong in `predict`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PredictError {
    /// The checkpoint could not be read.
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    /// The shards given for statistics or class names could not be read.
    #[error(transparent)]
    Dataset(#[from] crate::dataset::DatasetError),
    /// The network failed.
    #[error(transparent)]
    Network(#[from] NetworkError),
    /// A GPU operation failed.
    #[error(transparent)]
    Gpu(#[from] GpuError),
    /// Opening or running the network (on a GPU or the CPU engine) failed.
    #[error(transparent)]
    Engine(#[from] crate::engine::EngineError),
    /// An input path or the class list is unusable; the message names it and says what to do.
    #[error("{}: {reason}", path.display())]
    Input {
        /// The file or directory.
        path: PathBuf,
        /// What is wrong and what to do.
        reason: String,
    },
    /// The checkpoint and the data or class list do not fit together.
    #[error("{0}")]
    Mismatch(String),
}

/// What `predict` does.
#[derive(Clone, Debug)]
pub struct PredictConfig {
    /// The checkpoints: one network, or the members of an ensemble.
    pub checkpoints: Vec<PathBuf>,
    /// Image files and directories (searched recursively, hidden entries skipped).
    pub inputs: Vec<PathBuf>,
    /// Class names: a text file (a wnid first on each line, the rest of the line its human
    /// name, as `LOC_synset_mapping.txt`), or shards whose footer lists the classes.
    pub classes: Option<PathBuf>,
    /// Shards for the mean image when the checkpoint carries none (made by another
    /// framework); also the class names when `classes` is not given.
    pub data: Vec<PathBuf>,
    /// Classes to report per image.
    pub top: usize,
    /// The device (`auto`: the first real GPU, else the CPU engine).
    pub device: Device,
    /// Input size of a foreign checkpoint that does not record it.
    pub input_size: Option<usize>,
    /// Largest image (width·height) decoded, as `ingest --max-pixels`.
    pub max_pixels: u64,
}

impl PredictConfig {
    /// Top 5 on the automatic device with ingest's pixel limit.
    pub fn new(checkpoints: Vec<PathBuf>, inputs: Vec<PathBuf>) -> PredictConfig {
        PredictConfig {
            checkpoints,
            inputs,
            classes: None,
            data: Vec::new(),
            top: 5,
            device: Device::Auto,
            input_size: None,
            max_pixels: DEFAULT_MAX_PIXELS,
        }
    }
}

/// One class of an answer.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ClassScore {
    /// Index into the model's classes.
    pub label: usize,
    /// The class's wnid (folder name), when a class list was found.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub wnid: Option<String>,
    /// The class's human name, when the class list carries names.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Softmax probability.
    pub probability: f64,
}

/// The answer for one image file.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Prediction {
    /// The file, as found.
    pub path: PathBuf,
    /// The best classes, most probable first; empty when `error` is set.
    pub top: Vec<ClassScore>,
    /// Why the file could not be classified (it is not an image, …).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The true class, when the file's folder is named after one of the classes' wnids.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub true_label: Option<usize>,
}

impl std::fmt::Display for Prediction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "{}", self.path.display())?;
        if let Some(e) = &self.error {
            return writeln!(f, "  error: {e}");
        }
        for c in &self.top {
            let wnid = c.wnid.as_deref().unwrap_or("");
            let name = c
                .name
                .as_deref()
                .map(|n| format!("  {n}"))
                .unwrap_or_default();
            writeln!(
                f,
                "  {:6.2}%  {:>5}  {wnid}{name}",
                c.probability * 100.0,
                c.label
            )?;
        }
        Ok(())
    }
}

/// A class list: wnids and, where the file has them, human names.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ClassNames {
    /// WordNet ids (or folder names) in label order.
    pub wnids: Vec<String>,
    /// Human names in label order (empty strings where there are none).
    pub names: Vec<String>,
}

/// Reads a class list: shards (their footer's classes) or a text file with a wnid first on
/// each line and optionally its human name after it (`n01440764 tench, Tinca tinca`).
pub fn read_class_names(path: &Path) -> Result<ClassNames, PredictError> {
    let is_parquet = path.extension().is_some_and(|e| e == "parquet");
    if is_parquet || path.is_dir() {
        let set = ShardSet::open(&[path.to_path_buf()])?;
        return Ok(ClassNames {
            wnids: set.classes().to_vec(),
            names: vec![String::new(); set.classes().len()],
        });
    }
    let text = std::fs::read_to_string(path).map_err(|e| PredictError::Input {
        path: path.into(),
        reason: format!("cannot read the class list: {e}"),
    })?;
    let mut out = ClassNames::default();
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let (wnid, name) = line.split_once(char::is_whitespace).unwrap_or((line, ""));
        out.wnids.push(wnid.to_string());
        out.names.push(name.trim().to_string());
    }
    if out.wnids.is_empty() {
        return Err(PredictError::Input {
            path: path.into(),
            reason:
                "the class list is empty; give one wnid per line, optionally followed by its name"
                    .into(),
        });
    }
    Ok(out)
}

/// The image files of `inputs`: files as given, directories searched recursively (hidden
/// entries skipped, sorted by path so the output order is stable).
pub fn image_files(inputs: &[PathBuf]) -> Result<Vec<PathBuf>, PredictError> {
    let mut out = Vec::new();
    // Files in folders whose name is not an image's (notes, labels): not failures.
    let mut skipped = Vec::new();
    for p in inputs {
        let meta = std::fs::metadata(p).map_err(|e| PredictError::Input {
            path: p.clone(),
            reason: format!("{e}; pass image files or directories of images"),
        })?;
        if meta.is_dir() {
            let before = out.len();
            walk(p, &mut out, &mut skipped)?;
            if out.len() == before {
                return Err(PredictError::Input {
                    path: p.clone(),
                    reason: "the directory holds no image files (.jpg, .jpeg, .png, .bmp, .webp)"
                        .into(),
                });
            }
        } else {
            out.push(p.clone());
        }
    }
    if !skipped.is_empty() {
        let names: Vec<String> = skipped
            .iter()
            .take(3)
            .map(|p| p.display().to_string())
            .collect();
        eprintln!(
            "note: skipped {} file(s) in the folders whose names are not images' ({}{}); name one on the command line to classify it anyway",
            skipped.len(),
            names.join(", "),
            if skipped.len() > 3 { ", …" } else { "" }
        );
    }
    Ok(out)
}

fn walk(
    dir: &Path,
    out: &mut Vec<PathBuf>,
    skipped: &mut Vec<PathBuf>,
) -> Result<(), PredictError> {
    let err = |e: std::io::Error| PredictError::Input {
        path: dir.into(),
        reason: e.to_string(),
    };
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(err)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            !p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with('.'))
        })
        .collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            walk(&p, out, skipped)?;
        } else if crate::ingest::scan::is_image_name(&p) {
            out.push(p);
        } else {
            skipped.push(p);
        }
    }
    Ok(())
}

/// The stored side S an image is resized to and the mean image `[S,S,3]`: the checkpoint's
/// own statistics, else those of `data` (with a warning).
fn mean_and_side(
    ck: &Checkpoint,
    path: &Path,
    cfg: &PredictConfig,
) -> Result<(usize, Vec<f32>), PredictError> {
    if let Some(s) = &ck.stats {
        return Ok((s.size, s.mean_image.clone()));
    }
    if cfg.data.is_empty() {
        return Err(PredictError::Mismatch(format!(
            "{}: the checkpoint holds no mean image (made by another framework?); pass --data SHARDS with the training shards, whose mean image and size are then used",
            path.display()
        )));
    }
    let set = ShardSet::open(&cfg.data)?;
    let (mean, _) = checkpoint_mean(ck, path, &set).map_err(PredictError::Mismatch)?;
    Ok((set.size(), mean))
}

/// The filter the checkpoint's training images were resized with (`ingest --resize`, which
/// training records), else the one of the `--data` shards, else Lanczos3 (every checkpoint
/// from before the filter was recorded was trained on Lanczos3 shards).
pub(crate) fn resize_of(
    ck: &Checkpoint,
    path: &Path,
    cfg: &PredictConfig,
) -> Result<Resize, PredictError> {
    let key = crate::dataset::resize::CHECKPOINT_KEY;
    let fallback = if ck.run_state.contains_key(key) || cfg.data.is_empty() {
        Resize::Lanczos3
    } else {
        ShardSet::open(&cfg.data)?.resize()
    };
    crate::dataset::resize::recorded(ck.run_state.get(key).map(String::as_str), fallback)
        .map_err(|e| PredictError::Mismatch(format!("{}: {e}", path.display())))
}

/// The class list answers are named by and mapped to: `--classes`, else `--data`'s, else
/// the first checkpoint's recorded wnids (without human names), else none.
fn reference_classes(cfg: &PredictConfig) -> Result<Option<(ClassNames, String)>, PredictError> {
    if let Some(p) = &cfg.classes {
        return Ok(Some((read_class_names(p)?, p.display().to_string())));
    }
    if let Some(first) = cfg.data.first() {
        let set = ShardSet::open(&cfg.data)?;
        let names = ClassNames {
            wnids: set.classes().to_vec(),
            names: vec![String::new(); set.classes().len()],
        };
        return Ok(Some((names, first.display().to_string())));
    }
    for path in &cfg.checkpoints {
        let Some(meta) = Checkpoint::read_metadata(path) else {
            continue;
        };
        if let Some(wnids) = checkpoint_classes(&meta, path).map_err(PredictError::Mismatch)? {
            let names = vec![String::new(); wnids.len()];
            return Ok(Some((
                ClassNames { wnids, names },
                path.display().to_string(),
            )));
        }
    }
    Ok(None)
}

/// Where a checkpoint's classes sit in the reference list (`None`: the same order), after
/// checking it has as many.
fn member_order(
    ck: &Checkpoint,
    path: &Path,
    reference: Option<&(ClassNames, String)>,
) -> Result<Option<Vec<usize>>, PredictError> {
    let Some((classes, from)) = reference else {
        return Ok(None);
    };
    match checkpoint_classes(&ck.run_state, path).map_err(PredictError::Mismatch)? {
        Some(wnids) => class_order(&classes.wnids, from, &wnids, &path.display().to_string())
            .map_err(PredictError::Mismatch),
        None if classes.wnids.len() != ck.config.classes => Err(PredictError::Mismatch(format!(
            "{from}: the class list has {} classes but the model {} has {}; pass the class list (or shards) the model was trained with",
            classes.wnids.len(),
            path.display(),
            ck.config.classes
        ))),
        None => Ok(None),
    }
}

/// The stored pixels of the images a sheet shows.
#[derive(Clone, Debug, Default)]
pub struct Kept {
    /// Their side S (the first checkpoint's).
    pub side: usize,
    /// Which answers they belong to.
    pub answers: Vec<usize>,
    /// Their pixels `[n,S,S,3]`.
    pub pixels: Vec<u8>,
}

/// Classifies every image of `cfg.inputs`. Files that are not readable images get an
/// [`Prediction`] with `error` set; the others their top classes.
pub fn predict(cfg: &PredictConfig) -> Result<Vec<Prediction>, PredictError> {
    predict_keeping(cfg, 0).map(|(answers, _)| answers)
}

/// [`predict`], keeping the stored pixels of the first `keep` images classified.
pub fn predict_keeping(
    cfg: &PredictConfig,
    keep: usize,
) -> Result<(Vec<Prediction>, Kept), PredictError> {
    let files = image_files(&cfg.inputs)?;
    if cfg.checkpoints.is_empty() {
        return Err(PredictError::Mismatch(
            "no checkpoint; pass --checkpoint (once per network of an ensemble)".into(),
        ));
    }
    let reference = reference_classes(cfg)?;
    // Every checkpoint's classes before any network runs.
    if let Some((classes, from)) = &reference {
        for path in &cfg.checkpoints {
            let meta = Checkpoint::read_metadata(path).unwrap_or_default();
            if let Some(w) = checkpoint_classes(&meta, path).map_err(PredictError::Mismatch)? {
                class_order(&classes.wnids, from, &w, &path.display().to_string())
                    .map_err(PredictError::Mismatch)?;
            }
        }
    }
    let classes = reference.as_ref().map(|r| &r.0);
    let mut out: Vec<Prediction> = files
        .iter()
        .map(|f| Prediction {
            path: f.clone(),
            top: Vec::new(),
            error: None,
            true_label: classes.and_then(|c| folder_class(f, c)),
        })
        .collect();
    let mut kept = Kept::default();
    // The averaged softmax of each file, in the reference order.
    let mut sums: Vec<Vec<f64>> = vec![Vec::new(); files.len()];
    let members = cfg.checkpoints.len();
    let mut k = None;
    // Decoding is the same for every network; only the stored side and the resize filter differ.
    let mut stored_at: Vec<((usize, Resize), Decoded)> = Vec::new();
    for (m, path) in cfg.checkpoints.iter().enumerate() {
        let ck = Checkpoint::load(path, cfg.input_size)?;
        if k.is_some_and(|k| k != ck.config.classes) {
            return Err(PredictError::Mismatch(format!(
                "{}: the model has {} classes but {} has {}; every network of an ensemble must have the same classes",
                path.display(),
                ck.config.classes,
                cfg.checkpoints[0].display(),
                k.unwrap_or_default()
            )));
        }
        let classes_here = ck.config.classes;
        k = Some(classes_here);
        let order = member_order(&ck, path, reference.as_ref())?;
        let (side, mean) = mean_and_side(&ck, path, cfg)?;
        let crop = ck.config.input_size;
        if crop > side {
            return Err(PredictError::Mismatch(format!(
                "{}: the model's input is {crop}² but its mean image is {side}²; the checkpoint is inconsistent",
                path.display()
            )));
        }
        // Each member sees the images as its own training data stored them.
        let stored_as = (side, resize_of(&ck, path, cfg)?);
        if !stored_at.iter().any(|(s, _)| *s == stored_as) {
            let decoded = decode_all(&files, stored_as, cfg.max_pixels);
            stored_at.push((stored_as, decoded));
        }
        let stored = &stored_at
            .iter()
            .find(|(s, _)| *s == stored_as)
            .expect("decoded above")
            .1;
        for (o, s) in out.iter_mut().zip(stored) {
            if let (None, Err(e)) = (&o.error, s) {
                o.error = Some(e.clone());
            }
        }
        let good: Vec<usize> = (0..files.len()).filter(|&i| stored[i].is_ok()).collect();
        if m == 0 {
            kept.side = side;
            for &i in good.iter().take(keep) {
                kept.answers.push(i);
                kept.pixels
                    .extend_from_slice(stored[i].as_ref().expect("good"));
            }
        }
        if good.is_empty() {
            continue;
        }
        let batch = good.len().min(BATCH);
        let engine = Inference::open(cfg.device, &ck.config, batch, side, &mean, &ck.params)?;
        drop(ck);
        let net = engine.scorer();
        let draws = centre_draws(batch, side, crop);
        for chunk in good.chunks(batch) {
            let mut images = Vec::with_capacity(batch * side * side * 3);
            for &i in chunk {
                if let Ok(px) = &stored[i] {
                    images.extend_from_slice(px);
                }
            }
            pad_images(&mut images, chunk.len(), batch);
            net.upload_images(&images)?;
            net.forward(&draws)?;
            let all = net.download("logits")?;
            for (j, &i) in chunk.iter().enumerate() {
                let probs = softmax(&all[j * classes_here..(j + 1) * classes_here]);
                let sum = &mut sums[i];
                sum.resize(classes_here, 0.0);
                for (c, p) in probs.into_iter().enumerate() {
                    let at = order.as_ref().map_or(c, |o| o[c]);
                    sum[at] += p / members as f64;
                }
            }
        }
    }
    for (o, sum) in out.iter_mut().zip(&sums) {
        if o.error.is_none() {
            o.top = top_of(sum, cfg.top, classes);
        }
    }
    Ok((out, kept))
}

/// The class of a file inside a folder named after one of the classes' wnids.
fn folder_class(file: &Path, classes: &ClassNames) -> Option<usize> {
    let folder = file.parent()?.file_name()?.to_str()?;
    classes.wnids.iter().position(|w| w == folder)
}

/// Each file's stored pixels `[S,S,3]`, or why it could not be read.
type Decoded = Vec<Result<Vec<u8>, String>>;

/// Every file decoded and resized to `side` with `filter` as ingest stores it, on the CPU
/// cores; failures are per-file errors.
fn decode_all(files: &[PathBuf], (side, filter): (usize, Resize), max_pixels: u64) -> Decoded {
    use rayon::prelude::*;
    files
        .par_iter()
        .map(|f| {
            let bytes = crate::ingest::read_image_file(f, max_pixels)?;
            let d = decode_image(&bytes, max_pixels)?;
            resize_crop_with(d.rgb, side as u32, filter)
        })
        .collect()
}

/// The `n` most probable classes of one row of logits, ties to the lower label.
pub fn top_classes(logits: &[f32], n: usize, classes: Option<&ClassNames>) -> Vec<ClassScore> {
    top_of(&softmax(logits), n, classes)
}

/// The `n` most probable classes of one row of probabilities, ties to the lower label.
pub fn top_of(probs: &[f64], n: usize, classes: Option<&ClassNames>) -> Vec<ClassScore> {
    let mut order: Vec<usize> = (0..probs.len()).collect();
    order.sort_by(|&a, &b| probs[b].total_cmp(&probs[a]).then(a.cmp(&b)));
    order
        .into_iter()
        .take(n)
        .map(|label| ClassScore {
            label,
            wnid: classes.and_then(|c| c.wnids.get(label).cloned()),
            name: classes
                .and_then(|c| c.names.get(label).cloned())
                .filter(|n| !n.is_empty()),
            probability: probs[label],
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_checkpoints_recorded_resize_is_repeated_and_a_bad_one_named() {
        let cfg = crate::model::ModelConfig::small(67, 16, 3);
        let mut ck = Checkpoint::new(cfg.clone(), crate::model::Params::zeros(&cfg).unwrap());
        let pc = PredictConfig::new(vec!["w.safetensors".into()], Vec::new());
        let path = Path::new("w.safetensors");
        // Older checkpoints record nothing: their shards were all Lanczos3.
        assert_eq!(resize_of(&ck, path, &pc).unwrap(), Resize::Lanczos3);
        ck.run_state.insert("resize".into(), "bilinear".into());
        assert_eq!(resize_of(&ck, path, &pc).unwrap(), Resize::Bilinear);
        ck.run_state.insert("resize".into(), "cubic".into());
        let e = resize_of(&ck, path, &pc).unwrap_err().to_string();
        assert!(
            e.contains("w.safetensors") && e.contains("\"cubic\""),
            "{e}"
        );
    }

    #[test]
    fn top_classes_are_sorted_named_and_sum_below_one() {
        let names = ClassNames {
            wnids: (0..7).map(|i| format!("n{i:08}")).collect(),
            names: (0..7)
                .map(|i| {
                    if i == 4 {
                        "goldfish".into()
                    } else {
                        String::new()
                    }
                })
                .collect(),
        };
        let logits = [0.1, 2.0, -1.0, 0.5, 3.0, 2.0, 0.0];
        let top = top_classes(&logits, 5, Some(&names));
        let labels: Vec<usize> = top.iter().map(|c| c.label).collect();
        assert_eq!(
            labels,
            [4, 1, 5, 3, 0],
            "by probability, ties to the lower label"
        );
        assert_eq!(top[0].name.as_deref(), Some("goldfish"));
        assert_eq!(top[1].name, None, "no empty names");
        assert_eq!(top[2].wnid.as_deref(), Some("n00000005"));
        let p: f64 = top.iter().map(|c| c.probability).sum();
        assert!(p < 1.0 && p > 0.9, "{p}");
        assert!((top[1].probability - top[2].probability).abs() < 1e-15);
        assert_eq!(top_classes(&logits[..3], 5, None).len(), 3);
    }

    #[test]
    fn class_lists_with_and_without_names() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("synsets.txt");
        std::fs::write(
            &f,
            "n01440764 tench, Tinca tinca\n\nn01443537\tgoldfish\nn015\n",
        )
        .unwrap();
        let c = read_class_names(&f).unwrap();
        assert_eq!(c.wnids, ["n01440764", "n01443537", "n015"]);
        assert_eq!(c.names, ["tench, Tinca tinca", "goldfish", ""]);
        std::fs::write(&f, "\n  \n").unwrap();
        let e = read_class_names(&f).unwrap_err().to_string();
        assert!(e.contains("synsets.txt") && e.contains("empty"), "{e}");
        let e = image_files(&[dir.path().join("nope")])
            .unwrap_err()
            .to_string();
        assert!(e.contains("nope"), "{e}");
    }
}
