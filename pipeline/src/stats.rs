//! Counters a running pipeline keeps per task and per stage, read by the
//! status API and `/metrics` while the task updates them.

use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};
use tokio::sync::watch;

/// Counters of one stage (in one task).
#[derive(Debug, Default)]
pub struct StageStats {
    pub records_in: AtomicU64,
    pub records_out: AtomicU64,
    /// Records whose processing failed (trap, failure, limit).
    pub errors: AtomicU64,
    /// Records the operator rejected.
    pub rejected: AtomicU64,
    /// Time spent in the operator, in nanoseconds.
    pub busy_ns: AtomicU64,
}

/// Counters of one stage, as reported.
#[derive(Debug, Default, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct StageCounts {
    pub records_in: u64,
    pub records_out: u64,
    pub errors: u64,
    pub rejected: u64,
    pub processing_ms: u64,
}

impl StageStats {
    pub fn counts(&self) -> StageCounts {
        StageCounts {
            records_in: self.records_in.load(Ordering::Relaxed),
            records_out: self.records_out.load(Ordering::Relaxed),
            errors: self.errors.load(Ordering::Relaxed),
            rejected: self.rejected.load(Ordering::Relaxed),
            processing_ms: self.busy_ns.load(Ordering::Relaxed) / 1_000_000,
        }
    }
}

impl StageCounts {
    pub fn add(&mut self, other: &StageCounts) {
        self.records_in += other.records_in;
        self.records_out += other.records_out;
        self.errors += other.errors;
        self.rejected += other.rejected;
        self.processing_ms += other.processing_ms;
    }
}

/// Where a task is in its life.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "state", content = "reason")]
pub enum TaskState {
    Starting,
    Running,
    Paused,
    Failed(String),
    Stopped,
}

/// Counters and state of one task (one input partition of a pipeline).
#[derive(Debug)]
pub struct TaskStats {
    state: watch::Sender<TaskState>,
    /// The next input offset to process (committed).
    pub position: AtomicU64,
    pub records_in: AtomicU64,
    /// Records appended to output topics (dead letters included).
    pub records_out: AtomicU64,
    pub dead_lettered: AtomicU64,
    /// Outputs no topic was named for.
    pub unrouted: AtomicU64,
    /// Outputs no append could take (too large, or keyless for a
    /// compacted topic), dropped under `skip` and `dead-letter`.
    pub undeliverable: AtomicU64,
    pub commits: AtomicU64,
    pub stages: Vec<StageStats>,
}

impl TaskStats {
    pub fn new(stages: usize) -> TaskStats {
        TaskStats {
            state: watch::Sender::new(TaskState::Starting),
            position: AtomicU64::new(0),
            records_in: AtomicU64::new(0),
            records_out: AtomicU64::new(0),
            dead_lettered: AtomicU64::new(0),
            unrouted: AtomicU64::new(0),
            undeliverable: AtomicU64::new(0),
            commits: AtomicU64::new(0),
            stages: (0..stages).map(|_| StageStats::default()).collect(),
        }
    }

    pub fn state(&self) -> TaskState {
        self.state.borrow().clone()
    }

    pub fn set_state(&self, state: TaskState) {
        self.state.send_if_modified(|current| {
            let changed = *current != state;
            *current = state;
            changed
        });
    }

    /// Waits until the task is no longer processing (paused, stopped or
    /// failed): after a pause, until it has finished its current round.
    pub async fn settled(&self) {
        let mut states = self.state.subscribe();
        let _ = states
            .wait_for(|s| !matches!(s, TaskState::Starting | TaskState::Running))
            .await;
    }

    /// Waits until the task has recovered (or failed trying), so its
    /// position is fixed.
    pub async fn started(&self) {
        let mut states = self.state.subscribe();
        let _ = states.wait_for(|s| *s != TaskState::Starting).await;
    }
}

/// Adds `n` to a counter.
pub fn bump(counter: &AtomicU64, n: u64) {
    counter.fetch_add(n, Ordering::Relaxed);
}
