//! `/v1/modules`: uploading operator modules (each upload a new version,
//! validated and compiled first), listing and deleting them.
//!
//! An upload is refused as soon as it is known to be too large (the
//! module size limit, or the tenant's `module_bytes` quota): from its
//! `Content-Length` before any of it is read, or once the bytes read pass
//! the limit. What the client still sends is then read and thrown away, up
//! to a bound, so that it gets the answer rather than a connection reset;
//! so it is for uploads refused for their name or the module count quota.

use std::time::Duration;

use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use futures::StreamExt;
use serde_json::{Value, json};

use super::App;
use super::auth::Scope;
use super::error::{ApiError, ApiResult};
use super::names::ScopedName;
use weir_core::names::check_name;
use weir_pipeline::modules::ModuleVersion;

/// What is read and thrown away of a refused upload, at most: as nginx's
/// lingering close, enough for a client that sends a little more than the
/// limit to get its answer, not an open-ended sink.
const MAX_DISCARD_BYTES: u64 = 1 << 30;
const MAX_DISCARD_TIME: Duration = Duration::from_secs(30);

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
    name: Result<ScopedName, ApiError>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<(StatusCode, Json<Value>)> {
    // Refused before reading: the body is still drained (see the module doc).
    let ScopedName {
        ns,
        local: name,
        stored: module_name,
    } = match admit_upload(&app, name).await {
        Ok(name) => name,
        Err(refused) => {
            discard(body.into_data_stream());
            return Err(refused);
        }
    };
    let quotas = app.quotas.quotas(&ns);
    // The size limit and the `module_bytes` quota are enforced while reading.
    let limit = UploadLimit {
        max_module_bytes: app.modules.max_module_bytes() as u64,
        quota: quotas.and_then(|q| q.module_bytes),
    };
    let bytes = read_upload(body, &headers, limit)
        .await
        .map_err(|refusal| refusal.answer(&name))?;
    let (version, new) = app
        .modules
        .put_for(ns.tenant_name(), &module_name, bytes)
        .await?;
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

/// The module name of an upload, unless the name is invalid or a new
/// module would pass the tenant's module count quota.
async fn admit_upload(app: &App, name: ApiResult<ScopedName>) -> ApiResult<ScopedName> {
    let name = name?;
    let ns = &name.ns;
    check_name("module", &name.local).map_err(ApiError::bad_request)?;
    if let Some(quotas) = app.quotas.quotas(ns)
        && app.modules.versions(&name.stored).await?.is_none()
    {
        let owned = app.modules.list().await?;
        let count = owned
            .iter()
            .filter(|(m, _)| ns.localize(m).is_some())
            .count();
        quotas.check_count("modules", count as u64)?;
    }
    Ok(name)
}

/// `GET /v1/modules`: the caller's modules.
pub async fn list(State(app): State<App>, Scope(ns): Scope) -> ApiResult<Json<Value>> {
    let modules: Vec<Value> = app
        .modules
        .list()
        .await?
        .iter()
        .filter_map(|(name, versions)| Some(describe(ns.localize(name)?, versions)))
        .collect();
    Ok(Json(json!({ "modules": modules })))
}

/// `GET /v1/modules/{name}`.
pub async fn get(
    State(app): State<App>,
    ScopedName { ns, local, stored }: ScopedName,
) -> ApiResult<Json<Value>> {
    let versions = app
        .modules
        .versions(&stored)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("unknown module {local:?}")))?;
    let mut value = describe(&local, &versions);
    let users: Vec<String> = app
        .pipelines
        .using_module(&stored)
        .iter()
        .filter_map(|p| ns.localize(p).map(str::to_string))
        .collect();
    value["pipelines"] = json!(users);
    Ok(Json(value))
}

/// `DELETE /v1/modules/{name}`: refused while a pipeline uses it.
pub async fn delete(
    State(app): State<App>,
    ScopedName {
        local: name,
        stored,
        ..
    }: ScopedName,
) -> ApiResult<Json<Value>> {
    // Lazy: only runs if no pipeline uses the module.
    let delete = app.modules.delete(&stored);
    let deleted = app
        .pipelines
        .unless_used(|p| p.using_module(&stored), delete)
        .await;
    match deleted {
        Ok(result) => result?,
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

/// The sizes an upload must keep under.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct UploadLimit {
    max_module_bytes: u64,
    /// The tenant's `module_bytes` quota, if any.
    quota: Option<u64>,
}

impl UploadLimit {
    /// Bytes past which reading stops.
    fn cap(&self) -> u64 {
        self.quota
            .map_or(self.max_module_bytes, |q| q.min(self.max_module_bytes))
    }
}

/// Why an upload was refused before it was read whole.
#[derive(Debug, PartialEq, Eq)]
enum Refusal {
    /// Its `Content-Length` is over the cap.
    Declared { size: u64, limit: UploadLimit },
    /// Its bytes passed the cap (a body without `Content-Length`).
    Passed { limit: UploadLimit },
    /// The body could not be read.
    Broken(String),
}

impl Refusal {
    /// 413 naming the module size limit, or 403 naming the quota when that
    /// is the smaller of the two.
    fn answer(self, name: &str) -> ApiError {
        let (limit, size) = match self {
            Refusal::Declared { size, limit } => (limit, format!("{size} bytes")),
            Refusal::Passed { limit } => (limit, format!("more than {} bytes", limit.cap())),
            Refusal::Broken(e) => {
                return ApiError::bad_request(format!("cannot read the module's bytes: {e}"));
            }
        };
        match limit.quota {
            Some(quota) if quota < limit.max_module_bytes => ApiError::new(
                StatusCode::FORBIDDEN,
                format!("quota module_bytes exceeded: the module has {size}, the limit is {quota}"),
            ),
            _ => ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!(
                    "module {name:?} was refused: it has {size}, over the module size limit \
                     of {} bytes",
                    limit.max_module_bytes
                ),
            ),
        }
    }
}

/// Reads an upload of at most `limit.cap()` bytes. Over it, the rest of
/// the body is discarded in the background (see the module's doc).
async fn read_upload(
    body: Body,
    headers: &HeaderMap,
    limit: UploadLimit,
) -> Result<Bytes, Refusal> {
    let cap = limit.cap();
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if let Some(size) = declared.filter(|&size| size > cap) {
        // A client waiting for `100 Continue` has sent nothing and will
        // send nothing once it has the answer: there is nothing to discard.
        let waits_to_send = headers
            .get(header::EXPECT)
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
        if !waits_to_send {
            discard(body.into_data_stream());
        }
        return Err(Refusal::Declared { size, limit });
    }
    let mut stream = body.into_data_stream();
    let mut bytes = Vec::with_capacity(declared.unwrap_or(0) as usize);
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| Refusal::Broken(e.to_string()))?;
        if (bytes.len() + chunk.len()) as u64 > cap {
            discard(stream);
            return Err(Refusal::Passed { limit });
        }
        bytes.extend_from_slice(&chunk);
    }
    Ok(bytes.into())
}

/// Reads and drops what is left of a refused body, in the background,
/// within [`MAX_DISCARD_BYTES`] and [`MAX_DISCARD_TIME`]. Closing a socket
/// with unread data makes the kernel reset the connection, which can
/// destroy the answer before the client reads it.
fn discard(mut rest: axum::body::BodyDataStream) {
    tokio::spawn(async move {
        let drain = async {
            let mut read = 0u64;
            while let Some(Ok(chunk)) = rest.next().await {
                read += chunk.len() as u64;
                if read > MAX_DISCARD_BYTES {
                    break;
                }
            }
        };
        let _ = tokio::time::timeout(MAX_DISCARD_TIME, drain).await;
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMIT: UploadLimit = UploadLimit {
        max_module_bytes: 1000,
        quota: None,
    };

    fn declaring(length: u64) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(header::CONTENT_LENGTH, length.into());
        headers
    }

    /// A body of `chunks` chunks of `size` bytes, without a length.
    fn chunked(chunks: usize, size: usize) -> Body {
        let chunks = (0..chunks).map(move |_| Ok::<_, std::io::Error>(Bytes::from(vec![7; size])));
        Body::from_stream(futures::stream::iter(chunks))
    }

    #[tokio::test]
    async fn an_announced_oversize_upload_is_refused_before_it_is_read() {
        // A body that never arrives: refusing must not wait for it.
        let never = Body::from_stream(futures::stream::pending::<Result<Bytes, std::io::Error>>());
        let refused = tokio::time::timeout(
            Duration::from_secs(30),
            read_upload(never, &declaring(5000), LIMIT),
        )
        .await
        .expect("answered without reading");
        assert_eq!(
            refused,
            Err(Refusal::Declared {
                size: 5000,
                limit: LIMIT
            })
        );
    }

    #[tokio::test]
    async fn a_chunked_upload_is_refused_once_past_the_limit() {
        let refused = read_upload(chunked(100, 100), &HeaderMap::new(), LIMIT).await;
        assert_eq!(refused, Err(Refusal::Passed { limit: LIMIT }));
        let answer = refused.unwrap_err().answer("m");
        assert_eq!(answer.status, StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(
            answer.message,
            "module \"m\" was refused: it has more than 1000 bytes, over the module size limit \
             of 1000 bytes"
        );
    }

    #[tokio::test]
    async fn an_upload_within_the_limit_is_read_whole() {
        let read = read_upload(chunked(10, 100), &declaring(1000), LIMIT).await;
        assert_eq!(read, Ok(Bytes::from(vec![7; 1000])));
    }

    #[tokio::test]
    async fn a_smaller_quota_refuses_with_403_naming_it() {
        let limit = UploadLimit {
            quota: Some(500),
            ..LIMIT
        };
        let refused = read_upload(chunked(6, 100), &HeaderMap::new(), limit).await;
        let answer = refused.unwrap_err().answer("m");
        assert_eq!(answer.status, StatusCode::FORBIDDEN);
        assert!(
            answer.message.starts_with("quota module_bytes exceeded"),
            "{}",
            answer.message
        );
        let refused = read_upload(chunked(6, 100), &declaring(600), limit).await;
        assert_eq!(
            refused.unwrap_err().answer("m").message,
            "quota module_bytes exceeded: the module has 600 bytes, the limit is 500"
        );
    }
}
