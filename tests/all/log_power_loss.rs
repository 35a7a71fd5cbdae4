//! Power-loss tests on the simulated disk: at thousands of crash points
//! across appends, segment rolls, retention and compaction, every write not
//! yet synced is thrown away (the last one possibly torn); recovery must
//! then keep every acknowledged record, leave no half-made files and never
//! reuse an offset.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use log_core::storage::sim::SimStorage;
use log_core::{Cleanup, Clock, Durability, Log, ManualClock, Partition, TopicConfig};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::support::{Rec, batch, open_log, read_all};

const DIR: &str = "/data";

fn open(disk: &SimStorage, clock: &ManualClock) -> log_core::Result<Log> {
    open_log(DIR, Arc::new(disk.clone()), Arc::new(clock.clone()), false)
}

fn topic_config(cleanup: Cleanup) -> TopicConfig {
    TopicConfig {
        segment_bytes: 4096,
        index_interval_bytes: 512,
        retention_ms: (cleanup == Cleanup::Delete).then_some(50_000),
        tombstone_retention_ms: 5_000,
        cleanup,
        ..TopicConfig::default()
    }
}

/// What the test attempted and what the log acknowledged, by offset.
#[derive(Default)]
struct Model {
    attempted: BTreeMap<u64, Rec>,
    acknowledged: BTreeMap<u64, Rec>,
}

/// Runs random operations until the simulated disk crashes (or `ops` run out).
fn run_until_crash(
    partition: &Partition,
    log: &Log,
    clock: &ManualClock,
    rng: &mut StdRng,
    model: &mut Model,
    durability: Durability,
    ops: usize,
) {
    for _ in 0..ops {
        let choice = rng.random_range(0..100);
        let outcome = if choice < 80 {
            let n = rng.random_range(1..4);
            let records: Vec<Rec> = (0..n)
                .map(|_| {
                    let key = format!("k{}", rng.random_range(0..6));
                    let value = (rng.random_range(0..10) > 0)
                        .then(|| vec![b'a' + rng.random_range(0..26u8); rng.random_range(1..300)]);
                    Rec {
                        key: Some(key.into_bytes()),
                        value,
                        timestamp: clock.now_ms(),
                    }
                })
                .collect();
            let next = partition
                .end_offset()
                .max(model.attempted.keys().next_back().map_or(0, |o| o + 1));
            // Offsets are assigned contiguously from the writer's next offset.
            let result = partition.append(batch(&records));
            if let Ok(info) = &result {
                for (i, r) in records.iter().enumerate() {
                    if durability == Durability::Always {
                        model
                            .acknowledged
                            .insert(info.base_offset + i as u64, r.clone());
                    }
                    model
                        .attempted
                        .insert(info.base_offset + i as u64, r.clone());
                }
            } else {
                for (i, r) in records.iter().enumerate() {
                    model
                        .attempted
                        .entry(next + i as u64)
                        .or_insert_with(|| r.clone());
                }
            }
            result.map(|_| ())
        } else if choice < 85 {
            partition.roll()
        } else if choice < 88 {
            // A successful flush makes everything written so far durable.
            let flushed = partition.flush();
            if flushed.is_ok() {
                model.acknowledged = model.attempted.clone();
            }
            flushed
        } else if choice < 94 {
            clock.advance(rng.random_range(0..20_000));
            Ok(())
        } else {
            log.run_maintenance().map(|_| ())
        };
        if outcome.is_err() {
            return;
        }
    }
}

/// After recovery: every record present is one the test wrote at that
/// offset; every acknowledged record is present unless retention or
/// compaction may legitimately have removed it.
fn check(partition: &Partition, cleanup: Cleanup, model: &Model, seed: u64) {
    let recovered = read_all(partition);
    let present: BTreeMap<u64, Rec> = recovered.iter().cloned().collect();
    for (offset, rec) in &recovered {
        assert_eq!(
            model.attempted.get(offset),
            Some(rec),
            "seed {seed}: offset {offset} holds a record never written there"
        );
    }
    if cleanup == Cleanup::Delete {
        let holes = recovered
            .windows(2)
            .filter(|w| w[1].0 != w[0].0 + 1)
            .count();
        assert_eq!(
            holes,
            0,
            "seed {seed}: recovered records have gaps: {:?}",
            recovered.iter().map(|(o, _)| o).collect::<Vec<_>>()
        );
    }
    let start = partition.start_offset();
    for (offset, rec) in &model.acknowledged {
        if present.contains_key(offset) || *offset < start {
            continue;
        }
        let superseded = model.attempted.range(offset + 1..).any(|(later, r)| {
            r.key == rec.key && (present.contains_key(later) || r.value.is_none())
        });
        let expired_tombstone = rec.value.is_none();
        assert!(
            cleanup == Cleanup::Compact && (superseded || expired_tombstone),
            "seed {seed}: acknowledged record at offset {offset} was lost (start {start}, end {})",
            partition.end_offset()
        );
    }
    if let Some((&last_acked, _)) = model.acknowledged.iter().next_back() {
        assert!(
            partition.end_offset() > last_acked,
            "seed {seed}: end offset went back below an acknowledged record"
        );
    }
}

fn assert_no_leftover_files(disk: &SimStorage, seed: u64) {
    for path in disk.files() {
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        let ok = name == "LOCK"
            || name == "topic.json"
            || name == "recovery-point"
            || name == "producer-ids"
            || [".log", ".index", ".timeindex", ".producers"]
                .iter()
                .any(|ext| name.ends_with(ext) && name.len() == 20 + ext.len());
        assert!(
            ok,
            "seed {seed}: leftover file {} after recovery",
            path.display()
        );
    }
}

fn crash_cycle(seed: u64, cleanup: Cleanup, durability: Durability) {
    let mut rng = StdRng::seed_from_u64(seed);
    let disk = SimStorage::new(seed);
    let clock = ManualClock::new(1_000_000);
    let mut model = Model::default();
    {
        let log = open(&disk, &clock).expect("fresh open");
        let topic = log
            .create_topic(
                "t",
                TopicConfig {
                    durability,
                    ..topic_config(cleanup)
                },
            )
            .expect("create");
        let partition = topic.partition(0).unwrap().clone();
        // Warm up without crashing so that crashes land in steady state too.
        let warm_up = rng.random_range(0..40);
        run_until_crash(
            &partition, &log, &clock, &mut rng, &mut model, durability, warm_up,
        );
        disk.crash_after(rng.random_range(0..200));
        run_until_crash(
            &partition, &log, &clock, &mut rng, &mut model, durability, 400,
        );
        disk.crash_now();
    }
    disk.restart();
    let log = open(&disk, &clock).unwrap_or_else(|e| panic!("seed {seed}: recovery failed: {e}"));
    let partition = log
        .topic("t")
        .expect("topic survives")
        .partition(0)
        .unwrap()
        .clone();
    check(&partition, cleanup, &model, seed);
    assert_no_leftover_files(&disk, seed);
    // The recovered log keeps working and continues after what it kept.
    let end = partition.end_offset();
    let info = partition
        .append(batch(&[Rec::new("k0", "after", 0)]))
        .expect("append after recovery");
    assert_eq!(info.base_offset, end, "seed {seed}");
}

#[test]
fn acknowledged_records_survive_power_loss_during_appends_rolls_and_retention() {
    for seed in 0..1500 {
        crash_cycle(seed, Cleanup::Delete, Durability::Always);
    }
}

#[test]
fn acknowledged_records_survive_power_loss_during_compaction() {
    for seed in 10_000..11_500 {
        crash_cycle(seed, Cleanup::Compact, Durability::Always);
    }
}

#[test]
fn flushed_records_of_never_topics_survive_power_loss_and_nothing_follows_a_hole() {
    for seed in 20_000..21_500 {
        crash_cycle(seed, Cleanup::Delete, Durability::Never);
    }
}

#[test]
fn flushed_records_of_never_topics_survive_power_loss_during_compaction() {
    for seed in 30_000..30_800 {
        crash_cycle(seed, Cleanup::Compact, Durability::Never);
    }
}

#[test]
fn power_loss_during_topic_creation_and_deletion_leaves_a_clean_directory() {
    for seed in 0..300 {
        let disk = SimStorage::new(seed);
        let clock = ManualClock::new(0);
        {
            let log = open(&disk, &clock).unwrap();
            log.create_topic("keep", TopicConfig::default()).unwrap();
            log.create_topic("gone", TopicConfig::default()).unwrap();
            disk.crash_after(seed % 40);
            let _ = log.create_topic(
                "new",
                TopicConfig {
                    partitions: 3,
                    ..TopicConfig::default()
                },
            );
            let _ = log.delete_topic("gone");
            disk.crash_now();
        }
        disk.restart();
        let log =
            open(&disk, &clock).unwrap_or_else(|e| panic!("seed {seed}: recovery failed: {e}"));
        assert!(log.topic("keep").is_ok(), "seed {seed}");
        if let Ok(t) = log.topic("new") {
            assert_eq!(
                t.partitions().len(),
                3,
                "seed {seed}: a topic that exists is whole"
            );
        }
        assert_no_leftover_files(&disk, seed);
        let trash = disk
            .files()
            .into_iter()
            .filter(|p| p.starts_with(Path::new(DIR).join("trash")))
            .count();
        assert_eq!(trash, 0, "seed {seed}: trash emptied on open");
    }
}
