//! Commit logs: small internal, always-readable logs a pipeline task
//! appends its commit records to, one atomic append per round (its input
//! position, state changes and outputs together). Names follow one rule on
//! every backend; how a backend stores them is its own business.

use bytes::Bytes;

use crate::topic::{Durability, check_topic_name};

/// Largest commit (all of its values together) a commit log takes.
pub const MAX_COMMIT_BYTES: usize = 256 << 20;

/// Longest commit-log name, in bytes.
pub const MAX_COMMIT_LOG_NAME_LEN: usize = 190;

/// Whether a commit log called `name` can be made, or why not.
pub fn check_commit_log_name(name: &str) -> Result<(), String> {
    if name.len() <= MAX_COMMIT_LOG_NAME_LEN && check_topic_name(name).is_ok() {
        return Ok(());
    }
    Err(format!(
        "{name:?} is not valid as a commit log name: at most {MAX_COMMIT_LOG_NAME_LEN} \
         characters of A-Z, a-z, 0-9, '.', '_' and '-'"
    ))
}

/// One commit of a commit log: the values appended together, and the
/// offset of the first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommitRecord {
    pub offset: u64,
    pub values: Vec<Bytes>,
}

/// How a new commit log is kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CommitLogSettings {
    pub durability: Durability,
    /// Size of its storage units: truncation frees whole ones.
    pub segment_bytes: u64,
}
