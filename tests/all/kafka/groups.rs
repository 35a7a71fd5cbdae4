//! Consumer groups over the Kafka protocol: rebalances as members join,
//! leave or die, static members restarting without one, and committed offsets
//! that survive client and server restarts and are kept as given.

use std::time::{Duration, Instant};

use kafka_protocol::messages::offset_commit_request::{
    OffsetCommitRequest, OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use kafka_protocol::messages::offset_fetch_request::{OffsetFetchRequest, OffsetFetchRequestTopic};
use kafka_protocol::messages::{GroupId, TopicName};
use kafka_protocol::protocol::StrBytes;
use rdkafka::admin::{AdminClient, AdminOptions};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, DefaultConsumerContext};
use rdkafka::message::Message;
use rdkafka::producer::FutureRecord;
use rdkafka::types::RDKafkaErrorCode;
use serde_json::{Value, json};

use super::{WAIT, config, producer, send};
use crate::support::kafka_wire::Wire;
use crate::support::server::WeirServer;

/// A consumer subscribed to `topic` as a member of `group`, heartbeating
/// often so rebalances are quick.
fn group_consumer(server: &WeirServer, group: &str, topic: &str) -> BaseConsumer {
    group_consumer_with(server, group, topic, &[], DefaultConsumerContext)
}

pub(crate) fn group_consumer_with<C: ConsumerContext>(
    server: &WeirServer,
    group: &str,
    topic: &str,
    extra: &[(&str, &str)],
    context: C,
) -> BaseConsumer<C> {
    let mut settings = vec![
        ("group.id", group),
        ("enable.auto.commit", "false"),
        ("auto.offset.reset", "earliest"),
        ("session.timeout.ms", "6000"),
        ("heartbeat.interval.ms", "200"),
        ("fetch.wait.max.ms", "100"),
        ("partition.assignment.strategy", "range"),
    ];
    settings.extend_from_slice(extra);
    let consumer: BaseConsumer<C> = config(server, &settings)
        .create_with_context(context)
        .expect("create a group consumer");
    consumer.subscribe(&[topic]).expect("subscribe");
    consumer
}

/// The partitions assigned to each consumer, once `done` holds for them
/// (every consumer is polled, which drives its rebalances).
pub(crate) fn assignments_when<C: ConsumerContext>(
    consumers: &[&BaseConsumer<C>],
    done: impl Fn(&[Vec<i32>]) -> bool,
) -> Vec<Vec<i32>> {
    let deadline = Instant::now() + WAIT;
    loop {
        for consumer in consumers {
            if let Some(Err(e)) = consumer.poll(Duration::from_millis(20)) {
                panic!("consumer failed: {e}");
            }
        }
        let assigned: Vec<Vec<i32>> = consumers
            .iter()
            .map(|c| {
                let mut p: Vec<i32> = c
                    .assignment()
                    .unwrap()
                    .elements()
                    .iter()
                    .map(|e| e.partition())
                    .collect();
                p.sort();
                p
            })
            .collect();
        if done(&assigned) {
            return assigned;
        }
        assert!(
            Instant::now() < deadline,
            "assignments stuck at {assigned:?}"
        );
    }
}

#[test]
fn consumer_groups_rebalance_when_members_join_leave_or_die() {
    use kafka_protocol::messages::consumer_protocol_subscription::ConsumerProtocolSubscription;
    use kafka_protocol::messages::join_group_request::{
        JoinGroupRequest, JoinGroupRequestProtocol,
    };
    use kafka_protocol::messages::sync_group_request::SyncGroupRequest;
    use kafka_protocol::protocol::Encodable;

    let dir = tempfile::tempdir().unwrap();
    let server = WeirServer::start(&dir.path().join("data"));
    server.create_topic("jobs", 4);
    let first = group_consumer(&server, "workers", "jobs");
    let all = assignments_when(&[&first], |a| a[0].len() == 4);
    assert_eq!(all, [vec![0, 1, 2, 3]]);

    // A second member: the partitions are split between the two.
    let second = group_consumer(&server, "workers", "jobs");
    let split = assignments_when(&[&first, &second], |a| a[0].len() == 2 && a[1].len() == 2);
    let mut union: Vec<i32> = split.concat();
    union.sort();
    assert_eq!(union, [0, 1, 2, 3]);

    // It leaves (closing sends LeaveGroup): the first gets everything back.
    drop(second);
    assignments_when(&[&first], |a| a[0].len() == 4);

    // A member that joins and then dies (never heartbeats) is dropped when
    // its session runs out, and the partitions it held come back.
    let kafka = server.kafka.clone();
    let dying = std::thread::spawn(move || {
        let mut wire = Wire::connect(&kafka);
        let mut metadata = bytes::BytesMut::new();
        metadata.extend_from_slice(&0i16.to_be_bytes());
        ConsumerProtocolSubscription::default()
            .with_topics(vec![StrBytes::from_static_str("jobs")])
            .with_user_data(None)
            .encode(&mut metadata, 0)
            .unwrap();
        let join = JoinGroupRequest::default()
            .with_group_id(kafka_protocol::messages::GroupId(
                StrBytes::from_static_str("workers"),
            ))
            .with_session_timeout_ms(1500)
            .with_rebalance_timeout_ms(10_000)
            .with_protocol_type(StrBytes::from_static_str("consumer"))
            .with_protocols(vec![
                JoinGroupRequestProtocol::default()
                    .with_name(StrBytes::from_static_str("range"))
                    .with_metadata(metadata.freeze()),
            ]);
        // A first join (v4+) is handed its member id and joins again with it.
        let first = wire.send(&join, 5);
        assert_eq!(
            first.error_code,
            kafka_protocol::ResponseError::MemberIdRequired.code()
        );
        let joined = wire.send(&join.with_member_id(first.member_id), 5);
        assert_eq!(joined.error_code, 0);
        let synced = wire.send(
            &SyncGroupRequest::default()
                .with_group_id(kafka_protocol::messages::GroupId(
                    StrBytes::from_static_str("workers"),
                ))
                .with_generation_id(joined.generation_id)
                .with_member_id(joined.member_id),
            3,
        );
        assert_eq!(synced.error_code, 0);
        // Then silence: no heartbeat ever.
        wire
    });
    assignments_when(&[&first], |a| a[0].len() == 2);
    let _silent = dying.join().unwrap();
    assignments_when(&[&first], |a| a[0].len() == 4);
}

/// Counts the partition revocations a consumer goes through.
#[derive(Default)]
struct Revocations(std::sync::atomic::AtomicUsize);

impl rdkafka::ClientContext for Revocations {}

impl ConsumerContext for Revocations {
    fn pre_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &rdkafka::consumer::Rebalance<'_>) {
        if let rdkafka::consumer::Rebalance::Revoke(_) = rebalance {
            self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
    }
}

#[test]
fn static_members_restart_without_a_rebalance() {
    let dir = tempfile::tempdir().unwrap();
    let server = WeirServer::start(&dir.path().join("data"));
    server.create_topic("shifts", 2);
    let member = |instance: &str| {
        let extra = [
            ("group.instance.id", instance),
            ("session.timeout.ms", "30000"),
        ];
        group_consumer_with(&server, "rota", "shifts", &extra, Revocations::default())
    };
    let one = member("one");
    let two = member("two");
    let before = assignments_when(&[&one, &two], |a| a[0].len() == 1 && a[1].len() == 1);
    let revoked =
        |c: &BaseConsumer<Revocations>| c.context().0.load(std::sync::atomic::Ordering::SeqCst);
    let settled = revoked(&two);

    // "one" stops (a static member does not leave) and starts again under
    // the same instance id, well within its session: it gets its partition
    // back, and "two" never gives its own up.
    drop(one);
    let quiet = Instant::now() + Duration::from_secs(2);
    while Instant::now() < quiet {
        two.poll(Duration::from_millis(50));
    }
    let one = member("one");
    let after = assignments_when(&[&one, &two], |a| a[0].len() == 1 && a[1].len() == 1);
    assert_eq!(after, before, "each instance keeps its partition");
    let quiet = Instant::now() + Duration::from_secs(1);
    while Instant::now() < quiet {
        for c in [&one, &two] {
            c.poll(Duration::from_millis(50));
        }
    }
    assert_eq!(
        revoked(&two),
        settled,
        "no rebalance reached the other member"
    );

    // The HTTP API and the CLI show the members, their instance ids and
    // what each is assigned.
    let group = server.expect(200, server.get("/v1/groups/rota"));
    assert_eq!(group["state"], json!("Stable"));
    assert_eq!(group["protocol"], json!("range"));
    let mut members: Vec<(String, Value)> = group["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["instance_id"].as_str().unwrap().to_string(),
                m["assignment"].clone(),
            )
        })
        .collect();
    members.sort_by(|a, b| a.0.cmp(&b.0));
    let expected: Vec<(String, Value)> = [("one", &after[0]), ("two", &after[1])]
        .iter()
        .map(|(instance, partitions)| {
            let assignment = json!([{ "topic": "shifts", "partitions": partitions }]);
            (instance.to_string(), assignment)
        })
        .collect();
    assert_eq!(members, expected);
    let shown = server.cli(&["group", "describe", "rota"]);
    let shown = String::from_utf8_lossy(&shown.stdout);
    assert!(shown.contains("state: Stable"), "{shown}");
    // A group with members cannot be deleted.
    server.expect(409, server.delete("/v1/groups/rota"));
    assert!(
        shown.contains("shifts[0]") && shown.contains("shifts[1]"),
        "{shown}"
    );
}

#[test]
fn committed_offsets_survive_client_and_server_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = WeirServer::start(&data);
    server.create_topic("ledger", 2);
    let producer = producer(&server, &[]);
    for i in 0..20 {
        send(
            &producer,
            FutureRecord::to("ledger")
                .key(format!("account-{}", i % 5).as_bytes())
                .payload(format!("entry {i}").as_bytes()),
        );
    }
    let read_some = |server: &WeirServer, count: usize| -> Vec<String> {
        let consumer = group_consumer(server, "billing", "ledger");
        let mut seen = Vec::new();
        let deadline = Instant::now() + WAIT;
        while seen.len() < count {
            assert!(
                Instant::now() < deadline,
                "only {} records arrived",
                seen.len()
            );
            if let Some(message) = consumer.poll(Duration::from_millis(100)) {
                let message = message.expect("consume");
                seen.push(String::from_utf8(message.payload().unwrap().to_vec()).unwrap());
                consumer
                    .commit_message(&message, rdkafka::consumer::CommitMode::Sync)
                    .expect("commit");
            }
        }
        seen
    };
    let first = read_some(&server, 8);
    // A new client of the same group continues where the first committed.
    let second = read_some(&server, 6);
    server.stop();
    let server = WeirServer::start(&data);
    let third = read_some(&server, 6);
    let mut all: Vec<String> = [first, second, third].concat();
    all.sort();
    let mut expected: Vec<String> = (0..20).map(|i| format!("entry {i}")).collect();
    expected.sort();
    assert_eq!(all, expected, "every record exactly once across restarts");

    // The committed positions are Weir's own group offsets.
    let group = server.expect(200, server.get("/v1/groups/billing"));
    let committed: u64 = group["offsets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["offset"].as_u64().unwrap())
        .sum();
    assert_eq!(committed, 20);
    let shown = server.cli(&["group", "describe", "billing"]);
    assert!(
        shown.status.success(),
        "{}",
        String::from_utf8_lossy(&shown.stderr)
    );
    let shown = String::from_utf8_lossy(&shown.stdout);
    let rows: Vec<&str> = shown.lines().filter(|l| l.starts_with("ledger")).collect();
    assert_eq!(rows.len(), 2, "one row per partition:\n{shown}");
    let listed = server.cli(&["group", "list"]);
    assert!(String::from_utf8_lossy(&listed.stdout).contains("billing"));

    // Its consumers gone, the group can be deleted over Kafka (DeleteGroups);
    // a group that never committed is not found.
    let admin: AdminClient<DefaultClientContext> = config(&server, &[]).create().unwrap();
    let deleted = futures::executor::block_on(
        admin.delete_groups(&["billing", "nobody"], &AdminOptions::new()),
    )
    .unwrap();
    assert_eq!(
        deleted,
        vec![
            Ok("billing".to_string()),
            Err(("nobody".to_string(), RDKafkaErrorCode::GroupIdNotFound))
        ]
    );
    server.expect(404, server.get("/v1/groups/billing"));
    let again = server.cli(&["group", "delete", "billing"]);
    assert!(!again.status.success());
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("no committed offsets"),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
}

/// The offset `group` committed for a partition of `topic` (−1: none).
pub(crate) fn fetched_offset(wire: &mut Wire, group: &str, topic: &str, partition: i32) -> i64 {
    let request = OffsetFetchRequest::default()
        .with_group_id(GroupId(StrBytes::from_string(group.to_string())))
        .with_topics(Some(vec![
            OffsetFetchRequestTopic::default()
                .with_name(TopicName(StrBytes::from_string(topic.to_string())))
                .with_partition_indexes(vec![partition]),
        ]));
    let response = wire.send(&request, 7);
    assert_eq!(response.error_code, 0);
    let partition = &response.topics[0].partitions[0];
    assert_eq!(partition.error_code, 0);
    partition.committed_offset
}

/// OffsetCommit of `(partition, offset)` pairs of `topic` for `group`
/// from a client outside the group; the error code of each.
fn commit_offsets(wire: &mut Wire, group: &str, topic: &str, offsets: &[(i32, i64)]) -> Vec<i16> {
    let request = OffsetCommitRequest::default()
        .with_group_id(GroupId(StrBytes::from_string(group.to_string())))
        .with_generation_id_or_member_epoch(-1)
        .with_topics(vec![
            OffsetCommitRequestTopic::default()
                .with_name(TopicName(StrBytes::from_string(topic.to_string())))
                .with_partitions(
                    offsets
                        .iter()
                        .map(|&(partition, offset)| {
                            OffsetCommitRequestPartition::default()
                                .with_partition_index(partition)
                                .with_committed_offset(offset)
                        })
                        .collect(),
                ),
        ]);
    let response = wire.send(&request, 8);
    response.topics[0]
        .partitions
        .iter()
        .map(|p| p.error_code)
        .collect()
}

#[test]
fn logical_offsets_are_committed_and_fetched_as_given() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = WeirServer::start(&data);
    server.create_topic("ledger", 2);
    server.produce("ledger", vec![json!({ "value": "a" })]);
    // As kafkajs's admin.resetOffsets does: −1 is the end, −2 the beginning.
    let mut wire = Wire::connect(&server.kafka);
    assert_eq!(
        commit_offsets(&mut wire, "resetter", "ledger", &[(0, -1), (1, -2)]),
        [0, 0]
    );
    assert_eq!(fetched_offset(&mut wire, "resetter", "ledger", 0), -1);
    assert_eq!(fetched_offset(&mut wire, "resetter", "ledger", 1), -2);
    // Kept, and shown without a made-up lag.
    let group = server.expect(200, server.get("/v1/groups/resetter"));
    let shown: Vec<(Value, Value)> = group["offsets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| (o["offset"].clone(), o["lag"].clone()))
        .collect();
    assert_eq!(shown, [(json!(-1), Value::Null), (json!(-2), Value::Null)]);
    let described = server.cli(&["group", "describe", "resetter"]);
    assert!(
        described.status.success(),
        "{}",
        String::from_utf8_lossy(&described.stderr)
    );
    // They survive a restart, and a real offset replaces them.
    server.stop();
    let server = WeirServer::start(&data);
    let mut wire = Wire::connect(&server.kafka);
    assert_eq!(fetched_offset(&mut wire, "resetter", "ledger", 1), -2);
    assert_eq!(
        commit_offsets(&mut wire, "resetter", "ledger", &[(1, 0)]),
        [0]
    );
    assert_eq!(fetched_offset(&mut wire, "resetter", "ledger", 1), 0);
    let group = server.expect(200, server.get("/v1/groups/resetter"));
    assert!(group["offsets"][1]["lag"].is_u64(), "{group}");
}
