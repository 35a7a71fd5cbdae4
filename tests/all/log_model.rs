//! Model-based property test: random sequences of appends, reads, segment
//! rolls, clock moves, retention, compaction and reopens run against the
//! real log (on real files) and against a plain in-memory model of the
//! same policies; after every step both must hold exactly the same records.

use std::collections::HashMap;
use std::sync::Arc;

use log_core::storage::FsStorage;
use log_core::{Cleanup, Clock, Log, ManualClock, Partition, TopicConfig};
use proptest::prelude::*;

use crate::support::{
    Rec, batch, existing_partition, first_partition, open_log, read_all, read_in_steps,
};

#[derive(Debug, Clone)]
enum Op {
    /// Records as (key index, value length or None for a tombstone, age in ms).
    Append(Vec<(u8, Option<usize>, i64)>),
    /// A read from a random offset, with a random byte budget per read.
    Read(usize, usize),
    FindTime(i64),
    Roll,
    Advance(i64),
    Maintain,
    Reopen,
}

fn op() -> impl Strategy<Value = Op> {
    let record = (
        0u8..8,
        prop::option::weighted(0.9, 1usize..400),
        0i64..30_000,
    );
    prop_oneof![
        8 => prop::collection::vec(record, 1..5).prop_map(Op::Append),
        2 => (any::<usize>(), 1usize..20_000).prop_map(|(at, budget)| Op::Read(at, budget)),
        1 => (0i64..200_000).prop_map(Op::FindTime),
        1 => Just(Op::Roll),
        2 => (0i64..40_000).prop_map(Op::Advance),
        2 => Just(Op::Maintain),
        1 => Just(Op::Reopen),
    ]
}

/// The model: segments as plain vectors, with the documented policies.
#[derive(Debug, Default)]
struct Model {
    segments: Vec<Segment>,
    next_offset: u64,
}

#[derive(Debug, Default, Clone)]
struct Segment {
    base: u64,
    records: Vec<(u64, Rec)>,
    size: u64,
    max_ts: i64,
}

impl Model {
    fn new() -> Model {
        Model {
            segments: vec![Segment {
                max_ts: i64::MIN,
                ..Segment::default()
            }],
            next_offset: 0,
        }
    }

    fn active(&mut self) -> &mut Segment {
        self.segments.last_mut().expect("always one segment")
    }

    fn roll(&mut self) {
        if self.active().size > 0 {
            let base = self.next_offset;
            self.segments.push(Segment {
                base,
                max_ts: i64::MIN,
                ..Segment::default()
            });
        }
    }

    fn append(&mut self, records: &[Rec], size: u64, config: &TopicConfig) {
        if self.active().size > 0 && self.active().size + size > config.segment_bytes {
            self.roll();
        }
        let mut offset = self.next_offset;
        let active = self.active();
        for r in records {
            active.records.push((offset, r.clone()));
            active.max_ts = active.max_ts.max(r.timestamp);
            offset += 1;
        }
        active.size += size;
        self.next_offset = offset;
    }

    fn retention(&mut self, now: i64, config: &TopicConfig) {
        let cutoff = config.retention_ms.map(|a| now - a as i64);
        let expired = |max_ts: i64| cutoff.is_some_and(|c| max_ts < c);
        if self.active().size > 0 && expired(self.active().max_ts) {
            self.roll();
        }
        let mut total: u64 = self.segments.iter().map(|s| s.size).sum();
        let closed = self.segments.len() - 1;
        let mut doomed = 0;
        for s in &self.segments[..closed] {
            if !expired(s.max_ts) && config.retention_bytes.is_none_or(|m| total <= m) {
                break;
            }
            total -= s.size;
            doomed += 1;
        }
        self.segments.drain(..doomed);
    }

    fn compaction(&mut self, now: i64, config: &TopicConfig) {
        let closed = self.segments.len() - 1;
        let mut latest = HashMap::new();
        for (offset, r) in self.segments[..closed].iter().flat_map(|s| &s.records) {
            latest.insert(r.key.clone(), *offset);
        }
        let horizon = now - config.tombstone_retention_ms as i64;
        for s in &mut self.segments[..closed] {
            s.records.retain(|(o, r)| {
                latest[&r.key] == *o && !(r.value.is_none() && r.timestamp < horizon)
            });
        }
    }

    fn records(&self) -> Vec<(u64, Rec)> {
        self.segments
            .iter()
            .flat_map(|s| s.records.iter().cloned())
            .collect()
    }

    fn start(&self) -> u64 {
        self.segments[0].base
    }
}

fn open(dir: &std::path::Path, clock: &ManualClock) -> Log {
    open_log(dir, Arc::new(FsStorage), Arc::new(clock.clone()), false).expect("open")
}

fn run(ops: Vec<Op>, cleanup: Cleanup) -> Result<(), TestCaseError> {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(1_000_000);
    let config = TopicConfig {
        segment_bytes: 4096,
        index_interval_bytes: 300,
        retention_ms: (cleanup == Cleanup::Delete).then_some(60_000),
        retention_bytes: (cleanup == Cleanup::Delete).then_some(12_000),
        tombstone_retention_ms: 20_000,
        cleanup,
        ..TopicConfig::default()
    };
    let mut log = open(dir.path(), &clock);
    let mut partition: Partition = first_partition(&log, "t", config.clone());
    let mut model = Model::new();
    for op in ops {
        match op {
            Op::Append(specs) => {
                let records: Vec<Rec> = specs
                    .iter()
                    .map(|(k, len, age)| Rec {
                        key: Some(format!("key{k}").into_bytes()),
                        value: len.map(|n| vec![b'a' + *k; n]),
                        timestamp: clock.now_ms() - age,
                    })
                    .collect();
                let b = batch(&records);
                let size = b.size() as u64;
                let info = partition.append(b).unwrap();
                prop_assert_eq!(info.base_offset, model.next_offset);
                model.append(&records, size, &config);
            }
            Op::Read(pick, budget) => {
                let span = partition.end_offset() - partition.start_offset() + 1;
                let from = partition.start_offset() + (pick as u64 % span);
                let want: Vec<_> = model
                    .records()
                    .into_iter()
                    .filter(|(o, _)| *o >= from)
                    .collect();
                prop_assert_eq!(read_in_steps(&partition, from, budget), want);
            }
            Op::FindTime(back) => {
                let t = clock.now_ms() - back;
                let want = model
                    .records()
                    .iter()
                    .find(|(_, r)| r.timestamp >= t)
                    .map_or(model.next_offset, |(o, _)| *o);
                prop_assert_eq!(partition.offset_for_timestamp(t).unwrap(), want);
            }
            Op::Roll => {
                partition.roll().unwrap();
                model.roll();
            }
            Op::Advance(ms) => clock.advance(ms),
            Op::Maintain => {
                log.run_maintenance().unwrap();
                match cleanup {
                    Cleanup::Delete => model.retention(clock.now_ms(), &config),
                    Cleanup::Compact => model.compaction(clock.now_ms(), &config),
                }
            }
            Op::Reopen => {
                drop(partition);
                drop(log);
                log = open(dir.path(), &clock);
                partition = existing_partition(&log, "t");
            }
        }
        prop_assert_eq!(read_all(&partition), model.records());
        prop_assert_eq!(partition.start_offset(), model.start());
        prop_assert_eq!(partition.end_offset(), model.next_offset);
        prop_assert_eq!(partition.segment_count(), model.segments.len());
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn log_with_retention_agrees_with_the_model(ops in prop::collection::vec(op(), 1..80)) {
        run(ops, Cleanup::Delete)?;
    }

    #[test]
    fn log_with_compaction_agrees_with_the_model(ops in prop::collection::vec(op(), 1..80)) {
        run(ops, Cleanup::Compact)?;
    }
}
