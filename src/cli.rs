//! Command-line parsing only: every command turns its flags into a typed config and calls one
//! library function.
use alexnet::cpu::CpuDevice;
use alexnet::dataset::Encoding;
use alexnet::ingest::{IngestConfig, RowOrder, ShardPart};
use clap::{Args, CommandFactory, FromArgMatches, Parser, Subcommand, ValueEnum};
use std::path::PathBuf;

mod docs;
mod examples;
mod predict;

/// AlexNet end to end: ImageNet folders to Parquet shards, training on wgpu, feature export.
#[derive(Parser)]
#[command(name = "alexnet", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// List the adapters wgpu sees, with the limits that matter for training, and the native
    /// CPU engine with its thread count.
    ///
    /// With --devices LIST, also say which adapter each training device would use
    /// (`0,1`: two adapters; `2` or `0,0`: two logical devices on adapter 0; `cpu`: the CPU
    /// engine; `auto`: the first GPU, else the CPU engine).
    Devices(DevicesArgs),
    /// Train the network on shards (the paper's recipe unless told otherwise).
    ///
    /// Writes RUN/last.safetensors (every --checkpoint-every steps and each epoch),
    /// RUN/best.safetensors (best validation top-1), RUN/metrics.jsonl and RUN/config.toml.
    /// Ctrl-C or SIGTERM writes a checkpoint, then exits with 130 or 143; `--resume`
    /// continues exactly where it stopped. A loss that explodes (NaN, above 100·ln(classes),
    /// or 100× its running value) stops the run before any checkpoint of the diverged
    /// weights is written; a checkpoint is written only when its weights are finite and give
    /// finite logits on a validation batch. RUN/.alexnet.lock keeps a second process out of RUN.
    Train(Box<TrainArgs>),
    /// Score a checkpoint on shards: loss, top-1 and top-5 accuracy.
    Eval(EvalArgs),
    /// Run a checkpoint on preprocessed images: safetensors `images` [N,3,H,W] in, `logits`
    /// and the activations conv1..conv5, fc6, fc7 out (for checks against other frameworks).
    Forward(ForwardArgs),
    /// Turn a folder of images into Parquet shards (pixels, labels, statistics).
    ///
    /// Symbolic links in RAW are followed, but each directory is read at most once (known by
    /// device and inode), so a link back up the tree or a loop adds nothing. A folder in RAW
    /// holding shards and no images (an earlier output) is not a class; OUT may not be inside
    /// RAW. Every shard's footer records which inputs it holds, so `inspect` and `train` can
    /// tell an unfinished OUT ("incomplete: N of M inputs"). OUT/.alexnet.lock keeps a second
    /// ingest out of OUT while this one runs.
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
        /// Draw the loss on a log scale.
        #[arg(long)]
        log_loss: bool,
        /// The title's name [default: the run directory's name].
        #[arg(long)]
        title: Option<String>,
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
    /// The top-5 classes of image files, preprocessed as ingest and eval do.
    Predict(predict::PredictArgs),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Write man pages (alexnet.1 and one per command) into a directory.
    Man {
        /// The directory to write them into.
        dir: PathBuf,
    },
}

#[derive(Args)]
struct TrainArgs {
    /// Training shards: .parquet files and/or directories of shards.
    #[arg(required = true)]
    data: Vec<PathBuf>,
    /// Validation shards (drive the learning-rate schedule and best.safetensors).
    #[arg(long)]
    val: Vec<PathBuf>,
    /// A training config (TOML, as RUN/config.toml) or a pipeline file with one train stage.
    #[arg(long)]
    config: Option<PathBuf>,
    /// The run directory.
    #[arg(long, default_value = "runs/alexnet")]
    out: PathBuf,
    /// Passes over the training set.
    #[arg(long)]
    epochs: Option<usize>,
    /// Stop after this many steps in all.
    #[arg(long)]
    steps: Option<u64>,
    /// Images per step.
    #[arg(long)]
    batch: Option<usize>,
    /// Initial learning rate. A schedule floor (`min_lr`) above it is scaled down by the same
    /// factor, so a small rate keeps the schedule's shape.
    #[arg(long)]
    lr: Option<f64>,
    /// Seed of every random stream (init, shuffle, augmentation, dropout).
    #[arg(long)]
    seed: Option<u64>,
    /// Devices: `auto` (the first GPU, else the CPU engine; the default), `cpu`, `lavapipe`,
    /// adapters `0`, `0,1`, `0,0`, or a count such as `2` (see `alexnet devices`).
    #[arg(long)]
    devices: Option<String>,
    /// Continue RUN from RUN/last.safetensors (with RUN/config.toml unless --config is given).
    #[arg(long)]
    resume: bool,
    /// Start from these weights instead of the paper's init.
    #[arg(long)]
    init_from: Option<PathBuf>,
    /// Train on the evaluation view: centre crop, no flip, no lighting noise.
    #[arg(long)]
    no_augment: bool,
    /// Dropout probability of fc6 and fc7 (0 turns it off).
    #[arg(long)]
    dropout: Option<f64>,
    /// Row order: `full` (a new permutation each epoch) or `none` (file order).
    #[arg(long)]
    shuffle: Option<String>,
    /// Side of the model's input crop.
    #[arg(long)]
    input_size: Option<usize>,
    /// Widths of conv1..conv5, fc6, fc7: seven comma-separated numbers.
    #[arg(long)]
    widths: Option<String>,
    /// Number of classes [default: the shards' class count].
    #[arg(long)]
    classes: Option<usize>,
    /// Weight init: `paper` (N(0, 0.01²)) or `he` (N(0, 2/fan_in); for narrow variants).
    #[arg(long, value_enum)]
    init: Option<InitArg>,
    /// SGD momentum (the paper: 0.9).
    #[arg(long)]
    momentum: Option<f64>,
    /// Weight decay on every parameter (the paper: 0.0005).
    #[arg(long)]
    weight_decay: Option<f64>,
    /// Learning-rate schedule: `plateau` (the paper's: ÷10 when validation error stops
    /// improving), `steps` (÷10 after each of --milestones) or `cosine` (down to --min-lr).
    #[arg(long, value_parser = ["plateau", "steps", "cosine"])]
    schedule: Option<String>,
    /// Epochs after which `steps` divides the rate, e.g. 30,60,80.
    #[arg(long)]
    milestones: Option<String>,
    /// The lowest rate of `plateau` and `cosine`.
    #[arg(long)]
    min_lr: Option<f64>,
    /// Print the end-of-run summary as one JSON object on stdout.
    #[arg(long)]
    json: bool,
    /// Train on shard folders that lack some of the shards their ingest planned (a killed or
    /// unfinished ingest, or a `--shard I/N` part); without it they are refused.
    #[arg(long)]
    allow_incomplete: bool,
    /// No progress output.
    #[arg(long)]
    quiet: bool,
}

#[derive(Args)]
struct EvalArgs {
    /// The checkpoint (ours, or a PyTorch state dict saved as safetensors).
    #[arg(long)]
    checkpoint: PathBuf,
    /// Shards to score.
    #[arg(required = true)]
    data: Vec<PathBuf>,
    /// The paper's ten views (corners and centre, mirrored), softmax averaged.
    #[arg(long)]
    ten_crop: bool,
    /// Print one JSON object: count, loss, top1_accuracy, top5_accuracy, non_finite (images
    /// whose logits were NaN or inf: misses, and the loss is then null). A tie with another
    /// class is a miss.
    #[arg(long)]
    json: bool,
    /// Images per batch (at least 1).
    #[arg(long, default_value_t = 128)]
    batch: usize,
    /// Device: `auto` (the first GPU, else the CPU engine), `cpu`, `lavapipe` or an adapter
    /// index (see `alexnet devices`).
    #[arg(long, default_value = "auto")]
    device: alexnet::device::Device,
    /// Input size of a checkpoint that does not record one.
    #[arg(long)]
    input_size: Option<usize>,
}

#[derive(Args)]
struct ForwardArgs {
    /// The checkpoint.
    #[arg(long)]
    checkpoint: PathBuf,
    /// safetensors file holding `images` [N,3,H,W] f32.
    #[arg(long)]
    input: PathBuf,
    /// safetensors file to write (never the input or the checkpoint).
    #[arg(long)]
    out: PathBuf,
    /// Device: `auto` (the first GPU, else the CPU engine), `cpu`, `lavapipe` or an adapter
    /// index (see `alexnet devices`).
    #[arg(long, default_value = "auto")]
    device: alexnet::device::Device,
    /// Replace OUT if it exists.
    #[arg(long)]
    overwrite: bool,
}

/// Weight inits as typed on the command line.
#[derive(Clone, Copy, ValueEnum)]
enum InitArg {
    Paper,
    He,
}

/// `image` column encodings as typed on the command line.
#[derive(Clone, Copy, ValueEnum)]
enum EncodingArg {
    Raw,
    Jpeg,
    Png,
}

#[derive(Args)]
struct DevicesArgs {
    /// A --devices value of `train` to check against the adapters found.
    #[arg(long)]
    devices: Option<String>,
    /// Print one JSON object: the adapters and their limits (and the --devices plan).
    #[arg(long)]
    json: bool,
}

#[derive(Clone, Copy, ValueEnum)]
enum OrderArg {
    Shuffled,
    Sorted,
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
    /// Row order: `shuffled` (a permutation fixed by --seed, so every row group mixes the
    /// classes, as training's windowed shuffle needs) or `sorted` (class, then file name).
    #[arg(long, value_enum, default_value = "shuffled")]
    order: OrderArg,
    /// Seed of the shuffled row order; every machine of a --shard run must use the same one.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Worker threads (default: all cores).
    #[arg(long)]
    jobs: Option<usize>,
    /// Keep complete shards and redo the rest.
    #[arg(long, conflicts_with = "overwrite")]
    resume: bool,
    /// Replace existing output.
    #[arg(long)]
    overwrite: bool,
    /// Fail (non-zero exit) if any input is rejected; the shards holding rejects are not
    /// written, so `--resume` redoes them once the inputs are fixed.
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
    /// The features file to write (.parquet): source, label, wnid, features. Never one of
    /// the inputs, nor a file inside a DATA folder (it would be read as a shard).
    out: PathBuf,
    /// Replace OUT if it exists.
    #[arg(long)]
    overwrite: bool,
    /// The layer whose activations (evaluation view, no dropout) become the vectors.
    #[arg(long, value_enum, default_value = "fc7")]
    layer: LayerArg,
    /// Images per batch.
    #[arg(long, default_value_t = 128)]
    batch: usize,
    /// Device: `auto` (the first GPU, else the CPU engine), `cpu`, `lavapipe` or an adapter
    /// index (see `alexnet devices`).
    #[arg(long, default_value = "auto")]
    device: alexnet::device::Device,
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
    /// Print one JSON object: query and neighbours (row, source, label, wnid, distance).
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct FiltersArgs {
    /// The trained weights (safetensors).
    #[arg(long)]
    checkpoint: PathBuf,
    /// The PNG to write.
    out: PathBuf,
    /// Screen pixels per kernel pixel (at least 1).
    #[arg(long, default_value_t = 4)]
    scale: u32,
    /// Input size of a checkpoint made by another framework that does not record it.
    #[arg(long)]
    input_size: Option<usize>,
}

/// Parse the command line and run the command; returns the exit status of a command that
/// ended without an error (not 0 when a signal stopped it).
pub fn run() -> anyhow::Result<i32> {
    let matches = examples::with_examples(Cli::command()).get_matches();
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    match cli.command {
        Command::Devices(a) if a.json => {
            let list = alexnet::gpu::list_adapters();
            print_stdout(&(devices_json(a.devices.as_deref(), &list)? + "\n"))?;
        }
        Command::Devices(a) => {
            let list = alexnet::gpu::list_adapters();
            if list.is_empty() {
                // Not an error any more: the CPU engine below runs every command.
                println!("no wgpu adapter (no GPU driver; `apt-get install mesa-vulkan-drivers` adds lavapipe)");
            }
            print!("{}", alexnet::gpu::context::devices_table(&list));
            print!("{}", alexnet::cpu::describe(CpuDevice::default_threads()));
            if let Some(spec) = a.devices {
                let devices: alexnet::train::Devices =
                    spec.parse().map_err(|e: String| anyhow::anyhow!(e))?;
                print!("{}", device_plan(&devices, &list)?);
            }
        }
        Command::Train(a) => return train(*a),
        Command::Eval(a) => {
            let job = alexnet::train::EvalJob {
                checkpoint: a.checkpoint,
                data: a.data,
                view: if a.ten_crop {
                    alexnet::train::View::TenCrop
                } else {
                    alexnet::train::View::Centre
                },
                batch: a.batch,
                device: a.device,
                input_size: a.input_size,
            };
            let r = alexnet::train::eval_checkpoint(&job)?;
            if r.non_finite > 0 {
                eprintln!(
                    "warning: {} of {} images got NaN or inf logits and count as misses (the loss is NaN): the checkpoint has diverged; use an earlier one, or train again with a lower --lr",
                    r.non_finite, r.count
                );
            }
            if a.json {
                println!("{}", serde_json::to_string(&r)?);
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
        }
        Command::Forward(a) => {
            alexnet::model::forward::forward(&alexnet::model::forward::ForwardJob {
                checkpoint: a.checkpoint,
                input: a.input,
                out: a.out,
                device: a.device,
                overwrite: a.overwrite,
            })?
        }
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
            cfg.order = match a.order {
                OrderArg::Shuffled => RowOrder::Shuffled(a.seed),
                OrderArg::Sorted => RowOrder::Sorted,
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
            let summary = alexnet::ingest::ingest(&cfg)?;
            eprintln!("{summary}");
        }
        Command::Inspect(a) => {
            let report = alexnet::dataset::inspect(&a.data)?;
            let text = if a.json {
                report.json() + "\n"
            } else {
                report.text()
            };
            print_stdout(&text)?;
        }
        Command::Report {
            run,
            out,
            log_loss,
            title,
        } => {
            let opts = alexnet::export::plot::ReportOptions { title, log_loss };
            let path = alexnet::export::plot::write_report_with(&run, out.as_deref(), &opts)?;
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
            cfg.overwrite = a.overwrite;
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
            if a.json {
                print_stdout(&(serde_json::to_string(&result)? + "\n"))?;
            } else {
                print_stdout(&result.to_string())?;
            }
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
        Command::Predict(a) => predict::run(a)?,
        Command::Completions { shell } => {
            docs::completions(&mut examples::with_examples(Cli::command()), shell)
        }
        Command::Man { dir } => {
            for page in docs::man_pages(examples::with_examples(Cli::command()), &dir)? {
                println!("{}", page.display());
            }
        }
    }
    Ok(0)
}

fn train(a: TrainArgs) -> anyhow::Result<i32> {
    use alexnet::train::{TrainConfig, TrainJob, TrainOverrides};
    let saved = a.out.join("config.toml");
    let mut config = match (&a.config, a.resume) {
        (Some(path), _) => alexnet::pipeline::load_train_config(path)?,
        (None, true) if saved.exists() => TrainConfig::load(&saved)?,
        _ => TrainConfig::default(),
    };
    let overrides = TrainOverrides {
        epochs: a.epochs,
        steps: a.steps,
        batch: a.batch,
        lr: a.lr,
        seed: a.seed,
        devices: a.devices,
        dropout: a.dropout,
        no_augment: a.no_augment,
        shuffle: a.shuffle,
        input_size: a.input_size,
        widths: a.widths,
        classes: a.classes,
    };
    config.apply_overrides(&overrides)?;
    config.momentum = a.momentum.unwrap_or(config.momentum);
    config.weight_decay = a.weight_decay.unwrap_or(config.weight_decay);
    config.schedule = config
        .schedule
        .with_flags(a.schedule.as_deref(), a.min_lr, a.milestones.as_deref())
        .map_err(|e| anyhow::anyhow!(e))?;
    config.validate("command line")?;
    match a.init {
        Some(InitArg::Paper) => config.init = alexnet::model::Init::Paper,
        Some(InitArg::He) => config.init = alexnet::model::Init::He,
        None => {}
    }
    if a.allow_incomplete {
        config.allow_incomplete = true;
    }
    let job = TrainJob {
        data: a.data,
        val: a.val,
        out: a.out,
        config,
        resume: a.resume,
        init_from: a.init_from,
        progress: !a.quiet,
        classes_from_data: a.classes.is_none() && a.config.is_none() && !a.resume,
    };
    let s = alexnet::train::train(&job)?;
    if a.json {
        let mut v = serde_json::to_value(&s)?;
        v["out"] = serde_json::json!(job.out);
        print_stdout(&(v.to_string() + "\n"))?;
        return Ok(s.stop_signal.map_or(0, alexnet::train::signals::exit_code));
    }
    let val = s
        .last_val
        .map(|v| {
            format!(
                ", validation top-1 error {:.2}%",
                (1.0 - v.top1_accuracy) * 100.0
            )
        })
        .unwrap_or_default();
    let how = match s.stop_signal {
        Some(sig) => format!(
            "interrupted by {}",
            alexnet::train::signals::signal_name(sig)
        ),
        None if s.interrupted => "interrupted".into(),
        None => "done".into(),
    };
    eprintln!(
        "{how}: {} steps, {} epochs, last loss {:.4}{val}, {:.0} images/s on {}; checkpoints in {}",
        s.steps,
        s.epochs,
        s.last_loss,
        s.images_per_s,
        s.engine,
        job.out.display()
    );
    // A stopped run is not a finished one: `train && eval` must not carry on.
    Ok(s.stop_signal.map_or(0, alexnet::train::signals::exit_code))
}

/// Which adapter (or the CPU engine) each training device of `--devices` would use, or why
/// it cannot.
fn device_plan(
    devices: &alexnet::train::Devices,
    list: &[alexnet::gpu::AdapterSummary],
) -> anyhow::Result<String> {
    use alexnet::train::engine::Placement;
    let resolved = devices
        .list()
        .iter()
        .map(|d| d.resolve_among(list))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| anyhow::anyhow!("--devices {devices}: {e}"))?;
    let a = match Placement::from_resolved(&resolved)
        .map_err(|why| anyhow::anyhow!("--devices {devices}: {why}"))?
    {
        Placement::Cpu => {
            return Ok(format!(
                "--devices {devices}: the whole network on the CPU engine ({} threads)\n",
                CpuDevice::default_threads()
            ))
        }
        Placement::Adapters(a) => a,
    };
    let mut out = format!(
        "--devices {devices}: {}\n",
        if a.len() == 1 {
            "the whole network on one device"
        } else {
            "the paper's two columns, one per device"
        }
    );
    for (d, &i) in a.iter().enumerate() {
        let ad = list.get(i).ok_or_else(|| {
            anyhow::anyhow!(
                "--devices {devices}: adapter {i} does not exist ({} found; see the table above)",
                list.len()
            )
        })?;
        let shared = a[..d].contains(&i);
        out += &format!(
            "  device {d}: adapter [{i}] {}{}\n",
            ad.name,
            if shared {
                " (a second logical device on the same adapter)"
            } else {
                ""
            }
        );
    }
    Ok(out)
}

/// `devices --json`: the adapters with the limits that matter for training, and the plan of
/// `--devices` when given.
fn devices_json(
    spec: Option<&str>,
    list: &[alexnet::gpu::AdapterSummary],
) -> anyhow::Result<String> {
    let adapters: Vec<serde_json::Value> = list
        .iter()
        .map(|a| {
            serde_json::json!({
                "index": a.index,
                "name": a.name,
                "backend": format!("{:?}", a.backend),
                "device_type": format!("{:?}", a.device_type),
                "driver": a.driver,
                "max_storage_buffer_binding_size": a.max_storage_buffer_binding_size,
                "max_buffer_size": a.max_buffer_size,
                "max_compute_workgroup_storage_size": a.max_compute_workgroup_storage_size,
                "max_compute_invocations_per_workgroup": a.max_compute_invocations_per_workgroup,
                "subgroup_sizes": [a.subgroup_sizes.0, a.subgroup_sizes.1],
                "shader_f16": a.features.contains(wgpu::Features::SHADER_F16),
            })
        })
        .collect();
    let mut v = serde_json::json!({
        "adapters": adapters,
        "cpu": { "threads": CpuDevice::default_threads() },
    });
    if let Some(spec) = spec {
        let devices: alexnet::train::Devices =
            spec.parse().map_err(|e: String| anyhow::anyhow!(e))?;
        // Checks the plan (same errors as the table's) before reporting it.
        device_plan(&devices, list)?;
        // Each device as it resolves here: an adapter index, or "cpu" for the CPU engine.
        let resolved: Vec<serde_json::Value> = devices
            .list()
            .iter()
            .map(|d| match d.resolve_among(list) {
                Ok(alexnet::device::Resolved::Adapter(i)) => serde_json::json!(i),
                _ => serde_json::json!("cpu"),
            })
            .collect();
        v["plan"] = serde_json::json!({
            "devices": spec,
            "adapters": resolved,
            "columns": devices.len(),
        });
    }
    Ok(v.to_string())
}
