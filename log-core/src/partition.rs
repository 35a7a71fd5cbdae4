//! A partition: an ordered, append-only sequence of batches stored as a
//! directory of segments.
//!
//! One writer at a time (a mutex around the active segment) assigns offsets
//! and writes; any number of readers read concurrently from a snapshot of
//! the segment list. Readers only ever see the *visible end*: for
//! `always` topics that is the durable end (no reader can observe a record
//! a power cut could take back), otherwise everything written. Async
//! readers wait for the visible end to move through a `watch` channel.
//!
//! Batches from idempotent producers are checked under the writer lock
//! against the partition's producer state (`producers.rs`): retries are
//! answered with the original offsets instead of being written twice.
//! Batches without a producer skip this entirely.
//!
//! Retention and compaction (their own modules) replace or remove closed
//! segments under the partition's maintenance lock.

use bytes::Bytes;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};

use tokio::sync::watch;

use crate::batch::{Batch, ProducerStamp};
use crate::clock::Clock;
use crate::config::{Cleanup, Durability, TopicConfig};
use crate::durability::GroupCommit;
use crate::error::{IoContext, LogError, Result};
use crate::producers::{self, Producers, Snapshot, Verdict};
use crate::recovery;
use crate::segment::Segment;
use crate::storage::Storage;

/// Where an appended batch landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppendInfo {
    pub base_offset: u64,
    pub last_offset: u64,
    /// The batch was a producer's retry of a batch already written: nothing
    /// was written, and the offsets are those of the original append.
    pub duplicate: bool,
}

/// A handle to one partition; clones share it and work from any thread.
#[derive(Debug, Clone)]
pub struct Partition {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Writer {
    next_offset: u64,
    active: Arc<Segment>,
    producers: Producers,
}

#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) topic: String,
    pub(crate) id: u32,
    pub(crate) dir: PathBuf,
    pub(crate) config: TopicConfig,
    pub(crate) storage: Arc<dyn Storage>,
    pub(crate) clock: Arc<dyn Clock>,
    writer: Mutex<Writer>,
    segments: RwLock<Arc<Vec<Arc<Segment>>>>,
    commit: GroupCommit,
    /// Closed segments of `interval`/`never` topics not yet synced, oldest
    /// first, each with the producer snapshot taken when it closed.
    unsynced: Mutex<Vec<(Arc<Segment>, Snapshot)>>,
    /// Serializes syncing closed segments, so recovery points only move forward.
    syncing_closed: Mutex<()>,
    visible: watch::Sender<u64>,
    deleted: AtomicBool,
    last_flush_ms: AtomicI64,
    /// Serializes retention and compaction.
    pub(crate) maintenance: Mutex<()>,
}

impl Partition {
    /// Opens (recovering) or creates the partition stored in `dir`.
    pub(crate) fn open(
        storage: Arc<dyn Storage>,
        clock: Arc<dyn Clock>,
        topic: &str,
        id: u32,
        dir: PathBuf,
        config: TopicConfig,
    ) -> Result<Partition> {
        let segments = recovery::open_segments(&*storage, &dir, &config)?;
        let active = segments
            .last()
            .expect("recovery leaves at least one segment")
            .clone();
        let next_offset = active.next_offset();
        let producers = producers::load(&*storage, &dir, &segments)?;
        let shared = Shared {
            topic: topic.to_string(),
            id,
            dir,
            config,
            storage,
            last_flush_ms: AtomicI64::new(clock.now_ms()),
            clock,
            writer: Mutex::new(Writer {
                next_offset,
                active,
                producers,
            }),
            segments: RwLock::new(Arc::new(segments)),
            // Recovery synced what it kept, so everything found is durable.
            commit: GroupCommit::new(next_offset),
            unsynced: Mutex::new(Vec::new()),
            syncing_closed: Mutex::new(()),
            visible: watch::Sender::new(next_offset),
            deleted: AtomicBool::new(false),
            maintenance: Mutex::new(()),
        };
        Ok(Partition {
            shared: Arc::new(shared),
        })
    }

    pub(crate) fn shared(&self) -> &Shared {
        &self.shared
    }

    pub fn topic(&self) -> &str {
        &self.shared.topic
    }

    pub fn id(&self) -> u32 {
        self.shared.id
    }

    /// Appends a batch and assigns its offsets. Returns once the batch is as
    /// durable as the topic's policy asks (for `always`, on disk).
    ///
    /// A batch stamped by an idempotent producer ([`Batch::producer`]) is
    /// checked first: a retry of one of the producer's last 5 batches is not
    /// written again but answered with the original offsets and
    /// `duplicate: true` (once those are as durable as the policy asks);
    /// an older epoch fails with `ProducerFenced`, a sequence gap with
    /// `OutOfOrderSequence`, an older sequence that is not one of those
    /// batches with `DuplicateSequence`.
    pub fn append(&self, batch: Batch) -> Result<AppendInfo> {
        let info = self.write_batch(batch)?;
        self.shared.make_durable(info.last_offset + 1)?;
        Ok(info)
    }

    /// Appends batches in order, each as [`append`](Self::append) would,
    /// and makes them durable together: one sync for an `always` topic.
    /// Returns each batch's outcome; a refused batch does not stop the
    /// ones after it (with idempotent producers, a duplicate may be
    /// followed by new batches).
    pub fn append_all(&self, batches: Vec<Batch>) -> Vec<Result<AppendInfo>> {
        let mut outcomes: Vec<Result<AppendInfo>> = batches
            .into_iter()
            .map(|batch| self.write_batch(batch))
            .collect();
        let end = outcomes
            .iter()
            .filter_map(|o| o.as_ref().ok())
            .map(|info| info.last_offset + 1)
            .max();
        if let Some(end) = end
            && let Err(e) = self.shared.make_durable(end)
        {
            let reason = e.to_string();
            for outcome in outcomes.iter_mut().filter(|o| o.is_ok()) {
                *outcome = Err(self.shared.failed(reason.clone()));
            }
        }
        outcomes
    }

    /// Checks a batch and writes it (or finds it is a duplicate), without
    /// waiting for durability.
    fn write_batch(&self, batch: Batch) -> Result<AppendInfo> {
        let s = &*self.shared;
        s.check_live()?;
        if batch.size() > s.config.max_batch_bytes {
            return Err(LogError::BatchTooLarge {
                topic: s.topic.clone(),
                size: batch.size(),
                max: s.config.max_batch_bytes,
            });
        }
        if s.config.cleanup == Cleanup::Compact
            && let Some(index) = batch.records().position(|r| r.key.is_none())
        {
            return Err(LogError::MissingKey {
                topic: s.topic.clone(),
                index,
            });
        }
        let info = {
            let mut w = s.lock_writer();
            s.check_failed()?;
            let stamp = producers::stamp_of(&batch);
            if let Some((stamp, last_delta)) = &stamp
                && let Verdict::Duplicate {
                    base_offset,
                    last_offset,
                } = s.check_producer(&w, stamp, *last_delta)?
            {
                AppendInfo {
                    base_offset,
                    last_offset,
                    duplicate: true,
                }
            } else {
                let info = s.write(&mut w, batch)?;
                if let Some((stamp, last_delta)) = &stamp {
                    w.producers
                        .record(stamp, *last_delta, info.base_offset, info.last_offset);
                }
                info
            }
        };
        Ok(info)
    }

    /// Reads whole batches starting with the one holding `offset`, about
    /// `max_bytes` in all but at least one batch. The first batch may start
    /// before `offset`; skip its records below `offset`. Returns no batches
    /// when `offset` is the end of the partition.
    pub fn read(&self, offset: u64, max_bytes: usize) -> Result<Vec<Batch>> {
        self.read_stored(offset, max_bytes)
            .map(|(batches, _)| batches)
    }

    /// Like [`read`](Self::read), also returning the batches' stored bytes
    /// as one contiguous buffer (what a Kafka fetch sends as it is).
    pub fn read_stored(&self, offset: u64, max_bytes: usize) -> Result<(Vec<Batch>, Bytes)> {
        let s = &*self.shared;
        s.check_live()?;
        let end = self.end_offset();
        let segments = s.segments();
        let start = segments[0].base_offset();
        if offset < start || offset > end {
            return Err(LogError::OffsetOutOfRange {
                topic: s.topic.clone(),
                partition: s.id,
                requested: offset,
                start,
                end,
            });
        }
        let first = segments.partition_point(|seg| seg.base_offset() <= offset) - 1;
        for segment in &segments[first..] {
            let from = offset.max(segment.base_offset());
            if from >= end {
                break;
            }
            let (batches, bytes) = segment.read_span(from, max_bytes, end)?;
            if !batches.is_empty() {
                return Ok((batches, bytes));
            }
        }
        Ok((Vec::new(), Bytes::new()))
    }

    /// The first offset whose record has a timestamp at or after `timestamp`
    /// (milliseconds), or the end offset if there is none.
    pub fn offset_for_timestamp(&self, timestamp: i64) -> Result<u64> {
        let s = &*self.shared;
        s.check_live()?;
        let end = self.end_offset();
        for segment in s.segments().iter() {
            if let Some(offset) = segment.find_by_timestamp(timestamp, end)? {
                return Ok(offset);
            }
        }
        Ok(end)
    }

    /// Waits until a record at `offset` or later is readable, that is until
    /// the end offset passes `offset`. Returns the new end offset.
    pub async fn wait_for(&self, offset: u64) -> Result<u64> {
        let s = &*self.shared;
        let mut rx = s.visible.subscribe();
        let end = rx
            .wait_for(|&end| end > offset || s.deleted.load(Ordering::Acquire))
            .await
            .map(|end| *end)
            .expect("the partition owns the sender");
        s.check_live()?;
        Ok(end)
    }

    /// The first offset still stored.
    pub fn start_offset(&self) -> u64 {
        self.shared.segments()[0].base_offset()
    }

    /// One past the last readable offset (the high watermark).
    pub fn end_offset(&self) -> u64 {
        *self.shared.visible.borrow()
    }

    /// Bytes stored in all segments.
    pub fn size_bytes(&self) -> u64 {
        self.shared.segments().iter().map(|s| s.size()).sum()
    }

    /// Number of segment files.
    pub fn segment_count(&self) -> usize {
        self.shared.segments().len()
    }

    /// Closes the active segment and starts a new one.
    pub fn roll(&self) -> Result<()> {
        let s = &*self.shared;
        s.check_live()?;
        let mut w = s.lock_writer();
        s.check_failed()?;
        if w.active.size() > 0 {
            s.roll(&mut w)
        } else {
            Ok(())
        }
    }

    /// Syncs everything written so far (used for `interval` durability and
    /// on shutdown).
    pub fn flush(&self) -> Result<()> {
        let s = &*self.shared;
        s.sync_closed()?;
        let target = s.lock_writer().next_offset;
        s.sync_until(target)?;
        s.last_flush_ms.store(s.clock.now_ms(), Ordering::Relaxed);
        Ok(())
    }

    /// Flushes an `interval` topic if its flush interval has passed.
    pub(crate) fn flush_if_due(&self, now_ms: i64) -> Result<()> {
        let s = &*self.shared;
        let due =
            s.last_flush_ms.load(Ordering::Relaxed) + s.config.flush_interval_ms as i64 <= now_ms;
        if s.config.durability == Durability::Interval && due && !s.deleted.load(Ordering::Acquire)
        {
            self.flush()?;
        }
        Ok(())
    }

    /// Marks the partition deleted and wakes every waiting reader.
    pub(crate) fn mark_deleted(&self) {
        self.shared.deleted.store(true, Ordering::Release);
        self.shared.visible.send_modify(|_| {});
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

impl Shared {
    /// Forgets the producers whose batches all lie below `first_offset`
    /// (retention deleted them).
    pub(crate) fn evict_producers_below(&self, first_offset: u64) {
        self.lock_writer().producers.evict_below(first_offset);
    }

    fn lock_writer(&self) -> MutexGuard<'_, Writer> {
        self.writer.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn segments(&self) -> Arc<Vec<Arc<Segment>>> {
        self.segments
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Replaces the segment list; `change` gets the current one.
    pub(crate) fn update_segments(&self, change: impl FnOnce(&mut Vec<Arc<Segment>>)) {
        let mut guard = self.segments.write().unwrap_or_else(|e| e.into_inner());
        let mut list = Vec::clone(&guard);
        change(&mut list);
        *guard = Arc::new(list);
    }

    pub(crate) fn check_live(&self) -> Result<()> {
        if self.deleted.load(Ordering::Acquire) {
            return Err(LogError::TopicDeleted(self.topic.clone()));
        }
        Ok(())
    }

    fn check_failed(&self) -> Result<()> {
        match self.commit.failure() {
            Some(reason) => Err(self.failed(reason)),
            None => Ok(()),
        }
    }

    fn failed(&self, reason: String) -> LogError {
        LogError::PartitionFailed {
            topic: self.topic.clone(),
            partition: self.id,
            reason,
        }
    }

    /// Makes the partition readable up to `end` once that is as durable as
    /// the topic asks (for `always`, synced).
    fn make_durable(&self, end: u64) -> Result<()> {
        match self.config.durability {
            Durability::Always => {
                let synced = self.sync_until(end)?;
                self.publish(synced);
            }
            Durability::Interval | Durability::Never => self.publish(end),
        }
        Ok(())
    }

    fn publish(&self, end: u64) {
        self.visible.send_if_modified(|visible| {
            let moved = end > *visible;
            *visible = (*visible).max(end);
            moved
        });
    }

    fn sync_until(&self, target: u64) -> Result<u64> {
        self.commit
            .sync_until(target, || {
                let (segment, end) = {
                    let w = self.lock_writer();
                    (w.active.clone(), w.next_offset)
                };
                self.sync_closed().map_err(|e| e.to_string())?;
                segment.sync().map_err(|e| e.to_string())?;
                Ok(end)
            })
            .map_err(|reason| self.failed(reason))
    }

    fn check_producer(
        &self,
        w: &Writer,
        stamp: &ProducerStamp,
        last_offset_delta: u32,
    ) -> Result<Verdict> {
        w.producers
            .check(stamp, last_offset_delta)
            .map_err(|refusal| refusal.into_error(&self.topic, self.id, stamp, last_offset_delta))
    }

    /// Assigns the batch its offsets and writes it to the active segment,
    /// rolling first if it is due.
    fn write(&self, w: &mut Writer, batch: Batch) -> Result<AppendInfo> {
        let now = self.clock.now_ms();
        if self.should_roll(w, &batch, now) {
            self.roll(w)?;
        }
        let batch = batch.with_base_offset(w.next_offset);
        if let Err(e) = w.active.append(&batch, now) {
            self.commit.fail(e.to_string());
            return Err(e);
        }
        w.next_offset = batch.next_offset();
        Ok(AppendInfo {
            base_offset: batch.base_offset(),
            last_offset: batch.last_offset(),
            duplicate: false,
        })
    }

    fn should_roll(&self, w: &Writer, batch: &Batch, now: i64) -> bool {
        let active = &w.active;
        if active.size() == 0 {
            return false;
        }
        let too_big = active.size() + batch.size() as u64 > self.config.segment_bytes;
        let too_old = match (self.config.segment_ms, active.first_append_ms()) {
            (Some(limit), Some(first)) => now - first >= limit as i64,
            _ => false,
        };
        let offsets_exhausted = w.next_offset + batch.record_count() as u64 - active.base_offset()
            > u64::from(u32::MAX);
        too_big || too_old || offsets_exhausted
    }

    /// Rolls the active segment if `expired` says so (used by retention).
    pub(crate) fn roll_if(&self, expired: impl FnOnce(&Segment) -> bool) -> Result<()> {
        let mut w = self.lock_writer();
        self.check_failed()?;
        if w.active.size() > 0 && expired(&w.active) {
            self.roll(&mut w)?;
        }
        Ok(())
    }

    /// Closes the active segment (syncing it) and opens a new one at the
    /// next offset. Any failure fails the partition.
    fn roll(&self, w: &mut Writer) -> Result<()> {
        let result: Result<()> = (|| {
            // The producer state as of the new segment's base offset, so
            // that recovery replays only the segment after it.
            let snapshot = w.producers.encode(w.next_offset);
            match self.config.durability {
                // Every acknowledged append is synced already; syncing the
                // rest now keeps "closed means durable" for these topics.
                Durability::Always => {
                    w.active.close()?;
                    snapshot.write(&*self.storage, &self.dir)?;
                    self.commit.advance(w.next_offset);
                    self.publish(w.next_offset);
                }
                // Off the append path: the next flush or maintenance pass
                // syncs it, writes the snapshot and then moves the recovery
                // point. For `never` topics that is like the kernel's own
                // delayed writeback, and it bounds what recovery must verify.
                Durability::Interval | Durability::Never => {
                    w.active.seal()?;
                    lock(&self.unsynced).push((w.active.clone(), snapshot));
                }
            }
            let segment = Arc::new(Segment::create(
                &*self.storage,
                &self.dir,
                w.next_offset,
                self.config.index_interval_bytes,
            )?);
            if self.config.durability == Durability::Always {
                self.storage
                    .sync_dir(&self.dir)
                    .ctx("sync partition directory", &self.dir)?;
            }
            self.update_segments(|list| list.push(segment.clone()));
            w.active = segment;
            Ok(())
        })();
        if let Err(e) = &result {
            self.commit.fail(e.to_string());
        }
        result
    }

    /// Syncs closed segments that are not yet durable, then records the new
    /// recovery point (which also makes their directory entries durable).
    pub(crate) fn sync_closed(&self) -> Result<()> {
        let _one_at_a_time = lock(&self.syncing_closed);
        let active_base = self.lock_writer().active.base_offset();
        let pending = std::mem::take(&mut *lock(&self.unsynced));
        if pending.is_empty() {
            return Ok(());
        }
        let result = pending
            .iter()
            .try_for_each(|(segment, _)| segment.sync_all())
            .and_then(|()| {
                pending
                    .iter()
                    .try_for_each(|(_, snapshot)| snapshot.write(&*self.storage, &self.dir))
            })
            .and_then(|()| recovery::write_recovery_point(&*self.storage, &self.dir, active_base));
        if let Err(e) = &result {
            self.commit.fail(e.to_string());
        }
        result
    }
}
