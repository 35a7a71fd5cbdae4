//! Group administration, as Kafka's admin client asks for it: which groups
//! a caller can see (ListGroups), what is in them (DescribeGroups), and
//! deleting their committed offsets (DeleteGroups); and the same views,
//! with consumers' assignments decoded, for the HTTP API. Joining and
//! committing are the parent module's.

use kafka_protocol::ResponseError;
use kafka_protocol::messages::GroupId;
use kafka_protocol::messages::delete_groups_request::DeleteGroupsRequest;
use kafka_protocol::messages::delete_groups_response::{
    DeletableGroupResult, DeleteGroupsResponse,
};
use kafka_protocol::messages::describe_groups_request::DescribeGroupsRequest;
use kafka_protocol::messages::describe_groups_response::{
    DescribeGroupsResponse, DescribedGroup, DescribedGroupMember,
};
use kafka_protocol::messages::list_groups_request::ListGroupsRequest;
use kafka_protocol::messages::list_groups_response::{ListGroupsResponse, ListedGroup};
use weir_log::{LogError, StreamLog};
use weir_tenancy::Namespace;

use super::text;
use crate::coordinator::{Coordinator, Phase};
use crate::session::Session;
use crate::{Broker, errors};

/// A group one caller can see.
pub struct VisibleGroup {
    /// In the caller's names.
    pub local: String,
    pub stored: String,
    pub phase: Phase,
    pub protocol_type: String,
}

/// Groups a caller can see: those with members, and those with only
/// committed offsets (`Empty`), by local name.
pub async fn visible_groups(
    coordinator: &Coordinator,
    log: &dyn StreamLog,
    ns: &Namespace,
) -> Result<Vec<VisibleGroup>, LogError> {
    let with_offsets = log.groups().await?;
    let mut groups: Vec<VisibleGroup> = coordinator
        .views()
        .into_iter()
        .filter_map(|(stored, view)| {
            let local = ns.localize(&stored)?.to_string();
            let kept = !view.members.is_empty() || with_offsets.contains(&stored);
            kept.then_some(VisibleGroup {
                local,
                stored,
                phase: view.phase,
                protocol_type: view.protocol_type,
            })
        })
        .collect();
    for stored in with_offsets {
        let Some(local) = ns.localize(&stored) else {
            continue;
        };
        if !groups.iter().any(|g| g.stored == stored) {
            groups.push(VisibleGroup {
                local: local.to_string(),
                stored,
                phase: Phase::Empty,
                protocol_type: String::new(),
            });
        }
    }
    groups.sort_by(|a, b| a.local.cmp(&b.local));
    Ok(groups)
}

/// Why a group was not deleted.
#[derive(Debug)]
pub enum GroupDeleteError {
    /// Members are in it: they must leave first.
    HasMembers,
    /// It has no committed offsets to delete.
    Unknown,
    Log(LogError),
}

/// Deletes the group stored as `group`: its committed offsets, once it has
/// no members (as Kafka's DeleteGroups).
pub async fn delete_group(
    coordinator: &Coordinator,
    log: &dyn StreamLog,
    group: &str,
) -> Result<(), GroupDeleteError> {
    if coordinator
        .view(group)
        .is_some_and(|v| !v.members.is_empty())
    {
        return Err(GroupDeleteError::HasMembers);
    }
    match log.delete_group(group).await {
        Ok(true) => Ok(()),
        Ok(false) => Err(GroupDeleteError::Unknown),
        Err(e) => Err(GroupDeleteError::Log(e)),
    }
}

pub async fn delete_groups(
    broker: &Broker,
    session: &Session,
    request: DeleteGroupsRequest,
) -> DeleteGroupsResponse {
    let ns = session.namespace();
    let mut results = Vec::with_capacity(request.groups_names.len());
    for name in request.groups_names {
        let stored = ns.qualify(&name);
        let error = match delete_group(&broker.coordinator, &*broker.ctx.log, &stored).await {
            Ok(()) => None,
            Err(GroupDeleteError::HasMembers) => Some(ResponseError::NonEmptyGroup),
            Err(GroupDeleteError::Unknown) => Some(ResponseError::GroupIdNotFound),
            Err(GroupDeleteError::Log(e)) => Some(errors::code(&e)),
        };
        results.push(
            DeletableGroupResult::default()
                .with_group_id(name)
                .with_error_code(error.map_or(0, |e| e.code())),
        );
    }
    DeleteGroupsResponse::default().with_results(results)
}

/// A group's membership as operators see it.
pub struct GroupSummary {
    pub phase: Phase,
    pub protocol_type: String,
    pub protocol: String,
    pub members: Vec<MemberSummary>,
}

pub struct MemberSummary {
    pub member_id: String,
    pub instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    /// Assigned partitions by topic (in the client's names), for groups of
    /// consumers; empty for other protocol types.
    pub assignment: Vec<(String, Vec<i32>)>,
}

/// The membership of the group stored as `group`, if it has members.
pub fn summary(coordinator: &Coordinator, group: &str) -> Option<GroupSummary> {
    let view = coordinator.view(group).filter(|v| !v.members.is_empty())?;
    let consumers = view.protocol_type == "consumer";
    Some(GroupSummary {
        phase: view.phase,
        members: view
            .members
            .into_iter()
            .map(|m| MemberSummary {
                member_id: m.member_id,
                instance_id: m.instance_id,
                client_id: m.client_id,
                client_host: m.client_host,
                assignment: match consumers {
                    true => consumer_assignment(m.assignment),
                    false => Vec::new(),
                },
            })
            .collect(),
        protocol_type: view.protocol_type,
        protocol: view.protocol,
    })
}

/// Decodes a consumer's assignment (Kafka's consumer protocol: a version,
/// then the assigned partitions); nothing when it does not decode.
fn consumer_assignment(mut bytes: bytes::Bytes) -> Vec<(String, Vec<i32>)> {
    use bytes::Buf;
    use kafka_protocol::messages::consumer_protocol_assignment::ConsumerProtocolAssignment;
    use kafka_protocol::protocol::Decodable;
    if bytes.remaining() < 2 {
        return Vec::new();
    }
    let version = bytes.get_i16().clamp(0, 3);
    match ConsumerProtocolAssignment::decode(&mut bytes, version) {
        Ok(assignment) => assignment
            .assigned_partitions
            .into_iter()
            .map(|t| (t.topic.to_string(), t.partitions))
            .collect(),
        Err(_) => Vec::new(),
    }
}

pub async fn list_groups(
    broker: &Broker,
    session: &Session,
    request: ListGroupsRequest,
) -> ListGroupsResponse {
    let visible = visible_groups(&broker.coordinator, &*broker.ctx.log, session.namespace());
    let groups = match visible.await {
        Ok(groups) => groups,
        Err(e) => return ListGroupsResponse::default().with_error_code(errors::code(&e).code()),
    };
    let groups = groups
        .into_iter()
        .filter(|group| {
            request.states_filter.is_empty()
                || request
                    .states_filter
                    .iter()
                    .any(|s| s.as_str() == group.phase.name())
        })
        .map(|group| {
            ListedGroup::default()
                .with_group_id(GroupId(text(group.local)))
                .with_protocol_type(text(group.protocol_type))
                .with_group_state(text(group.phase.name()))
        })
        .collect();
    ListGroupsResponse::default().with_groups(groups)
}

pub async fn describe_groups(
    broker: &Broker,
    session: &Session,
    request: DescribeGroupsRequest,
) -> DescribeGroupsResponse {
    let ns = session.namespace();
    let with_offsets = match broker.ctx.log.groups().await {
        Ok(groups) => groups,
        Err(e) => {
            let failed = |id| {
                DescribedGroup::default()
                    .with_group_id(id)
                    .with_error_code(errors::code(&e).code())
            };
            let groups = request.groups.into_iter().map(failed).collect();
            return DescribeGroupsResponse::default().with_groups(groups);
        }
    };
    let groups = request
        .groups
        .into_iter()
        .map(|id| {
            let stored = ns.qualify(&id);
            let described = DescribedGroup::default().with_group_id(id);
            match broker.coordinator.view(&stored) {
                Some(view) => described
                    .with_group_state(text(view.phase.name()))
                    .with_protocol_type(text(view.protocol_type))
                    .with_protocol_data(text(view.protocol))
                    .with_members(
                        view.members
                            .into_iter()
                            .map(|m| {
                                DescribedGroupMember::default()
                                    .with_member_id(text(m.member_id))
                                    .with_group_instance_id(m.instance_id.map(text))
                                    .with_client_id(text(m.client_id))
                                    .with_client_host(text(m.client_host))
                                    .with_member_metadata(m.metadata)
                                    .with_member_assignment(m.assignment)
                            })
                            .collect(),
                    ),
                None if with_offsets.contains(&stored) => {
                    described.with_group_state(text(Phase::Empty.name()))
                }
                None => described.with_group_state(text("Dead")),
            }
        })
        .collect();
    DescribeGroupsResponse::default().with_groups(groups)
}
