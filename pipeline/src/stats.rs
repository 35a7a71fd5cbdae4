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

/// The steps of a task's round, for the time spent in each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Reading input from the log.
    Read,
    /// Running the chain, routing and encoding the commit (the operators'
    /// own time is also counted per stage).
    Process,
    /// Waiting for the committer to take the round (backpressure: the
    /// outputs are slower than the processing).
    Backpressure,
    /// Appending commit records.
    Commit,
    /// Appending outputs to their topics.
    Publish,
}

impl Step {
    pub const ALL: [Step; 5] = [
        Step::Read,
        Step::Process,
        Step::Backpressure,
        Step::Commit,
        Step::Publish,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Step::Read => "read",
            Step::Process => "process",
            Step::Backpressure => "backpressure",
            Step::Commit => "commit",
            Step::Publish => "publish",
        }
    }
}

/// Milliseconds a task (or a pipeline's tasks together) spent in each step
/// of its rounds. Reading and processing happen on one thread, committing
/// and publishing on another, so the two halves overlap.
#[derive(Debug, Default, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub struct StepTimes {
    pub read_ms: u64,
    pub process_ms: u64,
    pub backpressure_ms: u64,
    pub commit_ms: u64,
    pub publish_ms: u64,
}

impl StepTimes {
    pub fn get(&self, step: Step) -> u64 {
        match step {
            Step::Read => self.read_ms,
            Step::Process => self.process_ms,
            Step::Backpressure => self.backpressure_ms,
            Step::Commit => self.commit_ms,
            Step::Publish => self.publish_ms,
        }
    }

    fn slot(&mut self, step: Step) -> &mut u64 {
        match step {
            Step::Read => &mut self.read_ms,
            Step::Process => &mut self.process_ms,
            Step::Backpressure => &mut self.backpressure_ms,
            Step::Commit => &mut self.commit_ms,
            Step::Publish => &mut self.publish_ms,
        }
    }

    pub fn add(&mut self, other: &StepTimes) {
        for step in Step::ALL {
            *self.slot(step) += other.get(step);
        }
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
    /// Nanoseconds spent in each step (indexed by `Step as usize`).
    step_ns: [AtomicU64; Step::ALL.len()],
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
            step_ns: Default::default(),
            stages: (0..stages).map(|_| StageStats::default()).collect(),
        }
    }

    /// Runs `work` and counts its time towards `step`.
    pub fn timed<T>(&self, step: Step, work: impl FnOnce() -> T) -> T {
        let started = std::time::Instant::now();
        let result = work();
        self.add_time(step, started.elapsed());
        result
    }

    /// Awaits `work` and counts its time towards `step`.
    pub async fn timed_async<T>(&self, step: Step, work: impl Future<Output = T>) -> T {
        let started = std::time::Instant::now();
        let result = work.await;
        self.add_time(step, started.elapsed());
        result
    }

    fn add_time(&self, step: Step, elapsed: std::time::Duration) {
        bump(&self.step_ns[step as usize], elapsed.as_nanos() as u64);
    }

    /// The time spent in each step so far.
    pub fn step_times(&self) -> StepTimes {
        let mut times = StepTimes::default();
        for step in Step::ALL {
            *times.slot(step) = self.step_ns[step as usize].load(Ordering::Relaxed) / 1_000_000;
        }
        times
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
