//! Reads a task's input one round ahead: while a round is processed, the
//! next one's read is already under way on the log's own threads, so the
//! processing loop seldom waits for the log.

use std::sync::Arc;

use tokio::task::JoinHandle;
use weir_format::Batch;
use weir_log::{LogError, LogResult, StreamLog};

/// The input partition of one task, with at most one read in flight.
pub(super) struct InputReader {
    log: Arc<dyn StreamLog>,
    topic: String,
    partition: u32,
    max_bytes: usize,
    /// A read started early, and the offset it reads from.
    ahead: Option<(u64, JoinHandle<LogResult<Vec<Batch>>>)>,
}

impl InputReader {
    pub(super) fn new(
        log: Arc<dyn StreamLog>,
        topic: &str,
        partition: u32,
        max_bytes: usize,
    ) -> InputReader {
        InputReader {
            log,
            topic: topic.to_string(),
            partition,
            max_bytes,
            ahead: None,
        }
    }

    /// Batches from `offset` on (up to the byte budget), taken from the
    /// read started ahead if it started there.
    pub(super) async fn read(&mut self, offset: u64) -> LogResult<Vec<Batch>> {
        match self.ahead.take() {
            Some((from, read)) if from == offset => match read.await {
                Ok(result) => result,
                Err(e) => Err(LogError::Unavailable(format!("reading ahead failed: {e}"))),
            },
            other => {
                if let Some((_, read)) = other {
                    read.abort();
                }
                let (topic, partition) = (&self.topic, self.partition);
                self.log
                    .read(topic, partition, offset, self.max_bytes)
                    .await
            }
        }
    }

    /// Starts reading from `offset` in the background, for the next
    /// [`read`](Self::read).
    pub(super) fn read_ahead(&mut self, offset: u64) {
        let log = self.log.clone();
        let (topic, partition, max_bytes) = (self.topic.clone(), self.partition, self.max_bytes);
        let read =
            tokio::spawn(async move { log.read(&topic, partition, offset, max_bytes).await });
        if let Some((_, earlier)) = self.ahead.replace((offset, read)) {
            earlier.abort();
        }
    }
}

impl Drop for InputReader {
    fn drop(&mut self) {
        if let Some((_, read)) = self.ahead.take() {
            read.abort();
        }
    }
}
