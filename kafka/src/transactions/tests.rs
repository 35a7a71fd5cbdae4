//! The transaction coordinator over a `MemoryLog` and a temporary state
//! directory: commits redone after a crash, retries across restarts,
//! pending offsets, and transactional ids expired or forgotten.

use super::*;
use weir_format::{BatchBuilder, ProducerStamp, Record, field};
use weir_log::{MemoryLog, TopicConfig};

/// Kafka's default expiry of idle transactional ids.
const WEEK: Duration = Duration::from_secs(7 * 24 * 3600);

fn batch(value: &str, producer_id: i64, epoch: i16, sequence: i32) -> Batch {
    let mut builder = BatchBuilder::new();
    builder.push(&Record {
        value: Some(value.as_bytes()),
        ..Record::default()
    });
    let batch = builder.finish().unwrap();
    let mut bytes = batch.into_bytes().to_vec();
    bytes[field::ATTRIBUTES + 1] |= TRANSACTIONAL;
    Batch::from_unsealed(bytes)
        .unwrap()
        .with_producer(ProducerStamp {
            id: producer_id,
            epoch,
            base_sequence: sequence,
        })
}

#[tokio::test]
async fn a_commit_redone_after_a_crash_appends_nothing_twice() {
    let dir = tempfile::tempdir().unwrap();
    let log: Arc<dyn StreamLog> = Arc::new(MemoryLog::new());
    log.create_topic("t", TopicConfig::default()).await.unwrap();
    let txns = Transactions::start(log.clone(), dir.path().join("txn"), WEEK)
        .await
        .unwrap();
    let (pid, epoch) = txns.init("tx", 60_000, None).await.unwrap();
    txns.add_partitions("tx", pid, epoch, vec![("t".into(), 0)])
        .await
        .unwrap();
    for (i, value) in ["a", "b", "c"].iter().enumerate() {
        txns.produce("tx", "t", 0, batch(value, pid, epoch, i as i32))
            .await
            .unwrap();
    }
    // A retry of the last batch is not buffered twice.
    txns.produce("tx", "t", 0, batch("c", pid, epoch, 2))
        .await
        .unwrap();
    let txn = txns.get("tx").unwrap();
    let before = txn.lock().await.record.clone();
    let buffered = log.commits(&buffer_name("tx"), 0).await.unwrap();
    assert_eq!(buffered.len(), 3);
    txns.end("tx", pid, epoch, true).await.unwrap();
    let end = || async { log.topic("t").await.unwrap().partitions[0].end_offset };
    assert_eq!(end().await, 3);

    // The crash: the appends were done but the completed state was not
    // saved. On restart the commit is redone from the prepared state.
    log.open_commit_log(&buffer_name("tx"), 1, buffer_settings())
        .await
        .unwrap();
    for commit in buffered {
        log.commit(&buffer_name("tx"), 0, commit.values)
            .await
            .unwrap();
    }
    let prepared = TxnRecord {
        status: Status::PrepareCommit,
        ..before
    };
    txns.save(&prepared).unwrap();
    drop((txn, txns));
    let txns = Transactions::start(log.clone(), dir.path().join("txn"), WEEK)
        .await
        .unwrap();
    assert_eq!(end().await, 3, "the redone commit appended nothing twice");
    let txn = txns.get("tx").unwrap();
    assert_eq!(txn.lock().await.record.status, Status::CompleteCommit);
    assert!(
        log.commits(&buffer_name("tx"), 0).await.is_err(),
        "buffer dropped"
    );
    // The next transaction's records follow.
    txns.add_partitions("tx", pid, epoch, vec![("t".into(), 0)])
        .await
        .unwrap();
    txns.produce("tx", "t", 0, batch("d", pid, epoch, 3))
        .await
        .unwrap();
    txns.end("tx", pid, epoch, true).await.unwrap();
    assert_eq!(end().await, 4);
    // A stale epoch is fenced.
    assert_eq!(
        txns.end("tx", pid, epoch - 1, true).await,
        Err(ResponseError::InvalidProducerEpoch)
    );
}

#[tokio::test]
async fn retries_are_recognized_across_a_restart_and_bad_batches_refused_early() {
    let dir = tempfile::tempdir().unwrap();
    let log: Arc<dyn StreamLog> = Arc::new(MemoryLog::new());
    log.create_topic("t", TopicConfig::default()).await.unwrap();
    let compacted = TopicConfig {
        cleanup: Cleanup::Compact,
        ..TopicConfig::default()
    };
    log.create_topic("keyed", compacted).await.unwrap();
    let txns = Transactions::start(log.clone(), dir.path().join("txn"), WEEK)
        .await
        .unwrap();
    let (pid, epoch) = txns.init("tx", 60_000, None).await.unwrap();
    let parts = vec![("t".to_string(), 0), ("keyed".to_string(), 0)];
    txns.add_partitions("tx", pid, epoch, parts).await.unwrap();
    txns.produce("tx", "t", 0, batch("a", pid, epoch, 0))
        .await
        .unwrap();
    // A keyless record for a compacted topic would fail the commit:
    // refused now instead.
    assert_eq!(
        txns.produce("tx", "keyed", 0, batch("x", pid, epoch, 0))
            .await,
        Err(ResponseError::InvalidRecord)
    );
    drop(txns);
    let txns = Transactions::start(log.clone(), dir.path().join("txn"), WEEK)
        .await
        .unwrap();
    // The retry of the buffered batch is known after the restart.
    txns.produce("tx", "t", 0, batch("a", pid, epoch, 0))
        .await
        .unwrap();
    assert_eq!(
        txns.produce("tx", "t", 0, batch("z", pid, epoch, 5)).await,
        Err(ResponseError::OutOfOrderSequenceNumber)
    );
    txns.produce("tx", "t", 0, batch("b", pid, epoch, 1))
        .await
        .unwrap();
    txns.end("tx", pid, epoch, true).await.unwrap();
    let batches = log.read("t", 0, 0, 1 << 20).await.unwrap();
    let values: Vec<&[u8]> = batches
        .iter()
        .flat_map(|b| b.records())
        .map(|r| r.value.unwrap())
        .collect();
    assert_eq!(values, [b"a".as_slice(), b"b".as_slice()]);
    // An InitProducerId retried with the epoch it replaced gets the same answer.
    let bumped = txns.init("tx", 60_000, Some((pid, epoch))).await.unwrap();
    assert_eq!(bumped, (pid, epoch + 1));
    assert_eq!(
        txns.init("tx", 60_000, Some((pid, epoch))).await,
        Ok(bumped)
    );
    assert_eq!(
        txns.init("tx", 60_000, Some((pid, epoch + 7))).await,
        Err(ResponseError::InvalidProducerEpoch)
    );
}

#[tokio::test]
async fn offsets_of_open_transactions_are_pending_until_they_end() {
    let dir = tempfile::tempdir().unwrap();
    let log: Arc<dyn StreamLog> = Arc::new(MemoryLog::new());
    log.create_topic("in", TopicConfig::default())
        .await
        .unwrap();
    let txns = Transactions::start(log.clone(), dir.path().join("txn"), WEEK)
        .await
        .unwrap();
    let (pid, epoch) = txns.init("tx", 60_000, None).await.unwrap();
    txns.add_group("tx", pid, epoch, "g").await.unwrap();
    txns.commit_offsets("tx", pid, epoch, "g", vec![("in".into(), 0, 7)])
        .await
        .unwrap();
    assert!(txns.offset_pending("g", "in", 0));
    assert!(!txns.offset_pending("g", "in", 1));
    drop(txns);
    // Still pending after a restart, until the transaction ends.
    let txns = Transactions::start(log.clone(), dir.path().join("txn"), WEEK)
        .await
        .unwrap();
    assert!(txns.offset_pending("g", "in", 0));
    txns.end("tx", pid, epoch, true).await.unwrap();
    assert!(!txns.offset_pending("g", "in", 0));
    assert_eq!(
        log.group_offsets("g").await.unwrap(),
        vec![("in".to_string(), 0, 7)]
    );
}
#[tokio::test]
async fn idle_transactional_ids_are_forgotten_and_start_afresh() {
    let dir = tempfile::tempdir().unwrap();
    let log: Arc<dyn StreamLog> = Arc::new(MemoryLog::new());
    log.create_topic("t", TopicConfig::default()).await.unwrap();
    let state = dir.path().join("txn");
    let expire_after = Duration::from_secs(1);
    let txns = Transactions::start(log.clone(), state.clone(), expire_after)
        .await
        .unwrap();
    let (idle_pid, idle_epoch) = txns.init("idle", 60_000, None).await.unwrap();
    let (busy_pid, busy_epoch) = txns.init("busy", 60_000, None).await.unwrap();
    let (open_pid, open_epoch) = txns.init("open", 60_000, None).await.unwrap();
    txns.add_partitions("open", open_pid, open_epoch, vec![("t".into(), 0)])
        .await
        .unwrap();
    // "busy" is used all along; "idle" not at all; "open" has a
    // transaction open (its own timeout ends it, not expiry).
    for _ in 0..5 {
        tokio::time::sleep(Duration::from_millis(300)).await;
        txns.end("busy", busy_pid, busy_epoch, false).await.unwrap();
    }
    txns.expire(now_ms()).await;
    assert!(txns.get("idle").is_none(), "the idle id is forgotten");
    assert!(!state_path(&state, "idle").exists(), "with its state file");
    assert_eq!(
        txns.add_partitions("idle", idle_pid, idle_epoch, vec![("t".into(), 0)])
            .await,
        Err(ResponseError::InvalidProducerIdMapping)
    );
    assert!(txns.get("busy").is_some(), "an id in use is kept");
    txns.end("open", open_pid, open_epoch, true).await.unwrap();

    // After a restart the forgotten id stays forgotten, and an
    // InitProducerId starts it afresh under a new producer id.
    drop(txns);
    let txns = Transactions::start(log.clone(), state, WEEK).await.unwrap();
    assert!(txns.get("idle").is_none());
    assert!(txns.get("busy").is_some() && txns.get("open").is_some());
    // A buffer an earlier life of the id left behind is dropped first.
    log.open_commit_log(&buffer_name("idle"), 1, buffer_settings())
        .await
        .unwrap();
    let stale = postcard::to_allocvec(&Destination {
        topic: "t".into(),
        partition: 0,
    })
    .unwrap();
    let batch = batch("stale", idle_pid, idle_epoch, 0).into_bytes();
    log.commit(&buffer_name("idle"), 0, vec![stale.into(), batch])
        .await
        .unwrap();
    let (pid, epoch) = txns.init("idle", 60_000, None).await.unwrap();
    assert_ne!(pid, idle_pid);
    assert_eq!(epoch, 0);
    assert!(log.commits(&buffer_name("idle"), 0).await.is_err());
}

#[tokio::test]
async fn forgotten_ids_lose_their_open_transaction_and_start_afresh() {
    let dir = tempfile::tempdir().unwrap();
    let log: Arc<dyn StreamLog> = Arc::new(MemoryLog::new());
    log.create_topic("acme.t", TopicConfig::default())
        .await
        .unwrap();
    let txns = Transactions::start(log.clone(), dir.path().join("txn"), WEEK)
        .await
        .unwrap();
    let (pid, epoch) = txns.init("acme.tx", 60_000, None).await.unwrap();
    txns.add_partitions("acme.tx", pid, epoch, vec![("acme.t".into(), 0)])
        .await
        .unwrap();
    txns.add_group("acme.tx", pid, epoch, "acme.g")
        .await
        .unwrap();
    txns.commit_offsets(
        "acme.tx",
        pid,
        epoch,
        "acme.g",
        vec![("acme.t".into(), 0, 1)],
    )
    .await
    .unwrap();
    txns.produce("acme.tx", "acme.t", 0, batch("a", pid, epoch, 0))
        .await
        .unwrap();
    txns.init("other.tx", 60_000, None).await.unwrap();
    assert!(txns.offset_pending("acme.g", "acme.t", 0));

    txns.forget_ids(|id| id.starts_with("acme.")).await.unwrap();
    assert!(txns.get("acme.tx").is_none());
    assert!(txns.get("other.tx").is_some(), "other ids are kept");
    assert!(!state_path(&dir.path().join("txn"), "acme.tx").exists());
    assert!(
        log.commits(&buffer_name("acme.tx"), 0).await.is_err(),
        "buffer dropped"
    );
    assert!(!txns.offset_pending("acme.g", "acme.t", 0));
    assert_eq!(
        txns.end("acme.tx", pid, epoch, true).await,
        Err(ResponseError::InvalidProducerIdMapping)
    );
    assert_eq!(
        log.topic("acme.t").await.unwrap().partitions[0].end_offset,
        0
    );
    // The id starts afresh, also after a restart.
    drop(txns);
    let txns = Transactions::start(log.clone(), dir.path().join("txn"), WEEK)
        .await
        .unwrap();
    let (fresh, epoch) = txns.init("acme.tx", 60_000, None).await.unwrap();
    assert_ne!(fresh, pid);
    assert_eq!(epoch, 0);
}
