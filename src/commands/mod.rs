//! Every `alexnet` command, described once: one arguments struct per command that clap parses
//! from the command line and serde reads from a pipeline stage (docs/pipelines.md), and one
//! dispatcher, [`execute`], that `main` and `alexnet run` both call.
//!
//! A struct's clap defaults and its serde defaults are the same values (a test parses each
//! command both ways and compares), so a stage means what the command line means.
use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

mod data;
mod devices;
mod docs;
mod examples;
mod export;
mod figures;
mod score;
mod serde_args;
mod stage;
#[cfg(test)]
mod tests;
mod train;

pub use data::{ImportArgs, ImportIdxArgs, ImportSource, IngestArgs, InspectArgs, Order};
pub use devices::{DeviceChoice, DevicesArgs};
pub use export::{ExportArgs, ExportFormat};
pub use figures::{ExportFeaturesArgs, FiltersArgs, NeighborsArgs, ReportArgs};
pub use score::{EvalArgs, ForwardArgs, Normalize, PredictArgs};
pub use stage::Rerun;
pub use train::{load_train_config, ConfigFileError, ConfigSource, TrainArgs};

/// An error from a command, with its cause chain; `main` prints every cause.
pub type CommandError = Box<dyn std::error::Error + Send + Sync>;

/// AlexNet end to end: ImageNet folders to Parquet shards, training on wgpu, feature export.
#[derive(Parser)]
#[command(name = "alexnet", version, about)]
pub struct Cli {
    /// The command.
    #[command(subcommand)]
    pub command: Command,
}

impl Cli {
    /// The clap definition with every command's examples added to its help.
    pub fn definition() -> clap::Command {
        examples::with_examples(Cli::command())
    }

    /// Parses the process's command line; `--help`, `--version` and bad flags exit here, as
    /// clap does.
    pub fn parse_args() -> Cli {
        let matches = Self::definition().get_matches();
        Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit())
    }
}

/// One command with its arguments: what a command line or a pipeline stage asks for.
///
/// In a pipeline file a stage is `kind = "<command>"` plus this command's arguments by their
/// long names in snake case (docs/pipelines.md).
#[derive(Clone, Debug, PartialEq, Subcommand, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Command {
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
    Report(ReportArgs),
    /// IDX files (MNIST, Fashion-MNIST) to class folders of PNGs that `ingest` reads.
    ImportIdx(ImportIdxArgs),
    /// Another framework's AlexNet weights as a checkpoint: `alexnet import torchvision
    /// STATE_DICT.safetensors OUT.safetensors` (torchvision's 2014 variant: conv1 padded by 2,
    /// no LRN, no groups, 224 input), for eval, export-features, neighbors and predict.
    Import(ImportArgs),
    /// One layer's activations for every image of a shard set, as a Parquet features file.
    ExportFeatures(ExportFeaturesArgs),
    /// A checkpoint for other tools: `alexnet export onnx --checkpoint W OUT.onnx` (mean image
    /// and input scale inside the graph; input `pixels` [N,3,I,I] float crops 0..255) or
    /// `alexnet export weights --checkpoint W OUT.safetensors` (no momentum: half the size).
    Export(ExportArgs),
    /// The nearest rows of a features file to a query image (the paper's Figure 4).
    Neighbors(NeighborsArgs),
    /// The conv1 kernels of a checkpoint as an image (the paper's Figure 3).
    Filters(FiltersArgs),
    /// Every stage of a pipeline file, in order; stages already done are skipped.
    Run(RunArgs),
    /// The top-5 classes of image files, preprocessed as ingest and eval do.
    Predict(PredictArgs),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completions(CompletionsArgs),
    /// Write man pages (alexnet.1 and one per command) into a directory.
    Man(ManArgs),
}

/// `alexnet run`.
#[derive(Clone, Debug, PartialEq, clap::Args, Serialize, Deserialize)]
pub struct RunArgs {
    /// The pipeline file, e.g. pipelines/quickstart.toml.
    pub pipeline: PathBuf,
    /// Run every stage again, even those already done.
    #[arg(long)]
    #[serde(default)]
    pub force: bool,
    /// Change a value of the file before it is read: `work_dir=DIR`, `STAGE.KEY=VALUE` where
    /// STAGE is a stage's number (from 1) or kind (every stage of that kind) and KEY a dotted
    /// path (`train.config.epochs=1`). VALUE is TOML (`76`, `[1, 2]`, `true`), else a string.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    #[serde(default)]
    pub set: Vec<String>,
    /// Run only this stage: its name from --list (what it makes, e.g. a run folder
    /// `baseline-s1`) or its number from 1. The stages it reads from must have finished
    /// (a Slurm job array runs one stage per task; docs/job-arrays.md).
    #[arg(long, value_name = "NAME", conflicts_with = "list")]
    #[serde(default)]
    pub only: Option<String>,
    /// Print the stages' names, one per line, in order, and run nothing.
    #[arg(long, conflicts_with = "force")]
    #[serde(default)]
    pub list: bool,
}

/// `alexnet completions`.
#[derive(Clone, Debug, PartialEq, clap::Args, Serialize, Deserialize)]
pub struct CompletionsArgs {
    /// The shell.
    #[serde(with = "serde_args::display")]
    pub shell: clap_complete::Shell,
}

/// `alexnet man`.
#[derive(Clone, Debug, PartialEq, clap::Args, Serialize, Deserialize)]
pub struct ManArgs {
    /// The directory to write them into.
    pub dir: PathBuf,
}

impl Command {
    /// The command's name, as typed and as a stage's `kind`.
    pub fn name(&self) -> &'static str {
        match self {
            Command::Devices(_) => "devices",
            Command::Train(_) => "train",
            Command::Eval(_) => "eval",
            Command::Forward(_) => "forward",
            Command::Ingest(_) => "ingest",
            Command::Inspect(_) => "inspect",
            Command::Report(_) => "report",
            Command::ImportIdx(_) => "import-idx",
            Command::Import(_) => "import",
            Command::ExportFeatures(_) => "export-features",
            Command::Export(_) => "export",
            Command::Neighbors(_) => "neighbors",
            Command::Filters(_) => "filters",
            Command::Run(_) => "run",
            Command::Predict(_) => "predict",
            Command::Completions(_) => "completions",
            Command::Man(_) => "man",
        }
    }
}

/// Every command's name, in `--help` order.
pub fn names() -> Vec<String> {
    Cli::command()
        .get_subcommands()
        .map(|c| c.get_name().to_string())
        .collect()
}

/// The argument names of a command, as a pipeline stage spells them (snake case): its clap
/// arguments' ids, so a stage accepts exactly what the command line does (serde alone cannot
/// refuse unknown keys of flattened structs).
pub fn argument_keys(kind: &str) -> Vec<String> {
    Cli::command()
        .find_subcommand(kind)
        .map(|c| {
            c.get_arguments()
                .map(|a| a.get_id().as_str().to_string())
                .filter(|id| id != "help")
                .collect()
        })
        .unwrap_or_default()
}

/// Runs one command; returns the exit status of a command that ended without an error (not 0
/// when a signal stopped it).
pub fn execute(command: Command) -> Result<i32, CommandError> {
    match command {
        Command::Devices(a) => devices::run(a)?,
        Command::Train(a) => return train::run(*a),
        Command::Eval(a) => score::eval(a)?,
        Command::Forward(a) => score::forward(a)?,
        Command::Ingest(a) => data::ingest(a)?,
        Command::Inspect(a) => data::inspect(a)?,
        Command::Report(a) => figures::report(a)?,
        Command::ImportIdx(a) => data::import_idx(a)?,
        Command::Import(a) => data::import(a)?,
        Command::ExportFeatures(a) => figures::export_features(a)?,
        Command::Export(a) => export::export(a)?,
        Command::Neighbors(a) => figures::neighbors(a)?,
        Command::Filters(a) => figures::filters(a)?,
        Command::Run(a) if a.list => {
            let p = crate::pipeline::Pipeline::load_with(&a.pipeline, &a.set)?;
            let names = crate::pipeline::stage_names(&p);
            print_stdout(&names.iter().map(|n| format!("{n}\n")).collect::<String>())?;
        }
        Command::Run(a) => match &a.only {
            Some(name) => {
                crate::pipeline::run_pipeline_only_file(&a.pipeline, &a.set, name, a.force)?;
            }
            None => {
                crate::pipeline::run_pipeline_file(&a.pipeline, &a.set, a.force)?;
            }
        },
        Command::Predict(a) => score::predict(a)?,
        Command::Completions(a) => docs::completions(&mut Cli::definition(), a.shell),
        Command::Man(a) => {
            for page in docs::man_pages(Cli::definition(), &a.dir)? {
                println!("{}", page.display());
            }
        }
    }
    Ok(0)
}

/// Prints to stdout; a closed pipe (`| head`) is not an error.
fn print_stdout(text: &str) -> std::io::Result<()> {
    use std::io::Write;
    match std::io::stdout().lock().write_all(text.as_bytes()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        r => r,
    }
}
