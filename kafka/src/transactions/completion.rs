//! Ending a transaction: a prepared commit appends the buffered batches to
//! their partitions (restamped with the coordinator's own producer id, so a
//! commit redone after a crash appends nothing twice), syncs them and
//! commits the offsets; a prepared abort only drops the buffer. Either way
//! the completed state is saved before the buffer is dropped. Deciding to
//! prepare is the parent module's (EndTxn, a new producer, a timeout).

use std::collections::{BTreeMap, BTreeSet};

use bytes::{Bytes, BytesMut};
use kafka_protocol::ResponseError;
use weir_format::field;
use weir_format::{Batch, ProducerStamp};
use weir_log::LogError;

use super::state::{Destination, Status, Txn, TxnRecord, buffer_name};
use super::{Result, TRANSACTIONAL, Transactions, storage_error};

impl Transactions {
    /// [`complete`](Self::complete), with a failure answered as retriable
    /// (the prepared state stays and is retried).
    pub(super) async fn finish(&self, txn: &mut Txn) -> Result<()> {
        self.complete(txn).await.map_err(|e| {
            tracing::warn!(txn = %txn.record.id, "finishing a transaction failed, will retry: {e:?}");
            ResponseError::ConcurrentTransactions
        })
    }

    /// Finishes a prepared commit or abort: appends the buffer (commit),
    /// syncs what it appended and commits the offsets, saves the completed
    /// state, and only then drops the buffer.
    pub(super) async fn complete(&self, txn: &mut Txn) -> Result<()> {
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

    pub(super) async fn drop_buffer(&self, id: &str) {
        if let Err(e) = self.log.delete_commit_log(&buffer_name(id)).await {
            tracing::warn!(txn = %id, "dropping a transaction buffer failed: {e}");
        }
    }
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
