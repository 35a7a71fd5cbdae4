//! Deleting a tenant: the one service that removes everything a tenant
//! owned, used by `DELETE /v1/tenants/{name}` and by any other caller, so
//! that a tenant created again under the same name starts with nothing of
//! the old one.
//!
//! The order is what makes it complete:
//! 1. The deletion begins in the registry ([`Tenants::begin_delete`]): the
//!    tenant's tokens stop working, its Kafka sessions are woken and close,
//!    and its name stays taken (no re-creation, no new token) until the
//!    deletion is finished.
//! 2. Requests already being handled under its tokens (HTTP requests and
//!    Kafka requests hold a [`Lease`](super::tenants::Lease)) are waited
//!    for, so nothing of the tenant is created after this point.
//! 3. What it owns is deleted, holder by holder ([`TenantResources`], in
//!    the order the server lists them): pipelines first (they read and
//!    write its topics), then modules, consumer groups (members and
//!    committed offsets), Kafka transactional ids (with any open
//!    transaction's buffer), topics (with their idempotent-producer
//!    state), and its produce-rate bucket and its account of operator CPU
//!    time.
//! 4. The tenant is forgotten ([`Tenants::finish_delete`]).
//!
//! A deletion cut short (storage failing, the server stopping) leaves the
//! tenant marked as being deleted, with no token and its name taken;
//! deleting it again resumes, each step finding only what is left.

use std::sync::Arc;

use async_trait::async_trait;

use super::{Namespace, TenancyError, Tenants};

/// A service holding resources of tenants (pipelines, modules, consumer
/// groups, topics, rate buckets...): deleting a tenant asks each to
/// delete what is stored in the tenant's namespace.
#[async_trait]
pub trait TenantResources: Send + Sync {
    /// Deletes everything of `ns` this service holds; deleting again after
    /// a failure finds only what is left.
    async fn delete_owned(&self, ns: &Namespace) -> anyhow::Result<()>;
}

/// Why a tenant was not (completely) deleted.
#[derive(Debug, thiserror::Error)]
pub enum DeletionError {
    /// No such tenant (or tenancy is off), or its record could not be
    /// changed: nothing was deleted.
    #[error(transparent)]
    Tenancy(#[from] TenancyError),
    /// Its tokens are revoked, but some of what it owns is left.
    #[error("tenant {tenant:?} is only partly deleted (delete it again to finish): {source:#}")]
    Incomplete {
        tenant: String,
        source: anyhow::Error,
    },
}

/// Deletes tenants: the registry, and every service holding their
/// resources, in the order they are to be emptied (see the module comment).
pub struct TenantDeletion {
    tenants: Arc<Tenants>,
    holders: Vec<Arc<dyn TenantResources>>,
}

impl TenantDeletion {
    pub fn new(tenants: Arc<Tenants>, holders: Vec<Arc<dyn TenantResources>>) -> TenantDeletion {
        TenantDeletion { tenants, holders }
    }

    /// Deletes tenant `name` and everything it owns (see the module comment).
    pub async fn delete_tenant(&self, name: &str) -> Result<(), DeletionError> {
        let departing = self.tenants.begin_delete(name).await?;
        departing.requests_finished().await;
        let ns = Namespace::tenant(name);
        for holder in &self.holders {
            holder
                .delete_owned(&ns)
                .await
                .map_err(|source| DeletionError::Incomplete {
                    tenant: name.to_string(),
                    source,
                })?;
        }
        self.tenants.finish_delete(departing).await?;
        Ok(())
    }
}
