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
//! 3. What it owns is deleted: pipelines first (they read and write its
//!    topics), then modules, consumer groups (members and committed
//!    offsets), Kafka transactional ids (with any open transaction's
//!    buffer), topics (with their idempotent-producer state), and its
//!    produce-rate bucket and its account of operator CPU time.
//! 4. The tenant is forgotten ([`Tenants::finish_delete`]).
//!
//! A deletion cut short (storage failing, the server stopping) leaves the
//! tenant marked as being deleted, with no token and its name taken;
//! deleting it again resumes, each step finding only what is left.

use anyhow::Context as _;

use super::{Namespace, TenancyError, Tenants};
use crate::server::App;

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

/// Deletes tenant `name` and everything it owns (see the module comment).
pub async fn delete_tenant(app: &App, name: &str) -> Result<(), DeletionError> {
    let tenants: &Tenants = app
        .tenants
        .as_deref()
        .ok_or_else(|| TenancyError::UnknownTenant(name.to_string()))?;
    let departing = tenants.begin_delete(name)?;
    departing.requests_finished().await;
    delete_owned(app, &Namespace::tenant(name))
        .await
        .map_err(|source| DeletionError::Incomplete {
            tenant: name.to_string(),
            source,
        })?;
    tenants.finish_delete(departing)?;
    Ok(())
}

/// Deletes every resource stored in `ns`.
async fn delete_owned(app: &App, ns: &Namespace) -> anyhow::Result<()> {
    let owned = |stored: &str| ns.localize(stored).is_some();
    for pipeline in app.pipelines.names().into_iter().filter(|p| owned(p)) {
        app.pipelines
            .delete(&pipeline)
            .await
            .with_context(|| format!("while deleting pipeline {pipeline:?}"))?;
    }
    for (module, _) in app.modules.list().into_iter().filter(|(m, _)| owned(m)) {
        let modules = app.modules.clone();
        let name = module.clone();
        tokio::task::spawn_blocking(move || modules.delete(&name))
            .await
            .context("the module store failed")?
            .with_context(|| format!("while deleting module {module:?}"))?;
    }
    app.kafka_groups.forget_groups(owned);
    for group in app.log.groups().into_iter().filter(|g| owned(g)) {
        app.log
            .delete_group(&group)
            .await
            .with_context(|| format!("while deleting consumer group {group:?}"))?;
    }
    app.kafka_transactions.forget_ids(owned).await?;
    for topic in app.log.topics().into_iter().filter(|t| owned(&t.name)) {
        app.log
            .delete_topic(&topic.name)
            .await
            .with_context(|| format!("while deleting topic {:?}", topic.name))?;
    }
    if let Some(tenant) = ns.tenant_name() {
        app.produce_rates.forget(tenant);
        app.scheduler.forget(tenant);
    }
    Ok(())
}
