//! The log: a data directory of topics, opened by one process at a time.
//!
//! Layout of the data directory:
//!
//! ```text
//! LOCK                         held (flock) while a process has the log open
//! producer-ids                 next producer id not yet reserved (written atomically)
//! topics/<name>/topic.json     the topic's configuration (written atomically)
//! topics/<name>/<partition>/   segments of one partition (see segment.rs)
//! trash/                       deleted topics on their way out
//! ```
//!
//! A topic exists once its `topic.json` is durable; a directory without one
//! is a creation that crashed halfway and is removed on open. Deleting a
//! topic renames its directory into `trash/` (the commit point) and then
//! removes it. A background thread syncs `interval` topics and runs
//! retention and compaction periodically; tests can turn it off and call
//! [`Log::run_maintenance`] themselves.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::clock::{Clock, SystemClock};
use crate::compaction::{self, CompactionStats};
use crate::config::{TopicConfig, validate_topic_name, validate_user_topic_name};
use crate::error::{IoContext, LogError, Result};
use crate::groups::{ConsumerOffsets, OFFSETS_TOPIC, offsets_topic_config};
use crate::partition::Partition;
use crate::producers::{ProducerIds, producer_ids_path};
use crate::retention;
use crate::storage::{DirLock, FsStorage, Storage, read_all, tmp_path, write_atomic};
use crate::topic::Topic;

/// Settings of the log as a whole (topic settings live in [`TopicConfig`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// The data directory. Default `./weir-data`.
    pub dir: PathBuf,
    /// Run the background thread for interval flushes, retention and
    /// compaction. Default true.
    pub background: bool,
    /// How often retention and compaction run. Default 5 s.
    pub maintenance_interval_ms: u64,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            dir: PathBuf::from("weir-data"),
            background: true,
            maintenance_interval_ms: 5_000,
        }
    }
}

impl LogConfig {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        LogConfig {
            dir: dir.into(),
            ..LogConfig::default()
        }
    }
}

/// What a maintenance pass did, summed over all partitions.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct MaintenanceStats {
    pub segments_deleted: usize,
    pub compaction: CompactionStats,
}

/// An open log. Dropping it stops the background thread and releases the
/// directory lock; [`Log::close`] also flushes everything first.
#[derive(Debug)]
pub struct Log {
    inner: Arc<Inner>,
    background: Option<(mpsc::Sender<()>, JoinHandle<()>)>,
}

#[derive(Debug)]
struct Inner {
    dir: PathBuf,
    storage: Arc<dyn Storage>,
    clock: Arc<dyn Clock>,
    topics: RwLock<BTreeMap<String, Topic>>,
    /// Serializes topic creation and deletion.
    admin: Mutex<()>,
    offsets: ConsumerOffsets,
    producer_ids: ProducerIds,
    _lock: Box<dyn DirLock>,
}

impl Log {
    /// Opens (or creates) the log in `dir` on the real file system.
    pub fn open(dir: impl Into<PathBuf>) -> Result<Log> {
        Self::open_with(
            LogConfig::new(dir),
            Arc::new(FsStorage),
            Arc::new(SystemClock),
        )
    }

    /// Opens the log with an explicit storage and clock (tests use the
    /// simulated disk and a manual clock).
    pub fn open_with(
        config: LogConfig,
        storage: Arc<dyn Storage>,
        clock: Arc<dyn Clock>,
    ) -> Result<Log> {
        let dir = config.dir.clone();
        storage
            .create_dir_all(&dir)
            .ctx("create data directory", &dir)?;
        if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
            storage
                .sync_dir(parent)
                .ctx("sync parent of data directory", parent)?;
        }
        let lock = lock_data_dir(&*storage, &dir)?;
        for sub in ["topics", "trash"] {
            storage
                .create_dir_all(&dir.join(sub))
                .ctx("create directory", dir.join(sub))?;
        }
        remove_leftover_tmp(&*storage, &producer_ids_path(&dir))?;
        storage.sync_dir(&dir).ctx("sync data directory", &dir)?;
        empty_trash(&*storage, &dir.join("trash"))?;
        let topics = load_topics(&storage, &clock, &dir.join("topics"))?;
        let offsets_topic = match topics.get(OFFSETS_TOPIC) {
            Some(t) => t.clone(),
            None => create_topic_files(
                &storage,
                &clock,
                &dir.join("topics"),
                OFFSETS_TOPIC,
                offsets_topic_config(),
            )?,
        };
        let offsets = ConsumerOffsets::load(offsets_topic.partition(0)?.clone())?;
        let mut topics = topics;
        topics.insert(OFFSETS_TOPIC.to_string(), offsets_topic);
        let inner = Arc::new(Inner {
            dir,
            storage,
            clock,
            topics: RwLock::new(topics),
            admin: Mutex::new(()),
            offsets,
            producer_ids: ProducerIds::default(),
            _lock: lock,
        });
        let background = config
            .background
            .then(|| spawn_background(Arc::downgrade(&inner), config.maintenance_interval_ms));
        Ok(Log { inner, background })
    }

    /// The data directory.
    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    /// Creates a topic. Names starting with `__` are reserved.
    pub fn create_topic(&self, name: &str, config: TopicConfig) -> Result<Topic> {
        validate_user_topic_name(name)?;
        self.create_any_topic(name, config)
    }

    /// Creates an internal topic (its name must start with `__`): for the
    /// log's users to keep their own bookkeeping, hidden from [`Log::topics`].
    pub fn create_internal_topic(&self, name: &str, config: TopicConfig) -> Result<Topic> {
        validate_topic_name(name)?;
        if !name.starts_with("__") {
            return Err(LogError::InvalidTopicName {
                name: name.to_string(),
                reason: "internal topic names start with '__'",
            });
        }
        self.create_any_topic(name, config)
    }

    fn create_any_topic(&self, name: &str, config: TopicConfig) -> Result<Topic> {
        config.validate(name)?;
        let inner = &*self.inner;
        let _admin = inner.admin.lock().unwrap_or_else(|e| e.into_inner());
        if inner
            .topics
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .contains_key(name)
        {
            return Err(LogError::TopicExists(name.to_string()));
        }
        let topic = create_topic_files(
            &inner.storage,
            &inner.clock,
            &inner.dir.join("topics"),
            name,
            config,
        )?;
        inner
            .topics
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(name.to_string(), topic.clone());
        Ok(topic)
    }

    /// Grows a topic to `total` partitions (partitions are never removed:
    /// keys would move). The new partitions are empty; the existing ones
    /// and their data are untouched. Returns the grown topic; handles taken
    /// before keep seeing the old partition count.
    pub fn add_partitions(&self, name: &str, total: u32) -> Result<Topic> {
        let inner = &*self.inner;
        let _admin = inner.admin.lock().unwrap_or_else(|e| e.into_inner());
        let old = self.topic(name)?;
        let current = old.partitions().len() as u32;
        if total <= current {
            return Err(LogError::InvalidConfig {
                topic: name.to_string(),
                reason: format!(
                    "a topic's partitions can only be added to: it has {current}, asked for {total}"
                ),
            });
        }
        let config = TopicConfig {
            partitions: total,
            ..old.config().clone()
        };
        config.validate(name)?;
        let dir = inner.dir.join("topics").join(name);
        // The new partitions' directories exist before the configuration
        // counts them: a crash in between leaves empty directories that the
        // next open ignores (and a later call reuses).
        let mut partitions = old.partitions().to_vec();
        for id in current..total {
            partitions.push(Partition::open(
                inner.storage.clone(),
                inner.clock.clone(),
                name,
                id,
                dir.join(id.to_string()),
                config.clone(),
            )?);
        }
        inner
            .storage
            .sync_dir(&dir)
            .ctx("sync topic directory", &dir)?;
        let json = serde_json::to_vec_pretty(&config).expect("topic config serializes");
        let config_path = dir.join("topic.json");
        write_atomic(&*inner.storage, &config_path, &json)
            .ctx("write topic config", &config_path)?;
        let topic = Topic::new(name.to_string(), config, partitions);
        inner
            .topics
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(name.to_string(), topic.clone());
        Ok(topic)
    }

    /// Looks a topic up by name (internal topics included).
    pub fn topic(&self, name: &str) -> Result<Topic> {
        let topics = self.inner.topics.read().unwrap_or_else(|e| e.into_inner());
        topics
            .get(name)
            .cloned()
            .ok_or_else(|| LogError::UnknownTopic(name.to_string()))
    }

    /// Every user topic, sorted by name (internal topics are left out).
    pub fn topics(&self) -> Vec<Topic> {
        let topics = self.inner.topics.read().unwrap_or_else(|e| e.into_inner());
        topics
            .values()
            .filter(|t| !t.name().starts_with("__"))
            .cloned()
            .collect()
    }

    /// Deletes a topic and its data. Handles to it fail from then on with
    /// `TopicDeleted`, and readers waiting on it wake up.
    pub fn delete_topic(&self, name: &str) -> Result<()> {
        if name.starts_with("__") {
            return Err(LogError::UnknownTopic(name.to_string()));
        }
        self.delete_any_topic(name)
    }

    /// Deletes an internal topic made by [`Log::create_internal_topic`].
    pub fn delete_internal_topic(&self, name: &str) -> Result<()> {
        if !name.starts_with("__") || name == crate::groups::OFFSETS_TOPIC {
            return Err(LogError::UnknownTopic(name.to_string()));
        }
        self.delete_any_topic(name)
    }

    fn delete_any_topic(&self, name: &str) -> Result<()> {
        let inner = &*self.inner;
        let _admin = inner.admin.lock().unwrap_or_else(|e| e.into_inner());
        let topic = inner
            .topics
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(name)
            .ok_or_else(|| LogError::UnknownTopic(name.to_string()))?;
        topic.mark_deleted();
        let storage = &*inner.storage;
        let from = inner.dir.join("topics").join(name);
        let trash = inner.dir.join("trash");
        let to = trash.join(format!("{name}.{}", inner.clock.now_ms()));
        storage
            .rename(&from, &to)
            .ctx("move deleted topic to trash", &from)?;
        storage
            .sync_dir(&inner.dir.join("topics"))
            .ctx("sync topics directory", inner.dir.join("topics"))?;
        storage
            .sync_dir(&trash)
            .ctx("sync trash directory", &trash)?;
        storage
            .remove_dir_all(&to)
            .ctx("remove deleted topic", &to)?;
        inner.offsets.forget_topic(&*inner.clock, name)
    }

    /// Durably commits consumer-group offsets, all in one write. Offsets
    /// are kept as given, negative ones included (Kafka's logical offsets).
    pub fn commit_offsets(&self, group: &str, offsets: &[(&str, u32, i64)]) -> Result<()> {
        for &(topic, partition, _) in offsets {
            self.topic(topic)?.partition(partition)?;
        }
        self.inner
            .offsets
            .commit(&*self.inner.clock, group, offsets)
    }

    /// The offset `group` last committed for a partition.
    pub fn committed_offset(&self, group: &str, topic: &str, partition: u32) -> Option<i64> {
        self.inner.offsets.get(group, topic, partition)
    }

    /// Every offset `group` has committed: (topic, partition, offset).
    pub fn group_offsets(&self, group: &str) -> Vec<(String, u32, i64)> {
        self.inner.offsets.group(group)
    }

    /// Every group that has committed an offset.
    pub fn groups(&self) -> Vec<String> {
        self.inner.offsets.groups()
    }

    /// Durably forgets every offset `group` committed; false when it had
    /// none.
    pub fn delete_group(&self, group: &str) -> Result<bool> {
        self.inner.offsets.forget_group(&*self.inner.clock, group)
    }

    /// Allocates a producer id for an idempotent producer: unique for the
    /// life of the data directory, never handed out twice, even across
    /// crashes (ids are reserved in blocks, durably, before use).
    pub fn init_producer_id(&self) -> Result<i64> {
        self.inner
            .producer_ids
            .allocate(&*self.inner.storage, &self.inner.dir)
    }

    /// Runs retention and compaction once over every partition.
    pub fn run_maintenance(&self) -> Result<MaintenanceStats> {
        self.inner.maintain()
    }

    /// Syncs every partition.
    pub fn flush(&self) -> Result<()> {
        for partition in self.inner.partitions() {
            partition.flush()?;
        }
        Ok(())
    }

    /// Stops the background thread, syncs everything and releases the directory.
    pub fn close(mut self) -> Result<()> {
        self.stop_background();
        self.flush()
    }

    fn stop_background(&mut self) {
        if let Some((stop, handle)) = self.background.take() {
            drop(stop);
            if handle.join().is_err() {
                tracing::error!("log background thread panicked");
            }
        }
    }
}

impl Drop for Log {
    fn drop(&mut self) {
        self.stop_background();
    }
}

impl Inner {
    fn partitions(&self) -> Vec<Partition> {
        let topics = self.topics.read().unwrap_or_else(|e| e.into_inner());
        topics
            .values()
            .flat_map(|t| t.partitions().iter().cloned())
            .collect()
    }

    fn maintain(&self) -> Result<MaintenanceStats> {
        let mut stats = MaintenanceStats::default();
        for partition in self.partitions() {
            partition.shared().sync_closed()?;
            stats.segments_deleted += retention::enforce(&partition)?;
            let compacted = compaction::compact(&partition)?;
            stats.compaction.segments_rewritten += compacted.segments_rewritten;
            stats.compaction.records_removed += compacted.records_removed;
        }
        Ok(stats)
    }
}

/// Flushes `interval` topics every few milliseconds and runs maintenance
/// (syncing closed segments, retention, compaction) every
/// `maintenance_ms`, until the log is dropped.
fn spawn_background(inner: Weak<Inner>, maintenance_ms: u64) -> (mpsc::Sender<()>, JoinHandle<()>) {
    let (stop, stopped) = mpsc::channel::<()>();
    let handle = std::thread::Builder::new()
        .name("weir-log-background".into())
        .spawn(move || {
            let tick = Duration::from_millis(5);
            let mut next_maintenance = Instant::now() + Duration::from_millis(maintenance_ms);
            while let Err(RecvTimeoutError::Timeout) = stopped.recv_timeout(tick) {
                let Some(inner) = inner.upgrade() else { return };
                let now = inner.clock.now_ms();
                for partition in inner.partitions() {
                    if let Err(e) = partition.flush_if_due(now) {
                        tracing::error!(topic = partition.topic(), partition = partition.id(), error = %e, "interval flush failed");
                    }
                }
                if Instant::now() >= next_maintenance {
                    if let Err(e) = inner.maintain() {
                        tracing::error!(error = %e, "log maintenance failed");
                    }
                    next_maintenance = Instant::now() + Duration::from_millis(maintenance_ms);
                }
            }
        })
        .expect("spawning the log background thread");
    (stop, handle)
}

/// Takes the data directory's lock. A lock that is busy is retried for a
/// moment: a process that just exited (or a child process between fork and
/// exec, which briefly shares open files) may still hold it.
fn lock_data_dir(storage: &dyn Storage, dir: &Path) -> Result<Box<dyn DirLock>> {
    let path = dir.join("LOCK");
    let deadline = Instant::now() + Duration::from_secs(1);
    loop {
        match storage.lock(&path) {
            Ok(lock) => return Ok(lock),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                if Instant::now() >= deadline {
                    return Err(LogError::Locked {
                        path: dir.to_path_buf(),
                    });
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(source) => {
                return Err(LogError::Io {
                    op: "lock data directory",
                    path,
                    source,
                });
            }
        }
    }
}

fn empty_trash(storage: &dyn Storage, trash: &Path) -> Result<()> {
    let names = storage.list(trash).ctx("list trash", trash)?;
    for name in &names {
        storage
            .remove_dir_all(&trash.join(name))
            .ctx("empty trash", trash.join(name))?;
    }
    if !names.is_empty() {
        storage.sync_dir(trash).ctx("sync trash", trash)?;
    }
    Ok(())
}

/// Removes the temporary file an interrupted `write_atomic` of `path` left.
fn remove_leftover_tmp(storage: &dyn Storage, path: &Path) -> Result<()> {
    let tmp = tmp_path(path);
    if storage.exists(&tmp) {
        storage
            .remove_file(&tmp)
            .ctx("remove leftover file", &tmp)?;
    }
    Ok(())
}

fn load_topics(
    storage: &Arc<dyn Storage>,
    clock: &Arc<dyn Clock>,
    topics_dir: &Path,
) -> Result<BTreeMap<String, Topic>> {
    let mut topics = BTreeMap::new();
    for name in storage.list(topics_dir).ctx("list topics", topics_dir)? {
        let dir = topics_dir.join(&name);
        let config_path = dir.join("topic.json");
        remove_leftover_tmp(&**storage, &config_path)?;
        if !storage.exists(&config_path) {
            tracing::warn!(topic = %name, "removing topic directory without topic.json (creation interrupted)");
            storage
                .remove_dir_all(&dir)
                .ctx("remove unfinished topic", &dir)?;
            storage
                .sync_dir(topics_dir)
                .ctx("sync topics directory", topics_dir)?;
            continue;
        }
        let bytes = read_all(&**storage, &config_path).ctx("read topic config", &config_path)?;
        let config: TopicConfig =
            serde_json::from_slice(&bytes).map_err(|e| LogError::Corrupt {
                path: config_path.clone(),
                position: e.column() as u64,
                reason: format!("invalid topic configuration: {e}"),
            })?;
        let topic = open_topic(storage, clock, &dir, &name, config)?;
        topics.insert(name, topic);
    }
    Ok(topics)
}

fn create_topic_files(
    storage: &Arc<dyn Storage>,
    clock: &Arc<dyn Clock>,
    topics_dir: &Path,
    name: &str,
    config: TopicConfig,
) -> Result<Topic> {
    let dir = topics_dir.join(name);
    storage
        .create_dir_all(&dir)
        .ctx("create topic directory", &dir)?;
    let json = serde_json::to_vec_pretty(&config).expect("topic config serializes");
    let config_path = dir.join("topic.json");
    write_atomic(&**storage, &config_path, &json).ctx("write topic config", &config_path)?;
    storage
        .sync_dir(topics_dir)
        .ctx("sync topics directory", topics_dir)?;
    let topic = open_topic(storage, clock, &dir, name, config)?;
    storage.sync_dir(&dir).ctx("sync topic directory", &dir)?;
    Ok(topic)
}

fn open_topic(
    storage: &Arc<dyn Storage>,
    clock: &Arc<dyn Clock>,
    dir: &Path,
    name: &str,
    config: TopicConfig,
) -> Result<Topic> {
    let partitions = (0..config.partitions)
        .map(|id| {
            Partition::open(
                storage.clone(),
                clock.clone(),
                name,
                id,
                dir.join(id.to_string()),
                config.clone(),
            )
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(Topic::new(name.to_string(), config, partitions))
}
