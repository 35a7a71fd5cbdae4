//! `/v1/modules`: uploading operator modules (each upload a new version,
//! validated and compiled first), listing and deleting them.

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde_json::{Value, json};

use super::App;
use super::auth::Scope;
use super::error::{ApiError, ApiResult};
use crate::modules::ModuleVersion;
use crate::pipeline::spec::check_name;

fn describe(name: &str, versions: &[ModuleVersion]) -> Value {
    json!({
        "name": name,
        "latest": versions.last(),
        "versions": versions,
    })
}

/// `PUT /v1/modules/{name}` with the `.wasm` file as the body.
pub async fn put(
    State(app): State<App>,
    Scope(ns): Scope,
    name: Result<Path<String>, PathRejection>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let Path(name) = name?;
    let bytes = body?;
    check_name("module", &name).map_err(ApiError::bad_request)?;
    let module_name = ns.qualify(&name);
    if let Some(quotas) = app.quotas(&ns) {
        quotas.check_module_size(bytes.len() as u64)?;
        if app.modules.versions(&module_name).is_none() {
            let owned = app.modules.list();
            let count = owned
                .iter()
                .filter(|(m, _)| ns.localize(m).is_some())
                .count();
            quotas.check_count("modules", count as u64)?;
        }
    }
    let modules = app.modules.clone();
    let tenant = ns.tenant_name().map(str::to_string);
    let (version, new) = tokio::task::spawn_blocking(move || {
        modules.put_for(tenant.as_deref(), &module_name, &bytes)
    })
    .await
    .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))??;
    let status = if new {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((
        status,
        Json(
            json!({ "name": name, "version": version.version, "digest": version.digest,
                     "size": version.size, "new": new }),
        ),
    ))
}

/// `GET /v1/modules`: the caller's modules.
pub async fn list(State(app): State<App>, Scope(ns): Scope) -> Json<Value> {
    let modules: Vec<Value> = app
        .modules
        .list()
        .iter()
        .filter_map(|(name, versions)| Some(describe(ns.localize(name)?, versions)))
        .collect();
    Json(json!({ "modules": modules }))
}

/// `GET /v1/modules/{name}`.
pub async fn get(
    State(app): State<App>,
    Scope(ns): Scope,
    name: Result<Path<String>, PathRejection>,
) -> ApiResult<Json<Value>> {
    let Path(name) = name?;
    let versions = app
        .modules
        .versions(&ns.qualify(&name))
        .ok_or_else(|| ApiError::not_found(format!("unknown module {name:?}")))?;
    let mut value = describe(&name, &versions);
    let users: Vec<String> = app
        .pipelines
        .using_module(&ns.qualify(&name))
        .iter()
        .filter_map(|p| ns.localize(p).map(str::to_string))
        .collect();
    value["pipelines"] = json!(users);
    Ok(Json(value))
}

/// `DELETE /v1/modules/{name}`: refused while a pipeline uses it.
pub async fn delete(
    State(app): State<App>,
    Scope(ns): Scope,
    name: Result<Path<String>, PathRejection>,
) -> ApiResult<Json<Value>> {
    let Path(name) = name?;
    let modules = app.modules.clone();
    let module_name = ns.qualify(&name);
    // Lazy: only runs if no pipeline uses the module.
    let delete =
        async move { tokio::task::spawn_blocking(move || modules.delete(&module_name)).await };
    let deleted = app
        .pipelines
        .unless_used(|p| p.using_module(&ns.qualify(&name)), delete)
        .await;
    match deleted {
        Ok(result) => result
            .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))??,
        Err(users) => {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                format!(
                    "module {name:?} is used by pipeline(s) {}",
                    users.join(", ")
                ),
            ));
        }
    }
    Ok(Json(json!({ "deleted": name })))
}
