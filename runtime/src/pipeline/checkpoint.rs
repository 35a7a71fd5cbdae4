//! Commit records: the unit of exactly-once processing (see
//! `docs/pipelines.md`).
//!
//! After a task runs an input range through its stages, it appends one
//! commit record to its commit log holding the input position after the
//! range, every stage's state changes, and the output batches, already
//! stamped with the task's producer id and their sequence numbers. That
//! append is the commit point. The task then publishes the outputs; a
//! publish repeated after a crash is recognised by its sequence and not
//! written twice.
//!
//! Recovery folds the commit log into [`Recovered`]: the position, each
//! stage's checkpoints, the next sequence per output partition and the
//! last commit's outputs (which may not have been published yet).
//!
//! Encoding: postcard (compact, serde), with a format version first.

use std::collections::BTreeMap;

use bytes::Bytes;
use log_core::Batch;
use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;

use crate::operator::StateDelta;
use crate::stream_log::CommitRecord;

const FORMAT_VERSION: u8 = 1;

/// Whether a commit's stage states are changes or complete.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum CommitKind {
    /// Changes since the previous commit.
    Delta,
    /// Complete states: earlier commits are no longer needed for them.
    Snapshot,
}

/// One commit record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Commit {
    pub version: u8,
    pub kind: CommitKind,
    /// The next input offset to process.
    pub input_end: u64,
    pub producer_id: i64,
    /// Per stage: its state key (module name and occurrence) and state.
    pub stages: Vec<(String, StateDelta)>,
    pub outputs: Vec<Output>,
}

/// An output batch bound for a topic partition, stamped with the task's
/// producer id and its sequence.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Output {
    pub topic: String,
    pub partition: u32,
    pub batch: ByteBuf,
}

impl Commit {
    pub fn new(
        input_end: u64,
        producer_id: i64,
        stages: Vec<(String, StateDelta)>,
        outputs: Vec<Output>,
    ) -> Commit {
        Commit {
            version: FORMAT_VERSION,
            kind: CommitKind::Delta,
            input_end,
            producer_id,
            stages,
            outputs,
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        postcard::to_allocvec(self).expect("commit records always serialize")
    }

    pub fn decode(record: &CommitRecord) -> Result<Commit, String> {
        let commit: Commit = postcard::from_bytes(&record.value)
            .map_err(|e| format!("commit record at offset {} is corrupt: {e}", record.offset))?;
        if commit.version != FORMAT_VERSION {
            return Err(format!(
                "commit record at offset {} has format version {}, this build reads {FORMAT_VERSION}",
                record.offset, commit.version
            ));
        }
        Ok(commit)
    }
}

/// An output batch to append to a topic partition (stamped).
#[derive(Debug, Clone)]
pub struct Pending {
    pub topic: String,
    pub partition: u32,
    pub batch: Batch,
}

/// The sequence after a batch of `records` starting at `base` (sequences
/// wrap to 0 after `i32::MAX`, as Kafka's do).
pub fn next_sequence(base: i32, records: usize) -> i32 {
    (i64::from(base) + records as i64).rem_euclid(i64::from(i32::MAX) + 1) as i32
}

/// Where a task stands according to its commit log.
#[derive(Debug, Default)]
pub struct Recovered {
    /// The next input offset to process; `None` if nothing was committed.
    pub input_end: Option<u64>,
    pub producer_id: Option<i64>,
    /// State key → checkpoints to replay, oldest first.
    pub states: BTreeMap<String, Vec<StateDelta>>,
    /// (topic, partition) → next sequence number.
    pub sequences: BTreeMap<(String, u32), i32>,
    /// The last commit's outputs, to publish again (duplicates are refused
    /// by sequence, so this is safe when they were published).
    pub unpublished: Vec<Pending>,
}

impl Recovered {
    /// Replays a commit log.
    pub fn fold(records: &[CommitRecord]) -> Result<Recovered, String> {
        let mut recovered = Recovered::default();
        for record in records {
            recovered.apply(record, Commit::decode(record)?)?;
        }
        Ok(recovered)
    }

    fn apply(&mut self, record: &CommitRecord, commit: Commit) -> Result<(), String> {
        self.input_end = Some(commit.input_end);
        if self.producer_id != Some(commit.producer_id) {
            // A new producer id starts its sequences again.
            self.sequences.clear();
            self.producer_id = Some(commit.producer_id);
        }
        for (key, state) in commit.stages {
            let checkpoints = self.states.entry(key).or_default();
            if commit.kind == CommitKind::Snapshot {
                checkpoints.clear();
            }
            checkpoints.push(state);
        }
        self.unpublished.clear();
        for output in commit.outputs {
            let batch = Batch::from_bytes(Bytes::from(output.batch.into_vec())).map_err(|e| {
                format!(
                    "commit record at offset {}: output batch for {} is invalid: {e}",
                    record.offset, output.topic
                )
            })?;
            let stamp = batch.producer().ok_or_else(|| {
                format!(
                    "commit record at offset {}: output batch for {} carries no producer stamp",
                    record.offset, output.topic
                )
            })?;
            let next = next_sequence(stamp.base_sequence, batch.record_count());
            self.sequences
                .insert((output.topic.clone(), output.partition), next);
            self.unpublished.push(Pending {
                topic: output.topic,
                partition: output.partition,
                batch,
            });
        }
        Ok(())
    }
}
