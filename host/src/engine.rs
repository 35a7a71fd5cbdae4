//! The shared wasmtime engine: one per process, configured for sandboxing.
//!
//! Fuel metering bounds each call's CPU deterministically; epoch
//! interruption (a ticker thread advancing the epoch every 10 ms) is only a
//! wall-clock backstop, because under CPU contention a tight wall-clock
//! deadline interrupts well-behaved code. Neither acts while the guest is
//! in a host call, so host calls never block (`host/wasi.rs`) and their
//! time is charged to the fuel (`host::charge_host_time`). The linker
//! holds WASI preview 2 (with a context that grants nothing) and the
//! contract's own imports.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use wasmtime::component::Linker;
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

use super::cache::ArtifactCache;
use super::host::{self, HostState};
use super::limits::Limits;

/// How often the epoch advances.
pub const EPOCH_TICK: Duration = Duration::from_millis(10);

/// Compiles and runs operators. Cheap to share (`Arc` inside).
#[derive(Clone)]
pub struct OperatorEngine {
    pub(crate) shared: Arc<Shared>,
}

pub(crate) struct Shared {
    pub engine: Engine,
    pub linker: Linker<HostState>,
    pub limits: Limits,
    pub cache: Option<ArtifactCache>,
}

impl OperatorEngine {
    /// An engine with `limits`, caching compiled modules in `cache_dir` when
    /// given. Instances get their memory on demand.
    pub fn new(limits: Limits, cache_dir: Option<PathBuf>) -> anyhow::Result<OperatorEngine> {
        Self::build(limits, cache_dir, None)
    }

    /// Like [`new`](Self::new), but instances come from a pool of `instances`
    /// preallocated slots (faster instantiation, memory reserved up front).
    pub fn with_pooling(
        limits: Limits,
        cache_dir: Option<PathBuf>,
        instances: u32,
    ) -> anyhow::Result<OperatorEngine> {
        Self::build(limits, cache_dir, Some(instances))
    }

    fn build(
        limits: Limits,
        cache_dir: Option<PathBuf>,
        pool: Option<u32>,
    ) -> anyhow::Result<OperatorEngine> {
        let engine = Engine::new(&wasmtime_config(&limits, pool))
            .map_err(anyhow::Error::from)
            .context("while creating the wasmtime engine")?;
        let mut linker = Linker::new(&engine);
        host::link(&mut linker)?;
        let cache = cache_dir.map(ArtifactCache::open).transpose()?;
        spawn_epoch_ticker(&engine);
        Ok(OperatorEngine {
            shared: Arc::new(Shared {
                engine,
                linker,
                limits,
                cache,
            }),
        })
    }

    pub fn limits(&self) -> &Limits {
        &self.shared.limits
    }
}

/// Advances the engine's epoch every [`EPOCH_TICK`] for as long as the engine lives.
fn spawn_epoch_ticker(engine: &Engine) {
    let weak = engine.weak();
    std::thread::Builder::new()
        .name("weir-epoch".into())
        .spawn(move || {
            while let Some(engine) = weak.upgrade() {
                engine.increment_epoch();
                drop(engine);
                std::thread::sleep(EPOCH_TICK);
            }
        })
        .expect("spawning the epoch ticker");
}

/// The wasmtime configuration of an engine with `limits`, pooled with
/// `pool` instance slots when given. The compiler process (`compile.rs`)
/// uses it too: artifacts load only into an engine configured alike.
pub(crate) fn wasmtime_config(limits: &Limits, pool: Option<u32>) -> Config {
    let mut config = Config::new();
    config
        .wasm_component_model(true)
        .consume_fuel(true)
        .epoch_interruption(true);
    if let Some(instances) = pool {
        let mut pooling = PoolingAllocationConfig::default();
        pooling
            .total_component_instances(instances)
            .total_core_instances(instances * 16)
            .total_memories(instances * 4)
            .total_tables(instances * 4)
            .max_core_instances_per_component(16)
            .max_memories_per_component(4)
            .max_tables_per_component(4)
            .max_memory_size(limits.max_memory_bytes);
        config.allocation_strategy(InstanceAllocationStrategy::Pooling(pooling));
    }
    config
}
