//! Prometheus metrics, served at `GET /metrics` in the text exposition format.
//!
//! | metric | kind | what |
//! |---|---|---|
//! | `boundkv_requests_total{kind,outcome}` | counter | client requests by kind (`commit`, `get`, ...) and outcome (`ok`, `conflict`, `not_leader`, ...) |
//! | `boundkv_request_duration_seconds{kind}` | histogram | server-side latency of client requests |
//! | `boundkv_commit_wait_seconds` | histogram | the commit wait the clock imposed (`s − earliest`, about 2ε) |
//! | `boundkv_commit_wait_added_seconds` | histogram | what commit wait added beyond replication and durability |
//! | `boundkv_commit_durable_seconds` | histogram | from choosing `s` until the commit was applied on a quorum-durable log |
//! | `boundkv_clock_bound_seconds` | gauge | the clock's current bound ε, as every timestamp uses it: the source's, widened to what the peer clock checks verify |
//! | `boundkv_clock_source_bound_seconds` | gauge | the clock source's own bound, before that widening |
//! | `boundkv_clock_usable` | gauge | 1 when the clock's reading may be used for timestamps |
//! | `boundkv_clock_bound_ceiling_seconds` | gauge | the widest bound this node uses: the clock policy's ceiling, lowered to what the lease allows (`(lease − lease renewal) / 2`) |
//! | `boundkv_clock_bound_too_wide` | gauge | 1 when the bound exceeds that ceiling: a leader then issues no timestamps, serves no reads and closes no timestamps (its status's clock problem says why) |
//! | `boundkv_clock_status{status}` | gauge | 1 for the clock's current status |
//! | `boundkv_clock_health{health}` | gauge | 1 for the clock's state as the clock watcher last saw it: `synchronized`, `free_running`, `unusable`, `stepped`, `fenced` (see `ClockHealth`) |
//! | `boundkv_clock_health_seconds` | gauge | how long the clock has been in that state |
//! | `boundkv_clock_leap_policy{policy}` | gauge | 1 for this node's `--leap` policy (`step`, `smear`) |
//! | `boundkv_clock_kernel_leap{state}` | gauge | 1 for the kernel's leap state (`none`, `insert_scheduled`, `delete_scheduled`, `in_leap_second`, `just_happened`, `unknown`), read with `adjtimex` |
//! | `boundkv_clock_leap_correction_seconds` | gauge | the correction the step guard applies while absorbing a leap second (1 s at the step, falling to 0 over 24 h; 0 otherwise) |
//! | `boundkv_cluster_clock_round_trip_seconds`, `boundkv_cluster_clock_answer_age_seconds` | gauges | under the cluster clock (`--clock cluster:RHO`): the round trip of the last answer of the leader, and how long ago it arrived |
//! | `boundkv_cluster_clock_probes_sent`, `boundkv_cluster_clock_answers_kept`, `boundkv_cluster_clock_probes_answered` | gauges | under the cluster clock: probes sent to the leader, its answers kept, probes this node answered (since start) |
//! | `boundkv_cluster_clock_horizon_ahead_seconds` | gauge | under the cluster clock, while leading: how far the committed horizon is ahead of the reference (0 once passed: no readings) |
//! | `boundkv_raft_term`, `boundkv_raft_leader_id`, `boundkv_raft_commit_index`, `boundkv_raft_applied_index`, `boundkv_raft_last_index` | gauges | Raft's state here |
//! | `boundkv_is_leader`, `boundkv_lease_valid` | gauges | 1 when this node leads / holds a valid lease |
//! | `boundkv_closed_ts_lag_seconds` | gauge | how far the closed timestamp trails `now().latest`: at most about the close interval (25 ms) on a follower that hears its leader; a read at `latest` there asks the leader and waits much less |
//! | `boundkv_gc_horizon_age_seconds` | gauge | how far the GC horizon trails `now().earliest`: how far back reads may go (about `--gc-retention`; 0 before the first horizon) |
//! | `boundkv_bad_frames_total` | counter | client frames that did not decode or were too large |
//! | `boundkv_peer_messages_sent_total{peer}`, `boundkv_peer_messages_dropped_total{peer}`, `boundkv_peer_connected{peer}` | gauges | the Raft transport, per peer |
//! | `boundkv_storage_bytes` | gauge | the database's size on disk |
//! | `boundkv_system_clock_seconds` | gauge | the system clock (`CLOCK_REALTIME`, raw, unguarded) when scraped |
//! | `boundkv_uptime_seconds` | gauge | the monotonic clock's time since the process started, when scraped |
//!
//! The last two let an outside observer measure this machine's clocks against its own: two
//! scrapes give the rate of each (the consistency suite shows with them that a drifting node's
//! wall and monotonic clocks really drifted together).
//!
//! The gauges are read from the node when scraped, so they are never stale. The HTTP server is
//! a few lines over tokio rather than a web framework: it answers one path, and keeping hyper and
//! its stack out of the build saves minutes on a 2-core CI machine.

use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::watch;

use boundkv_clockbound::{ClockHealth, ClockStatus, LeapPolicy, LeapState, Timestamp};

/// The kernel's leap states and their metric labels.
const LEAP_STATES: [(LeapState, &str); 6] = [
    (LeapState::None, "none"),
    (LeapState::InsertScheduled, "insert_scheduled"),
    (LeapState::DeleteScheduled, "delete_scheduled"),
    (LeapState::InLeapSecond, "in_leap_second"),
    (LeapState::JustHappened, "just_happened"),
    (LeapState::Unknown, "unknown"),
];
use boundkv_consensus::node::Role;
use boundkv_storage::{Engine, SledEngine};
use boundkv_txn::CommitInfo;
use boundkv_txn::replica::Replica;

use crate::clock::ClockWatch;
use crate::peer::PeerTransport;

type Labels2 = [(&'static str, &'static str); 2];
type Labels1 = [(&'static str, String); 1];
type FloatGauge = Gauge<f64, AtomicU64>;

/// The server's metrics.
pub struct Metrics {
    registry: Registry,
    requests: Family<Labels2, Counter>,
    request_duration: Family<[(&'static str, &'static str); 1], Histogram>,
    commit_wait: Histogram,
    commit_wait_added: Histogram,
    commit_durable: Histogram,
    pub(crate) bad_frames: Counter,
    clock_bound: FloatGauge,
    clock_source_bound: FloatGauge,
    clock_usable: Gauge,
    clock_bound_ceiling: FloatGauge,
    clock_bound_too_wide: Gauge,
    clock_status: Family<[(&'static str, &'static str); 1], Gauge>,
    clock_health: Family<[(&'static str, &'static str); 1], Gauge>,
    clock_health_seconds: FloatGauge,
    term: Gauge,
    leader_id: Gauge,
    commit_index: Gauge,
    applied_index: Gauge,
    last_index: Gauge,
    is_leader: Gauge,
    lease_valid: Gauge,
    closed_lag: FloatGauge,
    gc_horizon_age: FloatGauge,
    peer_sent: Family<Labels1, Gauge>,
    peer_dropped: Family<Labels1, Gauge>,
    peer_connected: Family<Labels1, Gauge>,
    clock_fenced: Gauge,
    clock_leap_policy: Family<[(&'static str, &'static str); 1], Gauge>,
    clock_kernel_leap: Family<[(&'static str, &'static str); 1], Gauge>,
    clock_leap_correction: FloatGauge,
    cluster_rtt: FloatGauge,
    cluster_answer_age: FloatGauge,
    cluster_probes_sent: Gauge,
    cluster_answers_kept: Gauge,
    cluster_probes_answered: Gauge,
    cluster_horizon_ahead: FloatGauge,
    clock_peer_offset: Family<Labels1, FloatGauge>,
    clock_peer_uncertainty: Family<Labels1, FloatGauge>,
    storage_bytes: Gauge,
    system_clock: FloatGauge,
    uptime: FloatGauge,
    started: std::time::Instant,
}

fn latency_buckets() -> impl Iterator<Item = f64> {
    // 10 µs to about 21 s.
    exponential_buckets(10e-6, 2.0, 22)
}

impl Metrics {
    /// Registers every metric.
    pub fn new() -> Arc<Self> {
        let mut registry = Registry::with_prefix("boundkv");
        let requests = Family::<Labels2, Counter>::default();
        registry.register("requests", "Client requests by kind and outcome", requests.clone());
        let request_duration =
            Family::<[(&'static str, &'static str); 1], Histogram>::new_with_constructor(|| {
                Histogram::new(latency_buckets())
            });
        registry.register(
            "request_duration_seconds",
            "Server-side latency of client requests",
            request_duration.clone(),
        );
        let commit_wait = Histogram::new(latency_buckets());
        registry.register(
            "commit_wait_seconds",
            "Commit wait the clock imposed (commit timestamp minus earliest)",
            commit_wait.clone(),
        );
        let commit_wait_added = Histogram::new(latency_buckets());
        registry.register(
            "commit_wait_added_seconds",
            "What commit wait added beyond replication and durability",
            commit_wait_added.clone(),
        );
        let commit_durable = Histogram::new(latency_buckets());
        registry.register(
            "commit_durable_seconds",
            "From choosing the commit timestamp until the commit was replicated and applied",
            commit_durable.clone(),
        );
        let bad_frames = Counter::default();
        registry.register(
            "bad_frames",
            "Client frames that did not decode or were too large",
            bad_frames.clone(),
        );
        let clock_bound = FloatGauge::default();
        registry.register(
            "clock_bound_seconds",
            "The clock's current error bound, widened to what the peers verify",
            clock_bound.clone(),
        );
        let clock_source_bound = FloatGauge::default();
        registry.register(
            "clock_source_bound_seconds",
            "The clock source's own error bound, before it is widened to what the peers verify",
            clock_source_bound.clone(),
        );
        let clock_usable = Gauge::default();
        registry.register(
            "clock_usable",
            "1 when the clock may be used for timestamps",
            clock_usable.clone(),
        );
        let clock_bound_ceiling = FloatGauge::default();
        registry.register(
            "clock_bound_ceiling_seconds",
            "The widest clock bound this node uses (the policy's, lowered to what the lease allows)",
            clock_bound_ceiling.clone(),
        );
        let clock_bound_too_wide = Gauge::default();
        registry.register(
            "clock_bound_too_wide",
            "1 when the clock's bound exceeds the ceiling: no timestamps, leader reads or closed timestamps",
            clock_bound_too_wide.clone(),
        );
        let clock_status = Family::<[(&'static str, &'static str); 1], Gauge>::default();
        registry.register("clock_status", "1 for the clock's current status", clock_status.clone());
        let clock_health = Family::<[(&'static str, &'static str); 1], Gauge>::default();
        registry.register(
            "clock_health",
            "1 for the clock's state as the clock watcher last saw it",
            clock_health.clone(),
        );
        let clock_health_seconds = FloatGauge::default();
        registry.register(
            "clock_health_seconds",
            "How long the clock has been in its current state",
            clock_health_seconds.clone(),
        );
        let gauge = |registry: &mut Registry, name: &str, help: &str| {
            let g = Gauge::default();
            registry.register(name, help, g.clone());
            g
        };
        let term = gauge(&mut registry, "raft_term", "The current Raft term");
        let leader_id =
            gauge(&mut registry, "raft_leader_id", "The leader this node knows of (0: none)");
        let commit_index = gauge(&mut registry, "raft_commit_index", "Raft's commit index");
        let applied_index = gauge(&mut registry, "raft_applied_index", "The applied index");
        let last_index = gauge(&mut registry, "raft_last_index", "The log's last index");
        let is_leader = gauge(&mut registry, "is_leader", "1 when this node leads");
        let lease_valid =
            gauge(&mut registry, "lease_valid", "1 when this node holds a valid lease");
        let closed_lag = FloatGauge::default();
        registry.register(
            "closed_ts_lag_seconds",
            "How far the closed timestamp trails the clock's latest",
            closed_lag.clone(),
        );
        let gc_horizon_age = FloatGauge::default();
        registry.register(
            "gc_horizon_age_seconds",
            "How far the GC horizon trails the clock's earliest (0: no horizon yet)",
            gc_horizon_age.clone(),
        );
        let peer_sent = Family::<Labels1, Gauge>::default();
        registry.register("peer_messages_sent", "Raft messages sent, per peer", peer_sent.clone());
        let peer_dropped = Family::<Labels1, Gauge>::default();
        registry.register(
            "peer_messages_dropped",
            "Raft messages dropped because the peer's queue was full",
            peer_dropped.clone(),
        );
        let peer_connected = Family::<Labels1, Gauge>::default();
        registry.register(
            "peer_connected",
            "1 while connected to the peer",
            peer_connected.clone(),
        );
        let clock_fenced = gauge(
            &mut registry,
            "clock_fenced",
            "1 while the peer clock checks fence this node's clock (or have not yet checked it)",
        );
        let clock_peer_offset = Family::<Labels1, FloatGauge>::default();
        registry.register(
            "clock_peer_offset_seconds",
            "The peer's clock midpoint minus this node's, as the latest peer clock check measured it",
            clock_peer_offset.clone(),
        );
        let clock_peer_uncertainty = Family::<Labels1, FloatGauge>::default();
        registry.register(
            "clock_peer_uncertainty_seconds",
            "How far two honest clocks may differ in that measurement: half the round trip plus both bounds",
            clock_peer_uncertainty.clone(),
        );
        let clock_leap_policy = Family::<[(&'static str, &'static str); 1], Gauge>::default();
        registry.register(
            "clock_leap_policy",
            "1 for this node's leap-second policy (--leap)",
            clock_leap_policy.clone(),
        );
        let clock_kernel_leap = Family::<[(&'static str, &'static str); 1], Gauge>::default();
        registry.register(
            "clock_kernel_leap",
            "1 for the kernel's leap-second state (adjtimex)",
            clock_kernel_leap.clone(),
        );
        let float = |registry: &mut Registry, name: &str, help: &str| {
            let g = FloatGauge::default();
            registry.register(name, help, g.clone());
            g
        };
        let int = |registry: &mut Registry, name: &str, help: &str| {
            let g = Gauge::default();
            registry.register(name, help, g.clone());
            g
        };
        let cluster_rtt = float(
            &mut registry,
            "cluster_clock_round_trip_seconds",
            "Cluster clock: the round trip of the last answer of the leader",
        );
        let cluster_answer_age = float(
            &mut registry,
            "cluster_clock_answer_age_seconds",
            "Cluster clock: how long ago the last answer of the leader arrived",
        );
        let cluster_probes_sent = int(
            &mut registry,
            "cluster_clock_probes_sent",
            "Cluster clock: probes sent to the leader since start",
        );
        let cluster_answers_kept = int(
            &mut registry,
            "cluster_clock_answers_kept",
            "Cluster clock: answers of the leader kept since start",
        );
        let cluster_probes_answered = int(
            &mut registry,
            "cluster_clock_probes_answered",
            "Cluster clock: probes this node answered since start",
        );
        let cluster_horizon_ahead = float(
            &mut registry,
            "cluster_clock_horizon_ahead_seconds",
            "Cluster clock, leading: how far the committed horizon is ahead of the reference",
        );
        let clock_leap_correction = FloatGauge::default();
        registry.register(
            "clock_leap_correction_seconds",
            "The correction the step guard applies while absorbing a leap second",
            clock_leap_correction.clone(),
        );
        let storage_bytes = gauge(&mut registry, "storage_bytes", "The database's size on disk");
        let system_clock = FloatGauge::default();
        registry.register(
            "system_clock_seconds",
            "The system clock (CLOCK_REALTIME, raw) when scraped, seconds since the Unix epoch",
            system_clock.clone(),
        );
        let uptime = FloatGauge::default();
        registry.register(
            "uptime_seconds",
            "The monotonic clock's time since the metrics were set up (the process's start)",
            uptime.clone(),
        );
        Arc::new(Metrics {
            registry,
            requests,
            request_duration,
            commit_wait,
            commit_wait_added,
            commit_durable,
            bad_frames,
            clock_bound,
            clock_source_bound,
            clock_usable,
            clock_bound_ceiling,
            clock_bound_too_wide,
            clock_status,
            clock_health,
            clock_health_seconds,
            term,
            leader_id,
            commit_index,
            applied_index,
            last_index,
            is_leader,
            lease_valid,
            closed_lag,
            gc_horizon_age,
            peer_sent,
            peer_dropped,
            peer_connected,
            clock_fenced,
            clock_leap_policy,
            clock_kernel_leap,
            clock_leap_correction,
            cluster_rtt,
            cluster_answer_age,
            cluster_probes_sent,
            cluster_answers_kept,
            cluster_probes_answered,
            cluster_horizon_ahead,
            clock_peer_offset,
            clock_peer_uncertainty,
            storage_bytes,
            system_clock,
            uptime,
            started: std::time::Instant::now(),
        })
    }

    pub(crate) fn observe_request(
        &self,
        kind: &'static str,
        outcome: &'static str,
        took: Duration,
    ) {
        self.requests.get_or_create(&[("kind", kind), ("outcome", outcome)]).inc();
        self.request_duration.get_or_create(&[("kind", kind)]).observe(took.as_secs_f64());
    }

    pub(crate) fn observe_commit(&self, info: &CommitInfo) {
        self.commit_wait.observe(info.commit_wait.as_secs_f64());
        self.commit_wait_added.observe(info.wait_beyond_durable.as_secs_f64());
        self.commit_durable.observe(info.durable.as_secs_f64());
    }

    /// Reads the node's state into the gauges and renders everything.
    pub(crate) fn render(
        &self,
        replica: &Replica<SledEngine>,
        peers: &PeerTransport,
        clock: &ClockWatch,
    ) -> String {
        if let Some(report) = clock.report() {
            for label in ClockHealth::LABELS {
                let current = i64::from(report.health.label() == label);
                self.clock_health.get_or_create(&[("health", label)]).set(current);
            }
            self.clock_health_seconds.set(report.for_.as_secs_f64());
        }
        let state = replica.state();
        self.term.set(state.term as i64);
        self.leader_id.set(state.leader.unwrap_or(0) as i64);
        self.commit_index.set(state.commit_index as i64);
        self.applied_index.set(state.applied_index as i64);
        self.last_index.set(state.last_index as i64);
        self.is_leader.set(i64::from(state.role == Role::Leader));
        self.lease_valid.set(i64::from(replica.lease_valid()));
        let now = replica.clock().now();
        for s in [
            ClockStatus::Unknown,
            ClockStatus::Synchronized,
            ClockStatus::FreeRunning,
            ClockStatus::Disrupted,
        ] {
            let current = now.as_ref().is_ok_and(|r| r.status == s);
            self.clock_status.get_or_create(&[("status", status_label(s))]).set(i64::from(current));
        }
        if let Ok(r) = replica.source_clock().now() {
            self.clock_source_bound.set(r.bound().as_secs_f64());
        }
        if let Ok(r) = &now {
            self.clock_bound.set(r.bound().as_secs_f64());
            let lag = r.latest().saturating_duration_since(replica.closed_ts());
            self.closed_lag.set(lag.as_secs_f64().min(1e9));
            let horizon = replica.gc_horizon();
            let age = if horizon == Timestamp::ZERO {
                Duration::ZERO
            } else {
                r.earliest().saturating_duration_since(horizon)
            };
            self.gc_horizon_age.set(age.as_secs_f64());
        }
        let ceiling = replica.policy().max_bound;
        self.clock_bound_ceiling.set(ceiling.as_secs_f64());
        self.clock_bound_too_wide.set(i64::from(now.as_ref().is_ok_and(|r| r.bound() > ceiling)));
        self.clock_usable.set(i64::from(replica.policy().check(now).is_ok()));
        for (peer, s) in peers.stats().peers {
            let label = [("peer", peer.to_string())];
            self.peer_sent.get_or_create(&label).set(s.messages_sent as i64);
            self.peer_dropped.get_or_create(&label).set(s.messages_dropped as i64);
            self.peer_connected.get_or_create(&label).set(i64::from(s.connected));
        }
        let policy = replica.leap_policy();
        for p in [LeapPolicy::Step, LeapPolicy::Smear] {
            self.clock_leap_policy
                .get_or_create(&[("policy", p.as_str())])
                .set(i64::from(p == policy));
        }
        let leap = replica.clock().leap_report();
        for (state, label) in LEAP_STATES {
            let current = leap.is_some_and(|l| l.kernel.state == state);
            self.clock_kernel_leap.get_or_create(&[("state", label)]).set(i64::from(current));
        }
        self.clock_leap_correction.set(leap.map_or(0.0, |l| l.correction_nanos as f64 / 1e9));
        if let Some(cluster) = replica.cluster_clock() {
            let r = cluster.report();
            self.cluster_rtt.set(r.last_rtt.map_or(0.0, |d| d.as_secs_f64()));
            self.cluster_answer_age.set(r.last_answer_age.map_or(0.0, |d| d.as_secs_f64()));
            self.cluster_probes_sent.set(i64::try_from(r.probes_sent).unwrap_or(i64::MAX));
            self.cluster_answers_kept.set(i64::try_from(r.answers_kept).unwrap_or(i64::MAX));
            self.cluster_probes_answered.set(i64::try_from(r.probes_answered).unwrap_or(i64::MAX));
            self.cluster_horizon_ahead.set(r.horizon_ahead.map_or(0.0, |d| d.as_secs_f64()));
        }
        let checks = replica.node().clock_checks();
        self.clock_fenced.set(i64::from(state.clock_fence.is_some()));
        for (peer, p) in checks.peers {
            let label = [("peer", peer.to_string())];
            self.clock_peer_offset.get_or_create(&label).set(p.offset_nanos as f64 / 1e9);
            self.clock_peer_uncertainty.get_or_create(&label).set(p.uncertainty.as_secs_f64());
        }
        if let Ok(status) = replica.mvcc().engine().status() {
            self.storage_bytes.set(status.size_on_disk as i64);
        }
        self.uptime.set(self.started.elapsed().as_secs_f64());
        let since_epoch =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        self.system_clock.set(since_epoch.as_secs_f64());
        let mut out = String::new();
        let _ = encode(&mut out, &self.registry);
        out
    }
}

fn status_label(s: ClockStatus) -> &'static str {
    match s {
        ClockStatus::Unknown => "unknown",
        ClockStatus::Synchronized => "synchronized",
        ClockStatus::FreeRunning => "free_running",
        ClockStatus::Disrupted => "disrupted",
    }
}

/// Serves `GET /metrics` until `shutdown` turns true.
pub(crate) async fn serve_metrics(
    listener: TcpListener,
    metrics: Arc<Metrics>,
    replica: Arc<Replica<SledEngine>>,
    peers: Arc<PeerTransport>,
    clock: Arc<ClockWatch>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        let (mut stream, _) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(_) => continue,
            },
            _ = shutdown.changed() => return,
        };
        let (metrics, replica, peers, clock) =
            (metrics.clone(), replica.clone(), peers.clone(), clock.clone());
        tokio::spawn(async move {
            let mut head = Vec::with_capacity(1024);
            let mut buf = [0u8; 1024];
            // Read the request head (bounded: 8 KiB, 5 s).
            let read = tokio::time::timeout(Duration::from_secs(5), async {
                while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 8192 {
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => return false,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                true
            })
            .await;
            if !matches!(read, Ok(true)) {
                return;
            }
            let line = head.split(|&b| b == b'\r').next().unwrap_or_default();
            let (status, body, content_type) = if line.starts_with(b"GET /metrics ") {
                (
                    "200 OK",
                    metrics.render(&replica, &peers, &clock),
                    "text/plain; version=0.0.4; charset=utf-8",
                )
            } else if line.starts_with(b"GET / ") {
                ("200 OK", "boundkv: metrics at /metrics\n".to_string(), "text/plain")
            } else {
                ("404 Not Found", "not found; try /metrics\n".to_string(), "text/plain")
            };
            let response = format!(
                "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = stream.write_all(response.as_bytes()).await;
            let _ = stream.shutdown().await;
        });
    }
}
