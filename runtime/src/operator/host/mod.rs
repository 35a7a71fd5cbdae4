//! The host side of the operator contract: bindings generated from
//! `wit/operator.wit`, the data each instance's store holds, and the
//! implementations of the contract's imports, one interface per file.

mod keyed;
mod log;
mod state;
mod timers;
mod wasi;

use wasmtime::ResourceLimiter;
use wasmtime::component::ResourceTable;
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

pub use keyed::{KeyedState, StateDelta};

wasmtime::component::bindgen!({
    world: "operator",
    path: "../wit",
    imports: { default: trappable },
});

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
        keyed: KeyedState,
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
            keyed,
            log_budget: 0,
            fatal: None,
            max_memory_bytes,
            max_stdio_bytes,
            memory_denied: None,
            limit_hit: None,
        }
    }

    /// Starts a call: resets the per-call budgets and reports.
    pub fn begin_call(&mut self, log_budget: usize) {
        self.log_budget = log_budget;
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

    /// Copies what the guest printed since the last call into the host's log.
    pub fn drain_stdio(&mut self) {
        for (name, pipe, logged) in [
            ("stdout", &self.stdout, &mut self.stdio_logged.0),
            ("stderr", &self.stderr, &mut self.stdio_logged.1),
        ] {
            let contents = pipe.contents();
            if contents.len() > *logged {
                let text = String::from_utf8_lossy(&contents[*logged..]);
                for line in text.lines() {
                    tracing::info!(operator = %self.operator, stream = name, "{line}");
                }
                *logged = contents.len();
            }
        }
    }
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
