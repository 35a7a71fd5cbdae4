//! Multi-tenancy: tenants with their own credentials and namespaces.
//!
//! - [`tenants`]: tenants, the admin credential and API tokens (hashed,
//!   compared in constant time)
//! - [`namespace`]: tenant-local names over one shared log and server

pub mod namespace;
pub mod tenants;

pub use namespace::Namespace;
pub use tenants::{Caller, TenancyError, Tenants, check_tenant_name};
