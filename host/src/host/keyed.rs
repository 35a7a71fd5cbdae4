//! Keyed state, timers and the watermark of one operator: the host-side
//! memory an operator keeps between calls and across re-instantiation.
//!
//! Changes made during a call are journaled: a call that fails or traps is
//! rolled back, so state always matches the inputs that were processed
//! successfully (what pipelines checkpoint). The journal keeps each key's
//! and timer's value from before the call once, however often the call
//! changes it, so it never holds more than the keys the call touched.
//!
//! For checkpoints, the keys and timers touched since the last one are
//! remembered: [`KeyedState::take_delta`] hands out their current values,
//! [`KeyedState::snapshot`] everything, and [`KeyedState::apply`] replays
//! either onto a fresh state.
//!
//! **Memory.** Everything this holds for the operator is charged against
//! one limit (`max_state_bytes`): stored keys and values, timer keys, the
//! journal (old values included) and the keys marked for the next
//! checkpoint, each with a fixed per-entry overhead for the map node and
//! allocations around it ([`STORED_ENTRY_OVERHEAD`], [`MARK_OVERHEAD`]).
//! So a million one-byte keys cost what they really cost, not a megabyte,
//! and the same bound also caps what one checkpoint can carry.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;

/// The watermark before any record.
pub const NO_WATERMARK: i64 = i64::MIN;

/// Bytes charged for each stored key-value pair and each pending timer
/// beyond the key and value themselves: the map node's share (about 72
/// bytes for two `Vec`s in a B-tree node two thirds full) and the heap
/// blocks' headers and rounding (measured: 8.3 M one-byte keys held about
/// 200 bytes each with the journal and checkpoint marks).
pub const STORED_ENTRY_OVERHEAD: usize = 128;

/// Bytes charged for each journal entry and each checkpoint mark beyond
/// the key (and old value) it holds.
pub const MARK_OVERHEAD: usize = 64;

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

/// A change refused because it would pass a limit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LimitHit {
    /// Which limit, as `OperatorError::Limit` names it.
    pub limit: &'static str,
    pub detail: String,
}

/// What a call changed, to undo it: each key's value and each timer's
/// presence from before the call, and the watermark.
#[derive(Debug, Clone, Default)]
struct Journal {
    values: BTreeMap<Vec<u8>, Option<Vec<u8>>>,
    timers: BTreeMap<(i64, Vec<u8>), bool>,
    watermark: Option<i64>,
}

/// State, timers and watermark of one operator instance.
#[derive(Debug, Clone)]
pub struct KeyedState {
    values: BTreeMap<Vec<u8>, Vec<u8>>,
    timers: BTreeSet<(i64, Vec<u8>)>,
    watermark: i64,
    journal: Journal,
    /// Keys and timers changed since the last `take_delta`.
    dirty_keys: BTreeSet<Vec<u8>>,
    dirty_timers: BTreeSet<(i64, Vec<u8>)>,
    /// Host memory charged for all of the above (see the module docs).
    charged: usize,
    max_bytes: usize,
    max_timers: usize,
}

fn stored_cost(key: &[u8], value: &[u8]) -> usize {
    STORED_ENTRY_OVERHEAD + key.len() + value.len()
}

fn timer_cost(key: &[u8]) -> usize {
    STORED_ENTRY_OVERHEAD + key.len()
}

fn mark_cost(key: &[u8], old: Option<&[u8]>) -> usize {
    MARK_OVERHEAD + key.len() + old.map_or(0, <[u8]>::len)
}

impl KeyedState {
    pub fn new(max_bytes: usize, max_timers: usize) -> KeyedState {
        KeyedState {
            values: BTreeMap::new(),
            timers: BTreeSet::new(),
            watermark: NO_WATERMARK,
            journal: Journal::default(),
            dirty_keys: BTreeSet::new(),
            dirty_timers: BTreeSet::new(),
            charged: 0,
            max_bytes,
            max_timers,
        }
    }

    pub fn get(&self, key: &[u8]) -> Option<&Vec<u8>> {
        self.values.get(key)
    }

    /// Host memory charged for this state, journal and marks included.
    pub fn charged_bytes(&self) -> usize {
        self.charged
    }

    /// Charges `add` bytes (after freeing `free`), or explains the limit.
    fn charge(&mut self, free: usize, add: usize) -> Result<(), LimitHit> {
        let total = self.charged - free + add;
        if total > self.max_bytes {
            return Err(LimitHit {
                limit: "state size",
                detail: format!(
                    "state limit of {} bytes exceeded (would be {total}, counting keys, values, \
                     timers, the call's undo journal and checkpoint marks)",
                    self.max_bytes
                ),
            });
        }
        self.charged = total;
        Ok(())
    }

    /// The cost of journaling `key`'s current value and marking it for the
    /// next checkpoint, where not done yet in this call.
    fn key_marks_cost(&self, key: &[u8]) -> usize {
        let journal = if self.journal.values.contains_key(key) {
            0
        } else {
            mark_cost(key, self.values.get(key).map(Vec::as_slice))
        };
        let dirty = if self.dirty_keys.contains(key) {
            0
        } else {
            mark_cost(key, None)
        };
        journal + dirty
    }

    /// Journals `key`'s value from before the call (taking `old`, its
    /// current value, when this is the first change) and marks it dirty.
    /// The cost was charged by the caller.
    fn mark_key(&mut self, key: &[u8], old: Option<Vec<u8>>) {
        if !self.journal.values.contains_key(key) {
            self.journal.values.insert(key.to_vec(), old);
        }
        if !self.dirty_keys.contains(key) {
            self.dirty_keys.insert(key.to_vec());
        }
    }

    /// Stores a value, or explains which limit it would break.
    pub fn put(&mut self, key: Vec<u8>, value: Vec<u8>) -> Result<(), LimitHit> {
        let free = self.values.get(&key).map_or(0, |v| stored_cost(&key, v));
        self.charge(free, stored_cost(&key, &value) + self.key_marks_cost(&key))?;
        let old = self.values.insert(key.clone(), value);
        let first_change = !self.journal.values.contains_key(&key);
        // Only the value from before the call is journaled; a later one is
        // dropped, and the journal's charge was for the original.
        self.mark_key(&key, if first_change { old } else { None });
        Ok(())
    }

    /// Deletes a key. Refused only when journaling and marking the change
    /// would pass the limit (they cost a little more than the entry frees).
    pub fn delete(&mut self, key: &[u8]) -> Result<(), LimitHit> {
        let Some(free) = self.values.get(key).map(|v| stored_cost(key, v)) else {
            return Ok(());
        };
        self.charge(free, self.key_marks_cost(key))?;
        let old = self.values.remove(key);
        let first_change = !self.journal.values.contains_key(key);
        self.mark_key(key, if first_change { old } else { None });
        Ok(())
    }

    pub fn watermark(&self) -> i64 {
        self.watermark
    }

    /// Moves the watermark forward (never back).
    pub fn advance_watermark(&mut self, to: i64) {
        if to > self.watermark {
            self.journal.watermark.get_or_insert(self.watermark);
            self.watermark = to;
        }
    }

    /// The cost of journaling and marking a timer, where not done yet.
    fn timer_marks_cost(&self, entry: &(i64, Vec<u8>)) -> usize {
        let journal = if self.journal.timers.contains_key(entry) {
            0
        } else {
            mark_cost(&entry.1, None)
        };
        let dirty = if self.dirty_timers.contains(entry) {
            0
        } else {
            mark_cost(&entry.1, None)
        };
        journal + dirty
    }

    /// Journals whether the timer was set before the call and marks it.
    fn mark_timer(&mut self, entry: &(i64, Vec<u8>), was_set: bool) {
        if !self.journal.timers.contains_key(entry) {
            self.journal.timers.insert(entry.clone(), was_set);
        }
        if !self.dirty_timers.contains(entry) {
            self.dirty_timers.insert(entry.clone());
        }
    }

    pub fn set_timer(&mut self, key: Vec<u8>, at: i64) -> Result<(), LimitHit> {
        let entry = (at, key);
        if self.timers.contains(&entry) {
            return Ok(());
        }
        if self.timers.len() >= self.max_timers {
            return Err(LimitHit {
                limit: "pending timers",
                detail: format!("timer limit of {} exceeded", self.max_timers),
            });
        }
        self.charge(0, timer_cost(&entry.1) + self.timer_marks_cost(&entry))?;
        self.mark_timer(&entry, false);
        self.timers.insert(entry);
        Ok(())
    }

    /// Cancels a timer; refused like [`delete`](Self::delete).
    pub fn cancel_timer(&mut self, key: Vec<u8>, at: i64) -> Result<(), LimitHit> {
        let entry = (at, key);
        if !self.timers.contains(&entry) {
            return Ok(());
        }
        self.charge(timer_cost(&entry.1), self.timer_marks_cost(&entry))?;
        self.mark_timer(&entry, true);
        self.timers.remove(&entry);
        Ok(())
    }

    /// Removes and returns the timers due at the current watermark, in
    /// order of time, then key. Their journal entries and marks are charged
    /// without a check (the host, not the guest, asks for this): the next
    /// change the guest makes sees the total.
    pub fn take_due_timers(&mut self) -> Vec<(i64, Vec<u8>)> {
        let mut due = Vec::new();
        while let Some(first) = self.timers.first() {
            if first.0 > self.watermark {
                break;
            }
            let entry = first.clone();
            self.charged = self.charged - timer_cost(&entry.1) + self.timer_marks_cost(&entry);
            self.mark_timer(&entry, true);
            self.timers.remove(&entry);
            due.push(entry);
        }
        due
    }

    /// Makes this call's changes permanent.
    pub fn commit(&mut self) {
        let journal = std::mem::take(&mut self.journal);
        self.charged -= journal_cost(&journal);
    }

    /// Undoes every change since the last commit.
    pub fn rollback(&mut self) {
        let journal = std::mem::take(&mut self.journal);
        self.charged -= journal_cost(&journal);
        for (key, old) in journal.values {
            if let Some(current) = self.values.remove(&key) {
                self.charged -= stored_cost(&key, &current);
            }
            if let Some(old) = old {
                self.charged += stored_cost(&key, &old);
                self.values.insert(key, old);
            }
        }
        for (entry, was_set) in journal.timers {
            let is_set = self.timers.contains(&entry);
            if was_set && !is_set {
                self.charged += timer_cost(&entry.1);
                self.timers.insert(entry);
            } else if !was_set && is_set {
                self.charged -= timer_cost(&entry.1);
                self.timers.remove(&entry);
            }
        }
        if let Some(watermark) = journal.watermark {
            self.watermark = watermark;
        }
    }

    /// The keys and timers changed since the last call (rolled-back changes
    /// may be included, with their current values), and the watermark.
    pub fn take_delta(&mut self) -> StateDelta {
        let keys = std::mem::take(&mut self.dirty_keys);
        let timers = std::mem::take(&mut self.dirty_timers);
        self.charged -= keys.iter().map(|k| mark_cost(k, None)).sum::<usize>();
        self.charged -= timers
            .iter()
            .map(|(_, k)| mark_cost(k, None))
            .sum::<usize>();
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
                self.charged -= stored_cost(&key, &old);
            }
            if let Some(value) = value {
                self.charged += stored_cost(&key, &value);
                self.values.insert(key, value.into_vec());
            }
        }
        for (at, key, set) in delta.timers {
            let entry = (at, key.into_vec());
            if set {
                if !self.timers.contains(&entry) {
                    self.charged += timer_cost(&entry.1);
                    self.timers.insert(entry);
                }
            } else if self.timers.remove(&entry) {
                self.charged -= timer_cost(&entry.1);
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

/// What a journal is charged (see [`KeyedState::charge`]).
fn journal_cost(journal: &Journal) -> usize {
    let values: usize = journal
        .values
        .iter()
        .map(|(k, old)| mark_cost(k, old.as_deref()))
        .sum();
    let timers: usize = journal.timers.keys().map(|(_, k)| mark_cost(k, None)).sum();
    values + timers
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What the charge should be, recomputed from scratch.
    fn recount(s: &KeyedState) -> usize {
        let values: usize = s.values.iter().map(|(k, v)| stored_cost(k, v)).sum();
        let timers: usize = s.timers.iter().map(|(_, k)| timer_cost(k)).sum();
        let dirty: usize = s
            .dirty_keys
            .iter()
            .map(|k| mark_cost(k, None))
            .sum::<usize>()
            + s.dirty_timers
                .iter()
                .map(|(_, k)| mark_cost(k, None))
                .sum::<usize>();
        values + timers + dirty + journal_cost(&s.journal)
    }

    #[test]
    fn rollback_restores_values_timers_and_watermark() {
        let mut s = KeyedState::new(1 << 20, 100);
        s.put(b"a".to_vec(), b"1".to_vec()).unwrap();
        s.set_timer(b"a".to_vec(), 10).unwrap();
        s.commit();
        s.take_delta();
        s.put(b"a".to_vec(), b"2".to_vec()).unwrap();
        s.put(b"b".to_vec(), b"3".to_vec()).unwrap();
        s.delete(b"a").unwrap();
        s.advance_watermark(20);
        assert_eq!(s.take_due_timers(), vec![(10, b"a".to_vec())]);
        s.set_timer(b"c".to_vec(), 30).unwrap();
        assert_eq!(s.charged_bytes(), recount(&s));
        s.rollback();
        assert_eq!(s.get(b"a"), Some(&b"1".to_vec()));
        assert_eq!(s.get(b"b"), None);
        assert_eq!((s.watermark(), s.timer_count()), (NO_WATERMARK, 1));
        assert_eq!(s.charged_bytes(), recount(&s));
        s.take_delta();
        assert_eq!(
            s.charged_bytes(),
            stored_cost(b"a", b"1") + timer_cost(b"a"),
            "after a rollback and a checkpoint only the stored entries are charged"
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
        live.delete(b"a").unwrap();
        live.advance_watermark(20);
        assert_eq!(live.take_due_timers(), vec![(10, b"a".to_vec())]);
        live.set_timer(b"b".to_vec(), 30).unwrap();
        live.commit();
        let delta = live.take_delta();

        let mut rebuilt = KeyedState::new(1 << 20, 100);
        rebuilt.apply(snapshot);
        rebuilt.apply(delta);
        assert_eq!(rebuilt.snapshot(), live.snapshot());
        assert_eq!(rebuilt.charged_bytes(), live.charged_bytes());
        assert_eq!(live.take_delta().values, vec![], "taking a delta resets it");
    }

    #[test]
    fn limits_are_enforced() {
        let room = stored_cost(b"k", &[0; 9]) + 2 * mark_cost(b"k", None);
        let mut s = KeyedState::new(room, 1);
        assert!(s.put(b"k".to_vec(), vec![0; 9]).is_ok());
        assert!(s.put(b"j".to_vec(), vec![0; 1]).is_err());
        assert!(
            s.put(b"k".to_vec(), vec![0; 8]).is_ok(),
            "replacing frees the old value"
        );
        s.commit();
        s.set_timer(b"k".to_vec(), 1).unwrap_err();
        let mut s = KeyedState::new(1 << 20, 1);
        s.set_timer(b"k".to_vec(), 1).unwrap();
        assert!(s.set_timer(b"k".to_vec(), 2).is_err(), "timer count limit");
    }

    #[test]
    fn repeated_puts_to_one_key_journal_its_old_value_once() {
        let value = vec![7; 1 << 20];
        let mut s = KeyedState::new(4 << 20, 10);
        for _ in 0..150 {
            s.put(b"k".to_vec(), value.clone())
                .expect("one key's value is charged once however often it is replaced");
        }
        assert!(s.charged_bytes() < (1 << 20) + 1024);
        s.rollback();
        assert_eq!(s.get(b"k"), None);
        assert_eq!(s.charged_bytes(), recount(&s));
    }

    #[test]
    fn many_small_keys_are_charged_with_their_overhead() {
        let mut s = KeyedState::new(1 << 20, 10);
        let mut stored = 0;
        while s.put(format!("{stored:08}").into_bytes(), vec![1]).is_ok() {
            stored += 1;
        }
        // 8-byte keys with 1-byte values: far fewer than 1 MiB / 9 bytes.
        assert!(stored < (1 << 20) / (STORED_ENTRY_OVERHEAD + 2 * MARK_OVERHEAD) + 1);
        assert_eq!(s.charged_bytes(), recount(&s));
    }

    #[test]
    fn timer_keys_are_charged() {
        let mut s = KeyedState::new(1 << 20, 1_000_000);
        let key = vec![b't'; 100 << 10];
        let mut set = 0;
        while s.set_timer(key.clone(), set).is_ok() {
            set += 1;
        }
        assert!(set < 10, "ten 100 KiB timer keys cannot fit in 1 MiB");
        s.commit();
        s.take_delta();
        assert_eq!(s.charged_bytes(), recount(&s));
    }
}
