//! Produce and InitProducerId.
//!
//! Each partition's batches are appended through the log interface, the
//! partitions of one request concurrently. An append returns once the
//! batch is as durable as its topic asks (`always`: on disk), so acks 1
//! and all both answer after that; acks 0 gets no answer at all.
//! Idempotence is the log's own: a batch carries its producer id, epoch
//! and sequence, the log answers a retried batch with the offsets it
//! already has and refuses a gap.
//!
//! A tenant's produce rate quota throttles (the answer waits, and says how
//! long in `throttle_time_ms`) instead of failing; its storage quota fails
//! the partition with POLICY_VIOLATION.

use std::time::Duration;

use futures::future::join_all;
use kafka_protocol::ResponseError;
use kafka_protocol::messages::ProducerId;
use kafka_protocol::messages::init_producer_id_request::InitProducerIdRequest;
use kafka_protocol::messages::init_producer_id_response::InitProducerIdResponse;
use kafka_protocol::messages::produce_request::{PartitionProduceData, ProduceRequest};
use kafka_protocol::messages::produce_response::{
    PartitionProduceResponse, ProduceResponse, TopicProduceResponse,
};
use kafka_protocol::protocol::StrBytes;
use log_core::Batch;

use super::batches::{self, Refused};
use super::connection::Session;
use super::{Broker, errors};

/// Longest a single produce is held back by the rate quota.
const MAX_THROTTLE: Duration = Duration::from_secs(30);

/// Appends every partition's records; `None` for acks 0.
pub async fn produce(
    broker: &Broker,
    session: &Session,
    request: ProduceRequest,
    version: i16,
) -> Option<ProduceResponse> {
    let ns = session.namespace();
    // Decode every partition's batches first, so quotas see the bytes.
    let mut work = Vec::new();
    for topic in request.topic_data {
        let stored = ns.qualify(&topic.name);
        let info = broker.app.log.topic(&stored);
        for PartitionProduceData { index, records, .. } in topic.partition_data {
            let batches = match (&info, records, &request.transactional_id) {
                (_, _, Some(_)) => Err(Refused {
                    code: ResponseError::TransactionalIdAuthorizationFailed,
                    message: "transactions are not supported yet".into(),
                }),
                (Err(e), _, _) => Err(Refused {
                    code: errors::code(e),
                    message: ns.localize_message(&e.to_string()),
                }),
                (Ok(_), None, _) => Err(Refused {
                    code: ResponseError::CorruptMessage,
                    message: "no records sent".into(),
                }),
                (Ok(info), Some(records), _) => {
                    batches::from_produced(records, info.config.max_batch_bytes)
                }
            };
            work.push((topic.name.clone(), index, batches));
        }
    }
    let bytes: u64 = work
        .iter()
        .filter_map(|(_, _, b)| b.as_ref().ok())
        .flatten()
        .map(|b| b.size() as u64)
        .sum();
    let (throttle, over_storage) = throttle(broker, session, bytes).await;
    let appends = work.into_iter().map(|(topic, index, batches)| {
        let stored = ns.qualify(&topic);
        let over_storage = over_storage.clone();
        async move {
            let result = match (batches, over_storage) {
                (Err(refused), _) => Err(refused),
                (Ok(_), Some(message)) => Err(Refused {
                    code: ResponseError::PolicyViolation,
                    message,
                }),
                (Ok(batches), None) => append(broker, &stored, index, batches).await,
            };
            (topic, index, result)
        }
    });
    let results = join_all(appends).await;
    if request.acks == 0 {
        return None;
    }
    let mut response = ProduceResponse::default().with_throttle_time_ms(throttle);
    for (topic, index, result) in results {
        let mut partition = PartitionProduceResponse::default().with_index(index);
        match result {
            Ok(base_offset) => {
                partition.base_offset = base_offset as i64;
                if version >= 5 {
                    partition.log_start_offset = log_start(broker, &ns.qualify(&topic), index);
                }
            }
            Err(refused) => {
                tracing::debug!(topic = %topic.as_str(), index, "produce refused: {}", refused.message);
                partition.error_code = refused.code.code();
                partition.base_offset = -1;
                if version >= 8 {
                    partition.error_message = Some(StrBytes::from_string(refused.message));
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

/// Appends the batches of one partition in order; the offset of the first.
async fn append(
    broker: &Broker,
    topic: &str,
    partition: i32,
    batches: Vec<Batch>,
) -> Result<u64, Refused> {
    let partition = u32::try_from(partition).map_err(|_| Refused {
        code: ResponseError::UnknownTopicOrPartition,
        message: format!("partition {partition} does not exist"),
    })?;
    let mut first = None;
    for batch in batches {
        let info = broker
            .app
            .log
            .append(topic, partition, batch)
            .await
            .map_err(|e| Refused {
                code: errors::code(&e),
                message: e.to_string(),
            })?;
        first.get_or_insert(info.base_offset);
    }
    Ok(first.expect("at least one batch"))
}

fn log_start(broker: &Broker, topic: &str, partition: i32) -> i64 {
    broker
        .app
        .log
        .topic(topic)
        .ok()
        .and_then(|t| {
            t.partitions
                .get(usize::try_from(partition).ok()?)
                .map(|p| p.start_offset as i64)
        })
        .unwrap_or(-1)
}

/// Applies the tenant's quotas to `bytes`: waits out the produce rate
/// (returning the wait in ms) and reports a quota that waiting does not
/// satisfy.
async fn throttle(broker: &Broker, session: &Session, bytes: u64) -> (i32, Option<String>) {
    let started = tokio::time::Instant::now();
    loop {
        match broker.app.check_produce(session.namespace(), bytes) {
            Ok(()) => break,
            Err(over) => match over.retry_after {
                Some(wait) if started.elapsed() + wait <= MAX_THROTTLE => {
                    tokio::time::sleep(wait).await;
                }
                _ => return (waited_ms(started), Some(over.message)),
            },
        }
    }
    (waited_ms(started), None)
}

fn waited_ms(since: tokio::time::Instant) -> i32 {
    i32::try_from(since.elapsed().as_millis()).unwrap_or(i32::MAX)
}

/// A producer id for an idempotent producer. Transactional ids are not
/// supported yet and are refused.
pub async fn init_producer_id(
    broker: &Broker,
    request: InitProducerIdRequest,
) -> InitProducerIdResponse {
    let mut response = InitProducerIdResponse::default();
    if request.transactional_id.is_some() {
        response.error_code = ResponseError::TransactionalIdAuthorizationFailed.code();
        return response;
    }
    // A new id (epoch 0) also serves a producer asking to bump its epoch:
    // its sequences start over either way.
    match broker.app.log.init_producer_id().await {
        Ok(id) => {
            response.producer_id = ProducerId(id);
            response.producer_epoch = 0;
        }
        Err(e) => {
            tracing::warn!("allocating a producer id failed: {e}");
            response.error_code = errors::code(&e).code();
        }
    }
    response
}
