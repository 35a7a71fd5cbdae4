//! Moving a CRC-32C past zero bytes in O(log n) (zlib's `crc32_combine`
//! method): the change that editing a batch's header makes to its CRC,
//! without a pass over the records after it.

/// The reflected CRC-32C polynomial.
const POLY: u32 = 0x82F6_3B78;

/// `a * b` modulo the polynomial, both reflected (bit 31 is `x^0`).
const fn multiply(a: u32, mut b: u32) -> u32 {
    let mut product = 0;
    let mut bit = 1u32 << 31;
    while bit != 0 {
        if a & bit != 0 {
            product ^= b;
        }
        bit >>= 1;
        b = if b & 1 != 0 { (b >> 1) ^ POLY } else { b >> 1 };
    }
    product
}

/// `x^(2^k)` modulo the polynomial, for k in 0..64.
const POWERS: [u32; 64] = {
    let mut table = [0; 64];
    let mut p = 1 << 30; // x^1
    let mut k = 0;
    while k < 64 {
        table[k] = p;
        p = multiply(p, p);
        k += 1;
    }
    table
};

/// The CRC register `crc` after `len` zero bytes more: multiplying by
/// `x^(8 * len)`, built from the powers of two of `len`'s bits.
pub(crate) fn shift(crc: u32, len: usize) -> u32 {
    let mut factor = 1u32 << 31; // x^0
    let mut rest = len as u64;
    let mut k = 3; // a byte is 2^3 bits
    while rest != 0 {
        if rest & 1 != 0 {
            factor = multiply(POWERS[k], factor);
        }
        rest >>= 1;
        k += 1;
    }
    multiply(factor, crc)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn shifting_matches_combining_with_zero_bytes(crc: u32, len in 0usize..(1 << 26)) {
            prop_assert_eq!(super::shift(crc, len), crc32c::crc32c_combine(crc, 0, len));
        }
    }

    #[test]
    fn shifting_matches_a_crc_over_appended_zeros() {
        let data = b"weir batch header";
        let zeros = [0u8; 1000];
        let mut both = data.to_vec();
        both.extend_from_slice(&zeros);
        // Linear part only: the difference of two inputs of equal length.
        let other = b"WEIR BATCH HEADER";
        let mut other_both = other.to_vec();
        other_both.extend_from_slice(&zeros);
        let difference = crc32c::crc32c(data) ^ crc32c::crc32c(other);
        assert_eq!(
            super::shift(difference, zeros.len()),
            crc32c::crc32c(&both) ^ crc32c::crc32c(&other_both)
        );
    }
}
