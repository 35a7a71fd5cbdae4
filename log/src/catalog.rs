//! [`Catalog`]: where a server keeps what it manages besides streams —
//! pipeline records, module indexes and module bytes — so that every
//! worker sharing a log also shares them. The embedded log's catalog is
//! the data directory ([`DirCatalog`]); a cluster backend keeps it in the
//! cluster, so a worker that starts on an empty disk finds everything.
//!
//! Entries are named by slash-separated keys (`pipelines/orders.json`).
//! **Documents** are small JSON values whose keys end in `.json`, listed
//! by prefix; **blobs** are large opaque values (module bytes) read and
//! written whole. A write replaces the value atomically: readers see the
//! old or the new value, never a torn one. The catalog has no
//! transactions: callers write blobs before the documents that name them.

use std::path::{Path, PathBuf};

use async_trait::async_trait;
use bytes::Bytes;
use weir_core::files::{remove_durably, write_durably};

use crate::{LogError, LogResult};

/// Durable, shared storage of documents and blobs (see the module docs).
#[async_trait]
pub trait Catalog: Send + Sync + 'static {
    /// The document at `key`, if there is one.
    async fn document(&self, key: &str) -> LogResult<Option<Bytes>>;
    /// Writes (or replaces) the document at `key`.
    async fn put_document(&self, key: &str, value: Bytes) -> LogResult<()>;
    /// Removes the document at `key`; nothing happens when there is none.
    async fn remove_document(&self, key: &str) -> LogResult<()>;
    /// The keys of every document under `prefix`, sorted.
    async fn documents(&self, prefix: &str) -> LogResult<Vec<String>>;
    /// The blob at `key`, if there is one.
    async fn blob(&self, key: &str) -> LogResult<Option<Bytes>>;
    /// Writes (or replaces) the blob at `key`.
    async fn put_blob(&self, key: &str, value: Bytes) -> LogResult<()>;
    /// Removes the blob at `key`; nothing happens when there is none.
    async fn remove_blob(&self, key: &str) -> LogResult<()>;
}

/// Checks a catalog key: slash-separated parts of letters, digits, `-`,
/// `_`, `=` and `.`, none empty or made of dots only; documents' keys end
/// in `.json`, blobs' do not.
pub fn check_catalog_key(key: &str, document: bool) -> LogResult<()> {
    let refused = |reason: &str| {
        Err(LogError::Unavailable(format!(
            "catalog key {key:?}: {reason}"
        )))
    };
    if key
        .split('/')
        .any(|part| part.is_empty() || part.chars().all(|c| c == '.'))
    {
        return refused("every part between slashes needs a character other than '.'");
    }
    if !key
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '=' | '.' | '/'))
    {
        return refused("only letters, digits, '-', '_', '=', '.' and '/' are allowed");
    }
    if key.ends_with(".json") != document {
        return refused(if document {
            "a document's key ends in .json"
        } else {
            "a blob's key must not end in .json"
        });
    }
    Ok(())
}

/// The catalog of a single server: files under its data directory, each
/// key a path (documents are the `.json` files), written through a synced
/// temporary file and a rename.
pub struct DirCatalog {
    root: PathBuf,
}

impl DirCatalog {
    /// The catalog under `root` (made on first write).
    pub fn new(root: impl Into<PathBuf>) -> DirCatalog {
        DirCatalog { root: root.into() }
    }

    fn path(&self, key: &str, document: bool) -> LogResult<PathBuf> {
        check_catalog_key(key, document)?;
        Ok(self.root.join(key))
    }
}

fn storage(error: impl std::fmt::Display) -> LogError {
    LogError::Unavailable(format!("{error:#}"))
}

async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> anyhow::Result<T> + Send + 'static,
) -> LogResult<T> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(storage)?
        .map_err(storage)
}

fn read_file(path: &Path) -> anyhow::Result<Option<Bytes>> {
    match std::fs::read(path) {
        Ok(bytes) => Ok(Some(Bytes::from(bytes))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(anyhow::Error::new(e).context(format!("while reading {}", path.display()))),
    }
}

/// Every `.json` file under `dir`, as keys starting with `prefix`.
fn list_documents(dir: &Path, prefix: &str, keys: &mut Vec<String>) -> anyhow::Result<()> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => {
            return Err(anyhow::Error::new(e).context(format!("while listing {}", dir.display())));
        }
    };
    for entry in entries {
        let entry = entry.map_err(|e| anyhow::anyhow!("while listing {}: {e}", dir.display()))?;
        let Some(name) = entry.file_name().to_str().map(str::to_string) else {
            continue; // not a name this catalog writes
        };
        let path = entry.path();
        if path.is_dir() {
            list_documents(&path, &format!("{prefix}{name}/"), keys)?;
        } else if name.ends_with(".json") {
            keys.push(format!("{prefix}{name}"));
        }
    }
    Ok(())
}

#[async_trait]
impl Catalog for DirCatalog {
    async fn document(&self, key: &str) -> LogResult<Option<Bytes>> {
        let path = self.path(key, true)?;
        blocking(move || read_file(&path)).await
    }

    async fn put_document(&self, key: &str, value: Bytes) -> LogResult<()> {
        let path = self.path(key, true)?;
        blocking(move || write_durably(&path, &value)).await
    }

    async fn remove_document(&self, key: &str) -> LogResult<()> {
        let path = self.path(key, true)?;
        blocking(move || remove_durably(&path)).await
    }

    async fn documents(&self, prefix: &str) -> LogResult<Vec<String>> {
        // The directory holding the prefix's last full part.
        let (dir, base) = match prefix.rfind('/') {
            Some(i) => (&prefix[..i], &prefix[..=i]),
            None => ("", ""),
        };
        let (root, base, prefix) = (self.root.join(dir), base.to_string(), prefix.to_string());
        blocking(move || {
            let mut keys = Vec::new();
            list_documents(&root, &base, &mut keys)?;
            keys.retain(|k| k.starts_with(&prefix));
            keys.sort();
            Ok(keys)
        })
        .await
    }

    async fn blob(&self, key: &str) -> LogResult<Option<Bytes>> {
        let path = self.path(key, false)?;
        blocking(move || read_file(&path)).await
    }

    async fn put_blob(&self, key: &str, value: Bytes) -> LogResult<()> {
        let path = self.path(key, false)?;
        blocking(move || write_durably(&path, &value)).await
    }

    async fn remove_blob(&self, key: &str) -> LogResult<()> {
        let path = self.path(key, false)?;
        blocking(move || remove_durably(&path)).await
    }
}

/// The catalog conformance checks every implementation passes.
#[cfg(feature = "contract")]
pub mod contract {
    use super::*;

    /// Runs every check against `catalog`, which must start empty.
    pub async fn check(catalog: &dyn Catalog) {
        let doc = |s: &str| Bytes::from(s.to_string());
        assert_eq!(catalog.document("pipelines/a.json").await.unwrap(), None);
        assert!(catalog.documents("pipelines/").await.unwrap().is_empty());
        catalog
            .put_document("pipelines/b.json", doc("{\"b\":1}"))
            .await
            .unwrap();
        catalog
            .put_document("pipelines/a.json", doc("{\"a\":1}"))
            .await
            .unwrap();
        catalog
            .put_document("modules/m/versions.json", doc("[]"))
            .await
            .unwrap();
        catalog
            .put_document("modules/n.1/versions.json", doc("[1]"))
            .await
            .unwrap();
        catalog
            .put_document("pipelines/a.json", doc("{\"a\":2}"))
            .await
            .unwrap();
        assert_eq!(
            catalog.document("pipelines/a.json").await.unwrap(),
            Some(doc("{\"a\":2}")),
            "a write replaces the document"
        );
        assert_eq!(
            catalog.documents("pipelines/").await.unwrap(),
            ["pipelines/a.json", "pipelines/b.json"]
        );
        assert_eq!(
            catalog.documents("modules/").await.unwrap(),
            ["modules/m/versions.json", "modules/n.1/versions.json"],
            "documents are listed under nested keys too"
        );
        assert_eq!(
            catalog.documents("modules/n").await.unwrap(),
            ["modules/n.1/versions.json"],
            "a prefix may end inside a part"
        );
        let wasm = Bytes::from(vec![7u8; 3 << 20]);
        catalog
            .put_blob("modules/m/1.wasm", wasm.clone())
            .await
            .unwrap();
        assert_eq!(catalog.blob("modules/m/1.wasm").await.unwrap(), Some(wasm));
        assert_eq!(
            catalog.documents("modules/m/").await.unwrap(),
            ["modules/m/versions.json"],
            "blobs are not documents"
        );
        catalog.remove_blob("modules/m/1.wasm").await.unwrap();
        catalog.remove_blob("modules/m/1.wasm").await.unwrap();
        assert_eq!(catalog.blob("modules/m/1.wasm").await.unwrap(), None);
        catalog.remove_document("pipelines/a.json").await.unwrap();
        catalog.remove_document("pipelines/a.json").await.unwrap();
        assert_eq!(catalog.document("pipelines/a.json").await.unwrap(), None);
        assert_eq!(
            catalog.documents("pipelines/").await.unwrap(),
            ["pipelines/b.json"]
        );
        for bad in ["../x.json", "a//b.json", "a/ b.json", "x.wasm"] {
            assert!(
                catalog.put_document(bad, doc("{}")).await.is_err(),
                "document key {bad:?} is refused"
            );
        }
        assert!(catalog.put_blob("x.json", doc("")).await.is_err());
    }
}
