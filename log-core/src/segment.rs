//! A segment: one file of consecutive batches plus its two sparse indexes.
//!
//! Files are named after the segment's base offset, zero-padded to 20 digits
//! (`00000000000000000042.log`, `.index`, `.timeindex`) so a directory
//! listing sorts them in offset order. Only the newest segment of a
//! partition (the active one) is written to; the others are closed and only
//! replaced whole by compaction or deleted whole by retention.
//!
//! Opening a segment is where recovery happens: the active segment is scanned
//! batch by batch and a torn or corrupt tail is cut off; a closed segment
//! trusts its index files when they pass their checks and is rescanned
//! otherwise, and there any damage is an error naming file and position.

mod rebuild;
mod state;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

use bytes::Bytes;

use crate::batch::{Batch, BatchRef, HEADER_LEN, LENGTH_PREFIX, declared_len};
use crate::error::{IoContext, LogError, Result};
use crate::index::{OffsetIndex, TimeIndex};
use crate::storage::{Storage, StorageFile};

use rebuild::{load_indexes, scan};
use state::{NewEntries, State};

/// How much to read at a time when scanning a whole segment.
const SCAN_CHUNK: usize = 1 << 20;

/// The three files of a segment.
#[derive(Debug, Clone)]
pub(crate) struct SegmentPaths {
    pub log: PathBuf,
    pub index: PathBuf,
    pub time_index: PathBuf,
}

impl SegmentPaths {
    pub(crate) fn new(dir: &Path, base_offset: u64) -> Self {
        let stem = format!("{base_offset:020}");
        SegmentPaths {
            log: dir.join(format!("{stem}.log")),
            index: dir.join(format!("{stem}.index")),
            time_index: dir.join(format!("{stem}.timeindex")),
        }
    }
}

/// Parses a segment file name's base offset (`00000000000000000042.log` → 42).
pub(crate) fn parse_base_offset(file_name: &str, extension: &str) -> Option<u64> {
    let stem = file_name.strip_suffix(extension)?.strip_suffix('.')?;
    (stem.len() == 20 && stem.bytes().all(|b| b.is_ascii_digit()))
        .then(|| stem.parse().ok())
        .flatten()
}

/// One segment of a partition.
#[derive(Debug)]
pub(crate) struct Segment {
    base_offset: u64,
    paths: SegmentPaths,
    log: Arc<dyn StorageFile>,
    index_interval: u64,
    state: RwLock<State>,
    /// Bytes from the start known to hold valid batches in this process
    /// (written by it, or checked by a scan or an earlier read): reads skip
    /// the CRC and framing checks below this position.
    verified: AtomicU64,
}

impl Segment {
    /// Creates a new empty active segment starting at `base_offset`.
    /// The caller syncs the directory.
    pub(crate) fn create(
        storage: &dyn Storage,
        dir: &Path,
        base_offset: u64,
        index_interval: u64,
    ) -> Result<Segment> {
        let paths = SegmentPaths::new(dir, base_offset);
        let log = storage
            .open(&paths.log, true)
            .ctx("create segment", &paths.log)?;
        log.set_len(0).ctx("truncate new segment", &paths.log)?;
        let index_files = open_index_files(storage, &paths, true)?;
        let mut state = State::empty(base_offset);
        state.index_files = Some(index_files);
        Ok(Segment {
            base_offset,
            paths,
            log,
            index_interval,
            state: RwLock::new(state),
            verified: AtomicU64::new(0),
        })
    }

    /// Opens a segment whose data may not all be durable: the active
    /// (newest) segment, or closed segments written after the partition's
    /// recovery point. Scans every batch, truncates a torn or corrupt tail
    /// and rewrites both index files from the scan. Returns the segment and
    /// whether a tail was cut off.
    pub(crate) fn open_unverified(
        storage: &dyn Storage,
        dir: &Path,
        base_offset: u64,
        index_interval: u64,
    ) -> Result<(Segment, bool)> {
        let paths = SegmentPaths::new(dir, base_offset);
        let log = storage
            .open(&paths.log, false)
            .ctx("open segment", &paths.log)?;
        let scan = scan(&*log, &paths.log, base_offset, index_interval, true)?;
        let file_len = log.len().ctx("stat segment", &paths.log)?;
        let truncated = scan.state.size < file_len;
        if truncated {
            let reason = scan.stopped_early.as_deref().unwrap_or("trailing bytes");
            tracing::warn!(
                file = %paths.log.display(),
                valid_bytes = scan.state.size,
                dropped_bytes = file_len - scan.state.size,
                reason,
                "truncating torn or corrupt tail of a segment"
            );
            log.set_len(scan.state.size)
                .ctx("truncate torn tail", &paths.log)?;
            log.sync_data().ctx("sync truncated segment", &paths.log)?;
        }
        let mut state = scan.state;
        let (index, time_index) = open_index_files(storage, &paths, true)?;
        write_index_files(&paths, &*index, &*time_index, &state.offsets, &state.times)?;
        state.index_files = Some((index, time_index));
        let segment = Segment {
            base_offset,
            paths,
            log,
            index_interval,
            verified: AtomicU64::new(state.size),
            state: RwLock::new(state),
        };
        Ok((segment, truncated))
    }

    /// Opens a closed segment. Its index files are used when they are well
    /// formed; otherwise the segment is scanned and they are rewritten.
    /// Any damage found in the data is an error: closed segments were synced
    /// when they were closed, so damage there is not a torn write.
    pub(crate) fn open_closed(
        storage: &dyn Storage,
        dir: &Path,
        base_offset: u64,
        index_interval: u64,
    ) -> Result<Segment> {
        let paths = SegmentPaths::new(dir, base_offset);
        let log = storage
            .open(&paths.log, false)
            .ctx("open segment", &paths.log)?;
        let (state, verified) = match load_indexes(storage, &*log, &paths, base_offset)? {
            Some(state) => (state, 0),
            None => {
                tracing::info!(file = %paths.log.display(), "rebuilding index files of closed segment");
                let scan = scan(&*log, &paths.log, base_offset, index_interval, false)?;
                if let Some(reason) = scan.stopped_early {
                    return Err(LogError::Corrupt {
                        path: paths.log.clone(),
                        position: scan.state.size,
                        reason,
                    });
                }
                let mut state = scan.state;
                state.seal_time_index();
                let (index, time_index) = open_index_files(storage, &paths, true)?;
                write_index_files(&paths, &*index, &*time_index, &state.offsets, &state.times)?;
                sync_index_files(&paths, &*index, &*time_index)?;
                let verified = state.size;
                (state, verified)
            }
        };
        Ok(Segment {
            base_offset,
            paths,
            log,
            index_interval,
            state: RwLock::new(state),
            verified: AtomicU64::new(verified),
        })
    }

    fn read_state(&self) -> RwLockReadGuard<'_, State> {
        self.state.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write_state(&self) -> RwLockWriteGuard<'_, State> {
        self.state.write().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn base_offset(&self) -> u64 {
        self.base_offset
    }

    pub(crate) fn paths(&self) -> &SegmentPaths {
        &self.paths
    }

    pub(crate) fn size(&self) -> u64 {
        self.read_state().size
    }

    pub(crate) fn next_offset(&self) -> u64 {
        self.read_state().next_offset
    }

    pub(crate) fn max_timestamp(&self) -> i64 {
        self.read_state().max_timestamp
    }

    pub(crate) fn first_append_ms(&self) -> Option<i64> {
        self.read_state().first_append_ms
    }

    /// Appends a batch whose base offset is already assigned. Index entries
    /// go to memory and to the index files (unsynced; rebuilt on recovery).
    pub(crate) fn append(&self, batch: &Batch, now_ms: i64) -> Result<()> {
        let mut state = self.write_state();
        let position = state.size;
        self.log
            .write_all_at(batch.as_bytes(), position)
            .ctx("append to segment", &self.paths.log)?;
        state.first_append_ms.get_or_insert(now_ms);
        let entries = state.record(batch, position, self.index_interval);
        // A `Batch` is validated when made, so what this process writes is verified.
        self.verified.fetch_max(state.size, Ordering::Release);
        state.write_entries(&self.paths, entries)
    }

    /// Makes the log file's data durable.
    pub(crate) fn sync(&self) -> Result<()> {
        self.log.sync_data().ctx("sync segment", &self.paths.log)
    }

    /// Closes the active segment: [`seal`](Self::seal) then [`sync_all`](Self::sync_all).
    pub(crate) fn close(&self) -> Result<()> {
        self.seal()?;
        self.sync_all()
    }

    /// Records the segment's final maximum timestamp in the time index. Done
    /// when the segment stops being the active one.
    pub(crate) fn seal(&self) -> Result<()> {
        let mut state = self.write_state();
        let entries = NewEntries {
            offset: None,
            time: state.seal_time_index(),
        };
        state.write_entries(&self.paths, entries)
    }

    /// Syncs a sealed segment's data and index files and closes the index files.
    pub(crate) fn sync_all(&self) -> Result<()> {
        self.sync()?;
        let mut state = self.write_state();
        if let Some((index, time_index)) = state.index_files.take() {
            sync_index_files(&self.paths, &*index, &*time_index)?;
        }
        Ok(())
    }

    /// Reads whole batches starting with the one that holds `offset`, up to
    /// `max_bytes` (at least one batch), stopping before `end_offset`.
    ///
    /// The read ends at a batch boundary taken from the offset index, so no
    /// bytes are read twice; batches past the verified position are checked
    /// (CRC and framing) and then count as verified.
    pub(crate) fn read(
        &self,
        offset: u64,
        max_bytes: usize,
        end_offset: u64,
    ) -> Result<Vec<Batch>> {
        self.read_span(offset, max_bytes, end_offset)
            .map(|(batches, _)| batches)
    }

    /// Like [`read`](Self::read), also returning the batches' bytes as one
    /// contiguous slice of the read buffer (they are adjacent in the file),
    /// so they can be sent on as stored without being joined.
    pub(crate) fn read_span(
        &self,
        offset: u64,
        max_bytes: usize,
        end_offset: u64,
    ) -> Result<(Vec<Batch>, Bytes)> {
        let (mut position, size) = {
            let state = self.read_state();
            if offset >= state.next_offset {
                return Ok((Vec::new(), Bytes::new()));
            }
            let relative = offset
                .saturating_sub(self.base_offset)
                .min(u64::from(u32::MAX)) as u32;
            (u64::from(state.offsets.lookup(relative)), state.size)
        };
        let mut batches = Vec::new();
        let mut budget = max_bytes;
        // The index lands at or before the wanted batch: walk forward until
        // the first wanted batch is found, then fill the budget. Every batch
        // taken comes from the same chunk, one after the other.
        while position < size && batches.is_empty() {
            let read_end = self.read_end(position, budget, size)?;
            let chunk = self.read_bytes(position, (read_end - position) as usize)?;
            let mut at = 0;
            let mut span = 0..0;
            while at < chunk.len() {
                let batch_position = position + at as u64;
                let len = self.batch_len(chunk.get(at..).unwrap_or_default(), batch_position)?;
                let bytes = chunk.get(at..at + len).ok_or_else(|| LogError::Corrupt {
                    path: self.paths.log.clone(),
                    position: batch_position,
                    reason: format!("batch of {len} bytes runs past the end of the segment"),
                })?;
                let batch = self.parse(chunk.slice_ref(bytes), batch_position)?;
                if batch.base_offset() >= end_offset {
                    let span = chunk.slice(span);
                    return Ok((batches, span));
                }
                let start = at;
                at += len;
                if batch.next_offset() <= offset {
                    continue;
                }
                if !batches.is_empty() && len > budget {
                    break;
                }
                if batches.is_empty() {
                    span = start..start;
                }
                span.end = at;
                budget = budget.saturating_sub(len);
                batches.push(batch);
            }
            if !batches.is_empty() {
                return Ok((batches, chunk.slice(span)));
            }
            position = read_end;
        }
        Ok((batches, Bytes::new()))
    }

    /// Where a read from batch boundary `position` with `budget` bytes should
    /// end: the segment end if it is within budget, else the last indexed
    /// batch boundary within budget, else the end of the batch at `position`.
    fn read_end(&self, position: u64, budget: usize, size: u64) -> Result<u64> {
        let limit = position.saturating_add(budget as u64);
        if limit >= size {
            return Ok(size);
        }
        let boundary = {
            let state = self.read_state();
            let up_to = u32::try_from(limit).unwrap_or(u32::MAX);
            state.offsets.boundary_within(position as u32, up_to)
        };
        match boundary {
            Some(end) => Ok(u64::from(end)),
            None => {
                let prefix = self.read_bytes(position, LENGTH_PREFIX)?;
                Ok(position + self.batch_len(&prefix, position)? as u64)
            }
        }
    }

    /// The first offset at or after `offset` whose record has a timestamp of
    /// at least `timestamp`, if this segment holds one.
    pub(crate) fn find_by_timestamp(&self, timestamp: i64, end_offset: u64) -> Result<Option<u64>> {
        let start = {
            let state = self.read_state();
            if state.max_timestamp < timestamp {
                return Ok(None);
            }
            self.base_offset + u64::from(state.times.scan_start(timestamp))
        };
        let mut offset = start;
        loop {
            let batches = self.read(offset, SCAN_CHUNK, end_offset)?;
            let Some(last) = batches.last() else {
                return Ok(None);
            };
            offset = last.next_offset();
            for batch in batches.iter().filter(|b| b.max_timestamp() >= timestamp) {
                if let Some(r) = batch.records().find(|r| r.timestamp >= timestamp) {
                    return Ok(Some(r.offset));
                }
            }
        }
    }

    /// Every batch of the segment, in order (for compaction).
    pub(crate) fn batches(&self) -> Result<Vec<Batch>> {
        let end = self.next_offset();
        let mut out = Vec::new();
        let mut offset = self.base_offset;
        loop {
            let batches = self.read(offset, SCAN_CHUNK, end)?;
            let Some(last) = batches.last() else {
                return Ok(out);
            };
            offset = last.next_offset();
            out.extend(batches);
        }
    }

    /// Calls `visit` with the header of every batch, in order, reading
    /// headers only: the view passed holds just the [`HEADER_LEN`] header
    /// bytes, so only its header fields may be used. Large batches are
    /// skipped with one small read each; runs of small ones are read in
    /// windows. The framing is checked, the CRC is not (used on open, for
    /// segments recovery has already verified or that were synced).
    pub(crate) fn for_each_header(&self, mut visit: impl FnMut(BatchRef<'_>)) -> Result<()> {
        const WINDOW: usize = 64 << 10;
        const SMALL_BATCH: usize = 4 << 10;
        let size = self.size();
        let mut window = Bytes::new();
        let mut window_start = 0u64;
        let mut position = 0u64;
        let mut last_len = 0usize;
        while position < size {
            let in_window = position >= window_start
                && position + HEADER_LEN as u64 <= window_start + window.len() as u64;
            if !in_window {
                let want = if last_len >= SMALL_BATCH {
                    HEADER_LEN
                } else {
                    WINDOW
                };
                let len = (size - position).min(want as u64) as usize;
                if len < HEADER_LEN {
                    return Err(LogError::Corrupt {
                        path: self.paths.log.clone(),
                        position,
                        reason: "incomplete batch header at the end of the segment".into(),
                    });
                }
                window = self.read_bytes(position, len)?;
                window_start = position;
            }
            let at = (position - window_start) as usize;
            let header = &window[at..at + HEADER_LEN];
            let len = self.batch_len(header, position)?;
            if position + len as u64 > size {
                return Err(LogError::Corrupt {
                    path: self.paths.log.clone(),
                    position,
                    reason: format!("batch of {len} bytes runs past the end of the segment"),
                });
            }
            visit(BatchRef::assume_valid(header));
            position += len as u64;
            last_len = len;
        }
        Ok(())
    }

    fn read_bytes(&self, position: u64, len: usize) -> Result<Bytes> {
        self.log
            .read_bytes_at(position, len)
            .ctx("read segment", &self.paths.log)
    }

    fn batch_len(&self, header: &[u8], position: u64) -> Result<usize> {
        declared_len(header).ok_or_else(|| LogError::Corrupt {
            path: self.paths.log.clone(),
            position,
            reason: "batch length field is invalid".into(),
        })
    }

    fn parse(&self, bytes: Bytes, position: u64) -> Result<Batch> {
        let end = position + bytes.len() as u64;
        if end <= self.verified.load(Ordering::Acquire) {
            return Ok(Batch::from_verified(bytes));
        }
        let batch = Batch::from_bytes(bytes).map_err(|e| LogError::Corrupt {
            path: self.paths.log.clone(),
            position,
            reason: e.to_string(),
        })?;
        // Extend the verified prefix when this batch continues it.
        let _ = self
            .verified
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |v| {
                (v >= position).then_some(v.max(end))
            });
        Ok(batch)
    }
}

fn open_index_files(
    storage: &dyn Storage,
    paths: &SegmentPaths,
    create: bool,
) -> Result<(Arc<dyn StorageFile>, Arc<dyn StorageFile>)> {
    let index = storage
        .open(&paths.index, create)
        .ctx("open index", &paths.index)?;
    let time_index = storage
        .open(&paths.time_index, create)
        .ctx("open time index", &paths.time_index)?;
    Ok((index, time_index))
}

fn write_index_files(
    paths: &SegmentPaths,
    index: &dyn StorageFile,
    time_index: &dyn StorageFile,
    offsets: &OffsetIndex,
    times: &TimeIndex,
) -> Result<()> {
    let offset_bytes = offsets.encode();
    index.set_len(0).ctx("truncate index", &paths.index)?;
    index
        .write_all_at(&offset_bytes, 0)
        .ctx("write index", &paths.index)?;
    let time_bytes = times.encode();
    time_index
        .set_len(0)
        .ctx("truncate time index", &paths.time_index)?;
    time_index
        .write_all_at(&time_bytes, 0)
        .ctx("write time index", &paths.time_index)
}

fn sync_index_files(
    paths: &SegmentPaths,
    index: &dyn StorageFile,
    time_index: &dyn StorageFile,
) -> Result<()> {
    index.sync_data().ctx("sync index", &paths.index)?;
    time_index
        .sync_data()
        .ctx("sync time index", &paths.time_index)
}
