//! Encoding batches: [`BatchWriter`] builds one record by record, and
//! [`retain`] rewrites one keeping some of its records (compaction), and
//! [`normalize_new`] checks and completes one a producer made.

use crate::batch::{
    BatchRef, HEADER_LEN, LENGTH_PREFIX, MAGIC, NO_PRODUCER_ID, field, put_i32, put_i64, seal,
    set_base_offset,
};
use crate::error::BatchError;
use crate::record::{Record, RecordView, parse_record, put_nullable, record_body_len};
use crate::varint;

/// Builds a batch record by record. Offsets are assigned relative to the
/// batch (0, 1, 2...) and made absolute when the log appends the batch.
#[derive(Debug)]
pub struct BatchWriter {
    buf: Vec<u8>,
    count: u32,
    base_timestamp: i64,
    max_timestamp: i64,
}

impl Default for BatchWriter {
    fn default() -> Self {
        Self::with_capacity(0)
    }
}

impl BatchWriter {
    pub fn new() -> Self {
        Self::default()
    }

    /// A builder whose buffer has room for `bytes` of records up front.
    pub fn with_capacity(bytes: usize) -> Self {
        let mut buf = Vec::with_capacity(HEADER_LEN + bytes);
        buf.resize(HEADER_LEN, 0);
        BatchWriter {
            buf,
            count: 0,
            base_timestamp: 0,
            max_timestamp: i64::MIN,
        }
    }

    /// Appends a record. Timestamps are stored as deltas from the first record's.
    pub fn push(&mut self, record: &Record<'_>) -> &mut Self {
        if self.count == 0 {
            self.base_timestamp = record.timestamp;
        }
        let timestamp_delta = record.timestamp.wrapping_sub(self.base_timestamp);
        let offset_delta = i64::from(self.count);
        let body_len = record_body_len(record, timestamp_delta, offset_delta);
        varint::put(&mut self.buf, body_len as i64);
        self.buf.push(0); // record attributes: unused
        varint::put(&mut self.buf, timestamp_delta);
        varint::put(&mut self.buf, offset_delta);
        put_nullable(&mut self.buf, record.key);
        put_nullable(&mut self.buf, record.value);
        varint::put(&mut self.buf, record.headers.len() as i64);
        for header in record.headers {
            put_nullable(&mut self.buf, Some(header.name.as_bytes()));
            put_nullable(&mut self.buf, header.value);
        }
        self.count += 1;
        self.max_timestamp = self.max_timestamp.max(record.timestamp);
        self
    }

    /// Appends a record read from another batch, with the same key, value,
    /// headers and timestamp. Faster than [`push`](Self::push): the encoded
    /// key, value and headers are copied in one piece.
    #[inline]
    pub fn push_view(&mut self, record: &RecordView<'_>) -> &mut Self {
        if self.count == 0 {
            self.base_timestamp = record.timestamp;
        }
        let timestamp_delta = record.timestamp.wrapping_sub(self.base_timestamp);
        let offset_delta = i64::from(self.count);
        let body_len =
            1 + varint::len(timestamp_delta) + varint::len(offset_delta) + record.tail.len();
        // The record's head is assembled on the stack and appended in one
        // piece with the copied tail: two copies instead of a push per byte.
        let mut head = [0u8; 4 * varint::MAX_LEN];
        let mut n = 0;
        varint::put_at(&mut head, &mut n, body_len as i64);
        n += 1; // attributes: 0
        varint::put_at(&mut head, &mut n, timestamp_delta);
        varint::put_at(&mut head, &mut n, offset_delta);
        self.buf.reserve(n + record.tail.len());
        self.buf.extend_from_slice(&head[..n]);
        self.buf.extend_from_slice(record.tail);
        self.count += 1;
        self.max_timestamp = self.max_timestamp.max(record.timestamp);
        self
    }

    /// Number of records pushed so far.
    pub fn len(&self) -> usize {
        self.count as usize
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Encoded size of the batch if it were finished now.
    pub fn size(&self) -> usize {
        self.buf.len()
    }

    /// Writes the header and the CRC and returns the encoded batch. Fails
    /// only when no record was pushed.
    pub fn finish(self) -> Result<Vec<u8>, BatchError> {
        let mut buf = self.finish_unsealed()?;
        seal(&mut buf);
        Ok(buf)
    }

    /// Like [`finish`](Self::finish) but leaves the CRC field zero, for a
    /// receiver that seals (and so checks) the batch itself: a WASM guest
    /// hands its output to the host this way, which computes the CRC with
    /// hardware support the guest lacks.
    pub fn finish_unsealed(self) -> Result<Vec<u8>, BatchError> {
        if self.count == 0 {
            return Err(BatchError::Empty);
        }
        let mut buf = self.buf;
        let header = Header61 {
            length: (buf.len() - LENGTH_PREFIX) as i32,
            last_offset_delta: self.count as i32 - 1,
            base_timestamp: self.base_timestamp,
            max_timestamp: self.max_timestamp,
            count: self.count as i32,
            producer: (NO_PRODUCER_ID, -1, -1),
        };
        header.write(&mut buf);
        Ok(buf)
    }
}

/// Keeps the records of `batch` for which `keep` returns true, each copied
/// byte for byte so its offset and timestamp are unchanged, and seals the
/// result. Returns `None` if no record is kept.
pub fn retain(
    batch: &BatchRef<'_>,
    mut keep: impl FnMut(&RecordView<'_>) -> bool,
) -> Option<Vec<u8>> {
    let bytes = batch.as_bytes();
    let records = &bytes[HEADER_LEN..];
    let mut buf = Vec::with_capacity(bytes.len());
    buf.extend_from_slice(&bytes[..HEADER_LEN]);
    let mut count = 0;
    let mut max_timestamp = i64::MIN;
    let mut pos = 0;
    for record in batch.records() {
        let start = pos;
        parse_record(records, &mut pos).expect("records are validated when the batch is made");
        if keep(&record) {
            buf.extend_from_slice(&records[start..pos]);
            count += 1;
            max_timestamp = max_timestamp.max(record.timestamp);
        }
    }
    if count == 0 {
        return None;
    }
    let header = Header61 {
        length: (buf.len() - LENGTH_PREFIX) as i32,
        last_offset_delta: batch.last_offset_delta() as i32,
        base_timestamp: batch.base_timestamp(),
        max_timestamp,
        count,
        // The producer's sequence range stays that of the original batch,
        // so producer state rebuilt from a compacted segment is unchanged.
        producer: (
            batch.producer_id(),
            batch.producer_epoch(),
            batch.base_sequence(),
        ),
    };
    header.write(&mut buf);
    set_base_offset(&mut buf, batch.base_offset());
    seal(&mut buf);
    Some(buf)
}

/// Checks a batch that a producer (a WASM guest) made to be appended and
/// seals it, setting every header field the producer has no business
/// choosing: base offset 0, leader epoch 0, no producer id, epoch or
/// sequence, no compression, transaction or control bits, create-time
/// timestamps, and the largest timestamp recomputed from the records. The
/// records must be numbered 0, 1, 2, ... with the last offset delta and the
/// count saying so: a batch claiming more offsets than it holds would move
/// a topic's end offset past records that do not exist.
pub fn normalize_new(batch: &mut [u8]) -> Result<(), BatchError> {
    let (view, summary) = BatchRef::parse_new(batch)?;
    let count = view.record_count();
    let last_offset_delta = view.last_offset_delta() as usize;
    if !summary.dense || last_offset_delta + 1 != count {
        return Err(BatchError::NotDense {
            records: count,
            last_offset_delta,
        });
    }
    let header = Header61 {
        length: (batch.len() - LENGTH_PREFIX) as i32,
        last_offset_delta: last_offset_delta as i32,
        base_timestamp: view.base_timestamp(),
        max_timestamp: summary.max_timestamp,
        count: count as i32,
        producer: (NO_PRODUCER_ID, -1, -1),
    };
    header.write(batch);
    set_base_offset(batch, 0);
    seal(batch);
    Ok(())
}

/// The header fields the writer and `retain` set; the rest are fixed
/// (no compression, create-time timestamps).
struct Header61 {
    length: i32,
    last_offset_delta: i32,
    base_timestamp: i64,
    max_timestamp: i64,
    count: i32,
    /// Producer id, epoch and base sequence; the writer sets none (−1).
    producer: (i64, i16, i32),
}

impl Header61 {
    fn write(&self, buf: &mut [u8]) {
        put_i32(buf, field::LENGTH, self.length);
        put_i32(buf, field::LEADER_EPOCH, 0);
        buf[field::MAGIC] = MAGIC as u8;
        buf[field::ATTRIBUTES..field::ATTRIBUTES + 2].copy_from_slice(&0i16.to_be_bytes());
        put_i32(buf, field::LAST_OFFSET_DELTA, self.last_offset_delta);
        put_i64(buf, field::BASE_TIMESTAMP, self.base_timestamp);
        put_i64(buf, field::MAX_TIMESTAMP, self.max_timestamp);
        let (id, epoch, base_sequence) = self.producer;
        put_i64(buf, field::PRODUCER_ID, id);
        buf[field::PRODUCER_EPOCH..field::PRODUCER_EPOCH + 2].copy_from_slice(&epoch.to_be_bytes());
        put_i32(buf, field::BASE_SEQUENCE, base_sequence);
        put_i32(buf, field::RECORD_COUNT, self.count);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{BatchRef, Batches, Header, set_producer};
    use proptest::collection;
    use proptest::prelude::*;

    fn unsealed() -> Vec<u8> {
        let mut b = BatchWriter::new();
        for timestamp in [5, 9, 7] {
            b.push(&Record {
                value: Some(b"v"),
                timestamp,
                ..Record::default()
            });
        }
        b.finish_unsealed().unwrap()
    }

    #[test]
    fn normalize_new_sets_the_fields_the_producer_does_not_choose() {
        let mut bytes = unsealed();
        set_base_offset(&mut bytes, 77);
        put_i32(&mut bytes, field::LEADER_EPOCH, 9);
        // Control and transactional bits, producer fields, a lying max timestamp.
        bytes[field::ATTRIBUTES..field::ATTRIBUTES + 2].copy_from_slice(&0x30i16.to_be_bytes());
        put_i64(&mut bytes, field::PRODUCER_ID, 1234);
        put_i32(&mut bytes, field::BASE_SEQUENCE, 55);
        put_i64(&mut bytes, field::MAX_TIMESTAMP, i64::MAX);
        normalize_new(&mut bytes).unwrap();
        let batch = BatchRef::parse(&bytes).expect("sealed and valid");
        assert_eq!(batch.base_offset(), 0);
        assert_eq!(batch.leader_epoch(), 0);
        assert_eq!(batch.attributes(), 0);
        assert_eq!(
            (
                batch.producer_id(),
                batch.producer_epoch(),
                batch.base_sequence()
            ),
            (NO_PRODUCER_ID, -1, -1)
        );
        assert_eq!(batch.max_timestamp(), 9);
        assert_eq!(batch.last_offset_delta(), 2);
    }

    #[test]
    fn normalize_new_refuses_batches_claiming_more_offsets_than_records() {
        for forged in [3, 1_000_000, i32::MAX] {
            let mut bytes = unsealed();
            put_i32(&mut bytes, field::LAST_OFFSET_DELTA, forged);
            assert!(
                matches!(
                    normalize_new(&mut bytes),
                    Err(BatchError::NotDense { records: 3, .. })
                ),
                "last offset delta {forged} accepted"
            );
        }
        // Records numbered with a gap (0, 2) under a matching last delta.
        let mut b = BatchWriter::new();
        b.push(&Record::default());
        let mut gapped = b.finish_unsealed().unwrap();
        put_i32(&mut gapped, field::LAST_OFFSET_DELTA, 1);
        assert!(normalize_new(&mut gapped).is_err());
    }

    fn sample() -> Vec<u8> {
        let mut b = BatchWriter::new();
        b.push(&Record {
            key: Some(b"k1"),
            value: Some(b"hello"),
            headers: &[Header {
                name: "trace",
                value: Some(b"abc"),
            }],
            timestamp: 1_000,
        });
        b.push(&Record {
            key: None,
            value: None,
            headers: &[],
            timestamp: 990,
        });
        b.finish().unwrap()
    }

    #[test]
    fn concatenated_batches_are_walked_and_damage_stops_the_walk() {
        let mut buf = sample();
        buf.extend(sample());
        assert_eq!(Batches::new(&buf).filter(Result::is_ok).count(), 2);
        let last = buf.len() - 1;
        buf[last] ^= 1;
        let results: Vec<_> = Batches::new(&buf).collect();
        assert!(results[0].is_ok() && results[1].is_err() && results.len() == 2);
        assert!(
            Batches::new(&buf[..70]).next().unwrap().is_err(),
            "a torn batch is an error"
        );
    }

    #[test]
    fn copied_records_read_back_identical_with_fresh_offsets() {
        let mut bytes = sample();
        set_base_offset(&mut bytes, 100);
        let input = BatchRef::parse(&bytes).unwrap();
        let mut w = BatchWriter::new();
        for r in input.records().collect::<Vec<_>>().iter().rev() {
            w.push_view(r);
        }
        let out = w.finish().unwrap();
        let out = BatchRef::parse(&out).unwrap();
        let copied: Vec<_> = out.records().collect();
        let original: Vec<_> = input.records().collect();
        assert_eq!(copied.len(), 2);
        for (c, o) in copied.iter().zip(original.iter().rev()) {
            assert_eq!((c.key, c.value, c.timestamp), (o.key, o.value, o.timestamp));
            assert_eq!(
                c.headers().collect::<Vec<_>>(),
                o.headers().collect::<Vec<_>>()
            );
        }
        assert_eq!((copied[0].offset, copied[1].offset), (0, 1));
    }

    #[test]
    fn unsealed_batches_are_refused_until_sealed() {
        let mut w = BatchWriter::new();
        w.push(&Record {
            key: None,
            value: Some(b"v"),
            headers: &[],
            timestamp: 1,
        });
        let mut buf = w.finish_unsealed().unwrap();
        assert!(matches!(
            BatchRef::parse(&buf),
            Err(BatchError::BadCrc { .. })
        ));
        seal(&mut buf);
        assert!(BatchRef::parse(&buf).is_ok());
    }

    #[test]
    fn built_batch_reads_back_field_for_field() {
        let mut bytes = sample();
        set_base_offset(&mut bytes, 40);
        let parsed = BatchRef::parse(&bytes).unwrap();
        assert_eq!(parsed.base_offset(), 40);
        assert_eq!(parsed.last_offset(), 41);
        assert_eq!(parsed.record_count(), 2);
        assert_eq!(parsed.max_timestamp(), 1_000);
        let records: Vec<_> = parsed.records().collect();
        assert_eq!(records[0].offset, 40);
        assert_eq!(records[0].key, Some(&b"k1"[..]));
        assert_eq!(records[0].value, Some(&b"hello"[..]));
        assert_eq!(records[0].timestamp, 1_000);
        let headers: Vec<_> = records[0].headers().collect();
        assert_eq!(
            headers,
            [Header {
                name: "trace",
                value: Some(b"abc")
            }]
        );
        assert_eq!(records[1].offset, 41);
        assert_eq!(records[1].timestamp, 990);
        assert!(records[1].is_tombstone());
        assert_eq!(records[1].key, None);
    }

    #[test]
    fn every_single_byte_flip_in_the_crc_range_is_caught() {
        let good = sample();
        for i in field::ATTRIBUTES..good.len() {
            let mut bad = good.clone();
            bad[i] ^= 0x10;
            assert!(
                BatchRef::parse(&bad).is_err(),
                "flip at byte {i} went unnoticed"
            );
        }
    }

    #[test]
    fn truncations_are_refused_without_panicking() {
        let good = sample();
        for len in 0..good.len() {
            assert!(BatchRef::parse(&good[..len]).is_err(), "truncated to {len}");
        }
    }

    #[test]
    fn records_with_valid_crc_but_bad_framing_are_refused() {
        // Hand-made record whose length prefix claims more than is there,
        // sealed with a correct CRC: only the framing check can catch it.
        let mut buf = vec![0u8; HEADER_LEN];
        buf.extend_from_slice(&[0x7e, 0, 0, 0]);
        Header61 {
            length: (buf.len() - LENGTH_PREFIX) as i32,
            last_offset_delta: 0,
            base_timestamp: 0,
            max_timestamp: 0,
            count: 1,
            producer: (NO_PRODUCER_ID, -1, -1),
        }
        .write(&mut buf);
        seal(&mut buf);
        let err = BatchRef::parse(&buf).unwrap_err();
        assert!(
            matches!(err, BatchError::BadRecord { index: 0, .. }),
            "{err}"
        );
    }

    #[test]
    fn compressed_batches_are_refused() {
        let mut buf = sample();
        buf[field::ATTRIBUTES + 1] = 1; // gzip
        seal(&mut buf);
        assert_eq!(
            BatchRef::parse(&buf).unwrap_err(),
            BatchError::Compressed(1)
        );
    }

    #[test]
    fn retain_keeps_offsets_and_range() {
        let mut bytes = sample();
        set_base_offset(&mut bytes, 7);
        let batch = BatchRef::parse(&bytes).unwrap();
        let kept = retain(&batch, |r| r.key.is_none()).unwrap();
        let kept = BatchRef::parse(&kept).unwrap();
        assert_eq!(kept.base_offset(), 7);
        assert_eq!(kept.last_offset(), 8);
        let records: Vec<_> = kept.records().collect();
        assert_eq!(records.len(), 1);
        assert_eq!(records[0].offset, 8);
        assert_eq!(records[0].timestamp, 990);
        assert!(retain(&batch, |_| false).is_none());
    }

    proptest! {
        /// Updating the CRC for new producer fields gives what sealing
        /// the whole batch again gives.
        #[test]
        fn set_producer_updates_the_crc_as_a_full_seal_would(
            values in collection::vec(collection::vec(any::<u8>(), 0..300), 1..20),
            id in 0..i64::MAX,
            epoch in any::<i16>(),
            sequence in 0..i32::MAX,
        ) {
            let mut writer = BatchWriter::new();
            for value in &values {
                writer.push(&Record { value: Some(value), ..Record::default() });
            }
            let mut bytes = writer.finish().unwrap();
            set_producer(&mut bytes, id, epoch, sequence);
            let mut resealed = bytes.clone();
            crate::seal(&mut resealed);
            prop_assert_eq!(&bytes, &resealed);
            prop_assert!(BatchRef::parse(&bytes).is_ok());
        }
    }

    #[test]
    fn producer_fields_are_written_sealed_and_kept_by_retain() {
        let mut bytes = sample();
        let plain = BatchRef::parse(&bytes).unwrap();
        assert_eq!(
            (
                plain.producer_id(),
                plain.producer_epoch(),
                plain.base_sequence()
            ),
            (NO_PRODUCER_ID, -1, -1)
        );
        set_producer(&mut bytes, 42, 3, 1_000);
        let stamped = BatchRef::parse(&bytes).expect("set_producer re-seals the batch");
        assert_eq!(
            (
                stamped.producer_id(),
                stamped.producer_epoch(),
                stamped.base_sequence()
            ),
            (42, 3, 1_000)
        );
        let kept = retain(&stamped, |r| r.key.is_none()).unwrap();
        let kept = BatchRef::parse(&kept).unwrap();
        assert_eq!(
            (
                kept.producer_id(),
                kept.producer_epoch(),
                kept.base_sequence()
            ),
            (42, 3, 1_000)
        );
        assert_eq!(kept.last_offset_delta(), 1);
    }
}
