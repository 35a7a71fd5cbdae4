//! Weir's runtime: the host side of stream processing on top of the log.
//!
//! - [`operator`]: running sandboxed WebAssembly operators (the host of `wit/operator.wit`)
//! - [`run`]: `weir run`, one operator over JSON lines, for developing operators
//! - [`jsonl`]: records as JSON lines

pub mod jsonl;
pub mod operator;
pub mod run;
