//! The committer: the half of a running task that appends each round's
//! commit, publishes its outputs while the next commit is appended, and
//! truncates the commit log behind its snapshots.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;

use super::TaskError;
use super::publish::publish;
use crate::checkpoint::{EncodedCommit, Pending};
use crate::stats::{Step, TaskStats, bump};
use weir_log::StreamLog;

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
    /// A round to commit, then publish.
    Commit(Sealed),
    /// A snapshot of the state after the previous round.
    Snapshot { values: EncodedCommit },
    /// Answered once every earlier round is committed and published.
    Settled(oneshot::Sender<()>),
}

/// Appends each round's commit, then publishes its outputs while the next
/// round's commit is appended: the commit log and the outputs are written
/// side by side, and at most the last two commits have outputs not yet
/// published (the last one's marker says whether the one before may be
/// among them, for recovery). Appends snapshots, after
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
                // It becomes the last commit and says every earlier output
                // is out: so they must be.
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
