//! `alexnet export onnx|weights`: a checkpoint in a form for other tools.
use super::CommandError;
use crate::model::Checkpoint;
use clap::{Args, ValueEnum};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// What `alexnet export` writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ExportFormat {
    /// An ONNX model: input `pixels` [N,3,I,I] float crops 0..255, output `logits`; the mean
    /// image and input scale are inside the graph.
    Onnx,
    /// The checkpoint without its momentum (half the size; for sharing and inference, not for
    /// `--resume`).
    Weights,
}

/// `alexnet export`.
#[derive(Clone, Debug, PartialEq, Args, Serialize, Deserialize)]
pub struct ExportArgs {
    /// The format.
    #[arg(value_enum)]
    pub format: ExportFormat,
    /// The checkpoint to export.
    #[arg(long)]
    pub checkpoint: PathBuf,
    /// The file to write (`.onnx` or `.safetensors`).
    pub out: PathBuf,
    /// Replace OUT if it exists.
    #[arg(long)]
    #[serde(default)]
    pub overwrite: bool,
}

pub(super) fn export(a: ExportArgs) -> Result<(), CommandError> {
    use crate::output_check::{check, Format, Output};
    let format = match a.format {
        ExportFormat::Onnx => Format::Onnx,
        ExportFormat::Weights => Format::Safetensors,
    };
    check(&Output::new(
        &a.out,
        format,
        &[a.checkpoint.as_path()],
        a.overwrite,
    ))?;
    let mut ck = Checkpoint::load(&a.checkpoint, None)?;
    match a.format {
        ExportFormat::Onnx => {
            let bytes = crate::export::onnx::onnx_model(&ck)
                .map_err(|e| format!("{}: {e}", a.checkpoint.display()))?;
            crate::atomic::write_bytes(&a.out, &bytes)
                .map_err(|e| format!("{e}; check the path and free space"))?;
            let c = &ck.config;
            println!(
                "{}: ONNX opset 17, input `pixels` [N,3,{s},{s}] float 0..255, output `logits` [N,{}] ({} variant)",
                a.out.display(),
                c.classes,
                c.variant(),
                s = c.input_size,
            );
        }
        ExportFormat::Weights => {
            ck.momentum = None;
            ck.save(&a.out)?;
            let size = std::fs::metadata(&a.out).map_or(0, |m| m.len());
            println!(
                "{}: {:.1} MB without momentum",
                a.out.display(),
                size as f64 / 1e6
            );
        }
    }
    Ok(())
}
