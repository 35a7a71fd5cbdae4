//! CreateTopics, CreatePartitions, DeleteTopics and DescribeConfigs, in
//! Kafka's topic configuration names.
//!
//! | Kafka name | Weir's topic setting |
//! |---|---|
//! | `retention.ms`, `retention.bytes` (−1: none) | `retention_ms`, `retention_bytes` |
//! | `cleanup.policy` (`delete` or `compact`) | `cleanup` |
//! | `segment.bytes`, `segment.ms` | `segment_bytes`, `segment_ms` |
//! | `max.message.bytes` | `max_batch_bytes` |
//! | `delete.retention.ms` | `tombstone_retention_ms` |
//! | `index.interval.bytes` | `index_interval_bytes` |
//! | `weir.durability` (`always`, `interval`, `never`) | `durability` |
//! | `flush.ms` | `flush_interval_ms` (and durability `interval`) |
//!
//! A few settings that mean nothing for a single uncompressed-storing
//! broker are accepted and ignored ([`IGNORED`]); any other name is refused
//! with INVALID_CONFIG rather than silently dropped.

use kafka_protocol::ResponseError;
use kafka_protocol::messages::TopicName;
use kafka_protocol::messages::create_partitions_request::CreatePartitionsRequest;
use kafka_protocol::messages::create_partitions_response::{
    CreatePartitionsResponse, CreatePartitionsTopicResult,
};
use kafka_protocol::messages::create_topics_request::{CreatableTopic, CreateTopicsRequest};
use kafka_protocol::messages::create_topics_response::{
    CreatableTopicConfigs, CreatableTopicResult, CreateTopicsResponse,
};
use kafka_protocol::messages::delete_topics_request::DeleteTopicsRequest;
use kafka_protocol::messages::delete_topics_response::{
    DeletableTopicResult, DeleteTopicsResponse,
};
use kafka_protocol::messages::describe_configs_request::DescribeConfigsRequest;
use kafka_protocol::messages::describe_configs_response::{
    DescribeConfigsResourceResult, DescribeConfigsResponse, DescribeConfigsResult,
};
use kafka_protocol::protocol::StrBytes;
use weir_log::{Cleanup, Durability, LogError, TopicConfig, check_user_topic_name};

use super::session::Session;
use super::{Broker, errors};
use weir_log::change_unless_used;
use weir_tenancy::Namespace;

/// Settings accepted on create and ignored: a one-broker log that stores
/// batches uncompressed with producer timestamps has nothing to do for them.
const IGNORED: &[&str] = &[
    "min.insync.replicas",
    "compression.type",
    "message.timestamp.type",
    "unclean.leader.election.enable",
    "preallocate",
    "message.downconversion.enable",
    "min.compaction.lag.ms",
    "max.compaction.lag.ms",
    "min.cleanable.dirty.ratio",
    "flush.messages",
];

/// Resource types of DescribeConfigs.
const TOPIC_RESOURCE: i8 = 2;
const BROKER_RESOURCE: i8 = 4;
/// Config sources of DescribeConfigs.
const DYNAMIC_TOPIC_CONFIG: i8 = 1;
const DEFAULT_CONFIG: i8 = 5;
/// Config types of DescribeConfigs (v3+).
const TYPE_STRING: i8 = 2;
const TYPE_INT: i8 = 3;
const TYPE_LONG: i8 = 5;

/// A refusal: the code and a message for the client.
type Refusal = (ResponseError, String);

pub async fn create_topics(
    broker: &Broker,
    session: &Session,
    request: CreateTopicsRequest,
    version: i16,
) -> CreateTopicsResponse {
    let ns = session.namespace();
    let mut response = CreateTopicsResponse::default();
    for topic in request.topics {
        let name = topic.name.clone();
        let mut result = CreatableTopicResult::default()
            .with_name(name.clone())
            .with_error_message(None);
        match create_one(broker, ns, topic, request.validate_only).await {
            Ok(config) => {
                if version >= 5 {
                    result.num_partitions = config.partitions as i32;
                    result.replication_factor = 1;
                    result.configs = Some(
                        describe(&config)
                            .into_iter()
                            .map(|(name, value, _)| {
                                CreatableTopicConfigs::default()
                                    .with_name(StrBytes::from_static_str(name))
                                    .with_value(Some(StrBytes::from_string(value)))
                                    .with_config_source(source(&config, name))
                            })
                            .collect(),
                    );
                }
            }
            Err((code, message)) => {
                result.error_code = code.code();
                result.error_message = Some(StrBytes::from_string(ns.localize_message(&message)));
                if version >= 5 {
                    result.configs = None;
                }
            }
        }
        response.topics.push(result);
    }
    response
}

async fn create_one(
    broker: &Broker,
    ns: &Namespace,
    topic: CreatableTopic,
    validate_only: bool,
) -> Result<TopicConfig, Refusal> {
    check_user_topic_name(&topic.name).map_err(|e| (errors::code(&e), e.to_string()))?;
    if topic.replication_factor > 1 {
        return Err((
            ResponseError::InvalidReplicationFactor,
            format!(
                "replication factor {} is more than the 1 broker Weir presents",
                topic.replication_factor
            ),
        ));
    }
    let partitions = match (topic.num_partitions, topic.assignments.len()) {
        (-1, 0) => 1,
        (-1, n) => n as u32,
        (n, _) if n >= 1 => n as u32,
        (n, _) => {
            return Err((
                ResponseError::InvalidPartitions,
                format!("number of partitions must be at least 1, got {n}"),
            ));
        }
    };
    let mut config = TopicConfig {
        partitions,
        ..TopicConfig::default()
    };
    for setting in &topic.configs {
        let Some(value) = &setting.value else {
            continue;
        };
        apply(&mut config, setting.name.as_str(), value.as_str())
            .map_err(|reason| (ResponseError::InvalidConfig, reason))?;
    }
    let stored = ns.qualify(&topic.name);
    broker
        .ctx
        .log
        .check_topic_config(&stored, &config)
        .map_err(|e| (errors::code(&e), e.to_string()))?;
    broker
        .ctx
        .quotas
        .check_topic_quota(ns)
        .await
        .map_err(errors::check_refusal)?;
    if validate_only {
        return match broker.ctx.log.topic(&stored).await {
            Ok(_) => Err((
                ResponseError::TopicAlreadyExists,
                format!("topic {:?} already exists", topic.name.as_str()),
            )),
            Err(_) => Ok(config),
        };
    }
    broker
        .ctx
        .log
        .create_topic(&stored, config.clone())
        .await
        .map(|_| config)
        .map_err(|e| (errors::code(&e), e.to_string()))
}

/// Sets one Kafka-named setting on `config`.
fn apply(config: &mut TopicConfig, name: &str, value: &str) -> Result<(), String> {
    let number = || -> Result<i64, String> {
        value
            .parse::<i64>()
            .map_err(|_| format!("{name} must be a number, got {value:?}"))
    };
    let positive = || -> Result<u64, String> {
        u64::try_from(number()?).map_err(|_| format!("{name} must not be negative, got {value}"))
    };
    let optional = || -> Result<Option<u64>, String> {
        match number()? {
            -1 => Ok(None),
            _ => positive().map(Some),
        }
    };
    match name {
        "retention.ms" => config.retention_ms = optional()?,
        "retention.bytes" => config.retention_bytes = optional()?,
        "cleanup.policy" => {
            config.cleanup = match value {
                "delete" => Cleanup::Delete,
                "compact" => Cleanup::Compact,
                other => {
                    return Err(format!(
                        "cleanup.policy {other:?} is not supported (delete or compact)"
                    ));
                }
            }
        }
        "segment.bytes" => config.segment_bytes = positive()?,
        "segment.ms" => config.segment_ms = Some(positive()?),
        "max.message.bytes" => {
            config.max_batch_bytes =
                usize::try_from(positive()?).map_err(|_| format!("{name} is too large"))?;
        }
        "delete.retention.ms" => config.tombstone_retention_ms = positive()?,
        "index.interval.bytes" => config.index_interval_bytes = positive()?,
        "flush.ms" => {
            config.flush_interval_ms = positive()?;
            config.durability = Durability::Interval;
        }
        "weir.durability" => {
            config.durability = match value {
                "always" => Durability::Always,
                "interval" => Durability::Interval,
                "never" => Durability::Never,
                other => {
                    return Err(format!(
                        "weir.durability {other:?} is not one of always, interval, never"
                    ));
                }
            }
        }
        ignored if IGNORED.contains(&ignored) => {}
        other => return Err(format!("unknown or unsupported topic config {other:?}")),
    }
    Ok(())
}

/// A topic's settings in Kafka's names: `(name, value, type)`.
fn describe(config: &TopicConfig) -> Vec<(&'static str, String, i8)> {
    let optional = |v: Option<u64>| v.map_or("-1".to_string(), |v| v.to_string());
    let durability = config.durability.name();
    let cleanup = match config.cleanup {
        Cleanup::Delete => "delete",
        Cleanup::Compact => "compact",
    };
    vec![
        ("cleanup.policy", cleanup.to_string(), TYPE_STRING),
        ("retention.ms", optional(config.retention_ms), TYPE_LONG),
        (
            "retention.bytes",
            optional(config.retention_bytes),
            TYPE_LONG,
        ),
        ("segment.bytes", config.segment_bytes.to_string(), TYPE_INT),
        (
            "segment.ms",
            config.segment_ms.unwrap_or(i64::MAX as u64).to_string(),
            TYPE_LONG,
        ),
        (
            "max.message.bytes",
            config.max_batch_bytes.to_string(),
            TYPE_INT,
        ),
        (
            "delete.retention.ms",
            config.tombstone_retention_ms.to_string(),
            TYPE_LONG,
        ),
        (
            "index.interval.bytes",
            config.index_interval_bytes.to_string(),
            TYPE_INT,
        ),
        ("flush.ms", config.flush_interval_ms.to_string(), TYPE_LONG),
        ("weir.durability", durability.to_string(), TYPE_STRING),
    ]
}

/// Whether a setting has its default value or was set for the topic.
fn source(config: &TopicConfig, name: &str) -> i8 {
    let defaults = describe(&TopicConfig {
        partitions: config.partitions,
        ..TopicConfig::default()
    });
    let ours = describe(config);
    let same = defaults
        .iter()
        .zip(&ours)
        .any(|(d, o)| d.0 == name && d.1 == o.1);
    if same {
        DEFAULT_CONFIG
    } else {
        DYNAMIC_TOPIC_CONFIG
    }
}

/// Adds partitions to topics, unless a pipeline reads or writes them
/// (its tasks and key routing are laid out per partition).
pub async fn create_partitions(
    broker: &Broker,
    session: &Session,
    request: CreatePartitionsRequest,
) -> CreatePartitionsResponse {
    let ns = session.namespace();
    let mut response = CreatePartitionsResponse::default();
    for topic in request.topics {
        let stored = ns.qualify(&topic.name);
        let outcome = grow(broker, &stored, topic.count, request.validate_only).await;
        let mut result = CreatePartitionsTopicResult::default().with_name(topic.name);
        if let Err((code, message)) = outcome {
            result.error_code = code.code();
            result.error_message = Some(StrBytes::from_string(ns.localize_message(&message)));
        }
        response.results.push(result);
    }
    response
}

async fn grow(
    broker: &Broker,
    stored: &str,
    count: i32,
    validate_only: bool,
) -> Result<(), Refusal> {
    let ctx = &broker.ctx;
    let info = ctx
        .log
        .topic(stored)
        .await
        .map_err(|e| (errors::code(&e), e.to_string()))?;
    let total = u32::try_from(count).unwrap_or(0);
    if total as usize <= info.partitions.len() {
        return Err((
            ResponseError::InvalidPartitions,
            format!(
                "topic {stored:?} has {} partitions; the new count must be larger, got {count}",
                info.partitions.len()
            ),
        ));
    }
    if validate_only {
        let config = TopicConfig {
            partitions: total,
            ..info.config
        };
        return ctx
            .log
            .check_topic_config(stored, &config)
            .map_err(|e| (ResponseError::InvalidPartitions, e.to_string()));
    }
    match change_unless_used(
        &*ctx.topic_users,
        stored,
        ctx.log.add_partitions(stored, total),
    )
    .await
    {
        Ok(result) => result.map(|_| ()).map_err(|e| {
            let code = match e {
                LogError::InvalidConfig { .. } => ResponseError::InvalidPartitions,
                _ => errors::code(&e),
            };
            (code, e.to_string())
        }),
        Err(users) => Err((
            ResponseError::PolicyViolation,
            format!(
                "topic {stored:?} is used by pipeline(s) {}",
                users.join(", ")
            ),
        )),
    }
}

pub async fn delete_topics(
    broker: &Broker,
    session: &Session,
    request: DeleteTopicsRequest,
    version: i16,
) -> DeleteTopicsResponse {
    let ns = session.namespace();
    let names: Vec<Option<TopicName>> = if version >= 6 {
        request.topics.into_iter().map(|t| t.name).collect()
    } else {
        request.topic_names.into_iter().map(Some).collect()
    };
    let mut response = DeleteTopicsResponse::default();
    for name in names {
        let mut result = DeletableTopicResult::default().with_name(name.clone());
        let outcome = match &name {
            None => Err((
                ResponseError::UnknownTopicId,
                "topic ids are not supported; delete by name".to_string(),
            )),
            Some(name) => delete_one(broker, &ns.qualify(name)).await,
        };
        if let Err((code, message)) = outcome {
            result.error_code = code.code();
            if version >= 5 {
                result.error_message = Some(StrBytes::from_string(ns.localize_message(&message)));
            }
        }
        response.responses.push(result);
    }
    response
}

/// Deletes a topic unless a pipeline reads or writes it.
async fn delete_one(broker: &Broker, stored: &str) -> Result<(), Refusal> {
    let ctx = &broker.ctx;
    match change_unless_used(&*ctx.topic_users, stored, ctx.log.delete_topic(stored)).await {
        Ok(result) => result.map_err(|e| (errors::code(&e), e.to_string())),
        Err(users) => Err((
            ResponseError::PolicyViolation,
            format!(
                "topic {stored:?} is used by pipeline(s) {}",
                users.join(", ")
            ),
        )),
    }
}

pub async fn describe_configs(
    broker: &Broker,
    session: &Session,
    request: DescribeConfigsRequest,
    version: i16,
) -> DescribeConfigsResponse {
    let ns = session.namespace();
    let mut response = DescribeConfigsResponse::default();
    for resource in request.resources {
        let mut result = DescribeConfigsResult::default()
            .with_resource_type(resource.resource_type)
            .with_resource_name(resource.resource_name.clone())
            .with_error_message(None);
        match resource.resource_type {
            TOPIC_RESOURCE => match broker
                .ctx
                .log
                .topic(&ns.qualify(&resource.resource_name))
                .await
            {
                Ok(info) => {
                    let wanted = resource.configuration_keys.as_ref();
                    result.configs = describe(&info.config)
                        .into_iter()
                        .filter(|(name, _, _)| {
                            wanted.is_none_or(|keys| keys.iter().any(|k| k.as_str() == *name))
                        })
                        .map(|(name, value, kind)| {
                            let mut entry = DescribeConfigsResourceResult::default()
                                .with_name(StrBytes::from_static_str(name))
                                .with_value(Some(StrBytes::from_string(value)))
                                .with_config_source(source(&info.config, name));
                            if version >= 3 {
                                entry.config_type = kind;
                                entry.documentation = None;
                            }
                            entry
                        })
                        .collect();
                }
                Err(e) => {
                    result.error_code = errors::code(&e).code();
                    result.error_message =
                        Some(StrBytes::from_string(ns.localize_message(&e.to_string())));
                }
            },
            // The broker has no settings clients may read here.
            BROKER_RESOURCE => {}
            other => {
                result.error_code = ResponseError::InvalidRequest.code();
                result.error_message = Some(StrBytes::from_string(format!(
                    "resource type {other} is not supported"
                )));
            }
        }
        response.results.push(result);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kafka_settings_map_onto_topic_settings_and_back() {
        let mut config = TopicConfig::default();
        for (name, value) in [
            ("retention.ms", "60000"),
            ("retention.bytes", "-1"),
            ("cleanup.policy", "compact"),
            ("weir.durability", "never"),
            ("min.insync.replicas", "1"),
        ] {
            apply(&mut config, name, value).unwrap();
        }
        assert_eq!(config.retention_ms, Some(60000));
        assert_eq!(config.retention_bytes, None);
        assert_eq!(config.cleanup, Cleanup::Compact);
        assert_eq!(config.durability, Durability::Never);
        let described = describe(&config);
        let value = |n: &str| described.iter().find(|d| d.0 == n).unwrap().1.clone();
        assert_eq!(value("retention.ms"), "60000");
        assert_eq!(value("cleanup.policy"), "compact");
        assert_eq!(source(&config, "retention.ms"), DYNAMIC_TOPIC_CONFIG);
        assert_eq!(source(&config, "segment.bytes"), DEFAULT_CONFIG);

        assert!(apply(&mut config, "cleanup.policy", "compact,delete").is_err());
        assert!(apply(&mut config, "retention.ms", "soon").is_err());
        assert!(apply(&mut config, "no.such.setting", "1").is_err());
    }
}
