//! `host-abuse`: hostile fixture. Where the other fixtures attack the
//! sandbox from inside WebAssembly, this one makes the *host* work for it,
//! one attack per value of the setting `attack`, each on every `process`
//! call (or in `init` where named so). Written against the raw bindings,
//! not the SDK's `Operator`, so it can hand the host batches the SDK would
//! never write. Unless an attack says otherwise, each input record is
//! forwarded to `main` as it is, so a run that survives shows its output.
//!
//! - `sleep` / `sleep-in-init`: `std::thread::sleep` for an hour (WASI
//!   clock subscription and `poll`), then go on.
//! - `wait-for-time`: waits in a loop for the (frozen) clock to move,
//!   sleeping a millisecond each time.
//! - `journal`: `puts` (default 150) puts of a `value-bytes` (default
//!   10 MiB) value to one key, in one call.
//! - `timer-keys`: `timers` (default 400) timers with 1 MiB keys.
//! - `small-keys`: puts 8-byte keys with 1-byte values until the host
//!   refuses (a trap).
//! - `big-output`: emits one record of `output-bytes` (default 8 MiB) per
//!   input record instead of forwarding it.
//! - `reject-many`: rejects every input record `times` (default 20,000) times.
//! - `log-big`: logs a `log-bytes` (default 16 MiB) message in an endless loop.
//! - `log-flood`: logs `lines` (default 100,000) short lines per call.
//! - `forge-last-offset-delta`: one output batch of one record whose
//!   `last_offset_delta` says `delta` (default 1,000,000).
//! - `forge-control`: output batches with the control and transactional
//!   attribute bits set.
//! - `forge-log-lines`: fails every call with a reason, and logs a message,
//!   full of newlines and terminal escapes that look like server log lines.

use std::cell::RefCell;
use std::time::{Duration, Instant};

use weir_format::{BatchWriter, Batches, Record, field};
use weir_operator::bindings::{
    Emitted, Failure, Guest, Outcome, Rejection, Timer, export_operator_world,
};
use weir_operator::{log, state, timers};

thread_local! {
    static CONFIG: RefCell<Vec<(String, String)>> = const { RefCell::new(Vec::new()) };
}

fn setting(key: &str) -> Option<String> {
    CONFIG.with(|c| {
        c.borrow()
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.clone())
    })
}

fn number(key: &str, default: usize) -> usize {
    setting(key).and_then(|v| v.parse().ok()).unwrap_or(default)
}

const FORGED_LOG: &str = "ok\n2026-12-03T00:00:00.000000Z  INFO weir::server: admin token is hunter2\n\x1b[2J\x1b[31mFAKE\x1b[0m\r";

struct HostAbuse;

impl Guest for HostAbuse {
    fn init(config: Vec<(String, String)>) -> Result<(), String> {
        CONFIG.with(|c| *c.borrow_mut() = config);
        if setting("attack").as_deref() == Some("sleep-in-init") {
            std::thread::sleep(Duration::from_secs(3600));
        }
        Ok(())
    }

    fn process(input: Vec<u8>) -> Result<Outcome, Failure> {
        let attack = setting("attack").unwrap_or_default();
        let mut outcome = Outcome {
            emitted: Vec::new(),
            rejected: Vec::new(),
        };
        let mut forward = BatchWriter::new();
        for batch in Batches::assume_valid(&input) {
            let batch = batch.map_err(|e| failure(format!("bad input: {e}")))?;
            for record in batch.records() {
                match attack.as_str() {
                    "big-output" => {
                        let value = vec![b'o'; number("output-bytes", 8 << 20)];
                        emit(&mut outcome, one_record(&value, record.timestamp));
                    }
                    "reject-many" => {
                        for i in 0..number("times", 20_000) {
                            outcome.rejected.push(Rejection {
                                offset: record.offset,
                                reason: format!("rejection {i}"),
                            });
                        }
                    }
                    _ => {
                        forward.push_view(&record);
                    }
                }
            }
        }
        match attack.as_str() {
            "sleep" => std::thread::sleep(Duration::from_secs(3600)),
            "wait-for-time" => {
                let start = Instant::now();
                while start.elapsed() < Duration::from_secs(1) {
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
            "journal" => {
                let value = vec![b'j'; number("value-bytes", 10 << 20)];
                for _ in 0..number("puts", 150) {
                    state::put(b"one-key", &value);
                }
            }
            "timer-keys" => {
                for i in 0..number("timers", 400) {
                    let mut key = vec![b't'; 1 << 20];
                    key[..8].copy_from_slice(&(i as u64).to_be_bytes());
                    timers::set(&key, i64::MAX - 1);
                }
            }
            "small-keys" => {
                for i in 0u64.. {
                    state::put(&i.to_be_bytes(), b"1");
                }
            }
            "log-big" => {
                let message = "L".repeat(number("log-bytes", 16 << 20));
                loop {
                    log::info(&message);
                }
            }
            "log-flood" => {
                for i in 0..number("lines", 100_000) {
                    log::info(&format!("log-flood line {i}"));
                }
            }
            "forge-log-lines" => {
                log::warn(FORGED_LOG);
                return Err(failure(FORGED_LOG.to_string()));
            }
            _ => {}
        }
        if forward.is_empty() {
            return Ok(outcome);
        }
        let mut batch = forward
            .finish_unsealed()
            .map_err(|e| failure(e.to_string()))?;
        match attack.as_str() {
            "forge-last-offset-delta" => {
                let delta = number("delta", 1_000_000) as i32;
                let mut one = one_record(b"forged", 0);
                one[field::LAST_OFFSET_DELTA..field::LAST_OFFSET_DELTA + 4]
                    .copy_from_slice(&delta.to_be_bytes());
                batch = one;
            }
            "forge-control" => {
                batch[field::ATTRIBUTES..field::ATTRIBUTES + 2]
                    .copy_from_slice(&0x30i16.to_be_bytes());
            }
            _ => {}
        }
        emit(&mut outcome, batch);
        Ok(outcome)
    }

    fn on_timer(_fired: Vec<Timer>) -> Result<Outcome, Failure> {
        Ok(Outcome {
            emitted: Vec::new(),
            rejected: Vec::new(),
        })
    }
}

fn failure(reason: String) -> Failure {
    Failure {
        offset: None,
        reason,
    }
}

fn one_record(value: &[u8], timestamp: i64) -> Vec<u8> {
    let mut writer = BatchWriter::new();
    writer.push(&Record {
        value: Some(value),
        timestamp,
        ..Record::default()
    });
    writer.finish_unsealed().expect("one record")
}

fn emit(outcome: &mut Outcome, batch: Vec<u8>) {
    outcome.emitted.push(Emitted {
        output: "main".to_string(),
        batch,
    });
}

export_operator_world!(HostAbuse with_types_in weir_operator::bindings);
