//! `weir`: the binary that wires Weir's crates together.
//!
//! The data path runs through crates of their own: `weir-format` (the
//! batch format), `log-core` (the embedded log), `weir-log` (the log
//! interface), `weir-host` (the WebAssembly operator host),
//! `weir-tenancy`, `weir-pipeline` and `weir-kafka`. This crate holds what
//! faces users:
//!
//! - [`server`]: `weir serve`, the HTTP API, wiring the services together
//! - [`cli`]: the `weir` command line (server, client commands, `run`, `demo`)
//! - [`run`]: `weir run`, one operator over JSON lines, for developing operators
//! - [`jsonl`]: records as JSON lines

pub mod cli;
pub mod jsonl;
pub mod run;
pub mod server;
