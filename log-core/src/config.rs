//! Topic configuration: partitions, durability, retention, compaction and
//! segment sizing, with the defaults a new topic gets.
//!
//! The same struct is stored as `topic.json` in the topic's directory, read
//! from config files and filled from API requests, so every field has a
//! serde default and is checked by [`TopicConfig::validate`].

use serde::{Deserialize, Serialize};

use crate::error::{LogError, Result};

/// When an append is made durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Durability {
    /// An append returns only once its data is on disk. Concurrent appends
    /// share one fsync (group commit). Readers see only synced records.
    #[default]
    Always,
    /// Data is synced at least every `flush_interval_ms`.
    Interval,
    /// Syncing is left to the operating system (segments are still synced
    /// when they are closed).
    Never,
}

/// What happens to old data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Cleanup {
    /// Whole segments are deleted by age and size (`retention_ms`, `retention_bytes`).
    #[default]
    Delete,
    /// Closed segments keep only the latest record per key.
    Compact,
}

/// Configuration of one topic.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TopicConfig {
    /// Number of partitions (1 to 4096). Default 1.
    pub partitions: u32,
    /// Default `always`.
    pub durability: Durability,
    /// Sync period for `interval` durability. Default 100 ms.
    pub flush_interval_ms: u64,
    /// Default `delete`.
    pub cleanup: Cleanup,
    /// Delete closed segments whose newest record is older than this. Default: keep forever.
    pub retention_ms: Option<u64>,
    /// Delete the oldest closed segments while a partition is larger than this. Default: no limit.
    pub retention_bytes: Option<u64>,
    /// Roll the active segment when it would grow past this size. Default 128 MiB.
    pub segment_bytes: u64,
    /// Roll the active segment this long after its first append. Default: never by age.
    pub segment_ms: Option<u64>,
    /// Largest accepted batch (and so record). Default 1 MiB.
    pub max_batch_bytes: usize,
    /// In compacted topics, how long a tombstone stays readable after its
    /// timestamp before compaction removes it. Default 24 h.
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

impl TopicConfig {
    /// Checks every field against its allowed range.
    pub fn validate(&self, topic: &str) -> Result<()> {
        let fail = |reason: String| {
            Err(LogError::InvalidConfig {
                topic: topic.to_string(),
                reason,
            })
        };
        if !(1..=4096).contains(&self.partitions) {
            return fail(format!(
                "partitions must be 1 to 4096, got {}",
                self.partitions
            ));
        }
        if !(4096..=u64::from(u32::MAX)).contains(&self.segment_bytes) {
            return fail(format!(
                "segment_bytes must be 4096 to {}, got {}",
                u32::MAX,
                self.segment_bytes
            ));
        }
        // A batch larger than a segment is allowed: it gets a segment of its own.
        if !(128..=256 << 20).contains(&self.max_batch_bytes) {
            return fail(format!(
                "max_batch_bytes must be 128 to 256 MiB, got {}",
                self.max_batch_bytes
            ));
        }
        if self.durability == Durability::Interval && self.flush_interval_ms == 0 {
            return fail("flush_interval_ms must be at least 1".into());
        }
        if self.index_interval_bytes == 0 {
            return fail("index_interval_bytes must be at least 1".into());
        }
        if self.segment_ms == Some(0) {
            return fail("segment_ms must be at least 1".into());
        }
        Ok(())
    }
}

/// Checks a topic name: 1 to 200 characters of `[A-Za-z0-9._-]`, not `.` or `..`.
/// Longest topic name, in bytes.
pub const MAX_TOPIC_NAME_LEN: usize = 200;

pub fn validate_topic_name(name: &str) -> Result<()> {
    let reason = if name.is_empty() || name.len() > MAX_TOPIC_NAME_LEN {
        Some("must be 1 to 200 characters")
    } else if name == "." || name == ".." {
        Some("must not be '.' or '..'")
    } else if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    {
        Some("may only contain A-Z, a-z, 0-9, '.', '_' and '-'")
    } else {
        None
    };
    match reason {
        Some(reason) => Err(LogError::InvalidTopicName {
            name: name.chars().take(220).collect(),
            reason,
        }),
        None => Ok(()),
    }
}

/// Checks the name of a topic its users create: a valid name that does not
/// start with `__`, which is reserved for internal topics.
pub fn validate_user_topic_name(name: &str) -> Result<()> {
    validate_topic_name(name)?;
    if name.starts_with("__") {
        return Err(LogError::InvalidTopicName {
            name: name.chars().take(220).collect(),
            reason: "names starting with '__' are reserved for internal topics",
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_names_are_checked() {
        for good in ["orders", "a", "A.b_c-9", &"x".repeat(200)] {
            assert!(validate_topic_name(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            ".",
            "..",
            "a/b",
            "../etc",
            "a b",
            "é",
            &"x".repeat(201),
            "a\0",
        ] {
            assert!(validate_topic_name(bad).is_err(), "{bad:?}");
        }
        assert!(validate_topic_name("__internal").is_ok());
        assert!(validate_user_topic_name("__internal").is_err());
        assert!(validate_user_topic_name("_one").is_ok());
        assert!(validate_user_topic_name("a/b").is_err());
    }

    #[test]
    fn config_reads_from_partial_json_with_defaults() {
        let c: TopicConfig =
            serde_json::from_str(r#"{"partitions": 3, "durability": "interval"}"#).unwrap();
        assert_eq!(c.partitions, 3);
        assert_eq!(c.durability, Durability::Interval);
        assert_eq!(c.segment_bytes, TopicConfig::default().segment_bytes);
        assert!(
            serde_json::from_str::<TopicConfig>(r#"{"partitons": 3}"#).is_err(),
            "typos are refused"
        );
    }

    #[test]
    fn out_of_range_settings_are_refused() {
        let bad = TopicConfig {
            partitions: 0,
            ..TopicConfig::default()
        };
        assert!(bad.validate("t").is_err());
        let bad = TopicConfig {
            max_batch_bytes: 1 << 30,
            ..TopicConfig::default()
        };
        assert!(bad.validate("t").is_err());
    }
}
