//! The commands that run a checkpoint: `eval`, `forward`, `predict`.
use super::devices::DeviceChoice;
use super::{print_stdout, serde_args, CommandError};
use crate::gpu::coop::Precision;
use crate::ingest::ShardPart;
use clap::Args;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

const BATCH: usize = 128;
const TOP: usize = 5;

/// `alexnet eval`.
#[derive(Clone, Debug, PartialEq, Args, Serialize, Deserialize)]
pub struct EvalArgs {
    /// The checkpoint (ours, or a PyTorch state dict saved as safetensors); give it several
    /// times for an ensemble, whose softmax outputs are averaged.
    #[arg(long, required_unless_present = "merge")]
    #[serde(default, with = "serde_args::one_or_many")]
    pub checkpoint: Vec<PathBuf>,
    /// Shards to score.
    #[arg(required_unless_present = "merge")]
    #[serde(default, with = "serde_args::one_or_many")]
    pub data: Vec<PathBuf>,
    /// Score only part I of N (from 0) of the data's rows in file order, and write the
    /// part's counts to --out (required), for `--merge` to add up (docs/job-arrays.md).
    #[arg(long, value_name = "I/N", requires = "out", conflicts_with = "sheet")]
    #[serde(default, with = "serde_args::display_opt")]
    pub shard: Option<ShardPart>,
    /// Add up the parts `--shard I/N --out PART` wrote (every part once, all of one
    /// evaluation) and report the whole set's score, as eval without --shard does.
    #[arg(
        long,
        value_name = "PART",
        num_args = 1..,
        conflicts_with_all = ["checkpoint", "data", "shard", "ten_crop", "sheet"]
    )]
    #[serde(default)]
    pub merge: Vec<PathBuf>,
    /// The paper's ten views (corners and centre, mirrored), softmax averaged.
    #[arg(long)]
    #[serde(default)]
    pub ten_crop: bool,
    /// Print one JSON object: count, loss, top1_accuracy, top5_accuracy, non_finite (images
    /// whose logits were NaN or inf: misses, and the loss is then null). A tie with another
    /// class is a miss.
    #[arg(long)]
    #[serde(default)]
    pub json: bool,
    /// Also write the --json object to this file (.json; never half written); with --shard,
    /// the part's counts and what identifies the evaluation.
    #[arg(long)]
    #[serde(default)]
    pub out: Option<PathBuf>,
    /// Replace --out if it exists.
    #[arg(long)]
    #[serde(default)]
    pub overwrite: bool,
    /// Images per GPU batch (at least 1).
    #[arg(long, default_value_t = BATCH)]
    #[serde(default = "batch")]
    pub batch: usize,
    /// The adapter [default: adapter 0].
    #[command(flatten)]
    #[serde(flatten)]
    pub device: DeviceChoice,
    /// Input size of a checkpoint that does not record one.
    #[arg(long)]
    #[serde(default)]
    pub input_size: Option<usize>,
    /// Draw the first --sheet-count images with their five most probable classes as bars,
    /// the true class's in red (the paper's Figure 4), into this PNG.
    #[arg(long)]
    #[serde(default)]
    pub sheet: Option<PathBuf>,
    /// Images on the --sheet (1 to 64).
    #[arg(long, default_value_t = SHEET_COUNT)]
    #[serde(default = "sheet_count")]
    pub sheet_count: usize,
    /// Class names for the --sheet: a text file with a wnid first on each line and its human
    /// name after it (`LOC_synset_mapping.txt`) [default: the shards' wnids].
    #[arg(long)]
    #[serde(default)]
    pub classes: Option<PathBuf>,
    /// `fp32`, or `mixed`: f16 tensor-core kernels may run the matrix products on a GPU that
    /// has cooperative matrices (elsewhere: fp32, with a warning; docs/devices.md).
    #[arg(long, value_enum, default_value_t = Precision::Fp32)]
    #[serde(default, skip_serializing_if = "Precision::is_fp32")]
    pub precision: Precision,
}

const SHEET_COUNT: usize = 8;

fn sheet_count() -> usize {
    SHEET_COUNT
}

fn batch() -> usize {
    BATCH
}
fn top() -> usize {
    TOP
}
fn max_pixels() -> u64 {
    crate::ingest::DEFAULT_MAX_PIXELS
}

/// How `forward`'s input images were normalised.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Normalize {
    /// As the network takes them: (pixel − the checkpoint's mean image) · input_scale.
    #[default]
    None,
    /// As torchvision's `Normalize` leaves them: (pixel/255 − mean) / std per channel with
    /// ImageNet's mean [0.485, 0.456, 0.406] and std [0.229, 0.224, 0.225].
    Imagenet,
}

/// `alexnet forward`.
#[derive(Clone, Debug, PartialEq, Args, Serialize, Deserialize)]
pub struct ForwardArgs {
    /// The checkpoint.
    #[arg(long)]
    pub checkpoint: PathBuf,
    /// safetensors file holding `images` [N,3,H,W] f32.
    #[arg(long)]
    pub input: PathBuf,
    /// safetensors file to write (never the input or the checkpoint).
    #[arg(long)]
    pub out: PathBuf,
    /// What `images` hold: `none` (the network's input, (pixel − mean image) · input_scale,
    /// pixel values 0..255, with the checkpoint's mean image centre-cropped to H×W) or
    /// `imagenet` (torchvision's (pixel/255 − mean) / std, turned into the former here).
    #[arg(long, value_enum, default_value_t = Normalize::None)]
    #[serde(default)]
    pub normalize: Normalize,
    /// The adapter [default: adapter 0].
    #[command(flatten)]
    #[serde(flatten)]
    pub device: DeviceChoice,
    /// Replace OUT if it exists.
    #[arg(long)]
    #[serde(default)]
    pub overwrite: bool,
}

/// `alexnet predict`.
#[derive(Clone, Debug, PartialEq, Args, Serialize, Deserialize)]
pub struct PredictArgs {
    /// The checkpoint (ours, or a PyTorch state dict saved as safetensors); give it several
    /// times for an ensemble, whose softmax outputs are averaged.
    #[arg(long, required = true)]
    #[serde(with = "serde_args::one_or_many")]
    pub checkpoint: Vec<PathBuf>,
    /// Image files and/or directories of images (searched recursively).
    #[arg(required = true)]
    #[serde(with = "serde_args::one_or_many")]
    pub inputs: Vec<PathBuf>,
    /// Class names: a text file with a wnid first on each line and its human name after it
    /// (`LOC_synset_mapping.txt`), or the training shards [default: --data's classes, else
    /// class numbers only].
    #[arg(long)]
    #[serde(default)]
    pub classes: Option<PathBuf>,
    /// Training shards, for the mean image of a checkpoint made by another framework.
    #[arg(long)]
    #[serde(default, with = "serde_args::one_or_many")]
    pub data: Vec<PathBuf>,
    /// Classes to show per image (at least 1).
    #[arg(long, default_value_t = TOP)]
    #[serde(default = "top")]
    pub top: usize,
    /// Largest image (width·height) decoded; bigger ones are refused as decompression bombs.
    #[arg(long, default_value_t = crate::ingest::DEFAULT_MAX_PIXELS)]
    #[serde(default = "max_pixels")]
    pub max_pixels: u64,
    /// One JSON object per image and line: path, top [{label, wnid, name, probability}], error.
    #[arg(long)]
    #[serde(default)]
    pub json: bool,
    /// The adapter [default: adapter 0].
    #[command(flatten)]
    #[serde(flatten)]
    pub device: DeviceChoice,
    /// Input size of a checkpoint that does not record one.
    #[arg(long)]
    #[serde(default)]
    pub input_size: Option<usize>,
    /// Draw the first --sheet-count images with their five most probable classes as bars,
    /// the true class's in red when the file's folder names it (the paper's Figure 4).
    #[arg(long)]
    #[serde(default)]
    pub sheet: Option<PathBuf>,
    /// Images on the --sheet (1 to 64).
    #[arg(long, default_value_t = SHEET_COUNT)]
    #[serde(default = "sheet_count")]
    pub sheet_count: usize,
    /// Replace the --sheet image if it exists.
    #[arg(long)]
    #[serde(default)]
    pub overwrite: bool,
}

/// Refuses a sheet count the sheet cannot show.
fn check_sheet_count(n: usize) -> Result<(), CommandError> {
    use crate::export::predictions_sheet::MAX_PANELS;
    if n == 0 || n > MAX_PANELS {
        return Err(format!(
            "--sheet-count {n}: a predictions sheet shows 1 to {MAX_PANELS} images (default {SHEET_COUNT})"
        )
        .into());
    }
    Ok(())
}

/// Refuses `out` before any work if it is an input or exists without --overwrite.
fn check_output(
    out: &std::path::Path,
    format: crate::output_check::Format,
    inputs: &[PathBuf],
    overwrite: bool,
) -> Result<(), CommandError> {
    use crate::output_check::{check, Output};
    let inputs: Vec<&std::path::Path> = inputs.iter().map(PathBuf::as_path).collect();
    check(&Output::new(out, format, &inputs, overwrite))?;
    Ok(())
}

/// One score as a line of text.
fn score_line(r: &crate::train::EvalResult) -> String {
    format!(
        "{} images: loss {:.4}, top-1 accuracy {:.2}% (error {:.2}%), top-5 accuracy {:.2}%",
        r.count,
        r.loss,
        r.top1_accuracy * 100.0,
        (1.0 - r.top1_accuracy) * 100.0,
        r.top5_accuracy * 100.0
    )
}

pub(super) fn eval(a: EvalArgs) -> Result<(), CommandError> {
    if !a.merge.is_empty() {
        return eval_merge(&a);
    }
    let inputs: Vec<PathBuf> = a.checkpoint.iter().chain(&a.data).cloned().collect();
    use crate::output_check::Format;
    if let Some(out) = &a.out {
        check_output(out, Format::Json, &inputs, a.overwrite)?;
    }
    if let Some(sheet) = &a.sheet {
        check_sheet_count(a.sheet_count)?;
        check_output(sheet, Format::Png, &inputs, a.overwrite)?;
    }
    let names = a
        .classes
        .as_deref()
        .map(crate::predict::read_class_names)
        .transpose()?;
    let view = if a.ten_crop {
        crate::train::View::TenCrop
    } else {
        crate::train::View::Centre
    };
    let job = crate::train::EvalJob {
        checkpoints: a.checkpoint.clone(),
        data: a.data.clone(),
        view,
        batch: a.batch,
        device: a.device.device()?,
        input_size: a.input_size,
        keep: if a.sheet.is_some() { a.sheet_count } else { 0 },
        precision: a.precision,
        part: a.shard.map(|p| (p.index, p.count)),
    };
    // A part names its checkpoints by content, read before they are scored.
    let ids = match a.shard {
        Some(_) => a
            .checkpoint
            .iter()
            .map(|p| crate::train::CheckpointId::of(p))
            .collect::<Result<Vec<_>, _>>()?,
        None => Vec::new(),
    };
    let e = crate::train::eval_checkpoints(&job)?;
    if let Some(sheet) = &a.sheet {
        eval_sheet(&a, &e, names.as_ref(), sheet)?;
    }
    let file = match a.shard {
        Some(p) => {
            let part = crate::train::EvalPart::new(&e, (p.index, p.count), view, ids);
            eprintln!(
                "part {p}: rows {}..{} of {}",
                e.rows.start, e.rows.end, e.data_rows
            );
            Some(serde_json::to_string(&part)?)
        }
        None => None,
    };
    report(&e.report, a.json, a.out.as_deref(), file)
}

/// `eval --merge PART…`: the whole set's report from its parts.
fn eval_merge(a: &EvalArgs) -> Result<(), CommandError> {
    if let Some(out) = &a.out {
        check_output(
            out,
            crate::output_check::Format::Json,
            &a.merge,
            a.overwrite,
        )?;
    }
    let parts = a
        .merge
        .iter()
        .map(|p| Ok((p.clone(), crate::train::EvalPart::read(p)?)))
        .collect::<Result<Vec<_>, crate::train::EvalPartError>>()?;
    let r = crate::train::merge_parts(&parts)?;
    report(&r, a.json, a.out.as_deref(), None)
}

/// Prints a report as `eval` does (warning about diverged members), and writes `file` (the
/// report's JSON when `None`) to `out`, atomically.
fn report(
    r: &crate::train::EnsembleReport,
    json: bool,
    out: Option<&std::path::Path>,
    file: Option<String>,
) -> Result<(), CommandError> {
    for m in &r.members {
        if m.result.non_finite > 0 {
            eprintln!(
                "warning: {}: {} of {} images got NaN or inf logits and count as misses (the loss is NaN): the checkpoint has diverged; use an earlier one, or train again with a lower --lr",
                m.checkpoint.display(),
                m.result.non_finite,
                m.result.count
            );
        }
    }
    let text = serde_json::to_string(r)?;
    if let Some(path) = out {
        // A killed eval never leaves half a result that a pipeline would take as done.
        let body = file.unwrap_or_else(|| text.clone());
        crate::atomic::write_bytes(path, (body + "\n").as_bytes())?;
    }
    if json {
        println!("{text}");
    } else if r.members.len() == 1 {
        println!("{}", score_line(&r.ensemble));
    } else {
        let mut lines = format!(
            "ensemble of {} networks, {}\n",
            r.members.len(),
            score_line(&r.ensemble)
        );
        for m in &r.members {
            lines += &format!("  {}: {}\n", m.checkpoint.display(), score_line(&m.result));
        }
        print_stdout(&lines)?;
    }
    Ok(())
}

/// The predictions sheet of the first images `eval` scored.
fn eval_sheet(
    a: &EvalArgs,
    e: &crate::train::Ensemble,
    names: Option<&crate::predict::ClassNames>,
    out: &std::path::Path,
) -> Result<(), CommandError> {
    use crate::export::predictions_sheet::{write_predictions, Bar, Panel, MAX_BARS};
    let human: std::collections::HashMap<&str, &str> = names
        .map(|n| {
            n.wnids
                .iter()
                .zip(&n.names)
                .map(|(w, n)| (w.as_str(), n.as_str()))
                .collect()
        })
        .unwrap_or_default();
    let name = |c: usize| {
        let w = &e.classes[c];
        match human.get(w.as_str()) {
            Some(n) if !n.is_empty() => format!("{w} {n}"),
            _ => w.clone(),
        }
    };
    let set = crate::dataset::ShardSet::open(&a.data)?;
    let sources = crate::export::shard_columns::read_shard_names(set.files())?.sources;
    let k = e.classes.len();
    let px = e.size * e.size * 3;
    let shown = e.kept.len() / px.max(1);
    let panels: Vec<Panel> = (0..shown)
        .map(|i| {
            let top = crate::predict::top_of(&e.probs[i * k..(i + 1) * k], MAX_BARS, None);
            Panel {
                pixels: e.kept[i * px..(i + 1) * px].to_vec(),
                caption: sources.get(i).cloned().unwrap_or_default(),
                truth: Some(name(e.labels[i])),
                bars: top
                    .iter()
                    .map(|c| Bar {
                        name: name(c.label),
                        probability: c.probability,
                        truth: c.label == e.labels[i],
                    })
                    .collect(),
            }
        })
        .collect();
    let title = sheet_title(a.checkpoint.len(), &e.report.members[0].checkpoint);
    write_predictions(&panels, e.size, &title, out)?;
    Ok(())
}

/// What a predictions sheet says of the network(s) that made it.
fn sheet_title(members: usize, first: &std::path::Path) -> String {
    if members == 1 {
        format!(
            "five most probable classes by {} (red: the true class)",
            first.display()
        )
    } else {
        format!(
            "five most probable classes by an ensemble of {members} networks (red: the true class)"
        )
    }
}

pub(super) fn forward(a: ForwardArgs) -> Result<(), CommandError> {
    let device = a.device.device()?;
    let job = |input: PathBuf| crate::model::forward::ForwardJob {
        checkpoint: a.checkpoint.clone(),
        input,
        out: a.out.clone(),
        device,
        overwrite: a.overwrite,
    };
    if a.normalize == Normalize::None {
        crate::model::forward::forward(&job(a.input.clone()))?;
        return Ok(());
    }
    // The converted images go to one of the project's temporaries beside OUT (crate::atomic),
    // never committed: dropped whatever happens, and removed by the signal path on Ctrl-C.
    crate::output_check::check(&crate::output_check::Output::new(
        &a.out,
        crate::output_check::Format::Safetensors,
        &[&a.input, &a.checkpoint],
        a.overwrite,
    ))?;
    let ck = crate::model::Checkpoint::load(&a.checkpoint, None)?;
    let (tmp, file) = crate::atomic::Temp::file(&a.out)?;
    drop(file);
    let done = crate::model::normalize::convert_file(&ck, &a.input, tmp.path())
        .map_err(CommandError::from)
        .and_then(|()| {
            crate::model::forward::forward(&job(tmp.path().to_path_buf()))
                .map_err(CommandError::from)
        });
    drop(tmp);
    done
}

/// Runs `predict` and prints the answers; fails (after printing the rest) when a file could
/// not be classified.
pub(super) fn predict(a: PredictArgs) -> Result<(), CommandError> {
    if a.top == 0 {
        return Err("--top 0 would show no class; give at least 1 (default 5)".into());
    }
    if a.max_pixels == 0 {
        return Err("--max-pixels 0 would refuse every image; give the largest width·height to decode (default 89478485)".into());
    }
    if let Some(sheet) = &a.sheet {
        check_sheet_count(a.sheet_count)?;
        let inputs: Vec<PathBuf> = a
            .checkpoint
            .iter()
            .chain(&a.inputs)
            .chain(&a.data)
            .chain(&a.classes)
            .cloned()
            .collect();
        check_output(
            sheet,
            crate::output_check::Format::Png,
            &inputs,
            a.overwrite,
        )?;
    }
    let mut cfg = crate::predict::PredictConfig::new(a.checkpoint.clone(), a.inputs.clone());
    cfg.classes = a.classes.clone();
    cfg.data = a.data.clone();
    cfg.top = a.top;
    cfg.max_pixels = a.max_pixels;
    cfg.device = a.device.device()?;
    cfg.input_size = a.input_size;
    let keep = if a.sheet.is_some() { a.sheet_count } else { 0 };
    let (answers, kept) = crate::predict::predict_keeping(&cfg, keep)?;
    let mut text = String::new();
    for p in &answers {
        if a.json {
            text += &(serde_json::to_string(p)? + "\n");
        } else {
            text += &p.to_string();
        }
    }
    print_stdout(&text)?;
    // Nothing classified: the error below names every file, which says more than "nothing
    // to draw" would.
    if let Some(sheet) = a
        .sheet
        .as_ref()
        .filter(|_| answers.iter().any(|p| p.error.is_none()))
    {
        predict_sheet(&a, &answers, &kept, sheet)?;
    }
    let bad: Vec<String> = answers
        .iter()
        .filter_map(|p| {
            p.error
                .as_ref()
                .map(|e| format!("{}: {e}", p.path.display()))
        })
        .collect();
    if !bad.is_empty() {
        return Err(format!(
            "{} of {} files could not be classified:\n  {}",
            bad.len(),
            answers.len(),
            bad.join("\n  ")
        )
        .into());
    }
    Ok(())
}

/// The predictions sheet of the first images `predict` classified.
fn predict_sheet(
    a: &PredictArgs,
    answers: &[crate::predict::Prediction],
    kept: &crate::predict::Kept,
    out: &std::path::Path,
) -> Result<(), CommandError> {
    use crate::export::predictions_sheet::{write_predictions, Bar, Panel, MAX_BARS};
    let px = kept.side * kept.side * 3;
    let name = |c: &crate::predict::ClassScore| {
        let mut s = c
            .wnid
            .clone()
            .unwrap_or_else(|| format!("class {}", c.label));
        if let Some(n) = &c.name {
            s = format!("{s} {n}");
        }
        s
    };
    let panels: Vec<Panel> = kept
        .answers
        .iter()
        .enumerate()
        .filter(|(_, &i)| answers[i].error.is_none())
        .map(|(j, &i)| {
            let p = &answers[i];
            let truth = p.true_label;
            Panel {
                pixels: kept.pixels[j * px..(j + 1) * px].to_vec(),
                caption: p
                    .path
                    .file_name()
                    .map_or_else(String::new, |n| n.to_string_lossy().into_owned()),
                truth: truth.map(|t| {
                    let parent = p.path.parent().and_then(|d| d.file_name());
                    parent.map_or_else(
                        || format!("class {t}"),
                        |d| d.to_string_lossy().into_owned(),
                    )
                }),
                bars: p
                    .top
                    .iter()
                    .take(MAX_BARS)
                    .map(|c| Bar {
                        name: name(c),
                        probability: c.probability,
                        truth: Some(c.label) == truth,
                    })
                    .collect(),
            }
        })
        .collect();
    if panels.is_empty() {
        return Err(format!(
            "{}: no image could be classified, so there is nothing to draw",
            out.display()
        )
        .into());
    }
    let title = sheet_title(a.checkpoint.len(), &a.checkpoint[0]);
    write_predictions(&panels, kept.side, &title, out)?;
    Ok(())
}
