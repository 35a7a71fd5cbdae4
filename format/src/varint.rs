//! Zig-zag variable-length integers, as Kafka encodes record fields.
//!
//! A value is zig-zag mapped (so small negative numbers stay short) and then
//! written seven bits at a time, least significant group first, with the high
//! bit set on every byte but the last. Decoding is bounds-checked and refuses
//! encodings longer than a 64-bit value can need.

/// Longest encoding of a 64-bit value.
pub(crate) const MAX_LEN: usize = 10;

/// Appends `value` to `buf`.
#[inline]
pub(crate) fn put(buf: &mut Vec<u8>, value: i64) {
    let mut z = ((value << 1) ^ (value >> 63)) as u64;
    while z >= 0x80 {
        buf.push(z as u8 | 0x80);
        z >>= 7;
    }
    buf.push(z as u8);
}

/// Writes `value` into `out` at `*at` and advances `*at`; `out` must have
/// room for [`MAX_LEN`] more bytes.
#[inline]
pub(crate) fn put_at(out: &mut [u8], at: &mut usize, value: i64) {
    let mut z = ((value << 1) ^ (value >> 63)) as u64;
    while z >= 0x80 {
        out[*at] = z as u8 | 0x80;
        *at += 1;
        z >>= 7;
    }
    out[*at] = z as u8;
    *at += 1;
}

/// Number of bytes `put` writes for `value`.
#[inline]
pub(crate) fn len(value: i64) -> usize {
    let z = ((value << 1) ^ (value >> 63)) as u64;
    let bits = 64 - (z | 1).leading_zeros() as usize;
    bits.div_ceil(7)
}

/// Reads one value from `buf` at `*pos` and advances `*pos`.
/// Returns `None` when the buffer ends first or the encoding is too long.
#[inline]
pub(crate) fn get(buf: &[u8], pos: &mut usize) -> Option<i64> {
    // Most fields fit in one byte (deltas, small lengths) or two (record
    // and value lengths up to 8 KiB): decode those without entering the loop.
    let first = *buf.get(*pos)?;
    if first < 0x80 {
        *pos += 1;
        return Some(unzigzag(u64::from(first)));
    }
    if let Some(&second) = buf.get(*pos + 1)
        && second < 0x80
    {
        *pos += 2;
        return Some(unzigzag(u64::from(first & 0x7f) | u64::from(second) << 7));
    }
    get_long(buf, pos)
}

#[inline]
fn unzigzag(z: u64) -> i64 {
    (z >> 1) as i64 ^ -((z & 1) as i64)
}

#[cold]
fn get_long(buf: &[u8], pos: &mut usize) -> Option<i64> {
    let mut z: u64 = 0;
    for i in 0..MAX_LEN {
        let byte = *buf.get(*pos + i)?;
        z |= u64::from(byte & 0x7f) << (7 * i);
        if byte < 0x80 {
            *pos += i + 1;
            return Some(unzigzag(z));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_edge_values() {
        for v in [
            0,
            1,
            -1,
            63,
            -64,
            64,
            300,
            -300,
            8191,
            -8192,
            8192,
            -8193,
            i32::MAX as i64,
            i32::MIN as i64,
            i64::MAX,
            i64::MIN,
        ] {
            let mut buf = Vec::new();
            put(&mut buf, v);
            assert_eq!(buf.len(), len(v), "length of {v}");
            let mut pos = 0;
            assert_eq!(get(&buf, &mut pos), Some(v));
            assert_eq!(pos, buf.len());
        }
    }

    #[test]
    fn matches_kafka_encoding() {
        // From Kafka's ByteUtilsTest: zig-zag 1 -> 0x02, -1 -> 0x01, 64 -> 0x80 0x01.
        let enc = |v| {
            let mut b = Vec::new();
            put(&mut b, v);
            b
        };
        assert_eq!(enc(1), [0x02]);
        assert_eq!(enc(-1), [0x01]);
        assert_eq!(enc(64), [0x80, 0x01]);
    }

    #[test]
    fn refuses_truncated_and_overlong_input() {
        let mut pos = 0;
        assert_eq!(get(&[0x80], &mut pos), None);
        assert_eq!(get(&[0x80, 0x80], &mut pos), None);
        assert_eq!(get(&[0xff; 11], &mut pos), None);
        assert_eq!(pos, 0);
    }
}
