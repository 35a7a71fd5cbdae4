//! The WASI context operators get: one that grants nothing.
//!
//! Ordinary guests built with `std` (and guests from other languages)
//! import `wasi:cli`, `wasi:io`, `wasi:filesystem`, `wasi:sockets`,
//! `wasi:clocks` and `wasi:random`, so those are linked and they load; but
//! there are no preopened directories, no environment variables or
//! arguments, no stdin, every network address is refused and name lookup is
//! off. Both clocks are frozen at zero: event time comes from records and
//! the watermark, and a frozen clock keeps replays deterministic. Stdout and
//! stderr go to bounded in-memory pipes that the host copies to its log.

use std::time::Duration;

use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::{HostMonotonicClock, HostWallClock, WasiCtx};

/// A clock that never moves.
struct FrozenClock;

impl HostWallClock for FrozenClock {
    fn resolution(&self) -> Duration {
        Duration::from_secs(1)
    }

    fn now(&self) -> Duration {
        Duration::ZERO
    }
}

impl HostMonotonicClock for FrozenClock {
    fn resolution(&self) -> u64 {
        1_000_000_000
    }

    fn now(&self) -> u64 {
        0
    }
}

/// Builds the sandbox's WASI context around the given output pipes.
pub fn sandbox(stdout: MemoryOutputPipe, stderr: MemoryOutputPipe) -> WasiCtx {
    WasiCtx::builder()
        .stdout(stdout)
        .stderr(stderr)
        .wall_clock(FrozenClock)
        .monotonic_clock(FrozenClock)
        .socket_addr_check(|_, _| Box::pin(async { false }))
        .allow_ip_name_lookup(false)
        .allow_tcp(false)
        .allow_udp(false)
        .build()
}
