//! `RaftLogStore` on both engines: the conformance and durability suites, failure injection, a
//! model test against a plain `Vec` log and against raft-rs's own `MemStorage`, and raft-rs's
//! `RawNode` running on the store (restart, and a follower caught up by snapshot).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use boundkv_consensus::log_store::{LogStoreError, RaftLogStore, SnapshotSource};
use boundkv_consensus::testing::{
    entries, entry, hard_state, log_store_conformance, log_store_durability, snapshot_meta, voters,
};
use boundkv_storage::testsuite::FaultyEngine;
use boundkv_storage::{Engine, MemoryEngine, SledEngine, SledOptions};
use proptest::prelude::*;
use protobuf::Message as _;
use raft::prelude::{
    ConfChange, ConfChangeType, ConfChangeV2, ConfState, Config, Entry, EntryType, HardState,
    Message, MessageType, RawNode, Snapshot, SnapshotStatus,
};
use raft::storage::MemStorage;
use raft::{Error as RaftError, GetEntriesContext, NO_LIMIT, Storage, StorageError};

fn ctx() -> GetEntriesContext {
    GetEntriesContext::empty(false)
}

/// Fresh sled engines, each in its own directory under one temporary directory.
struct SledDirs {
    base: tempfile::TempDir,
    next: AtomicU64,
}

impl SledDirs {
    fn new() -> Self {
        SledDirs { base: tempfile::tempdir().unwrap(), next: AtomicU64::new(0) }
    }

    fn engine(&self) -> Arc<SledEngine> {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let dir = self.base.path().join(n.to_string());
        Arc::new(SledEngine::open(dir, SledOptions::default()).unwrap())
    }
}

#[test]
fn memory_engine_passes_the_conformance_suite() {
    log_store_conformance(|| Arc::new(MemoryEngine::new()));
}

#[test]
fn sled_engine_passes_the_conformance_suite() {
    let dirs = SledDirs::new();
    log_store_conformance(|| dirs.engine());
}

#[test]
fn sled_engine_passes_the_durability_suite() {
    log_store_durability(|dir: &Path| {
        Arc::new(SledEngine::open(dir, SledOptions::default()).expect("open sled"))
    });
}

#[test]
fn memory_engine_passes_the_durability_suite() {
    // "Reopening" a memory engine is handing out the same one again: this checks what the store
    // reloads, not the disk.
    let engines: Mutex<HashMap<PathBuf, Arc<MemoryEngine>>> = Mutex::default();
    log_store_durability(|dir: &Path| {
        engines.lock().unwrap().entry(dir.to_path_buf()).or_default().clone()
    });
}

// ---------------------------------------------------------------------------------------------
// Failures
// ---------------------------------------------------------------------------------------------

fn assert_store_failed<E: Engine>(store: &RaftLogStore<E>, why: &str) {
    let other =
        |r: Result<(), RaftError>| matches!(r, Err(RaftError::Store(StorageError::Other(_))));
    assert!(other(store.first_index().map(drop)), "{why}: first_index fails");
    assert!(other(store.last_index().map(drop)), "{why}: last_index fails");
    assert!(other(store.term(1).map(drop)), "{why}: term fails");
    assert!(other(store.entries(1, 2, NO_LIMIT, ctx()).map(drop)), "{why}: entries fails");
    assert!(other(store.initial_state().map(drop)), "{why}: initial_state fails");
    assert!(
        matches!(store.commit(store.write()), Err(LogStoreError::Failed(_))),
        "{why}: commit fails"
    );
    assert!(matches!(store.compact(2), Err(LogStoreError::Failed(_))), "{why}: compact fails");
    let err = store.initialize(voters(&[1])).unwrap_err();
    assert!(matches!(err, LogStoreError::Failed(_)) && err.is_fatal(), "{why}: initialize fails");
}

#[test]
fn a_failed_engine_write_poisons_the_store() {
    let engine = Arc::new(FaultyEngine::new(MemoryEngine::new()));
    let store = RaftLogStore::open(engine.clone()).unwrap();
    let mut w = store.write();
    w.append(&entries(1, 3, |_| 1));
    w.set_hard_state(&hard_state(1, 1, 3));
    store.commit(w).unwrap();

    engine.set_fail_writes(true);
    let mut w = store.write();
    w.append(&[entry(4, 1)]);
    w.set_hard_state(&hard_state(1, 1, 4));
    let err = store.commit(w).expect_err("the engine refuses the write");
    assert!(matches!(err, LogStoreError::Storage(_)), "got {err}");
    assert!(err.is_fatal(), "an engine failure is fatal");
    assert_eq!(store.hard_state(), hard_state(1, 1, 3), "the failed write is not in memory");
    engine.set_fail_writes(false);
    assert_store_failed(&store, "after a failed write");
    assert_eq!(
        engine.inner().get(&boundkv_consensus::log_store::entry_key(4)).unwrap(),
        None,
        "the failed batch is not in the engine"
    );
    // A store reopened on the engine sees the last successful commit.
    let reopened = RaftLogStore::open(engine.clone()).unwrap();
    assert_eq!(reopened.last_index(), Ok(3));
    assert_eq!(reopened.hard_state(), hard_state(1, 1, 3));
}

#[test]
fn a_failed_flush_poisons_the_store() {
    let engine = Arc::new(FaultyEngine::new(MemoryEngine::new()));
    let store = RaftLogStore::open(engine.clone()).unwrap();
    store.initialize(voters(&[1])).unwrap();
    engine.fail_flushes();
    let mut w = store.write();
    w.append(&[entry(1, 1)]);
    let err = store.commit(w).expect_err("the flush fails");
    assert!(matches!(err, LogStoreError::Storage(_)) && err.is_fatal(), "got {err}");
    assert_store_failed(&store, "after a failed flush");
}

#[test]
fn a_failed_compaction_poisons_the_store() {
    let engine = Arc::new(FaultyEngine::new(MemoryEngine::new()));
    let store = RaftLogStore::open(engine.clone()).unwrap();
    let mut w = store.write();
    w.append(&entries(1, 5, |_| 1));
    w.set_hard_state(&hard_state(1, 0, 5));
    store.commit(w).unwrap();
    engine.set_fail_writes(true);
    assert!(matches!(store.compact(3), Err(LogStoreError::Storage(_))));
    assert_eq!(store.truncated(), (0, 0), "a failed compaction changes nothing in memory");
    engine.set_fail_writes(false);
    assert_store_failed(&store, "after a failed compaction");
}

#[test]
fn errors_map_to_raft_errors() {
    assert_eq!(
        RaftError::from(LogStoreError::SnapshotOutOfDate { index: 1, first_index: 2 }),
        RaftError::Store(StorageError::SnapshotOutOfDate)
    );
    let e = RaftError::from(LogStoreError::Corruption("bad".into()));
    assert!(matches!(e, RaftError::Store(StorageError::Other(_))));
    assert!(e.to_string().contains("bad"), "the cause is kept: {e}");
    for (e, fatal) in [
        (LogStoreError::Storage(boundkv_storage::Error::Io("x".into())), true),
        (LogStoreError::Corruption("x".into()), true),
        (LogStoreError::Encode("x".into()), true),
        (LogStoreError::Failed("x".into()), true),
        (LogStoreError::SnapshotOutOfDate { index: 1, first_index: 2 }, false),
        (LogStoreError::AlreadyInitialized, false),
        (LogStoreError::EmptyConfState, false),
        (LogStoreError::CommitOutOfRange { commit: 1, truncated: 2, last: 3 }, false),
        (LogStoreError::Conflict, false),
    ] {
        assert_eq!(e.is_fatal(), fatal, "{e}");
    }
}

// ---------------------------------------------------------------------------------------------
// Model tests
// ---------------------------------------------------------------------------------------------

/// One step of a random history. Numbers are interpreted relative to the current log so that
/// every step is one raft-rs could ask for.
#[derive(Clone, Debug)]
enum Op {
    /// Append `len` entries in term `hs.term + bump`, starting `back` entries before the end
    /// (never below the commit index: Raft never truncates committed entries).
    Append { back: u64, len: u64, bump: u64 },
    /// Move the commit index forward (within the log).
    Commit(u64),
    /// Compact to an index in `[first_index, commit + 1]`.
    Compact(u64),
    /// Install a snapshot `ahead` entries past the commit index, with `then` entries staged
    /// after it in the same write.
    Snapshot { ahead: u64, term: u64, then: u64 },
    /// A snapshot at or below the truncation point: out of date, changes nothing.
    OldSnapshot(u64),
    /// Reopen the store on the same engine.
    Reopen,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        5 => (0..6u64, 1..5u64, 0..2u64)
            .prop_map(|(back, len, bump)| Op::Append { back, len, bump }),
        3 => any::<u64>().prop_map(Op::Commit),
        2 => any::<u64>().prop_map(Op::Compact),
        1 => (0..8u64, 1..12u64, 0..3u64)
            .prop_map(|(ahead, term, then)| Op::Snapshot { ahead, term, then }),
        1 => any::<u64>().prop_map(Op::OldSnapshot),
        1 => Just(Op::Reopen),
    ]
}

/// An entry whose size varies with its index.
fn data_entry(index: u64, term: u64) -> Entry {
    let mut e = entry(index, term);
    e.data = vec![index as u8; (index * 7 % 13) as usize].into();
    e
}

/// The obvious log: a truncation point and a vector.
#[derive(Clone, Debug, Default)]
struct Model {
    truncated: (u64, u64),
    entries: Vec<Entry>,
    hs: HardState,
    cs: ConfState,
}

impl Model {
    fn first(&self) -> u64 {
        self.truncated.0 + 1
    }

    fn last(&self) -> u64 {
        self.truncated.0 + self.entries.len() as u64
    }

    fn term(&self, idx: u64) -> Result<u64, RaftError> {
        if idx == self.truncated.0 {
            Ok(self.truncated.1)
        } else if idx < self.first() {
            Err(RaftError::Store(StorageError::Compacted))
        } else if idx > self.last() {
            Err(RaftError::Store(StorageError::Unavailable))
        } else {
            Ok(self.entries[(idx - self.first()) as usize].term)
        }
    }
}

/// Runs `ops` against a store on `engine` and the model, comparing after every step.
fn run_model<E: Engine>(engine: Arc<E>, ops: Vec<Op>) -> Result<(), TestCaseError> {
    let mut store = RaftLogStore::open(engine.clone()).unwrap();
    let mut m = Model::default();
    for (step, op) in ops.into_iter().enumerate() {
        match op {
            Op::Append { back, len, bump } => {
                let (commit, last) = (m.hs.commit, m.last());
                let start = last + 1 - back % (last - commit + 1);
                let term = m.hs.term + bump;
                let new: Vec<Entry> = (start..start + len).map(|i| data_entry(i, term)).collect();
                m.entries.truncate((start - m.first()) as usize);
                m.entries.extend(new.iter().cloned());
                m.hs.term = term;
                let mut w = store.write();
                w.append(&new);
                w.set_hard_state(&m.hs);
                store.commit(w).unwrap();
            }
            Op::Commit(k) => {
                let (commit, last) = (m.hs.commit, m.last());
                m.hs.commit = commit + k % (last - commit + 1);
                let mut w = store.write();
                w.set_hard_state(&m.hs);
                store.commit(w).unwrap();
            }
            Op::Compact(k) => {
                let first = m.first();
                let to = first + k % (m.hs.commit + 2 - first);
                if to > first {
                    let term = m.term(to - 1).unwrap();
                    m.entries.drain(..(to - first) as usize);
                    m.truncated = (to - 1, term);
                }
                store.compact(to).unwrap();
            }
            Op::Snapshot { ahead, term, then } => {
                let index = m.hs.commit + 1 + ahead;
                let meta = snapshot_meta(index, term, &[index % 3 + 1]);
                m.entries.clear();
                m.truncated = (index, term);
                m.hs.term = m.hs.term.max(term);
                m.hs.commit = index;
                m.cs = meta.get_conf_state().clone();
                let after: Vec<Entry> =
                    (index + 1..=index + then).map(|i| data_entry(i, m.hs.term)).collect();
                m.entries.extend(after.iter().cloned());
                let mut w = store.write();
                w.apply_snapshot(&meta);
                w.append(&after);
                store.commit(w).unwrap();
            }
            Op::OldSnapshot(k) => {
                let index = k % (m.truncated.0 + 1);
                let mut w = store.write();
                w.apply_snapshot(&snapshot_meta(index, 1, &[9]));
                let got = store.commit(w);
                prop_assert!(
                    matches!(got, Err(LogStoreError::SnapshotOutOfDate { .. })),
                    "step {}: a snapshot at {} with first index {}: {:?}",
                    step,
                    index,
                    m.first(),
                    got
                );
            }
            Op::Reopen => {
                drop(store);
                store = RaftLogStore::open(engine.clone()).unwrap();
            }
        }
        check_against_model(&store, &m, step)?;
    }
    Ok(())
}

fn check_against_model<E: Engine>(
    store: &RaftLogStore<E>,
    m: &Model,
    step: usize,
) -> Result<(), TestCaseError> {
    let (first, last) = (m.first(), m.last());
    prop_assert_eq!(store.first_index(), Ok(first), "step {}: first_index", step);
    prop_assert_eq!(store.last_index(), Ok(last), "step {}: last_index", step);
    prop_assert_eq!(store.truncated(), m.truncated, "step {}: truncated", step);
    prop_assert_eq!(store.hard_state(), m.hs.clone(), "step {}: hard state", step);
    prop_assert_eq!(store.conf_state(), m.cs.clone(), "step {}: conf state", step);
    for idx in m.truncated.0.saturating_sub(2)..=last + 2 {
        prop_assert_eq!(store.term(idx), m.term(idx), "step {}: term({})", step, idx);
    }
    prop_assert_eq!(
        store.entries(first, last + 1, NO_LIMIT, ctx()),
        Ok(m.entries.clone()),
        "step {}: every entry",
        step
    );
    if first > 1 {
        prop_assert_eq!(
            store.entries(first - 1, last + 1, NO_LIMIT, ctx()),
            Err(RaftError::Store(StorageError::Compacted)),
            "step {}: entries from first_index - 1",
            step
        );
    }
    if !m.entries.is_empty() {
        for max in [0, 20, 45, 100] {
            let mut want = m.entries.clone();
            raft::util::limit_size(&mut want, Some(max));
            prop_assert_eq!(
                store.entries(first, last + 1, max, ctx()),
                Ok(want),
                "step {}: entries within {} bytes",
                step,
                max
            );
        }
        let mid = first + (last - first) / 2;
        prop_assert_eq!(
            store.entries(mid, last + 1, NO_LIMIT, ctx()),
            Ok(m.entries[(mid - first) as usize..].to_vec()),
            "step {}: entries from the middle",
            step
        );
    }
    Ok(())
}

/// The same history against raft-rs's `MemStorage`, where its semantics are the reference.
/// Where they are not, the difference is neither compared nor generated: after a compaction it
/// forgets the term at `first_index - 1` but still answers its last snapshot's term (at an index
/// that may now be far below the log), and compacting every entry moves its indexes backwards.
fn run_against_mem_storage(ops: Vec<Op>) -> Result<(), TestCaseError> {
    let store = RaftLogStore::open(Arc::new(MemoryEngine::new())).unwrap();
    let mem = MemStorage::new();
    let mut mem_snapshot_index = 0;
    for (step, op) in ops.into_iter().enumerate() {
        let (first, last) = (store.first_index().unwrap(), store.last_index().unwrap());
        let mut hs = store.hard_state();
        match op {
            Op::Append { back, len, bump } => {
                let start = last + 1 - back % (last - hs.commit + 1);
                hs.term += bump;
                let new: Vec<Entry> =
                    (start..start + len).map(|i| data_entry(i, hs.term)).collect();
                let mut w = store.write();
                w.append(&new);
                w.set_hard_state(&hs);
                store.commit(w).unwrap();
                mem.wl().append(&new).unwrap();
                mem.wl().set_hardstate(hs);
            }
            Op::Commit(k) => {
                hs.commit += k % (last - hs.commit + 1);
                let mut w = store.write();
                w.set_hard_state(&hs);
                store.commit(w).unwrap();
                mem.wl().set_hardstate(hs);
            }
            Op::Compact(k) => {
                let hi = (hs.commit + 1).min(last);
                if hi > first {
                    let to = first + k % (hi - first + 1);
                    store.compact(to).unwrap();
                    mem.wl().compact(to).unwrap();
                }
            }
            Op::Snapshot { ahead, term, then } => {
                let index = hs.commit + 1 + ahead;
                let mut snap = Snapshot::default();
                snap.set_metadata(snapshot_meta(index, term, &[index % 3 + 1]));
                let mut w = store.write();
                w.apply_snapshot(snap.get_metadata());
                store.commit(w).unwrap();
                mem.wl().apply_snapshot(snap).unwrap();
                mem_snapshot_index = index;
                let hs = store.hard_state();
                let after: Vec<Entry> =
                    (index + 1..=index + then).map(|i| data_entry(i, hs.term)).collect();
                let mut w = store.write();
                w.append(&after);
                store.commit(w).unwrap();
                mem.wl().append(&after).unwrap();
            }
            Op::OldSnapshot(k) => {
                let index = k % first;
                let mut snap = Snapshot::default();
                snap.set_metadata(snapshot_meta(index, 1, &[9]));
                let mut w = store.write();
                w.apply_snapshot(snap.get_metadata());
                prop_assert!(store.commit(w).is_err(), "step {}: out of date here", step);
                prop_assert!(
                    mem.wl().apply_snapshot(snap).is_err(),
                    "step {}: and in MemStorage",
                    step
                );
            }
            Op::Reopen => {}
        }
        let (first, last) = (store.first_index().unwrap(), store.last_index().unwrap());
        prop_assert_eq!(mem.first_index(), Ok(first), "step {}: first_index", step);
        prop_assert_eq!(mem.last_index(), Ok(last), "step {}: last_index", step);
        let below = (0..first.saturating_sub(1)).filter(|&i| i != mem_snapshot_index);
        for idx in (first..=last + 2).chain(below) {
            prop_assert_eq!(store.term(idx), mem.term(idx), "step {}: term({})", step, idx);
        }
        prop_assert_eq!(
            store.entries(first, last + 1, NO_LIMIT, ctx()),
            if first > last { Ok(vec![]) } else { mem.entries(first, last + 1, NO_LIMIT, ctx()) },
            "step {}: entries",
            step
        );
        let (ours, theirs) = (store.initial_state().unwrap(), mem.initial_state().unwrap());
        prop_assert_eq!(ours.hard_state, theirs.hard_state, "step {}: hard state", step);
        prop_assert_eq!(ours.conf_state, theirs.conf_state, "step {}: conf state", step);
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]
    #[test]
    fn memory_store_matches_the_model(ops in prop::collection::vec(op(), 1..60)) {
        run_model(Arc::new(MemoryEngine::new()), ops)?;
    }

    #[test]
    fn memory_store_matches_raft_mem_storage(ops in prop::collection::vec(op(), 1..60)) {
        run_against_mem_storage(ops)?;
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(16))]
    #[test]
    fn sled_store_matches_the_model(ops in prop::collection::vec(op(), 1..60)) {
        let dir = tempfile::tempdir().unwrap();
        let engine = Arc::new(SledEngine::open(dir.path(), SledOptions::default()).unwrap());
        run_model(engine, ops)?;
    }
}

// ---------------------------------------------------------------------------------------------
// raft-rs on the store
// ---------------------------------------------------------------------------------------------

/// A state machine: the concatenated data of every applied normal entry.
#[derive(Default)]
struct Machine {
    applied: u64,
    data: Vec<u8>,
}

struct MachineSource(Arc<Mutex<Machine>>);

impl SnapshotSource for MachineSource {
    fn snapshot_data(&self) -> boundkv_storage::Result<(u64, Vec<u8>)> {
        let m = self.0.lock().unwrap();
        Ok((m.applied, m.data.clone()))
    }
}

struct TestNode<E: Engine> {
    raw: RawNode<RaftLogStore<E>>,
    machine: Arc<Mutex<Machine>>,
}

fn logger() -> slog::Logger {
    slog::Logger::root(slog::Discard, slog::o!())
}

impl<E: Engine> TestNode<E> {
    fn start(id: u64, store: RaftLogStore<E>, machine: Arc<Mutex<Machine>>) -> Self {
        store.set_snapshot_source(Arc::new(MachineSource(machine.clone())));
        let applied = machine.lock().unwrap().applied;
        let config =
            Config { id, election_tick: 10, heartbeat_tick: 1, applied, ..Config::default() };
        config.validate().unwrap();
        let raw = RawNode::new(&config, store, &logger()).unwrap();
        TestNode { raw, machine }
    }

    fn store(&self) -> RaftLogStore<E> {
        self.raw.store().clone()
    }

    fn apply(&mut self, committed: Vec<Entry>) {
        for e in committed {
            match e.get_entry_type() {
                EntryType::EntryNormal => {
                    self.machine.lock().unwrap().data.extend_from_slice(e.get_data())
                }
                EntryType::EntryConfChange | EntryType::EntryConfChangeV2 => {
                    let cs = if e.get_entry_type() == EntryType::EntryConfChange {
                        let cc = ConfChange::parse_from_bytes(e.get_data()).unwrap();
                        self.raw.apply_conf_change(&cc).unwrap()
                    } else {
                        let cc = ConfChangeV2::parse_from_bytes(e.get_data()).unwrap();
                        self.raw.apply_conf_change(&cc).unwrap()
                    };
                    let store = self.store();
                    let mut w = store.write();
                    w.set_conf_state(&cs);
                    store.commit(w).unwrap();
                }
            }
            self.machine.lock().unwrap().applied = e.index;
        }
    }

    /// Handles one Ready the way `consensus::node` does; returns the messages to send.
    fn on_ready(&mut self) -> Vec<Message> {
        let mut out = Vec::new();
        if !self.raw.has_ready() {
            return out;
        }
        let mut rd = self.raw.ready();
        out.extend(rd.take_messages());
        let snapshot = rd.snapshot().clone();
        if !snapshot.is_empty() {
            let mut m = self.machine.lock().unwrap();
            m.applied = snapshot.get_metadata().index;
            m.data = snapshot.get_data().to_vec();
        }
        self.apply(rd.take_committed_entries());
        let store = self.store();
        let mut w = store.write();
        if !snapshot.is_empty() {
            w.apply_snapshot(snapshot.get_metadata());
        }
        w.append(rd.entries());
        if let Some(hs) = rd.hs() {
            w.set_hard_state(hs);
        }
        store.commit(w).unwrap();
        out.extend(rd.take_persisted_messages());
        let mut light = self.raw.advance(rd);
        if let Some(commit) = light.commit_index() {
            let mut hs = store.hard_state();
            hs.commit = commit;
            let mut w = store.write();
            w.set_hard_state(&hs);
            store.commit(w).unwrap();
        }
        out.extend(light.take_messages());
        self.apply(light.take_committed_entries());
        self.raw.advance_apply();
        out
    }
}

#[test]
fn raft_runs_and_restarts_on_the_store() {
    let engine = Arc::new(MemoryEngine::new());
    let machine = Arc::new(Mutex::new(Machine::default()));
    let store = RaftLogStore::open(engine.clone()).unwrap();
    store.initialize(voters(&[1])).unwrap();
    let mut node = TestNode::start(1, store, machine.clone());
    node.raw.campaign().unwrap();
    node.on_ready();
    assert!(node.raw.raft.state == raft::StateRole::Leader, "a single voter elects itself");
    for b in b"hello" {
        node.raw.propose(vec![], vec![*b]).unwrap();
        node.on_ready();
    }
    assert_eq!(machine.lock().unwrap().data, b"hello");
    let last = node.store().last_index().unwrap();
    assert_eq!(last, 6, "the leader's empty entry and five proposals");
    node.store().compact(4).unwrap();
    drop(node);

    // Restart from the engine: raft-rs reads its state back and carries on.
    let store = RaftLogStore::open(engine.clone()).unwrap();
    assert_eq!(store.hard_state().commit, 6);
    let mut node = TestNode::start(1, store, machine.clone());
    assert_eq!(node.raw.raft.raft_log.committed, 6, "the commit index is restored");
    assert_eq!(node.raw.raft.raft_log.last_index(), 6);
    node.raw.campaign().unwrap();
    node.on_ready();
    node.raw.propose(vec![], b"!".to_vec()).unwrap();
    node.on_ready();
    assert_eq!(machine.lock().unwrap().data, b"hello!");
    assert_eq!(node.store().first_index(), Ok(4));
}

#[test]
fn raft_catches_a_new_member_up_by_snapshot() {
    let new_node = |id: u64, init: Option<ConfState>| {
        let store = RaftLogStore::open(Arc::new(MemoryEngine::new())).unwrap();
        if let Some(cs) = init {
            store.initialize(cs).unwrap();
        }
        TestNode::start(id, store, Arc::new(Mutex::new(Machine::default())))
    };
    let mut n1 = new_node(1, Some(voters(&[1])));
    let mut n2 = new_node(2, None);
    assert!(!n2.store().is_initialized());

    n1.raw.campaign().unwrap();
    n1.on_ready();
    for b in b"abcdefghij" {
        n1.raw.propose(vec![], vec![*b]).unwrap();
        n1.on_ready();
    }
    n1.store().compact(8).unwrap();

    let mut cc = ConfChange::default();
    cc.set_change_type(ConfChangeType::AddLearnerNode);
    cc.node_id = 2;
    n1.raw.propose_conf_change(vec![], cc).unwrap();

    let pump = |n1: &mut TestNode<MemoryEngine>, n2: &mut TestNode<MemoryEngine>| {
        for _ in 0..50 {
            n1.raw.tick();
            let mut msgs = n1.on_ready();
            msgs.extend(n2.on_ready());
            if msgs.is_empty() && !n1.raw.has_ready() && !n2.raw.has_ready() {
                continue;
            }
            for m in msgs {
                let snapshot = m.get_msg_type() == MessageType::MsgSnapshot;
                match m.to {
                    1 => n1.raw.step(m).unwrap(),
                    2 => n2.raw.step(m).unwrap(),
                    to => panic!("a message to {to}"),
                }
                if snapshot {
                    n1.raw.report_snapshot(2, SnapshotStatus::Finish);
                }
            }
        }
    };
    pump(&mut n1, &mut n2);

    let s2 = n2.store();
    assert!(s2.is_initialized(), "the snapshot initialized the new member");
    let (snap_index, _) = s2.truncated();
    assert!(snap_index >= 8, "the new member was caught up by a snapshot (at {snap_index})");
    assert_eq!(s2.conf_state(), n1.store().conf_state(), "with the leader's configuration");
    assert_eq!(n2.machine.lock().unwrap().data, b"abcdefghij", "and its state");

    for b in b"kl" {
        n1.raw.propose(vec![], vec![*b]).unwrap();
    }
    pump(&mut n1, &mut n2);
    assert_eq!(n2.machine.lock().unwrap().data, b"abcdefghijkl", "then by appends");
    assert_eq!(n2.store().last_index(), n1.store().last_index());
    assert_eq!(n2.store().term(snap_index), n1.store().term(snap_index));
}

/// A commit index written without a sync and lost in a crash: on restart the state machine's
/// applied index is ahead of it; `repair_commit` raises it (raft-rs would refuse to start with
/// `applied > commit`), never past the log, and never lowers it.
#[test]
fn repair_commit_raises_a_lost_commit_index_to_the_applied_index() {
    let store = RaftLogStore::open(Arc::new(MemoryEngine::new())).unwrap();
    store.initialize(voters(&[1])).unwrap();
    let mut w = store.write();
    w.append(&entries(1, 5, |_| 1));
    w.set_hard_state(&hard_state(1, 1, 2));
    store.commit(w).unwrap();
    assert_eq!(store.repair_commit(2), Ok(false), "nothing to repair");
    assert_eq!(store.repair_commit(1), Ok(false), "never lowered");
    assert_eq!(store.repair_commit(4), Ok(true));
    assert_eq!(store.hard_state().commit, 4);
    assert!(matches!(store.repair_commit(9), Err(LogStoreError::Corruption(_))), "past the log");
    assert_eq!(store.hard_state().commit, 4);
}
