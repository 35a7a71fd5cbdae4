//! Who is calling, and which names they see.
//!
//! With tenancy on, every request except `/healthz` must carry
//! `Authorization: Bearer TOKEN`; a missing, unknown or revoked token gets
//! 401. The admin credential manages tenants (and reads `/metrics`); a
//! tenant token works on that tenant's namespace only, and a tenant's
//! request holds a lease on it while it runs, so deleting the tenant waits
//! for it (`tenancy/deletion.rs`). Error messages are
//! rewritten into the caller's names on the way out, so stored names never
//! leak. Without tenancy every request is open and names are global.

use axum::extract::{FromRequestParts, Request, State};
use axum::http::StatusCode;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::App;
use super::error::ApiError;
use weir_tenancy::tenants::Identity;
use weir_tenancy::{Caller, Namespace};

/// Largest error body rewritten into tenant-local names.
const MAX_ERROR_BODY: usize = 64 << 10;

/// What the request may do, set by [`authenticate`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Access {
    /// Tenancy is off.
    Open,
    Caller(Caller),
}

/// Checks the bearer token (when tenancy is on) and records the caller.
pub async fn authenticate(State(app): State<App>, mut request: Request, next: Next) -> Response {
    let (access, _lease) = match &app.tenants {
        None => (Access::Open, None),
        Some(_) if request.uri().path() == "/healthz" => (Access::Open, None),
        Some(tenants) => {
            let token = request
                .headers()
                .get(AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer "))
                .map(str::trim);
            let Some(token) = token else {
                return ApiError::new(
                    StatusCode::UNAUTHORIZED,
                    "missing credentials: send Authorization: Bearer TOKEN",
                )
                .into_response();
            };
            let leased = match tenants.identify_fresh(token).await {
                Some(Identity::Admin) => Some((Caller::Admin, None)),
                Some(Identity::Tenant(credential)) => tenants.lease(&credential).await.map(|l| {
                    let caller = Caller::Tenant(credential.tenant().to_string());
                    (caller, Some(l))
                }),
                None => None,
            };
            match leased {
                Some((caller, lease)) => (Access::Caller(caller), lease),
                None => {
                    return ApiError::new(StatusCode::UNAUTHORIZED, "invalid or revoked token")
                        .into_response();
                }
            }
        }
    };
    let namespace = match &access {
        Access::Caller(Caller::Tenant(t)) => Some(Namespace::tenant(t)),
        _ => None,
    };
    request.extensions_mut().insert(access);
    let response = next.run(request).await;
    match namespace {
        Some(ns) if !response.status().is_success() => localize_error(response, &ns).await,
        _ => response,
    }
}

/// Rewrites stored names in an error body into the tenant's names.
async fn localize_error(response: Response, ns: &Namespace) -> Response {
    let (mut parts, body) = response.into_parts();
    // The body changes length: hyper sets the new one.
    parts.headers.remove(axum::http::header::CONTENT_LENGTH);
    let Ok(bytes) = axum::body::to_bytes(body, MAX_ERROR_BODY).await else {
        return ApiError::new(parts.status, "the request failed").into_response();
    };
    let text = ns.localize_message(&String::from_utf8_lossy(&bytes));
    Response::from_parts(parts, axum::body::Body::from(text))
}

/// The names a data request works in: the caller's tenant, or everything
/// without tenancy. The admin credential is refused here.
pub struct Scope(pub Namespace);

impl<S: Send + Sync> FromRequestParts<S> for Scope {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Scope, ApiError> {
        match parts.extensions.get::<Access>() {
            Some(Access::Open) => Ok(Scope(Namespace::global())),
            Some(Access::Caller(Caller::Tenant(t))) => Ok(Scope(Namespace::tenant(t))),
            Some(Access::Caller(Caller::Admin)) => Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "the admin credential manages tenants; use a tenant's token for its data",
            )),
            None => Err(ApiError::new(StatusCode::UNAUTHORIZED, "not authenticated")),
        }
    }
}

/// Requests only the admin may make (tenants, tokens, metrics); open when
/// tenancy is off.
pub struct Admin;

impl<S: Send + Sync> FromRequestParts<S> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Admin, ApiError> {
        match parts.extensions.get::<Access>() {
            Some(Access::Open | Access::Caller(Caller::Admin)) => Ok(Admin),
            Some(Access::Caller(Caller::Tenant(_))) => Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "this needs the admin credential",
            )),
            None => Err(ApiError::new(StatusCode::UNAUTHORIZED, "not authenticated")),
        }
    }
}
