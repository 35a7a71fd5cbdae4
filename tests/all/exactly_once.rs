//! Exactly-once under `kill -9`: a stateful pipeline (`dedupe`, whose
//! output depends on every key it remembers) runs while a producer keeps
//! appending and the server is killed with SIGKILL at random moments, then
//! restarted over the same data directory, again and again. In the end
//! the output topic must hold exactly what one uninterrupted run over the
//! stored input produces: no gap, no duplicate, in order. Lost state would
//! let a duplicate key through; a repeated publish would duplicate
//! records; an unpublished commit would leave a gap.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};

use weir_jetstream::testing::{NatsCluster, NatsServer, nats_server_binary};

use crate::support::server::WeirServer;

const KILLS: usize = 12;
const CHUNK: i64 = 50;
const WINDOW_MS: i64 = 40;
/// Small, so tasks snapshot their state and truncate their commit logs
/// many times between kills.
const CONFIG: &str = "[pipelines]\nsnapshot_after_bytes = 16384\n";

fn event(i: i64) -> Value {
    json!({ "key": format!("k{}", i % 13), "value": i, "timestamp": i * 3 })
}

/// What dedupe keeps of `input` (values in order), from its semantics.
fn expected(input: &[Value]) -> Vec<Value> {
    let mut kept_at: std::collections::HashMap<String, i64> = Default::default();
    let mut kept = Vec::new();
    for record in input {
        let key = record["key"].as_str().unwrap().to_string();
        let t = record["timestamp"].as_i64().unwrap();
        if kept_at.get(&key).is_some_and(|t0| t < t0 + WINDOW_MS) {
            continue;
        }
        kept_at.insert(key, t);
        kept.push(record["value"].clone());
    }
    kept
}

/// Produces chunks of events from `first` on until `stop` or an error
/// (the server was killed). Returns the events acknowledged and the end
/// of those attempted (the chunk in flight at the kill may or may not
/// have been appended; later rounds start after it, so the input stays in
/// time order and no record is late).
fn produce_until_killed(url: String, first: i64, stop: Arc<AtomicBool>) -> (Vec<i64>, i64) {
    let mut acknowledged = Vec::new();
    let mut next = first;
    while !stop.load(Ordering::Relaxed) {
        let records: Vec<Value> = (next..next + CHUNK).map(event).collect();
        let sent = ureq::post(format!("{url}/v1/topics/events/records"))
            .send_json(json!({ "records": records }));
        next += CHUNK;
        match sent {
            Ok(response) if response.status() == 200 => acknowledged.extend(next - CHUNK..next),
            _ => break,
        }
    }
    (acknowledged, next)
}

#[test]
fn kill_9_loop_keeps_outputs_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = kill_loop(&data, CONFIG, KILLS, |_| {});

    // Snapshots let the commit log forget: far less is kept than was
    // committed. The snapshot after the last round is queued behind its
    // publish, so it may land just after the pipeline reports caught up.
    let commits = data.join("log/topics/__commits.dedupe.events/0");
    let commit_log_bytes = || -> u64 {
        std::fs::read_dir(&commits)
            .expect("the commit log's directory")
            .filter_map(|e| Some(e.ok()?.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "log"))
            .filter_map(|p| Some(std::fs::metadata(p).ok()?.len()))
            .sum()
    };
    let output_bytes = server.values("kept").len() as u64 * 30;
    server.wait_until(
        &format!("the commit log keeps less than half of about {output_bytes} bytes of outputs"),
        |_| commit_log_bytes() < output_bytes / 2,
    );
}

/// The same loop with the log in a NATS JetStream server: the commit logs,
/// the input and the outputs are streams, and the restarted server picks
/// the task up from what JetStream holds.
#[test]
fn kill_9_loop_keeps_outputs_exactly_once_on_jetstream() {
    let nats = NatsServer::start(&nats_server_binary(Path::new(env!("CARGO_TARGET_TMPDIR"))));
    let dir = tempfile::tempdir().unwrap();
    let config = format!(
        "{CONFIG}[log]\nbackend = \"jetstream\"\nservers = [\"{}\"]\n",
        nats.url()
    );
    let data = dir.path().join("data");
    let server = kill_loop(&data, &config, KILLS / 2, |_| {});
    assert!(
        !data.join("log").exists(),
        "the server kept its streams in JetStream, not in an embedded log"
    );
    let topics = server.expect(200, server.get("/v1/topics"));
    assert!(topics.to_string().contains("\"events\""), "{topics}");
}

/// The loop on a cluster of three JetStream servers (streams replicated
/// three times), where each round also kills a NATS server (the one
/// killed the round before is started again first, so two of three stay
/// up): 6 kills of `weir serve` and 6 of NATS servers.
#[test]
fn kill_9_loop_keeps_outputs_exactly_once_on_a_jetstream_cluster() {
    let binary = nats_server_binary(Path::new(env!("CARGO_TARGET_TMPDIR")));
    let mut cluster = NatsCluster::start(&binary, 3);
    let servers: Vec<String> = cluster.urls().iter().map(|u| format!("\"{u}\"")).collect();
    let dir = tempfile::tempdir().unwrap();
    let config = format!(
        "{CONFIG}[log]\nbackend = \"jetstream\"\nreplicas = 3\nservers = [{}]\n",
        servers.join(", ")
    );
    let mut rng = StdRng::seed_from_u64(0xc1_05);
    let mut down: Option<usize> = None;
    kill_loop(&dir.path().join("data"), &config, KILLS / 2, |_| {
        if let Some(node) = down.take() {
            cluster.restart(node);
        }
        let node = rng.random_range(0..3);
        cluster.kill(node);
        down = Some(node);
    });
}

/// Runs the dedupe pipeline over `data` with `config` while a producer
/// appends, kills the server at random moments (`kills` times at least,
/// more until a quarter of the kills hit a busy pipeline; `disrupt` is
/// called with the round just before each kill, to break something else
/// too), and checks that the output is exactly what one uninterrupted run
/// keeps; returns the server, restarted and caught up.
fn kill_loop(
    data: &Path,
    config: &str,
    kills: usize,
    mut disrupt: impl FnMut(usize),
) -> WeirServer {
    let mut rng = StdRng::seed_from_u64(0x5eed);
    let server = WeirServer::start_with_config(data, config);
    server.create_topic("events", 1);
    server.create_topic("kept", 1);
    server.push_module("dedupe", "dedupe");
    let spec = json!({
        "inputs": ["events"],
        "stages": [{ "module": "dedupe", "config": { "window-ms": WINDOW_MS },
                     "outputs": { "main": "kept" } }],
    });
    server.expect(201, server.put("/v1/pipelines/dedupe", &spec));
    let mut server = Some(server);
    let mut acknowledged = Vec::new();
    let mut attempted = 0;
    let mut busy_kills = 0;
    // Every round ends with a kill. Rounds go on past `kills` (up to four
    // times as many) until enough kills hit a pipeline with input left to
    // process, which a loaded machine makes rarer.
    let wanted_busy = (kills / 4).max(1);
    let mut round = 0;
    while round < kills || (busy_kills < wanted_busy && round < kills * 4) {
        let live = server
            .take()
            .unwrap_or_else(|| WeirServer::start_with_config(data, config));
        let stop = Arc::new(AtomicBool::new(false));
        let producer = {
            let (url, stop) = (live.url.clone(), stop.clone());
            std::thread::spawn(move || produce_until_killed(url, attempted, stop))
        };
        std::thread::sleep(std::time::Duration::from_millis(rng.random_range(20..200)));
        if live.pipeline("dedupe")["lag"].as_u64().unwrap_or(0) > 0 {
            busy_kills += 1;
        }
        disrupt(round);
        std::thread::sleep(std::time::Duration::from_millis(rng.random_range(0..100)));
        live.kill();
        stop.store(true, Ordering::Relaxed);
        let (acked, end) = producer.join().unwrap();
        acknowledged.extend(acked);
        attempted = end;
        round += 1;
    }
    let server = WeirServer::start_with_config(data, config);
    server.wait_caught_up("dedupe");
    let input = server.records("events", 0);
    let ids: std::collections::HashSet<i64> =
        input.iter().map(|r| r["value"].as_i64().unwrap()).collect();
    for &i in &acknowledged {
        assert!(
            ids.contains(&i),
            "acknowledged event {i} is missing from the input"
        );
    }
    let kept = server.values("kept");
    let want = expected(&input);
    assert!(
        busy_kills >= wanted_busy,
        "only {busy_kills} kills hit a busy pipeline"
    );
    assert_eq!(
        kept.len(),
        want.len(),
        "exactly the records one uninterrupted run keeps"
    );
    assert_eq!(kept, want);
    server
}
