//! The catalog on a JetStream cluster: documents in a key-value bucket
//! (`<prefix>-catalog`, one revision per key), blobs in an object store
//! (`<prefix>-blobs`, chunked, with a digest JetStream checks on read).
//! Both are replicated like the topics, so every worker sees the same
//! pipelines and modules and a worker on an empty disk finds them all.

use async_nats::jetstream::{self, kv, object_store};
use async_trait::async_trait;
use bytes::Bytes;
use futures::TryStreamExt;
use tokio::io::AsyncReadExt;
use weir_log::{Catalog, LogResult, check_catalog_key};

use crate::errors::unavailable;
use crate::names::Names;

/// Documents and blobs in the cluster (see the module docs).
pub struct JetStreamCatalog {
    documents: kv::Store,
    blobs: object_store::ObjectStore,
}

impl JetStreamCatalog {
    /// Opens the bucket and the object store, making them if missing.
    pub async fn open(
        context: &jetstream::Context,
        names: &Names,
        replicas: usize,
    ) -> LogResult<JetStreamCatalog> {
        let documents = crate::config::bucket(
            context,
            names.catalog_bucket(),
            "Weir: pipelines, module indexes and other documents",
            replicas,
        )
        .await?;
        let bucket = names.blob_store();
        let blobs = context
            .create_object_store(object_store::Config {
                bucket: bucket.clone(),
                description: Some("Weir: module bytes".to_string()),
                storage: jetstream::stream::StorageType::File,
                num_replicas: replicas,
                ..Default::default()
            })
            .await
            .map_err(|e| unavailable(&format!("opening the object store {bucket}"), e))?;
        Ok(JetStreamCatalog { documents, blobs })
    }
}

#[async_trait]
impl Catalog for JetStreamCatalog {
    async fn document(&self, key: &str) -> LogResult<Option<Bytes>> {
        check_catalog_key(key, true)?;
        self.documents
            .get(key)
            .await
            .map_err(|e| unavailable(&format!("reading {key}"), e))
    }

    async fn put_document(&self, key: &str, value: Bytes) -> LogResult<()> {
        check_catalog_key(key, true)?;
        self.documents
            .put(key, value)
            .await
            .map(|_| ())
            .map_err(|e| unavailable(&format!("writing {key}"), e))
    }

    async fn remove_document(&self, key: &str) -> LogResult<()> {
        check_catalog_key(key, true)?;
        self.documents
            .purge(key)
            .await
            .map_err(|e| unavailable(&format!("removing {key}"), e))
    }

    async fn documents(&self, prefix: &str) -> LogResult<Vec<String>> {
        let listing = format!("listing the documents under {prefix}");
        let mut keys: Vec<String> = self
            .documents
            .keys()
            .await
            .map_err(|e| unavailable(&listing, e))?
            .try_collect()
            .await
            .map_err(|e| unavailable(&listing, e))?;
        keys.retain(|k| k.starts_with(prefix));
        keys.sort();
        Ok(keys)
    }

    async fn blob(&self, key: &str) -> LogResult<Option<Bytes>> {
        check_catalog_key(key, false)?;
        let mut object = match self.blobs.get(key).await {
            Ok(object) => object,
            Err(e) if e.kind() == object_store::GetErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(unavailable(&format!("reading {key}"), e)),
        };
        let mut bytes = Vec::with_capacity(object.info().size);
        object
            .read_to_end(&mut bytes)
            .await
            .map_err(|e| unavailable(&format!("reading {key}"), e))?;
        Ok(Some(Bytes::from(bytes)))
    }

    async fn put_blob(&self, key: &str, value: Bytes) -> LogResult<()> {
        check_catalog_key(key, false)?;
        self.blobs
            .put(key, &mut value.as_ref())
            .await
            .map(|_| ())
            .map_err(|e| unavailable(&format!("writing {key}"), e))
    }

    async fn remove_blob(&self, key: &str) -> LogResult<()> {
        check_catalog_key(key, false)?;
        match self.blobs.delete(key).await {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == object_store::DeleteErrorKind::NotFound => Ok(()),
            Err(e) => Err(unavailable(&format!("removing {key}"), e)),
        }
    }
}
