//! [`EmbeddedLog`]: the `log-core` log behind [`StreamLog`]. Blocking
//! work (file I/O, fsync) runs on tokio's blocking pool, never on the
//! async threads. Commit logs are internal topics named `__commits.NAME`;
//! this module also turns `log-core`'s types and errors into the
//! interface's.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use log_core::{BatchBuilder, Log, Record};
use weir_format::Batch;

use crate::{
    AppendInfo, Cleanup, CommitLogSettings, CommitRecord, Durability, LogError, LogResult,
    LogStatus, MAX_COMMIT_BYTES, PartitionInfo, StreamLog, TopicConfig, TopicInfo,
    check_commit_log_name,
};

/// Name prefix of commit logs in the embedded log.
const COMMIT_LOG_PREFIX: &str = "__commits.";

/// The embedded `log-core` log behind [`StreamLog`].
#[derive(Clone)]
pub struct EmbeddedLog {
    log: Arc<Log>,
}

impl EmbeddedLog {
    pub fn new(log: Log) -> EmbeddedLog {
        EmbeddedLog { log: Arc::new(log) }
    }

    /// Opens the log in `dir`, creating it when there is none.
    pub async fn open(dir: PathBuf) -> LogResult<EmbeddedLog> {
        blocking(move || Log::open(dir))
            .await
            .map(EmbeddedLog::new)
            .map_err(from_core)
    }

    fn partition(&self, topic: &str, partition: u32) -> LogResult<log_core::Partition> {
        let partition = (|| Ok(self.log.topic(topic)?.partition(partition)?.clone()))();
        partition.map_err(from_core)
    }

    fn commit_partition(&self, name: &str, partition: u32) -> LogResult<log_core::Partition> {
        let topic = commit_topic(name);
        let partition = (|| Ok(self.log.topic(&topic)?.partition(partition)?.clone()))();
        partition.map_err(|e| commit_log_error(name, e))
    }

    /// Runs `work` on the blocking pool.
    async fn blocking<T: Send + 'static>(
        &self,
        work: impl FnOnce(&Log) -> log_core::Result<T> + Send + 'static,
    ) -> log_core::Result<T> {
        let log = self.log.clone();
        tokio::task::spawn_blocking(move || work(&log))
            .await
            .expect("log work does not panic")
    }
}

/// Runs `work` on the blocking pool.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> log_core::Result<T> + Send + 'static,
) -> log_core::Result<T> {
    tokio::task::spawn_blocking(work)
        .await
        .expect("log work does not panic")
}

/// A `log-core` error in the interface's terms.
fn from_core(error: log_core::LogError) -> LogError {
    use log_core::LogError as E;
    match error {
        E::InvalidTopicName { name, reason } => LogError::InvalidTopicName {
            name,
            reason: reason.to_string(),
        },
        E::InvalidConfig { topic, reason } => LogError::InvalidConfig { topic, reason },
        E::TopicExists(name) => LogError::TopicExists(name),
        E::UnknownTopic(name) | E::TopicDeleted(name) => LogError::UnknownTopic(name),
        E::UnknownPartition {
            topic,
            partition,
            partitions,
        } => LogError::UnknownPartition {
            topic,
            partition,
            partitions,
        },
        E::OffsetOutOfRange {
            topic,
            partition,
            requested,
            start,
            end,
        } => LogError::OffsetOutOfRange {
            topic,
            partition,
            requested,
            start,
            end,
        },
        E::BatchTooLarge { topic, size, max } => LogError::BatchTooLarge { topic, size, max },
        E::InvalidBatch(e) => LogError::InvalidBatch(e),
        E::MissingKey { topic, index } => LogError::MissingKey { topic, index },
        e @ E::ProducerFenced { .. } => LogError::ProducerFenced(e.to_string()),
        e @ (E::OutOfOrderSequence { .. } | E::InvalidSequence { .. }) => {
            LogError::OutOfOrderSequence(e.to_string())
        }
        e @ E::DuplicateSequence {
            last_sequence,
            producer_last_sequence,
            ..
        } => {
            if last_sequence <= i64::from(producer_last_sequence) {
                LogError::DuplicateSequence(e.to_string())
            } else {
                // Partly new: not a retry the producer can drop.
                LogError::OutOfOrderSequence(e.to_string())
            }
        }
        e => LogError::Unavailable(e.to_string()),
    }
}

/// A commit-log operation's error, naming the commit log, not the
/// internal topic that holds it.
fn commit_log_error(name: &str, error: log_core::LogError) -> LogError {
    match error {
        log_core::LogError::UnknownTopic(_) | log_core::LogError::TopicDeleted(_) => {
            LogError::UnknownCommitLog(name.to_string())
        }
        e => LogError::CommitLog {
            name: name.to_string(),
            reason: e.to_string().replace(&commit_topic(name), name),
        },
    }
}

fn to_core(config: &TopicConfig) -> log_core::TopicConfig {
    log_core::TopicConfig {
        partitions: config.partitions,
        durability: match config.durability {
            Durability::Always => log_core::Durability::Always,
            Durability::Interval => log_core::Durability::Interval,
            Durability::Never => log_core::Durability::Never,
        },
        flush_interval_ms: config.flush_interval_ms,
        cleanup: match config.cleanup {
            Cleanup::Delete => log_core::Cleanup::Delete,
            Cleanup::Compact => log_core::Cleanup::Compact,
        },
        retention_ms: config.retention_ms,
        retention_bytes: config.retention_bytes,
        segment_bytes: config.segment_bytes,
        segment_ms: config.segment_ms,
        max_batch_bytes: config.max_batch_bytes,
        tombstone_retention_ms: config.tombstone_retention_ms,
        index_interval_bytes: config.index_interval_bytes,
    }
}

fn from_core_config(config: &log_core::TopicConfig) -> TopicConfig {
    TopicConfig {
        partitions: config.partitions,
        durability: match config.durability {
            log_core::Durability::Always => Durability::Always,
            log_core::Durability::Interval => Durability::Interval,
            log_core::Durability::Never => Durability::Never,
        },
        flush_interval_ms: config.flush_interval_ms,
        cleanup: match config.cleanup {
            log_core::Cleanup::Delete => Cleanup::Delete,
            log_core::Cleanup::Compact => Cleanup::Compact,
        },
        retention_ms: config.retention_ms,
        retention_bytes: config.retention_bytes,
        segment_bytes: config.segment_bytes,
        segment_ms: config.segment_ms,
        max_batch_bytes: config.max_batch_bytes,
        tombstone_retention_ms: config.tombstone_retention_ms,
        index_interval_bytes: config.index_interval_bytes,
    }
}

fn append_info(info: log_core::AppendInfo) -> AppendInfo {
    AppendInfo {
        base_offset: info.base_offset,
        last_offset: info.last_offset,
        duplicate: info.duplicate,
    }
}

fn topic_info(topic: &log_core::Topic) -> TopicInfo {
    TopicInfo {
        name: topic.name().to_string(),
        config: from_core_config(topic.config()),
        partitions: topic
            .partitions()
            .iter()
            .map(|p| PartitionInfo {
                partition: p.id(),
                start_offset: p.start_offset(),
                end_offset: p.end_offset(),
                size_bytes: p.size_bytes(),
            })
            .collect(),
    }
}

fn commit_topic(name: &str) -> String {
    format!("{COMMIT_LOG_PREFIX}{name}")
}

/// Whether `name` is one of the log's own topics, hidden from users of
/// the interface.
fn is_internal(name: &str) -> bool {
    name.starts_with("__")
}

#[async_trait]
impl StreamLog for EmbeddedLog {
    fn check_topic_config(&self, name: &str, config: &TopicConfig) -> LogResult<()> {
        to_core(config).validate(name).map_err(from_core)
    }

    async fn create_topic(&self, name: &str, config: TopicConfig) -> LogResult<TopicInfo> {
        let name = name.to_string();
        let config = to_core(&config);
        self.blocking(move |log| log.create_topic(&name, config).map(|t| topic_info(&t)))
            .await
            .map_err(from_core)
    }

    async fn topics(&self) -> LogResult<Vec<TopicInfo>> {
        Ok(self.log.topics().iter().map(topic_info).collect())
    }

    async fn topic(&self, name: &str) -> LogResult<TopicInfo> {
        if is_internal(name) {
            return Err(LogError::UnknownTopic(name.to_string()));
        }
        self.log
            .topic(name)
            .map(|t| topic_info(&t))
            .map_err(from_core)
    }

    async fn delete_topic(&self, name: &str) -> LogResult<()> {
        let name = name.to_string();
        self.blocking(move |log| log.delete_topic(&name))
            .await
            .map_err(from_core)
    }

    async fn add_partitions(&self, name: &str, total: u32) -> LogResult<TopicInfo> {
        if is_internal(name) {
            return Err(LogError::UnknownTopic(name.to_string()));
        }
        let name = name.to_string();
        self.blocking(move |log| log.add_partitions(&name, total).map(|t| topic_info(&t)))
            .await
            .map_err(from_core)
    }

    async fn append(&self, topic: &str, partition: u32, batch: Batch) -> LogResult<AppendInfo> {
        let partition = self.partition(topic, partition)?;
        blocking(move || partition.append(batch))
            .await
            .map(append_info)
            .map_err(from_core)
    }

    async fn append_all(
        &self,
        topic: &str,
        partition: u32,
        batches: Vec<Batch>,
    ) -> Vec<LogResult<AppendInfo>> {
        let Ok(target) = self.partition(topic, partition) else {
            // Each batch gets the refusal its own append gets.
            return crate::append_each(self, topic, partition, batches).await;
        };
        let outcomes = tokio::task::spawn_blocking(move || target.append_all(batches))
            .await
            .expect("log work does not panic");
        outcomes
            .into_iter()
            .map(|outcome| outcome.map(append_info).map_err(from_core))
            .collect()
    }

    async fn read(
        &self,
        topic: &str,
        partition: u32,
        offset: u64,
        max_bytes: usize,
    ) -> LogResult<Vec<Batch>> {
        self.read_stored(topic, partition, offset, max_bytes)
            .await
            .map(|(batches, _)| batches)
    }

    async fn read_stored(
        &self,
        topic: &str,
        partition: u32,
        offset: u64,
        max_bytes: usize,
    ) -> LogResult<(Vec<Batch>, Bytes)> {
        let partition = self.partition(topic, partition)?;
        blocking(move || partition.read_stored(offset, max_bytes))
            .await
            .map_err(from_core)
    }

    async fn wait_for(
        &self,
        topic: &str,
        partition: u32,
        offset: u64,
        timeout: Duration,
    ) -> LogResult<u64> {
        let partition = self.partition(topic, partition)?;
        match tokio::time::timeout(timeout, partition.wait_for(offset)).await {
            Ok(end) => end.map_err(from_core),
            Err(_elapsed) => Ok(partition.end_offset()),
        }
    }

    async fn offset_for_timestamp(
        &self,
        topic: &str,
        partition: u32,
        timestamp: i64,
    ) -> LogResult<u64> {
        let partition = self.partition(topic, partition)?;
        blocking(move || partition.offset_for_timestamp(timestamp))
            .await
            .map_err(from_core)
    }

    async fn sync(&self, topic: &str, partition: u32) -> LogResult<()> {
        let partition = self.partition(topic, partition)?;
        blocking(move || partition.flush()).await.map_err(from_core)
    }

    async fn init_producer_id(&self) -> LogResult<i64> {
        self.blocking(|log| log.init_producer_id())
            .await
            .map_err(from_core)
    }

    async fn commit_offsets(&self, group: &str, offsets: Vec<(String, u32, i64)>) -> LogResult<()> {
        let group = group.to_string();
        self.blocking(move |log| {
            let offsets: Vec<(&str, u32, i64)> = offsets
                .iter()
                .map(|(t, p, o)| (t.as_str(), *p, *o))
                .collect();
            log.commit_offsets(&group, &offsets)
        })
        .await
        .map_err(from_core)
    }

    async fn group_offsets(&self, group: &str) -> LogResult<Vec<(String, u32, i64)>> {
        Ok(self.log.group_offsets(group))
    }

    async fn groups(&self) -> LogResult<Vec<String>> {
        Ok(self.log.groups())
    }

    async fn delete_group(&self, group: &str) -> LogResult<bool> {
        let group = group.to_string();
        self.blocking(move |log| log.delete_group(&group))
            .await
            .map_err(from_core)
    }

    async fn open_commit_log(
        &self,
        name: &str,
        partitions: u32,
        settings: CommitLogSettings,
    ) -> LogResult<()> {
        check_commit_log_name(name).map_err(|reason| LogError::CommitLog {
            name: name.to_string(),
            reason,
        })?;
        let topic = commit_topic(name);
        self.blocking(move |log| {
            if let Ok(existing) = log.topic(&topic) {
                // Its input gained partitions: so does the commit log.
                if (existing.partitions().len() as u32) < partitions {
                    log.add_partitions(&topic, partitions)?;
                }
                return Ok(());
            }
            let config = TopicConfig {
                partitions,
                durability: settings.durability,
                segment_bytes: settings.segment_bytes.clamp(4096, u64::from(u32::MAX)),
                max_batch_bytes: MAX_COMMIT_BYTES,
                ..TopicConfig::default()
            };
            match log.create_internal_topic(&topic, to_core(&config)) {
                // Another task of the same pipeline made it first.
                Ok(_) | Err(log_core::LogError::TopicExists(_)) => Ok(()),
                Err(e) => Err(e),
            }
        })
        .await
        .map_err(|e| commit_log_error(name, e))
    }

    async fn commit(&self, name: &str, partition: u32, values: Vec<Bytes>) -> LogResult<u64> {
        let partition = self.commit_partition(name, partition)?;
        blocking(move || {
            let size: usize = values.iter().map(|v| v.len() + 16).sum();
            let mut batch = BatchBuilder::with_capacity(size + 64);
            for value in &values {
                batch.push(&Record {
                    value: Some(value),
                    ..Record::default()
                });
            }
            partition
                .append(batch.finish()?)
                .map(|info| info.base_offset)
        })
        .await
        .map_err(|e| commit_log_error(name, e))
    }

    async fn truncate_commits(&self, name: &str, partition: u32, offset: u64) -> LogResult<()> {
        let partition = self.commit_partition(name, partition)?;
        // The commits kept must be on disk before older ones go, whatever
        // the commit log's durability.
        blocking(move || {
            partition.flush()?;
            partition.delete_before(offset).map(|_| ())
        })
        .await
        .map_err(|e| commit_log_error(name, e))
    }

    async fn commits(&self, name: &str, partition: u32) -> LogResult<Vec<CommitRecord>> {
        let partition = self.commit_partition(name, partition)?;
        blocking(move || {
            let mut commits = Vec::new();
            let mut offset = partition.start_offset();
            let end = partition.end_offset();
            while offset < end {
                let batches = partition.read(offset, 4 << 20)?;
                let Some(last) = batches.last() else { break };
                offset = last.next_offset();
                // Each batch is one commit.
                for batch in &batches {
                    let bytes = batch.as_bytes();
                    commits.push(CommitRecord {
                        offset: batch.base_offset(),
                        values: batch
                            .records()
                            .map(|r| bytes.slice_ref(r.value.unwrap_or_default()))
                            .collect(),
                    });
                }
            }
            Ok(commits)
        })
        .await
        .map_err(|e| commit_log_error(name, e))
    }

    async fn delete_commit_log(&self, name: &str) -> LogResult<()> {
        let topic = commit_topic(name);
        self.blocking(move |log| match log.delete_internal_topic(&topic) {
            Err(log_core::LogError::UnknownTopic(_)) => Ok(()),
            other => other,
        })
        .await
        .map_err(|e| commit_log_error(name, e))
    }

    async fn status(&self) -> LogResult<LogStatus> {
        Ok(LogStatus {
            backend: "embedded".to_string(),
            facts: vec![
                ("data".to_string(), self.log.dir().display().to_string()),
                ("topics".to_string(), self.log.topics().len().to_string()),
            ],
        })
    }

    async fn close(&self) -> LogResult<()> {
        self.blocking(|log| log.flush()).await.map_err(from_core)
    }
}
