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

/// Path of a guest component built by `tests/build.rs` (`name` as in its crate, with `_`).
pub fn guest(name: &str) -> std::path::PathBuf {
    Path::new(env!("WEIR_GUESTS_DIR")).join(format!("{name}.wasm"))
}

/// An operator engine with default limits (or `limits`) and no disk cache.
pub fn engine_with(limits: weir_host::Limits) -> weir_host::OperatorEngine {
    weir_host::OperatorEngine::new(limits, None).expect("engine")
}

/// Loads and instantiates a guest with `config`.
pub fn operator(
    engine: &weir_host::OperatorEngine,
    name: &str,
    config: &[(&str, &str)],
) -> Result<weir_host::OperatorInstance, weir_host::OperatorError> {
    let bytes = std::fs::read(guest(name)).expect("guest built");
    let module = engine.load(name, &bytes)?;
    let config = config
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    weir_host::OperatorInstance::new(module, config)
}

/// One input batch from (key, value, timestamp) triples, offsets from `base`.
pub fn input(base: u64, records: &[(Option<&str>, &str, i64)]) -> Batch {
    let recs: Vec<Rec> = records
        .iter()
        .map(|(k, v, t)| Rec {
            key: k.map(|k| k.as_bytes().to_vec()),
            value: Some(v.as_bytes().to_vec()),
            timestamp: *t,
        })
        .collect();
    batch(&recs).with_base_offset(base)
}

/// An emitted record, decoded: (output, key, value as JSON or string, timestamp).
pub type Out = (String, Option<String>, serde_json::Value, i64);

/// The records a call emitted, in order.
pub fn outputs(output: &weir_host::CallOutput) -> Vec<Out> {
    output
        .emitted
        .iter()
        .flat_map(|(name, b)| {
            b.records()
                .map(|r| {
                    let value = r.value.map_or(serde_json::Value::Null, |v| {
                        serde_json::from_slice(v).unwrap_or_else(|_| {
                            serde_json::Value::String(String::from_utf8_lossy(v).into_owned())
                        })
                    });
                    (
                        name.clone(),
                        r.key.map(|k| String::from_utf8_lossy(k).into_owned()),
                        value,
                        r.timestamp,
                    )
                })
                .collect::<Vec<_>>()
        })
        .collect()
}

pub mod kafka_wire;
pub mod python;
pub mod server;
