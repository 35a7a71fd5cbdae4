//! Injected I/O errors on the simulated disk: a failed write or fsync is
//! returned to the appender, nothing is acknowledged after a failed fsync
//! (the partition stays failed until the log is reopened), and `interval`
//! durability really syncs in the background.

use std::sync::Arc;
use std::time::Duration;

use log_core::storage::sim::{FaultOp, SimStorage};
use log_core::{Durability, Log, LogError, SystemClock, TopicConfig};

use crate::support::{Rec, batch, existing_partition, first_partition, open_log, read_all};

fn open(disk: &SimStorage, background: bool) -> Log {
    open_log(
        "/data",
        Arc::new(disk.clone()),
        Arc::new(SystemClock),
        background,
    )
    .expect("open")
}

#[test]
fn a_failed_fsync_fails_the_append_and_every_later_one_until_reopen() {
    let disk = SimStorage::new(1);
    let log = open(&disk, false);
    let p = first_partition(&log, "t", TopicConfig::default());
    p.append(batch(&[Rec::new("k", "before", 0)])).unwrap();
    disk.inject_fault(FaultOp::SyncData, ".log", 1);
    let err = p.append(batch(&[Rec::new("k", "unlucky", 0)])).unwrap_err();
    assert!(matches!(err, LogError::PartitionFailed { .. }), "{err}");
    assert!(
        err.to_string().contains("injected"),
        "the cause is kept: {err}"
    );
    // The fault is gone, but the partition must not trust its page cache again.
    let err = p.append(batch(&[Rec::new("k", "after", 0)])).unwrap_err();
    assert!(matches!(err, LogError::PartitionFailed { .. }), "{err}");
    assert_eq!(p.end_offset(), 1, "readers never see the unsynced record");
    drop(log);
    let log = open(&disk, false);
    let p = existing_partition(&log, "t");
    let info = p
        .append(batch(&[Rec::new("k", "reopened", 0)]))
        .expect("reopening clears the failure");
    let values: Vec<_> = read_all(&p)
        .into_iter()
        .map(|(_, r)| r.value.unwrap())
        .collect();
    assert_eq!(values.first().map(Vec::as_slice), Some(&b"before"[..]));
    assert_eq!(values.last().map(Vec::as_slice), Some(&b"reopened"[..]));
    assert_eq!(info.base_offset as usize, values.len() - 1);
}

#[test]
fn a_failed_write_is_returned_to_the_appender() {
    let disk = SimStorage::new(2);
    let log = open(&disk, false);
    let p = first_partition(&log, "t", TopicConfig::default());
    disk.inject_fault(FaultOp::Write, ".log", 1);
    let err = p.append(batch(&[Rec::new("k", "v", 0)])).unwrap_err();
    assert!(
        matches!(
            err,
            LogError::Io {
                op: "append to segment",
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(p.end_offset(), 0);
}

#[test]
fn interval_durability_syncs_in_the_background() {
    let disk = SimStorage::new(3);
    let log = open(&disk, true);
    let config = TopicConfig {
        durability: Durability::Interval,
        flush_interval_ms: 20,
        ..TopicConfig::default()
    };
    let p = first_partition(&log, "t", config);
    p.append(batch(&[Rec::new("k", "v", 0)])).unwrap();
    assert_eq!(p.end_offset(), 1, "visible before it is synced");
    std::thread::sleep(Duration::from_millis(300));
    disk.crash_now();
    drop(log);
    disk.restart();
    let log = open(&disk, false);
    assert_eq!(
        read_all(log.topic("t").unwrap().partition(0).unwrap()).len(),
        1,
        "the background flush made it durable"
    );
}

#[test]
fn never_durability_loses_unsynced_data_on_power_loss_but_stays_consistent() {
    let disk = SimStorage::new(4);
    let log = open(&disk, false);
    let topic_config = TopicConfig {
        durability: Durability::Never,
        ..TopicConfig::default()
    };
    let p = first_partition(&log, "t", topic_config);
    for i in 0..50 {
        p.append(batch(&[Rec::new("k", &format!("v{i}"), 0)]))
            .unwrap();
    }
    disk.crash_now();
    drop(log);
    disk.restart();
    let log = open(&disk, false);
    let p = existing_partition(&log, "t");
    let records = read_all(&p);
    assert!(records.len() <= 50);
    assert!(
        records
            .iter()
            .enumerate()
            .all(|(i, (o, r))| *o == i as u64
                && r.value.as_deref() == Some(format!("v{i}").as_bytes())),
        "a prefix survives"
    );
}
