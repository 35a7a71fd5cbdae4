//! `/v1/pipelines`: apply (create or update), list, status, pause, resume
//! and delete pipelines.
//!
//! Changes run in their own task: if the client goes away mid-request,
//! the change still completes (a half-done apply would leave tasks no one
//! owns).

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, JsonRejection, PathRejection};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde_json::{Value, json};

use super::App;
use super::error::{ApiError, ApiResult};
use crate::pipeline::{PipelineError, PipelineSpec, PipelineStatus};

/// `PUT /v1/pipelines/{name}` with the spec as JSON.
pub async fn apply(
    State(app): State<App>,
    name: Result<Path<String>, PathRejection>,
    body: Result<Json<PipelineSpec>, JsonRejection>,
) -> ApiResult<(StatusCode, Json<PipelineStatus>)> {
    let Path(name) = name?;
    let Json(spec) = body?;
    let pipelines = app.pipelines.clone();
    let (status, created) = detached(async move { pipelines.apply(&name, spec).await }).await?;
    let code = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((code, Json(status)))
}

/// `GET /v1/pipelines`.
pub async fn list(State(app): State<App>) -> Json<Value> {
    Json(json!({ "pipelines": app.pipelines.statuses() }))
}

/// `GET /v1/pipelines/{name}`.
pub async fn status(
    State(app): State<App>,
    name: Result<Path<String>, PathRejection>,
) -> ApiResult<Json<PipelineStatus>> {
    let Path(name) = name?;
    Ok(Json(app.pipelines.status(&name)?))
}

/// `POST /v1/pipelines/{name}/pause` (any body is read and ignored, so
/// the connection stays reusable).
pub async fn pause(
    State(app): State<App>,
    name: Result<Path<String>, PathRejection>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<Json<PipelineStatus>> {
    let Path(name) = name?;
    body?;
    let pipelines = app.pipelines.clone();
    Ok(Json(
        detached(async move { pipelines.pause(&name).await }).await?,
    ))
}

/// `POST /v1/pipelines/{name}/resume` (any body is ignored).
pub async fn resume(
    State(app): State<App>,
    name: Result<Path<String>, PathRejection>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<Json<PipelineStatus>> {
    let Path(name) = name?;
    body?;
    let pipelines = app.pipelines.clone();
    Ok(Json(
        detached(async move { pipelines.resume(&name).await }).await?,
    ))
}

/// `DELETE /v1/pipelines/{name}`.
pub async fn delete(
    State(app): State<App>,
    name: Result<Path<String>, PathRejection>,
) -> ApiResult<Json<Value>> {
    let Path(name) = name?;
    let pipelines = app.pipelines.clone();
    let deleted = name.clone();
    detached(async move { pipelines.delete(&deleted).await }).await?;
    Ok(Json(json!({ "deleted": name })))
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
