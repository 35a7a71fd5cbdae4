//! A real `weir serve` process for end-to-end tests: started on a free
//! loopback port over a data directory, spoken to over HTTP, stopped with
//! SIGTERM or killed with SIGKILL, and restarted over the same directory.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// The `weir` command line built for the tests.
pub const WEIR: &str = env!("CARGO_BIN_EXE_weir-under-test");

/// A WebAssembly guest built by `tests/build.rs` (`name` with underscores).
pub fn guest_path(name: &str) -> PathBuf {
    Path::new(env!("WEIR_GUESTS_DIR")).join(format!("{name}.wasm"))
}

/// `weir serve` over `dir` on free loopback ports, not started yet.
pub fn serve_command(dir: &Path) -> Command {
    let mut command = Command::new(WEIR);
    command
        .args(["serve", "--listen", "127.0.0.1:0"])
        .args(["--kafka-listen", "127.0.0.1:0"])
        .arg("--data-dir")
        .arg(dir);
    command
}

/// A running server.
pub struct WeirServer {
    child: Option<Child>,
    /// Lines the server printed to stdout after the first.
    pub stdout: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    pub url: String,
    /// `host:port` of the Kafka listener (Kafka's bootstrap servers).
    pub kafka: String,
    pub dir: PathBuf,
    agent: ureq::Agent,
    token: std::sync::Mutex<Option<String>>,
}

impl WeirServer {
    /// Starts `weir serve` over `dir` and waits until it listens.
    pub fn start(dir: &Path) -> WeirServer {
        Self::start_with_config(dir, "")
    }

    /// Like `start`, with `config` (TOML) as the server's configuration file.
    pub fn start_with_config(dir: &Path, config: &str) -> WeirServer {
        let config_file = dir.with_extension("toml");
        std::fs::write(&config_file, config).expect("write the server configuration");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.with_extension("server.log"))
            .expect("open the server log");
        let mut child = serve_command(dir)
            .arg("--config")
            .arg(&config_file)
            .env("RUST_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .expect("start weir serve");
        let stdout = child.stdout.take().expect("piped stdout");
        let mut reader = BufReader::new(stdout);
        let mut line = String::new();
        reader
            .read_line(&mut line)
            .expect("read the listening line");
        let lines = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let collected = lines.clone();
        std::thread::spawn(move || {
            for line in reader.lines().map_while(Result::ok) {
                collected.lock().unwrap().push(line);
            }
        });
        let url = line
            .split_whitespace()
            .find(|w| w.starts_with("http://"))
            .unwrap_or_else(|| panic!("no address in {line:?}; see {}", dir.display()))
            .to_string();
        let kafka = line
            .split_whitespace()
            .find_map(|w| w.strip_prefix("kafka://"))
            .unwrap_or_else(|| panic!("no Kafka address in {line:?}"))
            .to_string();
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(60)))
            // A fresh connection per request: a test must not fail on the
            // client's reuse of a connection the server has just closed.
            .max_idle_connections(0)
            .build()
            .into();
        WeirServer {
            child: Some(child),
            stdout: lines,
            url,
            kafka,
            dir: dir.to_path_buf(),
            agent,
            token: std::sync::Mutex::new(None),
        }
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// Kills the server with SIGKILL (no chance to flush or checkpoint).
    pub fn kill(mut self) {
        let mut child = self.child.take().expect("running");
        child.kill().expect("SIGKILL the server");
        child.wait().expect("reap the server");
    }

    /// Stops the server with SIGTERM and checks it exits cleanly.
    pub fn stop(self) {
        self.stop_within(Duration::from_secs(30));
    }

    /// Like `stop`, but it must exit within `limit`.
    pub fn stop_within(mut self, limit: Duration) {
        let mut child = self.child.take().expect("running");
        let status = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .expect("send SIGTERM");
        assert!(status.success());
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = child.try_wait().expect("poll the server") {
                assert!(
                    status.success(),
                    "weir serve exited with {status} after SIGTERM"
                );
                return;
            }
            assert!(
                Instant::now() < deadline,
                "weir serve did not stop within {limit:?} of SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn answer(
        &self,
        response: Result<ureq::http::Response<ureq::Body>, ureq::Error>,
    ) -> (u16, Value) {
        let mut response = response.expect("the server answers");
        let status = response.status().as_u16();
        let text = response
            .body_mut()
            .with_config()
            .limit(64 << 20)
            .read_to_string()
            .expect("read the body");
        let value = serde_json::from_str(&text).unwrap_or(Value::String(text));
        (status, value)
    }

    /// Speaks as `token` from now on (`None`: no credentials).
    pub fn use_token(&self, token: Option<&str>) {
        *self.token.lock().unwrap() = token.map(str::to_string);
    }

    fn auth(&self) -> String {
        match &*self.token.lock().unwrap() {
            Some(token) => format!("Bearer {token}"),
            None => String::new(),
        }
    }

    pub fn get(&self, path: &str) -> (u16, Value) {
        let request = self.agent.get(format!("{}{path}", self.url));
        self.answer(request.header("authorization", self.auth()).call())
    }

    pub fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        let request = self.agent.post(format!("{}{path}", self.url));
        self.answer(request.header("authorization", self.auth()).send_json(body))
    }

    /// POSTs a raw body (for malformed requests).
    pub fn post_raw(&self, path: &str, body: &str) -> (u16, Value) {
        let request = self.agent.post(format!("{}{path}", self.url));
        self.answer(
            request
                .header("authorization", self.auth())
                .header("content-type", "application/json")
                .send(body),
        )
    }

    pub fn put(&self, path: &str, body: &Value) -> (u16, Value) {
        let request = self.agent.put(format!("{}{path}", self.url));
        self.answer(request.header("authorization", self.auth()).send_json(body))
    }

    pub fn put_bytes(&self, path: &str, body: &[u8]) -> (u16, Value) {
        let request = self.agent.put(format!("{}{path}", self.url));
        self.answer(request.header("authorization", self.auth()).send(body))
    }

    pub fn delete(&self, path: &str) -> (u16, Value) {
        let request = self.agent.delete(format!("{}{path}", self.url));
        self.answer(request.header("authorization", self.auth()).call())
    }

    /// Like `get` etc., but the answer must have `status`.
    pub fn expect(&self, status: u16, (got, body): (u16, Value)) -> Value {
        assert_eq!(got, status, "unexpected answer: {body}");
        body
    }

    /// Creates a tenant as `admin` (`body`: its name, and quotas if any)
    /// and returns a fresh token for it; the client goes on as the admin.
    pub fn create_tenant(&self, admin: &str, body: Value) -> String {
        let name = body["name"].as_str().expect("a tenant name").to_string();
        self.use_token(Some(admin));
        self.expect(201, self.post("/v1/tenants", &body));
        let issued = self.expect(
            201,
            self.post(&format!("/v1/tenants/{name}/tokens"), &json!({})),
        );
        issued["token"].as_str().expect("a token").to_string()
    }

    pub fn create_topic(&self, name: &str, partitions: u32) {
        let body = json!({ "name": name, "partitions": partitions });
        self.expect(201, self.post("/v1/topics", &body));
    }

    /// Sets up a well-behaved neighbour as the current caller: pipeline
    /// `p` keeps the records of topic `orders` whose field `ok` is `true`
    /// in topic `kept`.
    pub fn start_neighbour_filter(&self) {
        self.create_topic("orders", 1);
        self.create_topic("kept", 1);
        let filter = std::fs::read(guest_path("filter")).expect("read the filter guest");
        self.expect(201, self.put_bytes("/v1/modules/filter", &filter));
        let spec = json!({"inputs": ["orders"], "stages": [{"module": "filter",
            "config": {"field": "ok", "equals": "true"}, "outputs": {"main": "kept"}}]});
        self.expect(201, self.put("/v1/pipelines/p", &spec));
    }

    /// The quick start's pipeline: `receipts` turns the purchases of topic
    /// `purchases` (2 partitions) into receipts in `currency`, in topic
    /// `receipts`.
    pub fn start_receipts(&self, currency: &str) {
        self.create_topic("purchases", 2);
        self.create_topic("receipts", 1);
        self.push_module("receipt", "receipt");
        let spec = json!({
            "inputs": ["purchases"],
            "stages": [{ "module": "receipt", "config": { "currency": currency },
                         "outputs": { "main": "receipts" } }],
        });
        self.expect(201, self.put("/v1/pipelines/receipts", &spec));
    }

    /// Uploads a guest built by the tests as module `name`.
    pub fn push_module(&self, name: &str, guest: &str) {
        let bytes = std::fs::read(guest_path(guest)).expect("read the guest");
        let (status, body) = self.put_bytes(&format!("/v1/modules/{name}"), &bytes);
        assert!(
            status == 201 || status == 200,
            "push {name}: {status} {body}"
        );
    }

    /// Produces records (API record objects); returns their offsets.
    pub fn produce(&self, topic: &str, records: Vec<Value>) -> Vec<Value> {
        let body = self.expect(
            200,
            self.post(
                &format!("/v1/topics/{topic}/records"),
                &json!({ "records": records }),
            ),
        );
        body["offsets"].as_array().expect("offsets").clone()
    }

    /// Every record of a topic partition from offset 0 to its end.
    pub fn records(&self, topic: &str, partition: u32) -> Vec<Value> {
        let mut records = Vec::new();
        let mut offset = 0;
        loop {
            let body = self.expect(
                200,
                self.get(&format!(
                    "/v1/topics/{topic}/records?partition={partition}&offset={offset}&limit=10000"
                )),
            );
            let batch = body["records"].as_array().expect("records").clone();
            if batch.is_empty() {
                return records;
            }
            offset = body["next_offset"].as_u64().expect("next_offset");
            records.extend(batch);
        }
    }

    /// The values of every record of partition 0 of a topic.
    pub fn values(&self, topic: &str) -> Vec<Value> {
        self.records(topic, 0)
            .into_iter()
            .map(|r| r["value"].clone())
            .collect()
    }

    /// A pipeline's status.
    pub fn pipeline(&self, name: &str) -> Value {
        self.expect(200, self.get(&format!("/v1/pipelines/{name}")))
    }

    /// Waits (up to 60 s) until `done` holds, polling.
    pub fn wait_until(&self, what: &str, done: impl Fn(&WeirServer) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while !done(self) {
            assert!(
                Instant::now() < deadline,
                "timed out waiting until {what}; server log in {}",
                self.dir.with_extension("server.log").display()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits until a pipeline has processed all its input.
    pub fn wait_caught_up(&self, pipeline: &str) {
        self.wait_until(&format!("pipeline {pipeline} catches up"), |s| {
            let status = s.pipeline(pipeline);
            assert_ne!(status["state"], "failed", "pipeline failed: {status}");
            status["lag"] == 0 && status["state"] == "running"
        });
    }

    /// Runs a client command against this server.
    pub fn cli(&self, args: &[&str]) -> Output {
        cli(&self.url, self.token.lock().unwrap().as_deref(), args, None)
    }

    /// Runs a client command with `stdin` as its input.
    pub fn cli_with_input(&self, args: &[&str], stdin: &str) -> Output {
        cli(
            &self.url,
            self.token.lock().unwrap().as_deref(),
            args,
            Some(stdin),
        )
    }
}

fn cli(url: &str, token: Option<&str>, args: &[&str], stdin: Option<&str>) -> Output {
    use std::io::Write;
    let mut command = Command::new(WEIR);
    if let Some(token) = token {
        command.env("WEIR_TOKEN", token);
    }
    let mut child = command
        .args(args)
        .env("WEIR_SERVER", url)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run the weir command line");
    let mut input = child.stdin.take().expect("piped stdin");
    input
        .write_all(stdin.unwrap_or("").as_bytes())
        .expect("write stdin");
    drop(input);
    child.wait_with_output().expect("wait for the command")
}

impl Drop for WeirServer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if std::thread::panicking() {
            // The data directory goes with the test: show what the server said.
            let log =
                std::fs::read_to_string(self.dir.with_extension("server.log")).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(40).collect();
            eprintln!("--- server log (last lines) ---");
            for line in tail.iter().rev() {
                eprintln!("{line}");
            }
        }
    }
}
