//! The data commands: `ingest`, `inspect`, `import-idx`.
use super::{print_stdout, serde_args, CommandError};
use crate::dataset::{Encoding, Resize};
use crate::ingest::{IngestConfig, RowOrder, ShardPart, DEFAULT_MAX_PIXELS};
use clap::{Args, ValueEnum};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// Row order of an ingest's output, as typed (`--order`; the seed is `--seed`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Order {
    /// A seeded permutation, so every row group mixes the classes.
    #[default]
    Shuffled,
    /// Class, then file name.
    Sorted,
}

const SIZE: usize = 256;
const SHARD_ROWS: usize = 1024;
const ROW_GROUP_BYTES: usize = 32 << 20;

/// `alexnet ingest`.
#[derive(Clone, Debug, PartialEq, Args, Serialize, Deserialize)]
pub struct IngestArgs {
    /// Raw folder: class subfolders (RAW/<wnid>/*.JPEG), or flat images with --labels.
    pub raw: PathBuf,
    /// Output: X.parquet for one file, otherwise a directory of part-NNNNN.parquet shards.
    pub out: PathBuf,
    /// Side S of the stored images (short side resized to S, centre S×S crop).
    #[arg(long, default_value_t = SIZE)]
    #[serde(default = "size")]
    pub size: usize,
    /// How the `image` column stores pixels.
    #[arg(long, value_enum, default_value_t = Encoding::Raw)]
    #[serde(default = "raw")]
    pub encoding: Encoding,
    /// Resampling filter of the resize to --size: `lanczos3` (sharper) or `bilinear`
    /// (torchvision's default `Resize`, antialiased). Recorded in the footer; a model trained
    /// on the shards records it, and `predict` resizes new images the same way.
    #[arg(long, value_enum, default_value_t = Resize::Lanczos3)]
    #[serde(default)]
    pub resize: Resize,
    /// Label file of a flat folder: LOC_val_solution.csv or devkit ground truth (with --synsets).
    #[arg(long)]
    #[serde(default)]
    pub labels: Option<PathBuf>,
    /// Class order: a text file of wnids, one per line, or existing shards to match.
    #[arg(long)]
    #[serde(default)]
    pub classes: Option<PathBuf>,
    /// Devkit synset list: the wnid of ILSVRC id i on line i (for devkit ground truth).
    #[arg(long)]
    #[serde(default)]
    pub synsets: Option<PathBuf>,
    /// Inputs per shard (directory output).
    #[arg(long, default_value_t = SHARD_ROWS)]
    #[serde(default = "shard_rows")]
    pub shard_rows: usize,
    /// Write only shards k with k mod N = I, so N machines can fill one folder.
    #[arg(long, value_name = "I/N")]
    #[serde(default, with = "serde_args::display_opt")]
    pub shard: Option<ShardPart>,
    /// Row order: `shuffled` (a permutation fixed by --seed, so every row group mixes the
    /// classes, as training's windowed shuffle needs) or `sorted` (class, then file name).
    #[arg(long, value_enum, default_value_t = Order::Shuffled)]
    #[serde(default)]
    pub order: Order,
    /// Seed of the shuffled row order; every machine of a --shard run must use the same one.
    #[arg(long, default_value_t = 0)]
    #[serde(default)]
    pub seed: u64,
    /// Worker threads (default: all cores).
    #[arg(long)]
    #[serde(default)]
    pub jobs: Option<usize>,
    /// Keep complete shards and redo the rest.
    #[arg(long, conflicts_with = "overwrite")]
    #[serde(default)]
    pub resume: bool,
    /// Replace existing output.
    #[arg(long)]
    #[serde(default)]
    pub overwrite: bool,
    /// Fail (non-zero exit) if any input is rejected; the shards holding rejects are not
    /// written, so `--resume` redoes them once the inputs are fixed.
    #[arg(long)]
    #[serde(default)]
    pub strict: bool,
    /// Largest image (width·height) decoded; bigger ones are rejected as decompression bombs.
    #[arg(long, default_value_t = DEFAULT_MAX_PIXELS)]
    #[serde(default = "max_pixels")]
    pub max_pixels: u64,
    /// Image bytes per Parquet row group.
    #[arg(long, default_value_t = ROW_GROUP_BYTES)]
    #[serde(default = "row_group_bytes")]
    pub row_group_bytes: usize,
    /// No progress output.
    #[arg(long)]
    #[serde(default)]
    pub quiet: bool,
}

impl IngestArgs {
    /// Checks what the types do not: run before anything is read.
    pub fn check(&self) -> Result<(), String> {
        if self.size == 0 {
            return Err("size must be at least 1".into());
        }
        if self.max_pixels == 0 {
            return Err("--max-pixels 0 would reject every image; give the largest width·height to decode (default 89478485)".into());
        }
        Ok(())
    }
}

fn size() -> usize {
    SIZE
}
fn raw() -> Encoding {
    Encoding::Raw
}
fn shard_rows() -> usize {
    SHARD_ROWS
}
fn max_pixels() -> u64 {
    DEFAULT_MAX_PIXELS
}
fn row_group_bytes() -> usize {
    ROW_GROUP_BYTES
}

/// `alexnet inspect`.
#[derive(Clone, Debug, PartialEq, Args, Serialize, Deserialize)]
pub struct InspectArgs {
    /// Shard files and/or directories of shards, read as one set.
    #[arg(required = true)]
    #[serde(with = "serde_args::one_or_many")]
    pub data: Vec<PathBuf>,
    /// Print the merged statistics as JSON (the footer's field names).
    #[arg(long)]
    #[serde(default)]
    pub json: bool,
}

/// `alexnet import-idx`.
#[derive(Clone, Debug, PartialEq, Args, Serialize, Deserialize)]
pub struct ImportIdxArgs {
    /// The images file (`*-images-idx3-ubyte`, gzipped or not).
    pub images: PathBuf,
    /// The labels file (`*-labels-idx1-ubyte`, gzipped or not).
    pub labels: PathBuf,
    /// The folder to create: OUT/<NN_class>/<index>.png.
    pub out: PathBuf,
    /// `fashion-mnist`, or a file with one class name per line in label order
    /// [default: the label numbers].
    #[arg(long)]
    #[serde(default)]
    pub classes: Option<String>,
    /// Import only the first N images (at least 1).
    #[arg(long)]
    #[serde(default)]
    pub limit: Option<usize>,
}

/// What `alexnet import` converts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ImportSource {
    /// torchvision's AlexNet state dict, saved with safetensors.
    Torchvision,
}

/// `alexnet import`.
#[derive(Clone, Debug, PartialEq, Args, Serialize, Deserialize)]
pub struct ImportArgs {
    /// Where the weights come from.
    #[arg(value_enum)]
    pub from: ImportSource,
    /// The state dict: `safetensors.torch.save_file(model.state_dict(), FILE)`.
    pub input: PathBuf,
    /// The checkpoint to write.
    pub out: PathBuf,
    /// Replace OUT if it exists.
    #[arg(long)]
    #[serde(default)]
    pub overwrite: bool,
}

pub(super) fn import(a: ImportArgs) -> Result<(), CommandError> {
    use crate::output_check::{check, Format, Output};
    check(&Output::new(
        &a.out,
        Format::Safetensors,
        &[a.input.as_path()],
        a.overwrite,
    ))?;
    let ImportSource::Torchvision = a.from;
    let mut ck = crate::model::import::import_torchvision(&a.input)?.checkpoint;
    // torchvision's weights were trained on its default resize (bilinear): predict repeats it.
    ck.run_state.insert(
        crate::dataset::resize::CHECKPOINT_KEY.into(),
        Resize::Bilinear.as_str().into(),
    );
    ck.save(&a.out)?;
    let c = &ck.config;
    println!(
        "{}: torchvision's AlexNet, {} classes, widths {:?}, input {}² (stored {}² with ImageNet's channel means)",
        a.out.display(),
        c.classes,
        c.widths,
        c.input_size,
        crate::model::import::STORED
    );
    Ok(())
}

pub(super) fn ingest(a: IngestArgs) -> Result<(), CommandError> {
    a.check()?;
    let mut cfg = IngestConfig::new(a.raw, a.out);
    cfg.size = a.size;
    cfg.encoding = a.encoding;
    cfg.resize = a.resize;
    cfg.labels = a.labels;
    cfg.classes = a.classes;
    cfg.synsets = a.synsets;
    cfg.shard_rows = a.shard_rows;
    cfg.shard = a.shard;
    cfg.order = match a.order {
        Order::Shuffled => RowOrder::Shuffled(a.seed),
        Order::Sorted => RowOrder::Sorted,
    };
    if let Some(j) = a.jobs {
        cfg.jobs = j;
    }
    cfg.resume = a.resume;
    cfg.overwrite = a.overwrite;
    cfg.strict = a.strict;
    cfg.max_pixels = a.max_pixels;
    cfg.row_group_bytes = a.row_group_bytes;
    cfg.progress = !a.quiet;
    let summary = crate::ingest::ingest(&cfg)?;
    eprintln!("{summary}");
    Ok(())
}

pub(super) fn inspect(a: InspectArgs) -> Result<(), CommandError> {
    let report = crate::dataset::inspect(&a.data)?;
    let text = if a.json {
        report.json() + "\n"
    } else {
        report.text()
    };
    Ok(print_stdout(&text)?)
}

impl ImportIdxArgs {
    /// Checks what the types do not: run before anything is read.
    pub fn check(&self) -> Result<(), String> {
        if self.limit == Some(0) {
            return Err("limit must be at least 1".into());
        }
        Ok(())
    }
}

pub(super) fn import_idx(a: ImportIdxArgs) -> Result<(), CommandError> {
    a.check()?;
    let classes = match &a.classes {
        Some(s) => s.parse()?,
        None => crate::ingest::idx::ClassNames::Numbers,
    };
    let s = crate::ingest::idx::import_idx(&crate::ingest::idx::ImportIdxConfig {
        images: a.images,
        labels: a.labels,
        out: a.out.clone(),
        classes,
        limit: a.limit,
    })?;
    let verb = if s.skipped { "already held" } else { "wrote" };
    println!(
        "{}: {verb} {} images in {} class folders",
        a.out.display(),
        s.images,
        s.classes
    );
    Ok(())
}
