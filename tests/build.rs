//! Builds the WebAssembly guests the tests run: the example operators in
//! `guest-examples/` and the hostile fixtures in `tests/guests/`, as
//! components for `wasm32-wasip2`, with a nested cargo into its own target
//! directory (as wasmtime's own test programs do). Tests find them through
//! the `WEIR_GUESTS_DIR` environment variable set at compile time.
//!
//! The `wasm32-wasip2` target must be installed (`rustup target add
//! wasm32-wasip2`, which the README's commands and `.ci/run` do).

use std::path::{Path, PathBuf};
use std::process::Command;

const WORKSPACES: [&str; 2] = ["guest-examples", "tests/guests"];

fn main() {
    let manifest_dir = PathBuf::from(
        std::env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"),
    );
    let root = manifest_dir
        .parent()
        .expect("tests/ is inside the repository")
        .to_path_buf();
    let target_dir = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"))
        .join("guests");
    for dir in ["sdk", "format/src", "wit", "guest-examples", "tests/guests"] {
        println!("cargo:rerun-if-changed={}", root.join(dir).display());
    }
    for workspace in WORKSPACES {
        build(&root.join(workspace), &target_dir);
    }
    let out = target_dir.join("wasm32-wasip2").join("release");
    println!("cargo:rustc-env=WEIR_GUESTS_DIR={}", out.display());
}

fn build(workspace: &Path, target_dir: &Path) {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let status = Command::new(cargo)
        .args([
            "build",
            "--release",
            "--target",
            "wasm32-wasip2",
            "--manifest-path",
        ])
        .arg(workspace.join("Cargo.toml"))
        .env("CARGO_TARGET_DIR", target_dir)
        // Settings meant for the host build must not leak into the guests'.
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env_remove("CARGO_BUILD_RUSTFLAGS")
        .env_remove("CARGO_MAKEFLAGS")
        .env_remove("RUSTC_WORKSPACE_WRAPPER")
        .status()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run cargo to build the guests in {}: {e}",
                workspace.display()
            )
        });
    assert!(
        status.success(),
        "building the guests in {} failed; is the wasm32-wasip2 target installed? (rustup target add wasm32-wasip2)",
        workspace.display()
    );
}
