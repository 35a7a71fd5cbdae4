//! [`JetStreamConfig`] and starting on a cluster: connecting (retrying
//! with backoff while the cluster is out of reach or electing a leader),
//! the checks its servers must pass, and the streams and buckets the
//! backend keeps for itself.

use std::future::Future;
use std::time::Duration;

use async_nats::jetstream;
use async_nats::{Client, ServerInfo};
use serde::{Deserialize, Serialize};
use weir_log::{LogError, LogResult};

use crate::errors::unavailable;
use crate::names::Names;

/// The oldest server with what this backend needs (atomic batches).
const MIN_SERVER_VERSION: (u64, u64) = (2, 12);

/// Where the cluster is and how to use it (`[log]` in the server's config).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JetStreamConfig {
    /// Server URLs (`nats://host:port`); any one of them is enough.
    pub servers: Vec<String>,
    /// First part of every stream and subject name (several deployments
    /// may share one NATS account). Default `weir`.
    #[serde(default = "default_prefix")]
    pub prefix: String,
    /// Copies JetStream keeps of each stream (1, 3 or 5). Default 1.
    #[serde(default = "default_replicas")]
    pub replicas: usize,
    /// A NATS credentials file, if the servers ask for one.
    #[serde(default)]
    pub credentials: Option<std::path::PathBuf>,
    /// How long a start keeps trying to reach the cluster (and waits for
    /// it to elect a leader) before it gives up. Default 30 s.
    #[serde(default = "default_start_timeout_ms")]
    pub start_timeout_ms: u64,
    /// How often topics' time retention runs. Default 30 s.
    #[serde(default = "default_retention_interval_ms")]
    pub retention_interval_ms: u64,
    /// How long a worker's heartbeat and its task leases last without
    /// renewal: a killed worker's tasks move after about this long. Every
    /// worker of a cluster uses the same. Default 5 s.
    #[serde(default = "default_lease_ttl_ms")]
    pub lease_ttl_ms: u64,
}

fn default_lease_ttl_ms() -> u64 {
    5_000
}

fn default_retention_interval_ms() -> u64 {
    30_000
}

fn default_start_timeout_ms() -> u64 {
    30_000
}

impl JetStreamConfig {
    /// The defaults, with these servers.
    pub fn for_servers(servers: Vec<String>) -> JetStreamConfig {
        JetStreamConfig {
            servers,
            prefix: default_prefix(),
            replicas: default_replicas(),
            credentials: None,
            start_timeout_ms: default_start_timeout_ms(),
            retention_interval_ms: default_retention_interval_ms(),
            lease_ttl_ms: default_lease_ttl_ms(),
        }
    }
}

fn default_prefix() -> String {
    "weir".to_string()
}

fn default_replicas() -> usize {
    1
}

/// A client connected to one of `config`'s servers, what that server said
/// of itself, and the deadline of the start.
pub(crate) async fn connect(
    config: &JetStreamConfig,
) -> LogResult<(Client, ServerInfo, tokio::time::Instant)> {
    let servers = config.servers.join(",");
    let mut options = async_nats::ConnectOptions::new()
        .name("weir")
        .connection_timeout(Duration::from_secs(5));
    if let Some(path) = &config.credentials {
        options = options
            .credentials_file(path)
            .await
            .map_err(|e| unavailable(&format!("credentials {}", path.display()), e))?;
    }
    let deadline = tokio::time::Instant::now() + Duration::from_millis(config.start_timeout_ms);
    let addresses = config
        .servers
        .iter()
        .map(|url| url.parse::<async_nats::ServerAddr>())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| unavailable(&format!("the server list {servers}"), e))?;
    let client = retrying(deadline, &format!("connecting to {servers}"), || {
        options.clone().connect(addresses.clone())
    })
    .await?;
    let info = client.server_info();
    check_version(&info.version)?;
    Ok((client, info, deadline))
}

/// `attempt` until it succeeds or `deadline` passes, waiting longer after
/// each failure (100 ms doubling to 2 s); the last failure says why.
pub(crate) async fn retrying<T, E: std::fmt::Display, F: Future<Output = Result<T, E>>>(
    deadline: tokio::time::Instant,
    what: &str,
    mut attempt: impl FnMut() -> F,
) -> LogResult<T> {
    let mut pause = Duration::from_millis(100);
    loop {
        match attempt().await {
            Ok(value) => return Ok(value),
            Err(e) if tokio::time::Instant::now() + pause < deadline => {
                tracing::warn!(error = %e, "NATS JetStream, {what}: retrying in {pause:?}");
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(2));
            }
            Err(e) => return Err(unavailable(what, e)),
        }
    }
}

/// Key-value bucket `name` (one revision per key, `replicas` copies),
/// made if it is missing, kept forever.
pub(crate) async fn bucket(
    context: &jetstream::Context,
    name: String,
    description: &str,
    replicas: usize,
) -> LogResult<jetstream::kv::Store> {
    expiring_bucket(context, name, description, replicas, Duration::ZERO).await
}

/// Like [`bucket`], with values that vanish `max_age` after their last
/// write (zero: never).
pub(crate) async fn expiring_bucket(
    context: &jetstream::Context,
    name: String,
    description: &str,
    replicas: usize,
    max_age: Duration,
) -> LogResult<jetstream::kv::Store> {
    context
        .create_or_update_key_value(jetstream::kv::Config {
            bucket: name.clone(),
            description: description.to_string(),
            history: 1,
            max_age,
            storage: jetstream::stream::StorageType::File,
            num_replicas: replicas,
            ..Default::default()
        })
        .await
        .map_err(|e| unavailable(&format!("opening the key-value bucket {name}"), e))
}

/// Refuses servers older than [`MIN_SERVER_VERSION`].
fn check_version(version: &str) -> LogResult<()> {
    let mut parts = version
        .trim_start_matches('v')
        .split(['.', '-'])
        .map(|p| p.parse::<u64>().unwrap_or(0));
    let found = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    if found < MIN_SERVER_VERSION {
        return Err(LogError::Unavailable(format!(
            "NATS server {version} is too old: Weir needs {}.{} or newer (atomic batch publish)",
            MIN_SERVER_VERSION.0, MIN_SERVER_VERSION.1
        )));
    }
    Ok(())
}

/// The stream that hands out producer ids (its sequence is the id; only
/// the last message is kept).
pub(crate) async fn ids_stream(
    context: &jetstream::Context,
    names: &Names,
    replicas: usize,
) -> LogResult<jetstream::stream::Config> {
    let (name, subject) = names.ids();
    let config = jetstream::stream::Config {
        name,
        description: Some("Weir: producer ids (the sequence is the id)".to_string()),
        subjects: vec![subject],
        max_messages_per_subject: 1,
        num_replicas: replicas,
        allow_atomic_publish: true,
        ..Default::default()
    };
    let stream = context
        .get_or_create_stream(config)
        .await
        .map_err(|e| unavailable("making the producer-id stream", e))?;
    Ok(stream.cached_info().config.clone())
}

#[cfg(test)]
mod tests {
    use super::check_version;

    #[test]
    fn servers_without_atomic_batches_are_refused() {
        assert!(check_version("2.9.10").is_err());
        assert!(check_version("2.11.4").is_err());
        assert!(check_version("2.12.0").is_ok());
        assert!(check_version("v2.15.1").is_ok());
        assert!(check_version("3.0.0-beta").is_ok());
    }
}
