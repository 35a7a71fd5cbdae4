//! The narrow log interface: everything above the log (pipelines, the HTTP
//! API) reads and writes streams only through [`StreamLog`], so a
//! distributed log can later stand in for the embedded one.
//!
//! It offers topics (create, describe, delete), appending a batch (made
//! idempotent by the producer stamp a batch may carry), reading from an
//! offset, waiting for new data, consumer-group positions, and commit logs: small internal,
//! always-durable logs a pipeline task appends its commit records to (its
//! input position, state changes and outputs in one atomic append).
//!
//! - [`embedded`]: [`EmbeddedLog`], the implementation over `log-core`

pub mod embedded;

pub use embedded::{EmbeddedLog, check_commit_log_name, describe_commit_log_error};

use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use log_core::{AppendInfo, Batch, Durability, LogError, TopicConfig};
use serde::Serialize;

/// Result of the log interface.
pub type LogResult<T> = Result<T, LogError>;

/// A topic's configuration and where each partition stands.
#[derive(Debug, Clone, Serialize)]
pub struct TopicInfo {
    pub name: String,
    pub config: TopicConfig,
    pub partitions: Vec<PartitionInfo>,
}

/// Offsets and size of one partition.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct PartitionInfo {
    pub partition: u32,
    /// First offset still stored.
    pub start_offset: u64,
    /// One past the last readable offset.
    pub end_offset: u64,
    pub size_bytes: u64,
}

/// One commit of a commit log: the values appended together, and the
/// offset of the first.
#[derive(Debug, Clone)]
pub struct CommitRecord {
    pub offset: u64,
    pub values: Vec<Bytes>,
}

/// How a new commit log is kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CommitLogSettings {
    pub durability: Durability,
    /// Size of its storage units: truncation frees whole ones.
    pub segment_bytes: u64,
}

/// The log as pipelines and the API see it.
#[async_trait]
pub trait StreamLog: Send + Sync + 'static {
    async fn create_topic(&self, name: &str, config: TopicConfig) -> LogResult<TopicInfo>;
    fn topics(&self) -> Vec<TopicInfo>;
    fn topic(&self, name: &str) -> LogResult<TopicInfo>;
    async fn delete_topic(&self, name: &str) -> LogResult<()>;
    /// Grows a topic to `total` partitions (never fewer than it has).
    async fn add_partitions(&self, name: &str, total: u32) -> LogResult<TopicInfo>;

    /// Appends a batch; returns once it is as durable as the topic asks.
    /// A batch stamped with a producer id and sequence that was already
    /// appended is not written again (`AppendInfo::duplicate`).
    async fn append(&self, topic: &str, partition: u32, batch: Batch) -> LogResult<AppendInfo>;
    /// Whole batches from the one holding `offset`, about `max_bytes` in
    /// all; the first may start before `offset`.
    async fn read(
        &self,
        topic: &str,
        partition: u32,
        offset: u64,
        max_bytes: usize,
    ) -> LogResult<Vec<Batch>>;
    /// Like [`read`](Self::read), also returning the batches as the one
    /// contiguous run of stored bytes they are (a Kafka fetch sends it on
    /// without joining or re-encoding).
    async fn read_stored(
        &self,
        topic: &str,
        partition: u32,
        offset: u64,
        max_bytes: usize,
    ) -> LogResult<(Vec<Batch>, Bytes)>;
    /// Waits until the partition's end passes `offset` or `timeout` ends;
    /// returns the end offset either way.
    async fn wait_for(
        &self,
        topic: &str,
        partition: u32,
        offset: u64,
        timeout: Duration,
    ) -> LogResult<u64>;
    /// The first offset at or after `timestamp` (ms), or the end.
    async fn offset_for_timestamp(
        &self,
        topic: &str,
        partition: u32,
        timestamp: i64,
    ) -> LogResult<u64>;
    /// Makes everything appended to a partition so far durable, whatever
    /// the topic's durability.
    async fn sync(&self, topic: &str, partition: u32) -> LogResult<()>;
    /// A producer id no one else has been or will be given.
    async fn init_producer_id(&self) -> LogResult<i64>;

    /// Durably records consumer-group positions `(topic, partition,
    /// offset)`, all together or none. Offsets are kept as given, negative
    /// ones (Kafka's logical offsets) included.
    async fn commit_offsets(&self, group: &str, offsets: Vec<(String, u32, i64)>) -> LogResult<()>;
    /// Every position `group` has committed, sorted.
    fn group_offsets(&self, group: &str) -> Vec<(String, u32, i64)>;
    /// Every group that has committed a position.
    fn groups(&self) -> Vec<String>;
    /// Durably forgets every offset `group` committed; false when it had
    /// none.
    async fn delete_group(&self, group: &str) -> LogResult<bool>;

    /// Makes sure the commit log `name` with `partitions` exists; a new
    /// one gets `settings`.
    async fn open_commit_log(
        &self,
        name: &str,
        partitions: u32,
        settings: CommitLogSettings,
    ) -> LogResult<()>;
    /// Appends one commit: `values` together, atomically, as durable as the
    /// commit log asks; returns the offset of the first.
    async fn commit(&self, name: &str, partition: u32, values: Vec<Bytes>) -> LogResult<u64>;
    /// Lets the log forget commits below `offset` (whole storage units at
    /// a time, so some may stay).
    async fn truncate_commits(&self, name: &str, partition: u32, offset: u64) -> LogResult<()>;
    /// Every commit still kept, oldest first.
    async fn commits(&self, name: &str, partition: u32) -> LogResult<Vec<CommitRecord>>;
    async fn delete_commit_log(&self, name: &str) -> LogResult<()>;
}

/// Something that reads or writes topics and must not lose one under it
/// (the pipelines): a topic is deleted or given more partitions only while
/// the hold [`hold_if_unused`](Self::hold_if_unused) returns is kept.
#[async_trait]
pub trait TopicUsers: Send + Sync {
    /// Keeps new users off `topic` until the returned hold is dropped,
    /// unless it has users now: then their names.
    async fn hold_if_unused(&self, topic: &str) -> Result<TopicHold, Vec<String>>;
}

/// Kept while a topic is changed (see [`TopicUsers`]).
pub type TopicHold = Box<dyn Send>;

/// Runs `change` (deleting or reshaping `topic`) unless the topic has
/// users, keeping new ones off meanwhile; returns the users instead when
/// there are any.
pub async fn change_unless_used<T>(
    users: &dyn TopicUsers,
    topic: &str,
    change: impl Future<Output = T>,
) -> Result<T, Vec<String>> {
    let _hold = users.hold_if_unused(topic).await?;
    Ok(change.await)
}

/// Largest commit (all of its values together) a commit log takes.
pub const MAX_COMMIT_BYTES: usize = 256 << 20;
