//! The on-disk cache of compiled modules, keyed by the SHA-256 of the
//! module's bytes, so a restart loads a module in milliseconds instead of
//! recompiling it.
//!
//! Entries are sealed artifacts (`artifact.rs`: a header with the module's
//! digest and the SHA-256 of the code), written durably (synced file,
//! rename, synced directory). An entry is verified before it is loaded; one
//! that fails (damaged by a crash or the disk, truncated, or written by
//! another wasmtime version or configuration) is logged, deleted and
//! recompiled by the caller, never run.

use std::fs;
use std::path::PathBuf;

use anyhow::Context;
use wasmtime::Engine;
use wasmtime::component::Component;

use super::artifact::{self, ModuleDigest};
use weir_core::files::{remove_durably, write_durably};

pub(crate) struct ArtifactCache {
    dir: PathBuf,
}

impl ArtifactCache {
    pub fn open(dir: PathBuf) -> anyhow::Result<ArtifactCache> {
        fs::create_dir_all(&dir)
            .with_context(|| format!("while creating the module cache {}", dir.display()))?;
        Ok(ArtifactCache { dir })
    }

    fn path(&self, module: &ModuleDigest) -> PathBuf {
        self.dir.join(format!("{}.cwasm", hex::encode(module)))
    }

    /// The cached component of `module`, if there is a sound one. A damaged
    /// or unusable entry is deleted.
    pub fn get(&self, engine: &Engine, module: &ModuleDigest) -> Option<Component> {
        let path = self.path(module);
        let sealed = match fs::read(&path) {
            Ok(sealed) => sealed,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
            Err(e) => {
                tracing::warn!(file = %path.display(), error = %e, "cannot read a cached module; recompiling it");
                return None;
            }
        };
        match artifact::load(engine, &sealed, module) {
            Ok(component) => Some(component),
            Err(e) => {
                tracing::warn!(file = %path.display(), error = %e, "refusing a cached module; deleting and recompiling it");
                if let Err(e) = remove_durably(&path) {
                    tracing::warn!(file = %path.display(), error = %e, "cannot delete a refused cached module");
                }
                None
            }
        }
    }

    /// Stores a sealed artifact of `module`. A failure is logged: the
    /// module still runs, and is compiled again on the next start.
    pub fn put(&self, module: &ModuleDigest, sealed: &[u8]) {
        let path = self.path(module);
        if let Err(e) = write_durably(&path, sealed) {
            tracing::warn!(file = %path.display(), error = %e, "could not cache a compiled module");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sha2::{Digest, Sha256};

    const WASM: &[u8] = b"\0asm\x0d\0\x01\0";

    fn cached(cache: &ArtifactCache, engine: &Engine) -> (ModuleDigest, PathBuf) {
        let module: ModuleDigest = Sha256::digest(WASM).into();
        let serialized = engine.precompile_component(WASM).expect("compiles");
        cache.put(&module, &artifact::seal(&module, &serialized));
        (module, cache.path(&module))
    }

    #[test]
    fn a_sound_entry_is_loaded() {
        let dir = tempfile::tempdir().unwrap();
        let (cache, engine) = (
            ArtifactCache::open(dir.path().into()).unwrap(),
            Engine::default(),
        );
        let (module, _) = cached(&cache, &engine);
        assert!(cache.get(&engine, &module).is_some());
    }

    #[test]
    fn damaged_entries_are_refused_and_deleted() {
        let dir = tempfile::tempdir().unwrap();
        let (cache, engine) = (
            ArtifactCache::open(dir.path().into()).unwrap(),
            Engine::default(),
        );
        let damages: [fn(&mut Vec<u8>); 3] = [
            // (Flipped rather than zeroed: this tiny artifact has runs of
            // zeros already.)
            |bytes| {
                let middle = bytes.len() / 2;
                bytes[middle..middle + 64]
                    .iter_mut()
                    .for_each(|b| *b ^= 0xff);
            },
            |bytes| bytes.truncate(bytes.len() / 2),
            |bytes| bytes.clear(),
        ];
        for damage in damages {
            let (module, path) = cached(&cache, &engine);
            let mut bytes = fs::read(&path).unwrap();
            damage(&mut bytes);
            fs::write(&path, &bytes).unwrap();
            assert!(cache.get(&engine, &module).is_none());
            assert!(!path.exists(), "the damaged entry is deleted");
        }
    }
}
