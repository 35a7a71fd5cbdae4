//! `weir cluster status` (`/v1/cluster`): the log the server keeps its
//! streams in, whether it can serve, and facts about it.

use clap::Subcommand;
use serde::Deserialize;

use super::Client;
use super::table::table;

#[derive(Subcommand)]
pub enum ClusterCommand {
    /// The server's log: embedded or a NATS JetStream cluster, its health
    /// and its servers.
    Status,
}

/// `GET /v1/cluster`'s answer.
#[derive(Deserialize)]
struct Status {
    backend: String,
    healthy: bool,
    error: Option<String>,
    facts: Vec<Fact>,
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
                })
            }
        }
    }
}
