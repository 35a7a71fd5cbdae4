//! Limits on what an operator may use, with the defaults a module gets.
//!
//! One struct, read from config files and filled from CLI flags; every
//! field has a documented default. Exceeding a limit fails the call with an
//! [`OperatorError`](super::OperatorError) naming the limit; the host and
//! every other instance go on.

use serde::{Deserialize, Serialize};

/// Per-module and per-instance limits.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Largest accepted module, in bytes. Default 64 MiB (Python and
    /// JavaScript guests are 2 to 20 MB).
    pub max_module_bytes: usize,
    /// Longest a module may take to compile, in wall-clock milliseconds
    /// (a server's upload compiles also have CPU-time and memory limits,
    /// `[compile]` in its configuration). Default 60 s.
    pub max_compile_ms: u64,
    /// Linear memory per instance, in bytes. Default 64 MiB.
    pub max_memory_bytes: usize,
    /// CPU per call, in fuel units (about one WebAssembly instruction each).
    /// Default 2 billion (about one to two seconds here).
    pub fuel_per_call: u64,
    /// Wall-clock backstop per call, in milliseconds: only for calls that
    /// stop consuming fuel (blocked in the host). Default 30 s.
    pub max_call_ms: u64,
    /// Records a call may emit. Default 1,000,000. This and the next two
    /// limits apply to a whole round: a `process` call together with
    /// what the host runs for the same input afterwards (records retried
    /// one by one after a failure, timers the watermark fires).
    pub max_output_records_per_call: usize,
    /// Bytes of output batches a call may emit. Default 64 MiB.
    pub max_output_bytes_per_call: usize,
    /// Records a call may emit per input record, to stop amplification
    /// (timer calls count as one input). Default 1,000.
    pub max_outputs_per_input: usize,
    /// Keyed state per instance, in bytes of keys and values. Default 64 MiB.
    pub max_state_bytes: usize,
    /// Pending timers per instance. Default 1,000,000.
    pub max_timers: usize,
    /// Bytes an instance may write to stdout and stderr together before it
    /// is stopped and replaced. Default 1 MiB.
    pub max_stdio_bytes: usize,
    /// Log messages kept per call. Default 1,000.
    pub max_log_messages_per_call: usize,
    /// Bytes of log messages (and printed lines) per second an operator
    /// may write to the server's log, with bursts of ten seconds' worth;
    /// the rest is dropped and counted. Default 64 KiB.
    pub max_log_bytes_per_sec: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_module_bytes: 64 << 20,
            max_compile_ms: 60_000,
            max_memory_bytes: 64 << 20,
            fuel_per_call: 2_000_000_000,
            max_call_ms: 30_000,
            max_output_records_per_call: 1_000_000,
            max_output_bytes_per_call: 64 << 20,
            max_outputs_per_input: 1_000,
            max_state_bytes: 64 << 20,
            max_timers: 1_000_000,
            max_stdio_bytes: 1 << 20,
            max_log_messages_per_call: 1_000,
            max_log_bytes_per_sec: 64 << 10,
        }
    }
}
