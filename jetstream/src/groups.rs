//! Consumer-group offsets in a JetStream key-value bucket: one key per
//! group (its name in hex, since keys allow few characters) holding all of
//! the group's offsets, so a commit of several offsets is one write, all or
//! none. Writers update by revision and try again when another got there
//! first.

use std::collections::BTreeMap;

use async_nats::jetstream;
use async_nats::jetstream::kv::{self, Operation, Store};
use bytes::Bytes;
use futures::TryStreamExt;
use weir_log::{LogError, LogResult};

use crate::errors::unavailable;
use crate::names::Names;

/// How many times a commit reads again after losing a race.
const MAX_ATTEMPTS: usize = 100;

/// A group's offsets: `(topic, partition) → offset`.
type Offsets = BTreeMap<(String, u32), i64>;

/// The bucket of every group's offsets.
pub struct Groups {
    store: Store,
}

impl Groups {
    /// Opens the bucket, making it if it is missing.
    pub async fn open(
        context: &jetstream::Context,
        names: &Names,
        replicas: usize,
    ) -> LogResult<Groups> {
        let store = crate::config::bucket(
            context,
            names.groups_bucket(),
            "Weir: consumer groups' committed offsets",
            replicas,
        )
        .await?;
        Ok(Groups { store })
    }

    /// Merges `offsets` into `group`'s, all together.
    pub async fn commit(&self, group: &str, offsets: Vec<(String, u32, i64)>) -> LogResult<()> {
        self.change(group, |committed| {
            for (topic, partition, offset) in &offsets {
                committed.insert((topic.clone(), *partition), *offset);
            }
        })
        .await
        .map(|_| ())
    }

    /// `group`'s offsets, sorted.
    pub async fn offsets(&self, group: &str) -> LogResult<Vec<(String, u32, i64)>> {
        let (committed, _) = self.load(&key(group)).await?;
        Ok(committed
            .into_iter()
            .map(|((topic, partition), offset)| (topic, partition, offset))
            .collect())
    }

    /// Every group with offsets, sorted.
    pub async fn names(&self) -> LogResult<Vec<String>> {
        let keys: Vec<String> = self
            .store
            .keys()
            .await
            .map_err(|e| unavailable("listing consumer groups", e))?
            .try_collect()
            .await
            .map_err(|e| unavailable("listing consumer groups", e))?;
        let mut names: Vec<String> = keys.iter().filter_map(|k| name(k)).collect();
        names.sort();
        Ok(names)
    }

    /// Forgets `group`'s offsets; false when it had none.
    pub async fn delete(&self, group: &str) -> LogResult<bool> {
        let (committed, _) = self.load(&key(group)).await?;
        if committed.is_empty() {
            return Ok(false);
        }
        self.store
            .purge(key(group))
            .await
            .map_err(|e| unavailable(&format!("deleting group {group}"), e))?;
        Ok(true)
    }

    /// Forgets every group's offsets in `topic` (it was deleted).
    pub async fn forget_topic(&self, topic: &str) -> LogResult<()> {
        for group in self.names().await? {
            self.change(&group, |committed| {
                committed.retain(|(t, _), _| t != topic);
            })
            .await?;
        }
        Ok(())
    }

    /// Applies `edit` to `group`'s offsets and writes them back, again
    /// from a fresh read each time another writer got there first.
    async fn change(&self, group: &str, edit: impl Fn(&mut Offsets)) -> LogResult<Offsets> {
        let key = key(group);
        for _ in 0..MAX_ATTEMPTS {
            let (mut committed, revision) = self.load(&key).await?;
            edit(&mut committed);
            let value = encode(&committed)?;
            let written = match revision {
                Some(revision) => self.store.update(&key, value, revision).await.map(|_| ()),
                None => self
                    .store
                    .create(&key, value)
                    .await
                    .map(|_| ())
                    .map_err(|e| match e.kind() {
                        kv::CreateErrorKind::AlreadyExists => {
                            kv::UpdateError::new(kv::UpdateErrorKind::WrongLastRevision)
                        }
                        _ => kv::UpdateError::with_source(kv::UpdateErrorKind::Other, e),
                    }),
            };
            match written {
                Ok(()) => return Ok(committed),
                Err(e) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => continue,
                Err(e) => return Err(unavailable(&format!("committing group {group}"), e)),
            }
        }
        Err(LogError::Unavailable(format!(
            "group {group}: {MAX_ATTEMPTS} commits in a row lost the race to other writers"
        )))
    }

    /// A group's offsets and the revision they were read at (`None`: no
    /// live entry).
    async fn load(&self, key: &str) -> LogResult<(Offsets, Option<u64>)> {
        let entry = self
            .store
            .entry(key)
            .await
            .map_err(|e| unavailable("reading a consumer group", e))?;
        match entry {
            Some(entry) if entry.operation == Operation::Put => {
                Ok((decode(&entry.value)?, Some(entry.revision)))
            }
            _ => Ok((Offsets::new(), None)),
        }
    }
}

fn key(group: &str) -> String {
    hex::encode(group.as_bytes())
}

fn name(key: &str) -> Option<String> {
    String::from_utf8(hex::decode(key).ok()?).ok()
}

fn encode(offsets: &Offsets) -> LogResult<Bytes> {
    let list: Vec<(&String, u32, i64)> = offsets.iter().map(|((t, p), o)| (t, *p, *o)).collect();
    serde_json::to_vec(&list)
        .map(Bytes::from)
        .map_err(|e| LogError::Unavailable(format!("encoding a group's offsets: {e}")))
}

fn decode(value: &[u8]) -> LogResult<Offsets> {
    let list: Vec<(String, u32, i64)> = serde_json::from_slice(value).map_err(|e| {
        LogError::Unavailable(format!("a consumer group's offsets are corrupt: {e}"))
    })?;
    Ok(list.into_iter().map(|(t, p, o)| ((t, p), o)).collect())
}
