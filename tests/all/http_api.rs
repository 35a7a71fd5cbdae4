//! The HTTP API and the command line against a real server process:
//! topics, records (with long-polling), modules, metrics, and bad requests
//! that get a clear 4xx and change nothing.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::support::server::{WeirServer, guest_path};

fn start() -> (tempfile::TempDir, WeirServer) {
    let dir = tempfile::tempdir().unwrap();
    let server = WeirServer::start(&dir.path().join("data"));
    (dir, server)
}

#[test]
fn topics_are_created_listed_described_and_deleted() {
    let (_dir, server) = start();
    let created = server.expect(
        201,
        server.post(
            "/v1/topics",
            &json!({"name": "orders", "partitions": 3, "durability": "interval",
                    "cleanup": "compact", "retention_ms": 60000}),
        ),
    );
    assert_eq!(created["partitions"].as_array().unwrap().len(), 3);
    assert_eq!(created["config"]["cleanup"], "compact");
    let list = server.expect(200, server.get("/v1/topics"));
    assert_eq!(list["topics"][0]["name"], "orders");
    let one = server.expect(200, server.get("/v1/topics/orders"));
    assert_eq!(one["config"]["retention_ms"], 60000);
    server.expect(409, server.post("/v1/topics", &json!({"name": "orders"})));
    server.expect(200, server.delete("/v1/topics/orders"));
    server.expect(404, server.get("/v1/topics/orders"));
    server.expect(404, server.delete("/v1/topics/orders"));
}

#[test]
fn records_round_trip_with_keys_headers_bytes_and_partitions() {
    let (_dir, server) = start();
    server.create_topic("t", 4);
    let offsets = server.produce(
        "t",
        vec![
            json!({"key": "user-1", "value": {"n": 1}, "headers": {"h": "v"}, "timestamp": 5}),
            json!({"key": "user-1", "value": "plain text", "timestamp": 6}),
            json!({"value_b64": "//79", "partition": 2, "timestamp": 7}),
        ],
    );
    assert_eq!(
        offsets[0]["partition"], offsets[1]["partition"],
        "one key, one partition"
    );
    assert_eq!(offsets[2], json!({"partition": 2, "offset": 0}));
    let p = offsets[0]["partition"].as_u64().unwrap() as u32;
    let records = server.records("t", p);
    let first = records
        .iter()
        .find(|r| r["timestamp"] == 5)
        .expect("first record");
    assert_eq!(first["value"], json!({"n": 1}));
    assert_eq!(first["headers"]["h"], "v");
    assert_eq!(first["key"], "user-1");
    let second = records.iter().find(|r| r["timestamp"] == 6).unwrap();
    assert_eq!(second["value"], "plain text");
    let bytes = server.records("t", 2);
    assert_eq!(
        bytes.last().unwrap()["value_b64"],
        "//79",
        "bytes that are not UTF-8 come back as base64"
    );

    let by_time = server.expect(
        200,
        server.get(&format!("/v1/topics/t/records?partition={p}&timestamp=6")),
    );
    assert_eq!(by_time["records"][0]["timestamp"], 6);
}

#[test]
fn reading_at_the_end_long_polls_until_a_record_arrives() {
    let (_dir, server) = start();
    server.create_topic("t", 1);
    let url = server.url.clone();
    let reader = std::thread::spawn(move || {
        let started = Instant::now();
        let mut response = ureq::get(format!("{url}/v1/topics/t/records?offset=0&wait_ms=10000"))
            .call()
            .unwrap();
        let body: Value = response.body_mut().read_json().unwrap();
        (started.elapsed(), body)
    });
    std::thread::sleep(Duration::from_millis(300));
    server.produce("t", vec![json!({"value": "late"})]);
    let (waited, body) = reader.join().unwrap();
    assert_eq!(body["records"][0]["value"], "late");
    assert!(
        waited >= Duration::from_millis(250) && waited < Duration::from_secs(9),
        "the read waited for the record, not the whole timeout: {waited:?}"
    );
}

#[test]
fn modules_are_versioned_and_bad_modules_refused() {
    let (_dir, server) = start();
    let filter = std::fs::read(guest_path("filter")).unwrap();
    let first = server.expect(201, server.put_bytes("/v1/modules/f", &filter));
    assert_eq!(first["version"], 1);
    let again = server.expect(200, server.put_bytes("/v1/modules/f", &filter));
    assert_eq!(
        (&again["version"], &again["new"]),
        (&json!(1), &json!(false))
    );
    let receipt = std::fs::read(guest_path("receipt")).unwrap();
    let second = server.expect(201, server.put_bytes("/v1/modules/f", &receipt));
    assert_eq!(second["version"], 2);
    let described = server.expect(200, server.get("/v1/modules/f"));
    assert_eq!(described["versions"].as_array().unwrap().len(), 2);

    let not_wasm = server.expect(400, server.put_bytes("/v1/modules/bad", b"hello"));
    assert!(
        not_wasm["error"]
            .as_str()
            .unwrap()
            .contains("not a WebAssembly binary")
    );
    let unknown = std::fs::read(guest_path("unknown_import")).unwrap();
    let refused = server.expect(400, server.put_bytes("/v1/modules/bad", &unknown));
    assert!(
        refused["error"].as_str().unwrap().contains("import"),
        "{refused}"
    );
    server.expect(404, server.get("/v1/modules/bad"));
    let list = server.expect(200, server.get("/v1/modules"));
    assert_eq!(list["modules"].as_array().unwrap().len(), 1);
}

#[test]
fn bad_requests_get_clear_errors_and_change_nothing() {
    let (_dir, server) = start();
    server.create_topic("t", 1);
    server.create_topic("small", 1);
    let error = |(status, body): (u16, Value)| -> (u16, String) {
        (
            status,
            body["error"].as_str().unwrap_or_default().to_string(),
        )
    };
    let (status, message) = error(server.post(
        "/v1/topics/nope/records",
        &json!({"records": [{"value": 1}]}),
    ));
    assert_eq!(status, 404);
    assert!(message.contains("nope"), "{message}");
    let (status, message) = error(server.post_raw("/v1/topics/t/records", "{not json"));
    assert_eq!(status, 400);
    assert!(message.contains("JSON"), "{message}");
    let (status, _) = error(server.post("/v1/topics", &json!({"name": "../etc"})));
    assert_eq!(status, 400);
    let (status, message) = error(server.post("/v1/topics", &json!({"name": "x", "partitons": 2})));
    assert_eq!(status, 400);
    assert!(message.contains("partitons"), "{message}");
    let big = "x".repeat(2 << 20);
    let (status, message) = error(server.post(
        "/v1/topics/t/records",
        &json!({"records": [{"value": big}]}),
    ));
    assert_eq!(status, 413, "{message}");
    let (status, message) = error(server.post(
        "/v1/topics/t/records",
        &json!({"records": [{"value": 1, "partition": 5}]}),
    ));
    assert_eq!(status, 400);
    assert!(message.contains("partition"), "{message}");
    let (status, message) = error(server.put(
        "/v1/pipelines/p",
        &json!({"inputs": ["t"], "stages": [{"module": "missing", "outputs": {"main": "small"}}]}),
    ));
    assert_eq!(status, 400);
    assert!(message.contains("missing"), "{message}");
    let (status, message) =
        error(server.put("/v1/pipelines/p", &json!({"inputs": ["t"], "stages": []})));
    assert_eq!(status, 400);
    assert!(message.contains("stage"), "{message}");
    server.push_module("filter", "filter");
    let (status, message) = error(server.put(
        "/v1/pipelines/p",
        &json!({"inputs": ["t"], "stages": [{"module": "filter", "outputs": {"main": "small"}}]}),
    ));
    assert_eq!(status, 400, "the filter needs its settings");
    assert!(message.contains("stage 1"), "{message}");
    let (status, _) = error(server.get("/v1/nothing-here"));
    assert_eq!(status, 404);

    assert!(server.records("t", 0).is_empty(), "nothing was appended");
    let pipelines = server.expect(200, server.get("/v1/pipelines"));
    assert_eq!(pipelines["pipelines"], json!([]), "no pipeline was made");
}

#[test]
fn metrics_and_health_answer() {
    let (_dir, server) = start();
    server.create_topic("t", 1);
    server.produce("t", vec![json!({"value": 1})]);
    server.expect(200, server.get("/healthz"));
    let (status, text) = server.get("/metrics");
    assert_eq!(status, 200);
    let text = text.as_str().unwrap();
    assert!(
        text.contains("weir_topic_end_offset{topic=\"t\",partition=\"0\"} 1"),
        "{text}"
    );
}

/// `weir consume t | head -1`: the client ends when its output is closed,
/// without a panic or an error message.
#[test]
fn a_client_whose_output_is_closed_ends_quietly() {
    use std::io::{BufRead, BufReader};
    use std::os::unix::process::ExitStatusExt;
    use std::process::{Command, Stdio};
    const SIGPIPE: i32 = 13;

    let (_dir, server) = start();
    server.create_topic("t", 1);
    // Far more output than a pipe holds, so the client does write into
    // the closed pipe.
    let records = (0..2000)
        .map(|i| json!({ "value": format!("{i:0>200}") }))
        .collect();
    server.produce("t", records);
    let mut child = Command::new(crate::support::server::WEIR)
        .args(["consume", "t", "--from-beginning"])
        .env("WEIR_SERVER", &server.url)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    assert!(first.starts_with("0@0"), "{first}");
    // The read end is closed here, with most of the output unread.
    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.is_empty(), "{stderr}");
    assert!(
        output.status.success() || output.status.signal() == Some(SIGPIPE),
        "{:?}",
        output.status
    );
}

#[test]
fn command_line_drives_the_server() {
    let (dir, server) = start();
    let ok = |out: std::process::Output| -> String {
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    ok(server.cli(&["topic", "create", "purchases", "--partitions", "1"]));
    ok(server.cli(&["topic", "create", "receipts"]));
    let list = ok(server.cli(&["topic", "list"]));
    assert!(
        list.contains("purchases") && list.contains("PARTITIONS"),
        "{list}"
    );
    let wasm = guest_path("receipt");
    let pushed = ok(server.cli(&["module", "push", "receipt", wasm.to_str().unwrap()]));
    assert!(pushed.contains("version 1"), "{pushed}");
    let spec = dir.path().join("receipts.toml");
    std::fs::write(
        &spec,
        "inputs = [\"purchases\"]\n[[stages]]\nmodule = \"receipt\"\noutputs = { main = \"receipts\" }\n",
    )
    .unwrap();
    let applied = ok(server.cli(&["pipeline", "apply", spec.to_str().unwrap()]));
    assert!(applied.contains("receipts"), "{applied}");
    ok(server.cli_with_input(
        &["produce", "purchases"],
        "{\"key\":\"ann\",\"value\":{\"order_id\":\"o1\",\"customer\":\"ann\",\"items\":[]}}\n",
    ));
    server.wait_caught_up("receipts");
    let consumed = ok(server.cli(&["consume", "receipts", "--from-beginning", "--json"]));
    let record: Value = serde_json::from_str(consumed.lines().next().unwrap()).unwrap();
    assert_eq!(record["value"]["order_id"], "o1");
    let status = ok(server.cli(&["pipeline", "status", "receipts"]));
    assert!(
        status.contains("running") && status.contains("receipt@1"),
        "{status}"
    );

    let failed = server.cli(&["topic", "describe", "nope"]);
    assert!(!failed.status.success());
    let stderr = String::from_utf8_lossy(&failed.stderr);
    assert_eq!(stderr.lines().count(), 1, "one clear line: {stderr}");
    assert!(stderr.contains("unknown topic \"nope\""), "{stderr}");
}
