//! Records as JSON: how people write records in and read them out.
//!
//! Input, one record per line:
//! - a JSON object with a `value` (or `value_b64`) field is a record:
//!   `{"key": ..., "value": ..., "timestamp": ms, "headers": {"name": "value"}}`.
//!   A string key or value is taken as its UTF-8 bytes; any other JSON
//!   value as its JSON text; `key_b64`/`value_b64` carry raw bytes. A record
//!   without `timestamp` gets the time it was read.
//! - any other line (plain text, or JSON without a `value` field) is the
//!   value itself, with no key.
//!
//! Output, one object per record: `{"output", "key", "value", "timestamp",
//! "headers"}` where a value (or key) that is JSON is embedded as JSON, other
//! UTF-8 as a string, and anything else as base64 in `value_b64`/`key_b64`.

use std::collections::BTreeMap;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde_json::{Map, Value, json};
use weir_format::{Batch, BatchBuilder, Header, Record, RecordView};

/// A record read from JSON, owning its bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JsonRecord {
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
    pub headers: Vec<(String, Vec<u8>)>,
    pub timestamp: i64,
}

/// Reads one input line (see the module docs). `now` is the timestamp of
/// records that carry none.
pub fn parse_line(line: &str, now: i64) -> Result<JsonRecord, String> {
    let plain = || JsonRecord {
        key: None,
        value: Some(line.as_bytes().to_vec()),
        headers: Vec::new(),
        timestamp: now,
    };
    let Ok(Value::Object(object)) = serde_json::from_str::<Value>(line) else {
        return Ok(plain());
    };
    if !object.contains_key("value") && !object.contains_key("value_b64") {
        return Ok(plain());
    }
    parse_object(&object, now)
}

/// Reads a record object (`key`, `value`, `headers`, `timestamp` and the
/// `_b64` forms); other fields are the caller's business.
pub fn parse_object(object: &Map<String, Value>, now: i64) -> Result<JsonRecord, String> {
    let timestamp = match object.get("timestamp") {
        None | Some(Value::Null) => now,
        Some(t) => t
            .as_i64()
            .ok_or_else(|| format!("timestamp must be whole milliseconds, got {t}"))?,
    };
    let headers = match object.get("headers") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Object(h)) => h
            .iter()
            .map(|(name, v)| (name.clone(), bytes_of(v)))
            .collect(),
        Some(other) => return Err(format!("headers must be an object, got {other}")),
    };
    Ok(JsonRecord {
        key: field_bytes(object, "key")?,
        value: field_bytes(object, "value")?,
        headers,
        timestamp,
    })
}

/// `name` as bytes, or `name_b64` decoded; `null` or absent is `None`.
fn field_bytes(object: &Map<String, Value>, name: &str) -> Result<Option<Vec<u8>>, String> {
    let b64 = format!("{name}_b64");
    if let Some(encoded) = object.get(&b64) {
        let text = encoded
            .as_str()
            .ok_or_else(|| format!("{b64} must be a base64 string"))?;
        return BASE64
            .decode(text)
            .map(Some)
            .map_err(|e| format!("{b64} is not valid base64: {e}"));
    }
    Ok(match object.get(name) {
        None | Some(Value::Null) => None,
        Some(v) => Some(bytes_of(v)),
    })
}

fn bytes_of(value: &Value) -> Vec<u8> {
    match value {
        Value::String(s) => s.as_bytes().to_vec(),
        other => other.to_string().into_bytes(),
    }
}

/// Encodes records read from JSON into one batch (offsets 0, 1, 2...).
/// Panics on an empty list: callers check for records first.
pub fn encode<'a>(records: impl IntoIterator<Item = &'a JsonRecord>) -> Batch {
    let mut builder = BatchBuilder::new();
    for record in records {
        let headers: Vec<Header<'_>> = record
            .headers
            .iter()
            .map(|(name, value)| Header {
                name,
                value: Some(value),
            })
            .collect();
        builder.push(&Record {
            key: record.key.as_deref(),
            value: record.value.as_deref(),
            headers: &headers,
            timestamp: record.timestamp,
        });
    }
    builder.finish().expect("callers pass at least one record")
}

/// The JSON form of an output record.
pub fn render(output: &str, record: &RecordView<'_>) -> Value {
    let mut object = Map::new();
    object.insert("output".into(), json!(output));
    render_into(&mut object, record);
    Value::Object(object)
}

/// Adds a record's key, value, timestamp and headers to `object`.
pub fn render_into(object: &mut Map<String, Value>, record: &RecordView<'_>) {
    put_bytes(object, "key", record.key);
    put_bytes(object, "value", record.value);
    object.insert("timestamp".into(), json!(record.timestamp));
    let headers: BTreeMap<&str, Value> = record
        .headers()
        .map(|h| (h.name, h.value.map_or(Value::Null, text_or_b64)))
        .collect();
    if !headers.is_empty() {
        object.insert("headers".into(), json!(headers));
    }
}

fn put_bytes(object: &mut Map<String, Value>, name: &str, bytes: Option<&[u8]>) {
    let Some(bytes) = bytes else {
        object.insert(name.into(), Value::Null);
        return;
    };
    if let Ok(value) = serde_json::from_slice::<Value>(bytes) {
        object.insert(name.into(), value);
    } else if let Ok(text) = std::str::from_utf8(bytes) {
        object.insert(name.into(), json!(text));
    } else {
        object.insert(format!("{name}_b64"), json!(BASE64.encode(bytes)));
    }
}

fn text_or_b64(bytes: &[u8]) -> Value {
    match std::str::from_utf8(bytes) {
        Ok(text) => json!(text),
        Err(_) => json!({ "b64": BASE64.encode(bytes) }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_objects_plain_lines_and_bare_json_are_read() {
        let r = parse_line(
            r#"{"key":"k","value":{"a":1},"timestamp":5,"headers":{"h":"v"}}"#,
            99,
        )
        .unwrap();
        assert_eq!(r.key.as_deref(), Some(&b"k"[..]));
        assert_eq!(r.value.as_deref(), Some(&br#"{"a":1}"#[..]));
        assert_eq!((r.timestamp, r.headers.len()), (5, 1));
        let r = parse_line("hello world", 7).unwrap();
        assert_eq!(
            (r.value.as_deref(), r.timestamp),
            (Some(&b"hello world"[..]), 7)
        );
        let r = parse_line(r#"{"level":"ERROR"}"#, 7).unwrap();
        assert_eq!(
            r.value.as_deref(),
            Some(&br#"{"level":"ERROR"}"#[..]),
            "a JSON object without value is the value"
        );
        let r = parse_line(r#"{"value_b64":"AAE="}"#, 7).unwrap();
        assert_eq!(r.value.as_deref(), Some(&[0u8, 1][..]));
    }

    #[test]
    fn bad_fields_are_explained() {
        assert!(
            parse_line(r#"{"value":"v","timestamp":"soon"}"#, 0)
                .unwrap_err()
                .contains("timestamp")
        );
        assert!(
            parse_line(r#"{"value_b64":"!!"}"#, 0)
                .unwrap_err()
                .contains("base64")
        );
        assert!(
            parse_line(r#"{"value":"v","headers":[1]}"#, 0)
                .unwrap_err()
                .contains("headers")
        );
    }
}
