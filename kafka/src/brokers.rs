//! The brokers a client is told about. On its own a server is a cluster of
//! one broker (node 0). When workers share a cluster log, each worker's
//! listener is a broker of its own (its node id a digest of its worker
//! id) and every worker lists the live ones, as [`Brokers`] says: any of
//! them serves produce and fetch for every partition (metadata names the
//! one answering as each partition's leader), and each consumer group has
//! one coordinator, the same whichever worker is asked, so that members
//! connected to different workers form one group.

use sha2::{Digest, Sha256};

/// A broker as clients see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KafkaNode {
    /// The worker it belongs to.
    pub worker: String,
    pub host: String,
    pub port: i32,
    /// Whether it is the broker answering.
    pub this: bool,
}

impl KafkaNode {
    /// Its node id: the same on every worker, from the worker's id.
    pub fn node_id(&self) -> i32 {
        let digest = Sha256::digest(self.worker.as_bytes());
        i32::from_be_bytes([digest[0], digest[1], digest[2], digest[3]]) & i32::MAX
    }
}

/// The live brokers of a cluster of workers.
pub trait Brokers: Send + Sync {
    /// Every live worker's broker, this one included, sorted by worker.
    fn nodes(&self) -> Vec<KafkaNode>;
}

/// The broker coordinating group `group` among `nodes` (sorted): the same
/// answer on every worker with the same view of who is live.
pub fn coordinator_of<'a>(nodes: &'a [KafkaNode], group: &str) -> Option<&'a KafkaNode> {
    if nodes.is_empty() {
        return None;
    }
    let digest = Sha256::digest(group.as_bytes());
    let pick = u64::from_be_bytes(digest[..8].try_into().expect("8 bytes"));
    nodes.get((pick % nodes.len() as u64) as usize)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(worker: &str, this: bool) -> KafkaNode {
        KafkaNode {
            worker: worker.into(),
            host: "127.0.0.1".into(),
            port: 9092,
            this,
        }
    }

    #[test]
    fn every_worker_names_the_same_coordinator_and_node_ids_are_stable() {
        let seen_by_a = [node("a", true), node("b", false), node("c", false)];
        let seen_by_b = [node("a", false), node("b", true), node("c", false)];
        for group in ["g1", "orders", "acme.g"] {
            let a = coordinator_of(&seen_by_a, group).unwrap();
            let b = coordinator_of(&seen_by_b, group).unwrap();
            assert_eq!((&a.worker, a.node_id()), (&b.worker, b.node_id()));
        }
        let spread: std::collections::BTreeSet<&str> = (0..30)
            .map(|i| {
                coordinator_of(&seen_by_a, &format!("g{i}"))
                    .unwrap()
                    .worker
                    .as_str()
            })
            .collect();
        assert_eq!(spread.len(), 3, "groups spread over the workers");
        assert!(coordinator_of(&[], "g").is_none());
        assert!(node("a", true).node_id() >= 0);
    }
}
