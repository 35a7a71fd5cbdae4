//! The two halves of a running task: the processing loop, which reads
//! input and runs it through the chain round after round, and the
//! committer, which appends each round's commit and publishes its outputs
//! while the loop already works on the next.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use weir_format::Batch;

use super::publish::publish;
use super::reader::InputReader;
use super::work::Work;
use super::{Control, IDLE_WAIT, TaskError, TaskKey, skip_below};
use crate::checkpoint::{EncodedCommit, Pending, SEQUENCE_ROTATION};
use crate::spec::PipelineSettings;
use crate::stats::{Step, TaskState, TaskStats, bump};
use weir_log::{LogError, StreamLog};

/// A processed round, ready to commit: its commit record (description
/// and outputs), the outputs to publish after it, and the input position
/// it reaches.
pub(super) struct Sealed {
    pub(super) values: EncodedCommit,
    pub(super) outputs: Vec<Pending>,
    pub(super) end: u64,
}

/// What the processing loop hands the committer, in order.
pub(super) enum Round {
    Commit(Sealed),
    /// A snapshot of the state after the previous round.
    Snapshot {
        values: EncodedCommit,
    },
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
    let mut committer = Committer {
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
                committer.flush(work).await?;
                return Ok(());
            }
            Control::Pause => {
                // Paused once the rounds in flight are published too, so
                // `paused` means nothing more will come out.
                work = committer.flush(work).await?;
                committer.settle().await?;
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
                work = committer.flush(work).await?;
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
            work = committer.hand_off(work, round).await?;
        }
    }
}

/// The processing loop's side of the committer: hands it rounds, and
/// snapshots when the commits since the last snapshot have grown.
struct Committer<'a> {
    rounds: &'a mpsc::Sender<Round>,
    stats: Arc<TaskStats>,
    snapshot_after_bytes: u64,
    /// Bytes committed since the last snapshot, and that snapshot's size.
    since_snapshot: u64,
    last_snapshot: u64,
}

impl Committer<'_> {
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

/// Appends each round's commit, then publishes its outputs while the next
/// round's commit is appended: the commit log and the outputs are written
/// side by side, and at most the last two commits have outputs not yet
/// published (recovery publishes both again). Appends snapshots, after
/// which the commit log may forget what is below them (see
/// [`truncate_commits`]).
pub(super) async fn commit_rounds(
    log: Arc<dyn StreamLog>,
    commit_log: String,
    partition: u32,
    mut queue: mpsc::Receiver<Round>,
    stats: Arc<TaskStats>,
    forget_below: watch::Sender<u64>,
) -> Result<(), TaskError> {
    let mut publishing = Publishing::default();
    loop {
        // A publish that fails while no round comes fails the task now.
        let round = tokio::select! {
            round = queue.recv() => round,
            published = publishing.finish(), if publishing.0.is_some() => {
                published?;
                continue;
            }
        };
        let Some(round) = round else { break };
        match round {
            Round::Commit(Sealed {
                values,
                outputs,
                end,
            }) => {
                let earlier_published = publishing.finished().await?;
                let values = values.finish(earlier_published);
                let commit = log.commit(&commit_log, partition, values);
                stats
                    .timed_async(Step::Commit, commit)
                    .await
                    .map_err(TaskError::log("committing"))?;
                bump(&stats.commits, 1);
                // After the previous round's outputs: in each output
                // partition, sequences must arrive in order.
                publishing.finish().await?;
                publishing.start(log.clone(), outputs, end, stats.clone());
            }
            Round::Snapshot { values } => {
                // It becomes the last commit: every output before it must
                // be out, since recovery publishes only the last two again.
                publishing.finish().await?;
                let commit = log.commit(&commit_log, partition, values.finish(true));
                let offset = stats
                    .timed_async(Step::Commit, commit)
                    .await
                    .map_err(TaskError::log("committing a snapshot"))?;
                forget_below.send_replace(offset);
            }
            Round::Settled(answer) => {
                publishing.finish().await?;
                let _ = answer.send(());
            }
        }
    }
    publishing.finish().await
}

/// The publishing of the last committed round's outputs, if under way.
/// Dropped unfinished (the task failed), it is abandoned: an append
/// already begun may still land, which is harmless, since the next start
/// publishes the same batches again and the log keeps one of each.
#[derive(Default)]
struct Publishing(Option<JoinHandle<Result<(), TaskError>>>);

impl Publishing {
    fn start(
        &mut self,
        log: Arc<dyn StreamLog>,
        outputs: Vec<Pending>,
        end: u64,
        stats: Arc<TaskStats>,
    ) {
        // Once published, the task's position moves past the round.
        let publish = async move {
            stats
                .timed_async(Step::Publish, publish(&*log, outputs, &stats))
                .await?;
            stats.position.store(end, Ordering::Relaxed);
            Ok(())
        };
        self.0 = Some(tokio::spawn(publish));
    }

    /// Whether no publishing is under way, after taking the outcome of
    /// one that has just ended.
    async fn finished(&mut self) -> Result<bool, TaskError> {
        match &self.0 {
            Some(handle) if handle.is_finished() => self.finish().await.map(|()| true),
            Some(_) => Ok(false),
            None => Ok(true),
        }
    }

    /// Waits for the publishing under way, if any.
    async fn finish(&mut self) -> Result<(), TaskError> {
        let Some(handle) = self.0.as_mut() else {
            return Ok(());
        };
        let published = handle
            .await
            .unwrap_or_else(|e| Err(TaskError::Crashed(format!("publishing crashed: {e}"))));
        self.0 = None;
        published
    }
}

impl Drop for Publishing {
    fn drop(&mut self) {
        if let Some(handle) = self.0.take() {
            handle.abort();
        }
    }
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
