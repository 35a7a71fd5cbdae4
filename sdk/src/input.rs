//! An input record, borrowed from the input batch without copying.

use serde::Deserialize;
use weir_format::{Header, RecordView};

use crate::Error;

/// One input record.
#[derive(Debug, Clone, Copy)]
pub struct Input<'a> {
    pub(crate) view: RecordView<'a>,
}

impl<'a> Input<'a> {
    /// The record's offset in its input partition.
    pub fn offset(&self) -> u64 {
        self.view.offset
    }

    /// Event time, in milliseconds since the Unix epoch.
    pub fn timestamp(&self) -> i64 {
        self.view.timestamp
    }

    pub fn key(&self) -> Option<&'a [u8]> {
        self.view.key
    }

    /// The value; empty for a tombstone (see [`is_tombstone`](Self::is_tombstone)).
    pub fn value(&self) -> &'a [u8] {
        self.view.value.unwrap_or_default()
    }

    /// True for a record without a value (a deletion marker).
    pub fn is_tombstone(&self) -> bool {
        self.view.is_tombstone()
    }

    /// The value as UTF-8 text; a record that is not text is rejected.
    pub fn value_str(&self) -> Result<&'a str, Error> {
        Ok(std::str::from_utf8(self.value())?)
    }

    /// The value parsed as JSON; a record that does not parse is rejected.
    pub fn json<T: Deserialize<'a>>(&self) -> Result<T, Error> {
        Ok(serde_json::from_slice(self.value())?)
    }

    /// The record's headers, in order.
    pub fn headers(&self) -> impl Iterator<Item = Header<'a>> {
        self.view.headers()
    }

    /// The value of the first header named `name`.
    pub fn header(&self, name: &str) -> Option<&'a [u8]> {
        self.view
            .headers()
            .find(|h| h.name == name)
            .and_then(|h| h.value)
    }
}
