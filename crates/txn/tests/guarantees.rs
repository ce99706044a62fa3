//! The rest of the transaction layer's promises: what happens when the clock is unusable, limits,
//! abandoned and expired transactions, reads at exact and bounded-stale timestamps, safe-time
//! waits, a failing disk, and a bank whose total never changes in any snapshot.

mod common;

use std::ops::Bound;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use boundkv_clockbound::{
    Clock, ClockPolicy, ClockStatus, SimClock, Timestamp, Unusable, WaitError,
};
use boundkv_storage::MemoryEngine;
use boundkv_storage::testsuite::FaultyEngine;
use boundkv_txn::{Error, Limits, TxnOptions};
use common::{b, block_on, manager, manager_on, manager_with_policy};

fn short_policy() -> ClockPolicy {
    ClockPolicy {
        unavailable_timeout: Duration::from_millis(150),
        max_bound: Duration::from_millis(50),
        ..ClockPolicy::default()
    }
}

#[test]
fn an_unusable_clock_fails_commits_after_the_deadline_and_they_resume_when_it_recovers() {
    let clock = SimClock::real_time();
    clock.set_bound(Duration::from_micros(100));
    let m = manager_with_policy(MemoryEngine::new(), &clock, TxnOptions::default(), short_policy());
    for status in [ClockStatus::Unknown, ClockStatus::Disrupted] {
        clock.set_status(status);
        let mut t = m.begin();
        t.put(b("k"), b(&format!("{status}"))).unwrap();
        match block_on(t.commit()) {
            Err(Error::Clock(WaitError::ClockUnavailable {
                reason: Unusable::Status(s),
                waited,
            })) => {
                assert_eq!(s, status);
                assert!(waited >= Duration::from_millis(150));
            }
            other => panic!("expected ClockUnavailable, got {other:?}"),
        }
        assert!(matches!(block_on(m.read_only()), Err(Error::Clock(_))), "reads need a clock too");
    }
    // A bound above the ceiling is refused the same way.
    clock.set_status(ClockStatus::Synchronized).set_bound(Duration::from_millis(60));
    let mut t = m.begin();
    t.put(b("k"), b("too wide")).unwrap();
    assert!(matches!(
        block_on(t.commit()),
        Err(Error::Clock(WaitError::ClockUnavailable {
            reason: Unusable::BoundTooLarge { .. },
            ..
        }))
    ));
    // Nothing was committed; once the clock recovers, commits go through.
    clock.set_bound(Duration::from_micros(100));
    assert_eq!(block_on(m.read_only()).unwrap().get("k").unwrap(), None);
    let mut t = m.begin();
    t.put(b("k"), b("ok")).unwrap();
    block_on(t.commit()).unwrap();
    assert_eq!(block_on(m.read_only()).unwrap().get("k").unwrap(), Some(b("ok")));
}

#[test]
fn a_clock_that_recovers_within_the_deadline_only_delays_the_commit() {
    let clock = SimClock::real_time();
    clock.set_bound(Duration::from_micros(100)).set_status(ClockStatus::Unknown);
    let policy =
        ClockPolicy { unavailable_timeout: Duration::from_secs(5), ..ClockPolicy::default() };
    let m = manager_with_policy(MemoryEngine::new(), &clock, TxnOptions::default(), policy);
    let c2 = clock.clone();
    let healer = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(100));
        c2.set_status(ClockStatus::FreeRunning);
    });
    let mut t = m.begin();
    t.put(b("k"), b("v")).unwrap();
    let info = block_on(t.commit()).expect("the clock came back in time");
    healer.join().unwrap();
    assert!(clock.now().unwrap().after(info.ts));
}

#[test]
fn limits_are_typed_errors_and_nothing_is_written() {
    let (m, _) = manager(Duration::ZERO);
    let limits = Limits::default();
    let mut t = m.begin();
    let big_key = vec![b'k'; limits.max_key_len + 1];
    assert_eq!(t.put(big_key.clone(), b("v")), Err(Error::KeyTooLarge { len: 4097, max: 4096 }));
    assert!(matches!(block_on(t.get(big_key)), Err(Error::KeyTooLarge { .. })));
    let big_value = vec![0u8; limits.max_value_len + 1];
    assert_eq!(t.put(b("k"), big_value), Err(Error::ValueTooLarge { len: 65537, max: 65536 }));
    t.put(b("ok"), b("v")).unwrap();
    block_on(t.commit()).unwrap();
    let r = block_on(m.read_only()).unwrap();
    assert_eq!(
        r.scan((Bound::Unbounded, Bound::Unbounded), None).unwrap(),
        vec![(b("ok"), b("v"))]
    );

    let clock = SimClock::real_time();
    let small = Limits { max_writes: 3, max_txn_bytes: 100, ..Limits::default() };
    let m = manager_on(
        MemoryEngine::new(),
        &clock,
        TxnOptions { limits: small, ..TxnOptions::default() },
    );
    let mut t = m.begin();
    for k in ["a", "b", "c"] {
        t.put(b(k), b("1")).unwrap();
    }
    t.put(b("a"), b("rewritten")).unwrap(); // rewriting a key adds no write
    assert!(
        matches!(t.put(b("d"), b("1")), Err(Error::TransactionTooLarge { ref what, max: 3 }) if what == "writes")
    );
    let mut t = m.begin();
    assert!(
        matches!(t.put(b("k"), vec![0u8; 120]), Err(Error::TransactionTooLarge { ref what, max: 100 }) if what == "bytes")
    );
}

#[test]
fn abandoned_transactions_hold_nothing_and_expired_ones_cannot_commit() {
    let clock = SimClock::real_time();
    let limits = Limits { max_lifetime: Duration::from_millis(100), ..Limits::default() };
    let m = manager_on(MemoryEngine::new(), &clock, TxnOptions { limits, ..TxnOptions::default() });
    let mut seed = m.begin();
    seed.put(b("k"), b("0")).unwrap();
    block_on(seed.commit()).unwrap();

    // An abandoned reader does not pin garbage collection.
    let mut abandoned = m.begin();
    block_on(abandoned.get(b("k"))).unwrap();
    let pinned_at = abandoned.read_ts().unwrap();
    drop(abandoned);
    let mut later = m.begin();
    later.put(b("k"), b("1")).unwrap();
    block_on(later.commit()).unwrap();
    std::thread::sleep(Duration::from_millis(5));
    let stats = block_on(m.gc(Duration::ZERO)).unwrap();
    assert!(Timestamp::from_nanos(stats.horizon) > pinned_at, "GC passed the abandoned read");
    assert_eq!(stats.versions_deleted, 1);

    // A transaction open longer than its lifetime fails at commit, retryably.
    let mut slow = m.begin();
    block_on(slow.get(b("k"))).unwrap();
    slow.put(b("k"), b("2")).unwrap();
    std::thread::sleep(Duration::from_millis(150));
    let e = block_on(slow.commit()).unwrap_err();
    assert!(matches!(e, Error::Expired { .. }) && e.is_retryable(), "{e}");
}

#[test]
fn reads_at_a_past_timestamp_are_exact_every_time_until_gc() {
    let (m, clock) = manager(Duration::from_micros(50));
    let mut stamps = Vec::new();
    for i in 0..5 {
        let mut t = m.begin();
        t.put(b("k"), b(&i.to_string())).unwrap();
        t.put(b(&format!("row{i}")), b("x")).unwrap();
        stamps.push(block_on(t.commit()).unwrap().ts);
    }
    for _round in 0..2 {
        for (i, ts) in stamps.iter().enumerate() {
            let r = block_on(m.read_at(*ts)).unwrap();
            assert_eq!(r.get("k").unwrap(), Some(b(&i.to_string())));
            assert_eq!(
                r.scan((Bound::Included(b("row")), Bound::Unbounded), None).unwrap().len(),
                i + 1
            );
        }
        let mut t = m.begin();
        t.put(b("k"), b("later")).unwrap();
        block_on(t.commit()).unwrap();
    }
    // The future is refused; so is history below the GC horizon.
    let future = clock.now().unwrap().latest().saturating_add(Duration::from_secs(1));
    assert!(matches!(block_on(m.read_at(future)), Err(Error::TimestampInFuture { .. })));
    std::thread::sleep(Duration::from_millis(5));
    block_on(m.gc(Duration::ZERO)).unwrap();
    assert!(matches!(block_on(m.read_at(stamps[0])), Err(Error::BelowGcHorizon { .. })));
}

#[test]
fn bounded_staleness_reads_are_fresh_enough_and_never_newer_than_safe() {
    let (m, clock) = manager(Duration::from_micros(200));
    let mut t = m.begin();
    t.put(b("k"), b("v1")).unwrap();
    let c1 = block_on(t.commit()).unwrap();
    let latest = clock.now().unwrap().latest();
    let r = block_on(m.read_stale(Duration::from_secs(10))).unwrap();
    assert!(r.ts() >= latest.saturating_sub(Duration::from_secs(10)));
    assert!(r.ts() <= m.safe_time());
    assert!(r.ts() >= c1.ts, "nothing pending, so safe time covers the last commit");
    assert_eq!(r.get("k").unwrap(), Some(b("v1")));
    // A zero staleness bound reads at latest (waiting if needed).
    let before = clock.now().unwrap().latest();
    assert!(block_on(m.read_stale(Duration::ZERO)).unwrap().ts() >= before);
}

/// A read at or above a pending commit's timestamp waits for it, and then sees it.
#[test]
fn readers_wait_for_pending_commits_at_or_below_their_timestamp() {
    let (m, _clock) = manager(Duration::from_millis(100));
    let m2 = m.clone();
    let committed = Arc::new(AtomicBool::new(false));
    let flag = committed.clone();
    let writer = std::thread::spawn(move || {
        let mut t = m2.begin();
        t.put(b("slow"), b("visible")).unwrap();
        let info = block_on(t.commit()).unwrap();
        flag.store(true, Ordering::SeqCst);
        info.ts
    });
    // Give the writer time to take its timestamp, then read: s_read ≥ s, so the read waits.
    std::thread::sleep(Duration::from_millis(50));
    let r = block_on(m.read_only()).unwrap();
    let s = writer.join().unwrap();
    assert!(r.ts() >= s);
    assert!(committed.load(Ordering::SeqCst), "the reader returned before the commit did");
    assert_eq!(r.get("slow").unwrap(), Some(b("visible")));
}

#[test]
fn a_failing_disk_fails_the_commit_loses_nothing_acknowledged_and_stops_the_node() {
    let clock = SimClock::real_time();
    let m = manager_on(FaultyEngine::new(MemoryEngine::new()), &clock, TxnOptions::default());
    let mut t = m.begin();
    t.put(b("acked"), b("1")).unwrap();
    block_on(t.commit()).unwrap();

    m.mvcc().engine().set_fail_writes(true);
    let mut t = m.begin();
    t.put(b("lost"), b("never acknowledged")).unwrap();
    let e = block_on(t.commit()).unwrap_err();
    assert!(e.is_fatal(), "{e}");
    assert!(e.to_string().contains("No space left on device"), "{e}");
    // The node is stopped: every later operation gets the same fatal error.
    assert_eq!(block_on(m.read_only()).err(), Some(e.clone()));
    let mut t = m.begin();
    t.put(b("x"), b("y")).unwrap();
    assert_eq!(block_on(t.commit()).err(), Some(e));
    // What was acknowledged is still there (recovery would reopen this storage).
    let mvcc = m.mvcc();
    assert_eq!(mvcc.get(b"acked", u64::MAX - 1).unwrap(), Some(b"1".to_vec()));
    assert_eq!(mvcc.get(b"lost", u64::MAX - 1).unwrap(), None);
}

/// Bank transfers from many threads, with snapshot reads checking that money is never created
/// or lost: every read-only snapshot sums to the initial total.
#[test]
fn the_bank_total_never_changes_in_any_snapshot() {
    let (m, _clock) = manager(Duration::from_micros(500));
    const ACCOUNTS: u64 = 8;
    const TOTAL: i64 = 8000;
    let mut t = m.begin();
    for a in 0..ACCOUNTS {
        t.put(b(&format!("acct{a}")), b(&(TOTAL / ACCOUNTS as i64).to_string())).unwrap();
    }
    block_on(t.commit()).unwrap();
    let balance = |v: Option<bytes::Bytes>| -> i64 {
        std::str::from_utf8(&v.unwrap()).unwrap().parse().unwrap()
    };
    let stop = Arc::new(AtomicBool::new(false));
    let movers: Vec<_> = (0..4u64)
        .map(|t| {
            let m = m.clone();
            std::thread::spawn(move || {
                let mut done = 0;
                for i in 0..60u64 {
                    let (from, to) = ((t + i) % ACCOUNTS, (t * 3 + i * 5 + 1) % ACCOUNTS);
                    if from == to {
                        continue;
                    }
                    loop {
                        let mut txn = m.begin();
                        let f = balance(block_on(txn.get(b(&format!("acct{from}")))).unwrap());
                        let g = balance(block_on(txn.get(b(&format!("acct{to}")))).unwrap());
                        let amount = (i as i64 % 7) + 1;
                        txn.put(b(&format!("acct{from}")), b(&(f - amount).to_string())).unwrap();
                        txn.put(b(&format!("acct{to}")), b(&(g + amount).to_string())).unwrap();
                        match block_on(txn.commit()) {
                            Ok(_) => break,
                            Err(e) if e.is_retryable() => continue,
                            Err(e) => panic!("{e}"),
                        }
                    }
                    done += 1;
                }
                done
            })
        })
        .collect();
    let reader = {
        let (m, stop) = (m.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut reads = 0;
            while !stop.load(Ordering::Relaxed) && reads < 10_000 {
                let r = block_on(m.read_only()).unwrap();
                let rows = r
                    .scan((Bound::Included(b("acct")), Bound::Excluded(b("acct~"))), None)
                    .unwrap();
                assert_eq!(rows.len() as u64, ACCOUNTS);
                let sum: i64 = rows.iter().map(|(_, v)| balance(Some(v.clone()))).sum();
                assert_eq!(sum, TOTAL, "a snapshot at {:?} saw money appear or vanish", r.ts());
                reads += 1;
            }
            reads
        })
    };
    let transfers: u64 = movers.into_iter().map(|h| h.join().unwrap()).sum();
    stop.store(true, Ordering::Relaxed);
    let reads = reader.join().unwrap();
    assert!(transfers > 100 && reads > 10, "{transfers} transfers, {reads} snapshot reads");
}
