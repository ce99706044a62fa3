//! [`RaftLogStore`]: raft-rs's [`Storage`] kept in a boundkv [`Engine`], next to the MVCC data.
//!
//! raft-rs keeps no state of its own on disk. It asks a [`Storage`] for the log, the *hard
//! state* (term, vote, commit index) and the *conf state* (voters and learners), and the
//! application writes to that storage what each `Ready` hands it. This module is that storage for
//! boundkv: the same engine the node's MVCC state lives in, under key prefixes of its own.
//!
//! # Key layout
//!
//! One prefix byte, then fixed-width big-endian fields, so entries sort by index:
//!
//! ```text
//! key                          value
//! 0x10 ++ index (u64 BE)       a protobuf-encoded raft Entry
//! 0x11                         the protobuf-encoded HardState
//! 0x12                         the protobuf-encoded ConfState (absent: never initialized)
//! 0x13                         the truncation point: index (u64 BE) ++ term (u64 BE)
//! ```
//!
//! MVCC uses prefixes `0x01..=0x03`; nothing here reads or writes outside `0x10..=0x13`.
//!
//! # One batch, one flush
//!
//! A `Ready` may carry a snapshot to install, new entries, and a new hard state whose commit
//! index points into those entries. If the hard state became durable before the entries, a crash
//! in between would leave a node whose commit index is past the end of its durable log: raft-rs
//! refuses to start from that (`hs.commit ... is out of range`, a fatal panic in
//! `Raft::load_state`), and the node can never restart. etcd changed its documentation to
//! "entries, then hard state" for this reason (etcd-io/etcd#8455), and curvine's nodes failed to
//! restart exactly so (CurvineIO/curvine#1368).
//! Here the ordering question does not arise: the Ready handler stages everything in one
//! [`LogWrite`] and [`RaftLogStore::commit`] writes it as **one** engine batch (atomic, in memory
//! and across a crash) followed by **one** [`Engine::flush`] (an `fdatasync` on sled). Votes and
//! acknowledgements may be sent once `commit` returns. As a last line of defence, `commit` and
//! [`RaftLogStore::compact`] refuse (with [`LogStoreError::CommitOutOfRange`], writing nothing)
//! any change that would leave the commit index outside `[truncated index, last index]`, the
//! range raft-rs can restart from.
//!
//! # The truncation point
//!
//! Raft's log matching needs the term of the entry just before any entry it sends or checks,
//! including the entry just before the first one still stored. Compaction deletes entries and a
//! snapshot replaces them, but the (index, term) of the last entry removed is kept as the
//! *truncation point* (`0x13`). Then:
//!
//! - `first_index` = truncated index + 1;
//! - `last_index` = the last entry's index, or the truncated index when no entry is stored;
//! - `term(first_index - 1)` = the truncated term; below that, `Compacted`; past `last_index`,
//!   `Unavailable`.
//!
//! A new log is truncated at (0, 0): `first_index` = 1, `last_index` = 0, `term(0)` = 0, which is
//! the empty log raft-rs expects.
//!
//! # A worked example
//!
//! Append entries 1..=5 with terms 1, 1, 2, 2, 3, then `compact(3)` (discard the entries before
//! 3):
//!
//! ```text
//!                      entries stored   truncated  first  last  term(1)    term(2)    term(5)
//! append 1..=5         1, 2, 3, 4, 5    (0, 0)     1      5     1          1          3
//! compact(3)           3, 4, 5          (2, 1)     3      5     Compacted  1          3
//! snapshot (9, term 4) none             (9, 4)     10     9     Compacted  Compacted  Compacted
//! ```
//!
//! After `compact(3)`, entry 2 is gone but `term(2)` still answers 1 from the truncation point, so
//! a leader can still send entry 3 with `prev (index 2, term 1)`; `entries(2, 4)` fails with
//! `Compacted` and `entries(3, 6)` returns entries 3, 4 and 5. Installing a snapshot at
//! (index 9, term 4) deletes every entry and moves the truncation point to (9, 4): `first_index`
//! = 10, `last_index` = 9, `term(9)` = 4; the hard state's commit becomes 9 and its term
//! `max(term, 4)`. A snapshot at index 2 would now fail with `SnapshotOutOfDate` (2 < first
//! index 10).
//!
//! # Memory, locking and failure
//!
//! What raft-rs reads on nearly every step (first and last index, the last entry's term, the
//! truncation point, the hard and conf states) is kept in memory behind an `RwLock`; entries are
//! read from the engine. A commit holds the write lock across the engine write, the flush and the
//! in-memory update, so a reader never sees the engine and the in-memory indexes disagree (readers
//! other than the Raft thread, which is the writer, wait out the fsync). There is one writer: a
//! [`LogWrite`] validates each change as it is staged, against the state it was started from, and
//! `commit` refuses it ([`LogStoreError::Conflict`]) if anything else changed the store in between.
//! A write or flush that fails *poisons* the store: the engine's state on disk is unknown, so every
//! later read and write fails ([`LogStoreError::Failed`]) and the node must stop and recover from
//! disk.
//!
//! # Differences from raft-rs's `MemStorage`
//!
//! `MemStorage` is a test double, and this store deliberately departs from it where it is wrong for
//! a durable log: after `compact`, `MemStorage::term(first_index - 1)` returns `Compacted` (it only
//! remembers its last snapshot's term, and keeps answering it for that index even once the log has
//! been compacted far past it), while this store keeps the truncation point's term and nothing
//! older; compacting up to `last_index + 1` makes `MemStorage`'s first and last index jump back to
//! its last snapshot, while here they stay at `last + 1` and `last`; `MemStorage::snapshot` invents
//! a snapshot at `request_index` when its commit index is behind, while this store answers
//! `SnapshotTemporarilyUnavailable`; and `entries(first, first)` on an empty log panics there and
//! returns no entries here.

use std::cmp;
use std::ops::Bound;
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

use boundkv_storage::{Engine, WriteBatch};
use protobuf::Message as _;
use raft::prelude::{ConfState, Entry, HardState, Snapshot, SnapshotMetadata};
use raft::{Error as RaftError, GetEntriesContext, NO_LIMIT, RaftState, Storage, StorageError};

/// The prefix byte of log entry keys: `0x10 ++ index (u64 BE)`.
pub const ENTRY_PREFIX: u8 = 0x10;
/// The key of the hard state.
pub const HARD_STATE_KEY: &[u8] = &[0x11];
/// The key of the conf state.
pub const CONF_STATE_KEY: &[u8] = &[0x12];
/// The key of the truncation point (`index (u64 BE) ++ term (u64 BE)`).
pub const TRUNCATED_KEY: &[u8] = &[0x13];

/// The key of the log entry at `index`.
pub fn entry_key(index: u64) -> [u8; 9] {
    let mut key = [0u8; 9];
    key[0] = ENTRY_PREFIX;
    key[1..].copy_from_slice(&index.to_be_bytes());
    key
}

/// Why a log store operation failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum LogStoreError {
    /// The engine failed. Fatal.
    #[error("raft log store: {0}")]
    Storage(#[from] boundkv_storage::Error),
    /// Stored bytes do not decode, or the stored state breaks the log's invariants. Fatal.
    #[error("raft log store corruption: {0}")]
    Corruption(String),
    /// A value could not be encoded. Fatal: Raft state that cannot be persisted.
    #[error("raft log store: cannot encode {0}")]
    Encode(String),
    /// The snapshot is older than the log: its index is below the first index.
    #[error("snapshot at index {index} is out of date: the log starts at index {first_index}")]
    SnapshotOutOfDate {
        /// The snapshot's index.
        index: u64,
        /// The log's first index.
        first_index: u64,
    },
    /// [`RaftLogStore::initialize`] on a store that already has a conf state.
    #[error("the raft log store is already initialized")]
    AlreadyInitialized,
    /// [`RaftLogStore::initialize`] with an empty conf state (raft-rs would consider the group
    /// uninitialized).
    #[error("cannot initialize a raft group with an empty conf state")]
    EmptyConfState,
    /// The change would leave the hard state's commit index outside `[truncated, last]`, a state
    /// raft-rs cannot restart from. Nothing was written.
    #[error(
        "hard state commit {commit} would be outside the log [{truncated}, {last}]: \
         raft-rs could not restart from that"
    )]
    CommitOutOfRange {
        /// The commit index.
        commit: u64,
        /// The truncation point's index.
        truncated: u64,
        /// The last index.
        last: u64,
    },
    /// The [`LogWrite`] was started before another change to the store (or on another store).
    /// Nothing was written; the caller has two writers, which is a bug.
    #[error("the raft log changed since this write was staged; nothing was written")]
    Conflict,
    /// An earlier write or flush failed; the store accepts nothing more. Fatal.
    #[error("the raft log store failed earlier and accepts nothing more: {0}")]
    Failed(String),
}

impl LogStoreError {
    /// Whether the node must stop: the log on disk can no longer be trusted (or written).
    pub fn is_fatal(&self) -> bool {
        match self {
            LogStoreError::Storage(_)
            | LogStoreError::Corruption(_)
            | LogStoreError::Encode(_)
            | LogStoreError::Failed(_) => true,
            LogStoreError::SnapshotOutOfDate { .. }
            | LogStoreError::AlreadyInitialized
            | LogStoreError::EmptyConfState
            | LogStoreError::CommitOutOfRange { .. }
            | LogStoreError::Conflict => false,
        }
    }
}

impl From<LogStoreError> for RaftError {
    fn from(e: LogStoreError) -> Self {
        match e {
            LogStoreError::SnapshotOutOfDate { .. } => {
                RaftError::Store(StorageError::SnapshotOutOfDate)
            }
            other => RaftError::Store(StorageError::Other(Box::new(other))),
        }
    }
}

/// Supplies the state-machine data of a snapshot (the node's MVCC state at its applied index).
pub trait SnapshotSource: Send + Sync {
    /// The applied index and the serialized state at that index.
    ///
    /// # To ensure correctness
    /// - The data must be exactly the state after applying every entry up to and including the
    ///   returned index, and nothing after it.
    /// - The returned index must not be ahead of the log store: its term is looked up in the log,
    ///   and the snapshot carries the store's current conf state, which the node keeps equal to the
    ///   configuration at the applied index (it stores each conf change as it applies it).
    /// - An error (the engine could not be read) only delays the snapshot (raft-rs retries
    ///   later); it is logged, not fatal.
    fn snapshot_data(&self) -> boundkv_storage::Result<(u64, Vec<u8>)>;
}

/// The in-memory copy of what raft-rs reads often. Exactly what is on disk after the last
/// successful commit.
#[derive(Clone, Debug, Default, PartialEq)]
struct LogState {
    /// (index, term) of the last entry removed by compaction or a snapshot.
    truncated: (u64, u64),
    /// The last entry's index, or the truncated index when there are none.
    last_index: u64,
    /// The last entry's term, or the truncated term when there are none.
    last_term: u64,
    hard_state: HardState,
    /// `None` until a conf state is stored.
    conf_state: Option<ConfState>,
}

impl LogState {
    fn first_index(&self) -> u64 {
        self.truncated.0 + 1
    }

    /// raft-rs restarts only if `truncated <= commit <= last` (`Raft::load_state`).
    fn check_commit(&self) -> Result<(), LogStoreError> {
        let commit = self.hard_state.commit;
        if commit < self.truncated.0 || commit > self.last_index {
            return Err(LogStoreError::CommitOutOfRange {
                commit,
                truncated: self.truncated.0,
                last: self.last_index,
            });
        }
        Ok(())
    }
}

/// The lock-protected part of a store.
struct Shared {
    state: LogState,
    /// Bumped by every successful change; a [`LogWrite`] staged against another generation is
    /// refused.
    generation: u64,
    /// Set by the first failed write or flush.
    failed: Option<String>,
}

impl Shared {
    fn check_failed(&self) -> Result<(), LogStoreError> {
        match &self.failed {
            Some(why) => Err(LogStoreError::Failed(why.clone())),
            None => Ok(()),
        }
    }
}

struct Inner<E: Engine> {
    engine: Arc<E>,
    shared: RwLock<Shared>,
    source: RwLock<Option<Arc<dyn SnapshotSource>>>,
}

/// raft-rs's [`Storage`] on a boundkv [`Engine`] (see the module docs). A cheap, cloneable
/// handle: clones share one store.
pub struct RaftLogStore<E: Engine> {
    inner: Arc<Inner<E>>,
}

impl<E: Engine> Clone for RaftLogStore<E> {
    fn clone(&self) -> Self {
        RaftLogStore { inner: self.inner.clone() }
    }
}

/// A group of changes to a [`RaftLogStore`], written by [`RaftLogStore::commit`] as one engine
/// batch followed by one flush.
///
/// A `LogWrite` validates each change as it is staged, against the store's state when
/// [`RaftLogStore::write`] was called plus the changes staged before it: staging
/// `apply_snapshot`, then `append`, then `set_hard_state` (what a `Ready` with a snapshot needs)
/// checks the append against the log as the snapshot leaves it. An error (a snapshot out of
/// date, an encoding failure) is kept, later changes are ignored, and `commit` returns the error
/// without writing anything.
#[derive(Debug)]
pub struct LogWrite {
    /// Which store and which generation of it this write was staged against.
    store_id: usize,
    generation: u64,
    /// The state as it will be after the commit.
    state: LogState,
    /// Entry puts and deletes, in order.
    batch: WriteBatch,
    hard_state_dirty: bool,
    conf_state_dirty: bool,
    truncated_dirty: bool,
    /// Skip the flush (see [`LogWrite::without_sync`]).
    no_sync: bool,
    error: Option<LogStoreError>,
}

impl LogWrite {
    /// Adds a batch of the state machine's own (keys outside this store's `0x10..=0x13`) to the
    /// same engine write, so that the state machine and the log change together, atomically:
    /// a snapshot's data with the log's reset to it, a membership change with the conf state.
    ///
    /// # Panics
    /// If a key of `batch` lies in the log store's key range.
    pub fn include(&mut self, batch: WriteBatch) {
        for (key, _) in batch.ops() {
            assert!(
                !matches!(key.first(), Some(&(ENTRY_PREFIX..=0x13))),
                "a state-machine batch must not touch the raft log's keys ({key:02x?})"
            );
        }
        self.batch.extend(batch);
    }

    /// Writes without flushing: the changes are visible at once and become durable with the next
    /// flushed write (or sled's own background sync).
    ///
    /// # To ensure correctness
    /// Only for what raft-rs lets go unsynced: a commit index that only moved forward
    /// (`LightReady::commit_index`, `Ready::must_sync() == false`). A commit index that is lost in
    /// a crash is learned again from the leader, and [`RaftLogStore::repair_commit`] raises it
    /// to the applied index on restart.
    pub fn without_sync(&mut self) {
        self.no_sync = true;
    }

    /// Appends entries, first removing any existing entries at and after `entries[0].index`
    /// (Raft's conflict truncation). Empty `entries` changes nothing.
    ///
    /// # Panics
    /// As `MemStorageCore::append`: if `entries[0].index` is below the first index (it would
    /// overwrite compacted entries) or above `last_index + 1` (it would leave a gap). Also if the
    /// entries' indexes are not consecutive.
    pub fn append(&mut self, entries: &[Entry]) {
        let Some(head) = entries.first() else {
            return;
        };
        if self.error.is_some() {
            return;
        }
        let st = &mut self.state;
        let first = head.index;
        if first < st.first_index() {
            panic!(
                "overwrite compacted raft logs, compacted: {}, append: {}",
                st.first_index() - 1,
                first
            );
        }
        if first > st.last_index + 1 {
            panic!(
                "raft logs should be continuous, last index: {}, new appended: {}",
                st.last_index, first
            );
        }
        for (i, e) in entries.iter().enumerate() {
            assert_eq!(
                e.index,
                first + i as u64,
                "entries to append must have consecutive indexes"
            );
        }
        let new_last = first + entries.len() as u64 - 1;
        for index in new_last + 1..=st.last_index {
            self.batch.delete(entry_key(index).to_vec());
        }
        for e in entries {
            match e.write_to_bytes() {
                Ok(bytes) => {
                    self.batch.put(entry_key(e.index).to_vec(), bytes);
                }
                Err(err) => {
                    self.error = Some(LogStoreError::Encode(format!("entry {}: {err}", e.index)));
                    return;
                }
            }
        }
        st.last_index = new_last;
        st.last_term = entries[entries.len() - 1].term;
    }

    /// Sets the hard state.
    pub fn set_hard_state(&mut self, hs: &HardState) {
        if self.error.is_none() {
            self.state.hard_state = hs.clone();
            self.hard_state_dirty = true;
        }
    }

    /// Sets the conf state.
    pub fn set_conf_state(&mut self, cs: &ConfState) {
        if self.error.is_none() {
            self.state.conf_state = Some(cs.clone());
            self.conf_state_dirty = true;
        }
    }

    /// Resets the log to a snapshot: deletes every entry, sets the truncation point to
    /// `(meta.index, meta.term)`, the hard state's term to `max(term, meta.term)` and its commit
    /// to `meta.index`, and the conf state to `meta.conf_state`.
    ///
    /// If `meta.index` is below the first index (as `MemStorageCore::apply_snapshot`), the write
    /// fails with [`LogStoreError::SnapshotOutOfDate`] when committed.
    pub fn apply_snapshot(&mut self, meta: &SnapshotMetadata) {
        if self.error.is_some() {
            return;
        }
        let st = &mut self.state;
        if meta.index < st.first_index() {
            self.error = Some(LogStoreError::SnapshotOutOfDate {
                index: meta.index,
                first_index: st.first_index(),
            });
            return;
        }
        for index in st.first_index()..=st.last_index {
            self.batch.delete(entry_key(index).to_vec());
        }
        st.truncated = (meta.index, meta.term);
        st.last_index = meta.index;
        st.last_term = meta.term;
        st.hard_state.term = cmp::max(st.hard_state.term, meta.term);
        st.hard_state.commit = meta.index;
        st.conf_state = Some(meta.get_conf_state().clone());
        self.hard_state_dirty = true;
        self.conf_state_dirty = true;
        self.truncated_dirty = true;
    }

    fn is_empty(&self) -> bool {
        self.batch.is_empty()
            && !self.hard_state_dirty
            && !self.conf_state_dirty
            && !self.truncated_dirty
    }
}

impl<E: Engine> RaftLogStore<E> {
    /// Opens the log kept in `engine`, loading the in-memory state.
    ///
    /// Checks what can be checked without reading the whole log: every record decodes, the first
    /// stored entry directly follows the truncation point, the last entry's key matches its index,
    /// and the commit index lies in `[truncated, last]`. Any failure is
    /// [`LogStoreError::Corruption`].
    pub fn open(engine: Arc<E>) -> Result<Self, LogStoreError> {
        let hard_state = match engine.get(HARD_STATE_KEY)? {
            Some(bytes) => decode::<HardState>(&bytes, "the hard state")?,
            None => HardState::default(),
        };
        let conf_state = match engine.get(CONF_STATE_KEY)? {
            Some(bytes) => Some(decode::<ConfState>(&bytes, "the conf state")?),
            None => None,
        };
        let truncated = match engine.get(TRUNCATED_KEY)? {
            Some(bytes) => decode_truncated(&bytes)?,
            None => (0, 0),
        };
        let (last_index, last_term) = {
            // The whole prefix, so that a malformed short key is found too.
            let prefix =
                (Bound::Included(vec![ENTRY_PREFIX]), Bound::Excluded(vec![ENTRY_PREFIX + 1]));
            let mut scan = engine.scan(prefix);
            let first = scan.next().transpose()?;
            let back = scan.next_back().transpose()?;
            match first {
                None => truncated,
                Some((first_key, first_value)) => {
                    let first_index = key_index(&first_key)?;
                    if first_index != truncated.0 + 1 {
                        return Err(LogStoreError::Corruption(format!(
                            "the first stored entry is {first_index}, but the log is truncated at \
                             {}",
                            truncated.0
                        )));
                    }
                    let (key, value) = back.unwrap_or((first_key, first_value));
                    let last = decode_entry(&key, &value)?;
                    if last.term < truncated.1 {
                        return Err(LogStoreError::Corruption(format!(
                            "the last entry {} has term {}, below the truncation point's term {}",
                            last.index, last.term, truncated.1
                        )));
                    }
                    (last.index, last.term)
                }
            }
        };
        let state = LogState { truncated, last_index, last_term, hard_state, conf_state };
        state.check_commit().map_err(|e| LogStoreError::Corruption(e.to_string()))?;
        tracing::debug!(
            first_index = state.first_index(),
            last_index,
            commit = state.hard_state.commit,
            term = state.hard_state.term,
            "opened the raft log"
        );
        Ok(RaftLogStore {
            inner: Arc::new(Inner {
                engine,
                shared: RwLock::new(Shared { state, generation: 0, failed: None }),
                source: RwLock::new(None),
            }),
        })
    }

    /// The engine the log lives in (shared with the state machine).
    pub fn engine(&self) -> &Arc<E> {
        &self.inner.engine
    }

    /// Whether a conf state was ever stored (a node with none starts uninitialized and waits for a
    /// snapshot).
    pub fn is_initialized(&self) -> bool {
        self.read().state.conf_state.is_some()
    }

    /// Bootstraps a new group: stores `conf_state` at index 0 (no entries), durably.
    ///
    /// # To ensure correctness
    /// Every founding member must be initialized with the same conf state; members that join
    /// later are not initialized and catch up from a leader's snapshot.
    ///
    /// Fails with [`LogStoreError::AlreadyInitialized`] if a conf state is already stored, and
    /// with [`LogStoreError::EmptyConfState`] for an empty one.
    pub fn initialize(&self, conf_state: ConfState) -> Result<(), LogStoreError> {
        if conf_state == ConfState::default() {
            return Err(LogStoreError::EmptyConfState);
        }
        let mut shared = self.write_lock();
        shared.check_failed()?;
        if shared.state.conf_state.is_some() {
            return Err(LogStoreError::AlreadyInitialized);
        }
        let mut batch = WriteBatch::new();
        batch.put(CONF_STATE_KEY, encode(&conf_state, "the conf state")?);
        let mut state = shared.state.clone();
        state.conf_state = Some(conf_state);
        self.persist(&mut shared, batch, state)
    }

    /// Sets where [`Storage::snapshot`] gets its data.
    pub fn set_snapshot_source(&self, source: Arc<dyn SnapshotSource>) {
        *self.inner.source.write().unwrap_or_else(|e| e.into_inner()) = Some(source);
    }

    /// Starts a group of changes that will be written as one engine batch.
    pub fn write(&self) -> LogWrite {
        let shared = self.read();
        LogWrite {
            store_id: self.id(),
            generation: shared.generation,
            state: shared.state.clone(),
            batch: WriteBatch::new(),
            hard_state_dirty: false,
            conf_state_dirty: false,
            truncated_dirty: false,
            no_sync: false,
            error: None,
        }
    }

    /// Writes a [`LogWrite`]: one [`Engine::write`] of one batch, then [`Engine::flush`]
    /// (durable), then updates the in-memory state. An empty write does nothing.
    ///
    /// # To ensure correctness
    /// - Only after this returns `Ok` are the staged changes durable: send raft-rs's persisted
    ///   messages (votes, append acknowledgements) only then.
    /// - One writer at a time: a write staged before another change to the store committed fails
    ///   with [`LogStoreError::Conflict`] (nothing written).
    /// - A change that would leave the commit index outside `[truncated, last]` fails with
    ///   [`LogStoreError::CommitOutOfRange`] (nothing written).
    /// - A failed engine write or flush is fatal: the store is poisoned, and every later call
    ///   fails.
    pub fn commit(&self, w: LogWrite) -> Result<(), LogStoreError> {
        if let Some(e) = w.error {
            return Err(e);
        }
        let mut shared = self.write_lock();
        shared.check_failed()?;
        if w.store_id != self.id() || w.generation != shared.generation {
            return Err(LogStoreError::Conflict);
        }
        if w.is_empty() {
            return Ok(());
        }
        w.state.check_commit()?;
        let mut batch = w.batch;
        if w.hard_state_dirty {
            batch.put(HARD_STATE_KEY, encode(&w.state.hard_state, "the hard state")?);
        }
        if w.conf_state_dirty {
            let cs = w.state.conf_state.clone().unwrap_or_default();
            batch.put(CONF_STATE_KEY, encode(&cs, "the conf state")?);
        }
        if w.truncated_dirty {
            batch.put(TRUNCATED_KEY, encode_truncated(w.state.truncated));
        }
        if w.no_sync {
            return self.persist_unsynced(&mut shared, batch, w.state);
        }
        self.persist(&mut shared, batch, w.state)
    }

    /// Bootstraps a founding member of a new group: the log begins at the truncation point
    /// `(1, 1)`, as if a snapshot at index 1, term 1 had been installed, with `conf_state` as its
    /// configuration, a hard state of term 1 and commit 1, and `state` (the state machine's
    /// founding state, written by it at applied index 1) in the same durable write.
    ///
    /// Why index 1 and not 0 ([`RaftLogStore::initialize`]): a member added later starts with an
    /// empty log, and a leader whose log still held entry 1 would replay entries to it from there,
    /// never telling it the founding voters (they are in no entry). With the log starting at 2, the
    /// leader has nothing before it to send and must send a snapshot, which carries the
    /// configuration and the state machine's whole state. raft-rs's `five_mem_node` example does
    /// the same.
    ///
    /// # To ensure correctness
    /// Every founding member must be bootstrapped with the same `conf_state` and `state`.
    /// Fails like [`RaftLogStore::initialize`] on an initialized store or an empty conf state.
    pub fn bootstrap(&self, conf_state: ConfState, state: WriteBatch) -> Result<(), LogStoreError> {
        if conf_state == ConfState::default() {
            return Err(LogStoreError::EmptyConfState);
        }
        let mut shared = self.write_lock();
        shared.check_failed()?;
        if shared.state.conf_state.is_some() {
            return Err(LogStoreError::AlreadyInitialized);
        }
        let mut w = LogWrite {
            store_id: self.id(),
            generation: shared.generation,
            state: shared.state.clone(),
            batch: WriteBatch::new(),
            hard_state_dirty: false,
            conf_state_dirty: false,
            truncated_dirty: false,
            no_sync: false,
            error: None,
        };
        let mut meta = SnapshotMetadata { index: 1, term: 1, ..SnapshotMetadata::default() };
        meta.set_conf_state(conf_state);
        w.apply_snapshot(&meta);
        w.include(state);
        let mut batch = w.batch;
        batch.put(HARD_STATE_KEY, encode(&w.state.hard_state, "the hard state")?);
        let cs = w.state.conf_state.clone().unwrap_or_default();
        batch.put(CONF_STATE_KEY, encode(&cs, "the conf state")?);
        batch.put(TRUNCATED_KEY, encode_truncated(w.state.truncated));
        self.persist(&mut shared, batch, w.state)
    }

    /// Raises the stored commit index to `applied` if it is below: a state machine applies only
    /// committed entries, so everything up to its applied index was committed, even if the
    /// commit index that said so was written without a sync ([`LogWrite::without_sync`]) and
    /// lost in a crash. raft-rs refuses to start with `applied > commit`
    /// (tikv/raft-rs#392). Durable when it returns; a no-op when the commit index is not behind.
    ///
    /// Fails with [`LogStoreError::Corruption`] if `applied` is past the last index: the state
    /// machine is ahead of the log itself, which no crash can explain.
    pub fn repair_commit(&self, applied: u64) -> Result<bool, LogStoreError> {
        let mut shared = self.write_lock();
        shared.check_failed()?;
        if applied <= shared.state.hard_state.commit {
            return Ok(false);
        }
        if applied > shared.state.last_index {
            return Err(LogStoreError::Corruption(format!(
                "the state machine has applied index {applied}, past the log's last index {}",
                shared.state.last_index
            )));
        }
        let mut state = shared.state.clone();
        tracing::info!(
            from = state.hard_state.commit,
            to = applied,
            "raising the stored commit index to the applied index"
        );
        state.hard_state.commit = applied;
        let mut batch = WriteBatch::new();
        batch.put(HARD_STATE_KEY, encode(&state.hard_state, "the hard state")?);
        self.persist(&mut shared, batch, state)?;
        Ok(true)
    }

    /// Discards entries before `compact_index`, keeping the term of `compact_index - 1` as the
    /// truncation point. Durable when it returns. `compact_index <= first_index` does nothing.
    ///
    /// # To ensure correctness
    /// Compact only entries the state machine has applied (and so only committed ones): the
    /// entries are gone for good, and a follower that needs them gets a snapshot instead.
    /// Compacting past the commit index fails with [`LogStoreError::CommitOutOfRange`].
    ///
    /// # Panics
    /// As `MemStorageCore::compact`: if `compact_index > last_index + 1`.
    pub fn compact(&self, compact_index: u64) -> Result<(), LogStoreError> {
        let mut shared = self.write_lock();
        shared.check_failed()?;
        let first = shared.state.first_index();
        if compact_index <= first {
            return Ok(());
        }
        let last = shared.state.last_index;
        if compact_index > last + 1 {
            panic!("compact not received raft logs: {compact_index}, last index: {last}");
        }
        let mut state = shared.state.clone();
        let truncated_index = compact_index - 1;
        let truncated_term = if truncated_index == state.last_index {
            state.last_term
        } else {
            self.read_entry(truncated_index)?.term
        };
        state.truncated = (truncated_index, truncated_term);
        state.check_commit()?;
        let mut batch = WriteBatch::new();
        for index in first..compact_index {
            batch.delete(entry_key(index).to_vec());
        }
        batch.put(TRUNCATED_KEY, encode_truncated(state.truncated));
        self.persist(&mut shared, batch, state)
    }

    /// The stored hard state.
    pub fn hard_state(&self) -> HardState {
        self.read().state.hard_state.clone()
    }

    /// The stored conf state (empty if none was stored).
    pub fn conf_state(&self) -> ConfState {
        self.read().state.conf_state.clone().unwrap_or_default()
    }

    /// (index, term) of the truncation point.
    pub fn truncated(&self) -> (u64, u64) {
        self.read().state.truncated
    }

    fn id(&self) -> usize {
        Arc::as_ptr(&self.inner) as *const () as usize
    }

    fn read(&self) -> RwLockReadGuard<'_, Shared> {
        self.inner.shared.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write_lock(&self) -> RwLockWriteGuard<'_, Shared> {
        self.inner.shared.write().unwrap_or_else(|e| e.into_inner())
    }

    /// Writes and flushes `batch`, then installs `state`; poisons the store if the engine fails.
    fn persist(
        &self,
        shared: &mut Shared,
        batch: WriteBatch,
        state: LogState,
    ) -> Result<(), LogStoreError> {
        let engine = &self.inner.engine;
        if let Err(e) = engine.write(batch) {
            if e.is_fatal() {
                self.poison(shared, &e);
            }
            return Err(e.into());
        }
        if let Err(e) = engine.flush() {
            self.poison(shared, &e);
            return Err(e.into());
        }
        shared.state = state;
        shared.generation += 1;
        Ok(())
    }

    /// Writes `batch` without a flush, then installs `state`.
    fn persist_unsynced(
        &self,
        shared: &mut Shared,
        batch: WriteBatch,
        state: LogState,
    ) -> Result<(), LogStoreError> {
        if let Err(e) = self.inner.engine.write(batch) {
            if e.is_fatal() {
                self.poison(shared, &e);
            }
            return Err(e.into());
        }
        shared.state = state;
        shared.generation += 1;
        Ok(())
    }

    fn poison(&self, shared: &mut Shared, e: &boundkv_storage::Error) {
        tracing::error!(error = %e, "raft log store: the engine failed; no more reads or writes");
        shared.failed.get_or_insert_with(|| e.to_string());
    }

    /// The entry at `index`, which the in-memory state says is stored.
    fn read_entry(&self, index: u64) -> Result<Entry, LogStoreError> {
        let key = entry_key(index);
        match self.inner.engine.get(&key)? {
            Some(bytes) => decode_entry(&key, &bytes),
            None => Err(LogStoreError::Corruption(format!("entry {index} is missing"))),
        }
    }

    /// `Storage::term` under an already-held lock.
    fn term_locked(&self, shared: &Shared, idx: u64) -> raft::Result<u64> {
        shared.check_failed()?;
        let st = &shared.state;
        if idx == st.truncated.0 {
            return Ok(st.truncated.1);
        }
        if idx < st.first_index() {
            return Err(RaftError::Store(StorageError::Compacted));
        }
        if idx > st.last_index {
            return Err(RaftError::Store(StorageError::Unavailable));
        }
        if idx == st.last_index {
            return Ok(st.last_term);
        }
        Ok(self.read_entry(idx)?.term)
    }
}

impl<E: Engine> Storage for RaftLogStore<E> {
    /// The stored hard state and conf state.
    fn initial_state(&self) -> raft::Result<RaftState> {
        let shared = self.read();
        shared.check_failed()?;
        let st = &shared.state;
        Ok(RaftState::new(st.hard_state.clone(), st.conf_state.clone().unwrap_or_default()))
    }

    /// Entries `[low, high)`, read from the engine, at most `max_size` bytes but at least one
    /// (`raft::util::limit_size`). `Compacted` if `low < first_index`.
    ///
    /// # Panics
    /// As `MemStorage`: if `high > last_index + 1` (and if `low > high`).
    fn entries(
        &self,
        low: u64,
        high: u64,
        max_size: impl Into<Option<u64>>,
        _context: GetEntriesContext,
    ) -> raft::Result<Vec<Entry>> {
        let max_size = match max_size.into() {
            None | Some(NO_LIMIT) => u64::MAX,
            Some(max) => max,
        };
        let shared = self.read();
        shared.check_failed()?;
        let st = &shared.state;
        if low < st.first_index() {
            return Err(RaftError::Store(StorageError::Compacted));
        }
        if high > st.last_index + 1 {
            panic!("index out of bound (last: {}, high: {})", st.last_index + 1, high);
        }
        if low > high {
            panic!("invalid entries range: low {low} > high {high}");
        }
        let mut entries = Vec::with_capacity(cmp::min(high - low, 1024) as usize);
        if low == high {
            return Ok(entries);
        }
        let mut size = 0u64;
        let mut limited = false;
        for item in self.inner.engine.scan(entry_range(low, high)) {
            let (key, value) = item.map_err(LogStoreError::from)?;
            let e = decode_entry(&key, &value)?;
            let expected = low + entries.len() as u64;
            if e.index != expected {
                return Err(
                    LogStoreError::Corruption(format!("entry {expected} is missing")).into()
                );
            }
            // Exactly `raft::util::limit_size`: the first entry always, then while the total
            // stays within `max_size`.
            size = size.saturating_add(u64::from(e.compute_size()));
            if !entries.is_empty() && size > max_size {
                limited = true;
                break;
            }
            entries.push(e);
        }
        if !limited && entries.len() as u64 != high - low {
            let missing = low + entries.len() as u64;
            return Err(LogStoreError::Corruption(format!("entry {missing} is missing")).into());
        }
        Ok(entries)
    }

    /// The term of entry `idx`: the truncation point's term for `first_index - 1`, `Compacted`
    /// below it, `Unavailable` past `last_index`.
    fn term(&self, idx: u64) -> raft::Result<u64> {
        let shared = self.read();
        self.term_locked(&shared, idx)
    }

    /// The truncated index + 1.
    fn first_index(&self) -> raft::Result<u64> {
        let shared = self.read();
        shared.check_failed()?;
        Ok(shared.state.first_index())
    }

    /// The last entry's index, or the truncated index when no entry is stored.
    fn last_index(&self) -> raft::Result<u64> {
        let shared = self.read();
        shared.check_failed()?;
        Ok(shared.state.last_index)
    }

    /// A snapshot of the state machine from the [`SnapshotSource`], at its applied index, with
    /// that index's term and the current conf state.
    ///
    /// `SnapshotTemporarilyUnavailable` (raft-rs retries later) when there is no source, the
    /// source fails, or its applied index is 0 or below `request_index`. raft-rs panics on any
    /// other error from here, so only engine failures are reported as errors.
    fn snapshot(&self, request_index: u64, to: u64) -> raft::Result<Snapshot> {
        let unavailable = || RaftError::Store(StorageError::SnapshotTemporarilyUnavailable);
        let source = self.inner.source.read().unwrap_or_else(|e| e.into_inner()).clone();
        let Some(source) = source else {
            return Err(unavailable());
        };
        // Not under the lock: building the data may take a while.
        let (applied, data) = match source.snapshot_data() {
            Ok(snapshot) => snapshot,
            Err(why) => {
                tracing::warn!(to, error = %why, "cannot build a raft snapshot; raft will retry");
                return Err(unavailable());
            }
        };
        if applied == 0 || applied < request_index {
            tracing::debug!(to, applied, request_index, "snapshot not available yet");
            return Err(unavailable());
        }
        let shared = self.read();
        let term = match self.term_locked(&shared, applied) {
            Ok(term) => term,
            Err(RaftError::Store(StorageError::Compacted | StorageError::Unavailable)) => {
                tracing::warn!(
                    to,
                    applied,
                    first_index = shared.state.first_index(),
                    last_index = shared.state.last_index,
                    "the snapshot's applied index is outside the log; raft will retry"
                );
                return Err(unavailable());
            }
            Err(e) => return Err(e),
        };
        let mut snapshot = Snapshot { data: data.into(), ..Snapshot::default() };
        let meta = snapshot.mut_metadata();
        meta.index = applied;
        meta.term = term;
        meta.set_conf_state(shared.state.conf_state.clone().unwrap_or_default());
        Ok(snapshot)
    }
}

/// The engine range of entries `[low, high)`.
fn entry_range(low: u64, high: u64) -> (Bound<Vec<u8>>, Bound<Vec<u8>>) {
    (Bound::Included(entry_key(low).to_vec()), Bound::Excluded(entry_key(high).to_vec()))
}

/// The index in an entry key.
fn key_index(key: &[u8]) -> Result<u64, LogStoreError> {
    match key {
        [ENTRY_PREFIX, index @ ..] if index.len() == 8 => {
            let mut be = [0u8; 8];
            be.copy_from_slice(index);
            Ok(u64::from_be_bytes(be))
        }
        _ => Err(LogStoreError::Corruption(format!("malformed log entry key {key:02x?}"))),
    }
}

fn decode_entry(key: &[u8], bytes: &[u8]) -> Result<Entry, LogStoreError> {
    let index = key_index(key)?;
    let entry = decode::<Entry>(bytes, "a log entry")?;
    if entry.index != index {
        return Err(LogStoreError::Corruption(format!(
            "the entry stored under index {index} has index {}",
            entry.index
        )));
    }
    Ok(entry)
}

fn decode<M: protobuf::Message>(bytes: &[u8], what: &str) -> Result<M, LogStoreError> {
    M::parse_from_bytes(bytes).map_err(|e| LogStoreError::Corruption(format!("{what}: {e}")))
}

fn encode<M: protobuf::Message>(m: &M, what: &str) -> Result<Vec<u8>, LogStoreError> {
    m.write_to_bytes().map_err(|e| LogStoreError::Encode(format!("{what}: {e}")))
}

fn encode_truncated((index, term): (u64, u64)) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(16);
    bytes.extend_from_slice(&index.to_be_bytes());
    bytes.extend_from_slice(&term.to_be_bytes());
    bytes
}

fn decode_truncated(bytes: &[u8]) -> Result<(u64, u64), LogStoreError> {
    let Ok(bytes) = <[u8; 16]>::try_from(bytes) else {
        return Err(LogStoreError::Corruption(format!(
            "the truncation point is {} bytes, not 16",
            bytes.len()
        )));
    };
    let (index, term) = bytes.split_at(8);
    let be = |b: &[u8]| u64::from_be_bytes(b.try_into().unwrap_or_default());
    Ok((be(index), be(term)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{entries, hard_state, snapshot_meta};
    use boundkv_storage::MemoryEngine;

    fn ctx() -> GetEntriesContext {
        GetEntriesContext::empty(false)
    }

    /// The worked example of the module docs, step by step.
    #[test]
    fn worked_example() {
        let store = RaftLogStore::open(Arc::new(MemoryEngine::new())).unwrap();
        let terms = [0, 1, 1, 2, 2, 3];
        let mut w = store.write();
        w.append(&entries(1, 5, |i| terms[i as usize]));
        w.set_hard_state(&hard_state(3, 1, 5));
        store.commit(w).unwrap();
        assert_eq!(
            (store.truncated(), store.first_index(), store.last_index()),
            ((0, 0), Ok(1), Ok(5))
        );
        assert_eq!((store.term(1), store.term(2), store.term(5)), (Ok(1), Ok(1), Ok(3)));
        assert_eq!(store.term(6), Err(RaftError::Store(StorageError::Unavailable)));

        store.compact(3).unwrap();
        let compacted = || Err(RaftError::Store(StorageError::Compacted));
        assert_eq!(
            (store.truncated(), store.first_index(), store.last_index()),
            ((2, 1), Ok(3), Ok(5))
        );
        assert_eq!((store.term(1), store.term(2), store.term(5)), (compacted(), Ok(1), Ok(3)));
        assert_eq!(
            store.entries(2, 4, NO_LIMIT, ctx()),
            Err(RaftError::Store(StorageError::Compacted))
        );
        assert_eq!(store.entries(3, 6, NO_LIMIT, ctx()), Ok(entries(3, 5, |i| terms[i as usize])));

        let mut w = store.write();
        w.apply_snapshot(&snapshot_meta(9, 4, &[1]));
        store.commit(w).unwrap();
        assert_eq!(
            (store.truncated(), store.first_index(), store.last_index()),
            ((9, 4), Ok(10), Ok(9))
        );
        assert_eq!(
            (store.term(2), store.term(5), store.term(9)),
            (compacted(), compacted(), Ok(4))
        );
        assert_eq!(store.hard_state(), hard_state(4, 1, 9));

        let mut w = store.write();
        w.apply_snapshot(&snapshot_meta(2, 1, &[1]));
        assert_eq!(
            store.commit(w),
            Err(LogStoreError::SnapshotOutOfDate { index: 2, first_index: 10 })
        );
    }

    #[test]
    fn conformance_on_the_memory_engine() {
        crate::testing::log_store_conformance(|| Arc::new(MemoryEngine::new()));
    }
}
