//! The `weir` command line: `serve`, the client commands (topics,
//! produce, consume, groups, modules, pipelines, tenants: one module each
//! in `client/`, with their arguments), `run` and `demo`. The `weir`
//! binary is a thin `main` around [`main`] here.

mod client;
mod demo;

use std::net::SocketAddr;
use std::path::PathBuf;

use crate::run::{RunOptions, run};
use crate::server::{Server, ServerConfig};
use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use weir_host::{Limits, OperatorEngine, compile};

use client::{
    Client, ClusterCommand, ConsumeArgs, GroupCommand, ModuleCommand, PipelineCommand, ProduceArgs,
    TenantCommand, TokenCommand, TopicCommand,
};

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

/// How client commands reach the server.
#[derive(Args)]
struct Remote {
    /// The Weir server's URL.
    #[arg(
        long,
        env = "WEIR_SERVER",
        default_value = "http://127.0.0.1:7070",
        global = true
    )]
    server: String,
    /// The bearer token (a tenant's, or the admin credential) for a
    /// server with tenancy on.
    #[arg(long, env = "WEIR_TOKEN", global = true, hide_env_values = true)]
    token: Option<String>,
    /// Print JSON instead of tables.
    #[arg(long, global = true)]
    json: bool,
}

impl Remote {
    fn client(&self) -> Client {
        Client::new(&self.server, self.token.clone(), self.json)
    }
}

#[derive(Subcommand)]
enum Command {
    /// Run the server: the embedded log, the pipelines and the HTTP API.
    Serve {
        /// Data directory (default ./weir-data).
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// Address of the HTTP API (default 127.0.0.1:7070; port 0 picks one).
        #[arg(long)]
        listen: Option<SocketAddr>,
        /// Configuration file (TOML: data_dir, listen, max_request_bytes, [limits]).
        #[arg(long)]
        config: Option<PathBuf>,
        /// Address of the Kafka listener (default 127.0.0.1:9092; `off` disables it).
        #[arg(long, value_name = "ADDR|off")]
        kafka_listen: Option<String>,
        /// Address (host:port) Kafka clients are told to connect to
        /// (default: the listener's).
        #[arg(long, value_name = "HOST:PORT")]
        kafka_advertised: Option<String>,
    },
    /// Create, list, describe and delete topics.
    Topic {
        #[command(subcommand)]
        command: TopicCommand,
        #[command(flatten)]
        remote: Remote,
    },
    /// The log the server keeps its streams in (embedded or a NATS
    /// JetStream cluster) and its health.
    Cluster {
        #[command(subcommand)]
        command: ClusterCommand,
        #[command(flatten)]
        remote: Remote,
    },
    /// Consumer groups of Kafka clients: members and committed offsets.
    Group {
        #[command(subcommand)]
        command: GroupCommand,
        #[command(flatten)]
        remote: Remote,
    },
    /// Append records to a topic: JSON lines or plain lines from stdin, or
    /// one record from --value.
    Produce {
        #[command(flatten)]
        args: ProduceArgs,
        #[command(flatten)]
        remote: Remote,
    },
    /// Print records of a topic (by default only new ones).
    Consume {
        #[command(flatten)]
        args: ConsumeArgs,
        #[command(flatten)]
        remote: Remote,
    },
    /// Upload and list operator modules.
    Module {
        #[command(subcommand)]
        command: ModuleCommand,
        #[command(flatten)]
        remote: Remote,
    },
    /// Apply, inspect and control pipelines.
    Pipeline {
        #[command(subcommand)]
        command: PipelineCommand,
        #[command(flatten)]
        remote: Remote,
    },
    /// Create, list and delete tenants (admin credential).
    Tenant {
        #[command(subcommand)]
        command: TenantCommand,
        #[command(flatten)]
        remote: Remote,
    },
    /// Issue and revoke tenants' API tokens (admin credential).
    Token {
        #[command(subcommand)]
        command: TokenCommand,
        #[command(flatten)]
        remote: Remote,
    },
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
    /// Compile the module on stdin into a sealed artifact on stdout: the
    /// server's compiler process (see `operator/compile.rs`), not for people.
    #[command(name = compile::CHILD_COMMAND, hide = true)]
    Compile,
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

/// Runs the command line given to the process.
pub fn main() -> std::process::ExitCode {
    match dispatch() {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// The exit code of a command that did what it was asked.
fn success(_: ()) -> std::process::ExitCode {
    std::process::ExitCode::SUCCESS
}

/// Lets a client command end quietly when its output is closed early
/// (`weir consume t | head`), as Unix tools do, instead of panicking on
/// the failed write: Rust ignores SIGPIPE by default. Network writes are
/// not affected (they are sent with `MSG_NOSIGNAL`); the server keeps the
/// default, since nothing it writes should end it.
fn die_quietly_on_closed_stdout() {
    // SAFETY: setting a signal's disposition to its default before any
    // other thread exists.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

fn dispatch() -> anyhow::Result<std::process::ExitCode> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let command = Cli::parse().command;
    if !matches!(command, Command::Serve { .. }) {
        die_quietly_on_closed_stdout();
    }
    match command {
        Command::Serve {
            data_dir,
            listen,
            config,
            kafka_listen,
            kafka_advertised,
        } => serve(data_dir, listen, config, kafka_listen, kafka_advertised),
        Command::Topic { command, remote } => command.run(&remote.client()).map(success),
        Command::Cluster { command, remote } => command.run(&remote.client()).map(success),
        Command::Group { command, remote } => command.run(&remote.client()).map(success),
        Command::Produce { args, remote } => args.run(&remote.client()).map(success),
        Command::Consume { args, remote } => args.run(&remote.client()).map(success),
        Command::Module { command, remote } => command.run(&remote.client()).map(success),
        Command::Pipeline { command, remote } => command.run(&remote.client()).map(success),
        Command::Tenant { command, remote } => command.run(&remote.client()).map(success),
        Command::Token { command, remote } => command.run(&remote.client()).map(success),
        Command::Compile => Ok(compile::child_main()),
        Command::Demo { data_dir, events } => demo::run(&data_dir, events).map(success),
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

/// `weir serve`: runs until Ctrl-C or SIGTERM.
fn serve(
    data_dir: Option<PathBuf>,
    listen: Option<SocketAddr>,
    config_file: Option<PathBuf>,
    kafka_listen: Option<String>,
    kafka_advertised: Option<String>,
) -> anyhow::Result<std::process::ExitCode> {
    let mut config = match &config_file {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("while reading {}", path.display()))?;
            toml::from_str::<ServerConfig>(&text)
                .with_context(|| format!("invalid configuration in {}", path.display()))?
        }
        None => ServerConfig::default(),
    };
    if let Some(dir) = data_dir {
        config.data_dir = dir;
    }
    if let Some(listen) = listen {
        config.listen = listen;
    }
    match kafka_listen.as_deref() {
        None => {}
        Some("off") => config.kafka.enabled = false,
        Some(addr) => {
            config.kafka.enabled = true;
            config.kafka.listen = addr.parse().with_context(|| {
                format!("--kafka-listen {addr:?} must be an address like 127.0.0.1:9092, or off")
            })?;
        }
    }
    if let Some(advertised) = kafka_advertised {
        config.kafka.advertised = Some(advertised);
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("weir-io")
        .build()
        .context("while starting the async runtime")?;
    runtime.block_on(async {
        // Listening before the server answers: a signal sent as soon as it
        // does still stops it cleanly.
        let shutdown = shutdown_signal()?;
        let server = Server::start(config.clone()).await?;
        // A closed stdout (say, piped into `head`) must not stop the server.
        use std::io::Write;
        let mut out = std::io::stdout();
        let kafka = match &server.kafka {
            Some(kafka) => format!(" and kafka://{}", kafka.advertised()),
            None => String::new(),
        };
        let _ = writeln!(
            out,
            "weir listening on http://{}{kafka} (data in {})",
            server.addr,
            config.data_dir.display()
        );
        if let Some(file) = &server.admin_token_file {
            let _ = writeln!(
                out,
                "tenancy on: the admin credential is in {}",
                file.display()
            );
        }
        let _ = out.flush();
        server.run(shutdown).await
    })?;
    Ok(std::process::ExitCode::SUCCESS)
}

/// Listens for Ctrl-C and SIGTERM from now on; the future resolves on
/// either.
fn shutdown_signal() -> anyhow::Result<impl Future<Output = ()>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut interrupt = signal(SignalKind::interrupt()).context("while listening for Ctrl-C")?;
    let mut terminate = signal(SignalKind::terminate()).context("while listening for SIGTERM")?;
    Ok(async move {
        tokio::select! {
            _ = interrupt.recv() => {}
            _ = terminate.recv() => {}
        }
    })
}
