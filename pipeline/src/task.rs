//! A pipeline task: one input partition through the fused stages, forever.
//!
//! The loop: read a bounded range of input, run it through the chain (on
//! the blocking pool: guest calls never run on the async threads), route
//! the outputs to output partitions and stamp them with sequence numbers,
//! and hand the round to the committer, which appends its commit record
//! (the commit point) and then publishes its outputs while the loop
//! processes the next round. A channel of one bounds the rounds in flight,
//! so a task never reads much faster than its outputs are written
//! (backpressure). When the input is exhausted the task waits for new
//! data, woken by the log as soon as it arrives.
//!
//! On start the task folds its commit log (see `checkpoint`): state,
//! position and sequences come back as of the last commit, whose outputs
//! are published again (the log refuses the ones already written). A new
//! task first commits its starting position, so `latest` or a timestamp is
//! resolved once, not again after a crash.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{mpsc, watch};
use weir_format::{Batch, ProducerStamp};

use super::chain::{Chain, ChainOutput, INTERRUPTED, Stage};
use super::checkpoint::{Commit, Pending, Recovered, SEQUENCE_ROTATION, next_sequence};
use super::routing::{OutputTopic, route};
use super::scheduler::CpuScheduler;
use super::spec::{ErrorPolicy, PipelineSettings, StartAt, StartName};
use super::stats::{TaskState, TaskStats, bump};
use weir_host::{InstanceOptions, OperatorInstance, OperatorModule};
use weir_log::{CommitLogSettings, Durability, LogError, MAX_COMMIT_BYTES, StreamLog};

/// Longest wait for new input before checking the controls again.
const IDLE_WAIT: Duration = Duration::from_secs(1);

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

/// Runs a task until it is stopped or fails; the outcome is in its stats.
pub async fn run(setup: TaskSetup) {
    let stats = setup.stats.clone();
    let key = setup.key.clone();
    // Its own task, so that even a panic ends as a failure with a reason.
    let outcome = match tokio::spawn(run_until_stopped(setup)).await {
        Ok(outcome) => outcome,
        Err(e) => Err(format!("the task crashed: {e}")),
    };
    match outcome {
        Ok(()) => stats.set_state(TaskState::Stopped),
        Err(reason) => {
            tracing::error!(pipeline = %key.pipeline, input = %key.input,
                partition = key.partition, %reason, "pipeline task failed");
            stats.set_state(TaskState::Failed(reason));
        }
    }
}

/// The part of a task that runs on the blocking pool.
struct Work {
    chain: Chain,
    producer_id: i64,
    sequences: BTreeMap<(String, u32), i32>,
    outputs: HashMap<String, OutputTopic>,
    policy: ErrorPolicy,
    dead_letter: Option<String>,
    partition: u32,
    source: String,
    stats: Arc<TaskStats>,
    scheduler: Arc<CpuScheduler>,
    tenant: String,
    cpu_share: u32,
}

async fn run_until_stopped(setup: TaskSetup) -> Result<(), String> {
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
        .map_err(|e| format!("input: {e}"))?
        .partitions
        .len() as u32;
    let commit_log = key.commit_log();
    let commit_settings = CommitLogSettings {
        durability: commit_durability,
        segment_bytes: settings.snapshot_after_bytes,
    };
    log.open_commit_log(&commit_log, input_partitions, commit_settings)
        .await
        .map_err(|e| format!("opening: {e}"))?;
    let records = log
        .commits(&commit_log, key.partition)
        .await
        .map_err(|e| format!("reading: {e}"))?;
    let mut recovered = Recovered::fold(&records)?;
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
            .map_err(|e| format!("getting a producer id: {e}"))?,
    };
    let position = match recovered.input_end {
        Some(position) => position,
        None => {
            let position = start_position(&*log, &key, start).await?;
            let first = Commit::new(position, producer_id, Vec::new(), Vec::new());
            log.commit(&commit_log, key.partition, first.encode(&[]))
                .await
                .map_err(|e| format!("committing the start position: {e}"))?;
            position
        }
    };
    stats.position.store(position, Ordering::Relaxed);
    republish(&*log, &recovered.unpublished, &stats).await?;

    let chain_stats = stats.clone();
    let states = std::mem::take(&mut recovered.states);
    let chain_stopping = stopping.clone();
    let chain = tokio::task::spawn_blocking(move || {
        build_chain(stages, states, policy, chain_stats, chain_stopping)
    })
    .await
    .expect("building a chain does not panic")?;
    let work = Work {
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
    let committer = tokio::spawn(commit_rounds(
        log.clone(),
        commit_log,
        key.partition,
        queue,
        stats.clone(),
    ));
    let start = Start {
        position,
        since_snapshot: recovered_bytes,
    };
    let processed = process_rounds(&key, &*log, work, start, settings, &rounds, &mut control).await;
    // Stopped in the middle of a round: nothing of it was committed, and
    // the next start takes it up again.
    let processed = match processed {
        Err(reason) if reason == INTERRUPTED => Ok(()),
        other => other,
    };
    // Whatever was processed is committed first, even when stopping on a
    // failure; the committer's own failure comes first.
    drop(rounds);
    let committed = committer
        .await
        .unwrap_or_else(|e| Err(format!("the committer crashed: {e}")));
    committed.and(processed)
}

/// What the processing loop hands the committer, in order.
enum Round {
    /// One round: its commit (description and outputs), the outputs to
    /// publish after it, and the input position it reaches.
    Commit {
        values: Vec<Bytes>,
        outputs: Vec<Pending>,
        end: u64,
    },
    /// A snapshot of the state after the previous round.
    Snapshot { values: Vec<Bytes> },
}

/// Where the processing loop starts.
struct Start {
    /// The next input offset.
    position: u64,
    /// Bytes in the commit log since its last snapshot.
    since_snapshot: u64,
}

/// Reads and processes rounds until stopped, handing each to the
/// committer. Returns early on a failure (or when the committer is gone).
async fn process_rounds(
    key: &TaskKey,
    log: &dyn StreamLog,
    mut work: Work,
    start: Start,
    settings: PipelineSettings,
    rounds: &mpsc::Sender<Round>,
    control: &mut watch::Receiver<Control>,
) -> Result<(), String> {
    let stats = work.stats.clone();
    let mut position = start.position;
    // Bytes committed since the last snapshot, and that snapshot's size.
    let (mut since_snapshot, mut last_snapshot) = (start.since_snapshot, 0u64);
    let gone = || "the committer stopped".to_string();
    loop {
        let wanted = *control.borrow_and_update();
        match wanted {
            Control::Stop => return Ok(()),
            Control::Pause => {
                stats.set_state(TaskState::Paused);
                if control.changed().await.is_err() {
                    return Ok(());
                }
                continue;
            }
            Control::Run => stats.set_state(TaskState::Running),
        }
        let batches = match log
            .read(&key.input, key.partition, position, settings.max_read_bytes)
            .await
        {
            Ok(batches) => batches,
            Err(LogError::OffsetOutOfRange { start, .. }) if position < start => {
                tracing::warn!(pipeline = %key.pipeline, input = %work.source, from = position,
                    to = start, "input records were deleted by retention before being processed");
                position = start;
                continue;
            }
            Err(e) => return Err(format!("reading input: {e}")),
        };
        let batches = skip_below(batches, position);
        let Some(end) = batches.last().map(Batch::next_offset) else {
            tokio::select! {
                waited = log.wait_for(&key.input, key.partition, position, IDLE_WAIT) => {
                    waited.map_err(|e| format!("waiting for input: {e}"))?;
                }
                changed = control.changed() => {
                    if changed.is_err() {
                        return Ok(()); // the owner is gone: stop
                    }
                }
                // The committer failed: stop now, not at the next input.
                () = rounds.closed() => return Err(gone()),
            }
            continue;
        };
        if work.sequences.values().any(|&s| s > SEQUENCE_ROTATION) {
            work.producer_id = log
                .init_producer_id()
                .await
                .map_err(|e| format!("getting a new producer id: {e}"))?;
            work.sequences.clear();
        }
        let count: usize = batches.iter().map(Batch::record_count).sum();
        bump(&stats.records_in, count as u64);
        let (back, (values, outputs)) =
            blocking(work, move |work| work.process(batches, end)).await?;
        work = back;
        since_snapshot += values.iter().map(Bytes::len).sum::<usize>() as u64;
        let round = Round::Commit {
            values,
            outputs,
            end,
        };
        rounds.send(round).await.map_err(|_| gone())?;
        position = end;
        // Queued after the round, so it is committed only once the round's
        // outputs are published (it becomes the last commit, and the last
        // commit's outputs are the only ones recovery publishes again).
        if since_snapshot > settings.snapshot_after_bytes.max(4 * last_snapshot) {
            let (back, values) = blocking(work, move |work| Ok(work.snapshot(end))).await?;
            work = back;
            last_snapshot = values.iter().map(Bytes::len).sum::<usize>() as u64;
            rounds
                .send(Round::Snapshot { values })
                .await
                .map_err(|_| gone())?;
            since_snapshot = 0;
        }
    }
}

/// Runs `f` on the work on the blocking pool (guest calls must not run
/// on the async threads) when the scheduler gives the tenant its turn,
/// and hands the work back with the result.
async fn blocking<T: Send + 'static>(
    mut work: Work,
    f: impl FnOnce(&mut Work) -> Result<T, String> + Send + 'static,
) -> Result<(Work, T), String> {
    let scheduler = work.scheduler.clone();
    let (tenant, share) = (work.tenant.clone(), work.cpu_share);
    let (work, result) = scheduler
        .run(&tenant, share, move || {
            let result = f(&mut work);
            (work, result)
        })
        .await
        .ok_or_else(|| "processing crashed".to_string())?;
    Ok((work, result?))
}

/// Appends each round's commit, then publishes its outputs; appends
/// snapshots and truncates the commit log behind them.
async fn commit_rounds(
    log: Arc<dyn StreamLog>,
    commit_log: String,
    partition: u32,
    mut queue: mpsc::Receiver<Round>,
    stats: Arc<TaskStats>,
) -> Result<(), String> {
    while let Some(round) = queue.recv().await {
        match round {
            Round::Commit {
                values,
                outputs,
                end,
            } => {
                log.commit(&commit_log, partition, values)
                    .await
                    .map_err(|e| format!("committing: {e}"))?;
                bump(&stats.commits, 1);
                publish(&*log, &outputs, &stats).await?;
                stats.position.store(end, Ordering::Relaxed);
            }
            Round::Snapshot { values } => {
                let offset = log
                    .commit(&commit_log, partition, values)
                    .await
                    .map_err(|e| format!("committing a snapshot: {e}"))?;
                log.truncate_commits(&commit_log, partition, offset)
                    .await
                    .map_err(|e| format!("truncating: {e}"))?;
            }
        }
    }
    Ok(())
}

fn build_chain(
    stages: Vec<StagePlan>,
    mut states: BTreeMap<String, Vec<weir_host::StateDelta>>,
    policy: ErrorPolicy,
    stats: Arc<TaskStats>,
    stopping: Arc<AtomicBool>,
) -> Result<Chain, String> {
    let stages = stages
        .into_iter()
        .map(|plan| {
            let checkpoints = states.remove(&plan.state_key).unwrap_or_default();
            let options = InstanceOptions {
                checkpoints,
                max_memory_bytes: plan.max_memory_bytes,
            };
            let instance = OperatorInstance::with_options(plan.module, plan.config, options)
                .map_err(|e| format!("starting stage {}: {e}", plan.label))?;
            Ok(Stage {
                module: plan.state_key,
                label: plan.label,
                instance,
                routes: plan.routes,
            })
        })
        .collect::<Result<Vec<_>, String>>()?;
    Ok(Chain::new(stages, policy, stats, stopping))
}

async fn start_position(log: &dyn StreamLog, key: &TaskKey, start: StartAt) -> Result<u64, String> {
    let info = log
        .topic(&key.input)
        .await
        .map_err(|e| format!("input: {e}"))?;
    let partition = info
        .partitions
        .get(key.partition as usize)
        .ok_or_else(|| format!("input {} has no partition {}", key.input, key.partition))?;
    match start {
        StartAt::Named(StartName::Earliest) => Ok(partition.start_offset),
        StartAt::Named(StartName::Latest) => Ok(partition.end_offset),
        StartAt::Timestamp(ms) => log
            .offset_for_timestamp(&key.input, key.partition, ms)
            .await
            .map_err(|e| format!("finding the start time: {e}")),
    }
}

/// Drops records below `position` (the first batch read may start before it).
fn skip_below(mut batches: Vec<Batch>, position: u64) -> Vec<Batch> {
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

/// Appends outputs, in order. A batch the log already holds (same
/// producer and sequences) is not written twice.
async fn publish(
    log: &dyn StreamLog,
    outputs: &[Pending],
    stats: &TaskStats,
) -> Result<(), String> {
    for output in outputs {
        publish_one(log, output, stats).await?;
    }
    Ok(())
}

async fn publish_one(
    log: &dyn StreamLog,
    output: &Pending,
    stats: &TaskStats,
) -> Result<(), String> {
    let Pending {
        topic,
        partition,
        batch,
    } = output;
    match log.append(topic, *partition, batch.clone()).await {
        Ok(info) if !info.duplicate => bump(&stats.records_out, batch.record_count() as u64),
        Ok(_) => {}
        // Older than the log's memory of this producer's batches, but every
        // sequence of it was written: already published.
        Err(LogError::DuplicateSequence(_)) => {}
        Err(e) => return Err(format!("publishing to {topic}/{partition}: {e}")),
    }
    Ok(())
}

/// Publishes the last commit's outputs again after a restart. An output
/// whose topic or partition no longer exists is skipped: it can never be
/// delivered, and it must not block the pipeline forever.
async fn republish(
    log: &dyn StreamLog,
    outputs: &[Pending],
    stats: &TaskStats,
) -> Result<(), String> {
    for output in outputs {
        let gone = log
            .topic(&output.topic)
            .await
            .map_or(true, |t| t.partitions.len() as u32 <= output.partition);
        if gone {
            tracing::warn!(topic = %output.topic, partition = output.partition,
                records = output.batch.record_count(),
                "output topic partition is gone: committed outputs dropped");
            continue;
        }
        publish_one(log, output, stats).await?;
    }
    Ok(())
}

impl Work {
    /// Runs input through the chain and prepares the commit record and the
    /// outputs to publish.
    fn process(
        &mut self,
        batches: Vec<Batch>,
        end: u64,
    ) -> Result<(Vec<Bytes>, Vec<Pending>), String> {
        let output = self
            .chain
            .process(batches, &self.source)
            .map_err(|halt| halt.reason)?;
        let states = self.chain.take_state_deltas();
        let outputs = self.route(output)?;
        let targets = outputs
            .iter()
            .map(|p| (p.topic.clone(), p.partition))
            .collect();
        let commit = Commit::new(end, self.producer_id, states, targets);
        let batches: Vec<Batch> = outputs.iter().map(|p| p.batch.clone()).collect();
        let values = commit.encode(&batches);
        // Each stage's output and state are bounded by its limits; a chain
        // of many stages can still add up to more than a commit holds.
        let size: usize = values.iter().map(|v| v.len() + 16).sum();
        if size > MAX_COMMIT_BYTES {
            return Err(format!(
                "the round for offsets up to {end} would commit {size} bytes of outputs and \
                 state, more than the {MAX_COMMIT_BYTES} bytes a commit holds (lower the \
                 stages' output or state limits, or use fewer stages)"
            ));
        }
        Ok((values, outputs))
    }

    /// Sorts outputs into topic partitions (see `routing`) and stamps each
    /// batch with the producer id and the next sequences. Undeliverable
    /// records halt the task under `halt` and are dropped otherwise.
    fn route(&mut self, output: ChainOutput) -> Result<Vec<Pending>, String> {
        let mut all = output.routed;
        if let Some(topic) = &self.dead_letter {
            let dead: usize = output.dead_letters.iter().map(Batch::record_count).sum();
            bump(&self.stats.dead_lettered, dead as u64);
            all.extend(output.dead_letters.into_iter().map(|b| (topic.clone(), b)));
        }
        let routed = route(&self.outputs, self.partition, all)?;
        if let Some(first) = routed.undeliverable.first() {
            if self.policy == ErrorPolicy::Halt {
                return Err(format!("an output cannot be delivered: {first}"));
            }
            tracing::warn!(input = %self.source, count = routed.undeliverable.len(),
                reason = %first, "undeliverable outputs dropped");
            bump(&self.stats.undeliverable, routed.undeliverable.len() as u64);
        }
        Ok(routed
            .batches
            .into_iter()
            .map(|(topic, partition, batch)| {
                let stamp = self.next_stamp(&topic, partition, batch.record_count());
                Pending {
                    topic,
                    partition,
                    batch: batch.with_producer(stamp),
                }
            })
            .collect())
    }

    /// The snapshot commit for position `end`.
    fn snapshot(&self, end: u64) -> Vec<Bytes> {
        let states = self.chain.state_snapshots();
        Commit::snapshot(end, self.producer_id, states, &self.sequences).encode(&[])
    }

    fn next_stamp(&mut self, topic: &str, partition: u32, records: usize) -> ProducerStamp {
        let slot = self
            .sequences
            .entry((topic.to_string(), partition))
            .or_insert(0);
        let base_sequence = *slot;
        *slot = next_sequence(base_sequence, records);
        ProducerStamp {
            id: self.producer_id,
            epoch: 0,
            base_sequence,
        }
    }
}
