//! [`LogError`]: what any log backend reports, in the terms callers act on
//! (a missing topic, an offset out of range, a fenced producer, a backend
//! that cannot serve now), not in the terms of one backend's storage.

use weir_format::BatchError;

/// Result of the log interface.
pub type LogResult<T> = Result<T, LogError>;

/// An error of the log interface.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("invalid topic name {name:?}: {reason}")]
    InvalidTopicName { name: String, reason: String },

    #[error("invalid configuration for topic {topic:?}: {reason}")]
    InvalidConfig { topic: String, reason: String },

    #[error("topic {0:?} already exists")]
    TopicExists(String),

    /// Also a topic deleted while the request ran.
    #[error("unknown topic {0:?}")]
    UnknownTopic(String),

    #[error("unknown partition {partition} of topic {topic:?} (it has {partitions})")]
    UnknownPartition {
        topic: String,
        partition: u32,
        partitions: u32,
    },

    #[error(
        "offset {requested} is out of range for {topic}/{partition}: \
         the log holds offsets {start} to {end} (exclusive)"
    )]
    OffsetOutOfRange {
        topic: String,
        partition: u32,
        requested: u64,
        start: u64,
        end: u64,
    },

    #[error("batch of {size} bytes exceeds the maximum of {max} bytes for topic {topic:?}")]
    BatchTooLarge {
        topic: String,
        size: usize,
        max: usize,
    },

    #[error("invalid batch: {0}")]
    InvalidBatch(#[from] BatchError),

    #[error("topic {topic:?} is compacted, so every record needs a key (record {index} has none)")]
    MissingKey { topic: String, index: usize },

    /// A producer epoch older than the partition's current one.
    #[error("{0}")]
    ProducerFenced(String),

    /// A producer's batch does not follow its last sequence.
    #[error("{0}")]
    OutOfOrderSequence(String),

    /// Every sequence of a producer's batch was already written, longer
    /// ago than the log remembers the batch's offsets: it is published.
    #[error("{0}")]
    DuplicateSequence(String),

    #[error("commit log {0} does not exist")]
    UnknownCommitLog(String),

    /// A commit-log operation failed; `reason` names the commit log, not
    /// how the backend stores it.
    #[error("commit log {name}: {reason}")]
    CommitLog { name: String, reason: String },

    /// The backend cannot serve the request: its storage failed, or a
    /// server it needs is unreachable. Nothing was half done.
    #[error("{0}")]
    Unavailable(String),
}
