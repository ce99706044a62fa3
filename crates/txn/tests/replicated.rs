//! Replicated transactions in one process: three (or more) replicas on memory engines, an
//! in-memory network that can cut links, and simulated clocks sharing one true time.
//!
//! Each test's doc comment lists its scenario. Timing is never asserted: every wait is bounded
//! and a test fails only when a guarantee breaks or the cluster does not recover in time.

mod cluster;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use boundkv_clockbound::{Clock, ClockStatus, SimClock, Timestamp};
use boundkv_consensus::node::Role;
use boundkv_consensus::transport::MemoryRouter;
use boundkv_storage::{Engine as _, MemoryEngine};
use boundkv_txn::replica::{ReadAt, Replica, ReplicaOptions, ReplicaOptionsError};
use boundkv_txn::{CommitRequest, Error, TxnId};
use cluster::{Cluster, blind, member};

const WITHIN: Duration = Duration::from_secs(10);
const MS: Duration = Duration::from_millis(1);

/// - start three founding members;
/// - a leader is elected and becomes active;
/// - a write through it is readable at `now().latest` on every replica, the followers serving
///   from their closed timestamps.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t10_elects_replicates_and_serves_follower_reads() {
    let c = Cluster::start(3, MS);
    let leader = c.leader(WITHIN).await;
    let info = c.write(&[("greeting", Some("hello"))], WITHIN).await;
    for id in c.ids() {
        let (ts, value) = c.read_latest(id, "greeting").await.expect("a read at latest");
        assert!(ts > info.ts, "node {id}: a read after the commit reads above it");
        assert_eq!(
            value.as_deref(),
            Some(&b"hello"[..]),
            "node {id} (leader {leader}) sees the write"
        );
    }
    let followers: Vec<u64> = c.ids().into_iter().filter(|&i| i != leader).collect();
    for id in followers {
        assert_eq!(c.node(id).state().role, Role::Follower);
        assert!(
            c.node(id).closed_ts() >= info.ts,
            "node {id}'s closed timestamp passed the commit"
        );
    }
    c.shutdown();
}

/// - an idle cluster (a leader elected, one write, then nothing) appends nothing to its log
///   for a second (closed timestamps travel beside it), yet every follower's closed timestamp
///   keeps moving and a follower read at `latest` begun after the write sees it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t13_an_idle_cluster_writes_nothing_and_followers_still_read() {
    let c = Cluster::start(3, MS);
    let leader = c.leader(WITHIN).await;
    c.write(&[("k", Some("v"))], WITHIN).await;
    let followers: Vec<u64> = c.ids().into_iter().filter(|&i| i != leader).collect();
    // Let the write's commit index reach every member.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before: Vec<(u64, Timestamp)> =
        c.ids().iter().map(|&i| (c.node(i).state().last_index, c.node(i).closed_ts())).collect();
    tokio::time::sleep(Duration::from_secs(1)).await;
    for (n, &id) in c.ids().iter().enumerate() {
        let s = c.node(id).state();
        assert_eq!(s.last_index, before[n].0, "node {id}: an idle log grows by nothing");
        if id != leader {
            assert!(
                c.node(id).closed_ts() > before[n].1,
                "node {id}: closed timestamps keep arriving on an idle cluster"
            );
        }
    }
    for id in followers {
        let (_, v) = c.read_latest(id, "k").await.expect("a follower read");
        assert_eq!(v.as_deref(), Some(&b"v"[..]), "node {id}");
    }
    c.shutdown();
}

/// - the leader, cut off from its followers, has a commit in flight; it is shut down;
/// - the commit's caller hears that its outcome is unknown (its entry may still commit under
///   the next leader), and by then the stopped node leads nothing: it issues no timestamp and
///   closes none on its old lease (a close above the commit, with an applied index below its
///   entry, would let a follower serve reads that miss it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t14_a_stopped_leader_leads_nothing_before_its_proposals_fail() {
    // A 1 s election timeout: check quorum must not depose the cut-off leader before it stops.
    let c = Cluster::start_with(3, MS, |o| o.node.election_ticks = 100);
    let leader = c.leader(WITHIN).await;
    c.isolate(leader);
    let node = c.node(leader);
    let commit = tokio::spawn({
        let node = node.clone();
        async move { node.commit(blind(&[("k", Some("v"))])).await }
    });
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert!(node.state().leader_state.is_some(), "still leading, its lease still valid");
    node.shutdown();
    assert!(node.state().leader_state.is_none(), "a stopped node publishes that it leads nothing");
    let outcome = tokio::time::timeout(WITHIN, commit).await.expect("answered").expect("joined");
    assert!(matches!(outcome, Err(Error::OutcomeUnknown(_))), "unexpected {outcome:?}");
    assert!(!node.lease_valid(), "no lease to close timestamps on");
    c.shutdown();
}

/// - a commit with a transaction id, then the same request again (a client's retry), then
///   again concurrently: exactly one version is written, and every answer has the same
///   timestamp.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t11_a_retried_commit_applies_once() {
    let c = Cluster::start(3, MS);
    let leader = c.node(c.leader(WITHIN).await);
    let req = blind(&[("k", Some("v1"))]);
    let first = leader.commit(req.clone()).await.expect("commit");
    let again = leader.commit(req.clone()).await.expect("the retry is answered");
    assert_eq!(again.ts, first.ts, "the retry reports the first attempt's timestamp");
    let req2 = blind(&[("k2", Some("v"))]);
    let (a, b) = tokio::join!(leader.commit(req2.clone()), leader.commit(req2.clone()));
    assert_eq!(a.expect("a").ts, b.expect("b").ts, "concurrent duplicates share one commit");
    let versions: usize = leader
        .mvcc()
        .engine()
        .scan((std::ops::Bound::Unbounded, std::ops::Bound::Unbounded))
        .filter_map(Result::ok)
        .filter(|(k, _)| k.first() == Some(&0x01) && k[1..].starts_with(b"k2"))
        .count();
    assert_eq!(versions, 1, "one version of k2");
    c.shutdown();
}

/// - a replica whose lease no clock bound fits (renewed as often as it lasts) refuses to start,
///   with a typed error that names the numbers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t12_a_lease_no_clock_bound_fits_is_refused_at_start() {
    let mut options = ReplicaOptions {
        node: cluster::fast_node(1),
        founding: Some(vec![member(1)]),
        ..ReplicaOptions::default()
    };
    options.node.lease_renewal = options.node.lease;
    let e = Replica::start(
        options,
        Arc::new(MemoryEngine::new()),
        Arc::new(SimClock::real_time()),
        MemoryRouter::new().transport(1),
    )
    .err()
    .expect("the replica refuses to start");
    assert!(
        matches!(e, Error::InvalidOptions(ReplicaOptionsError::NoUsableLease { .. })),
        "unexpected error {e}"
    );
    assert!(e.to_string().contains("a lease of 300ms renewed every 300ms"), "{e}");
}

/// - the leader is stopped;
/// - a new leader is elected; writes go on; everything written before is still there;
/// - the old leader restarts and catches up from the log: it serves the new writes;
/// - commit timestamps of writes made one after another, across the failover, increase.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t20_leader_failover_and_catch_up() {
    let c = Cluster::start(3, MS);
    let first = c.leader(WITHIN).await;
    let mut stamps = Vec::new();
    for i in 0..5 {
        stamps.push(c.write(&[(&format!("a{i}"), Some("1"))], WITHIN).await.ts);
    }
    c.stop(first);
    let second = c.new_leader(first, WITHIN).await;
    for i in 0..5 {
        stamps.push(c.write(&[(&format!("b{i}"), Some("2"))], WITHIN).await.ts);
    }
    assert!(stamps.windows(2).all(|w| w[0] < w[1]), "timestamps follow real time: {stamps:?}");
    c.restart(first);
    let (_, v) = read_until(&c, first, "b4", WITHIN).await;
    assert_eq!(v.as_deref(), Some(&b"2"[..]), "the restarted node caught up");
    for id in c.ids() {
        let (_, v) = c.read_latest(id, "a0").await.expect("read");
        assert_eq!(v.as_deref(), Some(&b"1"[..]), "node {id} (leader now {second}) kept a0");
    }
    c.shutdown();
}

/// - the leader is cut off from both followers (a minority partition);
/// - the majority elects a new leader and commits a write;
/// - the isolated old leader cannot commit, and never serves a read that misses the write: its
///   reads at `latest` fail (`FollowerBehind` / not the leader) rather than answer stale;
/// - after healing, it steps down, catches up and serves the write.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t30_a_partitioned_leader_neither_commits_nor_reads_stale() {
    let c = Cluster::start_with(3, MS, |o| o.follower_wait = Duration::from_millis(300));
    let old = c.leader(WITHIN).await;
    c.write(&[("x", Some("before"))], WITHIN).await;
    c.isolate(old);
    let new = c.new_leader(old, WITHIN).await;
    c.write(&[("x", Some("after"))], WITHIN).await;
    let isolated = c.node(old);
    let commit = isolated.commit(blind(&[("y", Some("lost"))])).await;
    assert!(commit.is_err(), "the isolated old leader cannot commit: {commit:?}");
    for _ in 0..5 {
        match c.read_latest(old, "x").await {
            Ok((_, v)) => panic!("the isolated node served a read at latest: {v:?}"),
            Err(Error::FollowerBehind { .. } | Error::NotLeader { .. } | Error::Unavailable(_)) => {
            }
            Err(e) => panic!("unexpected error {e}"),
        }
    }
    c.heal();
    let (_, v) = read_until(&c, old, "x", WITHIN).await;
    assert_eq!(
        v.as_deref(),
        Some(&b"after"[..]),
        "after healing node {old} serves the write (leader {new})"
    );
    let (_, y) = c.read_latest(new, "y").await.expect("read y");
    if let Err(Error::NotLeader { .. }) = commit {
        assert_eq!(y, None, "a commit answered NotLeader did not apply");
    }
    c.shutdown();
}

/// Lease safety under a leader pause longer than the lease:
/// - the leader's Raft thread stops for 1.5 s (five leases), as a paused process would;
/// - meanwhile the others elect a new leader, which commits `x = after`;
/// - reads at `latest` on the paused leader, issued after that commit was acknowledged, must
///   never return `before`: they wait or fail until the node has learned of the new term.
///
/// Its mutation twin ([`t31_mutant_without_leases_reads_stale`]) shows the check can fail.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t31_lease_safety_under_a_leader_pause() {
    let stale = paused_leader_reads(false).await;
    assert_eq!(stale, 0, "a paused leader served {stale} stale reads");
}

/// The mutation twin of [`t31_lease_safety_under_a_leader_pause`]: with leases ignored
/// (test-only switch), the paused leader still believes it leads and serves the old value.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t31_mutant_without_leases_reads_stale() {
    let stale = paused_leader_reads(true).await;
    assert!(stale > 0, "the mutant was expected to serve stale reads, and the test to see them");
}

/// A clock bound too wide for the lease (issue 11, bug 3). The test cluster's lease is 300 ms,
/// renewed every 50 ms: a lease is usable only with bounds up to ±125 ms
/// (`2 × bound + lease_renewal ≤ lease`; see `ReplicaOptions::lease_bound_ceiling`).
/// - the cluster starts with ±1 ms bounds (the settings are valid) and commits;
/// - every clock's bound grows to ±200 ms, within the policy's own ceiling (±1 s) but too wide
///   for any timestamp to fall inside the lease: a commit at the leader fails promptly with a
///   clock error that names the bound (not "the lease has lapsed", not a hang), and so does a
///   read at `latest` at a follower;
/// - the bounds shrink back: the cluster commits and serves again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t32_a_clock_bound_too_wide_for_the_lease_is_a_clock_error() {
    let c = Cluster::start_with(3, MS, |o| {
        o.policy.unavailable_timeout = Duration::from_millis(300);
    });
    let leader = c.leader(WITHIN).await;
    c.write(&[("k", Some("v1"))], WITHIN).await;
    // Past the new leader's wait for earlier leases, as in a cluster that has run a while.
    tokio::time::sleep(Duration::from_millis(600)).await;
    for clock in c.clocks.values() {
        clock.set_bound(200 * MS);
    }
    // Until the last lease measured with the narrow bound runs out, timestamps may still fit in
    // it; the steady state comes after.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let started = std::time::Instant::now();
    let e = c.node(leader).commit(blind(&[("k", Some("v2"))])).await.expect_err("no commit");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "the commit failed after {:?}, not promptly: {e}",
        started.elapsed()
    );
    assert!(matches!(e, Error::Clock(_)), "expected a clock error, got: {e}");
    assert!(e.to_string().contains("200ms"), "the error names the bound: {e}");
    let follower = c.ids().into_iter().find(|&i| i != leader).unwrap();
    match c.read_latest(follower, "k").await {
        Err(e @ Error::Clock(_)) => {
            assert!(e.to_string().contains("200ms"), "the error names the bound: {e}")
        }
        other => panic!("expected a clock error at follower {follower}, got {other:?}"),
    }
    for clock in c.clocks.values() {
        clock.set_bound(MS);
    }
    let info = c.write(&[("k", Some("v3"))], WITHIN).await;
    let (ts, v) = read_until(&c, follower, "k", WITHIN).await;
    assert!(ts > info.ts);
    assert_eq!(v.as_deref(), Some(&b"v3"[..]), "the cluster serves again");
    c.shutdown();
}

/// Issue 12, item 5: an unusable clock gets a prompt, definite answer. One replica, a 300 ms
/// `unavailable_timeout`, a 100 ms bound (commit wait about 200 ms):
/// - a commit is proposed and applied, then the clock turns `Unknown` before its commit wait is
///   over; the clock stays `Unknown` for 1.5 s, five times the timeout;
/// - meanwhile a new commit fails with `Error::Clock` within the timeout (plus slack), and
///   nothing of it is ever applied; a new read-only timestamp fails the same way; a read at a
///   snapshot taken before keeps being served; a resend of the commit in flight is not answered
///   with `Error::Clock` (it joins the commit in flight);
/// - the commit in flight is not acknowledged while the clock is `Unknown`, and is once it is
///   `Synchronized` again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t33_an_unusable_clock_refuses_new_commits_promptly_and_holds_proposed_ones() {
    let timeout = Duration::from_millis(300);
    let c = Cluster::start_with(1, 100 * MS, move |o| o.policy.unavailable_timeout = timeout);
    let leader = c.node(c.leader(WITHIN).await);
    let clock = c.clocks[&1].clone();
    c.write(&[("k", Some("v1"))], WITHIN).await;
    let snapshot = leader.begin_read_only(ReadAt::Latest).await.expect("a snapshot");
    // Its timestamp closes, as it would in a cluster that has run a while.
    tokio::time::sleep(Duration::from_millis(100)).await;

    // A commit that is proposed and applied, then caught by the clock going away mid-wait.
    let (held, in_flight) = loop {
        let req = blind(&[("held", Some("v"))]);
        let task = tokio::spawn({
            let leader = leader.clone();
            let req = req.clone();
            async move { leader.commit(req).await }
        });
        let deadline = std::time::Instant::now() + Duration::from_secs(1);
        while versions_of(&c, 1, "held") == 0 && !task.is_finished() {
            assert!(std::time::Instant::now() < deadline, "the commit was never applied");
            tokio::time::sleep(Duration::from_micros(200)).await;
        }
        if versions_of(&c, 1, "held") > 0 && !task.is_finished() {
            clock.set_status(ClockStatus::Unknown);
            break (req, task);
        }
        // Refused before it took a timestamp (a lease renewal under way, say): again.
        task.await.unwrap().expect_err("no version, no acknowledgement");
    };
    let unknown_since = std::time::Instant::now();

    let refused = blind(&[("refused", Some("v"))]);
    let started = std::time::Instant::now();
    let e = tokio::time::timeout(WITHIN, leader.commit(refused.clone()))
        .await
        .expect("an answer while the clock is still unknown")
        .expect_err("no clock, no commit");
    let took = started.elapsed();
    assert!(matches!(e, Error::Clock(_)), "a definite clock error, not {e:?}");
    assert!(
        took >= timeout && took < timeout + Duration::from_millis(700),
        "refused after {took:?}, expected the {timeout:?} timeout"
    );
    assert!(e.to_string().contains("Unknown"), "the error names the clock's status: {e}");
    let started = std::time::Instant::now();
    let e = leader.begin_read_only(ReadAt::Latest).await.expect_err("no clock, no new snapshot");
    assert!(matches!(e, Error::Clock(_)), "{e:?}");
    assert!(started.elapsed() < timeout + Duration::from_millis(700), "{:?}", started.elapsed());
    let v = leader.get(snapshot, b"k").await.expect("a read at a safe timestamp is served");
    assert_eq!(v.as_deref(), Some(&b"v1"[..]));
    match tokio::time::timeout(Duration::from_millis(500), leader.commit(held.clone())).await {
        Err(_) => {} // joined the commit in flight, which cannot finish yet
        Ok(r) => panic!("a resend of a proposed commit answered while the clock is unknown: {r:?}"),
    }

    tokio::time::sleep(Duration::from_millis(1500).saturating_sub(unknown_since.elapsed())).await;
    assert!(!in_flight.is_finished(), "acknowledged while the clock was unknown");
    clock.set_status(ClockStatus::Synchronized);
    let recovered = std::time::Instant::now();
    let info = in_flight.await.unwrap().expect("acknowledged once the clock is back");
    assert!(recovered.elapsed() < Duration::from_secs(3));
    assert!(clock.now().unwrap().after(info.ts), "acknowledged after its commit wait");
    assert_eq!(versions_of(&c, 1, "refused"), 0, "nothing of the refused commit applied");
    let (_, v) = read_until(&c, 1, "held", WITHIN).await;
    assert_eq!(v.as_deref(), Some(&b"v"[..]));
    let (_, v) = c.read_latest(1, "refused").await.expect("a read once the clock is back");
    assert_eq!(v, None, "the refused commit never applied");
    c.shutdown();
}

/// Runs the pause scenario; returns how many reads at the paused leader returned the stale value.
async fn paused_leader_reads(ignore_lease: bool) -> usize {
    let c = Cluster::start_with(3, MS, move |o| {
        o.unsafe_ignore_lease = ignore_lease;
        o.follower_wait = Duration::from_millis(200);
    });
    let old = c.leader(WITHIN).await;
    c.write(&[("x", Some("before"))], WITHIN).await;
    let paused = c.node(old);
    paused.node().pause_for_test(Duration::from_millis(1500));
    // The others elect a leader and commit while the old one sleeps.
    let deadline = std::time::Instant::now() + WITHIN;
    let new = loop {
        let mut found = None;
        for id in c.ids().into_iter().filter(|&i| i != old) {
            if c.node(id).state().role == Role::Leader {
                found = Some(id);
            }
        }
        if let Some(id) = found {
            break id;
        }
        assert!(std::time::Instant::now() < deadline, "no new leader during the pause");
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let info = loop {
        match c.node(new).commit(blind(&[("x", Some("after"))])).await {
            Ok(info) => break info,
            Err(_) if std::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(10)).await
            }
            Err(e) => panic!("the new leader could not commit: {e}"),
        }
    };
    // Reads at the paused node, each begun after the commit was acknowledged.
    let mut stale = 0;
    for _ in 0..10 {
        if let Ok((ts, v)) = c.read_latest(old, "x").await
            && v.as_deref() == Some(&b"before"[..])
        {
            assert!(ts > info.ts || ignore_lease, "a read at latest is above the commit");
            stale += 1;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    c.shutdown();
    stale
}

/// Snapshot catch-up:
/// - node 3 stops; 300 writes go in, and the log is compacted behind them (keep 20 entries);
/// - node 3 restarts: the entries it lacks are gone, so the leader sends a snapshot; it installs
///   it and serves every write.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t40_a_lagging_follower_catches_up_by_snapshot() {
    let c = Cluster::start_with(3, MS, |o| o.node.keep_entries = 20);
    let leader = c.leader(WITHIN).await;
    let lagging = c.ids().into_iter().find(|&i| i != leader).unwrap();
    c.stop(lagging);
    for i in 0..300 {
        c.write(&[(&format!("k{i:03}"), Some("v"))], WITHIN).await;
    }
    let first = boundkv_consensus::raft::Storage::first_index(
        &boundkv_consensus::log_store::RaftLogStore::open(c.engines[&leader].clone()).unwrap(),
    )
    .unwrap();
    assert!(first > 50, "the leader compacted its log (first index {first})");
    c.restart(lagging);
    let (_, v) = read_until(&c, lagging, "k299", WITHIN).await;
    assert_eq!(v.as_deref(), Some(&b"v"[..]));
    let (_, v) = c.read_latest(lagging, "k000").await.unwrap();
    assert_eq!(v.as_deref(), Some(&b"v"[..]), "the snapshot carried the old writes");
    let truncated = boundkv_consensus::log_store::RaftLogStore::open(c.engines[&lagging].clone())
        .unwrap()
        .truncated();
    assert!(
        truncated.0 > 1,
        "node {lagging} installed a snapshot (log starts after {truncated:?})"
    );
    c.shutdown();
}

/// Membership with joint consensus:
/// - node 4 starts empty (not a founding member) and is added: as a learner, caught up (by
///   snapshot: the log is compacted), promoted to voter through a joint configuration, which
///   is then left;
/// - node 1 is removed the same way (if it leads, it hands leadership over first);
/// - writes go on, and node 4 serves them, with the membership it learned from the snapshot.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t50_add_a_learner_promote_it_and_remove_a_voter() {
    let mut c = Cluster::start_with(3, MS, |o| o.node.keep_entries = 20);
    c.leader(WITHIN).await;
    for i in 0..100 {
        c.write(&[(&format!("m{i:03}"), Some("v"))], WITHIN).await;
    }
    c.add_node(4, MS);
    let members = retry_leader(&c, |n| {
        let n = n.clone();
        async move { n.add_member(member(4)).await }
    })
    .await;
    assert!(members.iter().any(|m| m.member.id == 4 && m.voter), "node 4 votes: {members:?}");
    let state = settled_conf(&c, &[1, 2, 3, 4]).await;
    assert!(!state.is_joint(), "the joint configuration was left");

    let members = retry_leader(&c, |n| {
        let n = n.clone();
        async move { n.remove_member(1).await }
    })
    .await;
    assert!(members.iter().all(|m| m.member.id != 1), "node 1 is gone: {members:?}");
    let state = settled_conf(&c, &[2, 3, 4]).await;
    assert_ne!(state.id, 1, "node 1 no longer leads");
    assert!(!state.is_joint());

    c.write(&[("after", Some("membership"))], WITHIN).await;
    let (_, v) = read_until(&c, 4, "after", WITHIN).await;
    assert_eq!(v.as_deref(), Some(&b"membership"[..]));
    let (_, v) = c.read_latest(4, "m000").await.unwrap();
    assert_eq!(v.as_deref(), Some(&b"v"[..]), "node 4 has the data from before it joined");
    let addresses = c.node(4).members();
    assert!(
        addresses.iter().any(|m| m.member.id == 2 && m.member.client_address == "mem-client-2"),
        "node 4 knows the founding members' addresses: {addresses:?}"
    );
    c.shutdown();
}

/// Read-write transactions across replicas: a transaction that read a key conflicts with a
/// commit to it after its read timestamp; one that read before a leader change is `Expired`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t60_validation_and_leader_change() {
    let c = Cluster::start(3, MS);
    let leader = c.node(c.leader(WITHIN).await);
    let r = leader.begin_read_write().await.unwrap();
    assert_eq!(leader.get(r, b"acct").await.unwrap(), None);
    c.write(&[("acct", Some("10"))], WITHIN).await;
    let stale = CommitRequest {
        txn_id: TxnId::random(),
        read_ts: Some(r),
        read_keys: [Bytes::from("acct")].into(),
        read_ranges: vec![],
        writes: [(Bytes::from("acct"), Some(Bytes::from("1")))].into(),
    };
    match leader.commit(stale).await {
        Err(Error::Conflict { key, .. }) => assert_eq!(key, "acct"),
        other => panic!("expected a conflict, got {other:?}"),
    }
    let r2 = leader.begin_read_write().await.unwrap();
    let old = leader.id();
    c.stop(old);
    let new = c.node(c.new_leader(old, WITHIN).await);
    let late = CommitRequest {
        txn_id: TxnId::random(),
        read_ts: Some(r2),
        read_keys: [Bytes::from("acct")].into(),
        read_ranges: vec![],
        writes: [(Bytes::from("acct"), Some(Bytes::from("2")))].into(),
    };
    match new.commit(late).await {
        Err(Error::Expired { .. }) => {}
        other => panic!("a transaction that read under the old leader must be Expired: {other:?}"),
    }
    c.shutdown();
}

/// External consistency across replicas whose clocks err in opposite directions (+4 ms on every
/// node but the reader, -4 ms on the reader, bound 5 ms): a write acknowledged by the leader is
/// seen by a read at `latest` begun afterwards on a follower, every time. Its mutation twin
/// ([`t70_mutant_without_commit_wait_reads_stale`]) acknowledges without commit wait and must be
/// caught.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t70_follower_reads_see_acknowledged_writes_under_skew() {
    let missed = skewed_hand_offs(false).await;
    assert_eq!(missed, 0, "{missed} follower reads missed an acknowledged write");
}

/// See [`t70_follower_reads_see_acknowledged_writes_under_skew`].
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t70_mutant_without_commit_wait_reads_stale() {
    let missed = skewed_hand_offs(true).await;
    assert!(missed > 0, "without commit wait the follower must miss some writes");
}

async fn skewed_hand_offs(skip_commit_wait: bool) -> usize {
    let bound = Duration::from_millis(5);
    let c =
        Cluster::start_with(3, bound, move |o| o.txn.unsafe_skip_commit_wait = skip_commit_wait);
    let leader = c.leader(WITHIN).await;
    let reader = c.ids().into_iter().find(|&i| i != leader).unwrap();
    for (&id, clock) in &c.clocks {
        clock.set_offset_nanos(if id == reader { -4_000_000 } else { 4_000_000 });
    }
    let mut missed = 0;
    for i in 0..20 {
        let value = format!("v{i}");
        let info = c.write(&[("probe", Some(&value))], WITHIN).await;
        // The acknowledgement is in: a read that begins now must see the write.
        let (ts, seen) = c.read_latest(reader, "probe").await.expect("follower read");
        if seen.as_deref() != Some(value.as_bytes()) {
            assert!(skip_commit_wait, "read at {ts:?} missed the commit at {:?}", info.ts);
            missed += 1;
        }
    }
    c.shutdown();
    missed
}

/// Reads at exact and bounded-stale timestamps on followers; a timestamp beyond a replica's
/// clock is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t80_time_travel_and_staleness_on_followers() {
    let c = Cluster::start(3, MS);
    let leader = c.leader(WITHIN).await;
    let one = c.write(&[("t", Some("1"))], WITHIN).await;
    let two = c.write(&[("t", Some("2"))], WITHIN).await;
    let follower = c.node(c.ids().into_iter().find(|&i| i != leader).unwrap());
    let ts = follower.begin_read_only(ReadAt::Exact(one.ts)).await.unwrap();
    assert_eq!(follower.get(ts, b"t").await.unwrap().as_deref(), Some(&b"1"[..]));
    let ts = follower.begin_read_only(ReadAt::Exact(two.ts)).await.unwrap();
    assert_eq!(follower.get(ts, b"t").await.unwrap().as_deref(), Some(&b"2"[..]));
    let ts = follower.begin_read_only(ReadAt::MaxStaleness(Duration::from_secs(10))).await.unwrap();
    assert!(ts >= two.ts || follower.get(ts, b"t").await.unwrap().is_some());
    let future = Timestamp::from_nanos(two.ts.as_nanos() + 3_600_000_000_000);
    assert!(matches!(
        follower.begin_read_only(ReadAt::Exact(future)).await,
        Err(Error::TimestampInFuture { .. })
    ));
    c.shutdown();
}

/// The leader's published state once its voters are `voters` (the state is published after
/// each Raft round, so it may trail an applied change by a moment).
async fn settled_conf(c: &Cluster, voters: &[u64]) -> boundkv_consensus::node::NodeState {
    let want: BTreeSet<u64> = voters.iter().copied().collect();
    let deadline = std::time::Instant::now() + WITHIN;
    loop {
        let state = c.node(c.leader(WITHIN).await).state();
        let have: BTreeSet<u64> = state.conf.voters.iter().copied().collect();
        if have == want && !state.is_joint() {
            return state;
        }
        assert!(std::time::Instant::now() < deadline, "voters {have:?}, expected {want:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Reads `key` at latest on `node` until it is present (or the deadline).
async fn read_until(
    c: &Cluster,
    node: u64,
    key: &str,
    within: Duration,
) -> (Timestamp, Option<Bytes>) {
    let deadline = std::time::Instant::now() + within;
    loop {
        if let Ok((ts, Some(v))) = c.read_latest(node, key).await {
            return (ts, Some(v));
        }
        assert!(std::time::Instant::now() < deadline, "node {node} never served {key}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Runs `f` at the current leader until it succeeds (retryable errors are retried).
async fn retry_leader<T, F, Fut>(c: &Cluster, f: F) -> T
where
    F: Fn(&std::sync::Arc<boundkv_txn::replica::Replica<boundkv_storage::MemoryEngine>>) -> Fut,
    Fut: std::future::Future<Output = Result<T, Error>>,
{
    let deadline = std::time::Instant::now() + WITHIN * 3;
    loop {
        let l = c.node(c.leader(WITHIN).await);
        match f(&l).await {
            Ok(t) => return t,
            Err(e) if e.is_retryable() && std::time::Instant::now() < deadline => {
                tracing::info!("retrying: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("failed: {e}"),
        }
    }
}

/// The versions of `key` in node `id`'s engine (every timestamp, collected or not).
fn versions_of(c: &Cluster, id: u64, key: &str) -> usize {
    c.engines[&id]
        .scan((std::ops::Bound::Unbounded, std::ops::Bound::Unbounded))
        .filter_map(Result::ok)
        .filter(|(k, _)| k.first() == Some(&0x01) && k[1..].starts_with(key.as_bytes()))
        .count()
}

/// - GC on: 300 ms of retention, the horizon raised every 50 ms;
/// - ten versions of one key, then a tombstone on another over its two versions;
/// - the horizon rises through the log on every replica; each deletes what no read at or
///   above it can see: one version of the first key is left, none of the second;
/// - reads below the horizon are refused (`BelowGcHorizon`) at the leader and at followers;
///   reads above it see the newest value, and the deleted key stays deleted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t90_the_gc_horizon_is_replicated_and_every_replica_collects() {
    let c = Cluster::start_with(3, MS, |o| {
        o.gc_retention = Some(Duration::from_millis(300));
        o.gc_interval = Duration::from_millis(50);
    });
    c.leader(WITHIN).await;
    let mut first = None;
    for i in 0..10 {
        let v = format!("v{i}");
        let info = c.write(&[("k", Some(v.as_str()))], WITHIN).await;
        first.get_or_insert(info.ts);
    }
    c.write(&[("gone", Some("a"))], WITHIN).await;
    c.write(&[("gone", Some("b"))], WITHIN).await;
    let last = c.write(&[("gone", None)], WITHIN).await.ts;
    let deadline = std::time::Instant::now() + WITHIN;
    for id in c.ids() {
        while !(c.node(id).gc_horizon() > last
            && versions_of(&c, id, "k") == 1
            && versions_of(&c, id, "gone") == 0)
        {
            assert!(
                std::time::Instant::now() < deadline,
                "node {id}: horizon {} (last commit {last}), {} versions of k, {} of gone",
                c.node(id).gc_horizon(),
                versions_of(&c, id, "k"),
                versions_of(&c, id, "gone")
            );
            tokio::time::sleep(10 * MS).await;
        }
    }
    let first = first.unwrap();
    for id in c.ids() {
        let node = c.node(id);
        assert!(
            matches!(
                node.begin_read_only(ReadAt::Exact(first)).await,
                Err(Error::BelowGcHorizon { .. })
            ),
            "node {id} refuses a read below the horizon"
        );
        assert!(matches!(node.get(first, b"k").await, Err(Error::BelowGcHorizon { .. })));
        let (_, value) = c.read_latest(id, "k").await.expect("a read at latest");
        assert_eq!(value.as_deref(), Some(&b"v9"[..]), "node {id}");
        assert_eq!(c.read_latest(id, "gone").await.expect("a read").1, None, "node {id}");
    }
    c.shutdown();
}

/// - three members; the leader's clock is set 250 ms ahead while it keeps claiming its bound;
/// - within a few probe rounds its peers' clock checks fence it: it hands leadership to a
///   member whose clock agrees, and answers reads and commits with `ClockFenced`, naming why;
/// - its clock is put right: the fence lifts by itself and it serves follower reads again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t90_a_lying_member_is_fenced_and_unfenced() {
    use std::time::Instant;
    let c = Cluster::start(3, MS);
    let liar = c.leader(WITHIN).await;
    c.write(&[("k", Some("1"))], WITHIN).await;
    c.clocks[&liar].set_offset_nanos(250_000_000);
    let fenced = |id: u64| c.node(id).state().clock_fence;
    let deadline = Instant::now() + WITHIN;
    while fenced(liar).is_none() {
        assert!(Instant::now() < deadline, "n{liar} was not fenced");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let why = fenced(liar).unwrap();
    assert!(why.contains("disagrees with the majority"), "{why}");
    let new = c.new_leader(liar, WITHIN).await;
    assert_ne!(new, liar, "the fenced leader handed leadership away");
    for id in c.ids().into_iter().filter(|&i| i != liar) {
        assert!(fenced(id).is_none(), "n{id} tells the truth and is not fenced");
    }
    match c.node(liar).begin_read_only(ReadAt::Latest).await {
        Err(Error::ClockFenced { node, reason }) => {
            assert_eq!(node, liar);
            assert!(reason.contains("offsets"), "{reason}");
        }
        other => panic!("a fenced member must refuse a read: {other:?}"),
    }
    let report = c.node(liar).node().clock_checks();
    assert!(report.peers.values().all(|p| !p.consistent && p.offset_nanos < -200_000_000));
    // Put right: the fence lifts, and the member serves again.
    c.clocks[&liar].set_offset_nanos(0);
    let deadline = Instant::now() + WITHIN;
    while fenced(liar).is_some() {
        assert!(Instant::now() < deadline, "n{liar}'s fence did not lift");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let info = c.write(&[("k", Some("2"))], WITHIN).await;
    let (ts, value) = c.read_latest(liar, "k").await.expect("a read after the fence lifted");
    assert!(ts > info.ts);
    assert_eq!(value.as_deref(), Some(&b"2"[..]));
    c.shutdown();
}
