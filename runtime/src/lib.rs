//! Weir's runtime: the host side of stream processing on top of the log.
//!
//! - [`operator`]: running sandboxed WebAssembly operators (the host of `wit/operator.wit`)
//! - [`run`]: `weir run`, one operator over JSON lines, for developing operators
//! - [`jsonl`]: records as JSON lines
//! - [`stream_log`]: the narrow log interface everything above the log uses
//! - [`pipeline`]: chains of operators over topics, exactly once
//! - [`modules`]: uploaded operator modules and their versions
//! - [`server`]: `weir serve`, the HTTP API
//! - [`kafka`]: the Kafka wire protocol beside it
//! - [`tenancy`]: tenants, credentials and namespaces
//! - [`cli`]: the `weir` command line (server, client commands, `run`, `demo`)
//! - [`partitioner`], [`files`]: choosing partitions; durable metadata files

pub mod cli;
pub mod files;
pub mod jsonl;
pub mod kafka;
pub mod modules;
pub mod operator;
pub mod partitioner;
pub mod pipeline;
pub mod run;
pub mod server;
pub mod stream_log;
pub mod tenancy;
