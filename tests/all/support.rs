//! Helpers shared by the log tests: building batches and reading a whole partition back.

use std::path::Path;
use std::sync::Arc;

use log_core::storage::Storage;
use log_core::{Batch, BatchBuilder, Clock, Log, LogConfig, Partition, Record, TopicConfig};

/// Opens the log in `dir` over `storage` and `clock`, without the
/// background thread unless asked (tests drive maintenance themselves).
pub fn open_log(
    dir: impl AsRef<Path>,
    storage: Arc<dyn Storage>,
    clock: Arc<dyn Clock>,
    background: bool,
) -> log_core::Result<Log> {
    let config = LogConfig {
        background,
        ..LogConfig::new(dir.as_ref())
    };
    Log::open_with(config, storage, clock)
}

/// Creates `topic` and returns its partition 0.
pub fn first_partition(log: &Log, topic: &str, config: TopicConfig) -> Partition {
    log.create_topic(topic, config)
        .expect("create topic")
        .partition(0)
        .expect("partition 0")
        .clone()
}

/// Partition 0 of an existing topic.
pub fn existing_partition(log: &Log, topic: &str) -> Partition {
    log.topic(topic)
        .expect("topic exists")
        .partition(0)
        .expect("partition 0")
        .clone()
}

/// Appends `n` single-record batches with key `k`, a value of `value_len`
/// bytes and timestamps 0, 1, 2...
pub fn fill(partition: &Partition, n: i64, value_len: usize) {
    let value = "v".repeat(value_len);
    for i in 0..n {
        partition
            .append(batch(&[Rec::new("k", &value, i)]))
            .expect("append");
    }
}

/// A record as the tests model it: key, value (None = tombstone), timestamp.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rec {
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
    pub timestamp: i64,
}

impl Rec {
    pub fn new(key: &str, value: &str, timestamp: i64) -> Rec {
        Rec {
            key: Some(key.as_bytes().to_vec()),
            value: Some(value.as_bytes().to_vec()),
            timestamp,
        }
    }
}

/// Encodes records into one batch.
pub fn batch(records: &[Rec]) -> Batch {
    let mut builder = BatchBuilder::new();
    for r in records {
        builder.push(&Record {
            key: r.key.as_deref(),
            value: r.value.as_deref(),
            headers: &[],
            timestamp: r.timestamp,
        });
    }
    builder.finish().expect("at least one record")
}

/// Reads every record of a partition from its start: (offset, record).
pub fn read_all(partition: &Partition) -> Vec<(u64, Rec)> {
    read_from(partition, partition.start_offset())
}

/// Reads every record at or after `from`.
pub fn read_from(partition: &Partition, from: u64) -> Vec<(u64, Rec)> {
    read_in_steps(partition, from, 64 * 1024)
}

/// Reads every record at or after `from`, asking for `max_bytes` per read.
pub fn read_in_steps(partition: &Partition, from: u64, max_bytes: usize) -> Vec<(u64, Rec)> {
    let mut out = Vec::new();
    let mut offset = from;
    loop {
        let batches = partition.read(offset, max_bytes).expect("read");
        let Some(last) = batches.last() else {
            return out;
        };
        offset = last.next_offset();
        for b in &batches {
            for r in b.records().filter(|r| r.offset >= from) {
                out.push((
                    r.offset,
                    Rec {
                        key: r.key.map(<[u8]>::to_vec),
                        value: r.value.map(<[u8]>::to_vec),
                        timestamp: r.timestamp,
                    },
                ));
            }
        }
    }
}
