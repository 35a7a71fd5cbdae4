//! Sparse per-segment indexes: offset → file position, and time → offset.
//!
//! Both are kept in memory and mirrored to files beside the segment
//! (`.index`, `.timeindex`) so that opening a closed segment does not need
//! to scan it. An entry is added for the first batch of a segment and then
//! at most once per `index_interval_bytes`, so a lookup lands at most that
//! many bytes before the wanted batch. Index files are never trusted blindly:
//! on open they are checked for shape and order and rebuilt from the segment
//! when they fail (see `segment.rs`).
//!
//! File layout, big-endian, fixed-size entries:
//! - offset index: `relative_offset: u32, position: u32` (8 bytes)
//! - time index: `max_timestamp: i64, relative_offset: u32` (12 bytes), where
//!   `max_timestamp` is the largest record timestamp of the segment up to and
//!   including the batch that starts at `relative_offset`.

pub(crate) const OFFSET_ENTRY: usize = 8;
pub(crate) const TIME_ENTRY: usize = 12;

/// Offset index: batch base offsets (relative to the segment) and their file positions.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct OffsetIndex {
    entries: Vec<(u32, u32)>,
}

impl OffsetIndex {
    pub(crate) fn push(&mut self, relative_offset: u32, position: u32) -> [u8; OFFSET_ENTRY] {
        self.entries.push((relative_offset, position));
        let mut bytes = [0; OFFSET_ENTRY];
        bytes[..4].copy_from_slice(&relative_offset.to_be_bytes());
        bytes[4..].copy_from_slice(&position.to_be_bytes());
        bytes
    }

    /// Position of the last indexed batch starting at or before `relative_offset`.
    pub(crate) fn lookup(&self, relative_offset: u32) -> u32 {
        let i = self.entries.partition_point(|&(o, _)| o <= relative_offset);
        if i == 0 { 0 } else { self.entries[i - 1].1 }
    }

    /// The largest indexed batch position in `(after, up_to]`: a batch
    /// boundary a read from `after` can stop at without cutting a batch.
    pub(crate) fn boundary_within(&self, after: u32, up_to: u32) -> Option<u32> {
        let i = self.entries.partition_point(|&(_, pos)| pos <= up_to);
        let pos = self.entries[..i].last()?.1;
        (pos > after).then_some(pos)
    }

    /// The last entry, if any.
    pub(crate) fn last(&self) -> Option<(u32, u32)> {
        self.entries.last().copied()
    }

    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.entries.len() * OFFSET_ENTRY);
        for &(o, p) in &self.entries {
            out.extend_from_slice(&o.to_be_bytes());
            out.extend_from_slice(&p.to_be_bytes());
        }
        out
    }

    /// Decodes an index file, or `None` if it is not a well-formed index for
    /// a segment of `segment_len` bytes: wrong size, entries out of order, or
    /// positions past the end.
    pub(crate) fn decode(bytes: &[u8], segment_len: u64) -> Option<OffsetIndex> {
        if !bytes.len().is_multiple_of(OFFSET_ENTRY) {
            return None;
        }
        let entries: Vec<(u32, u32)> = bytes
            .chunks_exact(OFFSET_ENTRY)
            .map(|c| (be32(&c[..4]), be32(&c[4..])))
            .collect();
        let ordered = entries
            .windows(2)
            .all(|w| w[0].0 < w[1].0 && w[0].1 < w[1].1);
        let in_bounds = entries
            .last()
            .is_none_or(|&(_, pos)| u64::from(pos) < segment_len);
        let starts_at_zero = entries.first().is_none_or(|&(_, pos)| pos == 0);
        (ordered && in_bounds && starts_at_zero).then_some(OffsetIndex { entries })
    }
}

/// Time index: running maximum timestamp and where it was reached.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct TimeIndex {
    entries: Vec<(i64, u32)>,
}

impl TimeIndex {
    pub(crate) fn push(&mut self, max_timestamp: i64, relative_offset: u32) -> [u8; TIME_ENTRY] {
        self.entries.push((max_timestamp, relative_offset));
        let mut bytes = [0; TIME_ENTRY];
        bytes[..8].copy_from_slice(&max_timestamp.to_be_bytes());
        bytes[8..].copy_from_slice(&relative_offset.to_be_bytes());
        bytes
    }

    /// A relative offset from which a scan for the first record with a
    /// timestamp at or after `timestamp` can start: every record before it
    /// is older than `timestamp`.
    pub(crate) fn scan_start(&self, timestamp: i64) -> u32 {
        let i = self.entries.partition_point(|&(t, _)| t < timestamp);
        if i == 0 { 0 } else { self.entries[i - 1].1 }
    }

    pub(crate) fn last(&self) -> Option<(i64, u32)> {
        self.entries.last().copied()
    }

    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.entries.len() * TIME_ENTRY);
        for &(t, o) in &self.entries {
            out.extend_from_slice(&t.to_be_bytes());
            out.extend_from_slice(&o.to_be_bytes());
        }
        out
    }

    pub(crate) fn decode(bytes: &[u8]) -> Option<TimeIndex> {
        if !bytes.len().is_multiple_of(TIME_ENTRY) {
            return None;
        }
        let entries: Vec<(i64, u32)> = bytes
            .chunks_exact(TIME_ENTRY)
            .map(|c| {
                (
                    i64::from_be_bytes(c[..8].try_into().expect("8 bytes")),
                    be32(&c[8..]),
                )
            })
            .collect();
        let ordered = entries
            .windows(2)
            .all(|w| w[0].0 < w[1].0 && w[0].1 <= w[1].1);
        ordered.then_some(TimeIndex { entries })
    }
}

fn be32(b: &[u8]) -> u32 {
    u32::from_be_bytes(b.try_into().expect("4 bytes"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offset_lookup_finds_the_last_entry_at_or_before() {
        let mut idx = OffsetIndex::default();
        idx.push(0, 0);
        idx.push(10, 4096);
        idx.push(20, 8192);
        assert_eq!(idx.lookup(0), 0);
        assert_eq!(idx.lookup(9), 0);
        assert_eq!(idx.lookup(10), 4096);
        assert_eq!(idx.lookup(25), 8192);
    }

    #[test]
    fn boundaries_are_found_within_a_range() {
        let mut idx = OffsetIndex::default();
        idx.push(0, 0);
        idx.push(10, 4096);
        idx.push(20, 8192);
        assert_eq!(idx.boundary_within(0, 9000), Some(8192));
        assert_eq!(idx.boundary_within(0, 8191), Some(4096));
        assert_eq!(idx.boundary_within(4096, 8000), None);
        assert_eq!(idx.boundary_within(0, 100), None);
    }

    #[test]
    fn offset_index_round_trips_and_rejects_damage() {
        let mut idx = OffsetIndex::default();
        let mut file = Vec::new();
        file.extend(idx.push(0, 0));
        file.extend(idx.push(5, 100));
        assert_eq!(OffsetIndex::decode(&file, 200), Some(idx));
        assert_eq!(OffsetIndex::decode(&file[..12], 200), None, "partial entry");
        assert_eq!(OffsetIndex::decode(&file, 100), None, "points past the end");
        let mut swapped = file[8..].to_vec();
        swapped.extend(&file[..8]);
        assert_eq!(OffsetIndex::decode(&swapped, 200), None, "out of order");
    }

    #[test]
    fn time_scan_starts_after_every_older_entry() {
        let mut idx = TimeIndex::default();
        idx.push(100, 0);
        idx.push(200, 10);
        idx.push(300, 20);
        assert_eq!(idx.scan_start(50), 0);
        assert_eq!(idx.scan_start(150), 0);
        assert_eq!(idx.scan_start(201), 10);
        assert_eq!(idx.scan_start(1000), 20);
    }
}
