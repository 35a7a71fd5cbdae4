//! Workers sharing a NATS JetStream cluster: how much a record costs when
//! one, two or three `weir serve` workers share a pipeline's tasks, and
//! how long a crashed worker's tasks take to produce output elsewhere.
//!
//! ```sh
//! cargo test -p weir-tests --no-run        # builds the guests
//! cargo bench -p weir-bench --bench workers
//! ```
//!
//! 1. For 1, 2 and 3 workers (each a server of its own, on its own Tokio
//!    runtime in this process, over one NATS server): a backlog of records
//!    in a topic of six partitions, then a filter pipeline over it; the
//!    clock and the CPU count run from the pipeline's creation until its
//!    last output is readable. Records per CPU-second counts this process
//!    (every worker) and the NATS server.
//! 2. Failover: with three workers running and a producer writing, one
//!    worker's runtime is dropped at once (no lease given up, its
//!    connections cut, as a crash would); measured is the time until each
//!    input partition it ran is processed further by another worker (as
//!    the pipeline's status on a survivor tells).

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use weir::server::{LogBackend, Server, ServerConfig};
use weir_bench::guests::guests_dir;
use weir_bench::report::{Row, print_table};
use weir_format::{Batch, BatchBuilder, Record};
use weir_jetstream::testing::{NatsServer, nats_server_binary};
use weir_jetstream::{JetStreamConfig, JetStreamLog};
use weir_log::{StreamLog, TopicConfig};

const PARTITIONS: u32 = 6;
/// A multiple of 60, so that every partition holds as many records and one
/// in ten of them is dropped.
const RECORDS: usize = 1_800_000;
const BATCH: usize = 1_000;
const TTL_MS: u64 = 2_000;
const FILTER_GUEST: &str = "well_behaved";

/// A worker: a server on a runtime of its own, so that dropping the
/// runtime is a crash.
struct Worker {
    url: String,
    runtime: tokio::runtime::Runtime,
}

fn start_worker(config: &JetStreamConfig, dir: &std::path::Path) -> Worker {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime");
    let mut settings = ServerConfig {
        data_dir: dir.to_path_buf(),
        listen: "127.0.0.1:0".parse().expect("an address"),
        log: LogBackend::Jetstream(config.clone()),
        ..ServerConfig::default()
    };
    settings.kafka.enabled = false;
    // Isolated compiles run this very program as the compiler: not a bench.
    settings.compile.isolated = false;
    let server = runtime
        .block_on(Server::start(settings))
        .expect("the worker starts");
    let url = format!("http://{}", server.addr);
    runtime.spawn(server.run(std::future::pending()));
    Worker { url, runtime }
}

/// Records as the pipeline bench makes them: one in ten has a value the
/// filter drops.
fn batches(records: usize, first: usize) -> Vec<Batch> {
    let (dropped, kept) = (vec![b'x'; 100], vec![b'v'; 100]);
    (first..first + records)
        .collect::<Vec<_>>()
        .chunks(BATCH)
        .map(|chunk| {
            let mut builder = BatchBuilder::with_capacity(chunk.len() * 128);
            for &i in chunk {
                let key = format!("{:08}", i % 100_000_000);
                builder.push(&Record {
                    key: Some(key.as_bytes()),
                    value: Some(if i % 10 == 0 { &dropped } else { &kept }),
                    headers: &[],
                    timestamp: 1_700_000_000_000 + i as i64,
                });
            }
            builder.finish().expect("a batch")
        })
        .collect()
}

async fn output_records(log: &dyn StreamLog) -> Vec<u64> {
    let topic = log.topic("output").await.expect("the output topic");
    topic.partitions.iter().map(|p| p.end_offset).collect()
}

fn http(method: &str, url: &str, body: Option<&[u8]>) -> Value {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let response = match (method, body) {
        ("PUT", Some(bytes)) => agent
            .put(url)
            .header("content-type", "application/json")
            .send(bytes),
        ("GET", _) => agent.get(url).call(),
        _ => unreachable!("a request this bench makes"),
    };
    let mut response = response.expect("the worker answers");
    let status = response.status();
    let answer: Value = response.body_mut().read_json().expect("a JSON answer");
    assert!(status.is_success(), "{method} {url}: {status} {answer}");
    answer
}

/// CPU time of this process and of process `pid`, in seconds.
fn cpu_seconds(pid: u32) -> (f64, f64) {
    // SAFETY: getrusage only writes into the struct it is given.
    let own = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut usage);
        let seconds = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
        seconds(usage.ru_utime) + seconds(usage.ru_stime)
    };
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // utime and stime are fields 14 and 15 of the line (11 and 12 after the name).
    let nats = (ticks(11) + ticks(12)) / 100.0;
    (own, nats)
}

/// A fresh NATS server, `count` workers on it, and topics `input` and
/// `output` of [`PARTITIONS`] partitions.
struct Setup {
    nats: NatsServer,
    _dir: tempfile::TempDir,
    /// `None` once crashed.
    workers: Vec<Option<Worker>>,
    /// A runtime for the bench's own log calls.
    client: tokio::runtime::Runtime,
    log: Arc<JetStreamLog>,
}

fn setup(binary: &std::path::Path, count: usize) -> Setup {
    let nats = NatsServer::start(binary);
    let dir = tempfile::tempdir().expect("a temporary directory");
    let config = JetStreamConfig {
        lease_ttl_ms: TTL_MS,
        ..JetStreamConfig::for_servers(vec![nats.url().to_string()])
    };
    let workers = (0..count)
        .map(|i| Some(start_worker(&config, &dir.path().join(format!("w{i}")))))
        .collect();
    let client = tokio::runtime::Runtime::new().expect("a runtime");
    let log = Arc::new(
        client
            .block_on(JetStreamLog::connect(&config))
            .expect("connect"),
    );
    let topic = TopicConfig {
        partitions: PARTITIONS,
        ..TopicConfig::default()
    };
    client.block_on(async {
        log.create_topic("input", topic.clone())
            .await
            .expect("input");
        log.create_topic("output", topic).await.expect("output");
    });
    Setup {
        nats,
        _dir: dir,
        workers,
        client,
        log,
    }
}

/// One run with `count` workers over a fresh NATS server: records/s, and
/// records per CPU-second of the workers and of workers and NATS.
fn backlog_run(binary: &std::path::Path, count: usize) -> (f64, f64, f64) {
    let Setup {
        nats,
        _dir,
        workers,
        client,
        log,
    } = setup(binary, count);
    let workers: Vec<Worker> = workers.into_iter().flatten().collect();
    client.block_on(async {
        let per_partition = RECORDS / PARTITIONS as usize;
        for partition in 0..PARTITIONS {
            let first = partition as usize * per_partition;
            for outcome in log
                .append_all("input", partition, batches(per_partition, first))
                .await
            {
                outcome.expect("append");
            }
        }
    });
    let wasm = std::fs::read(guests_dir().join(format!("{FILTER_GUEST}.wasm")))
        .expect("the guests are built (cargo test -p weir-tests --no-run)");
    http(
        "PUT",
        &format!("{}/v1/modules/filter", workers[0].url),
        Some(&wasm),
    );
    let spec = json!({ "inputs": ["input"],
        "stages": [{ "module": "filter", "outputs": { "main": "output" } }] });
    let expected = (RECORDS - RECORDS.div_ceil(10)) as u64;
    let (cpu_before, nats_before) = cpu_seconds(nats.pid().expect("running"));
    let started = Instant::now();
    http(
        "PUT",
        &format!("{}/v1/pipelines/filter", workers[0].url),
        Some(spec.to_string().as_bytes()),
    );
    loop {
        let done: u64 = client.block_on(output_records(&*log)).iter().sum();
        if done >= expected {
            assert_eq!(done, expected, "exactly the kept records");
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let elapsed = started.elapsed().as_secs_f64();
    let (cpu_after, nats_after) = cpu_seconds(nats.pid().expect("running"));
    let (weir_cpu, nats_cpu) = (cpu_after - cpu_before, nats_after - nats_before);
    let placement = http("GET", &format!("{}/v1/cluster", workers[0].url), None);
    let spread: Vec<usize> = placement["workers"]
        .as_array()
        .map(|w| {
            w.iter()
                .map(|w| w["tasks"].as_array().map_or(0, Vec::len))
                .collect()
        })
        .unwrap_or_default();
    println!(
        "  {count} worker(s), tasks per worker {spread:?}: {elapsed:.2} s, Weir CPU \
         {weir_cpu:.2} s, NATS CPU {nats_cpu:.2} s"
    );
    drop(workers);
    (
        RECORDS as f64 / elapsed,
        RECORDS as f64 / weir_cpu,
        RECORDS as f64 / (weir_cpu + nats_cpu),
    )
}

/// Three workers and a producer; one worker crashes; returns the time
/// until every partition it ran is processed further elsewhere.
fn failover(binary: &std::path::Path) -> Duration {
    let Setup {
        nats: _nats,
        _dir,
        mut workers,
        client,
        log,
    } = setup(binary, 3);
    let first = workers[0].as_ref().expect("started").url.clone();
    let wasm = std::fs::read(guests_dir().join(format!("{FILTER_GUEST}.wasm")))
        .expect("the guests are built (cargo test -p weir-tests --no-run)");
    http("PUT", &format!("{first}/v1/modules/filter"), Some(&wasm));
    let spec = json!({ "inputs": ["input"],
        "stages": [{ "module": "filter", "outputs": { "main": "output" } }] });
    http(
        "PUT",
        &format!("{first}/v1/pipelines/filter"),
        Some(spec.to_string().as_bytes()),
    );
    let producing = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let producer = {
        let producing = producing.clone();
        client.spawn(async move {
            let mut next = 0;
            while producing.load(std::sync::atomic::Ordering::Relaxed) {
                for partition in 0..PARTITIONS {
                    let _ = log
                        .append("input", partition, batches(10, next).remove(0))
                        .await;
                    next += 10;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
    };
    // Wait until the tasks are spread, then crash the worker the second
    // one names first (not the one answering).
    let survivor = workers[1].as_ref().expect("started").url.clone();
    let (victim, partitions) = loop {
        let placement = http("GET", &format!("{survivor}/v1/cluster"), None);
        let workers_seen = placement["workers"].as_array().cloned().unwrap_or_default();
        let busy: Vec<&Value> = workers_seen
            .iter()
            .filter(|w| w["tasks"].as_array().is_some_and(|t| !t.is_empty()))
            .collect();
        if busy.len() == 3 {
            let victim = busy
                .iter()
                .find(|w| w["this"] == false)
                .expect("another worker");
            let partitions: Vec<u32> = victim["tasks"]
                .as_array()
                .expect("tasks")
                .iter()
                .filter_map(|t| t.as_str()?.rsplit('/').next()?.parse().ok())
                .collect();
            break (
                victim["worker"].as_str().expect("an id").to_string(),
                partitions,
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let index = (0..3)
        .find(|&i| {
            let url = &workers[i].as_ref().expect("started").url;
            http("GET", &format!("{url}/v1/cluster"), None)["workers"]
                .as_array()
                .is_some_and(|w| {
                    w.iter()
                        .any(|w| w["this"] == true && w["worker"] == victim.as_str())
                })
        })
        .expect("the victim is one of the workers");
    std::thread::sleep(Duration::from_secs(1));
    // Where the crashed worker's tasks were in their input, as the
    // survivor last heard (a heartbeat interval old at most).
    let position = |status: &Value, partition: u32| {
        status["tasks"].as_array().and_then(|tasks| {
            let task = tasks.iter().find(|t| t["partition"] == partition)?;
            Some((
                task["position"].as_u64()?,
                task["worker"].as_str().map(str::to_string),
            ))
        })
    };
    let pipeline = format!("{survivor}/v1/pipelines/filter");
    let status = http("GET", &pipeline, None);
    let before: Vec<u64> = partitions
        .iter()
        .map(|&p| position(&status, p).map_or(0, |(at, _)| at))
        .collect();
    let crashed = Instant::now();
    workers[index]
        .take()
        .expect("started")
        .runtime
        .shutdown_background();
    loop {
        // Each of its partitions runs on another worker and went on.
        let status = http("GET", &pipeline, None);
        let moved = partitions.iter().zip(&before).all(|(&p, &at)| {
            position(&status, p)
                .is_some_and(|(now, worker)| now > at && worker.is_some_and(|w| w != victim))
        });
        if moved {
            break;
        }
        assert!(crashed.elapsed() < Duration::from_secs(60), "no failover");
        std::thread::sleep(Duration::from_millis(20));
    }
    let took = crashed.elapsed();
    producing.store(false, std::sync::atomic::Ordering::Relaxed);
    let _ = client.block_on(producer);
    took
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let binary = nats_server_binary(std::path::Path::new(env!("CARGO_TARGET_TMPDIR")));
    println!(
        "{RECORDS} records in {PARTITIONS} partitions, a filter pipeline, one NATS server \
         (default sync), lease TTL {TTL_MS} ms"
    );
    if std::env::args().any(|a| a == "--failover-only") {
        let took = failover(&binary);
        println!("  failover after {:.2} s", took.as_secs_f64());
        return;
    }
    let mut rows = Vec::new();
    let one = backlog_run(&binary, 1);
    for count in 1..=3 {
        let run = if count == 1 {
            one
        } else {
            backlog_run(&binary, count)
        };
        rows.push(Row {
            measurement: format!("{count} worker(s): records/s over a stored backlog"),
            weir: format!("{:.0} rec/s", run.0),
            baseline: format!("1 worker {:.0} rec/s", one.0),
            ratio: run.0 / one.0,
            goal: "none set".into(),
        });
        rows.push(Row {
            measurement: format!("{count} worker(s): records per CPU-second (Weir / Weir+NATS)"),
            weir: format!("{:.0} / {:.0}", run.1, run.2),
            baseline: format!("1 worker {:.0} / {:.0}", one.1, one.2),
            ratio: run.1 / one.1,
            goal: "none set".into(),
        });
    }
    let took = failover(&binary);
    println!(
        "  a crashed worker's partitions were processed elsewhere after {:.2} s",
        took.as_secs_f64()
    );
    rows.push(Row {
        measurement: format!(
            "crash of 1 of 3 workers → its partitions processed elsewhere (TTL {TTL_MS} ms)"
        ),
        weir: format!("{:.2} s", took.as_secs_f64()),
        baseline: "—".into(),
        ratio: 1.0,
        goal: "within seconds".into(),
    });
    print_table(&rows);
}
