//! Consumer-group requests: FindCoordinator, JoinGroup, SyncGroup,
//! Heartbeat, LeaveGroup, OffsetCommit and OffsetFetch here; ListGroups,
//! DescribeGroups and DeleteGroups in `admin`.
//!
//! Membership is the [`Coordinator`]'s; committed offsets are the log's
//! consumer-group offsets (`StreamLog::commit_offsets`), the same ones the
//! HTTP API and the CLI show, kept as committed (negative ones included,
//! as Kafka keeps them). Group ids, like topic names, live in the caller's
//! namespace. [`visible_groups`] and [`summary`] describe groups
//! for the HTTP API too, with member assignments decoded.
//!
//! [`Coordinator`]: super::coordinator::Coordinator

mod admin;

pub use admin::{
    GroupDeleteError, GroupSummary, MemberSummary, VisibleGroup, delete_group, delete_groups,
    describe_groups, list_groups, summary, visible_groups,
};

use kafka_protocol::ResponseError;
use kafka_protocol::messages::find_coordinator_request::FindCoordinatorRequest;
use kafka_protocol::messages::find_coordinator_response::{
    Coordinator as Found, FindCoordinatorResponse,
};
use kafka_protocol::messages::heartbeat_request::HeartbeatRequest;
use kafka_protocol::messages::heartbeat_response::HeartbeatResponse;
use kafka_protocol::messages::join_group_request::JoinGroupRequest;
use kafka_protocol::messages::join_group_response::{JoinGroupResponse, JoinGroupResponseMember};
use kafka_protocol::messages::leave_group_request::LeaveGroupRequest;
use kafka_protocol::messages::leave_group_response::{LeaveGroupResponse, MemberResponse};
use kafka_protocol::messages::offset_commit_request::OffsetCommitRequest;
use kafka_protocol::messages::offset_commit_response::{
    OffsetCommitResponse, OffsetCommitResponsePartition, OffsetCommitResponseTopic,
};
use kafka_protocol::messages::offset_fetch_request::OffsetFetchRequest;
use kafka_protocol::messages::offset_fetch_response::{
    OffsetFetchResponse, OffsetFetchResponsePartition, OffsetFetchResponseTopic,
};
use kafka_protocol::messages::sync_group_request::SyncGroupRequest;
use kafka_protocol::messages::sync_group_response::SyncGroupResponse;
use kafka_protocol::messages::{BrokerId, TopicName};
use kafka_protocol::protocol::StrBytes;

use super::coordinator::{Caller, Join, JoinOutcome};
use super::session::Session;
use super::{Broker, KafkaNode, errors};

/// Key types of FindCoordinator.
const GROUP_KEY: i8 = 0;
const TRANSACTION_KEY: i8 = 1;

fn text(s: impl Into<String>) -> StrBytes {
    StrBytes::from_string(s.into())
}

fn code(result: Result<(), ResponseError>) -> i16 {
    result.err().map_or(0, |e| e.code())
}

/// The sender of a group request, as its member id and (static members)
/// group instance id fields name it.
pub fn caller<'a>(member_id: &'a StrBytes, instance_id: &'a Option<StrBytes>) -> Caller<'a> {
    Caller {
        member_id: member_id.as_str(),
        instance_id: instance_id.as_ref().map(|i| i.as_str()),
    }
}

pub fn find_coordinator(
    broker: &Broker,
    session: &Session,
    request: FindCoordinatorRequest,
    version: i16,
) -> FindCoordinatorResponse {
    // Groups have one coordinator among the workers; transactions are
    // coordinated by the broker asked.
    let find = |key: &str| -> Result<(i32, KafkaNode), ResponseError> {
        match request.key_type {
            GROUP_KEY => Ok(broker.group_coordinator(&session.namespace().qualify(key))),
            TRANSACTION_KEY => Ok(broker.this_node()),
            _ => Err(ResponseError::InvalidRequest),
        }
    };
    let mut response = FindCoordinatorResponse::default();
    response.error_message = None;
    if version >= 4 {
        response.coordinators = request
            .coordinator_keys
            .into_iter()
            .map(|key| {
                let found = Found::default()
                    .with_error_message(None)
                    .with_key(key.clone());
                match find(&key) {
                    Ok((id, node)) => found
                        .with_node_id(BrokerId(id))
                        .with_host(text(node.host))
                        .with_port(node.port),
                    Err(e) => found
                        .with_node_id(BrokerId(-1))
                        .with_host(text(""))
                        .with_port(-1)
                        .with_error_code(e.code()),
                }
            })
            .collect();
        return response;
    }
    match find(&request.key) {
        Ok((id, node)) => {
            response.node_id = BrokerId(id);
            response.host = text(node.host);
            response.port = node.port;
        }
        Err(e) => {
            response.error_code = e.code();
            response.node_id = BrokerId(-1);
            response.port = -1;
        }
    }
    response
}

/// Refuses a group request sent to a broker that does not coordinate the
/// group (the coordinator moved when a worker came or went): the client
/// asks FindCoordinator again.
fn check_coordinator(broker: &Broker, group: &str) -> Result<(), ResponseError> {
    match broker.coordinates(group) {
        true => Ok(()),
        false => Err(ResponseError::NotCoordinator),
    }
}

pub async fn join_group(
    broker: &Broker,
    session: &Session,
    request: JoinGroupRequest,
    client_id: &str,
    version: i16,
) -> JoinGroupResponse {
    let group = session.namespace().qualify(&request.group_id);
    let join = Join {
        member_id: request.member_id.to_string(),
        client_id: client_id.to_string(),
        client_host: session.peer.ip().to_string(),
        session_timeout: millis(request.session_timeout_ms),
        // v0 has no rebalance timeout: the session timeout serves.
        rebalance_timeout: millis(if version >= 1 {
            request.rebalance_timeout_ms
        } else {
            request.session_timeout_ms
        }),
        protocol_type: request.protocol_type.to_string(),
        protocols: request
            .protocols
            .into_iter()
            .map(|p| (p.name.to_string(), p.metadata))
            .collect(),
        id_required: version >= 4,
        instance_id: request.group_instance_id.as_ref().map(|i| i.to_string()),
    };
    let mut response = JoinGroupResponse::default().with_member_id(request.member_id);
    if let Err(e) = check_coordinator(broker, &group) {
        response.error_code = e.code();
        return response;
    }
    match broker.coordinator.join(&group, join).await {
        Ok(JoinOutcome::MemberIdRequired(id)) => {
            response.error_code = ResponseError::MemberIdRequired.code();
            response.member_id = text(id);
        }
        Ok(JoinOutcome::Joined(joined)) => {
            response.generation_id = joined.generation;
            response.protocol_name = Some(text(joined.protocol));
            if version >= 7 {
                response.protocol_type = Some(text(joined.protocol_type));
            }
            response.leader = text(joined.leader);
            response.member_id = text(joined.member_id);
            response.members = joined
                .members
                .into_iter()
                .map(|(id, instance, metadata)| {
                    JoinGroupResponseMember::default()
                        .with_member_id(text(id))
                        .with_group_instance_id(instance.map(text))
                        .with_metadata(metadata)
                })
                .collect();
        }
        Err(e) => response.error_code = e.code(),
    }
    response
}

pub async fn sync_group(
    broker: &Broker,
    session: &Session,
    request: SyncGroupRequest,
    version: i16,
) -> SyncGroupResponse {
    let group = session.namespace().qualify(&request.group_id);
    let assignments = request
        .assignments
        .into_iter()
        .map(|a| (a.member_id.to_string(), a.assignment))
        .collect();
    let mut response = SyncGroupResponse::default();
    if let Err(e) = check_coordinator(broker, &group) {
        response.error_code = e.code();
        return response;
    }
    match broker
        .coordinator
        .sync(
            &group,
            request.generation_id,
            caller(&request.member_id, &request.group_instance_id),
            assignments,
        )
        .await
    {
        Ok(assignment) => {
            response.assignment = assignment;
            if version >= 5 {
                response.protocol_type = request.protocol_type;
                response.protocol_name = request.protocol_name;
            }
        }
        Err(e) => response.error_code = e.code(),
    }
    response
}

pub fn heartbeat(
    broker: &Broker,
    session: &Session,
    request: HeartbeatRequest,
) -> HeartbeatResponse {
    let group = session.namespace().qualify(&request.group_id);
    let result = check_coordinator(broker, &group).and_then(|()| {
        broker.coordinator.heartbeat(
            &group,
            request.generation_id,
            caller(&request.member_id, &request.group_instance_id),
        )
    });
    HeartbeatResponse::default().with_error_code(code(result))
}

pub fn leave_group(
    broker: &Broker,
    session: &Session,
    request: LeaveGroupRequest,
    version: i16,
) -> LeaveGroupResponse {
    let group = session.namespace().qualify(&request.group_id);
    let no_instance = None;
    let members: Vec<Caller<'_>> = if version >= 3 {
        request
            .members
            .iter()
            .map(|m| caller(&m.member_id, &m.group_instance_id))
            .collect()
    } else {
        vec![caller(&request.member_id, &no_instance)]
    };
    let mut response = LeaveGroupResponse::default();
    if let Err(e) = check_coordinator(broker, &group) {
        response.error_code = e.code();
        return response;
    }
    let outcomes = broker.coordinator.leave(&group, &members);
    if version >= 3 {
        response.members = members
            .into_iter()
            .zip(outcomes)
            .map(|(member, outcome)| {
                MemberResponse::default()
                    .with_member_id(text(member.member_id))
                    .with_group_instance_id(member.instance_id.map(text))
                    .with_error_code(code(outcome))
            })
            .collect();
    } else {
        response.error_code = code(outcomes.into_iter().next().unwrap_or(Ok(())));
    }
    response
}

pub async fn offset_commit(
    broker: &Broker,
    session: &Session,
    request: OffsetCommitRequest,
) -> OffsetCommitResponse {
    let ns = session.namespace();
    let group = ns.qualify(&request.group_id);
    let allowed = check_coordinator(broker, &group).and_then(|()| {
        broker.coordinator.check_commit(
            &group,
            request.generation_id_or_member_epoch,
            caller(&request.member_id, &request.group_instance_id),
        )
    });
    // Each partition's outcome, and the offsets to commit together.
    let mut outcomes: Vec<(TopicName, i32, Result<(), ResponseError>)> = Vec::new();
    let mut offsets = Vec::new();
    for topic in request.topics {
        let stored = ns.qualify(&topic.name);
        let info = broker.ctx.log.topic(&stored).await;
        for p in topic.partitions {
            let result = allowed.and_then(|()| {
                let info = info.as_ref().map_err(errors::code)?;
                let partition = u32::try_from(p.partition_index)
                    .ok()
                    .filter(|i| (*i as usize) < info.partitions.len())
                    .ok_or(ResponseError::UnknownTopicOrPartition)?;
                // Kept as given, as Kafka keeps it: admin tools commit −1
                // and −2 to reset a group to the end or the beginning.
                offsets.push((stored.clone(), partition, p.committed_offset));
                Ok(())
            });
            outcomes.push((topic.name.clone(), p.partition_index, result));
        }
    }
    if !offsets.is_empty()
        && let Err(e) = broker.ctx.log.commit_offsets(&group, offsets).await
    {
        tracing::warn!("committing consumer-group offsets failed: {e}");
        let failed = errors::code(&e);
        for outcome in &mut outcomes {
            if outcome.2.is_ok() {
                outcome.2 = Err(failed);
            }
        }
    }
    let mut response = OffsetCommitResponse::default();
    for (topic, partition, result) in outcomes {
        let entry = OffsetCommitResponsePartition::default()
            .with_partition_index(partition)
            .with_error_code(code(result));
        match response.topics.last_mut() {
            Some(last) if last.name == topic => last.partitions.push(entry),
            _ => response.topics.push(
                OffsetCommitResponseTopic::default()
                    .with_name(topic)
                    .with_partitions(vec![entry]),
            ),
        }
    }
    response
}

pub async fn offset_fetch(
    broker: &Broker,
    session: &Session,
    request: OffsetFetchRequest,
) -> OffsetFetchResponse {
    let ns = session.namespace();
    let group = ns.qualify(&request.group_id);
    let committed = match broker.ctx.log.group_offsets(&group).await {
        Ok(committed) => committed,
        // Never "nothing committed": the consumer would reset its position.
        Err(e) => return OffsetFetchResponse::default().with_error_code(errors::code(&e).code()),
    };
    let lookup = |stored: &str, partition: i32| {
        committed
            .iter()
            .find(|(t, p, _)| t == stored && i64::from(*p) == i64::from(partition))
            .map_or(-1, |(_, _, o)| *o)
    };
    let entry = |partition: i32, offset: i64| {
        OffsetFetchResponsePartition::default()
            .with_partition_index(partition)
            .with_committed_offset(offset)
    };
    let topics = match request.topics {
        Some(topics) => topics
            .into_iter()
            .map(|t| {
                let stored = ns.qualify(&t.name);
                let partitions = t
                    .partition_indexes
                    .into_iter()
                    .map(|p| {
                        // A transaction that will commit an offset here is
                        // still open: a client asking for stable offsets
                        // (Kafka Streams with exactly-once) waits for it.
                        let pending = request.require_stable
                            && u32::try_from(p).is_ok_and(|p| {
                                broker.transactions.offset_pending(&group, &stored, p)
                            });
                        match pending {
                            true => entry(p, -1)
                                .with_error_code(ResponseError::UnstableOffsetCommit.code()),
                            false => entry(p, lookup(&stored, p)),
                        }
                    })
                    .collect();
                OffsetFetchResponseTopic::default()
                    .with_name(t.name)
                    .with_partitions(partitions)
            })
            .collect(),
        // Every committed offset of the group.
        None => {
            let mut topics: Vec<OffsetFetchResponseTopic> = Vec::new();
            for (stored, partition, offset) in &committed {
                let Some(local) = ns.localize(stored) else {
                    continue;
                };
                let name = TopicName(text(local));
                let e = entry(*partition as i32, *offset);
                match topics.last_mut() {
                    Some(last) if last.name == name => last.partitions.push(e),
                    _ => topics.push(
                        OffsetFetchResponseTopic::default()
                            .with_name(name)
                            .with_partitions(vec![e]),
                    ),
                }
            }
            topics
        }
    };
    OffsetFetchResponse::default().with_topics(topics)
}

fn millis(ms: i32) -> std::time::Duration {
    std::time::Duration::from_millis(u64::try_from(ms).unwrap_or(0))
}
