//! Pipelines: chains of operators running continually over topics, with
//! exactly-once results (design in `docs/pipelines.md`).
//!
//! - [`spec`]: what a user writes, and its checks
//! - [`lifecycle`]: the server's pipelines: apply, pause, resume, delete, status
//! - `record`: a pipeline as stored, with the limits from its tenant's quotas
//! - [`task`]: one input partition through the chain, forever
//! - [`chain`]: the fused stages, error policies and dead letters
//! - [`routing`]: outputs to topic partitions, in batches the topics accept
//! - [`scheduler`]: fair sharing of the CPU between tenants
//! - [`checkpoint`]: commit records and recovery from them
//! - [`stats`]: counters for status and metrics
//! - [`status`]: a pipeline's state, counters and lag, summed over its tasks
//! - [`modules`]: uploaded operator modules and their versions
//! - `namespace`: specs and statuses in a tenant's names
//! - `services`: what other crates ask of the pipelines (topics held
//!   unchanged, a tenant's resources deleted)
//! - [`partitioner`]: which partition a keyed record goes to
//! - [`placement`]: which worker runs which task when several share a cluster

pub mod chain;
pub mod checkpoint;
pub mod lifecycle;
pub mod modules;
mod namespace;
pub mod partitioner;
pub mod placement;
mod record;
pub mod routing;
pub mod scheduler;
mod services;
pub mod spec;
pub mod stats;
pub mod status;
pub mod task;

pub use lifecycle::{PipelineError, Pipelines};
pub use services::TenantModules;
pub use spec::PipelineSpec;
pub use status::{PipelineState, PipelineStatus};
