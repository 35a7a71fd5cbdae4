//! The record batch: the one format records take on disk, in memory and at
//! the WASM boundary (see `FORMAT.md`).
//!
//! The layout is Kafka's RecordBatch v2, uncompressed. A [`Batch`] owns its
//! bytes (`Bytes`, so clones and slices are free) and is fully validated when
//! made: the header, the CRC-32C and the framing of every record. Iterating
//! its records therefore cannot fail and copies nothing: a [`RecordView`]
//! borrows key, value and headers straight from the buffer.
//!
//! The log assigns offsets by rewriting the base-offset field in place; that
//! field sits outside the CRC, so appending never re-encodes a batch.

use bytes::{Bytes, BytesMut};

use crate::error::BatchError;
use crate::varint;

/// Size of the fixed batch header.
pub const HEADER_LEN: usize = 61;
/// Bytes before the part that the batch-length field counts (base offset + length).
pub const LENGTH_PREFIX: usize = 12;
/// The only supported batch version.
pub const MAGIC: i8 = 2;

/// Byte positions of the header fields.
mod field {
    pub const BASE_OFFSET: usize = 0;
    pub const LENGTH: usize = 8;
    pub const LEADER_EPOCH: usize = 12;
    pub const MAGIC: usize = 16;
    pub const CRC: usize = 17;
    pub const ATTRIBUTES: usize = 21;
    pub const LAST_OFFSET_DELTA: usize = 23;
    pub const BASE_TIMESTAMP: usize = 27;
    pub const MAX_TIMESTAMP: usize = 35;
    pub const PRODUCER_ID: usize = 43;
    pub const PRODUCER_EPOCH: usize = 51;
    pub const BASE_SEQUENCE: usize = 53;
    pub const RECORD_COUNT: usize = 57;
}

const COMPRESSION_MASK: i16 = 0x07;

/// A record header: a name and an optional byte value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header<'a> {
    pub name: &'a str,
    pub value: Option<&'a [u8]>,
}

/// A record to be encoded into a batch. The log assigns its offset.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Record<'a> {
    pub key: Option<&'a [u8]>,
    /// `None` makes the record a tombstone (it deletes its key in compacted topics).
    pub value: Option<&'a [u8]>,
    pub headers: &'a [Header<'a>],
    /// Milliseconds since the Unix epoch.
    pub timestamp: i64,
}

/// A borrowed view of one record inside a [`Batch`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordView<'a> {
    pub offset: u64,
    pub timestamp: i64,
    pub key: Option<&'a [u8]>,
    pub value: Option<&'a [u8]>,
    headers: &'a [u8],
    header_count: usize,
}

impl<'a> RecordView<'a> {
    /// The record's headers, in the order they were written.
    pub fn headers(&self) -> Headers<'a> {
        Headers {
            buf: self.headers,
            remaining: self.header_count,
        }
    }

    /// True for a record without a value (a deletion marker).
    pub fn is_tombstone(&self) -> bool {
        self.value.is_none()
    }
}

/// Iterator over a record's headers.
#[derive(Debug, Clone)]
pub struct Headers<'a> {
    buf: &'a [u8],
    remaining: usize,
}

impl<'a> Iterator for Headers<'a> {
    type Item = Header<'a>;

    fn next(&mut self) -> Option<Header<'a>> {
        if self.remaining == 0 {
            return None;
        }
        self.remaining -= 1;
        let mut pos = 0;
        let (name, value) =
            parse_header(self.buf, &mut pos).expect("headers are validated when the batch is made");
        self.buf = &self.buf[pos..];
        let name = std::str::from_utf8(name)
            .expect("header names are validated as UTF-8 when the batch is made");
        Some(Header { name, value })
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.remaining, Some(self.remaining))
    }
}

/// Builds a batch record by record. Offsets are assigned relative to the
/// batch (0, 1, 2...) and made absolute when the log appends the batch.
#[derive(Debug)]
pub struct BatchBuilder {
    buf: Vec<u8>,
    count: u32,
    base_timestamp: i64,
    max_timestamp: i64,
}

impl Default for BatchBuilder {
    fn default() -> Self {
        Self::with_capacity(0)
    }
}

impl BatchBuilder {
    pub fn new() -> Self {
        Self::default()
    }

    /// A builder whose buffer has room for `bytes` of records up front.
    pub fn with_capacity(bytes: usize) -> Self {
        let mut buf = Vec::with_capacity(HEADER_LEN + bytes);
        buf.resize(HEADER_LEN, 0);
        BatchBuilder {
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

    /// Writes the header and CRC. Fails only when no record was pushed.
    pub fn finish(self) -> Result<Batch, BatchError> {
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
        };
        header.write(&mut buf);
        Ok(Batch {
            bytes: Bytes::from(buf),
        })
    }
}

/// The header fields the builder and compaction set; the rest are fixed
/// (no producer, no compression, create-time timestamps).
struct Header61 {
    length: i32,
    last_offset_delta: i32,
    base_timestamp: i64,
    max_timestamp: i64,
    count: i32,
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
        put_i64(buf, field::PRODUCER_ID, -1);
        buf[field::PRODUCER_EPOCH..field::PRODUCER_EPOCH + 2]
            .copy_from_slice(&(-1i16).to_be_bytes());
        put_i32(buf, field::BASE_SEQUENCE, -1);
        put_i32(buf, field::RECORD_COUNT, self.count);
        let crc = crc32c::crc32c(&buf[field::ATTRIBUTES..]);
        buf[field::CRC..field::CRC + 4].copy_from_slice(&crc.to_be_bytes());
    }
}

/// A validated record batch.
#[derive(Clone, PartialEq, Eq)]
pub struct Batch {
    bytes: Bytes,
}

impl std::fmt::Debug for Batch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Batch")
            .field("base_offset", &self.base_offset())
            .field("records", &self.record_count())
            .field("bytes", &self.bytes.len())
            .finish()
    }
}

impl Batch {
    /// Validates `bytes` as exactly one batch: header, length, magic, CRC and
    /// the framing of every record. Compressed batches are refused.
    pub fn from_bytes(bytes: Bytes) -> Result<Batch, BatchError> {
        if bytes.len() < HEADER_LEN {
            return Err(BatchError::TooShort {
                len: bytes.len(),
                min: HEADER_LEN,
            });
        }
        let declared = Self::declared_len(&bytes).ok_or(BatchError::LengthMismatch {
            declared: 0,
            actual: bytes.len(),
        })?;
        if declared != bytes.len() {
            return Err(BatchError::LengthMismatch {
                declared,
                actual: bytes.len(),
            });
        }
        let magic = bytes[field::MAGIC] as i8;
        if magic != MAGIC {
            return Err(BatchError::BadMagic(magic));
        }
        let stored = u32::from_be_bytes(
            bytes[field::CRC..field::CRC + 4]
                .try_into()
                .expect("4 bytes"),
        );
        let computed = crc32c::crc32c(&bytes[field::ATTRIBUTES..]);
        if stored != computed {
            return Err(BatchError::BadCrc { stored, computed });
        }
        let batch = Batch { bytes };
        let codec = (batch.attributes() & COMPRESSION_MASK) as u8;
        if codec != 0 {
            return Err(BatchError::Compressed(codec));
        }
        batch.validate_records()?;
        Ok(batch)
    }

    /// Wraps bytes that were validated by `from_bytes` before (the log
    /// re-reading a batch it verified earlier in this process).
    pub(crate) fn from_verified(bytes: Bytes) -> Batch {
        Batch { bytes }
    }

    /// Total length of the batch that starts at `header`, from its length
    /// field, or `None` if the field is negative or too small to be a batch.
    /// `header` needs at least [`LENGTH_PREFIX`] bytes.
    pub fn declared_len(header: &[u8]) -> Option<usize> {
        let length = i32::from_be_bytes(header[field::LENGTH..field::LENGTH + 4].try_into().ok()?);
        let total = usize::try_from(length).ok()? + LENGTH_PREFIX;
        (total >= HEADER_LEN).then_some(total)
    }

    fn validate_records(&self) -> Result<(), BatchError> {
        let declared = self.record_count();
        let last_delta = self.last_offset_delta();
        if declared == 0 {
            return Err(BatchError::Empty);
        }
        let buf = &self.bytes[HEADER_LEN..];
        let mut pos = 0;
        let mut found = 0;
        let mut previous_delta = -1i64;
        while pos < buf.len() {
            let start = pos;
            let bad = |reason| BatchError::BadRecord {
                index: found,
                position: HEADER_LEN + start,
                reason,
            };
            let raw = parse_record(buf, &mut pos).map_err(bad)?;
            if raw.offset_delta <= previous_delta || raw.offset_delta > i64::from(last_delta) {
                return Err(bad(
                    "offset delta out of order or beyond the batch's last offset",
                ));
            }
            previous_delta = raw.offset_delta;
            let mut headers = raw.headers;
            for _ in 0..raw.header_count {
                let mut hpos = 0;
                let (name, _) = parse_header(headers, &mut hpos).map_err(bad)?;
                std::str::from_utf8(name).map_err(|_| bad("header name is not UTF-8"))?;
                headers = &headers[hpos..];
            }
            found += 1;
        }
        if found != declared {
            return Err(BatchError::CountMismatch {
                declared,
                actual: found,
            });
        }
        Ok(())
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
        get_i64(&self.bytes, field::BASE_OFFSET) as u64
    }

    /// Offset of the batch's last record slot (records removed by compaction
    /// leave gaps; this stays the end of the batch's offset range).
    pub fn last_offset(&self) -> u64 {
        self.base_offset() + self.last_offset_delta() as u64
    }

    /// First offset after this batch.
    pub fn next_offset(&self) -> u64 {
        self.last_offset() + 1
    }

    fn last_offset_delta(&self) -> u32 {
        get_i32(&self.bytes, field::LAST_OFFSET_DELTA).max(0) as u32
    }

    pub fn record_count(&self) -> usize {
        get_i32(&self.bytes, field::RECORD_COUNT).max(0) as usize
    }

    pub fn base_timestamp(&self) -> i64 {
        get_i64(&self.bytes, field::BASE_TIMESTAMP)
    }

    /// Largest record timestamp in the batch.
    pub fn max_timestamp(&self) -> i64 {
        get_i64(&self.bytes, field::MAX_TIMESTAMP)
    }

    /// Partition leader epoch; the embedded log always writes 0.
    pub fn leader_epoch(&self) -> i32 {
        get_i32(&self.bytes, field::LEADER_EPOCH)
    }

    fn attributes(&self) -> i16 {
        i16::from_be_bytes([
            self.bytes[field::ATTRIBUTES],
            self.bytes[field::ATTRIBUTES + 1],
        ])
    }

    /// The encoded records, without the header: what crosses the WASM boundary.
    pub fn records_bytes(&self) -> Bytes {
        self.bytes.slice(HEADER_LEN..)
    }

    /// Iterates the records without copying.
    pub fn records(&self) -> Records<'_> {
        Records {
            buf: &self.bytes[HEADER_LEN..],
            base_offset: self.base_offset(),
            base_timestamp: self.base_timestamp(),
        }
    }

    /// Returns the same batch with its base offset set to `base_offset`.
    /// The CRC does not cover this field, so nothing else changes.
    pub fn with_base_offset(self, base_offset: u64) -> Batch {
        let mut bytes = BytesMut::from(self.bytes);
        put_i64(&mut bytes, field::BASE_OFFSET, base_offset as i64);
        Batch {
            bytes: bytes.freeze(),
        }
    }

    /// Keeps the records for which `keep` returns true, each copied byte for
    /// byte so its offset and timestamp are unchanged, and re-seals the batch.
    /// Returns `None` if no record is kept.
    pub fn retain(&self, mut keep: impl FnMut(&RecordView<'_>) -> bool) -> Option<Batch> {
        let records = &self.bytes[HEADER_LEN..];
        let mut buf = Vec::with_capacity(self.bytes.len());
        buf.extend_from_slice(&self.bytes[..HEADER_LEN]);
        let mut count = 0;
        let mut max_timestamp = i64::MIN;
        let mut pos = 0;
        for record in self.records() {
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
            last_offset_delta: self.last_offset_delta() as i32,
            base_timestamp: self.base_timestamp(),
            max_timestamp,
            count,
        };
        header.write(&mut buf);
        put_i64(&mut buf, field::BASE_OFFSET, self.base_offset() as i64);
        Some(Batch {
            bytes: Bytes::from(buf),
        })
    }
}

/// Iterator over the records of a [`Batch`].
#[derive(Debug, Clone)]
pub struct Records<'a> {
    buf: &'a [u8],
    base_offset: u64,
    base_timestamp: i64,
}

impl<'a> Iterator for Records<'a> {
    type Item = RecordView<'a>;

    #[inline]
    fn next(&mut self) -> Option<RecordView<'a>> {
        if self.buf.is_empty() {
            return None;
        }
        let mut pos = 0;
        let raw =
            parse_record(self.buf, &mut pos).expect("records are validated when the batch is made");
        self.buf = &self.buf[pos..];
        Some(RecordView {
            offset: self.base_offset + raw.offset_delta as u64,
            timestamp: self.base_timestamp.wrapping_add(raw.timestamp_delta),
            key: raw.key,
            value: raw.value,
            headers: raw.headers,
            header_count: raw.header_count,
        })
    }
}

/// One record's fields as found in the buffer.
struct RawRecord<'a> {
    timestamp_delta: i64,
    offset_delta: i64,
    key: Option<&'a [u8]>,
    value: Option<&'a [u8]>,
    headers: &'a [u8],
    header_count: usize,
}

/// Parses the record at `*pos`, checking every length against the buffer
/// and the record's own length prefix, and advances `*pos` past it.
#[inline]
fn parse_record<'a>(buf: &'a [u8], pos: &mut usize) -> Result<RawRecord<'a>, &'static str> {
    let len = varint::get(buf, pos).ok_or("truncated record length")?;
    let len = usize::try_from(len).map_err(|_| "negative record length")?;
    let end = pos
        .checked_add(len)
        .filter(|&e| e <= buf.len())
        .ok_or("record length runs past the batch")?;
    let body = &buf[..end];
    let mut p = *pos + 1; // attributes byte
    if p > end {
        return Err("record too short for its attributes");
    }
    let timestamp_delta = varint::get(body, &mut p).ok_or("truncated timestamp delta")?;
    let offset_delta = varint::get(body, &mut p).ok_or("truncated offset delta")?;
    if !(0..=i64::from(i32::MAX)).contains(&offset_delta) {
        return Err("offset delta out of range");
    }
    let key = get_nullable(body, &mut p).ok_or("bad key length")?;
    let value = get_nullable(body, &mut p).ok_or("bad value length")?;
    let header_count = varint::get(body, &mut p).ok_or("truncated header count")?;
    let header_count = usize::try_from(header_count).map_err(|_| "negative header count")?;
    let headers_start = p;
    for _ in 0..header_count {
        parse_header(body, &mut p)?;
    }
    if p != end {
        return Err("record length does not match its fields");
    }
    *pos = end;
    Ok(RawRecord {
        timestamp_delta,
        offset_delta,
        key,
        value,
        headers: &body[headers_start..end],
        header_count,
    })
}

fn parse_header<'a>(
    buf: &'a [u8],
    pos: &mut usize,
) -> Result<(&'a [u8], Option<&'a [u8]>), &'static str> {
    let name = get_nullable(buf, pos)
        .ok_or("bad header name length")?
        .ok_or("null header name")?;
    let value = get_nullable(buf, pos).ok_or("bad header value length")?;
    Ok((name, value))
}

/// Reads a varint length (-1 meaning null) followed by that many bytes.
#[inline]
fn get_nullable<'a>(buf: &'a [u8], pos: &mut usize) -> Option<Option<&'a [u8]>> {
    let len = varint::get(buf, pos)?;
    if len == -1 {
        return Some(None);
    }
    let len = usize::try_from(len).ok()?;
    let end = pos.checked_add(len).filter(|&e| e <= buf.len())?;
    let bytes = &buf[*pos..end];
    *pos = end;
    Some(Some(bytes))
}

fn put_nullable(buf: &mut Vec<u8>, bytes: Option<&[u8]>) {
    match bytes {
        None => varint::put(buf, -1),
        Some(b) => {
            varint::put(buf, b.len() as i64);
            buf.extend_from_slice(b);
        }
    }
}

fn nullable_len(bytes: Option<&[u8]>) -> usize {
    match bytes {
        None => 1,
        Some(b) => varint::len(b.len() as i64) + b.len(),
    }
}

fn record_body_len(record: &Record<'_>, timestamp_delta: i64, offset_delta: i64) -> usize {
    let headers: usize = record
        .headers
        .iter()
        .map(|h| nullable_len(Some(h.name.as_bytes())) + nullable_len(h.value))
        .sum();
    1 + varint::len(timestamp_delta)
        + varint::len(offset_delta)
        + nullable_len(record.key)
        + nullable_len(record.value)
        + varint::len(record.headers.len() as i64)
        + headers
}

fn get_i32(buf: &[u8], at: usize) -> i32 {
    i32::from_be_bytes(buf[at..at + 4].try_into().expect("header is validated"))
}

fn get_i64(buf: &[u8], at: usize) -> i64 {
    i64::from_be_bytes(buf[at..at + 8].try_into().expect("header is validated"))
}

fn put_i32(buf: &mut [u8], at: usize, v: i32) {
    buf[at..at + 4].copy_from_slice(&v.to_be_bytes());
}

fn put_i64(buf: &mut [u8], at: usize, v: i64) {
    buf[at..at + 8].copy_from_slice(&v.to_be_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Batch {
        let mut b = BatchBuilder::new();
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
    fn built_batch_reads_back_field_for_field() {
        let batch = sample().with_base_offset(40);
        let parsed = Batch::from_bytes(batch.as_bytes().clone()).unwrap();
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
    fn base_offset_is_outside_the_crc() {
        let a = sample();
        let b = a.clone().with_base_offset(1 << 40);
        assert_eq!(a.as_bytes()[17..], b.as_bytes()[17..]);
        assert!(Batch::from_bytes(b.into_bytes()).is_ok());
    }

    #[test]
    fn every_single_byte_flip_in_the_crc_range_is_caught() {
        let good = sample().into_bytes();
        for i in field::ATTRIBUTES..good.len() {
            let mut bad = good.to_vec();
            bad[i] ^= 0x10;
            assert!(
                Batch::from_bytes(Bytes::from(bad)).is_err(),
                "flip at byte {i} went unnoticed"
            );
        }
    }

    #[test]
    fn truncations_are_refused_without_panicking() {
        let good = sample().into_bytes();
        for len in 0..good.len() {
            assert!(
                Batch::from_bytes(good.slice(..len)).is_err(),
                "truncated to {len}"
            );
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
        }
        .write(&mut buf);
        let err = Batch::from_bytes(Bytes::from(buf)).unwrap_err();
        assert!(
            matches!(err, BatchError::BadRecord { index: 0, .. }),
            "{err}"
        );
    }

    #[test]
    fn compressed_batches_are_refused() {
        let mut buf = sample().into_bytes().to_vec();
        buf[field::ATTRIBUTES + 1] = 1; // gzip
        let crc = crc32c::crc32c(&buf[field::ATTRIBUTES..]);
        buf[field::CRC..field::CRC + 4].copy_from_slice(&crc.to_be_bytes());
        assert_eq!(
            Batch::from_bytes(Bytes::from(buf)).unwrap_err(),
            BatchError::Compressed(1)
        );
    }

    #[test]
    fn retain_keeps_offsets_and_range() {
        let batch = sample().with_base_offset(7);
        let kept = batch.retain(|r| r.key.is_none()).unwrap();
        let kept = Batch::from_bytes(kept.into_bytes()).unwrap();
        assert_eq!(kept.base_offset(), 7);
        assert_eq!(kept.last_offset(), 8);
        let records: Vec<_> = kept.records().collect();
        assert_eq!(records.len(), 1);
        assert_eq!(records[0].offset, 8);
        assert_eq!(records[0].timestamp, 990);
        assert!(batch.retain(|_| false).is_none());
    }
}
