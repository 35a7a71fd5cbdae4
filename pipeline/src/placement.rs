//! Which worker should run which pipeline task when several share a
//! cluster: every worker computes the same answer from the same inputs
//! (the tasks of every pipeline, the live workers), so no one hands tasks
//! out. Tasks are dealt round-robin in a fixed order, so counts differ by
//! at most one between workers and each pipeline's partitions spread over
//! them; a worker joining or leaving reshuffles, and the leases
//! (`weir_log::Workers`) make each move wait until the old holder let go.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::stats::{StageCounts, TaskState};
use crate::task::TaskKey;

/// The worker each task should run on: `tasks` dealt over `workers` in
/// order (both sorted first). No workers, no assignment.
pub fn assign(tasks: &[TaskKey], workers: &[String]) -> BTreeMap<TaskKey, String> {
    let mut workers = workers.to_vec();
    workers.sort();
    workers.dedup();
    let mut tasks = tasks.to_vec();
    tasks.sort();
    if workers.is_empty() {
        return BTreeMap::new();
    }
    tasks
        .into_iter()
        .enumerate()
        .map(|(i, task)| (task, workers[i % workers.len()].clone()))
        .collect()
}

/// A task's lease key: `pipeline/input/partition` (names keep to the
/// characters lease keys allow).
pub fn lease_key(task: &TaskKey) -> String {
    format!("{}/{}/{}", task.pipeline, task.input, task.partition)
}

/// What a worker says about a task it runs, in its heartbeat, so that
/// any worker can answer for the pipeline's status.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskReport {
    pub pipeline: String,
    pub input: String,
    pub partition: u32,
    #[serde(flatten)]
    pub state: TaskState,
    /// The next input offset to process.
    pub position: u64,
    pub records_in: u64,
    pub records_out: u64,
    /// Each stage's counts, in order.
    #[serde(default)]
    pub stages: Vec<StageCounts>,
}

/// A worker's heartbeat: what it runs, and where its Kafka listener is.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct WorkerReport {
    pub tasks: Vec<TaskReport>,
    /// `host:port` Kafka clients are told to connect to (none: no listener).
    #[serde(default)]
    pub kafka: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(pipeline: &str, partition: u32) -> TaskKey {
        TaskKey {
            pipeline: pipeline.to_string(),
            input: "in".to_string(),
            partition,
        }
    }

    #[test]
    fn tasks_spread_evenly_and_every_worker_computes_the_same() {
        let tasks: Vec<TaskKey> = (0..4)
            .map(|p| key("a", p))
            .chain((0..3).map(|p| key("b", p)))
            .collect();
        let workers = ["w2".to_string(), "w1".to_string(), "w3".to_string()];
        let assigned = assign(&tasks, &workers);
        assert_eq!(assigned.len(), 7);
        let mut counts = BTreeMap::new();
        for worker in assigned.values() {
            *counts.entry(worker.as_str()).or_insert(0) += 1;
        }
        assert_eq!(counts.values().copied().collect::<Vec<_>>(), [3, 2, 2]);
        let mut reversed = tasks.clone();
        reversed.reverse();
        let mut shuffled_workers = workers.to_vec();
        shuffled_workers.rotate_left(1);
        assert_eq!(assign(&reversed, &shuffled_workers), assigned);
        assert!(assign(&tasks, &[]).is_empty());
        assert_eq!(lease_key(&key("t.p", 2)), "t.p/in/2");
    }
}
