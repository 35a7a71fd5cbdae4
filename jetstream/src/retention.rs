//! Time retention of topics on JetStream, done by Weir, not by the
//! stream's `max_age`: JetStream's limits would also delete a partition's
//! last message, and with it where the partition's offsets continue. Every
//! interval, for each topic with `retention_ms`, the batches of each
//! partition whose newest record is older than that are purged from the
//! start, up to but never including the partition's last message (as
//! Kafka never deletes the active segment). Purging is idempotent, so
//! several workers may each do it.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_nats::jetstream::{self, stream::Stream};
use futures::TryStreamExt;
use weir_log::LogResult;

use crate::errors::unavailable;
use crate::names::{Kind, Names};
use crate::partition::{self, Place};
use crate::topics;

/// Runs retention every `interval` until the task is aborted.
pub fn spawn(
    context: jetstream::Context,
    names: Names,
    interval: Duration,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            if let Err(e) = apply(&context, &names).await {
                tracing::warn!(error = %e, "JetStream retention did not finish; next time");
            }
        }
    })
}

/// One pass over every topic with time retention.
async fn apply(context: &jetstream::Context, names: &Names) -> LogResult<()> {
    let mut streams = context.streams();
    let mut due = Vec::new();
    while let Some(info) = streams
        .try_next()
        .await
        .map_err(|e| unavailable("listing streams for retention", e))?
    {
        if !names.is_stream_of(Kind::Topic, &info.config.name) {
            continue;
        }
        if let Some((name, config)) = topics::from_stream(&info)
            && let Some(retention_ms) = config.retention_ms
        {
            due.push((name, config.partitions, retention_ms));
        }
    }
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64);
    for (name, partitions, retention_ms) in due {
        let stream_name = names.stream(Kind::Topic, &name);
        let stream = context
            .get_stream_no_info(&stream_name)
            .await
            .map_err(|e| unavailable(&name, e))?;
        for partition in 0..partitions {
            let place = Place {
                topic: name.clone(),
                stream_name: stream_name.clone(),
                stream: stream.clone(),
                subject: names.subject(Kind::Topic, &name, partition),
                partition,
            };
            let cutoff = now_ms.saturating_sub(i64::try_from(retention_ms).unwrap_or(i64::MAX));
            purge_before(&stream, &place, cutoff).await?;
        }
    }
    Ok(())
}

/// Purges the partition's batches whose newest record is older than
/// `cutoff` (ms), from the start, keeping its last message.
async fn purge_before(stream: &Stream<()>, place: &Place, cutoff: i64) -> LogResult<()> {
    let Some(last) = partition::last_message(place).await? else {
        return Ok(());
    };
    // The first message to keep, and whether any before it is due.
    let mut keep_from = None;
    let mut due = false;
    let mut sequence = 1;
    while let Some(message) = partition::next_message(place, sequence).await? {
        if message.sequence >= last.sequence
            || partition::batch_of(place, &message)?.max_timestamp() >= cutoff
        {
            keep_from = Some(message.sequence);
            break;
        }
        due = true;
        sequence = message.sequence + 1;
    }
    if let Some(keep_from) = keep_from
        && due
    {
        stream
            .purge()
            .filter(place.subject.clone())
            .sequence(keep_from)
            .await
            .map_err(|e| unavailable(&format!("{}/{}", place.topic, place.partition), e))?;
    }
    Ok(())
}
