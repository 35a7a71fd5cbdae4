//! The conformance suite of the log interface: what [`StreamLog`] promises,
//! as checks every backend must pass (feature `contract`).
//!
//! Each check is written once, in [`checks`], as an `async fn` over an
//! `Arc<dyn StreamLog>`; [`contract_suite!`](crate::contract_suite) makes
//! one test per check in the module it is invoked in, each over a fresh
//! backend from a constructor. `log/tests/contract.rs` runs it against
//! [`EmbeddedLog`](crate::EmbeddedLog) and [`MemoryLog`](crate::MemoryLog);
//! another backend's crate runs it against its own (the NATS JetStream
//! backend's `jetstream/tests/contract.rs`).
//!
//! The checks assert what the interface promises and nothing of how one
//! backend keeps it: a read may return fewer batches than its byte budget
//! allows, `truncate_commits` may keep older commits, a commit's offset is
//! only known to grow. Waits assert on what `wait_for` returns, never on
//! elapsed time; a bound of [`HANG`] only catches a wait that never ends.
//!
//! One file on purpose, though long: it is the contract, read as a list.

use std::collections::BTreeSet;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use weir_format::{Batch, BatchBuilder, Header, ProducerStamp, Record};

use crate::{
    AppendInfo, Cleanup, CommitLogSettings, CommitRecord, Durability, LogError,
    MAX_COMMIT_LOG_NAME_LEN, StreamLog, TopicConfig, TopicInfo,
};

/// A log under test, with what must outlive it (a temporary directory, a
/// server).
pub struct Backend {
    pub log: Arc<dyn StreamLog>,
    pub keep: Box<dyn std::any::Any + Send>,
}

/// A read budget that takes everything these checks write.
const ALL: usize = 1 << 20;

/// A bound that only a wait that never ends reaches.
const HANG: Duration = Duration::from_secs(30);

/// Commit logs as checks open them: small storage units, so that
/// truncation has whole ones to free.
const COMMIT_LOG: CommitLogSettings = CommitLogSettings {
    durability: Durability::Always,
    segment_bytes: 4096,
};

/// Asserts that `$result` is an `Err` matching `$pattern`.
macro_rules! assert_err {
    ($result:expr, $pattern:pat $(if $guard:expr)?) => {
        match $result {
            Err($pattern) $(if $guard)? => {}
            other => panic!(
                "expected Err({}), got {other:?}",
                stringify!($pattern $(if $guard)?)
            ),
        }
    };
}

/// A batch of records whose keys and values are `values` (keyed, so it
/// also fits compacted topics).
fn batch(values: &[&str]) -> Batch {
    let mut builder = BatchBuilder::new();
    for value in values {
        builder.push(&Record {
            key: Some(value.as_bytes()),
            value: Some(value.as_bytes()),
            ..Record::default()
        });
    }
    builder.finish().expect("a batch of at least one record")
}

/// [`batch`] stamped by producer `id` in `epoch` from `base_sequence`.
fn stamped(values: &[&str], id: i64, epoch: i16, base_sequence: i32) -> Batch {
    batch(values).with_producer(ProducerStamp {
        id,
        epoch,
        base_sequence,
    })
}

/// A batch of keyed records with these timestamps.
fn timed(timestamps: &[i64]) -> Batch {
    let mut builder = BatchBuilder::new();
    for timestamp in timestamps {
        builder.push(&Record {
            key: Some(b"k"),
            value: Some(b"v"),
            timestamp: *timestamp,
            ..Record::default()
        });
    }
    builder.finish().expect("a batch of at least one record")
}

fn appended(base_offset: u64, last_offset: u64) -> AppendInfo {
    AppendInfo {
        base_offset,
        last_offset,
        duplicate: false,
    }
}

fn duplicate_of(base_offset: u64, last_offset: u64) -> AppendInfo {
    AppendInfo {
        base_offset,
        last_offset,
        duplicate: true,
    }
}

async fn create(log: &dyn StreamLog, name: &str, partitions: u32) -> TopicInfo {
    let config = TopicConfig {
        partitions,
        ..TopicConfig::default()
    };
    log.create_topic(name, config).await.expect("create_topic")
}

async fn end_offset(log: &dyn StreamLog, topic: &str, partition: u32) -> u64 {
    let info = log.topic(topic).await.expect("topic");
    info.partitions[partition as usize].end_offset
}

/// Every record of a partition as `(offset, value)`, read from offset 0
/// batch by batch, skipping what a first batch holds below the offset
/// asked; also checks that the batches follow each other without gaps.
async fn read_all(log: &dyn StreamLog, topic: &str, partition: u32) -> Vec<(u64, String)> {
    let end = end_offset(log, topic, partition).await;
    let mut records = Vec::new();
    let mut offset = 0;
    while offset < end {
        let batches = log.read(topic, partition, offset, ALL).await.expect("read");
        assert!(
            !batches.is_empty(),
            "read at {offset}, below the end {end}, returned nothing"
        );
        assert!(batches[0].base_offset() <= offset && offset <= batches[0].last_offset());
        for pair in batches.windows(2) {
            assert_eq!(
                pair[1].base_offset(),
                pair[0].next_offset(),
                "a gap between batches"
            );
        }
        for record in batches.iter().flat_map(Batch::records) {
            if record.offset >= offset {
                let value = String::from_utf8_lossy(record.value.unwrap_or_default());
                records.push((record.offset, value.into_owned()));
            }
        }
        offset = batches.last().map_or(end, Batch::next_offset);
    }
    records
}

fn numbered<'a>(values: impl IntoIterator<Item = &'a str>) -> Vec<(u64, String)> {
    (0..).zip(values.into_iter().map(String::from)).collect()
}

fn bytes(values: &[&str]) -> Vec<Bytes> {
    values
        .iter()
        .map(|v| Bytes::copy_from_slice(v.as_bytes()))
        .collect()
}

/// `future`, which must end before [`HANG`].
async fn within<T>(what: &str, future: impl Future<Output = T>) -> T {
    tokio::time::timeout(HANG, future)
        .await
        .unwrap_or_else(|_| panic!("{what} did not return within {HANG:?}"))
}

pub mod checks {
    use super::*;

    // Offsets and topics.

    pub async fn offsets_are_consecutive_per_partition(log: Arc<dyn StreamLog>) {
        let info = create(&*log, "orders", 3).await;
        assert_eq!(info.name, "orders");
        let partitions: Vec<_> = info
            .partitions
            .iter()
            .map(|p| (p.partition, p.start_offset, p.end_offset))
            .collect();
        assert_eq!(partitions, [(0, 0, 0), (1, 0, 0), (2, 0, 0)]);

        let p0 = log.append("orders", 0, batch(&["a"])).await.unwrap();
        assert_eq!(p0, appended(0, 0));
        let p0 = log
            .append("orders", 0, batch(&["b", "c", "d"]))
            .await
            .unwrap();
        assert_eq!(p0, appended(1, 3));
        let p1 = log.append("orders", 1, batch(&["x", "y"])).await.unwrap();
        assert_eq!(p1, appended(0, 1), "partitions number their offsets apart");
        let p0 = log.append("orders", 0, batch(&["e"])).await.unwrap();
        assert_eq!(p0, appended(4, 4));

        let info = log.topic("orders").await.unwrap();
        let ends: Vec<_> = info.partitions.iter().map(|p| p.end_offset).collect();
        assert_eq!(ends, [5, 2, 0]);
        assert_eq!(
            read_all(&*log, "orders", 0).await,
            numbered(["a", "b", "c", "d", "e"])
        );
        assert_eq!(read_all(&*log, "orders", 1).await, numbered(["x", "y"]));
    }

    pub async fn topics_are_listed_sorted_without_internal_ones(log: Arc<dyn StreamLog>) {
        assert!(log.topics().await.unwrap().is_empty());
        for name in ["pears", "apples", "figs"] {
            create(&*log, name, 1).await;
        }
        // A commit log whose name sorts among the topics'.
        log.open_commit_log("bananas", 1, COMMIT_LOG).await.unwrap();
        log.commit("bananas", 0, bytes(&["c"])).await.unwrap();

        let topics = log.topics().await.unwrap();
        let names: Vec<_> = topics.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(names, ["apples", "figs", "pears"]);
        assert!(topics.iter().all(|t| t.partitions.len() == 1));
    }

    pub async fn reserved_topic_names_are_refused(log: Arc<dyn StreamLog>) {
        assert_err!(
            log.create_topic("__mine", TopicConfig::default()).await,
            LogError::InvalidTopicName { .. }
        );
        assert_err!(log.topic("__mine").await, LogError::UnknownTopic(_));
        log.open_commit_log("hidden", 1, COMMIT_LOG).await.unwrap();
        create(&*log, "_one", 1).await;
        let names: Vec<_> = log
            .topics()
            .await
            .unwrap()
            .into_iter()
            .map(|t| t.name)
            .collect();
        assert_eq!(names, ["_one"]);
    }

    pub async fn topic_config_round_trips(log: Arc<dyn StreamLog>) {
        let plain = TopicConfig {
            partitions: 2,
            durability: Durability::Never,
            segment_bytes: 1 << 20,
            max_batch_bytes: 4096,
            ..TopicConfig::default()
        };
        let tuned = TopicConfig {
            cleanup: Cleanup::Compact,
            retention_ms: Some(60_000),
            retention_bytes: Some(1 << 30),
            ..plain.clone()
        };
        let config = if log.check_topic_config("tuned", &tuned).is_ok() {
            tuned
        } else {
            // A backend that cannot keep a setting says so, and refuses it.
            assert_err!(
                log.create_topic("tuned", tuned).await,
                LogError::InvalidConfig { .. }
            );
            plain
        };
        let info = log.create_topic("tuned", config.clone()).await.unwrap();
        assert_eq!(info.config, config);
        assert_eq!(log.topic("tuned").await.unwrap().config, config);
        assert_eq!(log.topics().await.unwrap()[0].config, config);
    }

    // Reads.

    pub async fn read_starts_at_the_batch_holding_the_offset(log: Arc<dyn StreamLog>) {
        create(&*log, "t", 1).await;
        log.append("t", 0, batch(&["a", "b", "c"])).await.unwrap();
        log.append("t", 0, batch(&["d", "e"])).await.unwrap();

        let from_start = log.read("t", 0, 0, ALL).await.unwrap();
        assert_eq!(from_start[0].base_offset(), 0);
        let middle = log.read("t", 0, 1, ALL).await.unwrap();
        assert_eq!(
            middle[0].base_offset(),
            0,
            "the batch holding offset 1 comes first"
        );
        assert_eq!(middle[0].last_offset(), 2);
        let offsets: Vec<_> = middle[0].records().map(|r| r.offset).collect();
        assert_eq!(
            offsets,
            [0, 1, 2],
            "the caller skips the records below the offset"
        );
        let second = log.read("t", 0, 4, ALL).await.unwrap();
        assert_eq!((second[0].base_offset(), second[0].last_offset()), (3, 4));

        assert!(
            log.read("t", 0, 5, ALL).await.unwrap().is_empty(),
            "nothing at the end"
        );
        let (batches, stored) = log.read_stored("t", 0, 5, ALL).await.unwrap();
        assert!(batches.is_empty() && stored.is_empty());
        assert_err!(
            log.read("t", 0, 6, ALL).await,
            LogError::OffsetOutOfRange {
                requested: 6,
                start: 0,
                end: 5,
                ..
            }
        );
        assert_err!(
            log.read_stored("t", 0, 6, ALL).await,
            LogError::OffsetOutOfRange { requested: 6, .. }
        );
    }

    pub async fn read_returns_a_batch_whatever_the_budget(log: Arc<dyn StreamLog>) {
        create(&*log, "t", 1).await;
        for values in [&["a", "b"][..], &["c"], &["d", "e", "f"]] {
            log.append("t", 0, batch(values)).await.unwrap();
        }
        for (offset, base) in [(0, 0), (1, 0), (2, 2), (5, 3)] {
            let batches = log.read("t", 0, offset, 1).await.unwrap();
            assert_eq!(
                batches.len(),
                1,
                "one batch for a budget of 1 byte at {offset}"
            );
            assert_eq!(batches[0].base_offset(), base);
            let (stored, _) = log.read_stored("t", 0, offset, 1).await.unwrap();
            assert_eq!(stored, batches);
        }
        assert_eq!(
            read_all(&*log, "t", 0).await,
            numbered(["a", "b", "c", "d", "e", "f"])
        );
    }

    pub async fn read_stored_bytes_are_the_batches(log: Arc<dyn StreamLog>) {
        create(&*log, "t", 1).await;
        for values in [&["a", "b"][..], &["c"], &["d", "e", "f"]] {
            log.append("t", 0, batch(values)).await.unwrap();
        }
        for offset in [0, 1, 2, 4] {
            let (batches, stored) = log.read_stored("t", 0, offset, ALL).await.unwrap();
            assert!(!batches.is_empty());
            let joined: Vec<u8> = batches.iter().flat_map(|b| b.as_bytes().to_vec()).collect();
            assert_eq!(stored, joined, "read_stored at {offset}");
            assert_eq!(log.read("t", 0, offset, ALL).await.unwrap(), batches);
        }
    }

    pub async fn records_round_trip(log: Arc<dyn StreamLog>) {
        create(&*log, "t", 1).await;
        let headers = [
            Header {
                name: "trace",
                value: Some(b"abc"),
            },
            Header {
                name: "empty",
                value: None,
            },
        ];
        let written = [
            Record {
                key: Some(b"key-1"),
                value: Some(b"value-1"),
                headers: &headers,
                timestamp: 1_700_000_000_123,
            },
            Record {
                key: None,
                value: None,
                headers: &[],
                timestamp: 1_700_000_000_100,
            },
            Record {
                key: Some(b""),
                value: Some(b""),
                headers: &headers[1..],
                timestamp: 1_700_000_009_000,
            },
        ];
        let mut builder = BatchBuilder::new();
        for record in &written {
            builder.push(record);
        }
        log.append("t", 0, builder.finish().unwrap()).await.unwrap();

        let batches = log.read("t", 0, 0, ALL).await.unwrap();
        let read: Vec<_> = batches.iter().flat_map(Batch::records).collect();
        assert_eq!(read.len(), written.len());
        for ((offset, record), view) in (0..).zip(&written).zip(&read) {
            assert_eq!(view.offset, offset);
            assert_eq!(view.key, record.key, "key of record {offset}");
            assert_eq!(view.value, record.value, "value of record {offset}");
            assert_eq!(
                view.timestamp, record.timestamp,
                "timestamp of record {offset}"
            );
            let read_headers: Vec<_> = view.headers().collect();
            assert_eq!(read_headers, record.headers, "headers of record {offset}");
        }
    }

    // Errors.

    pub async fn unknown_topics_are_refused(log: Arc<dyn StreamLog>) {
        let missing = |e: &LogError| matches!(e, LogError::UnknownTopic(name) if name == "missing");
        let log = &*log;
        let wait = Duration::from_millis(10);
        assert!(missing(
            &log.append("missing", 0, batch(&["a"])).await.unwrap_err()
        ));
        assert!(missing(&log.read("missing", 0, 0, ALL).await.unwrap_err()));
        assert!(missing(
            &log.read_stored("missing", 0, 0, ALL).await.unwrap_err()
        ));
        assert!(missing(&log.topic("missing").await.unwrap_err()));
        assert!(missing(&log.delete_topic("missing").await.unwrap_err()));
        assert!(missing(
            &log.add_partitions("missing", 2).await.unwrap_err()
        ));
        assert!(missing(
            &log.wait_for("missing", 0, 0, wait).await.unwrap_err()
        ));
        assert!(missing(
            &log.offset_for_timestamp("missing", 0, 0).await.unwrap_err()
        ));
        assert!(missing(&log.sync("missing", 0).await.unwrap_err()));
    }

    pub async fn unknown_partitions_are_refused(log: Arc<dyn StreamLog>) {
        create(&*log, "t", 2).await;
        let unknown = |e: &LogError| matches!(e, LogError::UnknownPartition { topic, partition: 2, partitions: 2 } if topic == "t");
        let log = &*log;
        let wait = Duration::from_millis(10);
        assert!(unknown(
            &log.append("t", 2, batch(&["a"])).await.unwrap_err()
        ));
        assert!(unknown(&log.read("t", 2, 0, ALL).await.unwrap_err()));
        assert!(unknown(&log.read_stored("t", 2, 0, ALL).await.unwrap_err()));
        assert!(unknown(&log.wait_for("t", 2, 0, wait).await.unwrap_err()));
        assert!(unknown(
            &log.offset_for_timestamp("t", 2, 0).await.unwrap_err()
        ));
        assert!(unknown(&log.sync("t", 2).await.unwrap_err()));
        assert_eq!(
            end_offset(log, "t", 0).await + end_offset(log, "t", 1).await,
            0
        );
    }

    pub async fn duplicate_topics_are_refused(log: Arc<dyn StreamLog>) {
        create(&*log, "t", 1).await;
        log.append("t", 0, batch(&["kept"])).await.unwrap();
        let again = TopicConfig {
            partitions: 4,
            ..TopicConfig::default()
        };
        assert_err!(log.create_topic("t", again).await, LogError::TopicExists(name) if name == "t");
        let info = log.topic("t").await.unwrap();
        assert_eq!(info.partitions.len(), 1, "the topic is left as it was");
        assert_eq!(read_all(&*log, "t", 0).await, numbered(["kept"]));
    }

    pub async fn invalid_topic_names_are_refused(log: Arc<dyn StreamLog>) {
        for name in ["a/b", "", "..", "a b", &"x".repeat(201)] {
            assert_err!(
                log.create_topic(name, TopicConfig::default()).await,
                LogError::InvalidTopicName { .. }
            );
        }
        assert!(log.topics().await.unwrap().is_empty());
        create(&*log, &"x".repeat(200), 1).await;
    }

    pub async fn oversized_batches_are_refused(log: Arc<dyn StreamLog>) {
        let config = TopicConfig {
            max_batch_bytes: 1024,
            ..TopicConfig::default()
        };
        log.create_topic("t", config).await.unwrap();
        let big = "x".repeat(2000);
        assert_err!(
            log.append("t", 0, batch(&[&big])).await,
            LogError::BatchTooLarge { size, max: 1024, .. } if size > 1024
        );
        assert_eq!(end_offset(&*log, "t", 0).await, 0, "nothing was written");
        let fits = "x".repeat(300); // key and value: 600 bytes
        assert_eq!(
            log.append("t", 0, batch(&[&fits])).await.unwrap(),
            appended(0, 0)
        );
    }

    pub async fn compacted_topics_need_keys(log: Arc<dyn StreamLog>) {
        let config = TopicConfig {
            cleanup: Cleanup::Compact,
            ..TopicConfig::default()
        };
        if log.check_topic_config("t", &config).is_err() {
            // A backend without compaction refuses compacted topics.
            assert_err!(
                log.create_topic("t", config).await,
                LogError::InvalidConfig { .. }
            );
            return;
        }
        log.create_topic("t", config).await.unwrap();
        let mut builder = BatchBuilder::new();
        builder.push(&Record {
            key: Some(b"k"),
            value: Some(b"v"),
            ..Record::default()
        });
        builder.push(&Record {
            value: Some(b"no key"),
            ..Record::default()
        });
        assert_err!(
            log.append("t", 0, builder.finish().unwrap()).await,
            LogError::MissingKey { index: 1, .. }
        );
        assert_eq!(end_offset(&*log, "t", 0).await, 0, "nothing was written");
        // A tombstone has a key.
        let mut tombstone = BatchBuilder::new();
        tombstone.push(&Record {
            key: Some(b"k"),
            ..Record::default()
        });
        assert_eq!(
            log.append("t", 0, tombstone.finish().unwrap())
                .await
                .unwrap(),
            appended(0, 0)
        );
    }

    pub async fn topic_configs_are_checked(log: Arc<dyn StreamLog>) {
        assert!(log.check_topic_config("t", &TopicConfig::default()).is_ok());
        let none = TopicConfig {
            partitions: 0,
            ..TopicConfig::default()
        };
        assert!(log.check_topic_config("t", &none).is_err());
        assert_err!(
            log.create_topic("t", none).await,
            LogError::InvalidConfig { .. }
        );
        assert_err!(log.topic("t").await, LogError::UnknownTopic(_));
    }

    // Idempotent producers.

    pub async fn producer_ids_are_distinct(log: Arc<dyn StreamLog>) {
        let mut ids = BTreeSet::new();
        for _ in 0..5 {
            let id = log.init_producer_id().await.unwrap();
            assert!(id >= 0, "producer ids are never negative: {id}");
            assert!(ids.insert(id), "producer id {id} was handed out twice");
        }
    }

    pub async fn producer_retry_is_a_duplicate(log: Arc<dyn StreamLog>) {
        create(&*log, "t", 1).await;
        let id = log.init_producer_id().await.unwrap();
        let first = log
            .append("t", 0, stamped(&["a", "b", "c"], id, 0, 0))
            .await;
        assert_eq!(first.unwrap(), appended(0, 2));
        // Someone else writes in between.
        log.append("t", 0, batch(&["x"])).await.unwrap();

        let retry = log
            .append("t", 0, stamped(&["a", "b", "c"], id, 0, 0))
            .await;
        assert_eq!(retry.unwrap(), duplicate_of(0, 2), "the original offsets");
        assert_eq!(end_offset(&*log, "t", 0).await, 4, "a retry writes nothing");

        let next = log.append("t", 0, stamped(&["d", "e"], id, 0, 3)).await;
        assert_eq!(next.unwrap(), appended(4, 5));
        let retry = log.append("t", 0, stamped(&["d", "e"], id, 0, 3)).await;
        assert_eq!(retry.unwrap(), duplicate_of(4, 5));
        let retry = log
            .append("t", 0, stamped(&["a", "b", "c"], id, 0, 0))
            .await;
        assert_eq!(
            retry.unwrap(),
            duplicate_of(0, 2),
            "an older batch's retry too"
        );
        assert_eq!(
            read_all(&*log, "t", 0).await,
            numbered(["a", "b", "c", "x", "d", "e"])
        );
    }

    pub async fn append_all_appends_in_order_each_with_its_outcome(log: Arc<dyn StreamLog>) {
        create(&*log, "t", 1).await;
        let id = log.init_producer_id().await.unwrap();
        log.append("t", 0, stamped(&["a", "b"], id, 0, 0))
            .await
            .unwrap();
        let outcomes = log
            .append_all(
                "t",
                0,
                vec![
                    stamped(&["a", "b"], id, 0, 0), // a retry
                    stamped(&["c"], id, 0, 2),
                    stamped(&["e"], id, 0, 9), // a gap
                    batch(&["x", "y"]),
                ],
            )
            .await;
        assert_eq!(outcomes.len(), 4, "{outcomes:?}");
        assert_eq!(outcomes[0].as_ref().unwrap(), &duplicate_of(0, 1));
        assert_eq!(outcomes[1].as_ref().unwrap(), &appended(2, 2));
        assert_err!(&outcomes[2], LogError::OutOfOrderSequence(_));
        assert_eq!(outcomes[3].as_ref().unwrap(), &appended(3, 4));
        assert_eq!(
            read_all(&*log, "t", 0).await,
            numbered(["a", "b", "c", "x", "y"])
        );
        let unknown = log.append_all("nope", 0, vec![batch(&["z"])]).await;
        assert_eq!(unknown.len(), 1);
        assert_err!(&unknown[0], LogError::UnknownTopic(_));
    }

    pub async fn producer_retry_of_a_different_batch_is_refused(log: Arc<dyn StreamLog>) {
        create(&*log, "t", 1).await;
        let id = log.init_producer_id().await.unwrap();
        log.append("t", 0, stamped(&["a", "b", "c"], id, 0, 0))
            .await
            .unwrap();
        // The same first sequence but fewer records: not the batch written
        // at 0..=2, so not answered with its offsets (Kafka matches a
        // retry's first and last sequence).
        let other = log.append("t", 0, stamped(&["a", "b"], id, 0, 0)).await;
        assert_err!(
            other,
            LogError::DuplicateSequence(_) | LogError::OutOfOrderSequence(_)
        );
        assert_eq!(end_offset(&*log, "t", 0).await, 3);
    }

    pub async fn producer_long_ago_retry_is_not_written_again(log: Arc<dyn StreamLog>) {
        create(&*log, "t", 1).await;
        let id = log.init_producer_id().await.unwrap();
        for sequence in 0..8 {
            let appended_ = log.append("t", 0, stamped(&["v"], id, 0, sequence)).await;
            assert_eq!(
                appended_.unwrap(),
                appended(sequence as u64, sequence as u64)
            );
        }
        // Remembered or not, the first batch is not written twice.
        match log.append("t", 0, stamped(&["v"], id, 0, 0)).await {
            Ok(info) => assert_eq!(info, duplicate_of(0, 0)),
            Err(LogError::DuplicateSequence(_)) => {}
            other => panic!("expected a duplicate or DuplicateSequence, got {other:?}"),
        }
        assert_eq!(end_offset(&*log, "t", 0).await, 8);
    }

    pub async fn producer_sequence_gap_is_refused(log: Arc<dyn StreamLog>) {
        create(&*log, "t", 1).await;
        let id = log.init_producer_id().await.unwrap();
        log.append("t", 0, stamped(&["a", "b"], id, 0, 0))
            .await
            .unwrap();
        assert_err!(
            log.append("t", 0, stamped(&["c"], id, 0, 5)).await,
            LogError::OutOfOrderSequence(_)
        );
        assert_eq!(end_offset(&*log, "t", 0).await, 2, "nothing was written");
        let next = log.append("t", 0, stamped(&["c"], id, 0, 2)).await;
        assert_eq!(
            next.unwrap(),
            appended(2, 2),
            "the expected sequence still is"
        );
    }

    pub async fn producer_epochs_fence_older_ones(log: Arc<dyn StreamLog>) {
        create(&*log, "t", 1).await;
        let id = log.init_producer_id().await.unwrap();
        log.append("t", 0, stamped(&["a", "b"], id, 0, 0))
            .await
            .unwrap();
        let newer = log.append("t", 0, stamped(&["c"], id, 1, 0)).await;
        assert_eq!(
            newer.unwrap(),
            appended(2, 2),
            "a new epoch starts at sequence 0"
        );
        assert_err!(
            log.append("t", 0, stamped(&["d"], id, 0, 2)).await,
            LogError::ProducerFenced(_)
        );
        assert_err!(
            log.append("t", 0, stamped(&["d"], id, 2, 1)).await,
            LogError::OutOfOrderSequence(_)
        );
        assert_eq!(end_offset(&*log, "t", 0).await, 3, "nothing was written");
        let next = log.append("t", 0, stamped(&["d"], id, 2, 0)).await;
        assert_eq!(next.unwrap(), appended(3, 3));
    }

    pub async fn producers_are_tracked_per_partition(log: Arc<dyn StreamLog>) {
        create(&*log, "t", 2).await;
        let one = log.init_producer_id().await.unwrap();
        let two = log.init_producer_id().await.unwrap();
        log.append("t", 0, stamped(&["a", "b"], one, 0, 0))
            .await
            .unwrap();
        let other = log.append("t", 0, stamped(&["x"], two, 0, 0)).await;
        assert_eq!(
            other.unwrap(),
            appended(2, 2),
            "another producer has its own sequence"
        );
        let elsewhere = log.append("t", 1, stamped(&["c"], one, 0, 0)).await;
        assert_eq!(
            elsewhere.unwrap(),
            appended(0, 0),
            "sequences are per partition"
        );
        let next = log.append("t", 0, stamped(&["d"], one, 0, 2)).await;
        assert_eq!(next.unwrap(), appended(3, 3));
    }

    // Waiting for data.

    pub async fn wait_for_returns_at_once_with_data_past_the_offset(log: Arc<dyn StreamLog>) {
        create(&*log, "t", 1).await;
        log.append("t", 0, batch(&["a", "b"])).await.unwrap();
        let forever = Duration::from_secs(3600);
        for offset in [0, 1] {
            let end = within(
                "wait_for with data there",
                log.wait_for("t", 0, offset, forever),
            );
            assert_eq!(end.await.unwrap(), 2);
        }
    }

    pub async fn wait_for_returns_the_end_after_the_timeout(log: Arc<dyn StreamLog>) {
        create(&*log, "t", 2).await;
        log.append("t", 0, batch(&["a", "b"])).await.unwrap();
        let short = Duration::from_millis(50);
        assert_eq!(log.wait_for("t", 0, 2, short).await.unwrap(), 2);
        assert_eq!(log.wait_for("t", 0, 7, short).await.unwrap(), 2);
        assert_eq!(log.wait_for("t", 1, 0, short).await.unwrap(), 0);
    }

    pub async fn wait_for_wakes_up_on_append(log: Arc<dyn StreamLog>) {
        create(&*log, "t", 1).await;
        log.append("t", 0, batch(&["a"])).await.unwrap();
        let writer = log.clone();
        let append = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(50)).await;
            writer.append("t", 0, batch(&["b", "c", "d"])).await
        });
        let end = log
            .wait_for("t", 0, 1, Duration::from_secs(10))
            .await
            .unwrap();
        assert_eq!(end, 4, "woken by the append, not by the timeout");
        assert_eq!(append.await.unwrap().unwrap(), appended(1, 3));
    }

    pub async fn wait_for_fails_when_the_topic_goes(log: Arc<dyn StreamLog>) {
        create(&*log, "t", 1).await;
        let admin = log.clone();
        let delete = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(50)).await;
            admin.delete_topic("t").await
        });
        let waited = log.wait_for("t", 0, 0, Duration::from_secs(10)).await;
        assert_err!(waited, LogError::UnknownTopic(name) if name == "t");
        delete.await.unwrap().unwrap();
    }

    // Timestamps.

    pub async fn offset_for_timestamp_finds_the_first_at_or_after(log: Arc<dyn StreamLog>) {
        create(&*log, "t", 1).await;
        assert_eq!(
            log.offset_for_timestamp("t", 0, 1000).await.unwrap(),
            0,
            "empty: the end"
        );
        log.append("t", 0, timed(&[1000, 2000, 3000]))
            .await
            .unwrap();
        log.append("t", 0, timed(&[4000, 5000])).await.unwrap();
        for (timestamp, offset) in [
            (2000, 1),
            (2500, 2),
            (3500, 3),
            (5000, 4),
            (1000, 0),
            (0, 0),
            (i64::MIN, 0),
            (5001, 5),
            (i64::MAX, 5),
        ] {
            let found = log.offset_for_timestamp("t", 0, timestamp).await.unwrap();
            assert_eq!(found, offset, "offset for timestamp {timestamp}");
        }
    }

    // Consumer groups.

    pub async fn group_offsets_are_kept_as_given(log: Arc<dyn StreamLog>) {
        create(&*log, "a", 2).await;
        create(&*log, "b", 1).await;
        let commit = |group: &'static str, offsets: &[(&str, u32, i64)]| {
            let offsets = offsets
                .iter()
                .map(|&(t, p, o)| (t.to_string(), p, o))
                .collect();
            let log = log.clone();
            async move { log.commit_offsets(group, offsets).await.unwrap() }
        };
        let sorted = |offsets: &[(&str, u32, i64)]| -> Vec<(String, u32, i64)> {
            offsets
                .iter()
                .map(|&(t, p, o)| (t.to_string(), p, o))
                .collect()
        };
        assert!(log.group_offsets("g1").await.unwrap().is_empty());

        commit("g1", &[("b", 0, 5), ("a", 1, 7), ("a", 0, 3)]).await;
        let offsets = log.group_offsets("g1").await.unwrap();
        assert_eq!(offsets, sorted(&[("a", 0, 3), ("a", 1, 7), ("b", 0, 5)]));

        commit("g1", &[("a", 0, 10), ("a", 1, -1)]).await;
        commit("g1", &[("b", 0, -2)]).await;
        let offsets = log.group_offsets("g1").await.unwrap();
        assert_eq!(offsets, sorted(&[("a", 0, 10), ("a", 1, -1), ("b", 0, -2)]));

        commit("g0", &[("a", 0, 1)]).await;
        assert_eq!(log.groups().await.unwrap(), ["g0", "g1"]);
        assert_eq!(
            log.group_offsets("g0").await.unwrap(),
            sorted(&[("a", 0, 1)])
        );
    }

    pub async fn groups_are_deleted(log: Arc<dyn StreamLog>) {
        create(&*log, "t", 1).await;
        for group in ["keep", "drop"] {
            log.commit_offsets(group, vec![("t".to_string(), 0, 4)])
                .await
                .unwrap();
        }
        assert!(log.delete_group("drop").await.unwrap());
        assert!(
            !log.delete_group("drop").await.unwrap(),
            "it had no offsets left"
        );
        assert!(!log.delete_group("never").await.unwrap());
        assert_eq!(log.groups().await.unwrap(), ["keep"]);
        assert!(log.group_offsets("drop").await.unwrap().is_empty());
        let kept = log.group_offsets("keep").await.unwrap();
        assert_eq!(kept, [("t".to_string(), 0, 4)]);
    }

    pub async fn group_offsets_of_a_deleted_topic_are_forgotten(log: Arc<dyn StreamLog>) {
        create(&*log, "gone", 1).await;
        create(&*log, "kept", 1).await;
        let offsets = vec![("gone".to_string(), 0, 5), ("kept".to_string(), 0, 2)];
        log.commit_offsets("g", offsets).await.unwrap();
        log.delete_topic("gone").await.unwrap();
        // A topic made again under the name must not inherit positions in
        // the one deleted.
        create(&*log, "gone", 1).await;
        let offsets = log.group_offsets("g").await.unwrap();
        assert_eq!(offsets, [("kept".to_string(), 0, 2)]);
    }

    pub async fn group_offsets_for_unknown_topics_are_refused(log: Arc<dyn StreamLog>) {
        create(&*log, "t", 1).await;
        let offsets = vec![("t".to_string(), 0, 1), ("missing".to_string(), 0, 1)];
        assert_err!(
            log.commit_offsets("g", offsets).await,
            LogError::UnknownTopic(name) if name == "missing"
        );
        let offsets = vec![("t".to_string(), 0, 1), ("t".to_string(), 1, 1)];
        assert_err!(
            log.commit_offsets("g", offsets).await,
            LogError::UnknownPartition { partition: 1, .. }
        );
        assert!(
            log.group_offsets("g").await.unwrap().is_empty(),
            "all or nothing"
        );
        assert!(log.groups().await.unwrap().is_empty());
    }

    // Reshaping and deleting topics.

    pub async fn add_partitions_grows_a_topic(log: Arc<dyn StreamLog>) {
        create(&*log, "t", 1).await;
        log.append("t", 0, batch(&["a", "b"])).await.unwrap();
        let info = log.add_partitions("t", 3).await.unwrap();
        assert_eq!(info.partitions.len(), 3);
        assert_eq!(info.config.partitions, 3);
        let ends: Vec<_> = info
            .partitions
            .iter()
            .map(|p| (p.partition, p.end_offset))
            .collect();
        assert_eq!(ends, [(0, 2), (1, 0), (2, 0)]);
        assert_eq!(log.topic("t").await.unwrap().partitions.len(), 3);

        assert_eq!(
            log.append("t", 2, batch(&["new"])).await.unwrap(),
            appended(0, 0)
        );
        assert_eq!(read_all(&*log, "t", 2).await, numbered(["new"]));
        assert_eq!(read_all(&*log, "t", 0).await, numbered(["a", "b"]));
        assert!(log.read("t", 1, 0, ALL).await.unwrap().is_empty());

        assert!(
            log.add_partitions("t", 2).await.is_err(),
            "a topic never shrinks"
        );
        assert_eq!(log.topic("t").await.unwrap().partitions.len(), 3);
    }

    pub async fn deleted_topics_are_gone_and_can_be_made_again(log: Arc<dyn StreamLog>) {
        create(&*log, "t", 2).await;
        create(&*log, "other", 1).await;
        log.append("t", 0, batch(&["old-1", "old-2"]))
            .await
            .unwrap();
        log.delete_topic("t").await.unwrap();
        assert_err!(log.topic("t").await, LogError::UnknownTopic(_));
        assert_err!(log.read("t", 0, 0, ALL).await, LogError::UnknownTopic(_));
        assert_err!(log.delete_topic("t").await, LogError::UnknownTopic(_));
        let names: Vec<_> = log
            .topics()
            .await
            .unwrap()
            .into_iter()
            .map(|t| t.name)
            .collect();
        assert_eq!(names, ["other"]);

        let info = create(&*log, "t", 1).await;
        assert_eq!(info.partitions.len(), 1);
        assert_eq!(info.partitions[0].end_offset, 0);
        assert_eq!(
            log.append("t", 0, batch(&["new"])).await.unwrap(),
            appended(0, 0)
        );
        assert_eq!(read_all(&*log, "t", 0).await, numbered(["new"]));
    }

    // Commit logs.

    pub async fn commits_keep_their_values_together(log: Arc<dyn StreamLog>) {
        log.open_commit_log("task", 1, COMMIT_LOG).await.unwrap();
        log.open_commit_log("task", 1, COMMIT_LOG).await.unwrap();
        let commits = [&["one"][..], &["two", "three", "four"], &[""], &["five"]];
        let mut written = Vec::new();
        for values in commits {
            let offset = log.commit("task", 0, bytes(values)).await.unwrap();
            written.push(CommitRecord {
                offset,
                values: bytes(values),
            });
        }
        assert!(
            written.windows(2).all(|w| w[0].offset < w[1].offset),
            "commit offsets grow: {written:?}"
        );
        assert_eq!(log.commits("task", 0).await.unwrap(), written);

        // Opening it again keeps what it holds.
        log.open_commit_log("task", 1, COMMIT_LOG).await.unwrap();
        assert_eq!(log.commits("task", 0).await.unwrap(), written);
    }

    pub async fn commit_log_partitions_are_apart(log: Arc<dyn StreamLog>) {
        log.open_commit_log("task", 2, COMMIT_LOG).await.unwrap();
        assert!(log.commits("task", 1).await.unwrap().is_empty());
        let zero = log.commit("task", 0, bytes(&["p0"])).await.unwrap();
        let one = log.commit("task", 1, bytes(&["p1"])).await.unwrap();
        let commit = |offset, value| CommitRecord {
            offset,
            values: bytes(&[value]),
        };
        assert_eq!(log.commits("task", 0).await.unwrap(), [commit(zero, "p0")]);
        assert_eq!(log.commits("task", 1).await.unwrap(), [commit(one, "p1")]);
    }

    pub async fn truncate_commits_keeps_the_later_ones(log: Arc<dyn StreamLog>) {
        log.open_commit_log("task", 1, COMMIT_LOG).await.unwrap();
        let mut written = Vec::new();
        for i in 0..40 {
            // Several storage units' worth, for a backend to free some.
            let values = vec![Bytes::from(format!("{i:03}").repeat(200))];
            let offset = log.commit("task", 0, values.clone()).await.unwrap();
            written.push(CommitRecord { offset, values });
        }
        let from = 25;
        log.truncate_commits("task", 0, written[from].offset)
            .await
            .unwrap();
        let kept = log.commits("task", 0).await.unwrap();
        assert!(
            kept.len() >= written.len() - from,
            "{} commits kept",
            kept.len()
        );
        assert_eq!(
            kept,
            written[written.len() - kept.len()..],
            "the newest, in order"
        );

        let next = log.commit("task", 0, bytes(&["after"])).await.unwrap();
        assert!(next > written[39].offset);
        let last = log.commits("task", 0).await.unwrap().pop().unwrap();
        assert_eq!(
            last,
            CommitRecord {
                offset: next,
                values: bytes(&["after"])
            }
        );
    }

    pub async fn unopened_commit_logs_are_refused(log: Arc<dyn StreamLog>) {
        let unknown =
            |e: &LogError| matches!(e, LogError::UnknownCommitLog(name) if name == "never");
        assert!(unknown(
            &log.commit("never", 0, bytes(&["v"])).await.unwrap_err()
        ));
        assert!(unknown(&log.commits("never", 0).await.unwrap_err()));
        assert!(unknown(
            &log.truncate_commits("never", 0, 0).await.unwrap_err()
        ));
    }

    pub async fn commit_log_partitions_out_of_range_are_refused(log: Arc<dyn StreamLog>) {
        log.open_commit_log("task", 1, COMMIT_LOG).await.unwrap();
        let refused =
            |e: &LogError| matches!(e, LogError::CommitLog { name, .. } if name == "task");
        assert!(refused(
            &log.commit("task", 1, bytes(&["v"])).await.unwrap_err()
        ));
        assert!(refused(&log.commits("task", 1).await.unwrap_err()));
        assert!(refused(
            &log.truncate_commits("task", 1, 0).await.unwrap_err()
        ));
    }

    pub async fn commit_log_names_are_checked(log: Arc<dyn StreamLog>) {
        let too_long = "x".repeat(MAX_COMMIT_LOG_NAME_LEN + 1);
        for name in [too_long.as_str(), "a/b", "", ".."] {
            assert_err!(
                log.open_commit_log(name, 1, COMMIT_LOG).await,
                LogError::CommitLog { .. }
            );
            assert!(log.commit(name, 0, bytes(&["v"])).await.is_err());
        }
        let longest = "x".repeat(MAX_COMMIT_LOG_NAME_LEN);
        log.open_commit_log(&longest, 1, COMMIT_LOG).await.unwrap();
        let offset = log.commit(&longest, 0, bytes(&["v"])).await.unwrap();
        let commits = log.commits(&longest, 0).await.unwrap();
        assert_eq!(
            commits,
            [CommitRecord {
                offset,
                values: bytes(&["v"])
            }]
        );
    }

    pub async fn deleted_commit_logs_are_gone(log: Arc<dyn StreamLog>) {
        log.open_commit_log("task", 1, COMMIT_LOG).await.unwrap();
        log.commit("task", 0, bytes(&["old"])).await.unwrap();
        log.delete_commit_log("task").await.unwrap();
        assert_err!(log.commits("task", 0).await, LogError::UnknownCommitLog(_));
        assert_err!(
            log.commit("task", 0, bytes(&["v"])).await,
            LogError::UnknownCommitLog(_)
        );
        log.delete_commit_log("task").await.unwrap();
        log.delete_commit_log("never").await.unwrap();

        log.open_commit_log("task", 1, COMMIT_LOG).await.unwrap();
        assert!(
            log.commits("task", 0).await.unwrap().is_empty(),
            "made again, empty"
        );
    }

    pub async fn commit_logs_grow_with_their_input(log: Arc<dyn StreamLog>) {
        log.open_commit_log("task", 1, COMMIT_LOG).await.unwrap();
        let kept = log.commit("task", 0, bytes(&["kept"])).await.unwrap();
        log.open_commit_log("task", 3, COMMIT_LOG).await.unwrap();
        let commits = log.commits("task", 0).await.unwrap();
        assert_eq!(
            commits,
            [CommitRecord {
                offset: kept,
                values: bytes(&["kept"])
            }]
        );
        assert!(log.commits("task", 2).await.unwrap().is_empty());
        let offset = log.commit("task", 2, bytes(&["new"])).await.unwrap();
        assert_eq!(log.commits("task", 2).await.unwrap()[0].offset, offset);
        // Never shrinks.
        log.open_commit_log("task", 1, COMMIT_LOG).await.unwrap();
        assert!(log.commits("task", 2).await.is_ok());
    }

    pub async fn commit_logs_are_not_topics(log: Arc<dyn StreamLog>) {
        log.open_commit_log("shared", 1, COMMIT_LOG).await.unwrap();
        let offset = log.commit("shared", 0, bytes(&["commit"])).await.unwrap();
        assert!(log.topics().await.unwrap().is_empty());
        assert_err!(log.topic("shared").await, LogError::UnknownTopic(_));
        assert_err!(
            log.append("shared", 0, batch(&["a"])).await,
            LogError::UnknownTopic(_)
        );

        // A topic of the same name is another thing.
        create(&*log, "shared", 1).await;
        log.append("shared", 0, batch(&["record", "record"]))
            .await
            .unwrap();
        let commits = log.commits("shared", 0).await.unwrap();
        assert_eq!(
            commits,
            [CommitRecord {
                offset,
                values: bytes(&["commit"])
            }]
        );
        log.delete_topic("shared").await.unwrap();
        assert_eq!(log.commits("shared", 0).await.unwrap(), commits);
        log.delete_commit_log("shared").await.unwrap();
        assert!(log.topics().await.unwrap().is_empty());
    }

    // Shutdown.

    pub async fn sync_and_close_succeed(log: Arc<dyn StreamLog>) {
        create(&*log, "t", 1).await;
        log.append("t", 0, batch(&["a"])).await.unwrap();
        log.sync("t", 0).await.unwrap();
        log.open_commit_log("task", 1, COMMIT_LOG).await.unwrap();
        log.commit("task", 0, bytes(&["c"])).await.unwrap();
        log.close().await.unwrap();
    }
}

/// One `#[tokio::test]` per check of [`checks`], in the module it is
/// invoked in, each over the backend `$make().await` returns (an
/// `async fn() -> Backend`).
#[macro_export]
macro_rules! contract_suite {
    ($make:path) => {
        $crate::contract_suite!(@each $make; offsets_are_consecutive_per_partition, topics_are_listed_sorted_without_internal_ones, reserved_topic_names_are_refused, topic_config_round_trips, read_starts_at_the_batch_holding_the_offset, read_returns_a_batch_whatever_the_budget, read_stored_bytes_are_the_batches, records_round_trip, unknown_topics_are_refused, unknown_partitions_are_refused, duplicate_topics_are_refused, invalid_topic_names_are_refused, oversized_batches_are_refused, compacted_topics_need_keys, topic_configs_are_checked, producer_ids_are_distinct, producer_retry_is_a_duplicate, producer_retry_of_a_different_batch_is_refused, append_all_appends_in_order_each_with_its_outcome, producer_long_ago_retry_is_not_written_again, producer_sequence_gap_is_refused, producer_epochs_fence_older_ones, producers_are_tracked_per_partition, wait_for_returns_at_once_with_data_past_the_offset, wait_for_returns_the_end_after_the_timeout, wait_for_wakes_up_on_append, wait_for_fails_when_the_topic_goes, offset_for_timestamp_finds_the_first_at_or_after, group_offsets_are_kept_as_given, groups_are_deleted, group_offsets_of_a_deleted_topic_are_forgotten, group_offsets_for_unknown_topics_are_refused, add_partitions_grows_a_topic, deleted_topics_are_gone_and_can_be_made_again, commits_keep_their_values_together, commit_log_partitions_are_apart, truncate_commits_keeps_the_later_ones, unopened_commit_logs_are_refused, commit_log_partitions_out_of_range_are_refused, commit_log_names_are_checked, deleted_commit_logs_are_gone, commit_logs_grow_with_their_input, commit_logs_are_not_topics, sync_and_close_succeed);
    };
    (@each $make:path; $($check:ident),*) => {
        $(
            #[tokio::test]
            async fn $check() {
                let backend = $make().await;
                $crate::contract::checks::$check(backend.log.clone()).await;
                drop(backend);
            }
        )*
    };
}
