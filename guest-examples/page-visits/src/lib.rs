//! `page-visits`: counts visits per page over a sliding window in event time.
//!
//! Settings: `window-ms` (the window's length W, default 900000 = 15 min)
//! and `bucket-ms` (B, default 1: exact counts; for example 60000 counts in
//! one-minute steps, which keeps the state of busy pages small). Both at
//! least 1, and W a multiple of B.
//!
//! Input: a JSON object `{"page": str, ...}` (other fields ignored); the
//! record's timestamp is the visit's event time. Records that are not such
//! JSON, or whose `page` is empty, are rejected.
//!
//! Output (`main`), keyed by the page: `{"page": str, "visits": int,
//! "window_start": int, "window_end": int}`, the number of visits to the
//! page whose time lies in `(window_start, window_end]` (start excluded,
//! end included; `window_end - window_start` = W).
//!
//! Semantics. A visit's time is its record timestamp rounded down to a
//! multiple of B (the timestamp itself when B = 1).
//! - Each input record (visit at time `t`) emits one output for the window
//!   `(t - W, t]`, counting the visits to that page received so far (in
//!   input order, this one included) whose time lies in that window. Its
//!   record timestamp is the input's.
//! - Expiry: for each page and each distinct time `t` of its visits, once
//!   the watermark reaches `t + W + B` (so every visit that is not late
//!   and falls in `(t, t + W]` has been received), one output for the
//!   window `(t, t + W]`, the first window the visits at `t` have left,
//!   counting the visits to that page received so far whose time lies in
//!   it (possibly 0). Its record timestamp is `t + W`. It is emitted even
//!   when the count equals one reported before (for instance when a visit
//!   arrived exactly at `t + W`). Expiry outputs come after the outputs of
//!   the input batch that moved the watermark, in order of time then page.
//!   At end of input the host may advance the watermark to the end of time:
//!   then every pending expiry is emitted, and a page's last one counts 0.
//!
//! Late records: a record is late if its timestamp is below the watermark
//! before it (the largest timestamp among earlier records minus
//! `weir.lateness-ms`). Without late records the outputs do not depend on
//! how the input is batched: an expiry output counts every visit of the
//! whole input in its window. A late record is counted and reported all
//! the same, but visits whose expiry output was already emitted are no
//! longer in any count, and the late visit itself is missing from expiry
//! outputs already emitted.
//!
//! State: per page, under the page's name, the JSON list `[[t, n], ...]`
//! (n visits at time t) of the visits not yet expired, sorted by t; one
//! timer per distinct `t`, at `t + W + B`, keyed by the page's name.

use serde::{Deserialize, Serialize};
use weir_operator::{Config, Emitter, Error, Input, MAIN, Operator, export, state, timers};

#[derive(Deserialize)]
struct Visit {
    page: String,
}

#[derive(Serialize)]
struct Count<'a> {
    page: &'a str,
    visits: u64,
    window_start: i64,
    window_end: i64,
}

/// A page's visits still inside a window: `(time, how many)`, sorted by time.
type Visits = Vec<(i64, u64)>;

struct PageVisits {
    window_ms: i64,
    bucket_ms: i64,
}

impl Operator for PageVisits {
    fn process(&mut self, record: &Input<'_>, out: &mut Emitter) -> Result<(), Error> {
        let visit: Visit = record.json()?;
        if visit.page.is_empty() {
            return Err(Error::reject("`page` is empty"));
        }
        let key = visit.page.as_bytes();
        let t = self.bucket(record.timestamp());
        let mut visits = load(key)?;
        add(&mut visits, t);
        state::put_json(key, &visits)?;
        timers::set(
            key,
            t.saturating_add(self.window_ms)
                .saturating_add(self.bucket_ms),
        );
        let count = self.count(&visit.page, &visits, t);
        out.send_json(MAIN, Some(key), record.timestamp(), &count)
    }

    fn on_timer(&mut self, key: &[u8], at: i64, out: &mut Emitter) -> Result<(), Error> {
        let page =
            std::str::from_utf8(key).map_err(|_| Error::fail("timer key is not a page name"))?;
        // The visits at `at - B - W` have left the window ending at `at - B`.
        let end = at.saturating_sub(self.bucket_ms);
        let mut visits = load(key)?;
        visits.retain(|&(t, _)| t > end.saturating_sub(self.window_ms));
        if visits.is_empty() {
            state::delete(key);
        } else {
            state::put_json(key, &visits)?;
        }
        let count = self.count(page, &visits, end);
        out.send_json(MAIN, Some(key), end, &count)
    }
}

impl PageVisits {
    /// `ts` rounded down to a multiple of the bucket size.
    fn bucket(&self, ts: i64) -> i64 {
        ts.saturating_sub(ts.rem_euclid(self.bucket_ms))
    }

    /// The count for the window `(end - W, end]`.
    fn count<'a>(&self, page: &'a str, visits: &Visits, end: i64) -> Count<'a> {
        let start = end.saturating_sub(self.window_ms);
        Count {
            page,
            visits: visits
                .iter()
                .filter(|&&(t, _)| t > start && t <= end)
                .map(|&(_, n)| n)
                .sum(),
            window_start: start,
            window_end: end,
        }
    }
}

fn load(key: &[u8]) -> Result<Visits, Error> {
    Ok(state::get_json(key)?.unwrap_or_default())
}

/// Adds one visit at time `t`, keeping `visits` sorted.
fn add(visits: &mut Visits, t: i64) {
    match visits.binary_search_by_key(&t, |&(time, _)| time) {
        Ok(at) => visits[at].1 += 1,
        Err(at) => visits.insert(at, (t, 1)),
    }
}

fn build(config: &Config) -> Result<PageVisits, String> {
    let window_ms = config.parse_or("window-ms", 900_000i64)?;
    let bucket_ms = config.parse_or("bucket-ms", 1i64)?;
    if window_ms < 1 || bucket_ms < 1 || window_ms % bucket_ms != 0 {
        return Err(format!(
            "settings `window-ms` ({window_ms}) and `bucket-ms` ({bucket_ms}) must be at least 1, and `window-ms` a multiple of `bucket-ms`"
        ));
    }
    Ok(PageVisits {
        window_ms,
        bucket_ms,
    })
}

export!(build);
