//! `log-core`: Weir's embedded append-only log.
//!
//! Topics of partitions, each an ordered sequence of record batches stored
//! as segment files with sparse offset and time indexes. The log assigns
//! offsets, syncs per the topic's durability policy (with group commit),
//! lets readers replay from any offset or time and wait for new data,
//! deletes old segments (retention), keeps the latest record per key
//! (compaction), recovers from crashes on open and stores consumer-group
//! offsets. It knows nothing of pipelines, WASM or HTTP.
//!
//! Table of contents, following the data path:
//! - [`batch`]: the owned record batch (from `weir-format`, see `FORMAT.md`)
//! - [`log`]: the data directory, topics, consumer offsets, background work
//! - `topic`, `partition`: handles for appending, reading and tailing
//! - `segment`, `index`: segment files and their sparse indexes
//! - `durability`: group commit; `recovery`: repairing a directory on open
//! - `producers`: idempotent producers (sequence checks, snapshots, ids)
//! - `retention`, `compaction`: removing old and superseded data
//! - [`storage`]: the file-system trait, real and simulated
//! - [`config`], [`clock`], [`error`]

/// The record batch the log stores: `weir-format`'s owned, validated
/// batch (format in `FORMAT.md`).
pub mod batch {
    pub use weir_format::{
        Batch, BatchBuilder, BatchError, BatchRef, HEADER_LEN, Header, Headers, LENGTH_PREFIX,
        MAGIC, ProducerStamp, Record, RecordView, Records, declared_len,
    };
}
pub mod clock;
mod compaction;
pub mod config;
mod durability;
pub mod error;
mod groups;
mod index;
pub mod log;
mod partition;
mod producers;
mod recovery;
mod retention;
mod segment;
pub mod storage;
mod topic;

pub use batch::{Batch, BatchBuilder, Header, Headers, ProducerStamp, Record, RecordView, Records};
pub use clock::{Clock, ManualClock, SystemClock};
pub use compaction::CompactionStats;
pub use config::{
    Cleanup, Durability, MAX_TOPIC_NAME_LEN, TopicConfig, validate_topic_name,
    validate_user_topic_name,
};
pub use error::{LogError, Result};
pub use groups::OFFSETS_TOPIC;
pub use log::{Log, LogConfig, MaintenanceStats};
pub use partition::{AppendInfo, Partition};
pub use topic::Topic;
pub use weir_format::BatchError;
