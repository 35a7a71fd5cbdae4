//! The module store: operator modules uploaded to the server. Every upload
//! of new bytes is a new version of its name (1, 2, 3...), validated and
//! compiled before it is accepted (by the store's [`Compiler`]: for a
//! server, in a child process within limits), and kept on disk as
//! `<dir>/<name>/<version>.wasm` with a `versions.json` index; compiled
//! forms come from the engine's artifact cache, so a restart does not
//! recompile. Uploading the same bytes as the newest version again is a
//! no-op that returns that version.
//!
//! Whether a pipeline still uses a module is the pipelines' business, not
//! this store's.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use anyhow::Context;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use weir_core::files::{remove_durably, write_durably};
use weir_core::format::{Format, FormatError};
use weir_core::names::check_stored_name;
use weir_core::now_ms;
use weir_host::{Compiler, OperatorEngine, OperatorError, OperatorModule};

use crate::spec::ModuleRef;

/// One stored version of a module.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModuleVersion {
    pub version: u32,
    /// SHA-256 of the bytes, in hex.
    pub digest: String,
    pub size: u64,
    /// Milliseconds since the Unix epoch.
    pub uploaded_ms: i64,
}

/// What can go wrong with modules.
#[derive(Debug, thiserror::Error)]
pub enum ModuleError {
    #[error("{0}")]
    InvalidName(String),
    #[error("unknown module {0:?}")]
    Unknown(String),
    #[error("module {name:?} has no version {version}")]
    UnknownVersion { name: String, version: u32 },
    #[error("module {name:?} was refused: {source}")]
    Invalid {
        name: String,
        #[source]
        source: OperatorError,
    },
    #[error(transparent)]
    Storage(#[from] anyhow::Error),
}

const INDEX: &str = "versions.json";

/// The versions file's format. Version 1 files were a bare array.
const INDEX_FORMAT: Format = Format {
    what: "a module's versions file",
    current: 2,
    oldest: 1,
};

/// What a module's versions file holds.
#[derive(Serialize, Deserialize)]
struct Index {
    versions: Vec<ModuleVersion>,
}

/// A module's versions, from its versions file of any format read.
fn read_index(bytes: &[u8]) -> Result<Vec<ModuleVersion>, FormatError> {
    if bytes.trim_ascii_start().starts_with(b"[") {
        return serde_json::from_slice(bytes).map_err(|e| FormatError::Corrupt {
            what: INDEX_FORMAT.what,
            reason: e.to_string(),
        });
    }
    INDEX_FORMAT.from_json::<Index>(bytes).map(|i| i.versions)
}

/// Uploaded modules on disk and their compiled forms in memory.
pub struct ModuleStore {
    dir: PathBuf,
    engine: OperatorEngine,
    compiler: Compiler,
    index: Mutex<BTreeMap<String, Vec<ModuleVersion>>>,
    loaded: Mutex<HashMap<(String, u32), Arc<OperatorModule>>>,
}

impl ModuleStore {
    /// Opens the store in `dir`, reading every module's index. Modules are
    /// compiled in this process until [`with_compiler`](Self::with_compiler)
    /// says otherwise.
    pub fn open(dir: PathBuf, engine: OperatorEngine) -> anyhow::Result<ModuleStore> {
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("while creating {}", dir.display()))?;
        let mut index = BTreeMap::new();
        for entry in
            std::fs::read_dir(&dir).with_context(|| format!("while listing {}", dir.display()))?
        {
            let path = entry?.path().join(INDEX);
            let Ok(text) = std::fs::read(&path) else {
                continue; // a module whose first upload did not finish
            };
            let versions =
                read_index(&text).with_context(|| format!("while reading {}", path.display()))?;
            let name = path
                .parent()
                .and_then(|p| p.file_name())
                .and_then(|n| n.to_str())
                .with_context(|| format!("odd module directory {}", path.display()))?;
            if !versions.is_empty() {
                index.insert(name.to_string(), versions);
            }
        }
        Ok(ModuleStore {
            dir,
            engine,
            compiler: Compiler::in_process(),
            index: Mutex::new(index),
            loaded: Mutex::new(HashMap::new()),
        })
    }

    /// The largest module the engine accepts, in bytes.
    pub fn max_module_bytes(&self) -> usize {
        self.engine.limits().max_module_bytes
    }

    /// Compiles modules with `compiler` from now on.
    pub fn with_compiler(mut self, compiler: Compiler) -> ModuleStore {
        self.compiler = compiler;
        self
    }

    /// Validates, compiles and stores `bytes` as the next version of
    /// `name`; returns it and whether it is new. Blocking (compilation).
    pub fn put(&self, name: &str, bytes: &[u8]) -> Result<(ModuleVersion, bool), ModuleError> {
        self.put_for(None, name, bytes)
    }

    /// Like [`put`](Self::put), for `tenant`: its compile waits in the
    /// tenant's own queue.
    pub fn put_for(
        &self,
        tenant: Option<&str>,
        name: &str,
        bytes: &[u8],
    ) -> Result<(ModuleVersion, bool), ModuleError> {
        check_stored_name("module", name).map_err(ModuleError::InvalidName)?;
        let digest = hex::encode(Sha256::digest(bytes));
        if let Some(newest) = self.versions(name).and_then(|v| v.last().cloned())
            && newest.digest == digest
        {
            return Ok((newest, false));
        }
        let module = self
            .compiler
            .load(&self.engine, tenant, name, bytes)
            .map_err(|source| ModuleError::Invalid {
                name: name.to_string(),
                source,
            })?;
        let mut index = self.index.lock().unwrap_or_else(|e| e.into_inner());
        let versions = index.entry(name.to_string()).or_default();
        let version = ModuleVersion {
            version: versions.last().map_or(1, |v| v.version + 1),
            digest,
            size: bytes.len() as u64,
            uploaded_ms: now_ms(),
        };
        let dir = self.dir.join(name);
        write_durably(&dir.join(format!("{}.wasm", version.version)), bytes)?;
        let mut updated = versions.clone();
        updated.push(version.clone());
        let index = INDEX_FORMAT.to_json(&Index {
            versions: updated.clone(),
        });
        write_durably(&dir.join(INDEX), &index)?;
        *versions = updated;
        self.loaded
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert((name.to_string(), version.version), module);
        Ok((version, true))
    }

    /// Every module with its versions, by name.
    pub fn list(&self) -> Vec<(String, Vec<ModuleVersion>)> {
        let index = self.index.lock().unwrap_or_else(|e| e.into_inner());
        index.iter().map(|(n, v)| (n.clone(), v.clone())).collect()
    }

    pub fn versions(&self, name: &str) -> Option<Vec<ModuleVersion>> {
        let index = self.index.lock().unwrap_or_else(|e| e.into_inner());
        index.get(name).cloned()
    }

    /// The version a reference names (the newest when it names none).
    pub fn resolve(&self, reference: &ModuleRef) -> Result<ModuleVersion, ModuleError> {
        let versions = self
            .versions(&reference.name)
            .ok_or_else(|| ModuleError::Unknown(reference.name.clone()))?;
        let found = match reference.version {
            None => versions.last(),
            Some(v) => versions.iter().find(|m| m.version == v),
        };
        found.cloned().ok_or_else(|| ModuleError::UnknownVersion {
            name: reference.name.clone(),
            version: reference.version.unwrap_or(0),
        })
    }

    /// The compiled module of a stored version. Blocking on first use
    /// after a restart (it is read and loaded from the artifact cache).
    pub fn load(&self, name: &str, version: u32) -> Result<Arc<OperatorModule>, ModuleError> {
        let key = (name.to_string(), version);
        if let Some(module) = self
            .loaded
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&key)
        {
            return Ok(module.clone());
        }
        self.resolve(&ModuleRef {
            name: name.to_string(),
            version: Some(version),
        })?;
        let path = self.dir.join(name).join(format!("{version}.wasm"));
        let bytes =
            std::fs::read(&path).with_context(|| format!("while reading {}", path.display()))?;
        let module = self
            .compiler
            .load(&self.engine, None, name, &bytes)
            .map_err(|source| ModuleError::Invalid {
                name: name.to_string(),
                source,
            })?;
        self.loaded
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key, module.clone());
        Ok(module)
    }

    /// Deletes every version of a module.
    pub fn delete(&self, name: &str) -> Result<(), ModuleError> {
        let mut index = self.index.lock().unwrap_or_else(|e| e.into_inner());
        if !index.contains_key(name) {
            return Err(ModuleError::Unknown(name.to_string()));
        }
        // The index file first: a crash in between leaves files no index
        // names, which the next open ignores.
        remove_durably(&self.dir.join(name).join(INDEX))?;
        index.remove(name);
        self.loaded
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|(n, _), _| n != name);
        remove_durably(&self.dir.join(name))?;
        Ok(())
    }
}
