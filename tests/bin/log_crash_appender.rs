//! Child process for the kill -9 crash test: appends to topic `crash` of the
//! log in `DIR` (durability `always`) from several threads until killed, and
//! prints one line per acknowledged batch: `base_offset count cycle thread seq`.
//!
//! Usage: `log-crash-appender DIR CYCLE THREADS`

use std::io::Write;
use std::sync::Arc;

use log_core::{BatchBuilder, Log, LogError, Record, TopicConfig};

/// The value the parent expects at record `index` of batch `seq`.
fn value(cycle: u64, thread: u64, seq: u64, index: u64) -> Vec<u8> {
    format!("c{cycle}-t{thread}-s{seq}-r{index}-{}", "x".repeat(80)).into_bytes()
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let [_, dir, cycle, threads] = &args[..] else {
        return Err("usage: log-crash-appender DIR CYCLE THREADS".into());
    };
    let cycle: u64 = cycle.parse()?;
    let log = Log::open(dir)?;
    let config = TopicConfig {
        segment_bytes: 64 * 1024,
        ..TopicConfig::default()
    };
    let topic = match log.create_topic("crash", config) {
        Ok(t) => t,
        Err(LogError::TopicExists(_)) => log.topic("crash")?,
        Err(e) => return Err(e.into()),
    };
    let partition = Arc::new(topic.partition(0)?.clone());
    let handles: Vec<_> = (0..threads.parse::<u64>()?)
        .map(|thread| {
            let partition = partition.clone();
            std::thread::spawn(move || -> Result<(), LogError> {
                for seq in 0.. {
                    let count = 1 + (seq % 4);
                    let values: Vec<Vec<u8>> =
                        (0..count).map(|i| value(cycle, thread, seq, i)).collect();
                    let mut builder = BatchBuilder::new();
                    for v in &values {
                        builder.push(&Record {
                            key: Some(b"k"),
                            value: Some(v),
                            headers: &[],
                            timestamp: seq as i64,
                        });
                    }
                    let info = partition.append(builder.finish()?)?;
                    let mut out = std::io::stdout().lock();
                    let _ = writeln!(out, "{} {count} {cycle} {thread} {seq}", info.base_offset);
                    let _ = out.flush();
                }
                Ok(())
            })
        })
        .collect();
    for h in handles {
        h.join().map_err(|_| "appender thread panicked")??;
    }
    Ok(())
}
