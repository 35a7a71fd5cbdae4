//! A topic: a name, its configuration and its partitions.

use std::sync::Arc;

use crate::config::TopicConfig;
use crate::error::{LogError, Result};
use crate::partition::Partition;

/// A handle to a topic; clones share it.
#[derive(Debug, Clone)]
pub struct Topic {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    name: String,
    config: TopicConfig,
    partitions: Vec<Partition>,
}

impl Topic {
    pub(crate) fn new(name: String, config: TopicConfig, partitions: Vec<Partition>) -> Topic {
        Topic {
            inner: Arc::new(Inner {
                name,
                config,
                partitions,
            }),
        }
    }

    pub fn name(&self) -> &str {
        &self.inner.name
    }

    pub fn config(&self) -> &TopicConfig {
        &self.inner.config
    }

    /// All partitions, indexed by partition number.
    pub fn partitions(&self) -> &[Partition] {
        &self.inner.partitions
    }

    /// One partition, or a clear error if the topic has no such partition.
    pub fn partition(&self, id: u32) -> Result<&Partition> {
        self.inner
            .partitions
            .get(id as usize)
            .ok_or_else(|| LogError::UnknownPartition {
                topic: self.inner.name.clone(),
                partition: id,
                partitions: self.inner.partitions.len() as u32,
            })
    }

    pub(crate) fn mark_deleted(&self) {
        for partition in &self.inner.partitions {
            partition.mark_deleted();
        }
    }
}
