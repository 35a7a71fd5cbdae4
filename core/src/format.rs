//! Versions of the formats Weir writes for itself (commit records, Kafka
//! transaction state, pipeline records, tenants, module versions): each
//! carries its version, checked before anything else is read, so a data
//! directory from another release says "written by a newer (or older)
//! version of Weir" instead of "corrupt".
//!
//! JSON files carry it as a top-level `"format"` field (absent in files
//! from before versions were written: those are version 1). Binary
//! records start with [`MAGIC`] and the version byte; bytes without the
//! magic are from before, version 1 (no such record starts with a zero
//! byte, which the magic does).

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

/// Starts a versioned binary record; the version byte follows.
pub const MAGIC: [u8; 3] = [0, b'W', b'v'];

/// A format and the versions of it this build reads.
#[derive(Debug, Clone, Copy)]
pub struct Format {
    /// What holds it, for messages ("pipeline record", ...).
    pub what: &'static str,
    /// The version this build writes.
    pub current: u8,
    /// The oldest version this build still reads.
    pub oldest: u8,
}

/// Why stored bytes cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum FormatError {
    #[error(
        "{what} was written by a newer version of Weir (format {found}; this version reads \
         {oldest} to {current}): run that version or a later one"
    )]
    Newer {
        what: &'static str,
        found: u64,
        oldest: u8,
        current: u8,
    },
    #[error(
        "{what} was written by an older version of Weir (format {found}), which this version \
         no longer reads (it reads {oldest} to {current})"
    )]
    Older {
        what: &'static str,
        found: u64,
        oldest: u8,
        current: u8,
    },
    #[error("{what} is corrupt: {reason}")]
    Corrupt { what: &'static str, reason: String },
}

impl Format {
    /// Checks a version found in stored bytes.
    pub fn check(&self, found: u64) -> Result<(), FormatError> {
        let (what, oldest, current) = (self.what, self.oldest, self.current);
        if found > u64::from(current) {
            Err(FormatError::Newer {
                what,
                found,
                oldest,
                current,
            })
        } else if found < u64::from(oldest) {
            Err(FormatError::Older {
                what,
                found,
                oldest,
                current,
            })
        } else {
            Ok(())
        }
    }

    fn corrupt(&self, reason: impl ToString) -> FormatError {
        FormatError::Corrupt {
            what: self.what,
            reason: reason.to_string(),
        }
    }

    /// `payload` behind the magic and the current version.
    pub fn seal(&self, payload: &[u8]) -> Vec<u8> {
        let mut bytes = Vec::with_capacity(MAGIC.len() + 1 + payload.len());
        bytes.extend_from_slice(&MAGIC);
        bytes.push(self.current);
        bytes.extend_from_slice(payload);
        bytes
    }

    /// The version and payload of sealed bytes, the version checked;
    /// bytes without the magic are version 1 as a whole.
    pub fn open<'a>(&self, bytes: &'a [u8]) -> Result<(u8, &'a [u8]), FormatError> {
        let (version, payload) = match bytes.strip_prefix(&MAGIC) {
            Some(rest) => rest
                .split_first()
                .map(|(v, payload)| (*v, payload))
                .ok_or_else(|| self.corrupt("it ends before its version"))?,
            None => (1, bytes),
        };
        self.check(u64::from(version))?;
        Ok((version, payload))
    }

    /// `value` as pretty JSON with the current version in `"format"`
    /// (`value` must serialize to an object).
    pub fn to_json<T: Serialize>(&self, value: &T) -> Vec<u8> {
        let mut json = serde_json::to_value(value).expect("stored values serialize");
        let object = json
            .as_object_mut()
            .expect("stored values are JSON objects");
        object.insert("format".into(), self.current.into());
        serde_json::to_vec_pretty(&json).expect("JSON values serialize")
    }

    /// A value from JSON written by [`to_json`](Self::to_json) (or before
    /// versions were written), its version checked first.
    pub fn from_json<T: DeserializeOwned>(&self, bytes: &[u8]) -> Result<T, FormatError> {
        let mut json: Value = serde_json::from_slice(bytes).map_err(|e| self.corrupt(e))?;
        if let Some(object) = json.as_object_mut() {
            let version = match object.remove("format") {
                None => 1,
                Some(v) => v
                    .as_u64()
                    .ok_or_else(|| self.corrupt(format!("its format {v} is not a number")))?,
            };
            self.check(version)?;
        }
        serde_json::from_value(json).map_err(|e| self.corrupt(e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const V2: Format = Format {
        what: "test record",
        current: 2,
        oldest: 2,
    };

    #[test]
    fn sealed_bytes_open_to_their_version_and_payload() {
        let sealed = V2.seal(b"payload");
        assert_eq!(V2.open(&sealed).unwrap(), (2, &b"payload"[..]));
    }

    #[test]
    fn versions_out_of_range_name_newer_or_older() {
        let newer = Format { current: 3, ..V2 }.seal(b"x");
        let e = V2.open(&newer).unwrap_err();
        assert!(matches!(e, FormatError::Newer { found: 3, .. }), "{e}");
        assert!(e.to_string().contains("newer version of Weir"), "{e}");
        // Unsealed bytes are version 1, older than this format reads.
        let e = V2.open(b"\x05legacy").unwrap_err();
        assert!(matches!(e, FormatError::Older { found: 1, .. }), "{e}");
        let e = V2.open(&MAGIC).unwrap_err();
        assert!(matches!(e, FormatError::Corrupt { .. }), "{e}");
    }

    #[test]
    fn json_carries_its_version() {
        #[derive(Serialize, serde::Deserialize, PartialEq, Debug)]
        #[serde(deny_unknown_fields)]
        struct Record {
            name: String,
        }
        let record = Record { name: "a".into() };
        let json = V2.to_json(&record);
        assert!(String::from_utf8_lossy(&json).contains("\"format\": 2"));
        assert_eq!(V2.from_json::<Record>(&json).unwrap(), record);
        let newer = br#"{"format": 9, "name": "a", "added": true}"#;
        let e = V2.from_json::<Record>(newer).unwrap_err();
        assert!(matches!(e, FormatError::Newer { found: 9, .. }), "{e}");
        let legacy = br#"{"name": "a"}"#;
        let e = V2.from_json::<Record>(legacy).unwrap_err();
        assert!(matches!(e, FormatError::Older { found: 1, .. }), "{e}");
        let v1 = Format { oldest: 1, ..V2 };
        assert_eq!(v1.from_json::<Record>(legacy).unwrap(), record);
        let e = V2.from_json::<Record>(b"{not json").unwrap_err();
        assert!(matches!(e, FormatError::Corrupt { .. }), "{e}");
    }
}
