//! `weir:operator/state`: keyed state, backed by [`KeyedState`](super::KeyedState).

use super::HostState;
use super::weir::operator::state::Host;

impl Host for HostState {
    fn get(&mut self, key: Vec<u8>) -> wasmtime::Result<Option<Vec<u8>>> {
        Ok(self.keyed.get(&key).cloned())
    }

    fn put(&mut self, key: Vec<u8>, value: Vec<u8>) -> wasmtime::Result<()> {
        self.keyed
            .put(key, value)
            .map_err(|hit| self.refuse(hit.limit, hit.detail))
    }

    fn delete(&mut self, key: Vec<u8>) -> wasmtime::Result<()> {
        self.keyed
            .delete(&key)
            .map_err(|hit| self.refuse(hit.limit, hit.detail))
    }
}
