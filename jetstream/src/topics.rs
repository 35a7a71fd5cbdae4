//! Topics as JetStream streams: what a topic's stream looks like, which
//! topic configurations the cluster can keep, and reading a topic back
//! from its stream's metadata.

use std::collections::HashMap;
use std::time::Duration;

use async_nats::jetstream::stream::{Config, DiscardPolicy, Info, StorageType};
use weir_log::{Cleanup, LogError, LogResult, TopicConfig};

use crate::names::{self, Kind, Names};
use crate::publish::HEADER_ROOM;

/// Whether the cluster can keep a topic configured so, or why not.
pub fn check(name: &str, config: &TopicConfig, max_payload: usize) -> LogResult<()> {
    let refuse = |reason: String| {
        Err(LogError::InvalidConfig {
            topic: name.to_string(),
            reason,
        })
    };
    if config.partitions == 0 || config.partitions > 4096 {
        return refuse(format!(
            "a topic has 1 to 4096 partitions, not {}",
            config.partitions
        ));
    }
    if config.cleanup == Cleanup::Compact {
        return refuse(
            "compacted topics need the embedded log: the JetStream backend does not \
             compact records by key yet"
                .to_string(),
        );
    }
    if config.retention_bytes.is_some() {
        return refuse(
            "retention_bytes needs the embedded log: JetStream counts bytes per stream, not \
             per partition (retention_ms works)"
                .to_string(),
        );
    }
    if config.max_batch_bytes + HEADER_ROOM > max_payload {
        return refuse(format!(
            "batches of up to {} bytes (max_batch_bytes) need NATS servers with max_payload of \
             at least {} bytes (with room for headers); these allow {max_payload}: raise \
             max_payload in the servers' configuration (8MB, say) or lower max_batch_bytes",
            config.max_batch_bytes,
            config.max_batch_bytes + HEADER_ROOM
        ));
    }
    Ok(())
}

/// The stream of topic `name`.
pub fn stream_config(
    names: &Names,
    name: &str,
    config: &TopicConfig,
    replicas: usize,
) -> LogResult<Config> {
    let json = serde_json::to_string(config).map_err(|e| LogError::InvalidConfig {
        topic: name.to_string(),
        reason: e.to_string(),
    })?;
    let metadata = HashMap::from([
        (names::KIND.to_string(), Kind::Topic.label().to_string()),
        (names::NAME.to_string(), name.to_string()),
        (names::CONFIG.to_string(), json),
    ]);
    Ok(Config {
        name: names.stream(Kind::Topic, name),
        description: Some(format!("Weir topic {name}")),
        subjects: vec![names.subjects(Kind::Topic, name, "*")],
        storage: StorageType::File,
        num_replicas: replicas,
        // One message is one batch; room for its headers.
        max_message_size: i32::try_from(config.max_batch_bytes + HEADER_ROOM).unwrap_or(i32::MAX),
        discard: DiscardPolicy::New,
        // Exactly-once rests on producer sequences, not on a time window.
        duplicate_window: Duration::from_secs(1),
        allow_direct: true,
        allow_atomic_publish: true,
        metadata,
        ..Config::default()
    })
}

/// The Weir name and configuration a topic's stream carries, or `None`
/// for a stream that is not a Weir topic.
pub fn from_stream(info: &Info) -> Option<(String, TopicConfig)> {
    let metadata = &info.config.metadata;
    if metadata.get(names::KIND).map(String::as_str) != Some(Kind::Topic.label()) {
        return None;
    }
    let name = metadata.get(names::NAME)?.clone();
    let config = serde_json::from_str(metadata.get(names::CONFIG)?).ok()?;
    Some((name, config))
}
