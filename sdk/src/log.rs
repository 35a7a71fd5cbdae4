//! Logging to the host, which tags messages with the operator.

use crate::bindings::weir::operator::log as host;
use crate::bindings::weir::operator::types::Level;

pub fn trace(message: &str) {
    host::log(Level::Trace, message)
}

pub fn debug(message: &str) {
    host::log(Level::Debug, message)
}

pub fn info(message: &str) {
    host::log(Level::Info, message)
}

pub fn warn(message: &str) {
    host::log(Level::Warn, message)
}

pub fn error(message: &str) {
    host::log(Level::Error, message)
}
