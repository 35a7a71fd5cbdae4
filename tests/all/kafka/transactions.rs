//! Kafka transactions through librdkafka: committed records and offsets
//! become visible together, aborted ones never do, and a new instance of a
//! transactional id fences the old one and aborts what it left open, across
//! a restart too.

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};
use serde_json::json;

use super::{WAIT, config, consume_with};
use crate::support::server::WeirServer;

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
