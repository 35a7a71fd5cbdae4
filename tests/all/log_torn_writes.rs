//! Torn and corrupt writes in the active segment, on real files: bytes are
//! truncated or flipped at random positions; recovery must keep every batch
//! before the damage and none after, without panicking. Damage inside a
//! closed segment must instead be reported, naming the file and position.

use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use log_core::{Log, LogError, TopicConfig};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::support::{Rec, batch, existing_partition, fill, first_partition, read_all};

/// Where a batch lies in the segment file, and the offset after it.
struct Placed {
    end: u64,
    next_offset: u64,
}

/// Writes `n` batches of 1 to 3 records and returns where each landed.
fn write_batches(dir: &Path, n: usize, rng: &mut StdRng) -> Vec<Placed> {
    let log = Log::open(dir).unwrap();
    let p = first_partition(&log, "t", TopicConfig::default());
    let mut layout = Vec::new();
    let mut start = 0;
    for i in 0..n {
        let records: Vec<Rec> = (0..rng.random_range(1..4))
            .map(|j| Rec::new(&format!("k{i}"), &format!("value-{i}-{j}"), i as i64))
            .collect();
        let b = batch(&records);
        let end = start + b.size() as u64;
        let info = p.append(b).unwrap();
        layout.push(Placed {
            end,
            next_offset: info.last_offset + 1,
        });
        start = end;
    }
    log.close().unwrap();
    layout
}

fn active_segment(dir: &Path) -> PathBuf {
    dir.join("topics/t/0/00000000000000000000.log")
}

/// The batches wholly before byte `damage` are the ones recovery must keep.
fn kept(layout: &[Placed], damage: u64) -> (u64, u64) {
    layout
        .iter()
        .take_while(|b| b.end <= damage)
        .last()
        .map_or((0, 0), |b| (b.next_offset, b.end))
}

#[test]
fn recovery_truncates_a_torn_tail_back_to_the_last_whole_batch() {
    let mut rng = StdRng::seed_from_u64(7);
    for _ in 0..60 {
        let dir = tempfile::tempdir().unwrap();
        let layout = write_batches(dir.path(), 30, &mut rng);
        let path = active_segment(dir.path());
        let len = std::fs::metadata(&path).unwrap().len();
        let cut = rng.random_range(0..len);
        OpenOptions::new()
            .write(true)
            .open(&path)
            .unwrap()
            .set_len(cut)
            .unwrap();
        let log = Log::open(dir.path()).unwrap();
        let p = existing_partition(&log, "t");
        let (want, _) = kept(&layout, cut);
        assert_eq!(p.end_offset(), want, "cut at {cut} of {len}");
        assert_eq!(read_all(&p).len() as u64, want);
        assert_eq!(
            p.append(batch(&[Rec::new("k", "new", 0)]))
                .unwrap()
                .base_offset,
            want,
            "appends continue at the cut"
        );
    }
}

#[test]
fn recovery_drops_the_first_corrupt_batch_and_everything_after_it() {
    let mut rng = StdRng::seed_from_u64(11);
    for _ in 0..150 {
        let dir = tempfile::tempdir().unwrap();
        let layout = write_batches(dir.path(), 30, &mut rng);
        let path = active_segment(dir.path());
        let len = std::fs::metadata(&path).unwrap().len();
        let at = rng.random_range(0..len);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .unwrap();
        let mut byte = [0u8];
        file.read_exact_at(&mut byte, at).unwrap();
        file.write_all_at(&[byte[0] ^ (1 << rng.random_range(0..8))], at)
            .unwrap();
        let log = Log::open(dir.path()).unwrap();
        let p = existing_partition(&log, "t");
        let (want, valid_bytes) = kept(&layout, at);
        assert_eq!(p.end_offset(), want, "flip at byte {at} of {len}");
        let records = read_all(&p);
        assert_eq!(records.len() as u64, want);
        assert!(records.iter().enumerate().all(|(i, (o, _))| *o == i as u64));
        assert_eq!(
            std::fs::metadata(&path).unwrap().len(),
            valid_bytes,
            "the damaged tail is cut off the file"
        );
    }
}

#[test]
fn corruption_in_a_closed_segment_is_an_error_naming_file_and_position() {
    let dir = tempfile::tempdir().unwrap();
    let config = TopicConfig {
        segment_bytes: 4096,
        ..TopicConfig::default()
    };
    {
        let log = Log::open(dir.path()).unwrap();
        let p = first_partition(&log, "t", config);
        fill(&p, 100, 200);
        log.close().unwrap();
    }
    let closed = active_segment(dir.path());
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(&closed)
        .unwrap();
    file.write_all_at(b"\xff\xff\xff", 1000).unwrap();
    // Reads that reach the damage fail clearly, with the file and position.
    let log = Log::open(dir.path()).unwrap();
    let p = existing_partition(&log, "t");
    let mut offset = 0;
    let err = loop {
        match p.read(offset, 512) {
            Ok(batches) => {
                offset = batches
                    .last()
                    .expect("damage is before the end")
                    .next_offset();
            }
            Err(e) => break e,
        }
    };
    match &err {
        LogError::Corrupt { path, position, .. } => {
            assert_eq!(path, &closed);
            assert!(*position <= 1000, "position {position}");
        }
        other => panic!("expected a corruption error, got {other}"),
    }
    drop(log);
    // Without index files the segment is rescanned on open, which refuses it.
    std::fs::remove_file(closed.with_extension("index")).unwrap();
    let err = Log::open(dir.path()).unwrap_err();
    assert!(
        matches!(err, LogError::Corrupt { ref path, .. } if path == &closed),
        "{err}"
    );
    assert!(
        err.to_string().contains("00000000000000000000.log"),
        "{err}"
    );
}

#[test]
fn damaged_index_files_are_rebuilt() {
    let dir = tempfile::tempdir().unwrap();
    let config = TopicConfig {
        segment_bytes: 4096,
        index_interval_bytes: 256,
        ..TopicConfig::default()
    };
    {
        let log = Log::open(dir.path()).unwrap();
        let p = first_partition(&log, "t", config);
        fill(&p, 100, 200);
        log.close().unwrap();
    }
    let seg = dir.path().join("topics/t/0/00000000000000000000");
    std::fs::write(seg.with_extension("index"), b"garbage!garbage").unwrap();
    std::fs::remove_file(seg.with_extension("timeindex")).unwrap();
    let log = Log::open(dir.path()).unwrap();
    let p = existing_partition(&log, "t");
    assert_eq!(read_all(&p).len(), 100);
    assert_eq!(p.offset_for_timestamp(5).unwrap(), 5);
    assert_eq!(
        std::fs::metadata(seg.with_extension("index"))
            .unwrap()
            .len()
            % 8,
        0,
        "index rewritten"
    );
}
