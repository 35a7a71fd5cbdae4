//! `/v1/groups`: consumer groups, their members (Kafka clients in a group)
//! and the positions they committed (over the Kafka protocol, or through
//! the log API), with each partition's lag.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde_json::{Value, json};

use super::App;
use super::auth::Scope;
use super::error::{ApiError, ApiResult};
use super::names::ScopedName;
use weir_kafka as kafka;
use weir_log::LogError;
use weir_tenancy::Namespace;

/// `GET /v1/groups`: the caller's groups (with members now, or with
/// committed offsets), each with its state and offsets.
pub async fn list(State(app): State<App>, Scope(ns): Scope) -> ApiResult<Json<Value>> {
    let visible = kafka::visible_groups(&app.kafka.groups, &*app.log, &ns).await?;
    let mut groups = Vec::new();
    for group in visible {
        groups.push(json!({
            "name": group.local,
            "state": group.phase.name(),
            "offsets": offsets(&app, &ns, &group.stored).await?,
        }));
    }
    Ok(Json(json!({ "groups": groups })))
}

/// `GET /v1/groups/{name}`: one group's state, members (with the
/// partitions assigned to each) and committed offsets.
pub async fn describe(
    State(app): State<App>,
    ScopedName {
        ns,
        local: name,
        stored,
    }: ScopedName,
) -> ApiResult<Json<Value>> {
    let offsets = offsets(&app, &ns, &stored).await?;
    let summary = kafka::summary(&app.kafka.groups, &stored);
    if offsets.is_empty() && summary.is_none() {
        return Err(ApiError::not_found(format!(
            "group {name:?} has no members and no committed offsets"
        )));
    }
    let (state, protocol, members) = match summary {
        Some(summary) => (
            summary.phase.name(),
            Some(summary.protocol),
            summary.members.iter().map(member).collect(),
        ),
        None => ("Empty", None, Vec::new()),
    };
    Ok(Json(json!({
        "name": name,
        "state": state,
        "protocol": protocol,
        "members": members,
        "offsets": offsets,
    })))
}

/// `DELETE /v1/groups/{name}`: forgets a group's committed offsets, once
/// no consumer is in it.
pub async fn delete(
    State(app): State<App>,
    ScopedName {
        local: name,
        stored,
        ..
    }: ScopedName,
) -> ApiResult<Json<Value>> {
    match kafka::delete_group(&app.kafka.groups, &*app.log, &stored).await {
        Ok(()) => Ok(Json(json!({ "deleted": name }))),
        Err(kafka::GroupDeleteError::HasMembers) => Err(ApiError::new(
            StatusCode::CONFLICT,
            format!("group {name:?} has members; it can be deleted once its consumers stop"),
        )),
        Err(kafka::GroupDeleteError::Unknown) => Err(ApiError::not_found(format!(
            "group {name:?} has no committed offsets"
        ))),
        Err(kafka::GroupDeleteError::Log(e)) => Err(e.into()),
    }
}

fn member(member: &kafka::MemberSummary) -> Value {
    let assignment: Vec<Value> = member
        .assignment
        .iter()
        .map(|(topic, partitions)| json!({ "topic": topic, "partitions": partitions }))
        .collect();
    json!({
        "member_id": member.member_id,
        "instance_id": member.instance_id,
        "client_id": member.client_id,
        "client_host": member.client_host,
        "assignment": assignment,
    })
}

/// `[{topic, partition, offset, lag}]` in the caller's names. A negative
/// offset (Kafka's logical −1 and −2, as an admin tool commits them) has
/// no lag: `null`, as for a partition gone.
async fn offsets(app: &App, ns: &Namespace, group: &str) -> Result<Vec<Value>, LogError> {
    let mut offsets = Vec::new();
    for (topic, partition, offset) in app.log.group_offsets(group).await? {
        let Some(local) = ns.localize(&topic) else {
            continue;
        };
        let end = match app.log.topic(&topic).await {
            Ok(t) => t.partitions.get(partition as usize).map(|p| p.end_offset),
            Err(LogError::UnknownTopic(_)) => None,
            Err(e) => return Err(e),
        };
        let lag = end
            .zip(u64::try_from(offset).ok())
            .map(|(end, offset)| end.saturating_sub(offset));
        offsets.push(json!({
            "topic": local,
            "partition": partition,
            "offset": offset,
            "lag": lag,
        }));
    }
    Ok(offsets)
}
