//! Keyed state kept by the host for this operator instance. Pipelines
//! checkpoint it with their input position, so it survives restarts.

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::Error;
use crate::bindings::weir::operator::state as host;

/// The bytes stored under `key`, if any.
pub fn get(key: &[u8]) -> Option<Vec<u8>> {
    host::get(key)
}

/// Stores `value` under `key`.
pub fn put(key: &[u8], value: &[u8]) {
    host::put(key, value)
}

/// Removes `key`.
pub fn delete(key: &[u8]) {
    host::delete(key)
}

/// The JSON value stored under `key`, if any. Stored bytes that do not
/// parse fail the call (state is the operator's own writing).
pub fn get_json<T: DeserializeOwned>(key: &[u8]) -> Result<Option<T>, Error> {
    match get(key) {
        None => Ok(None),
        Some(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(|e| {
            Error::fail(format!(
                "state under key {:?} is not valid JSON: {e}",
                String::from_utf8_lossy(key)
            ))
        }),
    }
}

/// Stores `value` as JSON under `key`.
pub fn put_json<T: Serialize>(key: &[u8], value: &T) -> Result<(), Error> {
    let bytes = serde_json::to_vec(value)
        .map_err(|e| Error::fail(format!("cannot encode state as JSON: {e}")))?;
    put(key, &bytes);
    Ok(())
}
