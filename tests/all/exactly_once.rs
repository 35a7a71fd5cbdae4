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

/// Three JetStream servers (streams replicated three times) and three
/// workers sharing a stateful pipeline over keyed input (three
/// partitions), while a producer writes through whichever worker is up:
/// every round kills a worker or a NATS server with SIGKILL, or pauses a
/// worker (SIGSTOP) past its leases' TTL so that its tasks move while it
/// is frozen, then wakes it (SIGCONT) as a zombie that must be fenced. In
/// the end every output partition holds exactly what one uninterrupted run
/// over its input partition keeps.
#[test]
fn workers_and_jetstream_nodes_killed_at_random_keep_outputs_exactly_once() {
    const WORKER_KILLS: usize = 6;
    const NODE_KILLS: usize = 6;
    const PAUSES: usize = 2;
    const TTL_MS: u64 = 2_000;
    let binary = nats_server_binary(Path::new(env!("CARGO_TARGET_TMPDIR")));
    let mut cluster = NatsCluster::start(&binary, 3);
    let servers: Vec<String> = cluster.urls().iter().map(|u| format!("\"{u}\"")).collect();
    let dir = tempfile::tempdir().unwrap();
    let config = format!(
        "{CONFIG}[log]\nbackend = \"jetstream\"\nreplicas = 3\nlease_ttl_ms = {TTL_MS}\nservers = [{}]\n",
        servers.join(", ")
    );
    let data = |i: usize| dir.path().join(format!("worker{i}"));
    let mut workers: Vec<Option<WeirServer>> = (0..3)
        .map(|i| Some(WeirServer::start_with_config(&data(i), &config)))
        .collect();
    let first = workers[0].as_ref().unwrap();
    first.create_topic("events", 3);
    first.create_topic("kept", 3);
    first.push_module("dedupe", "dedupe");
    let spec = json!({
        "inputs": ["events"],
        "stages": [{ "module": "dedupe", "config": { "window-ms": WINDOW_MS },
                     "outputs": { "main": "kept" } }],
    });
    first.expect(201, first.put("/v1/pipelines/dedupe", &spec));

    // The producer writes through any worker that answers.
    let urls = Arc::new(std::sync::Mutex::new(
        workers
            .iter()
            .flatten()
            .map(|w| w.url.clone())
            .collect::<Vec<_>>(),
    ));
    let stop = Arc::new(AtomicBool::new(false));
    let producer = {
        let (urls, stop) = (urls.clone(), stop.clone());
        std::thread::spawn(move || produce_through_any(&urls, &stop))
    };

    let mut rng = StdRng::seed_from_u64(0x3_3_3);
    let mut actions: Vec<&str> = std::iter::repeat_n("kill worker", WORKER_KILLS)
        .chain(std::iter::repeat_n("kill node", NODE_KILLS))
        .chain(std::iter::repeat_n("pause worker", PAUSES))
        .collect();
    actions.sort_by_key(|_| rng.random::<u32>());
    let mut node_down: Option<usize> = None;
    let mut worker_down: Option<usize> = None;
    for action in actions {
        if let Some(node) = node_down.take() {
            cluster.restart(node);
        }
        if let Some(i) = worker_down.take() {
            workers[i] = Some(WeirServer::start_with_config(&data(i), &config));
        }
        *urls.lock().unwrap() = workers.iter().flatten().map(|w| w.url.clone()).collect();
        std::thread::sleep(std::time::Duration::from_millis(
            rng.random_range(300..1500),
        ));
        let i = rng.random_range(0..3);
        match action {
            "kill worker" => {
                workers[i].take().unwrap().kill();
                worker_down = Some(i);
            }
            "kill node" => {
                let node = rng.random_range(0..3);
                cluster.kill(node);
                node_down = Some(node);
            }
            _ => {
                // A worker that runs a task, so that the task moves.
                let i = busy_worker(&workers).unwrap_or(i);
                let pid = workers[i].as_ref().unwrap().pid().to_string();
                signal("-STOP", &pid);
                std::thread::sleep(std::time::Duration::from_millis(TTL_MS * 2));
                signal("-CONT", &pid);
            }
        }
    }
    if let Some(node) = node_down.take() {
        cluster.restart(node);
    }
    if let Some(i) = worker_down.take() {
        workers[i] = Some(WeirServer::start_with_config(&data(i), &config));
    }
    *urls.lock().unwrap() = workers.iter().flatten().map(|w| w.url.clone()).collect();
    std::thread::sleep(std::time::Duration::from_millis(500));
    stop.store(true, Ordering::Relaxed);
    let acknowledged = producer.join().unwrap();

    // Tasks the chaos failed start again by themselves (with a backoff of
    // up to 30 s): wait for all of them, not just for no failure.
    let any = workers[2].as_ref().unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(240);
    loop {
        let status = any.pipeline("dedupe");
        let tasks = status["tasks"].as_array().cloned().unwrap_or_default();
        let placed = tasks.len() == 3
            && tasks
                .iter()
                .all(|t| t["state"] == "running" && t["worker"].is_string());
        if placed && status["lag"] == 0 && status["state"] == "running" {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the pipeline did not catch up: {status}"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    let mut stored = std::collections::HashSet::new();
    for partition in 0..3 {
        let input = any.records("events", partition);
        stored.extend(input.iter().map(|r| r["value"].as_i64().unwrap()));
        let kept: Vec<Value> = any
            .records("kept", partition)
            .into_iter()
            .map(|r| r["value"].clone())
            .collect();
        let want = expected(&input);
        assert_eq!(
            kept.len(),
            want.len(),
            "partition {partition}: exactly the records one uninterrupted run keeps"
        );
        assert_eq!(kept, want, "partition {partition}");
    }
    for i in &acknowledged {
        assert!(
            stored.contains(i),
            "acknowledged event {i} is missing from the input"
        );
    }
    assert!(
        acknowledged.len() > 1_000,
        "the producer kept writing: {}",
        acknowledged.len()
    );
    let logs: String = (0..3)
        .map(|i| std::fs::read_to_string(data(i).with_extension("server.log")).unwrap_or_default())
        .collect();
    assert!(
        logs.contains("another worker holds this task's lease now"),
        "a paused worker woke up to find its tasks moved"
    );
}

/// The index of a worker that says it runs a task (waiting a few seconds
/// for one, since tasks may be moving).
fn busy_worker(workers: &[Option<WeirServer>]) -> Option<usize> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while std::time::Instant::now() < deadline {
        let busy = workers.iter().position(|w| {
            w.as_ref().is_some_and(|w| {
                let (code, status) = w.get("/v1/cluster");
                code == 200
                    && status["workers"].as_array().is_some_and(|all| {
                        all.iter().any(|me| {
                            me["this"] == true
                                && me["tasks"].as_array().is_some_and(|t| !t.is_empty())
                        })
                    })
            })
        });
        if busy.is_some() {
            return busy;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    None
}

/// Sends `signal` (`-STOP`, `-CONT`) to process `pid`.
fn signal(signal: &str, pid: &str) {
    let status = std::process::Command::new("kill")
        .args([signal, pid])
        .status()
        .unwrap();
    assert!(status.success(), "kill {signal} {pid}");
}

/// Produces chunks of keyed events through any of `urls` until `stop`;
/// returns the events acknowledged. A chunk that fails (its worker was
/// killed) may or may not have been appended; the next goes on after it,
/// so the input stays in time order.
fn produce_through_any(urls: &std::sync::Mutex<Vec<String>>, stop: &AtomicBool) -> Vec<i64> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(std::time::Duration::from_secs(10)))
        .http_status_as_error(false)
        .build()
        .into();
    let mut acknowledged = Vec::new();
    let mut next = 0;
    let mut attempt = 0usize;
    while !stop.load(Ordering::Relaxed) {
        let records: Vec<Value> = (next..next + CHUNK).map(event).collect();
        let url = {
            let urls = urls.lock().unwrap();
            urls[attempt % urls.len()].clone()
        };
        attempt += 1;
        let sent = agent
            .post(format!("{url}/v1/topics/events/records"))
            .send_json(json!({ "records": records }));
        if let Ok(response) = sent
            && response.status() == 200
        {
            acknowledged.extend(next..next + CHUNK);
        }
        next += CHUNK;
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    acknowledged
}
