//! The record batch as the host passes it along the data path (log,
//! operators, pipelines, Kafka): an owned, validated buffer. A
//! [`Batch`] owns its bytes (`Bytes`, so clones and slices are free) and is
//! fully validated when made, so iterating its records cannot fail and
//! copies nothing.
//!
//! The log assigns offsets by rewriting the base-offset field in place; that
//! field sits outside the CRC, so appending never re-encodes a batch.

use bytes::{Bytes, BytesMut};

use crate::{BatchError, BatchRef, BatchWriter, Record, RecordView, Records};

/// Builds a batch record by record. Offsets are assigned relative to the
/// batch (0, 1, 2...) and made absolute when the log appends the batch.
#[derive(Debug, Default)]
pub struct BatchBuilder(BatchWriter);

impl BatchBuilder {
    pub fn new() -> Self {
        Self::default()
    }

    /// A builder whose buffer has room for `bytes` of records up front.
    pub fn with_capacity(bytes: usize) -> Self {
        BatchBuilder(BatchWriter::with_capacity(bytes))
    }

    /// Appends a record. Timestamps are stored as deltas from the first record's.
    pub fn push(&mut self, record: &Record<'_>) -> &mut Self {
        self.0.push(record);
        self
    }

    /// Adds a record read from another batch, copying its encoded form.
    pub fn push_view(&mut self, record: &RecordView<'_>) -> &mut Self {
        self.0.push_view(record);
        self
    }

    /// Number of records pushed so far.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Encoded size of the batch if it were finished now.
    pub fn size(&self) -> usize {
        self.0.size()
    }

    /// Writes the header and CRC. Fails only when no record was pushed.
    pub fn finish(self) -> Result<Batch, BatchError> {
        Ok(Batch {
            bytes: Bytes::from(self.0.finish()?),
        })
    }
}

/// The idempotent-producer fields of a batch header: who wrote it, in which
/// epoch, and the sequence number of its first record. Record `i` of the
/// batch has sequence `base_sequence + i`; the log uses them to refuse or
/// answer retried and out-of-order batches (see `Partition::append`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ProducerStamp {
    /// Allocated by `Log::init_producer_id`; never negative.
    pub id: i64,
    /// Raised when a new instance of the producer takes over; older epochs are fenced.
    pub epoch: i16,
    /// Sequence number of the batch's first record, from 0.
    pub base_sequence: i32,
}

/// A validated record batch.
#[derive(Clone, PartialEq, Eq)]
pub struct Batch {
    bytes: Bytes,
}

impl std::fmt::Debug for Batch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.view().fmt(f)
    }
}

impl Batch {
    /// Validates `bytes` as exactly one batch: header, length, magic, CRC and
    /// the framing of every record. Compressed batches are refused.
    pub fn from_bytes(bytes: Bytes) -> Result<Batch, BatchError> {
        BatchRef::parse(&bytes)?;
        Ok(Batch { bytes })
    }

    /// Validates a batch whose CRC field is not yet written (a WASM guest's
    /// output), then writes the CRC. One pass over the bytes fewer than
    /// sealing and then calling [`from_bytes`](Self::from_bytes).
    pub fn from_unsealed(mut bytes: Vec<u8>) -> Result<Batch, BatchError> {
        BatchRef::parse_unsealed(&bytes)?;
        crate::seal(&mut bytes);
        Ok(Batch {
            bytes: Bytes::from(bytes),
        })
    }

    /// A batch a producer made to be appended (a WASM guest's output),
    /// checked and completed by [`crate::normalize_new`]: records
    /// numbered from 0 without gaps, and every header field the producer
    /// has no business choosing set by the host, then sealed.
    pub fn from_new(mut bytes: Vec<u8>) -> Result<Batch, BatchError> {
        crate::normalize_new(&mut bytes)?;
        Ok(Batch {
            bytes: Bytes::from(bytes),
        })
    }

    /// Wraps bytes that were validated by `from_bytes` before (the log
    /// re-reading a batch it verified earlier in this process). Bytes that
    /// were not make reading the batch panic: only the log calls this.
    pub fn from_verified(bytes: Bytes) -> Batch {
        Batch { bytes }
    }

    /// A borrowed view of this batch.
    pub fn view(&self) -> BatchRef<'_> {
        BatchRef::assume_valid(&self.bytes)
    }

    /// The whole encoded batch.
    pub fn as_bytes(&self) -> &Bytes {
        &self.bytes
    }

    pub fn into_bytes(self) -> Bytes {
        self.bytes
    }

    /// Encoded size in bytes.
    pub fn size(&self) -> usize {
        self.bytes.len()
    }

    pub fn base_offset(&self) -> u64 {
        self.view().base_offset()
    }

    /// Offset of the batch's last record slot (records removed by compaction
    /// leave gaps; this stays the end of the batch's offset range).
    pub fn last_offset(&self) -> u64 {
        self.view().last_offset()
    }

    /// First offset after this batch.
    pub fn next_offset(&self) -> u64 {
        self.view().next_offset()
    }

    pub fn record_count(&self) -> usize {
        self.view().record_count()
    }

    pub fn base_timestamp(&self) -> i64 {
        self.view().base_timestamp()
    }

    /// Largest record timestamp in the batch.
    pub fn max_timestamp(&self) -> i64 {
        self.view().max_timestamp()
    }

    /// Partition leader epoch; the embedded log always writes 0.
    pub fn leader_epoch(&self) -> i32 {
        self.view().leader_epoch()
    }

    /// Iterates the records without copying.
    pub fn records(&self) -> Records<'_> {
        self.view().records()
    }

    /// The idempotent producer's stamp, or `None` when the batch carries no
    /// producer id (a negative one).
    pub fn producer(&self) -> Option<ProducerStamp> {
        let view = self.view();
        let id = view.producer_id();
        (id >= 0).then(|| ProducerStamp {
            id,
            epoch: view.producer_epoch(),
            base_sequence: view.base_sequence(),
        })
    }

    /// Returns the same batch stamped with `stamp`. These fields are covered
    /// by the CRC, so the CRC is recomputed (a pass over the batch), and the
    /// bytes are copied first if they are shared.
    pub fn with_producer(self, stamp: ProducerStamp) -> Batch {
        let mut bytes = BytesMut::from(self.bytes);
        crate::set_producer(&mut bytes, stamp.id, stamp.epoch, stamp.base_sequence);
        Batch {
            bytes: bytes.freeze(),
        }
    }

    /// Returns the same batch with its base offset set to `base_offset`.
    /// The CRC does not cover this field, so nothing else changes.
    pub fn with_base_offset(self, base_offset: u64) -> Batch {
        let mut bytes = BytesMut::from(self.bytes);
        crate::set_base_offset(&mut bytes, base_offset);
        Batch {
            bytes: bytes.freeze(),
        }
    }

    /// Keeps the records for which `keep` returns true, each copied byte for
    /// byte so its offset and timestamp are unchanged, and re-seals the batch.
    /// Returns `None` if no record is kept.
    pub fn retain(&self, keep: impl FnMut(&RecordView<'_>) -> bool) -> Option<Batch> {
        crate::retain(&self.view(), keep).map(|bytes| Batch {
            bytes: Bytes::from(bytes),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_are_assigned_without_touching_the_crc() {
        let mut b = BatchBuilder::new();
        b.push(&Record {
            key: Some(b"k"),
            value: Some(b"v"),
            headers: &[],
            timestamp: 5,
        });
        let a = b.finish().unwrap();
        let moved = a.clone().with_base_offset(1 << 40);
        assert_eq!(a.as_bytes()[17..], moved.as_bytes()[17..]);
        let parsed = Batch::from_bytes(moved.into_bytes()).unwrap();
        assert_eq!(parsed.base_offset(), 1 << 40);
        assert_eq!(parsed.records().next().unwrap().offset, 1 << 40);
    }

    #[test]
    fn a_producer_stamp_survives_validation() {
        let mut b = BatchBuilder::new();
        b.push(&Record {
            key: None,
            value: Some(b"v"),
            headers: &[],
            timestamp: 5,
        });
        let plain = b.finish().unwrap();
        assert_eq!(plain.producer(), None);
        let stamp = ProducerStamp {
            id: 7,
            epoch: 2,
            base_sequence: 10,
        };
        let stamped = Batch::from_bytes(plain.with_producer(stamp).into_bytes()).unwrap();
        assert_eq!(stamped.producer(), Some(stamp));
    }
}
