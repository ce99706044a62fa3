//! An in-process cluster of replicas for tests: memory engines that survive a "restart" (they
//! stand in for disks), an in-memory network that can cut links, and simulated clocks that share
//! one true time but err independently.

#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;

use boundkv_clockbound::{Clock, SimClock, Timestamp};
use boundkv_consensus::node::{NodeConfig, Role};
use boundkv_consensus::transport::MemoryRouter;
use boundkv_storage::MemoryEngine;
use boundkv_txn::replica::{Member, ReadAt, Replica, ReplicaOptions};
use boundkv_txn::{CommitInfo, CommitRequest, Error, TxnId};

/// Fast Raft settings: 10 ms ticks, elections after 100-200 ms, a 300 ms lease.
pub(crate) fn fast_node(id: u64) -> NodeConfig {
    NodeConfig {
        id,
        tick: Duration::from_millis(10),
        election_ticks: 10,
        heartbeat_ticks: 2,
        lease: Duration::from_millis(300),
        lease_renewal: Duration::from_millis(50),
        read_timeout: Duration::from_millis(500),
        ..NodeConfig::default()
    }
}

pub(crate) fn member(id: u64) -> Member {
    Member {
        id,
        peer_address: format!("mem-peer-{id}"),
        client_address: format!("mem-client-{id}"),
        leap: Default::default(),
    }
}

pub(crate) struct Cluster {
    pub(crate) router: MemoryRouter,
    /// True time; every node's clock is a sibling of it.
    pub(crate) truth: SimClock,
    pub(crate) clocks: BTreeMap<u64, SimClock>,
    pub(crate) engines: BTreeMap<u64, Arc<MemoryEngine>>,
    pub(crate) nodes: Mutex<BTreeMap<u64, Arc<Replica<MemoryEngine>>>>,
    pub(crate) options: Box<dyn Fn(u64) -> ReplicaOptions + Send + Sync>,
}

impl Cluster {
    /// `n` founding members, with a clock bound of `bound` and no offsets.
    pub(crate) fn start(n: u64, bound: Duration) -> Cluster {
        Self::start_with(n, bound, |_| {})
    }

    /// As `start`, letting `tune` adjust each node's options.
    pub(crate) fn start_with(
        n: u64,
        bound: Duration,
        tune: impl Fn(&mut ReplicaOptions) + Send + Sync + 'static,
    ) -> Cluster {
        let truth = SimClock::real_time();
        let founding: Vec<Member> = (1..=n).map(member).collect();
        let options = move |id: u64| {
            let mut o = ReplicaOptions {
                node: fast_node(id),
                close_interval: Duration::from_millis(10),
                follower_wait: Duration::from_secs(3),
                commit_timeout: Duration::from_secs(5),
                catch_up_timeout: Duration::from_secs(10),
                founding: Some(founding.clone()),
                ..ReplicaOptions::default()
            };
            tune(&mut o);
            o
        };
        let cluster = Cluster {
            router: MemoryRouter::new(),
            clocks: (1..=n)
                .map(|id| {
                    let c = truth.sibling();
                    c.set_bound(bound);
                    (id, c)
                })
                .collect(),
            truth,
            engines: (1..=n).map(|id| (id, Arc::new(MemoryEngine::new()))).collect(),
            nodes: Mutex::new(BTreeMap::new()),
            options: Box::new(options),
        };
        for id in 1..=n {
            cluster.boot(id, true);
        }
        cluster
    }

    fn boot(&self, id: u64, founding: bool) {
        let mut options = (self.options)(id);
        if !founding {
            options.founding = None;
        }
        let clock: Arc<dyn Clock> = Arc::new(self.clocks[&id].clone());
        let replica =
            Replica::start(options, self.engines[&id].clone(), clock, self.router.transport(id))
                .expect("start a replica");
        self.router.register(id, replica.deliverer());
        self.nodes.lock().unwrap().insert(id, replica);
    }

    /// Adds a node that is not a founding member (empty engine, clock like the others).
    pub(crate) fn add_node(&mut self, id: u64, bound: Duration) {
        let c = self.truth.sibling();
        c.set_bound(bound);
        self.clocks.insert(id, c);
        self.engines.insert(id, Arc::new(MemoryEngine::new()));
        self.boot(id, false);
    }

    pub(crate) fn node(&self, id: u64) -> Arc<Replica<MemoryEngine>> {
        self.nodes.lock().unwrap()[&id].clone()
    }

    pub(crate) fn ids(&self) -> Vec<u64> {
        self.nodes.lock().unwrap().keys().copied().collect()
    }

    /// Stops node `id` (its engine, like a disk, survives for `restart`).
    pub(crate) fn stop(&self, id: u64) {
        let node = self.nodes.lock().unwrap().remove(&id).expect("a running node");
        self.router.unregister(id);
        node.shutdown();
    }

    pub(crate) fn restart(&self, id: u64) {
        self.boot(id, false);
    }

    /// Waits until some running node is an active leader (serves a read-write timestamp).
    pub(crate) async fn leader(&self, within: Duration) -> u64 {
        let deadline = Instant::now() + within;
        loop {
            for id in self.ids() {
                let node = self.node(id);
                if node.state().role == Role::Leader
                    && tokio::time::timeout(Duration::from_millis(200), node.begin_read_write())
                        .await
                        .is_ok_and(|r| r.is_ok())
                {
                    return id;
                }
            }
            assert!(Instant::now() < deadline, "no active leader within {within:?}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Waits until a node other than `not` is an active leader.
    pub(crate) async fn new_leader(&self, not: u64, within: Duration) -> u64 {
        let deadline = Instant::now() + within;
        loop {
            let l = self.leader(within).await;
            if l != not {
                return l;
            }
            assert!(Instant::now() < deadline, "no new leader within {within:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Commits `writes` through whichever node leads, retrying retryable errors (with a fresh
    /// transaction for NotLeader/Unavailable, the same id for OutcomeUnknown), for at most
    /// `within`.
    pub(crate) async fn write(
        &self,
        writes: &[(&str, Option<&str>)],
        within: Duration,
    ) -> CommitInfo {
        let deadline = Instant::now() + within;
        let request = blind(writes);
        loop {
            let l = self.leader(deadline.saturating_duration_since(Instant::now())).await;
            match self.node(l).commit(request.clone()).await {
                Ok(info) => return info,
                Err(e) if e.is_retryable() || matches!(e, Error::OutcomeUnknown(_)) => {
                    assert!(Instant::now() < deadline, "write failed until the deadline: {e}");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                Err(e) => panic!("write failed: {e}"),
            }
        }
    }

    /// A read-only read of `key` at `node`, at `now().latest` of that node's clock.
    pub(crate) async fn read_latest(
        &self,
        node: u64,
        key: &str,
    ) -> Result<(Timestamp, Option<Bytes>), Error> {
        let n = self.node(node);
        let ts = n.begin_read_only(ReadAt::Latest).await?;
        Ok((ts, n.get(ts, key.as_bytes()).await?))
    }

    pub(crate) fn isolate(&self, id: u64) {
        let all: Vec<u64> = self.clocks.keys().copied().collect();
        self.router.isolate(id, &all);
    }

    pub(crate) fn heal(&self) {
        self.router.heal();
    }

    pub(crate) fn shutdown(&self) {
        for id in self.ids() {
            self.stop(id);
        }
    }
}

/// A blind write (nothing read), with a fresh transaction id.
pub(crate) fn blind(writes: &[(&str, Option<&str>)]) -> CommitRequest {
    CommitRequest {
        txn_id: TxnId::random(),
        read_ts: None,
        read_keys: BTreeSet::new(),
        read_ranges: Vec::new(),
        writes: writes
            .iter()
            .map(|(k, v)| (Bytes::from(k.to_string()), v.map(|v| Bytes::from(v.to_string()))))
            .collect(),
    }
}
