//! [`EmbeddedLog`]: the `log-core` log behind [`StreamLog`]. Blocking
//! work (file I/O, fsync) runs on tokio's blocking pool, never on the
//! async threads. Commit logs are internal topics named `__commits.NAME`.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use log_core::{AppendInfo, Batch, BatchBuilder, Log, LogError, Record, TopicConfig};

use crate::{
    CommitLogSettings, CommitRecord, LogResult, MAX_COMMIT_BYTES, PartitionInfo, StreamLog,
    TopicInfo,
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

    /// Syncs every partition (on shutdown).
    pub fn flush(&self) -> LogResult<()> {
        self.log.flush()
    }

    fn partition(&self, topic: &str, partition: u32) -> LogResult<log_core::Partition> {
        Ok(self.log.topic(topic)?.partition(partition)?.clone())
    }

    async fn blocking<T: Send + 'static>(
        &self,
        work: impl FnOnce(&Log) -> LogResult<T> + Send + 'static,
    ) -> LogResult<T> {
        let log = self.log.clone();
        tokio::task::spawn_blocking(move || work(&log))
            .await
            .expect("log work does not panic")
    }
}

fn topic_info(topic: &log_core::Topic) -> TopicInfo {
    TopicInfo {
        name: topic.name().to_string(),
        config: topic.config().clone(),
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

/// Whether a commit log called `name` can be made, or why not, in words
/// that do not name the log's internal topics.
pub fn check_commit_log_name(name: &str) -> Result<(), String> {
    log_core::validate_topic_name(&commit_topic(name)).map_err(|_| {
        format!(
            "{name:?} is not valid as a commit log name: at most {} characters of A-Z, a-z, \
             0-9, '.', '_' and '-'",
            log_core::MAX_TOPIC_NAME_LEN - COMMIT_LOG_PREFIX.len()
        )
    })
}

/// A commit-log operation's error as users see it: naming the commit log,
/// not the internal topic that holds it.
pub fn describe_commit_log_error(name: &str, error: &LogError) -> String {
    error
        .to_string()
        .replace(&commit_topic(name), &format!("commit log {name}"))
}

#[async_trait]
impl StreamLog for EmbeddedLog {
    async fn create_topic(&self, name: &str, config: TopicConfig) -> LogResult<TopicInfo> {
        let name = name.to_string();
        self.blocking(move |log| log.create_topic(&name, config).map(|t| topic_info(&t)))
            .await
    }

    fn topics(&self) -> Vec<TopicInfo> {
        self.log.topics().iter().map(topic_info).collect()
    }

    fn topic(&self, name: &str) -> LogResult<TopicInfo> {
        if name.starts_with("__") {
            return Err(LogError::UnknownTopic(name.to_string()));
        }
        self.log.topic(name).map(|t| topic_info(&t))
    }

    async fn delete_topic(&self, name: &str) -> LogResult<()> {
        let name = name.to_string();
        self.blocking(move |log| log.delete_topic(&name)).await
    }

    async fn add_partitions(&self, name: &str, total: u32) -> LogResult<TopicInfo> {
        if name.starts_with("__") {
            return Err(LogError::UnknownTopic(name.to_string()));
        }
        let name = name.to_string();
        self.blocking(move |log| log.add_partitions(&name, total).map(|t| topic_info(&t)))
            .await
    }

    async fn append(&self, topic: &str, partition: u32, batch: Batch) -> LogResult<AppendInfo> {
        let partition = self.partition(topic, partition)?;
        tokio::task::spawn_blocking(move || partition.append(batch))
            .await
            .expect("appending does not panic")
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
        tokio::task::spawn_blocking(move || partition.read_stored(offset, max_bytes))
            .await
            .expect("reading does not panic")
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
            Ok(end) => end,
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
        tokio::task::spawn_blocking(move || partition.offset_for_timestamp(timestamp))
            .await
            .expect("searching by time does not panic")
    }

    async fn sync(&self, topic: &str, partition: u32) -> LogResult<()> {
        let partition = self.partition(topic, partition)?;
        tokio::task::spawn_blocking(move || partition.flush())
            .await
            .expect("syncing does not panic")
    }

    async fn init_producer_id(&self) -> LogResult<i64> {
        self.blocking(|log| log.init_producer_id()).await
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
    }

    fn group_offsets(&self, group: &str) -> Vec<(String, u32, i64)> {
        self.log.group_offsets(group)
    }

    fn groups(&self) -> Vec<String> {
        self.log.groups()
    }

    async fn delete_group(&self, group: &str) -> LogResult<bool> {
        let group = group.to_string();
        self.blocking(move |log| log.delete_group(&group)).await
    }

    async fn open_commit_log(
        &self,
        name: &str,
        partitions: u32,
        settings: CommitLogSettings,
    ) -> LogResult<()> {
        let topic = commit_topic(name);
        self.blocking(move |log| {
            if log.topic(&topic).is_ok() {
                return Ok(());
            }
            let config = TopicConfig {
                partitions,
                durability: settings.durability,
                segment_bytes: settings.segment_bytes.clamp(4096, u64::from(u32::MAX)),
                max_batch_bytes: MAX_COMMIT_BYTES,
                ..TopicConfig::default()
            };
            match log.create_internal_topic(&topic, config) {
                // Another task of the same pipeline made it first.
                Ok(_) | Err(LogError::TopicExists(_)) => Ok(()),
                Err(e) => Err(e),
            }
        })
        .await
    }

    async fn commit(&self, name: &str, partition: u32, values: Vec<Bytes>) -> LogResult<u64> {
        let partition = self
            .log
            .topic(&commit_topic(name))?
            .partition(partition)?
            .clone();
        tokio::task::spawn_blocking(move || {
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
        .expect("committing does not panic")
    }

    async fn truncate_commits(&self, name: &str, partition: u32, offset: u64) -> LogResult<()> {
        let partition = self
            .log
            .topic(&commit_topic(name))?
            .partition(partition)?
            .clone();
        // The commits kept must be on disk before older ones go, whatever
        // the commit log's durability.
        tokio::task::spawn_blocking(move || {
            partition.flush()?;
            partition.delete_before(offset).map(|_| ())
        })
        .await
        .expect("truncating does not panic")
    }

    async fn commits(&self, name: &str, partition: u32) -> LogResult<Vec<CommitRecord>> {
        let partition = self
            .log
            .topic(&commit_topic(name))?
            .partition(partition)?
            .clone();
        tokio::task::spawn_blocking(move || {
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
        .expect("reading commits does not panic")
    }

    async fn delete_commit_log(&self, name: &str) -> LogResult<()> {
        let topic = commit_topic(name);
        self.blocking(move |log| match log.delete_internal_topic(&topic) {
            Err(LogError::UnknownTopic(_)) => Ok(()),
            other => other,
        })
        .await
    }
}
