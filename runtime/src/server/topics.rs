//! `/v1/topics`: create, list, describe and delete topics.

use axum::Json;
use axum::extract::State;
use axum::extract::rejection::JsonRejection;
use axum::http::StatusCode;
use serde_json::{Map, Value, json};

use super::App;
use super::auth::Scope;
use super::error::{ApiError, ApiResult};
use super::names::ScopedName;
use weir_log::{TopicConfig, TopicInfo, check_user_topic_name};
use weir_tenancy::Namespace;

/// `POST /v1/topics`: `{"name": ..., "partitions": ..., "durability": ...,
/// "cleanup": ..., "retention_ms": ..., ...}` (every topic setting).
pub async fn create(
    State(app): State<App>,
    Scope(ns): Scope,
    body: Result<Json<Map<String, Value>>, JsonRejection>,
) -> ApiResult<(StatusCode, Json<TopicInfo>)> {
    let Json(mut fields) = body?;
    let name = match fields.remove("name") {
        Some(Value::String(name)) => name,
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "name must be a string, got {other}"
            )));
        }
        None => return Err(ApiError::bad_request("a topic needs a name")),
    };
    let config: TopicConfig = serde_json::from_value(Value::Object(fields))
        .map_err(|e| ApiError::bad_request(format!("invalid topic settings: {e}")))?;
    check_user_topic_name(&name)?;
    app.quotas.check_topic_quota(&ns).await?;
    let info = app.log.create_topic(&ns.qualify(&name), config).await?;
    Ok((StatusCode::CREATED, Json(localize(&ns, info))))
}

/// A topic's description in the caller's names.
fn localize(ns: &Namespace, mut info: TopicInfo) -> TopicInfo {
    if let Some(local) = ns.localize(&info.name) {
        info.name = local.to_string();
    }
    info
}

/// `GET /v1/topics`: the caller's topics.
pub async fn list(State(app): State<App>, Scope(ns): Scope) -> ApiResult<Json<Value>> {
    let topics: Vec<TopicInfo> = app
        .log
        .topics()
        .await?
        .into_iter()
        .filter(|t| ns.localize(&t.name).is_some())
        .map(|t| localize(&ns, t))
        .collect();
    Ok(Json(json!({ "topics": topics })))
}

/// `GET /v1/topics/{name}`.
pub async fn describe(State(app): State<App>, name: ScopedName) -> ApiResult<Json<TopicInfo>> {
    let info = app.log.topic(&name.stored).await?;
    Ok(Json(localize(&name.ns, info)))
}

/// `DELETE /v1/topics/{name}`: refused while a pipeline reads or writes it.
pub async fn delete(
    State(app): State<App>,
    ScopedName {
        local,
        stored: name,
        ..
    }: ScopedName,
) -> ApiResult<Json<Value>> {
    let deleted = app
        .pipelines
        .unless_used(|p| p.using_topic(&name), app.log.delete_topic(&name))
        .await;
    match deleted {
        Ok(result) => result?,
        Err(users) => {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                format!("topic {name:?} is used by pipeline(s) {}", users.join(", ")),
            ));
        }
    }
    Ok(Json(json!({ "deleted": local })))
}
