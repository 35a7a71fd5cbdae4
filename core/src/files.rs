//! Small durable-file helpers for the server's own metadata (modules and
//! pipeline specs): whole files replaced atomically and synced, so a crash
//! leaves either the old or the new version, never a torn one.

use std::fs;
use std::io::Write;
use std::path::Path;

use anyhow::Context;

/// Writes `bytes` to `path` through a synced temporary file and a rename,
/// then syncs the directory.
pub fn write_durably(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let dir = path
        .parent()
        .with_context(|| format!("{} has no parent directory", path.display()))?;
    fs::create_dir_all(dir).with_context(|| format!("while creating {}", dir.display()))?;
    let tmp = path.with_extension("tmp");
    let mut file =
        fs::File::create(&tmp).with_context(|| format!("while creating {}", tmp.display()))?;
    file.write_all(bytes)
        .and_then(|()| file.sync_all())
        .with_context(|| format!("while writing {}", tmp.display()))?;
    fs::rename(&tmp, path).with_context(|| format!("while renaming {}", tmp.display()))?;
    sync_dir(dir)
}

/// Removes a file or directory tree if it exists, then syncs its parent.
pub fn remove_durably(path: &Path) -> anyhow::Result<()> {
    let result = if path.is_dir() {
        fs::remove_dir_all(path)
    } else {
        fs::remove_file(path)
    };
    match result {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e).with_context(|| format!("while removing {}", path.display())),
    }
    match path.parent() {
        Some(dir) => sync_dir(dir),
        None => Ok(()),
    }
}

fn sync_dir(dir: &Path) -> anyhow::Result<()> {
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .with_context(|| format!("while syncing directory {}", dir.display()))
}
