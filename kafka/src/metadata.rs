//! Metadata: the one-broker cluster and the caller's topics.
//!
//! Every partition is led by the single broker, which is also its only
//! replica and in-sync replica. Topics are never created by a metadata
//! request (as with `auto.create.topics.enable=false`): they are made
//! through CreateTopics, the HTTP API or the CLI.

use kafka_protocol::ResponseError;
use kafka_protocol::messages::metadata_request::MetadataRequest;
use kafka_protocol::messages::metadata_response::{
    MetadataResponse, MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::{BrokerId, TopicName};
use kafka_protocol::protocol::StrBytes;

use super::connection::Session;
use super::{Broker, NODE_ID};
use weir_log::TopicInfo;
use weir_tenancy::Namespace;

/// The cluster id clients see.
const CLUSTER_ID: &str = "weir";

pub fn metadata(
    broker: &Broker,
    session: &Session,
    request: MetadataRequest,
    version: i16,
) -> MetadataResponse {
    let ns = session.namespace();
    let topics = match request.topics {
        // All topics (v0 asks for all with an empty list).
        None => all_topics(broker, ns),
        Some(list) if list.is_empty() && version == 0 => all_topics(broker, ns),
        Some(list) => list
            .into_iter()
            .filter_map(|t| t.name)
            .map(|name| match broker.ctx.log.topic(&ns.qualify(&name)) {
                Ok(info) => topic(name, &info),
                Err(_) => MetadataResponseTopic::default()
                    .with_name(Some(name))
                    .with_error_code(ResponseError::UnknownTopicOrPartition.code()),
            })
            .collect(),
    };
    let mut response = MetadataResponse::default()
        .with_brokers(vec![
            MetadataResponseBroker::default()
                .with_node_id(BrokerId(NODE_ID))
                .with_host(StrBytes::from_string(broker.advertised_host.clone()))
                .with_port(broker.advertised_port),
        ])
        .with_topics(topics);
    if version >= 1 {
        response.controller_id = BrokerId(NODE_ID);
    }
    if version >= 2 {
        response.cluster_id = Some(StrBytes::from_static_str(CLUSTER_ID));
    }
    response
}

fn all_topics(broker: &Broker, ns: &Namespace) -> Vec<MetadataResponseTopic> {
    broker
        .ctx
        .log
        .topics()
        .iter()
        .filter_map(|info| {
            let local = ns.localize(&info.name)?;
            Some(topic(
                TopicName(StrBytes::from_string(local.to_string())),
                info,
            ))
        })
        .collect()
}

fn topic(name: TopicName, info: &TopicInfo) -> MetadataResponseTopic {
    MetadataResponseTopic::default()
        .with_name(Some(name))
        .with_partitions(
            info.partitions
                .iter()
                .map(|p| {
                    MetadataResponsePartition::default()
                        .with_partition_index(p.partition as i32)
                        .with_leader_id(BrokerId(NODE_ID))
                        .with_replica_nodes(vec![BrokerId(NODE_ID)])
                        .with_isr_nodes(vec![BrokerId(NODE_ID)])
                })
                .collect(),
        )
}
