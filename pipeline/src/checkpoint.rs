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
//! outputs that may not have been published yet (the last commit's, and
//! the one before's unless the last says they were out).
//!
//! Encoding: a commit is appended as one batch whose first record is the
//! commit's description (postcard: compact, serde, with a format version
//! first), then the output batches, as they are, in the order the
//! description lists their destinations, then (from version 2) one byte
//! saying whether every earlier commit's outputs were published when this
//! one was appended: a task publishes a round's outputs while it appends
//! the next commit, so recovery publishes the previous commit's outputs
//! again only when that byte says they may not be out.

use std::collections::BTreeMap;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use weir_format::Batch;

use weir_core::format::Format;
use weir_host::StateDelta;
use weir_log::CommitRecord;

/// The commit description's format; its version is its first byte
/// (postcard writes the `version` field first, as that byte).
const COMMIT_FORMAT: Format = Format {
    what: "a commit record",
    current: 2,
    oldest: 1,
};
const FORMAT_VERSION: u8 = COMMIT_FORMAT.current;

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

    /// This description, then `batches` (one per entry of `outputs`):
    /// the commit to append, once it is known whether the earlier
    /// commits' outputs are out.
    pub fn encode(&self, batches: &[Batch]) -> EncodedCommit {
        debug_assert_eq!(batches.len(), self.outputs.len());
        let description = postcard::to_allocvec(self).expect("commit records always serialize");
        EncodedCommit(
            std::iter::once(Bytes::from(description))
                .chain(batches.iter().map(|b| b.as_bytes().clone()))
                .collect(),
        )
    }

    /// A commit and its output batches, checked.
    pub fn decode(record: &CommitRecord) -> Result<Decoded, String> {
        let at = record.offset;
        let (description, rest) = record
            .values
            .split_first()
            .ok_or_else(|| format!("commit at offset {at} is empty"))?;
        let version = description.first().copied().unwrap_or(0);
        COMMIT_FORMAT
            .check(u64::from(version))
            .map_err(|e| format!("commit at offset {at}: {e}"))?;
        // Version 1 had no marker: its task published before committing again.
        let (batches, earlier_published) = match rest.split_last() {
            Some((marker, batches)) if version >= 2 => match &marker[..] {
                [flag @ (0 | 1)] => (batches, *flag == 1),
                _ => {
                    return Err(format!(
                        "commit at offset {at} has a bad publication marker"
                    ));
                }
            },
            None if version >= 2 => {
                return Err(format!("commit at offset {at} has no publication marker"));
            }
            _ => (rest, true),
        };
        let commit: Commit = postcard::from_bytes(description)
            .map_err(|e| format!("commit at offset {at} is corrupt: {e}"))?;
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
        Ok(Decoded {
            commit,
            outputs,
            earlier_published,
        })
    }
}

/// A commit's values before its publication marker (see the module docs).
#[derive(Debug, Clone)]
pub struct EncodedCommit(Vec<Bytes>);

impl EncodedCommit {
    /// Bytes of the values.
    pub fn size(&self) -> usize {
        self.0.iter().map(Bytes::len).sum()
    }

    /// The values to append, saying whether every earlier commit's outputs
    /// are published.
    pub fn finish(mut self, earlier_published: bool) -> Vec<Bytes> {
        self.0.push(Bytes::from(vec![u8::from(earlier_published)]));
        self.0
    }
}

/// A commit read back.
#[derive(Debug)]
pub struct Decoded {
    pub commit: Commit,
    pub outputs: Vec<Pending>,
    /// Whether every earlier commit's outputs were published when this one
    /// was appended.
    pub earlier_published: bool,
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
    /// The outputs to publish again: the last commit's, after the one
    /// before's if the last says they may not be out (duplicates are
    /// refused by sequence, so this is safe when they were published).
    pub unpublished: Vec<Pending>,
    /// The last commit's outputs.
    last_outputs: Vec<Pending>,
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

    fn apply(&mut self, record: &CommitRecord, decoded: Decoded) -> Result<(), String> {
        let Decoded {
            commit,
            outputs,
            earlier_published,
        } = decoded;
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
        let earlier = std::mem::replace(&mut self.last_outputs, outputs.clone());
        self.unpublished = if earlier_published {
            outputs
        } else {
            earlier.into_iter().chain(outputs).collect()
        };
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_bytes::ByteBuf;
    use weir_format::{BatchBuilder, ProducerStamp, Record};

    fn bytes() -> impl Strategy<Value = ByteBuf> {
        proptest::collection::vec(any::<u8>(), 0..16).prop_map(ByteBuf::from)
    }

    fn delta() -> impl Strategy<Value = StateDelta> {
        (
            proptest::collection::vec((bytes(), proptest::option::of(bytes())), 0..4),
            proptest::collection::vec((any::<i64>(), bytes(), any::<bool>()), 0..4),
            any::<i64>(),
        )
            .prop_map(|(values, timers, watermark)| StateDelta {
                values,
                timers,
                watermark,
            })
    }

    /// A stamped output batch of `values`.
    fn output(values: &[Vec<u8>], sequence: i32) -> Batch {
        let mut builder = BatchBuilder::new();
        for value in values {
            builder.push(&Record {
                value: Some(value),
                ..Record::default()
            });
        }
        builder.finish().unwrap().with_producer(ProducerStamp {
            id: 7,
            epoch: 0,
            base_sequence: sequence,
        })
    }

    fn record(values: Vec<Bytes>) -> CommitRecord {
        CommitRecord { offset: 42, values }
    }

    proptest! {
        /// Whatever a task commits comes back from its commit log as it was.
        #[test]
        fn commits_round_trip(
            input_end in any::<u64>(),
            producer_id in 0..i64::MAX,
            stages in proptest::collection::vec(("[a-z]{1,8}", delta()), 0..3),
            outputs in proptest::collection::vec(
                ("[a-z]{1,8}", 0..8u32, proptest::collection::vec(
                    proptest::collection::vec(any::<u8>(), 0..32), 1..4)),
                0..3,
            ),
            sequence in 0..1000i32,
            earlier_published in any::<bool>(),
        ) {
            let targets: Vec<(String, u32)> =
                outputs.iter().map(|(t, p, _)| (t.clone(), *p)).collect();
            let batches: Vec<Batch> =
                outputs.iter().map(|(_, _, values)| output(values, sequence)).collect();
            let commit = Commit::new(input_end, producer_id, stages, targets);
            let values = commit.encode(&batches).finish(earlier_published);
            let Decoded { commit: decoded, outputs: pending, earlier_published: published } =
                Commit::decode(&record(values)).unwrap();
            prop_assert_eq!(&decoded, &commit);
            prop_assert_eq!(published, earlier_published);
            prop_assert_eq!(pending.len(), batches.len());
            for (p, (batch, (topic, partition))) in
                pending.iter().zip(batches.iter().zip(&commit.outputs))
            {
                prop_assert_eq!(&p.batch, batch);
                prop_assert_eq!((&p.topic, p.partition), (topic, *partition));
            }
        }
    }

    #[test]
    fn a_commit_from_a_newer_version_says_so() {
        let commit = Commit::new(5, 1, Vec::new(), Vec::new());
        let mut values = commit.encode(&[]).finish(true);
        let mut description = values[0].to_vec();
        description[0] = FORMAT_VERSION + 1;
        values[0] = Bytes::from(description);
        let e = Commit::decode(&record(values)).unwrap_err();
        assert!(e.contains("commit at offset 42"), "{e}");
        assert!(e.contains("newer version of Weir"), "{e}");
    }

    #[test]
    fn damaged_commits_are_refused_with_their_offset() {
        let e = Commit::decode(&record(Vec::new())).unwrap_err();
        assert!(e.contains("commit at offset 42 is empty"), "{e}");
        let e = Commit::decode(&record(vec![Bytes::from_static(&[1, 0xff])])).unwrap_err();
        assert!(e.contains("is corrupt"), "{e}");
        // A description listing one output, without the output batch.
        let commit = Commit::new(5, 1, Vec::new(), vec![("t".into(), 0)]);
        let description = Bytes::from(postcard::to_allocvec(&commit).unwrap());
        let e = Commit::decode(&record(vec![description.clone(), marker(1)])).unwrap_err();
        assert!(e.contains("lists 1 outputs but holds 0"), "{e}");
        let e = Commit::decode(&record(vec![description.clone()])).unwrap_err();
        assert!(e.contains("no publication marker"), "{e}");
        let e = Commit::decode(&record(vec![description, marker(2)])).unwrap_err();
        assert!(e.contains("bad publication marker"), "{e}");
    }

    fn marker(byte: u8) -> Bytes {
        Bytes::from(vec![byte])
    }

    /// Version 1 had no marker: its tasks published a round's outputs
    /// before appending the next commit.
    #[test]
    fn a_version_1_commit_reads_as_published_before() {
        let batch = output(&[b"a".to_vec()], 0);
        let mut commit = Commit::new(3, 7, Vec::new(), vec![("out".into(), 0)]);
        commit.version = 1;
        let values = commit.encode(std::slice::from_ref(&batch)).0;
        let decoded = Commit::decode(&record(values)).unwrap();
        assert!(decoded.earlier_published);
        assert_eq!(decoded.outputs.len(), 1);
    }

    #[test]
    fn folding_keeps_the_last_position_states_and_sequences() {
        let batch = output(&[b"a".to_vec(), b"b".to_vec()], 10);
        let first = Commit::new(3, 7, Vec::new(), vec![("out".into(), 1)]);
        let second = Commit::new(9, 7, Vec::new(), Vec::new());
        let records = [
            CommitRecord {
                offset: 0,
                values: first.encode(std::slice::from_ref(&batch)).finish(true),
            },
            CommitRecord {
                offset: 1,
                values: second.encode(&[]).finish(false),
            },
        ];
        let recovered = Recovered::fold(&records).unwrap();
        assert_eq!(recovered.input_end, Some(9));
        assert_eq!(recovered.producer_id, Some(7));
        assert_eq!(recovered.sequences[&("out".to_string(), 1)], 12);
        // The last commit says the first's outputs may not be out.
        assert_eq!(recovered.unpublished.len(), 1);
        let recovered = Recovered::fold(&records[..1]).unwrap();
        assert_eq!(recovered.unpublished.len(), 1);
        let third = Commit::new(12, 7, Vec::new(), Vec::new());
        let records = [
            records[0].clone(),
            records[1].clone(),
            CommitRecord {
                offset: 2,
                values: third.encode(&[]).finish(false),
            },
        ];
        let recovered = Recovered::fold(&records).unwrap();
        assert!(recovered.unpublished.is_empty(), "two commits back is out");
        // Published before the second was appended: only the last's.
        let records = [
            records[0].clone(),
            CommitRecord {
                offset: 1,
                values: second.encode(&[]).finish(true),
            },
        ];
        let recovered = Recovered::fold(&records).unwrap();
        assert!(recovered.unpublished.is_empty());
    }
}
