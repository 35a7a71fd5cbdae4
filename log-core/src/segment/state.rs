//! What a segment knows about its contents, in memory: its size, next
//! offset and largest timestamp, and its two sparse indexes, and how one
//! appended batch changes them (the index entries it adds, mirrored into the
//! index files while the segment is active). Reading and writing the
//! segment's files is the parent module's.

use std::sync::Arc;

use crate::batch::Batch;
use crate::error::{IoContext, Result};
use crate::index::{OFFSET_ENTRY, OffsetIndex, TIME_ENTRY, TimeIndex};
use crate::storage::StorageFile;

use super::SegmentPaths;

/// What a segment knows about its contents, guarded by one lock.
#[derive(Debug)]
pub(super) struct State {
    pub(super) base_offset: u64,
    /// Bytes of complete batches in the log file.
    pub(super) size: u64,
    /// Offset after the last batch (the base offset when empty).
    pub(super) next_offset: u64,
    /// Largest record timestamp, `i64::MIN` when empty.
    pub(super) max_timestamp: i64,
    /// Relative offset of the batch that set `max_timestamp`.
    pub(super) max_timestamp_at: u32,
    pub(super) offsets: OffsetIndex,
    pub(super) times: TimeIndex,
    pub(super) bytes_since_entry: u64,
    /// Clock time of the first append since open (for rolls by age).
    pub(super) first_append_ms: Option<i64>,
    /// Index files, kept open while the segment is active.
    pub(super) index_files: Option<(Arc<dyn StorageFile>, Arc<dyn StorageFile>)>,
}

impl State {
    pub(super) fn empty(base_offset: u64) -> State {
        State {
            base_offset,
            size: 0,
            next_offset: base_offset,
            max_timestamp: i64::MIN,
            max_timestamp_at: 0,
            offsets: OffsetIndex::default(),
            times: TimeIndex::default(),
            bytes_since_entry: 0,
            first_append_ms: None,
            index_files: None,
        }
    }

    /// Accounts for a batch written at `position` and returns the index
    /// entries it adds: an offset entry at most once per `interval` bytes,
    /// with a time entry beside it when the maximum timestamp rose.
    pub(super) fn record(&mut self, batch: &Batch, position: u64, interval: u64) -> NewEntries {
        let relative = (batch.base_offset() - self.base_offset) as u32;
        let due = self.size == 0 || self.bytes_since_entry >= interval;
        if batch.max_timestamp() > self.max_timestamp {
            self.max_timestamp = batch.max_timestamp();
            self.max_timestamp_at = relative;
        }
        self.size = position + batch.size() as u64;
        self.next_offset = batch.next_offset();
        self.bytes_since_entry += batch.size() as u64;
        if !due {
            return NewEntries::default();
        }
        self.bytes_since_entry = batch.size() as u64;
        let offset = (
            self.offsets.push(relative, position as u32),
            self.offsets.len() - 1,
        );
        let time = (self
            .times
            .last()
            .is_none_or(|(t, _)| self.max_timestamp > t))
        .then(|| self.push_time());
        NewEntries {
            offset: Some(offset),
            time,
        }
    }

    /// Adds the segment's final maximum timestamp to the time index, so a
    /// closed segment's maximum can be read from its last entry.
    pub(super) fn seal_time_index(&mut self) -> Option<([u8; TIME_ENTRY], usize)> {
        let sealed = self
            .times
            .last()
            .is_some_and(|(t, _)| t >= self.max_timestamp);
        (self.size > 0 && !sealed).then(|| self.push_time())
    }

    fn push_time(&mut self) -> ([u8; TIME_ENTRY], usize) {
        let at = self
            .max_timestamp_at
            .max(self.times.last().map_or(0, |(_, o)| o));
        (
            self.times.push(self.max_timestamp, at),
            self.times.len() - 1,
        )
    }

    /// Mirrors new index entries into the index files while they are open.
    pub(super) fn write_entries(&self, paths: &SegmentPaths, entries: NewEntries) -> Result<()> {
        let Some((index, time_index)) = &self.index_files else {
            return Ok(());
        };
        if let Some((bytes, i)) = entries.offset {
            index
                .write_all_at(&bytes, (i * OFFSET_ENTRY) as u64)
                .ctx("append to index", &paths.index)?;
        }
        if let Some((bytes, i)) = entries.time {
            time_index
                .write_all_at(&bytes, (i * TIME_ENTRY) as u64)
                .ctx("append to time index", &paths.time_index)?;
        }
        Ok(())
    }
}

/// Index entries added by one append, with their positions in their index.
#[derive(Default)]
pub(super) struct NewEntries {
    pub(super) offset: Option<([u8; OFFSET_ENTRY], usize)>,
    pub(super) time: Option<([u8; TIME_ENTRY], usize)>,
}
