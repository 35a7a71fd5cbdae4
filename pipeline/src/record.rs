//! A pipeline as stored, the catalog document `pipelines/<name>.json` in
//! [`RECORD_FORMAT`]: the spec, the module versions it resolved to,
//! whether it is paused, and the limits its tenant's quotas give its
//! operators. Reading and writing the documents is `lifecycle`'s; summing a status over a record's tasks is
//! `status`'s.

use serde::{Deserialize, Serialize};
use weir_core::format::Format;

use super::spec::PipelineSpec;

/// The format of the stored pipeline records.
pub(crate) const RECORD_FORMAT: Format = Format {
    what: "a pipeline record",
    current: 1,
    oldest: 1,
};

/// A pipeline as stored (`pipelines/<name>.json`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PipelineRecord {
    pub name: String,
    pub spec: PipelineSpec,
    /// The module version each stage runs, as `name@version`.
    pub modules: Vec<String>,
    pub paused: bool,
    pub created_ms: i64,
    pub updated_ms: i64,
    /// What its tenant's quotas allow its operators.
    #[serde(default)]
    pub limits: TaskLimits,
}

/// Per-pipeline limits that come from its tenant's quotas.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct TaskLimits {
    /// Memory cap per operator instance, below the engine's limit.
    pub max_memory_bytes: Option<usize>,
    /// Weight when the CPU is contended (see `scheduler`).
    pub cpu_share: u32,
}

impl Default for TaskLimits {
    fn default() -> Self {
        TaskLimits {
            max_memory_bytes: None,
            cpu_share: 100,
        }
    }
}
