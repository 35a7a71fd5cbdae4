//! Retention: deleting whole old segments by age and by total size, and
//! on request below an offset (for users that truncate their own logs).
//!
//! Only a prefix of closed segments is ever deleted (the oldest first), so
//! the partition's start offset only moves forward. A segment is expired by
//! age when its newest record timestamp is older than `retention_ms`; by
//! size while the partition is larger than `retention_bytes`. An expired
//! active segment is rolled first so that it can go too; its empty
//! successor keeps the next offset, so offsets are never reused.
//!
//! Deletion is crash-safe and never moves the start offset backwards: each
//! doomed segment's log file is renamed to `*.deleted` and the directory
//! synced (the commit point) before the segment leaves the in-memory list
//! and its files are removed. Recovery removes any `*.deleted` leftovers.
//! Producer snapshots below the new first segment go too (on open if a
//! crash came first).

use crate::error::{IoContext, Result};
use crate::partition::Partition;
use crate::producers;
use crate::recovery::DELETED;

/// Applies the topic's retention limits; returns how many segments were deleted.
pub(crate) fn enforce(partition: &Partition) -> Result<usize> {
    let s = partition.shared();
    let (age, max_bytes) = (s.config.retention_ms, s.config.retention_bytes);
    if age.is_none() && max_bytes.is_none() {
        return Ok(0);
    }
    let _maintenance = s.maintenance.lock().unwrap_or_else(|e| e.into_inner());
    let cutoff = age.map(|a| s.clock.now_ms().saturating_sub(a as i64));
    let expired_by_age = |max_timestamp: i64| cutoff.is_some_and(|c| max_timestamp < c);
    s.roll_if(|active| expired_by_age(active.max_timestamp()))?;

    let segments = s.segments();
    let closed = &segments[..segments.len() - 1];
    let mut total: u64 = segments.iter().map(|seg| seg.size()).sum();
    let mut doomed = 0;
    for segment in closed {
        let over_size = max_bytes.is_some_and(|m| total > m);
        if !expired_by_age(segment.max_timestamp()) && !over_size {
            break;
        }
        total -= segment.size();
        doomed += 1;
    }
    delete_oldest(partition, &segments, doomed)
}

// Here rather than in `partition`, beside what it calls, so that
// `partition` does not import this module back.
impl Partition {
    /// Deletes the closed segments that hold only offsets below `offset`
    /// (the start offset moves to the first segment kept, so it may stay
    /// below `offset`); returns how many were deleted. For users that keep
    /// their own log and no longer need its beginning.
    pub fn delete_before(&self, offset: u64) -> Result<usize> {
        self.shared().check_live()?;
        delete_before(self, offset)
    }
}

/// Deletes the closed segments that hold only offsets below `offset`;
/// returns how many.
pub(crate) fn delete_before(partition: &Partition, offset: u64) -> Result<usize> {
    let s = partition.shared();
    let _maintenance = s.maintenance.lock().unwrap_or_else(|e| e.into_inner());
    let segments = s.segments();
    let doomed = segments
        .windows(2)
        .take_while(|pair| pair[1].base_offset() <= offset)
        .count();
    delete_oldest(partition, &segments, doomed)
}

/// Deletes the first `doomed` segments (all closed), crash-safely.
/// Called under the maintenance lock.
fn delete_oldest(
    partition: &Partition,
    segments: &[std::sync::Arc<crate::segment::Segment>],
    doomed: usize,
) -> Result<usize> {
    let s = partition.shared();
    if doomed == 0 {
        return Ok(0);
    }
    let doomed = &segments[..doomed];
    for segment in doomed {
        let log = &segment.paths().log;
        s.storage
            .rename(log, &with_suffix(log, DELETED))
            .ctx("mark segment deleted", log)?;
    }
    s.storage
        .sync_dir(&s.dir)
        .ctx("sync partition directory", &s.dir)?;
    let first_kept = segments[doomed.len()].base_offset();
    s.update_segments(|list| list.retain(|seg| seg.base_offset() >= first_kept));
    for segment in doomed {
        let paths = segment.paths();
        for path in [
            with_suffix(&paths.log, DELETED),
            paths.index.clone(),
            paths.time_index.clone(),
        ] {
            if s.storage.exists(&path) {
                s.storage
                    .remove_file(&path)
                    .ctx("remove deleted segment", &path)?;
            }
        }
        tracing::debug!(topic = %s.topic, partition = s.id, base_offset = segment.base_offset(), "retention deleted segment");
    }
    s.storage
        .sync_dir(&s.dir)
        .ctx("sync partition directory", &s.dir)?;
    s.evict_producers_below(first_kept);
    producers::remove_snapshots_below(&*s.storage, &s.dir, first_kept)?;
    Ok(doomed.len())
}

pub(crate) fn with_suffix(path: &std::path::Path, suffix: &str) -> std::path::PathBuf {
    let mut name = path.as_os_str().to_os_string();
    name.push(suffix);
    name.into()
}
