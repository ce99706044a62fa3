//! t90: bugs the simulator found beyond issue 11's four, each pinned by a small scenario on the
//! simulated cluster (one thread, virtual time, so each runs in milliseconds and the same way
//! every time).

use std::sync::Arc;
use std::time::Duration;

use boundkv_consensus::node::Role;
use boundkv_sim::cluster::{ClusterConfig, SimulatedCluster};
use boundkv_sim::{SimTime, Trace};
use boundkv_txn::{CommitRequest, TxnId};
use bytes::Bytes;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .rng_seed(tokio::runtime::RngSeed::from_bytes(b"regressions"))
        .build()
        .unwrap()
}

/// A quiet cluster: no closed timestamps or GC entries to write on their own.
fn quiet(nodes: u64) -> ClusterConfig {
    ClusterConfig {
        nodes,
        bound: Duration::from_micros(500),
        lease: Duration::from_secs(1),
        tick: Duration::from_millis(10),
        keep_entries: 10_000,
        gc_retention: Duration::from_secs(3600),
        gc_interval: Duration::from_secs(3600),
        close_interval: Duration::from_secs(3600),
        unsafe_skip_commit_wait: false,
        unsafe_ignore_lease: false,
        unsafe_no_step_guard: false,
        peer_clock_checks: true,
        unsafe_never_fence: false,
        unsafe_no_widening: false,
        unsafe_no_read_floor: false,
        unsafe_raw_lease_clock: false,
        epoch: boundkv_sim::cluster::DEFAULT_EPOCH,
        unsafe_no_leap_absorb: false,
        cluster_clock_rho_ppm: None,
        unsafe_cluster_clock: None,
    }
}

/// A quiet three-node cluster on the cluster clock (`RHO` 200 ppm), seeded with `seed`.
fn on_the_cluster_clock(seed: u64) -> Arc<SimulatedCluster> {
    let time = SimTime::new();
    let mut config = quiet(3);
    config.cluster_clock_rho_ppm = Some(200);
    SimulatedCluster::start(config, seed, Trace::new(time, false), time)
}

async fn leader(cluster: &Arc<SimulatedCluster>) -> u64 {
    for _ in 0..1000 {
        if let Some(l) = cluster.leader()
            && cluster.running(l).is_some_and(|r| r.lease_valid())
        {
            return l;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("no leader with a lease within 10 s");
}

fn put(n: u8) -> CommitRequest {
    CommitRequest {
        txn_id: TxnId([n; 16]),
        writes: [(Bytes::from(format!("k{n}")), Some(Bytes::from_static(b"v")))]
            .into_iter()
            .collect(),
        ..CommitRequest::default()
    }
}

/// After a failed `fdatasync` the log store refuses every read, and raft-rs unwraps its reads:
/// the node panicked while publishing its own failure, so the failure was never published and
/// the proposals in flight were never answered (their callers hung until their timeouts).
/// Now the node stops cleanly: the failure is published and the commit ends at once.
#[test]
fn t90_a_failed_sync_stops_the_node_cleanly() {
    runtime().block_on(async {
        let time = SimTime::new();
        let cluster = SimulatedCluster::start(quiet(3), 7, Trace::new(time, false), time);
        let l = leader(&cluster).await;
        let replica = cluster.running(l).unwrap();
        replica.commit(put(1)).await.expect("a healthy commit");
        cluster.disk(l).fail_next_flush();
        let outcome = tokio::time::timeout(Duration::from_secs(2), replica.commit(put(2))).await;
        assert!(matches!(outcome, Ok(Err(_))), "the commit must end with an error: {outcome:?}");
        let state = replica.state();
        assert!(state.failed.is_some(), "the failure is published: {state:?}");
        assert_ne!(state.role, Role::Leader, "a failed node does not present itself as leader");
        cluster.shutdown();
    });
}

/// A fatal error in the transaction layer (here: persisting the clock's high-water mark on a
/// full disk) stopped transactions but left the Raft member running: it stayed leader, or could
/// be elected, and refused every request forever. Now the Raft member stops with it.
#[test]
fn t90_a_fatal_error_above_raft_stops_the_raft_member() {
    runtime().block_on(async {
        let time = SimTime::new();
        let cluster = SimulatedCluster::start(quiet(1), 8, Trace::new(time, false), time);
        let l = leader(&cluster).await;
        let replica = cluster.running(l).unwrap();
        replica.begin_read_write().await.expect("a healthy read timestamp");
        // Past the durable high-water mark (250 ms ahead): the next timestamp must persist one.
        tokio::time::sleep(Duration::from_secs(1)).await;
        cluster.disk(l).set_full(true);
        let e = replica.begin_read_write().await.expect_err("the mark cannot be written");
        assert!(e.to_string().contains("high-water mark"), "{e}");
        tokio::time::sleep(Duration::from_millis(100)).await;
        let state = replica.state();
        assert!(state.failed.is_some(), "the Raft member stopped too: {state:?}");
        assert_ne!(state.role, Role::Leader);
        cluster.shutdown();
    });
}

/// The lease, as the simulator sees it: a leader paused past its lease while a new leader
/// commits must not serve its old state when it resumes. With the lease check off (the
/// mutation), it does.
fn paused_leader_read(ignore_lease: bool) -> (Option<Bytes>, Bytes) {
    runtime().block_on(async {
        let time = SimTime::new();
        let mut config = quiet(3);
        config.close_interval = Duration::from_millis(25);
        config.unsafe_ignore_lease = ignore_lease;
        let cluster = SimulatedCluster::start(config, 9, Trace::new(time, false), time);
        let old = leader(&cluster).await;
        let write = |n: u8, v: &'static [u8]| CommitRequest {
            txn_id: TxnId([n; 16]),
            writes: [(Bytes::from_static(b"k"), Some(Bytes::from_static(v)))].into_iter().collect(),
            ..CommitRequest::default()
        };
        cluster.running(old).unwrap().commit(write(1, b"old")).await.expect("first write");
        cluster.set_paused(old, true);
        let new = loop {
            tokio::time::sleep(Duration::from_millis(10)).await;
            match cluster.leader() {
                Some(l)
                    if l != old && cluster.running(l).unwrap().lease_valid()
                        || ignore_lease && cluster.leader().is_some_and(|l| l != old) =>
                {
                    break cluster.leader().unwrap();
                }
                _ => {}
            }
        };
        let mut acked = None;
        while acked.is_none() {
            acked = cluster.running(new).unwrap().commit(write(2, b"new")).await.ok();
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        // A client asks the paused node; it answers when it resumes.
        let replica = cluster.running(old).unwrap();
        let resumed = boundkv_sim::workload::SimCluster::until_resumed(&*cluster, old);
        let read = tokio::spawn(async move {
            resumed.await;
            let ts = replica.begin_read_only(boundkv_txn::replica::ReadAt::Latest).await?;
            replica.get(ts, b"k").await
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        // Its request handlers run before its Raft loop catches up.
        cluster.resume(old, Duration::from_millis(5));
        let got = read.await.unwrap();
        cluster.shutdown();
        (got.ok().flatten(), Bytes::from_static(b"new"))
    })
}

#[test]
fn t31_a_resumed_leader_serves_no_stale_read() {
    let (got, acked) = paused_leader_read(false);
    assert!(got.is_none() || got == Some(acked), "stale read: {got:?}");
}

#[test]
fn t31_mutant_without_the_lease_serves_a_stale_read() {
    let (got, _) = paused_leader_read(true);
    assert_eq!(got, Some(Bytes::from_static(b"old")), "the lease mutant should read the old value");
}

/// The cluster clock's horizon (`docs/architecture/time.md`, F1): a leader issues no timestamp at
/// or past the horizon it committed in its term, the one its successor starts above, even when
/// something other than its reading raises the timestamp: here a client's read timestamp at the
/// horizon, still inside the lease (which would otherwise let it through). Acknowledged, such a
/// commit would lie above where the next leader may start.
#[test]
fn t91_no_timestamp_past_the_cluster_clocks_horizon() {
    runtime().block_on(async {
        let cluster = on_the_cluster_clock(9);
        let l = leader(&cluster).await;
        let replica = cluster.running(l).unwrap();
        replica.commit(put(1)).await.expect("a healthy commit");
        // A moment when the committed horizon lies inside the lease.
        let mut horizon = None;
        for _ in 0..100 {
            let state = replica.state();
            let ls = state.leader_state.expect("leading");
            let limit = replica.cluster_clock().and_then(|c| c.issue_limit(ls.term));
            if let (Some(h), Some(until)) = (limit, ls.lease_until)
                && h.saturating_add(Duration::from_millis(10)) < until
            {
                horizon = Some(h);
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let horizon = horizon.expect("the horizon lies inside the lease at some moment");
        let at_horizon = CommitRequest { read_ts: Some(horizon), ..put(2) };
        let e = replica.commit(at_horizon).await.expect_err("a timestamp past the horizon");
        assert!(e.to_string().contains("horizon"), "{e}");
        cluster.shutdown();
    });
}

/// Under the cluster clock a resend of an applied commit is answered by an active leader only
/// (`docs/architecture/time.md`, F6): a follower's commit wait runs on its own term's reference,
/// which proves nothing about the issuing term's, whose leader may still serve reads. A follower
/// redirects; the leader answers.
#[test]
fn t92_only_an_active_leader_answers_a_resend_on_the_cluster_clock() {
    runtime().block_on(async {
        let cluster = on_the_cluster_clock(10);
        let l = leader(&cluster).await;
        let first = cluster.running(l).unwrap().commit(put(3)).await.expect("committed").ts;
        let f = (1..=3).find(|&n| n != l).unwrap();
        let follower = cluster.running(f).unwrap();
        // Once the follower has applied it, a resend there is redirected, not answered.
        for _ in 0..100 {
            if follower.state().applied_index >= cluster.running(l).unwrap().state().applied_index {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let e = follower.commit(put(3)).await.expect_err("a follower redirects a resend");
        assert!(matches!(e, boundkv_txn::Error::NotLeader { .. }), "{e}");
        let again = cluster.running(l).unwrap().commit(put(3)).await.expect("the leader answers");
        assert_eq!(again.ts, first, "answered from its first attempt");
        cluster.shutdown();
    });
}
