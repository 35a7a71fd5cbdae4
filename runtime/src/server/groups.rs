//! `/v1/groups`: consumer groups and the positions they committed (over
//! the Kafka protocol, or through the log API), with each partition's lag.

use axum::Json;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use serde_json::{Value, json};

use super::App;
use super::auth::Scope;
use super::error::{ApiError, ApiResult};
use crate::tenancy::Namespace;

/// `GET /v1/groups`: the caller's groups with committed offsets.
pub async fn list(State(app): State<App>, Scope(ns): Scope) -> Json<Value> {
    let groups: Vec<Value> = app
        .log
        .groups()
        .iter()
        .filter_map(|stored| {
            let local = ns.localize(stored)?;
            Some(json!({ "name": local, "offsets": offsets(&app, &ns, stored) }))
        })
        .collect();
    Json(json!({ "groups": groups }))
}

/// `GET /v1/groups/{name}`: one group's committed offsets.
pub async fn describe(
    State(app): State<App>,
    Scope(ns): Scope,
    name: Result<Path<String>, PathRejection>,
) -> ApiResult<Json<Value>> {
    let Path(name) = name?;
    let stored = ns.qualify(&name);
    let offsets = offsets(&app, &ns, &stored);
    if offsets.is_empty() {
        return Err(ApiError::not_found(format!(
            "group {name:?} has no committed offsets"
        )));
    }
    Ok(Json(json!({ "name": name, "offsets": offsets })))
}

/// `[{topic, partition, offset, lag}]` in the caller's names.
fn offsets(app: &App, ns: &Namespace, group: &str) -> Vec<Value> {
    app.log
        .group_offsets(group)
        .into_iter()
        .filter_map(|(topic, partition, offset)| {
            let end = app
                .log
                .topic(&topic)
                .ok()
                .and_then(|t| t.partitions.get(partition as usize).map(|p| p.end_offset));
            Some(json!({
                "topic": ns.localize(&topic)?,
                "partition": partition,
                "offset": offset,
                "lag": end.map(|end| end.saturating_sub(offset)),
            }))
        })
        .collect()
}
