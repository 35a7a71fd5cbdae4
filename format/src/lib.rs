//! `weir-format`: Weir's record batch format, Kafka's RecordBatch v2
//! (uncompressed), laid out field by field in `log-core/FORMAT.md`.
//!
//! One format serves the log on disk, readers, and the WASM boundary, so this
//! crate is shared by the log (`log-core`) and the guest SDK
//! (`weir-operator`) and depends on neither. Everything works on borrowed
//! byte slices: parsing copies nothing, and a validated batch iterates its
//! records without failing.
//!
//! - `batch`: header layout, [`BatchRef`] (validate and view), [`Batches`]
//!   (concatenated batches), [`seal`] (the CRC), [`set_producer`]
//! - `record`: [`Record`] (to write), [`RecordView`] (read, zero-copy), headers
//! - `writer`: [`BatchWriter`], [`retain`] and [`normalize_new`] (a
//!   producer's new batch, checked and with the host's header fields)
//! - `varint`: Kafka's zig-zag varints
//! - `owned` (feature `owned`, for the host): [`Batch`], an owned and
//!   validated batch, and [`BatchBuilder`]

#![forbid(unsafe_code)]

mod batch;
mod crc_shift;
mod error;
#[cfg(feature = "owned")]
mod owned;
mod record;
mod varint;
mod writer;

pub use batch::{
    BatchRef, Batches, HEADER_LEN, LENGTH_PREFIX, MAGIC, NO_PRODUCER_ID, declared_len, field, seal,
    set_base_offset, set_producer,
};
pub use error::BatchError;
#[cfg(feature = "owned")]
pub use owned::{Batch, BatchBuilder, ProducerStamp};
pub use record::{Header, Headers, Record, RecordView, Records};
pub use writer::{BatchWriter, normalize_new, retain};
