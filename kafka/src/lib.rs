//! The Kafka wire protocol: existing Kafka clients and tools produce to and
//! consume from Weir unchanged. `weir serve` opens this listener beside the
//! HTTP API and presents itself as a one-broker cluster (or, with workers
//! sharing a cluster log, as one broker per worker: see [`brokers`]).
//!
//! Requests and responses are decoded and encoded by the `kafka-protocol`
//! crate; this module decides which versions are spoken ([`versions`]) and
//! maps each request onto the same [`StreamLog`] the HTTP
//! API and the pipelines use, so a record has one truth whichever way it
//! came in or goes out.
//!
//! - [`connection`]: framing, dispatch, memory bounds; [`session`]: what a
//!   connection knows about its client
//! - [`versions`]: supported APIs and ApiVersions
//! - [`metadata`], [`admin`]: the cluster, topics and their configuration;
//!   [`brokers`]: the brokers when workers share a cluster log
//! - [`produce`], [`batches`]: appends (compressed batches are decompressed)
//! - [`fetch`], [`offsets`]: reads serving stored batches, offset lookups
//! - [`groups`], [`coordinator`]: consumer groups and their committed offsets
//! - [`transactions`], [`txn_requests`]: transactions, written at commit
//! - [`sasl`]: SASL PLAIN, tenant as user name and token as password
//! - [`errors`]: log errors as Kafka error codes; [`stats`]: counters for `/metrics`

mod admin;
mod batches;
pub mod brokers;
mod budget;
mod connection;
mod coordinator;
mod errors;
mod fetch;
mod frame;
mod groups;
mod metadata;
mod offsets;
mod produce;
mod sasl;
mod session;
mod stats;
mod transactions;
mod txn_requests;
mod versions;

pub use brokers::{Brokers, KafkaNode};
pub use coordinator::Coordinator as GroupCoordinator;
pub use groups::{
    GroupDeleteError, GroupSummary, MemberSummary, VisibleGroup, delete_group, summary,
    visible_groups,
};
pub use stats::KafkaStats;
pub use transactions::{MAX_TIMEOUT_MS as MAX_TRANSACTION_TIMEOUT_MS, Transactions};

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context as _;
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;

use weir_log::{StreamLog, TopicUsers};
use weir_tenancy::{Namespace, QuotaChecks, TenantResources, Tenants};

/// The only broker of the cluster Weir presents.
const NODE_ID: i32 = 0;

/// Settings of the Kafka listener (`[kafka]` in the server's configuration).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct KafkaSettings {
    /// Whether the listener runs. Default on.
    pub enabled: bool,
    /// Default `127.0.0.1:9092` (port 0 picks one).
    pub listen: SocketAddr,
    /// `host:port` clients are told to connect to. Default: the address
    /// the listener is bound to.
    pub advertised: Option<String>,
    /// Largest request frame; a larger one closes its connection.
    /// Default 100 MiB (Kafka's `socket.request.max.bytes`).
    pub max_request_bytes: usize,
    /// Request and fetch-answer bytes held at once over all connections;
    /// readers and fetches wait for room. Default 512 MiB.
    pub max_in_flight_bytes: usize,
    /// With tenancy, the part of that one tenant may hold, and the part
    /// unauthenticated connections may hold together (at least
    /// `max_request_bytes`). Default 128 MiB.
    pub max_in_flight_bytes_per_tenant: usize,
    /// How long a forming consumer group waits for more members before its
    /// first generation (Kafka's `group.initial.rebalance.delay.ms`).
    /// Default 3000.
    pub group_initial_rebalance_delay_ms: u64,
    /// How long a transactional id with no transaction open is kept after
    /// its producer last used it (Kafka's
    /// `transactional.id.expiration.ms`). Default 7 days.
    pub transactional_id_expiration_ms: u64,
}

impl Default for KafkaSettings {
    fn default() -> Self {
        KafkaSettings {
            enabled: true,
            listen: SocketAddr::from(([127, 0, 0, 1], 9092)),
            advertised: None,
            max_request_bytes: 100 << 20,
            max_in_flight_bytes: 512 << 20,
            max_in_flight_bytes_per_tenant: 128 << 20,
            group_initial_rebalance_delay_ms: 3000,
            transactional_id_expiration_ms: 7 * 24 * 3600 * 1000,
        }
    }
}

/// The server's services the Kafka protocol works with (shared with the
/// HTTP API, which shows the same groups and counters).
#[derive(Clone)]
pub struct KafkaContext {
    pub log: Arc<dyn StreamLog>,
    /// Pipelines, which keep the topics they use from being deleted or
    /// reshaped.
    pub topic_users: Arc<dyn TopicUsers>,
    /// `None` when tenancy is off.
    pub tenants: Option<Arc<Tenants>>,
    pub quotas: Arc<QuotaChecks>,
    /// Membership of the consumer groups Kafka clients form (none while
    /// the listener is off).
    pub groups: Arc<GroupCoordinator>,
    /// Transactions by transactional id. They run whether or not the
    /// listener does, so prepared commits are finished and a deleted
    /// tenant's ids are forgotten either way.
    pub transactions: Arc<Transactions>,
    /// Counters of the listener (zero while it is off).
    pub stats: Arc<KafkaStats>,
    /// The live workers' brokers, when workers share a cluster log (`None`:
    /// this server is a cluster of one broker).
    pub brokers: Option<Arc<dyn Brokers>>,
}

/// A deleted tenant's consumer groups (members and committed offsets) and
/// transactional ids (with any open transaction's buffer) go with it.
#[async_trait::async_trait]
impl TenantResources for KafkaContext {
    async fn delete_owned(&self, ns: &Namespace) -> anyhow::Result<()> {
        let owned = |stored: &str| ns.localize(stored).is_some();
        self.groups.forget_groups(owned);
        for group in self.log.groups().await?.into_iter().filter(|g| owned(g)) {
            self.log
                .delete_group(&group)
                .await
                .with_context(|| format!("while deleting consumer group {group:?}"))?;
        }
        self.transactions.forget_ids(owned).await
    }
}

/// What every connection shares.
struct Broker {
    ctx: KafkaContext,
    settings: KafkaSettings,
    /// Host and port returned in metadata.
    advertised_host: String,
    advertised_port: i32,
    /// Bounds the request and fetch-answer bytes held at once, in all and
    /// per tenant.
    budget: budget::Budget,
    /// The context's, at hand.
    coordinator: Arc<coordinator::Coordinator>,
    transactions: Arc<Transactions>,
    stats: Arc<KafkaStats>,
}

impl Broker {
    /// This broker as clients see it (node 0 on a server of its own).
    fn this_node(&self) -> (i32, KafkaNode) {
        let node = KafkaNode {
            worker: String::new(),
            host: self.advertised_host.clone(),
            port: self.advertised_port,
            this: true,
        };
        match self.cluster() {
            Some(nodes) => {
                let this = nodes.into_iter().find(|n| n.this).unwrap_or(node);
                (this.node_id(), this)
            }
            None => (NODE_ID, node),
        }
    }

    /// The live brokers with their node ids, this one included.
    fn nodes(&self) -> Vec<(i32, KafkaNode)> {
        match self.cluster() {
            Some(nodes) => nodes.into_iter().map(|n| (n.node_id(), n)).collect(),
            None => vec![self.this_node()],
        }
    }

    /// The live workers' brokers, when workers share a cluster and this
    /// one is among them (until its first heartbeat it acts alone).
    fn cluster(&self) -> Option<Vec<KafkaNode>> {
        let nodes = self.ctx.brokers.as_ref()?.nodes();
        nodes.iter().any(|n| n.this).then_some(nodes)
    }

    /// The broker coordinating consumer group `group` (stored name), with
    /// its node id.
    fn group_coordinator(&self, group: &str) -> (i32, KafkaNode) {
        match self.cluster() {
            Some(nodes) => match brokers::coordinator_of(&nodes, group) {
                Some(node) => (node.node_id(), node.clone()),
                None => self.this_node(),
            },
            None => self.this_node(),
        }
    }

    /// Whether this broker coordinates group `group` (stored name).
    fn coordinates(&self, group: &str) -> bool {
        self.group_coordinator(group).1.this
    }
}

/// A bound Kafka listener, ready to serve.
pub struct KafkaListener {
    pub addr: SocketAddr,
    listener: TcpListener,
    broker: Arc<Broker>,
}

impl KafkaListener {
    /// Binds the listener; the advertised address defaults to the bound one.
    pub async fn bind(ctx: KafkaContext, settings: KafkaSettings) -> anyhow::Result<KafkaListener> {
        let listener = TcpListener::bind(settings.listen)
            .await
            .with_context(|| format!("while opening the Kafka listener on {}", settings.listen))?;
        let addr = listener.local_addr()?;
        let (advertised_host, advertised_port) = match &settings.advertised {
            Some(advertised) => parse_host_port(advertised)?,
            None => (addr.ip().to_string(), i32::from(addr.port())),
        };
        let budget = budget::Budget::new(
            settings.max_in_flight_bytes,
            settings.max_in_flight_bytes_per_tenant,
            settings.max_request_bytes,
        );
        Ok(KafkaListener {
            addr,
            listener,
            broker: Arc::new(Broker {
                settings,
                advertised_host,
                advertised_port,
                budget,
                coordinator: ctx.groups.clone(),
                transactions: ctx.transactions.clone(),
                stats: ctx.stats.clone(),
                ctx,
            }),
        })
    }

    /// `host:port` as clients are told to connect.
    pub fn advertised(&self) -> String {
        format!(
            "{}:{}",
            self.broker.advertised_host, self.broker.advertised_port
        )
    }

    /// Accepts connections until `shutdown` resolves; each is served on its
    /// own task.
    pub async fn run(self, shutdown: impl Future<Output = ()>) {
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                () = &mut shutdown => return,
                accepted = self.listener.accept() => match accepted {
                    Ok((stream, peer)) => {
                        let broker = self.broker.clone();
                        tokio::spawn(connection::serve(stream, peer, broker));
                    }
                    Err(error) => {
                        // Out of file descriptors, say: wait instead of spinning.
                        tracing::warn!(%error, "accepting a Kafka connection failed");
                        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    }
                },
            }
        }
    }
}

/// Splits `host:port` (the host may be a bracketed IPv6 address).
fn parse_host_port(text: &str) -> anyhow::Result<(String, i32)> {
    let (host, port) = text
        .rsplit_once(':')
        .with_context(|| format!("advertised Kafka address {text:?} must be host:port"))?;
    let port: u16 = port
        .parse()
        .with_context(|| format!("advertised Kafka address {text:?} has an invalid port"))?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    anyhow::ensure!(
        !host.is_empty(),
        "advertised Kafka address {text:?} has no host"
    );
    Ok((host.to_string(), i32::from(port)))
}

#[cfg(test)]
mod tests {
    use super::parse_host_port;

    #[test]
    fn advertised_addresses_are_host_and_port() {
        assert_eq!(
            parse_host_port("broker.example:9093").unwrap(),
            ("broker.example".to_string(), 9093)
        );
        assert_eq!(
            parse_host_port("[::1]:9092").unwrap(),
            ("::1".to_string(), 9092)
        );
        assert!(parse_host_port("no-port").is_err());
        assert!(parse_host_port(":9092").is_err());
        assert!(parse_host_port("host:99999").is_err());
    }
}
