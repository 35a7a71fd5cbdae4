//! The `weir` command line: `serve`, the client commands (topics,
//! produce, consume, modules, pipelines), `run` and `demo`. The `weir`
//! binary is a thin `main` around [`main`] here.

mod client;
mod demo;

use std::net::SocketAddr;
use std::path::PathBuf;

use crate::run::{RunOptions, run};
use crate::server::{Server, ServerConfig};
use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use serde_json::{Map, Value, json};
use weir_host::{Limits, OperatorEngine, compile};

use client::Client;

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
        topic: String,
        /// The value of a single record (otherwise stdin is read).
        #[arg(long)]
        value: Option<String>,
        /// The key of the record (or of every stdin line without one).
        #[arg(long)]
        key: Option<String>,
        #[arg(long)]
        partition: Option<u32>,
        #[command(flatten)]
        remote: Remote,
    },
    /// Print records of a topic (by default only new ones).
    Consume {
        topic: String,
        /// Start at the first record stored.
        #[arg(long, conflicts_with_all = ["offset", "since"])]
        from_beginning: bool,
        /// Start at this offset (of every partition read).
        #[arg(long, conflicts_with = "since")]
        offset: Option<u64>,
        /// Start at this time: RFC 3339 (2026-11-25T10:00:00Z), a duration
        /// ago (15m, 2h) or milliseconds since the epoch.
        #[arg(long)]
        since: Option<String>,
        /// Keep waiting for new records.
        #[arg(long)]
        follow: bool,
        /// Only this partition.
        #[arg(long)]
        partition: Option<u32>,
        /// Stop after this many records.
        #[arg(long)]
        limit: Option<u64>,
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

#[derive(Subcommand)]
enum TopicCommand {
    /// Create a topic.
    Create {
        name: String,
        #[arg(long, default_value_t = 1)]
        partitions: u32,
        /// always, interval or never.
        #[arg(long)]
        durability: Option<String>,
        /// delete or compact.
        #[arg(long)]
        cleanup: Option<String>,
        #[arg(long)]
        retention_ms: Option<u64>,
        #[arg(long)]
        retention_bytes: Option<u64>,
    },
    List,
    Describe {
        name: String,
    },
    Delete {
        name: String,
    },
}

#[derive(Subcommand)]
enum GroupCommand {
    /// Every group with members or committed offsets: state and total lag.
    List,
    /// A group's state, members (with their partitions), and committed
    /// offset and lag per partition.
    Describe { name: String },
    /// Forgets a group's committed offsets (once no consumer is in it).
    Delete { name: String },
}

#[derive(Subcommand)]
enum TenantCommand {
    Create {
        name: String,
    },
    List,
    /// Delete a tenant and everything it owns.
    Delete {
        name: String,
    },
}

#[derive(Subcommand)]
enum TokenCommand {
    /// Issue a token for a tenant (printed once).
    Create { tenant: String },
    /// Revoke one of a tenant's tokens by its id.
    Revoke { tenant: String, id: String },
}

#[derive(Subcommand)]
enum ModuleCommand {
    /// Upload a module (a new version of NAME).
    Push {
        name: String,
        file: PathBuf,
    },
    List,
}

#[derive(Subcommand)]
enum PipelineCommand {
    /// Create or update a pipeline from a TOML spec.
    Apply {
        file: PathBuf,
        /// The pipeline's name (default: `name` in the file, else the file's stem).
        #[arg(long)]
        name: Option<String>,
    },
    List,
    Status {
        name: String,
    },
    Pause {
        name: String,
    },
    Resume {
        name: String,
    },
    Delete {
        name: String,
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

fn dispatch() -> anyhow::Result<std::process::ExitCode> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    match Cli::parse().command {
        Command::Serve {
            data_dir,
            listen,
            config,
            kafka_listen,
            kafka_advertised,
        } => serve(data_dir, listen, config, kafka_listen, kafka_advertised),
        Command::Topic { command, remote } => {
            let client = remote.client();
            match command {
                TopicCommand::Create {
                    name,
                    partitions,
                    durability,
                    cleanup,
                    retention_ms,
                    retention_bytes,
                } => {
                    let mut settings = Map::new();
                    settings.insert("partitions".into(), json!(partitions));
                    let optional = [
                        ("durability", durability.map(Value::String)),
                        ("cleanup", cleanup.map(Value::String)),
                        ("retention_ms", retention_ms.map(|v| json!(v))),
                        ("retention_bytes", retention_bytes.map(|v| json!(v))),
                    ];
                    for (name, value) in optional {
                        if let Some(value) = value {
                            settings.insert(name.into(), value);
                        }
                    }
                    client::topic_create(&client, &name, settings)
                }
                TopicCommand::List => client::topic_list(&client),
                TopicCommand::Describe { name } => client::topic_describe(&client, &name),
                TopicCommand::Delete { name } => client::topic_delete(&client, &name),
            }
            .map(|()| std::process::ExitCode::SUCCESS)
        }
        Command::Group { command, remote } => {
            let client = remote.client();
            match command {
                GroupCommand::List => client::group_list(&client),
                GroupCommand::Describe { name } => client::group_describe(&client, &name),
                GroupCommand::Delete { name } => client::group_delete(&client, &name),
            }
            .map(|()| std::process::ExitCode::SUCCESS)
        }
        Command::Produce {
            topic,
            value,
            key,
            partition,
            remote,
        } => client::produce(&remote.client(), &topic, key, value, partition)
            .map(|()| std::process::ExitCode::SUCCESS),
        Command::Consume {
            topic,
            from_beginning,
            offset,
            since,
            follow,
            partition,
            limit,
            remote,
        } => {
            let from = match (from_beginning, offset, since) {
                (true, _, _) => client::From::Beginning,
                (_, Some(offset), _) => client::From::Offset(offset),
                (_, _, Some(since)) => client::From::Time(parse_since(&since)?),
                _ => client::From::End,
            };
            client::consume(&remote.client(), &topic, from, partition, follow, limit)
                .map(|()| std::process::ExitCode::SUCCESS)
        }
        Command::Module { command, remote } => {
            let client = remote.client();
            match command {
                ModuleCommand::Push { name, file } => client::module_push(&client, &name, &file),
                ModuleCommand::List => client::module_list(&client),
            }
            .map(|()| std::process::ExitCode::SUCCESS)
        }
        Command::Pipeline { command, remote } => {
            let client = remote.client();
            match command {
                PipelineCommand::Apply { file, name } => {
                    client::pipeline_apply(&client, &file, name)
                }
                PipelineCommand::List => client::pipeline_list(&client),
                PipelineCommand::Status { name } => client::pipeline_status(&client, &name),
                PipelineCommand::Pause { name } => client::pipeline_action(&client, &name, "pause"),
                PipelineCommand::Resume { name } => {
                    client::pipeline_action(&client, &name, "resume")
                }
                PipelineCommand::Delete { name } => {
                    client::pipeline_action(&client, &name, "delete")
                }
            }
            .map(|()| std::process::ExitCode::SUCCESS)
        }
        Command::Tenant { command, remote } => {
            let client = remote.client();
            match command {
                TenantCommand::Create { name } => client::tenant_create(&client, &name),
                TenantCommand::List => client::tenant_list(&client),
                TenantCommand::Delete { name } => client::tenant_delete(&client, &name),
            }
            .map(|()| std::process::ExitCode::SUCCESS)
        }
        Command::Token { command, remote } => {
            let client = remote.client();
            match command {
                TokenCommand::Create { tenant } => client::token_create(&client, &tenant),
                TokenCommand::Revoke { tenant, id } => client::token_revoke(&client, &tenant, &id),
            }
            .map(|()| std::process::ExitCode::SUCCESS)
        }
        Command::Compile => Ok(compile::child_main()),
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

/// Reads `--since`: RFC 3339, a duration ago, or epoch milliseconds.
fn parse_since(text: &str) -> anyhow::Result<i64> {
    if let Ok(ms) = text.parse::<i64>() {
        return Ok(ms);
    }
    if let Ok(ago) = humantime::parse_duration(text) {
        return Ok(weir_core::now_ms() - ago.as_millis() as i64);
    }
    let time = humantime::parse_rfc3339_weak(text).map_err(|_| {
        anyhow::anyhow!(
            "--since {text:?}: expected RFC 3339 (2026-11-25T10:00:00Z), a duration ago \
             (15m) or milliseconds since the epoch"
        )
    })?;
    let since_epoch = time
        .duration_since(std::time::UNIX_EPOCH)
        .context("--since is before 1970")?;
    Ok(since_epoch.as_millis() as i64)
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
        server.run(shutdown_signal()).await
    })?;
    Ok(std::process::ExitCode::SUCCESS)
}

/// Resolves on Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
}
