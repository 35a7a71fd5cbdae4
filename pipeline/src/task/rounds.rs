//! The processing half of a running task: reads input and runs it through
//! the chain, handing rounds to the committer (`committer`) as soon as it
//! can take one, and snapshots when the commits since the last one have
//! grown.

use std::sync::Arc;

use tokio::sync::{mpsc, oneshot, watch};
use weir_format::Batch;

use super::committer::{Round, Sealed};
use super::reader::InputReader;
use super::work::Work;
use super::{Control, IDLE_WAIT, TaskError, TaskKey, skip_below};
use crate::checkpoint::SEQUENCE_ROTATION;
use crate::spec::PipelineSettings;
use crate::stats::{Step, TaskState, TaskStats, bump};
use weir_log::{LogError, StreamLog};

/// Where the processing loop starts.
pub(super) struct Start {
    /// The next input offset.
    pub(super) position: u64,
    /// Bytes in the commit log since its last snapshot.
    pub(super) since_snapshot: u64,
}

/// Reads and processes input until stopped, handing rounds to the
/// committer: a round as soon as the committer can take it, so a round
/// grows while the committer is busy (see `OpenRound`). Returns early on a
/// failure (or when the committer is gone); what was processed but not
/// handed over then is not committed, and is redone after a restart.
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
    let mut handover = Handover {
        rounds,
        stats: stats.clone(),
        snapshot_after_bytes: settings.snapshot_after_bytes,
        since_snapshot: start.since_snapshot,
        last_snapshot: 0,
    };
    let mut position = start.position;
    loop {
        let wanted = *control.borrow_and_update();
        match wanted {
            Control::Stop => {
                handover.flush(work).await?;
                return Ok(());
            }
            Control::Pause => {
                // Paused once the rounds in flight are published too, so
                // `paused` means nothing more will come out.
                work = handover.flush(work).await?;
                handover.settle().await?;
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
            // Caught up: what is processed goes out before waiting.
            if !work.open.is_empty() {
                work = handover.flush(work).await?;
                continue;
            }
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
        // A round has one producer id: a new one only between rounds.
        if work.open.is_empty() && work.sequences.values().any(|&s| s > SEQUENCE_ROTATION) {
            work.producer_id = log
                .init_producer_id()
                .await
                .map_err(TaskError::log("getting a new producer id"))?;
            work.sequences.clear();
        }
        input.read_ahead(end);
        let count: usize = batches.iter().map(Batch::record_count).sum();
        bump(&stats.records_in, count as u64);
        // Closed with this read if the committer can take it now (or the
        // round is full); otherwise it grows with the next read.
        let seal = !work.open.may_grow() || rounds.capacity() > 0;
        let (back, sealed) = blocking(work, move |work| {
            let stats = work.stats.clone();
            stats.timed(Step::Process, || {
                work.process(batches, end)?;
                if seal { work.seal() } else { Ok(None) }
            })
        })
        .await?;
        work = back;
        position = end;
        if let Some(round) = sealed {
            work = handover.hand_off(work, round).await?;
        }
    }
}

/// The processing loop's side of the committer: hands it rounds, and
/// snapshots when the commits since the last snapshot have grown.
struct Handover<'a> {
    rounds: &'a mpsc::Sender<Round>,
    stats: Arc<TaskStats>,
    snapshot_after_bytes: u64,
    /// Bytes committed since the last snapshot, and that snapshot's size.
    since_snapshot: u64,
    last_snapshot: u64,
}

impl Handover<'_> {
    /// Closes the open round, if any, and hands it over.
    async fn flush(&mut self, work: Work) -> Result<Work, TaskError> {
        if work.open.is_empty() {
            return Ok(work);
        }
        let (work, sealed) = blocking(work, Work::seal).await?;
        match sealed {
            Some(round) => self.hand_off(work, round).await,
            None => Ok(work),
        }
    }

    /// Hands a round to the committer (waiting while it is busy), then a
    /// snapshot if one is due.
    async fn hand_off(&mut self, mut work: Work, round: Sealed) -> Result<Work, TaskError> {
        let end = round.end;
        self.since_snapshot += round.values.size() as u64;
        self.send(Round::Commit(round)).await?;
        // Queued after the round; the committer appends it once every
        // round's outputs are published (it becomes the last commit, and
        // says so: recovery then publishes nothing again).
        if self.since_snapshot > self.snapshot_after_bytes.max(4 * self.last_snapshot) {
            let (back, values) = blocking(work, move |work| Ok(work.snapshot(end))).await?;
            work = back;
            self.last_snapshot = values.size() as u64;
            self.send(Round::Snapshot { values }).await?;
            self.since_snapshot = 0;
        }
        Ok(work)
    }

    /// Returns once every round handed over is committed and published.
    async fn settle(&mut self) -> Result<(), TaskError> {
        let (settled, answer) = oneshot::channel();
        self.send(Round::Settled(settled)).await?;
        answer.await.map_err(|_| TaskError::CommitterGone)
    }

    /// Waiting here is backpressure: the committer is still busy.
    async fn send(&self, round: Round) -> Result<(), TaskError> {
        self.stats
            .timed_async(Step::Backpressure, self.rounds.send(round))
            .await
            .map_err(|_| TaskError::CommitterGone)
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
