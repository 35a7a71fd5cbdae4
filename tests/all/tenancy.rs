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
    server.use_token(Some(ADMIN));
    server.expect(201, server.post("/v1/tenants", &json!({ "name": name })));
    let issued = server.expect(
        201,
        server.post(&format!("/v1/tenants/{name}/tokens"), &json!({})),
    );
    issued["token"].as_str().unwrap().to_string()
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
    not_found(server.delete("/v1/pipelines/nope"));
    not_found(server.delete("/v1/topics/nope"));
    not_found(server.delete("/v1/modules/nope"));
    let message = not_found(server.post(
        "/v1/topics/nope/records",
        &json!({"records": [{"value": 1}]}),
    ));
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
