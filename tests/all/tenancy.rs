//! Multi-tenancy through the HTTP API of a real server: credentials,
//! namespaces, and isolation. Every cross-tenant access must look exactly
//! like an access to something that does not exist.

use serde_json::{Value, json};

use crate::support::server::{WeirServer, guest_path};

const ADMIN: &str = "test-admin-secret";

fn tenancy_server(dir: &std::path::Path) -> WeirServer {
    WeirServer::start_with_config(
        &dir.join("data"),
        &format!("tenancy = true\nadmin_token = \"{ADMIN}\"\n"),
    )
}

/// Creates a tenant and returns a fresh token for it.
fn tenant(server: &WeirServer, name: &str) -> String {
    server.create_tenant(ADMIN, json!({ "name": name }))
}

#[test]
fn requests_without_a_valid_token_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let server = tenancy_server(dir.path());
    let token = tenant(&server, "acme");

    server.use_token(None);
    for path in [
        "/v1/topics",
        "/v1/modules",
        "/v1/pipelines",
        "/v1/tenants",
        "/metrics",
    ] {
        let (status, body) = server.get(path);
        assert_eq!(status, 401, "{path}: {body}");
        assert!(body["error"].is_string());
    }
    server.expect(200, server.get("/healthz"));
    server.use_token(Some("weir_not-a-token"));
    server.expect(401, server.get("/v1/topics"));

    server.use_token(Some(&token));
    server.expect(200, server.get("/v1/topics"));
    server.expect(403, server.get("/v1/tenants"));
    server.expect(403, server.get("/metrics"));

    server.use_token(Some(ADMIN));
    let info = server.expect(200, server.get("/v1/tenants/acme"));
    let id = info["tokens"][0].as_str().unwrap().to_string();
    let (status, body) = server.get("/v1/topics");
    assert_eq!(status, 403, "the admin credential is not a tenant: {body}");
    server.expect(200, server.delete(&format!("/v1/tenants/acme/tokens/{id}")));

    server.use_token(Some(&token));
    let (status, _) = server.get("/v1/topics");
    assert_eq!(status, 401, "a revoked token stops working at once");
}

#[test]
fn tenants_have_their_own_names_and_never_see_each_other() {
    let dir = tempfile::tempdir().unwrap();
    let server = tenancy_server(dir.path());
    let acme = tenant(&server, "acme");
    let globex = tenant(&server, "globex");
    let filter = std::fs::read(guest_path("filter")).unwrap();
    let spec = json!({
        "inputs": ["orders"],
        "stages": [{ "module": "filter", "config": { "field": "ok", "equals": "true" },
                     "outputs": { "main": "kept" } }],
    });

    // Both tenants build the same things under the same names.
    for token in [&acme, &globex] {
        server.use_token(Some(token));
        server.create_topic("orders", 1);
        server.create_topic("kept", 1);
        server.expect(201, server.put_bytes("/v1/modules/filter", &filter));
        server.expect(201, server.put("/v1/pipelines/p", &spec));
    }
    server.use_token(Some(&acme));
    server.produce("orders", vec![json!({"key": "a1", "value": {"ok": true}})]);
    server.wait_caught_up("p");
    assert_eq!(server.records("kept", 0).len(), 1);
    let status = server.pipeline("p");
    assert_eq!(status["name"], "p");
    assert_eq!(
        status["spec"]["inputs"],
        json!(["orders"]),
        "local names only: {status}"
    );
    assert_eq!(status["modules"], json!(["filter@1"]));

    server.use_token(Some(&globex));
    server.wait_caught_up("p");
    assert!(
        server.records("kept", 0).is_empty(),
        "acme's records stay acme's"
    );
    for list in ["/v1/topics", "/v1/modules", "/v1/pipelines"] {
        let body = server.expect(200, server.get(list));
        let text = body.to_string();
        assert!(
            !text.contains("acme"),
            "{list} shows another tenant: {text}"
        );
    }
    let topics = server.expect(200, server.get("/v1/topics"));
    assert_eq!(topics["topics"].as_array().unwrap().len(), 2);

    // Another tenant's resources, by every endpoint, look like nothing.
    let (status, body) = server.get("/v1/topics/acme.orders");
    assert_eq!(status, 404, "{body}");
    let not_found = |(status, body): (u16, Value)| {
        assert_eq!(status, 404, "{body}");
        body["error"].as_str().unwrap().to_string()
    };
    not_found(server.get("/v1/topics/nope/records"));
    not_found(server.get("/v1/modules/nope"));
    not_found(server.get("/v1/pipelines/nope"));
    not_found(server.post("/v1/pipelines/nope/pause", &json!({})));
    not_found(server.post("/v1/pipelines/nope/resume", &json!({})));
    not_found(server.delete("/v1/pipelines/nope"));
    not_found(server.delete("/v1/topics/nope"));
    not_found(server.delete("/v1/modules/nope"));
    let message = not_found(server.post(
        "/v1/topics/nope/records",
        &json!({"records": [{"value": 1}]}),
    ));
    // A pipeline cannot name another tenant's topic: it does not exist here.
    server.use_token(Some(&acme));
    server.create_topic("acme-only", 1);
    server.use_token(Some(&globex));
    let stolen = json!({"inputs": ["acme-only"], "stages": [{"module": "filter",
        "config": {"field": "ok", "equals": "true"}, "outputs": {"main": "kept"}}]});
    let (status, body) = server.put("/v1/pipelines/thief", &stolen);
    assert_eq!(status, 400, "{body}");
    let unknown = body["error"].as_str().unwrap();
    assert!(unknown.contains("unknown topic \"acme-only\""), "{unknown}");
    assert!(
        !message.contains("globex"),
        "errors speak local names: {message}"
    );

    // Deleting a tenant removes what it owned, and only that.
    server.use_token(Some(ADMIN));
    server.expect(200, server.delete("/v1/tenants/globex"));
    server.use_token(Some(&globex));
    server.expect(401, server.get("/v1/topics"));
    server.use_token(Some(&acme));
    server.expect(200, server.get("/v1/pipelines/p"));
    assert_eq!(server.records("kept", 0).len(), 1);
    server.use_token(Some(ADMIN));
    let again = tenant(&server, "globex");
    server.use_token(Some(&again));
    let topics = server.expect(200, server.get("/v1/topics"));
    assert_eq!(
        topics["topics"],
        json!([]),
        "a new tenant of that name starts empty"
    );
}

#[test]
fn a_generated_admin_credential_is_written_privately_and_announced() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = WeirServer::start_with_config(&data, "tenancy = true\n");
    let file = data.join("admin-token");
    server.wait_until("the credential's path is printed", |s| {
        s.stdout
            .lock()
            .unwrap()
            .iter()
            .any(|l| l.contains(&file.display().to_string()))
    });
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&file).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let token = std::fs::read_to_string(&file).unwrap();
    server.use_token(Some(token.trim()));
    server.expect(201, server.post("/v1/tenants", &json!({"name": "acme"})));
    let tenants = server.cli(&["tenant", "list"]);
    assert!(
        tenants.status.success(),
        "{}",
        String::from_utf8_lossy(&tenants.stderr)
    );
    assert!(String::from_utf8_lossy(&tenants.stdout).contains("acme"));
}

/// Creates a tenant with its own quotas; returns a token for it.
fn tenant_with_quotas(server: &WeirServer, name: &str, quotas: Value) -> String {
    let token = server.create_tenant(ADMIN, json!({ "name": name, "quotas": quotas }));
    server.use_token(Some(&token));
    token
}

fn refused(expected: u16, quota: &str, (status, body): (u16, Value)) {
    assert_eq!(status, expected, "{body}");
    let message = body["error"].as_str().unwrap();
    assert!(message.contains(&format!("quota {quota}")), "{message}");
}

#[test]
fn counts_and_sizes_over_quota_are_refused_until_back_under() {
    let dir = tempfile::tempdir().unwrap();
    let server = tenancy_server(dir.path());
    let small = tenant_with_quotas(
        &server,
        "small",
        json!({"topics": 2, "modules": 1, "pipelines": 1, "module_bytes": 1_000_000,
               "storage_bytes": 3000, "produce_bytes_per_sec": null}),
    );
    let filter = std::fs::read(guest_path("filter")).unwrap();
    let receipt = std::fs::read(guest_path("receipt")).unwrap();

    server.create_topic("a", 1);
    server.create_topic("b", 1);
    refused(
        403,
        "topics",
        server.post("/v1/topics", &json!({"name": "c"})),
    );
    server.expect(201, server.put_bytes("/v1/modules/filter", &filter));
    refused(
        403,
        "modules",
        server.put_bytes("/v1/modules/receipt", &receipt),
    );
    server.expect(201, server.put_bytes("/v1/modules/filter", &receipt)); // a new version is no new module
    let spec = json!({"inputs": ["a"], "stages": [{"module": "filter@1",
        "config": {"field": "x", "equals": "y"}, "outputs": {"main": "b"}}]});
    server.expect(201, server.put("/v1/pipelines/one", &spec));
    refused(403, "pipelines", server.put("/v1/pipelines/two", &spec));
    server.expect(200, server.put("/v1/pipelines/one", &spec)); // updating is fine

    // Storage: produce until the quota is reached; what was acknowledged stays.
    let record = json!({"value": "x".repeat(500)});
    let mut acknowledged = 0;
    loop {
        let (status, body) = server.post(
            "/v1/topics/b/records",
            &json!({"records": [record.clone()]}),
        );
        if status != 200 {
            refused(403, "storage_bytes", (status, body));
            break;
        }
        acknowledged += 1;
        assert!(acknowledged < 100, "the storage quota never applied");
    }
    assert!(acknowledged >= 4);
    assert_eq!(server.records("b", 0).len(), acknowledged);

    let usage = server.expect(200, server.get("/v1/usage"));
    assert_eq!(
        (&usage["topics"], &usage["modules"], &usage["pipelines"]),
        (&json!(2), &json!(1), &json!(1))
    );
    assert!(usage["storage_bytes"].as_u64().unwrap() >= 3000);
    assert_eq!(usage["quotas"]["topics"], 2);
    server.use_token(Some(ADMIN));
    let (status, metrics) = server.get("/metrics");
    assert_eq!(status, 200);
    let metrics = metrics.as_str().unwrap().to_string();
    for line in [
        "weir_tenant_topics{tenant=\"small\"} 2",
        "weir_tenant_quota_topics{tenant=\"small\"} 2",
    ] {
        assert!(metrics.contains(line), "{line} missing from {metrics}");
    }
    server.use_token(Some(&small));

    // Back under the quotas, the tenant works again.
    server.expect(200, server.delete("/v1/pipelines/one"));
    server.expect(200, server.delete("/v1/topics/b"));
    server.create_topic("c", 1);
    server.expect(
        200,
        server.post("/v1/topics/c/records", &json!({"records": [record]})),
    );
}

#[test]
fn module_size_memory_and_produce_rate_quotas_apply() {
    let dir = tempfile::tempdir().unwrap();
    let server = tenancy_server(dir.path());
    tenant_with_quotas(
        &server,
        "tight",
        json!({"module_bytes": 50_000, "memory_bytes_per_instance": 65536,
               "produce_bytes_per_sec": 20_000}),
    );
    let filter = std::fs::read(guest_path("filter")).unwrap();
    refused(
        403,
        "module_bytes",
        server.put_bytes("/v1/modules/filter", &filter),
    );

    tenant_with_quotas(&server, "lean", json!({"memory_bytes_per_instance": 65536}));
    server.create_topic("in", 1);
    server.create_topic("out", 1);
    server.expect(201, server.put_bytes("/v1/modules/filter", &filter));
    let spec = json!({"inputs": ["in"], "stages": [{"module": "filter",
        "config": {"field": "x", "equals": "y"}, "outputs": {"main": "out"}}]});
    let (status, body) = server.put("/v1/pipelines/p", &spec);
    assert_eq!(status, 400, "{body}");
    let message = body["error"].as_str().unwrap();
    assert!(
        message.contains("memory"),
        "the operator cannot start in 64 KiB: {message}"
    );

    tenant_with_quotas(&server, "slow", json!({"produce_bytes_per_sec": 20_000}));
    server.create_topic("t", 1);
    let chunk =
        json!({"records": (0..100).map(|_| json!({"value": "v".repeat(100)})).collect::<Vec<_>>()});
    server.expect(200, server.post("/v1/topics/t/records", &chunk));
    let mut limited = None;
    for _ in 0..10 {
        let (status, body) = server.post("/v1/topics/t/records", &chunk);
        if status == 429 {
            limited = Some(body);
            break;
        }
    }
    let body = limited.expect("the produce rate quota applied");
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("quota produce_bytes_per_sec")
    );
    std::thread::sleep(std::time::Duration::from_millis(1200));
    server.expect(200, server.post("/v1/topics/t/records", &chunk));
}

#[test]
fn a_tenant_with_a_looping_module_does_not_stop_another() {
    let dir = tempfile::tempdir().unwrap();
    let server = WeirServer::start_with_config(
        &dir.path().join("data"),
        &format!(
            "tenancy = true\nadmin_token = \"{ADMIN}\"\n[limits]\nfuel_per_call = 200000000\n"
        ),
    );
    let noisy = tenant(&server, "noisy");
    let quiet = tenant(&server, "quiet");

    server.use_token(Some(&noisy));
    server.create_topic("in", 2);
    server.create_topic("out", 1);
    let looping = std::fs::read(guest_path("loop_forever")).unwrap();
    server.expect(201, server.put_bytes("/v1/modules/spin", &looping));
    let spec = json!({"inputs": ["in"], "on_error": "skip",
        "stages": [{"module": "spin", "outputs": {"main": "out"}}]});
    server.expect(201, server.put("/v1/pipelines/spin", &spec));
    let burden = (0..20)
        .map(|i| json!({"key": format!("k{i}"), "value": i}))
        .collect();
    server.produce("in", burden);

    server.use_token(Some(&quiet));
    server.start_neighbour_filter();
    for round in 0..5 {
        server.produce(
            "orders",
            vec![json!({"value": {"ok": true, "round": round}})],
        );
        server.wait_until("the quiet tenant's record is processed", |s| {
            s.records("kept", 0).len() == round + 1
        });
    }

    server.use_token(Some(&noisy));
    server.wait_until("the noisy tenant's calls run out of fuel", |s| {
        s.pipeline("spin")["errors"].as_u64().unwrap() > 0
    });
}
