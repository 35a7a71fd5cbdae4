//! ListOffsets: the earliest and latest offsets of a partition, and the
//! first offset at or after a timestamp.
//!
//! Latest is the high watermark for both isolation levels (there are no
//! transactions yet). A timestamp past every record answers offset −1, as
//! Kafka does; otherwise the record found gives its own timestamp.

use kafka_protocol::ResponseError;
use kafka_protocol::messages::list_offsets_request::ListOffsetsRequest;
use kafka_protocol::messages::list_offsets_response::{
    ListOffsetsPartitionResponse, ListOffsetsResponse, ListOffsetsTopicResponse,
};
use weir_log::LogError;

use super::session::Session;
use super::{Broker, errors};

/// Special timestamps of the request.
const LATEST: i64 = -1;
const EARLIEST: i64 = -2;

pub async fn list_offsets(
    broker: &Broker,
    session: &Session,
    request: ListOffsetsRequest,
    _version: i16,
) -> ListOffsetsResponse {
    let ns = session.namespace();
    let mut response = ListOffsetsResponse::default();
    for topic in request.topics {
        let stored = ns.qualify(&topic.name);
        let mut partitions = Vec::with_capacity(topic.partitions.len());
        for p in topic.partitions {
            let answer =
                ListOffsetsPartitionResponse::default().with_partition_index(p.partition_index);
            let answer = match lookup(broker, &stored, p.partition_index, p.timestamp).await {
                Ok((offset, timestamp)) => answer.with_offset(offset).with_timestamp(timestamp),
                Err(code) => answer
                    .with_error_code(code.code())
                    .with_offset(-1)
                    .with_timestamp(-1),
            };
            partitions.push(answer);
        }
        response.topics.push(
            ListOffsetsTopicResponse::default()
                .with_name(topic.name)
                .with_partitions(partitions),
        );
    }
    response
}

/// `(offset, timestamp)` for one partition.
async fn lookup(
    broker: &Broker,
    topic: &str,
    partition: i32,
    timestamp: i64,
) -> Result<(i64, i64), ResponseError> {
    found(broker, topic, partition, timestamp)
        .await
        .map_err(|e| errors::code(&e))?
        .ok_or(ResponseError::InvalidRequest)
}

/// `(offset, timestamp)`, or `None` for a special timestamp not served.
async fn found(
    broker: &Broker,
    topic: &str,
    partition: i32,
    timestamp: i64,
) -> Result<Option<(i64, i64)>, LogError> {
    let log = &broker.ctx.log;
    let info = log.topic(topic).await?;
    let unknown = || LogError::UnknownPartition {
        topic: topic.to_string(),
        partition: partition.max(0) as u32,
        partitions: info.partitions.len() as u32,
    };
    let index = u32::try_from(partition).map_err(|_| unknown())?;
    let p = info.partitions.get(index as usize).ok_or_else(unknown)?;
    match timestamp {
        EARLIEST => Ok(Some((p.start_offset as i64, -1))),
        LATEST => Ok(Some((p.end_offset as i64, -1))),
        t if t < 0 => Ok(None),
        t => {
            let offset = log.offset_for_timestamp(topic, index, t).await?;
            if offset >= p.end_offset {
                return Ok(Some((-1, -1)));
            }
            let batches = log.read(topic, index, offset, 1).await?;
            let found = batches
                .iter()
                .flat_map(|b| b.records())
                .find(|r| r.offset >= offset)
                .map(|r| r.timestamp)
                .unwrap_or(-1);
            Ok(Some((offset as i64, found)))
        }
    }
}
