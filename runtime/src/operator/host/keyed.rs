//! Keyed state, timers and the watermark of one operator: the host-side
//! memory an operator keeps between calls and across re-instantiation.
//!
//! Changes made during a call are journaled: a call that fails or traps is
//! rolled back, so state always matches the inputs that were processed
//! successfully (what pipelines checkpoint). Sizes are bounded by limits.
//!
//! For checkpoints, the keys and timers touched since the last one are
//! remembered: [`KeyedState::take_delta`] hands out their current values,
//! [`KeyedState::snapshot`] everything, and [`KeyedState::apply`] replays
//! either onto a fresh state.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;

/// The watermark before any record.
pub const NO_WATERMARK: i64 = i64::MIN;

#[derive(Debug, Clone)]
enum Undo {
    Value { key: Vec<u8>, old: Option<Vec<u8>> },
    TimerAdded(i64, Vec<u8>),
    TimerRemoved(i64, Vec<u8>),
    Watermark(i64),
}

/// Keyed state, timers and watermark as of a checkpoint: either the
/// changes since the previous checkpoint or (a snapshot) all of it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateDelta {
    /// Keys and their values; `None` deletes the key.
    pub values: Vec<(ByteBuf, Option<ByteBuf>)>,
    /// Timers as (time, key, set): `false` removes the timer.
    pub timers: Vec<(i64, ByteBuf, bool)>,
    pub watermark: i64,
}

/// State, timers and watermark of one operator instance.
#[derive(Debug, Clone)]
pub struct KeyedState {
    values: BTreeMap<Vec<u8>, Vec<u8>>,
    bytes: usize,
    timers: BTreeSet<(i64, Vec<u8>)>,
    watermark: i64,
    undo: Vec<Undo>,
    /// Keys and timers changed since the last `take_delta`.
    dirty_keys: BTreeSet<Vec<u8>>,
    dirty_timers: BTreeSet<(i64, Vec<u8>)>,
    max_bytes: usize,
    max_timers: usize,
}

impl KeyedState {
    pub fn new(max_bytes: usize, max_timers: usize) -> KeyedState {
        KeyedState {
            values: BTreeMap::new(),
            bytes: 0,
            timers: BTreeSet::new(),
            watermark: NO_WATERMARK,
            undo: Vec::new(),
            dirty_keys: BTreeSet::new(),
            dirty_timers: BTreeSet::new(),
            max_bytes,
            max_timers,
        }
    }

    pub fn get(&self, key: &[u8]) -> Option<&Vec<u8>> {
        self.values.get(key)
    }

    /// Stores a value, or explains which limit it would break.
    pub fn put(&mut self, key: Vec<u8>, value: Vec<u8>) -> Result<(), String> {
        let old_len = self.values.get(&key).map_or(0, |v| key.len() + v.len());
        let new_bytes = self.bytes - old_len + key.len() + value.len();
        if new_bytes > self.max_bytes {
            return Err(format!(
                "state limit of {} bytes exceeded (would be {new_bytes})",
                self.max_bytes
            ));
        }
        self.bytes = new_bytes;
        self.dirty_keys.insert(key.clone());
        let old = self.values.insert(key.clone(), value);
        self.undo.push(Undo::Value { key, old });
        Ok(())
    }

    pub fn delete(&mut self, key: &[u8]) {
        if let Some(old) = self.values.remove(key) {
            self.bytes -= key.len() + old.len();
            self.dirty_keys.insert(key.to_vec());
            self.undo.push(Undo::Value {
                key: key.to_vec(),
                old: Some(old),
            });
        }
    }

    pub fn watermark(&self) -> i64 {
        self.watermark
    }

    /// Moves the watermark forward (never back).
    pub fn advance_watermark(&mut self, to: i64) {
        if to > self.watermark {
            self.undo.push(Undo::Watermark(self.watermark));
            self.watermark = to;
        }
    }

    pub fn set_timer(&mut self, key: Vec<u8>, at: i64) -> Result<(), String> {
        if self.timers.len() >= self.max_timers {
            return Err(format!("timer limit of {} exceeded", self.max_timers));
        }
        if self.timers.insert((at, key.clone())) {
            self.dirty_timers.insert((at, key.clone()));
            self.undo.push(Undo::TimerAdded(at, key));
        }
        Ok(())
    }

    pub fn cancel_timer(&mut self, key: Vec<u8>, at: i64) {
        let entry = (at, key);
        if self.timers.remove(&entry) {
            self.dirty_timers.insert(entry.clone());
            self.undo.push(Undo::TimerRemoved(entry.0, entry.1));
        }
    }

    /// Removes and returns the timers due at the current watermark, in
    /// order of time, then key.
    pub fn take_due_timers(&mut self) -> Vec<(i64, Vec<u8>)> {
        let mut due = Vec::new();
        while let Some(first) = self.timers.first() {
            if first.0 > self.watermark {
                break;
            }
            let (at, key) = self.timers.pop_first().expect("just looked at it");
            self.dirty_timers.insert((at, key.clone()));
            self.undo.push(Undo::TimerRemoved(at, key.clone()));
            due.push((at, key));
        }
        due
    }

    /// Makes this call's changes permanent.
    pub fn commit(&mut self) {
        self.undo.clear();
    }

    /// Undoes every change since the last commit.
    pub fn rollback(&mut self) {
        while let Some(undo) = self.undo.pop() {
            match undo {
                Undo::Value { key, old } => {
                    if let Some(v) = self.values.remove(&key) {
                        self.bytes -= key.len() + v.len();
                    }
                    if let Some(old) = old {
                        self.bytes += key.len() + old.len();
                        self.values.insert(key, old);
                    }
                }
                Undo::TimerAdded(at, key) => {
                    self.timers.remove(&(at, key));
                }
                Undo::TimerRemoved(at, key) => {
                    self.timers.insert((at, key));
                }
                Undo::Watermark(w) => self.watermark = w,
            }
        }
    }

    /// The keys and timers changed since the last call (rolled-back changes
    /// may be included, with their current values), and the watermark.
    pub fn take_delta(&mut self) -> StateDelta {
        let keys = std::mem::take(&mut self.dirty_keys);
        let timers = std::mem::take(&mut self.dirty_timers);
        StateDelta {
            values: keys
                .into_iter()
                .map(|key| {
                    let value = self.values.get(&key).cloned().map(ByteBuf::from);
                    (ByteBuf::from(key), value)
                })
                .collect(),
            timers: timers
                .into_iter()
                .map(|(at, key)| {
                    let set = self.timers.contains(&(at, key.clone()));
                    (at, ByteBuf::from(key), set)
                })
                .collect(),
            watermark: self.watermark,
        }
    }

    /// All of the state, timers and watermark.
    pub fn snapshot(&self) -> StateDelta {
        StateDelta {
            values: self
                .values
                .iter()
                .map(|(k, v)| (ByteBuf::from(k.clone()), Some(ByteBuf::from(v.clone()))))
                .collect(),
            timers: self
                .timers
                .iter()
                .map(|(at, key)| (*at, ByteBuf::from(key.clone()), true))
                .collect(),
            watermark: self.watermark,
        }
    }

    /// Replays a checkpointed delta (or snapshot) onto this state. Limits
    /// are not checked: the state was within them when it was taken.
    pub fn apply(&mut self, delta: StateDelta) {
        for (key, value) in delta.values {
            let key = key.into_vec();
            if let Some(old) = self.values.remove(&key) {
                self.bytes -= key.len() + old.len();
            }
            if let Some(value) = value {
                self.bytes += key.len() + value.len();
                self.values.insert(key, value.into_vec());
            }
        }
        for (at, key, set) in delta.timers {
            let entry = (at, key.into_vec());
            if set {
                self.timers.insert(entry);
            } else {
                self.timers.remove(&entry);
            }
        }
        self.watermark = delta.watermark;
    }

    /// Number of stored keys.
    pub fn len(&self) -> usize {
        self.values.len()
    }

    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// Pending timers.
    pub fn timer_count(&self) -> usize {
        self.timers.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rollback_restores_values_timers_and_watermark() {
        let mut s = KeyedState::new(1 << 20, 100);
        s.put(b"a".to_vec(), b"1".to_vec()).unwrap();
        s.set_timer(b"a".to_vec(), 10).unwrap();
        s.commit();
        s.put(b"a".to_vec(), b"2".to_vec()).unwrap();
        s.put(b"b".to_vec(), b"3".to_vec()).unwrap();
        s.delete(b"a");
        s.advance_watermark(20);
        assert_eq!(s.take_due_timers(), vec![(10, b"a".to_vec())]);
        s.rollback();
        assert_eq!(s.get(b"a"), Some(&b"1".to_vec()));
        assert_eq!(s.get(b"b"), None);
        assert_eq!(
            (s.watermark(), s.timer_count(), s.bytes),
            (NO_WATERMARK, 1, 2)
        );
    }

    #[test]
    fn deltas_replayed_on_a_snapshot_rebuild_the_state() {
        let mut live = KeyedState::new(1 << 20, 100);
        live.put(b"a".to_vec(), b"1".to_vec()).unwrap();
        live.set_timer(b"a".to_vec(), 10).unwrap();
        live.commit();
        let snapshot = live.snapshot();
        live.take_delta();
        live.put(b"b".to_vec(), b"2".to_vec()).unwrap();
        live.delete(b"a");
        live.advance_watermark(20);
        assert_eq!(live.take_due_timers(), vec![(10, b"a".to_vec())]);
        live.set_timer(b"b".to_vec(), 30).unwrap();
        live.commit();
        let delta = live.take_delta();

        let mut rebuilt = KeyedState::new(1 << 20, 100);
        rebuilt.apply(snapshot);
        rebuilt.apply(delta);
        assert_eq!(rebuilt.snapshot(), live.snapshot());
        assert_eq!(rebuilt.bytes, live.bytes);
        assert_eq!(live.take_delta().values, vec![], "taking a delta resets it");
    }

    #[test]
    fn limits_are_enforced() {
        let mut s = KeyedState::new(10, 1);
        assert!(s.put(b"k".to_vec(), vec![0; 9]).is_ok());
        assert!(s.put(b"j".to_vec(), vec![0; 1]).is_err());
        assert!(
            s.put(b"k".to_vec(), vec![0; 8]).is_ok(),
            "replacing frees the old value"
        );
        s.set_timer(b"k".to_vec(), 1).unwrap();
        assert!(s.set_timer(b"k".to_vec(), 2).is_err());
    }
}
