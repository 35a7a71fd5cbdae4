//! Rebuilding a segment's state from its files when it is opened: from its
//! index files when they pass their checks (reading only the batches after
//! the last index entry), or by scanning and checking every batch, which
//! also finds where a torn or corrupt tail begins. What to do about such a
//! tail is the parent module's.

use std::path::Path;

use bytes::Bytes;

use crate::batch::{Batch, HEADER_LEN, LENGTH_PREFIX, declared_len};
use crate::error::{IoContext, Result};
use crate::index::{OffsetIndex, TimeIndex};
use crate::storage::{Storage, StorageFile, read_all};

use super::state::State;
use super::{SCAN_CHUNK, SegmentPaths};

/// Result of a sequential scan of a segment file.
pub(super) struct Scan {
    pub(super) state: State,
    /// Where the valid batches end, and why the scan stopped there if it was early.
    pub(super) stopped_early: Option<String>,
}

/// Loads a closed segment's state from its index files, reading only the
/// batches after the last offset-index entry to find where the segment
/// ends. Returns `None` when the files are missing or fail their checks.
pub(super) fn load_indexes(
    storage: &dyn Storage,
    log: &dyn StorageFile,
    paths: &SegmentPaths,
    base_offset: u64,
) -> Result<Option<State>> {
    let size = log.len().ctx("stat segment", &paths.log)?;
    let (Ok(index_bytes), Ok(time_bytes)) = (
        read_all(storage, &paths.index),
        read_all(storage, &paths.time_index),
    ) else {
        return Ok(None);
    };
    let (Some(offsets), Some(times)) = (
        OffsetIndex::decode(&index_bytes, size),
        TimeIndex::decode(&time_bytes),
    ) else {
        return Ok(None);
    };
    let mut state = State::empty(base_offset);
    if size == 0 {
        return Ok((offsets.len() == 0).then_some(state));
    }
    let Some((last_relative, last_position)) = offsets.last() else {
        return Ok(None);
    };
    let Some((max_timestamp, max_at)) = times.last() else {
        return Ok(None);
    };
    // Walk the tail after the last index entry to find the end offset; the
    // walk also proves the index's last entry points at a batch boundary.
    let mut position = u64::from(last_position);
    let mut next_offset = None;
    let mut header = [0u8; HEADER_LEN];
    while position < size {
        if log.read_exact_at(&mut header, position).is_err() {
            return Ok(None);
        }
        let Some(len) = declared_len(&header) else {
            return Ok(None);
        };
        let base = u64::from_be_bytes(header[..8].try_into().expect("8 bytes"));
        if position == u64::from(last_position) && base != base_offset + u64::from(last_relative) {
            return Ok(None);
        }
        let last_delta = i32::from_be_bytes(header[23..27].try_into().expect("4 bytes"));
        next_offset = Some(base + u64::try_from(last_delta).unwrap_or(0) + 1);
        position += len as u64;
    }
    if position != size {
        return Ok(None);
    }
    state.size = size;
    state.next_offset = next_offset.unwrap_or(base_offset);
    state.max_timestamp = max_timestamp;
    state.max_timestamp_at = max_at;
    state.offsets = offsets;
    state.times = times;
    Ok(Some(state))
}

/// Scans a segment file from the start, validating every batch and
/// rebuilding the indexes, and stops at the first batch that is torn,
/// corrupt or out of sequence.
/// `active` segments must start exactly at their base offset; closed ones
/// may start later (compaction removes records from the front).
pub(super) fn scan(
    log: &dyn StorageFile,
    path: &Path,
    base_offset: u64,
    interval: u64,
    active: bool,
) -> Result<Scan> {
    let file_len = log.len().ctx("stat segment", path)?;
    let mut state = State::empty(base_offset);
    let mut position = 0u64;
    let stop = |state: State, reason: String| {
        Ok(Scan {
            state,
            stopped_early: Some(reason),
        })
    };
    // The file is read in large chunks; a batch that straddles a chunk's
    // end starts the next chunk.
    let mut chunk = Bytes::new();
    let mut chunk_start = 0u64;
    let read_chunk = |from: u64, at_least: usize| {
        let len = (file_len - from).min(SCAN_CHUNK.max(at_least) as u64) as usize;
        log.read_bytes_at(from, len).ctx("read segment", path)
    };
    while position < file_len {
        if position + LENGTH_PREFIX as u64 > file_len {
            return stop(state, "incomplete batch header at the end".into());
        }
        if position + LENGTH_PREFIX as u64 > chunk_start + chunk.len() as u64 {
            chunk = read_chunk(position, LENGTH_PREFIX)?;
            chunk_start = position;
        }
        let at = (position - chunk_start) as usize;
        let Some(len) = declared_len(&chunk[at..]) else {
            return stop(state, "invalid batch length".into());
        };
        if position + len as u64 > file_len {
            return stop(
                state,
                format!("batch of {len} bytes runs past the end of the file"),
            );
        }
        if at + len > chunk.len() {
            chunk = read_chunk(position, len)?;
            chunk_start = position;
        }
        let at = (position - chunk_start) as usize;
        let bytes = chunk.slice(at..at + len);
        let batch = match Batch::from_bytes(bytes) {
            Ok(b) => b,
            Err(e) => return stop(state, e.to_string()),
        };
        if batch.leader_epoch() != 0 {
            return stop(
                state,
                format!("unexpected leader epoch {}", batch.leader_epoch()),
            );
        }
        // Active segments are contiguous; compaction leaves gaps in closed ones.
        let in_sequence = if active {
            batch.base_offset() == state.next_offset
        } else {
            batch.base_offset() >= state.next_offset
        };
        if !in_sequence {
            let reason = format!(
                "batch base offset {} out of sequence (expected {})",
                batch.base_offset(),
                state.next_offset
            );
            return stop(state, reason);
        }
        if batch.base_offset() - base_offset > u64::from(u32::MAX) {
            return stop(state, "batch offset too far from the segment base".into());
        }
        state.record(&batch, position, interval);
        position += len as u64;
    }
    Ok(Scan {
        state,
        stopped_early: None,
    })
}
