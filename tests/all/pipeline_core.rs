//! The pipeline core in process: `weir_pipeline::Pipelines` (lifecycle,
//! tasks, fused chains, commit logs) over the in-memory log
//! `weir_log::MemoryLog`, with no server in between. Where `pipelines.rs`
//! and `exactly_once.rs` drive a real `weir serve`, these tests reach
//! inside: exact counters per task, crashes at chosen points of a round,
//! and log failures injected by [`FaultyLog`].
//!
//! A [`Node`] is one incarnation of a server: its own tokio runtime and a
//! `Pipelines` opened over the shared log, module store and pipelines
//! directory of an [`Env`]. [`Node::crash`] shuts the runtime down under
//! the tasks, so each is dropped at whatever await it was in (as with
//! `kill -9`, nothing gets to finish its round); a restart opens a new
//! node over the same log and directory.
//!
//! Covered: delivery and counters over several partitions; exactly-once
//! across crashes at arbitrary points, and at the two points that matter
//! (before the commit, and between the commit and the end of publishing);
//! failed commits and failed publishes (to one of two output topics);
//! pause and resume, across a restart too; delete and its commit logs;
//! an output topic that disappears; input topics that gain partitions; a
//! halted pipeline fixed by a new module version.
//!
//! Every wait polls with a generous deadline and asserts on what it
//! observes, never on how long anything took.
//!
//! One file on purpose, though long: the scenarios share the `Env` and
//! `Node` fixture and read best as one list.

use std::collections::{BTreeSet, HashMap};
use std::future::Future;
use std::path::Path;
use std::sync::{Arc, LazyLock};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::runtime::Runtime;
use weir_format::{Batch, BatchBuilder, Header, Record};
use weir_host::{Limits, OperatorEngine};
use weir_log::{
    Catalog, DirCatalog, LogError, MemoryLog, StreamLog, TopicConfig, change_unless_used,
};
use weir_pipeline::lifecycle::TaskLimits;
use weir_pipeline::modules::ModuleStore;
use weir_pipeline::partitioner::partition_for_key;
use weir_pipeline::scheduler::CpuScheduler;
use weir_pipeline::spec::PipelineSettings;
use weir_pipeline::stats::TaskState;
use weir_pipeline::task::commit_log_name;
use weir_pipeline::{PipelineError, PipelineSpec, PipelineStatus, Pipelines};

use crate::support::guest;
use faulty_log::FaultyLog;

mod faulty_log;

/// How long any wait may take before the test gives up.
const DEADLINE: Duration = Duration::from_secs(30);
/// How often waits look again.
const POLL: Duration = Duration::from_millis(20);
/// How long a test watches for something that must *not* happen.
const QUIET: Duration = Duration::from_millis(300);

/// The pipeline's state as the API reports it (`running`, `paused`,
/// `pausing`, `failed`), whatever type the status holds it in.
fn state(status: &PipelineStatus) -> String {
    serde_json::to_value(status).unwrap()["state"]
        .as_str()
        .unwrap()
        .to_string()
}

/// Waits until `probe` finds what it looks for; panics with its last
/// description of what it saw otherwise.
fn wait_until<T>(what: &str, probe: impl FnMut() -> Result<T, String>) -> T {
    poll_until(POLL, what, probe)
}

/// [`wait_until`], looking every `every`.
fn poll_until<T>(every: Duration, what: &str, mut probe: impl FnMut() -> Result<T, String>) -> T {
    let deadline = Instant::now() + DEADLINE;
    loop {
        match probe() {
            Ok(found) => return found,
            Err(seen) if Instant::now() > deadline => {
                panic!("gave up waiting for {what}; last seen: {seen}")
            }
            Err(_) => std::thread::sleep(every),
        }
    }
}

/// Every task is processing and has published everything its input holds
/// (a task's position moves only once a round's outputs are published).
fn caught_up(status: &PipelineStatus) -> bool {
    state(status) == "running"
        && status.lag == 0
        && status.tasks.iter().all(|t| t.state == TaskState::Running)
}

/// The task of input partition `partition` (of a one-input pipeline):
/// its position and lag.
fn position_and_lag(status: &PipelineStatus, partition: u32) -> (u64, u64) {
    let task = status.tasks.iter().find(|t| t.partition == partition);
    let task = task.expect("a task per input partition");
    (task.position, task.lag)
}

/// The tasks' states, for messages.
fn task_states(status: &PipelineStatus) -> Vec<(u32, TaskState)> {
    status
        .tasks
        .iter()
        .map(|t| (t.partition, t.state.clone()))
        .collect()
}

/// One engine for the whole test binary, caching compiled guests on disk
/// so that each test does not compile them again.
static ENGINE: LazyLock<OperatorEngine> = LazyLock::new(|| {
    let cache = Path::new(env!("CARGO_TARGET_TMPDIR")).join("pipeline-core-modules");
    OperatorEngine::new(Limits::default(), Some(cache)).expect("engine")
});

/// What outlives a node: the log, the catalog (a directory) and the
/// module store, plus a runtime for the test's own log calls.
struct Env {
    /// The catalog's directory, removed when the test ends.
    _dir: tempfile::TempDir,
    log: Arc<dyn StreamLog>,
    catalog: Arc<dyn Catalog>,
    modules: Arc<ModuleStore>,
    settings: PipelineSettings,
    client: Runtime,
}

impl Env {
    fn new(log: Arc<dyn StreamLog>) -> Env {
        let dir = tempfile::tempdir().expect("temp dir");
        let catalog: Arc<dyn Catalog> = Arc::new(DirCatalog::new(dir.path()));
        let modules = ModuleStore::open(catalog.clone(), ENGINE.clone());
        Env {
            modules: Arc::new(modules),
            catalog,
            _dir: dir,
            log,
            settings: PipelineSettings::default(),
            client: tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime"),
        }
    }

    fn memory() -> Env {
        Env::new(Arc::new(MemoryLog::new()))
    }

    /// Stores the guest `guest_name` (as built, with `_`) as the next
    /// version of module `name`.
    fn module(&self, name: &str, guest_name: &str) {
        let wasm = std::fs::read(guest(guest_name)).expect("guest built");
        self.run(self.modules.put(name, wasm.into()))
            .expect("module stored");
    }

    fn run<F: Future>(&self, work: F) -> F::Output {
        self.client.block_on(work)
    }

    fn create_topic(&self, name: &str, partitions: u32) {
        let config = TopicConfig {
            partitions,
            ..TopicConfig::default()
        };
        self.run(self.log.create_topic(name, config))
            .expect("create topic");
    }

    /// Appends `records` (key, value, timestamp) as one batch.
    fn produce(&self, topic: &str, partition: u32, records: &[(Option<&str>, &str, i64)]) {
        let mut builder = BatchBuilder::new();
        for (key, value, timestamp) in records {
            builder.push(&Record {
                key: key.map(str::as_bytes),
                value: Some(value.as_bytes()),
                headers: &[],
                timestamp: *timestamp,
            });
        }
        let batch = builder.finish().expect("at least one record");
        self.run(self.log.append(topic, partition, batch))
            .expect("produce");
    }

    /// Appends keyless `values` as one batch.
    fn produce_values(&self, topic: &str, partition: u32, values: &[String]) {
        let records: Vec<_> = values.iter().map(|v| (None, v.as_str(), 0)).collect();
        self.produce(topic, partition, &records);
    }

    /// Every batch of a partition, in order.
    fn batches(&self, topic: &str, partition: u32) -> Vec<Batch> {
        let mut all: Vec<Batch> = Vec::new();
        let mut offset = 0;
        loop {
            let read = self.log.read(topic, partition, offset, 1 << 20);
            let batches = self.run(read).expect("read");
            let Some(last) = batches.last() else {
                return all;
            };
            offset = last.next_offset();
            all.extend(batches);
        }
    }

    /// Every record of a partition: (key, value, headers).
    fn records(&self, topic: &str, partition: u32) -> Vec<Out> {
        let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
        self.batches(topic, partition)
            .iter()
            .flat_map(|batch| {
                batch
                    .records()
                    .map(|r| Out {
                        key: r.key.map(text),
                        value: r.value.map(text).unwrap_or_default(),
                        headers: r
                            .headers()
                            .map(|h: Header<'_>| {
                                (h.name.to_string(), h.value.map(text).unwrap_or_default())
                            })
                            .collect(),
                    })
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    /// The values of every record of a partition, in order.
    fn values(&self, topic: &str, partition: u32) -> Vec<String> {
        let records = self.records(topic, partition);
        records.into_iter().map(|r| r.value).collect()
    }

    /// Starts a server incarnation over this environment.
    fn open(&self) -> Node {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        let pipelines = rt
            .block_on(Pipelines::open(
                self.log.clone(),
                self.catalog.clone(),
                self.modules.clone(),
                self.settings,
                CpuScheduler::new(0),
                None,
            ))
            .expect("open pipelines");
        Node { pipelines, rt }
    }
}

/// An output record, decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Out {
    key: Option<String>,
    value: String,
    headers: Vec<(String, String)>,
}

impl Out {
    fn header(&self, name: &str) -> Option<&str> {
        let found = self.headers.iter().find(|(n, _)| n == name);
        found.map(|(_, v)| v.as_str())
    }
}

/// One incarnation of a server's pipelines, on its own runtime.
struct Node {
    // Dropped first: its tasks then see their owner gone and stop.
    pipelines: Pipelines,
    rt: Runtime,
}

impl Node {
    fn run<F: Future>(&self, work: F) -> F::Output {
        self.rt.block_on(work)
    }

    fn apply(&self, name: &str, spec: Value) -> PipelineStatus {
        let spec: PipelineSpec = serde_json::from_value(spec).expect("spec");
        let applied = self.run(self.pipelines.apply(name, spec, TaskLimits::default()));
        applied.expect("apply").0
    }

    fn status(&self, name: &str) -> PipelineStatus {
        self.run(self.pipelines.status(name)).expect("status")
    }

    fn pause(&self, name: &str) -> PipelineStatus {
        self.run(self.pipelines.pause(name)).expect("pause")
    }

    fn resume(&self, name: &str) -> PipelineStatus {
        self.run(self.pipelines.resume(name)).expect("resume")
    }

    /// Waits until pipeline `name`'s status satisfies `done`.
    fn wait(
        &self,
        name: &str,
        what: &str,
        done: impl Fn(&PipelineStatus) -> bool,
    ) -> PipelineStatus {
        wait_until(what, || {
            let status = self.status(name);
            if done(&status) {
                Ok(status)
            } else {
                Err(format!(
                    "state {} ({:?}), lag {}, tasks {:?}",
                    state(&status),
                    status.reason,
                    status.lag,
                    task_states(&status)
                ))
            }
        })
    }

    fn wait_caught_up(&self, name: &str) -> PipelineStatus {
        self.wait(name, &format!("{name} to catch up"), caught_up)
    }

    fn wait_failed(&self, name: &str) -> PipelineStatus {
        self.wait(name, &format!("{name} to fail"), |s| state(s) == "failed")
    }

    /// A crash: every task is dropped where it is, nothing is flushed or
    /// finished. Returns once the runtime's threads are gone, so nothing of
    /// this incarnation touches the log after (a guest call already running
    /// ends on its own, unheard, and touches nothing).
    fn crash(self) {
        let Node { pipelines, rt } = self;
        rt.shutdown_timeout(DEADLINE);
        drop(pipelines);
    }

    /// An orderly stop: each task finishes its round.
    fn shutdown(self) {
        self.run(self.pipelines.shutdown());
    }
}

/// A spec of one stage `module` from `inputs` to `output` (its `main`).
fn one_stage(inputs: &[&str], module: &str, output: &str) -> Value {
    json!({
        "inputs": inputs,
        "stages": [{ "module": module, "outputs": { "main": output } }],
    })
}

/// An environment over a [`FaultyLog`], and the log to steer.
fn faulty_env() -> (Env, Arc<FaultyLog>) {
    let log = Arc::new(FaultyLog::new());
    (Env::new(log.clone()), log)
}

// ---------------------------------------------------------------------------
// The tests.
// ---------------------------------------------------------------------------

/// Values `first..first + n` of input partition `p`; every third starts
/// with `x`, which the `well_behaved` filter drops.
fn filter_input(p: u32, first: u32, n: u32) -> Vec<String> {
    (first..first + n)
        .map(|i| match i % 3 {
            0 => format!("x-{p}-{i}"),
            _ => format!("v-{p}-{i}"),
        })
        .collect()
}

fn kept(values: &[String]) -> Vec<String> {
    let kept = values.iter().filter(|v| !v.starts_with('x'));
    kept.cloned().collect()
}

#[test]
fn filter_delivers_exactly_the_kept_records_in_order_per_partition() {
    let env = Env::memory();
    env.module("keep", "well_behaved");
    env.create_topic("in", 3);
    env.create_topic("out", 3);
    let mut input: Vec<Vec<String>> = vec![Vec::new(); 3];
    // Half before the pipeline exists (it starts at `earliest`), half after.
    let mut produce = |first| {
        for p in 0..3 {
            for chunk in [first, first + 10] {
                let values = filter_input(p, chunk, 10);
                env.produce_values("in", p, &values);
                input[p as usize].extend(values);
            }
        }
    };
    produce(0);
    let node = env.open();
    node.apply("p", one_stage(&["in"], "keep", "out"));
    produce(20);

    let status = node.wait_caught_up("p");
    for p in 0..3u32 {
        // Keyless records stay in the partition number they came from.
        assert_eq!(
            env.values("out", p),
            kept(&input[p as usize]),
            "out/{p} holds exactly the kept records of in/{p}, in order"
        );
    }
    let total_kept: usize = input.iter().map(|v| kept(v).len()).sum();
    assert_eq!(status.records_in, 120);
    assert_eq!(status.records_out, total_kept as u64);
    assert_eq!((status.errors, status.rejected, status.unrouted), (0, 0, 0));
    assert_eq!(status.lag, 0);
    assert_eq!(status.stages.len(), 1);
    assert_eq!(status.stages[0].counts.records_in, 120);
    assert_eq!(status.stages[0].counts.records_out, total_kept as u64);
    let positions: Vec<(u64, u64)> = (0..3).map(|p| position_and_lag(&status, p)).collect();
    assert_eq!(status.tasks.len(), 3);
    assert_eq!(
        positions,
        vec![(40, 0); 3],
        "one task per partition, each at the end"
    );

    // Each task publishes as its own idempotent producer, with sequences
    // that follow on from batch to batch: what makes republishing safe.
    let mut producers = BTreeSet::new();
    for p in 0..3u32 {
        let mut next_sequence = 0;
        for batch in env.batches("out", p) {
            let stamp = batch.producer().expect("outputs carry a producer stamp");
            producers.insert(stamp.id);
            assert_eq!(stamp.base_sequence, next_sequence, "out/{p}");
            next_sequence += batch.record_count() as i32;
        }
    }
    assert_eq!(producers.len(), 3, "one producer per task: {producers:?}");
    node.shutdown();
}

/// Events for `dedupe`: five keys in turn, 10 ms apart, so with a window
/// of 120 ms a key is kept, dropped twice, kept again...
fn dedupe_event(i: i64) -> (String, String, i64) {
    (format!("k{}", i % 5), format!("e{i}"), 1_000 + i * 10)
}

const DEDUPE_WINDOW_MS: i64 = 120;

/// What `dedupe` keeps of events `0..n`, from its documented semantics
/// (input in time order): (key, value).
fn dedupe_expected(n: i64) -> Vec<(String, String)> {
    let mut kept_at: HashMap<String, i64> = HashMap::new();
    let mut kept = Vec::new();
    for (key, value, t) in (0..n).map(dedupe_event) {
        if kept_at
            .get(&key)
            .is_some_and(|t0| t < t0 + DEDUPE_WINDOW_MS)
        {
            continue;
        }
        kept_at.insert(key.clone(), t);
        kept.push((key, value));
    }
    kept
}

fn produce_dedupe_events(env: &Env, from: i64, to: i64) {
    let events: Vec<_> = (from..to).map(dedupe_event).collect();
    let records: Vec<_> = events
        .iter()
        .map(|(k, v, t)| (Some(k.as_str()), v.as_str(), *t))
        .collect();
    env.produce("events", 0, &records);
}

/// The dedupe pipeline's spec: `events` to `kept` (two partitions, by key).
fn dedupe_spec() -> Value {
    json!({
        "inputs": ["events"],
        "stages": [{ "module": "dedupe", "config": { "window-ms": DEDUPE_WINDOW_MS },
                     "outputs": { "main": "kept" } }],
    })
}

fn dedupe_env(env: &Env) {
    env.module("dedupe", "dedupe");
    env.create_topic("events", 1);
    env.create_topic("kept", 2);
}

/// What `kept/partition` must hold once events `0..n` are processed.
fn dedupe_expected_in(n: i64, partition: u32) -> Vec<(Option<String>, String)> {
    dedupe_expected(n)
        .into_iter()
        .filter(|(k, _)| partition_for_key(k.as_bytes(), 2) == partition)
        .map(|(k, v)| (Some(k), v))
        .collect()
}

fn keyed_values(env: &Env, topic: &str, partition: u32) -> Vec<(Option<String>, String)> {
    let records = env.records(topic, partition);
    records.into_iter().map(|r| (r.key, r.value)).collect()
}

fn assert_dedupe_output(env: &Env, n: i64, context: &str) {
    for p in 0..2 {
        assert_eq!(
            keyed_values(env, "kept", p),
            dedupe_expected_in(n, p),
            "kept/{p} {context}"
        );
    }
}

#[test]
fn crashes_at_arbitrary_points_keep_outputs_and_state_exactly_once() {
    let mut env = Env::memory();
    // Rounds of one input batch each, and a snapshot (with truncation of
    // the commit log) every few rounds, so crashes land everywhere.
    env.settings = PipelineSettings {
        snapshot_after_bytes: 1024,
        max_read_bytes: 64,
        ..PipelineSettings::default()
    };
    dedupe_env(&env);
    let node = env.open();
    node.apply("d", dedupe_spec());
    let mut node = Some(node);
    let mut produced = 0;
    for incarnation in 0..8 {
        let current = node.take().unwrap_or_else(|| env.open());
        let before = produced as u64;
        for _ in 0..40 {
            produce_dedupe_events(&env, produced, produced + 5);
            produced += 5;
        }
        // Crash at once (in recovery or the first round), or once a
        // quarter, half or three quarters of the new input is published,
        // while the rest is being processed.
        let published = before + (incarnation % 4) * 50;
        if published > before {
            // Looking without pause: a round takes about a millisecond.
            poll_until(Duration::ZERO, "rounds to be published", || {
                let (position, _) = position_and_lag(&current.status("d"), 0);
                if position >= published {
                    Ok(())
                } else {
                    Err(format!("position {position}"))
                }
            });
        }
        current.crash();
    }
    let last = env.open();
    last.wait_caught_up("d");
    assert_dedupe_output(&env, produced, "after 8 crashes");

    // Snapshots let the commit log forget the commits before them.
    let commits = env.run(env.log.commits(&commit_log_name("d", "events"), 0));
    let first = commits
        .expect("commit log")
        .first()
        .expect("commits")
        .offset;
    assert!(first > 0, "the commit log was truncated");
    last.shutdown();
}

#[test]
fn crash_before_the_commit_or_between_commit_and_publish_loses_and_repeats_nothing() {
    let (env, log) = faulty_env();
    dedupe_env(&env);
    let node = env.open();
    node.apply("d", dedupe_spec());
    produce_dedupe_events(&env, 0, 20);
    node.wait_caught_up("d");
    assert_dedupe_output(&env, 20, "before any crash");

    // 1. The commit never completes: the round did not happen.
    log.stall_commits();
    produce_dedupe_events(&env, 20, 40);
    log.wait_stalled(0);
    node.crash();
    assert_dedupe_output(&env, 20, "after a crash before the commit");
    log.heal();
    let node = env.open();
    node.wait_caught_up("d");
    assert_dedupe_output(&env, 40, "after recovering from a crash before the commit");
    node.crash();

    // 2. Committed, and published to kept/0 but not yet to kept/1.
    let node = env.open();
    node.wait_caught_up("d");
    let stalled = log.stalled();
    log.stall_appends("kept", 1);
    produce_dedupe_events(&env, 40, 60);
    log.wait_stalled(stalled);
    node.crash();
    let new_in = |p| dedupe_expected_in(60, p).len() - dedupe_expected_in(40, p).len();
    assert!(new_in(0) > 0 && new_in(1) > 0, "the round writes to both");
    assert_eq!(
        keyed_values(&env, "kept", 0),
        dedupe_expected_in(60, 0),
        "kept/0 got the committed round"
    );
    assert_eq!(
        keyed_values(&env, "kept", 1),
        dedupe_expected_in(40, 1),
        "kept/1 did not"
    );
    log.heal();
    let node = env.open();
    let status = node.wait_caught_up("d");
    assert_dedupe_output(&env, 60, "after recovering from a crash while publishing");
    assert_eq!(
        status.records_out,
        new_in(1) as u64,
        "republishing wrote only what kept/1 lacked; kept/0's copy was recognised"
    );
    node.crash();

    // 3. A crash with everything published: the restart republishes the
    //    last commit's outputs, and the log recognises every one.
    let node = env.open();
    let status = node.wait_caught_up("d");
    assert_eq!(status.records_out, 0, "nothing written twice");
    produce_dedupe_events(&env, 60, 80);
    node.wait_caught_up("d");
    assert_dedupe_output(&env, 80, "after a crash at rest");
    node.shutdown();
}

#[test]
fn a_failed_commit_fails_only_its_task_and_resume_redoes_the_round() {
    let (env, log) = faulty_env();
    env.module("keep", "well_behaved");
    env.create_topic("in", 2);
    env.create_topic("out", 2);
    let node = env.open();
    node.apply("p", one_stage(&["in"], "keep", "out"));
    let mut input: Vec<Vec<String>> = vec![Vec::new(); 2];
    for p in 0..2 {
        input[p as usize] = filter_input(p, 0, 9);
        env.produce_values("in", p, &input[p as usize]);
    }
    node.wait_caught_up("p");

    log.fail_commits(1);
    for p in 0..2 {
        let values = filter_input(p, 9, 9);
        env.produce_values("in", p, &values);
        input[p as usize].extend(values);
    }
    let status = node.wait_failed("p");
    let reason = status.reason.clone().expect("a failed pipeline says why");
    assert!(
        reason.contains("committing") && reason.contains("injected: commit to p.in failed"),
        "{reason}"
    );
    let failed: Vec<u32> = status
        .tasks
        .iter()
        .filter(|t| matches!(t.state, TaskState::Failed(_)))
        .map(|t| t.partition)
        .collect();
    assert_eq!(failed.len(), 1, "{:?}", task_states(&status));
    let (failed, healthy) = (failed[0], 1 - failed[0]);

    // The other task goes on; the failed one published nothing of the
    // round, is not retried on its own, and its position stays.
    node.wait("p", "the healthy task to catch up", |s| {
        position_and_lag(s, healthy).1 == 0
    });
    assert_eq!(env.values("out", healthy), kept(&input[healthy as usize]));
    assert_eq!(
        env.values("out", failed),
        kept(&input[failed as usize][..9])
    );
    let status = node.status("p");
    assert_eq!(state(&status), "failed");
    assert_eq!(position_and_lag(&status, failed), (9, 9));
    assert_eq!(log.injected(), 1);

    let resumed = node.resume("p");
    assert_ne!(state(&resumed), "failed", "resume restarts failed tasks");
    node.wait_caught_up("p");
    for p in 0..2 {
        assert_eq!(env.values("out", p), kept(&input[p as usize]), "out/{p}");
    }
    node.shutdown();
}

#[test]
fn with_restarts_on_a_task_the_log_failed_as_unavailable_starts_again_by_itself() {
    let (mut env, log) = faulty_env();
    env.settings = PipelineSettings {
        restart_after_unavailable_ms: Some(20),
        ..PipelineSettings::default()
    };
    env.module("keep", "well_behaved");
    env.create_topic("in", 1);
    env.create_topic("out", 1);
    let node = env.open();
    node.apply("p", one_stage(&["in"], "keep", "out"));
    let mut input = filter_input(0, 0, 9);
    env.produce_values("in", 0, &input);
    node.wait_caught_up("p");

    // Three commits refused in a row, and no resume: the task starts
    // again after each (20, 40, 80 ms) and redoes the round once.
    log.fail_commits(3);
    let more = filter_input(0, 9, 9);
    env.produce_values("in", 0, &more);
    input.extend(more);
    node.wait("p", "the refused commits to pass", |s| {
        log.injected() == 3 && caught_up(s)
    });
    assert_eq!(env.values("out", 0), kept(&input));
    node.shutdown();
}

/// Input for the `filter` example: JSON objects kept when `keep` is true,
/// and now and then a line that is not JSON, which it rejects.
fn filter_example_input(first: u32, n: u32) -> Vec<String> {
    (first..first + n)
        .map(|i| match i % 4 {
            0 => format!("not json {i}"),
            1 => json!({ "i": i, "keep": false }).to_string(),
            _ => json!({ "i": i, "keep": true }).to_string(),
        })
        .collect()
}

fn filter_example_kept(input: &[String]) -> Vec<String> {
    let kept = input.iter().filter(|v| v.contains("\"keep\":true"));
    kept.cloned().collect()
}

fn filter_example_rejected(input: &[String]) -> Vec<String> {
    let rejected = input.iter().filter(|v| v.starts_with("not json"));
    rejected.cloned().collect()
}

#[test]
fn a_failed_publish_to_one_of_two_outputs_is_republished_exactly_once() {
    let (env, log) = faulty_env();
    env.module("filter", "filter");
    env.create_topic("in", 1);
    // Published in name order: `dead` before `kept`.
    env.create_topic("dead", 1);
    env.create_topic("kept", 1);
    let node = env.open();
    let spec = json!({
        "inputs": ["in"],
        "dead_letter": "dead",
        "stages": [{ "module": "filter", "config": { "field": "keep", "equals": "true" },
                     "outputs": { "main": "kept" } }],
    });
    node.apply("p", spec);
    let mut input = filter_example_input(0, 8);
    env.produce_values("in", 0, &input);
    node.wait_caught_up("p");

    // The round is committed and its dead letters published, then the
    // append to `kept` fails; and fails again when resume republishes.
    log.fail_appends("kept", 0, 2);
    let round = filter_example_input(8, 8);
    env.produce_values("in", 0, &round);
    input.extend(round);
    let status = node.wait_failed("p");
    let reason = status.reason.clone().expect("a reason");
    assert!(
        reason.contains("publishing to kept/0") && reason.contains("injected"),
        "{reason}"
    );
    assert_eq!(env.values("dead", 0), filter_example_rejected(&input));
    assert_eq!(env.values("kept", 0), filter_example_kept(&input[..8]));
    assert_eq!(
        position_and_lag(&status, 0),
        (8, 8),
        "a round counts as done only once published"
    );

    node.resume("p");
    wait_until("the republish to fail too", || {
        let status = node.status("p");
        match (log.injected(), state(&status)) {
            (2, s) if s == "failed" => Ok(status),
            seen => Err(format!("{seen:?}")),
        }
    });

    // Restarted over the healed log, the task republishes the last
    // commit: `kept` gets the round, `dead` recognises its copy.
    node.crash();
    log.heal();
    let node = env.open();
    node.wait_caught_up("p");
    let more = filter_example_input(16, 8);
    env.produce_values("in", 0, &more);
    input.extend(more);
    let status = node.wait_caught_up("p");
    assert_eq!(env.values("kept", 0), filter_example_kept(&input));
    let dead = env.records("dead", 0);
    let dead_values: Vec<String> = dead.iter().map(|r| r.value.clone()).collect();
    assert_eq!(dead_values, filter_example_rejected(&input));
    for record in &dead {
        let offset: u32 = record.value["not json ".len()..].parse().unwrap();
        assert_eq!(
            record.header("weir.source"),
            Some(&*format!("in/0@{offset}"))
        );
        assert_eq!(record.header("weir.stage"), Some("filter@1"));
    }
    assert_eq!(status.dead_lettered, 2, "this run's own dead letters");
    node.shutdown();
}

#[test]
fn pause_holds_consumption_across_a_restart_and_resume_delivers_everything() {
    let env = Env::memory();
    env.module("keep", "well_behaved");
    env.create_topic("in", 2);
    env.create_topic("out", 2);
    let node = env.open();
    node.apply("p", one_stage(&["in"], "keep", "out"));
    let mut input: Vec<Vec<String>> = vec![Vec::new(); 2];
    let mut produce = |first| {
        for p in 0..2 {
            let values = filter_input(p, first, 6);
            env.produce_values("in", p, &values);
            input[p as usize].extend(values);
        }
    };
    produce(0);
    node.wait_caught_up("p");
    let before: Vec<Vec<String>> = (0..2).map(|p| env.values("out", p)).collect();

    // Nothing is in flight, so the answer is `paused` unless a task takes
    // longer than the pause waits (then `pausing`, and `paused` soon after).
    let answer = node.pause("p");
    assert!(
        ["paused", "pausing"].contains(&&*state(&answer)),
        "{answer:?}"
    );
    node.wait("p", "every task to pause", |s| {
        state(s) == "paused" && s.tasks.iter().all(|t| t.state == TaskState::Paused)
    });
    produce(6);
    std::thread::sleep(QUIET);
    let status = node.status("p");
    assert_eq!((state(&status).as_str(), status.lag), ("paused", 12));
    assert_eq!(
        (0..2).map(|p| env.values("out", p)).collect::<Vec<_>>(),
        before
    );

    // Still paused after a restart: the pause is part of the stored record.
    node.shutdown();
    let node = env.open();
    node.wait("p", "the restarted tasks to settle paused", |s| {
        state(s) == "paused"
    });
    produce(12);
    std::thread::sleep(QUIET);
    let status = node.status("p");
    assert_eq!((state(&status).as_str(), status.lag), ("paused", 24));
    assert_eq!(
        (0..2).map(|p| env.values("out", p)).collect::<Vec<_>>(),
        before
    );

    node.resume("p");
    let status = node.wait_caught_up("p");
    for p in 0..2 {
        assert_eq!(env.values("out", p), kept(&input[p as usize]), "out/{p}");
    }
    assert_eq!(
        status.records_in, 24,
        "this run read only what the pause held"
    );
    node.shutdown();
}

#[test]
fn delete_removes_the_spec_and_every_commit_log_but_not_the_outputs() {
    let env = Env::memory();
    env.module("keep", "well_behaved");
    env.create_topic("eu", 2);
    env.create_topic("us", 1);
    env.create_topic("out", 1);
    let node = env.open();
    node.apply("p", one_stage(&["eu", "us"], "keep", "out"));
    let values = filter_input(0, 0, 6);
    for (topic, partition) in [("eu", 0), ("eu", 1), ("us", 0)] {
        env.produce_values(topic, partition, &values);
    }
    node.wait_caught_up("p");
    let output = env.values("out", 0);
    assert_eq!(output.len(), 3 * kept(&values).len());
    for (topic, partition) in [("eu", 0), ("eu", 1), ("us", 0)] {
        let commits = env.run(env.log.commits(&commit_log_name("p", topic), partition));
        assert!(!commits.expect("a commit log per input").is_empty());
    }

    node.run(node.pipelines.delete("p")).expect("delete");
    assert!(matches!(
        node.run(node.pipelines.status("p")),
        Err(PipelineError::NotFound(_))
    ));
    for (topic, partition) in [("eu", 0), ("eu", 1), ("us", 0)] {
        let name = commit_log_name("p", topic);
        match env.run(env.log.commits(&name, partition)) {
            Err(LogError::UnknownCommitLog(gone)) => assert_eq!(gone, name),
            other => panic!("commit log {name} after delete: {other:?}"),
        }
    }
    assert_eq!(env.values("out", 0), output, "the outputs stay");
    node.shutdown();

    // Nothing of it comes back after a restart; the same name starts over
    // from scratch (no position, no state).
    let node = env.open();
    assert!(node.pipelines.names().is_empty());
    node.apply("p", one_stage(&["eu", "us"], "keep", "out"));
    let status = node.wait_caught_up("p");
    assert_eq!(status.records_in, 18, "read again from the earliest offset");
    assert_eq!(env.values("out", 0).len(), 2 * output.len());
    node.shutdown();
}

#[test]
fn an_output_topic_in_use_cannot_be_deleted_and_one_gone_fails_the_pipeline_visibly() {
    let env = Env::memory();
    env.module("keep", "well_behaved");
    env.create_topic("in", 1);
    env.create_topic("out", 1);
    let node = env.open();
    node.apply("p", one_stage(&["in"], "keep", "out"));
    let first = filter_input(0, 0, 6);
    env.produce_values("in", 0, &first);
    node.wait_caught_up("p");

    // Through the pipelines, as the API and the Kafka listener ask.
    for topic in ["in", "out"] {
        let delete = change_unless_used(&node.pipelines, topic, env.log.delete_topic(topic));
        assert_eq!(node.run(delete).err(), Some(vec!["p".to_string()]));
        env.run(env.log.topic(topic)).expect("still there");
    }

    // Gone anyway (behind the pipelines' back): the round after fails
    // when publishing, with the reason.
    env.run(env.log.delete_topic("out")).expect("delete");
    let second = filter_input(0, 6, 6);
    env.produce_values("in", 0, &second);
    let status = node.wait_failed("p");
    let reason = status.reason.expect("a reason");
    assert!(
        reason.contains("publishing to out/0") && reason.contains("unknown topic"),
        "{reason}"
    );
    node.shutdown();

    // A restart does not start it, and says why.
    let node = env.open();
    let status = node.wait_failed("p");
    let reason = status.reason.expect("a reason");
    assert!(reason.contains("output topic"), "{reason}");

    // With the topic back, resume goes on from the commit: the round that
    // could not be published is, once, then new input follows.
    env.create_topic("out", 1);
    node.resume("p");
    let third = filter_input(0, 12, 6);
    env.produce_values("in", 0, &third);
    node.wait_caught_up("p");
    let mut expected = kept(&second);
    expected.extend(kept(&third));
    assert_eq!(env.values("out", 0), expected);
    node.shutdown();
}

#[test]
fn an_input_that_gains_partitions_is_read_whole_after_the_next_apply() {
    let env = Env::memory();
    env.module("keep", "well_behaved");
    env.create_topic("in", 1);
    env.create_topic("out", 2);
    let node = env.open();
    node.apply("p", one_stage(&["in"], "keep", "out"));
    let values = filter_input(0, 0, 6);
    env.produce_values("in", 0, &values);
    node.wait_caught_up("p");

    // Reshaping a topic in use is refused through the pipelines...
    let grow = change_unless_used(&node.pipelines, "in", env.log.add_partitions("in", 2));
    assert_eq!(node.run(grow).err(), Some(vec!["p".to_string()]));

    // ...and when it happens anyway, the new partition is not noticed
    // until the pipeline is applied again (lifecycle.rs, docs/pipelines.md).
    env.run(env.log.add_partitions("in", 2)).expect("grow");
    let new = filter_input(1, 0, 6);
    env.produce_values("in", 1, &new);
    std::thread::sleep(QUIET);
    let status = node.status("p");
    assert_eq!(status.tasks.len(), 1);
    assert!(env.values("out", 1).is_empty());

    node.apply("p", one_stage(&["in"], "keep", "out"));
    let status = node.wait("p", "both partitions to be read", |s| {
        (s.tasks.len() == 2 && caught_up(s)) || state(s) == "failed"
    });
    assert_eq!(
        state(&status),
        "running",
        "{:?}: {:?}",
        status.reason,
        task_states(&status)
    );
    assert_eq!(env.values("out", 0), kept(&values));
    assert_eq!(env.values("out", 1), kept(&new));
    node.shutdown();
}

#[test]
fn a_halted_round_is_redone_in_full_by_a_fixed_module_version() {
    let env = Env::memory();
    env.module("op", "trap_every_record");
    env.create_topic("in", 1);
    env.create_topic("out", 1);
    let node = env.open();
    node.apply("p", one_stage(&["in"], "op", "out"));
    let values: Vec<String> = (0..5).map(|i| format!("v{i}")).collect();
    env.produce_values("in", 0, &values);
    let status = node.wait_failed("p");
    let reason = status.reason.clone().expect("a reason");
    assert!(
        reason.contains("op@1") && reason.contains("refusing record at offset 0"),
        "{reason}"
    );
    assert_eq!(position_and_lag(&status, 0), (0, 5));
    assert_eq!(status.stages[0].counts.records_out, 0);
    assert!(env.values("out", 0).is_empty());

    // Version 2 fixes the operator; the update restarts the failed task
    // from its committed position, so no record of the halted round is lost.
    env.module("op", "well_behaved");
    let status = node.apply("p", one_stage(&["in"], "op", "out"));
    assert_eq!(status.modules, vec!["op@2".to_string()]);
    node.wait_caught_up("p");
    assert_eq!(env.values("out", 0), values);
    node.shutdown();
}

#[test]
fn a_pause_says_pausing_until_the_rounds_in_flight_are_published() {
    let (env, log) = faulty_env();
    env.module("keep", "well_behaved");
    env.create_topic("in", 1);
    env.create_topic("out", 1);
    let node = env.open();
    node.apply("p", one_stage(&["in"], "keep", "out"));
    let values = filter_input(0, 0, 6);
    env.produce_values("in", 0, &values);
    node.wait_caught_up("p");

    // The next round is committed, and its publish hangs.
    let stalled = log.stalled();
    log.stall_appends("out", 0);
    let round = filter_input(0, 6, 6);
    env.produce_values("in", 0, &round);
    log.wait_stalled(stalled);
    let answer = node.pause("p");
    assert_eq!(state(&answer), "pausing", "{answer:?}");
    std::thread::sleep(QUIET);
    assert_eq!(state(&node.status("p")), "pausing");

    // Published: now paused, with every output of the round out.
    log.heal();
    let paused = node.wait("p", "the pause to settle", |s| state(s) == "paused");
    let mut expected = kept(&values);
    expected.extend(kept(&round));
    assert_eq!(env.values("out", 0), expected);
    // The hanging publish shows where the time went.
    let steps = paused.steps;
    assert!(
        steps.publish_ms >= QUIET.as_millis() as u64 && steps.publish_ms > steps.commit_ms,
        "{steps:?}"
    );
    node.shutdown();
}
