//! What librdkafka will not send on purpose, over a bare protocol client:
//! idempotent batches replayed across restarts, requests that must get Kafka's
//! error codes, ApiVersions from old and future clients, malformed frames, and
//! a fetch that waits for data.

use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::messages::api_versions_request::ApiVersionsRequest;
use kafka_protocol::messages::api_versions_response::ApiVersionsResponse;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchRequest, FetchTopic};
use kafka_protocol::messages::init_producer_id_request::InitProducerIdRequest;
use kafka_protocol::messages::produce_request::{
    PartitionProduceData, ProduceRequest, TopicProduceData,
};
use kafka_protocol::messages::{ApiKey, TopicName};
use kafka_protocol::protocol::{Decodable, StrBytes};
use log_core::{BatchBuilder, ProducerStamp, Record};
use rdkafka::producer::FutureRecord;
use serde_json::json;

use super::{producer, send};
use crate::support::kafka_wire::Wire;
use crate::support::server::WeirServer;

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
