//! The commit record: what a read-write transaction decided, in a form that can be written to a
//! log, replicated and applied anywhere with the same result.
//!
//! A record carries no reads, no locks and no clock readings: only the transaction's id, its
//! commit timestamp and its writes. Applying it ([`CommitRecord::to_commit`] then
//! `Mvcc::apply`) is deterministic (the same record gives the same state on every replica) and
//! idempotent (applying it twice writes the same versions twice). That is the shape Raft needs:
//! the replicated server puts replication between building a record and applying it.

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use boundkv_clockbound::Timestamp;
use boundkv_storage::{Commit, VersionedWrite};

/// A transaction's identity: 16 random bytes, chosen when it begins. Used to deduplicate a commit
/// that a client retries.
#[derive(Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct TxnId(pub [u8; 16]);

impl TxnId {
    /// A fresh random id.
    pub fn random() -> Self {
        TxnId(rand::random())
    }
}

impl std::fmt::Debug for TxnId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TxnId({self})")
    }
}

impl std::fmt::Display for TxnId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for b in &self.0[..8] {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

/// One write of a record: a value, or `None` for a delete.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Write {
    /// The key.
    pub key: Bytes,
    /// The value, or `None` to delete the key.
    pub value: Option<Bytes>,
}

/// A decided read-write transaction.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommitRecord {
    /// Who committed.
    pub txn_id: TxnId,
    /// When: every write takes effect at this timestamp.
    pub ts: Timestamp,
    /// What, in key order, one write per key.
    pub writes: Vec<Write>,
}

impl CommitRecord {
    /// The storage commit that applying this record performs. `applied_index` is the Raft index
    /// the record was applied from, when replicated. `record_txn_id` also stores the transaction's
    /// id with its timestamp, so that a client retrying the same commit is answered instead of
    /// applied twice; the embedded database, whose callers cannot retry a commit, skips it.
    pub fn to_commit(&self, applied_index: Option<u64>, record_txn_id: bool) -> Commit {
        Commit {
            ts: self.ts.as_nanos(),
            txn_id: if record_txn_id { self.txn_id.0.to_vec() } else { Vec::new() },
            writes: self
                .writes
                .iter()
                .map(|w| VersionedWrite {
                    key: w.key.to_vec(),
                    value: w.value.as_ref().map(|v| v.to_vec()),
                })
                .collect(),
            applied_index,
        }
    }

    /// Key and value bytes in the record.
    pub fn size_bytes(&self) -> usize {
        self.writes.iter().map(|w| w.key.len() + w.value.as_ref().map_or(0, Bytes::len)).sum()
    }
}
