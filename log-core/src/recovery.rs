//! Bringing a partition directory back to a consistent state on open.
//!
//! In order: leftovers of interrupted work are resolved (temporary files and
//! unfinished compaction output are removed, a compaction that reached its
//! commit point is completed, segments half-deleted by retention are
//! removed), orphan index files are dropped, then every segment is opened:
//! closed segments below the recovery point through their (checked)
//! indexes, the rest (always the newest) by a full scan that truncates a
//! torn tail; segments after a hole are removed. Finally the segments must
//! not overlap.
//!
//! The recovery point: `always` topics sync a segment before it stops being
//! active, so only the newest needs scanning. `interval` and `never` topics
//! sync closed segments later, off the append path, and then record in
//! `recovery-point` the base offset below which everything is synced.

use std::path::Path;
use std::sync::Arc;

use crate::config::{Durability, TopicConfig};
use crate::error::{IoContext, LogError, Result};
use crate::segment::{Segment, SegmentPaths, parse_base_offset};
use crate::storage::{Storage, read_all, write_atomic};

/// Suffix of compaction output not yet committed.
pub(crate) const CLEANED: &str = ".cleaned";
/// Suffix of compaction output committed but not yet moved into place.
pub(crate) const SWAP: &str = ".swap";
/// Suffix of segments retention has committed to delete.
pub(crate) const DELETED: &str = ".deleted";
/// File holding the offset below which segments are known to be synced
/// (for `interval` and `never` topics, whose segments are synced after they close).
const RECOVERY_POINT: &str = "recovery-point";

/// Recovers and opens the segments of a partition directory, creating the
/// directory and a first empty segment if there is none.
pub(crate) fn open_segments(
    storage: &dyn Storage,
    dir: &Path,
    config: &TopicConfig,
) -> Result<Vec<Arc<Segment>>> {
    storage
        .create_dir_all(dir)
        .ctx("create partition directory", dir)?;
    resolve_leftovers(storage, dir)?;
    let names = storage.list(dir).ctx("list partition directory", dir)?;
    let mut bases: Vec<u64> = names
        .iter()
        .filter_map(|n| parse_base_offset(n, "log"))
        .collect();
    bases.sort_unstable();
    remove_orphan_indexes(storage, dir, &names, &bases)?;
    let interval = config.index_interval_bytes;
    let Some(&active) = bases.last() else {
        let segment = Segment::create(storage, dir, 0, interval)?;
        storage.sync_dir(dir).ctx("sync partition directory", dir)?;
        return Ok(vec![Arc::new(segment)]);
    };
    // `always` topics sync every segment before it stops being active;
    // other topics record how far closed segments are synced.
    let recovery_point = match config.durability {
        Durability::Always => active,
        Durability::Interval | Durability::Never => read_recovery_point(storage, dir),
    };
    let mut segments: Vec<Arc<Segment>> = Vec::with_capacity(bases.len());
    let mut verified_closed = false;
    for (i, &base) in bases.iter().enumerate() {
        let next_base = bases.get(i + 1).copied();
        if next_base.is_some_and(|next| next <= recovery_point) {
            let segment = Segment::open_closed(storage, dir, base, interval)?;
            segments.push(Arc::new(segment));
            continue;
        }
        let (segment, truncated) = Segment::open_unverified(storage, dir, base, interval)?;
        segment.sync()?;
        // Past the recovery point a segment that was cut short, or that does
        // not end where the next begins (cut short by an earlier recovery),
        // is followed by a hole: the segments after it cannot be trusted.
        let hole = truncated || next_base.is_some_and(|next| segment.next_offset() != next);
        if let (true, Some(_)) = (hole, next_base) {
            remove_segments(storage, dir, &bases[i + 1..])?;
            segments.push(Arc::new(segment));
            break;
        }
        if next_base.is_some() {
            segment.close()?;
            verified_closed = true;
        }
        segments.push(Arc::new(segment));
    }
    if verified_closed {
        let active = segments.last().expect("at least one segment").base_offset();
        write_recovery_point(storage, dir, active)?;
    }
    check_no_overlap(&segments)?;
    Ok(segments)
}

fn check_no_overlap(segments: &[Arc<Segment>]) -> Result<()> {
    for pair in segments.windows(2) {
        if pair[0].next_offset() > pair[1].base_offset() {
            return Err(LogError::Corrupt {
                path: pair[0].paths().log.clone(),
                position: pair[0].size(),
                reason: format!(
                    "segment ends at offset {} but the next segment starts at {}",
                    pair[0].next_offset(),
                    pair[1].base_offset()
                ),
            });
        }
    }
    Ok(())
}

/// Removes whole segments (log and index files) and syncs the directory.
fn remove_segments(storage: &dyn Storage, dir: &Path, bases: &[u64]) -> Result<()> {
    for &base in bases {
        let paths = SegmentPaths::new(dir, base);
        tracing::warn!(file = %paths.log.display(), "removing segment that follows lost data");
        for path in [&paths.log, &paths.index, &paths.time_index] {
            if storage.exists(path) {
                storage
                    .remove_file(path)
                    .ctx("remove segment after lost data", path)?;
            }
        }
    }
    storage.sync_dir(dir).ctx("sync partition directory", dir)
}

/// The offset below which every segment of a non-`always` partition is
/// known to be synced (0 when unknown: then every segment is verified).
fn read_recovery_point(storage: &dyn Storage, dir: &Path) -> u64 {
    let path = dir.join(RECOVERY_POINT);
    if !storage.exists(&path) {
        return 0;
    }
    read_all(storage, &path)
        .ok()
        .and_then(|bytes| String::from_utf8(bytes).ok())
        .and_then(|text| text.trim().parse().ok())
        .unwrap_or(0)
}

/// Durably records that every segment below `offset` is synced.
pub(crate) fn write_recovery_point(storage: &dyn Storage, dir: &Path, offset: u64) -> Result<()> {
    let path = dir.join(RECOVERY_POINT);
    write_atomic(storage, &path, format!("{offset}\n").as_bytes())
        .ctx("write recovery point", &path)
}

fn resolve_leftovers(storage: &dyn Storage, dir: &Path) -> Result<()> {
    let names = storage.list(dir).ctx("list partition directory", dir)?;
    let mut changed = false;
    for name in &names {
        let path = dir.join(name);
        if name.ends_with(".tmp") || name.ends_with(CLEANED) || name.ends_with(DELETED) {
            storage
                .remove_file(&path)
                .ctx("remove leftover file", &path)?;
            changed = true;
        } else if let Some(log_name) = name.strip_suffix(SWAP) {
            // Compaction committed this file: finish moving it into place.
            let Some(base) = parse_base_offset(log_name, "log") else {
                continue;
            };
            let paths = SegmentPaths::new(dir, base);
            for index in [&paths.index, &paths.time_index] {
                if storage.exists(index) {
                    storage
                        .remove_file(index)
                        .ctx("remove stale index", index)?;
                }
            }
            storage
                .rename(&path, &paths.log)
                .ctx("complete compaction swap", &path)?;
            changed = true;
        }
    }
    if changed {
        storage.sync_dir(dir).ctx("sync partition directory", dir)?;
    }
    Ok(())
}

fn remove_orphan_indexes(
    storage: &dyn Storage,
    dir: &Path,
    names: &[String],
    bases: &[u64],
) -> Result<()> {
    let mut changed = false;
    for name in names {
        let base =
            parse_base_offset(name, "index").or_else(|| parse_base_offset(name, "timeindex"));
        if base.is_some_and(|b| bases.binary_search(&b).is_err()) {
            let path = dir.join(name);
            storage
                .remove_file(&path)
                .ctx("remove orphan index", &path)?;
            changed = true;
        }
    }
    if changed {
        storage.sync_dir(dir).ctx("sync partition directory", dir)?;
    }
    Ok(())
}
