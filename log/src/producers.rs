//! Kafka's idempotent-producer rules over what a partition remembers of
//! its producers (see `docs/log-interface.md`, "Idempotent appends"), for
//! backends that do not keep them in their own storage: `MemoryLog`, and
//! a distributed backend that rebuilds the table from a partition's
//! batches.

use std::collections::{HashMap, VecDeque};

use serde::{Deserialize, Serialize};
use weir_format::ProducerStamp;

use crate::{AppendInfo, LogError, LogResult};

/// How many of a producer's latest batches are remembered to answer retries.
const KEPT_BATCHES: usize = 5;

/// What one partition remembers of its idempotent producers.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ProducerTable {
    producers: HashMap<i64, Producer>,
}

/// What a partition remembers of one idempotent producer.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Producer {
    epoch: i16,
    last_sequence: i32,
    /// `(first sequence, base offset, last offset)` of its latest batches.
    recent: VecDeque<(i32, u64, u64)>,
}

/// What the producer rules say about a stamped batch.
#[derive(Debug)]
pub enum Verdict {
    /// A new batch: write it (and [`record`](ProducerTable::record) it).
    Write,
    /// A retry of a batch written at these offsets: write nothing.
    Duplicate(AppendInfo),
}

impl ProducerTable {
    /// Kafka's rules for a batch of `records` stamped `stamp`, appended to
    /// the partition `where_` names (for messages).
    pub fn check(&self, where_: &str, stamp: ProducerStamp, records: u64) -> LogResult<Verdict> {
        let last_sequence = i64::from(stamp.base_sequence) + records as i64 - 1;
        if stamp.base_sequence < 0 || last_sequence > i64::from(i32::MAX) {
            return Err(LogError::OutOfOrderSequence(format!(
                "invalid sequence range from producer {} on {where_}",
                stamp.id
            )));
        }
        let Some(known) = self.producers.get(&stamp.id) else {
            return Ok(Verdict::Write);
        };
        if stamp.epoch < known.epoch {
            return Err(LogError::ProducerFenced(format!(
                "producer {} is fenced on {where_}: its epoch {} is older than the current \
                 epoch {}",
                stamp.id, stamp.epoch, known.epoch
            )));
        }
        let expected = if stamp.epoch > known.epoch {
            0
        } else if let Some(&(_, base_offset, last_offset)) =
            known.recent.iter().find(|&&(first, base, last)| {
                first == stamp.base_sequence && last - base + 1 == records
            })
        {
            return Ok(Verdict::Duplicate(AppendInfo {
                base_offset,
                last_offset,
                duplicate: true,
            }));
        } else {
            known.last_sequence.wrapping_add(1)
        };
        if stamp.base_sequence == expected {
            Ok(Verdict::Write)
        } else if stamp.epoch == known.epoch && last_sequence <= i64::from(known.last_sequence) {
            Err(LogError::DuplicateSequence(format!(
                "batch from producer {} on {where_} starting at sequence {} was already written",
                stamp.id, stamp.base_sequence
            )))
        } else {
            Err(LogError::OutOfOrderSequence(format!(
                "out-of-order sequence from producer {} on {where_}: expected base sequence \
                 {expected}, got {}",
                stamp.id, stamp.base_sequence
            )))
        }
    }

    /// Remembers a stamped batch written at `info`'s offsets.
    pub fn record(&mut self, stamp: ProducerStamp, info: &AppendInfo) {
        let producer = self.producers.entry(stamp.id).or_insert(Producer {
            epoch: stamp.epoch,
            last_sequence: -1,
            recent: VecDeque::new(),
        });
        if producer.epoch != stamp.epoch {
            producer.epoch = stamp.epoch;
            producer.recent.clear();
        }
        producer.last_sequence = stamp.base_sequence + (info.last_offset - info.base_offset) as i32;
        producer
            .recent
            .push_back((stamp.base_sequence, info.base_offset, info.last_offset));
        if producer.recent.len() > KEPT_BATCHES {
            producer.recent.pop_front();
        }
    }
}
