//! `weir:operator/log`: guest log messages into the host's `tracing` log,
//! tagged with the operator, truncated and rate-limited per call.

use super::HostState;
use super::weir::operator::log::Host;
use super::weir::operator::types::Level;

/// Longest message kept, in bytes.
const MAX_MESSAGE: usize = 4096;

fn truncate(message: &str) -> &str {
    if message.len() <= MAX_MESSAGE {
        return message;
    }
    let mut end = MAX_MESSAGE;
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    &message[..end]
}

impl Host for HostState {
    fn log(&mut self, level: Level, message: String) -> wasmtime::Result<()> {
        if self.log_budget == 0 {
            return Ok(());
        }
        self.log_budget -= 1;
        let (operator, message) = (&self.operator, truncate(&message));
        match level {
            Level::Trace => tracing::trace!(%operator, "{message}"),
            Level::Debug => tracing::debug!(%operator, "{message}"),
            Level::Info => tracing::info!(%operator, "{message}"),
            Level::Warn => tracing::warn!(%operator, "{message}"),
            Level::Error => tracing::error!(%operator, "{message}"),
        }
        Ok(())
    }

    fn fatal(&mut self, offset: Option<u64>, message: String) -> wasmtime::Result<()> {
        self.fatal = Some((offset, truncate(&message).to_string()));
        Ok(())
    }
}
