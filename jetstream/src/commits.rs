//! Commit logs as JetStream streams: a stream per commit log, a subject
//! per partition, a commit as one message (its values framed by length),
//! or, when it is larger than a message may be, as parts published as one
//! atomic batch. A commit's offset is the stream sequence of its first
//! message.
//!
//! Every commit is conditional on the partition's last message being the
//! last one this process knows of (`Nats-Expected-Last-Subject-Sequence`,
//! on the first message of a batch): a writer that another has overtaken
//! (a zombie task after its partition moved) is fenced instead of
//! appending after the new owner's commits.

use std::collections::HashMap;
use std::sync::Mutex;

use async_nats::HeaderMap;
use async_nats::jetstream;
use async_nats::jetstream::stream::{Config, LastRawMessageErrorKind, StorageType, Stream};
use bytes::{Buf, BufMut, Bytes, BytesMut};
use weir_log::{
    CommitLogSettings, CommitRecord, LogError, LogResult, MAX_COMMIT_BYTES, check_commit_log_name,
};

use crate::errors::is_missing_stream;
use crate::names::{self, Kind, Names};
use crate::publish::{self, HEADER_ROOM, Refused};

/// How many messages a commit takes (on each of them; absent: one).
const PARTS: &str = "Weir-Commit-Parts";

/// The cluster's commit logs, with what this process knows of them:
/// partition counts and the last message of each partition it committed
/// to or read.
pub struct CommitLogs {
    context: jetstream::Context,
    names: Names,
    replicas: usize,
    max_payload: usize,
    partitions: Mutex<HashMap<String, u32>>,
    last: Mutex<HashMap<String, Known>>,
}

/// What this process knows of a commit-log partition's last message.
#[derive(Debug, Clone, Copy)]
enum Known {
    /// Its sequence (0: none).
    At(u64),
    /// Another writer committed after it: this one may commit again only
    /// after it has read the commits (a task's recovery).
    Fenced,
}

impl CommitLogs {
    /// Commit logs in streams named by `names`, `replicas` copies each,
    /// messages of at most `max_payload` bytes.
    pub fn new(
        context: jetstream::Context,
        names: Names,
        replicas: usize,
        max_payload: usize,
    ) -> CommitLogs {
        CommitLogs {
            context,
            names,
            replicas,
            max_payload,
            partitions: Mutex::default(),
            last: Mutex::default(),
        }
    }

    /// Makes commit log `name` with `partitions`, or grows it to them.
    /// Durability is the cluster's (see `docs/cluster.md`) and storage units
    /// are JetStream's, so `_settings` change nothing here.
    pub async fn open(
        &self,
        name: &str,
        partitions: u32,
        _settings: CommitLogSettings,
    ) -> LogResult<()> {
        let (context, names) = (&self.context, &self.names);
        check_commit_log_name(name).map_err(|reason| failed(name, reason))?;
        let stream_name = names.stream(Kind::CommitLog, name);
        let existing = match context.get_stream(&stream_name).await {
            Ok(mut stream) => Some(stream.info().await.map_err(|e| failed(name, e))?.clone()),
            Err(e) if is_missing_stream(&e) => None,
            Err(e) => return Err(failed(name, e)),
        };
        let result = match existing {
            Some(info) => {
                let known = stored_partitions(&info.config);
                if known >= partitions {
                    self.remember(name, known);
                    return Ok(());
                }
                let mut config = info.config;
                config
                    .metadata
                    .insert(names::PARTITIONS.to_string(), partitions.to_string());
                context
                    .update_stream(config)
                    .await
                    .map(|_| ())
                    .map_err(|e| failed(name, e))
            }
            None => {
                let config = Config {
                    name: stream_name,
                    description: Some(format!("Weir commit log {name}")),
                    subjects: vec![names.subjects(Kind::CommitLog, name, "*")],
                    storage: StorageType::File,
                    num_replicas: self.replicas,
                    max_message_size: i32::try_from(self.max_payload).unwrap_or(i32::MAX),
                    allow_atomic_publish: true,
                    allow_direct: true,
                    metadata: HashMap::from([
                        (names::KIND.to_string(), Kind::CommitLog.label().to_string()),
                        (names::NAME.to_string(), name.to_string()),
                        (names::PARTITIONS.to_string(), partitions.to_string()),
                    ]),
                    ..Config::default()
                };
                context
                    .create_stream(config)
                    .await
                    .map(|_| ())
                    .map_err(|e| failed(name, e))
            }
        };
        result?;
        self.remember(name, partitions);
        Ok(())
    }

    /// Appends one commit; returns its offset.
    pub async fn commit(&self, name: &str, partition: u32, values: Vec<Bytes>) -> LogResult<u64> {
        let (stream, subject) = self.place(name, partition).await?;
        let size: usize = values.iter().map(|v| v.len() + 4).sum::<usize>() + 4;
        if size > MAX_COMMIT_BYTES {
            return Err(failed(
                name,
                format!("a commit of {size} bytes exceeds the limit of {MAX_COMMIT_BYTES}"),
            ));
        }
        let framed = frame(&values);
        let part_size = self.max_payload.saturating_sub(HEADER_ROOM).max(1);
        let parts: Vec<Bytes> = (0..framed.len().div_ceil(part_size).max(1))
            .map(|i| framed.slice(i * part_size..((i + 1) * part_size).min(framed.len())))
            .collect();
        let fenced = || {
            failed(
                name,
                format!(
                    "partition {partition} was committed to by another writer since this one \
                     last read it: this writer is fenced until it reads the commits again"
                ),
            )
        };
        let last = match self.known(&subject) {
            Some(Known::At(last)) => last,
            Some(Known::Fenced) => return Err(fenced()),
            None => last_sequence(&stream, &subject, name).await?,
        };
        let count = parts.len();
        let messages = parts
            .into_iter()
            .map(|part| {
                let mut headers = HeaderMap::new();
                if count > 1 {
                    headers.insert(PARTS, count.to_string());
                }
                (headers, part)
            })
            .collect();
        let outcome = publish::conditional(&self.context, &subject, last, messages).await;
        match outcome {
            Ok((first, end)) => {
                self.set_known(&subject, Some(Known::At(end)));
                Ok(first)
            }
            Err(Refused::Overtaken) => {
                self.set_known(&subject, Some(Known::Fenced));
                Err(fenced())
            }
            Err(Refused::NoStream) => Err(LogError::UnknownCommitLog(name.to_string())),
            Err(Refused::Failed(reason)) => {
                // Whether it was stored is unknown: read the end again next time.
                self.set_known(&subject, None);
                Err(failed(name, reason))
            }
        }
    }

    /// Every commit kept in partition `partition`, oldest first.
    pub async fn read(&self, name: &str, partition: u32) -> LogResult<Vec<CommitRecord>> {
        let (stream, subject) = self.place(name, partition).await?;
        let mut commits = Vec::new();
        let mut from = 1;
        let mut last = 0;
        while let Some(first) = next(&stream, &subject, from, name).await? {
            let count = parts_of(&first);
            let mut framed = BytesMut::from(&first.payload[..]);
            last = first.sequence;
            for _ in 1..count {
                let part = next(&stream, &subject, last + 1, name)
                    .await?
                    .ok_or_else(|| failed(name, "a commit is missing parts"))?;
                framed.extend_from_slice(&part.payload);
                last = part.sequence;
            }
            let values = unframe(framed.freeze()).ok_or_else(|| {
                failed(name, format!("the commit at {} is corrupt", first.sequence))
            })?;
            commits.push(CommitRecord {
                offset: first.sequence,
                values,
            });
            from = last + 1;
        }
        self.set_known(&subject, Some(Known::At(last)));
        Ok(commits)
    }

    /// Lets commits below `offset` go.
    pub async fn truncate(&self, name: &str, partition: u32, offset: u64) -> LogResult<()> {
        let (stream, subject) = self.place(name, partition).await?;
        stream
            .purge()
            .filter(subject)
            .sequence(offset)
            .await
            .map(|_| ())
            .map_err(|e| failed(name, e))
    }

    /// Deletes commit log `name`.
    pub async fn delete(&self, name: &str) -> LogResult<()> {
        match self
            .context
            .delete_stream(self.names.stream(Kind::CommitLog, name))
            .await
        {
            Ok(_) => {}
            // Deleting what is not there is done.
            Err(e) if is_missing_stream(&e) => {}
            Err(e) => return Err(failed(name, e)),
        }
        self.partitions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(name);
        let prefix = self.names.subjects(Kind::CommitLog, name, "");
        self.last
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|subject, _| !subject.starts_with(&prefix));
        Ok(())
    }

    /// The stream and subject of a partition of an existing commit log.
    async fn place(&self, name: &str, partition: u32) -> LogResult<(Stream, String)> {
        let (context, names) = (&self.context, &self.names);
        check_commit_log_name(name).map_err(|reason| failed(name, reason))?;
        let stream_name = names.stream(Kind::CommitLog, name);
        let known = self
            .partitions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(name)
            .copied();
        let stream = match context.get_stream(&stream_name).await {
            Ok(stream) => stream,
            Err(e) if is_missing_stream(&e) => {
                return Err(LogError::UnknownCommitLog(name.to_string()));
            }
            Err(e) => return Err(failed(name, e)),
        };
        let partitions = match known {
            Some(known) if partition < known => known,
            _ => {
                let stored = stored_partitions(&stream.cached_info().config);
                self.remember(name, stored);
                stored
            }
        };
        if partition >= partitions {
            return Err(failed(
                name,
                format!("it has {partitions} partitions, not partition {partition}"),
            ));
        }
        Ok((stream, names.subject(Kind::CommitLog, name, partition)))
    }

    fn remember(&self, name: &str, partitions: u32) {
        self.partitions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(name.to_string(), partitions);
    }

    fn known(&self, subject: &str) -> Option<Known> {
        self.last
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(subject)
            .copied()
    }

    fn set_known(&self, subject: &str, known: Option<Known>) {
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        match known {
            Some(known) => last.insert(subject.to_string(), known),
            None => last.remove(subject),
        };
    }
}

/// The sequence of the subject's last message (0: none).
async fn last_sequence(stream: &Stream, subject: &str, name: &str) -> LogResult<u64> {
    match stream.get_last_raw_message_by_subject(subject).await {
        Ok(message) => Ok(message.sequence),
        Err(e) if e.kind() == LastRawMessageErrorKind::NoMessageFound => Ok(0),
        Err(e) => Err(failed(name, e)),
    }
}

async fn next(
    stream: &Stream,
    subject: &str,
    from: u64,
    name: &str,
) -> LogResult<Option<jetstream::message::StreamMessage>> {
    match stream.get_first_raw_message_by_subject(subject, from).await {
        Ok(message) => Ok(Some(message)),
        Err(e) if e.kind() == LastRawMessageErrorKind::NoMessageFound => Ok(None),
        Err(e) => Err(failed(name, e)),
    }
}

/// How many messages the commit starting with `message` takes.
fn parts_of(message: &jetstream::message::StreamMessage) -> usize {
    message
        .headers
        .get(PARTS)
        .and_then(|v| v.as_str().parse().ok())
        .unwrap_or(1)
}

fn stored_partitions(config: &Config) -> u32 {
    config
        .metadata
        .get(names::PARTITIONS)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0)
}

/// Values as `count, (length, bytes)*`, lengths as big-endian u32.
fn frame(values: &[Bytes]) -> Bytes {
    let size: usize = values.iter().map(|v| v.len() + 4).sum::<usize>() + 4;
    let mut framed = BytesMut::with_capacity(size);
    framed.put_u32(values.len() as u32);
    for value in values {
        framed.put_u32(value.len() as u32);
        framed.extend_from_slice(value);
    }
    framed.freeze()
}

fn unframe(mut framed: Bytes) -> Option<Vec<Bytes>> {
    if framed.len() < 4 {
        return None;
    }
    let count = framed.get_u32() as usize;
    let mut values = Vec::with_capacity(count.min(framed.len() / 4));
    for _ in 0..count {
        if framed.len() < 4 {
            return None;
        }
        let len = framed.get_u32() as usize;
        if framed.len() < len {
            return None;
        }
        values.push(framed.split_to(len));
    }
    framed.is_empty().then_some(values)
}

fn failed(name: &str, reason: impl ToString) -> LogError {
    LogError::CommitLog {
        name: name.to_string(),
        reason: reason.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn framing_round_trips_and_refuses_garbage() {
        let values = vec![Bytes::from("one"), Bytes::new(), Bytes::from("three")];
        assert_eq!(unframe(frame(&values)), Some(values));
        assert_eq!(unframe(Bytes::from_static(&[0, 0, 0, 2, 0, 0, 0, 9])), None);
        assert_eq!(unframe(Bytes::from_static(&[1])), None);
        let mut trailing = BytesMut::from(&frame(&[Bytes::from("x")])[..]);
        trailing.put_u8(0);
        assert_eq!(unframe(trailing.freeze()), None);
    }
}
