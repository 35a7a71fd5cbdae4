//! Publishing a round's outputs after its commit, and again after a
//! restart: the log drops what it already holds, by producer sequence.

use super::TaskError;
use crate::checkpoint::Pending;
use crate::stats::{TaskStats, bump};
use weir_log::{LogError, StreamLog};

/// Appends outputs, in order. A batch the log already holds (same
/// producer and sequences) is not written twice. The outputs are taken,
/// not borrowed: a batch nobody else holds is appended without a copy.
pub(super) async fn publish(
    log: &dyn StreamLog,
    outputs: Vec<Pending>,
    stats: &TaskStats,
) -> Result<(), TaskError> {
    for output in outputs {
        publish_one(log, output, stats).await?;
    }
    Ok(())
}

async fn publish_one(
    log: &dyn StreamLog,
    output: Pending,
    stats: &TaskStats,
) -> Result<(), TaskError> {
    let Pending {
        topic,
        partition,
        batch,
    } = output;
    let records = batch.record_count() as u64;
    match log.append(&topic, partition, batch).await {
        Ok(info) if !info.duplicate => bump(&stats.records_out, records),
        Ok(_) => {}
        // Older than the log's memory of this producer's batches, but every
        // sequence of it was written: already published.
        Err(LogError::DuplicateSequence(_)) => {}
        Err(e) => return Err(TaskError::log(format!("publishing to {topic}/{partition}"))(e)),
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
        publish_one(log, output, stats).await?;
    }
    Ok(())
}
