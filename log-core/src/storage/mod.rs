//! The file-system operations the log needs, behind one small trait.
//!
//! Everything the log writes goes through [`Storage`] and [`StorageFile`], so
//! tests can swap the real file system ([`FsStorage`]) for a simulated disk
//! ([`sim::SimStorage`]) that loses unsynced writes at a chosen crash point
//! and injects I/O errors. The trait mirrors POSIX durability rules: file
//! data is durable after `sync_data`, and creations, renames and removals
//! are durable after `sync_dir` of the parent directory.

pub mod sim;

use std::fmt::Debug;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::{Bytes, BytesMut};

/// An open file, usable from many threads at once (all I/O is positional).
#[allow(
    clippy::len_without_is_empty,
    reason = "a file's length is a number to compare, not a container size"
)]
pub trait StorageFile: Send + Sync + Debug {
    /// Reads up to `buf.len()` bytes at `pos`; returns how many were read (0 at end of file).
    fn read_at(&self, buf: &mut [u8], pos: u64) -> io::Result<usize>;
    /// Writes all of `buf` at `pos`.
    fn write_all_at(&self, buf: &[u8], pos: u64) -> io::Result<()>;
    /// Current length in bytes.
    fn len(&self) -> io::Result<u64>;
    /// Truncates or extends the file.
    fn set_len(&self, len: u64) -> io::Result<()>;
    /// Makes all written data (and the length) durable.
    fn sync_data(&self) -> io::Result<()>;

    /// Reads exactly `len` bytes at `pos` into a new buffer, failing at end of file.
    fn read_bytes_at(&self, pos: u64, len: usize) -> io::Result<Bytes> {
        let mut buf = BytesMut::zeroed(len);
        self.read_exact_at(&mut buf, pos)?;
        Ok(buf.freeze())
    }

    /// Reads exactly `buf.len()` bytes at `pos`, failing at end of file.
    fn read_exact_at(&self, buf: &mut [u8], mut pos: u64) -> io::Result<()> {
        let mut done = 0;
        while done < buf.len() {
            let n = self.read_at(&mut buf[done..], pos)?;
            if n == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            done += n;
            pos += n as u64;
        }
        Ok(())
    }
}

/// Held while a data directory is in use; dropping it releases the lock.
pub trait DirLock: Send + Sync + Debug {}

/// Directory and file operations.
pub trait Storage: Send + Sync + Debug {
    /// Opens a file for reading and writing, creating it if `create` is set.
    fn open(&self, path: &Path, create: bool) -> io::Result<Arc<dyn StorageFile>>;
    fn create_dir_all(&self, path: &Path) -> io::Result<()>;
    /// File and directory names directly inside `path`.
    fn list(&self, path: &Path) -> io::Result<Vec<String>>;
    fn exists(&self, path: &Path) -> bool;
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
    fn remove_file(&self, path: &Path) -> io::Result<()>;
    fn remove_dir_all(&self, path: &Path) -> io::Result<()>;
    /// Makes creations, renames and removals inside directory `path` durable.
    fn sync_dir(&self, path: &Path) -> io::Result<()>;
    /// Takes an exclusive lock on `path` (created if missing), failing with
    /// `WouldBlock` if another holder has it.
    fn lock(&self, path: &Path) -> io::Result<Box<dyn DirLock>>;
}

/// The real file system.
#[derive(Debug, Default, Clone, Copy)]
pub struct FsStorage;

#[derive(Debug)]
struct FsFile(File);

impl StorageFile for FsFile {
    fn read_at(&self, buf: &mut [u8], pos: u64) -> io::Result<usize> {
        self.0.read_at(buf, pos)
    }
    fn write_all_at(&self, buf: &[u8], pos: u64) -> io::Result<()> {
        self.0.write_all_at(buf, pos)
    }
    fn len(&self) -> io::Result<u64> {
        Ok(self.0.metadata()?.len())
    }
    fn set_len(&self, len: u64) -> io::Result<()> {
        self.0.set_len(len)
    }
    fn sync_data(&self) -> io::Result<()> {
        self.0.sync_data()
    }

    /// Reads straight into uninitialized memory: segment reads are large,
    /// and zero-filling the buffer first cost a tenth of read throughput.
    fn read_bytes_at(&self, mut pos: u64, len: usize) -> io::Result<Bytes> {
        let mut buf = BytesMut::with_capacity(len);
        while buf.len() < len {
            let wanted = len - buf.len();
            let spare = &mut buf.spare_capacity_mut()[..wanted];
            let offset = libc::off_t::try_from(pos)
                .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
            // SAFETY: `spare` is writable memory of `spare.len()` bytes owned
            // by `buf`; pread writes at most that many bytes into it and
            // reports how many, which are then the only ones marked initialized.
            let n = unsafe {
                libc::pread(
                    self.0.as_raw_fd(),
                    spare.as_mut_ptr().cast(),
                    spare.len(),
                    offset,
                )
            };
            match n {
                n if n > 0 => {
                    // SAFETY: pread initialized the first `n` spare bytes.
                    unsafe { buf.set_len(buf.len() + n as usize) };
                    pos += n as u64;
                }
                0 => return Err(io::ErrorKind::UnexpectedEof.into()),
                _ => {
                    let err = io::Error::last_os_error();
                    if err.kind() != io::ErrorKind::Interrupted {
                        return Err(err);
                    }
                }
            }
        }
        Ok(buf.freeze())
    }
}

#[derive(Debug)]
struct FsLock(#[allow(dead_code, reason = "held for its lock, released on drop")] File);

impl DirLock for FsLock {}

impl Storage for FsStorage {
    fn open(&self, path: &Path, create: bool) -> io::Result<Arc<dyn StorageFile>> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(create)
            .truncate(false)
            .open(path)?;
        Ok(Arc::new(FsFile(file)))
    }
    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        fs::create_dir_all(path)
    }
    fn list(&self, path: &Path) -> io::Result<Vec<String>> {
        let mut names = Vec::new();
        for entry in fs::read_dir(path)? {
            names.push(entry?.file_name().to_string_lossy().into_owned());
        }
        names.sort();
        Ok(names)
    }
    fn exists(&self, path: &Path) -> bool {
        path.exists()
    }
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        fs::rename(from, to)
    }
    fn remove_file(&self, path: &Path) -> io::Result<()> {
        fs::remove_file(path)
    }
    fn remove_dir_all(&self, path: &Path) -> io::Result<()> {
        fs::remove_dir_all(path)
    }
    fn sync_dir(&self, path: &Path) -> io::Result<()> {
        File::open(path)?.sync_all()
    }
    fn lock(&self, path: &Path) -> io::Result<Box<dyn DirLock>> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)?;
        file.try_lock().map_err(|e| match e {
            fs::TryLockError::WouldBlock => io::ErrorKind::WouldBlock.into(),
            fs::TryLockError::Error(e) => e,
        })?;
        Ok(Box::new(FsLock(file)))
    }
}

/// Writes `bytes` to `path` atomically and durably: a temporary file is
/// written and synced, renamed over `path`, and the directory synced.
pub(crate) fn write_atomic(storage: &dyn Storage, path: &Path, bytes: &[u8]) -> io::Result<()> {
    let tmp = tmp_path(path);
    let file = storage.open(&tmp, true)?;
    file.set_len(0)?;
    file.write_all_at(bytes, 0)?;
    file.sync_data()?;
    drop(file);
    storage.rename(&tmp, path)?;
    storage.sync_dir(path.parent().unwrap_or(Path::new(".")))
}

/// Reads a whole (small) file.
pub(crate) fn read_all(storage: &dyn Storage, path: &Path) -> io::Result<Vec<u8>> {
    let file = storage.open(path, false)?;
    let mut buf = vec![0; file.len()? as usize];
    file.read_exact_at(&mut buf, 0)?;
    Ok(buf)
}

/// The temporary name `write_atomic` uses; leftovers are removed on open.
pub(crate) fn tmp_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".tmp");
    path.with_file_name(name)
}
