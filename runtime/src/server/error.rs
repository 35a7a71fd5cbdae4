//! API errors: every failure becomes `{"error": "..."}` with the status
//! code that fits it (4xx for what the caller can fix, 5xx for the server).

use axum::Json;
use axum::extract::rejection::{BytesRejection, JsonRejection, PathRejection, QueryRejection};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;
use weir_log::LogError;

use weir_host::OperatorError;
use weir_pipeline::PipelineError;
use weir_pipeline::modules::ModuleError;
use weir_tenancy::{CheckError, OverQuota};

/// An error answer.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
    /// Seconds to wait before retrying (429 answers).
    pub retry_after: Option<u64>,
}

pub type ApiResult<T> = Result<T, ApiError>;

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            message: message.into(),
            retry_after: None,
        }
    }

    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, message)
    }

    pub fn not_found(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if self.status.is_server_error() {
            tracing::error!(status = %self.status, error = %self.message, "request failed");
        }
        let mut response = (self.status, Json(json!({ "error": self.message }))).into_response();
        if let Some(seconds) = self.retry_after {
            response
                .headers_mut()
                .insert(axum::http::header::RETRY_AFTER, seconds.into());
        }
        response
    }
}

impl From<LogError> for ApiError {
    fn from(e: LogError) -> ApiError {
        use LogError::*;
        let status = match &e {
            UnknownTopic(_) | UnknownPartition { .. } => StatusCode::NOT_FOUND,
            TopicExists(_) => StatusCode::CONFLICT,
            InvalidTopicName { .. }
            | InvalidConfig { .. }
            | InvalidBatch(_)
            | MissingKey { .. } => StatusCode::BAD_REQUEST,
            OffsetOutOfRange { .. } => StatusCode::RANGE_NOT_SATISFIABLE,
            BatchTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            DuplicateSequence(_) | OutOfOrderSequence(_) | ProducerFenced(_) => {
                StatusCode::CONFLICT
            }
            Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            UnknownCommitLog(_) | CommitLog { .. } => StatusCode::INTERNAL_SERVER_ERROR,
        };
        ApiError::new(status, e.to_string())
    }
}

impl From<ModuleError> for ApiError {
    fn from(e: ModuleError) -> ApiError {
        let status = match &e {
            ModuleError::InvalidName(_) => StatusCode::BAD_REQUEST,
            ModuleError::Unknown(_) | ModuleError::UnknownVersion { .. } => StatusCode::NOT_FOUND,
            ModuleError::Invalid {
                source: OperatorError::ModuleTooLarge { .. },
                ..
            } => StatusCode::PAYLOAD_TOO_LARGE,
            // The server's own failure (say, its compiler process crashed).
            ModuleError::Invalid {
                source: OperatorError::Host(_),
                ..
            } => StatusCode::INTERNAL_SERVER_ERROR,
            ModuleError::Invalid { .. } => StatusCode::BAD_REQUEST,
            ModuleError::Storage(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        ApiError::new(status, format!("{e:#}"))
    }
}

impl From<PipelineError> for ApiError {
    fn from(e: PipelineError) -> ApiError {
        let status = match &e {
            PipelineError::NotFound(_) => StatusCode::NOT_FOUND,
            // A spec naming a missing module is the request's fault.
            PipelineError::Invalid(_) | PipelineError::Module(ModuleError::Unknown(_)) => {
                StatusCode::BAD_REQUEST
            }
            PipelineError::Module(ModuleError::UnknownVersion { .. }) => StatusCode::BAD_REQUEST,
            PipelineError::Module(_) | PipelineError::Storage(_) => {
                StatusCode::INTERNAL_SERVER_ERROR
            }
        };
        ApiError::new(status, format!("{e:#}"))
    }
}

impl From<CheckError> for ApiError {
    fn from(e: CheckError) -> ApiError {
        match e {
            CheckError::OverQuota(over) => over.into(),
            CheckError::Log(e) => e.into(),
        }
    }
}

/// Sizes and counts: 403; rates: 429 with `Retry-After`.
impl From<OverQuota> for ApiError {
    fn from(over: OverQuota) -> ApiError {
        match over.retry_after {
            Some(wait) => ApiError {
                status: StatusCode::TOO_MANY_REQUESTS,
                message: over.message,
                retry_after: Some(wait.as_secs_f64().ceil().max(1.0) as u64),
            },
            None => ApiError::new(StatusCode::FORBIDDEN, over.message),
        }
    }
}

impl From<JsonRejection> for ApiError {
    fn from(e: JsonRejection) -> ApiError {
        ApiError::new(e.status(), format!("invalid JSON body: {}", e.body_text()))
    }
}

impl From<BytesRejection> for ApiError {
    fn from(e: BytesRejection) -> ApiError {
        ApiError::new(
            e.status(),
            format!("cannot read the body: {}", e.body_text()),
        )
    }
}

impl From<QueryRejection> for ApiError {
    fn from(e: QueryRejection) -> ApiError {
        ApiError::new(e.status(), format!("invalid query: {}", e.body_text()))
    }
}

impl From<PathRejection> for ApiError {
    fn from(e: PathRejection) -> ApiError {
        ApiError::new(e.status(), format!("invalid path: {}", e.body_text()))
    }
}
