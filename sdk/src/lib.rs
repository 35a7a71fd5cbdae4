//! `weir-operator`: write Weir stream operators in Rust.
//!
//! An operator is a WebAssembly component (built with
//! `cargo build --release --target wasm32-wasip2`) that Weir runs in a
//! sandbox over batches of records. This crate hides the contract
//! (`wit/operator.wit`): it reads input batches without copying, builds
//! output batches, keeps the instance between calls, and turns panics into
//! reports that name the record.
//!
//! # A complete operator
//!
//! ```ignore
//! use weir_operator::{Config, Input, export, filter};
//!
//! // Keeps records whose value does not start with the configured prefix.
//! // (`use<>`: the operator does not borrow from `config`.)
//! fn build(config: &Config) -> Result<impl weir_operator::Operator + use<>, String> {
//!     let prefix = config.get("prefix").unwrap_or("x").as_bytes().to_vec();
//!     Ok(filter(move |record: &Input| !record.value().starts_with(&prefix)))
//! }
//!
//! export!(build);
//! ```
//!
//! with, in `Cargo.toml`:
//!
//! ```toml
//! [lib]
//! crate-type = ["cdylib"]
//!
//! [dependencies]
//! weir-operator = { path = "../../sdk" }
//! ```
//!
//! # Shapes
//! - [`filter`]: keep or drop each record, unchanged.
//! - [`map`]: a new value for each record (same key and timestamp).
//! - [`filter_map`]: a new value, or nothing.
//! - [`flat_map`]: any number of new values.
//! - any type implementing [`Operator`]: full control, including several
//!   outputs, keyed [`state`], event-time [`timers`] and rejections.
//!
//! Errors: return [`Error::Reject`] (or use `?` on a JSON error) to refuse
//! one record and go on; [`Error::Fail`] fails the whole call.

pub mod bindings;
mod config;
mod emitter;
mod error;
mod input;
pub mod log;
#[doc(hidden)]
pub mod runtime;
mod shapes;
pub mod state;
pub mod timers;

pub use config::Config;
pub use emitter::{Emitter, MAIN};
pub use error::Error;
pub use input::Input;
pub use shapes::{filter, filter_map, flat_map, map};
pub use weir_format::{Header, Record};

/// A stream operator: called once per input record and once per fired
/// timer. Built by the function given to [`export!`].
pub trait Operator {
    /// Handles one input record, emitting any number of records.
    fn process(&mut self, record: &Input<'_>, out: &mut Emitter) -> Result<(), Error>;

    /// Handles an event-time timer set with [`timers::set`] once the
    /// watermark has passed its time. By default, does nothing.
    fn on_timer(&mut self, key: &[u8], at: i64, out: &mut Emitter) -> Result<(), Error> {
        let _ = (key, at, out);
        Ok(())
    }
}

/// Exports an operator from this crate. The argument is a function (or
/// closure) from [`&Config`](Config) to `Result<O, String>` for an
/// [`Operator`] type `O` (write `impl Operator + use<>` to return a shape),
/// called once when the operator starts; an `Err` reports bad configuration.
#[macro_export]
macro_rules! export {
    ($build:expr) => {
        struct __WeirOperator;

        impl $crate::bindings::Guest for __WeirOperator {
            fn init(config: ::std::vec::Vec<(::std::string::String, ::std::string::String)>) -> ::std::result::Result<(), ::std::string::String> {
                $crate::runtime::init(config, $build)
            }

            fn process(input: ::std::vec::Vec<u8>) -> ::std::result::Result<$crate::bindings::Outcome, $crate::bindings::Failure> {
                $crate::runtime::process(&input, $build)
            }

            fn on_timer(fired: ::std::vec::Vec<$crate::bindings::Timer>) -> ::std::result::Result<$crate::bindings::Outcome, $crate::bindings::Failure> {
                $crate::runtime::on_timer(fired, $build)
            }
        }

        $crate::bindings::export_operator_world!(__WeirOperator with_types_in $crate::bindings);
    };
}
