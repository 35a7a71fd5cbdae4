//! The filters over batches made by the batch builders: varints round-trip,
//! kept records are re-encoded (Kafka, with fresh offsets) or copied
//! (framed), null and empty values are kept, and truncated or corrupted
//! input never panics.

use super::*;
use alloc::vec;

fn sample_values(n: usize) -> Vec<Vec<u8>> {
    (0..n)
        .map(|i| {
            let mut v = vec![b'a' + (i % 26) as u8; 100];
            if i % 10 == 0 {
                v[0] = b'x';
            }
            v
        })
        .collect()
}

#[test]
fn varint_roundtrip() {
    for v in [0i32, 1, -1, 63, -64, 64, 300, -300, i32::MAX, i32::MIN] {
        let mut b = Vec::new();
        write_varint(&mut b, v);
        assert_eq!(b.len(), varint_len(v));
        let mut p = 0;
        assert_eq!(read_varint(&b, &mut p), Some(v));
        assert_eq!(p, b.len());
    }
    for v in [0i64, 1, -1, i64::MAX, i64::MIN, 1 << 40] {
        let mut b = Vec::new();
        write_varlong(&mut b, v);
        assert_eq!(b.len(), varlong_len(v));
        let mut p = 0;
        assert_eq!(read_varlong(&b, &mut p), Some(v));
    }
}

#[test]
fn kafka_filter_reencodes_with_fresh_offsets() {
    let vals = sample_values(25);
    let mut input = Vec::new();
    let mut expected = Vec::new();
    let mut kept = 0;
    for (i, v) in vals.iter().enumerate() {
        let key = [i as u8; 8];
        let hdr: &[Header<'_>] = if i % 3 == 0 { &[(b"h", Some(b"val")), (b"n", None)] } else { &[] };
        push_kafka_record(&mut input, i as i64, i as i32, Some(&key), Some(v), hdr);
        if v[0] != b'x' {
            push_kafka_record(&mut expected, i as i64, kept, Some(&key), Some(v), hdr);
            kept += 1;
        }
    }
    assert_eq!(filter_kafka(&input), expected);
    let copy = filter_kafka_copy(&input);
    // Same records, only offset deltas differ: same length here (all < 64).
    assert_eq!(copy.len(), expected.len());
    let mut p = 0;
    let mut n = 0;
    while p < copy.len() {
        let (r, _) = parse_kafka_record(&copy, &mut p).unwrap();
        assert_ne!(r.value.unwrap()[0], b'x');
        n += 1;
    }
    assert_eq!(n, kept);
}

#[test]
fn framed_filter() {
    let vals = sample_values(25);
    let mut input = Vec::new();
    let mut expected = Vec::new();
    for (i, v) in vals.iter().enumerate() {
        let key = [i as u8; 8];
        let k = if i % 7 == 0 { None } else { Some(&key[..]) };
        let hdr: &[Header<'_>] = if i % 4 == 0 { &[(b"h", Some(b"val"))] } else { &[] };
        push_framed_record(&mut input, 1000 + i as i64, k, Some(v), hdr);
        if v[0] != b'x' {
            push_framed_record(&mut expected, 1000 + i as i64, k, Some(v), hdr);
        }
    }
    assert_eq!(filter_framed(&input), expected);
    assert_eq!(filter_framed_copy(&input), expected);
}

#[test]
fn null_and_empty_values_are_kept() {
    let mut input = Vec::new();
    push_kafka_record(&mut input, 0, 0, None, None, &[]);
    push_kafka_record(&mut input, 0, 1, None, Some(b""), &[]);
    push_kafka_record(&mut input, 0, 2, None, Some(b"x"), &[]);
    assert_eq!(filter_kafka_into(&input, &mut Vec::new()), Ok(2));
    let mut input = Vec::new();
    push_framed_record(&mut input, 0, None, None, &[]);
    push_framed_record(&mut input, 0, None, Some(b""), &[]);
    push_framed_record(&mut input, 0, None, Some(b"xy"), &[]);
    assert_eq!(filter_framed_into(&input, &mut Vec::new()), Ok(2));
}

#[test]
fn truncations_and_corruptions_never_panic() {
    let vals = sample_values(6);
    let mut k = Vec::new();
    let mut f = Vec::new();
    for (i, v) in vals.iter().enumerate() {
        push_kafka_record(&mut k, i as i64, i as i32, Some(b"key"), Some(v), &[(b"h", None)]);
        push_framed_record(&mut f, i as i64, Some(b"key"), Some(v), &[(b"h", None)]);
    }
    // Every strict prefix that cuts a record must be rejected (empty output).
    for cut in 0..k.len() {
        let r = filter_kafka_into(&k[..cut], &mut Vec::new());
        let _ = filter_kafka_copy(&k[..cut]);
        if cut != 0 {
            // a cut on a record boundary is valid, anything else errors
            let mut p = 0;
            let mut boundary = false;
            while p < cut {
                if parse_kafka_record(&k[..cut], &mut p).is_none() {
                    break;
                }
                if p == cut {
                    boundary = true;
                }
            }
            assert_eq!(r.is_ok(), boundary, "cut {cut}");
        }
    }
    for cut in 0..f.len() {
        let _ = filter_framed(&f[..cut]);
        let _ = filter_framed_copy(&f[..cut]);
    }
    // Single-byte corruptions at every position, a few values each.
    for i in 0..k.len() {
        for b in [0x00u8, 0x7f, 0x80, 0xff, 0x01] {
            let mut c = k.clone();
            c[i] = b;
            let _ = filter_kafka(&c);
            let _ = filter_kafka_copy(&c);
        }
    }
    for i in 0..f.len() {
        for b in [0x00u8, 0x7f, 0x80, 0xff, 0x01] {
            let mut c = f.clone();
            c[i] = b;
            let _ = filter_framed(&c);
            let _ = filter_framed_copy(&c);
        }
    }
    // Pathological lengths.
    assert!(filter_kafka(&[0xff, 0xff, 0xff, 0xff, 0xff, 0xff]).is_empty());
    assert!(filter_kafka(&[0x01]).is_empty()); // length -1
    assert!(filter_framed(&[0xff, 0xff, 0xff, 0xff]).is_empty());
}
