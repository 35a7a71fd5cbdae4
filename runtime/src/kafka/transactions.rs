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
//! has. The state of every transactional id is a small file written
//! atomically under `<data>/kafka/transactions/`.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use kafka_protocol::ResponseError;
use log_core::{Batch, LogError, ProducerStamp};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use weir_format::field;

use crate::stream_log::{CommitLogSettings, StreamLog};

/// Longest transaction timeout a producer may ask for (Kafka's
/// `transaction.max.timeout.ms`).
const MAX_TIMEOUT_MS: u64 = 15 * 60 * 1000;
/// How often abandoned transactions are looked for.
const REAP_EVERY: Duration = Duration::from_secs(1);
/// The transactional attribute bit of a batch.
const TRANSACTIONAL: u8 = 0x10;

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

/// What is kept of one transactional id, durably.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct TxnRecord {
    id: String,
    producer_id: i64,
    epoch: i16,
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
    /// The producer's last sequence per partition in this epoch (retries
    /// are answered, not buffered twice).
    last_sequence: HashMap<(String, u32), i32>,
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
    txns: Mutex<HashMap<String, Arc<tokio::sync::Mutex<Txn>>>>,
}

impl Transactions {
    /// Loads every transaction's state, finishes commits and aborts a
    /// crash interrupted, and starts aborting abandoned transactions.
    pub async fn start(log: Arc<dyn StreamLog>, dir: PathBuf) -> anyhow::Result<Arc<Transactions>> {
        std::fs::create_dir_all(&dir)
            .map_err(|e| anyhow::anyhow!("while creating {}: {e}", dir.display()))?;
        let transactions = Arc::new(Transactions {
            log,
            dir: dir.clone(),
            txns: Mutex::new(HashMap::new()),
        });
        for entry in std::fs::read_dir(&dir)? {
            let path = entry?.path();
            if path.extension().is_none_or(|e| e != "txn") {
                continue;
            }
            let bytes = std::fs::read(&path)?;
            let record: TxnRecord = postcard::from_bytes(&bytes).map_err(|e| {
                anyhow::anyhow!("transaction state {} is damaged: {e}", path.display())
            })?;
            let id = record.id.clone();
            let txn = Arc::new(tokio::sync::Mutex::new(Txn {
                record,
                last_sequence: HashMap::new(),
            }));
            transactions.lock().insert(id, txn.clone());
            let mut txn = txn.lock().await;
            match txn.record.status {
                Status::PrepareCommit | Status::PrepareAbort => {
                    transactions.complete(&mut txn).await.map_err(|e| {
                        anyhow::anyhow!("finishing transaction {:?}: {e:?}", txn.record.id)
                    })?;
                }
                _ => {}
            }
        }
        let weak = Arc::downgrade(&transactions);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(REAP_EVERY);
            loop {
                tick.tick().await;
                let Some(transactions) = weak.upgrade() else {
                    return;
                };
                transactions.abort_expired().await;
            }
        });
        Ok(transactions)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<tokio::sync::Mutex<Txn>>>> {
        self.txns.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn get(&self, id: &str) -> Option<Arc<tokio::sync::Mutex<Txn>>> {
        self.lock().get(id).cloned()
    }

    /// InitProducerId for a transactional id: a new producer id, or the
    /// same one with the epoch raised (fencing the previous instance, whose
    /// unfinished transaction is aborted).
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
        let existing = self.get(id);
        let Some(txn) = existing else {
            let producer_id = self.new_producer_id().await?;
            let copier = self.new_producer_id().await?;
            let record = TxnRecord {
                id: id.to_string(),
                producer_id,
                epoch: 0,
                timeout_ms,
                status: Status::Empty,
                started_ms: 0,
                partitions: BTreeSet::new(),
                groups: BTreeSet::new(),
                offsets: BTreeMap::new(),
                copier,
                sequences: BTreeMap::new(),
            };
            self.save(&record)?;
            let txn = Txn {
                record,
                last_sequence: HashMap::new(),
            };
            // Another InitProducerId for the same id may have won the race.
            let txn = self
                .lock()
                .entry(id.to_string())
                .or_insert_with(|| Arc::new(tokio::sync::Mutex::new(txn)))
                .clone();
            let txn = txn.lock().await;
            return Ok((txn.record.producer_id, txn.record.epoch));
        };
        let mut txn = txn.lock().await;
        if let Some((pid, epoch)) = current.filter(|(pid, _)| *pid >= 0)
            && (pid != txn.record.producer_id || epoch != txn.record.epoch)
        {
            return Err(ResponseError::InvalidProducerEpoch);
        }
        match txn.record.status {
            Status::Ongoing => {
                txn.record.status = Status::PrepareAbort;
                self.save(&txn.record)?;
                self.complete(&mut txn).await?;
            }
            Status::PrepareCommit | Status::PrepareAbort => self.complete(&mut txn).await?,
            _ => {}
        }
        if txn.record.epoch >= i16::MAX - 1 {
            txn.record.producer_id = self.new_producer_id().await?;
            txn.record.epoch = 0;
        } else {
            txn.record.epoch += 1;
        }
        txn.record.timeout_ms = timeout_ms;
        txn.record.status = Status::Empty;
        txn.last_sequence.clear();
        self.save(&txn.record)?;
        Ok((txn.record.producer_id, txn.record.epoch))
    }

    /// Runs `change` on a transaction of this producer that may take new
    /// work (not while a commit or abort is being finished).
    async fn with_ongoing<T>(
        &self,
        id: &str,
        producer_id: i64,
        epoch: i16,
        change: impl FnOnce(&mut TxnRecord) -> Result<T>,
    ) -> Result<T> {
        let txn = self
            .get(id)
            .ok_or(ResponseError::InvalidProducerIdMapping)?;
        let mut txn = txn.lock().await;
        check_producer(&txn.record, producer_id, epoch)?;
        match txn.record.status {
            Status::PrepareCommit | Status::PrepareAbort => {
                return Err(ResponseError::ConcurrentTransactions);
            }
            Status::Empty | Status::CompleteCommit | Status::CompleteAbort => {
                txn.record.status = Status::Ongoing;
                txn.record.started_ms = now_ms();
            }
            Status::Ongoing => {}
        }
        let before = txn.record.clone();
        let result = change(&mut txn.record)?;
        if !same_work(&before, &txn.record) || before.status != txn.record.status {
            self.save(&txn.record)?;
        }
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
        self.with_ongoing(id, producer_id, epoch, |record| {
            if !record.groups.contains(group) {
                return Err(ResponseError::InvalidTxnState);
            }
            for (topic, partition, offset) in offsets {
                record
                    .offsets
                    .insert((group.to_string(), topic, partition), offset);
            }
            Ok(())
        })
        .await
    }

    /// A transactional batch: buffered until the transaction ends. A retry
    /// of a batch already buffered is answered without buffering it again.
    pub async fn produce(&self, id: &str, topic: &str, partition: u32, batch: Batch) -> Result<()> {
        let stamp = batch.producer().ok_or(ResponseError::InvalidRecord)?;
        let txn = self
            .get(id)
            .ok_or(ResponseError::InvalidProducerIdMapping)?;
        let mut txn = txn.lock().await;
        check_producer(&txn.record, stamp.id, stamp.epoch)?;
        let key = (topic.to_string(), partition);
        if txn.record.status != Status::Ongoing || !txn.record.partitions.contains(&key) {
            return Err(ResponseError::InvalidTxnState);
        }
        let last_delta = batch.view().last_offset_delta() as i32;
        match txn.last_sequence.get(&key) {
            Some(&last) if stamp.base_sequence <= last => return Ok(()),
            Some(&last) if stamp.base_sequence != last + 1 => {
                return Err(ResponseError::OutOfOrderSequenceNumber);
            }
            _ => {}
        }
        let destination = postcard::to_allocvec(&Destination {
            topic: topic.to_string(),
            partition,
        })
        .expect("destinations serialize");
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
        txn.last_sequence
            .insert(key, stamp.base_sequence.saturating_add(last_delta));
        Ok(())
    }

    /// EndTxn: commit or abort. A retry of an end already done succeeds.
    pub async fn end(&self, id: &str, producer_id: i64, epoch: i16, commit: bool) -> Result<()> {
        let txn = self
            .get(id)
            .ok_or(ResponseError::InvalidProducerIdMapping)?;
        let mut txn = txn.lock().await;
        check_producer(&txn.record, producer_id, epoch)?;
        match (txn.record.status, commit) {
            (Status::Ongoing, _) => {
                txn.record.status = if commit {
                    Status::PrepareCommit
                } else {
                    Status::PrepareAbort
                };
                self.save(&txn.record)?;
                self.complete(&mut txn).await
            }
            (Status::Empty, _)
            | (Status::CompleteCommit, true)
            | (Status::CompleteAbort, false) => Ok(()),
            (Status::PrepareCommit, true) | (Status::PrepareAbort, false) => {
                self.complete(&mut txn).await
            }
            _ => Err(ResponseError::InvalidTxnState),
        }
    }

    /// Finishes a prepared commit or abort: appends (or drops) the buffer,
    /// commits the offsets, and saves the completed state.
    async fn complete(&self, txn: &mut Txn) -> Result<()> {
        let record = &mut txn.record;
        let buffer = buffer_name(&record.id);
        if record.status == Status::PrepareCommit {
            let mut sequences = record.sequences.clone();
            let commits = match self.log.commits(&buffer, 0).await {
                Ok(commits) => commits,
                Err(LogError::UnknownTopic(_)) => Vec::new(),
                Err(e) => return Err(storage_error(&e)),
            };
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
                    Ok(_) | Err(LogError::DuplicateSequence { .. }) => {}
                    // The topic went away meanwhile: nothing to write to.
                    Err(LogError::UnknownTopic(_) | LogError::TopicDeleted(_)) => {}
                    Err(e) => return Err(storage_error(&e)),
                }
            }
            let mut by_group: BTreeMap<&str, Vec<(String, u32, u64)>> = BTreeMap::new();
            for ((group, topic, partition), offset) in &record.offsets {
                by_group
                    .entry(group)
                    .or_default()
                    .push((topic.clone(), *partition, *offset));
            }
            for (group, offsets) in by_group {
                match self.log.commit_offsets(group, offsets).await {
                    Ok(()) | Err(LogError::UnknownTopic(_) | LogError::UnknownPartition { .. }) => {
                    }
                    Err(e) => return Err(storage_error(&e)),
                }
            }
            record.sequences = sequences;
        }
        self.log
            .delete_commit_log(&buffer)
            .await
            .map_err(|e| storage_error(&e))?;
        record.status = match record.status {
            Status::PrepareCommit => Status::CompleteCommit,
            _ => Status::CompleteAbort,
        };
        record.partitions.clear();
        record.groups.clear();
        record.offsets.clear();
        self.save(record)
    }

    /// Aborts transactions open longer than their timeout and raises their
    /// epoch, so the producer that abandoned them is fenced.
    async fn abort_expired(&self) {
        let txns: Vec<_> = self.lock().values().cloned().collect();
        let now = now_ms();
        for txn in txns {
            let Ok(mut txn) = txn.try_lock() else {
                continue;
            };
            let record = &txn.record;
            if record.status != Status::Ongoing
                || now.saturating_sub(record.started_ms) < record.timeout_ms
            {
                continue;
            }
            tracing::info!(txn = %record.id, "aborting a transaction past its timeout");
            txn.record.status = Status::PrepareAbort;
            txn.record.epoch = txn.record.epoch.saturating_add(1);
            let done = match self.save(&txn.record) {
                Ok(()) => self.complete(&mut txn).await,
                Err(e) => Err(e),
            };
            if let Err(e) = done {
                tracing::warn!(txn = %txn.record.id, "aborting failed, will retry: {e:?}");
            }
        }
    }

    async fn new_producer_id(&self) -> Result<i64> {
        self.log
            .init_producer_id()
            .await
            .map_err(|e| storage_error(&e))
    }

    fn save(&self, record: &TxnRecord) -> Result<()> {
        let bytes = postcard::to_allocvec(record).expect("transaction state serializes");
        crate::files::write_durably(&state_path(&self.dir, &record.id), &bytes).map_err(|e| {
            tracing::error!("saving transaction state failed: {e:#}");
            ResponseError::KafkaStorageError
        })
    }
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
        durability: log_core::Durability::Always,
        segment_bytes: 64 << 20,
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stream_log::EmbeddedLog;
    use log_core::{BatchBuilder, Log, Record, TopicConfig};

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
        let log: Arc<dyn StreamLog> =
            Arc::new(EmbeddedLog::new(Log::open(dir.path().join("log")).unwrap()));
        log.create_topic("t", TopicConfig::default()).await.unwrap();
        let txns = Transactions::start(log.clone(), dir.path().join("txn"))
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
        let end = || async { log.topic("t").unwrap().partitions[0].end_offset };
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
        let txns = Transactions::start(log.clone(), dir.path().join("txn"))
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
}
