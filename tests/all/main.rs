//! Weir's integration tests: one binary, one module per area.

mod log_api;
mod log_crash;
mod log_faults;
mod log_model;
mod log_power_loss;
mod log_torn_writes;
mod operator_examples;
mod operators;
mod support;
mod weir_run;
