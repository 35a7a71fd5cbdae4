//! Helpers shared by the log tests: building batches and reading a whole partition back.

use log_core::{Batch, BatchBuilder, Partition, Record};

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
    let mut out = Vec::new();
    let mut offset = from;
    loop {
        let batches = partition.read(offset, 64 * 1024).expect("read");
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
