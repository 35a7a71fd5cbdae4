//! The batch: header layout, validation and a borrowed, validated view.
//!
//! [`BatchRef::parse`] checks a whole batch (length, magic, CRC-32C, no
//! compression, the framing of every record); the view it returns can then
//! be iterated without failure and without copying. [`Batches`] walks a
//! buffer of concatenated batches, as the log stores them and as they cross
//! the WASM boundary.

use crate::error::BatchError;
use crate::record::{Records, parse_header, parse_record};

/// Size of the fixed batch header.
pub const HEADER_LEN: usize = 61;
/// Bytes before the part that the batch-length field counts (base offset + length).
pub const LENGTH_PREFIX: usize = 12;
/// The only supported batch version.
pub const MAGIC: i8 = 2;

/// Byte positions of the header fields.
pub mod field {
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

/// Total length of the batch that starts at `header`, from its length
/// field, or `None` if `header` is shorter than [`LENGTH_PREFIX`] or the
/// field is negative or too small to be a batch.
pub fn declared_len(header: &[u8]) -> Option<usize> {
    let field = header.get(field::LENGTH..field::LENGTH + 4)?;
    let length = i32::from_be_bytes(field.try_into().ok()?);
    let total = usize::try_from(length).ok()? + LENGTH_PREFIX;
    (total >= HEADER_LEN).then_some(total)
}

/// Computes and writes the CRC-32C of a complete batch (over everything
/// after the CRC field). `batch` must be at least [`HEADER_LEN`] long.
pub fn seal(batch: &mut [u8]) {
    let crc = crc32c::crc32c(&batch[field::ATTRIBUTES..]);
    batch[field::CRC..field::CRC + 4].copy_from_slice(&crc.to_be_bytes());
}

/// Writes the base offset of a batch in place (outside the CRC).
pub fn set_base_offset(batch: &mut [u8], base_offset: u64) {
    put_i64(batch, field::BASE_OFFSET, base_offset as i64);
}

/// The producer id of a batch that carries none (Kafka's `NO_PRODUCER_ID`).
pub const NO_PRODUCER_ID: i64 = -1;

/// Writes the idempotent-producer fields (producer id, epoch and the
/// sequence number of the first record) of a sealed batch and updates its
/// CRC: the fields are inside the CRC, so the batch is complete when this
/// returns (no separate [`seal`] needed). `batch` must be sealed (its CRC
/// right) and at least [`HEADER_LEN`] long.
///
/// The CRC is updated without a pass over the records. The CRC of
/// header `H` then records `R` is `shift(crc(H), len(R)) ^ crc(R)`, and
/// `shift` is linear, so changing `H` to `H'` changes the CRC by
/// `shift(crc(H) ^ crc(H'), len(R))`, whatever `R` holds.
pub fn set_producer(batch: &mut [u8], id: i64, epoch: i16, base_sequence: i32) {
    let header = field::ATTRIBUTES..HEADER_LEN;
    let before = crc32c::crc32c(&batch[header.clone()]);
    put_i64(batch, field::PRODUCER_ID, id);
    batch[field::PRODUCER_EPOCH..field::PRODUCER_EPOCH + 2].copy_from_slice(&epoch.to_be_bytes());
    put_i32(batch, field::BASE_SEQUENCE, base_sequence);
    let after = crc32c::crc32c(&batch[header]);
    let records = batch.len() - HEADER_LEN;
    let change = crate::crc_shift::shift(before ^ after, records);
    let crc = u32::from_be_bytes(
        batch[field::CRC..field::CRC + 4]
            .try_into()
            .expect("4 bytes"),
    );
    batch[field::CRC..field::CRC + 4].copy_from_slice(&(crc ^ change).to_be_bytes());
}

/// What validating a batch's records found out.
pub(crate) struct RecordsSummary {
    /// Offset deltas are exactly 0, 1, 2, ... (no gaps).
    pub dense: bool,
    /// The largest record timestamp.
    pub max_timestamp: i64,
}

/// A borrowed, validated batch.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct BatchRef<'a> {
    bytes: &'a [u8],
}

impl std::fmt::Debug for BatchRef<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BatchRef")
            .field("base_offset", &self.base_offset())
            .field("records", &self.record_count())
            .field("bytes", &self.bytes.len())
            .finish()
    }
}

impl<'a> BatchRef<'a> {
    /// Validates `bytes` as exactly one batch: header, length, magic, CRC and
    /// the framing of every record. Compressed batches are refused.
    pub fn parse(bytes: &'a [u8]) -> Result<BatchRef<'a>, BatchError> {
        Self::parse_checking(bytes, true).map(|(batch, _)| batch)
    }

    /// Like [`parse`](Self::parse) but does not check the CRC: for a batch
    /// whose CRC field is still to be written (see [`seal`]).
    pub fn parse_unsealed(bytes: &'a [u8]) -> Result<BatchRef<'a>, BatchError> {
        Self::parse_checking(bytes, false).map(|(batch, _)| batch)
    }

    /// Checks the header, the CRC if asked, and every record, in one pass
    /// over the records, returning what they say.
    fn parse_checking(
        bytes: &'a [u8],
        check_crc: bool,
    ) -> Result<(BatchRef<'a>, RecordsSummary), BatchError> {
        if bytes.len() < HEADER_LEN {
            return Err(BatchError::TooShort {
                len: bytes.len(),
                min: HEADER_LEN,
            });
        }
        let declared = declared_len(bytes).ok_or(BatchError::LengthMismatch {
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
        if check_crc {
            let stored = u32::from_be_bytes(
                bytes[field::CRC..field::CRC + 4]
                    .try_into()
                    .expect("4 bytes"),
            );
            let computed = crc32c::crc32c(&bytes[field::ATTRIBUTES..]);
            if stored != computed {
                return Err(BatchError::BadCrc { stored, computed });
            }
        }
        let batch = BatchRef { bytes };
        let codec = (batch.attributes() & COMPRESSION_MASK) as u8;
        if codec != 0 {
            return Err(BatchError::Compressed(codec));
        }
        let summary = batch.validate_records()?;
        Ok((batch, summary))
    }

    /// Like [`parse_unsealed`](Self::parse_unsealed), for a batch a
    /// producer made to be appended, also returning what its records say
    /// (see [`normalize_new`](crate::normalize_new)).
    pub(crate) fn parse_new(bytes: &'a [u8]) -> Result<(BatchRef<'a>, RecordsSummary), BatchError> {
        Self::parse_checking(bytes, false)
    }

    /// Wraps bytes that [`parse`](Self::parse) accepted before (for example
    /// when re-reading a batch already checked). Iterating bytes that were
    /// never validated may panic.
    pub fn assume_valid(bytes: &'a [u8]) -> BatchRef<'a> {
        BatchRef { bytes }
    }

    fn validate_records(&self) -> Result<RecordsSummary, BatchError> {
        let declared = self.record_count();
        let last_delta = self.last_offset_delta();
        if declared == 0 {
            return Err(BatchError::Empty);
        }
        let buf = &self.bytes[HEADER_LEN..];
        let mut pos = 0;
        let mut found = 0;
        let mut previous_delta = -1i64;
        let mut summary = RecordsSummary {
            dense: true,
            max_timestamp: i64::MIN,
        };
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
            summary.dense &= raw.offset_delta == found as i64;
            summary.max_timestamp = summary
                .max_timestamp
                .max(self.base_timestamp().wrapping_add(raw.timestamp_delta));
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
        Ok(summary)
    }

    /// The whole encoded batch.
    pub fn as_bytes(&self) -> &'a [u8] {
        self.bytes
    }

    pub fn base_offset(&self) -> u64 {
        get_i64(self.bytes, field::BASE_OFFSET) as u64
    }

    /// Offset of the batch's last record slot (records removed by compaction
    /// leave gaps; this stays the end of the batch's offset range).
    pub fn last_offset(&self) -> u64 {
        self.base_offset() + u64::from(self.last_offset_delta())
    }

    /// First offset after this batch.
    pub fn next_offset(&self) -> u64 {
        self.last_offset() + 1
    }

    /// Offset of the last record slot relative to the base offset. For an
    /// idempotent producer's batch, also the last record's sequence number
    /// relative to [`base_sequence`](Self::base_sequence) (compaction keeps it).
    pub fn last_offset_delta(&self) -> u32 {
        get_i32(self.bytes, field::LAST_OFFSET_DELTA).max(0) as u32
    }

    pub fn record_count(&self) -> usize {
        get_i32(self.bytes, field::RECORD_COUNT).max(0) as usize
    }

    pub fn base_timestamp(&self) -> i64 {
        get_i64(self.bytes, field::BASE_TIMESTAMP)
    }

    /// Largest record timestamp in the batch.
    pub fn max_timestamp(&self) -> i64 {
        get_i64(self.bytes, field::MAX_TIMESTAMP)
    }

    /// Partition leader epoch; the embedded log always writes 0.
    pub fn leader_epoch(&self) -> i32 {
        get_i32(self.bytes, field::LEADER_EPOCH)
    }

    /// The idempotent producer that wrote the batch, or [`NO_PRODUCER_ID`] (−1).
    pub fn producer_id(&self) -> i64 {
        get_i64(self.bytes, field::PRODUCER_ID)
    }

    /// The producer's epoch (−1 when the batch has no producer).
    pub fn producer_epoch(&self) -> i16 {
        i16::from_be_bytes([
            self.bytes[field::PRODUCER_EPOCH],
            self.bytes[field::PRODUCER_EPOCH + 1],
        ])
    }

    /// The producer's sequence number of the first record (−1 when the
    /// batch has no producer); record `i` has `base_sequence + i`.
    pub fn base_sequence(&self) -> i32 {
        get_i32(self.bytes, field::BASE_SEQUENCE)
    }

    pub(crate) fn attributes(&self) -> i16 {
        i16::from_be_bytes([
            self.bytes[field::ATTRIBUTES],
            self.bytes[field::ATTRIBUTES + 1],
        ])
    }

    /// Iterates the records without copying.
    pub fn records(&self) -> Records<'a> {
        Records {
            buf: &self.bytes[HEADER_LEN..],
            base_offset: self.base_offset(),
            base_timestamp: self.base_timestamp(),
        }
    }
}

/// Iterator over a buffer of concatenated batches. After the first error
/// it stops.
#[derive(Debug, Clone)]
pub struct Batches<'a> {
    buf: &'a [u8],
    check: bool,
    failed: bool,
}

impl<'a> Batches<'a> {
    /// Walks `buf`, validating every batch fully.
    pub fn new(buf: &'a [u8]) -> Batches<'a> {
        Batches {
            buf,
            check: true,
            failed: false,
        }
    }

    /// Walks `buf`, checking only that batch lengths fit, for batches that
    /// were validated before (a guest reading what the host checked).
    pub fn assume_valid(buf: &'a [u8]) -> Batches<'a> {
        Batches {
            buf,
            check: false,
            failed: false,
        }
    }
}

impl<'a> Iterator for Batches<'a> {
    type Item = Result<BatchRef<'a>, BatchError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.buf.is_empty() || self.failed {
            return None;
        }
        let result = match declared_len(self.buf) {
            Some(len) if len <= self.buf.len() => {
                let (batch, rest) = self.buf.split_at(len);
                self.buf = rest;
                if self.check {
                    BatchRef::parse(batch)
                } else {
                    Ok(BatchRef::assume_valid(batch))
                }
            }
            Some(len) => Err(BatchError::LengthMismatch {
                declared: len,
                actual: self.buf.len(),
            }),
            None => Err(BatchError::TooShort {
                len: self.buf.len(),
                min: HEADER_LEN,
            }),
        };
        self.failed = result.is_err();
        Some(result)
    }
}

pub(crate) fn get_i32(buf: &[u8], at: usize) -> i32 {
    i32::from_be_bytes(buf[at..at + 4].try_into().expect("header is validated"))
}

pub(crate) fn get_i64(buf: &[u8], at: usize) -> i64 {
    i64::from_be_bytes(buf[at..at + 8].try_into().expect("header is validated"))
}

pub(crate) fn put_i32(buf: &mut [u8], at: usize, v: i32) {
    buf[at..at + 4].copy_from_slice(&v.to_be_bytes());
}

pub(crate) fn put_i64(buf: &mut [u8], at: usize, v: i64) {
    buf[at..at + 8].copy_from_slice(&v.to_be_bytes());
}
