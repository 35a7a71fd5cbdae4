//! Group commit: many appenders, one fsync.
//!
//! An appender that needs its data on disk calls [`GroupCommit::sync_until`]
//! with the offset its batch ends at. If no sync is running, it becomes the
//! leader: it captures how far the log has been written, syncs, and records
//! that everything up to there is durable. Appenders that arrive while a
//! sync runs wait; when it ends, those it covered return at once and the
//! rest elect the next leader. So under load each fsync covers every append
//! written before it started, however many there are.
//!
//! A failed sync poisons the group commit for good: the kernel may already
//! have dropped the dirty pages, so nothing written before it can be
//! acknowledged (the PostgreSQL "fsyncgate" lesson). The partition must be
//! reopened, which re-reads what is really on disk.

use std::sync::{Condvar, Mutex, MutexGuard};

#[derive(Debug, Default)]
struct State {
    /// Every offset below this is durable.
    synced: u64,
    syncing: bool,
    failed: Option<String>,
}

/// The durable end of a partition and the machinery to move it forward.
#[derive(Debug, Default)]
pub(crate) struct GroupCommit {
    state: Mutex<State>,
    done: Condvar,
}

impl GroupCommit {
    pub(crate) fn new(synced: u64) -> Self {
        GroupCommit {
            state: Mutex::new(State {
                synced,
                ..State::default()
            }),
            done: Condvar::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The offset below which everything is durable.
    #[cfg(test)]
    fn synced(&self) -> u64 {
        self.lock().synced
    }

    /// Returns once every offset below `target` is durable. `sync` makes the
    /// log durable and returns the offset it covered; it runs in at most one
    /// thread at a time, outside the lock. Returns the durable end, or the
    /// reason the log can no longer be synced.
    pub(crate) fn sync_until(
        &self,
        target: u64,
        sync: impl FnOnce() -> Result<u64, String>,
    ) -> Result<u64, String> {
        let mut state = self.lock();
        loop {
            if let Some(reason) = &state.failed {
                return Err(reason.clone());
            }
            if state.synced >= target {
                return Ok(state.synced);
            }
            if !state.syncing {
                break;
            }
            state = self.done.wait(state).unwrap_or_else(|e| e.into_inner());
        }
        state.syncing = true;
        drop(state);
        let outcome = sync();
        let mut state = self.lock();
        state.syncing = false;
        let result = match outcome {
            Ok(upto) => {
                state.synced = state.synced.max(upto);
                if state.synced >= target {
                    Ok(state.synced)
                } else {
                    Err(format!(
                        "sync covered offsets up to {upto} but {target} was needed"
                    ))
                }
            }
            Err(reason) => {
                state.failed = Some(reason.clone());
                Err(reason)
            }
        };
        drop(state);
        self.done.notify_all();
        result
    }

    /// Records that everything below `offset` is durable (a segment roll
    /// synced it).
    pub(crate) fn advance(&self, offset: u64) {
        let mut state = self.lock();
        state.synced = state.synced.max(offset);
        drop(state);
        self.done.notify_all();
    }

    /// Marks the log as failed: no later sync can succeed.
    pub(crate) fn fail(&self, reason: String) {
        self.lock().failed.get_or_insert(reason);
        self.done.notify_all();
    }

    pub(crate) fn failure(&self) -> Option<String> {
        self.lock().failed.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::time::Duration;

    #[test]
    fn concurrent_waiters_share_syncs() {
        let commit = Arc::new(GroupCommit::new(0));
        let written = Arc::new(AtomicU64::new(0));
        let syncs = Arc::new(AtomicU64::new(0));
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let (commit, written, syncs) = (commit.clone(), written.clone(), syncs.clone());
                std::thread::spawn(move || {
                    for _ in 0..50 {
                        let end = written.fetch_add(1, Ordering::SeqCst) + 1;
                        commit
                            .sync_until(end, || {
                                syncs.fetch_add(1, Ordering::SeqCst);
                                let upto = written.load(Ordering::SeqCst);
                                std::thread::sleep(Duration::from_millis(1));
                                Ok(upto)
                            })
                            .unwrap();
                        assert!(commit.synced() >= end);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(commit.synced(), 400);
        assert!(
            syncs.load(Ordering::SeqCst) < 400,
            "8 threads never shared a sync"
        );
    }

    #[test]
    fn a_failed_sync_fails_every_later_wait() {
        let commit = GroupCommit::new(0);
        assert!(commit.sync_until(1, || Err("EIO".into())).is_err());
        assert_eq!(commit.sync_until(1, || Ok(5)), Err("EIO".to_string()));
        assert_eq!(commit.failure().as_deref(), Some("EIO"));
    }
}
