//! A pipeline's running tasks: starting one per partition of each input,
//! with everything it needs (outputs, commit durability, CPU share);
//! stopping them after their current commit; and the status they add up
//! to. When and why pipelines start and stop is the parent module's.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use tokio::sync::watch;
use tokio::task::JoinHandle;
use weir_log::{Cleanup, Durability};

use super::Pipelines;
use crate::record::PipelineRecord;
use crate::routing::OutputTopic;
use crate::stats::TaskStats;
use crate::status::{InputEnds, PipelineStatus, summarize};
use crate::task::{self, Control, StagePlan, TaskKey, TaskSetup};

pub(super) struct TaskHandle {
    pub(super) key: TaskKey,
    pub(super) control: watch::Sender<Control>,
    pub(super) stopping: Arc<AtomicBool>,
    pub(super) join: JoinHandle<()>,
    pub(super) stats: Arc<TaskStats>,
}

pub(super) struct Running {
    pub(super) record: PipelineRecord,
    pub(super) tasks: Vec<TaskHandle>,
    /// Why the pipeline could not start (then it has no tasks).
    pub(super) failure: Option<String>,
}

impl Running {
    /// A pipeline that started `started` (its tasks, or why it could not).
    pub(super) fn new(record: PipelineRecord, started: Result<Vec<TaskHandle>, String>) -> Running {
        match started {
            Ok(tasks) => Running {
                record,
                tasks,
                failure: None,
            },
            Err(reason) => {
                tracing::error!(pipeline = %record.name, %reason, "pipeline cannot start");
                Running {
                    record,
                    tasks: Vec::new(),
                    failure: Some(reason),
                }
            }
        }
    }

    pub(super) fn status(&self, ends: &InputEnds) -> PipelineStatus {
        let tasks = self.tasks.iter().map(|t| (&t.key, &*t.stats));
        summarize(&self.record, self.failure.as_deref(), tasks, ends)
    }
}
impl Pipelines {
    /// Starts one task per partition of each input (`only` those tasks,
    /// if given); says why not when a topic is missing.
    pub(super) async fn start(
        &self,
        record: &PipelineRecord,
        plans: Vec<StagePlan>,
        only: Option<&BTreeSet<TaskKey>>,
    ) -> Result<Vec<TaskHandle>, String> {
        let spec = &record.spec;
        let mut outputs = Vec::new();
        for topic in spec.output_topics() {
            match self.log.topic(topic).await {
                Ok(info) => outputs.push(info),
                Err(e) => return Err(format!("output topic: {e}")),
            }
        }
        let mut inputs = Vec::new();
        for topic in &spec.inputs {
            match self.log.topic(topic).await {
                Ok(info) => inputs.push(info),
                Err(e) => return Err(format!("input topic: {e}")),
            }
        }
        let output_topics: HashMap<String, OutputTopic> = outputs
            .iter()
            .map(|t| {
                let topic = OutputTopic {
                    partitions: t.partitions.len() as u32,
                    max_batch_bytes: t.config.max_batch_bytes,
                    compacted: t.config.cleanup == Cleanup::Compact,
                };
                (t.name.clone(), topic)
            })
            .collect();
        // Exactly-once across power loss needs commits as durable as the
        // most durable output; across process crashes any setting holds.
        let commit_durability = outputs
            .iter()
            .map(|t| t.config.durability)
            .max_by_key(|d| match d {
                Durability::Never => 0,
                Durability::Interval => 1,
                Durability::Always => 2,
            })
            .unwrap_or(Durability::Always);
        let initial = if record.paused {
            Control::Pause
        } else {
            Control::Run
        };
        let mut tasks = Vec::new();
        for input in &inputs {
            for partition in 0..input.partitions.len() as u32 {
                let key = TaskKey {
                    pipeline: record.name.clone(),
                    input: input.name.clone(),
                    partition,
                };
                if only.is_some_and(|only| !only.contains(&key)) {
                    continue;
                }
                let (control, receiver) = watch::channel(initial);
                let stopping = Arc::new(AtomicBool::new(false));
                let stats = Arc::new(TaskStats::new(plans.len()));
                let setup = TaskSetup {
                    key: key.clone(),
                    log: self.log.clone(),
                    stages: plans.clone(),
                    policy: spec.on_error,
                    dead_letter: spec.dead_letter.clone(),
                    start: spec.start,
                    outputs: output_topics.clone(),
                    commit_durability,
                    settings: self.settings,
                    scheduler: self.scheduler.clone(),
                    tenant: record
                        .name
                        .split_once('.')
                        .map_or("", |(tenant, _)| tenant)
                        .to_string(),
                    cpu_share: record.limits.cpu_share,
                    stats: stats.clone(),
                    control: receiver,
                    stopping: stopping.clone(),
                };
                let join = tokio::spawn(task::run(setup));
                tasks.push(TaskHandle {
                    key,
                    control,
                    stopping,
                    join,
                    stats,
                });
            }
        }
        Ok(tasks)
    }
}

/// Asks tasks to stop after their current commit.
pub(super) fn signal_stop(tasks: &[TaskHandle]) {
    for task in tasks {
        task.stopping
            .store(true, std::sync::atomic::Ordering::Relaxed);
        let _ = task.control.send(Control::Stop);
    }
}

/// Waits for tasks to end.
pub(super) async fn join(tasks: Vec<TaskHandle>) {
    for task in tasks {
        if let Err(e) = task.join.await {
            tracing::error!(pipeline = %task.key.pipeline, error = %e,
                "pipeline task ended abnormally");
        }
    }
}
