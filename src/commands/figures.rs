//! The commands that turn a run or a checkpoint into files to look at: `export-features`,
//! `neighbors`, `filters`, `report`.
use super::devices::DeviceChoice;
use super::{print_stdout, serde_args, CommandError};
use crate::export::Layer;
use clap::Args;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

const BATCH: usize = 128;
const K: usize = 6;
const SCALE: u32 = 4;

/// `alexnet export-features`.
#[derive(Clone, Debug, PartialEq, Args, Serialize, Deserialize)]
pub struct ExportFeaturesArgs {
    /// The trained weights (safetensors).
    #[arg(long)]
    pub checkpoint: PathBuf,
    /// Shard files and/or directories of shards, read as one set in file order.
    #[arg(required = true, num_args = 1..)]
    #[serde(with = "serde_args::one_or_many")]
    pub data: Vec<PathBuf>,
    /// The features file to write (.parquet): source, label, wnid, features. Never one of
    /// the inputs, nor a file inside a DATA folder (it would be read as a shard).
    pub out: PathBuf,
    /// Replace OUT if it exists.
    #[arg(long)]
    #[serde(default)]
    pub overwrite: bool,
    /// The layer whose activations (evaluation view, no dropout) become the vectors.
    #[arg(long, value_enum, default_value_t = Layer::Fc7)]
    #[serde(default = "fc7")]
    pub layer: Layer,
    /// Images per GPU batch.
    #[arg(long, default_value_t = BATCH)]
    #[serde(default = "batch")]
    pub batch: usize,
    /// The adapter [default: the first discrete or integrated GPU, else adapter 0].
    #[command(flatten)]
    #[serde(flatten)]
    pub device: DeviceChoice,
    /// Input size of a checkpoint made by another framework that does not record it.
    #[arg(long)]
    #[serde(default)]
    pub input_size: Option<usize>,
    /// Export only part I of N (the shard files split in N runs of consecutive files), into
    /// OUT/LAYER-IIIII-of-NNNNN.parquet, OUT then being a directory: N tasks of a job array
    /// write the parts, read together as one dataset (docs/job-arrays.md).
    #[arg(long, value_name = "I/N")]
    #[serde(default, with = "serde_args::display_opt")]
    pub shard: Option<crate::ingest::ShardPart>,
    /// No progress bar.
    #[arg(long)]
    #[serde(default)]
    pub quiet: bool,
}

fn fc7() -> Layer {
    Layer::Fc7
}
fn batch() -> usize {
    BATCH
}
fn k() -> usize {
    K
}
fn scale() -> u32 {
    SCALE
}

/// `alexnet neighbors`.
#[derive(Clone, Debug, PartialEq, Args, Serialize, Deserialize)]
pub struct NeighborsArgs {
    /// A features file written by export-features.
    pub features: PathBuf,
    /// The query: a source path exactly as stored, or a row index.
    #[arg(
        long,
        required_unless_present = "query_image",
        conflicts_with = "query_image"
    )]
    #[serde(default)]
    pub query: Option<String>,
    /// Query with a new image instead: embedded through --checkpoint as export-features
    /// embedded the file's rows (resized as the file's shards, their mean image subtracted).
    #[arg(long, value_name = "FILE", requires = "checkpoint")]
    #[serde(default)]
    pub query_image: Option<PathBuf>,
    /// The checkpoint the features file was exported with (for --query-image).
    #[arg(long, requires = "query_image")]
    #[serde(default)]
    pub checkpoint: Option<PathBuf>,
    /// Where --query-image's network runs [default: the first GPU, else the CPU engine].
    #[command(flatten)]
    #[serde(flatten)]
    pub device: DeviceChoice,
    /// Neighbours to list (the query itself is left out).
    #[arg(short, long, default_value_t = K)]
    #[serde(default = "k")]
    pub k: usize,
    /// Also draw the query and its neighbours side by side into this PNG.
    #[arg(long)]
    #[serde(default)]
    pub sheet: Option<PathBuf>,
    /// Shards holding the pixels for --sheet [default: those named in the features file].
    #[arg(long)]
    #[serde(default, with = "serde_args::one_or_many")]
    pub data: Vec<PathBuf>,
    /// Print one JSON object: query and neighbours (row, source, label, wnid, distance).
    #[arg(long)]
    #[serde(default)]
    pub json: bool,
    /// Replace the --sheet image if it exists.
    #[arg(long)]
    #[serde(default)]
    pub overwrite: bool,
}

/// `alexnet filters`.
#[derive(Clone, Debug, PartialEq, Args, Serialize, Deserialize)]
pub struct FiltersArgs {
    /// The trained weights (safetensors).
    #[arg(long)]
    pub checkpoint: PathBuf,
    /// The PNG to write.
    pub out: PathBuf,
    /// Screen pixels per kernel pixel (at least 1).
    #[arg(long, default_value_t = SCALE)]
    #[serde(default = "scale")]
    pub scale: u32,
    /// Input size of a checkpoint made by another framework that does not record it.
    #[arg(long)]
    #[serde(default)]
    pub input_size: Option<usize>,
    /// Replace OUT if it exists.
    #[arg(long)]
    #[serde(default)]
    pub overwrite: bool,
}

/// `alexnet report`.
#[derive(Clone, Debug, PartialEq, Args, Serialize, Deserialize)]
pub struct ReportArgs {
    /// The run directories (a pipeline stage may name one as `run`).
    #[arg(required = true, num_args = 1..)]
    #[serde(alias = "run", with = "serde_args::one_or_many")]
    pub runs: Vec<PathBuf>,
    /// Where to write the image [default: RUN/report.png for one run, report.png in the
    /// runs' common parent for several].
    #[arg(long)]
    #[serde(default)]
    pub out: Option<PathBuf>,
    /// Draw the loss on a log scale (one run).
    #[arg(long)]
    #[serde(default)]
    pub log_loss: bool,
    /// The title's name [default: the run directory's name].
    #[arg(long)]
    #[serde(default)]
    pub title: Option<String>,
    /// Print the comparison table and write it as OUT.md and OUT.json beside the image.
    #[arg(long)]
    #[serde(default)]
    pub table: bool,
    /// The training top-1 error the table counts steps to, in percent (the paper's
    /// Figure 1: 25).
    #[arg(long, default_value_t = 25.0)]
    #[serde(default = "threshold")]
    pub threshold: f64,
    /// Replace the image (and the tables) if they exist.
    #[arg(long)]
    #[serde(default)]
    pub overwrite: bool,
}

fn threshold() -> f64 {
    crate::export::compare::DEFAULT_THRESHOLD * 100.0
}

impl ReportArgs {
    /// The image this report writes: `--out`, or the default for one run or several.
    pub fn image(&self) -> PathBuf {
        match (&self.out, self.runs.as_slice(), self.table) {
            (Some(out), ..) => out.clone(),
            (None, [run], false) => run.join("report.png"),
            (None, runs, _) => crate::export::compare::common_parent(runs).join("report.png"),
        }
    }
}

pub(super) fn export_features(a: ExportFeaturesArgs) -> Result<(), CommandError> {
    let mut cfg = crate::export::ExportConfig::new(a.checkpoint, a.data, a.out);
    cfg.layer = a.layer;
    cfg.batch = a.batch;
    cfg.device = a.device.device()?;
    cfg.input_size = a.input_size;
    cfg.progress = !a.quiet;
    cfg.overwrite = a.overwrite;
    cfg.part = a.shard;
    let summary = crate::export::export_features(&cfg)?;
    println!("{summary}");
    Ok(())
}

pub(super) fn neighbors(a: NeighborsArgs) -> Result<(), CommandError> {
    let query_image = match (a.query_image, a.checkpoint) {
        (Some(image), Some(checkpoint)) => Some(crate::export::QueryImage {
            image,
            checkpoint,
            device: a.device.device()?,
        }),
        _ => None,
    };
    let result = crate::export::neighbors(&crate::export::NeighborsConfig {
        features: a.features,
        query: a.query.unwrap_or_default(),
        k: a.k,
        sheet: a.sheet,
        data: a.data,
        overwrite: a.overwrite,
        query_image,
    })?;
    if a.json {
        print_stdout(&(serde_json::to_string(&result)? + "\n"))?;
    } else {
        print_stdout(&result.to_string())?;
    }
    Ok(())
}

pub(super) fn filters(a: FiltersArgs) -> Result<(), CommandError> {
    let (w, h) = crate::export::write_filters(&crate::export::FiltersConfig {
        checkpoint: a.checkpoint,
        out: a.out.clone(),
        scale: a.scale,
        input_size: a.input_size,
        overwrite: a.overwrite,
    })?;
    println!("{}: {w}×{h}", a.out.display());
    Ok(())
}

pub(super) fn report(a: ReportArgs) -> Result<(), CommandError> {
    use crate::export::{compare, plot};
    if let ([run], false) = (a.runs.as_slice(), a.table) {
        let opts = plot::ReportOptions {
            title: a.title,
            log_loss: a.log_loss,
            overwrite: a.overwrite,
        };
        println!(
            "{}",
            plot::write_report_with(run, a.out.as_deref(), &opts)?.display()
        );
        return Ok(());
    }
    if a.log_loss {
        return Err("--log-loss draws one run's own figure; the comparison of several runs (or --table) has linear axes".into());
    }
    if !(a.threshold > 0.0 && a.threshold <= 100.0) {
        return Err(format!(
            "--threshold {}: give a training error in percent, above 0 and at most 100",
            a.threshold
        )
        .into());
    }
    let opts = compare::CompareOptions {
        title: a.title.clone(),
        threshold: a.threshold / 100.0,
        table: a.table,
        overwrite: a.overwrite,
    };
    let c = compare::write_comparison(&a.runs, &a.image(), &opts)?;
    if let Some((md, json)) = &c.tables {
        print_stdout(&compare::markdown(&c.rows, opts.threshold))?;
        eprintln!(
            "wrote {}, {} and {}",
            c.image.display(),
            md.display(),
            json.display()
        );
    } else {
        println!("{}", c.image.display());
    }
    Ok(())
}
