//! The host side of the operator contract: bindings generated from
//! `wit/operator.wit`, the data each instance's store holds, and the
//! implementations of the contract's imports, one interface per file.

mod keyed;
mod log;
mod state;
mod timers;
mod wasi;

use std::time::Instant;

use wasmtime::component::Linker;
use wasmtime::component::ResourceTable;
use wasmtime::{CallHook, ResourceLimiter, StoreContextMut};
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use self::weir::operator::types::Level;

pub use keyed::{KeyedState, StateDelta};
pub use log::LogBudget;
use wasi::link_never_blocking_clocks;

/// Fuel charged per nanosecond the host spends in a call from the guest
/// (logging, state, WASI): about what the guest's own instructions cost
/// per nanosecond here, so one budget bounds both.
pub const FUEL_PER_HOST_NS: u64 = 1;

wasmtime::component::bindgen!({
    world: "operator",
    path: "../wit",
    imports: { default: trappable },
});

/// What an operator keeps across instances (an instance that trapped is
/// replaced): its keyed state and its log budget.
pub struct Carried {
    pub keyed: KeyedState,
    pub log_rate: LogBudget,
}

/// Everything an instance's store holds.
pub struct HostState {
    /// Which operator this is, for log messages.
    pub operator: String,
    wasi: WasiCtx,
    table: ResourceTable,
    stdout: MemoryOutputPipe,
    stderr: MemoryOutputPipe,
    /// Bytes of stdout and stderr already copied to the host's log.
    stdio_logged: (usize, usize),
    /// Keyed state, timers and watermark; outlives instances.
    pub keyed: KeyedState,
    /// Log messages left in this call.
    log_budget: usize,
    /// Log bytes per second, over time.
    log_rate: LogBudget,
    /// When the guest's current call into the host began, and how deeply
    /// host calls are nested (a host function lowering its result calls
    /// the guest's allocator, which may call the host to grow memory); see
    /// [`charge_host_time`].
    host_entered: Option<Instant>,
    host_depth: u32,
    /// What the guest reported just before trapping (the SDK's panic hook).
    pub fatal: Option<(Option<u64>, String)>,
    max_memory_bytes: usize,
    max_stdio_bytes: usize,
    /// Set when the guest asked for more memory than its limit.
    pub memory_denied: Option<usize>,
    /// Set when a host function refused a request over a limit (which limit, why).
    pub limit_hit: Option<(&'static str, String)>,
}

impl HostState {
    pub fn new(
        operator: &str,
        carried: Carried,
        max_memory_bytes: usize,
        max_stdio_bytes: usize,
    ) -> HostState {
        let stdout = MemoryOutputPipe::new(max_stdio_bytes);
        let stderr = MemoryOutputPipe::new(max_stdio_bytes);
        HostState {
            operator: operator.to_string(),
            wasi: wasi::sandbox(stdout.clone(), stderr.clone()),
            table: ResourceTable::new(),
            stdout,
            stderr,
            stdio_logged: (0, 0),
            keyed: carried.keyed,
            log_budget: 0,
            log_rate: carried.log_rate,
            host_entered: None,
            host_depth: 0,
            fatal: None,
            max_memory_bytes,
            max_stdio_bytes,
            memory_denied: None,
            limit_hit: None,
        }
    }

    /// What outlives this instance.
    pub fn into_carried(self) -> Carried {
        Carried {
            keyed: self.keyed,
            log_rate: self.log_rate,
        }
    }

    /// Starts a call: resets the per-call budgets and reports.
    pub fn begin_call(&mut self, log_budget: usize) {
        self.log_budget = log_budget;
        self.host_entered = None;
        self.host_depth = 0;
        self.fatal = None;
        self.memory_denied = None;
        self.limit_hit = None;
    }

    /// Turns a refused request into a trap, remembering which limit it hit.
    fn refuse(&mut self, limit: &'static str, detail: String) -> wasmtime::Error {
        let error = wasmtime::Error::msg(detail.clone());
        self.limit_hit = Some((limit, detail));
        error
    }

    /// True once stdout or stderr reached its capacity (further writes fail).
    pub fn stdio_full(&self) -> bool {
        [&self.stdout, &self.stderr]
            .iter()
            .any(|p| p.contents().len() >= self.max_stdio_bytes)
    }

    /// Copies what the guest printed since the last call into the host's
    /// log, line by line, through the same budgets as its log messages.
    pub fn drain_stdio(&mut self) {
        let mut printed = Vec::new();
        for (stream, pipe, logged) in [
            ("stdout", &self.stdout, &mut self.stdio_logged.0),
            ("stderr", &self.stderr, &mut self.stdio_logged.1),
        ] {
            let contents = pipe.contents();
            if contents.len() > *logged {
                printed.push((stream, contents.slice(*logged..)));
                *logged = contents.len();
            }
        }
        for (stream, bytes) in printed {
            for line in String::from_utf8_lossy(&bytes).lines() {
                self.guest_line(Level::Info, Some(stream), line);
            }
        }
    }
}

/// The store's call hook: charges the time the host spends in each call
/// from the guest (copying a large log message, cloning state, WASI work)
/// to the call's fuel, at [`FUEL_PER_HOST_NS`], so a guest cannot make
/// the host work outside its CPU budget. Once the fuel is gone the guest
/// traps at its next instruction ("CPU per call").
pub fn charge_host_time(
    mut store: StoreContextMut<'_, HostState>,
    hook: CallHook,
) -> wasmtime::Result<()> {
    let state = store.data_mut();
    match hook {
        CallHook::CallingHost => {
            if state.host_depth == 0 {
                state.host_entered = Some(Instant::now());
            }
            state.host_depth += 1;
        }
        CallHook::ReturningFromHost => {
            state.host_depth = state.host_depth.saturating_sub(1);
            // Charged once, for the outermost host call: it includes any
            // nested guest code, which also used fuel (charged twice, a
            // little, rather than not at all).
            if state.host_depth == 0
                && let Some(entered) = state.host_entered.take()
            {
                let spent = u64::try_from(entered.elapsed().as_nanos()).unwrap_or(u64::MAX);
                let fuel = store.get_fuel()?;
                store.set_fuel(fuel.saturating_sub(spent.saturating_mul(FUEL_PER_HOST_NS)))?;
            }
        }
        CallHook::CallingWasm | CallHook::ReturningFromWasm => {}
    }
    Ok(())
}

/// Links WASI (granting nothing, see `wasi`) and the contract's imports.
pub fn link(linker: &mut Linker<HostState>) -> anyhow::Result<()> {
    use anyhow::Context;
    wasmtime_wasi::p2::add_to_linker_sync(linker)
        .map_err(anyhow::Error::from)
        .context("while linking WASI")?;
    link_never_blocking_clocks(linker).context("while linking the sandbox's clocks")?;
    Operator::add_to_linker::<_, wasmtime::component::HasSelf<_>>(linker, |state| state)
        .map_err(anyhow::Error::from)
        .context("while linking the operator contract")?;
    Ok(())
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl ResourceLimiter for HostState {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.max_memory_bytes {
            self.memory_denied = Some(desired);
            wasmtime::bail!(
                "memory limit of {} bytes exceeded: the operator asked for {desired}",
                self.max_memory_bytes
            );
        }
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= 1_000_000)
    }
}

impl weir::operator::types::Host for HostState {}
