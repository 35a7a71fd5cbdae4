//! Records: what a batch holds, as written ([`Record`]) and as read
//! ([`RecordView`], borrowed from the batch buffer without copying).
//!
//! Each record is `length, attributes, timestamp delta, offset delta, key,
//! value, headers` with zig-zag varints (see `log-core/FORMAT.md`).
//! [`parse_record`] checks every length against the buffer and the record's
//! own length prefix; batches are validated with it once, after which
//! iteration cannot fail.

use crate::varint;

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

/// A borrowed view of one record inside a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordView<'a> {
    pub offset: u64,
    pub timestamp: i64,
    pub key: Option<&'a [u8]>,
    pub value: Option<&'a [u8]>,
    pub(crate) headers: &'a [u8],
    pub(crate) header_count: usize,
    /// The encoded key, value and headers, copied as is by `BatchWriter::push_view`.
    pub(crate) tail: &'a [u8],
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

/// Iterator over the records of a validated batch.
#[derive(Debug, Clone)]
pub struct Records<'a> {
    pub(crate) buf: &'a [u8],
    pub(crate) base_offset: u64,
    pub(crate) base_timestamp: i64,
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
            tail: raw.tail,
        })
    }
}

/// One record's fields as found in the buffer.
pub(crate) struct RawRecord<'a> {
    pub(crate) timestamp_delta: i64,
    pub(crate) offset_delta: i64,
    pub(crate) key: Option<&'a [u8]>,
    pub(crate) value: Option<&'a [u8]>,
    pub(crate) headers: &'a [u8],
    pub(crate) header_count: usize,
    pub(crate) tail: &'a [u8],
}

/// Parses the record at `*pos`, checking every length against the buffer
/// and the record's own length prefix, and advances `*pos` past it.
#[inline]
pub(crate) fn parse_record<'a>(
    buf: &'a [u8],
    pos: &mut usize,
) -> Result<RawRecord<'a>, &'static str> {
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
    let tail_start = p;
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
        tail: &body[tail_start..end],
    })
}

pub(crate) fn parse_header<'a>(
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

pub(crate) fn put_nullable(buf: &mut Vec<u8>, bytes: Option<&[u8]>) {
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

pub(crate) fn record_body_len(
    record: &Record<'_>,
    timestamp_delta: i64,
    offset_delta: i64,
) -> usize {
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
