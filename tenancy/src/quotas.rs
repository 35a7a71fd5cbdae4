//! Quotas: how much of the machine a tenant may use.
//!
//! Defaults come from the server's configuration (`[quotas]`); a tenant
//! may carry its own values, set when it is created. Counts and sizes
//! (topics, modules, pipelines, module size, stored bytes) are checked
//! before a request changes anything and refused with 403; the produce
//! rate is a token bucket per tenant, refused with 429 and a `Retry-After`
//! while it is empty. A refused request changes nothing, and a tenant
//! back under its quota works again at once. Memory per operator instance
//! caps the linear memory of the tenant's operators.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// Limits of one tenant. `None` means unlimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Quotas {
    /// Bytes stored in the tenant's topics. Default 10 GiB.
    pub storage_bytes: Option<u64>,
    /// Bytes of records produced per second (a burst of one second's
    /// worth is allowed). Default 50 MiB/s.
    pub produce_bytes_per_sec: Option<u64>,
    /// Default 100.
    pub topics: Option<u64>,
    /// Default 50.
    pub modules: Option<u64>,
    /// Default 20.
    pub pipelines: Option<u64>,
    /// Largest module. Default 32 MiB.
    pub module_bytes: Option<u64>,
    /// Linear memory per operator instance. Default 64 MiB.
    pub memory_bytes_per_instance: Option<u64>,
    /// Weight of the tenant's operators when the CPU is contended
    /// (relative to other tenants'). Default 100.
    pub cpu_share: u32,
}

impl Default for Quotas {
    fn default() -> Self {
        Quotas {
            storage_bytes: Some(10 << 30),
            produce_bytes_per_sec: Some(50 << 20),
            topics: Some(100),
            modules: Some(50),
            pipelines: Some(20),
            module_bytes: Some(32 << 20),
            memory_bytes_per_instance: Some(64 << 20),
            cpu_share: 100,
        }
    }
}

/// A request over a quota: which one, and whether waiting helps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OverQuota {
    pub message: String,
    /// For rates: how long until the request would fit.
    pub retry_after: Option<Duration>,
}

impl Quotas {
    /// Refuses one more of `what` (`topics`, `modules`, `pipelines`) when
    /// the tenant has `count` already.
    pub fn check_count(&self, what: &str, count: u64) -> Result<(), OverQuota> {
        let limit = match what {
            "topics" => self.topics,
            "modules" => self.modules,
            _ => self.pipelines,
        };
        match limit {
            Some(limit) if count >= limit => Err(OverQuota {
                message: format!("quota {what} exceeded: the tenant has {count} of {limit}"),
                retry_after: None,
            }),
            _ => Ok(()),
        }
    }

    pub fn check_module_size(&self, size: u64) -> Result<(), OverQuota> {
        match self.module_bytes {
            Some(limit) if size > limit => Err(OverQuota {
                message: format!(
                    "quota module_bytes exceeded: the module has {size} bytes, the limit is {limit}"
                ),
                retry_after: None,
            }),
            _ => Ok(()),
        }
    }

    pub fn check_storage(&self, stored: u64) -> Result<(), OverQuota> {
        match self.storage_bytes {
            Some(limit) if stored >= limit => Err(OverQuota {
                message: format!(
                    "quota storage_bytes exceeded: the tenant stores {stored} bytes of {limit} \
                     (retention or deleting topics frees space)"
                ),
                retry_after: None,
            }),
            _ => Ok(()),
        }
    }
}

/// Produce-rate buckets, one per tenant.
#[derive(Debug, Default)]
pub struct ProduceRates {
    buckets: Mutex<HashMap<String, Bucket>>,
}

#[derive(Debug)]
struct Bucket {
    /// Bytes that may be produced now.
    available: f64,
    updated: Instant,
}

impl ProduceRates {
    /// Takes `bytes` from the tenant's bucket even past empty and returns
    /// how long the tenant should now pause for the bucket to be back at
    /// zero (Kafka's throttling: the request is served, the client waits).
    pub fn charge(&self, tenant: &str, bytes: u64, per_sec: Option<u64>) -> Duration {
        let Some(rate) = per_sec else {
            return Duration::ZERO;
        };
        self.with_bucket(tenant, rate, |bucket, rate| {
            bucket.available -= bytes as f64;
            if bucket.available >= 0.0 {
                Duration::ZERO
            } else {
                Duration::from_secs_f64(-bucket.available / rate)
            }
        })
    }

    /// Forgets a deleted tenant's bucket: one created again under its name
    /// inherits neither its debt nor its credit.
    pub fn forget(&self, tenant: &str) {
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        buckets.remove(tenant);
    }

    /// Runs `use_bucket` on the tenant's bucket, refilled up to now, with
    /// the rate in bytes per second.
    fn with_bucket<T>(
        &self,
        tenant: &str,
        rate: u64,
        use_bucket: impl FnOnce(&mut Bucket, f64) -> T,
    ) -> T {
        let rate = rate.max(1) as f64;
        let now = Instant::now();
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        let bucket = buckets.entry(tenant.to_string()).or_insert(Bucket {
            available: rate,
            updated: now,
        });
        let refill = now.duration_since(bucket.updated).as_secs_f64() * rate;
        bucket.available = (bucket.available + refill).min(rate);
        bucket.updated = now;
        use_bucket(bucket, rate)
    }

    /// Takes `bytes` from the tenant's bucket, or says how long to wait.
    /// A request larger than one second's worth is let through when the
    /// bucket is full (and leaves it in debt), so it is never refused for
    /// ever.
    pub fn take(&self, tenant: &str, bytes: u64, per_sec: Option<u64>) -> Result<(), OverQuota> {
        let Some(rate) = per_sec else {
            return Ok(());
        };
        self.with_bucket(tenant, rate, |bucket, rate| {
            let wanted = bytes as f64;
            if wanted <= bucket.available || bucket.available >= rate {
                bucket.available -= wanted;
                return Ok(());
            }
            let missing = wanted.min(rate) - bucket.available;
            Err(OverQuota {
                message: format!(
                    "quota produce_bytes_per_sec exceeded: {} bytes/s allowed, retry later",
                    rate as u64
                ),
                retry_after: Some(Duration::from_secs_f64(missing / rate)),
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn charging_past_the_rate_asks_for_a_pause_in_proportion() {
        let rates = ProduceRates::default();
        assert_eq!(rates.charge("a", 500, Some(1000)), Duration::ZERO);
        let pause = rates.charge("a", 1500, Some(1000));
        assert!(
            (Duration::from_millis(900)..=Duration::from_millis(1000)).contains(&pause),
            "{pause:?}"
        );
        assert_eq!(rates.charge("b", 10_000, None), Duration::ZERO);
        // A tenant deleted and created again starts without the old debt.
        rates.forget("a");
        assert_eq!(rates.charge("a", 1000, Some(1000)), Duration::ZERO);
    }

    #[test]
    fn counts_and_sizes_are_refused_at_the_limit_and_name_the_quota() {
        let q = Quotas {
            topics: Some(2),
            module_bytes: Some(100),
            storage_bytes: Some(1000),
            ..Quotas::default()
        };
        assert!(q.check_count("topics", 1).is_ok());
        assert!(
            q.check_count("topics", 2)
                .unwrap_err()
                .message
                .contains("quota topics")
        );
        assert!(
            q.check_module_size(101)
                .unwrap_err()
                .message
                .contains("module_bytes")
        );
        assert!(q.check_storage(999).is_ok());
        assert!(q.check_storage(1000).is_err());
    }

    #[test]
    fn the_produce_bucket_refills_with_time() {
        let rates = ProduceRates::default();
        assert!(rates.take("a", 600, Some(1000)).is_ok());
        let refused = rates.take("a", 600, Some(1000)).unwrap_err();
        assert!(refused.retry_after.unwrap() > Duration::ZERO);
        assert!(
            rates.take("b", 600, Some(1000)).is_ok(),
            "buckets are per tenant"
        );
        std::thread::sleep(Duration::from_millis(300));
        assert!(rates.take("a", 600, Some(1000)).is_ok());
        assert!(rates.take("a", 5000, None).is_ok(), "no quota, no limit");
    }
}
