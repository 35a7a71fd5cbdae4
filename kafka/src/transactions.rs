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

mod completion;
mod expiry;
mod state;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use bytes::Bytes;
use kafka_protocol::ResponseError;
use tokio::sync::OwnedMutexGuard;
use weir_format::Batch;
use weir_log::{Cleanup, LogError, StreamLog};

use state::{
    Destination, STATE_FORMAT, Status, Txn, TxnRecord, buffer_name, buffer_settings, state_path,
};

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

fn storage_error(error: &LogError) -> ResponseError {
    tracing::warn!("transaction storage failed: {error}");
    super::errors::code(error)
}

/// The clock, in the unsigned milliseconds transaction records keep.
fn now_ms() -> u64 {
    weir_core::now_ms().max(0) as u64
}
