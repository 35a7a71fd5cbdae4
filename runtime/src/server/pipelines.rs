//! `/v1/pipelines`: apply (create or update), list, status, pause, resume
//! and delete pipelines.
//!
//! Changes run in their own task: if the client goes away mid-request,
//! the change still completes (a half-done apply would leave tasks no one
//! owns).

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::{BytesRejection, JsonRejection};
use axum::http::StatusCode;
use serde_json::{Value, json};

use super::App;
use super::auth::Scope;
use super::error::{ApiError, ApiResult};
use super::names::ScopedName;
use weir_core::names::check_name;
use weir_pipeline::lifecycle::TaskLimits;
use weir_pipeline::{PipelineError, PipelineSpec, PipelineStatus};

/// `PUT /v1/pipelines/{name}` with the spec as JSON.
pub async fn apply(
    State(app): State<App>,
    ScopedName { ns, local, stored }: ScopedName,
    body: Result<Json<PipelineSpec>, JsonRejection>,
) -> ApiResult<(StatusCode, Json<PipelineStatus>)> {
    let Json(spec) = body?;
    check_name("pipeline", &local).map_err(ApiError::bad_request)?;
    if let Some(named) = spec.name.as_ref().filter(|n| **n != local) {
        return Err(ApiError::bad_request(format!(
            "the spec names pipeline {named:?} but the request is for {local:?}"
        )));
    }
    let (name, spec) = (stored, spec.qualified(&ns));
    let quotas = app.quotas.quotas(&ns);
    let owned = app.pipelines.names();
    if let Some(quotas) = &quotas
        && !owned.contains(&name)
    {
        let count = owned.iter().filter(|n| ns.localize(n).is_some()).count();
        quotas.check_count("pipelines", count as u64)?;
    }
    let limits = quotas.map_or_else(TaskLimits::default, |q| TaskLimits {
        max_memory_bytes: q
            .memory_bytes_per_instance
            .map(|m| usize::try_from(m).unwrap_or(usize::MAX)),
        cpu_share: q.cpu_share,
    });
    let pipelines = app.pipelines.clone();
    let (status, created) =
        detached(async move { pipelines.apply(&name, spec, limits).await }).await?;
    let status = status.localized(&ns);
    let code = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((code, Json(status)))
}

/// `GET /v1/pipelines`: the caller's pipelines.
pub async fn list(State(app): State<App>, Scope(ns): Scope) -> Json<Value> {
    let statuses: Vec<PipelineStatus> = app
        .pipelines
        .statuses()
        .await
        .into_iter()
        .filter(|s| ns.localize(&s.name).is_some())
        .map(|s| s.localized(&ns))
        .collect();
    Json(json!({ "pipelines": statuses }))
}

/// `GET /v1/pipelines/{name}`.
pub async fn status(State(app): State<App>, name: ScopedName) -> ApiResult<Json<PipelineStatus>> {
    let status = app.pipelines.status(&name.stored).await?;
    Ok(Json(status.localized(&name.ns)))
}

/// `POST /v1/pipelines/{name}/pause` (any body is read and ignored, so
/// the connection stays reusable).
pub async fn pause(
    State(app): State<App>,
    name: ScopedName,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<Json<PipelineStatus>> {
    set_paused(app, name, body, true).await
}

/// `POST /v1/pipelines/{name}/resume` (any body is ignored).
pub async fn resume(
    State(app): State<App>,
    name: ScopedName,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<Json<PipelineStatus>> {
    set_paused(app, name, body, false).await
}

async fn set_paused(
    app: App,
    ScopedName { ns, stored, .. }: ScopedName,
    body: Result<Bytes, BytesRejection>,
    paused: bool,
) -> ApiResult<Json<PipelineStatus>> {
    body?;
    let (pipelines, name) = (app.pipelines.clone(), stored);
    let status = detached(async move {
        match paused {
            true => pipelines.pause(&name).await,
            false => pipelines.resume(&name).await,
        }
    })
    .await?;
    Ok(Json(status.localized(&ns)))
}

/// `DELETE /v1/pipelines/{name}`.
pub async fn delete(
    State(app): State<App>,
    ScopedName { local, stored, .. }: ScopedName,
) -> ApiResult<Json<Value>> {
    let pipelines = app.pipelines.clone();
    detached(async move { pipelines.delete(&stored).await }).await?;
    Ok(Json(json!({ "deleted": local })))
}

/// Runs a change to completion even if the request is dropped.
async fn detached<T: Send + 'static>(
    change: impl Future<Output = Result<T, PipelineError>> + Send + 'static,
) -> ApiResult<T> {
    match tokio::spawn(change).await {
        Ok(result) => result.map_err(ApiError::from),
        Err(e) => Err(ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("the change failed: {e}"),
        )),
    }
}
