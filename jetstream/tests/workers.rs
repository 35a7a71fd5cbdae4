//! What the JetStream backend adds to the interface's contract when
//! several workers share one cluster: each test connects two backends (two
//! `weir serve` processes, as far as the log is concerned) to one real
//! NATS server.

use std::collections::BTreeSet;
use std::path::Path;

use bytes::Bytes;
use weir_format::{Batch, BatchBuilder, ProducerStamp, Record};
use weir_jetstream::testing::{NatsServer, nats_server_binary};
use weir_jetstream::{JetStreamConfig, JetStreamLog};
use weir_log::{CommitLogSettings, Durability, LogError, StreamLog, TopicConfig};

fn server() -> NatsServer {
    NatsServer::start(&nats_server_binary(Path::new(env!("CARGO_TARGET_TMPDIR"))))
}

async fn worker(server: &NatsServer) -> JetStreamLog {
    JetStreamLog::connect(&JetStreamConfig::for_servers(vec![
        server.url().to_string(),
    ]))
    .await
    .expect("the JetStream backend connects")
}

fn batch(values: &[String]) -> Batch {
    let mut builder = BatchBuilder::new();
    for value in values {
        builder.push(&Record {
            value: Some(value.as_bytes()),
            ..Record::default()
        });
    }
    builder.finish().expect("a batch")
}

const COMMIT_LOG: CommitLogSettings = CommitLogSettings {
    durability: Durability::Always,
    segment_bytes: 1 << 20,
};

#[tokio::test]
async fn workers_appending_to_one_partition_get_dense_offsets_and_lose_nothing() {
    let server = server();
    let (a, b) = (worker(&server).await, worker(&server).await);
    a.create_topic("t", TopicConfig::default()).await.unwrap();
    // One writes a batch at a time (a message), the other three at a time
    // (an atomic batch of messages): both race for the end.
    let write = |log: JetStreamLog, name: &'static str, per_call: usize| async move {
        for i in (0..40).step_by(per_call) {
            let batches = (i..i + per_call)
                .map(|j| batch(&[format!("{name}{j}-a"), format!("{name}{j}-b")]))
                .collect();
            for outcome in log.append_all("t", 0, batches).await {
                outcome.unwrap();
            }
        }
        log
    };
    let (a, _b) = tokio::join!(write(a, "a", 1), write(b, "b", 4));
    let batches = a.read("t", 0, 0, 64 << 20).await.unwrap();
    let mut next = 0;
    let mut values = BTreeSet::new();
    for record in batches.iter().flat_map(Batch::records) {
        assert_eq!(record.offset, next, "offsets are dense across writers");
        next += 1;
        values.insert(String::from_utf8(record.value.unwrap().to_vec()).unwrap());
    }
    assert_eq!(next, 160);
    assert_eq!(values.len(), 160, "every record once");
    // The partition's size (quotas count it) is what JetStream stores:
    // the batches and, per message, its subject and headers.
    let written: usize = batches.iter().map(Batch::size).sum();
    let size = a.topic("t").await.unwrap().partitions[0].size_bytes as usize;
    let per_message = 300;
    assert!(
        size >= written && size <= written + batches.len() * per_message,
        "{size} bytes counted for {written} written in {} messages",
        batches.len()
    );
}

#[tokio::test]
async fn a_retry_through_another_worker_is_a_duplicate() {
    let server = server();
    let (a, b) = (worker(&server).await, worker(&server).await);
    a.create_topic("t", TopicConfig::default()).await.unwrap();
    let id = a.init_producer_id().await.unwrap();
    let stamped = batch(&["x".to_string(), "y".to_string()]).with_producer(ProducerStamp {
        id,
        epoch: 0,
        base_sequence: 0,
    });
    let first = a.append("t", 0, stamped.clone()).await.unwrap();
    let again = b.append("t", 0, stamped).await.unwrap();
    assert!(!first.duplicate && again.duplicate);
    assert_eq!((again.base_offset, again.last_offset), (0, 1));
    assert_eq!(b.topic("t").await.unwrap().partitions[0].end_offset, 2);
}

#[tokio::test]
async fn a_worker_overtaken_on_a_commit_log_is_fenced() {
    let server = server();
    let (zombie, owner) = (worker(&server).await, worker(&server).await);
    zombie.open_commit_log("task", 1, COMMIT_LOG).await.unwrap();
    zombie
        .commit("task", 0, vec![Bytes::from("1")])
        .await
        .unwrap();
    // The task moves: its new owner reads the commits, then commits.
    owner.open_commit_log("task", 1, COMMIT_LOG).await.unwrap();
    assert_eq!(owner.commits("task", 0).await.unwrap().len(), 1);
    owner
        .commit("task", 0, vec![Bytes::from("2")])
        .await
        .unwrap();
    // The old owner wakes up and tries to commit on.
    let refused = zombie.commit("task", 0, vec![Bytes::from("stale")]).await;
    assert!(
        matches!(&refused, Err(LogError::CommitLog { reason, .. }) if reason.contains("fenced")),
        "{refused:?}"
    );
    // It stays fenced, a commit of several messages too, until it reads
    // the commit log again (as a task's recovery does).
    let large = vec![Bytes::from(vec![0; 9 << 20])];
    assert!(zombie.commit("task", 0, large.clone()).await.is_err());
    zombie.commits("task", 0).await.unwrap();
    owner
        .commit("task", 0, vec![Bytes::from("3")])
        .await
        .unwrap();
    let refused = zombie.commit("task", 0, large).await;
    assert!(
        matches!(&refused, Err(LogError::CommitLog { reason, .. }) if reason.contains("fenced")),
        "a batch of parts is fenced by its first: {refused:?}"
    );
    let values: Vec<Bytes> = owner
        .commits("task", 0)
        .await
        .unwrap()
        .into_iter()
        .flat_map(|c| c.values)
        .collect();
    assert_eq!(
        values,
        [Bytes::from("1"), Bytes::from("2"), Bytes::from("3")]
    );
}

#[tokio::test]
async fn a_commit_larger_than_a_message_is_stored_whole_in_parts() {
    let server = server();
    let log = worker(&server).await;
    log.open_commit_log("task", 1, COMMIT_LOG).await.unwrap();
    // The test server takes messages of up to 8 MB.
    let values: Vec<Bytes> = (0..3u8)
        .map(|i| Bytes::from(vec![i; 7 << 20]))
        .chain([Bytes::from("state")])
        .collect();
    let offset = log.commit("task", 0, values.clone()).await.unwrap();
    let after = log
        .commit("task", 0, vec![Bytes::from("next")])
        .await
        .unwrap();
    assert!(after > offset);
    let commits = log.commits("task", 0).await.unwrap();
    assert_eq!(commits.len(), 2);
    assert_eq!((commits[0].offset, &commits[0].values), (offset, &values));
    assert_eq!(commits[1].values, [Bytes::from("next")]);
}

#[tokio::test]
async fn time_retention_purges_old_batches_but_keeps_where_offsets_continue() {
    let server = server();
    let log = JetStreamLog::connect(&JetStreamConfig {
        retention_interval_ms: 50,
        ..JetStreamConfig::for_servers(vec![server.url().to_string()])
    })
    .await
    .unwrap();
    let config = TopicConfig {
        partitions: 2,
        retention_ms: Some(60_000),
        ..TopicConfig::default()
    };
    log.create_topic("t", config).await.unwrap();
    let old = |value: &str| {
        let mut builder = BatchBuilder::new();
        builder.push(&Record {
            value: Some(value.as_bytes()),
            timestamp: 1_000, // 1970: long past any retention
            ..Record::default()
        });
        builder.finish().unwrap()
    };
    for value in ["a", "b", "c"] {
        log.append("t", 0, old(value)).await.unwrap();
    }
    log.append("t", 0, batch(&["new".to_string()]))
        .await
        .unwrap();
    // Partition 1 holds only old batches: its last one stays.
    for value in ["x", "y"] {
        log.append("t", 1, old(value)).await.unwrap();
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let info = log.topic("t").await.unwrap();
        let ranges: Vec<(u64, u64)> = info
            .partitions
            .iter()
            .map(|p| (p.start_offset, p.end_offset))
            .collect();
        if ranges == [(3, 4), (1, 2)] {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "retention did not purge the old batches: {ranges:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    // Offsets go on where they were.
    let info = log.append("t", 1, old("z")).await.unwrap();
    assert_eq!(info.base_offset, 2);
    assert!(matches!(
        log.read("t", 0, 0, 1 << 20).await,
        Err(LogError::OffsetOutOfRange { start: 3, .. })
    ));
    let bytes_limited = TopicConfig {
        retention_bytes: Some(1 << 20),
        ..TopicConfig::default()
    };
    assert!(matches!(
        log.create_topic("sized", bytes_limited).await,
        Err(LogError::InvalidConfig { .. })
    ));
}

#[tokio::test]
async fn a_starting_worker_rebuilds_producers_from_the_saved_tail() {
    let server = server();
    let first = worker(&server).await;
    first
        .create_topic("t", TopicConfig::default())
        .await
        .unwrap();
    let id = first.init_producer_id().await.unwrap();
    let stamped = batch(&["once".to_string()]).with_producer(ProducerStamp {
        id,
        epoch: 0,
        base_sequence: 0,
    });
    first.append("t", 0, stamped.clone()).await.unwrap();
    // Enough messages after it for the tail to be saved.
    let many: Vec<Batch> = (0..1_100).map(|i| batch(&[format!("{i}")])).collect();
    for outcome in first.append_all("t", 0, many).await {
        outcome.unwrap();
    }
    let client = async_nats::connect(server.url()).await.unwrap();
    let tails = async_nats::jetstream::new(client)
        .get_key_value("weir-tails")
        .await
        .unwrap();
    let saved: Vec<String> = futures::TryStreamExt::try_collect(tails.keys().await.unwrap())
        .await
        .unwrap();
    assert_eq!(saved.len(), 1, "the partition's tail was saved");

    // A worker that starts now retries the producer's first batch: the
    // saved tail plus what follows it still know the batch.
    let second = worker(&server).await;
    let retried = second.append("t", 0, stamped).await.unwrap();
    assert!(retried.duplicate);
    assert_eq!(retried.base_offset, 0);
    let next = second
        .append("t", 0, batch(&["end".to_string()]))
        .await
        .unwrap();
    assert_eq!(next.base_offset, 1_101);

    // A topic made again starts at offset 0, whatever was saved before.
    second.delete_topic("t").await.unwrap();
    second
        .create_topic("t", TopicConfig::default())
        .await
        .unwrap();
    let again = first
        .append("t", 0, batch(&["new".to_string()]))
        .await
        .unwrap();
    assert_eq!(again.base_offset, 0);
}

/// A task moves between workers with its producer: the new worker's
/// view of an output partition is from long ago, and the producer's next
/// sequence must not look like a gap.
#[tokio::test]
async fn a_producer_that_moved_to_another_worker_goes_on_where_it_left_off() {
    let server = server();
    let (a, b) = (worker(&server).await, worker(&server).await);
    a.create_topic("t", TopicConfig::default()).await.unwrap();
    let id = a.init_producer_id().await.unwrap();
    let stamped = |base_sequence: i32, value: &str| {
        batch(&[value.to_string()]).with_producer(ProducerStamp {
            id,
            epoch: 0,
            base_sequence,
        })
    };
    b.append("t", 0, stamped(0, "on b")).await.unwrap();
    a.append("t", 0, stamped(1, "on a")).await.unwrap();
    a.append("t", 0, stamped(2, "on a")).await.unwrap();
    let back = b.append("t", 0, stamped(3, "on b again")).await.unwrap();
    assert_eq!((back.base_offset, back.duplicate), (3, false));
    let gap = b.append("t", 0, stamped(9, "a real gap")).await;
    assert!(
        matches!(gap, Err(LogError::OutOfOrderSequence(_))),
        "{gap:?}"
    );
}

#[tokio::test]
async fn a_task_lease_has_one_holder_and_moves_once_it_lapses() {
    let server = server();
    let connect = || {
        let config = JetStreamConfig {
            lease_ttl_ms: 1_000,
            ..JetStreamConfig::for_servers(vec![server.url().to_string()])
        };
        async move { JetStreamLog::connect(&config).await.unwrap().workers() }
    };
    let (a, b) = (connect().await, connect().await);
    a.heartbeat("worker-a", Bytes::from_static(b"{}"))
        .await
        .unwrap();
    let live = b.heartbeat("worker-b", Bytes::new()).await.unwrap();
    let ids: Vec<&str> = live.iter().map(|w| w.id.as_str()).collect();
    assert_eq!(ids, ["worker-a", "worker-b"]);
    assert_eq!(live[0].info, Bytes::from_static(b"{}"));

    let task = "p/orders/0";
    assert!(
        a.lease(task, "worker-a").await.unwrap(),
        "a free lease is taken"
    );
    assert!(
        !b.lease(task, "worker-b").await.unwrap(),
        "a held lease is not"
    );
    assert!(
        a.lease(task, "worker-a").await.unwrap(),
        "the holder renews it"
    );
    b.release(task, "worker-b").await.unwrap();
    assert_eq!(
        b.leases().await.unwrap(),
        [(task.to_string(), "worker-a".to_string())],
        "only its holder can give a lease up"
    );

    // worker-a stops renewing (a kill, a long pause): the lease lapses
    // after the TTL and worker-b takes it; worker-a's next renewal fails.
    let stopped = std::time::Instant::now();
    while !b.lease(task, "worker-b").await.unwrap() {
        assert!(stopped.elapsed() < std::time::Duration::from_secs(10));
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(
        stopped.elapsed() >= std::time::Duration::from_millis(800),
        "the lease lasted its TTL: {:?}",
        stopped.elapsed()
    );
    assert!(
        !a.lease(task, "worker-a").await.unwrap(),
        "the old holder lost it"
    );

    b.release(task, "worker-b").await.unwrap();
    assert!(b.leases().await.unwrap().is_empty());
    assert!(
        a.lease(task, "worker-a").await.unwrap(),
        "a released lease is free"
    );

    a.leave("worker-a").await.unwrap();
    let live = b.heartbeat("worker-b", Bytes::new()).await.unwrap();
    assert_eq!(
        live.len(),
        1,
        "a worker that left is gone at once: {live:?}"
    );
}
