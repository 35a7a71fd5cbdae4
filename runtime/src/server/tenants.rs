//! `/v1/tenants`: the admin's endpoints: tenants and their tokens.
//! Deleting a tenant is [`TenantDeletion`]'s work: everything it owns goes
//! with it.

use axum::Json;
use axum::extract::rejection::{JsonRejection, PathRejection};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::{Value, json};

use super::App;
use super::auth::{Admin, Scope};
use super::error::{ApiError, ApiResult};
use super::names::PathName;
use weir_log::TopicInfo;
use weir_tenancy::{DeletionError, Namespace, Quotas, TenancyError, TenantDeletion, Tenants};

impl From<TenancyError> for ApiError {
    fn from(e: TenancyError) -> ApiError {
        let status = match &e {
            TenancyError::InvalidName(_) => StatusCode::BAD_REQUEST,
            TenancyError::Exists(_) | TenancyError::BeingDeleted(_) => StatusCode::CONFLICT,
            TenancyError::UnknownTenant(_) | TenancyError::UnknownToken { .. } => {
                StatusCode::NOT_FOUND
            }
            TenancyError::Storage(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        ApiError::new(status, format!("{e:#}"))
    }
}

fn tenants(app: &App) -> ApiResult<&Tenants> {
    app.tenants.as_deref().ok_or_else(tenancy_off)
}

fn deletion(app: &App) -> ApiResult<&TenantDeletion> {
    app.deletion.as_deref().ok_or_else(tenancy_off)
}

fn tenancy_off() -> ApiError {
    ApiError::not_found("tenancy is off on this server (tenancy = true in its configuration)")
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewTenant {
    name: String,
    /// Its own quotas instead of the server's defaults.
    #[serde(default)]
    quotas: Option<Quotas>,
}

/// `POST /v1/tenants` with `{"name": ...}`.
pub async fn create(
    State(app): State<App>,
    _admin: Admin,
    body: Result<Json<NewTenant>, JsonRejection>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let Json(new) = body?;
    let info = tenants(&app)?.create(&new.name, new.quotas).await?;
    Ok((StatusCode::CREATED, Json(json!(info))))
}

/// `GET /v1/tenants`.
pub async fn list(State(app): State<App>, _admin: Admin) -> ApiResult<Json<Value>> {
    Ok(Json(json!({ "tenants": tenants(&app)?.list() })))
}

/// `GET /v1/tenants/{name}`.
pub async fn get(
    State(app): State<App>,
    _admin: Admin,
    PathName(name): PathName,
) -> ApiResult<Json<Value>> {
    let info = tenants(&app)?
        .get(&name)
        .ok_or_else(|| ApiError::not_found(format!("unknown tenant {name:?}")))?;
    let mut value = json!(info);
    let topics = app.log.topics().await?;
    let modules = module_names(&app).await?;
    value["usage"] = usage(&app, &Namespace::tenant(&name), &topics, &modules);
    Ok(Json(value))
}

/// `GET /v1/usage`: the caller's use of each quota.
pub async fn own_usage(State(app): State<App>, Scope(ns): Scope) -> ApiResult<Json<Value>> {
    let topics = app.log.topics().await?;
    let modules = module_names(&app).await?;
    Ok(Json(usage(&app, &ns, &topics, &modules)))
}

/// The name of every stored module.
pub async fn module_names(app: &App) -> ApiResult<Vec<String>> {
    Ok(app
        .modules
        .list()
        .await?
        .into_iter()
        .map(|(name, _)| name)
        .collect())
}

/// What a namespace uses of `topics` (every topic of the log), `modules`
/// (every module's name) and the rest, beside its quotas.
pub fn usage(app: &App, ns: &Namespace, topics: &[TopicInfo], modules: &[String]) -> Value {
    let owned = |stored: &str| ns.localize(stored).is_some();
    let topics: Vec<_> = topics.iter().filter(|t| owned(&t.name)).collect();
    let storage: u64 = topics
        .iter()
        .flat_map(|t| t.partitions.iter().map(|p| p.size_bytes))
        .sum();
    let modules = modules.iter().filter(|m| owned(m)).count();
    let pipelines = app.pipelines.names().iter().filter(|p| owned(p)).count();
    json!({
        "topics": topics.len(),
        "modules": modules,
        "pipelines": pipelines,
        "storage_bytes": storage,
        "cpu_seconds": app.scheduler.cpu_time(ns.tenant_name().unwrap_or("")).as_secs_f64(),
        "quotas": app.quotas.quotas(ns),
    })
}

/// `DELETE /v1/tenants/{name}`: the tenant and everything it owns.
pub async fn delete(
    State(app): State<App>,
    _admin: Admin,
    PathName(name): PathName,
) -> ApiResult<Json<Value>> {
    match deletion(&app)?.delete_tenant(&name).await {
        Ok(()) => Ok(Json(json!({ "deleted": name }))),
        Err(DeletionError::Tenancy(e)) => Err(e.into()),
        Err(e @ DeletionError::Incomplete { .. }) => Err(ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("{e:#}"),
        )),
    }
}

/// `POST /v1/tenants/{name}/tokens`: a new token, shown only in this answer.
pub async fn issue_token(
    State(app): State<App>,
    _admin: Admin,
    PathName(name): PathName,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let issued = tenants(&app)?.issue_token(&name).await?;
    Ok((StatusCode::CREATED, Json(json!(issued))))
}

/// `DELETE /v1/tenants/{name}/tokens/{id}`: the token stops working at once.
pub async fn revoke_token(
    State(app): State<App>,
    _admin: Admin,
    path: Result<Path<(String, String)>, PathRejection>,
) -> ApiResult<Json<Value>> {
    let Path((name, id)) = path?;
    tenants(&app)?.revoke_token(&name, &id).await?;
    Ok(Json(json!({ "revoked": id })))
}
