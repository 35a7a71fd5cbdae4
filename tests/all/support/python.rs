//! Python clients for the tests: a virtual environment under the build
//! folder (`CARGO_TARGET_TMPDIR`) with pinned packages from PyPI, made on
//! first use (so `cargo test` on a fresh machine installs it) and reused
//! afterwards.

use std::path::PathBuf;
use std::process::Command;
use std::sync::Mutex;

/// The packages the tests' Python scripts import.
const PACKAGES: &[&str] = &[
    "kafka-python==3.0.12",
    // kafka-python's optional codecs: snappy, zstd, lz4.
    "python-snappy==0.7.3",
    "cramjam==2.14.0",
    "zstandard==0.25.0",
    "lz4==4.4.5",
];

static MADE: Mutex<Option<PathBuf>> = Mutex::new(None);

/// The Python interpreter of the tests' virtual environment.
pub fn python() -> PathBuf {
    let mut made = MADE.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(python) = &*made {
        return python.clone();
    }
    let venv = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("python-venv");
    let python = venv.join("bin").join("python");
    let marker = venv.join(format!("installed-{}", PACKAGES.join("-")));
    // Another `cargo test` may be making it at the same time.
    std::fs::create_dir_all(&venv).expect("create the venv folder");
    let lock = std::fs::File::create(venv.with_extension("lock")).expect("create the venv lock");
    lock.lock().expect("lock the venv");
    if !marker.exists() {
        run(Command::new("python3")
            .args(["-m", "venv", "--clear"])
            .arg(&venv));
        run(Command::new(&python)
            .args([
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
            ])
            .args(PACKAGES));
        std::fs::write(&marker, "").expect("mark the venv complete");
    }
    *made = Some(python.clone());
    python
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
