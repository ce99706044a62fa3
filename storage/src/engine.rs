//! The [`Engine`] trait: an ordered, durable map of byte strings, the smallest thing MVCC and the
//! Raft log need from a storage engine.
//!
//! Two engines implement it: [`crate::SledEngine`] (sled 0.34.7 on disk, with a real `fdatasync`)
//! and [`crate::MemoryEngine`] (a `BTreeMap`, for tests). Both must pass the conformance suite in
//! `testsuite` (feature `testing`), which is what makes swapping sled for another engine a
//! one-crate change.

use std::ops::Bound;

use serde::{Deserialize, Serialize};

use crate::error::Result;

/// An ascending (and reversible) iterator over key/value pairs.
pub type ScanIter<'a> = Box<dyn DoubleEndedIterator<Item = Result<(Vec<u8>, Vec<u8>)>> + Send + 'a>;

/// An ordered key/value store with atomic batches and explicit durability.
///
/// Keys are compared as byte strings (lexicographically, shorter first on a common prefix).
pub trait Engine: Send + Sync + 'static {
    /// The value stored under `key`, if any.
    ///
    /// # To ensure correctness
    /// Must reflect every [`Engine::write`] that returned before the call, and never part of a
    /// batch: a concurrent batch is seen entirely or not at all.
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>>;

    /// The pairs with keys in `range`, in ascending key order (`next_back` gives descending).
    ///
    /// # To ensure correctness
    /// Each pair returned was present at some instant during the scan. A scan is *not* a snapshot:
    /// batches applied while it runs may be partly visible to it. MVCC does not need snapshots
    /// from the engine (versions are immutable and reads are at a timestamp).
    fn scan(&self, range: (Bound<Vec<u8>>, Bound<Vec<u8>>)) -> ScanIter<'_>;

    /// Applies `batch` atomically.
    ///
    /// # To ensure correctness
    /// - After `write` returns, every later `get` and `scan` sees the whole batch.
    /// - After a crash (at any instant, including during `write`), either all of the batch is
    ///   present or none of it.
    /// - A batch is *not* durable until a later [`Engine::flush`] returns.
    fn write(&self, batch: WriteBatch) -> Result<()>;

    /// Makes every batch whose `write` returned before this call durable.
    ///
    /// # To ensure correctness
    /// Must not return `Ok` until those batches survive a power loss (the data and the metadata
    /// needed to find it are on stable storage: `fdatasync`, not just the page cache), unless the
    /// engine was explicitly opened with a weaker, documented durability mode. Concurrent callers
    /// may share one sync (group commit). An error is fatal: the engine's state on disk is then
    /// unknown and it must accept no further writes.
    fn flush(&self) -> Result<()>;

    /// A description of the engine and its size, for metrics and `boundkv status`.
    fn status(&self) -> Result<Status>;
}

/// One atomic group of puts and deletes, applied in order.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WriteBatch {
    ops: Vec<(Vec<u8>, Option<Vec<u8>>)>,
    bytes: usize,
}

impl WriteBatch {
    /// An empty batch.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `key = value`.
    pub fn put(&mut self, key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) -> &mut Self {
        let (key, value) = (key.into(), value.into());
        self.bytes += key.len() + value.len();
        self.ops.push((key, Some(value)));
        self
    }

    /// Adds a deletion of `key`.
    pub fn delete(&mut self, key: impl Into<Vec<u8>>) -> &mut Self {
        let key = key.into();
        self.bytes += key.len();
        self.ops.push((key, None));
        self
    }

    /// The operations, in the order they were added (`None` = delete).
    pub fn ops(&self) -> &[(Vec<u8>, Option<Vec<u8>>)] {
        &self.ops
    }

    /// Consumes the batch into its operations.
    pub fn into_ops(self) -> Vec<(Vec<u8>, Option<Vec<u8>>)> {
        self.ops
    }

    /// How many operations.
    pub fn len(&self) -> usize {
        self.ops.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    /// Key and value bytes in the batch.
    pub fn size_bytes(&self) -> usize {
        self.bytes
    }

    /// Appends another batch's operations after this one's.
    pub fn extend(&mut self, other: WriteBatch) {
        self.bytes += other.bytes;
        self.ops.extend(other.ops);
    }
}

/// What an engine says about itself.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Status {
    /// The engine (`sled`, `memory`).
    pub name: String,
    /// Bytes on disk (0 for memory).
    pub size_on_disk: u64,
    /// What `flush` guarantees.
    pub durability: String,
}
