//! Record batches as producers send them, turned into batches the log
//! stores (or, for a transaction, buffers until it commits).
//!
//! The log stores Kafka's RecordBatch v2 uncompressed, so an uncompressed
//! client batch is stored as sent (only the leader epoch, outside the CRC,
//! is set to the log's 0). A compressed batch (gzip, snappy, lz4, zstd) has
//! its records section decompressed, with a bound, and is re-framed around
//! the very same record bytes: keys, values, headers (duplicates included),
//! timestamps, offset deltas and producer fields are kept exactly.

use std::io::Read;

use bytes::{Bytes, BytesMut};
use kafka_protocol::ResponseError;
use weir_format::Batch;
use weir_format::{HEADER_LEN, LENGTH_PREFIX, declared_len, field, seal};

/// Attribute bits of RecordBatch v2.
const COMPRESSION_MASK: i16 = 0x07;
const TRANSACTIONAL: i16 = 0x10;
const CONTROL: i16 = 0x20;

/// Why a producer's records were refused.
#[derive(Debug)]
pub struct Refused {
    pub code: ResponseError,
    pub message: String,
}

fn refuse(code: ResponseError, message: impl Into<String>) -> Refused {
    Refused {
        code,
        message: message.into(),
    }
}

/// Splits the records of one partition of a produce request into batches
/// the log accepts. `max_batch_bytes` bounds each batch after
/// decompression, and `budget` the bytes decompressed for the whole
/// request (it is charged here).
pub fn from_produced(
    records: Bytes,
    max_batch_bytes: usize,
    budget: &mut usize,
    transactional: bool,
) -> Result<Vec<Batch>, Refused> {
    let mut batches = Vec::new();
    let mut rest = records;
    while !rest.is_empty() {
        let len = declared_len(&rest)
            .filter(|len| *len >= HEADER_LEN && *len <= rest.len())
            .ok_or_else(|| {
                refuse(
                    ResponseError::CorruptMessage,
                    "a record batch is cut short or its length field is invalid",
                )
            })?;
        let bytes = rest.split_to(len);
        batches.push(one_batch(bytes, max_batch_bytes, budget, transactional)?);
    }
    if batches.is_empty() {
        return Err(refuse(
            ResponseError::CorruptMessage,
            "no record batch sent",
        ));
    }
    Ok(batches)
}

fn one_batch(
    bytes: Bytes,
    max_batch_bytes: usize,
    budget: &mut usize,
    transactional: bool,
) -> Result<Batch, Refused> {
    let magic = bytes[field::MAGIC] as i8;
    if magic != 2 {
        return Err(refuse(
            ResponseError::UnsupportedForMessageFormat,
            format!("message format v{magic} is not accepted (only RecordBatch v2)"),
        ));
    }
    let attributes = i16::from_be_bytes(
        bytes[field::ATTRIBUTES..field::ATTRIBUTES + 2]
            .try_into()
            .expect("2"),
    );
    if attributes & CONTROL != 0 {
        return Err(refuse(
            ResponseError::InvalidRecord,
            "producers may not send control batches",
        ));
    }
    if (attributes & TRANSACTIONAL != 0) != transactional {
        return Err(refuse(
            ResponseError::InvalidTxnState,
            match transactional {
                true => "a transactional produce must carry transactional batches",
                false => "transactional batches need a transactional id",
            },
        ));
    }
    let codec = attributes & COMPRESSION_MASK;
    if codec == 0 {
        // Stored as sent: validated whole (CRC and every record) by the log's
        // own check; only a leader epoch other than the log's 0 costs a copy.
        let bytes = if bytes[field::LEADER_EPOCH..field::LEADER_EPOCH + 4] == [0; 4] {
            bytes
        } else {
            let mut copy = BytesMut::from(&bytes[..]);
            copy[field::LEADER_EPOCH..field::LEADER_EPOCH + 4].copy_from_slice(&[0; 4]);
            copy.freeze()
        };
        return Batch::from_bytes(bytes).map_err(invalid);
    }
    // The CRC covers the compressed data: check it before decompressing.
    let stored_crc = u32::from_be_bytes(bytes[field::CRC..field::CRC + 4].try_into().expect("4"));
    let crc = crc32c::crc32c(&bytes[field::ATTRIBUTES..]);
    if stored_crc != crc {
        return Err(refuse(
            ResponseError::CorruptMessage,
            format!(
                "record batch CRC mismatch: header says {stored_crc:#010x}, data gives {crc:#010x}"
            ),
        ));
    }
    let limit = max_batch_bytes.min(*budget);
    let records = decompress(codec, bytes.slice(HEADER_LEN..), limit)?;
    *budget -= records.len();
    let mut batch = BytesMut::with_capacity(HEADER_LEN + records.len());
    batch.extend_from_slice(&bytes[..HEADER_LEN]);
    batch.extend_from_slice(&records);
    let length = i32::try_from(batch.len() - LENGTH_PREFIX).map_err(|_| {
        refuse(
            ResponseError::MessageTooLarge,
            "decompressed batch over 2 GiB",
        )
    })?;
    batch[field::LENGTH..field::LENGTH + 4].copy_from_slice(&length.to_be_bytes());
    let plain = attributes & !COMPRESSION_MASK;
    batch[field::ATTRIBUTES..field::ATTRIBUTES + 2].copy_from_slice(&plain.to_be_bytes());
    batch[field::LEADER_EPOCH..field::LEADER_EPOCH + 4].copy_from_slice(&[0; 4]);
    seal(&mut batch);
    Batch::from_bytes(batch.freeze()).map_err(invalid)
}

fn invalid(error: weir_format::BatchError) -> Refused {
    refuse(
        ResponseError::CorruptMessage,
        format!("invalid record batch: {error}"),
    )
}

/// The records section of a compressed batch, decompressed; more than
/// `limit` bytes is refused as too large (a decompression bomb stops there).
fn decompress(codec: i16, data: Bytes, limit: usize) -> Result<Vec<u8>, Refused> {
    let failed = |name: &str, e: &dyn std::fmt::Display| {
        refuse(
            ResponseError::CorruptMessage,
            format!("{name} data does not decompress: {e}"),
        )
    };
    let (name, result) = match codec {
        1 => (
            "gzip",
            bounded(flate2::read::GzDecoder::new(&data[..]), limit),
        ),
        2 => ("snappy", snappy(&data, limit)),
        3 => match lz4::Decoder::new(&data[..]) {
            Ok(decoder) => ("lz4", bounded(decoder, limit)),
            Err(e) => return Err(failed("lz4", &e)),
        },
        4 => match zstd::stream::read::Decoder::new(&data[..]) {
            Ok(decoder) => ("zstd", bounded(decoder, limit)),
            Err(e) => return Err(failed("zstd", &e)),
        },
        other => {
            return Err(refuse(
                ResponseError::CorruptMessage,
                format!("unknown compression codec {other}"),
            ));
        }
    };
    let records = result.map_err(|e| failed(name, &e))?;
    if records.len() > limit {
        return Err(refuse(
            ResponseError::MessageTooLarge,
            format!(
                "the {name} batch decompresses to more than {limit} bytes (the topic's \
                 largest batch, or what is left of the request's decompression budget)"
            ),
        ));
    }
    Ok(records)
}

/// Kafka's snappy: xerial framing (a magic header, then blocks each with
/// its length) or, without the header, one raw snappy block. Each block's
/// declared size is checked before anything is allocated for it; past
/// `limit` the output stops one byte over, to show the excess.
fn snappy(data: &[u8], limit: usize) -> std::io::Result<Vec<u8>> {
    const XERIAL_MAGIC: &[u8] = b"\x82SNAPPY\x00";
    const XERIAL_HEADER: usize = 16;
    let invalid =
        |what: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_string());
    let blocks: Vec<&[u8]> = if data.starts_with(XERIAL_MAGIC) {
        let mut rest = data
            .get(XERIAL_HEADER..)
            .ok_or_else(|| invalid("cut xerial header"))?;
        let mut blocks = Vec::new();
        while !rest.is_empty() {
            let (len, tail) = rest
                .split_at_checked(4)
                .ok_or_else(|| invalid("cut block length"))?;
            let len = u32::from_be_bytes(len.try_into().expect("4 bytes")) as usize;
            let (block, tail) = tail
                .split_at_checked(len)
                .ok_or_else(|| invalid("cut block"))?;
            blocks.push(block);
            rest = tail;
        }
        blocks
    } else {
        vec![data]
    };
    let mut out = Vec::new();
    let mut decoder = snap::raw::Decoder::new();
    for block in blocks {
        let len = snap::raw::decompress_len(block).map_err(|e| invalid(&e.to_string()))?;
        if out.len() + len > limit {
            out.resize(limit + 1, 0);
            return Ok(out);
        }
        let start = out.len();
        out.resize(start + len, 0);
        decoder
            .decompress(block, &mut out[start..])
            .map_err(|e| invalid(&e.to_string()))?;
    }
    Ok(out)
}

/// Reads at most `limit + 1` bytes (one more than allowed shows the excess).
fn bounded(reader: impl Read, limit: usize) -> std::io::Result<Vec<u8>> {
    let mut out = Vec::new();
    reader.take(limit as u64 + 1).read_to_end(&mut out)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use weir_format::{BatchBuilder, Record};

    fn plain_batch(values: &[&[u8]]) -> Bytes {
        let mut builder = BatchBuilder::new();
        for value in values {
            builder.push(&Record {
                key: Some(b"k"),
                value: Some(value),
                ..Record::default()
            });
        }
        builder.finish().unwrap().into_bytes()
    }

    /// The batch with its records section gzipped, as a producer sends it.
    fn gzipped(plain: &Bytes) -> Bytes {
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        encoder.write_all(&plain[HEADER_LEN..]).unwrap();
        let records = encoder.finish().unwrap();
        let mut batch = plain[..HEADER_LEN].to_vec();
        batch.extend_from_slice(&records);
        let length = (batch.len() - LENGTH_PREFIX) as i32;
        batch[field::LENGTH..field::LENGTH + 4].copy_from_slice(&length.to_be_bytes());
        batch[field::ATTRIBUTES + 1] |= 1;
        seal(&mut batch);
        Bytes::from(batch)
    }

    #[test]
    fn compressed_batches_become_the_same_records_uncompressed() {
        let plain = plain_batch(&[b"one", b"two", b"three"]);
        let batches = from_produced(gzipped(&plain), 1 << 20, &mut (1 << 20), false).unwrap();
        assert_eq!(batches.len(), 1);
        assert_eq!(batches[0].as_bytes(), &plain);
    }

    #[test]
    fn several_batches_in_one_request_are_split() {
        let mut both = BytesMut::new();
        both.extend_from_slice(&plain_batch(&[b"a"]));
        both.extend_from_slice(&plain_batch(&[b"b", b"c"]));
        let batches = from_produced(both.freeze(), 1 << 20, &mut (1 << 20), false).unwrap();
        assert_eq!(
            batches.iter().map(|b| b.record_count()).collect::<Vec<_>>(),
            [1, 2]
        );
    }

    #[test]
    fn bad_batches_get_the_protocol_error() {
        let plain = plain_batch(&[b"x"]);
        let mut corrupt = plain.to_vec();
        *corrupt.last_mut().unwrap() ^= 1;
        let error =
            from_produced(Bytes::from(corrupt), 1 << 20, &mut (1 << 20), false).unwrap_err();
        assert_eq!(error.code, ResponseError::CorruptMessage);
        assert!(error.message.contains("CRC"), "{}", error.message);

        let cut = plain.slice(..plain.len() - 1);
        assert_eq!(
            from_produced(cut, 1 << 20, &mut (1 << 20), false)
                .unwrap_err()
                .code,
            ResponseError::CorruptMessage
        );

        let big = plain_batch(&[&[0u8; 100_000]]);
        let error = from_produced(gzipped(&big), 10_000, &mut (1 << 20), false).unwrap_err();
        assert_eq!(error.code, ResponseError::MessageTooLarge);
        // The request's budget bounds it too, whatever the topic allows.
        let error = from_produced(gzipped(&big), 1 << 20, &mut 50_000, false).unwrap_err();
        assert_eq!(error.code, ResponseError::MessageTooLarge);
    }

    #[test]
    fn snappy_blocks_are_checked_before_they_are_allocated() {
        let plain = vec![7u8; 100_000];
        let block = snap::raw::Encoder::new().compress_vec(&plain).unwrap();
        let mut framed = b"\x82SNAPPY\x00\x00\x00\x00\x01\x00\x00\x00\x01".to_vec();
        framed.extend_from_slice(&(block.len() as u32).to_be_bytes());
        framed.extend_from_slice(&block);
        assert_eq!(snappy(&framed, 1 << 20).unwrap(), plain);
        assert_eq!(snappy(&block, 1 << 20).unwrap(), plain);
        assert_eq!(
            snappy(&framed, 1000).unwrap().len(),
            1001,
            "stops one past the limit"
        );
        // A block claiming 4 GiB: refused by its declared size, nothing allocated.
        let mut liar = framed[..16].to_vec();
        let claim = [0xffu8, 0xff, 0xff, 0xff, 0x0f];
        liar.extend_from_slice(&(claim.len() as u32).to_be_bytes());
        liar.extend_from_slice(&claim);
        assert_eq!(snappy(&liar, 1 << 20).unwrap().len(), (1 << 20) + 1);
        assert!(snappy(&framed[..framed.len() - 3], 1 << 20).is_err());
    }
}
