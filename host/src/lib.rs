//! Running operators: sandboxed WebAssembly components that implement the
//! contract in `wit/operator.wit`.
//!
//! - [`engine`]: the one shared wasmtime engine, linker and epoch ticker
//! - [`module`]: validating, compiling (with an on-disk cache) and loading modules
//! - [`compile`]: where compiles run (a child process with CPU, memory and
//!   wall-clock limits, for untrusted modules) and how many at once
//! - `artifact`, `cache`: compiled modules as checksummed bytes, and on disk
//! - [`instance`]: an operator instance: calls, limits, state, timers, recovery from traps
//! - `host`: the store's data and the contract's imports, one interface per file
//! - `guest_text`: text from guests, bounded and cleaned before the host shows it
//! - [`limits`], [`error`]

mod artifact;
mod cache;
pub mod compile;
pub mod engine;
pub mod error;
mod guest_text;
mod host;
pub mod instance;
pub mod limits;
pub mod module;

pub use compile::{CompileSettings, Compiler};
pub use engine::OperatorEngine;
pub use error::OperatorError;
pub use host::{KeyedState, StateDelta};
pub use instance::{CallOutput, InstanceOptions, OperatorInstance, Rejection, check_output_name};
pub use limits::Limits;
pub use module::OperatorModule;

/// The output a plain operator writes to (the SDK's `emit` and `forward`).
pub const MAIN_OUTPUT: &str = "main";
