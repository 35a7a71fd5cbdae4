//! `dedupe`: drops records whose key was already seen within a window of
//! event time.
//!
//! Settings: `window-ms` (W, default 600000 = 10 min, at least 1).
//!
//! Input: any records; only their key and timestamp are looked at.
//! Output (`main`): the records kept, unchanged (same key, value, headers
//! and timestamp). Nothing is rejected.
//!
//! Semantics. Records without a key are always kept. A record with key `k`
//! and timestamp `t` is dropped if `k` is remembered with time `t0` and
//! `t < t0 + W` (this includes `t < t0`); otherwise it is kept, and `k` is
//! now remembered with time `t`. A kept key is forgotten once the watermark
//! reaches `t0 + W`. Dropped records do not extend the window: a key
//! arriving every minute with W = 10 min is kept every 10 minutes.
//!
//! For input in timestamp order: a record is dropped exactly when the last
//! kept record with the same key has a timestamp in `(t - W, t]`. This does
//! not depend on how the input is batched, nor on `weir.lateness-ms`, as
//! long as no record is late (timestamp below the watermark before it,
//! the largest timestamp among earlier records minus `weir.lateness-ms`): a
//! key is only forgotten when no record that is not late could be dropped
//! by it. A late record whose key was already forgotten is kept.
//!
//! State: per key, under the key's bytes, the JSON number `t0`; one timer
//! per remembered key, at `t0 + W`, keyed by the key's bytes.

use weir_operator::{Config, Emitter, Error, Input, Operator, export, state, timers};

struct Dedupe {
    window_ms: i64,
}

impl Operator for Dedupe {
    fn process(&mut self, record: &Input<'_>, out: &mut Emitter) -> Result<(), Error> {
        let Some(key) = record.key() else {
            out.forward(record);
            return Ok(());
        };
        let t = record.timestamp();
        if let Some(t0) = state::get_json::<i64>(key)? {
            if t < self.expiry(t0) {
                return Ok(());
            }
            timers::cancel(key, self.expiry(t0));
        }
        state::put_json(key, &t)?;
        timers::set(key, self.expiry(t));
        out.forward(record);
        Ok(())
    }

    fn on_timer(&mut self, key: &[u8], at: i64, _out: &mut Emitter) -> Result<(), Error> {
        // A key kept again since this timer was set has a later expiry.
        if let Some(t0) = state::get_json::<i64>(key)?
            && self.expiry(t0) <= at
        {
            state::delete(key);
        }
        Ok(())
    }
}

impl Dedupe {
    /// When a key kept at `t0` is forgotten.
    fn expiry(&self, t0: i64) -> i64 {
        t0.saturating_add(self.window_ms)
    }
}

fn build(config: &Config) -> Result<Dedupe, String> {
    let window_ms = config.parse_or("window-ms", 600_000i64)?;
    if window_ms < 1 {
        return Err("setting `window-ms` must be at least 1".into());
    }
    Ok(Dedupe { window_ms })
}

export!(build);
