//! The wall clock, as milliseconds since the Unix epoch: the one reading
//! of time the server's own records (uploads, tenants, pipeline changes,
//! Kafka transactions) and record timestamps use.

use std::time::{SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch (0 if the clock is before it).
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}
