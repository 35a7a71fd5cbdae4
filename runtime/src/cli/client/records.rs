//! `weir produce` and `weir consume`: records in and out of a topic
//! (`/v1/topics/{name}/records`).
//!
//! Produce sends one record from flags, or stdin's lines (JSON records or
//! plain lines, as `weir run` reads them) in chunks. Consume reads each
//! partition from where it was asked to start, optionally following new
//! records. With `--json` both print one JSON object per line, as the
//! server sent it: where each record landed, or each record read.

use std::io::{BufRead, Write};
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value, json};
use weir_log::TopicInfo;

use super::table::text;
use super::{Client, encode_path};

/// Records sent per produce request when reading stdin.
const PRODUCE_CHUNK: usize = 1_000;

#[derive(Args)]
pub struct ProduceArgs {
    topic: String,
    /// The value of a single record (otherwise stdin is read).
    #[arg(long)]
    value: Option<String>,
    /// The key of the record (or of every stdin line without one).
    #[arg(long)]
    key: Option<String>,
    #[arg(long)]
    partition: Option<u32>,
}

#[derive(Args)]
pub struct ConsumeArgs {
    topic: String,
    /// Start at the first record stored.
    #[arg(long, conflicts_with_all = ["offset", "since"])]
    from_beginning: bool,
    /// Start at this offset (of every partition read).
    #[arg(long, conflicts_with = "since")]
    offset: Option<u64>,
    /// Start at this time: RFC 3339 (2026-11-25T10:00:00Z), a duration
    /// ago (15m, 2h) or milliseconds since the epoch.
    #[arg(long)]
    since: Option<String>,
    /// Keep waiting for new records.
    #[arg(long)]
    follow: bool,
    /// Only this partition.
    #[arg(long)]
    partition: Option<u32>,
    /// Stop after this many records.
    #[arg(long)]
    limit: Option<u64>,
}

/// `POST /v1/topics/{name}/records`' answer.
#[derive(Deserialize)]
struct Produced {
    /// Where each record landed, in request order: `{"partition",
    /// "offset"}`, only ever printed as sent (`--json`).
    offsets: Vec<Value>,
}

/// `GET /v1/topics/{name}/records`' answer.
#[derive(Deserialize)]
struct Read {
    records: Vec<AsSent<StoredRecord>>,
    /// Where the next read starts.
    next_offset: u64,
}

/// A record read, as `jsonl::render_into` writes it: a key or value that
/// is JSON as JSON, other UTF-8 as a string, `null` when absent, and
/// other bytes in base64 under `key_b64` or `value_b64` instead.
#[derive(Deserialize)]
struct StoredRecord {
    partition: u32,
    offset: u64,
    timestamp: i64,
    #[serde(default)]
    key: Value,
    #[serde(default)]
    value: Value,
    value_b64: Option<String>,
}

/// An item of an answer both as the server sent it (for `--json`) and
/// read as `T` (for people).
struct AsSent<T> {
    json: Value,
    typed: T,
}

impl<'de, T: DeserializeOwned> Deserialize<'de> for AsSent<T> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let json = Value::deserialize(deserializer)?;
        let typed = T::deserialize(&json).map_err(serde::de::Error::custom)?;
        Ok(AsSent { json, typed })
    }
}

impl ProduceArgs {
    /// Produces one record from flags, or every line of stdin.
    pub fn run(self, client: &Client) -> anyhow::Result<()> {
        let ProduceArgs {
            topic,
            value,
            key,
            partition,
        } = self;
        let path = format!("/v1/topics/{}/records", encode_path(&topic));
        let with_partition = |mut record: Map<String, Value>| {
            if let Some(p) = partition {
                record.insert("partition".into(), json!(p));
            }
            Value::Object(record)
        };
        let mut sent = 0usize;
        let mut send = |records: Vec<Value>| -> anyhow::Result<()> {
            let count = records.len();
            let produced: Produced = client.post(&path, &json!({ "records": records }))?.read()?;
            if produced.offsets.len() != count {
                anyhow::bail!(
                    "the server's answer to POST {path}: {} offsets for {count} records",
                    produced.offsets.len()
                );
            }
            sent += count;
            if client.json {
                for offset in &produced.offsets {
                    println!("{offset}");
                }
            }
            Ok(())
        };
        if let Some(value) = value {
            let mut record = Map::new();
            record.insert("key".into(), key.map_or(Value::Null, Value::String));
            record.insert("value".into(), Value::String(value));
            send(vec![with_partition(record)])?;
        } else {
            let stdin = std::io::stdin().lock();
            let mut chunk = Vec::new();
            for (n, line) in stdin.lines().enumerate() {
                let line = line.context("while reading stdin")?;
                if line.trim().is_empty() {
                    continue;
                }
                let record = crate::jsonl::parse_line(&line, weir_core::now_ms())
                    .map_err(|e| anyhow::anyhow!("line {}: {e}", n + 1))?;
                chunk.push(with_partition(record_json(record, key.as_deref())));
                if chunk.len() == PRODUCE_CHUNK {
                    send(std::mem::take(&mut chunk))?;
                }
            }
            if !chunk.is_empty() {
                send(chunk)?;
            }
        }
        if !client.json {
            eprintln!("produced {sent} record(s) to {topic}");
        }
        Ok(())
    }
}

/// A parsed input line as the API's record object (bytes as base64).
fn record_json(record: crate::jsonl::JsonRecord, default_key: Option<&str>) -> Map<String, Value> {
    use base64::Engine as _;
    let b64 = |bytes: &[u8]| json!(base64::engine::general_purpose::STANDARD.encode(bytes));
    let mut object = Map::new();
    match (&record.key, default_key) {
        (Some(key), _) => {
            object.insert("key_b64".into(), b64(key));
        }
        (None, Some(key)) => {
            object.insert("key".into(), json!(key));
        }
        (None, None) => {}
    }
    match &record.value {
        Some(value) => object.insert("value_b64".into(), b64(value)),
        None => object.insert("value".into(), Value::Null),
    };
    object.insert("timestamp".into(), json!(record.timestamp));
    if !record.headers.is_empty() {
        let headers: Map<String, Value> = record
            .headers
            .iter()
            .map(|(k, v)| (k.clone(), json!(String::from_utf8_lossy(v))))
            .collect();
        object.insert("headers".into(), Value::Object(headers));
    }
    object
}

/// Where `consume` starts.
enum From {
    Beginning,
    End,
    Offset(u64),
    Time(i64),
}

impl ConsumeArgs {
    /// Prints records of a topic (one partition or all), optionally
    /// following new ones until interrupted.
    pub fn run(self, client: &Client) -> anyhow::Result<()> {
        let from = match (self.from_beginning, self.offset, &self.since) {
            (true, _, _) => From::Beginning,
            (_, Some(offset), _) => From::Offset(offset),
            (_, _, Some(since)) => From::Time(parse_since(since)?),
            _ => From::End,
        };
        let ConsumeArgs {
            topic,
            partition,
            follow,
            limit,
            ..
        } = self;
        let topic_path = format!("/v1/topics/{}", encode_path(&topic));
        let info: TopicInfo = client.get(&topic_path)?.read()?;
        // Per partition read: the next offset to read (None: resolve by time).
        let mut positions: Vec<(u32, Option<u64>)> = info
            .partitions
            .iter()
            .filter(|p| partition.is_none_or(|want| want == p.partition))
            .map(|p| {
                let offset = match from {
                    From::Beginning => Some(p.start_offset),
                    From::End => Some(p.end_offset),
                    From::Offset(o) => Some(o),
                    From::Time(_) => None,
                };
                (p.partition, offset)
            })
            .collect();
        if positions.is_empty() {
            anyhow::bail!("topic {topic} has no partition {}", partition.unwrap_or(0));
        }
        let single = positions.len() == 1;
        let mut printed = 0u64;
        let mut out = std::io::stdout().lock();
        loop {
            let mut any = false;
            for (partition, position) in positions.iter_mut() {
                let start = match (*position, &from) {
                    (Some(offset), _) => format!("offset={offset}"),
                    (None, From::Time(ms)) => format!("timestamp={ms}"),
                    (None, _) => unreachable!("only time starts are resolved later"),
                };
                let wait = if follow && single { 5_000 } else { 0 };
                let read: Read = client
                    .get(&format!(
                        "{topic_path}/records?partition={partition}&{start}&limit=1000&wait_ms={wait}"
                    ))?
                    .read()?;
                *position = Some(read.next_offset);
                for record in &read.records {
                    if limit.is_some_and(|l| printed >= l) {
                        return Ok(());
                    }
                    print_record(&mut out, record, client.json)?;
                    printed += 1;
                    any = true;
                }
            }
            if !any {
                if !follow {
                    return Ok(());
                }
                if !single {
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
        }
    }
}

/// One line per record: as sent with `--json`, else
/// `partition@offset  timestamp  key  value`, tab-separated.
fn print_record(
    out: &mut impl Write,
    record: &AsSent<StoredRecord>,
    json: bool,
) -> anyhow::Result<()> {
    let result = if json {
        writeln!(out, "{}", record.json)
    } else {
        let r = &record.typed;
        let value = match (&r.value, &r.value_b64) {
            (Value::Null, Some(b64)) => format!("(base64) {b64}"),
            (v, _) => text(v),
        };
        writeln!(
            out,
            "{}@{}\t{}\t{}\t{}",
            r.partition,
            r.offset,
            r.timestamp,
            text(&r.key),
            value
        )
    };
    result.context("while writing to stdout")
}

/// Reads `--since`: RFC 3339, a duration ago, or epoch milliseconds.
fn parse_since(text: &str) -> anyhow::Result<i64> {
    if let Ok(ms) = text.parse::<i64>() {
        return Ok(ms);
    }
    if let Ok(ago) = humantime::parse_duration(text) {
        return Ok(weir_core::now_ms() - ago.as_millis() as i64);
    }
    let time = humantime::parse_rfc3339_weak(text).map_err(|_| {
        anyhow::anyhow!(
            "--since {text:?}: expected RFC 3339 (2026-11-25T10:00:00Z), a duration ago \
             (15m) or milliseconds since the epoch"
        )
    })?;
    let since_epoch = time
        .duration_since(std::time::UNIX_EPOCH)
        .context("--since is before 1970")?;
    Ok(since_epoch.as_millis() as i64)
}
