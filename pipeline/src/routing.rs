//! Routing a round's outputs to topic partitions, in batches the topics
//! will accept.
//!
//! A record goes to the partition of its key (Kafka's murmur2), or without
//! a key to the partition matching the input's. Each output partition gets
//! as few batches as its topic's `max_batch_bytes` allows, in order; an
//! operator's batch bound for a single-partition topic passes through
//! unchanged when it fits. A record no append could ever take (larger
//! than the topic's batch limit, or without a key for a compacted topic)
//! is set aside as undeliverable *before* anything is committed, so a
//! commit never holds outputs that cannot be published.

use std::collections::{BTreeMap, HashMap};

use weir_format::{Batch, BatchBuilder, RecordView};

use crate::partitioner::partition_for_key;

/// What routing needs to know of an output topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutputTopic {
    pub partitions: u32,
    pub max_batch_bytes: usize,
    pub compacted: bool,
}

/// A round's outputs, sorted.
#[derive(Debug, Default)]
pub struct Routed {
    /// (topic, partition, batch), in order per partition.
    pub batches: Vec<(String, u32, Batch)>,
    /// Why each undeliverable record was set aside.
    pub undeliverable: Vec<String>,
}

/// Upper bound of a record's encoded size besides its key, value and
/// headers (length, attributes, deltas, lengths, header count).
const RECORD_OVERHEAD: usize = 40;
/// Bytes a batch adds around its records.
const BATCH_OVERHEAD: usize = 61 + 12;

/// Sorts `outputs` ((topic, batch) in the order produced) for a task
/// reading input partition `input_partition`.
pub fn route(
    topics: &HashMap<String, OutputTopic>,
    input_partition: u32,
    outputs: Vec<(String, Batch)>,
) -> Result<Routed, String> {
    let mut groups: BTreeMap<(String, u32), Vec<Batch>> = BTreeMap::new();
    let mut routed = Routed::default();
    for (topic, batch) in outputs {
        let config = *topics
            .get(&topic)
            .ok_or_else(|| format!("output topic {topic:?} is unknown"))?;
        let passes_through = config.partitions == 1
            && batch.size() <= config.max_batch_bytes
            && (!config.compacted || batch.records().all(|r| r.key.is_some()));
        if passes_through {
            groups.entry((topic, 0)).or_default().push(batch);
            continue;
        }
        let mut split: BTreeMap<u32, Chunks> = BTreeMap::new();
        for record in batch.records() {
            if let Some(reason) = undeliverable(&topic, &config, &record) {
                routed.undeliverable.push(reason);
                continue;
            }
            let partition = match record.key {
                Some(key) => partition_for_key(key, config.partitions),
                None => input_partition % config.partitions,
            };
            split
                .entry(partition)
                .or_insert_with(|| Chunks::new(config.max_batch_bytes))
                .push(&record);
        }
        for (partition, chunks) in split {
            groups
                .entry((topic.clone(), partition))
                .or_default()
                .extend(chunks.finish());
        }
    }
    for ((topic, partition), batches) in groups {
        let max = topics[&topic].max_batch_bytes;
        for batch in merge(batches, max) {
            routed.batches.push((topic.clone(), partition, batch));
        }
    }
    Ok(routed)
}

/// Why no append could ever take `record`, if so.
fn undeliverable(topic: &str, config: &OutputTopic, record: &RecordView<'_>) -> Option<String> {
    if config.compacted && record.key.is_none() {
        return Some(format!(
            "topic {topic:?} is compacted and an output record has no key"
        ));
    }
    if estimate(record) + BATCH_OVERHEAD <= config.max_batch_bytes {
        return None;
    }
    let mut alone = BatchBuilder::new();
    alone.push_view(record);
    let size = alone.size() + BATCH_OVERHEAD;
    (size > config.max_batch_bytes).then(|| {
        format!(
            "an output record of {size} bytes is larger than topic {topic:?} accepts ({} bytes)",
            config.max_batch_bytes
        )
    })
}

fn estimate(record: &RecordView<'_>) -> usize {
    let headers: usize = record
        .headers()
        .map(|h| h.name.len() + h.value.map_or(0, <[u8]>::len) + 10)
        .sum();
    record.key.map_or(0, <[u8]>::len)
        + record.value.map_or(0, <[u8]>::len)
        + headers
        + RECORD_OVERHEAD
}

/// Records gathered into batches of at most `max` bytes.
struct Chunks {
    max: usize,
    done: Vec<Batch>,
    current: BatchBuilder,
}

impl Chunks {
    fn new(max: usize) -> Chunks {
        Chunks {
            max,
            done: Vec::new(),
            current: BatchBuilder::new(),
        }
    }

    fn push(&mut self, record: &RecordView<'_>) {
        if !self.current.is_empty()
            && self.current.size() + estimate(record) + BATCH_OVERHEAD > self.max
        {
            let full = std::mem::take(&mut self.current);
            self.done.push(full.finish().expect("checked not empty"));
        }
        self.current.push_view(record);
    }

    fn finish(mut self) -> Vec<Batch> {
        if !self.current.is_empty() {
            self.done
                .push(self.current.finish().expect("checked not empty"));
        }
        self.done
    }
}

/// The records of `batches`, in order, in as few batches of at most `max`
/// bytes as simply possible (one batch alone is kept as it is).
fn merge(mut batches: Vec<Batch>, max: usize) -> Vec<Batch> {
    if batches.len() == 1 {
        return batches;
    }
    let total: usize = batches.iter().map(Batch::size).sum();
    if total <= max {
        let mut builder = BatchBuilder::with_capacity(total);
        for record in batches.iter().flat_map(Batch::records) {
            builder.push_view(&record);
        }
        batches = vec![builder.finish().expect("merged batches are never empty")];
        return batches;
    }
    let mut chunks = Chunks::new(max);
    for record in batches.iter().flat_map(Batch::records) {
        chunks.push(&record);
    }
    chunks.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use weir_format::Record;

    fn batch(records: &[(Option<&str>, usize)]) -> Batch {
        let mut builder = BatchBuilder::new();
        for (key, len) in records {
            let value = vec![b'v'; *len];
            builder.push(&Record {
                key: key.map(str::as_bytes),
                value: Some(&value),
                headers: &[],
                timestamp: 0,
            });
        }
        builder.finish().unwrap()
    }

    fn topic(partitions: u32, max: usize, compacted: bool) -> HashMap<String, OutputTopic> {
        [(
            "out".to_string(),
            OutputTopic {
                partitions,
                max_batch_bytes: max,
                compacted,
            },
        )]
        .into()
    }

    #[test]
    fn a_fitting_batch_for_one_partition_passes_through_unchanged() {
        let b = batch(&[(None, 10), (Some("k"), 10)]);
        let routed = route(
            &topic(1, 1 << 20, false),
            0,
            vec![("out".into(), b.clone())],
        )
        .unwrap();
        assert_eq!(routed.batches.len(), 1);
        assert_eq!(routed.batches[0].2.as_bytes(), b.as_bytes());
    }

    #[test]
    fn large_outputs_are_split_under_the_topic_limit_in_order() {
        let records: Vec<(Option<&str>, usize)> = (0..100).map(|_| (None, 1000)).collect();
        let routed = route(
            &topic(1, 8192, false),
            0,
            vec![
                ("out".into(), batch(&records)),
                ("out".into(), batch(&records)),
            ],
        )
        .unwrap();
        assert!(routed.batches.len() > 20);
        assert!(routed.batches.iter().all(|(_, _, b)| b.size() <= 8192));
        let count: usize = routed
            .batches
            .iter()
            .map(|(_, _, b)| b.record_count())
            .sum();
        assert_eq!(count, 200);
    }

    #[test]
    fn records_no_append_could_take_are_set_aside() {
        let routed = route(
            &topic(2, 4096, true),
            0,
            vec![(
                "out".into(),
                batch(&[(None, 10), (Some("a"), 10_000), (Some("b"), 10)]),
            )],
        )
        .unwrap();
        assert_eq!(routed.undeliverable.len(), 2, "{:?}", routed.undeliverable);
        assert!(routed.undeliverable[0].contains("no key"));
        assert!(routed.undeliverable[1].contains("larger than"));
        let count: usize = routed
            .batches
            .iter()
            .map(|(_, _, b)| b.record_count())
            .sum();
        assert_eq!(count, 1);
    }

    #[test]
    fn keys_choose_partitions_and_keyless_records_follow_the_input() {
        let routed = route(
            &topic(3, 1 << 20, false),
            4,
            vec![(
                "out".into(),
                batch(&[(None, 1), (Some("user-1"), 1), (Some("user-1"), 1)]),
            )],
        )
        .unwrap();
        let keyed = partition_for_key(b"user-1", 3);
        for (_, partition, b) in &routed.batches {
            let keys: Vec<_> = b.records().map(|r| r.key.is_some()).collect();
            if *partition == keyed {
                assert!(keys.iter().filter(|k| **k).count() == 2);
            }
            if keys.iter().any(|k| !k) {
                assert_eq!(*partition, 4 % 3);
            }
        }
    }
}
