//! The commands that run a checkpoint: `eval`, `forward`, `predict`.
use super::devices::DeviceChoice;
use super::{print_stdout, serde_args, CommandError};
use clap::Args;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

const BATCH: usize = 128;
const TOP: usize = 5;

/// `alexnet eval`.
#[derive(Clone, Debug, PartialEq, Args, Serialize, Deserialize)]
pub struct EvalArgs {
    /// The checkpoint (ours, or a PyTorch state dict saved as safetensors).
    #[arg(long)]
    pub checkpoint: PathBuf,
    /// Shards to score.
    #[arg(required = true)]
    #[serde(with = "serde_args::one_or_many")]
    pub data: Vec<PathBuf>,
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
    /// Also write the --json object to this file (.json; never half written).
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
    /// The checkpoint (ours, or a PyTorch state dict saved as safetensors).
    #[arg(long)]
    pub checkpoint: PathBuf,
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
}

pub(super) fn eval(a: EvalArgs) -> Result<(), CommandError> {
    if let Some(out) = &a.out {
        use crate::output_check::{check, Format, Output};
        let mut inputs: Vec<&std::path::Path> = vec![&a.checkpoint];
        inputs.extend(a.data.iter().map(PathBuf::as_path));
        check(&Output::new(out, Format::Json, &inputs, a.overwrite))?;
    }
    let job = crate::train::EvalJob {
        checkpoint: a.checkpoint,
        data: a.data,
        view: if a.ten_crop {
            crate::train::View::TenCrop
        } else {
            crate::train::View::Centre
        },
        batch: a.batch,
        device: a.device.device()?,
        input_size: a.input_size,
    };
    let r = crate::train::eval_checkpoint(&job)?;
    if r.non_finite > 0 {
        eprintln!(
            "warning: {} of {} images got NaN or inf logits and count as misses (the loss is NaN): the checkpoint has diverged; use an earlier one, or train again with a lower --lr",
            r.non_finite, r.count
        );
    }
    let json = serde_json::to_string(&r)?;
    if let Some(path) = &a.out {
        // A killed eval never leaves half a result that a pipeline would take as done.
        crate::atomic::write_bytes(path, (json.clone() + "\n").as_bytes())?;
    }
    if a.json {
        println!("{json}");
    } else {
        println!(
            "{} images: loss {:.4}, top-1 accuracy {:.2}% (error {:.2}%), top-5 accuracy {:.2}%",
            r.count,
            r.loss,
            r.top1_accuracy * 100.0,
            (1.0 - r.top1_accuracy) * 100.0,
            r.top5_accuracy * 100.0
        );
    }
    Ok(())
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
    let mut cfg = crate::predict::PredictConfig::new(a.checkpoint, a.inputs);
    cfg.classes = a.classes;
    cfg.data = a.data;
    if a.top == 0 {
        return Err("--top 0 would show no class; give at least 1 (default 5)".into());
    }
    if a.max_pixels == 0 {
        return Err("--max-pixels 0 would refuse every image; give the largest width·height to decode (default 89478485)".into());
    }
    cfg.top = a.top;
    cfg.max_pixels = a.max_pixels;
    cfg.device = a.device.device()?;
    cfg.input_size = a.input_size;
    let answers = crate::predict::predict(&cfg)?;
    let mut text = String::new();
    for p in &answers {
        if a.json {
            text += &(serde_json::to_string(p)? + "\n");
        } else {
            text += &p.to_string();
        }
    }
    print_stdout(&text)?;
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
