//! The Kafka listener of a real `weir serve`, spoken to by librdkafka
//! (through the `rdkafka` crate, built from its bundled sources) and by a
//! bare protocol client for what librdkafka will not send on purpose:
//! replayed sequences, corrupt batches, malformed frames.
//!
//! One file on purpose, though long: the client-facing checks read as one
//! list (groups, transactions and the wire have their own files).

pub(crate) mod groups;
mod transactions;
pub(crate) mod wire;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, ResourceSpecifier, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders, OwnedMessage};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{Offset, Timestamp, TopicPartitionList};
use serde_json::{Value, json};

use weir_jetstream::testing::{NatsServer, nats_server_binary};

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

pub(crate) fn consume_with(
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
    kafka_and_http_agree(&server);
}

/// The same with the streams in NATS JetStream: the listener works on
/// any log behind the interface.
#[test]
fn records_produced_over_kafka_are_the_records_every_other_path_sees_on_jetstream() {
    let nats = NatsServer::start(&nats_server_binary(std::path::Path::new(env!(
        "CARGO_TARGET_TMPDIR"
    ))));
    let dir = tempfile::tempdir().unwrap();
    let config = format!(
        "[log]\nbackend = \"jetstream\"\nservers = [\"{}\"]\n",
        nats.url()
    );
    let server = WeirServer::start_with_config(&dir.path().join("data"), &config);
    kafka_and_http_agree(&server);
}

/// Records produced by librdkafka (keys, values, headers, timestamps) are
/// what librdkafka reads back and what the HTTP API shows, at the same
/// offsets, partitioned as Weir's own partitioner does.
fn kafka_and_http_agree(server: &WeirServer) {
    server.create_topic("events", 3);
    let producer = producer(server, &[("partitioner", "murmur2_random")]);
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
    let received = consume(server, "events", 3, 30);
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

#[test]
fn pipelines_read_and_write_through_kafka() {
    let dir = tempfile::tempdir().unwrap();
    let server = WeirServer::start(&dir.path().join("data"));
    server.start_receipts("EUR");
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
