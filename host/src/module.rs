//! Loading a module: checks, compilation (once, cached by digest; where
//! and within which limits is `compile.rs`'s business) and the pre-linked
//! form instances are made from.
//!
//! Refused with a clear message: too large; not WebAssembly; a core module
//! instead of a component; a component that does not compile; one that
//! imports anything outside WASI preview 2 and the contract (the unknown
//! imports are listed); one that does not export the operator world;
//! one whose compilation exceeds a limit (the limit is named).

use std::sync::Arc;
use std::time::Duration;

use sha2::{Digest, Sha256};
use wasmtime::component::Component;

use super::OperatorError;
use super::artifact::{self, ModuleDigest};
use super::compile::Compiler;
use super::engine::OperatorEngine;
use super::host::OperatorPre;

/// The contract's own interfaces a component may import.
const CONTRACT_IMPORTS: [&str; 4] = [
    "weir:operator/types@0.1.0",
    "weir:operator/state@0.1.0",
    "weir:operator/timers@0.1.0",
    "weir:operator/log@0.1.0",
];

/// Functions the operator world exports.
const REQUIRED_EXPORTS: [&str; 3] = ["init", "process", "on-timer"];

/// A validated, compiled module, ready to instantiate.
pub struct OperatorModule {
    pub name: String,
    /// SHA-256 of the module's bytes, in hex.
    pub digest: String,
    pub(crate) engine: OperatorEngine,
    pub(crate) pre: OperatorPre<super::host::HostState>,
}

impl std::fmt::Debug for OperatorModule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OperatorModule")
            .field("name", &self.name)
            .field("digest", &self.digest)
            .finish()
    }
}

/// Loads a module the caller trusts, compiling it in this process.
pub(crate) fn load(
    engine: &OperatorEngine,
    name: &str,
    bytes: &[u8],
) -> Result<Arc<OperatorModule>, OperatorError> {
    load_with(engine, &Compiler::in_process(), None, name, bytes)
}

/// Loads a module, compiling it with `compiler` in `tenant`'s queue unless
/// the cache has it.
pub(crate) fn load_with(
    engine: &OperatorEngine,
    compiler: &Compiler,
    tenant: Option<&str>,
    name: &str,
    bytes: &[u8],
) -> Result<Arc<OperatorModule>, OperatorError> {
    let limits = engine.limits();
    if bytes.len() > limits.max_module_bytes {
        return Err(OperatorError::ModuleTooLarge {
            size: bytes.len(),
            max: limits.max_module_bytes,
        });
    }
    check_header(bytes)?;
    let digest: ModuleDigest = Sha256::digest(bytes).into();
    let shared = &engine.shared;
    let cached = shared
        .cache
        .as_ref()
        .and_then(|c| c.get(&shared.engine, &digest));
    let (component, fresh) = match cached {
        Some(component) => (component, None),
        None => {
            let wall = Duration::from_millis(limits.max_compile_ms);
            let sealed = compiler.compile(&shared.engine, tenant, &digest, bytes, wall)?;
            let component = artifact::load(&shared.engine, &sealed, &digest).map_err(|e| {
                OperatorError::Host(format!("the compiler's artifact was refused: {e}"))
            })?;
            (component, Some(sealed))
        }
    };
    // Checked on every load, so a cache written under older rules is no loophole.
    check_world(&shared.engine, &component)?;
    if let (Some(sealed), Some(cache)) = (fresh, &shared.cache) {
        cache.put(&digest, &sealed);
    }
    let pre = shared
        .linker
        .instantiate_pre(&component)
        .and_then(OperatorPre::new)
        .map_err(|e| OperatorError::InvalidModule(format!("{e:#}")))?;
    Ok(Arc::new(OperatorModule {
        name: name.to_string(),
        digest: hex::encode(digest),
        engine: engine.clone(),
        pre,
    }))
}

// The engine's and the compiler's ways in, beside what they call, so that
// neither `engine` nor `compile` imports this module back.

impl OperatorEngine {
    /// Validates and compiles a module (or loads it from the cache).
    pub fn load(&self, name: &str, bytes: &[u8]) -> Result<Arc<OperatorModule>, OperatorError> {
        load(self, name, bytes)
    }
}

impl Compiler {
    /// Validates and loads a module like `OperatorEngine::load`, compiling
    /// it (unless the engine's cache has it) in `tenant`'s queue: `None`
    /// waits in the global queue only.
    pub fn load(
        &self,
        engine: &OperatorEngine,
        tenant: Option<&str>,
        name: &str,
        bytes: &[u8],
    ) -> Result<Arc<OperatorModule>, OperatorError> {
        load_with(engine, self, tenant, name, bytes)
    }
}

/// Tells apart non-WebAssembly bytes, core modules and components.
fn check_header(bytes: &[u8]) -> Result<(), OperatorError> {
    const MAGIC: &[u8] = b"\0asm";
    if bytes.len() < 8 || &bytes[..4] != MAGIC {
        return Err(OperatorError::InvalidModule(
            "not a WebAssembly binary (it does not start with \\0asm)".into(),
        ));
    }
    match bytes[4..8] {
        [0x0d, 0x00, 0x01, 0x00] => Ok(()),
        [0x01, 0x00, 0x00, 0x00] => Err(OperatorError::InvalidModule(
            "this is a core WebAssembly module, not a component: build it for the \
             wasm32-wasip2 target (cargo build --target wasm32-wasip2), which makes components"
                .into(),
        )),
        _ => Err(OperatorError::InvalidModule(format!(
            "unsupported WebAssembly version or layer {:02x?}",
            &bytes[4..8]
        ))),
    }
}

/// Checks imports against WASI preview 2 and the contract, and that the
/// operator functions are exported.
fn check_world(engine: &wasmtime::Engine, component: &Component) -> Result<(), OperatorError> {
    let ty = component.component_type();
    let unknown: Vec<String> = ty
        .imports(engine)
        .map(|(name, _)| name)
        .filter(|name| !(is_wasi_p2(name) || CONTRACT_IMPORTS.contains(name)))
        .map(str::to_string)
        .collect();
    if !unknown.is_empty() {
        return Err(OperatorError::UnknownImports(unknown));
    }
    let exports: Vec<&str> = ty.exports(engine).map(|(name, _)| name).collect();
    let missing: Vec<&str> = REQUIRED_EXPORTS
        .iter()
        .copied()
        .filter(|f| !exports.contains(f))
        .collect();
    if !missing.is_empty() {
        return Err(OperatorError::InvalidModule(format!(
            "the component does not export the weir:operator/operator world (missing {}); \
             build it with the weir-operator SDK or against wit/operator.wit",
            missing.join(", ")
        )));
    }
    Ok(())
}

fn is_wasi_p2(name: &str) -> bool {
    name.starts_with("wasi:") && name.contains("@0.2.")
}
