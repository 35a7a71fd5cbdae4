//! Reading a partition: its batches come in one batch direct get (up to
//! 1,000 messages in one request, answered by any replica), starting where
//! the last read of the partition stopped when a reader goes on from there
//! (a pipeline, a consumer), found by binary search otherwise.
//!
//! A replica may be behind the stream's leader: its answer is a correct
//! prefix, possibly empty. An empty answer below the partition's end (asked
//! of the leader) is followed by a read of one message from the leader, so
//! a read below the end always returns at least one batch.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use async_nats::{HeaderMap, StatusCode};
use futures::StreamExt;
use serde::Serialize;
use weir_format::Batch;
use weir_log::{LogError, LogResult};

use crate::errors::unavailable;
use crate::partition::{self, Place};

/// The most messages one batch direct get returns (the server's limit).
const MAX_MESSAGES: usize = 1000;
/// How long a batch direct get may take to answer in full.
const FETCH_TIMEOUT: Duration = Duration::from_secs(10);

/// Where reads of each partition stopped: `subject → (next offset, stream
/// sequence after the last message read)`.
#[derive(Default)]
pub struct Reads {
    stopped: Mutex<HashMap<String, (u64, u64)>>,
}

/// A batch direct get (ADR-31).
#[derive(Serialize)]
struct BatchRequest<'a> {
    seq: u64,
    next_by_subj: &'a str,
    batch: usize,
    max_bytes: usize,
}

impl Reads {
    /// Whole batches from the one holding `offset`, about `max_bytes`.
    pub async fn read(
        &self,
        client: &async_nats::Client,
        place: &Place,
        offset: u64,
        max_bytes: usize,
    ) -> LogResult<Vec<Batch>> {
        let resumed = self.resume_at(&place.subject, offset);
        let from = match resumed {
            Some(sequence) => sequence,
            None => match self.locate(place, offset).await? {
                Some(sequence) => sequence,
                None => return Ok(Vec::new()),
            },
        };
        let mut fetched = fetch(client, place, from, max_bytes).await?;
        let holds_offset = |fetched: &[(u64, Batch)]| {
            fetched
                .first()
                .is_some_and(|(_, b)| b.base_offset() <= offset && offset < b.next_offset())
        };
        if !holds_offset(&fetched) {
            // At the end, a replica behind the leader, or a stale stop
            // (the topic was made again): ask the leader.
            let Some(sequence) = self.locate(place, offset).await? else {
                return Ok(Vec::new());
            };
            fetched = match partition::next_message(place, sequence).await? {
                Some(message) => vec![(message.sequence, partition::batch_of(place, &message)?)],
                None => Vec::new(),
            };
            if !holds_offset(&fetched) {
                return Err(LogError::Unavailable(format!(
                    "{}/{}: the message holding offset {offset} went while it was read",
                    place.topic, place.partition
                )));
            }
        }
        if let Some((sequence, last)) = fetched.last() {
            self.stopped
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(place.subject.clone(), (last.next_offset(), sequence + 1));
        }
        Ok(fetched.into_iter().map(|(_, batch)| batch).collect())
    }

    /// Forgets where reads of partitions under `subject_prefix` stopped.
    pub fn forget(&self, subject_prefix: &str) {
        self.stopped
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|subject, _| !subject.starts_with(subject_prefix));
    }

    fn resume_at(&self, subject: &str, offset: u64) -> Option<u64> {
        let stopped = self.stopped.lock().unwrap_or_else(|e| e.into_inner());
        match stopped.get(subject) {
            Some(&(next, sequence)) if next == offset => Some(sequence),
            _ => None,
        }
    }

    /// The sequence of the message holding `offset`, asking the leader;
    /// `None` at the end; out of range below the start or past the end.
    async fn locate(&self, place: &Place, offset: u64) -> LogResult<Option<u64>> {
        let range = partition::range(place).await?;
        if offset < range.start || offset > range.end {
            return Err(LogError::OffsetOutOfRange {
                topic: place.topic.clone(),
                partition: place.partition,
                requested: offset,
                start: range.start,
                end: range.end,
            });
        }
        if offset == range.end {
            return Ok(None);
        }
        partition::find(place, offset, range.last_sequence).await
    }
}

/// The partition's messages from stream sequence `from` on, about
/// `max_bytes` of them, as `(sequence, batch)`, from one batch direct get.
pub async fn fetch(
    client: &async_nats::Client,
    place: &Place,
    from: u64,
    max_bytes: usize,
) -> LogResult<Vec<(u64, Batch)>> {
    let where_ = format!("{}/{}", place.topic, place.partition);
    let request = serde_json::to_vec(&BatchRequest {
        seq: from,
        next_by_subj: &place.subject,
        batch: MAX_MESSAGES,
        max_bytes: max_bytes.max(1),
    })
    .map_err(|e| unavailable(&where_, e))?;
    let inbox = client.new_inbox();
    let mut answers = client
        .subscribe(inbox.clone())
        .await
        .map_err(|e| unavailable(&where_, e))?;
    client
        .publish_with_reply(
            format!("$JS.API.DIRECT.GET.{}", place.stream_name),
            inbox,
            request.into(),
        )
        .await
        .map_err(|e| unavailable(&where_, e))?;
    let mut fetched = Vec::new();
    let deadline = tokio::time::Instant::now() + FETCH_TIMEOUT;
    loop {
        let answer = tokio::time::timeout_at(deadline, answers.next())
            .await
            .map_err(|_| unavailable(&where_, "a batch read timed out"))?;
        let Some(message) = answer else {
            break;
        };
        // The end of the batch (204 EOB, an empty message), or nothing to
        // send (404): batches are never empty.
        let status_only = message.status.is_some_and(|s| s != StatusCode::OK);
        if message.payload.is_empty() || status_only {
            break;
        }
        let Some(sequence) = message.headers.as_ref().and_then(sequence_of) else {
            return Err(unavailable(
                &where_,
                "a batch read's message has no sequence",
            ));
        };
        let batch = Batch::from_bytes(message.payload).map_err(|e| {
            LogError::Unavailable(format!(
                "{where_}: message {sequence} does not hold a valid batch: {e}"
            ))
        })?;
        fetched.push((sequence, batch));
    }
    Ok(fetched)
}

/// The stream sequence a direct get's message carries.
fn sequence_of(headers: &HeaderMap) -> Option<u64> {
    headers.get("Nats-Sequence")?.as_str().parse().ok()
}
