//! `weir pipeline`: apply a TOML spec, list, inspect, pause, resume and
//! delete pipelines (`/v1/pipelines`). Answers are the pipelines' own
//! [`PipelineStatus`].

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Subcommand;
use serde::Deserialize;
use weir_pipeline::stats::Step;
use weir_pipeline::{PipelineSpec, PipelineStatus};

use super::table::table;
use super::{Client, Deleted, encode_path};

#[derive(Subcommand)]
pub enum PipelineCommand {
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

/// `GET /v1/pipelines`' answer.
#[derive(Deserialize)]
struct Pipelines {
    pipelines: Vec<PipelineStatus>,
}

impl PipelineCommand {
    pub fn run(self, client: &Client) -> anyhow::Result<()> {
        match self {
            PipelineCommand::Apply { file, name } => apply(client, &file, name),
            PipelineCommand::List => list(client),
            PipelineCommand::Status { name } => {
                let answer = client.get(&path(&name))?;
                client.show(answer, print_status)
            }
            PipelineCommand::Pause { name } => {
                let answer = client.post_empty(&format!("{}/pause", path(&name)))?;
                client.show(answer, print_status)
            }
            PipelineCommand::Resume { name } => {
                let answer = client.post_empty(&format!("{}/resume", path(&name)))?;
                client.show(answer, print_status)
            }
            PipelineCommand::Delete { name } => {
                let answer = client.delete(&path(&name))?;
                client.confirm(answer, |gone: Deleted| {
                    format!("deleted pipeline {}", gone.deleted)
                })
            }
        }
    }
}

fn path(name: &str) -> String {
    format!("/v1/pipelines/{}", encode_path(name))
}

fn apply(client: &Client, file: &Path, name: Option<String>) -> anyhow::Result<()> {
    let toml = std::fs::read_to_string(file)
        .with_context(|| format!("while reading {}", file.display()))?;
    let spec =
        PipelineSpec::from_toml(&toml).map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
    let name = name
        .or_else(|| spec.name.clone())
        .or_else(|| file.file_stem().map(|s| s.to_string_lossy().into_owned()))
        .context("the pipeline needs a name (name = \"...\" in the file, or --name)")?;
    let body = serde_json::to_value(&spec).expect("specs serialize");
    let answer = client.put(&path(&name), &body)?;
    client.show(answer, |status: PipelineStatus| {
        println!(
            "applied pipeline {name}: {} ({})",
            status.state,
            status.modules.join(" -> ")
        );
    })
}

fn list(client: &Client) -> anyhow::Result<()> {
    let answer = client.get("/v1/pipelines")?;
    client.show(answer, |list: Pipelines| {
        let rows: Vec<Vec<String>> = list
            .pipelines
            .iter()
            .map(|p| {
                vec![
                    p.name.clone(),
                    p.state.to_string(),
                    p.records_in.to_string(),
                    p.records_out.to_string(),
                    p.errors.to_string(),
                    p.lag.to_string(),
                ]
            })
            .collect();
        table(&["PIPELINE", "STATE", "IN", "OUT", "ERRORS", "LAG"], &rows);
    })
}

/// A pipeline's state, counters, and a row per stage.
fn print_status(status: PipelineStatus) {
    println!("pipeline {}: {}", status.name, status.state);
    if let Some(reason) = &status.reason {
        println!("  reason: {reason}");
    }
    println!(
        "  records in {}, out {}, errors {}, rejected {}, dead-lettered {}, lag {}",
        status.records_in,
        status.records_out,
        status.errors,
        status.rejected,
        status.dead_lettered,
        status.lag
    );
    let steps = Step::ALL.map(|step| format!("{} {}", step.name(), status.steps.get(step)));
    println!("  time in ms: {}", steps.join(", "));
    let stages: Vec<Vec<String>> = status
        .stages
        .iter()
        .enumerate()
        .map(|(i, s)| {
            vec![
                (i + 1).to_string(),
                s.module.clone(),
                s.counts.records_in.to_string(),
                s.counts.records_out.to_string(),
                s.counts.errors.to_string(),
                s.counts.rejected.to_string(),
                s.counts.processing_ms.to_string(),
            ]
        })
        .collect();
    table(
        &[
            "STAGE", "MODULE", "IN", "OUT", "ERRORS", "REJECTED", "BUSY_MS",
        ],
        &stages,
    );
}

#[cfg(test)]
mod tests {
    use weir_pipeline::stats::{StageCounts, StepTimes, TaskState};
    use weir_pipeline::status::{StageStatus, TaskStatus};
    use weir_pipeline::{PipelineSpec, PipelineState, PipelineStatus};

    /// The status the server sends reads back whole: flattened counters,
    /// and a failed task's state with its reason.
    #[test]
    fn a_failed_pipelines_status_reads_back_as_sent() {
        let spec = PipelineSpec::from_toml(
            "inputs = [\"in\"]\n[[stages]]\nmodule = \"m\"\noutputs = { main = \"out\" }\n",
        )
        .unwrap();
        let status = PipelineStatus {
            name: "p".into(),
            state: PipelineState::Failed,
            reason: Some("trap".into()),
            modules: vec!["m@1".into()],
            records_in: 3,
            records_out: 2,
            errors: 1,
            rejected: 0,
            dead_lettered: 0,
            unrouted: 0,
            undeliverable: 0,
            lag: 4,
            processing_ms: 5,
            steps: StepTimes {
                read_ms: 1,
                process_ms: 6,
                backpressure_ms: 0,
                commit_ms: 2,
                publish_ms: 3,
            },
            stages: vec![StageStatus {
                module: "m@1".into(),
                counts: StageCounts {
                    records_in: 3,
                    records_out: 2,
                    errors: 1,
                    rejected: 0,
                    processing_ms: 5,
                },
            }],
            tasks: vec![TaskStatus {
                input: "in".into(),
                partition: 0,
                state: TaskState::Failed("trap".into()),
                position: 3,
                lag: 4,
                worker: Some("w1".into()),
            }],
            spec,
        };
        let sent = serde_json::to_value(&status).unwrap();
        let read: PipelineStatus = serde_json::from_value(sent.clone()).unwrap();
        assert_eq!(read.tasks[0].state, TaskState::Failed("trap".into()));
        assert_eq!(read.stages[0].counts, status.stages[0].counts);
        assert_eq!(serde_json::to_value(&read).unwrap(), sent);
    }
}
