//! The conformance suite of [`RaftLogStore`] on an engine, and helpers for other crates' tests.
//!
//! ```ignore
//! boundkv_consensus::testing::log_store_conformance(|| Arc::new(MemoryEngine::new()));
//! boundkv_consensus::testing::log_store_durability(|dir| Arc::new(open_sled(dir)));
//! ```
//!
//! Each check panics with a message naming the rule it found broken. Most mirror raft-rs's own
//! `MemStorage` tests (`raft-0.7.0/src/storage.rs`): where `MemStorage` sets its entry vector
//! directly (entries 3, 4, 5 with nothing before them), these build the same log from a snapshot
//! at (2, 2) and an append, so `term(2)` is 2 here rather than `Compacted` (see the
//! `log_store` module docs for the deliberate differences).

use std::ops::Bound;
use std::panic::{self, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use boundkv_storage::{Engine, WriteBatch};
use protobuf::Message as _;
use raft::prelude::{ConfState, Entry, EntryType, HardState, SnapshotMetadata};
use raft::{Error as RaftError, GetEntriesContext, NO_LIMIT, Storage, StorageError};

use crate::log_store::{
    CONF_STATE_KEY, HARD_STATE_KEY, LogStoreError, RaftLogStore, SnapshotSource, TRUNCATED_KEY,
    entry_key,
};

/// An entry at `index` in `term`, with no data.
pub fn entry(index: u64, term: u64) -> Entry {
    Entry { index, term, ..Entry::default() }
}

/// Entries `lo..=hi`, entry `i` in term `term(i)`.
pub fn entries(lo: u64, hi: u64, term: impl Fn(u64) -> u64) -> Vec<Entry> {
    (lo..=hi).map(|i| entry(i, term(i))).collect()
}

/// A conf state with these voters.
pub fn voters(ids: &[u64]) -> ConfState {
    ConfState { voters: ids.to_vec(), ..ConfState::default() }
}

/// A hard state.
pub fn hard_state(term: u64, vote: u64, commit: u64) -> HardState {
    HardState { term, vote, commit, ..HardState::default() }
}

/// Snapshot metadata at (`index`, `term`) with these voters.
pub fn snapshot_meta(index: u64, term: u64, ids: &[u64]) -> SnapshotMetadata {
    SnapshotMetadata { index, term, conf_state: Some(voters(ids)).into(), ..Default::default() }
}

/// A [`SnapshotSource`] whose answer a test sets.
pub struct TestSnapshotSource {
    answer: Mutex<boundkv_storage::Result<(u64, Vec<u8>)>>,
}

impl TestSnapshotSource {
    /// A source at applied index `applied` with `data`.
    pub fn new(applied: u64, data: &[u8]) -> Arc<Self> {
        Arc::new(TestSnapshotSource { answer: Mutex::new(Ok((applied, data.to_vec()))) })
    }

    /// From now on, answers `applied` and `data`.
    pub fn set(&self, applied: u64, data: &[u8]) {
        *self.answer.lock().unwrap_or_else(|e| e.into_inner()) = Ok((applied, data.to_vec()));
    }

    /// From now on, fails as an engine would with an I/O error `why`.
    pub fn fail(&self, why: &str) {
        *self.answer.lock().unwrap_or_else(|e| e.into_inner()) =
            Err(boundkv_storage::Error::Io(why.to_string()));
    }
}

impl SnapshotSource for TestSnapshotSource {
    fn snapshot_data(&self) -> boundkv_storage::Result<(u64, Vec<u8>)> {
        self.answer.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// Every rule of [`RaftLogStore`] that does not involve reopening the engine from disk.
/// `new_engine` must return a fresh, empty engine on each call.
pub fn log_store_conformance<E: Engine>(new_engine: impl Fn() -> Arc<E>) {
    let fresh = || Fresh { engine: new_engine() };
    a_new_log_is_empty(fresh());
    term_answers_from_first_index_minus_one_to_last_index(fresh());
    entries_returns_ranges_within_max_size(fresh());
    entries_panics_past_last_index_plus_one(fresh());
    first_and_last_index_follow_the_log(fresh());
    append_truncates_conflicts_and_extends(&fresh);
    append_panics_on_gaps_and_compacted_entries(&fresh);
    compact_discards_entries_and_keeps_the_term(&fresh);
    compact_twice_and_past_the_log(fresh());
    compact_never_passes_the_commit_index(fresh());
    apply_snapshot_resets_the_log(fresh());
    apply_snapshot_out_of_date_writes_nothing(fresh());
    snapshot_comes_from_the_source(fresh());
    initialize_bootstraps_once(fresh());
    staged_changes_become_visible_together(fresh());
    a_snapshot_entries_and_hard_state_commit_as_one_write(fresh());
    commit_index_stays_within_the_log(fresh());
    stale_writes_are_refused(fresh(), fresh());
    entries_round_trip_every_field(fresh());
    keys_follow_the_layout_and_nothing_else_is_touched(fresh());
    open_rejects_corrupt_state(&fresh);
    readers_see_a_consistent_log_while_it_changes(fresh());
}

/// What was committed is there after the engine is closed and reopened from the same directory:
/// entries, hard state, conf state, the truncation point after a compaction and after a
/// snapshot, and a conflict truncation. `open_engine` opens (or creates) an engine in a
/// directory; the suite drops every handle to it before opening it again.
pub fn log_store_durability<E: Engine>(open_engine: impl Fn(&Path) -> Arc<E>) {
    let dir = TempDir::new("log-store-durability");
    let open = || {
        let engine = open_engine(dir.path());
        RaftLogStore::open(engine).expect("reopen the log store")
    };
    let term = |i: u64| i / 3 + 1;

    // 1. Bootstrap, entries + hard state + conf state in one write, then a compaction.
    {
        let store = open();
        store.initialize(voters(&[1, 2, 3])).unwrap();
        let mut w = store.write();
        w.append(&entries(1, 10, term));
        w.set_hard_state(&hard_state(3, 2, 8));
        w.set_conf_state(&voters(&[1, 2, 3, 4]));
        store.commit(w).unwrap();
        store.compact(5).unwrap();
    }
    {
        let store = open();
        assert!(store.is_initialized(), "durability: the conf state survives reopening");
        assert_eq!(store.conf_state(), voters(&[1, 2, 3, 4]), "durability: the last conf state");
        assert_eq!(store.hard_state(), hard_state(3, 2, 8), "durability: the hard state");
        assert_eq!(store.truncated(), (4, term(4)), "durability: the truncation point");
        assert_eq!(store.first_index(), Ok(5), "durability: first index after compaction");
        assert_eq!(store.last_index(), Ok(10), "durability: last index");
        assert_eq!(store.term(4), Ok(term(4)), "durability: term(first_index - 1)");
        assert_eq!(store.term(3), Err(compacted()), "durability: compacted stays compacted");
        assert_eq!(
            store.entries(5, 11, NO_LIMIT, ctx()),
            Ok(entries(5, 10, term)),
            "durability: the entries"
        );
        let initial = store.initial_state().unwrap();
        assert_eq!(initial.hard_state, hard_state(3, 2, 8), "durability: initial_state");
        assert_eq!(initial.conf_state, voters(&[1, 2, 3, 4]), "durability: initial_state");

        // 2. A snapshot reset with a hard state, in one write.
        let mut w = store.write();
        w.apply_snapshot(&snapshot_meta(20, 5, &[1, 2]));
        w.set_hard_state(&hard_state(6, 1, 20));
        store.commit(w).unwrap();
    }
    {
        let store = open();
        assert_eq!(store.truncated(), (20, 5), "durability: the truncation point of a snapshot");
        assert_eq!(store.first_index(), Ok(21), "durability: first index after a snapshot");
        assert_eq!(store.last_index(), Ok(20), "durability: last index after a snapshot");
        assert_eq!(store.term(20), Ok(5), "durability: term of the snapshot index");
        assert_eq!(store.term(10), Err(compacted()), "durability: old entries are gone");
        assert_eq!(store.entries(21, 21, NO_LIMIT, ctx()), Ok(vec![]));
        assert_eq!(store.hard_state(), hard_state(6, 1, 20), "durability: the hard state");
        assert_eq!(store.conf_state(), voters(&[1, 2]), "durability: the snapshot's conf state");

        // 3. More entries, then a compaction of everything but the last.
        let mut w = store.write();
        w.append(&entries(21, 25, |_| 6));
        w.set_hard_state(&hard_state(6, 1, 22));
        store.commit(w).unwrap();
        store.compact(23).unwrap();
        // 4. A conflict truncation above the commit index.
        let mut w = store.write();
        w.append(&[entry(24, 7)]);
        w.set_hard_state(&hard_state(7, 0, 22));
        store.commit(w).unwrap();
    }
    {
        let store = open();
        assert_eq!(store.truncated(), (22, 6), "durability: the second truncation point");
        assert_eq!(store.first_index(), Ok(23));
        assert_eq!(store.last_index(), Ok(24), "durability: the truncated suffix stays gone");
        assert_eq!(store.term(24), Ok(7), "durability: the conflicting entry was replaced");
        assert_eq!(store.term(25), Err(unavailable()), "durability: entry 25 was removed");
        assert_eq!(
            store.entries(23, 25, NO_LIMIT, ctx()),
            Ok(vec![entry(23, 6), entry(24, 7)]),
            "durability: the entries after a conflict truncation"
        );
        assert_eq!(store.hard_state(), hard_state(7, 0, 22));
    }
}

/// A fresh engine, and stores opened on it.
struct Fresh<E: Engine> {
    engine: Arc<E>,
}

impl<E: Engine> Fresh<E> {
    /// A store on the engine (as a node restarting on it would open it).
    fn open(&self) -> RaftLogStore<E> {
        RaftLogStore::open(self.engine.clone()).expect("open the log store")
    }

    /// A store whose log is truncated at `truncated` and holds `ents`, with the hard state's
    /// commit at `commit`.
    fn with_log(&self, truncated: (u64, u64), ents: &[Entry], commit: u64) -> RaftLogStore<E> {
        let store = self.open();
        let mut w = store.write();
        if truncated != (0, 0) {
            w.apply_snapshot(&snapshot_meta(truncated.0, truncated.1, &[1]));
        }
        w.append(ents);
        let term = ents.last().map_or(truncated.1, |e| e.term);
        w.set_hard_state(&hard_state(term, 0, commit));
        store.commit(w).expect("set up a log");
        store
    }
}

fn ctx() -> GetEntriesContext {
    GetEntriesContext::empty(false)
}

fn compacted() -> RaftError {
    RaftError::Store(StorageError::Compacted)
}

fn unavailable() -> RaftError {
    RaftError::Store(StorageError::Unavailable)
}

fn snapshot_unavailable() -> RaftError {
    RaftError::Store(StorageError::SnapshotTemporarilyUnavailable)
}

/// Runs `f`, which must panic.
fn expect_panic(rule: &str, f: impl FnOnce()) {
    if panic::catch_unwind(AssertUnwindSafe(f)).is_ok() {
        panic!("{rule}: expected a panic");
    }
}

/// Appends `ents` and moves the commit index to the last of them, in one write.
fn append_committed<E: Engine>(store: &RaftLogStore<E>, ents: &[Entry]) {
    let mut w = store.write();
    w.append(ents);
    let last = ents.last().expect("entries");
    let mut hs = store.hard_state();
    hs.term = hs.term.max(last.term);
    hs.commit = last.index;
    w.set_hard_state(&hs);
    store.commit(w).expect("append");
}

/// Every stored entry, read through `Storage::entries`.
fn all_entries<E: Engine>(store: &RaftLogStore<E>) -> Vec<Entry> {
    let (first, last) = (store.first_index().unwrap(), store.last_index().unwrap());
    store.entries(first, last + 1, NO_LIMIT, ctx()).expect("read every entry")
}

fn a_new_log_is_empty<E: Engine>(fresh: Fresh<E>) {
    let store = fresh.open();
    let rule = "a new log is empty, truncated at (0, 0)";
    assert_eq!(store.first_index(), Ok(1), "{rule}: first_index");
    assert_eq!(store.last_index(), Ok(0), "{rule}: last_index");
    assert_eq!(store.term(0), Ok(0), "{rule}: term(0)");
    assert_eq!(store.term(1), Err(unavailable()), "{rule}: term(1)");
    assert_eq!(store.truncated(), (0, 0), "{rule}: truncated");
    assert_eq!(store.entries(1, 1, NO_LIMIT, ctx()), Ok(vec![]), "{rule}: entries(1, 1)");
    assert_eq!(store.entries(0, 1, NO_LIMIT, ctx()), Err(compacted()), "{rule}: entries(0, 1)");
    assert!(!store.is_initialized(), "{rule}: not initialized");
    let initial = store.initial_state().unwrap();
    assert_eq!(initial.hard_state, HardState::default(), "{rule}: initial hard state");
    assert_eq!(initial.conf_state, ConfState::default(), "{rule}: initial conf state");
    assert!(!initial.initialized(), "{rule}: raft-rs sees it uninitialized");
    assert_eq!(
        store.snapshot(0, 2),
        Err(snapshot_unavailable()),
        "snapshot without a source: SnapshotTemporarilyUnavailable"
    );
    store.commit(store.write()).expect("an empty write commits");
    assert_eq!(store.last_index(), Ok(0), "an empty write changes nothing");
}

fn term_answers_from_first_index_minus_one_to_last_index<E: Engine>(fresh: Fresh<E>) {
    // MemStorage's test_storage_term.
    let store = fresh.with_log((2, 2), &entries(3, 5, |i| i), 4);
    let rule = "term: Compacted below first_index - 1, Unavailable past last_index";
    for (idx, want) in [
        (0, Err(compacted())),
        (1, Err(compacted())),
        (2, Ok(2)),
        (3, Ok(3)),
        (4, Ok(4)),
        (5, Ok(5)),
        (6, Err(unavailable())),
        (u64::MAX, Err(unavailable())),
    ] {
        assert_eq!(store.term(idx), want, "{rule}: term({idx})");
    }
    store.compact(4).unwrap();
    assert_eq!(store.term(3), Ok(3), "term(first_index - 1) is kept after compaction");
    assert_eq!(store.term(2), Err(compacted()), "{rule}: after compaction");
    assert_eq!(store.term(4), Ok(4), "{rule}: after compaction");
}

fn entries_returns_ranges_within_max_size<E: Engine>(fresh: Fresh<E>) {
    // MemStorage's test_storage_entries.
    let ents = entries(3, 6, |i| i);
    let store = fresh.with_log((2, 2), &ents, 2);
    let size = |i: usize| u64::from(ents[i].compute_size());
    let rule = "entries: [low, high), at least one, within max_size (raft::util::limit_size)";
    let cases: Vec<(u64, u64, u64, raft::Result<Vec<Entry>>)> = vec![
        (2, 6, NO_LIMIT, Err(compacted())),
        (3, 4, NO_LIMIT, Ok(vec![entry(3, 3)])),
        (4, 5, NO_LIMIT, Ok(vec![entry(4, 4)])),
        (4, 6, NO_LIMIT, Ok(vec![entry(4, 4), entry(5, 5)])),
        (4, 7, NO_LIMIT, Ok(vec![entry(4, 4), entry(5, 5), entry(6, 6)])),
        (4, 7, 0, Ok(vec![entry(4, 4)])),
        (4, 7, size(1) + size(2), Ok(vec![entry(4, 4), entry(5, 5)])),
        (4, 7, size(1) + size(2) + size(3) / 2, Ok(vec![entry(4, 4), entry(5, 5)])),
        (4, 7, size(1) + size(2) + size(3) - 1, Ok(vec![entry(4, 4), entry(5, 5)])),
        (4, 7, size(1) + size(2) + size(3), Ok(vec![entry(4, 4), entry(5, 5), entry(6, 6)])),
        (5, 5, NO_LIMIT, Ok(vec![])),
        (7, 7, NO_LIMIT, Ok(vec![])),
    ];
    for (i, (lo, hi, max, want)) in cases.into_iter().enumerate() {
        let got = store.entries(lo, hi, max, ctx());
        assert_eq!(got, want, "{rule}: case {i}: entries({lo}, {hi}, {max})");
    }
    assert_eq!(
        store.entries(3, 7, None, ctx()),
        Ok(ents.clone()),
        "{rule}: max_size None is no limit"
    );

    // Larger entries: the limit is on the encoded sizes, and always lets one through.
    let big: Vec<Entry> = (7..=10)
        .map(|i| {
            let mut e = entry(i, 7);
            e.data = vec![i as u8; 1000].into();
            e
        })
        .collect();
    append_committed(&store, &big);
    let one = u64::from(big[0].compute_size());
    assert_eq!(store.entries(7, 11, 1, ctx()), Ok(big[..1].to_vec()), "{rule}: one at least");
    assert_eq!(store.entries(7, 11, 2 * one, ctx()), Ok(big[..2].to_vec()), "{rule}: two fit");
    assert_eq!(store.entries(7, 11, 3 * one - 1, ctx()), Ok(big[..2].to_vec()), "{rule}: not 3");
    assert_eq!(store.entries(7, 11, 4 * one, ctx()), Ok(big.clone()), "{rule}: all fit");
}

fn entries_panics_past_last_index_plus_one<E: Engine>(fresh: Fresh<E>) {
    let store = fresh.with_log((2, 2), &entries(3, 5, |i| i), 2);
    expect_panic("entries: high > last_index + 1 panics (as MemStorage)", || {
        let _ = store.entries(3, 7, NO_LIMIT, ctx());
    });
    assert_eq!(
        store.entries(1, 7, NO_LIMIT, ctx()),
        Err(compacted()),
        "entries: Compacted is checked before the upper bound (as MemStorage)"
    );
    assert_eq!(store.entries(3, 6, NO_LIMIT, ctx()).map(|e| e.len()), Ok(3));
}

fn first_and_last_index_follow_the_log<E: Engine>(fresh: Fresh<E>) {
    let store = fresh.open();
    let rule = "first_index = truncated + 1; last_index = last entry or truncated";
    let check = |first: u64, last: u64, when: &str| {
        assert_eq!(store.first_index(), Ok(first), "{rule}: first_index {when}");
        assert_eq!(store.last_index(), Ok(last), "{rule}: last_index {when}");
    };
    check(1, 0, "on an empty log");
    append_committed(&store, &entries(1, 5, |_| 1));
    check(1, 5, "after appending 1..=5");
    append_committed(&store, &[entry(6, 2)]);
    check(1, 6, "after appending 6");
    store.compact(3).unwrap();
    check(3, 6, "after compact(3)");
    let mut w = store.write();
    w.apply_snapshot(&snapshot_meta(10, 4, &[1]));
    store.commit(w).unwrap();
    check(11, 10, "after a snapshot at 10");
    append_committed(&store, &entries(11, 12, |_| 4));
    check(11, 12, "after appending 11..=12 to the snapshot");
    store.compact(13).unwrap();
    check(13, 12, "after compacting every entry");
    assert_eq!(store.term(12), Ok(4), "term(last) after compacting every entry");
    append_committed(&store, &[entry(13, 5)]);
    check(13, 13, "after appending to a fully compacted log");
}

fn append_truncates_conflicts_and_extends<E: Engine>(fresh: &impl Fn() -> Fresh<E>) {
    // MemStorage's test_storage_append (the panicking case is in the next check).
    let base = || entries(3, 5, |i| i);
    let cases: Vec<(&str, Vec<Entry>, Vec<Entry>)> = vec![
        ("the same entries", base(), base()),
        (
            "overwriting with new terms",
            vec![entry(3, 3), entry(4, 6), entry(5, 6)],
            vec![entry(3, 3), entry(4, 6), entry(5, 6)],
        ),
        (
            "overlapping and extending",
            entries(3, 6, |i| i.min(5)),
            vec![entry(3, 3), entry(4, 4), entry(5, 5), entry(6, 5)],
        ),
        ("truncating the conflicting suffix", vec![entry(4, 5)], vec![entry(3, 3), entry(4, 5)]),
        ("direct extension", vec![entry(6, 6)], entries(3, 6, |i| i)),
    ];
    for (name, append, want) in cases {
        let f = fresh();
        let store = f.with_log((2, 2), &base(), 2);
        let mut w = store.write();
        w.append(&append);
        store.commit(w).unwrap_or_else(|e| panic!("append, {name}: {e}"));
        assert_eq!(all_entries(&store), want, "append, {name}: the log");
        let last = want.last().unwrap();
        assert_eq!(store.last_index(), Ok(last.index), "append, {name}: last_index");
        assert_eq!(store.term(last.index), Ok(last.term), "append, {name}: term(last)");
        assert_eq!(
            store.term(last.index + 1),
            Err(unavailable()),
            "append, {name}: nothing past the last entry"
        );
        for gone in last.index + 1..=6 {
            assert_eq!(
                f.engine.get(&entry_key(gone)).unwrap(),
                None,
                "append, {name}: the truncated entry {gone} is deleted from the engine"
            );
        }
        let reopened = f.open();
        assert_eq!(all_entries(&reopened), want, "append, {name}: the log after reopening");
    }

    // Several appends staged in one write.
    let f = fresh();
    let store = f.with_log((2, 2), &base(), 2);
    let mut w = store.write();
    w.append(&entries(6, 8, |_| 6));
    w.append(&[entry(7, 7)]);
    w.append(&[]);
    store.commit(w).unwrap();
    assert_eq!(
        all_entries(&store),
        vec![entry(3, 3), entry(4, 4), entry(5, 5), entry(6, 6), entry(7, 7)],
        "append: appends staged together apply in order"
    );
    assert_eq!(f.engine.get(&entry_key(8)).unwrap(), None, "append: staged truncation deletes");
    assert_eq!(f.open().last_index(), Ok(7), "append: staged appends after reopening");
}

fn append_panics_on_gaps_and_compacted_entries<E: Engine>(fresh: &impl Fn() -> Fresh<E>) {
    let f = fresh();
    let store = f.with_log((2, 2), &entries(3, 5, |i| i), 2);
    expect_panic("append: overwriting compacted entries panics", || {
        store.write().append(&[entry(2, 3), entry(3, 3), entry(4, 5)]);
    });
    expect_panic("append: a gap after last_index panics", || {
        store.write().append(&[entry(7, 5)]);
    });
    expect_panic("append: non-consecutive entries panic", || {
        store.write().append(&[entry(6, 5), entry(8, 5)]);
    });
    assert_eq!(all_entries(&store), entries(3, 5, |i| i), "append: a panic changes nothing");
    let store = fresh().with_log((2, 2), &entries(3, 5, |i| i), 5);
    store.compact(4).unwrap();
    expect_panic("append: at the compacted index panics", || {
        store.write().append(&[entry(3, 9)]);
    });
}

fn compact_discards_entries_and_keeps_the_term<E: Engine>(fresh: &impl Fn() -> Fresh<E>) {
    // MemStorage's test_storage_compact: (compact index, first index, its term, entries left).
    for (idx, want_first, want_term, want_len) in
        [(2, 3, 3, 3), (3, 3, 3, 3), (4, 4, 4, 2), (5, 5, 5, 1)]
    {
        let f = fresh();
        let store = f.with_log((2, 2), &entries(3, 5, |i| i), 5);
        store.compact(idx).unwrap();
        let rule = format!("compact({idx})");
        let first = store.first_index().unwrap();
        assert_eq!(first, want_first, "{rule}: first_index");
        let term = store.entries(first, first + 1, 1, ctx()).unwrap()[0].term;
        assert_eq!(term, want_term, "{rule}: the first entry's term");
        let left = store.entries(first, store.last_index().unwrap() + 1, 100, ctx()).unwrap();
        assert_eq!(left.len(), want_len, "{rule}: entries left");
        assert_eq!(store.truncated(), (first - 1, first - 1), "{rule}: the truncation point");
        assert_eq!(store.term(first - 1), Ok(first - 1), "{rule}: term(first_index - 1)");
        for gone in 3..first {
            assert_eq!(f.engine.get(&entry_key(gone)).unwrap(), None, "{rule}: {gone} deleted");
        }
        let reopened = f.open();
        assert_eq!(reopened.truncated(), store.truncated(), "{rule}: truncation after reopening");
        assert_eq!(all_entries(&reopened), left, "{rule}: entries after reopening");
    }
}

fn compact_twice_and_past_the_log<E: Engine>(fresh: Fresh<E>) {
    let store = fresh.with_log((0, 0), &entries(1, 10, |i| i.div_ceil(2)), 10);
    store.compact(4).unwrap();
    store.compact(7).unwrap();
    assert_eq!(store.first_index(), Ok(7), "compact twice: first_index");
    assert_eq!(store.term(6), Ok(3), "compact twice: term(first_index - 1)");
    assert_eq!(store.term(5), Err(compacted()), "compact twice: the first truncation is gone");
    store.compact(7).unwrap();
    assert_eq!(store.truncated(), (6, 3), "compact to the same index: nothing changes");
    store.compact(3).unwrap();
    assert_eq!(store.first_index(), Ok(7), "compact below first_index: nothing changes");
    expect_panic("compact past last_index + 1 panics (as MemStorage)", || {
        let _ = store.compact(12);
    });
    assert_eq!(store.first_index(), Ok(7), "a panicking compact changes nothing");
    store.compact(11).unwrap();
    assert_eq!(store.first_index(), Ok(11), "compact(last + 1): first_index");
    assert_eq!(store.last_index(), Ok(10), "compact(last + 1): last_index stays");
    assert_eq!(store.term(10), Ok(5), "compact(last + 1): the last term is kept");
    assert_eq!(store.entries(11, 11, NO_LIMIT, ctx()), Ok(vec![]));
    assert_eq!(fresh.open().truncated(), (10, 5), "compact(last + 1): after reopening");
}

fn compact_never_passes_the_commit_index<E: Engine>(fresh: Fresh<E>) {
    let store = fresh.with_log((0, 0), &entries(1, 5, |_| 1), 3);
    let err = store.compact(5).expect_err("compacting past the commit index fails");
    assert_eq!(err, LogStoreError::CommitOutOfRange { commit: 3, truncated: 4, last: 5 });
    assert!(!err.is_fatal(), "CommitOutOfRange is not fatal");
    assert_eq!(store.first_index(), Ok(1), "a refused compaction changes nothing");
    store.compact(4).expect("compacting up to the commit index is fine");
    assert_eq!(store.truncated(), (3, 1));
}

fn apply_snapshot_resets_the_log<E: Engine>(fresh: Fresh<E>) {
    let store = fresh.with_log((2, 2), &entries(3, 5, |i| i), 3);
    let mut w = store.write();
    w.set_hard_state(&hard_state(5, 1, 3));
    store.commit(w).unwrap();
    let rule = "apply_snapshot";

    // Into the middle of the log: every entry goes anyway (as MemStorage).
    let mut w = store.write();
    w.apply_snapshot(&snapshot_meta(4, 6, &[1, 2, 3]));
    store.commit(w).unwrap();
    assert_eq!(store.first_index(), Ok(5), "{rule}: first_index = index + 1");
    assert_eq!(store.last_index(), Ok(4), "{rule}: last_index = index");
    assert_eq!(store.truncated(), (4, 6), "{rule}: the truncation point");
    assert_eq!(store.term(4), Ok(6), "{rule}: term(index) = the snapshot's term");
    assert_eq!(store.term(3), Err(compacted()), "{rule}: entries before it are compacted");
    assert_eq!(store.term(5), Err(unavailable()), "{rule}: entries after it are gone");
    for gone in 3..=5 {
        assert_eq!(fresh.engine.get(&entry_key(gone)).unwrap(), None, "{rule}: {gone} deleted");
    }
    assert_eq!(store.hard_state(), hard_state(6, 1, 4), "{rule}: term = max, commit = index");
    assert_eq!(store.conf_state(), voters(&[1, 2, 3]), "{rule}: the snapshot's conf state");
    assert!(store.is_initialized(), "{rule}: a snapshot initializes");

    // A snapshot with a lower term keeps the hard state's term.
    let mut w = store.write();
    w.apply_snapshot(&snapshot_meta(10, 2, &[1]));
    store.commit(w).unwrap();
    assert_eq!(store.hard_state(), hard_state(6, 1, 10), "{rule}: term = max(term, meta.term)");
    assert_eq!(store.term(10), Ok(2), "{rule}: the truncation point keeps the snapshot's term");

    append_committed(&store, &[entry(11, 6)]);
    assert_eq!(all_entries(&store), vec![entry(11, 6)], "{rule}: appending after a snapshot");
    expect_panic("append after a snapshot: a gap still panics", || {
        store.write().append(&[entry(13, 6)]);
    });
    let reopened = fresh.open();
    assert_eq!(reopened.truncated(), (10, 2), "{rule}: after reopening");
    assert_eq!(reopened.hard_state(), hard_state(6, 1, 11), "{rule}: after reopening");
    assert_eq!(reopened.conf_state(), voters(&[1]), "{rule}: after reopening");
}

fn apply_snapshot_out_of_date_writes_nothing<E: Engine>(fresh: Fresh<E>) {
    // MemStorage's test_storage_apply_snapshot.
    let store = fresh.open();
    let mut w = store.write();
    w.apply_snapshot(&snapshot_meta(0, 0, &[1]));
    assert!(
        matches!(store.commit(w), Err(LogStoreError::SnapshotOutOfDate { .. })),
        "a snapshot at index 0 is out of date (index < first_index 1)"
    );
    let mut w = store.write();
    w.apply_snapshot(&snapshot_meta(4, 4, &[1, 2, 3]));
    store.commit(w).expect("a snapshot on an empty log");
    let mut w = store.write();
    w.apply_snapshot(&snapshot_meta(3, 3, &[1, 2, 3]));
    let err = store.commit(w).expect_err("a snapshot below first_index is out of date");
    assert_eq!(err, LogStoreError::SnapshotOutOfDate { index: 3, first_index: 5 });
    assert_eq!(
        RaftError::from(err.clone()),
        RaftError::Store(StorageError::SnapshotOutOfDate),
        "SnapshotOutOfDate maps to raft's"
    );
    assert!(!err.is_fatal());

    let mut w = store.write();
    w.apply_snapshot(&snapshot_meta(4, 4, &[1, 2, 3]));
    assert_eq!(
        store.commit(w),
        Err(LogStoreError::SnapshotOutOfDate { index: 4, first_index: 5 }),
        "a snapshot at the truncation point itself is out of date (index < first_index)"
    );

    // The error discards everything staged with it.
    let mut w = store.write();
    w.append(&[entry(5, 4)]);
    w.apply_snapshot(&snapshot_meta(2, 2, &[9]));
    w.append(&[entry(6, 4)]); // ignored after the error, so no gap panic
    w.set_hard_state(&hard_state(9, 9, 5));
    w.set_conf_state(&voters(&[9]));
    assert!(store.commit(w).is_err(), "an out-of-date snapshot fails the write");
    assert_eq!(store.last_index(), Ok(4), "a failed write appends nothing");
    assert_eq!(store.hard_state(), hard_state(4, 0, 4), "a failed write sets no hard state");
    assert_eq!(store.conf_state(), voters(&[1, 2, 3]), "a failed write sets no conf state");
    assert_eq!(fresh.engine.get(&entry_key(5)).unwrap(), None, "a failed write writes nothing");
}

fn snapshot_comes_from_the_source<E: Engine>(fresh: Fresh<E>) {
    // MemStorage's test_storage_create_snapshot, with the data from a SnapshotSource.
    let store = fresh.with_log((2, 2), &entries(3, 5, |i| i), 5);
    let mut w = store.write();
    w.set_conf_state(&voters(&[1, 2, 3]));
    store.commit(w).unwrap();
    let rule = "snapshot";
    assert_eq!(store.snapshot(0, 2), Err(snapshot_unavailable()), "{rule}: no source");

    let source = TestSnapshotSource::new(4, b"state at 4");
    store.set_snapshot_source(source.clone());
    let snap = store.snapshot(0, 2).expect("a snapshot at the applied index");
    assert_eq!(snap.get_data(), b"state at 4", "{rule}: the source's data");
    assert_eq!(snap.get_metadata().index, 4, "{rule}: index = the applied index");
    assert_eq!(snap.get_metadata().term, 4, "{rule}: term = term(applied)");
    assert_eq!(snap.get_metadata().get_conf_state(), &voters(&[1, 2, 3]), "{rule}: conf state");

    source.set(5, b"state at 5");
    let snap = store.snapshot(5, 2).expect("applied == request_index");
    assert_eq!((snap.get_metadata().index, snap.get_metadata().term), (5, 5));
    assert_eq!(
        store.snapshot(6, 2),
        Err(snapshot_unavailable()),
        "{rule}: applied < request_index is SnapshotTemporarilyUnavailable (MemStorage fakes one)"
    );
    source.set(0, b"");
    assert_eq!(store.snapshot(0, 2), Err(snapshot_unavailable()), "{rule}: nothing applied");
    source.fail("disk busy");
    assert_eq!(store.snapshot(0, 2), Err(snapshot_unavailable()), "{rule}: the source failed");

    store.compact(5).unwrap();
    source.set(4, b"state at 4");
    let snap = store.snapshot(0, 2).expect("a snapshot at the truncation point");
    assert_eq!(snap.get_metadata().term, 4, "{rule}: the term from the truncation point");
    source.set(3, b"state at 3");
    assert_eq!(
        store.snapshot(0, 2),
        Err(snapshot_unavailable()),
        "{rule}: an applied index below the truncation point has no term"
    );
}

fn initialize_bootstraps_once<E: Engine>(fresh: Fresh<E>) {
    let store = fresh.open();
    assert_eq!(
        store.initialize(ConfState::default()),
        Err(LogStoreError::EmptyConfState),
        "initialize: an empty conf state is refused"
    );
    assert!(!store.is_initialized());
    store.initialize(voters(&[1, 2, 3])).expect("initialize");
    assert!(store.is_initialized(), "initialize: then is_initialized");
    assert_eq!(store.conf_state(), voters(&[1, 2, 3]));
    let initial = store.initial_state().unwrap();
    assert_eq!(initial.conf_state, voters(&[1, 2, 3]), "initialize: initial_state's conf state");
    assert!(initial.initialized(), "initialize: raft-rs sees it initialized");
    assert_eq!(store.first_index(), Ok(1), "initialize: at index 0, no entries");
    assert_eq!(store.last_index(), Ok(0), "initialize: at index 0, no entries");
    assert_eq!(store.term(0), Ok(0));
    assert_eq!(
        store.initialize(voters(&[4])),
        Err(LogStoreError::AlreadyInitialized),
        "initialize: twice fails"
    );
    assert_eq!(store.conf_state(), voters(&[1, 2, 3]), "a second initialize changes nothing");
    let reopened = fresh.open();
    assert!(reopened.is_initialized(), "initialize: durable");
    assert_eq!(reopened.conf_state(), voters(&[1, 2, 3]));
}

fn staged_changes_become_visible_together<E: Engine>(fresh: Fresh<E>) {
    let store = fresh.open();
    store.initialize(voters(&[1])).unwrap();
    let mut w = store.write();
    w.append(&[entry(1, 1)]);
    w.set_hard_state(&hard_state(1, 1, 1));
    w.set_conf_state(&voters(&[1, 2]));
    let rule = "a staged entry, hard state and conf state";
    assert_eq!(store.last_index(), Ok(0), "{rule}: invisible before commit (entry)");
    assert_eq!(store.hard_state(), HardState::default(), "{rule}: invisible before commit (hs)");
    assert_eq!(store.conf_state(), voters(&[1]), "{rule}: invisible before commit (cs)");
    assert_eq!(fresh.engine.get(&entry_key(1)).unwrap(), None, "{rule}: not in the engine");
    store.commit(w).unwrap();
    assert_eq!(store.last_index(), Ok(1), "{rule}: visible together (entry)");
    assert_eq!(store.entries(1, 2, NO_LIMIT, ctx()), Ok(vec![entry(1, 1)]));
    assert_eq!(store.hard_state(), hard_state(1, 1, 1), "{rule}: visible together (hs)");
    assert_eq!(store.conf_state(), voters(&[1, 2]), "{rule}: visible together (cs)");
    let initial = store.initial_state().unwrap();
    assert_eq!((initial.hard_state, initial.conf_state), (hard_state(1, 1, 1), voters(&[1, 2])));
    let reopened = fresh.open();
    assert_eq!(reopened.last_index(), Ok(1), "{rule}: durable together (entry)");
    assert_eq!(reopened.hard_state(), hard_state(1, 1, 1), "{rule}: durable together (hs)");
    assert_eq!(reopened.conf_state(), voters(&[1, 2]), "{rule}: durable together (cs)");
}

fn a_snapshot_entries_and_hard_state_commit_as_one_write<E: Engine>(fresh: Fresh<E>) {
    // What a Ready with a snapshot needs: the reset, the entries after it and the hard state.
    let store = fresh.with_log((0, 0), &entries(1, 3, |_| 1), 3);
    let mut w = store.write();
    w.apply_snapshot(&snapshot_meta(10, 3, &[1, 2]));
    w.append(&[entry(11, 3), entry(12, 3)]); // a gap before the snapshot, valid after it
    w.set_hard_state(&hard_state(3, 2, 11));
    store.commit(w).expect("snapshot + entries + hard state in one write");
    let rule = "a snapshot staged with entries and a hard state";
    assert_eq!(store.first_index(), Ok(11), "{rule}: first_index");
    assert_eq!(store.last_index(), Ok(12), "{rule}: last_index");
    assert_eq!(store.term(10), Ok(3), "{rule}: term(snapshot index)");
    assert_eq!(all_entries(&store), vec![entry(11, 3), entry(12, 3)], "{rule}: entries");
    assert_eq!(store.hard_state(), hard_state(3, 2, 11), "{rule}: the staged hard state wins");
    assert_eq!(store.conf_state(), voters(&[1, 2]), "{rule}: the snapshot's conf state");
    for gone in 1..=3 {
        assert_eq!(fresh.engine.get(&entry_key(gone)).unwrap(), None, "{rule}: {gone} deleted");
    }
    let reopened = fresh.open();
    assert_eq!(all_entries(&reopened), all_entries(&store), "{rule}: after reopening");
    assert_eq!(reopened.truncated(), (10, 3), "{rule}: after reopening");
}

fn commit_index_stays_within_the_log<E: Engine>(fresh: Fresh<E>) {
    let store = fresh.with_log((0, 0), &entries(1, 3, |_| 1), 2);
    let rule = "commit index within [truncated, last]";
    let mut w = store.write();
    w.set_hard_state(&hard_state(1, 0, 4));
    let err = store.commit(w).expect_err("a hard state past the log is refused");
    assert_eq!(
        err,
        LogStoreError::CommitOutOfRange { commit: 4, truncated: 0, last: 3 },
        "{rule}: a hard state past the log"
    );
    assert!(!err.is_fatal(), "{rule}: not fatal");
    assert_eq!(store.hard_state(), hard_state(1, 0, 2), "{rule}: nothing written");
    let mut w = store.write();
    w.append(&[entry(2, 2)]);
    store.commit(w).expect("truncating above the commit index is fine");
    let mut w = store.write();
    w.append(&[entry(1, 2)]);
    assert_eq!(
        store.commit(w),
        Err(LogStoreError::CommitOutOfRange { commit: 2, truncated: 0, last: 1 }),
        "{rule}: truncating the log below the commit index is refused"
    );
    assert_eq!(all_entries(&store), vec![entry(1, 1), entry(2, 2)], "{rule}: nothing written");
    let mut w = store.write();
    w.append(&[entry(3, 2)]);
    w.set_hard_state(&hard_state(2, 0, 3));
    store.commit(w).expect("a hard state pointing at entries staged with it");
}

fn stale_writes_are_refused<E: Engine>(fresh: Fresh<E>, other: Fresh<E>) {
    let store = fresh.with_log((0, 0), &entries(1, 3, |_| 1), 3);
    let mut stale = store.write();
    stale.append(&[entry(4, 1)]);
    store.compact(2).unwrap();
    assert_eq!(
        store.commit(stale),
        Err(LogStoreError::Conflict),
        "a write staged before another change is refused"
    );
    assert_eq!(store.last_index(), Ok(3), "a refused write writes nothing");
    let other = other.open();
    let mut foreign = other.write();
    foreign.append(&[entry(1, 1)]);
    assert_eq!(store.commit(foreign), Err(LogStoreError::Conflict), "another store's write");
    assert!(!LogStoreError::Conflict.is_fatal());
    let clone = store.clone();
    let mut w = clone.write();
    w.append(&[entry(4, 1)]);
    store.commit(w).expect("clones share one store");
    assert_eq!(clone.last_index(), Ok(4));
}

fn entries_round_trip_every_field<E: Engine>(fresh: Fresh<E>) {
    let mut e1 = entry(1, 1);
    e1.set_entry_type(EntryType::EntryConfChangeV2);
    e1.data = vec![0, 1, 2, 0xff].into();
    e1.context = b"request 7".to_vec().into();
    let mut e2 = entry(2, 1);
    e2.data = vec![7; 100_000].into();
    e2.sync_log = true;
    let e3 = entry(3, u64::MAX);
    let ents = vec![e1, e2, e3];
    let store = fresh.with_log((0, 0), &ents, 3);
    assert_eq!(all_entries(&store), ents, "entries keep every field");
    assert_eq!(all_entries(&fresh.open()), ents, "entries keep every field after reopening");
}

fn keys_follow_the_layout_and_nothing_else_is_touched<E: Engine>(fresh: Fresh<E>) {
    let foreign: Vec<(Vec<u8>, Vec<u8>)> = vec![
        (vec![0x01, 0x10, 0x00], b"mvcc version".to_vec()),
        (vec![0x02], b"mvcc lock".to_vec()),
        (vec![0x03, 0xff], b"mvcc meta".to_vec()),
        (vec![0x0f, 0xff, 0xff], b"just below the log".to_vec()),
        (vec![0x14], b"just above the log".to_vec()),
        (vec![0x11, 0x00], b"after the hard state key".to_vec()),
    ];
    let mut b = WriteBatch::new();
    for (k, v) in &foreign {
        b.put(k.clone(), v.clone());
    }
    fresh.engine.write(b).unwrap();

    let store = fresh.open();
    store.initialize(voters(&[1, 2])).unwrap();
    append_committed(&store, &entries(1, 6, |_| 2));
    store.compact(3).unwrap();
    let rule = "key layout";
    for i in 3..=6 {
        let bytes = fresh.engine.get(&entry_key(i)).unwrap().expect("an entry key");
        let e = Entry::parse_from_bytes(&bytes).expect("entries are protobuf Entry");
        assert_eq!(e, entry(i, 2), "{rule}: 0x10 ++ index (u64 BE) -> Entry");
    }
    assert_eq!(entry_key(0x0102), [0x10, 0, 0, 0, 0, 0, 0, 0x01, 0x02], "{rule}: entry key");
    let hs = fresh.engine.get(HARD_STATE_KEY).unwrap().expect("the hard state key");
    assert_eq!(HardState::parse_from_bytes(&hs).unwrap(), store.hard_state(), "{rule}: 0x11");
    let cs = fresh.engine.get(CONF_STATE_KEY).unwrap().expect("the conf state key");
    assert_eq!(ConfState::parse_from_bytes(&cs).unwrap(), voters(&[1, 2]), "{rule}: 0x12");
    let truncated = fresh.engine.get(TRUNCATED_KEY).unwrap().expect("the truncation key");
    let mut want = 2u64.to_be_bytes().to_vec();
    want.extend_from_slice(&2u64.to_be_bytes());
    assert_eq!(truncated, want, "{rule}: 0x13 -> index (u64 BE) ++ term (u64 BE)");

    let mut w = store.write();
    w.apply_snapshot(&snapshot_meta(9, 3, &[1]));
    store.commit(w).unwrap();
    let all: Vec<(Vec<u8>, Vec<u8>)> =
        fresh.engine.scan((Bound::Unbounded, Bound::Unbounded)).collect::<Result<_, _>>().unwrap();
    for (k, v) in &foreign {
        assert!(all.contains(&(k.clone(), v.clone())), "{rule}: key {k:02x?} outside the log kept");
    }
    let ours: Vec<&Vec<u8>> =
        all.iter().map(|(k, _)| k).filter(|k| !foreign.iter().any(|(f, _)| f == *k)).collect();
    assert_eq!(
        ours,
        vec![&HARD_STATE_KEY.to_vec(), &CONF_STATE_KEY.to_vec(), &TRUNCATED_KEY.to_vec()],
        "{rule}: after a snapshot only the three state keys remain"
    );
}

fn open_rejects_corrupt_state<E: Engine>(fresh: &impl Fn() -> Fresh<E>) {
    let corrupt = |what: &str, puts: Vec<(Vec<u8>, Vec<u8>)>| {
        let f = fresh();
        let mut b = WriteBatch::new();
        for (k, v) in puts {
            b.put(k, v);
        }
        f.engine.write(b).unwrap();
        match RaftLogStore::open(f.engine.clone()) {
            Err(e @ LogStoreError::Corruption(_)) => assert!(e.is_fatal(), "{what}: fatal"),
            Err(e) => panic!("open with {what}: expected Corruption, got {e}"),
            Ok(_) => panic!("open with {what}: expected Corruption, got a store"),
        }
    };
    let enc = |e: &Entry| e.write_to_bytes().unwrap();
    let hs = |commit| hard_state(1, 0, commit).write_to_bytes().unwrap();
    corrupt("a short truncation point", vec![(TRUNCATED_KEY.to_vec(), vec![0; 5])]);
    corrupt("an undecodable hard state", vec![(HARD_STATE_KEY.to_vec(), vec![0xff; 3])]);
    corrupt("an undecodable conf state", vec![(CONF_STATE_KEY.to_vec(), vec![0xff; 3])]);
    corrupt("a gap before the first entry", vec![(entry_key(3).to_vec(), enc(&entry(3, 1)))]);
    corrupt(
        "an entry under another index's key",
        vec![
            (entry_key(1).to_vec(), enc(&entry(1, 1))),
            (entry_key(2).to_vec(), enc(&entry(3, 1))),
        ],
    );
    corrupt("a malformed entry key", vec![(vec![0x10, 1], enc(&entry(1, 1)))]);
    corrupt(
        "a commit index past the last entry",
        vec![(entry_key(1).to_vec(), enc(&entry(1, 1))), (HARD_STATE_KEY.to_vec(), hs(2))],
    );
    let mut truncated = 5u64.to_be_bytes().to_vec();
    truncated.extend_from_slice(&1u64.to_be_bytes());
    corrupt(
        "a commit index below the truncation point",
        vec![(TRUNCATED_KEY.to_vec(), truncated), (HARD_STATE_KEY.to_vec(), hs(4))],
    );
}

fn readers_see_a_consistent_log_while_it_changes<E: Engine>(fresh: Fresh<E>) {
    let store = fresh.open();
    let term = |i: u64| i / 7 + 1;
    append_committed(&store, &entries(1, 10, term));
    let done = AtomicBool::new(false);
    let reads = AtomicU64::new(0);
    std::thread::scope(|s| {
        for _ in 0..3 {
            s.spawn(|| {
                while !done.load(Ordering::Acquire) {
                    let first = store.first_index().unwrap();
                    let last = store.last_index().unwrap();
                    match store.entries(first, last + 1, NO_LIMIT, ctx()) {
                        Ok(got) => {
                            for (k, e) in got.iter().enumerate() {
                                assert_eq!(e.index, first + k as u64, "readers: consecutive");
                                assert_eq!(e.term, term(e.index), "readers: the right entry");
                            }
                        }
                        Err(e) => assert_eq!(e, compacted(), "readers: only Compacted races"),
                    }
                    let want = if first == 1 { 0 } else { term(first - 1) };
                    match store.term(first - 1) {
                        Ok(t) => assert_eq!(t, want, "readers: term(first - 1)"),
                        Err(e) => assert_eq!(e, compacted(), "readers: only Compacted races"),
                    }
                    reads.fetch_add(1, Ordering::Relaxed);
                }
            });
        }
        // The writer starts once a reader has read (on a memory engine the 190 appends can end
        // before a reader thread is first scheduled, and then nothing raced).
        let started = std::time::Instant::now();
        while reads.load(Ordering::Relaxed) == 0
            && started.elapsed() < std::time::Duration::from_secs(10)
        {
            std::thread::yield_now();
        }
        for i in 11..=200 {
            append_committed(&store, &[entry(i, term(i))]);
            if i % 20 == 0 {
                store.compact(i - 5).unwrap();
            }
        }
        done.store(true, Ordering::Release);
    });
    assert!(reads.load(Ordering::Relaxed) > 0, "readers ran");
    assert_eq!(store.first_index(), Ok(195));
    assert_eq!(store.last_index(), Ok(200));
}

/// A directory under the system's temporary directory, removed on drop (the `tempfile` crate
/// is only a dev-dependency, and this module is also built for other crates' tests).
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> Self {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let path =
            std::env::temp_dir().join(format!("boundkv-{name}-{}-{n}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&path).expect("create a temporary directory");
        TempDir(path)
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// What a transport reported back, as [`TestEndpoint`] records it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Report {
    /// `Reporter::unreachable(to)`.
    Unreachable(u64),
    /// `Reporter::snapshot(to, delivered)`.
    Snapshot {
        /// The peer.
        to: u64,
        /// Whether it arrived.
        delivered: bool,
    },
    /// A clock probe or answer delivered through `Deliverer::deliver_clock`.
    Clock(crate::clock_check::ClockFrame),
}

/// A stand-in for a node, for testing transports: a [`crate::transport::Deliverer`] and a
/// [`crate::transport::Reporter`] whose messages and reports the test reads back.
pub struct TestEndpoint {
    tx: crate::transport::PeerSender,
    rx: std::sync::mpsc::Receiver<crate::transport::PeerInput>,
    messages: Mutex<std::collections::VecDeque<raft::prelude::Message>>,
    reports: Mutex<Vec<Report>>,
}

impl Default for TestEndpoint {
    fn default() -> Self {
        Self::new()
    }
}

impl TestEndpoint {
    /// A new endpoint.
    pub fn new() -> Self {
        let (tx, rx) = std::sync::mpsc::channel();
        let tx: crate::transport::PeerSender = Arc::new(move |input| tx.send(input).is_ok());
        TestEndpoint { tx, rx, messages: Mutex::default(), reports: Mutex::default() }
    }

    /// Delivers into this endpoint.
    pub fn deliverer(&self) -> crate::transport::Deliverer {
        crate::transport::Deliverer::new(self.tx.clone(), None, Default::default())
    }

    /// Reports into this endpoint.
    pub fn reporter(&self) -> crate::transport::Reporter {
        crate::transport::Reporter::new(self.tx.clone())
    }

    /// The next message delivered, waiting at most `timeout`. Reports received meanwhile are
    /// kept for [`TestEndpoint::reports`].
    pub fn recv_message(&self, timeout: std::time::Duration) -> Option<raft::prelude::Message> {
        if let Some(m) = self.messages.lock().unwrap_or_else(|e| e.into_inner()).pop_front() {
            return Some(m);
        }
        let deadline = std::time::Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self.rx.recv_timeout(left) {
                Ok(crate::transport::PeerInput::Message(m)) => return Some(*m),
                Ok(other) => self.keep(other),
                Err(_) => return None,
            }
        }
    }

    /// Every report received so far and not yet returned, after waiting `wait` for more.
    /// Messages received meanwhile are kept for [`TestEndpoint::recv_message`].
    pub fn reports(&self, wait: std::time::Duration) -> Vec<Report> {
        std::thread::sleep(wait);
        while let Ok(input) = self.rx.try_recv() {
            self.keep(input);
        }
        std::mem::take(&mut *self.reports.lock().unwrap_or_else(|e| e.into_inner()))
    }

    fn keep(&self, input: crate::transport::PeerInput) {
        use crate::transport::PeerInput;
        let report = match input {
            PeerInput::Message(m) => {
                self.messages.lock().unwrap_or_else(|e| e.into_inner()).push_back(*m);
                return;
            }
            PeerInput::Unreachable(to) => Report::Unreachable(to),
            PeerInput::SnapshotStatus { to, delivered } => Report::Snapshot { to, delivered },
            PeerInput::Clock(frame, _) => Report::Clock(*frame),
        };
        self.reports.lock().unwrap_or_else(|e| e.into_inner()).push(report);
    }
}
