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
//!
//! **Nothing blocks.** A call blocked in the host cannot be interrupted
//! (epoch deadlines and fuel only act while WebAssembly runs), so no WASI
//! function may wait: every wait on the monotonic clock (`std::thread::sleep`,
//! timeouts in `poll`) is over at once, as if the sandbox's frozen time
//! had jumped to its end. A guest that waits in a loop for time to pass
//! spins until its fuel is gone. Stdin is empty and closed, the output
//! pipes never wait, and sockets and files are refused, so there is no
//! other way to block.

use std::time::Duration;

use wasmtime::StoreContextMut;
use wasmtime::component::{Linker, Resource, ResourceTable};
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::p2::{DynPollable, Pollable, subscribe};
use wasmtime_wasi::{HostMonotonicClock, HostWallClock, WasiCtx};

use super::HostState;

/// The monotonic-clock interface as `add_to_linker_sync` defines it
/// (guests importing older 0.2 versions are resolved to it by semver).
const MONOTONIC_CLOCK: &str = "wasi:clocks/monotonic-clock@0.2.12";

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

/// A wait that is over as soon as it starts.
struct Elapsed;

#[wasmtime_wasi::async_trait]
impl Pollable for Elapsed {
    async fn ready(&mut self) {}
}

fn elapsed_wait(table: &mut ResourceTable) -> wasmtime::Result<Resource<DynPollable>> {
    let wait = table.push(Elapsed)?;
    subscribe(table, wait)
}

/// Replaces WASI's clock subscriptions (which sleep in real time) with
/// waits that are over at once.
pub fn link_never_blocking_clocks(linker: &mut Linker<HostState>) -> anyhow::Result<()> {
    linker.allow_shadowing(true);
    let mut clock = linker.instance(MONOTONIC_CLOCK)?;
    clock.func_wrap(
        "subscribe-duration",
        |mut store: StoreContextMut<'_, HostState>, (_duration,): (u64,)| {
            Ok((elapsed_wait(&mut store.data_mut().table)?,))
        },
    )?;
    clock.func_wrap(
        "subscribe-instant",
        |mut store: StoreContextMut<'_, HostState>, (_instant,): (u64,)| {
            Ok((elapsed_wait(&mut store.data_mut().table)?,))
        },
    )?;
    linker.allow_shadowing(false);
    Ok(())
}
