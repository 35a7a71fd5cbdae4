//! [`FaultyLog`]: a [`MemoryLog`] whose commits and appends fail or hang
//! on demand, for the pipeline core tests.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use tokio::sync::watch;
use weir_format::Batch;
use weir_log::{
    AppendInfo, CommitLogSettings, CommitRecord, LogError, LogResult, LogStatus, MemoryLog,
    StreamLog, TopicConfig, TopicInfo,
};

use super::wait_until;

/// What [`FaultyLog`] is told to do.
#[derive(Default)]
struct Faults {
    /// Commits to refuse (as `Unavailable`) before letting them through.
    fail_commits: u32,
    /// Per output partition, appends to refuse.
    fail_appends: BTreeMap<(String, u32), u32>,
    /// Commits hang (until healed, or the caller is dropped).
    stall_commits: bool,
    /// Appends to these partitions hang likewise.
    stall_appends: BTreeSet<(String, u32)>,
    /// Calls refused so far.
    injected: u32,
    /// Calls left hanging so far.
    stalled: u32,
}

/// A [`MemoryLog`] whose commits and appends can be made to fail with
/// `LogError::Unavailable` (the backend's "nothing was done, try again"),
/// or to hang until healed, as a log whose disk or server stopped
/// answering.
pub(super) struct FaultyLog {
    inner: MemoryLog,
    faults: Mutex<Faults>,
    /// Bumped by `heal`, which lets hanging calls go on.
    healed: watch::Sender<u64>,
}

enum Fault {
    Fail(String),
    Stall(watch::Receiver<u64>),
}

impl FaultyLog {
    pub(super) fn new() -> FaultyLog {
        FaultyLog {
            inner: MemoryLog::new(),
            faults: Mutex::default(),
            healed: watch::Sender::new(0),
        }
    }

    fn faults(&self) -> MutexGuard<'_, Faults> {
        self.faults.lock().unwrap()
    }

    pub(super) fn fail_commits(&self, n: u32) {
        self.faults().fail_commits = n;
    }

    pub(super) fn fail_appends(&self, topic: &str, partition: u32, n: u32) {
        let mut faults = self.faults();
        faults
            .fail_appends
            .insert((topic.to_string(), partition), n);
    }

    pub(super) fn stall_commits(&self) {
        self.faults().stall_commits = true;
    }

    pub(super) fn stall_appends(&self, topic: &str, partition: u32) {
        let mut faults = self.faults();
        faults.stall_appends.insert((topic.to_string(), partition));
    }

    /// Lets everything through again, hanging calls included (the
    /// counts stay).
    pub(super) fn heal(&self) {
        let mut faults = self.faults();
        faults.fail_commits = 0;
        faults.fail_appends.clear();
        faults.stall_commits = false;
        faults.stall_appends.clear();
        self.healed.send_modify(|generation| *generation += 1);
    }

    pub(super) fn injected(&self) -> u32 {
        self.faults().injected
    }

    pub(super) fn stalled(&self) -> u32 {
        self.faults().stalled
    }

    /// Waits until more than `before` calls have been left hanging.
    pub(super) fn wait_stalled(&self, before: u32) {
        wait_until("a call to hang", || match self.stalled() {
            n if n > before => Ok(()),
            n => Err(format!("{n} calls left hanging")),
        });
    }

    fn commit_fault(&self, name: &str) -> Option<Fault> {
        let mut faults = self.faults();
        if faults.stall_commits {
            faults.stalled += 1;
            return Some(Fault::Stall(self.healed.subscribe()));
        }
        if faults.fail_commits == 0 {
            return None;
        }
        faults.fail_commits -= 1;
        faults.injected += 1;
        Some(Fault::Fail(format!("injected: commit to {name} failed")))
    }

    fn append_fault(&self, topic: &str, partition: u32) -> Option<Fault> {
        let mut faults = self.faults();
        let key = (topic.to_string(), partition);
        if faults.stall_appends.contains(&key) {
            faults.stalled += 1;
            return Some(Fault::Stall(self.healed.subscribe()));
        }
        let left = faults.fail_appends.get_mut(&key).filter(|n| **n > 0)?;
        *left -= 1;
        faults.injected += 1;
        Some(Fault::Fail(format!(
            "injected: append to {topic}/{partition} failed"
        )))
    }
}

/// Acts on a fault: an error to return, or a wait until healed.
async fn suffer(fault: Option<Fault>) -> LogResult<()> {
    match fault {
        None => Ok(()),
        Some(Fault::Fail(reason)) => Err(LogError::Unavailable(reason)),
        Some(Fault::Stall(mut healed)) => {
            let _ = healed.changed().await;
            Ok(())
        }
    }
}

#[async_trait]
impl StreamLog for FaultyLog {
    fn check_topic_config(&self, name: &str, config: &TopicConfig) -> LogResult<()> {
        self.inner.check_topic_config(name, config)
    }
    async fn create_topic(&self, name: &str, config: TopicConfig) -> LogResult<TopicInfo> {
        self.inner.create_topic(name, config).await
    }
    async fn topics(&self) -> LogResult<Vec<TopicInfo>> {
        self.inner.topics().await
    }
    async fn topic(&self, name: &str) -> LogResult<TopicInfo> {
        self.inner.topic(name).await
    }
    async fn delete_topic(&self, name: &str) -> LogResult<()> {
        self.inner.delete_topic(name).await
    }
    async fn add_partitions(&self, name: &str, total: u32) -> LogResult<TopicInfo> {
        self.inner.add_partitions(name, total).await
    }
    async fn append(&self, topic: &str, partition: u32, batch: Batch) -> LogResult<AppendInfo> {
        suffer(self.append_fault(topic, partition)).await?;
        self.inner.append(topic, partition, batch).await
    }
    async fn read(
        &self,
        topic: &str,
        partition: u32,
        offset: u64,
        max_bytes: usize,
    ) -> LogResult<Vec<Batch>> {
        self.inner.read(topic, partition, offset, max_bytes).await
    }
    async fn read_stored(
        &self,
        topic: &str,
        partition: u32,
        offset: u64,
        max_bytes: usize,
    ) -> LogResult<(Vec<Batch>, Bytes)> {
        self.inner
            .read_stored(topic, partition, offset, max_bytes)
            .await
    }
    async fn wait_for(
        &self,
        topic: &str,
        partition: u32,
        offset: u64,
        timeout: Duration,
    ) -> LogResult<u64> {
        self.inner.wait_for(topic, partition, offset, timeout).await
    }
    async fn offset_for_timestamp(
        &self,
        topic: &str,
        partition: u32,
        timestamp: i64,
    ) -> LogResult<u64> {
        self.inner
            .offset_for_timestamp(topic, partition, timestamp)
            .await
    }
    async fn sync(&self, topic: &str, partition: u32) -> LogResult<()> {
        self.inner.sync(topic, partition).await
    }
    async fn init_producer_id(&self) -> LogResult<i64> {
        self.inner.init_producer_id().await
    }
    async fn commit_offsets(&self, group: &str, offsets: Vec<(String, u32, i64)>) -> LogResult<()> {
        self.inner.commit_offsets(group, offsets).await
    }
    async fn group_offsets(&self, group: &str) -> LogResult<Vec<(String, u32, i64)>> {
        self.inner.group_offsets(group).await
    }
    async fn groups(&self) -> LogResult<Vec<String>> {
        self.inner.groups().await
    }
    async fn delete_group(&self, group: &str) -> LogResult<bool> {
        self.inner.delete_group(group).await
    }
    async fn open_commit_log(
        &self,
        name: &str,
        partitions: u32,
        settings: CommitLogSettings,
    ) -> LogResult<()> {
        self.inner.open_commit_log(name, partitions, settings).await
    }
    async fn commit(&self, name: &str, partition: u32, values: Vec<Bytes>) -> LogResult<u64> {
        suffer(self.commit_fault(name)).await?;
        self.inner.commit(name, partition, values).await
    }
    async fn truncate_commits(&self, name: &str, partition: u32, offset: u64) -> LogResult<()> {
        self.inner.truncate_commits(name, partition, offset).await
    }
    async fn commits(&self, name: &str, partition: u32) -> LogResult<Vec<CommitRecord>> {
        self.inner.commits(name, partition).await
    }
    async fn delete_commit_log(&self, name: &str) -> LogResult<()> {
        self.inner.delete_commit_log(name).await
    }
    async fn status(&self) -> LogResult<LogStatus> {
        self.inner.status().await
    }

    async fn close(&self) -> LogResult<()> {
        self.inner.close().await
    }
}
