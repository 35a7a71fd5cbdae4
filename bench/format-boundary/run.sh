#!/usr/bin/env bash
# Build the guest component and the host, run the filter tests, then the benchmark.
# Usage: ./run.sh [SECONDS_PER_RUN]   (default 1.0; each case = median of 3 runs)
set -euo pipefail
cd "$(dirname "$0")"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"
rustup target list --installed | grep -qx wasm32-wasip2 || rustup target add wasm32-wasip2
cargo test -p weir-bench-filter
cargo build --release --target wasm32-wasip2 -p weir-bench-guest
cargo build --release -p weir-bench-host
"$CARGO_TARGET_DIR/release/weir-bench-host" \
  "$CARGO_TARGET_DIR/wasm32-wasip2/release/weir_bench_guest.wasm" "${1:-1.0}"
