//! The `weir` client commands: topics, produce, consume, modules and
//! pipelines, over the server's HTTP API. Tables for people by default,
//! `--json` for scripts; a failed request is one line naming the server's
//! reason and a non-zero exit.

use std::io::{BufRead, Write};
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, bail};
use serde_json::{Map, Value, json};
use ureq::Agent;

use weir_pipeline::PipelineSpec;

/// Records sent per produce request when reading stdin.
const PRODUCE_CHUNK: usize = 1_000;

/// A connection to a Weir server.
pub struct Client {
    base: String,
    agent: Agent,
    token: Option<String>,
    pub json: bool,
}

impl Client {
    pub fn new(server: &str, token: Option<String>, json: bool) -> Client {
        let agent = Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(120)))
            .build()
            .into();
        Client {
            base: server.trim_end_matches('/').to_string(),
            agent,
            token,
            json,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Sends a request and returns the JSON answer, or the server's error.
    fn call(&self, method: &str, path: &str, body: Body<'_>) -> anyhow::Result<Value> {
        let url = self.url(path);
        let auth = self.token.as_ref().map(|t| format!("Bearer {t}"));
        let auth = auth.as_deref().unwrap_or("");
        let result = match (method, body) {
            ("GET", _) => self.agent.get(&url).header("authorization", auth).call(),
            ("DELETE", _) => self.agent.delete(&url).header("authorization", auth).call(),
            ("POST", Body::Json(v)) => self
                .agent
                .post(&url)
                .header("authorization", auth)
                .send_json(v),
            ("POST", _) => self
                .agent
                .post(&url)
                .header("authorization", auth)
                .send_empty(),
            ("PUT", Body::Json(v)) => self
                .agent
                .put(&url)
                .header("authorization", auth)
                .send_json(v),
            ("PUT", Body::Bytes(b)) => self
                .agent
                .put(&url)
                .header("authorization", auth)
                .header("content-type", "application/wasm")
                .send(b),
            (m, _) => bail!("unsupported method {m}"),
        };
        let mut response =
            result.with_context(|| format!("cannot reach the Weir server at {}", self.base))?;
        let status = response.status();
        let text = response
            .body_mut()
            .with_config()
            .limit(256 << 20)
            .read_to_string()
            .with_context(|| format!("while reading the answer to {method} {path}"))?;
        let value: Value = serde_json::from_str(&text).unwrap_or(Value::String(text));
        if status.is_success() {
            return Ok(value);
        }
        match value.get("error").and_then(Value::as_str) {
            Some(reason) => bail!("{reason}"),
            None => bail!("{method} {path} failed with {status}: {value}"),
        }
    }

    fn get(&self, path: &str) -> anyhow::Result<Value> {
        self.call("GET", path, Body::None)
    }

    /// Prints a value as JSON (for `--json`).
    fn print_json(&self, value: &Value) {
        println!(
            "{}",
            serde_json::to_string_pretty(value).expect("JSON prints")
        );
    }
}

enum Body<'a> {
    None,
    Json(&'a Value),
    Bytes(&'a [u8]),
}

/// Prints rows under headers, in columns.
fn table(headers: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let text: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        println!("{}", text.join("  ").trim_end());
    };
    line(headers.to_vec());
    for row in rows {
        line(row.iter().map(String::as_str).collect());
    }
}

fn text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        other => other.to_string(),
    }
}

fn encode_path(segment: &str) -> String {
    segment
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

// ---- topics ----

pub fn topic_create(
    client: &Client,
    name: &str,
    settings: Map<String, Value>,
) -> anyhow::Result<()> {
    let mut body = settings;
    body.insert("name".into(), json!(name));
    let info = client.call("POST", "/v1/topics", Body::Json(&Value::Object(body)))?;
    if client.json {
        client.print_json(&info);
    } else {
        println!(
            "created topic {name} ({} partition(s))",
            info["partitions"].as_array().map_or(0, Vec::len)
        );
    }
    Ok(())
}

pub fn topic_list(client: &Client) -> anyhow::Result<()> {
    let value = client.get("/v1/topics")?;
    if client.json {
        client.print_json(&value);
        return Ok(());
    }
    let topics = value["topics"].as_array().cloned().unwrap_or_default();
    let rows: Vec<Vec<String>> = topics
        .iter()
        .map(|t| {
            let parts = t["partitions"].as_array().cloned().unwrap_or_default();
            let records: u64 = parts
                .iter()
                .map(|p| {
                    p["end_offset"].as_u64().unwrap_or(0) - p["start_offset"].as_u64().unwrap_or(0)
                })
                .sum();
            let bytes: u64 = parts
                .iter()
                .map(|p| p["size_bytes"].as_u64().unwrap_or(0))
                .sum();
            vec![
                text(&t["name"]),
                parts.len().to_string(),
                records.to_string(),
                bytes.to_string(),
                text(&t["config"]["durability"]),
                text(&t["config"]["cleanup"]),
            ]
        })
        .collect();
    table(
        &[
            "TOPIC",
            "PARTITIONS",
            "RECORDS",
            "BYTES",
            "DURABILITY",
            "CLEANUP",
        ],
        &rows,
    );
    Ok(())
}

pub fn topic_describe(client: &Client, name: &str) -> anyhow::Result<()> {
    let info = client.get(&format!("/v1/topics/{}", encode_path(name)))?;
    if client.json {
        client.print_json(&info);
        return Ok(());
    }
    println!("topic {name}");
    if let Some(config) = info["config"].as_object() {
        for (k, v) in config {
            println!("  {k}: {}", text(v));
        }
    }
    let rows: Vec<Vec<String>> = info["partitions"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|p| {
            vec![
                text(&p["partition"]),
                text(&p["start_offset"]),
                text(&p["end_offset"]),
                text(&p["size_bytes"]),
            ]
        })
        .collect();
    table(&["PARTITION", "START", "END", "BYTES"], &rows);
    Ok(())
}

pub fn group_list(client: &Client) -> anyhow::Result<()> {
    let value = client.get("/v1/groups")?;
    if client.json {
        client.print_json(&value);
        return Ok(());
    }
    let groups = value["groups"].as_array().cloned().unwrap_or_default();
    let rows: Vec<Vec<String>> = groups
        .iter()
        .map(|g| {
            let offsets = g["offsets"].as_array().cloned().unwrap_or_default();
            let lag: u64 = offsets.iter().filter_map(|o| o["lag"].as_u64()).sum();
            vec![
                text(&g["name"]),
                text(&g["state"]),
                offsets.len().to_string(),
                lag.to_string(),
            ]
        })
        .collect();
    table(&["GROUP", "STATE", "PARTITIONS", "LAG"], &rows);
    Ok(())
}

pub fn group_describe(client: &Client, name: &str) -> anyhow::Result<()> {
    let value = client.get(&format!("/v1/groups/{}", encode_path(name)))?;
    if client.json {
        client.print_json(&value);
        return Ok(());
    }
    println!("state: {}", text(&value["state"]));
    let members = value["members"].as_array().cloned().unwrap_or_default();
    if !members.is_empty() {
        let rows: Vec<Vec<String>> = members
            .iter()
            .map(|m| {
                let assigned: Vec<String> = m["assignment"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default()
                    .iter()
                    .map(|a| {
                        let partitions: Vec<String> = a["partitions"]
                            .as_array()
                            .cloned()
                            .unwrap_or_default()
                            .iter()
                            .map(|p| p.to_string())
                            .collect();
                        format!("{}[{}]", text(&a["topic"]), partitions.join(","))
                    })
                    .collect();
                vec![
                    text(&m["member_id"]),
                    text(&m["instance_id"]),
                    text(&m["client_host"]),
                    assigned.join(" "),
                ]
            })
            .collect();
        println!();
        table(&["MEMBER", "INSTANCE", "HOST", "ASSIGNED"], &rows);
    }
    let rows: Vec<Vec<String>> = value["offsets"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|o| {
            vec![
                text(&o["topic"]),
                text(&o["partition"]),
                text(&o["offset"]),
                text(&o["lag"]),
            ]
        })
        .collect();
    if !rows.is_empty() {
        println!();
        table(&["TOPIC", "PARTITION", "OFFSET", "LAG"], &rows);
    }
    Ok(())
}

/// DELETEs `path`, then says `done` (unless the output is JSON).
fn delete(client: &Client, path: &str, done: &str) -> anyhow::Result<()> {
    client.call("DELETE", path, Body::None)?;
    if !client.json {
        println!("{done}");
    }
    Ok(())
}

pub fn group_delete(client: &Client, name: &str) -> anyhow::Result<()> {
    let path = format!("/v1/groups/{}", encode_path(name));
    delete(client, &path, &format!("deleted group {name}"))
}

pub fn topic_delete(client: &Client, name: &str) -> anyhow::Result<()> {
    let path = format!("/v1/topics/{}", encode_path(name));
    delete(client, &path, &format!("deleted topic {name}"))
}

// ---- produce and consume ----

/// Produces one record from flags, or every line of stdin (JSON records
/// or plain lines, as `weir run` reads them).
pub fn produce(
    client: &Client,
    topic: &str,
    key: Option<String>,
    value: Option<String>,
    partition: Option<u32>,
) -> anyhow::Result<()> {
    let path = format!("/v1/topics/{}/records", encode_path(topic));
    let with_partition = |mut record: Map<String, Value>| {
        if let Some(p) = partition {
            record.insert("partition".into(), json!(p));
        }
        Value::Object(record)
    };
    let mut sent = 0usize;
    let mut send = |records: Vec<Value>| -> anyhow::Result<()> {
        let answer = client.call("POST", &path, Body::Json(&json!({ "records": records })))?;
        sent += records.len();
        if client.json {
            for offset in answer["offsets"].as_array().into_iter().flatten() {
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
pub enum From {
    Beginning,
    End,
    Offset(u64),
    Time(i64),
}

/// Prints records of a topic (one partition or all), optionally
/// following new ones until interrupted.
pub fn consume(
    client: &Client,
    topic: &str,
    from: From,
    partition: Option<u32>,
    follow: bool,
    limit: Option<u64>,
) -> anyhow::Result<()> {
    let topic_path = format!("/v1/topics/{}", encode_path(topic));
    let info = client.get(&topic_path)?;
    let partitions: Vec<(u32, u64, u64)> = info["partitions"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .filter_map(|p| {
            Some((
                p["partition"].as_u64()? as u32,
                p["start_offset"].as_u64()?,
                p["end_offset"].as_u64()?,
            ))
        })
        .filter(|(p, _, _)| partition.is_none_or(|want| want == *p))
        .collect();
    if partitions.is_empty() {
        bail!("topic {topic} has no partition {}", partition.unwrap_or(0));
    }
    // Per partition: the next offset to read (None: resolve by time).
    let mut positions: Vec<(u32, Option<u64>)> = partitions
        .iter()
        .map(|&(p, start, end)| {
            let offset = match from {
                From::Beginning => Some(start),
                From::End => Some(end),
                From::Offset(o) => Some(o),
                From::Time(_) => None,
            };
            (p, offset)
        })
        .collect();
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
            let answer = client.get(&format!(
                "{topic_path}/records?partition={partition}&{start}&limit=1000&wait_ms={wait}"
            ))?;
            let records = answer["records"].as_array().cloned().unwrap_or_default();
            *position = answer["next_offset"].as_u64().or(*position);
            for record in &records {
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

fn print_record(out: &mut impl Write, record: &Value, json: bool) -> anyhow::Result<()> {
    let result = if json {
        writeln!(out, "{record}")
    } else {
        let value = match (&record["value"], &record["value_b64"]) {
            (Value::Null, Value::String(b64)) => format!("(base64) {b64}"),
            (v, _) => text(v),
        };
        writeln!(
            out,
            "{}@{}\t{}\t{}\t{}",
            text(&record["partition"]),
            text(&record["offset"]),
            text(&record["timestamp"]),
            text(&record["key"]),
            value
        )
    };
    result.context("while writing to stdout")
}

// ---- modules ----

pub fn module_push(client: &Client, name: &str, file: &Path) -> anyhow::Result<()> {
    let bytes = std::fs::read(file).with_context(|| format!("while reading {}", file.display()))?;
    let answer = client.call(
        "PUT",
        &format!("/v1/modules/{}", encode_path(name)),
        Body::Bytes(&bytes),
    )?;
    if client.json {
        client.print_json(&answer);
    } else if answer["new"] == json!(true) {
        println!(
            "pushed module {name} version {} (sha256 {})",
            text(&answer["version"]),
            text(&answer["digest"])
        );
    } else {
        println!(
            "module {name} version {} already has these bytes",
            text(&answer["version"])
        );
    }
    Ok(())
}

pub fn module_list(client: &Client) -> anyhow::Result<()> {
    let value = client.get("/v1/modules")?;
    if client.json {
        client.print_json(&value);
        return Ok(());
    }
    let rows: Vec<Vec<String>> = value["modules"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|m| {
            let latest = &m["latest"];
            vec![
                text(&m["name"]),
                text(&latest["version"]),
                m["versions"].as_array().map_or(0, Vec::len).to_string(),
                text(&latest["size"]),
                text(&latest["digest"]).chars().take(12).collect(),
            ]
        })
        .collect();
    table(&["MODULE", "LATEST", "VERSIONS", "BYTES", "DIGEST"], &rows);
    Ok(())
}

// ---- pipelines ----

pub fn pipeline_apply(client: &Client, file: &Path, name: Option<String>) -> anyhow::Result<()> {
    let text_spec = std::fs::read_to_string(file)
        .with_context(|| format!("while reading {}", file.display()))?;
    let spec = PipelineSpec::from_toml(&text_spec)
        .map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
    let name = name
        .or_else(|| spec.name.clone())
        .or_else(|| file.file_stem().map(|s| s.to_string_lossy().into_owned()))
        .context("the pipeline needs a name (name = \"...\" in the file, or --name)")?;
    let body = serde_json::to_value(&spec).expect("specs serialize");
    let status = client.call(
        "PUT",
        &format!("/v1/pipelines/{}", encode_path(&name)),
        Body::Json(&body),
    )?;
    if client.json {
        client.print_json(&status);
    } else {
        println!(
            "applied pipeline {name}: {} ({})",
            text(&status["state"]),
            status["modules"]
                .as_array()
                .map(|m| m.iter().map(text).collect::<Vec<_>>().join(" -> "))
                .unwrap_or_default()
        );
    }
    Ok(())
}

pub fn pipeline_list(client: &Client) -> anyhow::Result<()> {
    let value = client.get("/v1/pipelines")?;
    if client.json {
        client.print_json(&value);
        return Ok(());
    }
    let rows: Vec<Vec<String>> = value["pipelines"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|p| {
            vec![
                text(&p["name"]),
                text(&p["state"]),
                text(&p["records_in"]),
                text(&p["records_out"]),
                text(&p["errors"]),
                text(&p["lag"]),
            ]
        })
        .collect();
    table(&["PIPELINE", "STATE", "IN", "OUT", "ERRORS", "LAG"], &rows);
    Ok(())
}

pub fn pipeline_status(client: &Client, name: &str) -> anyhow::Result<()> {
    let status = client.get(&format!("/v1/pipelines/{}", encode_path(name)))?;
    print_status(client, &status);
    Ok(())
}

fn print_status(client: &Client, status: &Value) {
    if client.json {
        client.print_json(status);
        return;
    }
    println!(
        "pipeline {}: {}",
        text(&status["name"]),
        text(&status["state"])
    );
    if let Some(reason) = status["reason"].as_str() {
        println!("  reason: {reason}");
    }
    println!(
        "  records in {}, out {}, errors {}, rejected {}, dead-lettered {}, lag {}",
        text(&status["records_in"]),
        text(&status["records_out"]),
        text(&status["errors"]),
        text(&status["rejected"]),
        text(&status["dead_lettered"]),
        text(&status["lag"])
    );
    let stages: Vec<Vec<String>> = status["stages"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .enumerate()
        .map(|(i, s)| {
            vec![
                (i + 1).to_string(),
                text(&s["module"]),
                text(&s["records_in"]),
                text(&s["records_out"]),
                text(&s["errors"]),
                text(&s["rejected"]),
                text(&s["processing_ms"]),
            ]
        })
        .collect();
    table(
        &[
            "STAGE", "MODULE", "IN", "OUT", "ERRORS", "REJECTED", "BUSY_MS",
        ],
        &stages,
    );
}

/// `pause`, `resume` or `delete`.
pub fn pipeline_action(client: &Client, name: &str, action: &str) -> anyhow::Result<()> {
    let path = format!("/v1/pipelines/{}", encode_path(name));
    if action == "delete" {
        return delete(client, &path, &format!("deleted pipeline {name}"));
    }
    let status = client.call("POST", &format!("{path}/{action}"), Body::None)?;
    print_status(client, &status);
    Ok(())
}

// ---- tenants and tokens ----

pub fn tenant_create(client: &Client, name: &str) -> anyhow::Result<()> {
    let info = client.call("POST", "/v1/tenants", Body::Json(&json!({ "name": name })))?;
    if client.json {
        client.print_json(&info);
    } else {
        println!("created tenant {name}");
    }
    Ok(())
}

pub fn tenant_list(client: &Client) -> anyhow::Result<()> {
    let value = client.get("/v1/tenants")?;
    if client.json {
        client.print_json(&value);
        return Ok(());
    }
    let rows: Vec<Vec<String>> = value["tenants"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|t| {
            let tokens: Vec<String> = t["tokens"]
                .as_array()
                .into_iter()
                .flatten()
                .map(text)
                .collect();
            vec![text(&t["name"]), tokens.join(",")]
        })
        .collect();
    table(&["TENANT", "TOKENS"], &rows);
    Ok(())
}

pub fn tenant_delete(client: &Client, name: &str) -> anyhow::Result<()> {
    let path = format!("/v1/tenants/{}", encode_path(name));
    delete(
        client,
        &path,
        &format!("deleted tenant {name} and everything it owned"),
    )
}

pub fn token_create(client: &Client, tenant: &str) -> anyhow::Result<()> {
    let issued = client.call(
        "POST",
        &format!("/v1/tenants/{}/tokens", encode_path(tenant)),
        Body::None,
    )?;
    if client.json {
        client.print_json(&issued);
    } else {
        eprintln!(
            "token {} for tenant {tenant} (shown only now; use it as WEIR_TOKEN):",
            text(&issued["id"])
        );
        println!("{}", text(&issued["token"]));
    }
    Ok(())
}

pub fn token_revoke(client: &Client, tenant: &str, id: &str) -> anyhow::Result<()> {
    let path = format!(
        "/v1/tenants/{}/tokens/{}",
        encode_path(tenant),
        encode_path(id)
    );
    delete(
        client,
        &path,
        &format!("revoked token {id} of tenant {tenant}"),
    )
}
