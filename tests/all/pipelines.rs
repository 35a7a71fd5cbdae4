//! Pipelines end to end: the real server process over real HTTP, real
//! modules from `guest-examples/` and `tests/guests/`, results read back
//! through the API.

use serde_json::{Value, json};

use crate::support::server::WeirServer;

fn purchase(order: &str, customer: &str, items: Value) -> Value {
    json!({ "key": customer, "value": { "order_id": order, "customer": customer, "items": items } })
}

#[test]
fn purchases_become_receipts() {
    let dir = tempfile::tempdir().unwrap();
    let server = WeirServer::start(&dir.path().join("data"));
    server.start_receipts("USD");
    server.produce(
        "purchases",
        vec![
            purchase(
                "o1",
                "ann",
                json!([{"sku": "tea", "qty": 2, "price_cents": 350}]),
            ),
            purchase(
                "o2",
                "bob",
                json!([{"sku": "cup", "qty": 1, "price_cents": 900},
                                       {"sku": "tea", "qty": 1, "price_cents": 350}]),
            ),
        ],
    );
    server.wait_until("two receipts", |s| s.values("receipts").len() == 2);
    let mut receipts = server.values("receipts");
    receipts.sort_by_key(|r| r["order_id"].as_str().unwrap().to_string());
    assert_eq!(
        receipts,
        vec![
            json!({"order_id": "o1", "customer": "ann", "currency": "USD", "total_cents": 700,
                   "lines": [{"sku": "tea", "qty": 2, "price_cents": 350, "line_total_cents": 700}]}),
            json!({"order_id": "o2", "customer": "bob", "currency": "USD", "total_cents": 1250,
                   "lines": [{"sku": "cup", "qty": 1, "price_cents": 900, "line_total_cents": 900},
                             {"sku": "tea", "qty": 1, "price_cents": 350, "line_total_cents": 350}]}),
        ]
    );
    let keys: Vec<Value> = server
        .records("receipts", 0)
        .iter()
        .map(|r| r["key"].clone())
        .collect();
    assert!(keys.contains(&json!("ann")) && keys.contains(&json!("bob")));
    server.wait_caught_up("receipts");
    let status = server.pipeline("receipts");
    assert_eq!(
        (&status["records_in"], &status["records_out"]),
        (&json!(2), &json!(2))
    );
}

fn visit(page: &str, t: i64) -> Value {
    json!({ "key": page, "value": { "page": page }, "timestamp": t })
}

#[test]
fn page_visits_are_counted_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let server = WeirServer::start(&dir.path().join("data"));
    server.create_topic("visits", 1);
    server.create_topic("counts", 1);
    server.push_module("page-visits", "page_visits");
    let spec = json!({
        "inputs": ["visits"],
        "stages": [{ "module": "page-visits", "config": { "window-ms": 1000 },
                     "outputs": { "main": "counts" } }],
    });
    server.expect(201, server.put("/v1/pipelines/visits", &spec));
    server.produce(
        "visits",
        vec![
            visit("a", 1000),
            visit("a", 1500),
            visit("b", 1600),
            visit("a", 2200),
        ],
    );
    server.wait_until("five counts", |s| s.values("counts").len() == 5);
    let window = |page: &str, visits: i64, end: i64| json!({"page": page, "visits": visits, "window_start": end - 1000, "window_end": end});
    assert_eq!(
        server.values("counts"),
        vec![
            window("a", 1, 1000),
            window("a", 2, 1500),
            window("b", 1, 1600),
            window("a", 2, 2200),
            // The visit at 1000 left its window once the watermark passed 2001.
            window("a", 1, 2000),
        ]
    );
}

fn log_line(service: &str, level: &str, t: i64) -> Value {
    json!({ "value": { "service": service, "level": level, "message": "m" }, "timestamp": t })
}

#[test]
fn error_bursts_raise_exactly_the_expected_alerts() {
    let dir = tempfile::tempdir().unwrap();
    let server = WeirServer::start(&dir.path().join("data"));
    server.create_topic("logs", 1);
    server.create_topic("alerts", 1);
    server.push_module("error-alert", "error_alert");
    let spec = json!({
        "inputs": ["logs"],
        "stages": [{ "module": "error-alert", "config": { "threshold": 3, "window-ms": 1000 },
                     "outputs": { "alerts": "alerts" } }],
    });
    server.expect(201, server.put("/v1/pipelines/alerting", &spec));
    let lines = vec![
        log_line("api", "ERROR", 100),
        log_line("db", "ERROR", 150),
        log_line("api", "ERROR", 200),
        log_line("api", "INFO", 250),
        log_line("api", "ERROR", 300),  // third error within 1 s: alert
        log_line("api", "ERROR", 400),  // still the same burst: silent
        log_line("db", "ERROR", 450),   // db has only two
        log_line("api", "ERROR", 5000), // burst over, count 1
        log_line("api", "ERROR", 5001),
        log_line("api", "ERROR", 5002), // three again: second alert
    ];
    server.produce("logs", lines);
    server.wait_caught_up("alerting");
    assert_eq!(
        server.values("alerts"),
        vec![
            json!({"service": "api", "errors": 3, "window_start": -700, "window_end": 300}),
            json!({"service": "api", "errors": 3, "window_start": 4002, "window_end": 5002}),
        ]
    );
}

#[test]
fn two_stages_run_fused() {
    let dir = tempfile::tempdir().unwrap();
    let server = WeirServer::start(&dir.path().join("data"));
    server.create_topic("purchases", 1);
    server.create_topic("receipts", 1);
    server.push_module("filter", "filter");
    server.push_module("receipt", "receipt");
    let spec = json!({
        "inputs": ["purchases"],
        "stages": [
            { "module": "filter", "config": { "field": "customer", "equals": "ann" } },
            { "module": "receipt", "outputs": { "main": "receipts" } },
        ],
    });
    server.expect(201, server.put("/v1/pipelines/ann-receipts", &spec));
    let items = json!([{"sku": "tea", "qty": 1, "price_cents": 100}]);
    server.produce(
        "purchases",
        vec![
            purchase("o1", "ann", items.clone()),
            purchase("o2", "bob", items.clone()),
            purchase("o3", "ann", items),
        ],
    );
    server.wait_caught_up("ann-receipts");
    let orders: Vec<Value> = server
        .values("receipts")
        .iter()
        .map(|r| r["order_id"].clone())
        .collect();
    assert_eq!(orders, vec![json!("o1"), json!("o3")]);
    let status = server.pipeline("ann-receipts");
    assert_eq!(status["stages"][0]["records_in"], 3);
    assert_eq!(status["stages"][0]["records_out"], 2);
    assert_eq!(status["stages"][1]["records_in"], 2);
}

/// A pipeline over the trapping fixture with the given error policy.
fn trapping_pipeline(server: &WeirServer, policy: &str) {
    server.create_topic("in", 1);
    server.create_topic("out", 1);
    server.create_topic("dlq", 1);
    server.push_module("trap", "trap_every_record");
    let spec = json!({
        "inputs": ["in"],
        "on_error": policy,
        "dead_letter": "dlq",
        "stages": [{ "module": "trap", "outputs": { "main": "out" } }],
    });
    server.expect(201, server.put("/v1/pipelines/trapping", &spec));
    server.produce(
        "in",
        vec![json!({"value": "first"}), json!({"value": "second"})],
    );
}

#[test]
fn dead_letter_policy_sends_failed_records_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let server = WeirServer::start(&dir.path().join("data"));
    trapping_pipeline(&server, "dead-letter");
    server.wait_until("two dead letters", |s| s.records("dlq", 0).len() == 2);
    let dead = server.records("dlq", 0);
    for (i, (record, value)) in dead.iter().zip(["first", "second"]).enumerate() {
        assert_eq!(record["value"], value);
        let reason = record["headers"]["weir.error"].as_str().unwrap();
        assert!(
            reason.contains(&format!("refusing record at offset {i}")),
            "{reason}"
        );
        assert_eq!(record["headers"]["weir.source"], format!("in/0@{i}"));
        assert_eq!(record["headers"]["weir.stage"], "trap@1");
    }
    server.wait_caught_up("trapping");
    let status = server.pipeline("trapping");
    assert_eq!(
        (&status["errors"], &status["dead_lettered"]),
        (&json!(2), &json!(2))
    );
    assert!(server.records("out", 0).is_empty());
}

#[test]
fn skip_policy_drops_failed_records_and_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let server = WeirServer::start(&dir.path().join("data"));
    trapping_pipeline(&server, "skip");
    server.wait_caught_up("trapping");
    let status = server.pipeline("trapping");
    assert_eq!(status["errors"], 2);
    assert!(server.records("dlq", 0).is_empty());
}

#[test]
fn halt_policy_fails_the_pipeline_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let server = WeirServer::start(&dir.path().join("data"));
    trapping_pipeline(&server, "halt");
    server.wait_until("the pipeline fails", |s| {
        s.pipeline("trapping")["state"] == "failed"
    });
    let status = server.pipeline("trapping");
    let reason = status["reason"].as_str().unwrap();
    assert!(
        reason.contains("trap@1") && reason.contains("refusing record at offset 0"),
        "{reason}"
    );
    assert_eq!(
        status["lag"], 2,
        "halting leaves the failing records unprocessed"
    );
    assert!(server.records("dlq", 0).is_empty());
}

/// The dedupe pipeline over `keys`: records with keys, one per millisecond.
fn dedupe_pipeline(server: &WeirServer, name: &str, start: &str) {
    let spec = json!({
        "inputs": ["events"],
        "start": start,
        "stages": [{ "module": "dedupe", "config": { "window-ms": 50 },
                     "outputs": { "main": format!("{name}-out") } }],
    });
    if server.get(&format!("/v1/topics/{name}-out")).0 == 404 {
        server.create_topic(&format!("{name}-out"), 1);
    }
    let (status, body) = server.put(&format!("/v1/pipelines/{name}"), &spec);
    assert!(status == 201 || status == 200, "{status} {body}");
}

fn events(from: i64, to: i64) -> Vec<Value> {
    (from..to)
        .map(|i| json!({ "key": format!("k{}", i % 7), "value": i, "timestamp": 1_000 + i * 10 }))
        .collect()
}

/// What dedupe keeps of `events(0, n)`, from its documented semantics.
fn expected_dedupe(n: i64) -> Vec<Value> {
    let mut kept_at: std::collections::HashMap<String, i64> = Default::default();
    let mut kept = Vec::new();
    for e in events(0, n) {
        let key = e["key"].as_str().unwrap().to_string();
        let t = e["timestamp"].as_i64().unwrap();
        if kept_at.get(&key).is_some_and(|t0| t < t0 + 50) {
            continue;
        }
        kept_at.insert(key, t);
        kept.push(e["value"].clone());
    }
    kept
}

#[test]
fn restart_keeps_position_and_state_and_replay_equals_live() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = WeirServer::start(&data);
    server.create_topic("events", 1);
    server.push_module("dedupe", "dedupe");
    dedupe_pipeline(&server, "live", "earliest");
    server.produce("events", events(0, 100));
    server.wait_caught_up("live");
    server.stop();

    let server = WeirServer::start(&data);
    server.produce("events", events(100, 200));
    server.wait_caught_up("live");
    assert_eq!(
        server.values("live-out"),
        expected_dedupe(200),
        "after a restart the pipeline goes on from its position with its state"
    );

    dedupe_pipeline(&server, "replay", "earliest");
    server.wait_caught_up("replay");
    assert_eq!(server.values("replay-out"), server.values("live-out"));

    dedupe_pipeline(&server, "late-joiner", "latest");
    server.produce("events", events(200, 210));
    server.wait_caught_up("late-joiner");
    server.wait_caught_up("live");
    let late = server.values("late-joiner-out");
    assert_eq!(
        late.first(),
        Some(&json!(200)),
        "latest starts after what was there"
    );
}

#[test]
fn pause_resume_update_and_delete() {
    let dir = tempfile::tempdir().unwrap();
    let server = WeirServer::start(&dir.path().join("data"));
    server.create_topic("events", 1);
    server.push_module("dedupe", "dedupe");
    dedupe_pipeline(&server, "p", "earliest");
    server.produce("events", events(0, 20));
    server.wait_caught_up("p");

    let paused = server.expect(200, server.post("/v1/pipelines/p/pause", &json!({})));
    assert_eq!(paused["state"], "paused");
    server.produce("events", events(20, 40));
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert_eq!(
        server.pipeline("p")["lag"],
        20,
        "a paused pipeline reads nothing"
    );

    // An update while paused (a new module version) keeps position and state.
    server.push_module("dedupe", "filter"); // version 2: another module's bytes
    server.push_module("dedupe", "dedupe"); // version 3: dedupe again
    dedupe_pipeline(&server, "p", "earliest");
    let status = server.pipeline("p");
    assert_eq!(status["modules"], json!(["dedupe@3"]));
    assert_eq!(
        status["state"], "paused",
        "an update keeps the pipeline paused"
    );

    server.expect(200, server.post("/v1/pipelines/p/resume", &json!({})));
    server.wait_caught_up("p");
    assert_eq!(server.values("p-out"), expected_dedupe(40));

    let (status, body) = server.delete("/v1/modules/dedupe");
    assert_eq!(status, 409, "{body}");
    let (status, body) = server.delete("/v1/topics/events");
    assert_eq!(status, 409, "{body}");
    server.expect(200, server.get("/v1/modules/dedupe"));
    server.expect(200, server.get("/v1/topics/events"));
    server.expect(200, server.delete("/v1/pipelines/p"));
    server.expect(404, server.get("/v1/pipelines/p"));
    server.expect(200, server.delete("/v1/modules/dedupe"));
}

#[test]
fn undeliverable_outputs_halt_the_pipeline_or_are_dropped_never_blocking_it() {
    let dir = tempfile::tempdir().unwrap();
    let server = WeirServer::start(&dir.path().join("data"));
    server.create_topic("in", 1);
    server.expect(
        201,
        server.post(
            "/v1/topics",
            &json!({"name": "latest", "cleanup": "compact"}),
        ),
    );
    server.push_module("filter", "filter");
    let spec = |policy: &str| {
        json!({
            "inputs": ["in"],
            "on_error": policy,
            "stages": [{ "module": "filter", "config": { "field": "k", "equals": "x" },
                         "outputs": { "main": "latest" } }],
        })
    };
    server.expect(201, server.put("/v1/pipelines/p", &spec("halt")));
    // Keyless records cannot go to a compacted topic.
    server.produce(
        "in",
        vec![
            json!({"value": {"k": "x"}}),
            json!({"key": "a", "value": {"k": "x"}}),
        ],
    );
    server.wait_until("the pipeline halts", |s| {
        s.pipeline("p")["state"] == "failed"
    });
    let status = server.pipeline("p");
    assert!(
        status["reason"].as_str().unwrap().contains("no key"),
        "{status}"
    );
    assert!(
        server.records("latest", 0).is_empty(),
        "nothing of the round was published"
    );

    server.expect(200, server.put("/v1/pipelines/p", &spec("skip")));
    server.expect(200, server.post("/v1/pipelines/p/resume", &json!({})));
    server.wait_caught_up("p");
    let status = server.pipeline("p");
    assert_eq!(status["undeliverable"], 1, "{status}");
    let kept = server.records("latest", 0);
    assert_eq!(kept.len(), 1);
    assert_eq!(kept[0]["key"], "a");
}

#[test]
fn every_partition_of_every_input_is_processed() {
    let dir = tempfile::tempdir().unwrap();
    let server = WeirServer::start(&dir.path().join("data"));
    server.create_topic("eu", 2);
    server.create_topic("us", 3);
    server.create_topic("kept", 2);
    server.push_module("filter", "filter");
    let spec = json!({
        "inputs": ["eu", "us"],
        "stages": [{ "module": "filter", "config": { "field": "keep", "equals": "true" },
                     "outputs": { "main": "kept" } }],
    });
    server.expect(201, server.put("/v1/pipelines/merge", &spec));
    for topic in ["eu", "us"] {
        let records = (0..60)
            .map(|i| json!({"key": format!("{topic}-{i}"), "value": {"keep": i % 3 != 0, "i": i}}))
            .collect();
        server.produce(topic, records);
    }
    server.wait_caught_up("merge");
    let status = server.pipeline("merge");
    assert_eq!(
        status["tasks"].as_array().unwrap().len(),
        5,
        "one task per input partition"
    );
    assert_eq!(status["records_in"], 120);
    let mut keys: Vec<String> = (0..2)
        .flat_map(|p| server.records("kept", p))
        .map(|r| r["key"].as_str().unwrap().to_string())
        .collect();
    keys.sort();
    let mut want: Vec<String> = ["eu", "us"]
        .iter()
        .flat_map(|t| {
            (0..60)
                .filter(|i| i % 3 != 0)
                .map(move |i| format!("{t}-{i}"))
        })
        .collect();
    want.sort();
    assert_eq!(keys, want);
    // Each output record sits in the partition its key hashes to.
    for p in 0..2u32 {
        for record in server.records("kept", p) {
            let key = record["key"].as_str().unwrap();
            assert_eq!(
                weir_pipeline::partitioner::partition_for_key(key.as_bytes(), 2),
                p,
                "{key}"
            );
        }
    }
}
