//! The example operators in `guest-examples/`, through the real host, on
//! real input, against exact expected output.

use serde_json::json;
use weir_host::{Limits, OperatorInstance};

use crate::support::{Out, engine_with, input, operator, outputs};

fn start(name: &str, config: &[(&str, &str)]) -> OperatorInstance {
    operator(&engine_with(Limits::default()), name, config)
        .unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn main_out(key: &str, value: serde_json::Value, timestamp: i64) -> Out {
    ("main".into(), Some(key.into()), value, timestamp)
}

#[test]
fn receipt_turns_each_purchase_into_a_receipt_at_once() {
    let mut op = start("receipt", &[("currency", "USD")]);
    let purchase = r#"{"order_id":"o-1","customer":"ann","items":[{"sku":"tea","qty":2,"price_cents":350},{"sku":"cup","qty":1,"price_cents":900}],"channel":"web"}"#;
    let negative =
        r#"{"order_id":"o-2","customer":"bob","items":[{"sku":"tea","qty":-1,"price_cents":350}]}"#;
    let out = op
        .process(&[input(
            0,
            &[
                (None, purchase, 5_000),
                (None, negative, 6_000),
                (None, "{}", 7_000),
            ],
        )])
        .unwrap();
    let receipt = json!({
        "order_id": "o-1",
        "customer": "ann",
        "lines": [
            {"sku": "tea", "qty": 2, "price_cents": 350, "line_total_cents": 700},
            {"sku": "cup", "qty": 1, "price_cents": 900, "line_total_cents": 900}
        ],
        "total_cents": 1600,
        "currency": "USD"
    });
    assert_eq!(outputs(&out), [main_out("ann", receipt, 5_000)]);
    let rejected: Vec<u64> = out.rejected.iter().map(|r| r.offset).collect();
    assert_eq!(rejected, [1, 2]);
    assert!(
        out.rejected[0].reason.contains("negative"),
        "{}",
        out.rejected[0].reason
    );
}

#[test]
fn page_visits_counts_per_page_over_a_sliding_event_time_window() {
    let mut op = start("page_visits", &[("window-ms", "60000")]);
    let visit = |page: &str| format!(r#"{{"page":"{page}","user":"u"}}"#);
    let (a, b) = (visit("/a"), visit("/b"));
    let out = op
        .process(&[input(
            0,
            &[
                (None, &a, 1_000),
                (None, &a, 2_000),
                (None, &b, 3_000),
                (None, &a, 70_000),
            ],
        )])
        .unwrap();
    let count = |page: &str, visits: u64, start: i64, end: i64, ts: i64| {
        main_out(
            page,
            json!({"page": page, "visits": visits, "window_start": start, "window_end": end}),
            ts,
        )
    };
    assert_eq!(
        outputs(&out),
        [
            // one updated count per visit, over (t - 60 s, t]
            count("/a", 1, -59_000, 1_000, 1_000),
            count("/a", 2, -58_000, 2_000, 2_000),
            count("/b", 1, -57_000, 3_000, 3_000),
            count("/a", 1, 10_000, 70_000, 70_000),
            // the watermark (70 s) passed the end of the windows of the
            // early visits: the decreased counts follow, in order of time
            count("/a", 1, 1_000, 61_000, 61_000),
            count("/a", 0, 2_000, 62_000, 62_000),
            count("/b", 0, 3_000, 63_000, 63_000),
        ]
    );
    let end = op.advance_watermark(i64::MAX).unwrap();
    assert_eq!(outputs(&end), [count("/a", 0, 70_000, 130_000, 130_000)]);
    assert_eq!(
        op.keyed_state().timer_count(),
        0,
        "nothing is left once every window closed"
    );
}

#[test]
fn error_alert_fires_once_per_burst_of_errors_from_one_service() {
    let mut op = start("error_alert", &[("threshold", "3"), ("window-ms", "10000")]);
    let line = |service: &str, level: &str| {
        format!(r#"{{"service":"{service}","level":"{level}","message":"m"}}"#)
    };
    let (api_err, api_info, db_err) = (
        line("api", "ERROR"),
        line("api", "INFO"),
        line("db", "ERROR"),
    );
    let out = op
        .process(&[input(
            0,
            &[
                (None, &api_err, 1_000),
                (None, &api_info, 1_500),
                (None, &db_err, 1_600),
                (None, &api_err, 2_000),
                (None, &api_err, 3_000),
                // still the same burst: no second alert
                (None, &api_err, 4_000),
                (None, "{\"level\":\"ERROR\"}", 4_500),
            ],
        )])
        .unwrap();
    assert_eq!(
        outputs(&out),
        [(
            "alerts".to_string(),
            Some("api".to_string()),
            json!({"service": "api", "errors": 3, "window_start": -7_000, "window_end": 3_000}),
            3_000
        )]
    );
    assert_eq!(
        out.rejected.iter().map(|r| r.offset).collect::<Vec<_>>(),
        [6],
        "a line without a service"
    );
    // Much later, after the burst has left the window, a new burst alerts again.
    let later = op
        .process(&[input(
            7,
            &[
                (None, &api_err, 30_000),
                (None, &api_err, 31_000),
                (None, &api_err, 32_000),
            ],
        )])
        .unwrap();
    assert_eq!(outputs(&later).len(), 1);
    assert_eq!(outputs(&later)[0].2["window_end"], json!(32_000));
}

#[test]
fn dedupe_drops_keys_seen_within_the_window() {
    let mut op = start("dedupe", &[("window-ms", "1000")]);
    let out = op
        .process(&[input(
            0,
            &[
                (Some("k1"), "first", 0),
                (Some("k1"), "dup", 500),
                (Some("k2"), "other", 600),
                (None, "no key", 700),
                (None, "no key", 800),
                (Some("k1"), "again", 1_000),
            ],
        )])
        .unwrap();
    let values: Vec<_> = outputs(&out).into_iter().map(|o| o.2).collect();
    assert_eq!(
        values,
        [
            json!("first"),
            json!("other"),
            json!("no key"),
            json!("no key"),
            json!("again")
        ]
    );
    let next = op
        .process(&[input(
            6,
            &[(Some("k2"), "dup", 1_500), (Some("k2"), "new", 1_600)],
        )])
        .unwrap();
    let values: Vec<_> = outputs(&next).into_iter().map(|o| o.2).collect();
    // k2 was seen at 600: 1500 is within 1000 ms of it, 1600 is not.
    assert_eq!(values, [json!("new")]);
}
