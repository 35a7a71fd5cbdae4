//! One partition as one subject of its topic's stream: a message per
//! batch, in offset order, the batch's base offset in its header.
//!
//! Offsets are Weir's, not JetStream's: a writer stamps each batch with
//! the partition's next offset and publishes it only if the subject's
//! last message is still the one it knows (`Nats-Expected-Last-Subject-
//! Sequence`). So offsets stay dense whichever worker writes, and a writer
//! that lost a race catches up (reading what was appended since) and tries
//! again. What a writer knows of the end of a partition, with the
//! partition's idempotent producers, is its [`Tail`].

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use async_nats::HeaderMap;
use async_nats::jetstream::context::PublishErrorKind;
use async_nats::jetstream::message::StreamMessage;
use async_nats::jetstream::stream::{LastRawMessageErrorKind, Stream};
use weir_format::Batch;
use weir_log::producers::{ProducerTable, Verdict};
use weir_log::{AppendInfo, LogError, LogResult};

use crate::errors::{jetstream_error, unavailable};

/// The header that makes a publish conditional on the subject's last
/// message.
const EXPECTED_LAST_SUBJECT_SEQUENCE: &str = "Nats-Expected-Last-Subject-Sequence";

/// How many times an append catches up and tries again before it gives up
/// (each time another writer appended first).
const MAX_ATTEMPTS: usize = 50;

/// Which partition: its topic's name and stream, its subject and number.
#[derive(Debug, Clone)]
pub struct Place {
    pub topic: String,
    pub stream_name: String,
    pub stream: Stream<()>,
    pub subject: String,
    pub partition: u32,
}

impl Place {
    fn describe(&self) -> String {
        format!("{}/{}", self.topic, self.partition)
    }
}

/// What a writer knows of a partition's end.
#[derive(Debug, Default)]
struct Tail {
    /// Stream sequence of the subject's last message (0: none).
    last_sequence: u64,
    next_offset: u64,
    producers: ProducerTable,
}

/// The tails this process knows, one lock per partition: appends to one
/// partition from this process go one at a time.
#[derive(Default)]
pub struct Tails {
    tails: Mutex<HashMap<String, Arc<tokio::sync::Mutex<Option<Tail>>>>>,
}

impl Tails {
    fn slot(&self, subject: &str) -> Arc<tokio::sync::Mutex<Option<Tail>>> {
        let mut tails = self.tails.lock().unwrap_or_else(|e| e.into_inner());
        tails.entry(subject.to_string()).or_default().clone()
    }

    /// Forgets what is known of the partitions of a deleted topic.
    pub fn forget(&self, subject_prefix: &str) {
        let mut tails = self.tails.lock().unwrap_or_else(|e| e.into_inner());
        tails.retain(|subject, _| !subject.starts_with(subject_prefix));
    }

    /// Appends `batches` in order, each with its own outcome (Kafka's
    /// producer rules decide duplicates), `check` refusing a batch before
    /// anything is written.
    pub async fn append_all(
        &self,
        context: &async_nats::jetstream::Context,
        place: &Place,
        batches: Vec<Batch>,
        check: impl Fn(&Batch) -> LogResult<()>,
    ) -> Vec<LogResult<AppendInfo>> {
        let slot = self.slot(&place.subject);
        let mut tail = slot.lock().await;
        let mut outcomes = Vec::with_capacity(batches.len());
        for batch in batches {
            let outcome = match check(&batch) {
                Ok(()) => append_one(context, place, &mut tail, batch).await,
                Err(e) => Err(e),
            };
            outcomes.push(outcome);
        }
        outcomes
    }
}

/// Appends one batch at the end of the partition, catching up as often as
/// other writers got there first.
async fn append_one(
    context: &async_nats::jetstream::Context,
    place: &Place,
    known: &mut Option<Tail>,
    batch: Batch,
) -> LogResult<AppendInfo> {
    let where_ = place.describe();
    for _ in 0..MAX_ATTEMPTS {
        let tail = match known {
            Some(tail) => tail,
            None => known.insert(load(place, Tail::default()).await?),
        };
        let stamp = batch.producer();
        if let Some(stamp) = stamp {
            let records = batch.record_count() as u64;
            if let Verdict::Duplicate(info) = tail.producers.check(&where_, stamp, records)? {
                return Ok(info);
            }
        }
        let stamped = batch.clone().with_base_offset(tail.next_offset);
        let mut headers = HeaderMap::new();
        headers.insert(
            EXPECTED_LAST_SUBJECT_SEQUENCE,
            tail.last_sequence.to_string(),
        );
        let published = context
            .publish_with_headers(place.subject.clone(), headers, stamped.as_bytes().clone())
            .await;
        let acked = match published {
            Ok(ack) => ack.await,
            Err(e) => Err(e),
        };
        match acked {
            Ok(ack) => {
                let info = AppendInfo {
                    base_offset: stamped.base_offset(),
                    last_offset: stamped.last_offset(),
                    duplicate: false,
                };
                tail.last_sequence = ack.sequence;
                tail.next_offset = stamped.next_offset();
                if let Some(stamp) = stamp {
                    tail.producers.record(stamp, &info);
                }
                return Ok(info);
            }
            Err(e) if e.kind() == PublishErrorKind::WrongLastSequence => {
                // Another writer appended (or the topic was made again):
                // read what is there now and try again.
                let known_before = tail.last_sequence;
                let caught_up = load(place, std::mem::take(tail)).await?;
                *known = Some(if caught_up.last_sequence == known_before {
                    load(place, Tail::default()).await?
                } else {
                    caught_up
                });
            }
            Err(e) if e.kind() == PublishErrorKind::StreamNotFound => {
                *known = None;
                return Err(LogError::UnknownTopic(place.topic.clone()));
            }
            Err(e) => {
                // The outcome is unknown: whoever appends next reads the
                // tail again (a retry of a stamped batch is then found to
                // be a duplicate).
                *known = None;
                return Err(unavailable(&where_, e));
            }
        }
    }
    Err(LogError::Unavailable(format!(
        "{where_}: {MAX_ATTEMPTS} appends in a row lost the race to other writers"
    )))
}

/// `tail` brought up to date with every message after the one it knows.
async fn load(place: &Place, mut tail: Tail) -> LogResult<Tail> {
    let mut from = tail.last_sequence + 1;
    while let Some(message) = next_message(place, from).await? {
        let batch = batch_of(place, &message)?;
        let info = AppendInfo {
            base_offset: batch.base_offset(),
            last_offset: batch.last_offset(),
            duplicate: false,
        };
        if let Some(stamp) = batch.producer() {
            tail.producers.record(stamp, &info);
        }
        tail.last_sequence = message.sequence;
        tail.next_offset = batch.next_offset();
        from = message.sequence + 1;
    }
    Ok(tail)
}

/// The partition's first message at or after stream sequence `from`.
pub async fn next_message(place: &Place, from: u64) -> LogResult<Option<StreamMessage>> {
    match place
        .stream
        .get_first_raw_message_by_subject(&place.subject, from)
        .await
    {
        Ok(message) => Ok(Some(message)),
        Err(e) if e.kind() == LastRawMessageErrorKind::NoMessageFound => Ok(None),
        Err(e) => Err(jetstream_error(&place.topic, &place.describe(), e)),
    }
}

/// The partition's last message.
pub async fn last_message(place: &Place) -> LogResult<Option<StreamMessage>> {
    match place
        .stream
        .get_last_raw_message_by_subject(&place.subject)
        .await
    {
        Ok(message) => Ok(Some(message)),
        Err(e) if e.kind() == LastRawMessageErrorKind::NoMessageFound => Ok(None),
        Err(e) => Err(jetstream_error(&place.topic, &place.describe(), e)),
    }
}

/// The batch a message holds, checked.
pub fn batch_of(place: &Place, message: &StreamMessage) -> LogResult<Batch> {
    Batch::from_bytes(message.payload.clone()).map_err(|e| {
        LogError::Unavailable(format!(
            "{}: message {} does not hold a valid batch: {e}",
            place.describe(),
            message.sequence
        ))
    })
}

/// The partition's first and end offsets.
pub async fn range(place: &Place) -> LogResult<(u64, u64)> {
    let Some(last) = last_message(place).await? else {
        return Ok((0, 0));
    };
    let end = batch_of(place, &last)?.next_offset();
    let start = match next_message(place, 1).await? {
        Some(first) => batch_of(place, &first)?.base_offset(),
        None => end,
    };
    Ok((start, end))
}

/// The stream sequence of the last message whose batch starts at or below
/// `offset`, found by binary search over the subject's messages up to
/// sequence `last` (base offsets grow with sequences); `None` if none does.
pub async fn find(place: &Place, offset: u64, last: u64) -> LogResult<Option<u64>> {
    let mut low = 1;
    let mut high = last;
    let mut found = None;
    while low <= high {
        let middle = low + (high - low) / 2;
        let Some(message) = next_message(place, middle).await? else {
            break;
        };
        if message.sequence > high {
            high = middle - 1;
            continue;
        }
        if batch_of(place, &message)?.base_offset() <= offset {
            found = Some(message.sequence);
            low = message.sequence + 1;
        } else {
            high = middle - 1;
        }
    }
    Ok(found)
}
