//! `weir cluster status` (`/v1/cluster`): the log the server keeps its
//! streams in, whether it can serve, facts about it, and the workers
//! sharing it with the tasks each runs.

use clap::Subcommand;
use serde::Deserialize;

use super::Client;
use super::table::table;

#[derive(Subcommand)]
pub enum ClusterCommand {
    /// The server's log: embedded or a NATS JetStream cluster, its health
    /// and its servers; the workers sharing it and their tasks.
    Status,
}

/// `GET /v1/cluster`'s answer.
#[derive(Deserialize)]
struct Status {
    backend: String,
    healthy: bool,
    error: Option<String>,
    facts: Vec<Fact>,
    /// Absent or null on a server of its own.
    #[serde(default)]
    workers: Option<Vec<Worker>>,
}

#[derive(Deserialize)]
struct Worker {
    worker: String,
    this: bool,
    tasks: Vec<String>,
}

#[derive(Deserialize)]
struct Fact {
    name: String,
    value: String,
}

impl ClusterCommand {
    pub fn run(self, client: &Client) -> anyhow::Result<()> {
        match self {
            ClusterCommand::Status => {
                let answer = client.get("/v1/cluster")?;
                client.show(answer, |status: Status| {
                    let health = match (&status.error, status.healthy) {
                        (_, true) => "healthy".to_string(),
                        (Some(error), false) => format!("unavailable: {error}"),
                        (None, false) => "unavailable".to_string(),
                    };
                    println!("log: {} ({health})", status.backend);
                    let rows: Vec<Vec<String>> = status
                        .facts
                        .into_iter()
                        .map(|f| vec![f.name, f.value])
                        .collect();
                    if !rows.is_empty() {
                        println!();
                        table(&["FACT", "VALUE"], &rows);
                    }
                    if let Some(workers) = status.workers {
                        let rows: Vec<Vec<String>> = workers
                            .into_iter()
                            .map(|w| {
                                let name = match w.this {
                                    true => format!("{} (this)", w.worker),
                                    false => w.worker,
                                };
                                vec![name, w.tasks.len().to_string(), w.tasks.join(" ")]
                            })
                            .collect();
                        println!();
                        table(&["WORKER", "TASKS", "RUNNING"], &rows);
                    }
                })
            }
        }
    }
}
