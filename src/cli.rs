//! Command-line parsing only: every command turns its flags into a typed config and calls one
//! library function.
use alexnet::dataset::Encoding;
use alexnet::ingest::{IngestConfig, ShardPart};
use clap::{Args, Parser, Subcommand, ValueEnum};
use std::path::PathBuf;

/// AlexNet end to end: ImageNet folders to Parquet shards, training on wgpu, feature export.
#[derive(Parser)]
#[command(name = "alexnet", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Turn a folder of images into Parquet shards (pixels, labels, statistics).
    Ingest(IngestArgs),
    /// Show what a shard file, directory or set holds.
    Inspect(InspectArgs),
}

/// `image` column encodings as typed on the command line.
#[derive(Clone, Copy, ValueEnum)]
enum EncodingArg {
    Raw,
    Jpeg,
    Png,
}

#[derive(Args)]
struct IngestArgs {
    /// Raw folder: class subfolders (RAW/<wnid>/*.JPEG), or flat images with --labels.
    raw: PathBuf,
    /// Output: X.parquet for one file, otherwise a directory of part-NNNNN.parquet shards.
    out: PathBuf,
    /// Side S of the stored images (short side resized to S, centre S×S crop).
    #[arg(long, default_value_t = 256)]
    size: usize,
    /// How the `image` column stores pixels.
    #[arg(long, value_enum, default_value = "raw")]
    encoding: EncodingArg,
    /// Label file of a flat folder: LOC_val_solution.csv or devkit ground truth (with --synsets).
    #[arg(long)]
    labels: Option<PathBuf>,
    /// Class order: a text file of wnids, one per line, or existing shards to match.
    #[arg(long)]
    classes: Option<PathBuf>,
    /// Devkit synset list: the wnid of ILSVRC id i on line i (for devkit ground truth).
    #[arg(long)]
    synsets: Option<PathBuf>,
    /// Inputs per shard (directory output).
    #[arg(long, default_value_t = 1024)]
    shard_rows: usize,
    /// Write only shards k with k mod N = I, so N machines can fill one folder.
    #[arg(long, value_name = "I/N")]
    shard: Option<ShardPart>,
    /// Worker threads (default: all cores).
    #[arg(long)]
    jobs: Option<usize>,
    /// Keep complete shards and redo the rest.
    #[arg(long, conflicts_with = "overwrite")]
    resume: bool,
    /// Replace existing output.
    #[arg(long)]
    overwrite: bool,
    /// Fail (non-zero exit) if any input is rejected.
    #[arg(long)]
    strict: bool,
    /// Largest image (width·height) decoded; bigger ones are rejected as decompression bombs.
    #[arg(long, default_value_t = alexnet::ingest::DEFAULT_MAX_PIXELS)]
    max_pixels: u64,
    /// Image bytes per Parquet row group.
    #[arg(long, default_value_t = 32 << 20)]
    row_group_bytes: usize,
    /// No progress output.
    #[arg(long)]
    quiet: bool,
}

#[derive(Args)]
struct InspectArgs {
    /// Shard files and/or directories of shards, read as one set.
    #[arg(required = true)]
    data: Vec<PathBuf>,
    /// Print the merged statistics as JSON (the footer's field names).
    #[arg(long)]
    json: bool,
}

/// Prints to stdout; a closed pipe (`| head`) is not an error.
fn print_stdout(text: &str) -> anyhow::Result<()> {
    use std::io::Write;
    match std::io::stdout().lock().write_all(text.as_bytes()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        r => Ok(r?),
    }
}

pub fn run() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Ingest(a) => {
            let mut cfg = IngestConfig::new(a.raw, a.out);
            cfg.size = a.size;
            cfg.encoding = match a.encoding {
                EncodingArg::Raw => Encoding::Raw,
                EncodingArg::Jpeg => Encoding::Jpeg,
                EncodingArg::Png => Encoding::Png,
            };
            cfg.labels = a.labels;
            cfg.classes = a.classes;
            cfg.synsets = a.synsets;
            cfg.shard_rows = a.shard_rows;
            cfg.shard = a.shard;
            if let Some(j) = a.jobs {
                cfg.jobs = j;
            }
            cfg.resume = a.resume;
            cfg.overwrite = a.overwrite;
            cfg.strict = a.strict;
            cfg.max_pixels = a.max_pixels;
            cfg.row_group_bytes = a.row_group_bytes;
            cfg.progress = !a.quiet;
            let summary = alexnet::ingest::ingest(&cfg)?;
            eprintln!("{summary}");
            Ok(())
        }
        Command::Inspect(a) => {
            let report = alexnet::dataset::inspect(&a.data)?;
            let text = if a.json {
                report.json() + "\n"
            } else {
                report.text()
            };
            print_stdout(&text)
        }
    }
}
