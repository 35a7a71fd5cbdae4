//! `/v1/pipelines`: apply (create or update), list, status, pause, resume
//! and delete pipelines.

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::{JsonRejection, PathRejection};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde_json::{Value, json};

use super::App;
use super::error::ApiResult;
use crate::pipeline::{PipelineSpec, PipelineStatus};

/// `PUT /v1/pipelines/{name}` with the spec as JSON.
pub async fn apply(
    State(app): State<App>,
    name: Result<Path<String>, PathRejection>,
    body: Result<Json<PipelineSpec>, JsonRejection>,
) -> ApiResult<(StatusCode, Json<PipelineStatus>)> {
    let Path(name) = name?;
    let Json(spec) = body?;
    let (status, created) = app.pipelines.apply(&name, spec).await?;
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
    _body: Bytes,
) -> ApiResult<Json<PipelineStatus>> {
    let Path(name) = name?;
    Ok(Json(app.pipelines.pause(&name).await?))
}

/// `POST /v1/pipelines/{name}/resume` (any body is ignored).
pub async fn resume(
    State(app): State<App>,
    name: Result<Path<String>, PathRejection>,
    _body: Bytes,
) -> ApiResult<Json<PipelineStatus>> {
    let Path(name) = name?;
    Ok(Json(app.pipelines.resume(&name).await?))
}

/// `DELETE /v1/pipelines/{name}`.
pub async fn delete(
    State(app): State<App>,
    name: Result<Path<String>, PathRejection>,
) -> ApiResult<Json<Value>> {
    let Path(name) = name?;
    app.pipelines.delete(&name).await?;
    Ok(Json(json!({ "deleted": name })))
}
