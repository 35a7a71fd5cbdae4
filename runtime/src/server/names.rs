//! Extractors for the `{name}` in a request's path: [`PathName`] as given,
//! and [`ScopedName`] also in the caller's namespace, so no handler
//! qualifies names by hand.

use axum::extract::{FromRequestParts, Path};
use axum::http::request::Parts;
use weir_tenancy::Namespace;

use super::auth::Scope;
use super::error::ApiError;

/// The `{name}` of the path, as the caller wrote it.
pub struct PathName(pub String);

impl<S: Send + Sync> FromRequestParts<S> for PathName {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<PathName, ApiError> {
        let Path(name) = Path::<String>::from_request_parts(parts, state).await?;
        Ok(PathName(name))
    }
}

/// The `{name}` of the path in the caller's namespace (see [`Scope`]).
pub struct ScopedName {
    pub ns: Namespace,
    /// As the caller wrote it (and sees it in answers).
    pub local: String,
    /// As stored: qualified with the caller's tenant.
    pub stored: String,
}

impl<S: Send + Sync> FromRequestParts<S> for ScopedName {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<ScopedName, ApiError> {
        let Scope(ns) = Scope::from_request_parts(parts, state).await?;
        let PathName(local) = PathName::from_request_parts(parts, state).await?;
        let stored = ns.qualify(&local);
        Ok(ScopedName { ns, local, stored })
    }
}
