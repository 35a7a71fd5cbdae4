//! What Weir's benchmarks (`benches/`) share: where the guests are, and
//! the summary table each prints. The benchmarks live in this crate of
//! their own so that ordinary builds never compile `rdkafka`'s C library.
//!
//! - [`guests`]: where the WebAssembly guests are built
//! - [`report`]: the summary table, ready to paste into `BENCHMARKS.md`

pub mod guests;
pub mod report;
