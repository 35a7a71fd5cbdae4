//! `GET /v1/cluster` (the admin's): which log the server keeps its
//! streams in and how it is doing: its kind, whether it can serve now
//! (`/healthz`'s check, with the reason when not), and facts about it
//! (where its data is; for a NATS JetStream cluster, the servers, the
//! replicas and what JetStream holds); with workers sharing a cluster,
//! every live worker and the pipeline tasks it runs.

use axum::Json;
use axum::extract::State;
use serde_json::{Value, json};

use super::App;
use super::auth::Admin;
use super::error::ApiResult;

pub async fn status(State(app): State<App>, _admin: Admin) -> ApiResult<Json<Value>> {
    let health = app.log.health().await;
    let status = app.log.status().await?;
    let facts: Vec<Value> = status
        .facts
        .iter()
        .map(|(name, value)| json!({ "name": name, "value": value }))
        .collect();
    Ok(Json(json!({
        "backend": status.backend,
        "healthy": health.is_ok(),
        "error": health.err().map(|e| e.to_string()),
        "facts": facts,
        "workers": app.pipelines.placement(),
    })))
}
