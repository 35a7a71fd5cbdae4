//! [`Workers`]: the servers (workers) sharing one cluster log, and the
//! leases that give each pipeline task to exactly one of them. A worker
//! says it is alive with a heartbeat; a lease is held by renewing it.
//! Both lapse after [`Workers::ttl`] without renewal, so a killed worker's
//! tasks are free again within that time. A lease only says who should
//! run a task: a worker that lost its lease while paused may still try to
//! commit once, and the commit log refuses it (see `commit_log`).
//!
//! The embedded log has no such thing: its one server runs every task.

use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;

use crate::LogResult;

/// A live worker: its id and what it last said about itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Worker {
    pub id: String,
    pub info: Bytes,
}

/// Membership and task leases (see the module docs).
#[async_trait]
pub trait Workers: Send + Sync + 'static {
    /// How long a heartbeat or a lease lasts without renewal.
    fn ttl(&self) -> Duration;
    /// Says worker `id` is alive, with `info` for the others to read;
    /// returns every live worker, sorted by id.
    async fn heartbeat(&self, id: &str, info: Bytes) -> LogResult<Vec<Worker>>;
    /// Worker `id` leaves: the others stop counting on it at once.
    async fn leave(&self, id: &str) -> LogResult<()>;
    /// Takes or renews worker `id`'s lease on `task` (a key such as
    /// `pipeline/topic/0`); true when `id` holds it now, false when
    /// another worker does.
    async fn lease(&self, task: &str, id: &str) -> LogResult<bool>;
    /// Gives up worker `id`'s lease on `task`; nothing happens when `id`
    /// does not hold it.
    async fn release(&self, task: &str, id: &str) -> LogResult<()>;
    /// Every lease held now, as `(task, worker)`, sorted by task.
    async fn leases(&self) -> LogResult<Vec<(String, String)>>;
}
