//! Idempotent producers: per-partition sequence checks, their snapshots on
//! disk, and the allocation of producer ids.
//!
//! A batch that carries a producer id (see [`ProducerStamp`]) is checked by
//! [`Producers::check`] under the partition's writer lock, with Kafka's
//! rules: an unknown producer may start at any sequence (retention may have
//! removed its history); an older epoch is fenced; a newer epoch must start
//! at sequence 0; in the same epoch the batch must follow the last sequence,
//! or equal one of the producer's last [`KEPT_BATCHES`] batches (a retry:
//! answered with the original offsets and not written again). Sequences are
//! per record: a batch covers `base_sequence ..= base_sequence +
//! last_offset_delta`; sequences do not wrap, so a range past `i32::MAX` is
//! refused.
//!
//! The state is rebuilt on open from a snapshot plus the batch headers
//! after it. A snapshot `NNNNNNNNNNNNNNNNNNNN.producers` holds the state of
//! the partition as of the offset in its name (every batch below it), is
//! written atomically at each segment roll for the new segment's base
//! offset, and carries a CRC. On open the newest valid snapshot between the
//! first segment and the active segment is loaded, and the batch headers
//! from its offset on are replayed; a missing or corrupt snapshot falls
//! back to an older one or to the first segment. Snapshots beyond the
//! recovered end of the log describe batches a crash took back and are
//! removed, as are snapshots below the first segment (retention).
//! Retention also evicts the producers whose batches it deleted.
//!
//! This module does not write batches and takes no lock: the partition
//! calls it under its writer lock. Batches without a producer never reach it.

use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use crate::batch::{Batch, BatchRef, ProducerStamp};
use crate::error::{IoContext, LogError, Result};
use crate::segment::{Segment, parse_base_offset};
use crate::storage::{Storage, read_all, write_atomic};

/// How many of a producer's latest batches are remembered to answer retries.
pub(crate) const KEPT_BATCHES: usize = 5;

const SNAPSHOT_EXTENSION: &str = "producers";
const SNAPSHOT_MAGIC: &[u8; 4] = b"WPS1";
/// Magic, CRC, offset, producer count.
const SNAPSHOT_HEADER: usize = 4 + 4 + 8 + 4;
/// First sequence, last sequence, base offset, last offset.
const BATCH_ENTRY: usize = 4 + 4 + 8 + 8;

/// File in the data directory holding the next producer id not yet handed out.
const PRODUCER_IDS: &str = "producer-ids";
/// Ids reserved per write of [`PRODUCER_IDS`]; a crash loses at most this many.
const ID_BLOCK: i64 = 1000;

/// One appended batch of a producer: its sequences and where it landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ProducerBatch {
    pub first_sequence: i32,
    pub last_sequence: i32,
    pub base_offset: u64,
    pub last_offset: u64,
}

/// What the log knows of one producer on one partition.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Producer {
    epoch: i16,
    /// Oldest first, at most [`KEPT_BATCHES`], never empty.
    batches: VecDeque<ProducerBatch>,
}

impl Producer {
    fn last_sequence(&self) -> i32 {
        self.batches.back().map_or(-1, |batch| batch.last_sequence)
    }
}

/// The state of every producer that wrote to a partition.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct Producers {
    by_id: HashMap<i64, Producer>,
}

/// What to do with a batch that passed the checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Write it.
    Append,
    /// A retry of a batch already written at these offsets: do not write it.
    Duplicate { base_offset: u64, last_offset: u64 },
}

/// Why a batch was refused (the partition turns this into a [`LogError`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    Fenced { current_epoch: i16 },
    OutOfOrder { expected: i32 },
    AlreadyWritten { producer_last_sequence: i32 },
    InvalidRange,
}

impl Refusal {
    pub(crate) fn into_error(
        self,
        topic: &str,
        partition: u32,
        stamp: &ProducerStamp,
        last_offset_delta: u32,
    ) -> LogError {
        let topic = topic.to_string();
        let producer = stamp.id;
        match self {
            Refusal::Fenced { current_epoch } => LogError::ProducerFenced {
                topic,
                partition,
                producer,
                epoch: stamp.epoch,
                current_epoch,
            },
            Refusal::OutOfOrder { expected } => LogError::OutOfOrderSequence {
                topic,
                partition,
                producer,
                expected,
                got: stamp.base_sequence,
            },
            Refusal::AlreadyWritten {
                producer_last_sequence,
            } => LogError::DuplicateSequence {
                topic,
                partition,
                producer,
                base_sequence: stamp.base_sequence,
                last_sequence: i64::from(stamp.base_sequence) + i64::from(last_offset_delta),
                producer_last_sequence,
            },
            Refusal::InvalidRange => LogError::InvalidSequence {
                topic,
                partition,
                producer,
                base_sequence: stamp.base_sequence,
                last_offset_delta,
            },
        }
    }
}

/// The sequence of a batch's last record, if the range is valid.
fn last_sequence(stamp: &ProducerStamp, last_offset_delta: u32) -> Option<i32> {
    if stamp.base_sequence < 0 {
        return None;
    }
    let delta = i32::try_from(last_offset_delta).ok()?;
    stamp.base_sequence.checked_add(delta)
}

impl Producers {
    /// Checks a batch stamped `stamp` whose last record is `last_offset_delta`
    /// after its first, against what the partition holds.
    pub(crate) fn check(
        &self,
        stamp: &ProducerStamp,
        last_offset_delta: u32,
    ) -> Result<Verdict, Refusal> {
        let last = last_sequence(stamp, last_offset_delta).ok_or(Refusal::InvalidRange)?;
        let Some(producer) = self.by_id.get(&stamp.id) else {
            return Ok(Verdict::Append);
        };
        if stamp.epoch < producer.epoch {
            return Err(Refusal::Fenced {
                current_epoch: producer.epoch,
            });
        }
        if stamp.epoch > producer.epoch {
            return match stamp.base_sequence {
                0 => Ok(Verdict::Append),
                _ => Err(Refusal::OutOfOrder { expected: 0 }),
            };
        }
        if let Some(original) = producer
            .batches
            .iter()
            .find(|b| b.first_sequence == stamp.base_sequence && b.last_sequence == last)
        {
            return Ok(Verdict::Duplicate {
                base_offset: original.base_offset,
                last_offset: original.last_offset,
            });
        }
        let producer_last = producer.last_sequence();
        let expected = i64::from(producer_last) + 1;
        match i64::from(stamp.base_sequence) {
            base if base == expected => Ok(Verdict::Append),
            base if base < expected => Err(Refusal::AlreadyWritten {
                producer_last_sequence: producer_last,
            }),
            _ => Err(Refusal::OutOfOrder {
                expected: i32::try_from(expected).unwrap_or(i32::MAX),
            }),
        }
    }

    /// Remembers a batch written (or found on disk) at `base_offset ..= last_offset`.
    /// A new epoch replaces what was known of the producer.
    pub(crate) fn record(
        &mut self,
        stamp: &ProducerStamp,
        last_offset_delta: u32,
        base_offset: u64,
        last_offset: u64,
    ) {
        let Some(last) = last_sequence(stamp, last_offset_delta) else {
            return;
        };
        let producer = self.by_id.entry(stamp.id).or_insert_with(|| Producer {
            epoch: stamp.epoch,
            batches: VecDeque::with_capacity(KEPT_BATCHES),
        });
        if producer.epoch != stamp.epoch {
            producer.epoch = stamp.epoch;
            producer.batches.clear();
        }
        if producer.batches.len() == KEPT_BATCHES {
            producer.batches.pop_front();
        }
        producer.batches.push_back(ProducerBatch {
            first_sequence: stamp.base_sequence,
            last_sequence: last,
            base_offset,
            last_offset,
        });
    }

    /// Forgets the producers whose latest batch lies wholly below
    /// `first_offset`, the partition's first offset once retention has
    /// deleted what came before (as Kafka does): the state stays bounded
    /// by the producers the retained log holds. A forgotten producer that
    /// writes again is unknown, and may start at any sequence.
    pub(crate) fn evict_below(&mut self, first_offset: u64) {
        self.by_id.retain(|_, producer| {
            producer
                .batches
                .back()
                .is_some_and(|batch| batch.last_offset >= first_offset)
        });
    }

    /// Replays a stored batch header (found on disk when the state is rebuilt).
    fn replay(&mut self, header: BatchRef<'_>) {
        if header.producer_id() < 0 {
            return;
        }
        let stamp = ProducerStamp {
            id: header.producer_id(),
            epoch: header.producer_epoch(),
            base_sequence: header.base_sequence(),
        };
        self.record(
            &stamp,
            header.last_offset_delta(),
            header.base_offset(),
            header.last_offset(),
        );
    }

    /// Encodes the state as a snapshot taken at `offset` (see the module docs).
    pub(crate) fn encode(&self, offset: u64) -> Snapshot {
        let mut ids: Vec<&i64> = self.by_id.keys().collect();
        ids.sort_unstable();
        let entries: usize = self
            .by_id
            .values()
            .map(|p| 11 + p.batches.len() * BATCH_ENTRY)
            .sum();
        let mut buf = Vec::with_capacity(SNAPSHOT_HEADER + entries);
        buf.extend_from_slice(SNAPSHOT_MAGIC);
        buf.extend_from_slice(&[0; 4]);
        buf.extend_from_slice(&offset.to_be_bytes());
        buf.extend_from_slice(&(ids.len() as u32).to_be_bytes());
        for id in ids {
            let producer = &self.by_id[id];
            buf.extend_from_slice(&id.to_be_bytes());
            buf.extend_from_slice(&producer.epoch.to_be_bytes());
            buf.push(producer.batches.len() as u8);
            for batch in &producer.batches {
                buf.extend_from_slice(&batch.first_sequence.to_be_bytes());
                buf.extend_from_slice(&batch.last_sequence.to_be_bytes());
                buf.extend_from_slice(&batch.base_offset.to_be_bytes());
                buf.extend_from_slice(&batch.last_offset.to_be_bytes());
            }
        }
        let crc = crc32c::crc32c(&buf[8..]);
        buf[4..8].copy_from_slice(&crc.to_be_bytes());
        Snapshot { offset, bytes: buf }
    }

    /// Decodes a snapshot that should have been taken at `offset`; the
    /// error says what is wrong with it.
    fn decode(bytes: &[u8], offset: u64) -> Result<Producers, String> {
        let mut r = Reader { bytes, at: 0 };
        if r.take(4)? != SNAPSHOT_MAGIC {
            return Err("bad magic".into());
        }
        let stored = r.u32()?;
        let computed = crc32c::crc32c(&bytes[8..]);
        if stored != computed {
            return Err(format!(
                "CRC mismatch: stored {stored:#010x}, data gives {computed:#010x}"
            ));
        }
        let taken_at = r.u64()?;
        if taken_at != offset {
            return Err(format!(
                "snapshot says offset {taken_at}, file name {offset}"
            ));
        }
        let count = r.u32()?;
        let mut producers = Producers::default();
        for _ in 0..count {
            let id = r.i64()?;
            let epoch = r.i16()?;
            let n = r.take(1)?[0] as usize;
            if !(1..=KEPT_BATCHES).contains(&n) {
                return Err(format!("producer {id} has {n} batches"));
            }
            let mut batches = VecDeque::with_capacity(KEPT_BATCHES);
            for _ in 0..n {
                batches.push_back(ProducerBatch {
                    first_sequence: r.i32()?,
                    last_sequence: r.i32()?,
                    base_offset: r.u64()?,
                    last_offset: r.u64()?,
                });
            }
            producers.by_id.insert(id, Producer { epoch, batches });
        }
        if r.at != bytes.len() {
            return Err(format!("{} trailing bytes", bytes.len() - r.at));
        }
        Ok(producers)
    }
}

/// Bounds-checked big-endian reads from a snapshot.
struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        let slice = self
            .bytes
            .get(self.at..self.at + n)
            .ok_or_else(|| format!("truncated at byte {}", self.at))?;
        self.at += n;
        Ok(slice)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], String> {
        Ok(self.take(N)?.try_into().expect("took N bytes"))
    }

    fn i16(&mut self) -> Result<i16, String> {
        Ok(i16::from_be_bytes(self.array()?))
    }

    fn i32(&mut self) -> Result<i32, String> {
        Ok(i32::from_be_bytes(self.array()?))
    }

    fn u32(&mut self) -> Result<u32, String> {
        Ok(u32::from_be_bytes(self.array()?))
    }

    fn i64(&mut self) -> Result<i64, String> {
        Ok(i64::from_be_bytes(self.array()?))
    }

    fn u64(&mut self) -> Result<u64, String> {
        Ok(u64::from_be_bytes(self.array()?))
    }
}

/// Producer state encoded as of `offset`, ready to be written.
#[derive(Debug, Clone)]
pub(crate) struct Snapshot {
    pub offset: u64,
    bytes: Vec<u8>,
}

impl Snapshot {
    /// Writes the snapshot atomically and durably (temporary file, fsync,
    /// rename, directory fsync).
    pub(crate) fn write(&self, storage: &dyn Storage, dir: &Path) -> Result<()> {
        let path = snapshot_path(dir, self.offset);
        write_atomic(storage, &path, &self.bytes).ctx("write producer snapshot", &path)
    }
}

fn snapshot_path(dir: &Path, offset: u64) -> PathBuf {
    dir.join(format!("{offset:020}.{SNAPSHOT_EXTENSION}"))
}

/// Offsets of the snapshot files in `dir`, ascending.
fn snapshot_offsets(storage: &dyn Storage, dir: &Path) -> Result<Vec<u64>> {
    let names = storage.list(dir).ctx("list partition directory", dir)?;
    let mut offsets: Vec<u64> = names
        .iter()
        .filter_map(|n| parse_base_offset(n, SNAPSHOT_EXTENSION))
        .collect();
    offsets.sort_unstable();
    Ok(offsets)
}

/// Removes the snapshots for which `doomed` holds and syncs the directory.
fn remove_snapshots(
    storage: &dyn Storage,
    dir: &Path,
    offsets: &[u64],
    doomed: impl Fn(u64) -> bool,
) -> Result<()> {
    let mut removed = false;
    for &offset in offsets.iter().filter(|&&o| doomed(o)) {
        let path = snapshot_path(dir, offset);
        storage
            .remove_file(&path)
            .ctx("remove producer snapshot", &path)?;
        removed = true;
    }
    if removed {
        storage.sync_dir(dir).ctx("sync partition directory", dir)?;
    }
    Ok(())
}

/// Removes snapshots below `first_offset`, the partition's new first
/// segment (after retention): the state they hold is incomplete once the
/// segments after them are gone.
pub(crate) fn remove_snapshots_below(
    storage: &dyn Storage,
    dir: &Path,
    first_offset: u64,
) -> Result<()> {
    let offsets = snapshot_offsets(storage, dir)?;
    remove_snapshots(storage, dir, &offsets, |o| o < first_offset)
}

/// Rebuilds the producer state of a recovered partition (see the module
/// docs), writing a snapshot at the active segment's base offset if there
/// was no valid one, so that the next open replays only the active segment.
pub(crate) fn load(
    storage: &dyn Storage,
    dir: &Path,
    segments: &[Arc<Segment>],
) -> Result<Producers> {
    let first = segments[0].base_offset();
    let active = segments.last().expect("at least one segment");
    let end = active.next_offset();
    let offsets = snapshot_offsets(storage, dir)?;
    remove_snapshots(storage, dir, &offsets, |o| o < first || o > end)?;
    let (mut producers, from) = newest_valid_snapshot(storage, dir, &offsets, first, active)?;
    for segment in segments.iter().filter(|s| s.next_offset() > from) {
        if Arc::ptr_eq(segment, active) && from < active.base_offset() {
            producers.encode(active.base_offset()).write(storage, dir)?;
        }
        segment.for_each_header(|header| {
            if header.base_offset() >= from {
                producers.replay(header);
            }
        })?;
    }
    // A snapshot taken before retention moved the first segment on still
    // holds the producers it evicted.
    producers.evict_below(first);
    Ok(producers)
}

/// The newest snapshot between the first segment and the active segment's
/// base that decodes, and its offset; else an empty state from the first
/// segment. Corrupt snapshots are removed.
fn newest_valid_snapshot(
    storage: &dyn Storage,
    dir: &Path,
    offsets: &[u64],
    first: u64,
    active: &Segment,
) -> Result<(Producers, u64)> {
    let usable = offsets
        .iter()
        .rev()
        .filter(|&&o| (first..=active.base_offset()).contains(&o));
    for &offset in usable {
        let path = snapshot_path(dir, offset);
        let decoded = read_all(storage, &path)
            .map_err(|e| e.to_string())
            .and_then(|bytes| Producers::decode(&bytes, offset));
        match decoded {
            Ok(producers) => return Ok((producers, offset)),
            Err(reason) => {
                tracing::warn!(file = %path.display(), reason, "ignoring damaged producer snapshot");
                remove_snapshots(storage, dir, &[offset], |_| true)?;
            }
        }
    }
    Ok((Producers::default(), first))
}

/// The data directory's producer-id allocator: ids are reserved in blocks
/// by durably recording the end of the block before any id of it is handed
/// out, so no id is ever given twice, even across crashes.
#[derive(Debug, Default)]
pub(crate) struct ProducerIds {
    /// Next id to hand out and the end of the reserved block; `None` until
    /// the file is first read.
    block: Mutex<Option<(i64, i64)>>,
}

impl ProducerIds {
    /// Allocates a new producer id.
    pub(crate) fn allocate(&self, storage: &dyn Storage, data_dir: &Path) -> Result<i64> {
        let mut block = self.block.lock().unwrap_or_else(|e| e.into_inner());
        let (next, limit) = match *block {
            Some(reserved) => reserved,
            None => {
                let start = read_next_id(storage, data_dir)?;
                (start, start)
            }
        };
        let limit = if next < limit {
            limit
        } else {
            let new_limit = next
                .checked_add(ID_BLOCK)
                .ok_or_else(|| LogError::Corrupt {
                    path: data_dir.join(PRODUCER_IDS),
                    position: 0,
                    reason: "producer ids exhausted".into(),
                })?;
            let path = data_dir.join(PRODUCER_IDS);
            write_atomic(storage, &path, format!("{new_limit}\n").as_bytes())
                .ctx("reserve producer ids", &path)?;
            new_limit
        };
        *block = Some((next + 1, limit));
        Ok(next)
    }
}

/// The first id not reserved by an earlier process (0 for a new directory).
fn read_next_id(storage: &dyn Storage, data_dir: &Path) -> Result<i64> {
    let path = data_dir.join(PRODUCER_IDS);
    if !storage.exists(&path) {
        return Ok(0);
    }
    let bytes = read_all(storage, &path).ctx("read producer ids", &path)?;
    std::str::from_utf8(&bytes)
        .ok()
        .and_then(|text| text.trim().parse::<i64>().ok())
        .filter(|&next| next >= 0)
        .ok_or_else(|| LogError::Corrupt {
            path,
            position: 0,
            reason: "expected the next producer id as a decimal number".into(),
        })
}

/// The file holding the next unreserved producer id (the log removes its
/// `.tmp` leftover on open, like the other atomically written files).
pub(crate) fn producer_ids_path(data_dir: &Path) -> PathBuf {
    data_dir.join(PRODUCER_IDS)
}

/// A batch's stamp and the distance from its first to its last record, or
/// `None` when it carries no producer.
pub(crate) fn stamp_of(batch: &Batch) -> Option<(ProducerStamp, u32)> {
    let stamp = batch.producer()?;
    Some((stamp, batch.view().last_offset_delta()))
}

#[cfg(test)]
mod tests;
