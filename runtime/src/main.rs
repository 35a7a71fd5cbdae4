//! `weir`: the Weir command-line entry point.
//!
//! For now it offers `weir demo`, a tour of the embedded log; the server,
//! operator runner and pipeline commands arrive with their issues.

mod demo;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "weir",
    version,
    about = "Weir: a WebAssembly-based pluggable stream processor"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Write events into the embedded log, replay them by offset and by
    /// time, commit a consumer position, reopen and verify.
    Demo {
        /// Data directory of the log.
        #[arg(long, default_value = "weir-data")]
        data_dir: PathBuf,
        /// Number of events to write.
        #[arg(long, default_value_t = 200_000)]
        events: u64,
    },
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    match Cli::parse().command {
        Command::Demo { data_dir, events } => demo::run(&data_dir, events),
    }
}
