//! [`MemoryLog`]: a backend that keeps everything in memory, for tests of
//! what runs above the log (pipelines, the Kafka listener) without files,
//! and as a second implementation that keeps the interface honest.
//!
//! It keeps the contract of `docs/log-interface.md` (offsets, ordering,
//! idempotent producers with Kafka's rules, atomic commits, group offsets)
//! within one process: everything is "durable" once appended, and lost
//! when the value is dropped. Retention and compaction never run, so
//! `retention_*`, `segment_*` and `cleanup` only shape what is checked
//! (compacted topics still refuse records without a key).

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use tokio::sync::watch;
use weir_format::{Batch, BatchBuilder, Record};

use crate::producers::{ProducerTable, Verdict};
use crate::{
    AppendInfo, Cleanup, CommitLogSettings, CommitRecord, LogError, LogResult, LogStatus,
    MAX_COMMIT_BYTES, PartitionInfo, StreamLog, TopicConfig, TopicInfo, check_commit_log_name,
    check_user_topic_name,
};

/// A backend in memory (see the module docs). Clones share the log.
#[derive(Clone, Default)]
pub struct MemoryLog {
    state: Arc<Mutex<State>>,
}

#[derive(Default)]
struct State {
    topics: BTreeMap<String, Topic>,
    commit_logs: BTreeMap<String, Topic>,
    groups: BTreeMap<String, BTreeMap<(String, u32), i64>>,
    next_producer_id: i64,
}

struct Topic {
    config: TopicConfig,
    partitions: Vec<Partition>,
}

struct Partition {
    batches: VecDeque<Batch>,
    /// First offset still kept.
    start: u64,
    /// Announces the end offset to waiting readers.
    end: watch::Sender<u64>,
    size_bytes: u64,
    producers: ProducerTable,
}

impl Partition {
    fn new() -> Partition {
        Partition {
            batches: VecDeque::new(),
            start: 0,
            end: watch::channel(0).0,
            size_bytes: 0,
            producers: ProducerTable::default(),
        }
    }

    fn end(&self) -> u64 {
        *self.end.borrow()
    }

    fn info(&self, id: u32) -> PartitionInfo {
        PartitionInfo {
            partition: id,
            start_offset: self.start,
            end_offset: self.end(),
            size_bytes: self.size_bytes,
        }
    }

    /// Appends `batch` at the end; returns where it landed.
    fn write(&mut self, batch: Batch) -> AppendInfo {
        let batch = batch.with_base_offset(self.end());
        let info = AppendInfo {
            base_offset: batch.base_offset(),
            last_offset: batch.last_offset(),
            duplicate: false,
        };
        if let Some(stamp) = batch.producer() {
            self.producers.record(stamp, &info);
        }
        self.size_bytes += batch.size() as u64;
        self.batches.push_back(batch);
        self.end.send_replace(info.last_offset + 1);
        info
    }

    fn read(&self, where_: (&str, u32), offset: u64, max_bytes: usize) -> LogResult<Vec<Batch>> {
        let end = self.end();
        if offset < self.start || offset > end {
            return Err(LogError::OffsetOutOfRange {
                topic: where_.0.to_string(),
                partition: where_.1,
                requested: offset,
                start: self.start,
                end,
            });
        }
        let first = self.batches.partition_point(|b| b.next_offset() <= offset);
        let mut size = 0;
        let mut batches = Vec::new();
        for batch in self.batches.range(first..) {
            if !batches.is_empty() && size + batch.size() > max_bytes {
                break;
            }
            size += batch.size();
            batches.push(batch.clone());
        }
        Ok(batches)
    }

    /// Forgets the batches wholly below `offset`.
    fn truncate(&mut self, offset: u64) {
        while let Some(first) = self.batches.front()
            && first.next_offset() <= offset
        {
            self.size_bytes -= first.size() as u64;
            self.start = first.next_offset();
            self.batches.pop_front();
        }
    }
}

impl Topic {
    fn new(config: TopicConfig) -> Topic {
        let partitions = (0..config.partitions).map(|_| Partition::new()).collect();
        Topic { config, partitions }
    }

    fn info(&self, name: &str) -> TopicInfo {
        TopicInfo {
            name: name.to_string(),
            config: self.config.clone(),
            partitions: (0u32..)
                .zip(&self.partitions)
                .map(|(id, p)| p.info(id))
                .collect(),
        }
    }

    fn partition_mut(&mut self, name: &str, partition: u32) -> LogResult<&mut Partition> {
        let partitions = self.partitions.len() as u32;
        self.partitions
            .get_mut(partition as usize)
            .ok_or_else(|| LogError::UnknownPartition {
                topic: name.to_string(),
                partition,
                partitions,
            })
    }

    /// Checks a batch against the topic's limits, then appends it under the
    /// producer rules.
    fn append(&mut self, name: &str, partition: u32, batch: Batch) -> LogResult<AppendInfo> {
        if batch.size() > self.config.max_batch_bytes {
            return Err(LogError::BatchTooLarge {
                topic: name.to_string(),
                size: batch.size(),
                max: self.config.max_batch_bytes,
            });
        }
        if self.config.cleanup == Cleanup::Compact
            && let Some(index) = batch.records().position(|r| r.key.is_none())
        {
            return Err(LogError::MissingKey {
                topic: name.to_string(),
                index,
            });
        }
        let where_ = format!("{name}/{partition}");
        let records = batch.last_offset() - batch.base_offset() + 1;
        let partition = self.partition_mut(name, partition)?;
        if let Some(stamp) = batch.producer()
            && let Verdict::Duplicate(info) = partition.producers.check(&where_, stamp, records)?
        {
            return Ok(info);
        }
        Ok(partition.write(batch))
    }
}

impl MemoryLog {
    pub fn new() -> MemoryLog {
        MemoryLog::default()
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // A panic under the lock leaves whole values behind: keep going.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs `work` on the partition `topic/partition`.
    fn with_partition<T>(
        &self,
        topic: &str,
        partition: u32,
        work: impl FnOnce(&mut Partition) -> LogResult<T>,
    ) -> LogResult<T> {
        let mut state = self.state();
        let t = state
            .topics
            .get_mut(topic)
            .ok_or_else(|| LogError::UnknownTopic(topic.to_string()))?;
        work(t.partition_mut(topic, partition)?)
    }

    /// Runs `work` on the partition of the commit log `name`.
    fn with_commit_log<T>(
        &self,
        name: &str,
        partition: u32,
        work: impl FnOnce(&mut Topic) -> LogResult<T>,
    ) -> LogResult<T> {
        let mut state = self.state();
        let log = state
            .commit_logs
            .get_mut(name)
            .ok_or_else(|| LogError::UnknownCommitLog(name.to_string()))?;
        log.partition_mut(name, partition)
            .map_err(|e| commit_log_error(name, &e.to_string()))?;
        work(log)
    }
}

fn commit_log_error(name: &str, reason: &str) -> LogError {
    LogError::CommitLog {
        name: name.to_string(),
        reason: reason.to_string(),
    }
}

/// Checks what the memory log can keep: what every backend must.
fn check_config(name: &str, config: &TopicConfig) -> LogResult<()> {
    let invalid = |reason: &str| {
        Err(LogError::InvalidConfig {
            topic: name.to_string(),
            reason: reason.to_string(),
        })
    };
    if !(1..=4096).contains(&config.partitions) {
        return invalid("partitions must be 1 to 4096");
    }
    if !(128..=MAX_COMMIT_BYTES).contains(&config.max_batch_bytes) {
        return invalid("max_batch_bytes must be 128 to 256 MiB");
    }
    Ok(())
}

#[async_trait]
impl StreamLog for MemoryLog {
    fn check_topic_config(&self, name: &str, config: &TopicConfig) -> LogResult<()> {
        check_config(name, config)
    }

    async fn create_topic(&self, name: &str, config: TopicConfig) -> LogResult<TopicInfo> {
        check_user_topic_name(name)?;
        check_config(name, &config)?;
        let mut state = self.state();
        if state.topics.contains_key(name) {
            return Err(LogError::TopicExists(name.to_string()));
        }
        let topic = Topic::new(config);
        let info = topic.info(name);
        state.topics.insert(name.to_string(), topic);
        Ok(info)
    }

    async fn topics(&self) -> LogResult<Vec<TopicInfo>> {
        let state = self.state();
        Ok(state.topics.iter().map(|(n, t)| t.info(n)).collect())
    }

    async fn topic(&self, name: &str) -> LogResult<TopicInfo> {
        let state = self.state();
        let topic = state.topics.get(name);
        topic
            .map(|t| t.info(name))
            .ok_or_else(|| LogError::UnknownTopic(name.to_string()))
    }

    async fn delete_topic(&self, name: &str) -> LogResult<()> {
        let mut state = self.state();
        if state.topics.remove(name).is_none() {
            return Err(LogError::UnknownTopic(name.to_string()));
        }
        // A topic made again under the name starts with no positions.
        for committed in state.groups.values_mut() {
            committed.retain(|(topic, _), _| topic != name);
        }
        state.groups.retain(|_, committed| !committed.is_empty());
        Ok(())
    }

    async fn add_partitions(&self, name: &str, total: u32) -> LogResult<TopicInfo> {
        let mut state = self.state();
        let topic = state
            .topics
            .get_mut(name)
            .ok_or_else(|| LogError::UnknownTopic(name.to_string()))?;
        let config = TopicConfig {
            partitions: total,
            ..topic.config.clone()
        };
        if total <= topic.config.partitions {
            return Err(LogError::InvalidConfig {
                topic: name.to_string(),
                reason: format!(
                    "a topic's partitions can only be added to: it has {}, asked for {total}",
                    topic.config.partitions
                ),
            });
        }
        check_config(name, &config)?;
        topic.partitions.resize_with(total as usize, Partition::new);
        topic.config = config;
        Ok(topic.info(name))
    }

    async fn append(&self, topic: &str, partition: u32, batch: Batch) -> LogResult<AppendInfo> {
        let mut state = self.state();
        let t = state
            .topics
            .get_mut(topic)
            .ok_or_else(|| LogError::UnknownTopic(topic.to_string()))?;
        t.append(topic, partition, batch)
    }

    async fn read(
        &self,
        topic: &str,
        partition: u32,
        offset: u64,
        max_bytes: usize,
    ) -> LogResult<Vec<Batch>> {
        self.with_partition(topic, partition, |p| {
            p.read((topic, partition), offset, max_bytes)
        })
    }

    async fn wait_for(
        &self,
        topic: &str,
        partition: u32,
        offset: u64,
        timeout: Duration,
    ) -> LogResult<u64> {
        let mut end = self.with_partition(topic, partition, |p| Ok(p.end.subscribe()))?;
        let passed = tokio::time::timeout(timeout, end.wait_for(|&end| end > offset)).await;
        match passed.map(|waited| waited.map(|end| *end)) {
            Ok(Ok(end)) => Ok(end),
            // The partition went away with its topic.
            Ok(Err(_closed)) => Err(LogError::UnknownTopic(topic.to_string())),
            Err(_elapsed) => Ok(*end.borrow()),
        }
    }

    async fn offset_for_timestamp(
        &self,
        topic: &str,
        partition: u32,
        timestamp: i64,
    ) -> LogResult<u64> {
        self.with_partition(topic, partition, |p| {
            let found = p
                .batches
                .iter()
                .filter(|b| b.max_timestamp() >= timestamp)
                .find_map(|b| b.records().find(|r| r.timestamp >= timestamp));
            Ok(found.map_or(p.end(), |r| r.offset))
        })
    }

    async fn sync(&self, topic: &str, partition: u32) -> LogResult<()> {
        self.with_partition(topic, partition, |_| Ok(()))
    }

    async fn init_producer_id(&self) -> LogResult<i64> {
        let mut state = self.state();
        state.next_producer_id += 1;
        Ok(state.next_producer_id - 1)
    }

    async fn commit_offsets(&self, group: &str, offsets: Vec<(String, u32, i64)>) -> LogResult<()> {
        let mut state = self.state();
        for (topic, partition, _) in &offsets {
            let t = state
                .topics
                .get_mut(topic)
                .ok_or_else(|| LogError::UnknownTopic(topic.clone()))?;
            t.partition_mut(topic, *partition)?;
        }
        let committed = state.groups.entry(group.to_string()).or_default();
        for (topic, partition, offset) in offsets {
            committed.insert((topic, partition), offset);
        }
        Ok(())
    }

    async fn group_offsets(&self, group: &str) -> LogResult<Vec<(String, u32, i64)>> {
        let state = self.state();
        let committed = state.groups.get(group).into_iter().flatten();
        Ok(committed
            .map(|((topic, partition), offset)| (topic.clone(), *partition, *offset))
            .collect())
    }

    async fn groups(&self) -> LogResult<Vec<String>> {
        Ok(self.state().groups.keys().cloned().collect())
    }

    async fn delete_group(&self, group: &str) -> LogResult<bool> {
        Ok(self.state().groups.remove(group).is_some())
    }

    async fn open_commit_log(
        &self,
        name: &str,
        partitions: u32,
        settings: CommitLogSettings,
    ) -> LogResult<()> {
        check_commit_log_name(name).map_err(|reason| commit_log_error(name, &reason))?;
        let config = TopicConfig {
            partitions,
            durability: settings.durability,
            max_batch_bytes: MAX_COMMIT_BYTES,
            ..TopicConfig::default()
        };
        check_config(name, &config).map_err(|e| commit_log_error(name, &e.to_string()))?;
        let mut state = self.state();
        let log = state
            .commit_logs
            .entry(name.to_string())
            .or_insert_with(|| Topic::new(config));
        // Its input gained partitions: so does the commit log.
        if (log.partitions.len() as u32) < partitions {
            log.partitions
                .resize_with(partitions as usize, Partition::new);
            log.config.partitions = partitions;
        }
        Ok(())
    }

    async fn commit(&self, name: &str, partition: u32, values: Vec<Bytes>) -> LogResult<u64> {
        let mut batch = BatchBuilder::new();
        for value in &values {
            batch.push(&Record {
                value: Some(value),
                ..Record::default()
            });
        }
        let batch = batch.finish()?;
        self.with_commit_log(name, partition, |log| {
            let info = log.append(name, partition, batch)?;
            Ok(info.base_offset)
        })
    }

    async fn truncate_commits(&self, name: &str, partition: u32, offset: u64) -> LogResult<()> {
        self.with_commit_log(name, partition, |log| {
            log.partition_mut(name, partition)?.truncate(offset);
            Ok(())
        })
    }

    async fn commits(&self, name: &str, partition: u32) -> LogResult<Vec<CommitRecord>> {
        self.with_commit_log(name, partition, |log| {
            let partition = log.partition_mut(name, partition)?;
            Ok(partition
                .batches
                .iter()
                .map(|batch| CommitRecord {
                    offset: batch.base_offset(),
                    values: batch
                        .records()
                        .map(|r| batch.as_bytes().slice_ref(r.value.unwrap_or_default()))
                        .collect(),
                })
                .collect())
        })
    }

    async fn delete_commit_log(&self, name: &str) -> LogResult<()> {
        self.state().commit_logs.remove(name);
        Ok(())
    }

    async fn status(&self) -> LogResult<LogStatus> {
        Ok(LogStatus {
            backend: "memory".to_string(),
            facts: vec![("topics".to_string(), self.state().topics.len().to_string())],
        })
    }

    async fn close(&self) -> LogResult<()> {
        Ok(())
    }
}
