//! What the pipelines offer the rest of the server through interfaces the
//! other crates define: keeping a topic unchanged while a pipeline uses it
//! ([`TopicUsers`], for the HTTP API and the Kafka listener), and deleting
//! a tenant's pipelines, modules and CPU account ([`TenantResources`]).

use std::sync::Arc;

use anyhow::Context as _;
use async_trait::async_trait;
use weir_log::{TopicHold, TopicUsers};
use weir_tenancy::{Namespace, TenantResources};

use crate::Pipelines;
use crate::modules::ModuleStore;
use crate::scheduler::CpuScheduler;

#[async_trait]
impl TopicUsers for Pipelines {
    async fn hold_if_unused(&self, topic: &str) -> Result<TopicHold, Vec<String>> {
        let hold = self.hold_changes().await;
        let users = self.using_topic(topic);
        if users.is_empty() {
            Ok(Box::new(hold))
        } else {
            Err(users)
        }
    }
}

#[async_trait]
impl TenantResources for Pipelines {
    async fn delete_owned(&self, ns: &Namespace) -> anyhow::Result<()> {
        for pipeline in self.names() {
            if ns.localize(&pipeline).is_some() {
                self.delete(&pipeline)
                    .await
                    .with_context(|| format!("while deleting pipeline {pipeline:?}"))?;
            }
        }
        Ok(())
    }
}

/// The module store as a holder of tenants' modules.
pub struct TenantModules(pub Arc<ModuleStore>);

#[async_trait]
impl TenantResources for TenantModules {
    async fn delete_owned(&self, ns: &Namespace) -> anyhow::Result<()> {
        for (module, _) in self.0.list().await? {
            if ns.localize(&module).is_none() {
                continue;
            }
            self.0
                .delete(&module)
                .await
                .with_context(|| format!("while deleting module {module:?}"))?;
        }
        Ok(())
    }
}

#[async_trait]
impl TenantResources for CpuScheduler {
    async fn delete_owned(&self, ns: &Namespace) -> anyhow::Result<()> {
        if let Some(tenant) = ns.tenant_name() {
            self.forget(tenant);
        }
        Ok(())
    }
}
