//! `weir group`: consumer groups of Kafka clients (`/v1/groups`): their
//! state, members, and committed offsets with lag.
//!
//! The server builds these answers itself (from the Kafka coordinator and
//! the log), so their types are here, holding what the commands show.

use clap::Subcommand;
use serde::Deserialize;

use super::table::{cell, table};
use super::{Client, Deleted, encode_path};

#[derive(Subcommand)]
pub enum GroupCommand {
    /// Every group with members or committed offsets: state and total lag.
    List,
    /// A group's state, members (with their partitions), and committed
    /// offset and lag per partition.
    Describe { name: String },
    /// Forgets a group's committed offsets (once no consumer is in it).
    Delete { name: String },
}

/// `GET /v1/groups`' answer.
#[derive(Deserialize)]
struct Groups {
    groups: Vec<GroupSummary>,
}

#[derive(Deserialize)]
struct GroupSummary {
    name: String,
    /// Kafka's: `Stable`, `PreparingRebalance`, `CompletingRebalance`, `Empty`.
    state: String,
    offsets: Vec<Committed>,
}

/// `GET /v1/groups/{name}`'s answer (its `name` and `protocol` are not
/// shown).
#[derive(Deserialize)]
struct Group {
    state: String,
    members: Vec<Member>,
    offsets: Vec<Committed>,
}

/// A consumer in a group (its `client_id` is not shown).
#[derive(Deserialize)]
struct Member {
    member_id: String,
    /// Set for static members.
    instance_id: Option<String>,
    client_host: String,
    assignment: Vec<Assigned>,
}

/// A member's partitions of one topic.
#[derive(Deserialize)]
struct Assigned {
    topic: String,
    partitions: Vec<i32>,
}

/// A committed offset, as committed (Kafka's logical −1 and −2 included).
#[derive(Deserialize)]
struct Committed {
    topic: String,
    partition: u32,
    offset: i64,
    /// `None` for a logical offset, or a partition gone.
    lag: Option<u64>,
}

impl GroupCommand {
    pub fn run(self, client: &Client) -> anyhow::Result<()> {
        match self {
            GroupCommand::List => list(client),
            GroupCommand::Describe { name } => describe(client, &name),
            GroupCommand::Delete { name } => delete(client, &name),
        }
    }
}

fn list(client: &Client) -> anyhow::Result<()> {
    let answer = client.get("/v1/groups")?;
    client.show(answer, |list: Groups| {
        let rows: Vec<Vec<String>> = list
            .groups
            .iter()
            .map(|g| {
                let lag: u64 = g.offsets.iter().filter_map(|o| o.lag).sum();
                vec![
                    g.name.clone(),
                    g.state.clone(),
                    g.offsets.len().to_string(),
                    lag.to_string(),
                ]
            })
            .collect();
        table(&["GROUP", "STATE", "PARTITIONS", "LAG"], &rows);
    })
}

fn describe(client: &Client, name: &str) -> anyhow::Result<()> {
    let answer = client.get(&format!("/v1/groups/{}", encode_path(name)))?;
    client.show(answer, |group: Group| {
        println!("state: {}", group.state);
        if !group.members.is_empty() {
            let rows: Vec<Vec<String>> = group
                .members
                .iter()
                .map(|m| {
                    let assigned: Vec<String> = m
                        .assignment
                        .iter()
                        .map(|a| {
                            let partitions: Vec<String> =
                                a.partitions.iter().map(i32::to_string).collect();
                            format!("{}[{}]", a.topic, partitions.join(","))
                        })
                        .collect();
                    vec![
                        m.member_id.clone(),
                        cell(&m.instance_id),
                        m.client_host.clone(),
                        assigned.join(" "),
                    ]
                })
                .collect();
            println!();
            table(&["MEMBER", "INSTANCE", "HOST", "ASSIGNED"], &rows);
        }
        let rows: Vec<Vec<String>> = group
            .offsets
            .iter()
            .map(|o| {
                vec![
                    o.topic.clone(),
                    o.partition.to_string(),
                    o.offset.to_string(),
                    cell(&o.lag),
                ]
            })
            .collect();
        if !rows.is_empty() {
            println!();
            table(&["TOPIC", "PARTITION", "OFFSET", "LAG"], &rows);
        }
    })
}

fn delete(client: &Client, name: &str) -> anyhow::Result<()> {
    let answer = client.delete(&format!("/v1/groups/{}", encode_path(name)))?;
    client.confirm(answer, |gone: Deleted| {
        format!("deleted group {}", gone.deleted)
    })
}
