//! JetStream names for Weir's topics and commit logs: one stream each,
//! one subject per partition (see `docs/cluster.md`).
//!
//! A Weir name may hold dots, which subjects use as separators and stream
//! names refuse, so a name is written with dots as underscores and made
//! unique again by 16 hex digits of its SHA-256: `a.b` and `a_b` get
//! different streams. The name itself is kept in the stream's metadata,
//! which is where listing reads it back.

use sha2::{Digest, Sha256};

/// What a stream holds, in its metadata under [`KIND`].
pub const KIND: &str = "weir.kind";
/// The Weir name of the topic or commit log, in the stream's metadata.
pub const NAME: &str = "weir.name";
/// A topic's configuration (JSON), in the stream's metadata.
pub const CONFIG: &str = "weir.config";
/// A commit log's partition count, in the stream's metadata.
pub const PARTITIONS: &str = "weir.partitions";

/// The two kinds of Weir streams.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Topic,
    CommitLog,
}

impl Kind {
    fn letter(self) -> &'static str {
        match self {
            Kind::Topic => "t",
            Kind::CommitLog => "c",
        }
    }

    /// Its value under [`KIND`].
    pub fn label(self) -> &'static str {
        match self {
            Kind::Topic => "topic",
            Kind::CommitLog => "commit-log",
        }
    }
}

/// Names of one deployment's streams: every name starts with `prefix`, so
/// several deployments (or tests) can share one NATS account.
#[derive(Debug, Clone)]
pub struct Names {
    prefix: String,
}

impl Names {
    /// `prefix`: letters, digits, `-` and `_` only (it is a subject token).
    pub fn new(prefix: &str) -> Result<Names, String> {
        let valid = !prefix.is_empty()
            && prefix.len() <= 32
            && prefix
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
        if valid {
            Ok(Names {
                prefix: prefix.to_string(),
            })
        } else {
            Err(format!(
                "stream prefix {prefix:?} must be 1 to 32 letters, digits, '-' or '_'"
            ))
        }
    }

    /// The stream that holds topic or commit log `name`.
    pub fn stream(&self, kind: Kind, name: &str) -> String {
        format!("{}-{}-{}", self.prefix, kind.letter(), token(name))
    }

    /// The subject of partition `partition` of `name`.
    pub fn subject(&self, kind: Kind, name: &str, partition: u32) -> String {
        self.subjects(kind, name, &partition.to_string())
    }

    /// The subjects a stream of `name` takes: `<prefix>.<kind>.<token>.<rest>`.
    pub fn subjects(&self, kind: Kind, name: &str, rest: &str) -> String {
        format!("{}.{}.{}.{rest}", self.prefix, kind.letter(), token(name))
    }

    /// Whether `stream` is one of this deployment's streams of `kind`.
    pub fn is_stream_of(&self, kind: Kind, stream: &str) -> bool {
        stream.starts_with(&format!("{}-{}-", self.prefix, kind.letter()))
    }

    /// The stream that hands out producer ids, and its subject.
    pub fn ids(&self) -> (String, String) {
        (
            format!("{}-ids", self.prefix),
            format!("{}.ids", self.prefix),
        )
    }

    /// The key-value bucket of partition tail snapshots.
    pub fn tails_bucket(&self) -> String {
        format!("{}-tails", self.prefix)
    }

    /// The key-value bucket of the catalog's documents.
    pub fn catalog_bucket(&self) -> String {
        format!("{}-catalog", self.prefix)
    }

    /// The object store of the catalog's blobs.
    pub fn blob_store(&self) -> String {
        format!("{}-blobs", self.prefix)
    }

    /// The key-value bucket of live workers' heartbeats.
    pub fn workers_bucket(&self) -> String {
        format!("{}-workers", self.prefix)
    }

    /// The key-value bucket of task leases.
    pub fn leases_bucket(&self) -> String {
        format!("{}-leases", self.prefix)
    }

    /// The key-value bucket of consumer groups' offsets.
    pub fn groups_bucket(&self) -> String {
        format!("{}-groups", self.prefix)
    }
}

/// `name` as one subject token: dots as underscores, then a digest of the
/// name so that the mapping stays one to one.
fn token(name: &str) -> String {
    let digest = Sha256::digest(name.as_bytes());
    format!("{}-{}", name.replace('.', "_"), hex::encode(&digest[..8]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_that_differ_only_in_dots_get_streams_of_their_own() {
        let names = Names::new("weir").unwrap();
        let dotted = names.stream(Kind::Topic, "a.b");
        let underscored = names.stream(Kind::Topic, "a_b");
        assert_ne!(dotted, underscored);
        assert!(dotted.starts_with("weir-t-a_b-"));
        assert!(!dotted.contains('.'));
    }

    #[test]
    fn a_partition_is_one_subject_token_below_its_stream() {
        let names = Names::new("weir").unwrap();
        let subject = names.subject(Kind::CommitLog, "orders.task", 3);
        let tokens: Vec<&str> = subject.split('.').collect();
        assert_eq!(tokens.len(), 4, "{subject}");
        assert_eq!((tokens[0], tokens[1], tokens[3]), ("weir", "c", "3"));
        assert_eq!(
            names.subjects(Kind::CommitLog, "orders.task", "*"),
            format!("weir.c.{}.*", tokens[2])
        );
    }

    #[test]
    fn prefixes_are_checked() {
        assert!(Names::new("weir-test_1").is_ok());
        assert!(Names::new("").is_err());
        assert!(Names::new("a.b").is_err());
        assert!(Names::new("a b").is_err());
    }
}
