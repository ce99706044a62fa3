//! Multi-version concurrency control over an [`Engine`]: every committed write is kept as an
//! immutable *version* stamped with its commit timestamp, and every read names the timestamp it
//! reads at.
//!
//! # Versions
//!
//! A write of `key = value` by a transaction that committed at timestamp `ts` is stored as the
//! engine entry `Version(key, ts) -> value`; a delete is stored as a *tombstone*. Nothing is ever
//! updated in place. The key encoding ([`crate::keycode`]) sorts the versions of one key together,
//! newest first, so that "the newest version at or below `ts`" is the first entry of a forward
//! scan starting at `Version(key, ts)`.
//!
//! Here is a history of three keys, with time flowing to the right (timestamps are small numbers
//! for readability; in boundkv they are nanoseconds since the epoch):
//!
//! ```text
//! ts     10     20     30     40     50
//! a      a1            a2            ✕          (a deleted at 50)
//! b             b1            b2
//! c                    c1
//! ```
//!
//! The engine holds, in this order:
//!
//! ```text
//! Version(a, 50) -> tombstone
//! Version(a, 30) -> "a2"
//! Version(a, 10) -> "a1"
//! Version(b, 40) -> "b2"
//! Version(b, 20) -> "b1"
//! Version(c, 30) -> "c1"
//! ```
//!
//! # Reads at a timestamp
//!
//! A read at `ts` sees, for each key, the newest version at or below `ts`, and nothing if that is
//! a tombstone or there is none:
//!
//! ```text
//! read at 25:  a = a1   b = b1   c = (none)
//! read at 30:  a = a2   b = b1   c = c1
//! read at 55:  a = (none)  b = b2   c = c1
//! ```
//!
//! Versions are immutable, so a read at a past timestamp returns exactly the same answer every
//! time, however many writes have happened since: time travel is just a read at an old timestamp.
//! This layer does not decide *which* timestamp is safe to read at. The transaction layer makes
//! sure that no commit at or below a read's timestamp is still pending when the read runs (safe
//! time), and that every later commit gets a higher timestamp.
//!
//! # Commits
//!
//! [`Mvcc::apply`] writes a whole commit (all of a transaction's versions, optionally the record of
//! its transaction id for deduplicating retried commits, and, under Raft, the applied log index)
//! in **one atomic engine batch**: after a crash, a commit is entirely present or entirely absent.
//! Applying the same commit twice writes the same entries again, so it is idempotent, and it reads
//! nothing, so it is deterministic: what a Raft state machine needs.
//!
//! # Garbage collection
//!
//! Old versions accumulate. [`Mvcc::gc`]`(horizon)` deletes, for each key, every version older
//! than the newest one at or below `horizon` (that one is still what a read at `horizon` sees),
//! and that one too if it is a tombstone. After GC at 35 the example keeps:
//!
//! ```text
//! Version(a, 50) -> tombstone      (above the horizon)
//! Version(a, 30) -> "a2"           (the version a read at 35 sees)
//! Version(b, 40) -> "b2"
//! Version(b, 20) -> "b1"           (the version a read at 35 sees)
//! Version(c, 30) -> "c1"
//! ```
//!
//! `Version(a, 10)` is gone, so a read at 25 could no longer see `a1`: reads below the horizon
//! fail with [`Error::BelowGcHorizon`] instead of returning a wrong answer. The horizon is made
//! durable before anything is deleted.
//!
//! # Metadata
//!
//! A small `Meta(name)` keyspace holds what must survive a restart beside the data: the GC horizon,
//! the clock's high-water mark (at or above every timestamp ever issued, so a restarted node waits
//! until the clock has surely passed it before serving), Raft's applied index, and, for display,
//! the newest commit timestamp as of the last clean close.

use std::ops::Bound;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};

use crate::engine::{Engine, ScanIter, WriteBatch};
use crate::error::{Error, Result};
use crate::keycode;

/// The longest key MVCC stores (bytes). Larger keys are rejected before anything is written.
pub const MAX_KEY_LEN: usize = 4 * 1024;
/// The longest value MVCC stores (bytes). With sled's 8 MiB segments this keeps every page in the
/// synced log (see [`crate::SledEngine`]).
pub const MAX_VALUE_LEN: usize = 64 * 1024;

/// Keyspace of versions: `VERSION | key | ts`.
const VERSION: u8 = 0x01;
/// Keyspace of metadata: `META | name`.
const META: u8 = 0x02;
/// Keyspace of transaction records: `TXN | txn id` -> commit timestamp.
const TXN: u8 = 0x03;
/// The first byte after every keyspace.
const END: u8 = 0x04;

/// Value tag of a tombstone.
const TOMBSTONE: u8 = 0x00;
/// Value tag of a value.
const VALUE: u8 = 0x01;

/// Well-known metadata names.
pub mod meta {
    /// The garbage-collection horizon (u64, big-endian).
    pub const GC_HORIZON: &str = "gc_horizon";
    /// The highest commit timestamp applied, as of the last clean close (u64, big-endian). For
    /// display only: it is not written with every commit, so after a crash it may be behind.
    pub const MAX_VERSION_TS: &str = "max_version_ts";
    /// Raft's applied index (u64, big-endian), written with the commit it applied.
    pub const APPLIED_INDEX: &str = "raft_applied_index";
    /// The clock's high-water mark (u64, big-endian), owned by the transaction layer.
    pub const CLOCK_HIGH_WATER_MARK: &str = "clock_high_water_mark";
}

/// One write of a commit: a value, or `None` for a delete.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VersionedWrite {
    /// The user key.
    pub key: Vec<u8>,
    /// The new value, or `None` to delete.
    pub value: Option<Vec<u8>>,
}

/// Everything [`Mvcc::apply`] writes in one batch.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Commit {
    /// The commit timestamp every write is stamped with.
    pub ts: u64,
    /// The transaction's id (recorded for deduplicating retries), or empty.
    pub txn_id: Vec<u8>,
    /// The writes.
    pub writes: Vec<VersionedWrite>,
    /// The Raft log index this commit was applied from, when replicated.
    pub applied_index: Option<u64>,
}

/// What [`Mvcc::gc`] did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GcStats {
    /// The horizon in effect afterwards.
    pub horizon: u64,
    /// Versions deleted.
    pub versions_deleted: u64,
    /// Versions kept.
    pub versions_kept: u64,
    /// Transaction records deleted (those older than the horizon).
    pub txn_records_deleted: u64,
    /// Whether the collection stopped early: the state was being replaced (a snapshot
    /// install) or collection was halted. What it deleted is right; run it again to finish.
    pub interrupted: bool,
}

/// When garbage collection may write (see [`Mvcc::collect_garbage`]).
#[derive(Debug, Default)]
struct GcGate {
    /// Bumped whenever the state is replaced underneath.
    epoch: u64,
    /// Between [`Mvcc::import_batch`] and [`Mvcc::reload`]: the state is being replaced.
    installing: bool,
    /// [`Mvcc::halt_gc`] was called: no collection writes again.
    halted: bool,
}

/// MVCC over an engine. Cheap to share: wrap it in an `Arc`.
pub struct Mvcc<E: Engine> {
    engine: Arc<E>,
    horizon: AtomicU64,
    max_version: AtomicU64,
    /// Serializes [`Mvcc::apply`] so the monotonic metadata it writes lands in order.
    apply_lock: Mutex<()>,
    /// Held while garbage collection writes a batch, and while the state starts or ends being
    /// replaced.
    gc_gate: Mutex<GcGate>,
}

impl<E: Engine> Mvcc<E> {
    /// MVCC over `engine`, resuming its horizon and highest version from the metadata.
    pub fn new(engine: Arc<E>) -> Result<Self> {
        let read_u64 = |name: &str| -> Result<u64> {
            match engine.get(&meta_key(name))? {
                None => Ok(0),
                Some(v) => decode_u64(&v, name),
            }
        };
        let horizon = read_u64(meta::GC_HORIZON)?;
        let max_version = read_u64(meta::MAX_VERSION_TS)?;
        Ok(Mvcc {
            engine,
            horizon: AtomicU64::new(horizon),
            max_version: AtomicU64::new(max_version),
            apply_lock: Mutex::new(()),
            gc_gate: Mutex::new(GcGate::default()),
        })
    }

    /// The engine underneath.
    pub fn engine(&self) -> &Arc<E> {
        &self.engine
    }

    /// The oldest timestamp reads are exact at.
    pub fn gc_horizon(&self) -> u64 {
        self.horizon.load(Ordering::Acquire)
    }

    /// The highest commit timestamp applied since open, or recorded at the last clean close (0 if
    /// none).
    pub fn max_version_ts(&self) -> u64 {
        self.max_version.load(Ordering::Acquire)
    }

    fn check_horizon(&self, ts: u64) -> Result<()> {
        let horizon = self.gc_horizon();
        if ts < horizon {
            return Err(Error::BelowGcHorizon { ts, horizon });
        }
        Ok(())
    }

    /// The value of `key` as of `ts`.
    pub fn get(&self, key: &[u8], ts: u64) -> Result<Option<Vec<u8>>> {
        self.check_horizon(ts)?;
        let from = version_key(key, ts);
        let to = version_key(key, 0);
        match self.engine.scan((Bound::Included(from), Bound::Included(to))).next() {
            None => Ok(None),
            Some(entry) => decode_value(&entry?.1),
        }
    }

    /// The keys in `range` and their values as of `ts`, in key order, deleted keys left out.
    pub fn scan(&self, range: (Bound<Vec<u8>>, Bound<Vec<u8>>), ts: u64) -> Result<MvccScan<'_>> {
        self.check_horizon(ts)?;
        let start = match range.0 {
            Bound::Included(k) => Bound::Included(key_prefix(&k)),
            Bound::Excluded(k) => Bound::Excluded(version_key(&k, 0)),
            Bound::Unbounded => Bound::Included(vec![VERSION]),
        };
        let end = match range.1 {
            Bound::Included(k) => Bound::Included(version_key(&k, 0)),
            Bound::Excluded(k) => Bound::Excluded(key_prefix(&k)),
            Bound::Unbounded => Bound::Excluded(vec![META]),
        };
        Ok(MvccScan { inner: self.engine.scan((start, end)), ts, current: None })
    }

    /// Applies a commit in one atomic batch (see the module docs). Not durable until
    /// [`Mvcc::flush`].
    ///
    /// # To ensure correctness
    /// The caller must have decided the commit (timestamps, conflicts) before calling; this only
    /// records it. Keys and values over [`MAX_KEY_LEN`] / [`MAX_VALUE_LEN`] and a timestamp below
    /// the GC horizon are rejected with [`Error::InvalidData`] and nothing is written.
    pub fn apply(&self, commit: &Commit) -> Result<()> {
        self.apply_all(std::slice::from_ref(commit), &[])
    }

    /// What [`Mvcc::apply`] refuses, checked without writing: a key or value over the limits
    /// ([`MAX_KEY_LEN`], [`MAX_VALUE_LEN`]) or a timestamp below the GC horizon
    /// ([`Error::InvalidData`]).
    fn check_commit(&self, commit: &Commit) -> Result<()> {
        for w in &commit.writes {
            check_sizes(&w.key, w.value.as_deref())?;
        }
        self.check_horizon(commit.ts).map_err(|_| {
            Error::InvalidData(format!(
                "commit at {} is below the GC horizon {}",
                commit.ts,
                self.gc_horizon()
            ))
        })
    }

    /// Applies several commits and metadata updates in **one** atomic engine batch: a replicated
    /// state machine applies a run of log entries this way, with its applied index among the
    /// metadata, so that state and applied index never disagree after a crash. Checks as
    /// [`Mvcc::apply`] does; on any error nothing is written.
    pub fn apply_all(&self, commits: &[Commit], meta_updates: &[(&str, Vec<u8>)]) -> Result<()> {
        for c in commits {
            self.check_commit(c)?;
        }
        self.write_all(commits.iter(), meta_updates)
    }

    /// Applies the commits of a group that pass the checks of [`Mvcc::apply`] in **one** atomic
    /// engine batch, and answers each commit: its own refusal, or `Ok` (an embedded group commit,
    /// where one refused record must not fail the others). The outer error is the engine's: then
    /// nothing was written.
    pub fn apply_group(&self, commits: &[Commit]) -> Result<Vec<Result<()>>> {
        let checked: Vec<Result<()>> = commits.iter().map(|c| self.check_commit(c)).collect();
        let valid = commits.iter().zip(&checked).filter(|(_, r)| r.is_ok()).map(|(c, _)| c);
        if checked.iter().any(Result::is_ok) {
            self.write_all(valid, &[])?;
        }
        Ok(checked)
    }

    /// Writes checked commits and metadata in one engine batch.
    fn write_all<'c>(
        &self,
        commits: impl Iterator<Item = &'c Commit>,
        meta_updates: &[(&str, Vec<u8>)],
    ) -> Result<()> {
        let _order = self.apply_lock.lock().unwrap_or_else(|e| e.into_inner());
        let mut batch = WriteBatch::new();
        let mut max = 0;
        for c in commits {
            for w in &c.writes {
                batch.put(version_key(&w.key, c.ts), encode_value(w.value.as_deref()));
            }
            if !c.txn_id.is_empty() {
                batch.put(txn_key(&c.txn_id), c.ts.to_be_bytes().to_vec());
            }
            if let Some(index) = c.applied_index {
                batch.put(meta_key(meta::APPLIED_INDEX), index.to_be_bytes().to_vec());
            }
            max = max.max(c.ts);
        }
        for (name, value) in meta_updates {
            batch.put(meta_key(name), value.clone());
        }
        self.engine.write(batch)?;
        self.max_version.fetch_max(max, Ordering::AcqRel);
        Ok(())
    }

    /// Every version, transaction record and replicated metadata entry, as raw engine pairs: the
    /// state a Raft snapshot carries. Metadata named in `local` (node-local, such as the clock's
    /// high-water mark) is left out.
    pub fn export(&self, local: &[&str]) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let skip: Vec<Vec<u8>> = local.iter().map(|n| meta_key(n)).collect();
        self.engine
            .scan((Bound::Included(vec![VERSION]), Bound::Excluded(vec![END])))
            .filter(|r| r.as_ref().map_or(true, |(k, _)| !skip.contains(k)))
            .collect()
    }

    /// Replaces every version, transaction record and replicated metadata entry with `pairs`
    /// (from [`Mvcc::export`] on another node), in one batch, keeping the metadata named in
    /// `local`. Reloads the GC horizon and the newest version from the new state.
    pub fn import(&self, pairs: Vec<(Vec<u8>, Vec<u8>)>, local: &[&str]) -> Result<()> {
        let _order = self.apply_lock.lock().unwrap_or_else(|e| e.into_inner());
        let batch = self.import_batch(pairs, local)?;
        self.engine.write(batch)?;
        self.reload()
    }

    /// The batch [`Mvcc::import`] writes, for a caller that writes it together with changes of
    /// its own (a Raft log reset to the snapshot the pairs came from, in the same atomic write).
    /// Checks every key; nothing is written here.
    ///
    /// From this call until [`Mvcc::reload`], garbage collection writes nothing (a collection
    /// running meanwhile stops, and is to be run again), and the GC horizon is already the
    /// snapshot's, so no read below it starts against the state being replaced.
    ///
    /// # To ensure correctness
    /// Nothing else may write to this MVCC state between building the batch and writing it, and
    /// the caller must call [`Mvcc::reload`] once it is written.
    pub fn import_batch(
        &self,
        pairs: Vec<(Vec<u8>, Vec<u8>)>,
        local: &[&str],
    ) -> Result<WriteBatch> {
        {
            let mut gate = self.gc_gate.lock().unwrap_or_else(|e| e.into_inner());
            gate.epoch += 1;
            gate.installing = true;
        }
        let horizon_key = meta_key(meta::GC_HORIZON);
        if let Some((_, v)) = pairs.iter().find(|(k, _)| *k == horizon_key) {
            self.horizon.fetch_max(decode_u64(v, meta::GC_HORIZON)?, Ordering::AcqRel);
        }
        let keep: Vec<Vec<u8>> = local.iter().map(|n| meta_key(n)).collect();
        let mut batch = WriteBatch::new();
        for entry in self.engine.scan((Bound::Included(vec![VERSION]), Bound::Excluded(vec![END])))
        {
            let (k, _) = entry?;
            if !keep.contains(&k) {
                batch.delete(k);
            }
        }
        for (k, v) in pairs {
            match k.first() {
                Some(&(VERSION | META | TXN)) if !keep.contains(&k) => {}
                _ => {
                    return Err(Error::Corruption(format!(
                        "snapshot key {:02x?} is not MVCC state",
                        &k[..k.len().min(8)]
                    )));
                }
            }
            if k[0] == VERSION {
                decode_version_key(&k)?;
            }
            batch.put(k, v);
        }
        Ok(batch)
    }

    /// Reloads the GC horizon and the newest version from the engine, after the state was
    /// replaced underneath ([`Mvcc::import_batch`]).
    pub fn reload(&self) -> Result<()> {
        let horizon = self.get_meta_u64(meta::GC_HORIZON)?.unwrap_or(0);
        self.horizon.store(horizon, Ordering::Release);
        {
            let mut gate = self.gc_gate.lock().unwrap_or_else(|e| e.into_inner());
            gate.epoch += 1;
            gate.installing = false;
        }
        let mut max = 0;
        for entry in self.engine.scan((Bound::Included(vec![VERSION]), Bound::Excluded(vec![META])))
        {
            let (k, _) = entry?;
            max = max.max(decode_version_key(&k)?.1);
        }
        self.max_version.store(max, Ordering::Release);
        Ok(())
    }

    /// Records [`Mvcc::max_version_ts`] in the metadata, durably (for a clean close).
    pub fn persist_max_version(&self) -> Result<()> {
        self.set_meta(meta::MAX_VERSION_TS, &self.max_version_ts().to_be_bytes())
    }

    /// Makes everything applied so far durable (group commit happens in the engine).
    pub fn flush(&self) -> Result<()> {
        self.engine.flush()
    }

    /// The commit timestamp recorded for `txn_id`, if that transaction committed (and its record
    /// is not yet garbage-collected).
    pub fn commit_ts_of(&self, txn_id: &[u8]) -> Result<Option<u64>> {
        self.engine.get(&txn_key(txn_id))?.map(|v| decode_u64(&v, "txn record")).transpose()
    }

    /// A metadata value.
    pub fn get_meta(&self, name: &str) -> Result<Option<Vec<u8>>> {
        self.engine.get(&meta_key(name))
    }

    /// A metadata value as a big-endian u64.
    pub fn get_meta_u64(&self, name: &str) -> Result<Option<u64>> {
        self.get_meta(name)?.map(|v| decode_u64(&v, name)).transpose()
    }

    /// Sets a metadata value and makes it durable before returning.
    pub fn set_meta(&self, name: &str, value: &[u8]) -> Result<()> {
        let mut batch = WriteBatch::new();
        batch.put(meta_key(name), value.to_vec());
        self.engine.write(batch)?;
        self.engine.flush()
    }

    /// Deletes versions no read at or above `horizon` can see, and transaction records older than
    /// it (see the module docs): [`Mvcc::advance_gc_horizon`] then [`Mvcc::collect_garbage`].
    ///
    /// # To ensure correctness
    /// No read below `horizon` may be running or start afterwards: the caller (the transaction
    /// layer) chooses a horizon below every active read timestamp.
    pub fn gc(&self, horizon: u64) -> Result<GcStats> {
        self.advance_gc_horizon(horizon)?;
        self.collect_garbage()
    }

    /// Raises the GC horizon to `horizon` (no-op if not higher), durably, before anything is
    /// deleted. From its return on, reads below the horizon fail with [`Error::BelowGcHorizon`].
    pub fn advance_gc_horizon(&self, horizon: u64) -> Result<()> {
        if horizon <= self.gc_horizon() {
            return Ok(());
        }
        self.set_meta(meta::GC_HORIZON, &horizon.to_be_bytes())?;
        self.horizon.fetch_max(horizon, Ordering::AcqRel);
        Ok(())
    }

    /// Raises the in-memory GC horizon to `horizon`, which the caller has just written durably
    /// under [`meta::GC_HORIZON`] in a batch of its own ([`Mvcc::apply_all`]'s metadata): a
    /// replicated state machine raises the horizon in the same batch as its applied index.
    ///
    /// # To ensure correctness
    /// The horizon must be in the engine before this is called, and
    /// [`Mvcc::collect_garbage`] may only run afterwards.
    pub fn horizon_written(&self, horizon: u64) {
        self.horizon.fetch_max(horizon, Ordering::AcqRel);
    }

    /// Stops garbage collection for good: a collection running stops before its next write,
    /// and later ones write nothing (for shutting down).
    pub fn halt_gc(&self) {
        self.gc_gate.lock().unwrap_or_else(|e| e.into_inner()).halted = true;
    }

    /// Writes one batch of garbage collection, unless the state was replaced (or is being
    /// replaced) since the collection began at `epoch`, or collection was halted: then
    /// `false`, and nothing is written. Deletions decided on one state would be wrong on its
    /// replacement.
    fn write_gc_batch(&self, epoch: u64, batch: WriteBatch) -> Result<bool> {
        let gate = self.gc_gate.lock().unwrap_or_else(|e| e.into_inner());
        if gate.halted || gate.installing || gate.epoch != epoch {
            return Ok(false);
        }
        self.engine.write(batch)?;
        Ok(true)
    }

    /// Deletes what the current horizon makes unreachable (see [`Mvcc::gc`]), in batches. It
    /// stops early ([`GcStats::interrupted`]) if the state is replaced meanwhile
    /// ([`Mvcc::import_batch`]) or collection is halted.
    pub fn collect_garbage(&self) -> Result<GcStats> {
        let horizon = self.gc_horizon();
        let mut stats = GcStats { horizon, ..GcStats::default() };
        let epoch = {
            let gate = self.gc_gate.lock().unwrap_or_else(|e| e.into_inner());
            if gate.halted || gate.installing {
                stats.interrupted = true;
                return Ok(stats);
            }
            gate.epoch
        };
        macro_rules! write_or_stop {
            ($batch:expr) => {
                if !self.write_gc_batch(epoch, $batch)? {
                    stats.interrupted = true;
                    return Ok(stats);
                }
            };
        }
        const BATCH: usize = 1024;
        let mut batch = WriteBatch::new();
        // The key being walked, and whether its version visible at the horizon was reached.
        let mut current: Option<Vec<u8>> = None;
        let mut reached_visible = false;
        // A key's visible tombstone is deleted only after every older version of it, in the
        // same batch or a later one: if the work stops between batches (a crash), the tombstone
        // still hides what is left below it, and no deleted value comes back.
        let mut tombstone: Option<Vec<u8>> = None;
        for entry in self.engine.scan((Bound::Included(vec![VERSION]), Bound::Excluded(vec![META])))
        {
            let (raw, value) = entry?;
            let (key, ts) = decode_version_key(&raw)?;
            if current.as_ref() != Some(&key) {
                if let Some(t) = tombstone.take() {
                    batch.delete(t);
                }
                current = Some(key);
                reached_visible = false;
            }
            if ts > horizon {
                stats.versions_kept += 1;
            } else if !reached_visible {
                // The newest version at or below the horizon: reads at the horizon see it, so it
                // stays unless it is a tombstone (then reads see nothing either way).
                reached_visible = true;
                if value.first() == Some(&TOMBSTONE) {
                    tombstone = Some(raw);
                    stats.versions_deleted += 1;
                } else {
                    stats.versions_kept += 1;
                }
            } else {
                batch.delete(raw);
                stats.versions_deleted += 1;
            }
            if batch.len() >= BATCH {
                write_or_stop!(std::mem::take(&mut batch));
            }
        }
        if let Some(t) = tombstone.take() {
            batch.delete(t);
        }
        for entry in self.engine.scan((Bound::Included(vec![TXN]), Bound::Excluded(vec![END]))) {
            let (raw, value) = entry?;
            if decode_u64(&value, "txn record")? < horizon {
                batch.delete(raw);
                stats.txn_records_deleted += 1;
            }
            if batch.len() >= BATCH {
                write_or_stop!(std::mem::take(&mut batch));
            }
        }
        if !batch.is_empty() {
            write_or_stop!(batch);
        }
        self.engine.flush()?;
        Ok(stats)
    }
}

/// Rejects keys and values MVCC will not store.
pub fn check_sizes(key: &[u8], value: Option<&[u8]>) -> Result<()> {
    if key.len() > MAX_KEY_LEN {
        return Err(Error::InvalidData(format!(
            "key of {} bytes exceeds the limit of {MAX_KEY_LEN}",
            key.len()
        )));
    }
    if let Some(v) = value
        && v.len() > MAX_VALUE_LEN
    {
        return Err(Error::InvalidData(format!(
            "value of {} bytes exceeds the limit of {MAX_VALUE_LEN}",
            v.len()
        )));
    }
    Ok(())
}

/// An iterator over the visible `(key, value)` pairs of a range at a timestamp.
pub struct MvccScan<'a> {
    inner: ScanIter<'a>,
    ts: u64,
    /// The user key whose visible version was already decided.
    current: Option<Vec<u8>>,
}

impl Iterator for MvccScan<'_> {
    type Item = Result<(Vec<u8>, Vec<u8>)>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            let (raw, value) = match self.inner.next()? {
                Ok(entry) => entry,
                Err(e) => return Some(Err(e)),
            };
            let (key, ts) = match decode_version_key(&raw) {
                Ok(kt) => kt,
                Err(e) => return Some(Err(e)),
            };
            if ts > self.ts || self.current.as_ref() == Some(&key) {
                continue; // too new, or an older version of a key already decided
            }
            match decode_value(&value) {
                Err(e) => return Some(Err(e)),
                Ok(None) => self.current = Some(key), // deleted as of ts
                Ok(Some(v)) => {
                    self.current = Some(key.clone());
                    return Some(Ok((key, v)));
                }
            }
        }
    }
}

fn key_prefix(key: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(key.len() + 11);
    out.push(VERSION);
    keycode::encode_key_into(key, &mut out);
    out
}

fn version_key(key: &[u8], ts: u64) -> Vec<u8> {
    let mut out = key_prefix(key);
    keycode::encode_ts_into(ts, &mut out);
    out
}

fn decode_version_key(raw: &[u8]) -> Result<(Vec<u8>, u64)> {
    match raw.split_first() {
        Some((&VERSION, rest)) => {
            let (key, ts) = keycode::decode_key(rest)?;
            Ok((key, keycode::decode_ts(ts)?))
        }
        _ => Err(Error::Corruption(format!("not a version key: {raw:02x?}"))),
    }
}

/// The engine key of metadata entry `name`, for callers that stage metadata in a batch of their
/// own ([`Mvcc::import_batch`]'s callers, a replicated state machine's bootstrap).
pub fn meta_key(name: &str) -> Vec<u8> {
    let mut out = vec![META];
    out.extend_from_slice(name.as_bytes());
    out
}

fn txn_key(txn_id: &[u8]) -> Vec<u8> {
    let mut out = vec![TXN];
    out.extend_from_slice(txn_id);
    out
}

fn encode_value(value: Option<&[u8]>) -> Vec<u8> {
    match value {
        None => vec![TOMBSTONE],
        Some(v) => {
            let mut out = Vec::with_capacity(v.len() + 1);
            out.push(VALUE);
            out.extend_from_slice(v);
            out
        }
    }
}

fn decode_value(raw: &[u8]) -> Result<Option<Vec<u8>>> {
    match raw.split_first() {
        Some((&TOMBSTONE, [])) => Ok(None),
        Some((&VALUE, v)) => Ok(Some(v.to_vec())),
        _ => Err(Error::Corruption(format!(
            "bad version value tag in {:02x?}",
            &raw[..raw.len().min(8)]
        ))),
    }
}

fn decode_u64(raw: &[u8], what: &str) -> Result<u64> {
    let arr: [u8; 8] = raw
        .try_into()
        .map_err(|_| Error::Corruption(format!("{what}: {} bytes, not 8", raw.len())))?;
    Ok(u64::from_be_bytes(arr))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::MemoryEngine;

    fn mvcc() -> Mvcc<MemoryEngine> {
        Mvcc::new(Arc::new(MemoryEngine::new())).unwrap()
    }

    fn commit(m: &Mvcc<MemoryEngine>, ts: u64, writes: &[(&str, Option<&str>)]) {
        m.apply(&Commit {
            ts,
            txn_id: format!("t{ts}").into_bytes(),
            writes: writes
                .iter()
                .map(|(k, v)| VersionedWrite {
                    key: k.as_bytes().to_vec(),
                    value: v.map(|v| v.as_bytes().to_vec()),
                })
                .collect(),
            applied_index: None,
        })
        .unwrap();
    }

    fn read(m: &Mvcc<MemoryEngine>, ts: u64) -> Vec<(String, String)> {
        m.scan((Bound::Unbounded, Bound::Unbounded), ts)
            .unwrap()
            .map(|r| r.map(|(k, v)| (String::from_utf8(k).unwrap(), String::from_utf8(v).unwrap())))
            .collect::<Result<_>>()
            .unwrap()
    }

    fn pairs(p: &[(&str, &str)]) -> Vec<(String, String)> {
        p.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    /// The worked example of the module docs, line by line.
    fn example() -> Mvcc<MemoryEngine> {
        let m = mvcc();
        commit(&m, 10, &[("a", Some("a1"))]);
        commit(&m, 20, &[("b", Some("b1"))]);
        commit(&m, 30, &[("a", Some("a2")), ("c", Some("c1"))]);
        commit(&m, 40, &[("b", Some("b2"))]);
        commit(&m, 50, &[("a", None)]);
        m
    }

    #[test]
    fn the_documented_example_reads_as_documented() {
        let m = example();
        assert_eq!(read(&m, 25), pairs(&[("a", "a1"), ("b", "b1")]));
        assert_eq!(read(&m, 30), pairs(&[("a", "a2"), ("b", "b1"), ("c", "c1")]));
        assert_eq!(read(&m, 55), pairs(&[("b", "b2"), ("c", "c1")]));
        assert_eq!(read(&m, 9), pairs(&[]));
        assert_eq!(m.get(b"a", 49).unwrap(), Some(b"a2".to_vec()));
        assert_eq!(m.get(b"a", 50).unwrap(), None);
        assert_eq!(m.max_version_ts(), 50);
        assert_eq!(m.commit_ts_of(b"t30").unwrap(), Some(30));
    }

    /// Garbage collection stopped between two of its batches (a crash, a full disk) never
    /// brings a deleted value back: a key's visible tombstone goes only after every version
    /// below it.
    #[test]
    fn gc_interrupted_between_batches_never_brings_a_deleted_value_back() {
        use std::sync::atomic::AtomicUsize;
        struct StopsWriting {
            inner: MemoryEngine,
            writes_left: AtomicUsize,
        }
        impl Engine for StopsWriting {
            fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
                self.inner.get(key)
            }
            fn scan(&self, range: (Bound<Vec<u8>>, Bound<Vec<u8>>)) -> crate::ScanIter<'_> {
                self.inner.scan(range)
            }
            fn write(&self, batch: WriteBatch) -> Result<()> {
                let left = self.writes_left.load(Ordering::SeqCst);
                if left == 0 {
                    return Err(Error::Io("stopped [injected]".into()));
                }
                self.writes_left.store(left - 1, Ordering::SeqCst);
                self.inner.write(batch)
            }
            fn flush(&self) -> Result<()> {
                self.inner.flush()
            }
            fn status(&self) -> Result<crate::Status> {
                self.inner.status()
            }
        }
        let engine =
            Arc::new(StopsWriting { inner: MemoryEngine::new(), writes_left: usize::MAX.into() });
        let m = Mvcc::new(engine.clone()).unwrap();
        // More versions of one key than one GC batch holds, under a tombstone.
        let versions = 1500u64;
        for ts in 1..=versions {
            let v = format!("v{ts}");
            m.apply(&Commit {
                ts,
                txn_id: Vec::new(),
                writes: vec![VersionedWrite { key: b"k".to_vec(), value: Some(v.into_bytes()) }],
                applied_index: None,
            })
            .unwrap();
        }
        m.apply(&Commit {
            ts: versions + 1,
            txn_id: Vec::new(),
            writes: vec![VersionedWrite { key: b"k".to_vec(), value: None }],
            applied_index: None,
        })
        .unwrap();
        // The horizon's write, then one batch of deletions, then the disk stops.
        engine.writes_left.store(2, Ordering::SeqCst);
        assert!(m.gc(versions + 10).is_err(), "the injected stop surfaces");
        assert_eq!(m.gc_horizon(), versions + 10);
        assert_eq!(m.get(b"k", versions + 10).unwrap(), None, "k stays deleted");
        assert_eq!(m.scan((Bound::Unbounded, Bound::Unbounded), versions + 10).unwrap().count(), 0);
        // Resumed, the collection finishes.
        engine.writes_left.store(usize::MAX, Ordering::SeqCst);
        let stats = m.collect_garbage().unwrap();
        assert_eq!(stats.versions_kept, 0);
        assert_eq!(m.get(b"k", versions + 10).unwrap(), None);
    }

    /// While the state is being replaced (between `import_batch` and `reload`), garbage
    /// collection writes nothing: deletions decided on the old state could be wrong on the new
    /// one. The snapshot's horizon holds from `import_batch` on.
    #[test]
    fn gc_writes_nothing_while_a_snapshot_is_installed() {
        let leader = example();
        leader.advance_gc_horizon(35).unwrap();
        let pairs = leader.export(&[]).unwrap();
        let m = example();
        let versions = |m: &Mvcc<MemoryEngine>| {
            m.engine().scan((Bound::Included(vec![VERSION]), Bound::Excluded(vec![META]))).count()
        };
        let before = versions(&m);
        let batch = m.import_batch(pairs, &[]).unwrap();
        assert_eq!(m.gc_horizon(), 35, "the snapshot's horizon holds before its batch is written");
        let stats = m.collect_garbage().unwrap();
        assert!(stats.interrupted && stats.versions_deleted == 0, "{stats:?}");
        assert_eq!(versions(&m), before, "nothing deleted during the install");
        m.engine().write(batch).unwrap();
        m.reload().unwrap();
        let stats = m.collect_garbage().unwrap();
        assert!(!stats.interrupted);
        assert_eq!(stats.versions_deleted, 1, "Version(a, 10), once installed");
        m.halt_gc();
        assert!(m.collect_garbage().unwrap().interrupted, "halted for good");
    }

    #[test]
    fn gc_keeps_what_reads_at_the_horizon_see_and_refuses_reads_below_it() {
        let m = example();
        let stats = m.gc(35).unwrap();
        assert_eq!(stats.versions_deleted, 1, "only Version(a, 10) goes");
        assert_eq!(stats.txn_records_deleted, 3, "t10, t20, t30");
        assert_eq!(read(&m, 35), pairs(&[("a", "a2"), ("b", "b1"), ("c", "c1")]));
        assert_eq!(read(&m, 55), pairs(&[("b", "b2"), ("c", "c1")]));
        assert_eq!(m.get(b"a", 25), Err(Error::BelowGcHorizon { ts: 25, horizon: 35 }));
        assert!(matches!(
            m.scan((Bound::Unbounded, Bound::Unbounded), 34),
            Err(Error::BelowGcHorizon { .. })
        ));
        // A tombstone at or below the horizon goes with everything older.
        let stats = m.gc(60).unwrap();
        assert_eq!(stats.versions_deleted, 3, "a@50 tombstone, a@30, b@20");
        assert_eq!(read(&m, 60), pairs(&[("b", "b2"), ("c", "c1")]));
        // The horizon survives a restart of the MVCC layer; the newest version is recorded at a
        // clean close.
        m.persist_max_version().unwrap();
        let m2 = Mvcc::new(m.engine().clone()).unwrap();
        assert_eq!(m2.gc_horizon(), 60);
        assert_eq!(m2.max_version_ts(), 50);
        // Commits below the horizon are refused.
        assert!(matches!(
            m2.apply(&Commit { ts: 59, txn_id: vec![], writes: vec![], applied_index: None }),
            Err(Error::InvalidData(_))
        ));
    }

    #[test]
    fn range_bounds_are_respected_including_prefix_keys() {
        let m = mvcc();
        commit(&m, 1, &[("a", Some("1")), ("a\0", Some("2")), ("ab", Some("3")), ("b", Some("4"))]);
        let keys = |r: (Bound<&str>, Bound<&str>)| -> Vec<String> {
            let conv = |b: Bound<&str>| match b {
                Bound::Included(s) => Bound::Included(s.as_bytes().to_vec()),
                Bound::Excluded(s) => Bound::Excluded(s.as_bytes().to_vec()),
                Bound::Unbounded => Bound::Unbounded,
            };
            m.scan((conv(r.0), conv(r.1)), 1)
                .unwrap()
                .map(|r| String::from_utf8(r.unwrap().0).unwrap())
                .collect()
        };
        assert_eq!(keys((Bound::Included("a"), Bound::Excluded("b"))), ["a", "a\0", "ab"]);
        assert_eq!(keys((Bound::Excluded("a"), Bound::Included("b"))), ["a\0", "ab", "b"]);
        assert_eq!(keys((Bound::Excluded("a\0"), Bound::Unbounded)), ["ab", "b"]);
        assert_eq!(keys((Bound::Unbounded, Bound::Excluded("a\0"))), ["a"]);
        assert_eq!(keys((Bound::Included("ab"), Bound::Included("ab"))), ["ab"]);
    }

    #[test]
    fn oversized_keys_and_values_are_rejected_and_nothing_is_written() {
        let m = mvcc();
        let big_key = vec![b'k'; MAX_KEY_LEN + 1];
        let r = m.apply(&Commit {
            ts: 5,
            txn_id: b"x".to_vec(),
            writes: vec![
                VersionedWrite { key: b"ok".to_vec(), value: Some(b"v".to_vec()) },
                VersionedWrite { key: big_key, value: Some(b"v".to_vec()) },
            ],
            applied_index: None,
        });
        assert!(matches!(r, Err(Error::InvalidData(ref s)) if s.contains("key of 4097 bytes")));
        assert_eq!(m.get(b"ok", 5).unwrap(), None);
        assert_eq!(m.commit_ts_of(b"x").unwrap(), None);
        let r = check_sizes(b"k", Some(&vec![0; MAX_VALUE_LEN + 1]));
        assert!(matches!(r, Err(Error::InvalidData(ref s)) if s.contains("value of 65537 bytes")));
        assert!(check_sizes(&vec![0; MAX_KEY_LEN], Some(&vec![0; MAX_VALUE_LEN])).is_ok());
    }

    #[test]
    fn export_and_import_move_the_whole_state_but_local_metadata() {
        let m = example();
        m.set_meta(meta::CLOCK_HIGH_WATER_MARK, &7u64.to_be_bytes()).unwrap();
        m.apply_all(
            &[Commit {
                ts: 60,
                txn_id: b"t60".to_vec(),
                writes: vec![VersionedWrite { key: b"d".to_vec(), value: Some(b"d1".to_vec()) }],
                applied_index: None,
            }],
            &[(meta::APPLIED_INDEX, 9u64.to_be_bytes().to_vec())],
        )
        .unwrap();
        let pairs = m.export(&[meta::CLOCK_HIGH_WATER_MARK]).unwrap();
        let other = mvcc();
        other.set_meta(meta::CLOCK_HIGH_WATER_MARK, &99u64.to_be_bytes()).unwrap();
        commit(&other, 5, &[("stale", Some("gone after import"))]);
        other.import(pairs, &[meta::CLOCK_HIGH_WATER_MARK]).unwrap();
        for ts in [25, 30, 55, 60] {
            assert_eq!(read(&other, ts), read(&m, ts), "at {ts}");
        }
        assert_eq!(other.get_meta_u64(meta::APPLIED_INDEX).unwrap(), Some(9));
        assert_eq!(
            other.get_meta_u64(meta::CLOCK_HIGH_WATER_MARK).unwrap(),
            Some(99),
            "local meta stays"
        );
        assert_eq!(other.commit_ts_of(b"t60").unwrap(), Some(60));
        assert_eq!(other.max_version_ts(), 60);
        // Garbage is refused, and nothing is written.
        assert!(other.import(vec![(vec![0x10, 1], vec![])], &[]).is_err());
        assert_eq!(read(&other, 60), read(&m, 60));
    }

    #[test]
    fn applying_a_commit_twice_is_idempotent_and_records_the_applied_index() {
        let m = example();
        let before = read(&m, 100);
        let c = Commit {
            ts: 60,
            txn_id: b"again".to_vec(),
            writes: vec![VersionedWrite { key: b"d".to_vec(), value: Some(b"d1".to_vec()) }],
            applied_index: Some(7),
        };
        m.apply(&c).unwrap();
        let once = read(&m, 100);
        m.apply(&c).unwrap();
        assert_eq!(read(&m, 100), once);
        assert_ne!(once, before);
        assert_eq!(m.get_meta_u64(meta::APPLIED_INDEX).unwrap(), Some(7));
    }
}
