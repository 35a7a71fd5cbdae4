//! The operator host with real components built from `guest-examples/` and
//! `tests/guests/`: module validation, the compile cache, the sandbox, and
//! hostile modules failing alone while a neighbour keeps working.

use std::time::Instant;

use serde_json::json;
use weir_host::{Limits, OperatorEngine, OperatorError};

use crate::support::{engine_with, guest, input, operator, outputs};

fn limits() -> Limits {
    Limits {
        fuel_per_call: 200_000_000,
        max_memory_bytes: 32 << 20,
        max_stdio_bytes: 64 << 10,
        ..Limits::default()
    }
}

#[test]
fn filter_keeps_matching_records_and_rejects_bad_ones() {
    let engine = engine_with(Limits::default());
    let mut filter = operator(
        &engine,
        "filter",
        &[("field", "level"), ("equals", "ERROR")],
    )
    .unwrap();
    let out = filter
        .process(&[input(
            10,
            &[
                (Some("a"), r#"{"level":"ERROR","msg":"disk"}"#, 1),
                (None, r#"{"level":"INFO"}"#, 2),
                (None, "not json", 3),
                (Some("b"), r#"{"level":"ERROR","msg":"net"}"#, 4),
                (None, "[1,2]", 5),
            ],
        )])
        .unwrap();
    assert_eq!(
        outputs(&out),
        [
            (
                "main".into(),
                Some("a".into()),
                json!({"level":"ERROR","msg":"disk"}),
                1
            ),
            (
                "main".into(),
                Some("b".into()),
                json!({"level":"ERROR","msg":"net"}),
                4
            ),
        ]
    );
    let rejected: Vec<u64> = out.rejected.iter().map(|r| r.offset).collect();
    assert_eq!(rejected, [12, 14], "{:?}", out.rejected);
    assert!(
        out.rejected[0].reason.contains("invalid JSON"),
        "{}",
        out.rejected[0].reason
    );
}

#[test]
fn bad_configuration_is_refused_with_the_operators_message() {
    let engine = engine_with(Limits::default());
    let err = operator(&engine, "filter", &[("field", "level")]).unwrap_err();
    assert_eq!(
        err,
        OperatorError::Config("missing required setting `equals`".into())
    );
    let err = operator(
        &engine,
        "filter",
        &[
            ("field", "f"),
            ("equals", "x"),
            ("weir.lateness-ms", "soon"),
        ],
    )
    .unwrap_err();
    assert!(
        matches!(err, OperatorError::Config(ref m) if m.contains("weir.lateness-ms")),
        "{err}"
    );
}

#[test]
fn modules_that_are_not_operator_components_are_refused_clearly() {
    let engine = engine_with(Limits::default());
    let cases: [(&str, &[u8], &str); 4] = [
        ("text", b"hello, I am not wasm", "not a WebAssembly binary"),
        (
            "core module",
            b"\0asm\x01\0\0\0",
            "core WebAssembly module, not a component",
        ),
        (
            "empty component",
            b"\0asm\x0d\0\x01\0",
            "does not export the weir:operator/operator world",
        ),
        (
            "truncated component",
            b"\0asm\x0d\0\x01\0\x07",
            "invalid module",
        ),
    ];
    for (what, bytes, expected) in cases {
        let err = engine.load(what, bytes).unwrap_err();
        assert!(err.to_string().contains(expected), "{what}: {err}");
    }
    let bytes = std::fs::read(guest("unknown_import")).unwrap();
    match engine.load("unknown", &bytes).unwrap_err() {
        OperatorError::UnknownImports(names) => assert_eq!(names, ["evil:world/steal@0.1.0"]),
        other => panic!("expected the unknown import to be named, got {other}"),
    }
    let limited = engine_with(Limits {
        max_module_bytes: 1000,
        ..Limits::default()
    });
    let bytes = std::fs::read(guest("filter")).unwrap();
    assert!(matches!(
        limited.load("big", &bytes),
        Err(OperatorError::ModuleTooLarge { max: 1000, .. })
    ));
}

#[test]
fn mutated_modules_never_crash_the_host() {
    let engine = engine_with(Limits::default());
    let good = std::fs::read(guest("well_behaved")).unwrap();
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let (mut loaded, mut refused) = (0, 0);
    for i in 0..40 {
        let mut bytes = good.clone();
        for _ in 0..(1 + i % 8) {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let at = (seed as usize) % bytes.len();
            bytes[at] ^= (seed >> 32) as u8 | 1;
        }
        // Either refused as an invalid module or loaded; never a panic,
        // and never an error of the host itself.
        match engine.load("mutant", &bytes) {
            Ok(module) => {
                loaded += 1;
                let run = weir_host::OperatorInstance::new(module, Vec::new())
                    .and_then(|mut op| op.process(&[input(0, &[(None, "v", 0)])]));
                if let Err(e) = run {
                    assert!(!matches!(e, OperatorError::Host(_)), "mutant {i}: {e}");
                }
            }
            Err(OperatorError::InvalidModule(_) | OperatorError::UnknownImports(_)) => refused += 1,
            Err(other) => panic!("mutant {i}: unexpected error {other}"),
        }
    }
    assert_eq!(loaded + refused, 40);
    assert!(
        refused > 0,
        "random byte flips should break at least one module"
    );
}

#[test]
fn compiled_modules_are_cached_on_disk_and_reused() {
    let cache = tempfile::tempdir().unwrap();
    let bytes = std::fs::read(guest("filter")).unwrap();
    let first = OperatorEngine::new(Limits::default(), Some(cache.path().to_path_buf())).unwrap();
    let module = first.load("filter", &bytes).unwrap();
    let cached = cache.path().join(format!("{}.cwasm", module.digest));
    assert!(cached.exists(), "the compiled module is in the cache");
    // A new engine (a restart) loads it from the cache.
    let second = OperatorEngine::new(Limits::default(), Some(cache.path().to_path_buf())).unwrap();
    let started = Instant::now();
    let module = second.load("filter", &bytes).unwrap();
    let from_cache = started.elapsed();
    let mut op = weir_host::OperatorInstance::new(
        module,
        vec![("field".into(), "a".into()), ("equals".into(), "1".into())],
    )
    .unwrap();
    assert_eq!(
        outputs(&op.process(&[input(0, &[(None, r#"{"a":1}"#, 0)])]).unwrap()).len(),
        1
    );
    eprintln!("load from cache: {from_cache:?}");
    // A damaged cache entry is recompiled, not trusted.
    std::fs::write(&cached, b"garbage").unwrap();
    let third = OperatorEngine::new(Limits::default(), Some(cache.path().to_path_buf())).unwrap();
    assert!(third.load("filter", &bytes).is_ok());
    assert!(
        std::fs::read(&cached).unwrap().len() > 1000,
        "the entry was rewritten"
    );
}

/// Runs a hostile module on a few records and returns its error; checks
/// that the well-behaved neighbour still answers correctly afterwards.
fn hostile(name: &str) -> OperatorError {
    hostile_with(name, limits())
}

fn hostile_with(name: &str, limits: Limits) -> OperatorError {
    let engine = engine_with(limits);
    let mut neighbour = operator(&engine, "well_behaved", &[]).unwrap();
    let mut bad =
        operator(&engine, name, &[]).unwrap_or_else(|e| panic!("{name} should load: {e}"));
    let records = [(None, "a", 1), (None, "x-dropped", 2), (None, "b", 3)];
    let err = bad.process(&[input(100, &records)]).expect_err(name);
    // The host is fine, and the failed instance is replaced on the next call.
    let again = bad.process(&[input(103, &records)]).expect_err(name);
    assert_eq!(
        std::mem::discriminant(&err),
        std::mem::discriminant(&again),
        "{name}: {err} then {again}"
    );
    let out = neighbour.process(&[input(0, &records)]).unwrap();
    let values: Vec<_> = outputs(&out).into_iter().map(|o| o.2).collect();
    assert_eq!(
        values,
        [json!("a"), json!("b")],
        "the neighbour of {name} still works"
    );
    err
}

fn assert_limit(err: &OperatorError, expected: &str) {
    match err {
        OperatorError::Limit { limit, .. } => assert_eq!(*limit, expected, "{err}"),
        other => panic!("expected the {expected} limit, got: {other}"),
    }
}

#[test]
fn an_endless_loop_runs_out_of_fuel() {
    assert_limit(&hostile("loop_forever"), "CPU per call");
}

#[test]
fn unbounded_recursion_is_a_trap() {
    // Rust guests keep their stack in linear memory: it overflows into an
    // out-of-bounds access (or the engine's call-stack limit) first.
    let err = hostile("deep_recursion");
    let trapped = matches!(&err, OperatorError::Trap { reason, .. }
        if reason.contains("out of bounds") || reason.contains("stack"));
    assert!(trapped, "{err}");
}

#[test]
fn a_memory_bomb_hits_the_memory_limit() {
    assert_limit(&hostile("memory_bomb"), "memory per instance");
}

#[test]
fn a_panic_is_reported_with_its_record_and_message() {
    match hostile("trap_every_record") {
        OperatorError::Trap { offset, reason } => {
            assert_eq!(offset, Some(100), "the first record of the batch");
            assert!(reason.contains("panic"), "{reason}");
        }
        other => panic!("expected a trap, got {other}"),
    }
}

#[test]
fn an_output_flood_is_stopped_by_a_limit() {
    // A million records per input fill the instance's memory before the
    // call can even return them: that limit stops it.
    let err = hostile_with(
        "output_flood",
        Limits {
            fuel_per_call: Limits::default().fuel_per_call,
            ..limits()
        },
    );
    assert!(matches!(err, OperatorError::Limit { .. }), "{err}");
}

#[test]
fn amplification_beyond_the_per_input_limit_is_refused() {
    let engine = engine_with(limits());
    let mut flood = operator(&engine, "output_flood", &[("count", "5000")]).unwrap();
    let err = flood
        .process(&[input(0, &[(None, "a", 1), (None, "b", 2)])])
        .unwrap_err();
    assert_limit(&err, "output records per call");
    assert!(err.to_string().contains("1000 per input"), "{err}");
    let mut fine = operator(&engine, "output_flood", &[("count", "1000")]).unwrap();
    let out = fine
        .process(&[input(0, &[(None, "a", 1), (None, "b", 2)])])
        .unwrap();
    assert_eq!(out.record_count(), 2000);
}

#[test]
fn endless_printing_hits_the_stdio_limit() {
    assert_limit(
        &hostile("stdout_flood"),
        "stdout/stderr output per instance",
    );
}

#[test]
fn nothing_escapes_the_sandbox() {
    let engine = engine_with(limits());
    let mut op = operator(&engine, "escape_attempt", &[]).unwrap();
    let out = op.process(&[input(0, &[(None, "try", 0)])]).unwrap();
    let report = &outputs(&out)[0].2;
    for field in ["file", "dir", "socket"] {
        let text = report[field].as_str().unwrap_or_default();
        assert!(!text.contains("root:"), "{field} leaked: {report}");
        assert!(
            text.to_lowercase().contains("error")
                || text.contains("denied")
                || text.contains("not"),
            "{field} should have failed: {report}"
        );
    }
    assert_eq!(
        report["env_vars"],
        json!(0),
        "no environment variables are visible: {report}"
    );
}
