//! `weir:operator/log`: guest log messages into the host's `tracing` log,
//! tagged with the operator, cleaned (see `guest_text`) and limited.
//!
//! Two limits apply: a number of messages per call, and a rate in bytes
//! per second over time ([`LogBudget`], a token bucket that outlives
//! instances, so trapping and re-instantiating does not refill it). What
//! goes past either is dropped and counted; a line saying how many were
//! dropped is logged at most every [`DROPPED_REPORT_EVERY`]. Lines the
//! guest prints to stdout and stderr go through the same budget.

use std::time::{Duration, Instant};

use super::HostState;
use super::weir::operator::log::Host;
use super::weir::operator::types::Level;
use crate::guest_text::{MAX_GUEST_TEXT, clean};

/// How often at most the host logs how many guest messages it dropped.
pub const DROPPED_REPORT_EVERY: Duration = Duration::from_secs(10);

/// Bytes charged per message on top of its text (the log line's prefix).
const MESSAGE_OVERHEAD: f64 = 64.0;

/// A token bucket of log bytes per second for one operator.
#[derive(Debug, Clone)]
pub struct LogBudget {
    bytes_per_sec: f64,
    burst: f64,
    tokens: f64,
    refilled: Instant,
    dropped: u64,
    reported: Instant,
}

impl LogBudget {
    /// A full bucket of `bytes_per_sec`, holding up to ten seconds' worth.
    pub fn new(bytes_per_sec: usize) -> LogBudget {
        let rate = bytes_per_sec as f64;
        let now = Instant::now();
        LogBudget {
            bytes_per_sec: rate,
            burst: rate * 10.0,
            tokens: rate * 10.0,
            refilled: now,
            dropped: 0,
            // The first drop is reported at once.
            reported: now.checked_sub(DROPPED_REPORT_EVERY).unwrap_or(now),
        }
    }

    /// Takes room for a message of `len` bytes at `now`, or counts it as
    /// dropped.
    fn admit(&mut self, len: usize, now: Instant) -> bool {
        let earned =
            now.saturating_duration_since(self.refilled).as_secs_f64() * self.bytes_per_sec;
        self.tokens = (self.tokens + earned).min(self.burst);
        self.refilled = now;
        let cost = len as f64 + MESSAGE_OVERHEAD;
        if self.tokens >= cost {
            self.tokens -= cost;
            true
        } else {
            self.dropped += 1;
            false
        }
    }

    /// How many messages were dropped since the last report, when it is
    /// time to report them.
    fn dropped_to_report(&mut self) -> Option<u64> {
        if self.dropped == 0 || self.reported.elapsed() < DROPPED_REPORT_EVERY {
            return None;
        }
        self.reported = Instant::now();
        Some(std::mem::take(&mut self.dropped))
    }
}

impl HostState {
    /// Logs one line from the guest at `level`, if the budgets allow.
    pub(super) fn guest_line(&mut self, level: Level, stream: Option<&str>, text: &str) {
        if self.log_budget == 0
            || !self
                .log_rate
                .admit(text.len().min(MAX_GUEST_TEXT), Instant::now())
        {
            if self.log_budget == 0 {
                self.log_rate.dropped += 1;
            }
            self.report_dropped();
            return;
        }
        self.log_budget -= 1;
        let (operator, message) = (&self.operator, clean(text, MAX_GUEST_TEXT));
        let stream = stream.unwrap_or("log");
        match level {
            Level::Trace => tracing::trace!(%operator, stream, "{message}"),
            Level::Debug => tracing::debug!(%operator, stream, "{message}"),
            Level::Info => tracing::info!(%operator, stream, "{message}"),
            Level::Warn => tracing::warn!(%operator, stream, "{message}"),
            Level::Error => tracing::error!(%operator, stream, "{message}"),
        }
    }

    fn report_dropped(&mut self) {
        if let Some(dropped) = self.log_rate.dropped_to_report() {
            tracing::warn!(operator = %self.operator, dropped,
                "operator log messages dropped (over the per-call or per-second log limit)");
        }
    }
}

impl Host for HostState {
    fn log(&mut self, level: Level, message: String) -> wasmtime::Result<()> {
        self.guest_line(level, None, &message);
        Ok(())
    }

    fn fatal(&mut self, offset: Option<u64>, message: String) -> wasmtime::Result<()> {
        self.fatal = Some((offset, clean(&message, MAX_GUEST_TEXT)));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bucket_admits_its_burst_then_drops_until_time_refills_it() {
        let mut budget = LogBudget::new(1000);
        let start = budget.refilled;
        let mut admitted = 0;
        while budget.admit(936, start) {
            admitted += 1;
        }
        assert_eq!(admitted, 10, "ten seconds' worth of 1 KB messages");
        assert!(!budget.admit(0, start));
        assert!(
            budget.admit(936, start + Duration::from_secs(2)),
            "two seconds later there is room again"
        );
        assert_eq!(budget.dropped, 2);
    }
}
