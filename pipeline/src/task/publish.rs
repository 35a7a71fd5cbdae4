//! Publishing a round's outputs after its commit, and again after a
//! restart: the log drops what it already holds, by producer sequence.

use std::collections::BTreeMap;

use futures::future::try_join_all;
use weir_format::Batch;

use super::TaskError;
use crate::checkpoint::Pending;
use crate::stats::{TaskStats, bump};
use weir_log::{LogError, StreamLog};

/// Appends outputs: the batches of each output partition in order and in
/// one call (durable together), the partitions side by side. A batch the
/// log already holds (same producer and sequences) is not written twice.
/// The outputs are taken, not borrowed: a batch nobody else holds is
/// appended without a copy.
pub(super) async fn publish(
    log: &dyn StreamLog,
    outputs: Vec<Pending>,
    stats: &TaskStats,
) -> Result<(), TaskError> {
    let mut partitions: BTreeMap<(String, u32), Vec<Batch>> = BTreeMap::new();
    for Pending {
        topic,
        partition,
        batch,
    } in outputs
    {
        partitions
            .entry((topic, partition))
            .or_default()
            .push(batch);
    }
    let appends = partitions
        .into_iter()
        .map(|((topic, partition), batches)| publish_to(log, topic, partition, batches, stats));
    try_join_all(appends).await?;
    Ok(())
}

/// Appends one output partition's batches, in order.
async fn publish_to(
    log: &dyn StreamLog,
    topic: String,
    partition: u32,
    batches: Vec<Batch>,
    stats: &TaskStats,
) -> Result<(), TaskError> {
    let records: Vec<u64> = batches.iter().map(|b| b.record_count() as u64).collect();
    let outcomes = log.append_all(&topic, partition, batches).await;
    for (outcome, records) in outcomes.into_iter().zip(records) {
        match outcome {
            Ok(info) if !info.duplicate => bump(&stats.records_out, records),
            Ok(_) => {}
            // Older than the log's memory of this producer's batches, but
            // every sequence of it was written: already published.
            Err(LogError::DuplicateSequence(_)) => {}
            Err(e) => {
                return Err(TaskError::log(format!("publishing to {topic}/{partition}"))(e));
            }
        }
    }
    Ok(())
}

/// Publishes the last commit's outputs again after a restart. An output
/// whose topic or partition no longer exists is skipped: it can never be
/// delivered, and it must not block the pipeline forever.
pub(super) async fn republish(
    log: &dyn StreamLog,
    outputs: Vec<Pending>,
    stats: &TaskStats,
) -> Result<(), TaskError> {
    let mut deliverable = Vec::with_capacity(outputs.len());
    for output in outputs {
        // Only a log that says the topic is gone drops outputs; one that
        // cannot answer now fails the task, which retries later.
        let gone = match log.topic(&output.topic).await {
            Ok(topic) => topic.partitions.len() as u32 <= output.partition,
            Err(LogError::UnknownTopic(_)) => true,
            Err(e) => return Err(TaskError::log("republishing")(e)),
        };
        if gone {
            tracing::warn!(topic = %output.topic, partition = output.partition,
                records = output.batch.record_count(),
                "output topic partition is gone: committed outputs dropped");
            continue;
        }
        deliverable.push(output);
    }
    publish(log, deliverable, stats).await
}
