//! Bringing a partition directory back to a consistent state on open.
//!
//! In order: leftovers of interrupted work are resolved (temporary files and
//! unfinished compaction output are removed, a compaction that reached its
//! commit point is completed, segments half-deleted by retention are
//! removed), orphan index files are dropped, then every segment is opened:
//! closed ones through their (checked) indexes, the newest one by a full
//! scan that truncates a torn tail. Finally the segments must not overlap.

use std::path::Path;
use std::sync::Arc;

use crate::config::TopicConfig;
use crate::error::{IoContext, LogError, Result};
use crate::segment::{Segment, SegmentPaths, parse_base_offset};
use crate::storage::Storage;

/// Suffix of compaction output not yet committed.
pub(crate) const CLEANED: &str = ".cleaned";
/// Suffix of compaction output committed but not yet moved into place.
pub(crate) const SWAP: &str = ".swap";
/// Suffix of segments retention has committed to delete.
pub(crate) const DELETED: &str = ".deleted";

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
    let Some((&active, closed)) = bases.split_last() else {
        let segment = Segment::create(storage, dir, 0, interval)?;
        storage.sync_dir(dir).ctx("sync partition directory", dir)?;
        return Ok(vec![Arc::new(segment)]);
    };
    let mut segments = Vec::with_capacity(bases.len());
    for &base in closed {
        segments.push(Arc::new(Segment::open_closed(
            storage, dir, base, interval,
        )?));
    }
    segments.push(Arc::new(Segment::open_active(
        storage, dir, active, interval,
    )?));
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
    Ok(segments)
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
