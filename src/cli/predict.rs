//! `alexnet predict`: flags and output.
use clap::Args;
use std::path::PathBuf;

#[derive(Args)]
pub struct PredictArgs {
    /// The checkpoint (ours, or a PyTorch state dict saved as safetensors).
    #[arg(long)]
    checkpoint: PathBuf,
    /// Image files and/or directories of images (searched recursively).
    #[arg(required = true)]
    inputs: Vec<PathBuf>,
    /// Class names: a text file with a wnid first on each line and its human name after it
    /// (`LOC_synset_mapping.txt`), or the training shards [default: --data's classes, else
    /// class numbers only].
    #[arg(long)]
    classes: Option<PathBuf>,
    /// Training shards, for the mean image of a checkpoint made by another framework.
    #[arg(long)]
    data: Vec<PathBuf>,
    /// Classes to show per image.
    #[arg(long, default_value_t = 5)]
    top: usize,
    /// One JSON object per image and line: path, top [{label, wnid, name, probability}], error.
    #[arg(long)]
    json: bool,
    /// Device: `auto` (the first GPU, else the CPU engine), `cpu`, `lavapipe` or an adapter
    /// index (see `alexnet devices`).
    #[arg(long, default_value = "auto")]
    device: alexnet::device::Device,
    /// Input size of a checkpoint that does not record one.
    #[arg(long)]
    input_size: Option<usize>,
}

/// Runs `predict` and prints the answers; fails (after printing the rest) when a file could
/// not be classified.
pub fn run(a: PredictArgs) -> anyhow::Result<()> {
    let mut cfg = alexnet::predict::PredictConfig::new(a.checkpoint, a.inputs);
    cfg.classes = a.classes;
    cfg.data = a.data;
    cfg.top = a.top.max(1);
    cfg.device = a.device;
    cfg.input_size = a.input_size;
    let answers = alexnet::predict::predict(&cfg)?;
    let mut text = String::new();
    for p in &answers {
        if a.json {
            text += &(serde_json::to_string(p)? + "\n");
        } else {
            text += &p.to_string();
        }
    }
    super::print_stdout(&text)?;
    let bad: Vec<String> = answers
        .iter()
        .filter_map(|p| {
            p.error
                .as_ref()
                .map(|e| format!("{}: {e}", p.path.display()))
        })
        .collect();
    if !bad.is_empty() {
        anyhow::bail!(
            "{} of {} files could not be classified:\n  {}",
            bad.len(),
            answers.len(),
            bad.join("\n  ")
        );
    }
    Ok(())
}
