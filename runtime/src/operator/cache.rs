//! The on-disk cache of compiled modules, keyed by the SHA-256 of the
//! module's bytes, so a restart loads a module in milliseconds instead of
//! recompiling it. An entry that does not load (written by another wasmtime
//! version or configuration, or damaged) is recompiled and replaced.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::Context;
use wasmtime::Engine;
use wasmtime::component::Component;

pub(crate) struct ArtifactCache {
    dir: PathBuf,
}

impl ArtifactCache {
    pub fn open(dir: PathBuf) -> anyhow::Result<ArtifactCache> {
        fs::create_dir_all(&dir)
            .with_context(|| format!("while creating the module cache {}", dir.display()))?;
        Ok(ArtifactCache { dir })
    }

    fn path(&self, digest: &str) -> PathBuf {
        self.dir.join(format!("{digest}.cwasm"))
    }

    /// The cached component for `digest`, if there is a usable one.
    pub fn get(&self, engine: &Engine, digest: &str) -> Option<Component> {
        let path = self.path(digest);
        let bytes = fs::read(&path).ok()?;
        // SAFETY: the bytes were written by `put` below from
        // `Component::serialize` of this engine's configuration, in a
        // directory only Weir writes to; wasmtime checks the version and
        // configuration recorded in them and refuses a mismatch. They are
        // read into memory rather than mapped, so a file changed on disk
        // later cannot pull code out from under a running module.
        match unsafe { Component::deserialize(engine, &bytes) } {
            Ok(component) => Some(component),
            Err(e) => {
                tracing::warn!(file = %path.display(), error = %e, "discarding unusable cached module");
                None
            }
        }
    }

    /// Stores a compiled component (atomically: temporary file, then rename).
    pub fn put(&self, digest: &str, component: &Component) {
        let path = self.path(digest);
        let result = component
            .serialize()
            .map_err(anyhow::Error::from)
            .and_then(|bytes| write_atomic(&path, &bytes));
        if let Err(e) = result {
            tracing::warn!(file = %path.display(), error = %e, "could not cache compiled module");
        }
    }
}

fn write_atomic(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let tmp = path.with_extension("tmp");
    fs::write(&tmp, bytes)?;
    fs::rename(&tmp, path)?;
    Ok(())
}
