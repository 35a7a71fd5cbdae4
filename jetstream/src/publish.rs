//! Conditional publishing: messages appended to a subject only if its
//! last message is still the one the writer knows
//! (`Nats-Expected-Last-Subject-Sequence`), one message alone or several
//! as one atomic batch (all stored or none; the condition on the first
//! message holds for all of them). Partition appends and commits both go
//! through here.

use async_nats::jetstream::context::PublishErrorKind;
use async_nats::jetstream::{self, ErrorCode};
use async_nats::{HeaderMap, RequestErrorKind};
use bytes::Bytes;
use serde::Deserialize;

const EXPECTED_LAST_SUBJECT_SEQUENCE: &str = "Nats-Expected-Last-Subject-Sequence";

/// Room a message leaves for the headers publishing adds (the condition,
/// an atomic batch's id and place, a commit's part count).
pub const HEADER_ROOM: usize = 1024;

/// The most messages one atomic batch may hold (the server's limit).
pub const MAX_BATCH_MESSAGES: usize = 1000;

/// Why a conditional publish stored nothing (or may not have).
#[derive(Debug)]
pub enum Refused {
    /// The subject's last message was not the one expected: another
    /// writer appended first.
    Overtaken,
    /// The subject belongs to no stream (the topic or commit log is gone).
    NoStream,
    /// Anything else; whether it was stored is unknown.
    Failed(String),
}

/// Publishes `messages` (headers, payload) to `subject` after its message
/// `last` (0: none), all together; returns the stream sequences of the
/// first and the last. At most [`MAX_BATCH_MESSAGES`].
pub async fn conditional(
    context: &jetstream::Context,
    subject: &str,
    last: u64,
    mut messages: Vec<(HeaderMap, Bytes)>,
) -> Result<(u64, u64), Refused> {
    if messages.len() == 1 {
        let (mut headers, payload) = messages.remove(0);
        headers.insert(EXPECTED_LAST_SUBJECT_SEQUENCE, last.to_string());
        return one(context, subject, headers, payload).await;
    }
    batch(context, subject, last, messages).await
}

async fn one(
    context: &jetstream::Context,
    subject: &str,
    headers: HeaderMap,
    payload: Bytes,
) -> Result<(u64, u64), Refused> {
    let acked = match context
        .publish_with_headers(subject.to_string(), headers, payload)
        .await
    {
        Ok(ack) => ack.await,
        Err(e) => Err(e),
    };
    match acked {
        Ok(ack) => Ok((ack.sequence, ack.sequence)),
        Err(e) if e.kind() == PublishErrorKind::WrongLastSequence => Err(Refused::Overtaken),
        Err(e) if e.kind() == PublishErrorKind::StreamNotFound => Err(Refused::NoStream),
        Err(e) => Err(Refused::Failed(e.to_string())),
    }
}

/// The server's answer to a batch's messages.
#[derive(Deserialize)]
struct BatchAnswer {
    #[serde(default)]
    seq: u64,
    #[serde(default)]
    count: u64,
    error: Option<BatchError>,
}

#[derive(Deserialize)]
struct BatchError {
    #[serde(default)]
    err_code: u64,
    #[serde(default)]
    description: String,
}

/// An atomic batch (ADR-50): every message carries the batch's id and its
/// place in it; the first is asked for an answer so that a batch refused
/// at once stops there, the last commits it.
async fn batch(
    context: &jetstream::Context,
    subject: &str,
    last: u64,
    messages: Vec<(HeaderMap, Bytes)>,
) -> Result<(u64, u64), Refused> {
    let client = context.client();
    let id = client.new_inbox().replace("_INBOX.", "");
    let count = messages.len();
    for (index, (mut headers, payload)) in messages.into_iter().enumerate() {
        headers.insert("Nats-Batch-Id", id.clone());
        headers.insert("Nats-Batch-Sequence", (index + 1).to_string());
        if index == 0 {
            headers.insert(EXPECTED_LAST_SUBJECT_SEQUENCE, last.to_string());
        }
        let commit = index + 1 == count;
        if commit {
            headers.insert("Nats-Batch-Commit", "1");
        }
        if index > 0 && !commit {
            client
                .publish_with_headers(subject.to_string(), headers, payload)
                .await
                .map_err(|e| Refused::Failed(e.to_string()))?;
            continue;
        }
        let answer = client
            .request_with_headers(subject.to_string(), headers, payload)
            .await
            .map_err(|e| match e.kind() {
                RequestErrorKind::NoResponders => Refused::NoStream,
                _ => Refused::Failed(e.to_string()),
            })?;
        if answer.payload.is_empty() {
            continue;
        }
        let answer: BatchAnswer = serde_json::from_slice(&answer.payload)
            .map_err(|e| Refused::Failed(format!("an unreadable answer: {e}")))?;
        if let Some(error) = answer.error {
            return Err(
                if error.err_code == ErrorCode::STREAM_WRONG_LAST_SEQUENCE.0 {
                    Refused::Overtaken
                } else {
                    Refused::Failed(error.description)
                },
            );
        }
        if commit {
            if answer.count != count as u64 || answer.seq < count as u64 {
                return Err(Refused::Failed(format!(
                    "the server stored {} of the batch's {count} messages",
                    answer.count
                )));
            }
            return Ok((answer.seq + 1 - count as u64, answer.seq));
        }
    }
    Err(Refused::Failed("the batch was never committed".to_string()))
}
