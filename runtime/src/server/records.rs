//! `/v1/topics/{name}/records`: producing records (acknowledged once as
//! durable as the topic asks) and reading them back, with long-polling at
//! the end of a partition.
//!
//! Records are JSON (see `jsonl`): a string key or value is its UTF-8
//! bytes, other JSON its text, `key_b64`/`value_b64` raw bytes. A record
//! without a `partition` goes by its key's hash, or, without a key, to a
//! partition picked once per request in turn (like Kafka's sticky
//! partitioner).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use axum::Json;
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Query, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use weir_format::Batch;
use weir_log::Cleanup;

use super::App;
use super::error::{ApiError, ApiResult};
use super::names::ScopedName;
use crate::jsonl::{JsonRecord, parse_object, render_into};
use weir_core::now_ms;
use weir_pipeline::partitioner::partition_for_key;

/// Most records one read returns.
const MAX_LIMIT: usize = 10_000;
/// Longest long-poll.
const MAX_WAIT_MS: u64 = 30_000;

#[derive(Deserialize)]
pub struct ProduceRequest {
    records: Vec<Map<String, Value>>,
}

#[derive(Clone, Serialize)]
pub struct Assigned {
    partition: u32,
    offset: u64,
}

static NEXT_KEYLESS: AtomicU32 = AtomicU32::new(0);

/// `POST /v1/topics/{name}/records`.
pub async fn produce(
    State(app): State<App>,
    ScopedName {
        ns, stored: topic, ..
    }: ScopedName,
    body: Result<Json<ProduceRequest>, JsonRejection>,
) -> ApiResult<Json<Value>> {
    let Json(request) = body?;
    if request.records.is_empty() {
        return Err(ApiError::bad_request(
            "records must hold at least one record",
        ));
    }
    let info = app.log.topic(&topic).await?;
    let partitions = info.partitions.len() as u32;
    let keyless = NEXT_KEYLESS.fetch_add(1, Ordering::Relaxed) % partitions;
    let now = now_ms();
    // partition → (index in the request, record)
    let mut by_partition: BTreeMap<u32, Vec<(usize, JsonRecord)>> = BTreeMap::new();
    for (i, object) in request.records.iter().enumerate() {
        let record = parse_object(object, now)
            .map_err(|e| ApiError::bad_request(format!("record {i}: {e}")))?;
        if info.config.cleanup == Cleanup::Compact && record.key.is_none() {
            return Err(ApiError::bad_request(format!(
                "record {i}: topic {topic:?} is compacted, so every record needs a key"
            )));
        }
        let partition = match object.get("partition") {
            None | Some(Value::Null) => match &record.key {
                Some(key) => partition_for_key(key, partitions),
                None => keyless,
            },
            Some(p) => p
                .as_u64()
                .filter(|p| *p < u64::from(partitions))
                .ok_or_else(|| {
                    ApiError::bad_request(format!(
                        "record {i}: partition must be 0 to {}, got {p}",
                        partitions - 1
                    ))
                })? as u32,
        };
        by_partition.entry(partition).or_default().push((i, record));
    }
    // Everything is checked before anything is appended.
    let mut batches = Vec::with_capacity(by_partition.len());
    for (partition, records) in by_partition {
        let batch = encode(&records);
        if batch.size() > info.config.max_batch_bytes {
            return Err(ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!(
                    "the records for partition {partition} take {} bytes, more than topic \
                     {topic:?} accepts in one batch ({} bytes)",
                    batch.size(),
                    info.config.max_batch_bytes
                ),
            ));
        }
        batches.push((partition, records, batch));
    }
    let bytes: usize = batches.iter().map(|(_, _, b)| b.size()).sum();
    app.quotas.check_produce(&ns, bytes as u64).await?;
    let mut offsets = vec![None; request.records.len()];
    for (partition, records, batch) in batches {
        let info = app.log.append(&topic, partition, batch).await?;
        for (n, (i, _)) in records.iter().enumerate() {
            offsets[*i] = Some(Assigned {
                partition,
                offset: info.base_offset + n as u64,
            });
        }
    }
    Ok(Json(json!({ "offsets": offsets })))
}

fn encode(records: &[(usize, JsonRecord)]) -> Batch {
    crate::jsonl::encode(records.iter().map(|(_, record)| record))
}

#[derive(Deserialize)]
pub struct ReadQuery {
    #[serde(default)]
    partition: u32,
    /// Default: the first offset stored.
    offset: Option<u64>,
    /// Start at the first record at or after this time (ms) instead.
    timestamp: Option<i64>,
    limit: Option<usize>,
    /// Wait up to this long for records when at the end.
    #[serde(default)]
    wait_ms: u64,
}

/// `GET /v1/topics/{name}/records?partition=&offset=&timestamp=&limit=&wait_ms=`.
pub async fn read(
    State(app): State<App>,
    ScopedName { stored: topic, .. }: ScopedName,
    query: Result<Query<ReadQuery>, QueryRejection>,
) -> ApiResult<Json<Value>> {
    let Query(query) = query?;
    let info = app.log.topic(&topic).await?;
    let partition = info
        .partitions
        .get(query.partition as usize)
        .ok_or_else(|| {
            ApiError::not_found(format!(
                "topic {topic:?} has no partition {} (it has {})",
                query.partition,
                info.partitions.len()
            ))
        })?;
    let limit = query.limit.unwrap_or(100).clamp(1, MAX_LIMIT);
    let offset = match (query.offset, query.timestamp) {
        (Some(offset), _) => offset,
        (None, Some(ts)) => {
            app.log
                .offset_for_timestamp(&topic, query.partition, ts)
                .await?
        }
        (None, None) => partition.start_offset,
    };
    let mut batches = app
        .log
        .read(&topic, query.partition, offset, 1 << 20)
        .await?;
    if batches.is_empty() && query.wait_ms > 0 {
        let wait = Duration::from_millis(query.wait_ms.min(MAX_WAIT_MS));
        app.log
            .wait_for(&topic, query.partition, offset, wait)
            .await?;
        batches = app
            .log
            .read(&topic, query.partition, offset, 1 << 20)
            .await?;
    }
    let mut records = Vec::new();
    let mut next = offset;
    'batches: for batch in &batches {
        for record in batch.records().filter(|r| r.offset >= offset) {
            if records.len() == limit {
                break 'batches;
            }
            let mut object = Map::new();
            object.insert("partition".into(), json!(query.partition));
            object.insert("offset".into(), json!(record.offset));
            render_into(&mut object, &record);
            records.push(Value::Object(object));
            next = record.offset + 1;
        }
    }
    let end = app
        .log
        .topic(&topic)
        .await?
        .partitions
        .get(query.partition as usize)
        .map_or(next, |p| p.end_offset);
    Ok(Json(json!({
        "records": records,
        "next_offset": next,
        "end_offset": end,
    })))
}
