//! Event time: the watermark and timers that fire when it passes them.

use crate::bindings::weir::operator::timers as host;

/// The current watermark (ms since the Unix epoch): records older than this
/// are late. `i64::MIN` before any record. It moves between calls, after
/// each `process` call (to the largest timestamp of its input minus the
/// allowed lateness), so during `process` it is the watermark from before
/// the batch: a record with a timestamp below it is late.
pub fn watermark() -> i64 {
    host::watermark()
}

/// Asks for [`Operator::on_timer`](crate::Operator::on_timer) with
/// `(key, at)` once the watermark reaches `at`.
pub fn set(key: &[u8], at: i64) {
    host::set(key, at)
}

/// Cancels a timer set with [`set`].
pub fn cancel(key: &[u8], at: i64) {
    host::cancel(key, at)
}
