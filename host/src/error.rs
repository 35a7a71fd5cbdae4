//! The operator host's error type: what went wrong with a module or a call,
//! with what a person needs to act on it.

/// A module that cannot be loaded, or a call that failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OperatorError {
    #[error("invalid module: {0}")]
    InvalidModule(String),

    #[error("module imports what Weir does not provide: {}", .0.join(", "))]
    UnknownImports(Vec<String>),

    #[error("module of {size} bytes exceeds the module size limit of {max} bytes")]
    ModuleTooLarge { size: usize, max: usize },

    /// Compiling the module went over a limit (`limit`: "CPU time",
    /// "memory" or "wall-clock time"; `max`: its value with its unit).
    #[error("module compilation stopped at its {limit} limit of {max}")]
    CompileLimit { limit: &'static str, max: String },

    #[error("operator refused its configuration: {0}")]
    Config(String),

    #[error("operator exceeded {limit}: {detail}")]
    Limit { limit: &'static str, detail: String },

    #[error("operator trapped{}: {reason}", offset_note(.offset))]
    Trap { offset: Option<u64>, reason: String },

    #[error("operator failed{}: {reason}", offset_note(.offset))]
    Failed { offset: Option<u64>, reason: String },

    #[error("operator produced invalid output: {0}")]
    BadOutput(String),

    #[error("operator host error: {0}")]
    Host(String),
}

fn offset_note(offset: &Option<u64>) -> String {
    offset
        .map(|o| format!(" at offset {o}"))
        .unwrap_or_default()
}
