//! `weir:operator/timers`: the watermark and event-time timers, backed by
//! [`KeyedState`](super::KeyedState). The instance fires due timers after
//! each `process` call.

use super::HostState;
use super::weir::operator::timers::Host;

impl Host for HostState {
    fn watermark(&mut self) -> wasmtime::Result<i64> {
        Ok(self.keyed.watermark())
    }

    fn set(&mut self, key: Vec<u8>, at: i64) -> wasmtime::Result<()> {
        self.keyed
            .set_timer(key, at)
            .map_err(|hit| self.refuse(hit.limit, hit.detail))
    }

    fn cancel(&mut self, key: Vec<u8>, at: i64) -> wasmtime::Result<()> {
        self.keyed
            .cancel_timer(key, at)
            .map_err(|hit| self.refuse(hit.limit, hit.detail))
    }
}
