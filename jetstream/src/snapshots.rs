//! Snapshots of partition tails (the end and the idempotent producers) in
//! a key-value bucket, so that a writer that starts does not read a whole
//! partition to rebuild its producers: it reads the snapshot and the
//! messages after it. Writers save one every [`SAVE_EVERY`] stream
//! sequences; a snapshot that does not fit the partition any more (the
//! topic was made again) is ignored.

use async_nats::jetstream;
use async_nats::jetstream::kv::Store;
use bytes::Bytes;
use futures::TryStreamExt;
use weir_log::LogResult;

use crate::errors::unavailable;
use crate::names::Names;
use crate::partition::{self, Place, Tail};

/// How many stream sequences a tail moves on before it is saved again.
pub const SAVE_EVERY: u64 = 1000;

/// The bucket of tail snapshots.
pub struct Snapshots {
    store: Store,
}

impl Snapshots {
    /// Opens the bucket, making it if it is missing.
    pub async fn open(
        context: &jetstream::Context,
        names: &Names,
        replicas: usize,
    ) -> LogResult<Snapshots> {
        let store = crate::config::bucket(
            context,
            names.tails_bucket(),
            "Weir: partition tails (ends and idempotent producers)",
            replicas,
        )
        .await?;
        Ok(Snapshots { store })
    }

    /// The partition's last saved tail, if it still fits the partition.
    pub async fn load(&self, place: &Place) -> LogResult<Option<Tail>> {
        let saved = match self.store.get(key(&place.subject)).await {
            Ok(Some(saved)) => saved,
            Ok(None) => return Ok(None),
            Err(e) => {
                tracing::warn!(error = %e, subject = %place.subject, "tail snapshot unreadable");
                return Ok(None);
            }
        };
        let Ok(tail) = serde_json::from_slice::<Tail>(&saved) else {
            return Ok(None);
        };
        Ok(fits(place, &tail).await?.then_some(tail))
    }

    /// Saves `tail` (best effort: a lost snapshot only costs a longer read).
    pub async fn save(&self, place: &Place, tail: &Tail) {
        let Ok(json) = serde_json::to_vec(tail) else {
            return;
        };
        if let Err(e) = self.store.put(key(&place.subject), Bytes::from(json)).await {
            tracing::warn!(error = %e, subject = %place.subject, "tail snapshot not saved");
        }
    }

    /// Forgets the snapshots of subjects under `subject_prefix`.
    pub async fn forget(&self, subject_prefix: &str) -> LogResult<()> {
        let keys: Vec<String> = self
            .store
            .keys()
            .await
            .map_err(|e| unavailable("listing tail snapshots", e))?
            .try_collect()
            .await
            .map_err(|e| unavailable("listing tail snapshots", e))?;
        for key in keys {
            let subject = hex::decode(&key)
                .ok()
                .and_then(|s| String::from_utf8(s).ok());
            if subject.is_some_and(|s| s.starts_with(subject_prefix)) {
                self.store
                    .purge(&key)
                    .await
                    .map_err(|e| unavailable("forgetting a tail snapshot", e))?;
            }
        }
        Ok(())
    }
}

/// Whether `tail` is a past state of the partition: the message after it
/// starts where it says the partition ended, or it is the last message.
async fn fits(place: &Place, tail: &Tail) -> LogResult<bool> {
    if tail.last_sequence == 0 {
        return Ok(false);
    }
    if let Some(next) = partition::next_message(place, tail.last_sequence + 1).await? {
        return Ok(partition::batch_of(place, &next)?.base_offset() == tail.next_offset);
    }
    match partition::last_message(place).await? {
        Some(last) => Ok(last.sequence == tail.last_sequence
            && partition::batch_of(place, &last)?.next_offset() == tail.next_offset),
        None => Ok(false),
    }
}

fn key(subject: &str) -> String {
    hex::encode(subject.as_bytes())
}
