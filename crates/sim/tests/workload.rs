//! The workloads against a real in-process cluster (real time, memory engines, the in-memory
//! Raft transport): each runs for a couple of seconds, records a non-trivial history, and the
//! checkers find it valid. A mutant (commit wait skipped, clocks at the edges of their bounds)
//! must be caught by the register checker through follower reads.
//!
//! These tests stand in until the deterministic cluster exists; they exercise the clients' and
//! the recorder's logic, not determinism.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use boundkv_clockbound::{Clock, SimClock};
use boundkv_consensus::node::{NodeConfig, Role};
use boundkv_consensus::transport::MemoryRouter;
use boundkv_sim::workload::{self, SimCluster, Workload};
use boundkv_storage::MemoryEngine;
use boundkv_tests::check::{CheckResult, Event, EventType, Validity, overall};
use boundkv_txn::replica::{Member, Replica, ReplicaOptions};

/// An in-process cluster on real time.
struct TestCluster {
    _router: MemoryRouter,
    clocks: BTreeMap<u64, SimClock>,
    nodes: Mutex<BTreeMap<u64, Arc<Replica<MemoryEngine>>>>,
    start: Instant,
}

fn member(id: u64) -> Member {
    Member {
        id,
        peer_address: format!("peer-{id}"),
        client_address: format!("client-{id}"),
        leap: Default::default(),
    }
}

impl TestCluster {
    /// `n` founding members whose clocks have bound `bound`.
    fn start(n: u64, bound: Duration) -> Arc<TestCluster> {
        let truth = SimClock::real_time();
        let router = MemoryRouter::new();
        let founding: Vec<Member> = (1..=n).map(member).collect();
        let mut clocks = BTreeMap::new();
        let mut nodes = BTreeMap::new();
        for id in 1..=n {
            let clock = truth.sibling();
            clock.set_bound(bound);
            let options = ReplicaOptions {
                node: NodeConfig {
                    id,
                    tick: Duration::from_millis(10),
                    election_ticks: 10,
                    heartbeat_ticks: 2,
                    lease: Duration::from_secs(2),
                    lease_renewal: Duration::from_millis(200),
                    read_timeout: Duration::from_millis(500),
                    ..NodeConfig::default()
                },
                close_interval: Duration::from_millis(10),
                follower_wait: Duration::from_secs(2),
                commit_timeout: Duration::from_secs(3),
                founding: Some(founding.clone()),
                ..ReplicaOptions::default()
            };
            let shared_clock: Arc<dyn Clock> = Arc::new(clock.clone());
            let replica = Replica::start(
                options,
                Arc::new(MemoryEngine::new()),
                shared_clock,
                router.transport(id),
            )
            .expect("start a replica");
            router.register(id, replica.deliverer());
            clocks.insert(id, clock);
            nodes.insert(id, replica);
        }
        Arc::new(TestCluster {
            _router: router,
            clocks,
            nodes: Mutex::new(nodes),
            start: Instant::now(),
        })
    }

    /// Waits for an active leader (one that hands out read-write timestamps).
    async fn leader(&self) -> u64 {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let nodes: Vec<_> = self.nodes.lock().unwrap().clone().into_iter().collect();
            for (id, node) in nodes {
                if node.state().role == Role::Leader
                    && tokio::time::timeout(Duration::from_millis(200), node.begin_read_write())
                        .await
                        .is_ok_and(|r| r.is_ok())
                {
                    return id;
                }
            }
            assert!(Instant::now() < deadline, "no active leader");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    fn shutdown(&self) {
        for node in self.nodes.lock().unwrap().values() {
            node.shutdown();
        }
    }
}

impl SimCluster<MemoryEngine> for TestCluster {
    fn node_ids(&self) -> Vec<u64> {
        self.nodes.lock().unwrap().keys().copied().collect()
    }

    fn replica(&self, id: u64) -> Option<Arc<Replica<MemoryEngine>>> {
        self.nodes.lock().unwrap().get(&id).cloned()
    }

    fn now_nanos(&self) -> u64 {
        self.start.elapsed().as_nanos() as u64
    }
}

/// Runs `workload` for `run` with `clients` clients, then a final read; the history.
async fn run(
    cluster: &Arc<TestCluster>,
    workload: Workload,
    clients: usize,
    run: Duration,
) -> Vec<Event> {
    let dyn_cluster: Arc<dyn SimCluster<MemoryEngine>> = cluster.clone();
    let until = cluster.now_nanos() + run.as_nanos() as u64;
    let mut history =
        workload::run_clients(dyn_cluster.clone(), workload, clients, 100_000, until, 7).await;
    workload::final_read(dyn_cluster, workload, &mut history, 8).await;
    history
}

fn count(history: &[Event], kind: EventType) -> usize {
    history.iter().filter(|e| e.kind == kind).count()
}

fn summary(results: &[CheckResult]) -> String {
    serde_json::to_string_pretty(results).unwrap_or_default()
}

/// Runs `workload` on three nodes and expects a valid, non-trivial history.
async fn valid_history(workload: Workload) {
    let cluster = TestCluster::start(3, Duration::from_millis(1));
    cluster.leader().await;
    let history = run(&cluster, workload, 4, Duration::from_secs(2)).await;
    cluster.shutdown();
    let ok = count(&history, EventType::Ok);
    let nodes: std::collections::BTreeSet<_> =
        history.iter().filter_map(|e| e.node.clone()).collect();
    eprintln!(
        "{workload}: {} events, {ok} ok, {} fail, {} info, served by {nodes:?}",
        history.len(),
        count(&history, EventType::Fail),
        count(&history, EventType::Info),
    );
    assert!(ok > 40, "{workload}: only {ok} operations completed ok");
    assert!(nodes.len() >= 2, "{workload}: reads were served by followers too: {nodes:?}");
    let results = workload::check(workload, &history);
    assert_eq!(overall(&results), Validity::Valid, "{workload}: {}", summary(&results));
}

#[tokio::test]
async fn register_history_is_linearizable() {
    valid_history(Workload::Register).await;
}

#[tokio::test]
async fn append_history_is_strict_serializable() {
    valid_history(Workload::Append).await;
}

#[tokio::test]
async fn bank_history_keeps_its_total() {
    valid_history(Workload::Bank).await;
}

/// Runs `register` on three nodes with clock bound 50 ms where, once a leader is active, its
/// clock runs 50 ms ahead of true time and the followers' 50 ms behind (both at the edge of
/// their bounds); `skip_commit_wait` switches the leader's commit wait off. The checkers'
/// results.
async fn register_at_the_clock_edges(skip_commit_wait: bool) -> Vec<CheckResult> {
    let bound = Duration::from_millis(50);
    let cluster = TestCluster::start(3, bound);
    let leader = cluster.leader().await;
    let edge = bound.as_nanos() as i64;
    for (&id, clock) in &cluster.clocks {
        clock.set_offset_nanos(if id == leader { edge } else { -edge });
    }
    cluster
        .replica(leader)
        .expect("the leader")
        .txn()
        .set_unsafe_skip_commit_wait(skip_commit_wait);
    // Real time on a shared machine: 2 s sometimes completed fewer than 40 operations under
    // load (one history in eight while a Jepsen run and a build shared the two cores).
    let history = run(&cluster, Workload::Register, 4, Duration::from_secs(4)).await;
    cluster.shutdown();
    assert!(count(&history, EventType::Ok) > 40, "a non-trivial history");
    workload::check(Workload::Register, &history)
}

/// - with commit wait, clocks at the edges of their bounds are harmless: the history is valid.
#[tokio::test]
async fn register_at_the_clock_edges_is_linearizable() {
    let results = register_at_the_clock_edges(false).await;
    assert_eq!(overall(&results), Validity::Valid, "{}", summary(&results));
}

/// - without it, the leader acknowledges a write at a timestamp up to 200 ms ahead of what a
///   follower's `now().latest` reads at, so a follower read right after it misses it: the
///   register checker must find the stale read.
#[tokio::test]
async fn register_catches_a_skipped_commit_wait() {
    let results = register_at_the_clock_edges(true).await;
    assert_eq!(overall(&results), Validity::Invalid, "{}", summary(&results));
    eprintln!("mutant: {:?} / {:?}", results[0].anomaly_counts, results[1].anomaly_counts);
    assert!(
        results[0].count("nonlinearizable") > 0,
        "the register checker finds the stale read: {}",
        summary(&results)
    );
}

/// The check of a malformed history says so instead of passing it.
#[test]
fn a_malformed_history_is_invalid() {
    let event =
        |index, kind| Event::new(index, index, 0, kind, "read", serde_json::json!([0, null]));
    let history = vec![event(0, EventType::Invoke), event(1, EventType::Invoke)];
    let results = workload::check(Workload::Register, &history);
    assert_eq!(overall(&results), Validity::Invalid);
}
