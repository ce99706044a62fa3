//! External consistency, checked against *true* time (which the simulated clock knows and the
//! database never sees), and shown to fail when commit wait is switched off.
//!
//! 1. One node, many threads, a clock with a 5 ms bound that runs 3 ms ahead of true time: at every
//!    acknowledgement `now().earliest > s` and true time is past `s`; whenever T1 returned before
//!    T2 began (in true time), `ts(T1) < ts(T2)` and T2 sees T1's write or a later one.
//! 2. Two nodes whose clocks err in opposite directions (+4 ms and −4 ms, both inside a 5 ms
//!    bound): a commit on one node that begins after a commit on the other returned must get a
//!    higher timestamp. This is the anomaly commit wait exists to prevent.
//!
//! Each test has a mutation twin that disables commit wait and must see the checker fail.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use boundkv_clockbound::{Clock, SimClock, Timestamp};
use boundkv_storage::MemoryEngine;
use boundkv_txn::{TxnManager, TxnOptions};
use bytes::Bytes;
use common::{block_on, manager_on};

/// One completed transaction, as an outside observer with a true-time watch would record it.
#[derive(Clone, Debug)]
struct Op {
    start: Timestamp,
    end: Timestamp,
    ts: Timestamp,
    /// The key read and the id of the transaction whose write it saw (0: the initial value).
    read: Option<(u8, u64)>,
    /// The key written and this transaction's id.
    write: Option<(u8, u64)>,
}

fn id_of(v: Option<Bytes>) -> u64 {
    v.map_or(0, |v| std::str::from_utf8(&v).unwrap().parse().unwrap())
}

/// Runs `threads × per_thread` transactions on `keys` keys (reads and writes one key each, every
/// fourth is read-only) and records each with true times. Also checks the acknowledgement
/// invariant on the spot and returns its violations with the history.
fn run(
    m: &Arc<TxnManager<MemoryEngine>>,
    clock: &SimClock,
    threads: u64,
    per_thread: u64,
) -> (Vec<Op>, Vec<String>) {
    let history = Arc::new(Mutex::new(Vec::new()));
    let violations = Arc::new(Mutex::new(Vec::new()));
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let (m, clock, history, violations) = (m.clone(), clock.clone(), history.clone(), violations.clone());
            std::thread::spawn(move || {
                for i in 0..per_thread {
                    let id = t * 1_000_000 + i + 1;
                    let key = ((t * 7 + i * 3) % 8) as u8;
                    if i % 4 == 3 {
                        let start = clock.true_now();
                        let ro = block_on(m.read_only()).unwrap();
                        let seen = id_of(ro.get([key]).unwrap());
                        let end = clock.true_now();
                        history.lock().unwrap().push(Op { start, end, ts: ro.ts(), read: Some((key, seen)), write: None });
                        continue;
                    }
                    // Retry conflicts, as a client would; the attempt that commits is recorded.
                    let (start, seen, info) = loop {
                        let start = clock.true_now();
                        let mut txn = m.begin();
                        let seen = id_of(block_on(txn.get(Bytes::from(vec![key]))).unwrap());
                        txn.put(Bytes::from(vec![key]), id.to_string()).unwrap();
                        match block_on(txn.commit()) {
                            Ok(info) => break (start, seen, info),
                            Err(e) if e.is_retryable() => continue,
                            Err(e) => panic!("{e}"),
                        }
                    };
                    // The invariant at every acknowledgement, on a fresh reading and in truth.
                    let earliest = clock.now().unwrap().earliest();
                    let end = clock.true_now();
                    if earliest <= info.ts || end <= info.ts {
                        violations.lock().unwrap().push(format!(
                            "acknowledged {id} at ts {:?} while earliest was {:?} and true time {:?}",
                            info.ts, earliest, end
                        ));
                    }
                    history.lock().unwrap().push(Op { start, end, ts: info.ts, read: Some((key, seen)), write: Some((key, id)) });
                }
            })
        })
        .collect();
    handles.into_iter().for_each(|h| h.join().unwrap());
    let history = Arc::try_unwrap(history).unwrap().into_inner().unwrap();
    let violations = Arc::try_unwrap(violations).unwrap().into_inner().unwrap();
    (history, violations)
}

/// Real-time order must be timestamp order, and reads must see every write that finished before
/// they began.
fn check_real_time(history: &[Op]) -> Vec<String> {
    let mut v = Vec::new();
    let writer_ts: std::collections::HashMap<u64, Timestamp> =
        history.iter().filter_map(|o| o.write.map(|(_, id)| (id, o.ts))).collect();
    for a in history.iter().filter(|o| o.write.is_some()) {
        for b in history.iter().filter(|b| b.start > a.end) {
            let is_write = b.write.is_some();
            if (is_write && b.ts <= a.ts) || (!is_write && b.ts < a.ts) {
                v.push(format!("{:?} finished before {:?} began, but its ts is not lower", a, b));
            }
            if let (Some((ka, _)), Some((kb, seen))) = (a.write, b.read)
                && ka == kb
            {
                let seen_ts = writer_ts.get(&seen).copied().unwrap_or(Timestamp::ZERO);
                if seen_ts < a.ts {
                    v.push(format!("{b:?} began after {a:?} finished but read an older write"));
                }
            }
        }
    }
    v
}

fn one_node(skip_commit_wait: bool) -> (usize, Vec<String>) {
    let clock = SimClock::real_time();
    clock.set_bound(Duration::from_millis(5)).set_offset_nanos(3_000_000);
    let m = manager_on(
        MemoryEngine::new(),
        &clock,
        TxnOptions { unsafe_skip_commit_wait: skip_commit_wait, ..TxnOptions::default() },
    );
    let (history, mut violations) = run(&m, &clock, 8, 40);
    violations.extend(check_real_time(&history));
    (history.len(), violations)
}

#[test]
fn one_node_is_externally_consistent() {
    let (ops, violations) = one_node(false);
    assert_eq!(ops, 8 * 40, "every operation completes");
    assert!(
        violations.is_empty(),
        "{} violations, e.g. {:?}",
        violations.len(),
        &violations[..violations.len().min(3)]
    );
}

#[test]
fn mutation_without_commit_wait_the_one_node_checker_fails() {
    let (_, violations) = one_node(true);
    let ack = violations.iter().filter(|v| v.starts_with("acknowledged")).count();
    eprintln!(
        "commit wait off, one node: {} violations ({ack} at acknowledgement, {} of real-time order); e.g. {:?}",
        violations.len(),
        violations.len() - ack,
        violations.first()
    );
    assert!(!violations.is_empty(), "commit wait was off and the checker saw nothing: it is blind");
}

/// Commits alternate between two nodes; each begins after the previous one returned.
fn two_nodes(skip_commit_wait: bool) -> Vec<String> {
    let a_clock = SimClock::real_time();
    let b_clock = a_clock.sibling();
    for (c, offset) in [(&a_clock, 4_000_000), (&b_clock, -4_000_000)] {
        c.set_bound(Duration::from_millis(5)).set_offset_nanos(offset);
    }
    let opts = || TxnOptions { unsafe_skip_commit_wait: skip_commit_wait, ..TxnOptions::default() };
    let a = manager_on(MemoryEngine::new(), &a_clock, opts());
    let b = manager_on(MemoryEngine::new(), &b_clock, opts());
    let mut violations = Vec::new();
    let mut previous: Option<(char, Timestamp)> = None;
    for i in 0..40 {
        let (name, node) = if i % 2 == 0 { ('A', &a) } else { ('B', &b) };
        let mut txn = node.begin();
        txn.put(Bytes::from_static(b"k"), i.to_string()).unwrap();
        let ts = block_on(txn.commit()).unwrap().ts;
        if let Some((prev_name, prev_ts)) = previous
            && ts <= prev_ts
        {
            violations.push(format!("commit {i} on {name} at {ts:?} began after the commit on {prev_name} at {prev_ts:?} returned"));
        }
        previous = Some((name, ts));
    }
    violations
}

#[test]
fn two_nodes_with_opposite_clock_errors_are_externally_consistent() {
    let violations = two_nodes(false);
    assert!(violations.is_empty(), "{violations:?}");
}

#[test]
fn mutation_without_commit_wait_two_nodes_reorder() {
    let violations = two_nodes(true);
    eprintln!(
        "commit wait off, two nodes: {} of 39 hand-offs reordered; e.g. {:?}",
        violations.len(),
        violations.first()
    );
    // Every commit from A to B goes backwards by about 8 ms minus the time between them.
    assert!(
        violations.len() >= 10,
        "commit wait was off and only {} reorderings: {violations:?}",
        violations.len()
    );
}
