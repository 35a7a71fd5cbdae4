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
//! Encoding: a commit is appended as one batch whose first record is the
//! commit's description (postcard: compact, serde, with a format version
//! first) and whose other records are the output batches, as they are, in
//! the order the description lists their destinations.

use std::collections::BTreeMap;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use weir_format::Batch;

use weir_host::StateDelta;
use weir_log::CommitRecord;

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
    /// Where each output batch (the commit's other records) goes.
    pub outputs: Vec<(String, u32)>,
    /// In a snapshot: the next sequence per output partition (earlier
    /// commits, which imply them, may be gone).
    pub sequences: Vec<(String, u32, i32)>,
}

impl Commit {
    pub fn new(
        input_end: u64,
        producer_id: i64,
        stages: Vec<(String, StateDelta)>,
        outputs: Vec<(String, u32)>,
    ) -> Commit {
        Commit {
            version: FORMAT_VERSION,
            kind: CommitKind::Delta,
            input_end,
            producer_id,
            stages,
            outputs,
            sequences: Vec::new(),
        }
    }

    /// A snapshot: complete states, the position and the sequences, so
    /// every earlier commit can be forgotten.
    pub fn snapshot(
        input_end: u64,
        producer_id: i64,
        stages: Vec<(String, StateDelta)>,
        sequences: &BTreeMap<(String, u32), i32>,
    ) -> Commit {
        Commit {
            version: FORMAT_VERSION,
            kind: CommitKind::Snapshot,
            input_end,
            producer_id,
            stages,
            outputs: Vec::new(),
            sequences: sequences
                .iter()
                .map(|((t, p), s)| (t.clone(), *p, *s))
                .collect(),
        }
    }

    /// The values to append: this description, then `batches` (one per
    /// entry of `outputs`).
    pub fn encode(&self, batches: &[Batch]) -> Vec<Bytes> {
        debug_assert_eq!(batches.len(), self.outputs.len());
        let description = postcard::to_allocvec(self).expect("commit records always serialize");
        std::iter::once(Bytes::from(description))
            .chain(batches.iter().map(|b| b.as_bytes().clone()))
            .collect()
    }

    /// A commit and its output batches, checked.
    pub fn decode(record: &CommitRecord) -> Result<(Commit, Vec<Pending>), String> {
        let at = record.offset;
        let (description, batches) = record
            .values
            .split_first()
            .ok_or_else(|| format!("commit at offset {at} is empty"))?;
        let commit: Commit = postcard::from_bytes(description)
            .map_err(|e| format!("commit at offset {at} is corrupt: {e}"))?;
        if commit.version != FORMAT_VERSION {
            return Err(format!(
                "commit at offset {at} has format version {}, this build reads {FORMAT_VERSION}",
                commit.version
            ));
        }
        if batches.len() != commit.outputs.len() {
            return Err(format!(
                "commit at offset {at} lists {} outputs but holds {}",
                commit.outputs.len(),
                batches.len()
            ));
        }
        let outputs = commit
            .outputs
            .iter()
            .zip(batches)
            .map(|((topic, partition), bytes)| {
                let batch = Batch::from_bytes(bytes.clone()).map_err(|e| {
                    format!("commit at offset {at}: output batch for {topic} is invalid: {e}")
                })?;
                Ok(Pending {
                    topic: topic.clone(),
                    partition: *partition,
                    batch,
                })
            })
            .collect::<Result<Vec<_>, String>>()?;
        Ok((commit, outputs))
    }
}

/// An output batch to append to a topic partition (stamped).
#[derive(Debug, Clone)]
pub struct Pending {
    pub topic: String,
    pub partition: u32,
    pub batch: Batch,
}

/// The sequence after a batch of `records` starting at `base`. The log
/// refuses sequences past `i32::MAX`; tasks move to a new producer id
/// long before (see [`SEQUENCE_ROTATION`]).
pub fn next_sequence(base: i32, records: usize) -> i32 {
    base.saturating_add(i32::try_from(records).unwrap_or(i32::MAX))
}

/// A task takes a new producer id (and starts its sequences at 0 again)
/// once a sequence passes this, far below `i32::MAX` minus the most one
/// commit can emit.
pub const SEQUENCE_ROTATION: i32 = 1 << 30;

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
            let (commit, outputs) = Commit::decode(record)?;
            recovered.apply(record, commit, outputs)?;
        }
        Ok(recovered)
    }

    fn apply(
        &mut self,
        record: &CommitRecord,
        commit: Commit,
        outputs: Vec<Pending>,
    ) -> Result<(), String> {
        self.input_end = Some(commit.input_end);
        if self.producer_id != Some(commit.producer_id) {
            // A new producer id starts its sequences again.
            self.sequences.clear();
            self.producer_id = Some(commit.producer_id);
        }
        if commit.kind == CommitKind::Snapshot {
            self.states.clear();
            self.sequences = commit
                .sequences
                .into_iter()
                .map(|(t, p, s)| ((t, p), s))
                .collect();
        }
        for (key, state) in commit.stages {
            self.states.entry(key).or_default().push(state);
        }
        for output in &outputs {
            let stamp = output.batch.producer().ok_or_else(|| {
                format!(
                    "commit at offset {}: output batch for {} carries no producer stamp",
                    record.offset, output.topic
                )
            })?;
            let next = next_sequence(stamp.base_sequence, output.batch.record_count());
            self.sequences
                .insert((output.topic.clone(), output.partition), next);
        }
        self.unpublished = outputs;
        Ok(())
    }
}
