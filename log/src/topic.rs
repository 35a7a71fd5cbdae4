//! Topics as the log interface describes them: the names every backend
//! accepts, a topic's configuration, and where its partitions stand.
//!
//! A configuration is a request: each backend checks it
//! ([`StreamLog::check_topic_config`](crate::StreamLog::check_topic_config))
//! and may refuse what it cannot honour. Segment and index sizes are
//! storage hints in Kafka's vocabulary; a backend without segments keeps
//! them as given.

use serde::{Deserialize, Serialize};

use crate::{LogError, LogResult};

/// Longest topic name, in bytes.
pub const MAX_TOPIC_NAME_LEN: usize = 200;

/// Checks a topic name: 1 to [`MAX_TOPIC_NAME_LEN`] characters of
/// `[A-Za-z0-9._-]`, not `.` or `..`.
pub fn check_topic_name(name: &str) -> LogResult<()> {
    let reason = if name.is_empty() || name.len() > MAX_TOPIC_NAME_LEN {
        "must be 1 to 200 characters"
    } else if name == "." || name == ".." {
        "must not be '.' or '..'"
    } else if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    {
        "may only contain A-Z, a-z, 0-9, '.', '_' and '-'"
    } else {
        return Ok(());
    };
    Err(invalid_name(name, reason))
}

/// Checks the name of a topic its users create: a valid name that does not
/// start with `__`, which is reserved for the log's own topics.
pub fn check_user_topic_name(name: &str) -> LogResult<()> {
    check_topic_name(name)?;
    if name.starts_with("__") {
        return Err(invalid_name(
            name,
            "names starting with '__' are reserved for internal topics",
        ));
    }
    Ok(())
}

fn invalid_name(name: &str, reason: &str) -> LogError {
    LogError::InvalidTopicName {
        name: name.chars().take(MAX_TOPIC_NAME_LEN + 20).collect(),
        reason: reason.to_string(),
    }
}

/// When an append counts as done.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Durability {
    /// An append returns only once it is durable (on disk, or on a quorum).
    #[default]
    Always,
    /// Made durable at least every `flush_interval_ms`.
    Interval,
    /// Made durable when the backend sees fit.
    Never,
}

impl Durability {
    /// The setting's name, as configurations and the API spell it.
    pub fn name(self) -> &'static str {
        match self {
            Durability::Always => "always",
            Durability::Interval => "interval",
            Durability::Never => "never",
        }
    }
}

/// What happens to old data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Cleanup {
    /// Old data is deleted by age and size (`retention_ms`, `retention_bytes`).
    #[default]
    Delete,
    /// Old data keeps only the latest record per key.
    Compact,
}

/// Configuration of one topic, as the API, the Kafka listener and
/// pipelines ask for it. Every field has a default, so a partial JSON
/// object reads.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TopicConfig {
    /// Number of partitions. Default 1.
    pub partitions: u32,
    /// Default `always`.
    pub durability: Durability,
    /// Sync period for `interval` durability. Default 100 ms.
    pub flush_interval_ms: u64,
    /// Default `delete`.
    pub cleanup: Cleanup,
    /// Delete data older than this. Default: keep forever.
    pub retention_ms: Option<u64>,
    /// Delete the oldest data while a partition is larger than this. Default: no limit.
    pub retention_bytes: Option<u64>,
    /// Storage unit size: retention frees whole units. Default 128 MiB.
    pub segment_bytes: u64,
    /// Close a storage unit this long after its first append. Default: never by age.
    pub segment_ms: Option<u64>,
    /// Largest accepted batch (and so record). Default 1 MiB.
    pub max_batch_bytes: usize,
    /// In compacted topics, how long a tombstone stays readable. Default 24 h.
    pub tombstone_retention_ms: u64,
    /// Bytes between sparse index entries. Default 4 KiB.
    pub index_interval_bytes: u64,
}

impl Default for TopicConfig {
    fn default() -> Self {
        TopicConfig {
            partitions: 1,
            durability: Durability::Always,
            flush_interval_ms: 100,
            cleanup: Cleanup::Delete,
            retention_ms: None,
            retention_bytes: None,
            segment_bytes: 128 << 20,
            segment_ms: None,
            max_batch_bytes: 1 << 20,
            tombstone_retention_ms: 24 * 3600 * 1000,
            index_interval_bytes: 4096,
        }
    }
}

/// A topic's configuration and where each partition stands.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TopicInfo {
    pub name: String,
    pub config: TopicConfig,
    pub partitions: Vec<PartitionInfo>,
}

/// Offsets and size of one partition.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct PartitionInfo {
    pub partition: u32,
    /// First offset still stored.
    pub start_offset: u64,
    /// One past the last readable offset.
    pub end_offset: u64,
    pub size_bytes: u64,
}

/// Where an append landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppendInfo {
    pub base_offset: u64,
    pub last_offset: u64,
    /// The batch was a producer's retry of a batch already written: nothing
    /// was written, and the offsets are those of the original append.
    pub duplicate: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_names_are_checked() {
        for good in ["orders", "a", "A.b_c-9", &"x".repeat(200), "__internal"] {
            assert!(check_topic_name(good).is_ok(), "{good}");
        }
        for bad in ["", ".", "..", "a/b", "a b", "é", &"x".repeat(201), "a\0"] {
            assert!(check_topic_name(bad).is_err(), "{bad:?}");
        }
        assert!(check_user_topic_name("__internal").is_err());
        assert!(check_user_topic_name("_one").is_ok());
    }

    #[test]
    fn config_reads_from_partial_json_with_defaults() {
        let c: TopicConfig =
            serde_json::from_str(r#"{"partitions": 3, "cleanup": "compact"}"#).unwrap();
        assert_eq!(c.partitions, 3);
        assert_eq!(c.cleanup, Cleanup::Compact);
        assert_eq!(c.segment_bytes, TopicConfig::default().segment_bytes);
        assert!(serde_json::from_str::<TopicConfig>(r#"{"partitons": 3}"#).is_err());
    }
}
