//! `weir demo`: a short, honest tour of the embedded log on a real directory.
//!
//! Appends page-visit events to a three-partition topic in batches, reads
//! them back by offset, finds an offset by timestamp, commits a consumer
//! position, then reopens the log (as after a restart) and checks that
//! everything is still there. Each step prints what it did and how long it took.

use std::path::Path;
use std::time::Instant;

use anyhow::{Context, Result, ensure};
use log_core::{BatchBuilder, Log, LogError, Record, TopicConfig};

const TOPIC: &str = "page-visits";
const GROUP: &str = "demo-reader";
const PAGES: [&str; 5] = ["/", "/pricing", "/docs", "/blog", "/signup"];

pub fn run(data_dir: &Path, events: u64) -> Result<()> {
    let log = Log::open(data_dir)
        .with_context(|| format!("while opening the log in {}", data_dir.display()))?;
    println!("log open in {}", data_dir.display());
    let topic = match log.create_topic(
        TOPIC,
        TopicConfig {
            partitions: 3,
            ..TopicConfig::default()
        },
    ) {
        Ok(topic) => topic,
        Err(LogError::TopicExists(_)) => log.topic(TOPIC)?,
        Err(e) => return Err(e).context("while creating the demo topic"),
    };
    let before: Vec<u64> = topic.partitions().iter().map(|p| p.end_offset()).collect();

    let started = Instant::now();
    let base_ts = 1_700_000_000_000i64;
    let per_batch = 256;
    let mut written = 0u64;
    while written < events {
        let n = per_batch.min(events - written);
        let partition = topic.partition((written / per_batch % 3) as u32)?;
        let mut builder = BatchBuilder::with_capacity(n as usize * 120);
        let values: Vec<String> = (written..written + n)
            .map(|i| {
                format!(
                    r#"{{"page":"{}","user":"u{}","seq":{i}}}"#,
                    PAGES[(i % 5) as usize],
                    i % 997
                )
            })
            .collect();
        for (i, value) in values.iter().enumerate() {
            let user = format!("u{}", (written + i as u64) % 997);
            builder.push(&Record {
                key: Some(user.as_bytes()),
                value: Some(value.as_bytes()),
                headers: &[],
                timestamp: base_ts + (written + i as u64) as i64,
            });
        }
        partition
            .append(builder.finish()?)
            .context("while appending")?;
        written += n;
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "appended {written} events (durability always, group commit) in {secs:.2} s: {:.0} events/s",
        written as f64 / secs
    );

    let started = Instant::now();
    let mut read = 0u64;
    for partition in topic.partitions() {
        let mut offset = partition.start_offset();
        while offset < partition.end_offset() {
            let batches = partition.read(offset, 1 << 20)?;
            let Some(last) = batches.last() else { break };
            offset = last.next_offset();
            read += batches.iter().map(|b| b.record_count() as u64).sum::<u64>();
        }
    }
    println!(
        "replayed {read} events from offset 0 of every partition in {:.3} s",
        started.elapsed().as_secs_f64()
    );

    let p0 = topic.partition(0)?;
    let probe = base_ts + (events / 2) as i64;
    let offset = p0.offset_for_timestamp(probe)?;
    let first = p0.read(offset, 4096)?;
    let record = first
        .iter()
        .flat_map(|b| b.records())
        .find(|r| r.offset == offset);
    if let Some(r) = record {
        println!(
            "first event at or after t={probe} in partition 0: offset {offset}, t={}, {}",
            r.timestamp,
            String::from_utf8_lossy(r.value.unwrap_or_default())
        );
    }
    let committed = i64::try_from(offset).context("an offset beyond 2^63")?;
    log.commit_offsets(GROUP, &[(TOPIC, 0, committed)])?;
    println!("committed offset {offset} of {TOPIC}/0 for consumer group {GROUP}");
    let ends: Vec<u64> = topic.partitions().iter().map(|p| p.end_offset()).collect();
    log.close().context("while closing the log")?;

    let started = Instant::now();
    let log = Log::open(data_dir).context("while reopening the log")?;
    let topic = log.topic(TOPIC)?;
    let reopened: Vec<u64> = topic.partitions().iter().map(|p| p.end_offset()).collect();
    ensure!(
        reopened == ends,
        "end offsets changed across a restart: {ends:?} before, {reopened:?} after"
    );
    ensure!(
        log.committed_offset(GROUP, TOPIC, 0) == Some(committed),
        "the committed offset was not kept"
    );
    println!(
        "reopened in {:.1} ms: end offsets {reopened:?} (were {before:?} before this run), committed offset kept",
        started.elapsed().as_secs_f64() * 1000.0
    );
    Ok(())
}
