//! What the host does *for* a guest stays bounded (`docs/sandbox.md`):
//! the `host-abuse` fixture from `tests/guests/` sleeps, grows state,
//! journal and timers, floods output, rejections and logs, and forges
//! batch headers, through a real operator instance; each attack ends in
//! its limit or is made harmless, quickly, with a clear error.

use std::time::{Duration, Instant};

use weir_host::{Limits, OperatorError, OperatorInstance};

use crate::support::{engine_with, input, operator};

fn abuse(limits: Limits, attack: &str, settings: &[(&str, &str)]) -> OperatorInstance {
    let engine = engine_with(limits);
    let mut config = vec![("attack", attack)];
    config.extend_from_slice(settings);
    operator(&engine, "host_abuse", &config).expect("host-abuse starts")
}

fn records(n: usize) -> log_core::Batch {
    let values: Vec<String> = (0..n).map(|i| format!("v{i}")).collect();
    let records: Vec<(Option<&str>, &str, i64)> =
        values.iter().map(|v| (None, v.as_str(), 1_000)).collect();
    input(0, &records)
}

fn limit_of(error: &OperatorError) -> &'static str {
    match error {
        OperatorError::Limit { limit, .. } => limit,
        other => panic!("expected a limit, got {other}"),
    }
}

#[test]
fn a_guest_that_sleeps_does_not_block_its_call() {
    let started = Instant::now();
    let mut sleeper = abuse(Limits::default(), "sleep", &[]);
    let out = sleeper
        .process(&[records(3)])
        .expect("the sleep is over at once");
    assert_eq!(out.record_count(), 3);
    let mut sleeper = abuse(Limits::default(), "sleep-in-init", &[]);
    sleeper.process(&[records(1)]).unwrap();
    // An hour asked for twice; generous for a loaded machine.
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "{:?}",
        started.elapsed()
    );
}

#[test]
fn a_guest_waiting_for_time_to_pass_runs_out_of_fuel() {
    let limits = Limits {
        fuel_per_call: 100_000_000,
        ..Limits::default()
    };
    let mut waiter = abuse(limits, "wait-for-time", &[]);
    let error = waiter.process(&[records(1)]).unwrap_err();
    assert_eq!(limit_of(&error), "CPU per call", "{error}");
}

#[test]
fn host_time_in_log_calls_is_charged_to_the_call() {
    // 16 MiB messages in an endless loop: the host copies each one, which
    // fuel in the guest alone would not count.
    let started = Instant::now();
    let mut logger = abuse(Limits::default(), "log-big", &[]);
    let error = logger.process(&[records(1)]).unwrap_err();
    assert_eq!(limit_of(&error), "CPU per call", "{error}");
    assert!(
        started.elapsed() < Duration::from_secs(25),
        "ended by fuel, not by the 30 s wall clock: {:?}",
        started.elapsed()
    );
}

#[test]
fn replacing_one_key_again_and_again_keeps_one_value() {
    // Were every replaced value journaled, 9.6 MiB would not fit in 1.
    let limits = Limits {
        max_state_bytes: 1 << 20,
        ..Limits::default()
    };
    let settings = [("puts", "150"), ("value-bytes", "65536")];
    let mut journal = abuse(limits, "journal", &settings);
    journal
        .process(&[records(1)])
        .expect("150 puts of 64 KiB to one key hold one value");
    assert!(journal.keyed_state().charged_bytes() < (64 << 10) + 1024);
    // Different keys add up and hit the limit.
    let mut many = abuse(
        Limits {
            max_state_bytes: 4 << 20,
            ..Limits::default()
        },
        "small-keys",
        &[],
    );
    let error = many.process(&[records(1)]).unwrap_err();
    assert_eq!(limit_of(&error), "state size", "{error}");
    assert_eq!(
        many.keyed_state().len(),
        0,
        "the failed call was rolled back"
    );
}

#[test]
fn timer_keys_count_against_the_state_limit() {
    let mut timers = abuse(Limits::default(), "timer-keys", &[("timers", "400")]);
    let error = timers.process(&[records(1)]).unwrap_err();
    assert_eq!(limit_of(&error), "state size", "{error}");
    assert_eq!(timers.keyed_state().timer_count(), 0);
}

#[test]
fn retries_share_one_output_budget_per_round() {
    let limits = Limits {
        max_output_bytes_per_call: 20 << 20,
        max_memory_bytes: 256 << 20,
        ..Limits::default()
    };
    let mut big = abuse(limits, "big-output", &[("output-bytes", "8388608")]);
    let batch = records(3);
    let error = big.process(std::slice::from_ref(&batch)).unwrap_err();
    assert_eq!(limit_of(&error), "output bytes per call", "{error}");
    // What a pipeline does under `skip`: the records one by one, in the
    // same round. Two fit in 20 MiB; the rest must not.
    let mut kept = 0;
    for record in batch.records() {
        let single = input(record.offset, &[(None, "v", 1_000)]);
        match big.process_without_timers(&[single]) {
            Ok(out) => kept += out.record_count(),
            Err(e) => assert_eq!(limit_of(&e), "output bytes per call"),
        }
    }
    assert_eq!(kept, 2);
}

#[test]
fn rejections_are_one_per_input_record() {
    let mut rejecter = abuse(Limits::default(), "reject-many", &[("times", "100000")]);
    let started = Instant::now();
    let out = rejecter.process(&[records(3)]).unwrap();
    let offsets: Vec<u64> = out.rejected.iter().map(|r| r.offset).collect();
    assert_eq!(offsets, [0, 1, 2]);
    assert_eq!(
        out.rejected[0].reason, "rejection 0",
        "the first reason is kept"
    );
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "{:?}",
        started.elapsed()
    );
}

#[test]
fn forged_batch_headers_are_refused_or_overwritten() {
    for delta in ["1", "1000000", "2147483647"] {
        let mut forger = abuse(
            Limits::default(),
            "forge-last-offset-delta",
            &[("delta", delta)],
        );
        let error = forger.process(&[records(1)]).unwrap_err();
        assert!(
            matches!(&error, OperatorError::BadOutput(m) if m.contains("0, 1, 2")),
            "delta {delta}: {error}"
        );
    }
    let mut control = abuse(Limits::default(), "forge-control", &[]);
    let out = control.process(&[records(2)]).unwrap();
    let (_, batch) = &out.emitted[0];
    let attributes = &batch.as_bytes()[weir_format::field::ATTRIBUTES..][..2];
    assert_eq!(attributes, [0, 0], "no control or transactional bits");
    assert_eq!(batch.producer(), None, "the host sets the producer fields");
}

#[test]
fn guest_text_cannot_forge_log_lines() {
    let mut forger = abuse(Limits::default(), "forge-log-lines", &[]);
    let error = forger.process(&[records(1)]).unwrap_err();
    let text = error.to_string();
    assert!(text.contains("admin token is hunter2"), "{text}");
    assert!(!text.chars().any(char::is_control), "{text:?}");
}
