//! Data directories written by another version of Weir: every format
//! Weir writes for itself carries a version, and `weir serve` refuses to
//! start on one it does not read, saying which and why (never "corrupt",
//! never a silent loss). Versions within range still read: a directory
//! written before versions were stored (no `"format"` field) opens.

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::server::{WeirServer, serve_command};

/// Runs `weir serve` over `dir`, which must fail to start; returns what it
/// printed to stderr.
fn refused_start(dir: &Path) -> String {
    let mut child = serve_command(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start weir serve");
    let deadline = Instant::now() + Duration::from_secs(120);
    let status = loop {
        if let Some(status) = child.try_wait().expect("poll weir serve") {
            break status;
        }
        if Instant::now() > deadline {
            child.kill().ok();
            panic!("weir serve kept running over a directory it cannot read");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let output = child.wait_with_output().expect("collect stderr");
    assert!(!status.success(), "weir serve must not start");
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// A stopped server's directory holding pipeline `p`.
fn directory_with_a_pipeline() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let server = WeirServer::start(&dir.path().join("data"));
    server.start_neighbour_filter();
    server.stop();
    dir
}

#[test]
fn a_pipeline_record_from_a_newer_version_stops_the_start_with_its_reason() {
    let dir = directory_with_a_pipeline();
    let record = dir.path().join("data/pipelines/p.json");
    let mut json: Value = serde_json::from_slice(&std::fs::read(&record).unwrap()).unwrap();
    assert_eq!(json["format"], 1, "records carry their format: {json}");
    json["format"] = 99.into();
    std::fs::write(&record, serde_json::to_vec(&json).unwrap()).unwrap();

    let stderr = refused_start(&dir.path().join("data"));
    assert!(
        stderr.contains("a pipeline record was written by a newer version of Weir (format 99"),
        "{stderr}"
    );
    assert!(stderr.contains("p.json"), "names the file: {stderr}");
}

#[test]
fn records_written_before_versions_still_open() {
    let dir = directory_with_a_pipeline();
    let data = dir.path().join("data");
    // As a release before versions wrote them: no "format" field, and a
    // module's versions as a bare array.
    let record = data.join("pipelines/p.json");
    let mut json: Value = serde_json::from_slice(&std::fs::read(&record).unwrap()).unwrap();
    json.as_object_mut().unwrap().remove("format");
    std::fs::write(&record, serde_json::to_vec(&json).unwrap()).unwrap();
    let index = data.join("modules/filter/versions.json");
    let versions: Value = serde_json::from_slice(&std::fs::read(&index).unwrap()).unwrap();
    std::fs::write(&index, serde_json::to_vec(&versions["versions"]).unwrap()).unwrap();

    let server = WeirServer::start(&data);
    server.produce("orders", vec![serde_json::json!({"value": {"ok": true}})]);
    server.wait_caught_up("p");
    assert_eq!(server.values("kept").len(), 1);
    server.stop();
}

#[test]
fn transaction_state_from_a_newer_version_stops_the_start_with_its_reason() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    WeirServer::start(&data).stop();
    let state = data.join("kafka/transactions/0123456789abcdef0123456789abcdef.txn");
    // The versioned-record magic, then a version this build does not know.
    std::fs::write(&state, [0, b'W', b'v', 7, 1, 2, 3]).unwrap();

    let stderr = refused_start(&data);
    assert!(
        stderr.contains("transaction state was written by a newer version of Weir (format 7"),
        "{stderr}"
    );
}
