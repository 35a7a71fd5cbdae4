//! A pipeline task: one input partition through the fused stages, forever.
//!
//! The loop: read a bounded range of input (the next one is read
//! meanwhile), run it through the chain (on the blocking pool: guest calls
//! never run on the async threads), route the outputs to output
//! partitions and stamp them with sequence numbers, and hand the round to
//! the committer as soon as it can take one (until then the round grows).
//! The committer appends the round's commit record (the commit point),
//! then publishes its outputs while it appends the next commit and the
//! loop processes further. A channel of one bounds the rounds in flight,
//! so a task never reads much faster than its outputs are written
//! (backpressure). When the input is exhausted the task waits for new
//! data, woken by the log as soon as it arrives.
//!
//! On start the task folds its commit log (see `checkpoint`): state,
//! position and sequences come back as of the last commit, and outputs
//! that may not be out are published again (the log refuses the ones
//! already written). A new
//! task first commits its starting position, so `latest` or a timestamp is
//! resolved once, not again after a crash.

mod committer;
mod error;
mod publish;
mod reader;
mod rounds;
mod work;

pub use error::TaskError;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use weir_format::Batch;

use super::checkpoint::{Commit, Recovered};
use super::routing::OutputTopic;
use super::scheduler::CpuScheduler;
use super::spec::{ErrorPolicy, PipelineSettings, StartAt, StartName};
use super::stats::{TaskState, TaskStats};
use committer::{commit_rounds, truncate_commits};
use publish::republish;
use rounds::{Start, process_rounds};
use weir_host::OperatorModule;
use weir_log::{CommitLogSettings, Durability, StreamLog};
use work::{OpenRound, Work, build_chain};

/// Longest wait for new input before checking the controls again.
pub(super) const IDLE_WAIT: Duration = Duration::from_secs(1);

/// What the owner wants a task to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Control {
    Run,
    Pause,
    Stop,
}

/// Identifies a task: a pipeline and one partition of one of its inputs.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct TaskKey {
    pub pipeline: String,
    pub input: String,
    pub partition: u32,
}

impl TaskKey {
    /// The commit log of every task of this pipeline and input.
    pub fn commit_log(&self) -> String {
        commit_log_name(&self.pipeline, &self.input)
    }
}

/// The commit log name for a pipeline's input topic.
pub fn commit_log_name(pipeline: &str, input: &str) -> String {
    format!("{pipeline}.{input}")
}

/// A stage as planned: the module to run and how.
#[derive(Clone)]
pub struct StagePlan {
    pub module: Arc<OperatorModule>,
    pub label: String,
    pub state_key: String,
    pub config: Vec<(String, String)>,
    pub routes: BTreeMap<String, String>,
    /// Memory cap per instance (the tenant's quota), if below the engine's.
    pub max_memory_bytes: Option<usize>,
}

/// Everything a task needs to run.
#[derive(Clone)]
pub struct TaskSetup {
    pub key: TaskKey,
    pub log: Arc<dyn StreamLog>,
    pub stages: Vec<StagePlan>,
    pub policy: ErrorPolicy,
    pub dead_letter: Option<String>,
    pub start: StartAt,
    /// Every output topic (dead-letter topic included).
    pub outputs: HashMap<String, OutputTopic>,
    /// Durability of a new commit log: the strongest of the outputs'.
    pub commit_durability: Durability,
    pub settings: PipelineSettings,
    /// Shares guest execution between tenants.
    pub scheduler: Arc<CpuScheduler>,
    /// The tenant the pipeline belongs to ("" without tenancy).
    pub tenant: String,
    pub cpu_share: u32,
    pub stats: Arc<TaskStats>,
    pub control: watch::Receiver<Control>,
    /// Set with `Control::Stop`, seen inside a round (see `Chain`).
    pub stopping: Arc<AtomicBool>,
}

/// The longest a task waits before it starts again after an outage.
const MAX_RESTART_PAUSE: Duration = Duration::from_secs(30);

/// Runs a task until it is stopped or fails; the outcome is in its stats.
/// A task the log failed as unavailable starts again by itself when the
/// settings say so (`restart_after_unavailable_ms`), from its commit log
/// like any restart, until it is stopped.
pub async fn run(setup: TaskSetup) {
    let stats = setup.stats.clone();
    let key = setup.key.clone();
    let mut control = setup.control.clone();
    let first_pause = setup
        .settings
        .restart_after_unavailable_ms
        .filter(|&ms| ms > 0)
        .map(Duration::from_millis);
    let mut pause = first_pause;
    loop {
        let started = tokio::time::Instant::now();
        // Its own task, so that even a panic ends as a failure with a reason.
        let outcome = match tokio::spawn(run_until_stopped(setup.clone())).await {
            Ok(outcome) => outcome,
            Err(e) => Err(TaskError::Crashed(format!("the task crashed: {e}"))),
        };
        let error = match outcome {
            Ok(()) => return stats.set_state(TaskState::Stopped),
            Err(error) => error,
        };
        let reason = error.to_string();
        tracing::error!(pipeline = %key.pipeline, input = %key.input,
            partition = key.partition, %reason, "pipeline task failed");
        stats.set_state(TaskState::Failed(reason));
        let Some(wait) = pause.filter(|_| error.is_transient()) else {
            return;
        };
        // A task that ran a good while since its last restart starts over
        // with the shortest pause.
        let wait = match first_pause {
            Some(first) if started.elapsed() > MAX_RESTART_PAUSE * 2 => first,
            _ => wait,
        };
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = control.wait_for(|c| *c == Control::Stop) => return,
        }
        tracing::info!(pipeline = %key.pipeline, input = %key.input,
            partition = key.partition, "restarting the task after the log was unavailable");
        pause = Some((wait * 2).min(MAX_RESTART_PAUSE));
    }
}

async fn run_until_stopped(setup: TaskSetup) -> Result<(), TaskError> {
    let TaskSetup {
        key,
        log,
        stages,
        policy,
        dead_letter,
        start,
        outputs,
        commit_durability,
        settings,
        scheduler,
        tenant,
        cpu_share,
        stats,
        mut control,
        stopping,
    } = setup;
    let input_partitions = log
        .topic(&key.input)
        .await
        .map_err(TaskError::log("input"))?
        .partitions
        .len() as u32;
    let commit_log = key.commit_log();
    let commit_settings = CommitLogSettings {
        durability: commit_durability,
        segment_bytes: settings.snapshot_after_bytes,
    };
    log.open_commit_log(&commit_log, input_partitions, commit_settings)
        .await
        .map_err(TaskError::log("opening"))?;
    let records = log
        .commits(&commit_log, key.partition)
        .await
        .map_err(TaskError::log("reading"))?;
    let mut recovered = Recovered::fold(&records).map_err(TaskError::Recovery)?;
    // What the commit log holds since its last snapshot counts towards the
    // next one, so a task restarted again and again still snapshots and
    // lets the log forget.
    let recovered_bytes: u64 = records
        .iter()
        .flat_map(|r| &r.values)
        .map(|v| v.len() as u64)
        .sum();

    let producer_id = match recovered.producer_id {
        Some(id) => id,
        None => log
            .init_producer_id()
            .await
            .map_err(TaskError::log("getting a producer id"))?,
    };
    let position = match recovered.input_end {
        Some(position) => position,
        None => {
            let position = start_position(&*log, &key, start).await?;
            let first = Commit::new(position, producer_id, Vec::new(), Vec::new());
            log.commit(&commit_log, key.partition, first.encode(&[]).finish(true))
                .await
                .map_err(TaskError::log("committing the start position"))?;
            position
        }
    };
    stats.position.store(position, Ordering::Relaxed);
    republish(&*log, std::mem::take(&mut recovered.unpublished), &stats).await?;

    let chain_stats = stats.clone();
    let states = std::mem::take(&mut recovered.states);
    let chain_stopping = stopping.clone();
    let chain = tokio::task::spawn_blocking(move || {
        build_chain(stages, states, policy, chain_stats, chain_stopping)
    })
    .await
    .expect("building a chain does not panic")?;
    let work = Work {
        open: OpenRound::default(),
        chain,
        producer_id,
        sequences: recovered.sequences,
        outputs,
        policy,
        dead_letter,
        partition: key.partition,
        source: format!("{}/{}", key.input, key.partition),
        stats: stats.clone(),
        scheduler,
        tenant,
        cpu_share,
    };

    // The committer appends commits and publishes outputs while this
    // loop already processes the next round; the channel's bound keeps at
    // most two rounds in flight.
    let (rounds, queue) = mpsc::channel(1);
    let (forget_below, truncations) = watch::channel(0);
    let truncator = tokio::spawn(truncate_commits(
        log.clone(),
        commit_log.clone(),
        key.partition,
        truncations,
    ));
    let committer = tokio::spawn(commit_rounds(
        log.clone(),
        commit_log,
        key.partition,
        queue,
        stats.clone(),
        forget_below,
    ));
    let start = Start {
        position,
        since_snapshot: recovered_bytes,
    };
    let processed = process_rounds(
        &key,
        log.clone(),
        work,
        start,
        settings,
        &rounds,
        &mut control,
    )
    .await;
    // Stopped in the middle of a round: nothing of it was committed, and
    // the next start takes it up again.
    let processed = match processed {
        Err(TaskError::Interrupted) => Ok(()),
        other => other,
    };
    // Whatever was processed is committed first, even when stopping on a
    // failure; the committer's own failure comes first.
    drop(rounds);
    let committed = committer
        .await
        .unwrap_or_else(|e| Err(TaskError::Crashed(format!("the committer crashed: {e}"))));
    // Done once the committer is: nothing is left behind the task.
    if let Err(e) = truncator.await {
        tracing::warn!(pipeline = %key.pipeline, input = %key.input, "truncating crashed: {e}");
    }
    committed.and(processed)
}

async fn start_position(
    log: &dyn StreamLog,
    key: &TaskKey,
    start: StartAt,
) -> Result<u64, TaskError> {
    let info = log
        .topic(&key.input)
        .await
        .map_err(TaskError::log("input"))?;
    let partition =
        info.partitions
            .get(key.partition as usize)
            .ok_or_else(|| TaskError::NoPartition {
                input: key.input.clone(),
                partition: key.partition,
            })?;
    match start {
        StartAt::Named(StartName::Earliest) => Ok(partition.start_offset),
        StartAt::Named(StartName::Latest) => Ok(partition.end_offset),
        StartAt::Timestamp(ms) => log
            .offset_for_timestamp(&key.input, key.partition, ms)
            .await
            .map_err(TaskError::log("finding the start time")),
    }
}

/// Drops records below `position` (the first batch read may start before it).
pub(super) fn skip_below(mut batches: Vec<Batch>, position: u64) -> Vec<Batch> {
    if let Some(first) = batches.first()
        && first.base_offset() < position
    {
        match first.retain(|r| r.offset >= position) {
            Some(kept) => batches[0] = kept,
            None => {
                batches.remove(0);
            }
        }
    }
    batches
}
