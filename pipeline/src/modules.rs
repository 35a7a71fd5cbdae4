//! The module store: operator modules uploaded to the server. Every upload
//! of new bytes is a new version of its name (1, 2, 3...), validated and
//! compiled before it is accepted (by the store's [`Compiler`]: for a
//! server, in a child process within limits), and kept in the server's
//! [`Catalog`] as the blob `modules/<name>/<version>.wasm` with the
//! document `modules/<name>/versions.json` listing the versions (on the
//! embedded log, files under the data directory; on a cluster, in the
//! cluster, so every worker runs the same bytes for a version). Compiled
//! forms come from the engine's artifact cache, so a restart does not
//! recompile. Uploading the same bytes as the newest version again is a
//! no-op that returns that version.
//!
//! Whether a pipeline still uses a module is the pipelines' business, not
//! this store's.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use anyhow::Context;
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use weir_core::format::{Format, FormatError};
use weir_core::names::check_stored_name;
use weir_core::now_ms;
use weir_host::{Compiler, OperatorEngine, OperatorError, OperatorModule};
use weir_log::Catalog;

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

/// The catalog key of a module's versions document.
fn index_key(name: &str) -> String {
    format!("modules/{name}/versions.json")
}

/// The catalog key of a module version's bytes.
fn bytes_key(name: &str, version: u32) -> String {
    format!("modules/{name}/{version}.wasm")
}

/// Uploaded modules in the catalog and their compiled forms in memory.
pub struct ModuleStore {
    catalog: Arc<dyn Catalog>,
    engine: OperatorEngine,
    compiler: Arc<Compiler>,
    /// Serializes this process's uploads and deletions.
    changing: tokio::sync::Mutex<()>,
    loaded: Mutex<HashMap<(String, u32), Arc<OperatorModule>>>,
}

impl ModuleStore {
    /// The store in `catalog`. Modules are compiled in this process until
    /// [`with_compiler`](Self::with_compiler) says otherwise.
    pub fn open(catalog: Arc<dyn Catalog>, engine: OperatorEngine) -> ModuleStore {
        ModuleStore {
            catalog,
            engine,
            compiler: Arc::new(Compiler::in_process()),
            changing: tokio::sync::Mutex::new(()),
            loaded: Mutex::new(HashMap::new()),
        }
    }

    /// The largest module the engine accepts, in bytes.
    pub fn max_module_bytes(&self) -> usize {
        self.engine.limits().max_module_bytes
    }

    /// Compiles modules with `compiler` from now on.
    pub fn with_compiler(mut self, compiler: Compiler) -> ModuleStore {
        self.compiler = Arc::new(compiler);
        self
    }

    /// Validates, compiles and stores `bytes` as the next version of
    /// `name`; returns it and whether it is new.
    pub async fn put(
        &self,
        name: &str,
        bytes: Bytes,
    ) -> Result<(ModuleVersion, bool), ModuleError> {
        self.put_for(None, name, bytes).await
    }

    /// Like [`put`](Self::put), for `tenant`: its compile waits in the
    /// tenant's own queue.
    pub async fn put_for(
        &self,
        tenant: Option<&str>,
        name: &str,
        bytes: Bytes,
    ) -> Result<(ModuleVersion, bool), ModuleError> {
        check_stored_name("module", name).map_err(ModuleError::InvalidName)?;
        let digest = hex::encode(Sha256::digest(&bytes));
        if let Some(newest) = self.versions(name).await?.and_then(|v| v.last().cloned())
            && newest.digest == digest
        {
            return Ok((newest, false));
        }
        let module = self.compile(tenant, name, bytes.clone()).await?;
        let _changing = self.changing.lock().await;
        let mut versions = self.versions(name).await?.unwrap_or_default();
        let version = ModuleVersion {
            version: versions.last().map_or(1, |v| v.version + 1),
            digest,
            size: bytes.len() as u64,
            uploaded_ms: now_ms(),
        };
        // The bytes first: a crash in between leaves bytes no index names,
        // which the next upload of the name overwrites.
        self.catalog
            .put_blob(&bytes_key(name, version.version), bytes)
            .await
            .with_context(|| format!("while storing module {name:?}"))?;
        versions.push(version.clone());
        let index = INDEX_FORMAT.to_json(&Index { versions });
        self.catalog
            .put_document(&index_key(name), Bytes::from(index))
            .await
            .with_context(|| format!("while storing module {name:?}'s versions"))?;
        self.loaded
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert((name.to_string(), version.version), module);
        Ok((version, true))
    }

    /// Validates and compiles `bytes` (or loads them from the artifact
    /// cache) on the blocking pool.
    async fn compile(
        &self,
        tenant: Option<&str>,
        name: &str,
        bytes: Bytes,
    ) -> Result<Arc<OperatorModule>, ModuleError> {
        let (engine, compiler) = (self.engine.clone(), self.compiler.clone());
        let (tenant, module_name) = (tenant.map(str::to_string), name.to_string());
        tokio::task::spawn_blocking(move || {
            compiler.load(&engine, tenant.as_deref(), &module_name, &bytes)
        })
        .await
        .context("the compiler failed")?
        .map_err(|source| ModuleError::Invalid {
            name: name.to_string(),
            source,
        })
    }

    /// Every module with its versions, by name.
    pub async fn list(&self) -> Result<Vec<(String, Vec<ModuleVersion>)>, ModuleError> {
        let keys = self
            .catalog
            .documents("modules/")
            .await
            .context("while listing modules")?;
        let mut modules = Vec::new();
        for key in keys {
            let Some(name) = key
                .strip_prefix("modules/")
                .and_then(|k| k.strip_suffix("/versions.json"))
            else {
                continue; // not a module's index
            };
            if let Some(versions) = self.versions(name).await? {
                modules.push((name.to_string(), versions));
            }
        }
        Ok(modules)
    }

    /// A module's versions, oldest first (`None`: no such module).
    pub async fn versions(&self, name: &str) -> Result<Option<Vec<ModuleVersion>>, ModuleError> {
        let key = index_key(name);
        let Some(bytes) = self
            .catalog
            .document(&key)
            .await
            .with_context(|| format!("while reading module {name:?}'s versions"))?
        else {
            return Ok(None);
        };
        let versions = read_index(&bytes).with_context(|| format!("while reading {key}"))?;
        Ok((!versions.is_empty()).then_some(versions))
    }

    /// The version a reference names (the newest when it names none).
    pub async fn resolve(&self, reference: &ModuleRef) -> Result<ModuleVersion, ModuleError> {
        let versions = self
            .versions(&reference.name)
            .await?
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

    /// The compiled module of a stored version (read from the catalog and
    /// loaded from the artifact cache on first use after a restart).
    pub async fn load(&self, name: &str, version: u32) -> Result<Arc<OperatorModule>, ModuleError> {
        let key = (name.to_string(), version);
        if let Some(module) = self
            .loaded
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&key)
        {
            return Ok(module.clone());
        }
        let stored = self
            .resolve(&ModuleRef {
                name: name.to_string(),
                version: Some(version),
            })
            .await?;
        let blob = bytes_key(name, version);
        let bytes = self
            .catalog
            .blob(&blob)
            .await
            .with_context(|| format!("while reading {blob}"))?
            .with_context(|| format!("module {name:?} version {version}: {blob} is missing"))?;
        let digest = hex::encode(Sha256::digest(&bytes));
        if digest != stored.digest {
            return Err(ModuleError::Storage(anyhow::anyhow!(
                "module {name:?} version {version}: {blob} has digest {digest}, its index says {}",
                stored.digest
            )));
        }
        let module = self.compile(None, name, bytes).await?;
        self.loaded
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key, module.clone());
        Ok(module)
    }

    /// Deletes every version of a module.
    pub async fn delete(&self, name: &str) -> Result<(), ModuleError> {
        let _changing = self.changing.lock().await;
        let versions = self
            .versions(name)
            .await?
            .ok_or_else(|| ModuleError::Unknown(name.to_string()))?;
        // The index first: bytes no index names are never read.
        self.catalog
            .remove_document(&index_key(name))
            .await
            .with_context(|| format!("while deleting module {name:?}"))?;
        self.loaded
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|(n, _), _| n != name);
        for version in versions {
            self.catalog
                .remove_blob(&bytes_key(name, version.version))
                .await
                .with_context(|| format!("while deleting module {name:?}"))?;
        }
        Ok(())
    }
}
