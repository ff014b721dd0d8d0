//! Command-line parsing only: every command turns its flags into a typed config and calls one
//! library function.
use clap::{Parser, Subcommand};
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
    /// Every stage of a pipeline file, in order; stages already done are skipped.
    Run {
        /// The pipeline file, e.g. pipelines/quickstart.toml.
        pipeline: PathBuf,
        /// Run every stage again, even those already done.
        #[arg(long)]
        force: bool,
    },
}

pub fn run() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
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
        Command::Run { pipeline, force } => {
            alexnet::pipeline::run_pipeline_file(&pipeline, force)?;
        }
    }
    Ok(())
}
