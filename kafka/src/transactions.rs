//! The transaction coordinator: Kafka transactions with deferred writes.
//!
//! A transactional producer's batches are not appended to their partitions
//! when produced. They go, durably, into the transaction's own buffer (a
//! commit log of the log interface), and only EndTxn(commit) appends them to
//! their partitions, together with the transaction's consumer-group offsets;
//! an abort (or a timeout, or a new producer instance fencing the old)
//! drops the buffer. So the log never holds uncommitted or aborted data:
//! `read_committed` and `read_uncommitted` read the same records, the last
//! stable offset is the high watermark, no control batches or aborted
//! lists exist, and pipelines and the HTTP API need nothing to stay
//! isolated. The costs: committed data is written twice, becomes visible
//! only at commit (as with `read_committed` in Kafka), and produce answers
//! carry no offset (−1).
//!
//! Commit is made atomic by its durable state: the transaction is marked
//! `PrepareCommit` before anything is appended; after a crash the appends
//! are redone. Re-appends are harmless because the coordinator stamps the
//! batches with its own idempotent producer id and sequences derived from
//! the state saved at prepare time, so the log drops the ones it already
//! has. The appended partitions are synced and the completed state (with
//! the new sequences) saved before the buffer is dropped. The state of
//! every transactional id is a small file written atomically under
//! `<data>/kafka/transactions/`.
//!
//! Batches are checked at produce time as the log would check them (size,
//! keys on compacted topics), so a commit does not fail on them; a commit
//! that fails anyway on storage stays prepared and is retried (EndTxn
//! answers CONCURRENT_TRANSACTIONS meanwhile). A transaction holds at most
//! [`MAX_TRANSACTION_BYTES`].
//!
//! A transactional id with no transaction open that no producer has used
//! for the expiry period (Kafka's `transactional.id.expiration.ms`) is
//! forgotten, state file and all; its producer's next request gets
//! INVALID_PRODUCER_ID_MAPPING, and an InitProducerId starts it afresh.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use bytes::{Bytes, BytesMut};
use kafka_protocol::ResponseError;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::sync::OwnedMutexGuard;
use weir_core::format::Format;
use weir_format::field;
use weir_format::{Batch, ProducerStamp};
use weir_log::{Cleanup, LogError};

use weir_log::{CommitLogSettings, StreamLog};

/// Longest transaction timeout a producer may ask for (Kafka's
/// `transaction.max.timeout.ms`).
pub const MAX_TIMEOUT_MS: u64 = 15 * 60 * 1000;
/// Most bytes one transaction may buffer before it commits.
pub const MAX_TRANSACTION_BYTES: u64 = 256 << 20;
/// How often abandoned transactions are looked for.
const REAP_EVERY: Duration = Duration::from_secs(1);
/// How often idle transactional ids are looked for.
const EXPIRE_EVERY: Duration = Duration::from_secs(60);
/// The transactional attribute bit of a batch.
const TRANSACTIONAL: u8 = 0x10;
/// A producer's latest batches per partition remembered to answer retries.
const KEPT_BATCHES: usize = 5;

type Result<T> = std::result::Result<T, ResponseError>;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
enum Status {
    Empty,
    Ongoing,
    PrepareCommit,
    PrepareAbort,
    CompleteCommit,
    CompleteAbort,
}

/// The format of the state files (`<digest>.txn`). Files from before
/// versions were written are version 1 unsealed.
const STATE_FORMAT: Format = Format {
    what: "transaction state",
    current: 1,
    oldest: 1,
};

/// What is kept of one transactional id, durably.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct TxnRecord {
    id: String,
    producer_id: i64,
    epoch: i16,
    /// The producer id and epoch the current ones replaced: an
    /// InitProducerId retried with them gets the current ones (KIP-360).
    previous: Option<(i64, i16)>,
    timeout_ms: u64,
    status: Status,
    /// When the transaction under way began (ms since the epoch).
    started_ms: u64,
    partitions: BTreeSet<(String, u32)>,
    groups: BTreeSet<String>,
    /// Offsets to commit with the transaction: (group, topic, partition).
    offsets: BTreeMap<(String, String, u32), u64>,
    /// The coordinator's own producer id for appending committed batches,
    /// and the next sequence per partition (as of the last completed
    /// commit, so a redone commit stamps the same sequences).
    copier: i64,
    sequences: BTreeMap<(String, u32), i32>,
}

/// One transactional id at run time.
struct Txn {
    record: TxnRecord,
    /// The producer's latest buffered batches per partition, as (first,
    /// last) sequence: a retry is answered, not buffered twice.
    recent: HashMap<(String, u32), VecDeque<(i32, i32)>>,
    /// Bytes buffered by the transaction under way.
    buffered: u64,
    /// When a producer last used this id (ms since the epoch); after a
    /// restart, when its state was last saved.
    used_ms: u64,
    /// Forgotten by expiry: whoever still holds it treats the id as unknown.
    expired: bool,
}

impl Txn {
    fn new(record: TxnRecord, used_ms: u64) -> Txn {
        Txn {
            record,
            recent: HashMap::new(),
            buffered: 0,
            used_ms,
            expired: false,
        }
    }

    /// Whether the id can be forgotten: no transaction open or being
    /// finished, and unused for `expire_after`.
    fn expired_at(&self, now_ms: u64, expire_after: Duration) -> bool {
        matches!(
            self.record.status,
            Status::Empty | Status::CompleteCommit | Status::CompleteAbort
        ) && u128::from(now_ms.saturating_sub(self.used_ms)) >= expire_after.as_millis()
    }
}

/// Where a buffered batch goes.
#[derive(Serialize, Deserialize)]
struct Destination {
    topic: String,
    partition: u32,
}

pub struct Transactions {
    log: Arc<dyn StreamLog>,
    dir: PathBuf,
    /// How long an idle transactional id is kept.
    expire_after: Duration,
    txns: Mutex<HashMap<String, Arc<tokio::sync::Mutex<Txn>>>>,
    /// Serializes the creation and expiry of transactional ids.
    creating: tokio::sync::Mutex<()>,
    /// Offsets that open transactions will commit: (group, topic,
    /// partition) → transactional ids (for `require_stable` fetches).
    pending: Mutex<HashMap<(String, String, u32), std::collections::HashSet<String>>>,
}

impl Transactions {
    /// Loads every transaction's state, finishes commits and aborts a
    /// crash interrupted (or leaves them to be retried), and starts
    /// aborting abandoned transactions and forgetting ids idle for
    /// `expire_after`.
    pub async fn start(
        log: Arc<dyn StreamLog>,
        dir: PathBuf,
        expire_after: Duration,
    ) -> anyhow::Result<Arc<Transactions>> {
        std::fs::create_dir_all(&dir)
            .map_err(|e| anyhow::anyhow!("while creating {}: {e}", dir.display()))?;
        let transactions = Arc::new(Transactions {
            log,
            dir: dir.clone(),
            expire_after,
            txns: Mutex::new(HashMap::new()),
            creating: tokio::sync::Mutex::new(()),
            pending: Mutex::new(HashMap::new()),
        });
        for entry in std::fs::read_dir(&dir)? {
            let path = entry?.path();
            if path.extension().is_none_or(|e| e != "txn") {
                continue;
            }
            let bytes = std::fs::read(&path)?;
            let saved_ms = std::fs::metadata(&path)?
                .modified()
                .ok()
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .map_or_else(now_ms, |d| d.as_millis() as u64);
            // Another version's state is not guessed at: refuse to start.
            let (_, payload) = STATE_FORMAT
                .open(&bytes)
                .with_context(|| format!("while reading {}", path.display()))?;
            let record = match postcard::from_bytes::<TxnRecord>(payload) {
                Ok(record) => record,
                Err(e) => {
                    tracing::error!(
                        "transaction state {} is damaged, ignored: {e}",
                        path.display()
                    );
                    continue;
                }
            };
            let status = record.status;
            let mut txn = Txn::new(record, saved_ms);
            transactions.recover(&mut txn).await;
            if txn.record.status != status {
                // Finished just now: its producer may still be retrying.
                txn.used_ms = now_ms();
            }
            let id = txn.record.id.clone();
            transactions
                .lock()
                .insert(id, Arc::new(tokio::sync::Mutex::new(txn)));
        }
        let weak = Arc::downgrade(&transactions);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(REAP_EVERY);
            let mut last_expiry = std::time::Instant::now();
            loop {
                tick.tick().await;
                let Some(transactions) = weak.upgrade() else {
                    return;
                };
                transactions.reap().await;
                if last_expiry.elapsed() >= EXPIRE_EVERY {
                    last_expiry = std::time::Instant::now();
                    transactions.expire(now_ms()).await;
                }
            }
        });
        Ok(transactions)
    }

    /// Brings a loaded transaction back: an open one learns what its buffer
    /// holds, a prepared one is finished, a finished one loses any buffer
    /// left behind.
    async fn recover(&self, txn: &mut Txn) {
        let buffer = buffer_name(&txn.record.id);
        self.track_offsets(&txn.record, true);
        match txn.record.status {
            Status::Ongoing => match self.log.commits(&buffer, 0).await {
                Ok(commits) => {
                    for commit in commits {
                        if let [destination, batch] = commit.values.as_slice()
                            && let Ok(to) = postcard::from_bytes::<Destination>(destination)
                            && let Ok(batch) = Batch::from_bytes(batch.clone())
                            && let Some(stamp) = batch.producer()
                        {
                            let last = stamp
                                .base_sequence
                                .wrapping_add(batch.view().last_offset_delta() as i32);
                            remember(txn, (to.topic, to.partition), stamp.base_sequence, last);
                            txn.buffered += batch.size() as u64;
                        }
                    }
                }
                Err(LogError::UnknownCommitLog(_)) => {}
                Err(e) => tracing::warn!(txn = %txn.record.id, "reading the buffer failed: {e}"),
            },
            Status::PrepareCommit | Status::PrepareAbort => {
                if let Err(e) = self.complete(txn).await {
                    tracing::warn!(txn = %txn.record.id, "finishing failed, will retry: {e:?}");
                }
            }
            Status::Empty | Status::CompleteCommit | Status::CompleteAbort => {
                self.drop_buffer(&txn.record.id).await;
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<tokio::sync::Mutex<Txn>>>> {
        self.txns.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn get(&self, id: &str) -> Option<Arc<tokio::sync::Mutex<Txn>>> {
        self.lock().get(id).cloned()
    }

    /// The transactional id's state, locked for its current producer and
    /// marked as used; unknown (or just expired) ids, other producers and
    /// stale epochs are refused as Kafka refuses them.
    async fn locked(&self, id: &str, producer_id: i64, epoch: i16) -> Result<OwnedMutexGuard<Txn>> {
        let txn = self
            .get(id)
            .ok_or(ResponseError::InvalidProducerIdMapping)?;
        let mut txn = txn.lock_owned().await;
        if txn.expired {
            return Err(ResponseError::InvalidProducerIdMapping);
        }
        check_producer(&txn.record, producer_id, epoch)?;
        txn.used_ms = now_ms();
        Ok(txn)
    }

    /// InitProducerId for a transactional id: a new producer id, or the
    /// same one with the epoch raised (fencing the previous instance, whose
    /// unfinished transaction is aborted). `current` is the caller's own
    /// producer id and epoch (v3+), when it asks to bump them.
    pub async fn init(
        &self,
        id: &str,
        timeout_ms: i32,
        current: Option<(i64, i16)>,
    ) -> Result<(i64, i16)> {
        if id.is_empty() {
            return Err(ResponseError::InvalidRequest);
        }
        let timeout_ms = u64::try_from(timeout_ms)
            .ok()
            .filter(|t| (1..=MAX_TIMEOUT_MS).contains(t))
            .ok_or(ResponseError::InvalidTransactionTimeout)?;
        let mut txn = loop {
            let existing = {
                let _creating = self.creating.lock().await;
                match self.get(id) {
                    Some(txn) => txn,
                    None => return self.create(id, timeout_ms).await,
                }
            };
            let txn = existing.lock_owned().await;
            // Expired while this request waited: start it afresh.
            if !txn.expired {
                break txn;
            }
        };
        txn.used_ms = now_ms();
        if let Some(asked) = current.filter(|(pid, _)| *pid >= 0) {
            let now = (txn.record.producer_id, txn.record.epoch);
            if txn.record.previous == Some(asked) {
                // A retry of the bump that made the current epoch.
                return Ok(now);
            }
            if asked != now {
                return Err(ResponseError::InvalidProducerEpoch);
            }
        }
        match txn.record.status {
            Status::Ongoing => {
                txn.record.status = Status::PrepareAbort;
                self.save(&txn.record)?;
                self.finish(&mut txn).await?;
            }
            Status::PrepareCommit | Status::PrepareAbort => self.finish(&mut txn).await?,
            _ => {}
        }
        let mut bumped = txn.record.clone();
        bumped.previous = Some((bumped.producer_id, bumped.epoch));
        if bumped.epoch >= i16::MAX - 1 {
            bumped.producer_id = self.new_producer_id().await?;
            bumped.epoch = 0;
        } else {
            bumped.epoch += 1;
        }
        bumped.timeout_ms = timeout_ms;
        bumped.status = Status::Empty;
        self.save(&bumped)?;
        txn.record = bumped;
        txn.recent.clear();
        txn.buffered = 0;
        Ok((txn.record.producer_id, txn.record.epoch))
    }

    /// A new transactional id (the caller holds `creating`). A buffer of an
    /// earlier life of the id that was not dropped is dropped first, so it
    /// cannot become part of a new transaction.
    async fn create(&self, id: &str, timeout_ms: u64) -> Result<(i64, i16)> {
        self.log
            .delete_commit_log(&buffer_name(id))
            .await
            .map_err(|e| storage_error(&e))?;
        let record = TxnRecord {
            id: id.to_string(),
            producer_id: self.new_producer_id().await?,
            epoch: 0,
            previous: None,
            timeout_ms,
            status: Status::Empty,
            started_ms: 0,
            partitions: BTreeSet::new(),
            groups: BTreeSet::new(),
            offsets: BTreeMap::new(),
            copier: self.new_producer_id().await?,
            sequences: BTreeMap::new(),
        };
        self.save(&record)?;
        let answer = (record.producer_id, record.epoch);
        let txn = Arc::new(tokio::sync::Mutex::new(Txn::new(record, now_ms())));
        self.lock().insert(id.to_string(), txn);
        Ok(answer)
    }

    /// Runs `change` on a transaction of this producer that may take new
    /// work (not while a commit or abort is being finished); saves it when
    /// it changed.
    async fn with_ongoing<T>(
        &self,
        id: &str,
        producer_id: i64,
        epoch: i16,
        change: impl FnOnce(&mut TxnRecord) -> Result<T>,
    ) -> Result<T> {
        let mut txn = self.locked(id, producer_id, epoch).await?;
        let mut record = txn.record.clone();
        match record.status {
            Status::PrepareCommit | Status::PrepareAbort => {
                return Err(ResponseError::ConcurrentTransactions);
            }
            Status::Empty | Status::CompleteCommit | Status::CompleteAbort => {
                record.status = Status::Ongoing;
                record.started_ms = now_ms();
            }
            Status::Ongoing => {}
        }
        let result = change(&mut record)?;
        if !same_work(&txn.record, &record) || txn.record.status != record.status {
            self.save(&record)?;
        }
        if txn.record.status != Status::Ongoing {
            txn.buffered = 0;
        }
        txn.record = record;
        Ok(result)
    }

    /// AddPartitionsToTxn (topics are stored names, already checked).
    pub async fn add_partitions(
        &self,
        id: &str,
        producer_id: i64,
        epoch: i16,
        partitions: Vec<(String, u32)>,
    ) -> Result<()> {
        self.with_ongoing(id, producer_id, epoch, |record| {
            record.partitions.extend(partitions);
            Ok(())
        })
        .await
    }

    /// AddOffsetsToTxn.
    pub async fn add_group(
        &self,
        id: &str,
        producer_id: i64,
        epoch: i16,
        group: &str,
    ) -> Result<()> {
        self.with_ongoing(id, producer_id, epoch, |record| {
            record.groups.insert(group.to_string());
            Ok(())
        })
        .await
    }

    /// TxnOffsetCommit: offsets committed with the transaction.
    pub async fn commit_offsets(
        &self,
        id: &str,
        producer_id: i64,
        epoch: i16,
        group: &str,
        offsets: Vec<(String, u32, u64)>,
    ) -> Result<()> {
        let tracked = self
            .with_ongoing(id, producer_id, epoch, |record| {
                if !record.groups.contains(group) {
                    return Err(ResponseError::InvalidTxnState);
                }
                for (topic, partition, offset) in offsets {
                    record
                        .offsets
                        .insert((group.to_string(), topic, partition), offset);
                }
                Ok(record.clone())
            })
            .await?;
        self.track_offsets(&tracked, true);
        Ok(())
    }

    /// A transactional batch: checked as the log will check it, then
    /// buffered until the transaction ends. A retry of one of the
    /// producer's latest batches is answered without buffering it again.
    pub async fn produce(&self, id: &str, topic: &str, partition: u32, batch: Batch) -> Result<()> {
        let stamp = batch.producer().ok_or(ResponseError::InvalidRecord)?;
        let mut txn = self.locked(id, stamp.id, stamp.epoch).await?;
        let key = (topic.to_string(), partition);
        if txn.record.status != Status::Ongoing || !txn.record.partitions.contains(&key) {
            return Err(ResponseError::InvalidTxnState);
        }
        let last = stamp
            .base_sequence
            .wrapping_add(batch.view().last_offset_delta() as i32);
        if let Some(recent) = txn.recent.get(&key) {
            if recent.contains(&(stamp.base_sequence, last)) {
                return Ok(());
            }
            let (_, newest) = *recent.back().expect("never empty");
            let expected = if newest == i32::MAX { 0 } else { newest + 1 };
            if stamp.base_sequence != expected {
                return Err(ResponseError::OutOfOrderSequenceNumber);
            }
        }
        self.check_batch(topic, &batch).await?;
        if txn.buffered + batch.size() as u64 > MAX_TRANSACTION_BYTES {
            return Err(ResponseError::MessageTooLarge);
        }
        let destination = postcard::to_allocvec(&Destination {
            topic: topic.to_string(),
            partition,
        })
        .expect("destinations serialize");
        let size = batch.size() as u64;
        let buffer = buffer_name(id);
        self.log
            .open_commit_log(&buffer, 1, buffer_settings())
            .await
            .map_err(|e| storage_error(&e))?;
        self.log
            .commit(
                &buffer,
                0,
                vec![Bytes::from(destination), batch.into_bytes()],
            )
            .await
            .map_err(|e| storage_error(&e))?;
        remember(&mut txn, key, stamp.base_sequence, last);
        txn.buffered += size;
        Ok(())
    }

    /// What the log would refuse: a batch over the topic's largest, or a
    /// record without a key on a compacted topic.
    async fn check_batch(&self, topic: &str, batch: &Batch) -> Result<()> {
        let info = self
            .log
            .topic(topic)
            .await
            .map_err(|e| super::errors::code(&e))?;
        if batch.size() > info.config.max_batch_bytes {
            return Err(ResponseError::MessageTooLarge);
        }
        if info.config.cleanup == Cleanup::Compact && batch.records().any(|r| r.key.is_none()) {
            return Err(ResponseError::InvalidRecord);
        }
        Ok(())
    }

    /// Whether an open (or prepared) transaction will commit an offset of
    /// `group` for this partition.
    pub fn offset_pending(&self, group: &str, topic: &str, partition: u32) -> bool {
        let pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        pending.contains_key(&(group.to_string(), topic.to_string(), partition))
    }

    /// Notes (or forgets) the offsets a transaction will commit.
    fn track_offsets(&self, record: &TxnRecord, open: bool) {
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        for key in record.offsets.keys() {
            if open {
                pending
                    .entry(key.clone())
                    .or_default()
                    .insert(record.id.clone());
            } else if let Some(ids) = pending.get_mut(key) {
                ids.remove(&record.id);
                if ids.is_empty() {
                    pending.remove(key);
                }
            }
        }
    }

    /// EndTxn: commit or abort. A retry of an end already done succeeds;
    /// while one is being finished the answer is retriable.
    pub async fn end(&self, id: &str, producer_id: i64, epoch: i16, commit: bool) -> Result<()> {
        let mut txn = self.locked(id, producer_id, epoch).await?;
        match (txn.record.status, commit) {
            (Status::Ongoing, _) => {
                txn.record.status = if commit {
                    Status::PrepareCommit
                } else {
                    Status::PrepareAbort
                };
                self.save(&txn.record)?;
                self.finish(&mut txn).await
            }
            (Status::Empty, _)
            | (Status::CompleteCommit, true)
            | (Status::CompleteAbort, false) => Ok(()),
            (Status::PrepareCommit, true) | (Status::PrepareAbort, false) => {
                self.finish(&mut txn).await
            }
            _ => Err(ResponseError::InvalidTxnState),
        }
    }

    /// [`complete`](Self::complete), with a failure answered as retriable
    /// (the prepared state stays and is retried).
    async fn finish(&self, txn: &mut Txn) -> Result<()> {
        self.complete(txn).await.map_err(|e| {
            tracing::warn!(txn = %txn.record.id, "finishing a transaction failed, will retry: {e:?}");
            ResponseError::ConcurrentTransactions
        })
    }

    /// Finishes a prepared commit or abort: appends the buffer (commit),
    /// syncs what it appended and commits the offsets, saves the completed
    /// state, and only then drops the buffer.
    async fn complete(&self, txn: &mut Txn) -> Result<()> {
        let mut record = txn.record.clone();
        if record.status == Status::PrepareCommit {
            record.sequences = self.append_buffer(&record).await?;
            let mut by_group: BTreeMap<&str, Vec<(String, u32, i64)>> = BTreeMap::new();
            for ((group, topic, partition), offset) in &record.offsets {
                // Taken from non-negative i64s (TxnOffsetCommit).
                let Ok(offset) = i64::try_from(*offset) else {
                    tracing::error!(txn = %record.id, "a damaged pending offset skipped");
                    continue;
                };
                by_group
                    .entry(group)
                    .or_default()
                    .push((topic.clone(), *partition, offset));
            }
            for (group, offsets) in by_group {
                match self.log.commit_offsets(group, offsets).await {
                    Ok(()) | Err(LogError::UnknownTopic(_) | LogError::UnknownPartition { .. }) => {
                    }
                    Err(e) => return Err(storage_error(&e)),
                }
            }
        }
        record.status = match record.status {
            Status::PrepareCommit => Status::CompleteCommit,
            _ => Status::CompleteAbort,
        };
        record.partitions.clear();
        record.groups.clear();
        record.offsets.clear();
        self.save(&record)?;
        self.track_offsets(&txn.record, false);
        txn.record = record;
        txn.recent.clear();
        txn.buffered = 0;
        self.drop_buffer(&txn.record.id).await;
        Ok(())
    }

    /// Appends a prepared transaction's buffer to its partitions and syncs
    /// them; returns the copier's next sequences.
    async fn append_buffer(&self, record: &TxnRecord) -> Result<BTreeMap<(String, u32), i32>> {
        let mut sequences = record.sequences.clone();
        let commits = match self.log.commits(&buffer_name(&record.id), 0).await {
            Ok(commits) => commits,
            Err(LogError::UnknownCommitLog(_)) => Vec::new(),
            Err(e) => return Err(storage_error(&e)),
        };
        let mut touched = BTreeSet::new();
        for commit in commits {
            let [destination, batch] = commit.values.as_slice() else {
                tracing::error!(txn = %record.id, "malformed transaction buffer entry skipped");
                continue;
            };
            let Ok(to) = postcard::from_bytes::<Destination>(destination) else {
                tracing::error!(txn = %record.id, "malformed transaction buffer entry skipped");
                continue;
            };
            let sequence = sequences
                .entry((to.topic.clone(), to.partition))
                .or_insert(0);
            let Ok(batch) = restamp(batch, record.copier, *sequence) else {
                tracing::error!(txn = %record.id, "malformed buffered batch skipped");
                continue;
            };
            *sequence = sequence.saturating_add(batch.view().last_offset_delta() as i32 + 1);
            match self.log.append(&to.topic, to.partition, batch).await {
                // Appended now, or by the attempt a crash interrupted.
                Ok(_) | Err(LogError::DuplicateSequence(_)) => {
                    touched.insert((to.topic, to.partition));
                }
                // Failures a retry would not cure: the batch cannot be
                // written (its topic went away or changed); the rest is.
                Err(
                    e @ (LogError::UnknownTopic(_)
                    | LogError::UnknownPartition { .. }
                    | LogError::BatchTooLarge { .. }
                    | LogError::MissingKey { .. }
                    | LogError::InvalidBatch(_)),
                ) => {
                    tracing::error!(txn = %record.id, "a committed batch could not be written: {e}");
                }
                Err(e) => return Err(storage_error(&e)),
            }
        }
        for (topic, partition) in touched {
            match self.log.sync(&topic, partition).await {
                Ok(()) | Err(LogError::UnknownTopic(_)) => {}
                Err(e) => return Err(storage_error(&e)),
            }
        }
        Ok(sequences)
    }

    async fn drop_buffer(&self, id: &str) {
        if let Err(e) = self.log.delete_commit_log(&buffer_name(id)).await {
            tracing::warn!(txn = %id, "dropping a transaction buffer failed: {e}");
        }
    }

    /// Aborts transactions open longer than their timeout (raising their
    /// epoch, so the producer that abandoned them is fenced) and retries
    /// commits and aborts that failed to finish.
    async fn reap(&self) {
        let txns: Vec<_> = self.lock().values().cloned().collect();
        let now = now_ms();
        for txn in txns {
            let Ok(mut txn) = txn.try_lock() else {
                continue;
            };
            match txn.record.status {
                Status::Ongoing
                    if now.saturating_sub(txn.record.started_ms) >= txn.record.timeout_ms =>
                {
                    tracing::info!(txn = %txn.record.id, "aborting a transaction past its timeout");
                    let mut aborting = txn.record.clone();
                    aborting.status = Status::PrepareAbort;
                    aborting.previous = Some((aborting.producer_id, aborting.epoch));
                    aborting.epoch = aborting.epoch.saturating_add(1);
                    if self.save(&aborting).is_ok() {
                        txn.record = aborting;
                        let _ = self.finish(&mut txn).await;
                    }
                }
                Status::PrepareCommit | Status::PrepareAbort => {
                    let _ = self.finish(&mut txn).await;
                }
                _ => {}
            }
        }
    }

    /// Forgets the transactional ids that are idle and were not used for
    /// `expire_after`, with their state files and any buffer left behind.
    async fn expire(&self, now: u64) {
        let idle = |txn: &Arc<tokio::sync::Mutex<Txn>>| {
            txn.try_lock()
                .is_ok_and(|txn| txn.expired_at(now, self.expire_after))
        };
        let candidates: Vec<_> = self
            .lock()
            .iter()
            .filter(|(_, txn)| idle(txn))
            .map(|(id, txn)| (id.clone(), txn.clone()))
            .collect();
        if candidates.is_empty() {
            return;
        }
        let _creating = self.creating.lock().await;
        for (id, txn) in candidates {
            let Ok(mut txn) = txn.try_lock() else {
                continue;
            };
            if !txn.expired_at(now, self.expire_after) {
                continue;
            }
            match self.forget(&id, &mut txn).await {
                Ok(()) => tracing::info!(
                    txn = %id,
                    "forgot a transactional id unused for {:?}",
                    self.expire_after
                ),
                Err(e) => {
                    tracing::warn!(txn = %id, "forgetting an expired transactional id failed: {e:#}");
                }
            }
        }
    }

    /// Forgets every transactional id that matches (a deleted tenant's),
    /// whatever its state: an open transaction is dropped unwritten, a
    /// prepared one is not finished. A producer still using one gets
    /// INVALID_PRODUCER_ID_MAPPING; an InitProducerId starts it afresh.
    pub async fn forget_ids(&self, matches: impl Fn(&str) -> bool) -> anyhow::Result<()> {
        let _creating = self.creating.lock().await;
        let doomed: Vec<_> = self
            .lock()
            .iter()
            .filter(|(id, _)| matches(id))
            .map(|(id, txn)| (id.clone(), txn.clone()))
            .collect();
        for (id, txn) in doomed {
            let mut txn = txn.lock().await;
            self.forget(&id, &mut txn)
                .await
                .with_context(|| format!("while forgetting transactional id {id:?}"))?;
        }
        Ok(())
    }

    /// Forgets one transactional id: its buffer, its state file, its entry
    /// (the caller holds `creating` and the id's lock).
    async fn forget(&self, id: &str, txn: &mut Txn) -> anyhow::Result<()> {
        self.log.delete_commit_log(&buffer_name(id)).await?;
        weir_core::files::remove_durably(&state_path(&self.dir, id))?;
        self.track_offsets(&txn.record, false);
        txn.expired = true;
        self.lock().remove(id);
        Ok(())
    }

    async fn new_producer_id(&self) -> Result<i64> {
        self.log
            .init_producer_id()
            .await
            .map_err(|e| storage_error(&e))
    }

    fn save(&self, record: &TxnRecord) -> Result<()> {
        let payload = postcard::to_allocvec(record).expect("transaction state serializes");
        let bytes = STATE_FORMAT.seal(&payload);
        weir_core::files::write_durably(&state_path(&self.dir, &record.id), &bytes).map_err(|e| {
            tracing::error!("saving transaction state failed: {e:#}");
            ResponseError::KafkaStorageError
        })
    }
}

/// Notes a buffered batch's sequences among the producer's latest.
fn remember(txn: &mut Txn, key: (String, u32), first: i32, last: i32) {
    let recent = txn.recent.entry(key).or_default();
    if recent.len() == KEPT_BATCHES {
        recent.pop_front();
    }
    recent.push_back((first, last));
}

fn check_producer(record: &TxnRecord, producer_id: i64, epoch: i16) -> Result<()> {
    if producer_id != record.producer_id {
        return Err(ResponseError::InvalidProducerIdMapping);
    }
    if epoch != record.epoch {
        return Err(ResponseError::InvalidProducerEpoch);
    }
    Ok(())
}

/// Whether two states hold the same partitions, groups and offsets.
fn same_work(a: &TxnRecord, b: &TxnRecord) -> bool {
    a.partitions == b.partitions && a.groups == b.groups && a.offsets == b.offsets
}

/// A buffered client batch as the log stores it: no longer transactional,
/// stamped with the coordinator's producer id and `sequence`.
fn restamp(
    bytes: &Bytes,
    copier: i64,
    sequence: i32,
) -> std::result::Result<Batch, weir_format::BatchError> {
    let mut batch = BytesMut::from(&bytes[..]);
    if batch.len() > field::ATTRIBUTES + 1 {
        batch[field::ATTRIBUTES + 1] &= !TRANSACTIONAL;
    }
    let batch = Batch::from_unsealed(batch.to_vec())?;
    Ok(batch.with_producer(ProducerStamp {
        id: copier,
        epoch: 0,
        base_sequence: sequence,
    }))
}

fn storage_error(error: &LogError) -> ResponseError {
    tracing::warn!("transaction storage failed: {error}");
    super::errors::code(error)
}

fn digest(id: &str) -> String {
    hex::encode(&Sha256::digest(id.as_bytes())[..16])
}

fn state_path(dir: &Path, id: &str) -> PathBuf {
    dir.join(format!("{}.txn", digest(id)))
}

fn buffer_name(id: &str) -> String {
    format!("kafka-txn.{}", digest(id))
}

fn buffer_settings() -> CommitLogSettings {
    CommitLogSettings {
        durability: weir_log::Durability::Always,
        segment_bytes: 64 << 20,
    }
}

/// The clock, in the unsigned milliseconds transaction records keep.
fn now_ms() -> u64 {
    weir_core::now_ms().max(0) as u64
}

#[cfg(test)]
mod tests {
    use super::*;
    use weir_format::{BatchBuilder, Record};
    use weir_log::{MemoryLog, TopicConfig};

    /// Kafka's default expiry of idle transactional ids.
    const WEEK: Duration = Duration::from_secs(7 * 24 * 3600);

    fn batch(value: &str, producer_id: i64, epoch: i16, sequence: i32) -> Batch {
        let mut builder = BatchBuilder::new();
        builder.push(&Record {
            value: Some(value.as_bytes()),
            ..Record::default()
        });
        let batch = builder.finish().unwrap();
        let mut bytes = batch.into_bytes().to_vec();
        bytes[field::ATTRIBUTES + 1] |= TRANSACTIONAL;
        Batch::from_unsealed(bytes)
            .unwrap()
            .with_producer(ProducerStamp {
                id: producer_id,
                epoch,
                base_sequence: sequence,
            })
    }

    #[tokio::test]
    async fn a_commit_redone_after_a_crash_appends_nothing_twice() {
        let dir = tempfile::tempdir().unwrap();
        let log: Arc<dyn StreamLog> = Arc::new(MemoryLog::new());
        log.create_topic("t", TopicConfig::default()).await.unwrap();
        let txns = Transactions::start(log.clone(), dir.path().join("txn"), WEEK)
            .await
            .unwrap();
        let (pid, epoch) = txns.init("tx", 60_000, None).await.unwrap();
        txns.add_partitions("tx", pid, epoch, vec![("t".into(), 0)])
            .await
            .unwrap();
        for (i, value) in ["a", "b", "c"].iter().enumerate() {
            txns.produce("tx", "t", 0, batch(value, pid, epoch, i as i32))
                .await
                .unwrap();
        }
        // A retry of the last batch is not buffered twice.
        txns.produce("tx", "t", 0, batch("c", pid, epoch, 2))
            .await
            .unwrap();
        let txn = txns.get("tx").unwrap();
        let before = txn.lock().await.record.clone();
        let buffered = log.commits(&buffer_name("tx"), 0).await.unwrap();
        assert_eq!(buffered.len(), 3);
        txns.end("tx", pid, epoch, true).await.unwrap();
        let end = || async { log.topic("t").await.unwrap().partitions[0].end_offset };
        assert_eq!(end().await, 3);

        // The crash: the appends were done but the completed state was not
        // saved. On restart the commit is redone from the prepared state.
        log.open_commit_log(&buffer_name("tx"), 1, buffer_settings())
            .await
            .unwrap();
        for commit in buffered {
            log.commit(&buffer_name("tx"), 0, commit.values)
                .await
                .unwrap();
        }
        let prepared = TxnRecord {
            status: Status::PrepareCommit,
            ..before
        };
        txns.save(&prepared).unwrap();
        drop((txn, txns));
        let txns = Transactions::start(log.clone(), dir.path().join("txn"), WEEK)
            .await
            .unwrap();
        assert_eq!(end().await, 3, "the redone commit appended nothing twice");
        let txn = txns.get("tx").unwrap();
        assert_eq!(txn.lock().await.record.status, Status::CompleteCommit);
        assert!(
            log.commits(&buffer_name("tx"), 0).await.is_err(),
            "buffer dropped"
        );
        // The next transaction's records follow.
        txns.add_partitions("tx", pid, epoch, vec![("t".into(), 0)])
            .await
            .unwrap();
        txns.produce("tx", "t", 0, batch("d", pid, epoch, 3))
            .await
            .unwrap();
        txns.end("tx", pid, epoch, true).await.unwrap();
        assert_eq!(end().await, 4);
        // A stale epoch is fenced.
        assert_eq!(
            txns.end("tx", pid, epoch - 1, true).await,
            Err(ResponseError::InvalidProducerEpoch)
        );
    }

    #[tokio::test]
    async fn retries_are_recognized_across_a_restart_and_bad_batches_refused_early() {
        let dir = tempfile::tempdir().unwrap();
        let log: Arc<dyn StreamLog> = Arc::new(MemoryLog::new());
        log.create_topic("t", TopicConfig::default()).await.unwrap();
        let compacted = TopicConfig {
            cleanup: Cleanup::Compact,
            ..TopicConfig::default()
        };
        log.create_topic("keyed", compacted).await.unwrap();
        let txns = Transactions::start(log.clone(), dir.path().join("txn"), WEEK)
            .await
            .unwrap();
        let (pid, epoch) = txns.init("tx", 60_000, None).await.unwrap();
        let parts = vec![("t".to_string(), 0), ("keyed".to_string(), 0)];
        txns.add_partitions("tx", pid, epoch, parts).await.unwrap();
        txns.produce("tx", "t", 0, batch("a", pid, epoch, 0))
            .await
            .unwrap();
        // A keyless record for a compacted topic would fail the commit:
        // refused now instead.
        assert_eq!(
            txns.produce("tx", "keyed", 0, batch("x", pid, epoch, 0))
                .await,
            Err(ResponseError::InvalidRecord)
        );
        drop(txns);
        let txns = Transactions::start(log.clone(), dir.path().join("txn"), WEEK)
            .await
            .unwrap();
        // The retry of the buffered batch is known after the restart.
        txns.produce("tx", "t", 0, batch("a", pid, epoch, 0))
            .await
            .unwrap();
        assert_eq!(
            txns.produce("tx", "t", 0, batch("z", pid, epoch, 5)).await,
            Err(ResponseError::OutOfOrderSequenceNumber)
        );
        txns.produce("tx", "t", 0, batch("b", pid, epoch, 1))
            .await
            .unwrap();
        txns.end("tx", pid, epoch, true).await.unwrap();
        let batches = log.read("t", 0, 0, 1 << 20).await.unwrap();
        let values: Vec<&[u8]> = batches
            .iter()
            .flat_map(|b| b.records())
            .map(|r| r.value.unwrap())
            .collect();
        assert_eq!(values, [b"a".as_slice(), b"b".as_slice()]);
        // An InitProducerId retried with the epoch it replaced gets the same answer.
        let bumped = txns.init("tx", 60_000, Some((pid, epoch))).await.unwrap();
        assert_eq!(bumped, (pid, epoch + 1));
        assert_eq!(
            txns.init("tx", 60_000, Some((pid, epoch))).await,
            Ok(bumped)
        );
        assert_eq!(
            txns.init("tx", 60_000, Some((pid, epoch + 7))).await,
            Err(ResponseError::InvalidProducerEpoch)
        );
    }

    #[tokio::test]
    async fn offsets_of_open_transactions_are_pending_until_they_end() {
        let dir = tempfile::tempdir().unwrap();
        let log: Arc<dyn StreamLog> = Arc::new(MemoryLog::new());
        log.create_topic("in", TopicConfig::default())
            .await
            .unwrap();
        let txns = Transactions::start(log.clone(), dir.path().join("txn"), WEEK)
            .await
            .unwrap();
        let (pid, epoch) = txns.init("tx", 60_000, None).await.unwrap();
        txns.add_group("tx", pid, epoch, "g").await.unwrap();
        txns.commit_offsets("tx", pid, epoch, "g", vec![("in".into(), 0, 7)])
            .await
            .unwrap();
        assert!(txns.offset_pending("g", "in", 0));
        assert!(!txns.offset_pending("g", "in", 1));
        drop(txns);
        // Still pending after a restart, until the transaction ends.
        let txns = Transactions::start(log.clone(), dir.path().join("txn"), WEEK)
            .await
            .unwrap();
        assert!(txns.offset_pending("g", "in", 0));
        txns.end("tx", pid, epoch, true).await.unwrap();
        assert!(!txns.offset_pending("g", "in", 0));
        assert_eq!(
            log.group_offsets("g").await.unwrap(),
            vec![("in".to_string(), 0, 7)]
        );
    }
    #[tokio::test]
    async fn idle_transactional_ids_are_forgotten_and_start_afresh() {
        let dir = tempfile::tempdir().unwrap();
        let log: Arc<dyn StreamLog> = Arc::new(MemoryLog::new());
        log.create_topic("t", TopicConfig::default()).await.unwrap();
        let state = dir.path().join("txn");
        let expire_after = Duration::from_secs(1);
        let txns = Transactions::start(log.clone(), state.clone(), expire_after)
            .await
            .unwrap();
        let (idle_pid, idle_epoch) = txns.init("idle", 60_000, None).await.unwrap();
        let (busy_pid, busy_epoch) = txns.init("busy", 60_000, None).await.unwrap();
        let (open_pid, open_epoch) = txns.init("open", 60_000, None).await.unwrap();
        txns.add_partitions("open", open_pid, open_epoch, vec![("t".into(), 0)])
            .await
            .unwrap();
        // "busy" is used all along; "idle" not at all; "open" has a
        // transaction open (its own timeout ends it, not expiry).
        for _ in 0..5 {
            tokio::time::sleep(Duration::from_millis(300)).await;
            txns.end("busy", busy_pid, busy_epoch, false).await.unwrap();
        }
        txns.expire(now_ms()).await;
        assert!(txns.get("idle").is_none(), "the idle id is forgotten");
        assert!(!state_path(&state, "idle").exists(), "with its state file");
        assert_eq!(
            txns.add_partitions("idle", idle_pid, idle_epoch, vec![("t".into(), 0)])
                .await,
            Err(ResponseError::InvalidProducerIdMapping)
        );
        assert!(txns.get("busy").is_some(), "an id in use is kept");
        txns.end("open", open_pid, open_epoch, true).await.unwrap();

        // After a restart the forgotten id stays forgotten, and an
        // InitProducerId starts it afresh under a new producer id.
        drop(txns);
        let txns = Transactions::start(log.clone(), state, WEEK).await.unwrap();
        assert!(txns.get("idle").is_none());
        assert!(txns.get("busy").is_some() && txns.get("open").is_some());
        // A buffer an earlier life of the id left behind is dropped first.
        log.open_commit_log(&buffer_name("idle"), 1, buffer_settings())
            .await
            .unwrap();
        let stale = postcard::to_allocvec(&Destination {
            topic: "t".into(),
            partition: 0,
        })
        .unwrap();
        let batch = batch("stale", idle_pid, idle_epoch, 0).into_bytes();
        log.commit(&buffer_name("idle"), 0, vec![stale.into(), batch])
            .await
            .unwrap();
        let (pid, epoch) = txns.init("idle", 60_000, None).await.unwrap();
        assert_ne!(pid, idle_pid);
        assert_eq!(epoch, 0);
        assert!(log.commits(&buffer_name("idle"), 0).await.is_err());
    }

    #[tokio::test]
    async fn forgotten_ids_lose_their_open_transaction_and_start_afresh() {
        let dir = tempfile::tempdir().unwrap();
        let log: Arc<dyn StreamLog> = Arc::new(MemoryLog::new());
        log.create_topic("acme.t", TopicConfig::default())
            .await
            .unwrap();
        let txns = Transactions::start(log.clone(), dir.path().join("txn"), WEEK)
            .await
            .unwrap();
        let (pid, epoch) = txns.init("acme.tx", 60_000, None).await.unwrap();
        txns.add_partitions("acme.tx", pid, epoch, vec![("acme.t".into(), 0)])
            .await
            .unwrap();
        txns.add_group("acme.tx", pid, epoch, "acme.g")
            .await
            .unwrap();
        txns.commit_offsets(
            "acme.tx",
            pid,
            epoch,
            "acme.g",
            vec![("acme.t".into(), 0, 1)],
        )
        .await
        .unwrap();
        txns.produce("acme.tx", "acme.t", 0, batch("a", pid, epoch, 0))
            .await
            .unwrap();
        txns.init("other.tx", 60_000, None).await.unwrap();
        assert!(txns.offset_pending("acme.g", "acme.t", 0));

        txns.forget_ids(|id| id.starts_with("acme.")).await.unwrap();
        assert!(txns.get("acme.tx").is_none());
        assert!(txns.get("other.tx").is_some(), "other ids are kept");
        assert!(!state_path(&dir.path().join("txn"), "acme.tx").exists());
        assert!(
            log.commits(&buffer_name("acme.tx"), 0).await.is_err(),
            "buffer dropped"
        );
        assert!(!txns.offset_pending("acme.g", "acme.t", 0));
        assert_eq!(
            txns.end("acme.tx", pid, epoch, true).await,
            Err(ResponseError::InvalidProducerIdMapping)
        );
        assert_eq!(
            log.topic("acme.t").await.unwrap().partitions[0].end_offset,
            0
        );
        // The id starts afresh, also after a restart.
        drop(txns);
        let txns = Transactions::start(log.clone(), dir.path().join("txn"), WEEK)
            .await
            .unwrap();
        let (fresh, epoch) = txns.init("acme.tx", 60_000, None).await.unwrap();
        assert_ne!(fresh, pid);
        assert_eq!(epoch, 0);
    }
}
