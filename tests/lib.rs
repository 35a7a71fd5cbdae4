//! Shared helpers for the integration tests live in `all/`; this crate has no library code.
