//! The two halves of a running task: the processing loop, which reads
//! input and runs it through the chain round after round, and the
//! committer, which appends each round's commit and publishes its outputs
//! while the loop already works on the next.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot, watch};
use weir_format::Batch;

use super::publish::publish;
use super::reader::InputReader;
use super::work::Work;
use super::{Control, IDLE_WAIT, TaskError, TaskKey, skip_below};
use crate::checkpoint::{Pending, SEQUENCE_ROTATION};
use crate::spec::PipelineSettings;
use crate::stats::{Step, TaskState, TaskStats, bump};
use weir_log::{LogError, StreamLog};

/// What the processing loop hands the committer, in order.
pub(super) enum Round {
    /// One round: its commit (description and outputs), the outputs to
    /// publish after it, and the input position it reaches.
    Commit {
        values: Vec<Bytes>,
        outputs: Vec<Pending>,
        end: u64,
    },
    /// A snapshot of the state after the previous round.
    Snapshot { values: Vec<Bytes> },
    /// Answered once every earlier round is committed and published.
    Settled(oneshot::Sender<()>),
}

/// Where the processing loop starts.
pub(super) struct Start {
    /// The next input offset.
    pub(super) position: u64,
    /// Bytes in the commit log since its last snapshot.
    pub(super) since_snapshot: u64,
}

/// Reads and processes rounds until stopped, handing each to the
/// committer. Returns early on a failure (or when the committer is gone).
pub(super) async fn process_rounds(
    key: &TaskKey,
    log: Arc<dyn StreamLog>,
    mut work: Work,
    start: Start,
    settings: PipelineSettings,
    rounds: &mpsc::Sender<Round>,
    control: &mut watch::Receiver<Control>,
) -> Result<(), TaskError> {
    let stats = work.stats.clone();
    let mut input = InputReader::new(
        log.clone(),
        &key.input,
        key.partition,
        settings.max_read_bytes,
    );
    let mut position = start.position;
    // Bytes committed since the last snapshot, and that snapshot's size.
    let (mut since_snapshot, mut last_snapshot) = (start.since_snapshot, 0u64);
    loop {
        let wanted = *control.borrow_and_update();
        match wanted {
            Control::Stop => return Ok(()),
            Control::Pause => {
                // Paused once the rounds in flight are published too, so
                // `paused` means nothing more will come out.
                let (settled, answer) = oneshot::channel();
                rounds
                    .send(Round::Settled(settled))
                    .await
                    .map_err(|_| TaskError::CommitterGone)?;
                answer.await.map_err(|_| TaskError::CommitterGone)?;
                stats.set_state(TaskState::Paused);
                if control.changed().await.is_err() {
                    return Ok(());
                }
                continue;
            }
            Control::Run => stats.set_state(TaskState::Running),
        }
        let batches = match stats.timed_async(Step::Read, input.read(position)).await {
            Ok(batches) => batches,
            Err(LogError::OffsetOutOfRange { start, .. }) if position < start => {
                tracing::warn!(pipeline = %key.pipeline, input = %work.source, from = position,
                    to = start, "input records were deleted by retention before being processed");
                position = start;
                continue;
            }
            Err(e) => return Err(TaskError::log("reading input")(e)),
        };
        let batches = skip_below(batches, position);
        let Some(end) = batches.last().map(Batch::next_offset) else {
            tokio::select! {
                waited = log.wait_for(&key.input, key.partition, position, IDLE_WAIT) => {
                    waited.map_err(TaskError::log("waiting for input"))?;
                }
                changed = control.changed() => {
                    if changed.is_err() {
                        return Ok(()); // the owner is gone: stop
                    }
                }
                // The committer failed: stop now, not at the next input.
                () = rounds.closed() => return Err(TaskError::CommitterGone),
            }
            continue;
        };
        if work.sequences.values().any(|&s| s > SEQUENCE_ROTATION) {
            work.producer_id = log
                .init_producer_id()
                .await
                .map_err(TaskError::log("getting a new producer id"))?;
            work.sequences.clear();
        }
        input.read_ahead(end);
        let count: usize = batches.iter().map(Batch::record_count).sum();
        bump(&stats.records_in, count as u64);
        let (back, (values, outputs)) = blocking(work, move |work| {
            let stats = work.stats.clone();
            stats.timed(Step::Process, || work.process(batches, end))
        })
        .await?;
        work = back;
        since_snapshot += values.iter().map(Bytes::len).sum::<usize>() as u64;
        let round = Round::Commit {
            values,
            outputs,
            end,
        };
        stats
            .timed_async(Step::Backpressure, rounds.send(round))
            .await
            .map_err(|_| TaskError::CommitterGone)?;
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
                .map_err(|_| TaskError::CommitterGone)?;
            since_snapshot = 0;
        }
    }
}

/// Runs `f` on the work on the blocking pool (guest calls must not run
/// on the async threads) when the scheduler gives the tenant its turn,
/// and hands the work back with the result.
async fn blocking<T: Send + 'static>(
    mut work: Work,
    f: impl FnOnce(&mut Work) -> Result<T, TaskError> + Send + 'static,
) -> Result<(Work, T), TaskError> {
    let scheduler = work.scheduler.clone();
    let (tenant, share) = (work.tenant.clone(), work.cpu_share);
    let (work, result) = scheduler
        .run(&tenant, share, move || {
            let result = f(&mut work);
            (work, result)
        })
        .await
        .ok_or_else(|| TaskError::Crashed("processing crashed".to_string()))?;
    Ok((work, result?))
}

/// Appends each round's commit, then publishes its outputs; appends
/// snapshots, after which the commit log may forget what is below them
/// (see [`truncate_commits`]).
pub(super) async fn commit_rounds(
    log: Arc<dyn StreamLog>,
    commit_log: String,
    partition: u32,
    mut queue: mpsc::Receiver<Round>,
    stats: Arc<TaskStats>,
    forget_below: watch::Sender<u64>,
) -> Result<(), TaskError> {
    while let Some(round) = queue.recv().await {
        match round {
            Round::Commit {
                values,
                outputs,
                end,
            } => {
                let commit = log.commit(&commit_log, partition, values);
                stats
                    .timed_async(Step::Commit, commit)
                    .await
                    .map_err(TaskError::log("committing"))?;
                bump(&stats.commits, 1);
                stats
                    .timed_async(Step::Publish, publish(&*log, outputs, &stats))
                    .await?;
                stats.position.store(end, Ordering::Relaxed);
            }
            Round::Snapshot { values } => {
                let commit = log.commit(&commit_log, partition, values);
                let offset = stats
                    .timed_async(Step::Commit, commit)
                    .await
                    .map_err(TaskError::log("committing a snapshot"))?;
                forget_below.send_replace(offset);
            }
            Round::Settled(answer) => {
                let _ = answer.send(());
            }
        }
    }
    Ok(())
}

/// Truncates the commit log below the latest snapshot, beside the
/// committer rather than in its way: deleting old segments can take longer
/// than a round (the kernel drops their pages), and nothing depends on it
/// but disk space, since recovery starts from the last snapshot whatever
/// lies before it. A failure is logged and the next snapshot tries again.
/// Ends when the committer does.
pub(super) async fn truncate_commits(
    log: Arc<dyn StreamLog>,
    commit_log: String,
    partition: u32,
    mut forget_below: watch::Receiver<u64>,
) {
    while forget_below.changed().await.is_ok() {
        let offset = *forget_below.borrow_and_update();
        if let Err(error) = log.truncate_commits(&commit_log, partition, offset).await {
            tracing::warn!(%commit_log, partition, offset, %error,
                "could not truncate the commit log; the next snapshot tries again");
        }
    }
}
