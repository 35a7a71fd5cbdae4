//! The log interface: everything above the log (pipelines, the Kafka
//! listener, the HTTP API) reads and writes streams only through
//! [`StreamLog`], in this crate's own types, so any backend that keeps the
//! contract in `docs/log-interface.md` can stand in for the embedded log.
//! Only the batch format (`weir-format`, Kafka's RecordBatch v2) is shared
//! with the backends: it is the wire format.
//!
//! - [`topic`]: topic names, [`TopicConfig`], [`TopicInfo`], [`AppendInfo`]
//! - [`error`]: [`LogError`], what every backend reports
//! - [`catalog`]: [`Catalog`], pipelines and modules kept beside the streams
//! - [`commit_log`]: commit logs' names, settings and records
//! - [`workers`]: [`Workers`], the servers sharing a cluster log and their task leases
//! - [`users`]: [`TopicUsers`], asked before a topic is deleted or reshaped
//! - [`embedded`]: [`EmbeddedLog`], the backend over `log-core`
//! - [`memory`]: [`MemoryLog`], a backend in memory, for tests
//! - [`producers`]: [`ProducerTable`](producers::ProducerTable), Kafka's idempotent-producer rules for backends that keep them in memory

pub mod catalog;
pub mod commit_log;
#[cfg(feature = "contract")]
pub mod contract;
pub mod embedded;
pub mod error;
pub mod memory;
pub mod producers;
pub mod topic;
pub mod users;
pub mod workers;

pub use catalog::{Catalog, DirCatalog, check_catalog_key};
pub use commit_log::{
    CommitLogSettings, CommitRecord, MAX_COMMIT_BYTES, MAX_COMMIT_LOG_NAME_LEN,
    check_commit_log_name,
};
pub use embedded::EmbeddedLog;
pub use error::{LogError, LogResult};
pub use memory::MemoryLog;
pub use topic::{
    AppendInfo, Cleanup, Durability, MAX_TOPIC_NAME_LEN, PartitionInfo, TopicConfig, TopicInfo,
    check_topic_name, check_user_topic_name,
};
pub use users::{TopicHold, TopicUsers, change_unless_used};
pub use workers::{Worker, Workers};

use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use weir_format::Batch;

/// The log as pipelines, the Kafka listener and the API see it. Topics
/// whose names start with `__` are the backend's own: they are neither
/// listed nor described.
#[async_trait]
pub trait StreamLog: Send + Sync + 'static {
    /// Whether this backend can keep a topic `name` configured so.
    fn check_topic_config(&self, name: &str, config: &TopicConfig) -> LogResult<()>;
    async fn create_topic(&self, name: &str, config: TopicConfig) -> LogResult<TopicInfo>;
    async fn topics(&self) -> LogResult<Vec<TopicInfo>>;
    async fn topic(&self, name: &str) -> LogResult<TopicInfo>;
    /// Deletes a topic with its data and every group's position in it.
    async fn delete_topic(&self, name: &str) -> LogResult<()>;
    /// Grows a topic to `total` partitions (never fewer than it has).
    async fn add_partitions(&self, name: &str, total: u32) -> LogResult<TopicInfo>;

    /// Appends a batch; returns once it is as durable as the topic asks.
    /// A batch stamped with a producer id and sequence that was already
    /// appended is not written again (`AppendInfo::duplicate`).
    async fn append(&self, topic: &str, partition: u32, batch: Batch) -> LogResult<AppendInfo>;
    /// Appends batches to one partition in order, each as [`append`]
    /// would, and returns once all are as durable as the topic asks (a
    /// backend may make them durable together: one sync instead of one
    /// per batch). Each batch has its own outcome; a refused batch does
    /// not stop the ones after it.
    ///
    /// [`append`]: StreamLog::append
    async fn append_all(
        &self,
        topic: &str,
        partition: u32,
        batches: Vec<Batch>,
    ) -> Vec<LogResult<AppendInfo>> {
        append_each(self, topic, partition, batches).await
    }
    /// Whole batches from the one holding `offset`, about `max_bytes` in
    /// all (at least one batch when there is one); the first may start
    /// before `offset`.
    async fn read(
        &self,
        topic: &str,
        partition: u32,
        offset: u64,
        max_bytes: usize,
    ) -> LogResult<Vec<Batch>>;
    /// Like [`read`](Self::read), also returning the batches as the one
    /// contiguous run of bytes they are (a Kafka fetch sends it on without
    /// joining or re-encoding). Unless a backend stores them so, the
    /// batches read are joined.
    async fn read_stored(
        &self,
        topic: &str,
        partition: u32,
        offset: u64,
        max_bytes: usize,
    ) -> LogResult<(Vec<Batch>, Bytes)> {
        let batches = self.read(topic, partition, offset, max_bytes).await?;
        let mut joined = bytes::BytesMut::with_capacity(batches.iter().map(Batch::size).sum());
        for batch in &batches {
            joined.extend_from_slice(batch.as_bytes());
        }
        Ok((batches, joined.freeze()))
    }
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
    /// offset)` of existing partitions, all together or none. Offsets are
    /// kept as given, negative ones (Kafka's logical offsets) included.
    async fn commit_offsets(&self, group: &str, offsets: Vec<(String, u32, i64)>) -> LogResult<()>;
    /// Every position `group` has committed, sorted.
    async fn group_offsets(&self, group: &str) -> LogResult<Vec<(String, u32, i64)>>;
    /// Every group that has committed a position, sorted.
    async fn groups(&self) -> LogResult<Vec<String>>;
    /// Durably forgets every offset `group` committed; false when it had
    /// none.
    async fn delete_group(&self, group: &str) -> LogResult<bool>;

    /// Makes sure the commit log `name` (see [`check_commit_log_name`])
    /// exists with at least `partitions` (an existing one grows, as its
    /// input did; its commits stay); a new one gets `settings`.
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
    /// a time, so some may stay). The commits kept are durable first.
    async fn truncate_commits(&self, name: &str, partition: u32, offset: u64) -> LogResult<()>;
    /// Every commit still kept, oldest first.
    async fn commits(&self, name: &str, partition: u32) -> LogResult<Vec<CommitRecord>>;
    async fn delete_commit_log(&self, name: &str) -> LogResult<()>;

    /// Whether the backend can serve now; `Unavailable` says why not (a
    /// server out of reach). A local backend is always up.
    async fn health(&self) -> LogResult<()> {
        Ok(())
    }

    /// What the backend is and how it is doing, for operators.
    async fn status(&self) -> LogResult<LogStatus>;

    /// Makes everything appended so far durable and lets go of the
    /// backend's resources; called once, at shutdown, after the last use.
    async fn close(&self) -> LogResult<()>;
}

/// A log backend as operators see it: its kind and facts about it (where
/// its data is, which servers it uses and how they are doing), in the
/// order they are best read.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct LogStatus {
    /// `embedded`, `jetstream` or `memory`.
    pub backend: String,
    pub facts: Vec<(String, String)>,
}

/// Appends batches one by one with [`StreamLog::append`]: what
/// [`StreamLog::append_all`] does unless a backend does better.
pub async fn append_each<L: StreamLog + ?Sized>(
    log: &L,
    topic: &str,
    partition: u32,
    batches: Vec<Batch>,
) -> Vec<LogResult<AppendInfo>> {
    let mut outcomes = Vec::with_capacity(batches.len());
    for batch in batches {
        outcomes.push(log.append(topic, partition, batch).await);
    }
    outcomes
}
