//! What is kept of a transactional id: its record, saved durably in a
//! state file of [`STATE_FORMAT`] (its status, producer, partitions, groups
//! and pending offsets, and the sequences its commits are stamped with);
//! its state at run time (recent batches, bytes buffered, last use); and
//! the names of its state file and of its buffer, where each batch is kept
//! with its [`Destination`]. How the states change is the parent module's.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use weir_core::format::Format;
use weir_log::CommitLogSettings;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(super) enum Status {
    Empty,
    Ongoing,
    PrepareCommit,
    PrepareAbort,
    CompleteCommit,
    CompleteAbort,
}

/// The format of the state files (`<digest>.txn`). Files from before
/// versions were written are version 1 unsealed.
pub(super) const STATE_FORMAT: Format = Format {
    what: "transaction state",
    current: 1,
    oldest: 1,
};

/// What is kept of one transactional id, durably.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct TxnRecord {
    pub(super) id: String,
    pub(super) producer_id: i64,
    pub(super) epoch: i16,
    /// The producer id and epoch the current ones replaced: an
    /// InitProducerId retried with them gets the current ones (KIP-360).
    pub(super) previous: Option<(i64, i16)>,
    pub(super) timeout_ms: u64,
    pub(super) status: Status,
    /// When the transaction under way began (ms since the epoch).
    pub(super) started_ms: u64,
    pub(super) partitions: BTreeSet<(String, u32)>,
    pub(super) groups: BTreeSet<String>,
    /// Offsets to commit with the transaction: (group, topic, partition).
    pub(super) offsets: BTreeMap<(String, String, u32), u64>,
    /// The coordinator's own producer id for appending committed batches,
    /// and the next sequence per partition (as of the last completed
    /// commit, so a redone commit stamps the same sequences).
    pub(super) copier: i64,
    pub(super) sequences: BTreeMap<(String, u32), i32>,
}

/// One transactional id at run time.
pub(super) struct Txn {
    pub(super) record: TxnRecord,
    /// The producer's latest buffered batches per partition, as (first,
    /// last) sequence: a retry is answered, not buffered twice.
    pub(super) recent: HashMap<(String, u32), VecDeque<(i32, i32)>>,
    /// Bytes buffered by the transaction under way.
    pub(super) buffered: u64,
    /// When a producer last used this id (ms since the epoch); after a
    /// restart, when its state was last saved.
    pub(super) used_ms: u64,
    /// Forgotten by expiry: whoever still holds it treats the id as unknown.
    pub(super) expired: bool,
}

impl Txn {
    pub(super) fn new(record: TxnRecord, used_ms: u64) -> Txn {
        Txn {
            record,
            recent: HashMap::new(),
            buffered: 0,
            used_ms,
            expired: false,
        }
    }

    /// Whether the id can be forgotten: no transaction open or being
    /// finished, and unused for `expire_after`.
    pub(super) fn expired_at(&self, now_ms: u64, expire_after: Duration) -> bool {
        matches!(
            self.record.status,
            Status::Empty | Status::CompleteCommit | Status::CompleteAbort
        ) && u128::from(now_ms.saturating_sub(self.used_ms)) >= expire_after.as_millis()
    }
}

/// Where a buffered batch goes.
#[derive(Serialize, Deserialize)]
pub(super) struct Destination {
    pub(super) topic: String,
    pub(super) partition: u32,
}

fn digest(id: &str) -> String {
    hex::encode(&Sha256::digest(id.as_bytes())[..16])
}

pub(super) fn state_path(dir: &Path, id: &str) -> PathBuf {
    dir.join(format!("{}.txn", digest(id)))
}

pub(super) fn buffer_name(id: &str) -> String {
    format!("kafka-txn.{}", digest(id))
}

pub(super) fn buffer_settings() -> CommitLogSettings {
    CommitLogSettings {
        durability: weir_log::Durability::Always,
        segment_bytes: 64 << 20,
    }
}
