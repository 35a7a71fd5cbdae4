//! `weir topic`: create, list, describe and delete topics
//! (`/v1/topics`). Answers are the log's own [`TopicInfo`].

use clap::Subcommand;
use serde::Deserialize;
use serde_json::{Map, Value, json};
use weir_log::{TopicConfig, TopicInfo};

use super::table::{cell, table, text};
use super::{Client, Deleted, encode_path};

#[derive(Subcommand)]
pub enum TopicCommand {
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

/// `GET /v1/topics`' answer.
#[derive(Deserialize)]
struct Topics {
    topics: Vec<TopicInfo>,
}

impl TopicCommand {
    pub fn run(self, client: &Client) -> anyhow::Result<()> {
        match self {
            TopicCommand::Create {
                name,
                partitions,
                durability,
                cleanup,
                retention_ms,
                retention_bytes,
            } => {
                // Only the settings given: the server fills in the rest.
                let mut body = Map::new();
                body.insert("name".into(), json!(name));
                body.insert("partitions".into(), json!(partitions));
                let optional = [
                    ("durability", durability.map(Value::String)),
                    ("cleanup", cleanup.map(Value::String)),
                    ("retention_ms", retention_ms.map(|v| json!(v))),
                    ("retention_bytes", retention_bytes.map(|v| json!(v))),
                ];
                for (setting, value) in optional {
                    if let Some(value) = value {
                        body.insert(setting.into(), value);
                    }
                }
                create(client, &name, &Value::Object(body))
            }
            TopicCommand::List => list(client),
            TopicCommand::Describe { name } => describe(client, &name),
            TopicCommand::Delete { name } => delete(client, &name),
        }
    }
}

fn create(client: &Client, name: &str, body: &Value) -> anyhow::Result<()> {
    let answer = client.post("/v1/topics", body)?;
    client.show(answer, |info: TopicInfo| {
        println!(
            "created topic {name} ({} partition(s))",
            info.partitions.len()
        );
    })
}

fn list(client: &Client) -> anyhow::Result<()> {
    let answer = client.get("/v1/topics")?;
    client.show(answer, |list: Topics| {
        let rows: Vec<Vec<String>> = list
            .topics
            .iter()
            .map(|t| {
                let records: u64 = t
                    .partitions
                    .iter()
                    .map(|p| p.end_offset.saturating_sub(p.start_offset))
                    .sum();
                let bytes: u64 = t.partitions.iter().map(|p| p.size_bytes).sum();
                vec![
                    t.name.clone(),
                    t.partitions.len().to_string(),
                    records.to_string(),
                    bytes.to_string(),
                    cell(&t.config.durability),
                    cell(&t.config.cleanup),
                ]
            })
            .collect();
        table(
            &[
                "TOPIC",
                "PARTITIONS",
                "RECORDS",
                "BYTES",
                "DURABILITY",
                "CLEANUP",
            ],
            &rows,
        );
    })
}

fn describe(client: &Client, name: &str) -> anyhow::Result<()> {
    let answer = client.get(&format!("/v1/topics/{}", encode_path(name)))?;
    client.show(answer, |info: TopicInfo| {
        println!("topic {name}");
        for (setting, value) in settings(&info.config) {
            println!("  {setting}: {value}");
        }
        let rows: Vec<Vec<String>> = info
            .partitions
            .iter()
            .map(|p| {
                vec![
                    p.partition.to_string(),
                    p.start_offset.to_string(),
                    p.end_offset.to_string(),
                    p.size_bytes.to_string(),
                ]
            })
            .collect();
        table(&["PARTITION", "START", "END", "BYTES"], &rows);
    })
}

/// A topic's settings by their API names, in the API's order, so that
/// every setting the log has is shown.
fn settings(config: &TopicConfig) -> Vec<(String, String)> {
    match serde_json::to_value(config) {
        Ok(Value::Object(fields)) => fields.iter().map(|(k, v)| (k.clone(), text(v))).collect(),
        _ => Vec::new(),
    }
}

fn delete(client: &Client, name: &str) -> anyhow::Result<()> {
    let answer = client.delete(&format!("/v1/topics/{}", encode_path(name)))?;
    client.confirm(answer, |gone: Deleted| {
        format!("deleted topic {}", gone.deleted)
    })
}
