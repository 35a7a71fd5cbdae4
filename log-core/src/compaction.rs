//! Key compaction: closed segments keep only the latest record per key.
//!
//! A first pass over the closed segments finds each key's latest offset; a
//! second rewrites every closed segment that holds superseded records,
//! copying kept records byte for byte (offsets and timestamps unchanged,
//! see `Batch::retain`). A tombstone is kept while it is the latest record
//! for its key and younger than `tombstone_retention_ms`, then dropped.
//! The active segment is never touched. A batch that is an idempotent
//! producer's latest in the closed segments is never removed whole: if none
//! of its records survive, its last record is kept, so that its header (and
//! with it the producer's last sequence) stays for producer state rebuilt
//! by replaying these segments (`producers.rs`; Kafka keeps such a batch
//! empty, which this format does not allow).
//!
//! Each rewrite is crash-safe: the new data is written to `B.log.cleaned`
//! and synced, renamed to `B.log.swap` and the directory synced (the commit
//! point), then the old index files are removed and the swap file renamed
//! over `B.log`. Recovery deletes `.cleaned` files and completes `.swap`
//! files, so a crash at any step leaves either the old or the new segment.

use std::collections::HashMap;
use std::sync::Arc;

use crate::batch::Batch;
use crate::config::Cleanup;
use crate::error::{IoContext, Result};
use crate::partition::Partition;
use crate::recovery::{CLEANED, SWAP};
use crate::retention::with_suffix;
use crate::segment::Segment;

/// What one compaction pass did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct CompactionStats {
    pub segments_rewritten: usize,
    pub records_removed: usize,
}

/// Compacts the closed segments of a `compact` topic's partition.
pub(crate) fn compact(partition: &Partition) -> Result<CompactionStats> {
    let s = partition.shared();
    let mut stats = CompactionStats::default();
    if s.config.cleanup != Cleanup::Compact {
        return Ok(stats);
    }
    let _maintenance = s.maintenance.lock().unwrap_or_else(|e| e.into_inner());
    // Only durable segments are rewritten: recovery may still need to
    // verify (and cut) the others.
    s.sync_closed()?;
    let segments = s.segments();
    let closed = &segments[..segments.len() - 1];
    let mut latest: HashMap<Vec<u8>, u64> = HashMap::new();
    let mut producers_last: HashMap<i64, u64> = HashMap::new();
    for segment in closed {
        for batch in segment.batches()? {
            if let Some(stamp) = batch.producer() {
                producers_last.insert(stamp.id, batch.base_offset());
            }
            for record in batch.records() {
                if let Some(key) = record.key {
                    latest.insert(key.to_vec(), record.offset);
                }
            }
        }
    }
    let horizon = s
        .clock
        .now_ms()
        .saturating_sub(s.config.tombstone_retention_ms as i64);
    for segment in closed {
        let batches = segment.batches()?;
        let mut removed = 0;
        let kept: Vec<_> = batches
            .iter()
            .filter_map(|batch| {
                let mut dropped = 0;
                let retained = batch.retain(|r| {
                    let keep = match r.key {
                        None => true,
                        Some(key) => {
                            latest.get(key) == Some(&r.offset)
                                && !(r.is_tombstone() && r.timestamp < horizon)
                        }
                    };
                    dropped += usize::from(!keep);
                    keep
                });
                if retained.is_none() && is_producers_last(batch, &producers_last) {
                    dropped -= 1;
                    removed += dropped;
                    return keep_last_record(batch);
                }
                removed += dropped;
                retained
            })
            .collect();
        if removed == 0 {
            continue;
        }
        let replacement = rewrite(partition, segment, &kept)?;
        s.update_segments(|list| {
            if let Some(slot) = list
                .iter_mut()
                .find(|seg| seg.base_offset() == segment.base_offset())
            {
                *slot = replacement.clone();
            }
        });
        stats.segments_rewritten += 1;
        stats.records_removed += removed;
    }
    Ok(stats)
}

fn is_producers_last(batch: &Batch, producers_last: &HashMap<i64, u64>) -> bool {
    batch
        .producer()
        .is_some_and(|stamp| producers_last.get(&stamp.id) == Some(&batch.base_offset()))
}

/// The batch with only its last record, header range unchanged.
fn keep_last_record(batch: &Batch) -> Option<Batch> {
    let last = batch.records().last()?.offset;
    batch.retain(|r| r.offset == last)
}

/// Replaces `segment`'s file with `batches`, crash-safely (see the module docs).
fn rewrite(partition: &Partition, segment: &Segment, batches: &[Batch]) -> Result<Arc<Segment>> {
    let s = partition.shared();
    let storage = &*s.storage;
    let paths = segment.paths();
    let cleaned = with_suffix(&paths.log, CLEANED);
    let swap = with_suffix(&paths.log, SWAP);
    let file = storage
        .open(&cleaned, true)
        .ctx("create compacted segment", &cleaned)?;
    file.set_len(0)
        .ctx("truncate compacted segment", &cleaned)?;
    let mut position = 0;
    for batch in batches {
        file.write_all_at(batch.as_bytes(), position)
            .ctx("write compacted segment", &cleaned)?;
        position += batch.size() as u64;
    }
    file.sync_data().ctx("sync compacted segment", &cleaned)?;
    drop(file);
    storage
        .rename(&cleaned, &swap)
        .ctx("commit compacted segment", &cleaned)?;
    storage
        .sync_dir(&s.dir)
        .ctx("sync partition directory", &s.dir)?;
    for index in [&paths.index, &paths.time_index] {
        if storage.exists(index) {
            storage.remove_file(index).ctx("remove old index", index)?;
        }
    }
    storage
        .rename(&swap, &paths.log)
        .ctx("install compacted segment", &swap)?;
    storage
        .sync_dir(&s.dir)
        .ctx("sync partition directory", &s.dir)?;
    Ok(Arc::new(Segment::open_closed(
        storage,
        &s.dir,
        segment.base_offset(),
        s.config.index_interval_bytes,
    )?))
}
