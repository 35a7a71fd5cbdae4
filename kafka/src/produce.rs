//! Produce and InitProducerId.
//!
//! A transactional produce is buffered by the transaction coordinator
//! ([`super::transactions`]) and reaches the log when the transaction
//! commits; its answer carries offset −1.
//!
//! Each partition's batches are appended through the log interface, the
//! partitions of one request concurrently. An append returns once the
//! batch is as durable as its topic asks (`always`: on disk), so acks 1
//! and all both answer after that; acks 0 gets no answer at all.
//! Idempotence is the log's own: a batch carries its producer id, epoch
//! and sequence, the log answers a retried batch with the offsets it
//! already has and refuses a gap.
//!
//! A tenant's produce rate quota throttles as Kafka's quotas do (KIP-219):
//! the request is served, its answer says how long to wait in
//! `throttle_time_ms`, and the connection reads nothing more from the
//! client for that long. A full storage quota fails the partitions with
//! POLICY_VIOLATION. Decompression is bounded per batch (the topic's largest
//! batch) and per request (`max_request_bytes`).

use std::collections::HashMap;

use futures::future::join_all;
use kafka_protocol::ResponseError;
use kafka_protocol::messages::init_producer_id_request::InitProducerIdRequest;
use kafka_protocol::messages::init_producer_id_response::InitProducerIdResponse;
use kafka_protocol::messages::produce_request::{PartitionProduceData, ProduceRequest};
use kafka_protocol::messages::produce_response::{
    PartitionProduceResponse, ProduceResponse, TopicProduceResponse,
};
use kafka_protocol::messages::{ProducerId, TopicName};
use kafka_protocol::protocol::StrBytes;
use weir_format::Batch;
use weir_log::{LogResult, TopicInfo};

use super::batches::{self, Refused};
use super::session::Session;
use super::{Broker, errors};

/// Appends every partition's records; `None` for acks 0.
pub async fn produce(
    broker: &Broker,
    session: &mut Session,
    request: ProduceRequest,
    version: i16,
) -> Option<ProduceResponse> {
    let ns = session.namespace().clone();
    let acks = request.acks;
    let transaction = request.transactional_id.as_ref().map(|id| ns.qualify(id));
    // Decoding (and decompressing) is CPU work: off the async threads.
    let mut topics = HashMap::new();
    for topic in &request.topic_data {
        let info = broker.ctx.log.topic(&ns.qualify(&topic.name)).await;
        topics.insert(topic.name.to_string(), info);
    }
    let work = {
        let budget = broker.settings.max_request_bytes;
        tokio::task::spawn_blocking(move || decode(&topics, request, budget))
            .await
            .expect("decoding a produce request does not panic")
    };
    let bytes: u64 = work
        .iter()
        .filter_map(|(_, _, b)| b.as_ref().ok())
        .flatten()
        .map(|b| b.size() as u64)
        .sum();
    let over_quota = match broker.ctx.quotas.charge_produce(&ns, bytes).await {
        Ok(pause) => {
            session.mute_for = pause;
            None
        }
        Err(refused) => Some(errors::check_refusal(refused)),
    };
    let appends = work.into_iter().map(|(topic, index, batches)| {
        let stored = ns.qualify(&topic);
        let over_quota = over_quota.clone();
        let transaction = transaction.as_deref();
        async move {
            let result = match (batches, over_quota) {
                (Err(refused), _) => Err(refused),
                (Ok(_), Some((code, message))) => Err(Refused { code, message }),
                (Ok(_), None) if !matches!(acks, -1..=1) => Err(Refused {
                    code: ResponseError::InvalidRequiredAcks,
                    message: format!("acks must be -1, 0 or 1, got {acks}"),
                }),
                (Ok(batches), None) => match transaction {
                    Some(id) => buffer(broker, id, &stored, index, batches).await,
                    None => append(broker, &stored, index, batches).await,
                },
            };
            (topic, index, result)
        }
    });
    let results = join_all(appends).await;
    if acks == 0 {
        // No answer to carry an error: close, so the client notices and
        // refreshes its metadata (as Kafka does).
        if let Some((topic, _, Err(refused))) = results.iter().find(|(_, _, r)| r.is_err()) {
            session.close_after_answer = Some(format!(
                "acks=0 produce to {} failed: {}",
                topic.as_str(),
                refused.message
            ));
        }
        return None;
    }
    let throttle = i32::try_from(session.mute_for.as_millis()).unwrap_or(i32::MAX);
    let mut response = ProduceResponse::default().with_throttle_time_ms(throttle);
    for (topic, index, result) in results {
        let mut partition = PartitionProduceResponse::default().with_index(index);
        match result {
            Ok(base_offset) => {
                partition.base_offset = base_offset;
                if version >= 5 {
                    partition.log_start_offset =
                        log_start(broker, &ns.qualify(&topic), index).await;
                }
            }
            Err(refused) => {
                tracing::debug!(topic = %topic.as_str(), index, "produce refused: {}", refused.message);
                partition.error_code = refused.code.code();
                partition.base_offset = -1;
                if version >= 8 {
                    partition.error_message =
                        Some(StrBytes::from_string(ns.localize_message(&refused.message)));
                }
            }
        }
        match response.responses.iter_mut().find(|t| t.name == topic) {
            Some(entry) => entry.partition_responses.push(partition),
            None => response.responses.push(
                TopicProduceResponse::default()
                    .with_name(topic)
                    .with_partition_responses(vec![partition]),
            ),
        }
    }
    Some(response)
}

/// Each partition's batches, decoded and decompressed within `budget`
/// bytes for the whole request; `topics` holds what the log says of each
/// topic the request names.
fn decode(
    topics: &HashMap<String, LogResult<TopicInfo>>,
    request: ProduceRequest,
    mut budget: usize,
) -> Vec<(TopicName, i32, Result<Vec<Batch>, Refused>)> {
    let mut work = Vec::new();
    for topic in request.topic_data {
        let info = &topics[topic.name.as_str()];
        for PartitionProduceData { index, records, .. } in topic.partition_data {
            let transactional = request.transactional_id.is_some();
            let batches = match (&info, records) {
                (Err(e), _) => Err(Refused {
                    code: errors::code(e),
                    message: e.to_string(),
                }),
                (Ok(_), None) => Err(Refused {
                    code: ResponseError::CorruptMessage,
                    message: "no records sent".into(),
                }),
                (Ok(info), Some(records)) => batches::from_produced(
                    records,
                    info.config.max_batch_bytes,
                    &mut budget,
                    transactional,
                ),
            };
            work.push((topic.name.clone(), index, batches));
        }
    }
    work
}

/// A partition number from the request (negative ones do not exist).
fn partition_index(partition: i32) -> Result<u32, Refused> {
    u32::try_from(partition).map_err(|_| Refused {
        code: ResponseError::UnknownTopicOrPartition,
        message: format!("partition {partition} does not exist"),
    })
}

/// Buffers a transaction's batches for one partition until it ends; its
/// offsets are not known before (−1).
async fn buffer(
    broker: &Broker,
    transaction: &str,
    topic: &str,
    partition: i32,
    batches: Vec<Batch>,
) -> Result<i64, Refused> {
    let partition = partition_index(partition)?;
    for batch in batches {
        broker
            .transactions
            .produce(transaction, topic, partition, batch)
            .await
            .map_err(|code| Refused {
                code,
                message: format!("transactional produce refused: {code:?}"),
            })?;
    }
    Ok(-1)
}

/// Appends the batches of one partition in order; the offset of the first.
async fn append(
    broker: &Broker,
    topic: &str,
    partition: i32,
    batches: Vec<Batch>,
) -> Result<i64, Refused> {
    let partition = partition_index(partition)?;
    let mut first = None;
    for batch in batches {
        let info = broker
            .ctx
            .log
            .append(topic, partition, batch)
            .await
            .map_err(|e| Refused {
                code: errors::code(&e),
                message: e.to_string(),
            })?;
        first.get_or_insert(info.base_offset);
    }
    Ok(first.expect("at least one batch") as i64)
}

async fn log_start(broker: &Broker, topic: &str, partition: i32) -> i64 {
    broker
        .ctx
        .log
        .topic(topic)
        .await
        .ok()
        .and_then(|t| {
            t.partitions
                .get(usize::try_from(partition).ok()?)
                .map(|p| p.start_offset as i64)
        })
        .unwrap_or(-1)
}

/// A producer id: for an idempotent producer a fresh one; for a
/// transactional id the coordinator's (raising the epoch of a previous
/// instance, which is fenced).
pub async fn init_producer_id(
    broker: &Broker,
    session: &Session,
    request: InitProducerIdRequest,
    version: i16,
) -> InitProducerIdResponse {
    let mut response = InitProducerIdResponse::default();
    let result = match &request.transactional_id {
        Some(id) => {
            let current = (version >= 3).then_some((request.producer_id.0, request.producer_epoch));
            broker
                .transactions
                .init(
                    &session.namespace().qualify(id),
                    request.transaction_timeout_ms,
                    current,
                )
                .await
        }
        // A new id (epoch 0) also serves an idempotent producer asking to
        // bump its epoch: its sequences start over either way.
        None => match broker.ctx.log.init_producer_id().await {
            Ok(id) => Ok((id, 0)),
            Err(e) => {
                tracing::warn!("allocating a producer id failed: {e}");
                Err(errors::code(&e))
            }
        },
    };
    match result {
        Ok((id, epoch)) => {
            response.producer_id = ProducerId(id);
            response.producer_epoch = epoch;
        }
        Err(code) => response.error_code = code.code(),
    }
    response
}
