//! The classic anomalies cannot happen. Each test builds the interleaving that produces the
//! anomaly under a weaker isolation level and checks that boundkv prevents it: by snapshot reads,
//! by buffering writes until commit, or by refusing the second commit with a conflict.

mod common;

use std::ops::Bound;
use std::time::Duration;

use boundkv_txn::Error;
use common::{b, block_on, manager};

fn setup() -> std::sync::Arc<boundkv_txn::TxnManager<boundkv_storage::MemoryEngine>> {
    let (m, _clock) = manager(Duration::from_micros(100));
    let mut t = m.begin();
    t.put(b("x"), b("0")).unwrap();
    t.put(b("y"), b("0")).unwrap();
    block_on(t.commit()).unwrap();
    m
}

/// G0, dirty write: two transactions write the same two keys in interleaved order. Writes are
/// buffered until commit and each commit is atomic, so the final state comes wholly from one of
/// them, the one with the later commit timestamp.
#[test]
fn no_dirty_write() {
    let m = setup();
    let mut t1 = m.begin();
    let mut t2 = m.begin();
    t1.put(b("x"), b("1")).unwrap();
    t2.put(b("x"), b("2")).unwrap();
    t2.put(b("y"), b("2")).unwrap();
    t1.put(b("y"), b("1")).unwrap();
    let c1 = block_on(t1.commit()).unwrap();
    let c2 = block_on(t2.commit()).unwrap();
    let r = block_on(m.read_only()).unwrap();
    let winner = if c2.ts > c1.ts { b("2") } else { b("1") };
    assert_eq!(r.get("x").unwrap(), Some(winner.clone()));
    assert_eq!(r.get("y").unwrap(), Some(winner));
}

/// G1a/G1b, dirty read: an uncommitted (and then abandoned) write is never visible.
#[test]
fn no_dirty_read() {
    let m = setup();
    let mut writer = m.begin();
    writer.put(b("x"), b("dirty")).unwrap();
    let mut reader = m.begin();
    assert_eq!(block_on(reader.get(b("x"))).unwrap(), Some(b("0")));
    assert_eq!(block_on(m.read_only()).unwrap().get("x").unwrap(), Some(b("0")));
    writer.rollback();
    assert_eq!(block_on(m.read_only()).unwrap().get("x").unwrap(), Some(b("0")));
}

/// P4, lost update: two read-modify-writes of one counter; the second to commit must fail, not
/// silently overwrite the first.
#[test]
fn no_lost_update() {
    let m = setup();
    let mut t1 = m.begin();
    let mut t2 = m.begin();
    let v1: u64 =
        std::str::from_utf8(&block_on(t1.get(b("x"))).unwrap().unwrap()).unwrap().parse().unwrap();
    let v2: u64 =
        std::str::from_utf8(&block_on(t2.get(b("x"))).unwrap().unwrap()).unwrap().parse().unwrap();
    t1.put(b("x"), (v1 + 1).to_string()).unwrap();
    t2.put(b("x"), (v2 + 1).to_string()).unwrap();
    block_on(t1.commit()).unwrap();
    let e = block_on(t2.commit()).unwrap_err();
    match &e {
        Error::Conflict { key, read_ts, conflicting_commit_ts } => {
            assert_eq!(key, &b("x"));
            assert!(conflicting_commit_ts > read_ts);
        }
        other => panic!("expected a conflict, got {other}"),
    }
    assert!(e.is_retryable());
    assert!(e.to_string().contains("conflict on key x"), "{e}");
    assert_eq!(block_on(m.read_only()).unwrap().get("x").unwrap(), Some(b("1")));
}

/// G-single, read skew: a transaction that read x before another committed x and y reads y
/// from the same snapshot, never the new y with the old x.
#[test]
fn no_read_skew() {
    let m = setup();
    let mut t1 = m.begin();
    assert_eq!(block_on(t1.get(b("x"))).unwrap(), Some(b("0")));
    let mut t2 = m.begin();
    t2.put(b("x"), b("1")).unwrap();
    t2.put(b("y"), b("1")).unwrap();
    block_on(t2.commit()).unwrap();
    assert_eq!(block_on(t1.get(b("y"))).unwrap(), Some(b("0")), "t1 must see its snapshot");
    // Read-only transactions are snapshots too.
    let ro = block_on(m.read_only()).unwrap();
    let mut t3 = m.begin();
    t3.put(b("x"), b("3")).unwrap();
    t3.put(b("y"), b("3")).unwrap();
    block_on(t3.commit()).unwrap();
    assert_eq!((ro.get("x").unwrap(), ro.get("y").unwrap()), (Some(b("1")), Some(b("1"))));
}

/// G2-item, write skew: each transaction reads both keys and writes a different one. Under
/// snapshot isolation both commit and break the invariant "x + y >= 0"; here one must fail.
#[test]
fn no_write_skew() {
    let m = setup();
    let mut t1 = m.begin();
    let mut t2 = m.begin();
    for t in [&mut t1, &mut t2] {
        block_on(t.get(b("x"))).unwrap();
        block_on(t.get(b("y"))).unwrap();
    }
    t1.put(b("x"), b("-1")).unwrap();
    t2.put(b("y"), b("-1")).unwrap();
    block_on(t1.commit()).unwrap();
    assert!(matches!(block_on(t2.commit()), Err(Error::Conflict { .. })));
}

/// Phantom: a transaction that scanned a range (finding nothing) must not commit if another
/// inserted into that range after its read.
#[test]
fn no_phantom() {
    let m = setup();
    let mut t1 = m.begin();
    let rows = block_on(t1.scan((Bound::Included(b("a")), Bound::Excluded(b("c"))), None)).unwrap();
    assert!(rows.is_empty());
    let mut t2 = m.begin();
    t2.put(b("b"), b("inserted")).unwrap();
    block_on(t2.commit()).unwrap();
    // t1 does not see the insert (snapshot) ...
    let again =
        block_on(t1.scan((Bound::Included(b("a")), Bound::Excluded(b("c"))), None)).unwrap();
    assert!(again.is_empty());
    // ... and cannot commit a decision based on its absence.
    t1.put(b("summary"), b("no rows in [a, c)")).unwrap();
    match block_on(t1.commit()) {
        Err(Error::Conflict { key, .. }) => assert_eq!(key, b("b")),
        other => panic!("expected a phantom conflict, got {other:?}"),
    }
    // A scan cut short by its limit validates only what it returned.
    let mut t3 = m.begin();
    let first = block_on(t3.scan((Bound::Unbounded, Bound::Unbounded), Some(1))).unwrap();
    assert_eq!(first[0].0, b("b"));
    let mut t4 = m.begin();
    t4.put(b("z"), b("after the limit")).unwrap();
    block_on(t4.commit()).unwrap();
    t3.put(b("w"), b("1")).unwrap();
    block_on(t3.commit()).expect("an insert beyond the last returned row is no conflict");
}

/// A transaction reads its own writes, in gets and in scans, and deletes hide rows.
#[test]
fn reads_see_own_writes() {
    let m = setup();
    let mut t = m.begin();
    t.put(b("a"), b("mine")).unwrap();
    t.delete(b("x")).unwrap();
    assert_eq!(block_on(t.get(b("a"))).unwrap(), Some(b("mine")));
    assert_eq!(block_on(t.get(b("x"))).unwrap(), None);
    let rows = block_on(t.scan((Bound::Unbounded, Bound::Unbounded), None)).unwrap();
    assert_eq!(rows, vec![(b("a"), b("mine")), (b("y"), b("0"))]);
    let limited = block_on(t.scan((Bound::Unbounded, Bound::Unbounded), Some(1))).unwrap();
    assert_eq!(limited, vec![(b("a"), b("mine"))]);
}
