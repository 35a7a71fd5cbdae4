//! Where the benchmarks find the WebAssembly guests: `WEIR_GUESTS_DIR`, or the
//! directory `tests/build.rs` builds them into (`cargo test -p weir-tests
//! --no-run` does it).

use std::path::PathBuf;

pub fn guests_dir() -> PathBuf {
    std::env::var_os("WEIR_GUESTS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/guests/wasm32-wasip2/release")
        })
}
