//! Command-line parsing only: every command turns its flags into a typed config and calls one
//! library function.
use clap::{Parser, Subcommand};

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
}

/// Parse the command line and run the command.
pub fn run() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Devices => alexnet::gpu::print_devices()?,
    }
    Ok(())
}
