//! `weir run`: JSON lines in, the operator's outputs as JSON lines out,
//! errors counted and reported with their records.

use std::io::Write;

use weir::run::{RunOptions, RunSummary, run};
use weir_host::Limits;

use crate::support::{engine_with, guest};

fn run_filter(lines: &[&str], config: &[(&str, &str)]) -> (Vec<serde_json::Value>, RunSummary) {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.jsonl");
    let output = dir.path().join("out.jsonl");
    let mut file = std::fs::File::create(&input).unwrap();
    for line in lines {
        writeln!(file, "{line}").unwrap();
    }
    let options = RunOptions {
        module: guest("filter"),
        config: config
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        input: Some(input),
        output: Some(output.clone()),
        batch_size: 2,
    };
    let summary = run(&engine_with(Limits::default()), &options).unwrap();
    let text = std::fs::read_to_string(output).unwrap();
    let values = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    (values, summary)
}

#[test]
fn records_in_json_lines_come_out_as_json_lines_naming_their_output() {
    let (out, summary) = run_filter(
        &[
            r#"{"key":"web-1","value":{"level":"ERROR","msg":"disk full"},"timestamp":1000,"headers":{"trace":"t1"}}"#,
            r#"{"level":"INFO","msg":"a bare JSON line is the value"}"#,
            "plain text is a value too",
            r#"{"level":"ERROR","msg":"bare"}"#,
            "",
            r#"{"value":"x","timestamp":"yesterday"}"#,
        ],
        &[("field", "level"), ("equals", "ERROR")],
    );
    assert_eq!(out.len(), 2);
    assert_eq!(
        out[0],
        serde_json::json!({"output":"main","key":"web-1","value":{"level":"ERROR","msg":"disk full"},"timestamp":1000,"headers":{"trace":"t1"}})
    );
    assert_eq!(
        out[1]["value"],
        serde_json::json!({"level":"ERROR","msg":"bare"})
    );
    assert_eq!(out[1]["key"], serde_json::Value::Null);
    assert_eq!(
        summary,
        RunSummary {
            records_in: 4,
            records_out: 2,
            // the plain-text line is not JSON (rejected by the operator), and
            // the bad timestamp is refused before it reaches the operator
            rejected: 2,
            failed_batches: 0,
        }
    );
}

#[test]
fn a_module_that_is_not_an_operator_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let not_wasm = dir.path().join("op.wasm");
    std::fs::write(&not_wasm, b"definitely not wasm").unwrap();
    let options = RunOptions {
        module: not_wasm,
        config: Vec::new(),
        input: None,
        output: None,
        batch_size: 10,
    };
    let err = run(&engine_with(Limits::default()), &options).unwrap_err();
    let message = format!("{err:#}");
    assert!(
        message.contains("op.wasm") && message.contains("not a WebAssembly binary"),
        "{message}"
    );
}
