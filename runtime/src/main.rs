//! `weir`: the Weir command-line entry point.

mod demo;

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use weir::operator::{Limits, OperatorEngine};
use weir::run::{RunOptions, run};

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
    /// Run one operator over records from a JSON-lines file and print its
    /// outputs as JSON lines (errors go to stderr with their record).
    Run {
        /// The operator: a WebAssembly component (.wasm).
        module: PathBuf,
        /// A setting for the operator, KEY=VALUE (repeatable).
        #[arg(long = "config", value_name = "KEY=VALUE", value_parser = parse_setting)]
        config: Vec<(String, String)>,
        /// Input file of JSON lines, or - for stdin.
        #[arg(long, default_value = "-")]
        input: String,
        /// Output file, or - for stdout.
        #[arg(long, default_value = "-")]
        output: String,
        /// Records per call to the operator.
        #[arg(long, default_value_t = 256)]
        batch_size: usize,
        /// Directory caching compiled modules (default: ~/.cache/weir/modules).
        #[arg(long)]
        cache_dir: Option<PathBuf>,
        /// Compile every time instead of using the cache.
        #[arg(long)]
        no_cache: bool,
        /// Linear memory limit of the operator, in MiB.
        #[arg(long, default_value_t = 64)]
        max_memory_mb: usize,
        /// CPU budget per call, in fuel units (about one instruction each).
        #[arg(long)]
        fuel_per_call: Option<u64>,
    },
}

fn parse_setting(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("expected KEY=VALUE, got {s:?}")),
    }
}

fn path_or_std(arg: &str) -> Option<PathBuf> {
    (arg != "-").then(|| PathBuf::from(arg))
}

fn default_cache_dir() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))?;
    Some(base.join("weir").join("modules"))
}

fn main() -> std::process::ExitCode {
    match dispatch() {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn dispatch() -> anyhow::Result<std::process::ExitCode> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    match Cli::parse().command {
        Command::Demo { data_dir, events } => {
            demo::run(&data_dir, events).map(|()| std::process::ExitCode::SUCCESS)
        }
        Command::Run {
            module,
            config,
            input,
            output,
            batch_size,
            cache_dir,
            no_cache,
            max_memory_mb,
            fuel_per_call,
        } => {
            let defaults = Limits::default();
            let limits = Limits {
                max_memory_bytes: max_memory_mb << 20,
                fuel_per_call: fuel_per_call.unwrap_or(defaults.fuel_per_call),
                ..defaults
            };
            let cache = if no_cache {
                None
            } else {
                cache_dir.or_else(default_cache_dir)
            };
            let engine =
                OperatorEngine::new(limits, cache).context("while starting the operator engine")?;
            let options = RunOptions {
                module,
                config,
                input: path_or_std(&input),
                output: path_or_std(&output),
                batch_size,
            };
            let summary = run(&engine, &options)?;
            eprintln!(
                "{} records in, {} out, {} rejected, {} failed batches",
                summary.records_in, summary.records_out, summary.rejected, summary.failed_batches
            );
            Ok(if summary.failed_batches > 0 {
                std::process::ExitCode::FAILURE
            } else {
                std::process::ExitCode::SUCCESS
            })
        }
    }
}
