//! A simulated disk for crash and fault tests.
//!
//! [`SimStorage`] keeps every file in memory twice: what the process sees
//! (the page cache) and what would survive a power cut (the platter). File
//! data reaches the platter on `sync_data`; directory entries (creations,
//! renames, removals) on `sync_dir` of their parent. A test arms a crash
//! after N more mutating operations; from then on every call fails, as if
//! the process were dead. [`SimStorage::restart`] then builds the disk a
//! rebooted machine would find: synced state, plus a random prefix of each
//! file's unsynced writes, the last of them possibly torn. It can also fail
//! chosen operations with `EIO` to test error paths.
//!
//! It is part of the library (not test-only) so integration tests and the
//! layers above can drive the real log over it.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use super::{DirLock, Storage, StorageFile};

/// An operation that an injected fault makes fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultOp {
    Write,
    SyncData,
}

#[derive(Debug, Clone)]
struct Fault {
    op: FaultOp,
    path_suffix: String,
    remaining: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Entry {
    File(u64),
    Dir,
}

#[derive(Debug, Clone)]
enum Pending {
    Write { pos: u64, bytes: Vec<u8> },
    SetLen(u64),
}

#[derive(Debug, Default)]
struct Inode {
    data: Vec<u8>,
    durable: Vec<u8>,
    pending: Vec<Pending>,
}

#[derive(Debug, Default)]
struct State {
    entries: BTreeMap<PathBuf, Entry>,
    durable_entries: BTreeMap<PathBuf, Entry>,
    inodes: HashMap<u64, Inode>,
    next_inode: u64,
    generation: u64,
    crash_after: Option<u64>,
    crashed: bool,
    mutations: u64,
    faults: Vec<Fault>,
    locks: HashSet<PathBuf>,
    rng: u64,
}

/// The simulated disk. Clones share the same disk.
#[derive(Debug, Clone)]
pub struct SimStorage {
    state: Arc<Mutex<State>>,
}

fn crashed() -> io::Error {
    io::Error::other("simulated crash: the process is dead")
}

fn not_found(path: &Path) -> io::Error {
    io::Error::new(
        io::ErrorKind::NotFound,
        format!("{} not found", path.display()),
    )
}

impl State {
    /// Counts a mutating operation and fails once the crash point is reached.
    fn mutate(&mut self, generation: u64) -> io::Result<()> {
        self.alive(generation)?;
        self.mutations += 1;
        if let Some(left) = self.crash_after.as_mut() {
            if *left == 0 {
                self.crashed = true;
                return Err(crashed());
            }
            *left -= 1;
        }
        Ok(())
    }

    fn alive(&self, generation: u64) -> io::Result<()> {
        if self.crashed || generation != self.generation {
            return Err(crashed());
        }
        Ok(())
    }

    fn take_fault(&mut self, op: FaultOp, path: &Path) -> io::Result<()> {
        let path = path.to_string_lossy();
        let hit = self
            .faults
            .iter_mut()
            .find(|f| f.op == op && f.remaining > 0 && path.ends_with(&f.path_suffix));
        match hit {
            Some(fault) => {
                fault.remaining -= 1;
                Err(io::Error::other(format!(
                    "injected {op:?} failure on {path}"
                )))
            }
            None => Ok(()),
        }
    }

    fn next_random(&mut self) -> u64 {
        // splitmix64
        self.rng = self.rng.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.rng;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn is_dir(&self, path: &Path) -> bool {
        is_root(path) || self.entries.get(path) == Some(&Entry::Dir)
    }

    fn parent_is_dir(&self, path: &Path) -> bool {
        path.parent().is_none_or(|p| self.is_dir(p))
    }

    /// Applies a write to what the process sees of an open file, and keeps
    /// it pending until the file's data is synced.
    fn apply_unsynced(&mut self, inode: u64, op: Pending) {
        let inode = self
            .inodes
            .get_mut(&inode)
            .expect("open files keep their inode");
        apply(&mut inode.data, &op);
        inode.pending.push(op);
    }
}

/// The file-system root and the empty path always exist.
fn is_root(path: &Path) -> bool {
    path.parent().is_none() || path.as_os_str().is_empty()
}

fn apply(data: &mut Vec<u8>, op: &Pending) {
    match op {
        Pending::Write { pos, bytes } => {
            let pos = *pos as usize;
            if data.len() < pos + bytes.len() {
                data.resize(pos + bytes.len(), 0);
            }
            data[pos..pos + bytes.len()].copy_from_slice(bytes);
        }
        Pending::SetLen(len) => data.resize(*len as usize, 0),
    }
}

impl SimStorage {
    /// An empty disk whose crash tearing is driven by `seed`.
    pub fn new(seed: u64) -> Self {
        let state = State {
            rng: seed,
            ..State::default()
        };
        SimStorage {
            state: Arc::new(Mutex::new(state)),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Crashes the simulated machine after `ops` more mutating operations
    /// (writes, syncs, creations, renames, removals, truncations).
    pub fn crash_after(&self, ops: u64) {
        self.lock().crash_after = Some(ops);
    }

    /// Crashes now: every further call fails until [`restart`](Self::restart).
    pub fn crash_now(&self) {
        self.lock().crashed = true;
    }

    /// True once the armed crash point has been reached.
    pub fn has_crashed(&self) -> bool {
        self.lock().crashed
    }

    /// Mutating operations performed so far (to choose crash points).
    pub fn mutations(&self) -> u64 {
        self.lock().mutations
    }

    /// Makes the next `count` operations of kind `op` on files whose path
    /// ends with `path_suffix` fail with an I/O error.
    pub fn inject_fault(&self, op: FaultOp, path_suffix: &str, count: u32) {
        self.lock().faults.push(Fault {
            op,
            path_suffix: path_suffix.to_string(),
            remaining: count,
        });
    }

    /// Reboots the machine: keeps what was durable, plus for each file a
    /// random prefix of its unsynced writes (the last one possibly torn),
    /// drops unsynced directory changes, and invalidates every open handle.
    pub fn restart(&self) {
        let mut state = self.lock();
        let state = &mut *state;
        let mut inodes = std::mem::take(&mut state.inodes);
        for inode in inodes.values_mut() {
            let pending = std::mem::take(&mut inode.pending);
            let keep = (state.next_random() % (pending.len() as u64 + 1)) as usize;
            let mut data = std::mem::take(&mut inode.durable);
            for (i, op) in pending.iter().take(keep).enumerate() {
                match op {
                    Pending::Write { pos, bytes }
                        if i + 1 == keep && state.next_random().is_multiple_of(2) =>
                    {
                        let torn = (state.next_random() % (bytes.len() as u64 + 1)) as usize;
                        apply(
                            &mut data,
                            &Pending::Write {
                                pos: *pos,
                                bytes: bytes[..torn].to_vec(),
                            },
                        );
                    }
                    op => apply(&mut data, op),
                }
            }
            inode.durable = data.clone();
            inode.data = data;
        }
        state.inodes = inodes;
        let durable = std::mem::take(&mut state.durable_entries);
        // An entry survives only if every ancestor directory survived too.
        let reachable: BTreeMap<PathBuf, Entry> = durable
            .iter()
            .filter(|(path, _)| {
                path.ancestors()
                    .skip(1)
                    .all(|a| is_root(a) || durable.get(a) == Some(&Entry::Dir))
            })
            .map(|(p, e)| (p.clone(), *e))
            .collect();
        state.entries = reachable.clone();
        state.durable_entries = reachable;
        let live: HashSet<u64> = state
            .entries
            .values()
            .filter_map(|e| match e {
                Entry::File(id) => Some(*id),
                Entry::Dir => None,
            })
            .collect();
        state.inodes.retain(|id, _| live.contains(id));
        state.generation += 1;
        state.crashed = false;
        state.crash_after = None;
        state.faults.clear();
        state.locks.clear();
    }

    /// Every file path on the disk as the process sees it now.
    pub fn files(&self) -> Vec<PathBuf> {
        let state = self.lock();
        state
            .entries
            .iter()
            .filter(|(_, e)| matches!(e, Entry::File(_)))
            .map(|(p, _)| p.clone())
            .collect()
    }

    /// Flips the bits of `mask` in byte `pos` of `path`, durably (simulated media corruption).
    pub fn corrupt(&self, path: &Path, pos: u64, mask: u8) -> io::Result<()> {
        let mut state = self.lock();
        let Some(Entry::File(id)) = state.entries.get(path).copied() else {
            return Err(not_found(path));
        };
        let inode = state
            .inodes
            .get_mut(&id)
            .expect("entries point at live inodes");
        for data in [&mut inode.data, &mut inode.durable] {
            if let Some(b) = data.get_mut(pos as usize) {
                *b ^= mask;
            }
        }
        Ok(())
    }
}

#[derive(Debug)]
struct SimFile {
    state: Arc<Mutex<State>>,
    inode: u64,
    generation: u64,
    path: PathBuf,
}

impl SimFile {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl StorageFile for SimFile {
    fn read_at(&self, buf: &mut [u8], pos: u64) -> io::Result<usize> {
        let state = self.lock();
        state.alive(self.generation)?;
        let data = &state.inodes[&self.inode].data;
        let start = (pos as usize).min(data.len());
        let n = buf.len().min(data.len() - start);
        buf[..n].copy_from_slice(&data[start..start + n]);
        Ok(n)
    }

    fn write_all_at(&self, buf: &[u8], pos: u64) -> io::Result<()> {
        let mut state = self.lock();
        state.mutate(self.generation)?;
        state.take_fault(FaultOp::Write, &self.path)?;
        let op = Pending::Write {
            pos,
            bytes: buf.to_vec(),
        };
        state.apply_unsynced(self.inode, op);
        Ok(())
    }

    fn len(&self) -> io::Result<u64> {
        let state = self.lock();
        state.alive(self.generation)?;
        Ok(state.inodes[&self.inode].data.len() as u64)
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        let mut state = self.lock();
        state.mutate(self.generation)?;
        let op = Pending::SetLen(len);
        state.apply_unsynced(self.inode, op);
        Ok(())
    }

    fn sync_data(&self) -> io::Result<()> {
        let mut state = self.lock();
        state.mutate(self.generation)?;
        state.take_fault(FaultOp::SyncData, &self.path)?;
        let inode = state
            .inodes
            .get_mut(&self.inode)
            .expect("open files keep their inode");
        inode.durable = inode.data.clone();
        inode.pending.clear();
        Ok(())
    }
}

#[derive(Debug)]
struct SimLock {
    state: Arc<Mutex<State>>,
    path: PathBuf,
    generation: u64,
}

impl DirLock for SimLock {}

impl Drop for SimLock {
    fn drop(&mut self) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if state.generation == self.generation {
            state.locks.remove(&self.path);
        }
    }
}

impl Storage for SimStorage {
    fn open(&self, path: &Path, create: bool) -> io::Result<Arc<dyn StorageFile>> {
        let mut state = self.lock();
        state.alive(state.generation)?;
        let generation = state.generation;
        let inode = match state.entries.get(path) {
            Some(Entry::File(id)) => *id,
            Some(Entry::Dir) => {
                return Err(io::Error::other(format!(
                    "{} is a directory",
                    path.display()
                )));
            }
            None if !create => return Err(not_found(path)),
            None => {
                if !state.parent_is_dir(path) {
                    return Err(not_found(path.parent().unwrap_or(path)));
                }
                state.mutate(generation)?;
                let id = state.next_inode;
                state.next_inode += 1;
                state.inodes.insert(id, Inode::default());
                state.entries.insert(path.to_path_buf(), Entry::File(id));
                id
            }
        };
        Ok(Arc::new(SimFile {
            state: self.state.clone(),
            inode,
            generation,
            path: path.to_path_buf(),
        }))
    }

    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        let mut state = self.lock();
        let generation = state.generation;
        let mut missing: Vec<&Path> = path
            .ancestors()
            .take_while(|a| !state.is_dir(a) && !state.entries.contains_key(*a))
            .collect();
        missing.reverse();
        for dir in missing {
            state.mutate(generation)?;
            state.entries.insert(dir.to_path_buf(), Entry::Dir);
        }
        if !state.is_dir(path) {
            return Err(io::Error::other(format!(
                "{} is not a directory",
                path.display()
            )));
        }
        Ok(())
    }

    fn list(&self, path: &Path) -> io::Result<Vec<String>> {
        let state = self.lock();
        state.alive(state.generation)?;
        if !state.is_dir(path) {
            return Err(not_found(path));
        }
        Ok(state
            .entries
            .keys()
            .filter(|p| p.parent() == Some(path))
            .filter_map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
            .collect())
    }

    fn exists(&self, path: &Path) -> bool {
        self.lock().entries.contains_key(path)
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let mut state = self.lock();
        let generation = state.generation;
        state.mutate(generation)?;
        if !state.entries.contains_key(from) {
            return Err(not_found(from));
        }
        if !state.parent_is_dir(to) {
            return Err(not_found(to));
        }
        let moved: Vec<(PathBuf, Entry)> = state
            .entries
            .range(from.to_path_buf()..)
            .take_while(|(p, _)| p.starts_with(from))
            .map(|(p, e)| (p.clone(), *e))
            .collect();
        for (p, _) in &moved {
            state.entries.remove(p);
        }
        for (p, e) in moved {
            let rest = p
                .strip_prefix(from)
                .expect("taken from the range of `from`");
            let target = if rest.as_os_str().is_empty() {
                to.to_path_buf()
            } else {
                to.join(rest)
            };
            state.entries.insert(target, e);
        }
        Ok(())
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        let mut state = self.lock();
        let generation = state.generation;
        state.mutate(generation)?;
        match state.entries.get(path) {
            Some(Entry::File(_)) => {
                state.entries.remove(path);
                Ok(())
            }
            _ => Err(not_found(path)),
        }
    }

    fn remove_dir_all(&self, path: &Path) -> io::Result<()> {
        let mut state = self.lock();
        let generation = state.generation;
        state.mutate(generation)?;
        if state.entries.get(path) != Some(&Entry::Dir) {
            return Err(not_found(path));
        }
        state.entries.retain(|p, _| !p.starts_with(path));
        Ok(())
    }

    fn sync_dir(&self, path: &Path) -> io::Result<()> {
        let mut state = self.lock();
        let generation = state.generation;
        state.mutate(generation)?;
        if !state.is_dir(path) {
            return Err(not_found(path));
        }
        let state = &mut *state;
        let children: Vec<PathBuf> = state
            .entries
            .keys()
            .chain(state.durable_entries.keys())
            .filter(|p| p.parent() == Some(path))
            .cloned()
            .collect();
        for child in children {
            match state.entries.get(&child) {
                Some(e) => state.durable_entries.insert(child, *e),
                None => state.durable_entries.remove(&child),
            };
        }
        Ok(())
    }

    fn lock(&self, path: &Path) -> io::Result<Box<dyn DirLock>> {
        let mut state = self.lock();
        state.alive(state.generation)?;
        if !state.locks.insert(path.to_path_buf()) {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        Ok(Box::new(SimLock {
            state: self.state.clone(),
            path: path.to_path_buf(),
            generation: state.generation,
        }))
    }
}

#[cfg(test)]
mod tests;
