//! What can be wrong with a batch.

/// A batch that does not follow `FORMAT.md`. Positions are byte offsets
/// from the start of the batch.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BatchError {
    #[error("{len} bytes is shorter than the {min}-byte batch header")]
    TooShort { len: usize, min: usize },

    #[error("batch length field says {declared} bytes but {actual} are present")]
    LengthMismatch { declared: usize, actual: usize },

    #[error("unsupported magic byte {0} (only 2 is supported)")]
    BadMagic(i8),

    #[error("CRC mismatch: header says {stored:#010x}, data gives {computed:#010x}")]
    BadCrc { stored: u32, computed: u32 },

    #[error("compressed batches (codec {0}) are not stored by the log; decompress first")]
    Compressed(u8),

    #[error("a batch must hold at least one record")]
    Empty,

    #[error("record {index} at byte {position}: {reason}")]
    BadRecord {
        index: usize,
        position: usize,
        reason: &'static str,
    },

    #[error(
        "a new batch must number its records 0, 1, 2, ...: {records} record(s) with \
         last offset delta {last_offset_delta}"
    )]
    NotDense {
        records: usize,
        last_offset_delta: usize,
    },

    #[error("header says {declared} records but {actual} were found")]
    CountMismatch { declared: usize, actual: usize },
}
