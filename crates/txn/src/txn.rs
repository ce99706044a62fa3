//! [`Transaction`] (read-write) and [`ReadOnlyTransaction`].

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Bound;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use boundkv_clockbound::Timestamp;
use boundkv_storage::Engine;

use crate::apply::ApplyHandle;
use crate::conflicts::KeyRange;
use crate::error::{Error, Result};
use crate::manager::{ActiveRead, TxnManager};
use crate::record::TxnId;
use crate::timestamps::PendingTs;

/// What a commit reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommitInfo {
    /// The commit timestamp (for a transaction without writes, its read timestamp).
    pub ts: Timestamp,
    /// The commit wait the clock imposed: `ts` minus the clock's `earliest` when `ts` was
    /// chosen, the time that had to pass before `earliest > ts` (about twice the clock's bound).
    /// It runs alongside the durable write; [`CommitInfo::wait_beyond_durable`] is what it
    /// actually added.
    pub commit_wait: Duration,
    /// From choosing `ts` until the commit was durable.
    pub durable: Duration,
    /// How much later than durability the acknowledgement came because of commit wait: what
    /// commit wait actually cost this commit.
    pub wait_beyond_durable: Duration,
    /// The whole `commit()` call.
    pub latency: Duration,
}

/// A decided read-write transaction, as it reaches commit: what it read (at which timestamp) and
/// what it writes. The embedded [`Transaction`] builds one; the server gets one from a client that
/// buffered its transaction itself.
#[derive(Clone, Debug, Default)]
pub struct CommitRequest {
    /// Identifies the transaction; a retried commit with the same id is not applied twice.
    pub txn_id: TxnId,
    /// The timestamp its reads were at; `None` if it read nothing.
    pub read_ts: Option<Timestamp>,
    /// Every key it read.
    pub read_keys: BTreeSet<Bytes>,
    /// Every range it scanned (validated as ranges: no phantoms).
    pub read_ranges: Vec<KeyRange>,
    /// Its writes, one per key (`None` deletes).
    pub writes: BTreeMap<Bytes, Option<Bytes>>,
}

/// A read-write transaction: snapshot reads at one read timestamp, buffered writes, optimistic
/// validation and commit wait at commit (see the crate docs).
///
/// Dropping it without committing rolls it back; nothing it did is visible to anyone.
pub struct Transaction<E: Engine> {
    manager: Arc<TxnManager<E>>,
    id: TxnId,
    read: Option<(Timestamp, ActiveRead<E>)>,
    writes: BTreeMap<Bytes, Option<Bytes>>,
    write_bytes: usize,
    read_keys: BTreeSet<Bytes>,
    read_ranges: Vec<KeyRange>,
}

impl<E: Engine> Transaction<E> {
    pub(crate) fn new(manager: Arc<TxnManager<E>>) -> Self {
        Transaction {
            manager,
            id: TxnId::random(),
            read: None,
            writes: BTreeMap::new(),
            write_bytes: 0,
            read_keys: BTreeSet::new(),
            read_ranges: Vec::new(),
        }
    }

    /// This transaction's id.
    pub fn id(&self) -> TxnId {
        self.id
    }

    /// The read timestamp, once the first read has taken it.
    pub fn read_ts(&self) -> Option<Timestamp> {
        self.read.as_ref().map(|(ts, _)| *ts)
    }

    async fn ensure_read_ts(&mut self) -> Result<Timestamp> {
        if let Some((ts, _)) = &self.read {
            return Ok(*ts);
        }
        let (ts, active) = self.manager.acquire_read_ts().await?;
        self.read = Some((ts, active));
        Ok(ts)
    }

    /// The value of `key`: this transaction's own write if it made one, else the committed value
    /// as of its read timestamp.
    pub async fn get(&mut self, key: impl Into<Bytes>) -> Result<Option<Bytes>> {
        let key = key.into();
        self.manager.limits.check_key(&key)?;
        if let Some(w) = self.writes.get(&key) {
            return Ok(w.clone());
        }
        let ts = self.ensure_read_ts().await?;
        self.manager.check_failed()?;
        let value = self.manager.mvcc.get(&key, ts.as_nanos())?.map(Bytes::from);
        self.read_keys.insert(key);
        Ok(value)
    }

    /// The pairs in `range` (with this transaction's own writes applied), in key order, at most
    /// `limit` of them. The scanned range (up to the last key returned, when the limit cut it
    /// short) is validated at commit, so rows inserted into it by others cause a conflict: no
    /// phantoms.
    pub async fn scan(
        &mut self,
        range: (Bound<Bytes>, Bound<Bytes>),
        limit: Option<usize>,
    ) -> Result<Vec<(Bytes, Bytes)>> {
        let ts = self.ensure_read_ts().await?;
        self.manager.check_failed()?;
        let limit = limit.unwrap_or(usize::MAX);
        let mut merged: BTreeMap<Bytes, Option<Bytes>> = BTreeMap::new();
        if crate::conflicts::valid(&range) {
            let storage = self.manager.mvcc.scan(to_vec_range(&range), ts.as_nanos())?;
            // Enough from storage to fill the limit even if every own delete hides one.
            let own_deletes = self.writes.range(range.clone()).filter(|(_, v)| v.is_none()).count();
            for entry in storage.take(limit.saturating_add(own_deletes)) {
                let (k, v) = entry?;
                merged.insert(Bytes::from(k), Some(Bytes::from(v)));
            }
            for (k, v) in self.writes.range(range.clone()) {
                merged.insert(k.clone(), v.clone());
            }
        }
        let out: Vec<(Bytes, Bytes)> =
            merged.into_iter().filter_map(|(k, v)| v.map(|v| (k, v))).take(limit).collect();
        // Validate only what was read: up to the last key returned if the limit was reached.
        let scanned = match out.last() {
            Some((last, _)) if out.len() == limit => (range.0, Bound::Included(last.clone())),
            _ => range,
        };
        self.read_ranges.push(scanned);
        Ok(out)
    }

    /// Sets `key` to `value` at commit.
    pub fn put(&mut self, key: impl Into<Bytes>, value: impl Into<Bytes>) -> Result<()> {
        self.write(key.into(), Some(value.into()))
    }

    /// Deletes `key` at commit.
    pub fn delete(&mut self, key: impl Into<Bytes>) -> Result<()> {
        self.write(key.into(), None)
    }

    fn write(&mut self, key: Bytes, value: Option<Bytes>) -> Result<()> {
        let limits = &self.manager.limits;
        limits.check_write(&key, value.as_deref())?;
        let added = key.len() + value.as_ref().map_or(0, Bytes::len);
        let replaced =
            self.writes.get(&key).map(|old| key.len() + old.as_ref().map_or(0, Bytes::len));
        if replaced.is_none() && self.writes.len() >= limits.max_writes {
            return Err(Error::TransactionTooLarge {
                what: "writes".into(),
                max: limits.max_writes,
            });
        }
        let bytes = self.write_bytes - replaced.unwrap_or(0) + added;
        if bytes > limits.max_txn_bytes {
            return Err(Error::TransactionTooLarge {
                what: "bytes".into(),
                max: limits.max_txn_bytes,
            });
        }
        self.write_bytes = bytes;
        self.writes.insert(key, value);
        Ok(())
    }

    /// Commits: validates the reads, takes the commit timestamp `s`, makes the writes durable,
    /// waits until `now().earliest > s` (commit wait) and only then makes them visible and
    /// returns. A transaction without writes commits at its read timestamp without waiting.
    pub async fn commit(self) -> Result<CommitInfo> {
        let request = CommitRequest {
            txn_id: self.id,
            read_ts: self.read.as_ref().map(|(ts, _)| *ts),
            read_keys: self.read_keys,
            read_ranges: self.read_ranges,
            writes: self.writes,
        };
        // Keep our read registered until validation is over (GC must not pass it).
        let _registered = self.read;
        self.manager.commit_request(request).await
    }

    /// Abandons the transaction (as dropping it does).
    pub fn rollback(self) {}
}

/// A commit between choosing its timestamp and becoming visible. The protocol must finish even if
/// the caller stops waiting (the future is dropped): durable, then commit wait, then visible. If
/// dropped early, a thread of its own finishes it.
pub(crate) struct InFlight<E: Engine> {
    pub(crate) manager: Arc<TxnManager<E>>,
    pub(crate) pending: Option<PendingTs>,
    pub(crate) durable: Option<ApplyHandle>,
    pub(crate) chosen: Instant,
}

impl<E: Engine> InFlight<E> {
    pub(crate) async fn finish(mut self) -> Result<CommitInfo> {
        // Keep the handle in `self` while waiting: if this future is dropped here, `Drop` must
        // still learn whether the record was applied before the timestamp may be released.
        let outcome = match self.durable.as_mut() {
            Some(handle) => handle
                .await
                .unwrap_or_else(|_| Err(Error::Fatal("the apply thread stopped".into()))),
            None => Ok(()),
        };
        self.durable = None;
        let durable_after = self.chosen.elapsed();
        if let Err(e) = outcome {
            // Not applied, or the node is failing, or the outcome is unknown. A fatal error is
            // recorded *before* the timestamp is released: a reader the release wakes finds the
            // node failed, never a value whose sync failed (the applier may have applied it to
            // storage before its flush failed).
            let e = self.manager.fail(e);
            if matches!(e, Error::OutcomeUnknown(_)) {
                // It may have applied (a snapshot covered its entry, say): it stays pending
                // through its commit wait, as an applied commit would.
                let ts = self.pending.as_ref().expect("pending until visible").ts();
                if !self.manager.skip_commit_wait() {
                    self.manager.commit_wait_until_done(ts).await;
                }
            }
            self.pending.take();
            return Err(e);
        }
        let ts = self.pending.as_ref().expect("pending until visible").ts();
        // Commit wait: the clock must show ts has passed before anyone sees the writes. It has
        // been running since ts was chosen; only what is left of it is waited here.
        let waited_here = if self.manager.skip_commit_wait() {
            Duration::ZERO
        } else {
            self.manager.commit_wait_until_done(ts).await.waited
        };
        self.pending.take(); // visible from here on
        Ok(CommitInfo {
            ts,
            commit_wait: Duration::ZERO, // filled in by the caller, which holds the reading
            durable: durable_after,
            wait_beyond_durable: waited_here,
            latency: Duration::ZERO,
        })
    }
}

impl<E: Engine> Drop for InFlight<E> {
    fn drop(&mut self) {
        if self.pending.is_none() {
            return;
        }
        // Dropped mid-protocol (the caller stopped waiting): finish it on a thread of its own.
        // `finish` picks up where this one stopped: the apply result if it is still due, then
        // commit wait, then releasing the timestamp.
        let rest = InFlight {
            manager: self.manager.clone(),
            pending: self.pending.take(),
            durable: self.durable.take(),
            chosen: self.chosen,
        };
        std::thread::spawn(move || {
            let _ = futures::executor::block_on(rest.finish());
        });
    }
}

/// A read-only transaction at one timestamp: lock-free, never conflicts, never waits after it
/// began.
pub struct ReadOnlyTransaction<E: Engine> {
    manager: Arc<TxnManager<E>>,
    ts: Timestamp,
    _active: ActiveRead<E>,
}

impl<E: Engine> ReadOnlyTransaction<E> {
    pub(crate) fn new(manager: Arc<TxnManager<E>>, ts: Timestamp, active: ActiveRead<E>) -> Self {
        ReadOnlyTransaction { manager, ts, _active: active }
    }

    /// The timestamp every read of this transaction is at.
    pub fn ts(&self) -> Timestamp {
        self.ts
    }

    /// The value of `key` at the transaction's timestamp.
    pub fn get(&self, key: impl AsRef<[u8]>) -> Result<Option<Bytes>> {
        self.manager.limits.check_key(key.as_ref())?;
        self.manager.check_failed()?;
        Ok(self.manager.mvcc.get(key.as_ref(), self.ts.as_nanos())?.map(Bytes::from))
    }

    /// The pairs in `range` at the transaction's timestamp, at most `limit`.
    pub fn scan(
        &self,
        range: (Bound<Bytes>, Bound<Bytes>),
        limit: Option<usize>,
    ) -> Result<Vec<(Bytes, Bytes)>> {
        self.manager.check_failed()?;
        if !crate::conflicts::valid(&range) {
            return Ok(Vec::new());
        }
        self.manager
            .mvcc
            .scan(to_vec_range(&range), self.ts.as_nanos())?
            .take(limit.unwrap_or(usize::MAX))
            .map(|r| r.map(|(k, v)| (Bytes::from(k), Bytes::from(v))).map_err(Error::from))
            .collect()
    }
}

fn to_vec_range(range: &(Bound<Bytes>, Bound<Bytes>)) -> (Bound<Vec<u8>>, Bound<Vec<u8>>) {
    let conv = |b: &Bound<Bytes>| match b {
        Bound::Included(k) => Bound::Included(k.to_vec()),
        Bound::Excluded(k) => Bound::Excluded(k.to_vec()),
        Bound::Unbounded => Bound::Unbounded,
    };
    (conv(&range.0), conv(&range.1))
}
