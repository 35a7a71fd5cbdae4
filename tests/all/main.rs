//! Weir's integration tests: one binary, one module per area.

mod cluster;
mod compile;
mod exactly_once;
mod formats;
mod host_work;
mod http_api;
mod kafka;
mod kafka_tenancy;
mod log_api;
mod log_crash;
mod log_faults;
mod log_model;
mod log_power_loss;
mod log_torn_writes;
mod operator_examples;
mod operators;
mod pipeline_core;
mod pipelines;
mod sandbox_served;
mod support;
mod tenancy;
mod weir_run;
