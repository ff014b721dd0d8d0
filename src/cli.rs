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
    /// List the adapters wgpu sees, with the limits that matter for training.
    Devices,
    /// Turn a folder of images into Parquet shards (pixels, labels, statistics).
    Ingest(IngestArgs),
    /// Show what a shard file, directory or set holds.
    Inspect(InspectArgs),
    /// Loss and error curves of a run (RUN/metrics.jsonl), as a PNG.
    Report {
        /// The run directory.
        run: PathBuf,
        /// Where to write the image [default: RUN/report.png].
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// IDX files (MNIST, Fashion-MNIST) to class folders of PNGs that `ingest` reads.
    ImportIdx {
        /// The images file (`*-images-idx3-ubyte`, gzipped or not).
        images: PathBuf,
        /// The labels file (`*-labels-idx1-ubyte`, gzipped or not).
        labels: PathBuf,
        /// The folder to create: OUT/<NN_class>/<index>.png.
        out: PathBuf,
        /// `fashion-mnist`, or a file with one class name per line in label order
        /// [default: the label numbers].
        #[arg(long)]
        classes: Option<String>,
        /// Import only the first N images.
        #[arg(long)]
        limit: Option<usize>,
    },
    /// One layer's activations for every image of a shard set, as a Parquet features file.
    ExportFeatures(ExportFeaturesArgs),
    /// The nearest rows of a features file to a query image (the paper's Figure 4).
    Neighbors(NeighborsArgs),
    /// The conv1 kernels of a checkpoint as an image (the paper's Figure 3).
    Filters(FiltersArgs),
    /// Every stage of a pipeline file, in order; stages already done are skipped.
    Run {
        /// The pipeline file, e.g. pipelines/quickstart.toml.
        pipeline: PathBuf,
        /// Run every stage again, even those already done.
        #[arg(long)]
        force: bool,
    },
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

/// Layers `export-features` can write.
#[derive(Clone, Copy, ValueEnum)]
enum LayerArg {
    Conv5,
    Fc6,
    Fc7,
    Logits,
}

#[derive(Args)]
struct ExportFeaturesArgs {
    /// The trained weights (safetensors).
    #[arg(long)]
    checkpoint: PathBuf,
    /// Shard files and/or directories of shards, read as one set in file order.
    #[arg(required = true, num_args = 1..)]
    data: Vec<PathBuf>,
    /// The features file to write (.parquet): source, label, wnid, features.
    out: PathBuf,
    /// The layer whose activations (evaluation view, no dropout) become the vectors.
    #[arg(long, value_enum, default_value = "fc7")]
    layer: LayerArg,
    /// Images per GPU batch.
    #[arg(long, default_value_t = 128)]
    batch: usize,
    /// Adapter index as `alexnet devices` lists it [default: the best adapter].
    #[arg(long)]
    device: Option<usize>,
    /// Input size of a checkpoint made by another framework that does not record it.
    #[arg(long)]
    input_size: Option<usize>,
    /// No progress bar.
    #[arg(long)]
    quiet: bool,
}

#[derive(Args)]
struct NeighborsArgs {
    /// A features file written by export-features.
    features: PathBuf,
    /// The query: a source path exactly as stored, or a row index.
    #[arg(long)]
    query: String,
    /// Neighbours to list (the query itself is left out).
    #[arg(short, long, default_value_t = 6)]
    k: usize,
    /// Also draw the query and its neighbours side by side into this PNG.
    #[arg(long)]
    sheet: Option<PathBuf>,
    /// Shards holding the pixels for --sheet [default: those named in the features file].
    #[arg(long)]
    data: Vec<PathBuf>,
}

#[derive(Args)]
struct FiltersArgs {
    /// The trained weights (safetensors).
    #[arg(long)]
    checkpoint: PathBuf,
    /// The PNG to write.
    out: PathBuf,
    /// Screen pixels per kernel pixel.
    #[arg(long, default_value_t = 4)]
    scale: u32,
    /// Input size of a checkpoint made by another framework that does not record it.
    #[arg(long)]
    input_size: Option<usize>,
}

/// Parse the command line and run the command.
pub fn run() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Devices => alexnet::gpu::print_devices()?,
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
        }
        Command::Inspect(a) => {
            let report = alexnet::dataset::inspect(&a.data)?;
            if a.json {
                println!("{}", report.json());
            } else {
                print!("{}", report.text());
            }
        }
        Command::Report { run, out } => {
            let path = alexnet::export::plot::write_report(&run, out.as_deref())?;
            println!("{}", path.display());
        }
        Command::ImportIdx {
            images,
            labels,
            out,
            classes,
            limit,
        } => {
            let classes = match classes {
                Some(s) => s.parse()?,
                None => alexnet::idx::ClassNames::Numbers,
            };
            let s = alexnet::idx::import_idx(&alexnet::idx::ImportIdxConfig {
                images,
                labels,
                out: out.clone(),
                classes,
                limit,
            })?;
            let verb = if s.skipped { "already held" } else { "wrote" };
            println!(
                "{}: {verb} {} images in {} class folders",
                out.display(),
                s.images,
                s.classes
            );
        }
        Command::ExportFeatures(a) => {
            let mut cfg = alexnet::export::ExportConfig::new(a.checkpoint, a.data, a.out);
            cfg.layer = match a.layer {
                LayerArg::Conv5 => alexnet::export::Layer::Conv5,
                LayerArg::Fc6 => alexnet::export::Layer::Fc6,
                LayerArg::Fc7 => alexnet::export::Layer::Fc7,
                LayerArg::Logits => alexnet::export::Layer::Logits,
            };
            cfg.batch = a.batch;
            cfg.device = a.device;
            cfg.input_size = a.input_size;
            cfg.progress = !a.quiet;
            let summary = alexnet::export::export_features(&cfg)?;
            println!("{summary}");
        }
        Command::Neighbors(a) => {
            let result = alexnet::export::neighbors(&alexnet::export::NeighborsConfig {
                features: a.features,
                query: a.query,
                k: a.k,
                sheet: a.sheet,
                data: a.data,
            })?;
            print!("{result}");
        }
        Command::Filters(a) => {
            let (w, h) = alexnet::export::write_filters(&alexnet::export::FiltersConfig {
                checkpoint: a.checkpoint,
                out: a.out.clone(),
                scale: a.scale,
                input_size: a.input_size,
            })?;
            println!("{}: {w}×{h}", a.out.display());
        }
        Command::Run { pipeline, force } => {
            alexnet::pipeline::run_pipeline_file(&pipeline, force)?;
        }
    }
    Ok(())
}
