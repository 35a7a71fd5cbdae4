//! Fetch: stored batches, sent as stored.
//!
//! The log keeps Kafka's RecordBatch v2, so a fetch answers with the bytes
//! of the stored batches (their offsets already set by the log), as the one
//! contiguous buffer the log read them into: nothing is decoded, joined or
//! re-encoded on the way out. The first batch may begin before
//! the fetch offset, as in Kafka; clients skip the records before it.
//!
//! Long-poll: while fewer than `min_bytes` are ready the request waits for
//! any of its partitions to grow, up to `max_wait_ms`. `max_bytes` and each
//! partition's limit bound the answer, except that the first batch found is
//! always sent whole so a batch larger than the limits still gets through.
//! There are no transactions yet, so `read_committed` sees what
//! `read_uncommitted` sees and the last stable offset is the high watermark.
//! Fetch sessions are not kept (session id 0): clients send full fetches.

use std::time::Duration;

use bytes::Bytes;
use futures::FutureExt;
use futures::future::select_all;
use kafka_protocol::ResponseError;
use kafka_protocol::messages::TopicName;
use kafka_protocol::messages::fetch_request::FetchRequest;
use kafka_protocol::messages::fetch_response::{
    FetchResponse, FetchableTopicResponse, PartitionData,
};
use kafka_protocol::protocol::StrBytes;
use weir_log::LogError;

use super::session::Session;
use super::{Broker, errors};

/// Most bytes one fetch answers with, whatever the client asks (and the
/// budget it reserves while it reads).
const MAX_FETCH_BYTES: usize = 64 << 20;
/// Longest long-poll, whatever the client asks.
const MAX_WAIT: Duration = Duration::from_secs(30);

/// One partition asked for.
struct Wanted {
    topic: TopicName,
    stored: String,
    partition: i32,
    offset: i64,
    max_bytes: usize,
}

/// What was found for one partition.
struct Found {
    error: Option<ResponseError>,
    high_watermark: i64,
    log_start: i64,
    records: Bytes,
}

pub async fn fetch(
    broker: &Broker,
    session: &mut Session,
    request: FetchRequest,
    version: i16,
) -> FetchResponse {
    let ns = session.namespace();
    // What is needed of the request, copied: the rest goes with the block,
    // and with it the request's frame.
    let (wanted, max_bytes, min_bytes, max_wait_ms) = {
        let request = request;
        let wanted: Vec<Wanted> = request
            .topics
            .into_iter()
            .flat_map(|topic| {
                let stored = ns.qualify(&topic.topic);
                let name = TopicName(StrBytes::from_string(topic.topic.to_string()));
                topic.partitions.into_iter().map(move |p| Wanted {
                    topic: name.clone(),
                    stored: stored.clone(),
                    partition: p.partition,
                    offset: p.fetch_offset,
                    max_bytes: usize::try_from(p.partition_max_bytes).unwrap_or(0),
                })
            })
            .collect();
        (
            wanted,
            request.max_bytes,
            request.min_bytes,
            request.max_wait_ms,
        )
    };
    // The frame no longer counts while the answer waits for room (holding
    // it while waiting for more could deadlock).
    session.request_budget = None;
    let party = session.party(broker);
    let max_bytes = usize::try_from(max_bytes)
        .unwrap_or(0)
        .clamp(1, MAX_FETCH_BYTES.min(broker.budget.largest_answer()));
    let min_bytes = usize::try_from(min_bytes).unwrap_or(0);
    let wait = Duration::from_millis(u64::try_from(max_wait_ms).unwrap_or(0)).min(MAX_WAIT);
    let deadline = tokio::time::Instant::now() + wait;
    let found = loop {
        // Room for the answer in the server's budget before anything is
        // read; what the answer does not use goes back at once, the rest
        // when it has been written.
        let mut budget = broker.budget.acquire(&party, max_bytes).await;
        let found = read_all(broker, &wanted, max_bytes).await;
        let ready: usize = found.iter().map(|f| f.records.len()).sum();
        let failed = found.iter().any(|f| f.error.is_some());
        let now = tokio::time::Instant::now();
        if ready >= min_bytes.max(1) || failed || now >= deadline || wanted.is_empty() {
            // The first batch may exceed `max_bytes` (it is sent whole):
            // the budget covers what it can.
            session.answer_budget = budget.split(ready.min(max_bytes));
            break found;
        }
        drop(budget);
        wait_for_any(broker, &wanted, &found, deadline - now).await;
    };
    let mut response = FetchResponse::default();
    for (want, found) in wanted.into_iter().zip(found) {
        let mut data = PartitionData::default()
            .with_partition_index(want.partition)
            .with_error_code(found.error.map_or(0, |e| e.code()))
            .with_high_watermark(found.high_watermark)
            .with_last_stable_offset(found.high_watermark)
            .with_records(Some(found.records));
        if version >= 5 {
            data.log_start_offset = found.log_start;
        }
        match response.responses.last_mut() {
            Some(entry) if entry.topic == want.topic => entry.partitions.push(data),
            _ => response.responses.push(
                FetchableTopicResponse::default()
                    .with_topic(want.topic)
                    .with_partitions(vec![data]),
            ),
        }
    }
    response
}

/// Reads every partition in order within the byte budget.
async fn read_all(broker: &Broker, wanted: &[Wanted], max_bytes: usize) -> Vec<Found> {
    let mut budget = max_bytes;
    let mut sent_any = false;
    let mut found = Vec::with_capacity(wanted.len());
    for want in wanted {
        let limit = want.max_bytes.min(budget);
        let result = read_one(broker, want, limit, !sent_any).await;
        let result = result.unwrap_or_else(|e| Found {
            error: Some(errors::code(&e)),
            high_watermark: -1,
            log_start: -1,
            records: Bytes::new(),
        });
        budget = budget.saturating_sub(result.records.len());
        sent_any |= !result.records.is_empty();
        found.push(result);
    }
    found
}

/// One partition's batches from the fetch offset, at most `limit` bytes
/// (or the first batch whole, when `first` and it is larger).
async fn read_one(
    broker: &Broker,
    want: &Wanted,
    limit: usize,
    first: bool,
) -> Result<Found, LogError> {
    let log = &broker.ctx.log;
    let info = log.topic(&want.stored).await?;
    let partition = u32::try_from(want.partition)
        .ok()
        .and_then(|p| info.partitions.get(p as usize))
        .ok_or_else(|| LogError::UnknownPartition {
            topic: want.stored.clone(),
            partition: want.partition.max(0) as u32,
            partitions: info.partitions.len() as u32,
        })?;
    let (start, end) = (partition.start_offset, partition.end_offset);
    let offset = u64::try_from(want.offset)
        .ok()
        .filter(|o| (start..=end).contains(o));
    let Some(offset) = offset else {
        return Err(LogError::OffsetOutOfRange {
            topic: want.stored.clone(),
            partition: partition.partition,
            requested: want.offset.max(0) as u64,
            start,
            end,
        });
    };
    let mut found = Found {
        error: None,
        high_watermark: end as i64,
        log_start: start as i64,
        records: Bytes::new(),
    };
    if offset == end || (limit == 0 && !first) {
        return Ok(found);
    }
    let (batches, stored) = log
        .read_stored(&want.stored, partition.partition, offset, limit.max(1))
        .await?;
    // The log takes whole batches within the limit, and always the first;
    // only the first partition of a fetch may send a first batch larger
    // than its limit.
    let oversized = batches.first().is_some_and(|b| b.size() > limit);
    if !oversized || first {
        found.records = stored;
    }
    Ok(found)
}

/// Waits until any wanted partition grows past the end the last read saw
/// (not past the fetch offset: data may be there already, just less than
/// `min_bytes`), or `timeout` passes.
async fn wait_for_any(broker: &Broker, wanted: &[Wanted], found: &[Found], timeout: Duration) {
    let waits: Vec<_> = wanted
        .iter()
        .zip(found)
        .filter_map(|(w, f)| {
            let partition = u32::try_from(w.partition).ok()?;
            let end = u64::try_from(f.high_watermark).ok()?;
            Some(
                broker
                    .ctx
                    .log
                    .wait_for(&w.stored, partition, end, timeout)
                    .boxed(),
            )
        })
        .collect();
    if waits.is_empty() {
        tokio::time::sleep(timeout).await;
        return;
    }
    let _ = select_all(waits).await;
}
