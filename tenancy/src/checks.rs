//! Checking requests against quotas: one service both front doors (the
//! HTTP API and the Kafka listener) ask before they change anything. It
//! counts what a tenant holds from the log itself, so a count is never
//! out of step with what is stored.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use weir_log::{LogError, StreamLog};

use crate::{Namespace, OverQuota, ProduceRates, Quotas, TenantResources, Tenants};

/// Why a check refused a request.
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    #[error("{}", .0.message)]
    OverQuota(OverQuota),
    /// The log could not say what the caller holds.
    #[error("while counting what the caller holds: {0}")]
    Log(#[from] LogError),
}

impl From<OverQuota> for CheckError {
    fn from(over: OverQuota) -> CheckError {
        CheckError::OverQuota(over)
    }
}

/// The quotas of every caller, and the produce-rate buckets.
pub struct QuotaChecks {
    log: Arc<dyn StreamLog>,
    /// `None` when tenancy is off: then nothing is limited.
    tenants: Option<Arc<Tenants>>,
    defaults: Quotas,
    produce_rates: ProduceRates,
}

impl QuotaChecks {
    pub fn new(
        log: Arc<dyn StreamLog>,
        tenants: Option<Arc<Tenants>>,
        defaults: Quotas,
    ) -> QuotaChecks {
        QuotaChecks {
            log,
            tenants,
            defaults,
            produce_rates: ProduceRates::default(),
        }
    }

    /// The quotas that apply to a caller (none without tenancy).
    pub fn quotas(&self, ns: &Namespace) -> Option<Quotas> {
        let tenant = ns.tenant_name()?;
        let tenants = self.tenants.as_ref()?;
        Some(tenants.quotas(tenant).unwrap_or(self.defaults))
    }

    /// Refuses a new topic when the caller has as many as its quota allows.
    pub async fn check_topic_quota(&self, ns: &Namespace) -> Result<(), CheckError> {
        let Some(quotas) = self.quotas(ns) else {
            return Ok(());
        };
        let owned = self.log.topics().await?;
        let count = owned
            .iter()
            .filter(|t| ns.localize(&t.name).is_some())
            .count();
        Ok(quotas.check_count("topics", count as u64)?)
    }

    /// Refuses `bytes` of records when the caller stores as much as its
    /// quota allows or produces faster than its rate.
    pub async fn check_produce(&self, ns: &Namespace, bytes: u64) -> Result<(), CheckError> {
        let (Some(quotas), Some(tenant)) = (self.quotas(ns), ns.tenant_name()) else {
            return Ok(());
        };
        self.check_storage(ns, &quotas).await?;
        Ok(self
            .produce_rates
            .take(tenant, bytes, quotas.produce_bytes_per_sec)?)
    }

    /// Refuses records when the caller stores as much as its quota allows;
    /// otherwise charges `bytes` to its produce rate and returns how long
    /// it should pause (the Kafka way of enforcing a rate).
    pub async fn charge_produce(&self, ns: &Namespace, bytes: u64) -> Result<Duration, CheckError> {
        let (Some(quotas), Some(tenant)) = (self.quotas(ns), ns.tenant_name()) else {
            return Ok(Duration::ZERO);
        };
        self.check_storage(ns, &quotas).await?;
        Ok(self
            .produce_rates
            .charge(tenant, bytes, quotas.produce_bytes_per_sec))
    }

    async fn check_storage(&self, ns: &Namespace, quotas: &Quotas) -> Result<(), CheckError> {
        let stored: u64 = self
            .log
            .topics()
            .await?
            .iter()
            .filter(|t| ns.localize(&t.name).is_some())
            .flat_map(|t| t.partitions.iter().map(|p| p.size_bytes))
            .sum();
        Ok(quotas.check_storage(stored)?)
    }
}

/// A deleted tenant's produce-rate bucket goes with it.
#[async_trait]
impl TenantResources for QuotaChecks {
    async fn delete_owned(&self, ns: &Namespace) -> anyhow::Result<()> {
        if let Some(tenant) = ns.tenant_name() {
            self.produce_rates.forget(tenant);
        }
        Ok(())
    }
}

/// The topics of the log, as a holder of tenants' resources.
pub struct TenantTopics(pub Arc<dyn StreamLog>);

#[async_trait]
impl TenantResources for TenantTopics {
    async fn delete_owned(&self, ns: &Namespace) -> anyhow::Result<()> {
        use anyhow::Context as _;
        for topic in self.0.topics().await? {
            if ns.localize(&topic.name).is_some() {
                self.0
                    .delete_topic(&topic.name)
                    .await
                    .with_context(|| format!("while deleting topic {:?}", topic.name))?;
            }
        }
        Ok(())
    }
}
