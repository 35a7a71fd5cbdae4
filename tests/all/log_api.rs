//! The log's public behaviour on real files: append and read, replay by
//! offset and time, tailing, segment rolls, retention, compaction, consumer
//! offsets, restart, and clear errors for bad input.
//!
//! One file on purpose: a list of the log's promises, one test each, read
//! as a list.

use std::sync::Arc;
use std::time::Duration;

use log_core::storage::FsStorage;
use log_core::{
    BatchBuilder, Cleanup, Durability, Header, Log, LogError, ManualClock, Record, TopicConfig,
};

use crate::support::{
    Rec, batch, existing_partition, first_partition, open_log, read_all, read_from,
};

fn manual_log(dir: &std::path::Path, clock: &ManualClock) -> Log {
    open_log(dir, Arc::new(FsStorage), Arc::new(clock.clone()), false).expect("open log")
}

fn small_segments(cleanup: Cleanup) -> TopicConfig {
    TopicConfig {
        segment_bytes: 4096,
        index_interval_bytes: 256,
        cleanup,
        ..TopicConfig::default()
    }
}

#[test]
fn appended_records_read_back_in_order_with_assigned_offsets() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path()).unwrap();
    let topic = log
        .create_topic(
            "orders",
            TopicConfig {
                partitions: 3,
                ..TopicConfig::default()
            },
        )
        .unwrap();
    let p = topic.partition(1).unwrap();
    let a = p
        .append(batch(&[Rec::new("a", "1", 10), Rec::new("b", "2", 11)]))
        .unwrap();
    let b = p.append(batch(&[Rec::new("c", "3", 12)])).unwrap();
    assert_eq!((a.base_offset, a.last_offset, b.base_offset), (0, 1, 2));
    let all = read_all(p);
    assert_eq!(all.iter().map(|(o, _)| *o).collect::<Vec<_>>(), [0, 1, 2]);
    assert_eq!(all[2].1, Rec::new("c", "3", 12));
    assert_eq!(
        read_from(p, 1).len(),
        2,
        "a read from the middle of a batch skips earlier records"
    );
    assert_eq!(
        topic.partition(0).unwrap().end_offset(),
        0,
        "other partitions are untouched"
    );
}

#[test]
fn stored_reads_return_the_batches_as_one_contiguous_run() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path()).unwrap();
    let p = first_partition(&log, "t", TopicConfig::default());
    for i in 0..20 {
        p.append(batch(&[Rec::new("k", &format!("value {i}"), i)]))
            .unwrap();
    }
    for (offset, max_bytes) in [(0, 1 << 20), (5, 200), (19, 1), (3, 1 << 20)] {
        let (batches, stored) = p.read_stored(offset, max_bytes).unwrap();
        let joined: Vec<u8> = batches
            .iter()
            .flat_map(|b| b.as_bytes().iter().copied())
            .collect();
        assert_eq!(
            stored.as_ref(),
            joined.as_slice(),
            "from {offset}, {max_bytes} bytes"
        );
        assert!(batches[0].base_offset() <= offset && offset <= batches[0].last_offset());
    }
    let (batches, stored) = p.read_stored(20, 1 << 20).unwrap();
    assert!(
        batches.is_empty() && stored.is_empty(),
        "nothing past the end"
    );
}

#[test]
fn partitions_can_be_added_and_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path()).unwrap();
    let config = TopicConfig {
        partitions: 2,
        retention_ms: Some(60_000),
        ..TopicConfig::default()
    };
    let topic = log.create_topic("orders", config).unwrap();
    topic
        .partition(1)
        .unwrap()
        .append(batch(&[Rec::new("a", "1", 10)]))
        .unwrap();
    let grown = log.add_partitions("orders", 4).unwrap();
    assert_eq!(grown.partitions().len(), 4);
    assert_eq!(
        grown.config().retention_ms,
        Some(60_000),
        "settings are kept"
    );
    grown
        .partition(3)
        .unwrap()
        .append(batch(&[Rec::new("b", "2", 11)]))
        .unwrap();
    assert!(matches!(
        log.add_partitions("orders", 4),
        Err(LogError::InvalidConfig { .. })
    ));
    assert!(matches!(
        log.add_partitions("missing", 4),
        Err(LogError::UnknownTopic(_))
    ));
    drop((topic, grown));
    log.close().unwrap();

    let log = Log::open(dir.path()).unwrap();
    let topic = log.topic("orders").unwrap();
    assert_eq!(topic.partitions().len(), 4);
    assert_eq!(topic.config().partitions, 4);
    assert_eq!(
        read_all(topic.partition(1).unwrap())[0].1,
        Rec::new("a", "1", 10)
    );
    assert_eq!(
        read_all(topic.partition(3).unwrap())[0].1,
        Rec::new("b", "2", 11)
    );
    assert_eq!(topic.partition(2).unwrap().end_offset(), 0);
}

#[test]
fn headers_and_tombstones_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    {
        let log = Log::open(dir.path()).unwrap();
        let topic = log.create_topic("events", TopicConfig::default()).unwrap();
        let mut b = BatchBuilder::new();
        b.push(&Record {
            key: Some(b"k"),
            value: None,
            headers: &[
                Header {
                    name: "trace-id",
                    value: Some(b"xyz"),
                },
                Header {
                    name: "empty",
                    value: None,
                },
            ],
            timestamp: 5,
        });
        topic
            .partition(0)
            .unwrap()
            .append(b.finish().unwrap())
            .unwrap();
        log.close().unwrap();
    }
    let log = Log::open(dir.path()).unwrap();
    let p = existing_partition(&log, "events");
    let batches = p.read(0, 1024).unwrap();
    let record = batches[0].records().next().unwrap();
    assert!(record.is_tombstone());
    let headers: Vec<_> = record.headers().collect();
    assert_eq!(
        headers,
        [
            Header {
                name: "trace-id",
                value: Some(b"xyz")
            },
            Header {
                name: "empty",
                value: None
            }
        ]
    );
}

#[test]
fn segments_roll_by_size_and_reads_cross_them() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path()).unwrap();
    let topic = log
        .create_topic("t", small_segments(Cleanup::Delete))
        .unwrap();
    let p = topic.partition(0).unwrap();
    let value = "v".repeat(300);
    for i in 0..100 {
        p.append(batch(&[Rec::new(&format!("k{i}"), &value, i)]))
            .unwrap();
    }
    assert!(
        p.segment_count() > 5,
        "expected several segments, got {}",
        p.segment_count()
    );
    let all = read_all(p);
    assert_eq!(all.len(), 100);
    assert!(
        all.iter()
            .enumerate()
            .all(|(i, (o, r))| *o == i as u64 && r.timestamp == i as i64)
    );
    // Every offset can be the start of a read, through the sparse index.
    for start in [0, 1, 13, 50, 99] {
        assert_eq!(read_from(p, start).first().map(|(o, _)| *o), Some(start));
    }
    drop(log);
    let log = Log::open(dir.path()).unwrap();
    let p = existing_partition(&log, "t");
    assert_eq!(
        read_all(&p).len(),
        100,
        "closed segments reopen through their index files"
    );
}

#[test]
fn segments_roll_by_age() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(1_000_000);
    let log = manual_log(dir.path(), &clock);
    let topic = log
        .create_topic(
            "t",
            TopicConfig {
                segment_ms: Some(60_000),
                ..TopicConfig::default()
            },
        )
        .unwrap();
    let p = topic.partition(0).unwrap();
    p.append(batch(&[Rec::new("a", "1", 0)])).unwrap();
    clock.advance(59_000);
    p.append(batch(&[Rec::new("a", "2", 0)])).unwrap();
    assert_eq!(p.segment_count(), 1);
    clock.advance(2_000);
    p.append(batch(&[Rec::new("a", "3", 0)])).unwrap();
    assert_eq!(p.segment_count(), 2);
}

#[test]
fn offset_for_timestamp_finds_the_first_record_at_or_after() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path()).unwrap();
    let topic = log
        .create_topic("t", small_segments(Cleanup::Delete))
        .unwrap();
    let p = topic.partition(0).unwrap();
    let value = "v".repeat(200);
    // Timestamps 0, 10, 20, ... with one late record (5) at offset 30.
    for i in 0..60i64 {
        let ts = if i == 30 { 5 } else { i * 10 };
        p.append(batch(&[Rec::new("k", &value, ts)])).unwrap();
    }
    assert_eq!(p.offset_for_timestamp(i64::MIN).unwrap(), 0);
    assert_eq!(p.offset_for_timestamp(0).unwrap(), 0);
    assert_eq!(p.offset_for_timestamp(1).unwrap(), 1);
    assert_eq!(p.offset_for_timestamp(250).unwrap(), 25);
    assert_eq!(
        p.offset_for_timestamp(301).unwrap(),
        31,
        "the late record at 30 is older"
    );
    assert_eq!(p.offset_for_timestamp(590).unwrap(), 59);
    assert_eq!(
        p.offset_for_timestamp(591).unwrap(),
        60,
        "past every record: the end offset"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_at_the_end_wakes_when_data_arrives() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path()).unwrap();
    let topic = log.create_topic("t", TopicConfig::default()).unwrap();
    let p = topic.partition(0).unwrap().clone();
    let waiter = {
        let p = p.clone();
        tokio::spawn(async move { p.wait_for(0).await })
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(!waiter.is_finished(), "nothing was appended yet");
    let writer = p.clone();
    tokio::task::spawn_blocking(move || writer.append(batch(&[Rec::new("a", "1", 0)])).unwrap())
        .await
        .unwrap();
    let end = tokio::time::timeout(Duration::from_secs(5), waiter)
        .await
        .expect("woken")
        .unwrap()
        .unwrap();
    assert_eq!(end, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_topic_wakes_its_readers_with_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path()).unwrap();
    let topic = log.create_topic("t", TopicConfig::default()).unwrap();
    let p = topic.partition(0).unwrap().clone();
    let waiter = tokio::spawn(async move { p.wait_for(0).await });
    tokio::time::sleep(Duration::from_millis(20)).await;
    log.delete_topic("t").unwrap();
    let result = tokio::time::timeout(Duration::from_secs(5), waiter)
        .await
        .expect("woken")
        .unwrap();
    assert!(
        matches!(result, Err(LogError::TopicDeleted(_))),
        "{result:?}"
    );
    let append = topic
        .partition(0)
        .unwrap()
        .append(batch(&[Rec::new("a", "1", 0)]));
    assert!(
        matches!(append, Err(LogError::TopicDeleted(_))),
        "{append:?}"
    );
    assert!(matches!(log.topic("t"), Err(LogError::UnknownTopic(_))));
    assert!(!dir.path().join("topics/t").exists());
    let again = log.create_topic("t", TopicConfig::default()).unwrap();
    assert_eq!(
        again.partition(0).unwrap().end_offset(),
        0,
        "a re-created topic starts empty"
    );
}

#[test]
fn retention_by_age_deletes_old_segments_and_reports_the_new_start() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(1_000_000);
    let log = manual_log(dir.path(), &clock);
    let config = TopicConfig {
        retention_ms: Some(60_000),
        ..small_segments(Cleanup::Delete)
    };
    let p = first_partition(&log, "t", config);
    let value = "v".repeat(500);
    for i in 0..40 {
        let ts = if i < 20 { 900_000 } else { 990_000 };
        p.append(batch(&[Rec::new("k", &value, ts)])).unwrap();
    }
    let stats = log.run_maintenance().unwrap();
    assert!(stats.segments_deleted > 0);
    let start = p.start_offset();
    assert!(start > 0 && start <= 20, "start {start}");
    assert!(read_all(&p).iter().all(|(o, _)| *o >= start));
    match p.read(0, 1024) {
        Err(LogError::OffsetOutOfRange {
            start: s,
            requested: 0,
            ..
        }) => assert_eq!(s, start),
        other => panic!("expected out of range naming the new start, got {other:?}"),
    }
    // Everything expires: the active segment is rolled and deleted, offsets continue.
    clock.advance(1_000_000);
    log.run_maintenance().unwrap();
    assert_eq!(p.start_offset(), 40);
    assert_eq!(
        p.append(batch(&[Rec::new("k", "new", 2_000_000)]))
            .unwrap()
            .base_offset,
        40,
        "offsets are never reused"
    );
    drop(log);
    let log = manual_log(dir.path(), &clock);
    let p = existing_partition(&log, "t");
    assert_eq!((p.start_offset(), p.end_offset()), (40, 41));
}

#[test]
fn retention_by_size_keeps_the_partition_under_its_limit() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(0);
    let log = manual_log(dir.path(), &clock);
    let config = TopicConfig {
        retention_bytes: Some(10_000),
        ..small_segments(Cleanup::Delete)
    };
    let p = first_partition(&log, "t", config);
    let value = "v".repeat(500);
    for _ in 0..100 {
        p.append(batch(&[Rec::new("k", &value, 0)])).unwrap();
    }
    assert!(p.size_bytes() > 40_000);
    log.run_maintenance().unwrap();
    assert!(p.size_bytes() <= 10_000 + 4096, "size {}", p.size_bytes());
    assert_eq!(
        read_all(&p).last().map(|(o, _)| *o),
        Some(99),
        "the newest data stays"
    );
}

#[test]
fn delete_before_removes_only_whole_segments_below_the_offset() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(0);
    let log = manual_log(dir.path(), &clock);
    let p = first_partition(&log, "t", small_segments(Cleanup::Delete));
    let value = "v".repeat(500);
    for _ in 0..100 {
        p.append(batch(&[Rec::new("k", &value, 0)])).unwrap();
    }
    let segments = p.segment_count();
    assert!(segments > 5);
    assert_eq!(p.delete_before(0).unwrap(), 0);
    let deleted = p.delete_before(50).unwrap();
    assert!(deleted > 0);
    assert_eq!(p.segment_count(), segments - deleted);
    let start = p.start_offset();
    assert!(
        start <= 50 && start > 0,
        "start {start}: rounded down to a segment"
    );
    let offsets: Vec<u64> = read_all(&p).iter().map(|(o, _)| *o).collect();
    assert_eq!(offsets, (start..100).collect::<Vec<_>>());
    drop(log);
    let log = manual_log(dir.path(), &clock);
    let p = existing_partition(&log, "t");
    assert_eq!(
        (p.start_offset(), p.end_offset()),
        (start, 100),
        "kept across a reopen"
    );
    assert!(
        p.delete_before(1_000).unwrap() > 0,
        "everything but the active segment goes"
    );
    assert_eq!(p.segment_count(), 1);
    assert_eq!(p.end_offset(), 100, "offsets are never reused");
}

#[test]
fn compaction_keeps_the_latest_record_per_key_at_its_offset() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(1_000_000);
    let log = manual_log(dir.path(), &clock);
    let config = TopicConfig {
        tombstone_retention_ms: 10_000,
        ..small_segments(Cleanup::Compact)
    };
    let p = first_partition(&log, "t", config);
    let value = "v".repeat(200);
    // 5 keys written 20 times each; key k0's last write is a tombstone.
    for round in 0..20 {
        for k in 0..5 {
            let rec = if round == 19 && k == 0 {
                Rec {
                    key: Some(b"k0".to_vec()),
                    value: None,
                    timestamp: 1_000_000,
                }
            } else {
                Rec::new(&format!("k{k}"), &format!("{round}{value}"), 1_000_000)
            };
            p.append(batch(&[rec])).unwrap();
        }
    }
    p.roll().unwrap();
    let before = read_all(&p);
    let stats = log.run_maintenance().unwrap();
    assert!(stats.compaction.records_removed >= 90, "{stats:?}");
    let after = read_all(&p);
    let expected: Vec<_> = before
        .iter()
        .filter(|(o, r)| !before.iter().any(|(o2, r2)| o2 > o && r2.key == r.key))
        .cloned()
        .collect();
    assert_eq!(
        after, expected,
        "exactly the latest record per key, same offsets"
    );
    assert!(
        after.iter().any(|(_, r)| r.value.is_none()),
        "the young tombstone stays"
    );
    // Once the tombstone is older than its retention, the key disappears.
    clock.advance(20_000);
    log.run_maintenance().unwrap();
    let after = read_all(&p);
    assert_eq!(after.len(), 4);
    assert!(
        after
            .iter()
            .all(|(_, r)| r.key.as_deref() != Some(&b"k0"[..]))
    );
    drop(log);
    let log = manual_log(dir.path(), &clock);
    let p = existing_partition(&log, "t");
    assert_eq!(read_all(&p).len(), 4, "compacted segments reopen cleanly");
}

#[test]
fn compacted_topics_refuse_records_without_keys() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path()).unwrap();
    let p = first_partition(&log, "t", small_segments(Cleanup::Compact));
    let keyless = Rec {
        key: None,
        value: Some(b"v".to_vec()),
        timestamp: 0,
    };
    let err = p
        .append(batch(&[Rec::new("k", "v", 0), keyless]))
        .unwrap_err();
    assert!(
        matches!(err, LogError::MissingKey { index: 1, .. }),
        "{err}"
    );
    assert_eq!(
        p.end_offset(),
        0,
        "nothing of the refused batch was written"
    );
}

#[test]
fn consumer_offsets_are_durable_across_restarts() {
    let dir = tempfile::tempdir().unwrap();
    {
        let log = Log::open(dir.path()).unwrap();
        log.create_topic(
            "a",
            TopicConfig {
                partitions: 2,
                ..TopicConfig::default()
            },
        )
        .unwrap();
        log.create_topic("b", TopicConfig::default()).unwrap();
        log.commit_offsets("g1", &[("a", 0, 5), ("a", 1, 7)])
            .unwrap();
        log.commit_offsets("g1", &[("a", 0, 9)]).unwrap();
        log.commit_offsets("g2", &[("b", 0, 3)]).unwrap();
        // Kafka's logical offsets (-1 end, -2 beginning) are kept as given.
        log.commit_offsets("g3", &[("a", 0, -1), ("a", 1, -2)])
            .unwrap();
        assert!(matches!(
            log.commit_offsets("g1", &[("nope", 0, 1)]),
            Err(LogError::UnknownTopic(_))
        ));
        assert!(matches!(
            log.commit_offsets("g1", &[("a", 9, 1)]),
            Err(LogError::UnknownPartition { .. })
        ));
    }
    let log = Log::open(dir.path()).unwrap();
    assert_eq!(log.committed_offset("g1", "a", 0), Some(9));
    assert_eq!(log.committed_offset("g1", "a", 1), Some(7));
    assert_eq!(log.committed_offset("g2", "b", 0), Some(3));
    assert_eq!(log.committed_offset("g2", "a", 0), None);
    assert_eq!(
        log.group_offsets("g3"),
        [("a".to_string(), 0, -1), ("a".to_string(), 1, -2)]
    );
    assert_eq!(
        log.group_offsets("g1"),
        [("a".to_string(), 0, 9), ("a".to_string(), 1, 7)]
    );
    assert!(
        log.topics().iter().all(|t| !t.name().starts_with("__")),
        "internal topics are hidden"
    );
    log.delete_topic("a").unwrap();
    assert_eq!(
        log.committed_offset("g1", "a", 0),
        None,
        "deleting a topic forgets its offsets"
    );
    // Deleting a group forgets its offsets, for good.
    assert!(log.delete_group("g2").unwrap());
    assert!(!log.delete_group("g2").unwrap(), "nothing left to delete");
    drop(log);
    let log = Log::open(dir.path()).unwrap();
    assert_eq!(log.committed_offset("g2", "b", 0), None);
    assert_eq!(log.groups(), Vec::<String>::new());
}

#[test]
fn bad_input_gets_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path()).unwrap();
    for name in [
        "",
        ".",
        "..",
        "../escape",
        "a/b",
        "__internal",
        &"x".repeat(201),
    ] {
        let err = log.create_topic(name, TopicConfig::default()).unwrap_err();
        assert!(
            matches!(err, LogError::InvalidTopicName { .. }),
            "{name:?}: {err}"
        );
    }
    assert!(!dir.path().join("escape").exists());
    let topic = log
        .create_topic(
            "t",
            TopicConfig {
                max_batch_bytes: 1024,
                ..TopicConfig::default()
            },
        )
        .unwrap();
    assert!(matches!(
        log.create_topic("t", TopicConfig::default()),
        Err(LogError::TopicExists(_))
    ));
    let err = log
        .create_topic(
            "u",
            TopicConfig {
                partitions: 0,
                ..TopicConfig::default()
            },
        )
        .unwrap_err();
    assert!(err.to_string().contains("partitions"), "{err}");
    assert!(matches!(
        topic.partition(1),
        Err(LogError::UnknownPartition {
            partition: 1,
            partitions: 1,
            ..
        })
    ));
    let big = batch(&[Rec::new("k", &"x".repeat(2000), 0)]);
    let err = topic.partition(0).unwrap().append(big).unwrap_err();
    assert!(
        matches!(err, LogError::BatchTooLarge { max: 1024, .. }),
        "{err}"
    );
    let p = topic.partition(0).unwrap();
    assert!(matches!(
        p.read(1, 100),
        Err(LogError::OffsetOutOfRange {
            requested: 1,
            start: 0,
            end: 0,
            ..
        })
    ));
    assert!(matches!(
        log.delete_topic("missing"),
        Err(LogError::UnknownTopic(_))
    ));
}

#[test]
fn a_second_process_cannot_open_the_same_directory() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path()).unwrap();
    // flock is per open file description, so a second open in this process
    // is refused just as another process would be.
    let err = Log::open(dir.path()).unwrap_err();
    assert!(matches!(err, LogError::Locked { .. }), "{err}");
    drop(log);
    Log::open(dir.path()).expect("the lock is released when the log is dropped");
}

#[test]
fn interval_topics_show_data_before_it_is_synced_and_keep_it_on_close() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path()).unwrap();
    let config = TopicConfig {
        durability: Durability::Interval,
        flush_interval_ms: 10,
        ..TopicConfig::default()
    };
    let p = first_partition(&log, "t", config);
    p.append(batch(&[Rec::new("a", "1", 0)])).unwrap();
    assert_eq!(p.end_offset(), 1);
    log.close().unwrap();
    let log = Log::open(dir.path()).unwrap();
    assert_eq!(
        read_all(log.topic("t").unwrap().partition(0).unwrap()).len(),
        1
    );
}

#[test]
fn concurrent_readers_see_a_growing_prefix_while_one_writer_appends() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path()).unwrap();
    let config = TopicConfig {
        durability: Durability::Interval,
        ..small_segments(Cleanup::Delete)
    };
    let p = first_partition(&log, "t", config);
    let writer = {
        let p = p.clone();
        std::thread::spawn(move || {
            for i in 0..2_000i64 {
                p.append(batch(&[Rec::new("k", &format!("{i:0>100}"), i)]))
                    .unwrap();
            }
        })
    };
    let readers: Vec<_> = (0..4)
        .map(|_| {
            let p = p.clone();
            std::thread::spawn(move || {
                let mut seen = 0u64;
                while seen < 2_000 {
                    let records = read_from(&p, seen);
                    for (offset, rec) in &records {
                        assert_eq!(*offset, seen, "readers see offsets in order, without gaps");
                        assert_eq!(
                            rec.value.as_deref(),
                            Some(format!("{seen:0>100}").as_bytes())
                        );
                        seen += 1;
                    }
                }
            })
        })
        .collect();
    writer.join().unwrap();
    for reader in readers {
        reader.join().unwrap();
    }
    assert!(p.segment_count() > 10, "the readers crossed segment rolls");
}
