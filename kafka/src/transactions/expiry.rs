//! Letting go of transactional ids: transactions abandoned past their
//! timeout are aborted (and their producer fenced), commits and aborts that
//! failed to finish are retried, and ids idle for the expiry period, or a
//! deleted tenant's, are forgotten with their state files and buffers.

use std::sync::Arc;

use anyhow::Context as _;

use super::state::{Status, Txn, buffer_name, state_path};
use super::{Transactions, now_ms};

impl Transactions {
    /// Aborts transactions open longer than their timeout (raising their
    /// epoch, so the producer that abandoned them is fenced) and retries
    /// commits and aborts that failed to finish.
    pub(super) async fn reap(&self) {
        let txns: Vec<_> = self.lock().values().cloned().collect();
        let now = now_ms();
        for txn in txns {
            let Ok(mut txn) = txn.try_lock() else {
                continue;
            };
            match txn.record.status {
                Status::Ongoing
                    if now.saturating_sub(txn.record.started_ms) >= txn.record.timeout_ms =>
                {
                    tracing::info!(txn = %txn.record.id, "aborting a transaction past its timeout");
                    let mut aborting = txn.record.clone();
                    aborting.status = Status::PrepareAbort;
                    aborting.previous = Some((aborting.producer_id, aborting.epoch));
                    aborting.epoch = aborting.epoch.saturating_add(1);
                    if self.save(&aborting).is_ok() {
                        txn.record = aborting;
                        let _ = self.finish(&mut txn).await;
                    }
                }
                Status::PrepareCommit | Status::PrepareAbort => {
                    let _ = self.finish(&mut txn).await;
                }
                _ => {}
            }
        }
    }

    /// Forgets the transactional ids that are idle and were not used for
    /// `expire_after`, with their state files and any buffer left behind.
    pub(super) async fn expire(&self, now: u64) {
        let idle = |txn: &Arc<tokio::sync::Mutex<Txn>>| {
            txn.try_lock()
                .is_ok_and(|txn| txn.expired_at(now, self.expire_after))
        };
        let candidates: Vec<_> = self
            .lock()
            .iter()
            .filter(|(_, txn)| idle(txn))
            .map(|(id, txn)| (id.clone(), txn.clone()))
            .collect();
        if candidates.is_empty() {
            return;
        }
        let _creating = self.creating.lock().await;
        for (id, txn) in candidates {
            let Ok(mut txn) = txn.try_lock() else {
                continue;
            };
            if !txn.expired_at(now, self.expire_after) {
                continue;
            }
            match self.forget(&id, &mut txn).await {
                Ok(()) => tracing::info!(
                    txn = %id,
                    "forgot a transactional id unused for {:?}",
                    self.expire_after
                ),
                Err(e) => {
                    tracing::warn!(txn = %id, "forgetting an expired transactional id failed: {e:#}");
                }
            }
        }
    }

    /// Forgets every transactional id that matches (a deleted tenant's),
    /// whatever its state: an open transaction is dropped unwritten, a
    /// prepared one is not finished. A producer still using one gets
    /// INVALID_PRODUCER_ID_MAPPING; an InitProducerId starts it afresh.
    pub async fn forget_ids(&self, matches: impl Fn(&str) -> bool) -> anyhow::Result<()> {
        let _creating = self.creating.lock().await;
        let doomed: Vec<_> = self
            .lock()
            .iter()
            .filter(|(id, _)| matches(id))
            .map(|(id, txn)| (id.clone(), txn.clone()))
            .collect();
        for (id, txn) in doomed {
            let mut txn = txn.lock().await;
            self.forget(&id, &mut txn)
                .await
                .with_context(|| format!("while forgetting transactional id {id:?}"))?;
        }
        Ok(())
    }

    /// Forgets one transactional id: its buffer, its state file, its entry
    /// (the caller holds `creating` and the id's lock).
    async fn forget(&self, id: &str, txn: &mut Txn) -> anyhow::Result<()> {
        self.log.delete_commit_log(&buffer_name(id)).await?;
        weir_core::files::remove_durably(&state_path(&self.dir, id))?;
        self.track_offsets(&txn.record, false);
        txn.expired = true;
        self.lock().remove(id);
        Ok(())
    }
}
