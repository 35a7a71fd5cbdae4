//! Transaction requests: AddPartitionsToTxn, AddOffsetsToTxn,
//! TxnOffsetCommit and EndTxn (transactional InitProducerId is in
//! [`super::produce`]), mapped onto the [`super::transactions`]
//! coordinator. Transactional ids, topics and groups live in the caller's
//! namespace.

use kafka_protocol::ResponseError;
use kafka_protocol::messages::add_offsets_to_txn_request::AddOffsetsToTxnRequest;
use kafka_protocol::messages::add_offsets_to_txn_response::AddOffsetsToTxnResponse;
use kafka_protocol::messages::add_partitions_to_txn_request::AddPartitionsToTxnRequest;
use kafka_protocol::messages::add_partitions_to_txn_response::{
    AddPartitionsToTxnPartitionResult, AddPartitionsToTxnResponse, AddPartitionsToTxnTopicResult,
};
use kafka_protocol::messages::end_txn_request::EndTxnRequest;
use kafka_protocol::messages::end_txn_response::EndTxnResponse;
use kafka_protocol::messages::txn_offset_commit_request::TxnOffsetCommitRequest;
use kafka_protocol::messages::txn_offset_commit_response::{
    TxnOffsetCommitResponse, TxnOffsetCommitResponsePartition, TxnOffsetCommitResponseTopic,
};

use super::Broker;
use super::session::Session;

/// Partitions of a topic (0 when it does not exist).
async fn partition_count(broker: &Broker, stored: &str) -> usize {
    broker
        .ctx
        .log
        .topic(stored)
        .await
        .map_or(0, |t| t.partitions.len())
}

fn code(result: Result<(), ResponseError>) -> i16 {
    result.err().map_or(0, |e| e.code())
}

pub async fn add_partitions(
    broker: &Broker,
    session: &Session,
    request: AddPartitionsToTxnRequest,
) -> AddPartitionsToTxnResponse {
    let ns = session.namespace();
    let id = ns.qualify(&request.v3_and_below_transactional_id);
    // Partitions that exist are added; the others fail alone, and then
    // nothing is added (as in Kafka, where the rest get OPERATION_NOT_ATTEMPTED).
    let mut known = Vec::new();
    let mut unknown = Vec::new();
    for topic in &request.v3_and_below_topics {
        let stored = ns.qualify(&topic.name);
        let count = partition_count(broker, &stored).await;
        for &p in &topic.partitions {
            match u32::try_from(p).ok().filter(|p| (*p as usize) < count) {
                Some(p) => known.push((topic.name.clone(), p as i32, (stored.clone(), p))),
                None => unknown.push((topic.name.clone(), p)),
            }
        }
    }
    let outcome = if unknown.is_empty() {
        broker
            .transactions
            .add_partitions(
                &id,
                request.v3_and_below_producer_id.0,
                request.v3_and_below_producer_epoch,
                known.iter().map(|(_, _, stored)| stored.clone()).collect(),
            )
            .await
    } else {
        Err(ResponseError::OperationNotAttempted)
    };
    let mut results: Vec<AddPartitionsToTxnTopicResult> = Vec::new();
    let mut push = |topic: kafka_protocol::messages::TopicName, partition: i32, error: i16| {
        let entry = AddPartitionsToTxnPartitionResult::default()
            .with_partition_index(partition)
            .with_partition_error_code(error);
        match results.iter_mut().find(|r| r.name == topic) {
            Some(r) => r.results_by_partition.push(entry),
            None => results.push(
                AddPartitionsToTxnTopicResult::default()
                    .with_name(topic)
                    .with_results_by_partition(vec![entry]),
            ),
        }
    };
    for (topic, partition, _) in known {
        push(topic, partition, code(outcome));
    }
    for (topic, partition) in unknown {
        push(
            topic,
            partition,
            ResponseError::UnknownTopicOrPartition.code(),
        );
    }
    AddPartitionsToTxnResponse::default().with_results_by_topic_v3_and_below(results)
}

pub async fn add_offsets(
    broker: &Broker,
    session: &Session,
    request: AddOffsetsToTxnRequest,
) -> AddOffsetsToTxnResponse {
    let ns = session.namespace();
    let result = broker
        .transactions
        .add_group(
            &ns.qualify(&request.transactional_id),
            request.producer_id.0,
            request.producer_epoch,
            &ns.qualify(&request.group_id),
        )
        .await;
    AddOffsetsToTxnResponse::default().with_error_code(code(result))
}

pub async fn offset_commit(
    broker: &Broker,
    session: &Session,
    request: TxnOffsetCommitRequest,
) -> TxnOffsetCommitResponse {
    let ns = session.namespace();
    let mut offsets = Vec::new();
    let mut invalid = Vec::new();
    for topic in &request.topics {
        let stored = ns.qualify(&topic.name);
        let count = partition_count(broker, &stored).await;
        for p in &topic.partitions {
            let partition = u32::try_from(p.partition_index)
                .ok()
                .filter(|i| (*i as usize) < count);
            // The transaction's saved state keeps offsets unsigned: a
            // logical (negative) one is refused here, unlike OffsetCommit.
            let offset = u64::try_from(p.committed_offset).ok();
            match (partition, offset) {
                (Some(partition), Some(offset)) => {
                    offsets.push((stored.clone(), partition, offset));
                }
                (None, _) => invalid.push((
                    topic.name.clone(),
                    p.partition_index,
                    ResponseError::UnknownTopicOrPartition,
                )),
                (Some(_), None) => invalid.push((
                    topic.name.clone(),
                    p.partition_index,
                    ResponseError::InvalidCommitOffsetSize,
                )),
            }
        }
    }
    let group = ns.qualify(&request.group_id);
    // From a group member (Kafka Streams, v3+), the generation must be the
    // group's current one: a zombie instance is fenced here. Without member
    // and generation (older clients) the producer's epoch is the fence.
    let member = match request.generation_id < 0 && request.member_id.is_empty() {
        true => Ok(()),
        false => broker.coordinator.check_commit(
            &group,
            request.generation_id,
            super::groups::caller(&request.member_id, &request.group_instance_id),
        ),
    };
    let result = match member {
        Ok(()) => {
            broker
                .transactions
                .commit_offsets(
                    &ns.qualify(&request.transactional_id),
                    request.producer_id.0,
                    request.producer_epoch,
                    &group,
                    offsets,
                )
                .await
        }
        Err(e) => Err(e),
    };
    let mut response = TxnOffsetCommitResponse::default();
    for topic in request.topics {
        let partitions = topic
            .partitions
            .iter()
            .map(|p| {
                let refused = invalid
                    .iter()
                    .find(|(t, i, _)| *t == topic.name && *i == p.partition_index);
                let error = match refused {
                    Some((_, _, refusal)) => refusal.code(),
                    None => code(result),
                };
                TxnOffsetCommitResponsePartition::default()
                    .with_partition_index(p.partition_index)
                    .with_error_code(error)
            })
            .collect();
        response.topics.push(
            TxnOffsetCommitResponseTopic::default()
                .with_name(topic.name)
                .with_partitions(partitions),
        );
    }
    response
}

pub async fn end(broker: &Broker, session: &Session, request: EndTxnRequest) -> EndTxnResponse {
    let ns = session.namespace();
    let result = broker
        .transactions
        .end(
            &ns.qualify(&request.transactional_id),
            request.producer_id.0,
            request.producer_epoch,
            request.committed,
        )
        .await;
    EndTxnResponse::default().with_error_code(code(result))
}
