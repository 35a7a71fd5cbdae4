//! `error-alert`: alerts once per burst when a service logs too many errors
//! within a window of event time.
//!
//! Settings: `threshold` (k, default 5, at least 1), `window-ms` (W,
//! default 300000 = 5 min, at least 1) and `level` (the level that counts
//! as an error, compared exactly, default `ERROR`).
//!
//! Input: JSON log lines `{"service": str, "level": str, "message": str, ...}`
//! (`message` and other fields are ignored); the record's timestamp is the
//! line's event time. Records that are not JSON objects with string
//! `service` and `level` fields are rejected, as are error lines with an
//! empty `service`. Lines of another level produce nothing.
//!
//! Output (`alerts`), keyed by the service, with the timestamp of the error
//! that raised it: `{"service": str, "errors": int, "window_start": int,
//! "window_end": int}`: `errors` errors of the service have a timestamp in
//! `(window_start, window_end]` (start excluded, end included;
//! `window_end - window_start` = W; `window_end` is the raising error's
//! timestamp). Nothing goes to `main`.
//!
//! Semantics. Let `c(T)` be the number of errors of a service received so
//! far with timestamp in `(T - W, T]`. Each error line, at time `t`:
//! 1. if an alert is out for the service, raised at time `ta`, and
//!    `t > ta` and `c(t - 1) < k`, the burst is over: the alert is cleared.
//!    (For input in timestamp order this is exactly "c dropped below k at
//!    some millisecond T with ta <= T < t".)
//! 2. the error is counted; if no alert is out and `c(t) >= k`, an alert
//!    with `errors = c(t)` and the window `(t - W, t]` is emitted and is
//!    now out, raised at `t`.
//!
//! So a service alerts at the error that brings its window count to k, then
//! stays silent, however many errors follow, until its count has been below
//! k at some instant; the next error that brings it back to k alerts again.
//! Several errors with the same timestamp are counted one by one: the one
//! that reaches k alerts.
//!
//! Late records: a record is late if its timestamp is below the watermark
//! before it (the largest timestamp among earlier records minus
//! `weir.lateness-ms`). Without late records the alerts do not depend on
//! how the input is batched. With out-of-order input the rules above use
//! the errors received so far, and a late error may miss errors already
//! forgotten.
//!
//! State: per service, under its name, `{"errors": [[t, n], ...],
//! "alerted_at": ta or null}` (n errors at time t, sorted by t). The errors
//! at `t` are forgotten by a timer at `t + W + 1` (keyed by the service
//! name), when no later record that is not late can count them any more;
//! the state is deleted once no error is left.

use serde::{Deserialize, Serialize};
use weir_operator::{Config, Emitter, Error, Input, Operator, export, state, timers};

/// The output alerts go to.
const ALERTS: &str = "alerts";

#[derive(Deserialize)]
struct LogLine {
    service: String,
    level: String,
}

#[derive(Serialize)]
struct Alert<'a> {
    service: &'a str,
    errors: u64,
    window_start: i64,
    window_end: i64,
}

/// A service's recent errors and whether an alert is out for them.
#[derive(Default, Serialize, Deserialize)]
struct Burst {
    /// `(time, how many errors)`, sorted by time.
    errors: Vec<(i64, u64)>,
    /// When the alert that is out was raised, if one is.
    alerted_at: Option<i64>,
}

struct ErrorAlert {
    threshold: u64,
    window_ms: i64,
    level: String,
}

impl Operator for ErrorAlert {
    fn process(&mut self, record: &Input<'_>, out: &mut Emitter) -> Result<(), Error> {
        let line: LogLine = record.json()?;
        if line.level != self.level {
            return Ok(());
        }
        if line.service.is_empty() {
            return Err(Error::reject("`service` is empty"));
        }
        let key = line.service.as_bytes();
        let t = record.timestamp();
        let mut burst: Burst = state::get_json(key)?.unwrap_or_default();
        if let Some(ta) = burst.alerted_at
            && t > ta
            && self.count(&burst, t.saturating_sub(1)) < self.threshold
        {
            burst.alerted_at = None;
        }
        add(&mut burst.errors, t);
        timers::set(key, t.saturating_add(self.window_ms).saturating_add(1));
        let errors = self.count(&burst, t);
        if burst.alerted_at.is_none() && errors >= self.threshold {
            burst.alerted_at = Some(t);
            let alert = Alert {
                service: &line.service,
                errors,
                window_start: t.saturating_sub(self.window_ms),
                window_end: t,
            };
            out.send_json(ALERTS, Some(key), t, &alert)?;
        }
        state::put_json(key, &burst)
    }

    fn on_timer(&mut self, key: &[u8], at: i64, _out: &mut Emitter) -> Result<(), Error> {
        let Some(mut burst) = state::get_json::<Burst>(key)? else {
            return Ok(());
        };
        // Errors at `at - W - 1` and before are outside every window still to be counted.
        let oldest = at.saturating_sub(self.window_ms);
        burst.errors.retain(|&(t, _)| t >= oldest);
        if burst.errors.is_empty() {
            state::delete(key);
            Ok(())
        } else {
            state::put_json(key, &burst)
        }
    }
}

impl ErrorAlert {
    /// `c(end)`: the errors with time in `(end - W, end]`.
    fn count(&self, burst: &Burst, end: i64) -> u64 {
        let start = end.saturating_sub(self.window_ms);
        burst
            .errors
            .iter()
            .filter(|&&(t, _)| t > start && t <= end)
            .map(|&(_, n)| n)
            .sum()
    }
}

/// Adds one error at time `t`, keeping `errors` sorted.
fn add(errors: &mut Vec<(i64, u64)>, t: i64) {
    match errors.binary_search_by_key(&t, |&(time, _)| time) {
        Ok(at) => errors[at].1 += 1,
        Err(at) => errors.insert(at, (t, 1)),
    }
}

fn build(config: &Config) -> Result<ErrorAlert, String> {
    let threshold = config.parse_or("threshold", 5u64)?;
    let window_ms = config.parse_or("window-ms", 300_000i64)?;
    if threshold < 1 || window_ms < 1 {
        return Err("settings `threshold` and `window-ms` must be at least 1".into());
    }
    Ok(ErrorAlert {
        threshold,
        window_ms,
        level: config.get("level").unwrap_or("ERROR").to_string(),
    })
}

export!(build);
