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
enum Command {}

pub fn run() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {}
}
