//! One simulated run: a seed in, a verdict out.
//!
//! [`run_seed`] builds a fresh current-thread tokio runtime with paused time, and in it a
//! [`SimulatedCluster`] whose shape the seed draws ([`ClusterConfig::draw`]), clients running
//! a workload, and a [`Nemesis`]. It then:
//!
//! 1. runs clients and nemesis together for `duration` of simulated time;
//! 2. heals everything ([`Nemesis::heal_all`]) and lets the clients' last operations end;
//! 3. checks **liveness**: every node in turn is made leader and must commit a write and serve
//!    it back, and every other node must serve it as a follower read, each within a few
//!    seconds (a proposal that is never answered, a safe time that never moves, a clock the
//!    policy accepts but no lease can use: each shows up here);
//! 4. checks **agreement**: once every replica has applied the same log, they must hold the same
//!    data at every timestamp the history committed at (replicas that applied one log
//!    differently diverge here);
//! 5. checks **the history** with the suite's checkers (linearizable registers, Elle
//!    list-append, bank totals, timestamps against real time).
//!
//! Everything random is drawn from the seed, and the runtime's time is virtual, so a seed
//! replays byte for byte: [`RunReport::trace_hash`] is the same on every run of a seed, which
//! `tests/determinism.rs` checks.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use boundkv_clockbound::Timestamp;
use boundkv_tests::check::{CheckResult, Event, EventType, Validity, overall};
use boundkv_txn::replica::ReadAt;
use boundkv_txn::{CommitRequest, TxnId};

use boundkv_consensus::cluster_clock::ClusterClockMutation;

use crate::cluster::{ClusterConfig, SimulatedCluster, eventually};
use crate::nemesis::Nemesis;
use crate::scenario::Scenario;
use crate::time::SimTime;
use crate::trace::Trace;
use crate::workload::{self, SimCluster, Workload};

/// A change to boundkv that a simulator must catch (the sensitivity proof): each breaks one
/// guarantee on purpose.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mutation {
    /// Acknowledge commits without commit wait.
    NoCommitWait,
    /// Issue timestamps and serve leader reads without a lease.
    NoLeaseCheck,
    /// Read clocks without the step guard.
    NoStepGuard,
    /// Peer clock checks that measure but never fence (nor widen readings): a lying clock is
    /// trusted.
    NoPeerChecks,
    /// Peer clock checks that fence but do not widen readings to what the peers verify: a lie
    /// smaller than the checks resolve is trusted.
    NoPeerWidening,
    /// Follower reads at `ReadAt::Latest` without the floor of timestamps already served: a
    /// clock whose bound shrinks moves them back in time.
    NoReadFloor,
    /// Leases and `ready_at` measured on the raw clock, without the step guard that every other
    /// reading goes through.
    RawLeaseClock,
    /// Step guards that know nothing of leap seconds: an announced leap step holds them over.
    NoLeapAbsorb,
    /// Cluster clock: a leader's answers kept across a term change (no term rule).
    ClusterNoTermRule,
    /// Cluster clock: a new leader starts `R` from the lower edge of its estimate (or the system
    /// clock), not above the committed horizons.
    ClusterLowerEdge,
    /// Cluster clock: answers taken as read on arrival, the round trip left out of the bound.
    ClusterNoRoundTrip,
    /// Cluster clock: a leader is never convicted, however many followers find its answers
    /// contradicting (no fencing under this source).
    ClusterNeverConvict,
}

impl Mutation {
    /// Every mutation.
    pub const ALL: [Mutation; 12] = [
        Mutation::NoCommitWait,
        Mutation::NoLeaseCheck,
        Mutation::NoStepGuard,
        Mutation::NoPeerChecks,
        Mutation::NoPeerWidening,
        Mutation::NoReadFloor,
        Mutation::RawLeaseClock,
        Mutation::NoLeapAbsorb,
        Mutation::ClusterNoTermRule,
        Mutation::ClusterLowerEdge,
        Mutation::ClusterNoRoundTrip,
        Mutation::ClusterNeverConvict,
    ];

    /// Its name on the command line (`--mutation`).
    pub fn name(self) -> &'static str {
        match self {
            Mutation::NoCommitWait => "no-commit-wait",
            Mutation::NoLeaseCheck => "no-lease-check",
            Mutation::NoStepGuard => "no-step-guard",
            Mutation::NoPeerChecks => "no-peer-checks",
            Mutation::NoPeerWidening => "no-peer-widening",
            Mutation::NoReadFloor => "no-read-floor",
            Mutation::RawLeaseClock => "raw-lease-clock",
            Mutation::NoLeapAbsorb => "no-leap-absorb",
            Mutation::ClusterNoTermRule => "cluster-no-term-rule",
            Mutation::ClusterLowerEdge => "cluster-lower-edge",
            Mutation::ClusterNoRoundTrip => "cluster-no-round-trip",
            Mutation::ClusterNeverConvict => "cluster-never-convict",
        }
    }

    /// The mutation named `name`, if there is one.
    pub fn from_name(name: &str) -> Option<Mutation> {
        Mutation::ALL.into_iter().find(|m| m.name() == name)
    }
}

/// What one run does.
#[derive(Clone, Debug)]
pub struct RunOptions {
    /// The seed: everything else random is drawn from it.
    pub seed: u64,
    /// Simulated time the clients and the nemesis run for.
    pub duration: Duration,
    /// The workload; `None` lets the seed choose.
    pub workload: Option<Workload>,
    /// Client tasks.
    pub clients: usize,
    /// Add the faults boundkv does not survive yet (a clock outside its bound, a 1 s step).
    pub unsafe_clocks: bool,
    /// A planted bug, if any.
    pub mutation: Option<Mutation>,
    /// Print the trace as it is written.
    pub echo_trace: bool,
    /// Inject no faults (a baseline).
    pub no_faults: bool,
    /// Whether the run opens with a targeted scenario ([`crate::scenario`]).
    pub scenario: ScenarioChoice,
    /// Run without peer clock checks (as an embedded database does).
    pub no_peer_clock_checks: bool,
    /// `Some(RHO)`: every node on the cluster clock (`--clock cluster:RHO`), each on a
    /// monotonic clock drifting within `±RHO`.
    pub cluster_clock: Option<u32>,
}

/// Which targeted scenario a run opens with.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ScenarioChoice {
    /// As the seed draws ([`Scenario::draw`]: a quarter of the seeds have one).
    #[default]
    Drawn,
    /// None.
    None,
    /// This one.
    This(Scenario),
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            seed: 1,
            duration: Duration::from_secs(30),
            workload: None,
            clients: 4,
            unsafe_clocks: false,
            mutation: None,
            echo_trace: false,
            no_faults: false,
            scenario: ScenarioChoice::Drawn,
            no_peer_clock_checks: false,
            cluster_clock: None,
        }
    }
}

/// The verdict of one run.
#[derive(Clone, Debug)]
pub struct RunReport {
    /// The seed.
    pub seed: u64,
    /// The workload run.
    pub workload: Workload,
    /// The targeted scenario it opened with, if any.
    pub scenario: Option<Scenario>,
    /// Whether that scenario built its corner (`None` without a scenario).
    pub scenario_built: Option<bool>,
    /// The cluster's shape.
    pub config: ClusterConfig,
    /// The faults injected: (simulated seconds, what).
    pub schedule: Vec<(f64, String)>,
    /// Every check's result: the workload's checkers, liveness and agreement.
    pub results: Vec<CheckResult>,
    /// The overall verdict.
    pub valid: Validity,
    /// A hash of the whole trace: the same on every run of the seed.
    pub trace_hash: u64,
    /// The last lines of the trace (for a failing seed).
    pub trace_tail: Vec<String>,
    /// Simulated seconds the run covered.
    pub simulated: Duration,
    /// History events recorded.
    pub events: usize,
    /// Operations that completed `ok`.
    pub ok: usize,
}

impl RunReport {
    /// A one-line summary.
    pub fn summary(&self) -> String {
        let bad: Vec<String> = self
            .results
            .iter()
            .filter(|r| r.valid != Validity::Valid)
            .map(|r| {
                let kinds: BTreeSet<&str> = r.anomalies.iter().map(|a| a.kind.as_str()).collect();
                format!("{}: {:?} {:?}", r.checker, r.valid, kinds)
            })
            .collect();
        format!(
            "seed {} {:?} workload {}{} nodes {} bound {:?} ok {} events {} sim {:.1}s hash {:016x}{}",
            self.seed,
            self.valid,
            self.workload.name(),
            self.scenario.map(|s| format!(" scenario {}", s.name())).unwrap_or_default(),
            self.config.nodes,
            self.config.bound,
            self.ok,
            self.events,
            self.simulated.as_secs_f64(),
            self.trace_hash,
            if bad.is_empty() { String::new() } else { format!(" | {}", bad.join("; ")) }
        )
    }
}

thread_local! {
    /// Panics raised on this thread (a seed's whole run happens on one thread): a panic in any
    /// task of the simulation fails the seed, even though tokio catches it.
    static PANICS: std::cell::RefCell<Vec<String>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Records panics per thread instead of printing backtraces (once per process).
fn install_panic_hook() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        std::panic::set_hook(Box::new(|info| {
            let at = info.location().map(|l| format!(" at {l}")).unwrap_or_default();
            let what = info
                .payload()
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| info.payload().downcast_ref::<String>().cloned())
                .unwrap_or_default();
            PANICS.with(|p| p.borrow_mut().push(format!("{what}{at}")));
        }));
    });
}

/// Runs one seed (see the module docs).
pub fn run_seed(options: &RunOptions) -> RunReport {
    install_panic_hook();
    PANICS.with(|p| p.borrow_mut().clear());
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        // Tokio's own random choices (watch-channel shards, select! order) follow the seed too.
        .rng_seed(tokio::runtime::RngSeed::from_bytes(&options.seed.to_le_bytes()))
        .build()
        .expect("a current-thread runtime");
    let report = runtime.block_on(run(options.clone()));
    drop(runtime);
    report
}

async fn run(options: RunOptions) -> RunReport {
    let seed = options.seed;
    let mut rng = StdRng::seed_from_u64(seed);
    let mut config = ClusterConfig::draw(&mut rng);
    config.peer_clock_checks = !options.no_peer_clock_checks;
    match options.mutation {
        Some(Mutation::NoCommitWait) => config.unsafe_skip_commit_wait = true,
        Some(Mutation::NoLeaseCheck) => config.unsafe_ignore_lease = true,
        Some(Mutation::NoStepGuard) => config.unsafe_no_step_guard = true,
        Some(Mutation::NoPeerChecks) => config.unsafe_never_fence = true,
        Some(Mutation::NoPeerWidening) => config.unsafe_no_widening = true,
        Some(Mutation::NoReadFloor) => config.unsafe_no_read_floor = true,
        Some(Mutation::RawLeaseClock) => config.unsafe_raw_lease_clock = true,
        Some(Mutation::NoLeapAbsorb) => config.unsafe_no_leap_absorb = true,
        Some(Mutation::ClusterNoTermRule) => {
            config.unsafe_cluster_clock = Some(ClusterClockMutation::KeepAcrossTerms)
        }
        Some(Mutation::ClusterLowerEdge) => {
            config.unsafe_cluster_clock = Some(ClusterClockMutation::StartFromLowerEdge)
        }
        Some(Mutation::ClusterNoRoundTrip) => {
            config.unsafe_cluster_clock = Some(ClusterClockMutation::IgnoreRoundTrip)
        }
        Some(Mutation::ClusterNeverConvict) => {
            config.unsafe_cluster_clock = Some(ClusterClockMutation::NeverConvict)
        }
        None => {}
    }
    config.cluster_clock_rho_ppm = options.cluster_clock;
    let workload =
        options.workload.unwrap_or_else(|| Workload::ALL[rng.random_range(0..Workload::ALL.len())]);
    let scenario = match options.scenario {
        // The targeted scenarios build corners of the lease and the per-node clock defences;
        // under the cluster clock (no per-node clocks to break) the random phase runs alone.
        ScenarioChoice::Drawn if options.cluster_clock.is_some() => {
            Scenario::draw_for_cluster_clock(&mut rng, seed)
        }
        ScenarioChoice::Drawn => Scenario::draw(&mut rng, config.peer_clock_checks),
        ScenarioChoice::None => None,
        ScenarioChoice::This(s) => Some(s),
    };
    if let Some(s) = scenario {
        s.shape(&mut config);
    }
    let time = SimTime::new();
    let trace = Trace::new(time, options.echo_trace);
    trace.record(format!(
        "seed {seed} workload {} scenario {} config {config:?}",
        workload.name(),
        scenario.map_or("none", Scenario::name)
    ));
    let cluster = SimulatedCluster::start(config.clone(), seed, trace.clone(), time);
    // The scenario first, on a quiet cluster (its corner needs one); then the random phase.
    let scenario_problems = match scenario {
        Some(s) => Some(s.run(&cluster, &mut rng).await),
        None => None,
    };
    let until = options.duration.as_nanos() as u64;
    let clients = {
        let c: Arc<dyn SimCluster<_>> = cluster.clone();
        tokio::spawn(workload::run_clients(c, workload, options.clients, usize::MAX, until, seed))
    };
    let reuse = tokio::spawn(reuse_txn_ids(cluster.clone(), seed, until));
    let mut nemesis = Nemesis::new(cluster.clone(), seed, options.unsafe_clocks);
    if !options.no_faults {
        nemesis.run(until).await;
    } else {
        tokio::time::sleep(options.duration).await;
    }
    nemesis.heal_all();
    let mut history = clients.await.unwrap_or_default();
    let _ = reuse.await;
    let mut results = Vec::new();
    if let Some(outcome) = &scenario_problems {
        results.push(result("scenario", outcome.clone().unwrap_or_default()));
    }
    results.push(check_liveness(&cluster, seed).await);
    {
        let c: Arc<dyn SimCluster<_>> = cluster.clone();
        workload::final_read(c, workload, &mut history, seed).await;
    }
    results.push(check_agreement(&cluster, &history).await);
    results.extend(workload::check(workload, &history));
    results.push(none_counted(
        "closed-timestamps",
        cluster.broken_promises(),
        "commits arrived at or below a closed timestamp already applied",
    ));
    if config.cluster_clock_rho_ppm.is_some() {
        results.push(none_counted(
            "cluster-clock",
            cluster.cluster_clock_violations(),
            "readings did not hold the reference R of their term (the cluster clock's invariant)",
        ));
    }
    let panics = PANICS.with(|p| p.borrow().clone());
    for p in &panics {
        trace.record(format!("PANIC {p}"));
    }
    results.push(result("panics", panics));
    if let Some(path) = std::env::var_os("BOUNDKV_SIM_HISTORY") {
        let _ = boundkv_tests::check::history::write_history_file(
            std::path::Path::new(&path),
            &history,
        );
    }
    let valid = overall(&results);
    let simulated = time.elapsed();
    trace.record(format!("verdict {valid:?}"));
    cluster.shutdown();
    cluster.net().shutdown();
    RunReport {
        seed,
        workload,
        scenario,
        scenario_built: scenario_problems.as_ref().map(Option::is_some),
        config,
        schedule: nemesis.schedule().to_vec(),
        valid,
        trace_hash: trace.hash(),
        trace_tail: trace.tail(60),
        simulated,
        events: history.len(),
        ok: history.iter().filter(|e| e.kind == EventType::Ok).count(),
        results,
    }
}

fn result(checker: &str, problems: Vec<String>) -> CheckResult {
    let mut r = CheckResult::unknown(checker, "");
    r.notes.clear();
    for p in problems {
        *r.anomaly_counts.entry(checker.to_string()).or_insert(0) += 1;
        r.anomalies.push(boundkv_tests::check::Anomaly::new(checker, p, Vec::new()));
    }
    r.valid = if r.anomalies.is_empty() { Validity::Valid } else { Validity::Invalid };
    r
}

/// A check that passes when `count` things of a kind that must never happen happened: none.
fn none_counted(name: &str, count: u64, what: &str) -> CheckResult {
    result(name, if count == 0 { Vec::new() } else { vec![format!("{count} {what}")] })
}

/// A client that reuses transaction ids: it commits `probe/N = first`, then, 0.2–3 s later
/// (within the dedup window or past the GC horizon), sends the same transaction id again with
/// `probe/N = reused`. Whether the second is a duplicate or a new commit depends on the GC
/// horizon, and every replica must decide it alike, however its Raft loop batched the entries:
/// the agreement check compares them. (Not part of the checked history: reusing an id with
/// other writes is a client's mistake, which boundkv must survive, not serve linearizably.)
async fn reuse_txn_ids(cluster: Arc<SimulatedCluster>, seed: u64, until: u64) {
    let mut rng = StdRng::seed_from_u64(seed ^ 0x0072_6575_7365);
    let mut n = 0u64;
    while cluster.now_nanos() < until {
        tokio::time::sleep(Duration::from_millis(rng.random_range(100..600))).await;
        n += 1;
        let mut id = [0u8; 16];
        rng.fill(&mut id);
        let key = Bytes::from(format!("probe/{n}"));
        let first = CommitRequest {
            txn_id: TxnId(id),
            writes: [(key.clone(), Some(Bytes::from_static(b"first")))].into_iter().collect(),
            ..CommitRequest::default()
        };
        let mut reused = first.clone();
        reused.writes.insert(key, Some(Bytes::from_static(b"reused")));
        let later = Duration::from_millis(rng.random_range(200..3_000));
        let cluster = cluster.clone();
        tokio::spawn(async move {
            for (req, wait) in [(first, Duration::ZERO), (reused, later)] {
                tokio::time::sleep(wait).await;
                if let Some(leader) = cluster.leader().and_then(|l| cluster.running(l)) {
                    let _ = tokio::time::timeout(Duration::from_secs(5), leader.commit(req)).await;
                }
            }
        });
    }
}

/// Liveness after the faults end: each node in turn leads, commits a write and serves it;
/// every other node serves it as a follower read.
async fn check_liveness(cluster: &Arc<SimulatedCluster>, seed: u64) -> CheckResult {
    let mut problems = Vec::new();
    let step = Duration::from_secs(10);
    let ids = cluster.node_ids();
    if !eventually(step, || cluster.leader().is_some()).await {
        problems.push("no leader within 10 s of healing everything".to_string());
        return result("liveness", problems);
    }
    let mut rng = StdRng::seed_from_u64(seed ^ 0x6c69_7665);
    for (round, &target) in ids.iter().enumerate() {
        if !cluster.make_leader(target, step).await {
            problems.push(format!("n{target} did not become leader within {step:?}"));
            continue;
        }
        let key = Bytes::from(format!("liveness/{round}"));
        let value = Bytes::from(format!("v{round}"));
        let mut id = [0u8; 16];
        rng.fill(&mut id);
        let req = CommitRequest {
            txn_id: TxnId(id),
            writes: [(key.clone(), Some(value.clone()))].into_iter().collect(),
            ..CommitRequest::default()
        };
        // The write: retried on refusals (a new leader waits out earlier leases first).
        let mut committed = None;
        let deadline = tokio::time::Instant::now() + step;
        let mut last_error = String::new();
        while committed.is_none() && tokio::time::Instant::now() < deadline {
            let Some(leader) = cluster.running(target) else {
                last_error = format!("n{target} is down");
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            };
            match tokio::time::timeout(step, leader.commit(req.clone())).await {
                Ok(Ok(info)) => committed = Some(info.ts),
                Ok(Err(e)) => {
                    last_error = e.to_string();
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(_) => last_error = "commit hung".into(),
            }
        }
        let Some(ts) = committed else {
            problems.push(format!(
                "n{target} as leader committed nothing within {step:?}: {last_error}"
            ));
            continue;
        };
        // The read back, at every node (the leader through its own safe time, the others
        // through closed timestamps).
        for &reader in &ids {
            let Some(r) = cluster.running(reader) else { continue };
            let read = async {
                // A clock put right at the heal is fenced until its next peer clock check
                // (a probe round): wait that out.
                let at = loop {
                    match r.begin_read_only(ReadAt::Latest).await {
                        Err(boundkv_txn::Error::ClockFenced { .. }) => {
                            tokio::time::sleep(Duration::from_millis(50)).await;
                        }
                        other => break other?,
                    }
                };
                let got = r.get(at, &key).await?;
                Ok::<_, boundkv_txn::Error>((at, got))
            };
            match tokio::time::timeout(step, read).await {
                Ok(Ok((at, Some(v)))) if v == value && at >= ts => {}
                Ok(Ok((at, got))) => problems.push(format!(
                    "n{reader} read {key:?} at {at} (after the commit at {ts} by n{target}) and got {got:?}"
                )),
                Ok(Err(e)) => {
                    problems.push(format!("n{reader} could not read after n{target}'s commit: {e}"))
                }
                Err(_) => problems.push(format!("n{reader}'s read hung ({step:?})")),
            }
        }
    }
    result("liveness", problems)
}

/// Agreement: once every replica has applied the same log, every replica holds the same data
/// at every committed timestamp the history names (and at the end).
async fn check_agreement(cluster: &Arc<SimulatedCluster>, history: &[Event]) -> CheckResult {
    let mut problems = Vec::new();
    let ids = cluster.node_ids();
    let same = eventually(Duration::from_secs(10), || {
        let applied: BTreeSet<u64> = ids
            .iter()
            .filter_map(|&id| cluster.running(id).map(|r| r.state().applied_index))
            .collect();
        applied.len() == 1
    })
    .await;
    if !same {
        problems.push("the replicas did not converge to one applied index within 10 s".into());
        return result("agreement", problems);
    }
    let replicas: Vec<_> =
        ids.iter().filter_map(|&id| cluster.running(id).map(|r| (id, r))).collect();
    let horizon = replicas.iter().map(|(_, r)| r.gc_horizon()).max().unwrap_or(Timestamp::ZERO);
    let closed = replicas.iter().map(|(_, r)| r.closed_ts()).min().unwrap_or(Timestamp::ZERO);
    let mut stamps: BTreeSet<u64> = history
        .iter()
        .filter(|e| e.kind == EventType::Ok)
        .filter_map(|e| e.ts)
        .filter(|&ts| ts >= horizon.as_nanos() && ts <= closed.as_nanos())
        .collect();
    stamps.insert(closed.as_nanos());
    // Every scan reads the whole keyspace: compare at most 64 timestamps, spread evenly.
    let step = stamps.len().div_ceil(64).max(1);
    let last = stamps.last().copied();
    let stamps: Vec<u64> = stamps
        .iter()
        .copied()
        .step_by(step)
        .chain(last)
        .collect::<BTreeSet<u64>>()
        .into_iter()
        .collect();
    for ts in stamps {
        let mut views = Vec::new();
        for (id, r) in &replicas {
            let rows = r
                .mvcc()
                .scan((std::ops::Bound::Unbounded, std::ops::Bound::Unbounded), ts)
                .and_then(|it| it.collect::<Result<Vec<_>, _>>());
            match rows {
                Ok(rows) => views.push((*id, rows)),
                Err(e) => problems.push(format!("n{id} cannot scan at {ts}: {e}")),
            }
        }
        if let Some((first_id, first)) = views.first() {
            for (id, rows) in &views[1..] {
                if rows != first {
                    let diff: Vec<_> = rows
                        .iter()
                        .filter(|r| !first.contains(r))
                        .chain(first.iter().filter(|r| !rows.contains(r)))
                        .take(3)
                        .map(|(k, v)| format!("{}={}", k.escape_ascii(), v.escape_ascii()))
                        .collect();
                    problems.push(format!(
                        "n{id} and n{first_id} differ at ts {ts} (same applied index): {diff:?}"
                    ));
                }
            }
        }
        if problems.len() > 5 {
            break;
        }
    }
    result("agreement", problems)
}
