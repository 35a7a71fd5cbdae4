//! The log's error type.
//!
//! Every variant carries what a person (or a protocol layer mapping it to an
//! error code) needs to act: the topic, partition, offset, file and position,
//! the limit and the actual value. I/O errors keep the operation and path they
//! came from.

use std::io;
use std::path::PathBuf;

/// Result alias used throughout `log-core`.
pub type Result<T, E = LogError> = std::result::Result<T, E>;

/// Everything that can go wrong in the log.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("invalid topic name {name:?}: {reason}")]
    InvalidTopicName { name: String, reason: &'static str },

    #[error("invalid configuration for topic {topic:?}: {reason}")]
    InvalidConfig { topic: String, reason: String },

    #[error("topic {0:?} already exists")]
    TopicExists(String),

    #[error("unknown topic {0:?}")]
    UnknownTopic(String),

    #[error("topic {0:?} has been deleted")]
    TopicDeleted(String),

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
    InvalidBatch(#[from] weir_format::BatchError),

    #[error("topic {topic:?} is compacted, so every record needs a key (record {index} has none)")]
    MissingKey { topic: String, index: usize },

    #[error("corrupt data in {path} at byte {position}: {reason}")]
    Corrupt {
        path: PathBuf,
        position: u64,
        reason: String,
    },

    #[error(
        "partition {topic}/{partition} failed after an I/O error and accepts no writes \
         until the log is reopened: {reason}"
    )]
    PartitionFailed {
        topic: String,
        partition: u32,
        reason: String,
    },

    #[error(
        "producer {producer} is fenced on {topic}/{partition}: its epoch {epoch} is older \
         than the current epoch {current_epoch}"
    )]
    ProducerFenced {
        topic: String,
        partition: u32,
        producer: i64,
        epoch: i16,
        current_epoch: i16,
    },

    #[error(
        "out-of-order sequence from producer {producer} on {topic}/{partition}: \
         expected base sequence {expected}, got {got}"
    )]
    OutOfOrderSequence {
        topic: String,
        partition: u32,
        producer: i64,
        expected: i32,
        got: i32,
    },

    #[error(
        "batch with sequences {base_sequence} to {last_sequence} from producer {producer} on \
         {topic}/{partition} was already written (the producer's last sequence is \
         {producer_last_sequence}) but is not one of its last batches, so its offsets are unknown"
    )]
    DuplicateSequence {
        topic: String,
        partition: u32,
        producer: i64,
        base_sequence: i32,
        last_sequence: i64,
        producer_last_sequence: i32,
    },

    #[error(
        "invalid sequence range from producer {producer} on {topic}/{partition}: base sequence \
         {base_sequence} with {last_offset_delta} more records must be 0 to {max}",
        max = i32::MAX
    )]
    InvalidSequence {
        topic: String,
        partition: u32,
        producer: i64,
        base_sequence: i32,
        last_offset_delta: u32,
    },

    #[error("data directory {path} is already in use by another process")]
    Locked { path: PathBuf },

    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// Attaches an operation name and a path to an I/O error.
pub(crate) trait IoContext<T> {
    fn ctx(self, op: &'static str, path: impl Into<PathBuf>) -> Result<T>;
}

impl<T> IoContext<T> for io::Result<T> {
    fn ctx(self, op: &'static str, path: impl Into<PathBuf>) -> Result<T> {
        self.map_err(|source| LogError::Io {
            op,
            path: path.into(),
            source,
        })
    }
}
