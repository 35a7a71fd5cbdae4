//! `weir serve` on NATS JetStream when the cluster is out of reach: at
//! start (a clear error, after retrying), and mid-run (`/healthz` says so,
//! requests fail instead of hanging, pipelines start again by themselves,
//! and nothing acknowledged is lost once the cluster is back). The pipelines' exactly-once runs on JetStream are
//! in `exactly_once`.

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use weir_jetstream::testing::{NatsServer, nats_server_binary};

use crate::support::server::{WEIR, WeirServer, serve_command};

fn nats() -> NatsServer {
    NatsServer::start(&nats_server_binary(Path::new(env!("CARGO_TARGET_TMPDIR"))))
}

fn config(servers: &str) -> String {
    format!("[log]\nbackend = \"jetstream\"\nservers = [{servers}]\nstart_timeout_ms = 2000\n")
}

#[test]
fn a_cluster_out_of_reach_at_start_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let config_file = dir.path().join("cluster.toml");
    // A port nobody listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    std::fs::write(
        &config_file,
        config(&format!("\"nats://127.0.0.1:{port}\"")),
    )
    .unwrap();
    let started = Instant::now();
    let output = serve_command(&dir.path().join("data"))
        .arg("--config")
        .arg(&config_file)
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("while connecting to the NATS JetStream cluster at nats://127.0.0.1"),
        "{stderr}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "it gives up after its start timeout"
    );
}

#[test]
fn a_cluster_lost_mid_run_is_reported_and_nothing_acknowledged_is_lost() {
    let mut nats = nats();
    let dir = tempfile::tempdir().unwrap();
    let server = WeirServer::start_with_config(
        &dir.path().join("data"),
        &config(&format!("\"{}\"", nats.url())),
    );
    // What the cluster is, over the API and the CLI.
    let status = server.expect(200, server.get("/v1/cluster"));
    assert_eq!(status["backend"], "jetstream");
    assert_eq!(status["healthy"], true);
    assert!(
        status["facts"].to_string().contains("nats-server 2.15.1"),
        "{status}"
    );
    let shown = cluster_status(&server);
    assert!(shown.contains("log: jetstream (healthy)"), "{shown}");
    assert!(shown.contains("nats-server 2.15.1"), "{shown}");

    server.create_topic("events", 1);
    let before: Vec<Value> = (0..10).map(|i| json!({ "value": i })).collect();
    server.produce("events", before);
    assert_eq!(server.get("/healthz").0, 200);
    // A pipeline (orders → kept) that must go on by itself afterwards.
    server.start_neighbour_filter();
    let order = |i: i64| json!({ "value": { "ok": true, "n": i } });
    server.produce("orders", (0..5).map(order).collect());
    server.wait_caught_up("p");

    nats.kill();
    server.wait_until("/healthz reports the cluster lost", |s| {
        s.get("/healthz").0 == 503
    });
    let (_, health) = server.get("/healthz");
    assert!(
        health["error"]
            .as_str()
            .unwrap_or("")
            .contains("not connected"),
        "{health}"
    );
    let shown = cluster_status(&server);
    assert!(shown.contains("log: jetstream (unavailable: "), "{shown}");
    // A produce fails (after the client's timeout) instead of hanging.
    let (status, body) = server.post(
        "/v1/topics/events/records",
        &json!({ "records": [{ "value": "while down" }] }),
    );
    assert_eq!(status, 503, "{body}");

    nats.restart();
    server.wait_until("/healthz reports the cluster back", |s| {
        s.get("/healthz").0 == 200
    });
    let after: Vec<Value> = (10..20).map(|i| json!({ "value": i })).collect();
    server.wait_until("produce works again", |s| {
        s.post("/v1/topics/events/records", &json!({ "records": after }))
            .0
            == 200
    });
    // The pipeline's task failed while the cluster was gone; it starts
    // again by itself (no resume) and goes on exactly once.
    server.wait_until("the order produced after the outage is accepted", |s| {
        s.post(
            "/v1/topics/orders/records",
            &json!({ "records": [order(5)] }),
        )
        .0 == 200
    });
    server.wait_until("the pipeline catches up by itself", |s| {
        s.values("kept").len() == s.values("orders").len()
    });
    let kept: Vec<i64> = server
        .values("kept")
        .iter()
        .map(|v| v["n"].as_i64().unwrap())
        .collect();
    let orders: Vec<i64> = server
        .values("orders")
        .iter()
        .map(|v| v["n"].as_i64().unwrap())
        .collect();
    assert_eq!(kept, orders, "every order kept once, in order");
    let log = std::fs::read_to_string(dir.path().join("data").with_extension("server.log"))
        .unwrap_or_default();
    assert!(
        log.contains("restarting the task after the log was unavailable"),
        "the task failed during the outage and started again by itself"
    );
    let values: Vec<i64> = server
        .values("events")
        .iter()
        .filter_map(Value::as_i64)
        .collect();
    for i in 0..20 {
        assert!(
            values.contains(&i),
            "acknowledged record {i} is missing: {values:?}"
        );
    }
}

#[test]
fn a_worker_on_an_empty_disk_finds_the_modules_and_pipelines_in_the_cluster() {
    let nats = nats();
    let dir = tempfile::tempdir().unwrap();
    let config = config(&format!("\"{}\"", nats.url()));
    let first = WeirServer::start_with_config(&dir.path().join("first"), &config);
    first.start_neighbour_filter();
    let order = |i: i64| json!({ "value": { "ok": i % 2 == 0, "n": i } });
    first.produce("orders", (0..6).map(order).collect());
    first.wait_caught_up("p");
    first.stop();

    // Another worker, with a data directory of its own that holds nothing.
    let second = WeirServer::start_with_config(&dir.path().join("second"), &config);
    let module = second.expect(200, second.get("/v1/modules/filter"));
    assert_eq!(module["pipelines"], json!(["p"]), "{module}");
    second.produce("orders", (6..10).map(order).collect());
    second.wait_caught_up("p");
    let kept: Vec<i64> = second
        .values("kept")
        .iter()
        .map(|v| v["n"].as_i64().unwrap())
        .collect();
    assert_eq!(kept, [0, 2, 4, 6, 8], "each kept order once, in order");
    assert!(
        !dir.path().join("second/modules").exists()
            && !dir.path().join("second/pipelines").exists(),
        "the second worker keeps modules and pipelines in the cluster, not on its disk"
    );
}

/// The tasks of pipeline `p` as `worker` shows them: `(partition,
/// worker running it)`, once every task runs somewhere.
fn placed_tasks(worker: &WeirServer) -> Option<Vec<(u64, String)>> {
    let (code, status) = worker.get("/v1/pipelines/p");
    if code != 200 {
        return None;
    }
    let tasks = status["tasks"].as_array()?;
    tasks
        .iter()
        .map(|t| {
            let running = t["state"] == "running";
            let at = t["worker"].as_str().filter(|_| running)?;
            Some((t["partition"].as_u64()?, at.to_string()))
        })
        .collect::<Option<Vec<_>>>()
        .map(|mut tasks| {
            tasks.sort();
            tasks
        })
}

/// A NATS server and two workers on it (lease TTL 2 s, `extra` added to
/// their configuration), each with a data directory of its own.
fn two_workers(extra: &str) -> (NatsServer, tempfile::TempDir, WeirServer, WeirServer) {
    let nats = nats();
    let dir = tempfile::tempdir().unwrap();
    let config = format!(
        "{extra}{}lease_ttl_ms = 2000\n",
        config(&format!("\"{}\"", nats.url()))
    );
    let first = WeirServer::start_with_config(&dir.path().join("first"), &config);
    let second = WeirServer::start_with_config(&dir.path().join("second"), &config);
    (nats, dir, first, second)
}

#[test]
fn workers_share_a_pipelines_tasks_and_take_over_a_killed_workers_tasks() {
    let (_nats, _dir, first, second) = two_workers("");
    first.create_topic("orders", 4);
    first.create_topic("kept", 1);
    first.push_module("filter", "filter");
    let spec = json!({"inputs": ["orders"], "stages": [{"module": "filter",
        "config": {"field": "ok", "equals": "true"}, "outputs": {"main": "kept"}}]});
    first.expect(201, first.put("/v1/pipelines/p", &spec));
    let order = |i: i64| json!({ "partition": i % 4, "value": { "ok": i % 3 != 0, "n": i } });
    second.produce("orders", (0..40).map(order).collect());

    // Two tasks each, as either worker tells.
    second.wait_until("the tasks are spread over both workers", |s| {
        placed_tasks(s).is_some_and(|tasks| {
            let on_first = tasks.iter().filter(|(_, w)| *w == tasks[0].1).count();
            tasks.len() == 4 && on_first == 2
        })
    });
    let placed = placed_tasks(&second).unwrap();
    first.wait_until("both workers tell the same", |f| {
        placed_tasks(f).as_ref() == Some(&placed)
    });
    second.wait_caught_up("p");
    second.wait_until("every task's counts are in either worker's status", |s| {
        let status = s.pipeline("p");
        status["records_in"] == 40 && status["stages"][0]["records_in"] == 40
    });
    let shown = cluster_status(&second);
    for (_, worker) in &placed {
        assert!(shown.contains(worker.as_str()), "{shown}");
    }
    assert!(
        shown.contains("(this)") && shown.contains("p/orders/"),
        "{shown}"
    );

    // The first worker dies: its tasks run on the second once their
    // leases lapse (2 s), from their commits.
    let killed = std::time::Instant::now();
    first.kill();
    second.wait_until("the second worker runs every task", |s| {
        placed_tasks(s).is_some_and(|tasks| {
            let ids: std::collections::BTreeSet<&String> = tasks.iter().map(|(_, w)| w).collect();
            tasks.len() == 4 && ids.len() == 1
        })
    });
    eprintln!(
        "a killed worker's tasks ran elsewhere after {:?}",
        killed.elapsed()
    );
    second.produce("orders", (40..80).map(order).collect());
    second.wait_caught_up("p");
    let mut kept: Vec<i64> = second
        .values("kept")
        .iter()
        .map(|v| v["n"].as_i64().unwrap())
        .collect();
    kept.sort();
    let expected: Vec<i64> = (0..80).filter(|i| i % 3 != 0).collect();
    assert_eq!(kept, expected, "every kept order once");
}

#[test]
fn workers_share_tenants_and_a_token_revoked_on_one_stops_working_on_the_other() {
    let nats = nats();
    let dir = tempfile::tempdir().unwrap();
    let config = format!(
        "tenancy = true\nadmin_token = \"root-secret\"\n{}",
        config(&format!("\"{}\"", nats.url()))
    );
    let first = WeirServer::start_with_config(&dir.path().join("first"), &config);
    let second = WeirServer::start_with_config(&dir.path().join("second"), &config);
    let token = first.create_tenant("root-secret", json!({ "name": "acme" }));
    let issued = first.expect(200, first.get("/v1/tenants/acme"))["tokens"][0]
        .as_str()
        .unwrap()
        .to_string();

    // The token issued through the first worker works on the second at once.
    second.use_token(Some(&token));
    second.create_topic("orders", 1);
    second.produce("orders", vec![json!({ "value": "one" })]);
    first.use_token(Some(&token));
    assert_eq!(first.values("orders"), [json!("one")]);

    first.use_token(Some("root-secret"));
    first.expect(
        200,
        first.delete(&format!("/v1/tenants/acme/tokens/{issued}")),
    );
    second.wait_until("the second worker refuses the revoked token", |s| {
        s.get("/v1/topics").0 == 401
    });
}

/// Pause, resume and delete through one worker reach the tasks another
/// worker runs.
#[test]
fn pipeline_changes_through_one_worker_reach_the_tasks_of_another() {
    let (_nats, _dir, first, second) = two_workers("");
    first.start_neighbour_filter();
    let order = |i: i64, ok: bool| json!({ "value": { "ok": ok, "n": i } });
    second.produce("orders", vec![order(0, true)]);
    second.wait_caught_up("p");

    // The one task runs on either worker; changes go through both.
    second.expect(200, second.post("/v1/pipelines/p/pause", &json!({})));
    first.wait_until("both workers tell it is paused", |f| {
        f.pipeline("p")["state"] == "paused" && second.pipeline("p")["state"] == "paused"
    });
    first.produce("orders", vec![order(1, true)]);
    std::thread::sleep(std::time::Duration::from_secs(1));
    assert_eq!(
        second.values("kept").len(),
        1,
        "a paused pipeline keeps nothing new"
    );
    first.expect(200, first.post("/v1/pipelines/p/resume", &json!({})));
    second.wait_until("the pipeline runs again and catches up", |s| {
        s.values("kept").len() == 2
    });

    first.expect(200, first.delete("/v1/pipelines/p"));
    second.wait_until("the other worker forgets the pipeline", |s| {
        s.get("/v1/pipelines/p").0 == 404
    });
}

/// Kafka clients connected to different workers: one consumer group
/// (members bootstrapped to different workers split the partitions, not
/// each take them all), and records produced through one fetched through
/// the other.
#[test]
#[ignore = "under the full suite's load the second member sometimes never joins (seen once in four runs); \
            being investigated, run with --ignored"]
fn kafka_clients_of_different_workers_form_one_consumer_group() {
    use crate::kafka::groups::{assignments_when, group_consumer_with};
    use rdkafka::consumer::DefaultConsumerContext;

    let (_nats, _dir, first, second) = two_workers("");
    first.create_topic("jobs", 4);
    // Both workers know each other (a heartbeat each) before clients come.
    second.wait_until("both workers are listed", |s| {
        s.get("/v1/cluster").1["workers"]
            .as_array()
            .is_some_and(|w| w.len() == 2 && w.iter().all(|w| w["kafka"].is_string()))
    });
    let one = group_consumer_with(&first, "crew", "jobs", &[], DefaultConsumerContext);
    let two = group_consumer_with(&second, "crew", "jobs", &[], DefaultConsumerContext);
    let split = assignments_when(&[&one, &two], |a| a[0].len() == 2 && a[1].len() == 2);
    let mut union: Vec<i32> = split.concat();
    union.sort();
    assert_eq!(union, [0, 1, 2, 3], "one group over both workers");

    let producer = crate::kafka::producer(&first, &[]);
    let (partition, offset) = crate::kafka::send(
        &producer,
        rdkafka::producer::FutureRecord::to("jobs")
            .partition(3)
            .payload("through the first".as_bytes()),
    );
    assert_eq!((partition, offset), (3, 0));
    second.use_token(None);
    let records = second.records("jobs", 3);
    assert_eq!(records[0]["value"], "through the first");
}

#[test]
fn cluster_status_names_the_embedded_log_by_default() {
    let dir = tempfile::tempdir().unwrap();
    let server = WeirServer::start(&dir.path().join("data"));
    let status = server.expect(200, server.get("/v1/cluster"));
    assert_eq!(status["backend"], "embedded");
    assert_eq!(status["healthy"], true);
    let shown = cluster_status(&server);
    assert!(shown.contains("log: embedded (healthy)"), "{shown}");
}

/// What `weir cluster status` prints for `server`.
fn cluster_status(server: &WeirServer) -> String {
    let output = std::process::Command::new(WEIR)
        .args(["cluster", "status", "--server", &server.url])
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    String::from_utf8(output.stdout).unwrap()
}
