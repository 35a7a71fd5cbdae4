//! The Kafka listener of a real `weir serve`, spoken to by librdkafka
//! (through the `rdkafka` crate, built from its bundled sources) and by a
//! bare protocol client for what librdkafka will not send on purpose:
//! replayed sequences, corrupt batches, malformed frames.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use bytes::Bytes;
use kafka_protocol::messages::api_versions_request::ApiVersionsRequest;
use kafka_protocol::messages::api_versions_response::ApiVersionsResponse;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchRequest, FetchTopic};
use kafka_protocol::messages::init_producer_id_request::InitProducerIdRequest;
use kafka_protocol::messages::offset_commit_request::{
    OffsetCommitRequest, OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use kafka_protocol::messages::offset_fetch_request::{OffsetFetchRequest, OffsetFetchRequestTopic};
use kafka_protocol::messages::produce_request::{
    PartitionProduceData, ProduceRequest, TopicProduceData,
};
use kafka_protocol::messages::{ApiKey, GroupId, TopicName};
use kafka_protocol::protocol::{Decodable, StrBytes};
use log_core::{BatchBuilder, ProducerStamp, Record};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, ResourceSpecifier, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, DefaultConsumerContext};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders, OwnedMessage};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{Offset, Timestamp, TopicPartitionList};
use serde_json::{Value, json};

use crate::support::kafka_wire::Wire;
use crate::support::server::WeirServer;

pub(crate) const WAIT: Duration = Duration::from_secs(30);

pub(crate) fn config(server: &WeirServer, extra: &[(&str, &str)]) -> ClientConfig {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", &server.kafka)
        .set("broker.address.family", "v4")
        .set("message.timeout.ms", "30000");
    for (key, value) in extra {
        config.set(*key, *value);
    }
    config
}

pub(crate) fn producer(server: &WeirServer, extra: &[(&str, &str)]) -> FutureProducer {
    config(
        server,
        &[&[("acks", "all"), ("linger.ms", "5")], extra].concat(),
    )
    .create()
    .expect("create a producer")
}

/// Creates a one-partition topic through a Kafka admin client signed in
/// with `settings`, and checks it was made.
pub(crate) fn create_topic_over_kafka(server: &WeirServer, settings: &[(&str, &str)], name: &str) {
    let admin: AdminClient<DefaultClientContext> = config(server, settings)
        .create()
        .expect("create an admin client");
    let created = futures::executor::block_on(admin.create_topics(
        [&NewTopic::new(name, 1, TopicReplication::Fixed(1))],
        &AdminOptions::new(),
    ))
    .expect("CreateTopics answers");
    assert_eq!(created, [Ok(name.to_string())], "{settings:?}");
}

/// Sends one record and waits for its `(partition, offset)`.
pub(crate) fn send(producer: &FutureProducer, record: FutureRecord<'_, [u8], [u8]>) -> (i32, i64) {
    let delivery = futures::executor::block_on(
        producer
            .send_result(record)
            .map_err(|(e, _)| e)
            .expect("queue the record"),
    )
    .expect("delivery report");
    let delivery = delivery.unwrap_or_else(|(e, _)| panic!("delivery failed: {e}"));
    (delivery.partition, delivery.offset)
}

/// Every record of `topic` from the beginning, read by partition
/// assignment (no consumer group), until `count` have arrived.
fn consume(server: &WeirServer, topic: &str, partitions: i32, count: usize) -> Vec<OwnedMessage> {
    consume_with(server, topic, partitions, count, &[])
}

fn consume_with(
    server: &WeirServer,
    topic: &str,
    partitions: i32,
    count: usize,
    extra: &[(&str, &str)],
) -> Vec<OwnedMessage> {
    let consumer: BaseConsumer = config(
        server,
        &[
            &[
                ("group.id", "weir-tests"),
                ("enable.auto.commit", "false"),
                ("fetch.wait.max.ms", "100"),
            ],
            extra,
        ]
        .concat(),
    )
    .create()
    .expect("create a consumer");
    let mut assignment = TopicPartitionList::new();
    for p in 0..partitions {
        assignment
            .add_partition_offset(topic, p, Offset::Beginning)
            .unwrap();
    }
    consumer.assign(&assignment).expect("assign partitions");
    let mut messages = Vec::new();
    let deadline = Instant::now() + WAIT;
    while messages.len() < count {
        assert!(
            Instant::now() < deadline,
            "only {} of {count} records of {topic} arrived",
            messages.len()
        );
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(message)) => messages.push(message.detach()),
            Some(Err(e)) => panic!("consuming {topic} failed: {e}"),
            None => {}
        }
    }
    messages
}

fn headers_of(message: &OwnedMessage) -> Vec<(String, Option<Vec<u8>>)> {
    message
        .headers()
        .map(|h| {
            h.iter()
                .map(|h| (h.key.to_string(), h.value.map(<[u8]>::to_vec)))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn records_produced_over_kafka_are_the_records_every_other_path_sees() {
    let dir = tempfile::tempdir().unwrap();
    let server = WeirServer::start(&dir.path().join("data"));
    server.create_topic("events", 3);
    let producer = producer(&server, &[("partitioner", "murmur2_random")]);
    let base_time = 1_700_000_000_000i64;
    let mut sent = BTreeMap::new();
    for i in 0..30i64 {
        let key = format!("k{i}");
        let value = format!("value {i}");
        let mut headers = OwnedHeaders::new().insert(Header {
            key: "n",
            value: Some(i.to_string().as_bytes()),
        });
        if i == 7 {
            // Kafka allows a header name more than once, and null values.
            headers = headers
                .insert(Header {
                    key: "n",
                    value: Some(b"again".as_slice()),
                })
                .insert(Header {
                    key: "empty",
                    value: None::<&[u8]>,
                });
        }
        let record = FutureRecord::to("events")
            .key(key.as_bytes())
            .payload(value.as_bytes())
            .headers(headers)
            .timestamp(base_time + i * 1000);
        let (partition, offset) = send(&producer, record);
        sent.insert((partition, offset), (key, value, base_time + i * 1000));
    }

    // librdkafka reads back exactly what it wrote, at the offsets it was told.
    let received = consume(&server, "events", 3, 30);
    for message in &received {
        let (key, value, time) = &sent[&(message.partition(), message.offset())];
        assert_eq!(message.key(), Some(key.as_bytes()));
        assert_eq!(message.payload(), Some(value.as_bytes()));
        assert_eq!(message.timestamp(), Timestamp::CreateTime(*time));
        let n = key[1..].to_string();
        let expected_headers = if n == "7" {
            vec![
                ("n".to_string(), Some(b"7".to_vec())),
                ("n".to_string(), Some(b"again".to_vec())),
                ("empty".to_string(), None),
            ]
        } else {
            vec![("n".to_string(), Some(n.into_bytes()))]
        };
        assert_eq!(headers_of(message), expected_headers);
    }

    // The HTTP API shows the same records at the same offsets, and the
    // keys were partitioned as Weir's own partitioner does (Kafka's murmur2).
    let mut seen = 0;
    for partition in 0..3 {
        for record in server.records("events", partition) {
            let offset = record["offset"].as_i64().unwrap();
            let (key, value, time) = &sent[&(partition as i32, offset)];
            assert_eq!(record["key"], json!(key));
            assert_eq!(record["value"], json!(value));
            assert_eq!(record["timestamp"], json!(time));
            seen += 1;
        }
    }
    assert_eq!(seen, 30);
    let offsets = server.produce("events", vec![json!({"key": "k3", "value": "again"})]);
    let k3_partition = sent
        .iter()
        .find(|(_, (key, _, _))| key == "k3")
        .map(|((p, _), _)| *p)
        .unwrap();
    assert_eq!(offsets[0]["partition"], json!(k3_partition));

    // The listener's counters.
    let (status, metrics) = server.get("/metrics");
    assert_eq!(status, 200);
    let metrics = metrics.as_str().expect("text").to_string();
    let value = |line_start: &str| -> f64 {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(line_start)?.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {line_start} in /metrics"))
    };
    assert!(value("weir_kafka_requests_total{api=\"Produce\"}") >= 1.0);
    assert!(value("weir_kafka_requests_total{api=\"Fetch\"}") >= 1.0);
    assert!(value("weir_kafka_request_bytes_total") > 3000.0);
}

#[test]
fn records_produced_over_http_are_fetched_over_kafka_unchanged() {
    let dir = tempfile::tempdir().unwrap();
    let server = WeirServer::start(&dir.path().join("data"));
    server.create_topic("notes", 1);
    server.produce(
        "notes",
        vec![
            json!({"key": "a", "value": "first", "headers": {"source": "http"}, "timestamp": 1000}),
            json!({"key_b64": "AAEC", "value_b64": "/wD+", "timestamp": 2000}),
            json!({"value": {"json": true}, "timestamp": 3000}),
        ],
    );
    let messages = consume(&server, "notes", 1, 3);
    assert_eq!(messages[0].key(), Some(b"a".as_slice()));
    assert_eq!(messages[0].payload(), Some(b"first".as_slice()));
    assert_eq!(
        headers_of(&messages[0]),
        vec![("source".to_string(), Some(b"http".to_vec()))]
    );
    assert_eq!(messages[0].timestamp(), Timestamp::CreateTime(1000));
    assert_eq!(messages[1].key(), Some([0u8, 1, 2].as_slice()));
    assert_eq!(messages[1].payload(), Some([0xffu8, 0, 0xfe].as_slice()));
    assert_eq!(messages[2].key(), None);
    assert_eq!(messages[2].payload(), Some(br#"{"json":true}"#.as_slice()));
    assert_eq!(
        messages.iter().map(|m| m.offset()).collect::<Vec<_>>(),
        [0, 1, 2]
    );
}

#[test]
fn every_compression_codec_is_accepted_and_read_back() {
    let dir = tempfile::tempdir().unwrap();
    let server = WeirServer::start(&dir.path().join("data"));
    for codec in ["gzip", "snappy", "lz4", "zstd"] {
        server.create_topic(codec, 1);
        let producer = producer(
            &server,
            &[("compression.codec", codec), ("linger.ms", "50")],
        );
        // Queued together, so librdkafka compresses them as one batch.
        let futures: Vec<_> = (0..200)
            .map(|i| {
                let value = format!("{codec} record {i} {}", "compressible ".repeat(8));
                producer
                    .send_result(
                        FutureRecord::<[u8], [u8]>::to(codec)
                            .key(format!("{i}").as_bytes())
                            .payload(value.as_bytes()),
                    )
                    .map_err(|(e, _)| e)
                    .expect("queue")
            })
            .collect();
        for future in futures {
            futures::executor::block_on(future)
                .unwrap()
                .unwrap_or_else(|(e, _)| panic!("{codec}: {e}"));
        }
        let messages = consume(&server, codec, 1, 200);
        for (i, message) in messages.iter().enumerate() {
            let value = format!("{codec} record {i} {}", "compressible ".repeat(8));
            assert_eq!(
                message.payload(),
                Some(value.as_bytes()),
                "{codec} record {i}"
            );
            assert_eq!(message.offset(), i as i64);
        }
        // Stored uncompressed: the HTTP API reads the same values.
        let values = server.values(codec);
        assert_eq!(values.len(), 200);
        assert_eq!(
            values[199],
            json!(format!("{codec} record 199 {}", "compressible ".repeat(8)))
        );
    }
}

#[test]
fn topics_are_administered_over_kafka() {
    let dir = tempfile::tempdir().unwrap();
    let server = WeirServer::start(&dir.path().join("data"));
    let admin: AdminClient<DefaultClientContext> = config(&server, &[])
        .create()
        .expect("create an admin client");
    let options = AdminOptions::new().operation_timeout(Some(WAIT));
    use futures::executor::block_on as run;

    let orders = NewTopic::new("orders", 4, TopicReplication::Fixed(1))
        .set("retention.ms", "3600000")
        .set("weir.durability", "never")
        .set("cleanup.policy", "delete");
    let results = run(admin.create_topics([&orders], &options)).unwrap();
    assert_eq!(results, vec![Ok("orders".to_string())]);

    // The same topic over HTTP, with the settings in Weir's names.
    let info = server.expect(200, server.get("/v1/topics/orders"));
    assert_eq!(info["partitions"].as_array().unwrap().len(), 4);
    assert_eq!(info["config"]["retention_ms"], json!(3600000));
    assert_eq!(info["config"]["durability"], json!("never"));

    let again = run(admin.create_topics([&orders], &options)).unwrap();
    assert_eq!(
        again,
        vec![Err((
            "orders".to_string(),
            RDKafkaErrorCode::TopicAlreadyExists
        ))]
    );
    let replicated = NewTopic::new("replicated", 1, TopicReplication::Fixed(3));
    let refused = run(admin.create_topics([&replicated], &options)).unwrap();
    assert_eq!(
        refused,
        vec![Err((
            "replicated".to_string(),
            RDKafkaErrorCode::InvalidReplicationFactor
        ))]
    );
    let odd = NewTopic::new("odd", 1, TopicReplication::Fixed(1)).set("no.such.setting", "1");
    let refused = run(admin.create_topics([&odd], &options)).unwrap();
    assert_eq!(
        refused,
        vec![Err(("odd".to_string(), RDKafkaErrorCode::InvalidConfig))]
    );

    let described =
        run(admin.describe_configs([&ResourceSpecifier::Topic("orders")], &options)).unwrap();
    let resource = described[0].as_ref().expect("orders is described");
    let entries = resource.entry_map();
    assert_eq!(entries["retention.ms"].value.as_deref(), Some("3600000"));
    assert_eq!(entries["weir.durability"].value.as_deref(), Some("never"));
    assert_eq!(entries["cleanup.policy"].value.as_deref(), Some("delete"));

    let metadata = admin
        .inner()
        .fetch_metadata(Some("orders"), WAIT)
        .expect("metadata");
    assert_eq!(metadata.topics()[0].partitions().len(), 4);
    assert_eq!(metadata.brokers().len(), 1);

    let grow = |count| {
        run(admin.create_partitions(
            [&rdkafka::admin::NewPartitions::new("orders", count)],
            &options,
        ))
        .unwrap()
    };
    assert_eq!(grow(6), vec![Ok("orders".to_string())]);
    let info = server.expect(200, server.get("/v1/topics/orders"));
    assert_eq!(info["partitions"].as_array().unwrap().len(), 6);
    assert_eq!(
        grow(3),
        vec![Err((
            "orders".to_string(),
            RDKafkaErrorCode::InvalidPartitions
        ))]
    );
    let producer = producer(&server, &[]);
    let (partition, _) = send(
        &producer,
        FutureRecord::to("orders")
            .partition(5)
            .payload(b"into a new partition".as_slice()),
    );
    assert_eq!(partition, 5);

    server.create_topic("http-made", 1);
    let deleted = run(admin.delete_topics(&["orders", "http-made", "missing"], &options)).unwrap();
    assert_eq!(
        deleted,
        vec![
            Ok("orders".to_string()),
            Ok("http-made".to_string()),
            Err((
                "missing".to_string(),
                RDKafkaErrorCode::UnknownTopicOrPartition
            )),
        ]
    );
    server.expect(404, server.get("/v1/topics/orders"));
}

#[test]
fn offsets_are_found_by_timestamp() {
    let dir = tempfile::tempdir().unwrap();
    let server = WeirServer::start(&dir.path().join("data"));
    server.create_topic("clicks", 1);
    let producer = producer(&server, &[]);
    for i in 0..10i64 {
        send(
            &producer,
            FutureRecord::to("clicks")
                .payload(format!("click {i}").as_bytes())
                .timestamp(10_000 + i * 1000),
        );
    }
    let consumer: BaseConsumer = config(&server, &[("group.id", "weir-tests")])
        .create()
        .unwrap();
    let mut wanted = TopicPartitionList::new();
    wanted
        .add_partition_offset("clicks", 0, Offset::Offset(15_500))
        .unwrap();
    let found = consumer.offsets_for_times(wanted, WAIT).unwrap();
    assert_eq!(
        found.find_partition("clicks", 0).unwrap().offset(),
        Offset::Offset(6)
    );
    let mut late = TopicPartitionList::new();
    late.add_partition_offset("clicks", 0, Offset::Offset(99_000))
        .unwrap();
    let found = consumer.offsets_for_times(late, WAIT).unwrap();
    assert_eq!(
        found.find_partition("clicks", 0).unwrap().offset(),
        Offset::End
    );
    let (low, high) = consumer.fetch_watermarks("clicks", 0, WAIT).unwrap();
    assert_eq!((low, high), (0, 10));
}

/// A batch of one record, as a plain producer would send it.
pub(crate) fn one_record(value: &str) -> log_core::Batch {
    let mut builder = BatchBuilder::new();
    builder.push(&Record {
        value: Some(value.as_bytes()),
        ..Record::default()
    });
    builder.finish().unwrap()
}

/// A batch from an idempotent producer, as it would send it.
fn stamped_batch(value: &str, stamp: ProducerStamp) -> Bytes {
    one_record(value).with_producer(stamp).into_bytes()
}

pub(crate) fn produce_request(topic: &str, records: Bytes) -> ProduceRequest {
    ProduceRequest::default()
        .with_acks(-1)
        .with_timeout_ms(30_000)
        .with_topic_data(vec![
            TopicProduceData::default()
                .with_name(TopicName(StrBytes::from_string(topic.to_string())))
                .with_partition_data(vec![
                    PartitionProduceData::default()
                        .with_index(0)
                        .with_records(Some(records)),
                ]),
        ])
}

/// `(error code, base offset)` of the only partition of a produce.
pub(crate) fn produce_raw(wire: &mut Wire, topic: &str, records: Bytes) -> (i16, i64) {
    let response = wire.send(&produce_request(topic, records), 9);
    let partition = &response.responses[0].partition_responses[0];
    (partition.error_code, partition.base_offset)
}

#[test]
fn idempotent_producers_are_deduplicated_across_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = WeirServer::start(&data);
    server.create_topic("payments", 1);
    let mut wire = Wire::connect(&server.kafka);
    let id = wire.send(
        &InitProducerIdRequest::default()
            .with_transactional_id(None)
            .with_transaction_timeout_ms(60_000),
        4,
    );
    assert_eq!(id.error_code, 0);
    let stamp = |base_sequence| ProducerStamp {
        id: id.producer_id.0,
        epoch: id.producer_epoch,
        base_sequence,
    };
    assert_eq!(
        produce_raw(&mut wire, "payments", stamped_batch("p0", stamp(0))),
        (0, 0)
    );
    assert_eq!(
        produce_raw(&mut wire, "payments", stamped_batch("p1", stamp(1))),
        (0, 1)
    );
    // A retry is answered with the offset it already has, and not written.
    assert_eq!(
        produce_raw(&mut wire, "payments", stamped_batch("p1", stamp(1))),
        (0, 1)
    );
    // A gap is refused.
    let (code, _) = produce_raw(&mut wire, "payments", stamped_batch("p9", stamp(9)));
    assert_eq!(
        code,
        kafka_protocol::ResponseError::OutOfOrderSequenceNumber.code()
    );
    drop(wire);

    server.stop();
    let server = WeirServer::start(&data);
    let mut wire = Wire::connect(&server.kafka);
    assert_eq!(
        produce_raw(&mut wire, "payments", stamped_batch("p1", stamp(1))),
        (0, 1)
    );
    assert_eq!(
        produce_raw(&mut wire, "payments", stamped_batch("p2", stamp(2))),
        (0, 2)
    );
    assert_eq!(
        server.values("payments"),
        vec![json!("p0"), json!("p1"), json!("p2")]
    );

    // librdkafka's own idempotent producer works end to end too.
    let producer = producer(&server, &[("enable.idempotence", "true")]);
    for i in 0..20 {
        send(
            &producer,
            FutureRecord::to("payments").payload(format!("r{i}").as_bytes()),
        );
    }
    assert_eq!(server.values("payments").len(), 23);
}

#[test]
fn bad_requests_get_kafka_error_codes() {
    let dir = tempfile::tempdir().unwrap();
    let server = WeirServer::start(&dir.path().join("data"));
    server.expect(
        201,
        server.post(
            "/v1/topics",
            &json!({"name": "small", "max_batch_bytes": 1024}),
        ),
    );
    let mut wire = Wire::connect(&server.kafka);
    let plain = |value: &str| {
        let mut builder = BatchBuilder::new();
        builder.push(&Record {
            value: Some(value.as_bytes()),
            ..Record::default()
        });
        builder.finish().unwrap().into_bytes()
    };
    use kafka_protocol::ResponseError as E;
    assert_eq!(
        produce_raw(&mut wire, "missing", plain("x")).0,
        E::UnknownTopicOrPartition.code()
    );
    assert_eq!(
        produce_raw(&mut wire, "small", plain(&"x".repeat(4096))).0,
        E::MessageTooLarge.code()
    );
    let mut corrupt = plain("flipped").to_vec();
    *corrupt.last_mut().unwrap() ^= 0xff;
    assert_eq!(
        produce_raw(&mut wire, "small", Bytes::from(corrupt)).0,
        E::CorruptMessage.code()
    );
    assert_eq!(produce_raw(&mut wire, "small", plain("fine")), (0, 0));

    let fetch = |offset: i64| {
        FetchRequest::default()
            .with_max_wait_ms(0)
            .with_max_bytes(1 << 20)
            .with_topics(vec![
                FetchTopic::default()
                    .with_topic(TopicName(StrBytes::from_static_str("small")))
                    .with_partitions(vec![
                        FetchPartition::default()
                            .with_partition(0)
                            .with_fetch_offset(offset)
                            .with_partition_max_bytes(1 << 20),
                    ]),
            ])
    };
    let response = wire.send(&fetch(7), 11);
    assert_eq!(
        response.responses[0].partitions[0].error_code,
        E::OffsetOutOfRange.code()
    );
    let response = wire.send(&fetch(0), 11);
    let partition = &response.responses[0].partitions[0];
    assert_eq!((partition.error_code, partition.high_watermark), (0, 1));
    assert!(partition.records.as_ref().unwrap().len() > 61);
}

#[test]
fn api_versions_are_negotiated_even_with_old_and_future_clients() {
    let dir = tempfile::tempdir().unwrap();
    let server = WeirServer::start(&dir.path().join("data"));
    let mut wire = Wire::connect(&server.kafka);
    for version in [0, 3] {
        let response: ApiVersionsResponse = wire.send(&ApiVersionsRequest::default(), version);
        assert_eq!(response.error_code, 0);
        let produce = response
            .api_keys
            .iter()
            .find(|k| k.api_key == ApiKey::Produce as i16)
            .expect("produce is advertised");
        assert_eq!((produce.min_version, produce.max_version), (3, 9));
    }
    // A version from the future: the error and the versions spoken, in v0.
    let mut request = bytes::BytesMut::new();
    for field in [ApiKey::ApiVersions as i16, 99] {
        request.extend_from_slice(&field.to_be_bytes());
    }
    request.extend_from_slice(&42i32.to_be_bytes());
    request.extend_from_slice(&(-1i16).to_be_bytes());
    let mut answer = wire.roundtrip(&request).expect("an answer");
    let correlation = kafka_protocol::messages::ResponseHeader::decode(&mut answer, 0).unwrap();
    assert_eq!(correlation.correlation_id, 42);
    let response = ApiVersionsResponse::decode(&mut answer, 0).unwrap();
    assert_eq!(
        response.error_code,
        kafka_protocol::ResponseError::UnsupportedVersion.code()
    );
    assert!(!response.api_keys.is_empty());
}

#[test]
fn malformed_frames_close_only_their_connection() {
    let dir = tempfile::tempdir().unwrap();
    let server = WeirServer::start(&dir.path().join("data"));
    let mut rng = rand::rng();
    use rand::Rng;
    let healthy = |server: &WeirServer| {
        let mut wire = Wire::connect(&server.kafka);
        let response: ApiVersionsResponse = wire.send(&ApiVersionsRequest::default(), 3);
        assert_eq!(response.error_code, 0);
    };
    // Hand-picked: oversized and negative sizes, an unknown API, a
    // truncated header, a request of a version not spoken.
    let cases: Vec<Vec<u8>> = vec![
        i32::MAX.to_be_bytes().to_vec(),
        (-5i32).to_be_bytes().to_vec(),
        [&8i32.to_be_bytes()[..], &[0x7f, 0x7f, 0, 0, 0, 0, 0, 1]].concat(),
        [&3i32.to_be_bytes()[..], &[0, 18, 0]].concat(),
        [&10i32.to_be_bytes()[..], &[0, 0, 0, 1, 0, 0, 0, 1, 0, 0]].concat(),
    ];
    for case in cases {
        let mut wire = Wire::connect(&server.kafka);
        assert!(wire.send_raw(&case).is_none(), "{case:?} got an answer");
        healthy(&server);
    }
    // Random requests of every API the server speaks, valid headers
    // followed by noise: each is answered or closes its connection.
    for round in 0..300 {
        let api = [0i16, 1, 2, 3, 17, 18, 19, 20, 22, 32, 36][round % 11];
        let mut body = Vec::new();
        body.extend_from_slice(&api.to_be_bytes());
        body.extend_from_slice(&rng.random_range(0i16..10).to_be_bytes());
        body.extend_from_slice(&(round as i32).to_be_bytes());
        body.extend_from_slice(&(-1i16).to_be_bytes());
        let noise = rng.random_range(0..200);
        body.extend((0..noise).map(|_| rng.random::<u8>()));
        let mut wire = Wire::connect(&server.kafka);
        let _ = wire.roundtrip(&body);
    }
    healthy(&server);
    assert_eq!(server.get("/healthz").0, 200);
}

#[test]
fn pipelines_read_and_write_through_kafka() {
    let dir = tempfile::tempdir().unwrap();
    let server = WeirServer::start(&dir.path().join("data"));
    server.create_topic("purchases", 2);
    server.create_topic("receipts", 1);
    server.push_module("receipt", "receipt");
    let spec = json!({
        "inputs": ["purchases"],
        "stages": [{ "module": "receipt", "config": { "currency": "EUR" },
                     "outputs": { "main": "receipts" } }],
    });
    server.expect(201, server.put("/v1/pipelines/receipts", &spec));
    let producer = producer(&server, &[]);
    for (order, customer) in [("o1", "ann"), ("o2", "bob"), ("o3", "cy")] {
        let purchase = json!({"order_id": order, "customer": customer,
                              "items": [{"sku": "tea", "qty": 1, "price_cents": 300}]});
        send(
            &producer,
            FutureRecord::to("purchases")
                .key(customer.as_bytes())
                .payload(purchase.to_string().as_bytes()),
        );
    }
    let receipts = consume(&server, "receipts", 1, 3);
    let mut orders: Vec<String> = receipts
        .iter()
        .map(|m| {
            let receipt: Value = serde_json::from_slice(m.payload().unwrap()).unwrap();
            assert_eq!(receipt["total_cents"], json!(300));
            assert_eq!(receipt["currency"], json!("EUR"));
            receipt["order_id"].as_str().unwrap().to_string()
        })
        .collect();
    orders.sort();
    assert_eq!(orders, ["o1", "o2", "o3"]);
}

#[test]
fn fetch_waits_for_data_up_to_max_wait() {
    let dir = tempfile::tempdir().unwrap();
    let server = WeirServer::start(&dir.path().join("data"));
    server.create_topic("slow", 1);
    let request = FetchRequest::default()
        .with_max_wait_ms(3000)
        .with_min_bytes(1)
        .with_max_bytes(1 << 20)
        .with_topics(vec![
            FetchTopic::default()
                .with_topic(TopicName(StrBytes::from_static_str("slow")))
                .with_partitions(vec![
                    FetchPartition::default()
                        .with_partition(0)
                        .with_fetch_offset(0)
                        .with_partition_max_bytes(1 << 20),
                ]),
        ]);
    let kafka = server.kafka.clone();
    let waiting = std::thread::spawn(move || {
        let mut wire = Wire::connect(&kafka);
        wire.send(&request, 11)
    });
    std::thread::sleep(Duration::from_millis(300));
    server.produce("slow", vec![json!({"value": "late"})]);
    let response = waiting.join().unwrap();
    let partition = &response.responses[0].partitions[0];
    // Answered with the record that arrived while it waited.
    assert_eq!(partition.high_watermark, 1);
    assert!(!partition.records.as_ref().unwrap().is_empty());
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

#[test]
fn kafka_python_client_works_end_to_end() {
    let dir = tempfile::tempdir().unwrap();
    let server = WeirServer::start(&dir.path().join("data"));
    server.create_topic("from-http", 1);
    for codec in ["gzip", "snappy", "lz4", "zstd"] {
        server.create_topic(&format!("py-{codec}"), 1);
    }
    server.produce(
        "from-http",
        vec![
            json!({"key": "a", "value": "x", "timestamp": 1000}),
            json!({"key": "b", "value": "y", "timestamp": 2000}),
            json!({"value_b64": "AP8=", "timestamp": 3000}),
        ],
    );
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("python")
        .join("kafka_python_client.py");
    let output = std::process::Command::new(crate::support::python::python())
        .arg(&script)
        .arg(&server.kafka)
        .output()
        .expect("run the kafka-python client");
    assert!(
        output.status.success(),
        "kafka-python client failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let out: Value = serde_json::from_slice(&output.stdout).expect("the client prints JSON");

    assert_eq!(
        out["topics"],
        json!([
            "from-http",
            "py-gzip",
            "py-lz4",
            "py-orders",
            "py-snappy",
            "py-zstd"
        ])
    );
    // Created over Kafka with Kafka's setting names, seen over HTTP in Weir's.
    let info = server.expect(200, server.get("/v1/topics/py-orders"));
    assert_eq!(info["config"]["retention_ms"], json!(600000));

    // Every record it produced (gzip-compressed) came back to it unchanged,
    // and the HTTP API shows each at the offset the producer was told.
    let consumed = out["consumed"].as_array().unwrap();
    assert_eq!(consumed.len(), 20);
    for (i, produced) in out["produced"].as_array().unwrap().iter().enumerate() {
        let (partition, offset) = (produced[0].as_i64().unwrap(), produced[1].as_i64().unwrap());
        let record = consumed
            .iter()
            .find(|r| r["partition"] == json!(partition) && r["offset"] == json!(offset))
            .unwrap_or_else(|| panic!("record {i} was not consumed"));
        assert_eq!(record["key"], json!(format!("k{i}")));
        assert_eq!(record["value"], json!(format!("order {i}")));
        assert_eq!(
            record["timestamp"],
            json!(out["base_time"].as_i64().unwrap() + i as i64 * 1000)
        );
        assert_eq!(record["headers"], json!([["n", i.to_string()]]));
        let over_http = server.records("py-orders", partition as u32);
        let same = over_http
            .iter()
            .find(|r| r["offset"] == json!(offset))
            .expect("the record over HTTP");
        assert_eq!(same["value"], json!(format!("order {i}")));
        assert_eq!(same["headers"], json!({"n": i.to_string()}));
    }

    // Its group's committed positions are Weir's group offsets.
    let group = server.expect(200, server.get("/v1/groups/py-group"));
    let mut offsets: Vec<(u64, u64)> = group["offsets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| {
            (
                o["partition"].as_u64().unwrap(),
                o["offset"].as_u64().unwrap(),
            )
        })
        .collect();
    offsets.sort();
    let committed = &out["committed"];
    assert_eq!(
        offsets,
        vec![
            (0, committed["0"].as_u64().unwrap()),
            (1, committed["1"].as_u64().unwrap())
        ]
    );
    assert_eq!(offsets.iter().map(|o| o.1).sum::<u64>(), 20);

    // Each codec's batches came back whole to the client that compressed them,
    // and are stored uncompressed (the HTTP API reads them).
    for codec in ["gzip", "snappy", "lz4", "zstd"] {
        let expected: Vec<Value> = (0..50)
            .map(|i| json!(format!("{codec} {i} {}", "abc".repeat(20))))
            .collect();
        assert_eq!(out["codecs"][codec], json!(expected), "{codec} over Kafka");
        assert_eq!(
            server.values(&format!("py-{codec}")),
            expected,
            "{codec} over HTTP"
        );
    }

    // Records produced over HTTP, read over Kafka byte for byte.
    assert_eq!(out["offset_for_2000"], json!(1));
    assert_eq!(
        out["from_http"],
        json!([
            {"key": "61", "value": "78"},
            {"key": "62", "value": "79"},
            {"key": null, "value": "00ff"},
        ])
    );
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

#[test]
fn transactions_commit_visibly_and_abort_invisibly() {
    use rdkafka::producer::Producer;

    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = WeirServer::start(&data);
    server.create_topic("ledger", 2);
    server.create_topic("source", 1);
    let transactional = |server: &WeirServer, id: &str| -> FutureProducer {
        let producer: FutureProducer = config(
            server,
            &[
                ("transactional.id", id),
                ("transaction.timeout.ms", "60000"),
            ],
        )
        .create()
        .expect("a transactional producer");
        producer.init_transactions(WAIT).expect("init transactions");
        producer
    };
    let producer = transactional(&server, "payments-1");
    let write = |producer: &FutureProducer, values: &[&str]| {
        let futures: Vec<_> = values
            .iter()
            .map(|v| {
                producer
                    .send_result(
                        FutureRecord::<[u8], [u8]>::to("ledger")
                            .key(v.as_bytes())
                            .payload(v.as_bytes()),
                    )
                    .map_err(|(e, _)| e)
                    .expect("queue")
            })
            .collect();
        for future in futures {
            futures::executor::block_on(future)
                .unwrap()
                .unwrap_or_else(|(e, _)| panic!("transactional send failed: {e}"));
        }
    };

    producer.begin_transaction().unwrap();
    write(&producer, &["c1", "c2", "c3"]);
    // Nothing is visible before the commit, to any reader.
    assert!(server.records("ledger", 0).is_empty() && server.records("ledger", 1).is_empty());
    producer.commit_transaction(WAIT).expect("commit");

    producer.begin_transaction().unwrap();
    write(&producer, &["a1", "a2"]);
    producer.abort_transaction(WAIT).expect("abort");

    // Offsets committed with a transaction land with it.
    let consumer: BaseConsumer = config(&server, &[("group.id", "settler")])
        .create()
        .unwrap();
    producer.begin_transaction().unwrap();
    write(&producer, &["c4"]);
    let mut offsets = TopicPartitionList::new();
    offsets
        .add_partition_offset("source", 0, Offset::Offset(42))
        .unwrap();
    producer
        .send_offsets_to_transaction(&offsets, &consumer.group_metadata().unwrap(), WAIT)
        .expect("offsets in the transaction");
    producer
        .commit_transaction(WAIT)
        .expect("commit with offsets");

    let read_committed = consume_with(
        &server,
        "ledger",
        2,
        4,
        &[("isolation.level", "read_committed")],
    );
    let mut values: Vec<String> = read_committed
        .iter()
        .map(|m| String::from_utf8(m.payload().unwrap().to_vec()).unwrap())
        .collect();
    values.sort();
    assert_eq!(values, ["c1", "c2", "c3", "c4"]);
    let stored: usize = (0..2).map(|p| server.records("ledger", p).len()).sum();
    assert_eq!(stored, 4, "aborted records never reach the log");
    let group = server.expect(200, server.get("/v1/groups/settler"));
    assert_eq!(group["offsets"][0]["offset"], json!(42));

    // A new instance with the same transactional id fences the old one,
    // and aborts what it left open, across a restart too.
    producer.begin_transaction().unwrap();
    write(&producer, &["left-open"]);
    drop(producer);
    server.stop();
    let server = WeirServer::start(&data);
    let successor = transactional(&server, "payments-1");
    successor.begin_transaction().unwrap();
    write(&successor, &["c5"]);
    successor
        .commit_transaction(WAIT)
        .expect("commit after fencing");
    let mut values: Vec<String> = (0..2)
        .flat_map(|p| server.records("ledger", p))
        .map(|r| r["value"].as_str().unwrap().to_string())
        .collect();
    values.sort();
    assert_eq!(values, ["c1", "c2", "c3", "c4", "c5"]);
}
