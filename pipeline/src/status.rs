//! A pipeline's status: its state, counters and lag, summed over its
//! tasks, and the one list of the names and messages it holds (used to
//! show it in a tenant's names).

use std::collections::HashMap;
use std::sync::atomic::Ordering::Relaxed;

use serde::{Deserialize, Serialize};

use super::placement::TaskReport;
use super::record::PipelineRecord;
use super::spec::PipelineSpec;
use super::stats::{StageCounts, StepTimes, TaskState, TaskStats};
use super::task::TaskKey;

/// Where a pipeline stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PipelineState {
    Running,
    /// Paused, a task still finishing its round.
    Pausing,
    Paused,
    /// A task failed, or the pipeline could not start: see `reason`.
    Failed,
}

impl std::fmt::Display for PipelineState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            PipelineState::Running => "running",
            PipelineState::Pausing => "pausing",
            PipelineState::Paused => "paused",
            PipelineState::Failed => "failed",
        })
    }
}

/// A pipeline's state, counters and lag.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PipelineStatus {
    pub name: String,
    pub state: PipelineState,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub modules: Vec<String>,
    pub records_in: u64,
    pub records_out: u64,
    pub errors: u64,
    pub rejected: u64,
    pub dead_lettered: u64,
    pub unrouted: u64,
    /// Outputs dropped because no append could take them.
    pub undeliverable: u64,
    /// Input records not processed yet, over all partitions.
    pub lag: u64,
    pub processing_ms: u64,
    /// Time the tasks spent in each step of their rounds, summed.
    #[serde(default)]
    pub steps: StepTimes,
    pub stages: Vec<StageStatus>,
    pub tasks: Vec<TaskStatus>,
    pub spec: PipelineSpec,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StageStatus {
    pub module: String,
    #[serde(flatten)]
    pub counts: StageCounts,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TaskStatus {
    pub input: String,
    pub partition: u32,
    #[serde(flatten)]
    pub state: TaskState,
    /// The next input offset to process.
    pub position: u64,
    pub lag: u64,
    /// The worker running the task, when workers share a cluster (none
    /// yet: the task is moving or starting).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker: Option<String>,
}

impl PipelineStatus {
    /// Calls `f` on every name the status holds (its spec's included): the
    /// one list of them, used to namespace a status.
    pub fn for_each_name(&mut self, mut f: impl FnMut(&mut String)) {
        f(&mut self.name);
        self.modules.iter_mut().for_each(&mut f);
        for stage in &mut self.stages {
            f(&mut stage.module);
        }
        for task in &mut self.tasks {
            f(&mut task.input);
        }
        self.spec.for_each_name(f);
    }

    /// Calls `f` on every message the status holds (which may quote names).
    pub fn for_each_message(&mut self, mut f: impl FnMut(&mut String)) {
        self.reason.iter_mut().for_each(&mut f);
        for task in &mut self.tasks {
            if let TaskState::Failed(reason) = &mut task.state {
                f(reason);
            }
        }
    }
}

/// End offsets by topic and partition.
pub(crate) type InputEnds = HashMap<(String, u32), u64>;

/// A pipeline's status from its record, its tasks and, when it could not
/// start at all, why not.
pub(crate) fn summarize<'a>(
    record: &PipelineRecord,
    failure: Option<&str>,
    tasks: impl Iterator<Item = (&'a TaskKey, &'a TaskStats)>,
    ends: &InputEnds,
) -> PipelineStatus {
    let mut stages: Vec<StageStatus> = record
        .modules
        .iter()
        .map(|m| StageStatus {
            module: m.clone(),
            counts: StageCounts::default(),
        })
        .collect();
    let mut status = PipelineStatus {
        name: record.name.clone(),
        state: match (failure, record.paused) {
            (Some(_), _) => PipelineState::Failed,
            (None, true) => PipelineState::Paused,
            (None, false) => PipelineState::Running,
        },
        reason: failure.map(str::to_string),
        modules: record.modules.clone(),
        records_in: 0,
        records_out: 0,
        errors: 0,
        rejected: 0,
        dead_lettered: 0,
        unrouted: 0,
        undeliverable: 0,
        lag: 0,
        processing_ms: 0,
        steps: StepTimes::default(),
        stages: Vec::new(),
        tasks: Vec::new(),
        spec: record.spec.clone(),
    };
    for (key, stats) in tasks {
        let state = stats.state();
        match &state {
            TaskState::Failed(reason) => {
                status.state = PipelineState::Failed;
                status.reason.get_or_insert_with(|| reason.clone());
            }
            // Asked to pause, still finishing a round.
            TaskState::Running | TaskState::Starting if status.state == PipelineState::Paused => {
                status.state = PipelineState::Pausing;
            }
            _ => {}
        }
        let position = stats.position.load(Relaxed);
        let end = ends
            .get(&(key.input.clone(), key.partition))
            .copied()
            .unwrap_or(position);
        let lag = end.saturating_sub(position);
        status.records_in += stats.records_in.load(Relaxed);
        status.records_out += stats.records_out.load(Relaxed);
        status.dead_lettered += stats.dead_lettered.load(Relaxed);
        status.unrouted += stats.unrouted.load(Relaxed);
        status.undeliverable += stats.undeliverable.load(Relaxed);
        status.lag += lag;
        status.steps.add(&stats.step_times());
        for (stage, counts) in stages.iter_mut().zip(&stats.stages) {
            stage.counts.add(&counts.counts());
        }
        status.tasks.push(TaskStatus {
            input: key.input.clone(),
            partition: key.partition,
            state,
            position,
            lag,
            worker: None,
        });
    }
    status.errors += status.undeliverable;
    for stage in &stages {
        status.errors += stage.counts.errors;
        status.rejected += stage.counts.rejected;
        status.processing_ms += stage.counts.processing_ms;
    }
    status.stages = stages;
    status
}

impl PipelineStatus {
    /// Adds what runs elsewhere when workers share a cluster: `here` names
    /// this worker's tasks (already in the status), `elsewhere` the other
    /// workers' reports, `ends` every partition. A task no worker reports
    /// shows as starting, its whole partition as lag.
    pub(crate) fn add_elsewhere(
        &mut self,
        here: &str,
        elsewhere: &[(String, TaskReport)],
        ends: &InputEnds,
    ) {
        for task in &mut self.tasks {
            task.worker = Some(here.to_string());
        }
        let mut partitions: Vec<(String, u32)> = ends
            .keys()
            .filter(|(topic, _)| self.spec.inputs.contains(topic))
            .cloned()
            .collect();
        partitions.sort();
        for (input, partition) in partitions {
            if self
                .tasks
                .iter()
                .any(|t| t.input == input && t.partition == partition)
            {
                continue;
            }
            let end = ends.get(&(input.clone(), partition)).copied().unwrap_or(0);
            let report = elsewhere.iter().find(|(_, r)| {
                r.pipeline == self.name && r.input == input && r.partition == partition
            });
            let task = match report {
                Some((worker, report)) => {
                    self.records_in += report.records_in;
                    self.records_out += report.records_out;
                    for (stage, counts) in self.stages.iter_mut().zip(&report.stages) {
                        stage.counts.add(counts);
                        self.errors += counts.errors;
                        self.rejected += counts.rejected;
                        self.processing_ms += counts.processing_ms;
                    }
                    match &report.state {
                        TaskState::Failed(reason) => {
                            self.state = PipelineState::Failed;
                            self.reason.get_or_insert_with(|| reason.clone());
                        }
                        // Asked to pause, not paused there yet.
                        TaskState::Running | TaskState::Starting
                            if self.state == PipelineState::Paused =>
                        {
                            self.state = PipelineState::Pausing;
                        }
                        _ => {}
                    }
                    TaskStatus {
                        input,
                        partition,
                        state: report.state.clone(),
                        position: report.position,
                        lag: end.saturating_sub(report.position),
                        worker: Some(worker.clone()),
                    }
                }
                None => TaskStatus {
                    input,
                    partition,
                    state: TaskState::Starting,
                    position: 0,
                    lag: end,
                    worker: None,
                },
            };
            self.lag += task.lag;
            self.tasks.push(task);
        }
    }
}
