//! Consumer-group offsets: the committed position of each (group, topic,
//! partition), stored durably and read back after a restart.
//!
//! Commits are records in an internal compacted topic, `__consumer_offsets`
//! (as in Kafka), so they get the log's own durability, recovery and
//! compaction: the key names (group, topic, partition), the value is the
//! offset, and a tombstone forgets an entry. One commit call is one batch,
//! so the offsets it carries land together or not at all. The latest value
//! of every key is kept in memory.
//!
//! Key: `u16 group length, group, u16 topic length, topic, u32 partition`;
//! value: `i64 offset`; all big-endian. Offsets are kept as committed, as
//! Kafka keeps them, negative ones included (a client may commit −1 or −2,
//! the logical "end" and "beginning"). Earlier versions wrote the value as
//! a `u64`, which is the same 8 bytes for every offset a partition can
//! have (below 2⁶³), so their files read the same.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};

use crate::batch::{BatchBuilder, Record};
use crate::clock::Clock;
use crate::config::{Cleanup, Durability, TopicConfig};
use crate::error::{LogError, Result};
use crate::partition::Partition;

/// Name of the internal topic holding committed offsets.
pub const OFFSETS_TOPIC: &str = "__consumer_offsets";

/// Configuration of the internal offsets topic.
pub(crate) fn offsets_topic_config() -> TopicConfig {
    TopicConfig {
        partitions: 1,
        durability: Durability::Always,
        cleanup: Cleanup::Compact,
        segment_bytes: 16 << 20,
        ..TopicConfig::default()
    }
}

type Key = (String, String, u32);

#[derive(Debug)]
pub(crate) struct ConsumerOffsets {
    partition: Partition,
    committed: Mutex<HashMap<Key, i64>>,
}

impl ConsumerOffsets {
    /// Loads every committed offset from the internal topic's partition.
    pub(crate) fn load(partition: Partition) -> Result<ConsumerOffsets> {
        let mut committed = HashMap::new();
        let mut offset = partition.start_offset();
        let end = partition.end_offset();
        while offset < end {
            let batches = partition.read(offset, 1 << 20)?;
            let Some(last) = batches.last() else { break };
            offset = last.next_offset();
            for record in batches.iter().flat_map(|b| b.records()) {
                let key = record.key.and_then(decode_key);
                let Some(key) = key else {
                    tracing::warn!(
                        offset = record.offset,
                        "skipping malformed consumer-offset record"
                    );
                    continue;
                };
                match record.value.and_then(|v| <[u8; 8]>::try_from(v).ok()) {
                    Some(v) => committed.insert(key, i64::from_be_bytes(v)),
                    None => committed.remove(&key),
                };
            }
        }
        Ok(ConsumerOffsets {
            partition,
            committed: Mutex::new(committed),
        })
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<Key, i64>> {
        self.committed.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Durably commits `offsets` (topic, partition, offset) for `group`, all together.
    pub(crate) fn commit(
        &self,
        clock: &dyn Clock,
        group: &str,
        offsets: &[(&str, u32, i64)],
    ) -> Result<()> {
        validate_group(group)?;
        let entries: Vec<(Vec<u8>, Option<[u8; 8]>)> = offsets
            .iter()
            .map(|&(t, p, o)| (encode_key(group, t, p), Some(o.to_be_bytes())))
            .collect();
        self.write(clock, &entries)?;
        let mut committed = self.lock();
        for &(topic, partition, offset) in offsets {
            committed.insert((group.to_string(), topic.to_string(), partition), offset);
        }
        Ok(())
    }

    /// The committed offset of `group` for one partition, if any.
    pub(crate) fn get(&self, group: &str, topic: &str, partition: u32) -> Option<i64> {
        self.lock()
            .get(&(group.to_string(), topic.to_string(), partition))
            .copied()
    }

    /// Every committed offset of `group`: (topic, partition, offset), sorted.
    pub(crate) fn group(&self, group: &str) -> Vec<(String, u32, i64)> {
        let mut out: Vec<_> = self
            .lock()
            .iter()
            .filter(|((g, _, _), _)| g == group)
            .map(|((_, t, p), o)| (t.clone(), *p, *o))
            .collect();
        out.sort();
        out
    }

    /// Every group with a committed offset, sorted.
    pub(crate) fn groups(&self) -> Vec<String> {
        let mut out: Vec<String> = self.lock().keys().map(|(g, _, _)| g.clone()).collect();
        out.sort();
        out.dedup();
        out
    }

    /// Forgets every committed offset for `topic` (when the topic is deleted).
    pub(crate) fn forget_topic(&self, clock: &dyn Clock, topic: &str) -> Result<()> {
        self.forget(clock, |(_, t, _)| t == topic).map(|_| ())
    }

    /// Forgets every offset `group` committed; false when it had none.
    pub(crate) fn forget_group(&self, clock: &dyn Clock, group: &str) -> Result<bool> {
        self.forget(clock, |(g, _, _)| g == group)
    }

    /// Durably forgets the offsets whose keys match (tombstones, which
    /// compaction later removes); false when none matched.
    fn forget(&self, clock: &dyn Clock, matches: impl Fn(&Key) -> bool) -> Result<bool> {
        let keys: Vec<Key> = self.lock().keys().filter(|k| matches(k)).cloned().collect();
        if keys.is_empty() {
            return Ok(false);
        }
        let entries: Vec<_> = keys
            .iter()
            .map(|(g, t, p)| (encode_key(g, t, *p), None))
            .collect();
        self.write(clock, &entries)?;
        let mut committed = self.lock();
        for key in keys {
            committed.remove(&key);
        }
        Ok(true)
    }

    fn write(&self, clock: &dyn Clock, entries: &[(Vec<u8>, Option<[u8; 8]>)]) -> Result<()> {
        if entries.is_empty() {
            return Ok(());
        }
        let now = clock.now_ms();
        let mut builder = BatchBuilder::new();
        for (key, value) in entries {
            builder.push(&Record {
                key: Some(key),
                value: value.as_ref().map(|v| &v[..]),
                headers: &[],
                timestamp: now,
            });
        }
        self.partition.append(builder.finish()?)?;
        Ok(())
    }
}

fn validate_group(group: &str) -> Result<()> {
    if group.is_empty() || group.len() > 255 {
        return Err(LogError::InvalidConfig {
            topic: OFFSETS_TOPIC.to_string(),
            reason: format!(
                "consumer group names must be 1 to 255 bytes, got {}",
                group.len()
            ),
        });
    }
    Ok(())
}

fn encode_key(group: &str, topic: &str, partition: u32) -> Vec<u8> {
    let mut key = Vec::with_capacity(8 + group.len() + topic.len());
    key.extend_from_slice(&(group.len() as u16).to_be_bytes());
    key.extend_from_slice(group.as_bytes());
    key.extend_from_slice(&(topic.len() as u16).to_be_bytes());
    key.extend_from_slice(topic.as_bytes());
    key.extend_from_slice(&partition.to_be_bytes());
    key
}

fn decode_key(key: &[u8]) -> Option<Key> {
    let mut rest = key;
    let mut take = |n: usize| -> Option<&[u8]> {
        let (head, tail) = rest.split_at_checked(n)?;
        rest = tail;
        Some(head)
    };
    let group_len = u16::from_be_bytes(take(2)?.try_into().ok()?) as usize;
    let group = String::from_utf8(take(group_len)?.to_vec()).ok()?;
    let topic_len = u16::from_be_bytes(take(2)?.try_into().ok()?) as usize;
    let topic = String::from_utf8(take(topic_len)?.to_vec()).ok()?;
    let partition = u32::from_be_bytes(take(4)?.try_into().ok()?);
    rest.is_empty().then_some((group, topic, partition))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip_and_garbage_is_refused() {
        let key = encode_key("g1", "orders", 7);
        assert_eq!(decode_key(&key), Some(("g1".into(), "orders".into(), 7)));
        assert_eq!(decode_key(&key[..key.len() - 1]), None);
        assert_eq!(decode_key(b"\xff\xff"), None);
    }
}
