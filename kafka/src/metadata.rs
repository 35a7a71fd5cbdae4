//! Metadata: the one-broker cluster and the caller's topics.
//!
//! Every partition is led by the single broker, which is also its only
//! replica and in-sync replica. Topics are never created by a metadata
//! request (as with `auto.create.topics.enable=false`): they are made
//! through CreateTopics, the HTTP API or the CLI.

use kafka_protocol::messages::metadata_request::MetadataRequest;
use kafka_protocol::messages::metadata_response::{
    MetadataResponse, MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::{BrokerId, TopicName};
use kafka_protocol::protocol::StrBytes;

use super::session::Session;
use super::{Broker, errors};
use weir_log::{LogError, TopicInfo};
use weir_tenancy::Namespace;

/// The cluster id clients see.
const CLUSTER_ID: &str = "weir";

/// The brokers and the topics asked for; fails (and the connection
/// closes) when the log cannot list them.
pub async fn metadata(
    broker: &Broker,
    session: &Session,
    request: MetadataRequest,
    version: i16,
) -> Result<MetadataResponse, LogError> {
    let ns = session.namespace();
    let (this, _) = broker.this_node();
    let topics = match request.topics {
        // All topics (v0 asks for all with an empty list).
        None => all_topics(broker, ns).await?,
        Some(list) if list.is_empty() && version == 0 => all_topics(broker, ns).await?,
        Some(list) => {
            let mut topics = Vec::new();
            for name in list.into_iter().filter_map(|t| t.name) {
                topics.push(match broker.ctx.log.topic(&ns.qualify(&name)).await {
                    Ok(info) => topic(name, &info, this),
                    Err(e) => MetadataResponseTopic::default()
                        .with_name(Some(name))
                        .with_error_code(errors::code(&e).code()),
                });
            }
            topics
        }
    };
    let brokers = broker
        .nodes()
        .into_iter()
        .map(|(id, node)| {
            MetadataResponseBroker::default()
                .with_node_id(BrokerId(id))
                .with_host(StrBytes::from_string(node.host))
                .with_port(node.port)
        })
        .collect();
    let mut response = MetadataResponse::default()
        .with_brokers(brokers)
        .with_topics(topics);
    if version >= 1 {
        response.controller_id = BrokerId(this);
    }
    if version >= 2 {
        response.cluster_id = Some(StrBytes::from_static_str(CLUSTER_ID));
    }
    Ok(response)
}

async fn all_topics(
    broker: &Broker,
    ns: &Namespace,
) -> Result<Vec<MetadataResponseTopic>, LogError> {
    let topics = broker.ctx.log.topics().await?;
    let (this, _) = broker.this_node();
    let visible = topics
        .iter()
        .filter_map(|info| {
            let local = ns.localize(&info.name)?;
            Some(topic(
                TopicName(StrBytes::from_string(local.to_string())),
                info,
                this,
            ))
        })
        .collect();
    Ok(visible)
}

/// A topic's metadata; `leader` (the broker answering: any worker serves
/// every partition) leads every partition.
fn topic(name: TopicName, info: &TopicInfo, leader: i32) -> MetadataResponseTopic {
    MetadataResponseTopic::default()
        .with_name(Some(name))
        .with_partitions(
            info.partitions
                .iter()
                .map(|p| {
                    MetadataResponsePartition::default()
                        .with_partition_index(p.partition as i32)
                        .with_leader_id(BrokerId(leader))
                        .with_replica_nodes(vec![BrokerId(leader)])
                        .with_isr_nodes(vec![BrokerId(leader)])
                })
                .collect(),
        )
}
