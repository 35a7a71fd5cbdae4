//! Multi-tenancy: tenants with their own credentials and namespaces.
//!
//! - [`tenants`]: tenants, the admin credential and API tokens (hashed,
//!   compared in constant time), and the credentials sessions hold
//! - [`deletion`]: deleting a tenant and everything it owned
//! - [`namespace`]: tenant-local names over one shared log and server
//! - [`quotas`]: limits per tenant; [`checks`]: requests checked against
//!   them before anything changes

pub mod checks;
pub mod deletion;
pub mod namespace;
pub mod quotas;
pub mod tenants;

pub use checks::{CheckError, QuotaChecks, TenantTopics};
pub use deletion::{DeletionError, TenantDeletion, TenantResources};
pub use namespace::Namespace;
pub use quotas::{OverQuota, ProduceRates, Quotas};
pub use tenants::{Caller, TenancyError, Tenants};
