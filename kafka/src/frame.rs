//! Response frames that carry fetched records by reference.
//!
//! The codec writes a response through [`ByteBufMut`]. A [`FrameBuilder`]
//! takes those writes into a small buffer, except the record sets it was
//! given up front (the stored bytes a fetch read): when the codec puts one
//! of them, the frame keeps a reference to it instead of copying it. The
//! finished [`Frame`] is a list of parts written with vectored writes, so a
//! fetch's records go from the buffer they were read into straight to the
//! socket. Whether a record set is taken by reference or copied changes
//! nothing in the bytes sent.

use std::collections::VecDeque;
use std::io::IoSlice;
use std::ops::Range;

use bytes::buf::UninitSlice;
use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::protocol::buf::ByteBufMut;

/// Record sets smaller than this are copied: a part of their own would cost
/// more than the copy.
const MIN_BY_REFERENCE: usize = 16 << 10;

/// A response frame being encoded.
pub struct FrameBuilder {
    /// Finished parts, in order.
    parts: VecDeque<Bytes>,
    /// Length of `parts`.
    sealed: usize,
    /// Bytes written since the last part taken by reference.
    tail: BytesMut,
    /// Record sets to take by reference, in the order the codec writes them.
    by_reference: Vec<Bytes>,
    next: usize,
}

impl FrameBuilder {
    /// A frame of about `size` bytes, of which the record sets in
    /// `by_reference` (in the order the codec writes them) are to be taken
    /// by reference.
    pub fn new(size: usize, mut by_reference: Vec<Bytes>) -> FrameBuilder {
        by_reference.retain(|records| records.len() >= MIN_BY_REFERENCE);
        let shared: usize = by_reference.iter().map(Bytes::len).sum();
        FrameBuilder {
            parts: VecDeque::with_capacity(2 * by_reference.len() + 2),
            sealed: 0,
            tail: BytesMut::with_capacity(size.saturating_sub(shared)),
            by_reference,
            next: 0,
        }
    }

    /// The buffer written to next, for encoders that take only a `BytesMut`
    /// (their writes are copied).
    pub fn copied(&mut self) -> &mut BytesMut {
        &mut self.tail
    }

    /// The encoded frame, with its size prefix.
    pub fn finish(mut self) -> Result<Frame, std::num::TryFromIntError> {
        self.seal_tail();
        let len = self.sealed;
        let size = i32::try_from(len)?;
        self.parts
            .push_front(Bytes::copy_from_slice(&size.to_be_bytes()));
        Ok(Frame {
            parts: self.parts,
            len: 4 + len,
        })
    }

    fn seal_tail(&mut self) {
        if !self.tail.is_empty() {
            let tail = self.tail.split().freeze();
            self.sealed += tail.len();
            self.parts.push_back(tail);
        }
    }

    /// The record set `src` is, if it is the next one to take by reference.
    fn take_by_reference(&mut self, src: &[u8]) -> Option<Bytes> {
        let next = self.by_reference.get(self.next)?;
        if next.as_ptr() != src.as_ptr() || next.len() != src.len() {
            return None;
        }
        self.next += 1;
        Some(next.clone())
    }
}

// SAFETY: every method forwards to `tail`, a `BytesMut`, whose `BufMut`
// implementation upholds the trait's contract; `put_slice` writes through
// it too or leaves it untouched.
unsafe impl BufMut for FrameBuilder {
    fn remaining_mut(&self) -> usize {
        self.tail.remaining_mut()
    }

    unsafe fn advance_mut(&mut self, cnt: usize) {
        // SAFETY: the caller initialized `cnt` bytes of `chunk_mut`, which
        // is `tail`'s.
        unsafe { self.tail.advance_mut(cnt) }
    }

    fn chunk_mut(&mut self) -> &mut UninitSlice {
        self.tail.chunk_mut()
    }

    fn put_slice(&mut self, src: &[u8]) {
        match self.take_by_reference(src) {
            Some(records) => {
                self.seal_tail();
                self.sealed += records.len();
                self.parts.push_back(records);
            }
            None => self.tail.put_slice(src),
        }
    }
}

/// Response messages never seek back: only record-batch encoding does, and
/// it writes into its own buffer. So offsets before the current part are
/// never asked for.
impl ByteBufMut for FrameBuilder {
    fn offset(&self) -> usize {
        self.sealed + self.tail.len()
    }

    fn seek(&mut self, offset: usize) {
        let local = offset
            .checked_sub(self.sealed)
            .expect("response encoders do not seek back into a finished part");
        self.tail.resize(local, 0);
    }

    fn range(&mut self, r: Range<usize>) -> &mut [u8] {
        let start = r
            .start
            .checked_sub(self.sealed)
            .expect("response encoders do not rewrite a finished part");
        &mut self.tail[start..r.end - self.sealed]
    }
}

/// An encoded response frame: its parts, in order.
pub struct Frame {
    parts: VecDeque<Bytes>,
    len: usize,
}

impl Frame {
    /// Bytes in the frame, size prefix included.
    pub fn len(&self) -> usize {
        self.len
    }
}

impl Buf for Frame {
    fn remaining(&self) -> usize {
        self.parts.iter().map(Bytes::len).sum()
    }

    fn chunk(&self) -> &[u8] {
        self.parts.front().map(Bytes::as_ref).unwrap_or_default()
    }

    fn chunks_vectored<'a>(&'a self, dst: &mut [IoSlice<'a>]) -> usize {
        let mut filled = 0;
        for (slot, part) in dst.iter_mut().zip(&self.parts) {
            *slot = IoSlice::new(part);
            filled += 1;
        }
        filled
    }

    fn advance(&mut self, mut cnt: usize) {
        while cnt > 0 {
            let front = self
                .parts
                .front_mut()
                .expect("cannot advance past the end of a frame");
            if cnt < front.len() {
                front.advance(cnt);
                return;
            }
            cnt -= front.len();
            self.parts.pop_front();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::FetchResponse;
    use kafka_protocol::messages::fetch_response::{FetchableTopicResponse, PartitionData};
    use kafka_protocol::protocol::Encodable;

    fn response(records: &[Bytes]) -> FetchResponse {
        let partitions = records
            .iter()
            .enumerate()
            .map(|(i, r)| {
                PartitionData::default()
                    .with_partition_index(i as i32)
                    .with_records(Some(r.clone()))
            })
            .collect();
        FetchResponse::default().with_responses(vec![
            FetchableTopicResponse::default().with_partitions(partitions),
        ])
    }

    fn into_bytes(mut frame: Frame) -> Vec<u8> {
        let mut out = Vec::with_capacity(frame.len());
        while frame.has_remaining() {
            let chunk = frame.chunk().to_vec();
            frame.advance(chunk.len());
            out.extend_from_slice(&chunk);
        }
        out
    }

    #[test]
    fn frames_match_a_copied_encoding_whatever_is_taken_by_reference() {
        let records: Vec<Bytes> = [100_000, 10, 0, 70_000]
            .iter()
            .map(|&n| Bytes::from((0..n).map(|i| i as u8).collect::<Vec<u8>>()))
            .collect();
        let fetch = response(&records);
        for version in [4, 11, 12, 16] {
            let mut copied = BytesMut::new();
            copied.put_i32(fetch.compute_size(version).unwrap() as i32);
            fetch.encode(&mut copied, version).unwrap();
            // All sets offered, none, and out of order (then copied).
            let reversed = records.iter().rev().cloned().collect();
            for offered in [records.clone(), Vec::new(), reversed] {
                let mut builder = FrameBuilder::new(64, offered);
                fetch.encode(&mut builder, version).unwrap();
                let frame = builder.finish().unwrap();
                assert_eq!(frame.len(), copied.len(), "v{version}");
                assert_eq!(frame.remaining(), copied.len(), "v{version}");
                assert_eq!(into_bytes(frame), copied.to_vec(), "v{version}");
            }
        }
    }

    #[test]
    fn large_record_sets_are_parts_of_their_own() {
        let records = vec![Bytes::from(vec![7u8; 100_000])];
        let fetch = response(&records);
        let mut builder = FrameBuilder::new(64, records.clone());
        fetch.encode(&mut builder, 12).unwrap();
        let frame = builder.finish().unwrap();
        let shared = frame
            .parts
            .iter()
            .any(|part| part.as_ptr() == records[0].as_ptr());
        assert!(shared, "the record set was copied");
        let mut slices = [IoSlice::new(&[]); 8];
        assert_eq!(frame.chunks_vectored(&mut slices), frame.parts.len());
    }
}
