//! Record-batch filters shared verbatim by the native host benchmark and the
//! wasm guest component, so both sides run identical code.
//!
//! Two encodings:
//!
//! * **kafka** – the *records section* of a Kafka RecordBatch v2: a sequence of
//!   records, each
//!   `length: varint, attributes: i8, timestampDelta: varlong, offsetDelta: varint,
//!    keyLength: varint (-1 = null), key, valueLength: varint (-1 = null), value,
//!    headerCount: varint, headers*`
//!   where a header is `keyLength: varint, key, valueLength: varint (-1 = null), value`.
//!   Every varint/varlong is zigzag encoded, as in Kafka.
//!
//! * **framed** – fixed-width little-endian framing:
//!   `total_len: u32 (bytes after this field), timestamp: i64, key_len: u32
//!    (u32::MAX = null), key, value_len: u32 (u32::MAX = null), value,
//!    header_count: u16, headers*` where a header is
//!   `key_len: u32, key, value_len: u32 (u32::MAX = null), value`.
//!
//! The filter keeps records whose value does not start with `b'x'` (a null or
//! empty value is kept). Parsing is fully bounds checked and never panics; on
//! malformed input the filter returns [`Error`] and the boundary wrappers hand
//! back an empty list.
#![no_std]
#![forbid(unsafe_code)]

extern crate alloc;

use alloc::vec::Vec;

/// Malformed input. The position is the byte offset in the input batch where
/// the bad record starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Error {
    pub at: usize,
}

/// Value prefix that causes a record to be dropped.
pub const DROP_PREFIX: u8 = b'x';

#[inline(always)]
fn keep(value: Option<&[u8]>) -> bool {
    !matches!(value, Some([DROP_PREFIX, ..]))
}

// ---------------------------------------------------------------------------
// Varint helpers (Kafka: zigzag, LEB128 base-128)
// ---------------------------------------------------------------------------

#[inline(always)]
fn read_uvarint64(buf: &[u8], pos: &mut usize, max_bytes: usize) -> Option<u64> {
    let mut result: u64 = 0;
    let mut shift = 0u32;
    let mut i = 0;
    loop {
        let b = *buf.get(*pos)?;
        *pos += 1;
        result |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Some(result);
        }
        i += 1;
        shift += 7;
        if i >= max_bytes {
            return None;
        }
    }
}

#[inline(always)]
fn read_varint(buf: &[u8], pos: &mut usize) -> Option<i32> {
    let u = read_uvarint64(buf, pos, 5)?;
    let u = u32::try_from(u).ok()?;
    Some(((u >> 1) as i32) ^ -((u & 1) as i32))
}

#[inline(always)]
fn read_varlong(buf: &[u8], pos: &mut usize) -> Option<i64> {
    let u = read_uvarint64(buf, pos, 10)?;
    Some(((u >> 1) as i64) ^ -((u & 1) as i64))
}

#[inline(always)]
fn zigzag32(v: i32) -> u64 {
    ((v << 1) ^ (v >> 31)) as u32 as u64
}

#[inline(always)]
fn zigzag64(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

#[inline(always)]
fn uvarint_len(mut u: u64) -> usize {
    let mut n = 1;
    while u >= 0x80 {
        u >>= 7;
        n += 1;
    }
    n
}

#[inline(always)]
fn write_uvarint(out: &mut Vec<u8>, mut u: u64) {
    while u >= 0x80 {
        out.push((u as u8) | 0x80);
        u >>= 7;
    }
    out.push(u as u8);
}

#[inline(always)]
fn write_varint(out: &mut Vec<u8>, v: i32) {
    write_uvarint(out, zigzag32(v));
}

#[inline(always)]
fn write_varlong(out: &mut Vec<u8>, v: i64) {
    write_uvarint(out, zigzag64(v));
}

#[inline(always)]
fn varint_len(v: i32) -> usize {
    uvarint_len(zigzag32(v))
}

#[inline(always)]
fn varlong_len(v: i64) -> usize {
    uvarint_len(zigzag64(v))
}

/// Read a varint length-prefixed (nullable) byte string.
#[inline(always)]
fn read_kafka_bytes<'a>(buf: &'a [u8], pos: &mut usize) -> Option<Option<&'a [u8]>> {
    let len = read_varint(buf, pos)?;
    if len == -1 {
        return Some(None);
    }
    let len = usize::try_from(len).ok()?;
    let end = pos.checked_add(len)?;
    let s = buf.get(*pos..end)?;
    *pos = end;
    Some(Some(s))
}

#[inline(always)]
fn kafka_bytes_len(b: Option<&[u8]>) -> usize {
    match b {
        None => varint_len(-1),
        Some(s) => varint_len(s.len() as i32) + s.len(),
    }
}

#[inline(always)]
fn write_kafka_bytes(out: &mut Vec<u8>, b: Option<&[u8]>) {
    match b {
        None => write_varint(out, -1),
        Some(s) => {
            write_varint(out, s.len() as i32);
            out.extend_from_slice(s);
        }
    }
}

// ---------------------------------------------------------------------------
// Kafka records
// ---------------------------------------------------------------------------

/// One fully parsed Kafka record. Headers are validated during parsing and
/// kept as the raw header bytes plus count (re-encoded field by field on write).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KafkaRecord<'a> {
    pub attributes: i8,
    pub timestamp_delta: i64,
    pub offset_delta: i32,
    pub key: Option<&'a [u8]>,
    pub value: Option<&'a [u8]>,
    pub header_count: i32,
    /// Raw bytes of the headers (validated).
    pub headers_raw: &'a [u8],
    /// Length of the headers when re-encoded canonically.
    pub headers_encoded_len: usize,
}

/// Parse one record starting at `*pos`; on success `*pos` is advanced past
/// it and the whole record slice (length prefix included) is returned too.
#[inline(always)]
pub fn parse_kafka_record<'a>(
    buf: &'a [u8],
    pos: &mut usize,
) -> Option<(KafkaRecord<'a>, &'a [u8])> {
    let start = *pos;
    let len = read_varint(buf, pos)?;
    let len = usize::try_from(len).ok()?;
    let body_start = *pos;
    let end = body_start.checked_add(len)?;
    // Restrict all further reads to the record body.
    let body = buf.get(..end)?;
    let mut p = body_start;
    let attributes = *body.get(p)? as i8;
    p += 1;
    let timestamp_delta = read_varlong(body, &mut p)?;
    let offset_delta = read_varint(body, &mut p)?;
    let key = read_kafka_bytes(body, &mut p)?;
    let value = read_kafka_bytes(body, &mut p)?;
    let header_count = read_varint(body, &mut p)?;
    if header_count < 0 {
        return None;
    }
    let headers_start = p;
    let mut headers_encoded_len = 0usize;
    for _ in 0..header_count {
        // Header key is a non-null string.
        let k = read_kafka_bytes(body, &mut p)??;
        let v = read_kafka_bytes(body, &mut p)?;
        headers_encoded_len += kafka_bytes_len(Some(k)) + kafka_bytes_len(v);
    }
    if p != end {
        // Declared length disagrees with the fields.
        return None;
    }
    *pos = end;
    Some((
        KafkaRecord {
            attributes,
            timestamp_delta,
            offset_delta,
            key,
            value,
            header_count,
            headers_raw: &body[headers_start..end],
            headers_encoded_len,
        },
        &buf[start..end],
    ))
}

/// Encode a record (computing its length prefix) with the given offset delta.
#[inline(always)]
pub fn write_kafka_record(out: &mut Vec<u8>, r: &KafkaRecord<'_>, offset_delta: i32) {
    let body_len = 1
        + varlong_len(r.timestamp_delta)
        + varint_len(offset_delta)
        + kafka_bytes_len(r.key)
        + kafka_bytes_len(r.value)
        + varint_len(r.header_count)
        + r.headers_encoded_len;
    out.reserve(body_len + 5);
    write_varint(out, body_len as i32);
    out.push(r.attributes as u8);
    write_varlong(out, r.timestamp_delta);
    write_varint(out, offset_delta);
    write_kafka_bytes(out, r.key);
    write_kafka_bytes(out, r.value);
    write_varint(out, r.header_count);
    if r.header_count > 0 {
        // Re-encode each header (the raw bytes were validated by the parser,
        // so these reads cannot fail; stop quietly if they somehow do).
        let h = r.headers_raw;
        let mut p = 0;
        for _ in 0..r.header_count {
            let Some(Some(k)) = read_kafka_bytes(h, &mut p) else { break };
            let Some(v) = read_kafka_bytes(h, &mut p) else { break };
            write_kafka_bytes(out, Some(k));
            write_kafka_bytes(out, v);
        }
    }
}

/// Filter a Kafka records section, fully re-encoding every kept record with
/// fresh offset deltas (0, 1, 2, ...).
pub fn filter_kafka_into(input: &[u8], out: &mut Vec<u8>) -> Result<u32, Error> {
    let mut pos = 0;
    let mut kept: i32 = 0;
    while pos < input.len() {
        let at = pos;
        let (rec, _) = parse_kafka_record(input, &mut pos).ok_or(Error { at })?;
        if keep(rec.value) {
            write_kafka_record(out, &rec, kept);
            kept += 1;
        }
    }
    Ok(kept as u32)
}

/// Filter a Kafka records section, parsing every record fully but copying
/// each kept record's bytes verbatim (offset deltas unchanged).
pub fn filter_kafka_copy_into(input: &[u8], out: &mut Vec<u8>) -> Result<u32, Error> {
    let mut pos = 0;
    let mut kept = 0u32;
    while pos < input.len() {
        let at = pos;
        let (rec, raw) = parse_kafka_record(input, &mut pos).ok_or(Error { at })?;
        if keep(rec.value) {
            out.extend_from_slice(raw);
            kept += 1;
        }
    }
    Ok(kept)
}

// ---------------------------------------------------------------------------
// Framed records
// ---------------------------------------------------------------------------

pub const FRAMED_NULL: u32 = u32::MAX;

#[inline(always)]
fn read_u16(buf: &[u8], pos: &mut usize) -> Option<u16> {
    let end = pos.checked_add(2)?;
    let b: [u8; 2] = buf.get(*pos..end)?.try_into().ok()?;
    *pos = end;
    Some(u16::from_le_bytes(b))
}

#[inline(always)]
fn read_u32(buf: &[u8], pos: &mut usize) -> Option<u32> {
    let end = pos.checked_add(4)?;
    let b: [u8; 4] = buf.get(*pos..end)?.try_into().ok()?;
    *pos = end;
    Some(u32::from_le_bytes(b))
}

#[inline(always)]
fn read_i64(buf: &[u8], pos: &mut usize) -> Option<i64> {
    let end = pos.checked_add(8)?;
    let b: [u8; 8] = buf.get(*pos..end)?.try_into().ok()?;
    *pos = end;
    Some(i64::from_le_bytes(b))
}

#[inline(always)]
fn read_framed_bytes<'a>(buf: &'a [u8], pos: &mut usize) -> Option<Option<&'a [u8]>> {
    let len = read_u32(buf, pos)?;
    if len == FRAMED_NULL {
        return Some(None);
    }
    let end = pos.checked_add(len as usize)?;
    let s = buf.get(*pos..end)?;
    *pos = end;
    Some(Some(s))
}

#[inline(always)]
fn framed_bytes_len(b: Option<&[u8]>) -> usize {
    4 + b.map_or(0, <[u8]>::len)
}

#[inline(always)]
fn write_framed_bytes(out: &mut Vec<u8>, b: Option<&[u8]>) {
    match b {
        None => out.extend_from_slice(&FRAMED_NULL.to_le_bytes()),
        Some(s) => {
            out.extend_from_slice(&(s.len() as u32).to_le_bytes());
            out.extend_from_slice(s);
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FramedRecord<'a> {
    pub timestamp: i64,
    pub key: Option<&'a [u8]>,
    pub value: Option<&'a [u8]>,
    pub header_count: u16,
    pub headers_raw: &'a [u8],
}

#[inline(always)]
pub fn parse_framed_record<'a>(
    buf: &'a [u8],
    pos: &mut usize,
) -> Option<(FramedRecord<'a>, &'a [u8])> {
    let start = *pos;
    let len = read_u32(buf, pos)?;
    let end = pos.checked_add(len as usize)?;
    let body = buf.get(..end)?;
    let mut p = *pos;
    let timestamp = read_i64(body, &mut p)?;
    let key = read_framed_bytes(body, &mut p)?;
    let value = read_framed_bytes(body, &mut p)?;
    let header_count = read_u16(body, &mut p)?;
    let headers_start = p;
    for _ in 0..header_count {
        read_framed_bytes(body, &mut p)??; // header key: non-null
        read_framed_bytes(body, &mut p)?;
    }
    if p != end {
        return None;
    }
    *pos = end;
    Some((
        FramedRecord { timestamp, key, value, header_count, headers_raw: &body[headers_start..end] },
        &buf[start..end],
    ))
}

#[inline(always)]
pub fn write_framed_record(out: &mut Vec<u8>, r: &FramedRecord<'_>) {
    // Headers are fixed-width encoded, so their re-encoded length equals the
    // raw length (validated by the parser).
    let body_len = 8 + framed_bytes_len(r.key) + framed_bytes_len(r.value) + 2 + r.headers_raw.len();
    out.reserve(body_len + 4);
    out.extend_from_slice(&(body_len as u32).to_le_bytes());
    out.extend_from_slice(&r.timestamp.to_le_bytes());
    write_framed_bytes(out, r.key);
    write_framed_bytes(out, r.value);
    out.extend_from_slice(&r.header_count.to_le_bytes());
    if r.header_count > 0 {
        let h = r.headers_raw;
        let mut p = 0;
        for _ in 0..r.header_count {
            let Some(Some(k)) = read_framed_bytes(h, &mut p) else { break };
            let Some(v) = read_framed_bytes(h, &mut p) else { break };
            write_framed_bytes(out, Some(k));
            write_framed_bytes(out, v);
        }
    }
}

/// Filter framed records, re-encoding each kept record field by field.
pub fn filter_framed_into(input: &[u8], out: &mut Vec<u8>) -> Result<u32, Error> {
    let mut pos = 0;
    let mut kept = 0u32;
    while pos < input.len() {
        let at = pos;
        let (rec, _) = parse_framed_record(input, &mut pos).ok_or(Error { at })?;
        if keep(rec.value) {
            write_framed_record(out, &rec);
            kept += 1;
        }
    }
    Ok(kept)
}

/// Filter framed records, parsing fully but copying kept records verbatim.
pub fn filter_framed_copy_into(input: &[u8], out: &mut Vec<u8>) -> Result<u32, Error> {
    let mut pos = 0;
    let mut kept = 0u32;
    while pos < input.len() {
        let at = pos;
        let (rec, raw) = parse_framed_record(input, &mut pos).ok_or(Error { at })?;
        if keep(rec.value) {
            out.extend_from_slice(raw);
            kept += 1;
        }
    }
    Ok(kept)
}

// ---------------------------------------------------------------------------
// Boundary-shaped wrappers: `&[u8] -> Vec<u8>`, empty on malformed input.
// Both the guest exports and the native benchmark call exactly these.
// ---------------------------------------------------------------------------

macro_rules! boundary {
    ($name:ident, $inner:ident) => {
        /// Fresh output buffer per call; an empty vector on malformed input.
        pub fn $name(input: &[u8]) -> Vec<u8> {
            let mut out = Vec::with_capacity(input.len());
            match $inner(input, &mut out) {
                Ok(_) => out,
                Err(_) => Vec::new(),
            }
        }
    };
}

boundary!(filter_kafka, filter_kafka_into);
boundary!(filter_kafka_copy, filter_kafka_copy_into);
boundary!(filter_framed, filter_framed_into);
boundary!(filter_framed_copy, filter_framed_copy_into);

// ---------------------------------------------------------------------------
// Batch builders (used by the host benchmark and the tests)
// ---------------------------------------------------------------------------

/// Header as (key, nullable value).
pub type Header<'a> = (&'a [u8], Option<&'a [u8]>);

pub fn push_kafka_record(
    out: &mut Vec<u8>,
    timestamp_delta: i64,
    offset_delta: i32,
    key: Option<&[u8]>,
    value: Option<&[u8]>,
    headers: &[Header<'_>],
) {
    let mut headers_encoded_len = 0;
    for (k, v) in headers {
        headers_encoded_len += kafka_bytes_len(Some(k)) + kafka_bytes_len(*v);
    }
    let mut raw = Vec::new();
    for (k, v) in headers {
        write_kafka_bytes(&mut raw, Some(k));
        write_kafka_bytes(&mut raw, *v);
    }
    let rec = KafkaRecord {
        attributes: 0,
        timestamp_delta,
        offset_delta,
        key,
        value,
        header_count: headers.len() as i32,
        headers_raw: &raw,
        headers_encoded_len,
    };
    write_kafka_record(out, &rec, offset_delta);
}

pub fn push_framed_record(
    out: &mut Vec<u8>,
    timestamp: i64,
    key: Option<&[u8]>,
    value: Option<&[u8]>,
    headers: &[Header<'_>],
) {
    let mut raw = Vec::new();
    for (k, v) in headers {
        write_framed_bytes(&mut raw, Some(k));
        write_framed_bytes(&mut raw, *v);
    }
    let rec = FramedRecord { timestamp, key, value, header_count: headers.len() as u16, headers_raw: &raw };
    write_framed_record(out, &rec);
}

#[cfg(test)]
mod tests;
