//! Tenants over the Kafka protocol, against a real server and real clients
//! (librdkafka and the bare wire client): SASL PLAIN signs tenants in and
//! keeps them apart, one tenant holding its budget share or going over its
//! produce rate does not stall or lose the others' requests, a session
//! lasts only as long as the token it signed in with, deleting a tenant
//! leaves nothing its successor of the same name could see, and reserved
//! names stay reserved.

use std::time::{Duration, Instant};

use bytes::Bytes;

use kafka_protocol::ResponseError;
use kafka_protocol::messages::api_versions_request::ApiVersionsRequest;
use kafka_protocol::messages::api_versions_response::ApiVersionsResponse;
use kafka_protocol::messages::create_topics_request::{CreatableTopic, CreateTopicsRequest};
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchRequest, FetchTopic};
use kafka_protocol::messages::init_producer_id_request::InitProducerIdRequest;
use kafka_protocol::messages::join_group_request::{JoinGroupRequest, JoinGroupRequestProtocol};
use kafka_protocol::messages::list_groups_request::ListGroupsRequest;
use kafka_protocol::messages::metadata_request::MetadataRequest;
use kafka_protocol::messages::sync_group_request::{SyncGroupRequest, SyncGroupRequestAssignment};
use kafka_protocol::messages::{GroupId, TopicName, TransactionalId};
use kafka_protocol::protocol::{Request, StrBytes};
use log_core::{BatchBuilder, Record};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, DefaultConsumerContext};
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{Offset, TopicPartitionList};
use serde_json::{Value, json};

use crate::kafka::groups::{assignments_when, fetched_offset, group_consumer_with};
use crate::kafka::wire::{one_record, produce_raw, produce_request};
use crate::kafka::{WAIT, config, consume_with, create_topic_over_kafka, producer, send};
use crate::support::kafka_wire::Wire;
use crate::support::server::WeirServer;

fn text(s: &str) -> StrBytes {
    StrBytes::from_string(s.to_string())
}

/// A bare connection signed in as `tenant`.
fn signed_in(server: &WeirServer, tenant: &str, token: &str) -> Wire {
    let mut wire = Wire::connect(&server.kafka);
    assert_eq!(sasl_login(&mut wire, tenant, token), 0, "{tenant} signs in");
    wire
}

/// A fetch of partition 0 of `topic` from its end: it waits up to 25 s for
/// a record.
fn long_poll(topic: &str, from: i64) -> FetchRequest {
    FetchRequest::default()
        .with_max_wait_ms(25_000)
        .with_min_bytes(1)
        .with_max_bytes(1 << 20)
        .with_topics(vec![
            FetchTopic::default()
                .with_topic(TopicName(text(topic)))
                .with_partitions(vec![
                    FetchPartition::default()
                        .with_partition(0)
                        .with_fetch_offset(from)
                        .with_partition_max_bytes(1 << 20),
                ]),
        ])
}

/// Sends `request` (an `api` request, as `version`) on its own signed-in
/// connection in the background and returns once the server is handling
/// it; the thread's result is the answer, or `None` when the connection
/// was closed instead.
fn in_background<R>(
    server: &WeirServer,
    (tenant, token): (&str, &str),
    (api, request, version): (&str, R, i16),
) -> std::thread::JoinHandle<Option<R::Response>>
where
    R: Request + Send + 'static,
    R::Response: Send + 'static,
{
    let before = kafka_requests(server, api);
    let mut wire = signed_in(server, tenant, token);
    let waiting = std::thread::spawn(move || wire.try_send(&request, version));
    let deadline = Instant::now() + WAIT;
    while kafka_requests(server, api) <= before {
        assert!(Instant::now() < deadline, "the {api} request never arrived");
        std::thread::sleep(Duration::from_millis(50));
    }
    waiting
}

/// How many requests of `api` the Kafka listener has received (from
/// `/metrics`, with the admin credential, which stays in use).
fn kafka_requests(server: &WeirServer, api: &str) -> f64 {
    server.use_token(Some(ADMIN));
    let (status, metrics) = server.get("/metrics");
    assert_eq!(status, 200, "{metrics}");
    let line = format!("weir_kafka_requests_total{{api=\"{api}\"}}");
    metrics
        .as_str()
        .expect("metrics are text")
        .lines()
        .find_map(|l| l.strip_prefix(&line)?.trim().parse().ok())
        .unwrap_or(0.0)
}

/// Issues another token for `tenant`: `(id, token)`.
fn another_token(server: &WeirServer, tenant: &str) -> (String, String) {
    server.use_token(Some(ADMIN));
    let issued = server.expect(
        201,
        server.post(&format!("/v1/tenants/{tenant}/tokens"), &json!({})),
    );
    let field = |name: &str| issued[name].as_str().unwrap().to_string();
    (field("id"), field("token"))
}

#[test]
fn a_revoked_token_ends_the_kafka_sessions_signed_in_with_it() {
    let dir = tempfile::tempdir().unwrap();
    let server = tenancy_server(dir.path());
    tenant_token(&server, json!({ "name": "acme" }));
    let (revoked_id, revoked) = another_token(&server, "acme");
    let (_, kept) = another_token(&server, "acme");
    server.use_token(Some(&kept));
    server.create_topic("orders", 1);

    let mut producing = signed_in(&server, "acme", &revoked);
    assert_eq!(
        produce_raw(&mut producing, "orders", one_record("before").into_bytes()),
        (0, 0)
    );
    let polling = in_background(
        &server,
        ("acme", &revoked),
        ("Fetch", long_poll("orders", 1), 11),
    );
    let mut other = signed_in(&server, "acme", &kept);

    server.use_token(Some(ADMIN));
    server.expect(
        200,
        server.delete(&format!("/v1/tenants/acme/tokens/{revoked_id}")),
    );

    // The open connection gets no further request served.
    let after = produce_request("orders", one_record("after").into_bytes());
    assert!(
        producing.try_send(&after, 9).is_none(),
        "a produce on a revoked session was answered"
    );
    // The tenant's other token goes on, and its record would answer the
    // long-poll if the revoked session were still served.
    assert_eq!(
        produce_raw(&mut other, "orders", one_record("kept").into_bytes()),
        (0, 1)
    );
    assert!(
        polling.join().unwrap().is_none(),
        "the long-poll of a revoked session was answered"
    );
    server.use_token(Some(&kept));
    assert_eq!(server.values("orders"), [json!("before"), json!("kept")]);
    // Nor can the token sign in again.
    let mut again = Wire::connect(&server.kafka);
    assert_eq!(
        sasl_login(&mut again, "acme", &revoked),
        ResponseError::SaslAuthenticationFailed.code()
    );
    let metadata = other.send(&MetadataRequest::default(), 9);
    assert_eq!(metadata.brokers.len(), 1, "the kept token's session works");
}

/// A JoinGroup of a consumer new to `group` that would wait up to 25 s for
/// the group's other members to rejoin.
fn join_request(group: &str) -> JoinGroupRequest {
    JoinGroupRequest::default()
        .with_group_id(GroupId(text(group)))
        .with_session_timeout_ms(30_000)
        .with_rebalance_timeout_ms(25_000)
        .with_protocol_type(text("consumer"))
        .with_protocols(vec![
            JoinGroupRequestProtocol::default()
                .with_name(text("range"))
                .with_metadata(Bytes::from_static(b"m")),
        ])
}

#[test]
fn a_revoked_token_cuts_short_a_join_waiting_for_its_group() {
    let dir = tempfile::tempdir().unwrap();
    let server = tenancy_server(dir.path());
    let token = tenant_token(&server, json!({ "name": "acme" }));
    let (revoked_id, revoked) = another_token(&server, "acme");
    // A group of one, stable.
    let mut leader = signed_in(&server, "acme", &token);
    let joined = leader.send(&join_request("g"), 3);
    assert_eq!(joined.error_code, 0);
    let assignment = SyncGroupRequestAssignment::default()
        .with_member_id(joined.member_id.clone())
        .with_assignment(Bytes::from_static(b"a"));
    let synced = leader.send(
        &SyncGroupRequest::default()
            .with_group_id(GroupId(text("g")))
            .with_generation_id(joined.generation_id)
            .with_member_id(joined.member_id)
            .with_assignments(vec![assignment]),
        2,
    );
    assert_eq!(synced.error_code, 0);
    // A newcomer's join waits for the leader to rejoin, which it does not.
    let waiting = in_background(
        &server,
        ("acme", &revoked),
        ("JoinGroup", join_request("g"), 3),
    );
    server.use_token(Some(ADMIN));
    server.expect(
        200,
        server.delete(&format!("/v1/tenants/acme/tokens/{revoked_id}")),
    );
    assert!(
        waiting.join().unwrap().is_none(),
        "the join of a revoked session was answered"
    );
}

/// Every group the tenant signed in on `wire` can see over Kafka.
fn listed_groups(wire: &mut Wire) -> Vec<String> {
    let listed = wire.send(&ListGroupsRequest::default(), 4);
    assert_eq!(listed.error_code, 0);
    listed
        .groups
        .iter()
        .map(|g| g.group_id.to_string())
        .collect()
}

/// The producer id and epoch InitProducerId gives transactional id `id`.
fn init_transactional_id(wire: &mut Wire, id: &str) -> (i64, i16) {
    let request = InitProducerIdRequest::default()
        .with_transactional_id(Some(TransactionalId(text(id))))
        .with_transaction_timeout_ms(60_000);
    let response = wire.send(&request, 4);
    assert_eq!(response.error_code, 0);
    (response.producer_id.0, response.producer_epoch)
}

/// The transactional ids' state files the server keeps.
fn transaction_files(server: &WeirServer) -> usize {
    std::fs::read_dir(server.dir.join("kafka").join("transactions"))
        .map(|dir| {
            dir.filter_map(Result::ok)
                .filter(|e| e.path().extension().is_some_and(|x| x == "txn"))
                .count()
        })
        .unwrap_or(0)
}

#[test]
fn a_deleted_tenant_leaves_nothing_to_a_successor_of_its_name() {
    let dir = tempfile::tempdir().unwrap();
    let server = tenancy_server(dir.path());
    let token = tenant_token(&server, json!({ "name": "acme" }));
    let settings = sasl("acme", &token);
    let settings = settings.each_ref().map(|(k, v)| (*k, v.as_str()));

    // Over Kafka the tenant makes a topic with records, a group with
    // committed offsets, a group with a live member, and a transaction it
    // leaves open.
    create_topic_over_kafka(&server, &settings, "orders");
    send(
        &producer(&server, &settings),
        FutureRecord::to("orders").payload(b"old"),
    );
    let committer: BaseConsumer = config(
        &server,
        &[&settings[..], &[("group.id", "billing")]].concat(),
    )
    .create()
    .unwrap();
    let mut offsets = TopicPartitionList::new();
    offsets
        .add_partition_offset("orders", 0, Offset::Offset(1))
        .unwrap();
    committer.commit(&offsets, CommitMode::Sync).unwrap();
    let member = group_consumer_with(&server, "live", "orders", &settings, DefaultConsumerContext);
    assignments_when(&[&member], |a| a[0] == [0]);
    let transactional: FutureProducer = config(
        &server,
        &[&settings[..], &[("transactional.id", "tx")]].concat(),
    )
    .create()
    .unwrap();
    transactional.init_transactions(WAIT).unwrap();
    transactional.begin_transaction().unwrap();
    send(
        &transactional,
        FutureRecord::to("orders").payload(b"uncommitted"),
    );
    let mut idle = signed_in(&server, "acme", &token);
    assert_eq!(listed_groups(&mut idle).len(), 2, "billing and live");
    assert_eq!(fetched_offset(&mut idle, "billing", "orders", 0), 1);
    assert_eq!(transaction_files(&server), 1);
    let polling = in_background(
        &server,
        ("acme", &token),
        ("Fetch", long_poll("orders", 1), 11),
    );

    server.use_token(Some(ADMIN));
    server.expect(200, server.delete("/v1/tenants/acme"));

    // Its sessions end: the idle one at its next request (which would have
    // created a topic the successor then owned), the waiting one at once.
    let sneaky = CreateTopicsRequest::default()
        .with_topics(vec![
            CreatableTopic::default()
                .with_name(TopicName(text("sneaky")))
                .with_num_partitions(1)
                .with_replication_factor(1),
        ])
        .with_timeout_ms(30_000);
    assert!(idle.try_send(&sneaky, 7).is_none());
    assert!(polling.join().unwrap().is_none());
    assert_eq!(transaction_files(&server), 0, "transactional ids forgotten");

    // A tenant of the same name starts with nothing of the old one.
    let token = tenant_token(&server, json!({ "name": "acme" }));
    server.use_token(Some(&token));
    assert_eq!(server.get("/v1/topics").1["topics"], json!([]));
    assert_eq!(server.get("/v1/groups").1["groups"], json!([]));
    server.expect(404, server.get("/v1/groups/billing"));
    server.create_topic("orders", 1);
    server.produce("orders", vec![json!({ "value": "new" })]);
    let mut wire = signed_in(&server, "acme", &token);
    assert_eq!(listed_groups(&mut wire), Vec::<String>::new());
    assert_eq!(fetched_offset(&mut wire, "billing", "orders", 0), -1);
    assert_eq!(
        init_transactional_id(&mut wire, "tx").1,
        0,
        "a fresh transactional id, not the old one's next epoch"
    );
    // The old tenant's clients, still running, cannot sign in again: its
    // group member reads nothing of the new tenant's records, and its
    // transaction never lands.
    let deadline = Instant::now() + Duration::from_secs(3);
    while Instant::now() < deadline {
        if let Some(Ok(message)) = member.poll(Duration::from_millis(100)) {
            assert_ne!(
                message.payload(),
                Some(&b"new"[..]),
                "read the successor's record"
            );
        }
    }
    assert!(
        transactional
            .commit_transaction(Duration::from_secs(5))
            .is_err()
    );
    assert_eq!(server.values("orders"), [json!("new")]);
    assert_eq!(listed_groups(&mut wire), Vec::<String>::new());
}

#[test]
fn tenants_cannot_create_reserved_topic_names() {
    let dir = tempfile::tempdir().unwrap();
    let server = tenancy_server(dir.path());
    let token = tenant_token(&server, json!({ "name": "acme" }));
    server.use_token(Some(&token));
    let (status, body) = server.post("/v1/topics", &json!({ "name": "__evil" }));
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("reserved"),
        "{body}"
    );

    let settings = sasl("acme", &token);
    let settings = settings.each_ref().map(|(k, v)| (*k, v.as_str()));
    let admin: AdminClient<DefaultClientContext> = config(&server, &settings).create().unwrap();
    let created = futures::executor::block_on(admin.create_topics(
        [
            &NewTopic::new("__evil", 1, TopicReplication::Fixed(1)),
            &NewTopic::new("_fine", 1, TopicReplication::Fixed(1)),
        ],
        &AdminOptions::new(),
    ))
    .unwrap();
    assert_eq!(
        created,
        [
            Err(("__evil".to_string(), RDKafkaErrorCode::InvalidTopic)),
            Ok("_fine".to_string())
        ]
    );
    let mut wire = signed_in(&server, "acme", &token);
    let refused = wire.send(
        &CreateTopicsRequest::default().with_topics(vec![
            CreatableTopic::default()
                .with_name(TopicName(text("__evil")))
                .with_num_partitions(1)
                .with_replication_factor(1),
        ]),
        7,
    );
    let message = refused.topics[0]
        .error_message
        .as_ref()
        .unwrap()
        .to_string();
    assert!(message.contains("reserved"), "{message}");
    let topics: Vec<Value> = server.get("/v1/topics").1["topics"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].clone())
        .collect();
    assert_eq!(topics, [json!("_fine")]);
}

pub(crate) const ADMIN: &str = "kafka-test-admin";

pub(crate) fn tenancy_server(dir: &std::path::Path) -> WeirServer {
    WeirServer::start_with_config(
        &dir.join("data"),
        &format!("tenancy = true\nadmin_token = \"{ADMIN}\"\n"),
    )
}

/// Creates a tenant (`body` as the HTTP API takes it) and a token for it.
pub(crate) fn tenant_token(server: &WeirServer, body: Value) -> String {
    server.create_tenant(ADMIN, body)
}

/// Client settings signing in with SASL PLAIN as `tenant`.
pub(crate) fn sasl(tenant: &str, token: &str) -> [(&'static str, String); 4] {
    [
        ("security.protocol", "SASL_PLAINTEXT".to_string()),
        ("sasl.mechanism", "PLAIN".to_string()),
        ("sasl.username", tenant.to_string()),
        ("sasl.password", token.to_string()),
    ]
}

/// SASL PLAIN over a bare connection; the SaslAuthenticate error code.
pub(crate) fn sasl_login(wire: &mut Wire, user: &str, password: &str) -> i16 {
    use kafka_protocol::messages::sasl_authenticate_request::SaslAuthenticateRequest;
    use kafka_protocol::messages::sasl_handshake_request::SaslHandshakeRequest;
    let handshake = wire.send(
        &SaslHandshakeRequest::default().with_mechanism(StrBytes::from_static_str("PLAIN")),
        1,
    );
    assert_eq!(handshake.error_code, 0);
    wire.send(
        &SaslAuthenticateRequest::default()
            .with_auth_bytes(Bytes::from(format!("\0{user}\0{password}"))),
        2,
    )
    .error_code
}

#[test]
fn sasl_plain_authenticates_tenants_and_keeps_them_apart() {
    use kafka_protocol::messages::metadata_request::MetadataRequest;

    let dir = tempfile::tempdir().unwrap();
    let server = tenancy_server(dir.path());
    let token = |tenant: &str| tenant_token(&server, json!({ "name": tenant }));
    let (acme, globex) = (token("acme"), token("globex"));
    // Both tenants make an `orders` topic over Kafka and write to it.
    for (tenant, password) in [("acme", &acme), ("globex", &globex)] {
        let settings = sasl(tenant, password);
        let settings = settings.each_ref().map(|(k, v)| (*k, v.as_str()));
        create_topic_over_kafka(&server, &settings, "orders");
        let producer = producer(&server, &settings);
        send(
            &producer,
            FutureRecord::to("orders").payload(format!("{tenant}'s order").as_bytes()),
        );
        let consumer: BaseConsumer =
            config(&server, &[&settings[..], &[("group.id", "g")]].concat())
                .create()
                .unwrap();
        let metadata = consumer.fetch_metadata(None, WAIT).unwrap();
        let names: Vec<&str> = metadata.topics().iter().map(|t| t.name()).collect();
        assert_eq!(names, ["orders"], "{tenant} sees only its own topic");
        let messages = consume_with(&server, "orders", 1, 1, &settings);
        assert_eq!(
            messages[0].payload(),
            Some(format!("{tenant}'s order").as_bytes())
        );
    }
    // Over HTTP each tenant's `orders` holds its own record.
    server.use_token(Some(&acme));
    assert_eq!(server.values("orders"), vec![json!("acme's order")]);

    // Without SASL nothing but ApiVersions and SASL is answered.
    let mut wire = Wire::connect(&server.kafka);
    let versions: ApiVersionsResponse = wire.send(&ApiVersionsRequest::default(), 3);
    assert_eq!(versions.error_code, 0);
    assert!(wire.try_send(&MetadataRequest::default(), 9).is_none());
    // A wrong token, another tenant's token, or the admin credential fail.
    for (user, password) in [("acme", "nope"), ("acme", globex.as_str()), ("acme", ADMIN)] {
        let mut wire = Wire::connect(&server.kafka);
        assert_eq!(
            sasl_login(&mut wire, user, password),
            kafka_protocol::ResponseError::SaslAuthenticationFailed.code(),
            "{user} with {password}"
        );
        // The failure closes the connection: no second guess on it.
        assert!(wire.try_send(&ApiVersionsRequest::default(), 3).is_none());
    }
}

#[test]
fn a_tenant_holding_its_budget_share_does_not_stall_the_others() {
    use kafka_protocol::messages::metadata_request::MetadataRequest;

    let dir = tempfile::tempdir().unwrap();
    let server = WeirServer::start_with_config(
        &dir.path().join("data"),
        &format!(
            "tenancy = true\nadmin_token = \"{ADMIN}\"\n[kafka]\nmax_request_bytes = 1048576\n\
             max_in_flight_bytes = 2097152\nmax_in_flight_bytes_per_tenant = 1048576\n"
        ),
    );
    let token = |tenant: &str| tenant_token(&server, json!({ "name": tenant }));
    let (hog, calm) = (token("hog"), token("calm"));
    // The hog announces 1 MiB frames on three connections and never sends
    // their bytes: together they would hold the whole server budget for a
    // minute (the frame timeout). Only its own share is taken.
    let stalled: Vec<Wire> = (0..3)
        .map(|_| {
            let mut wire = Wire::connect(&server.kafka);
            assert_eq!(sasl_login(&mut wire, "hog", &hog), 0);
            wire.write_only(&(1i32 << 20).to_be_bytes());
            wire
        })
        .collect();
    std::thread::sleep(Duration::from_millis(200));
    // Another tenant is still answered (the bare client gives up after 30 s).
    let mut wire = Wire::connect(&server.kafka);
    assert_eq!(sasl_login(&mut wire, "calm", &calm), 0);
    let metadata = wire.send(&MetadataRequest::default(), 9);
    assert_eq!(metadata.brokers.len(), 1);
    drop(stalled);
}

#[test]
fn a_tenant_over_its_produce_rate_is_throttled_not_refused() {
    let dir = tempfile::tempdir().unwrap();
    let server = tenancy_server(dir.path());
    let token = tenant_token(
        &server,
        json!({"name": "slow", "quotas": {"produce_bytes_per_sec": 10_000}}),
    );
    server.use_token(Some(&token));
    server.create_topic("events", 1);

    // Before authenticating, large frames are refused outright.
    let mut big = Wire::connect(&server.kafka);
    assert!(big.roundtrip(&vec![0u8; 600 << 10]).is_none());
    let mut wire = Wire::connect(&server.kafka);
    assert_eq!(sasl_login(&mut wire, "slow", &token), 0);
    let mut values = Vec::new();
    let mut throttled = 0;
    for i in 0..3 {
        let value = format!("{i}{}", "x".repeat(14_000));
        let mut builder = BatchBuilder::new();
        builder.push(&Record {
            value: Some(value.as_bytes()),
            ..Record::default()
        });
        let response = wire.send(
            &produce_request("events", builder.finish().unwrap().into_bytes()),
            9,
        );
        assert_eq!(response.responses[0].partition_responses[0].error_code, 0);
        throttled += response.throttle_time_ms;
        values.push(json!(value));
    }
    assert!(throttled > 0, "30 KB at 10 KB/s must be throttled");
    assert_eq!(
        server.values("events"),
        values,
        "and every record is stored"
    );
}
