//! The log interface over a NATS JetStream cluster: [`JetStreamLog`]
//! keeps Weir's topics, offsets, idempotent producers, consumer-group
//! offsets and commit logs in JetStream streams and a key-value bucket,
//! so that several `weir serve` workers share one log that JetStream
//! replicates. The mapping and its reasons are in `docs/cluster.md`.
//!
//! - [`config`]: [`JetStreamConfig`], connecting, the checks a cluster must pass
//! - [`names`]: streams and subjects for topics and commit logs
//! - [`topics`]: a topic's stream, and which configurations the cluster keeps
//! - [`partition`]: a partition as a subject: conditional appends, lookups
//! - [`reads`]: batch reads, going on from where the last read stopped
//! - [`retention`]: time retention, purging below each partition's last message
//! - [`snapshots`]: partition tails saved now and then, so a start reads little
//! - [`publish`]: conditional publishing, one message or an atomic batch
//! - [`commits`]: commit logs, fenced by the last commit a writer knows
//! - [`groups`]: consumer-group offsets in a key-value bucket
//! - [`workers`]: live workers and task leases in expiring key-value buckets
//! - [`catalog`]: pipelines and modules in a key-value bucket and an object store
//! - [`errors`]: JetStream errors in the interface's terms
//! - `testing` (feature): a real NATS server for tests

pub mod catalog;
pub mod commits;
pub mod config;
pub mod errors;
pub mod groups;
pub mod names;
pub mod partition;
pub mod publish;
pub mod reads;
pub mod retention;
pub mod snapshots;
#[cfg(feature = "testing")]
pub mod testing;
pub mod topics;
pub mod workers;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::jetstream::{self, stream::Stream};
use async_trait::async_trait;
use bytes::Bytes;
use futures::TryStreamExt;
use weir_format::Batch;
use weir_log::{
    AppendInfo, Catalog, Cleanup, CommitLogSettings, CommitRecord, LogError, LogResult, LogStatus,
    PartitionInfo, StreamLog, TopicConfig, TopicInfo, Workers, check_user_topic_name,
};

pub use crate::config::JetStreamConfig;
use crate::config::retrying;
use crate::errors::{is_existing_stream, is_missing_stream, unavailable};
use crate::names::{Kind, Names};
use crate::partition::{Place, Tails};

/// How many bytes of batches one read of a scan asks for.
const SCAN_BYTES: usize = 8 << 20;

/// The log interface over NATS JetStream (see the module docs).
pub struct JetStreamLog {
    client: async_nats::Client,
    context: jetstream::Context,
    names: Names,
    replicas: usize,
    max_payload: usize,
    tails: Tails,
    reads: reads::Reads,
    commits: commits::CommitLogs,
    groups: groups::Groups,
    catalog: Arc<catalog::JetStreamCatalog>,
    workers: Arc<workers::JetStreamWorkers>,
    /// Topics' configurations as last read (refreshed when they look stale).
    topics: Mutex<HashMap<String, TopicConfig>>,
    /// Time retention, running until the log is dropped.
    retention: tokio::task::JoinHandle<()>,
}

impl Drop for JetStreamLog {
    fn drop(&mut self) {
        self.retention.abort();
    }
}

impl JetStreamLog {
    /// Connects to the cluster, checks that its servers can do what this
    /// backend needs, and makes the streams it keeps for itself.
    pub async fn connect(config: &JetStreamConfig) -> LogResult<JetStreamLog> {
        let names = Names::new(&config.prefix).map_err(LogError::Unavailable)?;
        let (client, info, deadline) = config::connect(config).await?;
        let context = jetstream::new(client.clone());
        // A cluster that just started may still be electing its leader.
        let ids = retrying(deadline, "making the producer-id stream", || {
            config::ids_stream(&context, &names, config.replicas)
        })
        .await?;
        if !ids.allow_atomic_publish {
            return Err(LogError::Unavailable(format!(
                "NATS server {} ignored allow_atomic: it cannot publish atomic batches, which \
                 commits need",
                info.version
            )));
        }
        let groups = retrying(deadline, "opening the consumer-group bucket", || {
            groups::Groups::open(&context, &names, config.replicas)
        })
        .await?;
        let snapshots = retrying(deadline, "opening the tail bucket", || {
            snapshots::Snapshots::open(&context, &names, config.replicas)
        })
        .await?;
        let catalog = retrying(deadline, "opening the catalog", || {
            catalog::JetStreamCatalog::open(&context, &names, config.replicas)
        })
        .await?;
        let ttl = Duration::from_millis(config.lease_ttl_ms.max(1));
        let workers = retrying(deadline, "opening the worker buckets", || {
            workers::JetStreamWorkers::open(&context, &names, config.replicas, ttl)
        })
        .await?;
        let commits = commits::CommitLogs::new(
            context.clone(),
            names.clone(),
            config.replicas,
            info.max_payload,
        );
        let retention = retention::spawn(
            context.clone(),
            names.clone(),
            Duration::from_millis(config.retention_interval_ms.max(1)),
        );
        Ok(JetStreamLog {
            retention,
            client,
            context,
            names,
            replicas: config.replicas,
            max_payload: info.max_payload,
            tails: Tails::new(snapshots),
            reads: reads::Reads::default(),
            commits,
            groups,
            catalog: Arc::new(catalog),
            workers: Arc::new(workers),
            topics: Mutex::new(HashMap::new()),
        })
    }

    /// The workers sharing this cluster, and their task leases.
    pub fn workers(&self) -> Arc<dyn Workers> {
        self.workers.clone()
    }

    /// The catalog kept in the same cluster (pipelines and modules).
    pub fn catalog(&self) -> Arc<dyn Catalog> {
        self.catalog.clone()
    }

    /// A handle on a stream, without asking the server (the next request
    /// says whether it exists).
    async fn stream(&self, kind: Kind, name: &str) -> LogResult<Stream<()>> {
        self.context
            .get_stream_no_info(self.names.stream(kind, name))
            .await
            .map_err(|e| unavailable(name, e))
    }

    /// What the cluster holds of topic `name`'s stream.
    async fn stored_stream(&self, name: &str) -> LogResult<jetstream::stream::Info> {
        Ok(self
            .context
            .get_stream(self.names.stream(Kind::Topic, name))
            .await
            .map_err(|e| stream_error(name, e))?
            .cached_info()
            .clone())
    }

    /// A topic's configuration as stored, remembered for the next call.
    async fn load_config(&self, name: &str) -> LogResult<TopicConfig> {
        let info = self.stored_stream(name).await?;
        let (_, config) =
            topics::from_stream(&info).ok_or_else(|| LogError::UnknownTopic(name.to_string()))?;
        self.remember(name, Some(config.clone()));
        Ok(config)
    }

    /// Forgets what this process knows of topic `name`'s partitions (it
    /// was deleted, or made again).
    fn forget_partitions(&self, name: &str) {
        let subjects = self.names.subjects(Kind::Topic, name, "");
        self.tails.forget(&subjects);
        self.reads.forget(&subjects);
    }

    fn remember(&self, name: &str, config: Option<TopicConfig>) {
        let mut topics = self.topics.lock().unwrap_or_else(|e| e.into_inner());
        match config {
            Some(config) => topics.insert(name.to_string(), config),
            None => topics.remove(name),
        };
    }

    /// Where partition `partition` of `topic` is, with the topic's
    /// configuration; a partition the remembered configuration lacks is
    /// checked against the stored one before it is refused.
    async fn place(&self, topic: &str, partition: u32) -> LogResult<(Place, TopicConfig)> {
        let remembered = {
            let topics = self.topics.lock().unwrap_or_else(|e| e.into_inner());
            topics.get(topic).cloned()
        };
        let config = match remembered {
            Some(config) if partition < config.partitions => config,
            _ => self.load_config(topic).await?,
        };
        if partition >= config.partitions {
            return Err(LogError::UnknownPartition {
                topic: topic.to_string(),
                partition,
                partitions: config.partitions,
            });
        }
        let place = Place {
            topic: topic.to_string(),
            stream_name: self.names.stream(Kind::Topic, topic),
            stream: self.stream(Kind::Topic, topic).await?,
            subject: self.names.subject(Kind::Topic, topic, partition),
            partition,
        };
        Ok((place, config))
    }

    async fn info(&self, name: &str, config: TopicConfig) -> LogResult<TopicInfo> {
        let sizes = self.partition_sizes(name).await?;
        let mut partitions = Vec::with_capacity(config.partitions as usize);
        for partition in 0..config.partitions {
            let (place, _) = self.place(name, partition).await?;
            let range = partition::range(&place).await?;
            partitions.push(PartitionInfo {
                partition,
                start_offset: range.start,
                end_offset: range.end,
                size_bytes: sizes.get(&place.subject).copied().unwrap_or(0),
            });
        }
        Ok(TopicInfo {
            name: name.to_string(),
            config,
            partitions,
        })
    }

    /// Bytes stored per partition subject of topic `name`. JetStream
    /// counts bytes per stream and messages per subject, so a stream's
    /// bytes are shared out by message counts (batches of one topic are
    /// about the same size).
    async fn partition_sizes(&self, name: &str) -> LogResult<HashMap<String, u64>> {
        let stream = self
            .context
            .get_stream(self.names.stream(Kind::Topic, name))
            .await
            .map_err(|e| stream_error(name, e))?;
        let mut counts = stream
            .info_with_subjects(self.names.subjects(Kind::Topic, name, "*"))
            .await
            .map_err(|e| unavailable(&format!("sizing topic {name}"), e))?;
        let (bytes, messages) = (counts.info.state.bytes, counts.info.state.messages);
        let mut sizes = HashMap::new();
        while let Some((subject, count)) = counts
            .try_next()
            .await
            .map_err(|e| unavailable(&format!("sizing topic {name}"), e))?
        {
            let share = (u128::from(bytes) * count as u128 / u128::from(messages.max(1))) as u64;
            sizes.insert(subject, share);
        }
        Ok(sizes)
    }

    /// The end of a partition (one past its last offset).
    async fn end(&self, place: &Place) -> LogResult<u64> {
        match partition::last_message(place).await? {
            Some(message) => Ok(partition::batch_of(place, &message)?.next_offset()),
            None => Ok(0),
        }
    }
}

#[async_trait]
impl StreamLog for JetStreamLog {
    fn check_topic_config(&self, name: &str, config: &TopicConfig) -> LogResult<()> {
        topics::check(name, config, self.max_payload)
    }

    async fn create_topic(&self, name: &str, config: TopicConfig) -> LogResult<TopicInfo> {
        check_user_topic_name(name)?;
        self.check_topic_config(name, &config)?;
        let mut stream = topics::stream_config(&self.names, name, &config, self.replicas)?;
        // Creating a stream again with the same settings succeeds; a token
        // of this creation makes a second one differ, so it is refused.
        let creation = self.init_producer_id().await?;
        stream
            .metadata
            .insert("weir.creation".to_string(), creation.to_string());
        match self.context.create_stream(stream).await {
            Ok(_) => {}
            Err(e) if is_existing_stream(&e) => {
                return Err(LogError::TopicExists(name.to_string()));
            }
            Err(e) => return Err(unavailable(&format!("creating topic {name}"), e)),
        }
        self.forget_partitions(name);
        self.remember(name, Some(config.clone()));
        self.info(name, config).await
    }

    async fn topics(&self) -> LogResult<Vec<TopicInfo>> {
        let mut found = Vec::new();
        let mut streams = self.context.streams();
        while let Some(info) = streams
            .try_next()
            .await
            .map_err(|e| unavailable("listing streams", e))?
        {
            if !self.names.is_stream_of(Kind::Topic, &info.config.name) {
                continue;
            }
            if let Some((name, config)) = topics::from_stream(&info)
                && !name.starts_with("__")
            {
                found.push((name, config));
            }
        }
        found.sort_by(|a, b| a.0.cmp(&b.0));
        let mut infos = Vec::with_capacity(found.len());
        for (name, config) in found {
            self.remember(&name, Some(config.clone()));
            infos.push(self.info(&name, config).await?);
        }
        Ok(infos)
    }

    async fn topic(&self, name: &str) -> LogResult<TopicInfo> {
        if name.starts_with("__") {
            return Err(LogError::UnknownTopic(name.to_string()));
        }
        let config = self.load_config(name).await?;
        self.info(name, config).await
    }

    async fn delete_topic(&self, name: &str) -> LogResult<()> {
        match self
            .context
            .delete_stream(self.names.stream(Kind::Topic, name))
            .await
        {
            Ok(_) => {}
            Err(e) if is_missing_stream(&e) => {
                return Err(LogError::UnknownTopic(name.to_string()));
            }
            Err(e) => return Err(unavailable(&format!("deleting topic {name}"), e)),
        }
        self.remember(name, None);
        self.forget_partitions(name);
        self.tails
            .forget_saved(&self.names.subjects(Kind::Topic, name, ""))
            .await?;
        self.groups.forget_topic(name).await
    }

    async fn add_partitions(&self, name: &str, total: u32) -> LogResult<TopicInfo> {
        let current = self.load_config(name).await?;
        if total <= current.partitions {
            return Err(LogError::InvalidConfig {
                topic: name.to_string(),
                reason: format!(
                    "a topic's partitions can only be added to: it has {}, asked for {total}",
                    current.partitions
                ),
            });
        }
        let config = TopicConfig {
            partitions: total,
            ..current
        };
        self.check_topic_config(name, &config)?;
        let mut info = self.stored_stream(name).await?;
        info.config.metadata.insert(
            names::CONFIG.to_string(),
            serde_json::to_string(&config).map_err(|e| unavailable(name, e))?,
        );
        self.context
            .update_stream(info.config)
            .await
            .map_err(|e| unavailable(&format!("adding partitions to {name}"), e))?;
        self.remember(name, Some(config.clone()));
        self.info(name, config).await
    }

    async fn append(&self, topic: &str, partition: u32, batch: Batch) -> LogResult<AppendInfo> {
        let mut outcomes = self.append_all(topic, partition, vec![batch]).await;
        outcomes
            .pop()
            .unwrap_or_else(|| Err(LogError::Unavailable("no outcome".to_string())))
    }

    async fn append_all(
        &self,
        topic: &str,
        partition: u32,
        batches: Vec<Batch>,
    ) -> Vec<LogResult<AppendInfo>> {
        let (place, config) = match self.place(topic, partition).await {
            Ok(found) => found,
            Err(e) => {
                let reason = e.to_string();
                let mut outcomes = vec![Err(e)];
                outcomes
                    .extend((1..batches.len()).map(|_| Err(LogError::Unavailable(reason.clone()))));
                return outcomes;
            }
        };
        let check = |batch: &Batch| check_batch(topic, &config, batch);
        let outcomes = self
            .tails
            .append_all(&self.context, &place, batches, check)
            .await;
        if outcomes
            .iter()
            .any(|o| matches!(o, Err(LogError::UnknownTopic(_))))
        {
            self.remember(topic, None);
        }
        outcomes
    }

    async fn read(
        &self,
        topic: &str,
        partition: u32,
        offset: u64,
        max_bytes: usize,
    ) -> LogResult<Vec<Batch>> {
        let (place, _) = self.place(topic, partition).await?;
        self.reads
            .read(&self.client, &place, offset, max_bytes)
            .await
    }

    async fn wait_for(
        &self,
        topic: &str,
        partition: u32,
        offset: u64,
        timeout: Duration,
    ) -> LogResult<u64> {
        let (place, _) = self.place(topic, partition).await?;
        // Subscribed before the end is read: an append after the read wakes
        // the wait.
        let mut appended = self
            .client
            .subscribe(place.subject.clone())
            .await
            .map_err(|e| unavailable(&format!("{topic}/{partition}"), e))?;
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let end = self.end(&place).await?;
            if end > offset {
                return Ok(end);
            }
            match tokio::time::timeout_at(deadline, futures::StreamExt::next(&mut appended)).await {
                Ok(Some(_)) => {}
                Ok(None) | Err(_) => return self.end(&place).await,
            }
        }
    }

    async fn offset_for_timestamp(
        &self,
        topic: &str,
        partition: u32,
        timestamp: i64,
    ) -> LogResult<u64> {
        let (place, _) = self.place(topic, partition).await?;
        let first_at_or_after = |batch: &Batch| {
            (batch.max_timestamp() >= timestamp)
                .then(|| batch.records().find(|r| r.timestamp >= timestamp))
                .flatten()
                .map(|r| r.offset)
        };
        // Scanned in batch reads (a replica may answer), then the rest a
        // replica may not have yet from the leader.
        let mut sequence = 1;
        loop {
            let fetched = reads::fetch(&self.client, &place, sequence, SCAN_BYTES).await?;
            let Some((last, _)) = fetched.last() else {
                break;
            };
            sequence = last + 1;
            if let Some(offset) = fetched.iter().find_map(|(_, b)| first_at_or_after(b)) {
                return Ok(offset);
            }
        }
        while let Some(message) = partition::next_message(&place, sequence).await? {
            if let Some(offset) = first_at_or_after(&partition::batch_of(&place, &message)?) {
                return Ok(offset);
            }
            sequence = message.sequence + 1;
        }
        self.end(&place).await
    }

    async fn sync(&self, topic: &str, partition: u32) -> LogResult<()> {
        // Every append is acknowledged once the stream's replicas stored it.
        self.place(topic, partition).await.map(|_| ())
    }

    async fn init_producer_id(&self) -> LogResult<i64> {
        let (_, subject) = self.names.ids();
        let ack = self
            .context
            .publish(subject, Bytes::new())
            .await
            .map_err(|e| unavailable("handing out a producer id", e))?
            .await
            .map_err(|e| unavailable("handing out a producer id", e))?;
        i64::try_from(ack.sequence).map_err(|e| unavailable("handing out a producer id", e))
    }

    async fn commit_offsets(&self, group: &str, offsets: Vec<(String, u32, i64)>) -> LogResult<()> {
        for (topic, partition, _) in &offsets {
            self.place(topic, *partition).await?;
        }
        self.groups.commit(group, offsets).await
    }

    async fn group_offsets(&self, group: &str) -> LogResult<Vec<(String, u32, i64)>> {
        self.groups.offsets(group).await
    }

    async fn groups(&self) -> LogResult<Vec<String>> {
        self.groups.names().await
    }

    async fn delete_group(&self, group: &str) -> LogResult<bool> {
        self.groups.delete(group).await
    }

    async fn open_commit_log(
        &self,
        name: &str,
        partitions: u32,
        settings: CommitLogSettings,
    ) -> LogResult<()> {
        self.commits.open(name, partitions, settings).await
    }

    async fn commit(&self, name: &str, partition: u32, values: Vec<Bytes>) -> LogResult<u64> {
        self.commits.commit(name, partition, values).await
    }

    async fn truncate_commits(&self, name: &str, partition: u32, offset: u64) -> LogResult<()> {
        self.commits.truncate(name, partition, offset).await
    }

    async fn commits(&self, name: &str, partition: u32) -> LogResult<Vec<CommitRecord>> {
        self.commits.read(name, partition).await
    }

    async fn delete_commit_log(&self, name: &str) -> LogResult<()> {
        self.commits.delete(name).await
    }

    async fn health(&self) -> LogResult<()> {
        match self.client.connection_state() {
            async_nats::connection::State::Connected => Ok(()),
            state => Err(LogError::Unavailable(format!(
                "NATS JetStream: not connected to the cluster ({state}); reconnecting"
            ))),
        }
    }

    async fn status(&self) -> LogResult<LogStatus> {
        let info = self.client.server_info();
        let mut facts = vec![
            (
                "connection".to_string(),
                self.client.connection_state().to_string(),
            ),
            (
                "server".to_string(),
                format!("{} (nats-server {})", info.server_name, info.version),
            ),
            (
                "cluster servers".to_string(),
                if info.connect_urls.is_empty() {
                    "none (a single server)".to_string()
                } else {
                    info.connect_urls.join(", ")
                },
            ),
            ("replicas".to_string(), self.replicas.to_string()),
            (
                "max payload".to_string(),
                format!("{} bytes", self.max_payload),
            ),
        ];
        // What JetStream holds for this account (all deployments in it).
        match self.context.query_account().await {
            Ok(account) => {
                facts.push(("streams".to_string(), account.streams.to_string()));
                facts.push(("stored".to_string(), format!("{} bytes", account.storage)));
            }
            Err(e) => facts.push(("jetstream".to_string(), format!("unavailable: {e}"))),
        }
        Ok(LogStatus {
            backend: "jetstream".to_string(),
            facts,
        })
    }

    async fn close(&self) -> LogResult<()> {
        self.client
            .flush()
            .await
            .map_err(|e| unavailable("closing the connection", e))
    }
}

/// Whether `batch` may be appended to a topic configured so.
fn check_batch(topic: &str, config: &TopicConfig, batch: &Batch) -> LogResult<()> {
    if batch.size() > config.max_batch_bytes {
        return Err(LogError::BatchTooLarge {
            topic: topic.to_string(),
            size: batch.size(),
            max: config.max_batch_bytes,
        });
    }
    if config.cleanup == Cleanup::Compact
        && let Some(index) = batch.records().position(|r| r.key.is_none())
    {
        return Err(LogError::MissingKey {
            topic: topic.to_string(),
            index,
        });
    }
    Ok(())
}

/// A failed lookup of topic `name`'s stream.
fn stream_error(name: &str, error: jetstream::context::GetStreamError) -> LogError {
    if is_missing_stream(&error) {
        LogError::UnknownTopic(name.to_string())
    } else {
        unavailable(&format!("topic {name}"), error)
    }
}
