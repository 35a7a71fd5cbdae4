//! Topic users: who must be asked before a topic is deleted or reshaped.

/// Something that reads or writes topics and must not lose one under it
/// (the pipelines): a topic is deleted or given more partitions only while
/// the hold [`hold_if_unused`](Self::hold_if_unused) returns is kept.
#[async_trait::async_trait]
pub trait TopicUsers: Send + Sync {
    /// Keeps new users off `topic` until the returned hold is dropped,
    /// unless it has users now: then their names.
    async fn hold_if_unused(&self, topic: &str) -> Result<TopicHold, Vec<String>>;
}

/// Kept while a topic is changed (see [`TopicUsers`]).
pub type TopicHold = Box<dyn Send>;

/// Runs `change` (deleting or reshaping `topic`) unless the topic has
/// users, keeping new ones off meanwhile; returns the users instead when
/// there are any.
pub async fn change_unless_used<T>(
    users: &dyn TopicUsers,
    topic: &str,
    change: impl Future<Output = T>,
) -> Result<T, Vec<String>> {
    let _hold = users.hold_if_unused(topic).await?;
    Ok(change.await)
}
