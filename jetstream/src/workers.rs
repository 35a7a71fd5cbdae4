//! Workers and task leases on JetStream: two key-value buckets whose
//! values vanish `ttl` after their last write. `<prefix>-workers` holds a
//! key per live worker (its heartbeat); `<prefix>-leases` a key per task
//! held, whose value is the holder's id. A lease is taken with a create
//! (refused while another holds it) and renewed with an update by
//! revision (refused once it lapsed and someone else took it), so two
//! workers never both believe they hold a task for longer than one
//! renewal interval.

use std::time::Duration;

use async_nats::jetstream::{self, kv};
use async_trait::async_trait;
use bytes::Bytes;
use futures::TryStreamExt;
use weir_log::{LogError, LogResult, Worker, Workers, check_catalog_key};

use crate::config::expiring_bucket;
use crate::errors::unavailable;
use crate::names::Names;

/// Membership and leases in the cluster (see the module docs).
pub struct JetStreamWorkers {
    workers: kv::Store,
    leases: kv::Store,
    ttl: Duration,
}

impl JetStreamWorkers {
    /// Opens both buckets, making them if missing.
    pub async fn open(
        context: &jetstream::Context,
        names: &Names,
        replicas: usize,
        ttl: Duration,
    ) -> LogResult<JetStreamWorkers> {
        let workers = expiring_bucket(
            context,
            names.workers_bucket(),
            "Weir: live workers",
            replicas,
            ttl,
        )
        .await?;
        let leases = expiring_bucket(
            context,
            names.leases_bucket(),
            "Weir: which worker runs which pipeline task",
            replicas,
            ttl,
        )
        .await?;
        Ok(JetStreamWorkers {
            workers,
            leases,
            ttl,
        })
    }

    /// The live value and revision at `key` of `store`.
    async fn entry(store: &kv::Store, key: &str) -> LogResult<Option<(Bytes, u64)>> {
        let entry = store
            .entry(key)
            .await
            .map_err(|e| unavailable(&format!("reading {key}"), e))?;
        Ok(entry
            .filter(|e| e.operation == kv::Operation::Put)
            .map(|e| (e.value, e.revision)))
    }

    /// Every live key of `store` with its value, sorted by key.
    async fn all(store: &kv::Store, what: &str) -> LogResult<Vec<(String, Bytes)>> {
        let mut keys: Vec<String> = store
            .keys()
            .await
            .map_err(|e| unavailable(&format!("listing {what}"), e))?
            .try_collect()
            .await
            .map_err(|e| unavailable(&format!("listing {what}"), e))?;
        keys.sort();
        let mut values = Vec::new();
        for key in keys {
            // A value may lapse between the listing and the read.
            if let Some((value, _)) = Self::entry(store, &key).await? {
                values.push((key, value));
            }
        }
        Ok(values)
    }
}

/// Checks a worker id or task key (the characters bucket keys allow).
fn check_key(key: &str) -> LogResult<()> {
    check_catalog_key(key, false)
        .map_err(|e| LogError::Unavailable(e.to_string().replace("catalog key", "worker key")))
}

#[async_trait]
impl Workers for JetStreamWorkers {
    fn ttl(&self) -> Duration {
        self.ttl
    }

    async fn heartbeat(&self, id: &str, info: Bytes) -> LogResult<Vec<Worker>> {
        check_key(id)?;
        self.workers
            .put(id, info)
            .await
            .map_err(|e| unavailable(&format!("announcing worker {id}"), e))?;
        Ok(Self::all(&self.workers, "workers")
            .await?
            .into_iter()
            .map(|(id, info)| Worker { id, info })
            .collect())
    }

    async fn leave(&self, id: &str) -> LogResult<()> {
        check_key(id)?;
        self.workers
            .purge(id)
            .await
            .map_err(|e| unavailable(&format!("removing worker {id}"), e))
    }

    async fn lease(&self, task: &str, id: &str) -> LogResult<bool> {
        check_key(task)?;
        let holder = Bytes::from(id.to_string());
        match Self::entry(&self.leases, task).await? {
            Some((value, revision)) if value == holder => {
                match self.leases.update(task, holder, revision).await {
                    Ok(_) => Ok(true),
                    Err(e) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => Ok(false),
                    Err(e) => Err(unavailable(&format!("renewing the lease on {task}"), e)),
                }
            }
            Some(_) => Ok(false),
            None => match self.leases.create(task, holder).await {
                Ok(_) => Ok(true),
                Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => Ok(false),
                Err(e) => Err(unavailable(&format!("taking the lease on {task}"), e)),
            },
        }
    }

    async fn release(&self, task: &str, id: &str) -> LogResult<()> {
        check_key(task)?;
        match Self::entry(&self.leases, task).await? {
            Some((value, revision)) if value == id.as_bytes() => {
                // Refused when the lease changed hands meanwhile: then it
                // is not ours to give up.
                let _ = self
                    .leases
                    .purge_expect_revision(task, Some(revision))
                    .await;
                Ok(())
            }
            _ => Ok(()),
        }
    }

    async fn leases(&self) -> LogResult<Vec<(String, String)>> {
        Ok(Self::all(&self.leases, "leases")
            .await?
            .into_iter()
            .map(|(task, holder)| (task, String::from_utf8_lossy(&holder).into_owned()))
            .collect())
    }
}
