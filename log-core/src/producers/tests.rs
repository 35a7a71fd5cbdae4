//! Idempotent producers through the public API, on real files in temporary
//! directories and on the simulated disk: retries, fencing, ordering, and
//! producer state surviving clean restarts, crashes and damaged snapshots.
//!
//! One file on purpose: a list of scenarios over shared fixtures, read as
//! a list.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use crate::batch::{Batch, BatchBuilder, ProducerStamp, Record};
use crate::clock::{ManualClock, SystemClock};
use crate::config::{Cleanup, Durability, TopicConfig};
use crate::error::LogError;
use crate::log::{Log, LogConfig};
use crate::partition::{AppendInfo, Partition};
use crate::storage::sim::SimStorage;
use crate::storage::{DirLock, FsStorage, Storage, StorageFile};

const PRODUCER: i64 = 7;

fn stamped(epoch: i16, base_sequence: i32, records: usize) -> Batch {
    stamped_keyed(epoch, base_sequence, records, b"k")
}

fn stamped_keyed(epoch: i16, base_sequence: i32, records: usize, key: &[u8]) -> Batch {
    unstamped(records, key).with_producer(ProducerStamp {
        id: PRODUCER,
        epoch,
        base_sequence,
    })
}

fn unstamped(records: usize, key: &[u8]) -> Batch {
    let mut builder = BatchBuilder::new();
    for i in 0..records {
        builder.push(&Record {
            key: Some(key),
            value: Some(&[b'v'; 200]),
            headers: &[],
            timestamp: 1_000 + i as i64,
        });
    }
    builder.finish().expect("at least one record")
}

fn open(dir: &Path, storage: Arc<dyn Storage>) -> Log {
    let config = LogConfig {
        background: false,
        ..LogConfig::new(dir)
    };
    Log::open_with(config, storage, Arc::new(ManualClock::new(1_000))).expect("open log")
}

/// Small segments, so a few appends roll and write producer snapshots.
fn small_segments(durability: Durability) -> TopicConfig {
    TopicConfig {
        durability,
        segment_bytes: 4096,
        ..TopicConfig::default()
    }
}

fn partition(log: &Log, name: &str) -> Partition {
    log.topic(name)
        .expect("topic exists")
        .partition(0)
        .expect("partition 0")
        .clone()
}

fn appended(base_offset: u64, last_offset: u64) -> AppendInfo {
    AppendInfo {
        base_offset,
        last_offset,
        duplicate: false,
    }
}

fn duplicate_of(info: AppendInfo) -> AppendInfo {
    AppendInfo {
        duplicate: true,
        ..info
    }
}

/// Appends `count` batches of 2 records for epoch 0 from sequence 0 and
/// returns where each landed.
fn append_sequence(p: &Partition, count: i32) -> Vec<AppendInfo> {
    (0..count)
        .map(|i| p.append(stamped(0, i * 2, 2)).expect("in-sequence append"))
        .collect()
}

fn snapshot_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("partition dir")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "producers"))
        .collect();
    files.sort();
    files
}

fn partition_dir(log_dir: &Path, topic: &str) -> PathBuf {
    log_dir.join("topics").join(topic).join("0")
}

#[test]
fn retried_batch_returns_original_offsets_and_writes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let log = open(tmp.path(), Arc::new(FsStorage));
    let p = log.create_topic("t", TopicConfig::default()).unwrap();
    let p = p.partition(0).unwrap();
    let first = p.append(stamped(0, 0, 3)).unwrap();
    let second = p.append(stamped(0, 3, 2)).unwrap();
    assert_eq!((first, second), (appended(0, 2), appended(3, 4)));
    let (end, size) = (p.end_offset(), p.size_bytes());
    assert_eq!(p.append(stamped(0, 0, 3)).unwrap(), duplicate_of(first));
    assert_eq!(p.append(stamped(0, 3, 2)).unwrap(), duplicate_of(second));
    assert_eq!((p.end_offset(), p.size_bytes()), (end, size));
    assert_eq!(p.append(stamped(0, 5, 1)).unwrap(), appended(5, 5));
}

#[test]
fn batches_without_a_producer_are_never_deduplicated() {
    let tmp = tempfile::tempdir().unwrap();
    let log = open(tmp.path(), Arc::new(FsStorage));
    let p = log.create_topic("t", TopicConfig::default()).unwrap();
    let p = p.partition(0).unwrap();
    assert_eq!(p.append(unstamped(2, b"k")).unwrap(), appended(0, 1));
    assert_eq!(p.append(unstamped(2, b"k")).unwrap(), appended(2, 3));
}

#[test]
fn sequence_gap_is_refused_as_out_of_order() {
    let tmp = tempfile::tempdir().unwrap();
    let log = open(tmp.path(), Arc::new(FsStorage));
    let p = log.create_topic("t", TopicConfig::default()).unwrap();
    let p = p.partition(0).unwrap();
    p.append(stamped(0, 0, 2)).unwrap();
    let err = p.append(stamped(0, 5, 1)).unwrap_err();
    assert!(
        matches!(
            err,
            LogError::OutOfOrderSequence {
                producer: PRODUCER,
                expected: 2,
                got: 5,
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(p.end_offset(), 2, "the refused batch was not written");
}

#[test]
fn already_written_sequence_outside_the_last_five_batches_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let log = open(tmp.path(), Arc::new(FsStorage));
    let p = log.create_topic("t", TopicConfig::default()).unwrap();
    let p = p.partition(0).unwrap();
    let infos = append_sequence(p, 7);
    let err = p.append(stamped(0, 0, 2)).unwrap_err();
    assert!(
        matches!(
            err,
            LogError::DuplicateSequence {
                base_sequence: 0,
                producer_last_sequence: 13,
                ..
            }
        ),
        "{err}"
    );
    // Overlapping a kept batch without equalling it is not a retry either.
    let err = p.append(stamped(0, 11, 2)).unwrap_err();
    assert!(matches!(err, LogError::DuplicateSequence { .. }), "{err}");
    assert_eq!(
        p.append(stamped(0, 4, 2)).unwrap(),
        duplicate_of(infos[2]),
        "the oldest of the last five is still answered"
    );
    assert_eq!(p.end_offset(), 14);
}

#[test]
fn older_epoch_is_fenced() {
    let tmp = tempfile::tempdir().unwrap();
    let log = open(tmp.path(), Arc::new(FsStorage));
    let p = log.create_topic("t", TopicConfig::default()).unwrap();
    let p = p.partition(0).unwrap();
    p.append(stamped(3, 0, 1)).unwrap();
    let err = p.append(stamped(2, 1, 1)).unwrap_err();
    assert!(
        matches!(
            err,
            LogError::ProducerFenced {
                producer: PRODUCER,
                epoch: 2,
                current_epoch: 3,
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(p.end_offset(), 1);
}

#[test]
fn new_epoch_starts_at_sequence_zero_and_fences_the_old_one() {
    let tmp = tempfile::tempdir().unwrap();
    let log = open(tmp.path(), Arc::new(FsStorage));
    let p = log.create_topic("t", TopicConfig::default()).unwrap();
    let p = p.partition(0).unwrap();
    append_sequence(p, 2);
    let err = p.append(stamped(1, 4, 1)).unwrap_err();
    assert!(
        matches!(
            err,
            LogError::OutOfOrderSequence {
                expected: 0,
                got: 4,
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(p.append(stamped(1, 0, 1)).unwrap(), appended(4, 4));
    assert_eq!(p.append(stamped(1, 1, 1)).unwrap(), appended(5, 5));
    let err = p.append(stamped(0, 4, 2)).unwrap_err();
    assert!(matches!(err, LogError::ProducerFenced { .. }), "{err}");
}

#[test]
fn unknown_producer_may_start_at_any_sequence_but_not_past_i32_max() {
    let tmp = tempfile::tempdir().unwrap();
    let log = open(tmp.path(), Arc::new(FsStorage));
    let p = log.create_topic("t", TopicConfig::default()).unwrap();
    let p = p.partition(0).unwrap();
    assert_eq!(p.append(stamped(0, 500, 2)).unwrap(), appended(0, 1));
    assert_eq!(p.append(stamped(0, 502, 1)).unwrap(), appended(2, 2));
    let overflow = unstamped(2, b"k").with_producer(ProducerStamp {
        id: 99,
        epoch: 0,
        base_sequence: i32::MAX,
    });
    let err = p.append(overflow).unwrap_err();
    assert!(matches!(err, LogError::InvalidSequence { .. }), "{err}");
}

#[test]
fn duplicate_is_recognised_after_a_clean_reopen() {
    let tmp = tempfile::tempdir().unwrap();
    let infos = {
        let log = open(tmp.path(), Arc::new(FsStorage));
        log.create_topic("t", small_segments(Durability::Always))
            .unwrap();
        let infos = append_sequence(&partition(&log, "t"), 30);
        assert!(partition(&log, "t").segment_count() > 3);
        // With an empty active segment every answer comes from snapshots.
        partition(&log, "t").roll().unwrap();
        log.close().unwrap();
        infos
    };
    let log = open(tmp.path(), Arc::new(FsStorage));
    let p = partition(&log, "t");
    assert_eq!(
        p.append(stamped(0, 58, 2)).unwrap(),
        duplicate_of(infos[29])
    );
    assert_eq!(
        p.append(stamped(0, 50, 2)).unwrap(),
        duplicate_of(infos[25])
    );
    let err = p.append(stamped(0, 61, 1)).unwrap_err();
    assert!(
        matches!(err, LogError::OutOfOrderSequence { expected: 60, .. }),
        "{err}"
    );
    assert!(!p.append(stamped(0, 60, 1)).unwrap().duplicate);
}

#[test]
fn duplicate_is_recognised_after_a_crash_without_close() {
    for durability in [Durability::Always, Durability::Interval, Durability::Never] {
        let tmp = tempfile::tempdir().unwrap();
        let infos = {
            let log = open(tmp.path(), Arc::new(FsStorage));
            log.create_topic("t", small_segments(durability)).unwrap();
            let infos = append_sequence(&partition(&log, "t"), 30);
            partition(&log, "t").roll().unwrap();
            drop(log);
            infos
        };
        let log = open(tmp.path(), Arc::new(FsStorage));
        let p = partition(&log, "t");
        for (i, info) in infos.iter().enumerate().skip(25) {
            assert_eq!(
                p.append(stamped(0, i as i32 * 2, 2)).unwrap(),
                duplicate_of(*info),
                "{durability:?}: batch {i}"
            );
        }
        assert_eq!(p.append(stamped(0, 60, 1)).unwrap().base_offset, 60);
    }
}

#[test]
fn acknowledged_batches_are_recognised_after_power_loss() {
    for seed in 0..20 {
        let disk = SimStorage::new(seed);
        let dir = Path::new("/data");
        let log = open(dir, Arc::new(disk.clone()));
        log.create_topic("t", small_segments(Durability::Always))
            .unwrap();
        let p = partition(&log, "t");
        let infos = append_sequence(&p, 20 + seed as i32);
        disk.crash_now();
        drop((p, log));
        disk.restart();
        let log = open(dir, Arc::new(disk.clone()));
        let p = partition(&log, "t");
        let n = infos.len();
        for (i, info) in infos.iter().enumerate().skip(n - 5) {
            assert_eq!(
                p.append(stamped(0, i as i32 * 2, 2)).unwrap(),
                duplicate_of(*info),
                "seed {seed}: batch {i}"
            );
        }
        assert!(!p.append(stamped(0, n as i32 * 2, 1)).unwrap().duplicate);
    }
}

#[test]
fn producer_state_matches_the_log_after_power_loss_mid_stream() {
    // Crash at many points while appending to an `interval` topic: whatever
    // prefix survives, the producer state must match it exactly.
    for crash_after in (5..400).step_by(13) {
        let disk = SimStorage::new(crash_after);
        let dir = Path::new("/data");
        let log = open(dir, Arc::new(disk.clone()));
        log.create_topic("t", small_segments(Durability::Interval))
            .unwrap();
        let p = partition(&log, "t");
        disk.crash_after(crash_after);
        let mut i = 0;
        while p.append(stamped(0, i * 2, 2)).is_ok() {
            i += 1;
            if i % 7 == 0 {
                let _ = p.flush();
            }
        }
        drop((p, log));
        disk.restart();
        let log = open(dir, Arc::new(disk.clone()));
        let p = partition(&log, "t");
        let surviving = (p.end_offset() / 2) as i32;
        if surviving > 0 {
            let last = p.append(stamped(0, (surviving - 1) * 2, 2)).unwrap();
            assert!(
                last.duplicate,
                "crash after {crash_after}: last batch not known"
            );
        }
        let next = p.append(stamped(0, surviving * 2, 2)).unwrap();
        assert!(!next.duplicate && next.base_offset == u64::from(surviving as u32) * 2);
    }
}

#[test]
fn damaged_snapshots_fall_back_to_older_ones_or_a_full_replay() {
    let tmp = tempfile::tempdir().unwrap();
    let infos = {
        let log = open(tmp.path(), Arc::new(FsStorage));
        log.create_topic("t", small_segments(Durability::Always))
            .unwrap();
        let infos = append_sequence(&partition(&log, "t"), 30);
        partition(&log, "t").roll().unwrap();
        log.close().unwrap();
        infos
    };
    let dir = partition_dir(tmp.path(), "t");
    let snapshots = snapshot_files(&dir);
    assert!(snapshots.len() >= 3, "a snapshot per roll: {snapshots:?}");
    let newest = snapshots.last().unwrap().clone();
    let mut bytes = std::fs::read(&newest).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0x40;
    std::fs::write(&newest, bytes).unwrap();
    std::fs::write(tmp_name(&newest), b"half-written").unwrap();
    {
        let log = open(tmp.path(), Arc::new(FsStorage));
        let p = partition(&log, "t");
        assert_eq!(
            p.append(stamped(0, 56, 2)).unwrap(),
            duplicate_of(infos[28])
        );
        log.close().unwrap();
    }
    assert!(!tmp_name(&newest).exists(), "leftover .tmp removed on open");
    assert!(
        snapshot_files(&dir).contains(&newest),
        "the damaged snapshot was replaced by a fresh one"
    );
    for snapshot in snapshot_files(&dir) {
        std::fs::remove_file(snapshot).unwrap();
    }
    let log = open(tmp.path(), Arc::new(FsStorage));
    let p = partition(&log, "t");
    assert_eq!(
        p.append(stamped(0, 58, 2)).unwrap(),
        duplicate_of(infos[29])
    );
    assert!(!p.append(stamped(0, 60, 1)).unwrap().duplicate);
}

fn tmp_name(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_os_string();
    name.push(".tmp");
    name.into()
}

#[test]
fn retention_removes_snapshots_below_the_first_segment() {
    let tmp = tempfile::tempdir().unwrap();
    let log = open(tmp.path(), Arc::new(FsStorage));
    let config = TopicConfig {
        retention_bytes: Some(8192),
        ..small_segments(Durability::Always)
    };
    log.create_topic("t", config).unwrap();
    let p = partition(&log, "t");
    let infos = append_sequence(&p, 30);
    assert!(log.run_maintenance().unwrap().segments_deleted > 0);
    let dir = partition_dir(tmp.path(), "t");
    for snapshot in snapshot_files(&dir) {
        let name = snapshot.file_stem().unwrap().to_string_lossy().to_string();
        assert!(name.parse::<u64>().unwrap() >= p.start_offset(), "{name}");
    }
    drop((p, log));
    let log = open(tmp.path(), Arc::new(FsStorage));
    let p = partition(&log, "t");
    assert_eq!(
        p.append(stamped(0, 58, 2)).unwrap(),
        duplicate_of(infos[29])
    );
}

#[test]
fn retention_evicts_producers_whose_batches_it_deleted() {
    let tmp = tempfile::tempdir().unwrap();
    let log = open(tmp.path(), Arc::new(FsStorage));
    let config = TopicConfig {
        retention_bytes: Some(8192),
        ..small_segments(Durability::Always)
    };
    let by = |id, base_sequence| {
        unstamped(2, b"k").with_producer(ProducerStamp {
            id,
            epoch: 0,
            base_sequence,
        })
    };
    let (old, active) = (PRODUCER, PRODUCER + 1);
    // Whether `id` is known: a gap in its sequences is refused (an
    // unknown producer's batch is written).
    let known = |p: &Partition, id| {
        matches!(
            p.append(by(id, 1000)),
            Err(LogError::OutOfOrderSequence { .. })
        )
    };
    // Two topics alike: "live" is checked as retention runs, "reopened"
    // after a restart with nothing appended in between, so its newest
    // snapshot was taken before retention and still lists `old`.
    for topic in ["live", "reopened"] {
        log.create_topic(topic, config.clone()).unwrap();
        let p = partition(&log, topic);
        p.append(by(old, 0)).unwrap();
        for i in 0..30 {
            p.append(by(active, i * 2)).unwrap();
        }
        assert!(known(&p, old) && known(&p, active));
    }
    assert!(log.run_maintenance().unwrap().segments_deleted > 0);
    let live = partition(&log, "live");
    assert!(live.start_offset() > 2, "`old`'s batch is deleted");
    assert!(!known(&live, old), "evicted by retention");
    assert!(known(&live, active), "still known: its batches are kept");
    drop((live, log));
    let log = open(tmp.path(), Arc::new(FsStorage));
    let reopened = partition(&log, "reopened");
    assert!(!known(&reopened, old), "evicted after a restart");
    assert!(known(&reopened, active), "still known after a restart");
}

#[test]
fn compaction_keeps_the_header_of_a_producers_last_batch() {
    let tmp = tempfile::tempdir().unwrap();
    let info = {
        let log = open(tmp.path(), Arc::new(FsStorage));
        let config = TopicConfig {
            cleanup: Cleanup::Compact,
            ..TopicConfig::default()
        };
        log.create_topic("t", config).unwrap();
        let p = partition(&log, "t");
        let info = p.append(stamped_keyed(0, 0, 2, b"a")).unwrap();
        p.roll().unwrap();
        p.append(unstamped(1, b"a")).unwrap();
        p.roll().unwrap();
        let stats = log.run_maintenance().unwrap();
        assert_eq!(stats.compaction.records_removed, 1, "one of two kept");
        log.close().unwrap();
        info
    };
    // Without snapshots the state comes from the compacted segment alone.
    for snapshot in snapshot_files(&partition_dir(tmp.path(), "t")) {
        std::fs::remove_file(snapshot).unwrap();
    }
    let log = open(tmp.path(), Arc::new(FsStorage));
    let p = partition(&log, "t");
    assert_eq!(
        p.append(stamped_keyed(0, 0, 2, b"a")).unwrap(),
        duplicate_of(info)
    );
}

#[test]
fn producer_ids_are_unique_across_reopens_and_crashes() {
    let tmp = tempfile::tempdir().unwrap();
    let mut seen = std::collections::HashSet::new();
    for _ in 0..3 {
        let log = open(tmp.path(), Arc::new(FsStorage));
        for _ in 0..3 {
            assert!(seen.insert(log.init_producer_id().unwrap()));
        }
        log.close().unwrap();
    }
    let disk = SimStorage::new(1);
    let dir = Path::new("/data");
    let mut seen = std::collections::HashSet::new();
    for _ in 0..3 {
        let log = open(dir, Arc::new(disk.clone()));
        for _ in 0..3 {
            let id = log.init_producer_id().unwrap();
            assert!(id >= 0 && seen.insert(id), "id {id} handed out twice");
        }
        disk.crash_now();
        drop(log);
        disk.restart();
    }
}

/// A disk whose segment syncs wait for a gate to open, to hold an `always`
/// append between its write and its fsync.
#[derive(Debug, Clone, Default)]
struct GatedStorage {
    gate: Arc<(Mutex<bool>, Condvar)>,
}

impl GatedStorage {
    fn close_gate(&self) {
        *self.gate.0.lock().unwrap() = false;
    }

    fn open_gate(&self) {
        *self.gate.0.lock().unwrap() = true;
        self.gate.1.notify_all();
    }
}

#[derive(Debug)]
struct GatedFile {
    inner: Arc<dyn StorageFile>,
    gate: Option<Arc<(Mutex<bool>, Condvar)>>,
}

impl StorageFile for GatedFile {
    fn read_at(&self, buf: &mut [u8], pos: u64) -> io::Result<usize> {
        self.inner.read_at(buf, pos)
    }
    fn write_all_at(&self, buf: &[u8], pos: u64) -> io::Result<()> {
        self.inner.write_all_at(buf, pos)
    }
    fn len(&self) -> io::Result<u64> {
        self.inner.len()
    }
    fn set_len(&self, len: u64) -> io::Result<()> {
        self.inner.set_len(len)
    }
    fn sync_data(&self) -> io::Result<()> {
        if let Some(gate) = &self.gate {
            let (open, opened) = &**gate;
            let mut open = open.lock().unwrap();
            while !*open {
                open = opened.wait(open).unwrap();
            }
        }
        self.inner.sync_data()
    }
}

impl Storage for GatedStorage {
    fn open(&self, path: &Path, create: bool) -> io::Result<Arc<dyn StorageFile>> {
        let gated = path.extension().is_some_and(|e| e == "log");
        Ok(Arc::new(GatedFile {
            inner: FsStorage.open(path, create)?,
            gate: gated.then(|| self.gate.clone()),
        }))
    }
    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        FsStorage.create_dir_all(path)
    }
    fn list(&self, path: &Path) -> io::Result<Vec<String>> {
        FsStorage.list(path)
    }
    fn exists(&self, path: &Path) -> bool {
        FsStorage.exists(path)
    }
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        FsStorage.rename(from, to)
    }
    fn remove_file(&self, path: &Path) -> io::Result<()> {
        FsStorage.remove_file(path)
    }
    fn remove_dir_all(&self, path: &Path) -> io::Result<()> {
        FsStorage.remove_dir_all(path)
    }
    fn sync_dir(&self, path: &Path) -> io::Result<()> {
        FsStorage.sync_dir(path)
    }
    fn lock(&self, path: &Path) -> io::Result<Box<dyn DirLock>> {
        FsStorage.lock(path)
    }
}

#[test]
fn duplicate_of_an_append_not_yet_durable_waits_for_its_fsync() {
    let tmp = tempfile::tempdir().unwrap();
    let storage = GatedStorage {
        gate: Arc::new((Mutex::new(true), Condvar::new())),
    };
    let config = LogConfig {
        background: false,
        ..LogConfig::new(tmp.path())
    };
    let log = Log::open_with(config, Arc::new(storage.clone()), Arc::new(SystemClock)).unwrap();
    log.create_topic("t", TopicConfig::default()).unwrap();
    let p = partition(&log, "t");
    storage.close_gate();
    std::thread::scope(|scope| {
        let original = scope.spawn(|| p.append(stamped(0, 0, 2)));
        // Wait until the original is written and its fsync is held.
        while p.size_bytes() == 0 {
            std::thread::sleep(Duration::from_millis(1));
        }
        let retry = scope.spawn(|| p.append(stamped(0, 0, 2)));
        std::thread::sleep(Duration::from_millis(100));
        let (returned_early, visible) = (retry.is_finished(), p.end_offset());
        storage.open_gate();
        assert!(
            !returned_early,
            "the retry returned before the original was durable"
        );
        assert_eq!(visible, 0, "nothing visible before the fsync");
        let original = original.join().unwrap().unwrap();
        let retry = retry.join().unwrap().unwrap();
        assert_eq!(original, appended(0, 1));
        assert_eq!(retry, duplicate_of(original));
    });
    assert_eq!(p.end_offset(), 2);
}
