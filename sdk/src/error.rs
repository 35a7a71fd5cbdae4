//! How an operator says a record or a call went wrong.

/// The error an operator returns from [`Operator::process`](crate::Operator::process).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    /// Refuse this record (it goes to the dead-letter topic) and go on.
    Reject(String),
    /// Fail the whole call: nothing it emitted is kept.
    Fail(String),
}

impl Error {
    pub fn reject(reason: impl Into<String>) -> Error {
        Error::Reject(reason.into())
    }

    pub fn fail(reason: impl Into<String>) -> Error {
        Error::Fail(reason.into())
    }
}

/// A record that is not the JSON it should be is refused, not fatal.
impl From<serde_json::Error> for Error {
    fn from(e: serde_json::Error) -> Error {
        Error::Reject(format!("invalid JSON: {e}"))
    }
}

impl From<std::str::Utf8Error> for Error {
    fn from(e: std::str::Utf8Error) -> Error {
        Error::Reject(format!("value is not UTF-8: {e}"))
    }
}
