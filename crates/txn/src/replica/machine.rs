//! [`MvccStateMachine`]: the replicated state machine, applying the log's [`Command`]s to MVCC.
//!
//! Everything one `apply` call writes goes into **one** engine batch: the versions of every
//! commit in the run, their transaction records, the applied index, the closed timestamp, the
//! GC horizon and the highest timestamp seen. After a crash the state, the applied index and the closed
//! timestamp therefore always agree, and re-applying the entries after the applied index
//! rewrites the same versions (deterministic, idempotent).
//!
//! What a replica learns from the log and the rest of the node needs (the highest timestamp a
//! new leader must exceed, the members and their addresses, the applied index that releases the
//! leader's closed timestamps) is mirrored in [`ReplicaShared`], updated only after the batch is
//! written.
//!
//! Closed timestamps no longer travel in the log (see the `closed` module): a replica learns
//! them from the leader's side transport and holds each until it has applied the index it names
//! ([`ReplicaShared::offer_closed`]). `Close` entries of older logs still apply as they did: they
//! raise the *log's* closed timestamp, which refuses, the same way on every replica, a later
//! commit at or below it.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use raft::prelude::{ConfChangeType, ConfChangeV2, ConfState};
use tokio::sync::watch;

use boundkv_clockbound::Timestamp;
use boundkv_consensus::log_store::SnapshotSource;
use boundkv_consensus::node::{Committed, StateMachine, StateMachineError};
use boundkv_consensus::raft;
use boundkv_storage::mvcc::check_sizes;
use boundkv_storage::mvcc::meta::{APPLIED_INDEX, GC_HORIZON};
use boundkv_storage::{Commit, Engine, Mvcc, WriteBatch};

use super::command::{Command, LOCAL_META, LegacyMember, Member, SnapshotData, meta};

/// What applying one entry produced, for its proposer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ApplyOutput {
    /// An empty entry (a new leader's no-op).
    Noop,
    /// A commit applied at `ts`.
    Applied {
        /// Its timestamp.
        ts: Timestamp,
    },
    /// A commit whose transaction id had already been applied (at `ts`); nothing was written.
    Duplicate {
        /// The timestamp it was applied at.
        ts: Timestamp,
    },
    /// A closed timestamp, recorded.
    Closed,
    /// A GC horizon, recorded (collection follows in the background).
    GcHorizon,
    /// An entry that cannot be applied, the same on every replica (it does not decode, or a key
    /// or value exceeds the limits): nothing was written.
    Rejected(String),
}

/// What the rest of a replica reads of the state machine.
pub struct ReplicaShared {
    applied: AtomicU64,
    /// The closed timestamp reads here may use: the highest of the log's and of the leader's
    /// side-transport closes whose index is applied. Never moves back.
    closed: watch::Sender<Timestamp>,
    /// The highest `Close` entry applied (older logs only): the deterministic refusal's bound.
    log_closed: AtomicU64,
    /// Side-transport closes waiting for their index to be applied here: index → the highest
    /// closed timestamp that waits for it.
    waiting_closes: Mutex<BTreeMap<u64, Timestamp>>,
    gc_horizon: watch::Sender<Timestamp>,
    max_log_ts: AtomicU64,
    members: RwLock<BTreeMap<u64, Member>>,
    broken_promises: AtomicU64,
}

impl ReplicaShared {
    fn load<E: Engine>(mvcc: &Mvcc<E>) -> Result<Arc<Self>, StateMachineError> {
        let shared = Arc::new(ReplicaShared {
            applied: AtomicU64::new(0),
            closed: watch::Sender::new(Timestamp::ZERO),
            log_closed: AtomicU64::new(0),
            waiting_closes: Mutex::new(BTreeMap::new()),
            gc_horizon: watch::Sender::new(Timestamp::ZERO),
            max_log_ts: AtomicU64::new(0),
            members: RwLock::new(BTreeMap::new()),
            broken_promises: AtomicU64::new(0),
        });
        shared.reload(mvcc)?;
        Ok(shared)
    }

    fn reload<E: Engine>(&self, mvcc: &Mvcc<E>) -> Result<(), StateMachineError> {
        let u64_meta = |name: &str| -> Result<u64, StateMachineError> {
            Ok(mvcc.get_meta_u64(name)?.unwrap_or(0))
        };
        self.applied.store(u64_meta(APPLIED_INDEX)?, Ordering::Release);
        self.max_log_ts.store(u64_meta(meta::MAX_LOG_TS)?, Ordering::Release);
        let log_closed = u64_meta(meta::CLOSED_TS)?;
        self.log_closed.store(log_closed, Ordering::Release);
        self.raise_closed(Timestamp::from_nanos(log_closed));
        self.gc_horizon.send_replace(Timestamp::from_nanos(mvcc.gc_horizon()));
        let corrupt = |e: postcard::Error| StateMachineError::Corrupt {
            what: "the stored member list".into(),
            why: e.to_string(),
        };
        let members: Vec<Member> = match mvcc.get_meta(meta::MEMBERS_WITH_LEAP)? {
            Some(bytes) => postcard::from_bytes(&bytes).map_err(corrupt)?,
            None => match mvcc.get_meta(meta::MEMBERS)? {
                // Written before members recorded their leap policy: every one steps.
                Some(bytes) => postcard::from_bytes::<Vec<LegacyMember>>(&bytes)
                    .map_err(corrupt)?
                    .into_iter()
                    .map(Member::from)
                    .collect(),
                None => Vec::new(),
            },
        };
        *self.members.write().unwrap_or_else(|e| e.into_inner()) =
            members.into_iter().map(|m| (m.id, m)).collect();
        self.release_closes();
        Ok(())
    }

    /// Raises the closed timestamp reads here use (never lowers it).
    fn raise_closed(&self, closed: Timestamp) {
        self.closed.send_if_modified(|c| {
            let raise = closed > *c;
            if raise {
                *c = closed;
            }
            raise
        });
    }

    /// A leader's closed timestamp from the side transport: every commit at or below `closed`
    /// is applied at or before index `applied`, so reads here may use it once this replica has
    /// applied that index (at once if it has). See the `closed` module for why that is enough.
    pub fn offer_closed(&self, closed: Timestamp, applied: u64) {
        // Under the lock: `apply` stores the applied index *before* it releases what waits, so a
        // close either sees the new index here or is found waiting there.
        let mut waiting = self.waiting_closes.lock().unwrap_or_else(|e| e.into_inner());
        if applied <= self.applied_index() {
            drop(waiting);
            self.raise_closed(closed);
            return;
        }
        let slot = waiting.entry(applied).or_insert(closed);
        *slot = (*slot).max(closed);
        // A close waiting on a higher index for a lower timestamp is worthless.
        waiting.retain(|&i, &mut c| i <= applied || c > closed);
    }

    /// Raises the closed timestamp by every side-transport close whose index is now applied.
    fn release_closes(&self) {
        let applied = self.applied_index();
        let released = {
            let mut waiting = self.waiting_closes.lock().unwrap_or_else(|e| e.into_inner());
            let later = waiting.split_off(&(applied + 1));
            std::mem::replace(&mut *waiting, later).into_values().max()
        };
        if let Some(closed) = released {
            self.raise_closed(closed);
        }
    }

    /// The index of the last entry applied.
    pub fn applied_index(&self) -> u64 {
        self.applied.load(Ordering::Acquire)
    }

    /// The closed timestamp: reads at or below it are exact here.
    pub fn closed(&self) -> Timestamp {
        *self.closed.borrow()
    }

    /// A receiver of closed-timestamp changes.
    pub fn watch_closed(&self) -> watch::Receiver<Timestamp> {
        self.closed.subscribe()
    }

    /// A receiver of GC-horizon changes (the replica's collector waits on it).
    pub fn watch_gc_horizon(&self) -> watch::Receiver<Timestamp> {
        self.gc_horizon.subscribe()
    }

    /// The highest timestamp of any command applied.
    pub fn max_log_ts(&self) -> Timestamp {
        Timestamp::from_nanos(self.max_log_ts.load(Ordering::Acquire))
    }

    /// How many commits this replica applied (or, after a `Close` entry, refused) since it
    /// started although they came after a closed timestamp at or above their own: a leader broke
    /// the promise a closed timestamp makes, and reads here may have missed them. Always 0
    /// unless the timestamp protocol has a bug (the simulator checks it).
    pub fn broken_promises(&self) -> u64 {
        self.broken_promises.load(Ordering::Acquire)
    }

    /// The members and their addresses, by id.
    pub fn members(&self) -> BTreeMap<u64, Member> {
        self.members.read().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// The timestamp `txn_id` committed at, by its transaction record, if that record is at or
/// above `horizon`. A record below the horizon counts for nothing: each replica's collector
/// deletes those in its own time, so whether one is still there differs between replicas, and
/// whether a resent commit is a duplicate must be decided from the log alone. The state machine
/// and the leader both decide by this.
pub(crate) fn recorded_commit_ts<E: Engine>(
    mvcc: &Mvcc<E>,
    txn_id: &[u8],
    horizon: Timestamp,
) -> boundkv_storage::Result<Option<u64>> {
    Ok(mvcc.commit_ts_of(txn_id)?.filter(|&ts| ts >= horizon.as_nanos()))
}

/// The replicated state machine over MVCC (see the module docs).
pub struct MvccStateMachine<E: Engine> {
    mvcc: Arc<Mvcc<E>>,
    shared: Arc<ReplicaShared>,
    /// The founding members, written at bootstrap.
    founding: Vec<Member>,
    /// Whether the last staged batch replaced the whole state (a snapshot).
    staged_restore: bool,
}

impl<E: Engine> MvccStateMachine<E> {
    /// The state machine over `mvcc`, resuming from its metadata. `founding` is what a brand-new
    /// group's founding members record at bootstrap (the same on all of them).
    pub fn new(
        mvcc: Arc<Mvcc<E>>,
        founding: Vec<Member>,
    ) -> Result<(Self, Arc<ReplicaShared>), StateMachineError> {
        let shared = ReplicaShared::load(&mvcc)?;
        Ok((
            MvccStateMachine { mvcc, shared: shared.clone(), founding, staged_restore: false },
            shared,
        ))
    }

    fn members_batch(batch: &mut WriteBatch, members: &BTreeMap<u64, Member>) {
        let list: Vec<&Member> = members.values().collect();
        batch.put(
            boundkv_storage::mvcc::meta_key(meta::MEMBERS_WITH_LEAP),
            postcard::to_allocvec(&list).expect("members always encode"),
        );
        batch.delete(boundkv_storage::mvcc::meta_key(meta::MEMBERS));
    }
}

impl<E: Engine> StateMachine for MvccStateMachine<E> {
    type Output = ApplyOutput;

    fn applied_index(&self) -> u64 {
        self.shared.applied_index()
    }

    fn apply(&mut self, entries: &[Committed<'_>]) -> Result<Vec<ApplyOutput>, StateMachineError> {
        let mut outputs = Vec::with_capacity(entries.len());
        let mut commits: Vec<Commit> = Vec::new();
        // Transaction ids committed earlier in this batch, with their timestamps.
        let mut seen: BTreeMap<[u8; 16], u64> = BTreeMap::new();
        // The log's own closed timestamp (older logs' `Close` entries) decides refusals, the same
        // way on every replica; the one reads here use (side-transport closes too) only detects.
        let mut closed = Timestamp::from_nanos(self.shared.log_closed.load(Ordering::Acquire));
        let served_closed = self.shared.closed();
        let mut max_ts = self.shared.max_log_ts();
        let old_horizon = Timestamp::from_nanos(self.mvcc.gc_horizon());
        let mut horizon = old_horizon;
        let Some(last) = entries.last() else {
            return Ok(outputs);
        };
        for e in entries {
            if e.data.is_empty() {
                outputs.push(ApplyOutput::Noop);
                continue;
            }
            let command = match Command::decode(e.data) {
                Ok(c) => c,
                Err(why) => {
                    tracing::error!(index = e.index, error = %why, "a log entry does not decode; skipped on every replica");
                    outputs.push(ApplyOutput::Rejected(why.to_string()));
                    continue;
                }
            };
            match command {
                Command::Close(ts) => {
                    closed = closed.max(ts);
                    max_ts = max_ts.max(ts);
                    outputs.push(ApplyOutput::Closed);
                }
                Command::Gc(h) => {
                    horizon = horizon.max(h);
                    outputs.push(ApplyOutput::GcHorizon);
                }
                Command::Commit(record) => {
                    max_ts = max_ts.max(record.ts);
                    let id = record.txn_id.0;
                    // The same rule whether the earlier commit is in this batch or an earlier
                    // one: a record below the horizon counts for nothing. (Batching differs
                    // between replicas; the decision must not.)
                    let earlier = match seen.get(&id) {
                        Some(&ts) => Some(ts).filter(|&ts| ts >= horizon.as_nanos()),
                        None => recorded_commit_ts(&self.mvcc, &id, horizon)?,
                    };
                    if let Some(ts) = earlier {
                        outputs.push(ApplyOutput::Duplicate { ts: Timestamp::from_nanos(ts) });
                        continue;
                    }
                    if let Some(bad) = record
                        .writes
                        .iter()
                        .find_map(|w| check_sizes(&w.key, w.value.as_deref()).err())
                    {
                        outputs.push(ApplyOutput::Rejected(bad.to_string()));
                        continue;
                    }
                    // A closed timestamp promised that no later entry commits at or below it;
                    // followers may already have served reads there. A commit that breaks the
                    // promise is a leader's bug: refused (the same way on every replica, from
                    // the log alone), loudly.
                    if record.ts <= closed {
                        self.shared.broken_promises.fetch_add(1, Ordering::AcqRel);
                        tracing::error!(index = e.index, ts = %record.ts, %closed, "a commit at or below the closed timestamp: refused");
                        outputs.push(ApplyOutput::Rejected(format!(
                            "commit at {} is at or below the closed timestamp {closed}",
                            record.ts
                        )));
                        continue;
                    }
                    // Side-transport closes differ between replicas, so this one cannot refuse
                    // the commit; it says loudly that reads it served may have missed it.
                    if record.ts <= served_closed {
                        self.shared.broken_promises.fetch_add(1, Ordering::AcqRel);
                        tracing::error!(index = e.index, ts = %record.ts, closed = %served_closed, "a commit at or below a closed timestamp this replica already served reads at");
                    }
                    // Never the case for a leader's commit (the horizon stays at or below the
                    // leader's safe time when it proposed it), but decided from the log alone
                    // either way.
                    if record.ts < horizon {
                        outputs.push(ApplyOutput::Rejected(format!(
                            "commit at {} is below the GC horizon {horizon}",
                            record.ts
                        )));
                        continue;
                    }
                    seen.insert(id, record.ts.as_nanos());
                    outputs.push(ApplyOutput::Applied { ts: record.ts });
                    commits.push(record.to_commit(None, true));
                }
            }
        }
        let mut meta_updates = vec![
            (APPLIED_INDEX, last.index.to_be_bytes().to_vec()),
            (meta::CLOSED_TS, closed.as_nanos().to_be_bytes().to_vec()),
            (meta::MAX_LOG_TS, max_ts.as_nanos().to_be_bytes().to_vec()),
        ];
        if horizon > old_horizon {
            meta_updates.push((GC_HORIZON, horizon.as_nanos().to_be_bytes().to_vec()));
        }
        self.mvcc.apply_all(&commits, &meta_updates)?;
        if horizon > old_horizon {
            self.mvcc.horizon_written(horizon.as_nanos());
            self.shared.gc_horizon.send_replace(horizon);
        }
        self.shared.applied.store(last.index, Ordering::Release);
        self.shared.max_log_ts.fetch_max(max_ts.as_nanos(), Ordering::AcqRel);
        self.shared.log_closed.fetch_max(closed.as_nanos(), Ordering::AcqRel);
        self.shared.raise_closed(closed);
        self.shared.release_closes();
        Ok(outputs)
    }

    fn bootstrap(&mut self, _conf: &ConfState) -> Result<WriteBatch, StateMachineError> {
        let mut batch = WriteBatch::new();
        let members: BTreeMap<u64, Member> =
            self.founding.iter().map(|m| (m.id, m.clone())).collect();
        Self::members_batch(&mut batch, &members);
        batch.put(boundkv_storage::mvcc::meta_key(APPLIED_INDEX), 1u64.to_be_bytes().to_vec());
        self.staged_restore = true;
        Ok(batch)
    }

    fn membership(
        &mut self,
        index: u64,
        change: &ConfChangeV2,
        _conf: &ConfState,
    ) -> Result<WriteBatch, StateMachineError> {
        let mut members = self.shared.members();
        for single in change.get_changes() {
            match single.get_change_type() {
                ConfChangeType::AddNode | ConfChangeType::AddLearnerNode => {
                    if !change.context.is_empty() {
                        match Member::decode(&change.context) {
                            Ok(m) if m.id == single.node_id => {
                                members.insert(m.id, m);
                            }
                            Ok(m) => tracing::warn!(
                                index,
                                node = single.node_id,
                                context = m.id,
                                "membership change context names another node; address ignored"
                            ),
                            Err(why) => {
                                tracing::warn!(index, error = %why, "membership change context does not decode; address ignored")
                            }
                        }
                    }
                }
                ConfChangeType::RemoveNode => {
                    members.remove(&single.node_id);
                }
            }
        }
        let mut batch = WriteBatch::new();
        Self::members_batch(&mut batch, &members);
        batch.put(boundkv_storage::mvcc::meta_key(APPLIED_INDEX), index.to_be_bytes().to_vec());
        self.staged_restore = false;
        Ok(batch)
    }

    fn restore(&mut self, index: u64, data: &[u8]) -> Result<WriteBatch, StateMachineError> {
        let snapshot: SnapshotData = postcard::from_bytes(data).map_err(|e| {
            StateMachineError::Corrupt { what: "snapshot data".into(), why: e.to_string() }
        })?;
        if snapshot.applied_index != index {
            return Err(StateMachineError::Invalid(format!(
                "snapshot data is at index {}, the snapshot at {index}",
                snapshot.applied_index
            )));
        }
        let batch = self.mvcc.import_batch(snapshot.pairs, LOCAL_META)?;
        self.staged_restore = true;
        Ok(batch)
    }

    fn staged_written(&mut self) -> Result<(), StateMachineError> {
        if self.staged_restore {
            self.mvcc.reload()?;
        }
        self.staged_restore = false;
        self.shared.reload(&self.mvcc)
    }

    fn snapshot_source(&self) -> Arc<dyn SnapshotSource> {
        Arc::new(MvccSnapshotSource { mvcc: self.mvcc.clone(), shared: self.shared.clone() })
    }
}

/// Builds snapshots from the MVCC state. raft-rs asks for one on the Raft thread, between
/// applies, so the state exported is exactly the state at the applied index read with it.
struct MvccSnapshotSource<E: Engine> {
    mvcc: Arc<Mvcc<E>>,
    shared: Arc<ReplicaShared>,
}

impl<E: Engine> SnapshotSource for MvccSnapshotSource<E> {
    fn snapshot_data(&self) -> boundkv_storage::Result<(u64, Vec<u8>)> {
        let applied_index = self.shared.applied_index();
        let pairs = self.mvcc.export(LOCAL_META)?;
        let data = postcard::to_allocvec(&SnapshotData { applied_index, pairs })
            .expect("snapshot data always encodes");
        tracing::info!(applied_index, bytes = data.len(), "built a snapshot");
        Ok((applied_index, data))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use boundkv_consensus::node::{Committed, StateMachine};
    use boundkv_storage::{MemoryEngine, Mvcc};

    use super::*;
    use crate::record::{CommitRecord, TxnId, Write};

    fn commit(id: u8, ts: u64, value: &str) -> Vec<u8> {
        Command::Commit(CommitRecord {
            txn_id: TxnId([id; 16]),
            ts: Timestamp::from_nanos(ts),
            writes: vec![Write { key: "k".into(), value: Some(value.to_string().into()) }],
        })
        .encode()
    }

    fn apply(sm: &mut MvccStateMachine<MemoryEngine>, index: u64, data: &[u8]) -> ApplyOutput {
        sm.apply(&[Committed { index, term: 1, data }]).unwrap().remove(0)
    }

    /// A member list stored before members recorded their leap policy (under the old key, in
    /// the old encoding) still loads, every member stepping; the next membership change writes
    /// the new key and deletes the old one.
    #[test]
    fn a_member_list_stored_before_the_leap_policy_still_loads() {
        #[derive(serde::Serialize)]
        struct Old(u64, &'static str, &'static str);
        let mvcc = Arc::new(Mvcc::new(Arc::new(MemoryEngine::new())).unwrap());
        let old = vec![Old(1, "p1", "c1"), Old(2, "p2", "c2"), Old(3, "p3", "c3")];
        mvcc.set_meta(meta::MEMBERS, &postcard::to_allocvec(&old).unwrap()).unwrap();
        let (mut sm, shared) = MvccStateMachine::new(mvcc.clone(), Vec::new()).unwrap();
        let members = shared.members();
        assert_eq!(members.keys().copied().collect::<Vec<_>>(), [1, 2, 3]);
        assert!(members.values().all(|m| m.leap == boundkv_clockbound::LeapPolicy::Step));
        assert_eq!(members[&2].client_address, "c2");
        // A change rewrites the list under the new key.
        let mut cc = ConfChangeV2::default();
        let mut single = raft::prelude::ConfChangeSingle::default();
        single.set_change_type(ConfChangeType::RemoveNode);
        single.node_id = 3;
        cc.set_changes(vec![single].into());
        let batch = sm.membership(5, &cc, &ConfState::default()).unwrap();
        mvcc.engine().write(batch).unwrap();
        assert!(mvcc.get_meta(meta::MEMBERS).unwrap().is_none());
        assert!(mvcc.get_meta(meta::MEMBERS_WITH_LEAP).unwrap().is_some());
        let shared = ReplicaShared::load(&mvcc).unwrap();
        assert_eq!(shared.members().keys().copied().collect::<Vec<_>>(), [1, 2]);
    }

    /// Whether a resent commit is a duplicate is decided from the log alone: a transaction
    /// record below the GC horizon counts for nothing, whether this replica's collector has
    /// deleted it yet or not. Two replicas, one collected and one not, decide alike.
    #[test]
    fn a_resent_commit_below_the_horizon_is_decided_alike_collected_or_not() {
        let mut outputs = Vec::new();
        for collect in [false, true] {
            let mvcc = Arc::new(Mvcc::new(Arc::new(MemoryEngine::new())).unwrap());
            let (mut sm, _) = MvccStateMachine::new(mvcc.clone(), Vec::new()).unwrap();
            assert_eq!(
                apply(&mut sm, 2, &commit(7, 10, "first")),
                ApplyOutput::Applied { ts: Timestamp::from_nanos(10) }
            );
            assert_eq!(
                apply(&mut sm, 3, &Command::Gc(Timestamp::from_nanos(20)).encode()),
                ApplyOutput::GcHorizon
            );
            assert_eq!(mvcc.gc_horizon(), 20, "the horizon is raised with the entry");
            if collect {
                mvcc.collect_garbage().unwrap();
                assert_eq!(mvcc.commit_ts_of(&[7; 16]).unwrap(), None, "the record is gone");
            } else {
                assert_eq!(mvcc.commit_ts_of(&[7; 16]).unwrap(), Some(10), "the record stays");
            }
            // The same transaction id again, at a new timestamp above the horizon.
            let out = apply(&mut sm, 4, &commit(7, 30, "again"));
            outputs.push((out, mvcc.get(b"k", 40).unwrap()));
        }
        assert_eq!(outputs[0], outputs[1], "collected or not, the replicas agree");
        assert_eq!(outputs[0].0, ApplyOutput::Applied { ts: Timestamp::from_nanos(30) });
    }

    /// A side-transport close counts only once its index is applied here: before that, the
    /// commits it covers may still be on their way. It never lowers the closed timestamp, and
    /// a replica that later applies a commit at or below what it served counts a broken
    /// promise (but applies it: replicas may hold different closes, so refusing would split
    /// them).
    #[test]
    fn a_side_close_waits_for_its_index_and_a_commit_below_it_is_a_broken_promise() {
        let ts = Timestamp::from_nanos;
        let mvcc = Arc::new(Mvcc::new(Arc::new(MemoryEngine::new())).unwrap());
        let (mut sm, shared) = MvccStateMachine::new(mvcc.clone(), Vec::new()).unwrap();
        apply(&mut sm, 2, &commit(1, 10, "a"));
        // Closed at 20 after index 3 (a commit at 15, not here yet).
        shared.offer_closed(ts(20), 3);
        assert_eq!(shared.closed(), Timestamp::ZERO, "index 3 is not applied here yet");
        // A later close for a higher index, and a worthless one (lower timestamp, higher index).
        shared.offer_closed(ts(40), 5);
        shared.offer_closed(ts(30), 6);
        assert_eq!(shared.closed(), Timestamp::ZERO);
        apply(&mut sm, 3, &commit(2, 15, "b"));
        assert_eq!(shared.closed(), ts(20), "released by applying index 3");
        assert_eq!(mvcc.get(b"k", 20).unwrap().as_deref(), Some(&b"b"[..]));
        shared.offer_closed(ts(18), 2);
        assert_eq!(shared.closed(), ts(20), "never lowered");
        apply(&mut sm, 4, &Vec::new());
        apply(&mut sm, 5, &commit(3, 35, "c"));
        assert_eq!(shared.closed(), ts(40));
        assert_eq!(shared.broken_promises(), 0);
        // A leader's bug: a commit at 40 after a close at 40 was served.
        assert_eq!(
            apply(&mut sm, 6, &commit(4, 40, "d")),
            ApplyOutput::Applied { ts: ts(40) },
            "applied like everywhere else"
        );
        assert_eq!(shared.broken_promises(), 1, "and counted");
        // An older log's `Close` entry still refuses, on every replica alike.
        apply(&mut sm, 7, &Command::Close(ts(50)).encode());
        assert!(matches!(apply(&mut sm, 8, &commit(5, 45, "e")), ApplyOutput::Rejected(_)));
        assert_eq!(shared.broken_promises(), 2);
        assert_eq!(shared.closed(), ts(50));
    }

    fn commit_of(id: u8, ts: u64, key: &str, value: &str) -> Vec<u8> {
        Command::Commit(CommitRecord {
            txn_id: TxnId([id; 16]),
            ts: Timestamp::from_nanos(ts),
            writes: vec![Write {
                key: key.to_string().into(),
                value: Some(value.to_string().into()),
            }],
        })
        .encode()
    }

    /// t90 (issue 11, bug 2): the outcome of applying a log is a function of the log alone,
    /// not of how a replica's Raft loop happened to batch its entries. The log resends
    /// transaction ids across GC horizons (the earlier record counts for nothing once below
    /// the horizon) and within them (a true duplicate); it is applied in every one of the
    /// 2^(n-1) ways of cutting it into consecutive batches, and every way must give the same
    /// outputs and the same stored state.
    #[test]
    fn t90_one_log_in_every_batching_gives_one_state() {
        let log: Vec<Vec<u8>> = vec![
            commit_of(7, 10, "k", "first"),
            Command::Close(Timestamp::from_nanos(15)).encode(),
            Command::Gc(Timestamp::from_nanos(20)).encode(),
            commit_of(7, 30, "k", "again"), // X again, its record at 10 is below 20: applies
            commit_of(8, 40, "j", "one"),
            commit_of(7, 50, "k", "dup"), // X at 30 is above the horizon: a duplicate
            Command::Gc(Timestamp::from_nanos(45)).encode(),
            commit_of(8, 60, "j", "two"), // Y's record at 40 is below 45: applies
        ];
        let n = log.len();
        let mut reference = None;
        for cuts in 0u32..(1 << (n - 1)) {
            let mvcc = Arc::new(Mvcc::new(Arc::new(MemoryEngine::new())).unwrap());
            let (mut sm, _) = MvccStateMachine::new(mvcc.clone(), Vec::new()).unwrap();
            let mut outputs = Vec::new();
            let mut batch: Vec<Committed<'_>> = Vec::new();
            for (i, data) in log.iter().enumerate() {
                batch.push(Committed { index: i as u64 + 2, term: 1, data });
                if i == n - 1 || cuts & (1 << i) != 0 {
                    outputs.extend(sm.apply(&batch).unwrap());
                    batch.clear();
                }
            }
            let state = (outputs, mvcc.export(LOCAL_META).unwrap());
            match &reference {
                None => reference = Some(state),
                Some(r) => assert_eq!(&state, r, "batching {cuts:#b} diverges"),
            }
        }
        let (outputs, _) = reference.unwrap();
        assert_eq!(outputs[3], ApplyOutput::Applied { ts: Timestamp::from_nanos(30) });
        assert_eq!(outputs[5], ApplyOutput::Duplicate { ts: Timestamp::from_nanos(30) });
        assert_eq!(outputs[7], ApplyOutput::Applied { ts: Timestamp::from_nanos(60) });
    }
}
