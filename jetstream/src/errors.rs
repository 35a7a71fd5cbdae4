//! JetStream and NATS errors in the log interface's terms: a missing
//! stream is a missing topic; anything else the cluster answers or fails
//! to answer is `Unavailable`, which callers may retry.

use std::fmt::Display;

use async_nats::jetstream::ErrorCode;
use async_nats::jetstream::context::{
    CreateStreamError, CreateStreamErrorKind, GetStreamError, GetStreamErrorKind,
};
use async_nats::jetstream::stream::{LastRawMessageError, LastRawMessageErrorKind};
use weir_log::LogError;

/// A read of topic `topic` (at `where_`) that failed.
pub fn jetstream_error(topic: &str, where_: &str, error: LastRawMessageError) -> LogError {
    match error.kind() {
        LastRawMessageErrorKind::JetStream(e) if e.error_code() == ErrorCode::STREAM_NOT_FOUND => {
            LogError::UnknownTopic(topic.to_string())
        }
        _ => unavailable(where_, error),
    }
}

/// The cluster could not do what was asked at `where_`.
pub fn unavailable(where_: &str, error: impl Display) -> LogError {
    LogError::Unavailable(format!("NATS JetStream, {where_}: {error}"))
}

/// Whether a stream lookup or deletion failed because there is no such
/// stream.
pub fn is_missing_stream(error: &GetStreamError) -> bool {
    matches!(error.kind(), GetStreamErrorKind::JetStream(e)
        if e.error_code() == ErrorCode::STREAM_NOT_FOUND)
}

/// Whether creating a stream failed because one of the name exists (with
/// other settings).
pub fn is_existing_stream(error: &CreateStreamError) -> bool {
    matches!(error.kind(), CreateStreamErrorKind::JetStream(e)
        if e.error_code() == ErrorCode::STREAM_NAME_EXIST)
}
