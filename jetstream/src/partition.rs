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
use async_nats::jetstream::message::StreamMessage;
use async_nats::jetstream::stream::{LastRawMessageErrorKind, Stream};
use serde::{Deserialize, Serialize};
use weir_format::Batch;
use weir_log::producers::{ProducerTable, Verdict};
use weir_log::{AppendInfo, LogError, LogResult};

use crate::errors::{jetstream_error, unavailable};
use crate::publish::{self, MAX_BATCH_MESSAGES, Refused};
use crate::snapshots::{SAVE_EVERY, Snapshots};

/// How many times an append catches up and tries again before it gives up
/// (each time another writer appended first).
const MAX_ATTEMPTS: usize = 50;

/// The most bytes of batches one atomic batch carries.
const MAX_BATCH_BYTES: usize = 32 << 20;

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
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Tail {
    /// Stream sequence of the subject's last message (0: none).
    pub last_sequence: u64,
    pub next_offset: u64,
    producers: ProducerTable,
    /// The last sequence when the tail was last saved (or loaded).
    #[serde(skip)]
    saved_at: u64,
}

/// The tails this process knows, one lock per partition: appends to one
/// partition from this process go one at a time.
pub struct Tails {
    tails: Mutex<HashMap<String, Arc<tokio::sync::Mutex<Option<Tail>>>>>,
    snapshots: Snapshots,
}

impl Tails {
    /// Tails saved in and loaded from `snapshots`.
    pub fn new(snapshots: Snapshots) -> Tails {
        Tails {
            tails: Mutex::default(),
            snapshots,
        }
    }

    /// Forgets what is known and saved of the partitions under
    /// `subject_prefix` (their topic was deleted or made again).
    pub async fn forget_saved(&self, subject_prefix: &str) -> LogResult<()> {
        self.forget(subject_prefix);
        self.snapshots.forget(subject_prefix).await
    }

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
    /// anything is written. The batches to write go in atomic batches of
    /// up to [`MAX_BATCH_MESSAGES`]: one round trip each.
    pub async fn append_all(
        &self,
        context: &async_nats::jetstream::Context,
        place: &Place,
        batches: Vec<Batch>,
        check: impl Fn(&Batch) -> LogResult<()>,
    ) -> Vec<LogResult<AppendInfo>> {
        let slot = self.slot(&place.subject);
        let mut tail = slot.lock().await;
        let mut outcomes: Vec<Option<LogResult<AppendInfo>>> = Vec::with_capacity(batches.len());
        let mut pending = Vec::new();
        for batch in batches {
            match check(&batch) {
                Ok(()) => {
                    pending.push((outcomes.len(), batch));
                    outcomes.push(None);
                }
                Err(e) => outcomes.push(Some(Err(e))),
            }
        }
        let mut chunk = Vec::new();
        let mut chunk_bytes = 0;
        for (index, batch) in pending {
            if chunk.len() == MAX_BATCH_MESSAGES || chunk_bytes + batch.size() > MAX_BATCH_BYTES {
                let full = std::mem::take(&mut chunk);
                append_chunk(self, context, place, &mut tail, full, &mut outcomes).await;
                chunk_bytes = 0;
            }
            chunk_bytes += batch.size();
            chunk.push((index, batch));
        }
        append_chunk(self, context, place, &mut tail, chunk, &mut outcomes).await;
        outcomes
            .into_iter()
            .map(|o| o.unwrap_or_else(|| Err(LogError::Unavailable("no outcome".to_string()))))
            .collect()
    }
}

/// Appends `chunk` (`(index of its outcome, batch)`) at the end of the
/// partition in one conditional publish, catching up as often as other
/// writers got there first.
async fn append_chunk(
    tails: &Tails,
    context: &async_nats::jetstream::Context,
    place: &Place,
    known: &mut Option<Tail>,
    chunk: Vec<(usize, Batch)>,
    outcomes: &mut [Option<LogResult<AppendInfo>>],
) {
    if chunk.is_empty() {
        return;
    }
    let where_ = place.describe();
    let fail_all = |outcomes: &mut [Option<LogResult<AppendInfo>>],
                    error: &dyn Fn() -> LogError| {
        for (index, _) in &chunk {
            outcomes[*index] = Some(Err(error()));
        }
    };
    // Whether the tail was read again in this call: a producer check that
    // fails on a tail known from earlier may only mean that another
    // worker appended since (a task that moved here).
    let mut refreshed = false;
    for _ in 0..MAX_ATTEMPTS {
        let tail = match known {
            Some(tail) => tail,
            None => match tails.load_fresh(place).await {
                Ok(loaded) => known.insert(loaded),
                Err(e) => {
                    let reason = e.to_string();
                    return fail_all(outcomes, &|| LogError::Unavailable(reason.clone()));
                }
            },
        };
        // The outcomes if the publish succeeds, planned on a copy of the tail.
        let mut next_offset = tail.next_offset;
        let mut producers = tail.producers.clone();
        let mut planned = Vec::with_capacity(chunk.len());
        let mut messages = Vec::new();
        for (index, batch) in &chunk {
            let stamp = batch.producer();
            if let Some(stamp) = stamp {
                match producers.check(&where_, stamp, batch.record_count() as u64) {
                    Ok(Verdict::Write) => {}
                    Ok(Verdict::Duplicate(info)) => {
                        planned.push((*index, Ok(info)));
                        continue;
                    }
                    Err(e) => {
                        planned.push((*index, Err(e)));
                        continue;
                    }
                }
            }
            let stamped = batch.clone().with_base_offset(next_offset);
            let info = AppendInfo {
                base_offset: stamped.base_offset(),
                last_offset: stamped.last_offset(),
                duplicate: false,
            };
            next_offset = stamped.next_offset();
            if let Some(stamp) = stamp {
                producers.record(stamp, &info);
            }
            messages.push((HeaderMap::new(), stamped.into_bytes()));
            planned.push((*index, Ok(info)));
        }
        let refused = planned.iter().any(|(_, outcome)| {
            matches!(
                outcome,
                Err(LogError::OutOfOrderSequence(_) | LogError::ProducerFenced(_))
            )
        });
        if refused && !refreshed {
            refreshed = true;
            match load(place, std::mem::take(tail)).await {
                Ok(tail) => *known = Some(tail),
                Err(e) => {
                    *known = None;
                    let reason = e.to_string();
                    return fail_all(outcomes, &|| LogError::Unavailable(reason.clone()));
                }
            }
            continue;
        }
        let published = if messages.is_empty() {
            Ok(None)
        } else {
            publish::conditional(context, &place.subject, tail.last_sequence, messages)
                .await
                .map(|(_, last)| Some(last))
        };
        match published {
            Ok(last) => {
                if let Some(last) = last {
                    tail.last_sequence = last;
                    tail.next_offset = next_offset;
                    tail.producers = producers;
                    tails.save_now_and_then(place, tail).await;
                }
                for (index, outcome) in planned {
                    outcomes[index] = Some(outcome);
                }
                return;
            }
            Err(Refused::Overtaken) => {
                // Another writer appended (or the topic was made again):
                // read what is there now and plan again.
                let known_before = tail.last_sequence;
                let caught_up = match load(place, std::mem::take(tail)).await {
                    Ok(tail) if tail.last_sequence != known_before => Ok(tail),
                    Ok(_) => tails.load_fresh(place).await,
                    Err(e) => Err(e),
                };
                match caught_up {
                    Ok(tail) => *known = Some(tail),
                    Err(e) => {
                        *known = None;
                        let reason = e.to_string();
                        return fail_all(outcomes, &|| LogError::Unavailable(reason.clone()));
                    }
                }
            }
            Err(Refused::NoStream) => {
                *known = None;
                return fail_all(outcomes, &|| LogError::UnknownTopic(place.topic.clone()));
            }
            Err(Refused::Failed(reason)) => {
                // The outcome is unknown: whoever appends next reads the
                // tail again (a retry of a stamped batch is then found to
                // be a duplicate).
                *known = None;
                return fail_all(outcomes, &|| unavailable(&where_, &reason));
            }
        }
    }
    fail_all(outcomes, &|| {
        LogError::Unavailable(format!(
            "{where_}: {MAX_ATTEMPTS} appends in a row lost the race to other writers"
        ))
    });
}

impl Tails {
    /// The partition's tail from its last snapshot (or its start) and the
    /// messages after it.
    async fn load_fresh(&self, place: &Place) -> LogResult<Tail> {
        let start = self.snapshots.load(place).await?.unwrap_or_default();
        let mut tail = load(place, start).await?;
        self.save_now_and_then(place, &mut tail).await;
        Ok(tail)
    }

    /// Saves `tail` if it moved on [`SAVE_EVERY`] sequences since it was
    /// last saved.
    async fn save_now_and_then(&self, place: &Place, tail: &mut Tail) {
        if tail.last_sequence >= tail.saved_at + SAVE_EVERY {
            self.snapshots.save(place, tail).await;
            tail.saved_at = tail.last_sequence;
        }
    }
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

/// A partition's offsets, and where its last message is.
#[derive(Debug, Default, Clone, Copy)]
pub struct Range {
    /// The first offset kept.
    pub start: u64,
    /// One past the last offset.
    pub end: u64,
    /// Stream sequence of the last message (0: none).
    pub last_sequence: u64,
}

/// The partition's range, asked of the stream leader.
pub async fn range(place: &Place) -> LogResult<Range> {
    let Some(last) = last_message(place).await? else {
        return Ok(Range::default());
    };
    let end = batch_of(place, &last)?.next_offset();
    let start = match next_message(place, 1).await? {
        Some(first) => batch_of(place, &first)?.base_offset(),
        None => end,
    };
    Ok(Range {
        start,
        end,
        last_sequence: last.sequence,
    })
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
