//! Targeted scenarios: the dangerous interleavings that random faults reach too rarely, set up
//! on purpose, with the seed choosing the nodes, the timing and the cluster's shape.
//!
//! Random faults and random clients find most bugs, but some protocols can only go wrong in a
//! narrow corner that a random schedule seldom builds. The lease is the plainest case: an old
//! leader can serve a stale read only if it is cut off (paused) while *no* write is pending at
//! it (any pending write holds its reads back until it learns of the new leader), a new leader
//! has acknowledged a write meanwhile, and a read reaches the old leader in the moment between
//! its resumption and its Raft loop catching up. A busy random workload almost never leaves an
//! old leader write-idle: without scenarios, 0 to 2 random seeds in 200 caught the lease check
//! switched off.
//! FoundationDB answers this with workloads written for one feature each; Jepsen with nemesis
//! packages aimed at one protocol. boundkv does the same: a quarter of the seeds
//! ([`Scenario::draw`]) open with one of these scenarios, then go on with the random phase.
//!
//! | scenario | the corner it builds | what must hold |
//! |---|---|---|
//! | [`Scenario::LeaseHandover`] | leader A writes, is paused; B is elected and acknowledges a newer value; a read reaches A as it resumes, before its Raft loop runs | the read returns the newer value or an error, never the older one |
//! | [`Scenario::SnapshotOverProposals`] | leader A is cut off with a commit (and its `Close`) appended but not committed; the majority compacts past them; A catches up by snapshot and is made leader again | the cut-off commit gets an answer; A, leading again, serves a read-write transaction and a commit in time |
//! | [`Scenario::ClockStep`] | a follower F serves a read; its clock strobes ±200 ms every 10 ms (a third of the time), the leader acknowledges a write; F's clock steps back 100 ms–1 s (a kernel inserting a leap second, `date -s`) or is set 250 ms behind while its bound stays tiny; F is asked for the write at once at `ReadAt::Latest` | F's read returns the write (the step guard holds F over on its monotonic clock) |
//! | [`Scenario::DedupAcrossGc`] | a follower F is cut off while a transaction id commits, the GC horizon passes it, and the same id commits again; F then applies all of it in one batch | F and the leader hold the same value at the second commit's timestamp |
//! | [`Scenario::ClockLieAtRestart`] | node V restarts with its clock 250 ms off (behind or ahead) inside its claimed bound; a write is acknowledged; V is asked for a follower read, then made leader and asked to commit, and another node reads after V's acknowledgement | no read misses a write acknowledged before it began (V refuses, fenced by its peers' clock checks) |
//! | [`Scenario::SmallClockLie`] | every clock's bound is set to ε (6–10 ms) but one other node R's, to ε_R (2–3 ms); node V restarts with its clock off by ε + δ, δ from ε_R + 1.2 ms to min(2.8 ε_R, 0.9 ε) (too little for the peer checks to see: nobody is fenced); R acknowledges a write and V reads it; V leads, acknowledges a write and R reads it; each step must run | no read misses a write acknowledged before it began (V's readings are widened to what its peers verify) |
//! | [`Scenario::ReadFloor`] | follower F's bound widens to 200–300 ms; F reads at `ReadAt::Latest` while the leader commits and acknowledges `w`, and returns `w`; F's source then claims 50 µs around a time 75–100 % of the old bound in the past, which the step guard lets through | a second read at F, sent at once, returns `w` (the floor of timestamps F served holds it up); the register and timestamp checkers judge the scenario's own history too |
//! | [`Scenario::LeaseClockStep`] | leader A's clock source steps forward 4–6 s (its step guard holds A's readings) while A renews its lease; A is paused; B is elected and acknowledges `2`; a read sent to A runs as A resumes, before its Raft loop | the read returns `2` or an error, never `1` (a lease measured on the raw source would outlive the true one by the step) |
//! | [`Scenario::ClusterRestart`] (drawn only under the cluster clock, and then alone) | a write is acknowledged; every node's system clock steps back 5–60 s (a fleet restarted before NTP corrected its clocks, or a fleet-wide NTP step); every node loses power and restarts, so no member has an estimate of the old reference; a new leader acknowledges a second write | a leader acknowledges the second write within 10 s, its timestamp lies above the first's, and every reference started after the restart starts above the first (the new leader starts `R` above the horizon its log holds, not from its system clock) |
//! | [`Scenario::ClusterBadOscillator`] (drawn only under the cluster clock) | leader X's oscillator starts running 25–100 × `RHO` fast or slow (beyond the one assumption); nobody reads or writes while X leads on it | within 10 s X is convicted and no longer leads; another leader acknowledges a write and every other node serves it; X refuses leadership offered for 3 s, and after the new leader crashes another node than X is elected within 10 s; once X's oscillator is back within `RHO`, its conviction lifts within 10 s |
//! | [`Scenario::LeapSecond`] (not drawn: it moves the run's epoch to a UTC midnight; run it by name) | every kernel announces a leap second; a write is acknowledged just before midnight; at midnight every clock steps back 1 s; a write is acknowledged at once, and every node is asked for it at `ReadAt::Latest`; writes and reads go on for seconds | every read sees every write acknowledged before it; no node holds over, none is fenced, every commit after the leap is acknowledged (the step guards absorb the announced step) |
//!
//! Each is the generalisation of a regression test (`t31`, and issue 11's bugs 1 and 2) or of one
//! of issue 12's clock hazards, with its parameters drawn from the seed instead of fixed. A scenario's verdict joins the run's
//! checks as `scenario`. For example, seed 12 might draw `LeaseHandover` on a 5-node cluster
//! with a 700 ms lease: n3 leads and writes `1`, is paused for 2.3 s, n5 is elected and
//! acknowledges `2`, a read is sent to n3, n3's request handlers resume 14 ms before its Raft
//! loop, and the read must not return `1`.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use rand::Rng;
use rand::rngs::StdRng;
use serde_json::{Value, json};

use boundkv_clockbound::{Clock, LeapState, Timestamp};
use boundkv_tests::check::{CheckParams, Event, EventType, Validity, check_workload, pair};
use boundkv_txn::replica::{ReadAt, Replica};
use boundkv_txn::{CommitRequest, TxnId};

use crate::cluster::{ClusterConfig, SimulatedCluster, eventually};
use crate::disk::SimDisk;
use crate::workload::SimCluster;

/// A targeted scenario (see the module docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scenario {
    /// A stale read at a resumed old leader.
    LeaseHandover,
    /// A snapshot installed over a node's own uncommitted proposals.
    SnapshotOverProposals,
    /// A transaction id committed again after GC, applied by a follower in one batch.
    DedupAcrossGc,
    /// A follower's clock steps back (or lies) while it runs.
    ClockStep,
    /// A node restarted with a clock that lies consistently, asked to read and to lead.
    ClockLieAtRestart,
    /// As [`Scenario::ClockLieAtRestart`], but the lie is only a little beyond the node's bound:
    /// too small for the peer clock checks to see, so the node is not fenced.
    SmallClockLie,
    /// A follower read after one that saw a write, its clock's bound shrunk in between.
    ReadFloor,
    /// A leader's clock source steps forward while it renews its lease; a read at it after a
    /// new leader acknowledged a write.
    LeaseClockStep,
    /// Every clock steps back at a leap second its kernel announced. Not in [`Scenario::ALL`]
    /// (not drawn): it needs the run to start just before a UTC midnight.
    LeapSecond,
    /// Under the cluster clock: every system clock steps back, every node restarts, a new
    /// leader acknowledges a write after one acknowledged before. Not in [`Scenario::ALL`]:
    /// drawn by [`Scenario::draw_for_cluster_clock`].
    ClusterRestart,
    /// Under the cluster clock: the leader's oscillator drifts far beyond `RHO`; its followers
    /// convict it. Not in [`Scenario::ALL`]: drawn by [`Scenario::draw_for_cluster_clock`].
    ClusterBadOscillator,
}

impl Scenario {
    /// Every scenario.
    pub const ALL: [Scenario; 8] = [
        Scenario::LeaseHandover,
        Scenario::SnapshotOverProposals,
        Scenario::DedupAcrossGc,
        Scenario::ClockStep,
        Scenario::ClockLieAtRestart,
        Scenario::SmallClockLie,
        Scenario::ReadFloor,
        Scenario::LeaseClockStep,
    ];

    /// Every scenario, those drawn only in special runs included (by name, or under the
    /// cluster clock).
    pub const EVERY: [Scenario; 11] = {
        let special =
            [Scenario::LeapSecond, Scenario::ClusterRestart, Scenario::ClusterBadOscillator];
        let mut every = [Scenario::LeapSecond; 11];
        let mut i = 0;
        while i < every.len() {
            every[i] =
                if i < Self::ALL.len() { Self::ALL[i] } else { special[i - Self::ALL.len()] };
            i += 1;
        }
        every
    };

    /// A quarter of the seeds draw one scenario (equally likely), the rest none. Without peer
    /// clock checks, only the scenarios that do not need them ([`Scenario::needs_peer_checks`]).
    pub fn draw(rng: &mut StdRng, peer_checks: bool) -> Option<Scenario> {
        if rng.random_ratio(1, 4) {
            let choices: Vec<Scenario> =
                Self::ALL.into_iter().filter(|s| peer_checks || !s.needs_peer_checks()).collect();
            Some(choices[rng.random_range(0..choices.len())])
        } else {
            None
        }
    }

    /// Under the cluster clock: a quarter of the seeds open with [`Scenario::ClusterRestart`],
    /// and a quarter of the others with [`Scenario::ClusterBadOscillator`] (the other scenarios
    /// build corners of per-node clocks, which that source does not read). The second is drawn
    /// from a stream of its own (from `seed`), so that the run's stream, and which seeds draw
    /// the first, are what they were before it existed.
    pub fn draw_for_cluster_clock(rng: &mut StdRng, seed: u64) -> Option<Scenario> {
        use rand::SeedableRng;
        if rng.random_ratio(1, 4) {
            return Some(Scenario::ClusterRestart);
        }
        let mut own = StdRng::seed_from_u64(seed ^ 0x0062_6164_5f6f_7363);
        own.random_ratio(1, 4).then_some(Scenario::ClusterBadOscillator)
    }

    /// Whether it builds a lie no local check can see (a clock wrong from a restart on), which
    /// only peer clock checks stop: not run without them.
    pub fn needs_peer_checks(self) -> bool {
        matches!(self, Scenario::ClockLieAtRestart | Scenario::SmallClockLie)
    }

    /// The cluster shape the scenario needs, from the one the seed drew: compaction soon enough
    /// for a snapshot, or none at all and a short GC retention; a lease long enough for a wide
    /// clock bound and frequent closed timestamps.
    pub fn shape(self, config: &mut ClusterConfig) {
        match self {
            Scenario::LeaseHandover
            | Scenario::ClockStep
            | Scenario::ClockLieAtRestart
            | Scenario::SmallClockLie
            | Scenario::LeaseClockStep
            | Scenario::ClusterRestart
            | Scenario::ClusterBadOscillator => {}
            Scenario::ReadFloor => {
                // A bound of 200–300 ms fits (`lease_bound_ceiling` ≥ 400 ms), and a follower
                // read waits at most a close interval or two for its closed timestamp.
                config.lease = config.lease.max(Duration::from_secs(1));
                config.close_interval = config.close_interval.min(Duration::from_millis(25));
            }
            Scenario::LeapSecond => config.epoch = leap_epoch(),
            Scenario::SnapshotOverProposals => config.keep_entries = 20,
            Scenario::DedupAcrossGc => {
                config.keep_entries = 10_000;
                config.gc_retention = Duration::from_millis(200);
                config.gc_interval = Duration::from_millis(500);
            }
        }
    }

    /// A short name, for reports.
    pub fn name(self) -> &'static str {
        match self {
            Scenario::LeaseHandover => "lease-handover",
            Scenario::SnapshotOverProposals => "snapshot-over-proposals",
            Scenario::DedupAcrossGc => "dedup-across-gc",
            Scenario::ClockStep => "clock-step",
            Scenario::ClockLieAtRestart => "clock-lie-at-restart",
            Scenario::SmallClockLie => "small-clock-lie",
            Scenario::ReadFloor => "read-floor",
            Scenario::LeaseClockStep => "lease-clock-step",
            Scenario::LeapSecond => "leap-second",
            Scenario::ClusterRestart => "cluster-restart",
            Scenario::ClusterBadOscillator => "cluster-bad-oscillator",
        }
    }

    /// Runs the scenario to its end (bounded: every wait has a deadline) and returns what went
    /// wrong, if anything, or `None` if its corner could not be built (no leader in time, say):
    /// that is not a failure (the liveness check covers a cluster that cannot elect), but the
    /// report says so, so that a scenario that never builds its corner cannot pass unnoticed.
    pub async fn run(
        self,
        cluster: &Arc<SimulatedCluster>,
        rng: &mut StdRng,
    ) -> Option<Vec<String>> {
        let trace = cluster.trace().clone();
        trace.record(format!("scenario {} begins", self.name()));
        let problems = match self {
            Scenario::LeaseHandover => lease_handover(cluster, rng).await,
            Scenario::SnapshotOverProposals => snapshot_over_proposals(cluster, rng).await,
            Scenario::DedupAcrossGc => dedup_across_gc(cluster, rng).await,
            Scenario::ClockStep => clock_step(cluster, rng).await,
            Scenario::ClockLieAtRestart => clock_lie_at_restart(cluster, rng, Lie::Large).await,
            Scenario::SmallClockLie => clock_lie_at_restart(cluster, rng, Lie::Small).await,
            Scenario::ReadFloor => read_floor(cluster, rng).await,
            Scenario::LeaseClockStep => lease_clock_step(cluster, rng).await,
            Scenario::LeapSecond => leap_second(cluster, rng).await,
            Scenario::ClusterRestart => cluster_restart(cluster, rng).await,
            Scenario::ClusterBadOscillator => cluster_bad_oscillator(cluster, rng).await,
        };
        cluster.net().heal();
        match &problems {
            Some(p) => trace.record(format!("scenario {} ends: {p:?}", self.name())),
            None => trace.record(format!("scenario {}: its corner was not built", self.name())),
        }
        problems
    }
}

/// How long any one step of a scenario may wait.
const STEP: Duration = Duration::from_secs(10);

/// A leader other than `not` that holds a valid lease (or, with the lease check off, any
/// leader other than `not`).
async fn active_leader(cluster: &Arc<SimulatedCluster>, not: Option<u64>) -> Option<u64> {
    let ignore_lease = cluster.config().unsafe_ignore_lease;
    let mut found = None;
    eventually(STEP, || {
        found = cluster.leader().filter(|&l| {
            Some(l) != not && cluster.running(l).is_some_and(|r| ignore_lease || r.lease_valid())
        });
        found.is_some()
    })
    .await;
    found
}

fn write(id: TxnId, key: &Bytes, value: &str) -> CommitRequest {
    CommitRequest {
        txn_id: id,
        writes: [(key.clone(), Some(Bytes::from(value.to_string())))].into_iter().collect(),
        ..CommitRequest::default()
    }
}

/// Commits `req` at `node`, resending it (same id) on refusals until acknowledged or `STEP`.
async fn commit_at(replica: &Arc<Replica<SimDisk>>, req: &CommitRequest) -> Option<Timestamp> {
    let deadline = tokio::time::Instant::now() + STEP;
    while tokio::time::Instant::now() < deadline {
        if let Ok(Ok(info)) = tokio::time::timeout_at(deadline, replica.commit(req.clone())).await {
            return Some(info.ts);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    None
}

/// A read of `key` sent to paused node `a` (`old`), run once it resumes: after 0–200 ms at the
/// paused node, a read-write transaction's read 30 % of the time and a `ReadAt::Latest` read
/// otherwise. Returns the read in flight and the lag (0–20 ms) to resume `a` with, before its
/// Raft loop runs; the caller resumes it.
async fn read_on_resume(
    cluster: &Arc<SimulatedCluster>,
    a: u64,
    old: &Arc<Replica<SimDisk>>,
    key: &Bytes,
    rng: &mut StdRng,
) -> (tokio::task::JoinHandle<boundkv_txn::Result<(Timestamp, Option<Bytes>)>>, Duration) {
    // Sometimes the read waits a little longer at the paused node.
    tokio::time::sleep(Duration::from_millis(rng.random_range(0..200))).await;
    let resumed = cluster.until_resumed(a);
    let read_write = rng.random_bool(0.3);
    let read = {
        let (key, old) = (key.clone(), old.clone());
        tokio::spawn(async move {
            resumed.await;
            let ts = if read_write {
                old.begin_read_write().await?
            } else {
                old.begin_read_only(ReadAt::Latest).await?
            };
            old.get(ts, &key).await.map(|v| (ts, v))
        })
    };
    tokio::time::sleep(Duration::from_millis(rng.random_range(1..50))).await;
    (read, Duration::from_millis(rng.random_range(0..=20)))
}

/// Leader A writes `1` and is paused; B is elected and acknowledges `2`; a read sent to A runs
/// when A resumes, `lag` before A's Raft loop does. Without the lease (A's reads stop when its
/// lease ends; B issues nothing before every earlier lease has ended) the read returns `1`.
async fn lease_handover(cluster: &Arc<SimulatedCluster>, rng: &mut StdRng) -> Option<Vec<String>> {
    let key = Bytes::from_static(b"scenario/lease");
    let a = active_leader(cluster, None).await?;
    let old = cluster.running(a)?;
    commit_at(&old, &write(TxnId(rng.random()), &key, "1")).await?;
    cluster.set_paused(a, true);
    let Some(b) = active_leader(cluster, Some(a)).await else {
        cluster.resume(a, Duration::ZERO);
        return None;
    };
    let acked = match cluster.running(b) {
        Some(new) => commit_at(&new, &write(TxnId(rng.random()), &key, "2")).await,
        None => None,
    };
    let Some(acked) = acked else {
        cluster.resume(a, Duration::ZERO);
        return None;
    };
    let (read, lag) = read_on_resume(cluster, a, &old, &key, rng).await;
    cluster.resume(a, lag);
    match tokio::time::timeout(STEP, read).await {
        Ok(Ok(Ok((ts, Some(v))))) if v.as_ref() == b"1" => Some(vec![format!(
            "n{a}, resumed {lag:?} before its Raft loop, read the value n{b} had replaced: \
             `1` at {ts}, while `2` was acknowledged at {acked} before the read was sent"
        )]),
        _ => Some(Vec::new()),
    }
}

/// Leader A is cut off with a commit appended but not committed; the majority elects B and
/// commits past the point where it compacts its log; A heals, catches up by snapshot, and is
/// made leader again. The cut-off commit must end, and A must serve: a proposal the snapshot
/// covered but that nobody answered keeps its timestamp pending forever, freezing A's safe
/// time (bug 1 of issue 11).
async fn snapshot_over_proposals(
    cluster: &Arc<SimulatedCluster>,
    rng: &mut StdRng,
) -> Option<Vec<String>> {
    let mut problems = Vec::new();
    let a = active_leader(cluster, None).await?;
    let old = cluster.running(a)?;
    let others: Vec<u64> = cluster.node_ids().into_iter().filter(|&n| n != a).collect();
    cluster.net().partition(&[vec![a], others]);
    cluster.trace().record(format!("scenario: n{a} cut off with a commit in flight"));
    let key = Bytes::from_static(b"scenario/snapshot");
    let cut_off = {
        let old = old.clone();
        let req = write(TxnId(rng.random()), &key, "cut-off");
        tokio::spawn(async move { old.commit(req).await })
    };
    let b = active_leader(cluster, Some(a)).await?;
    let new = cluster.running(b)?;
    // Well past `keep_entries` (20): the entries A appended are compacted away at B.
    let writes = rng.random_range(40..80);
    for i in 0..writes {
        let req = write(TxnId(rng.random()), &Bytes::from(format!("scenario/fill/{i}")), "x");
        commit_at(&new, &req).await?;
    }
    tokio::time::sleep(Duration::from_millis(rng.random_range(0..500))).await;
    cluster.net().heal();
    cluster.trace().record(format!("scenario: n{a} rejoins"));
    let target = new.state().commit_index;
    if !eventually(STEP, || old.state().applied_index >= target).await {
        return None; // A did not catch up (the liveness check will say why).
    }
    match tokio::time::timeout(STEP, cut_off).await {
        Ok(_) => {}
        Err(_) => problems
            .push(format!("n{a}'s cut-off commit got no answer {STEP:?} after n{a} caught up")),
    }
    // A leads again: it must be able to serve.
    if !cluster.make_leader(a, STEP).await {
        return Some(problems);
    }
    let served = tokio::time::timeout(STEP, async {
        loop {
            if let Ok(ts) = old.begin_read_write().await
                && old.get(ts, &key).await.is_ok()
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    if served.is_err() {
        problems.push(format!(
            "n{a}, leader again after catching up by snapshot, served no read-write \
             transaction within {STEP:?} (safe time frozen by an unanswered proposal?)"
        ));
    }
    Some(problems)
}

/// A follower F is cut off; transaction id X commits `first` at s1; the GC horizon passes s1;
/// X commits again (`second`, at s2: its first record is forgotten). F heals and applies the
/// whole stretch in one batch. Duplicate detection must not depend on the batching (bug 2 of
/// issue 11): F must hold `second` at s2, as the leader does.
async fn dedup_across_gc(cluster: &Arc<SimulatedCluster>, rng: &mut StdRng) -> Option<Vec<String>> {
    let a = active_leader(cluster, None).await?;
    let leader = cluster.running(a)?;
    let followers: Vec<u64> = cluster.node_ids().into_iter().filter(|&n| n != a).collect();
    let f = followers[rng.random_range(0..followers.len())];
    let rest: Vec<u64> = cluster.node_ids().into_iter().filter(|&n| n != f).collect();
    cluster.net().partition(&[vec![f], rest]);
    cluster.trace().record(format!("scenario: follower n{f} cut off"));
    let key = Bytes::from(format!("scenario/dedup/{}", rng.random::<u32>()));
    let id = TxnId(rng.random());
    let s1 = commit_at(&leader, &write(id, &key, "first")).await?;
    if !eventually(STEP, || leader.gc_horizon() > s1).await {
        return None;
    }
    let s2 = commit_at(&leader, &write(id, &key, "second")).await?;
    if s2 == s1 {
        // Answered as a duplicate: the leader still remembered X. No corner built.
        return None;
    }
    cluster.net().heal();
    cluster.trace().record(format!("scenario: n{f} rejoins"));
    let follower = cluster.running(f)?;
    let target = leader.state().commit_index;
    if !eventually(STEP, || follower.state().applied_index >= target).await {
        return None;
    }
    let value_at = |r: Arc<Replica<SimDisk>>| {
        let key = key.clone();
        async move {
            let ts = r.begin_read_only(ReadAt::Exact(s2)).await.ok()?;
            r.get(ts, &key).await.ok()
        }
    };
    let (at_leader, at_follower) = tokio::join!(
        tokio::time::timeout(STEP, value_at(leader.clone())),
        tokio::time::timeout(STEP, value_at(follower.clone()))
    );
    match (at_leader, at_follower) {
        (Ok(Some(l)), Ok(Some(f_value))) if l != f_value => Some(vec![format!(
            "replicas diverged: at {s2}, leader n{a} holds {l:?} and n{f} (which applied the \
             stretch in one batch) holds {f_value:?}"
        )]),
        _ => Some(Vec::new()),
    }
}

/// A follower F serves a read; the leader acknowledges a write; F's clock steps back while it
/// runs (the source keeps claiming its tiny bound); a read of the key at F at `ReadAt::Latest`,
/// sent at once, must see the write. Read raw, F's clock would place the read below it.
async fn clock_step(cluster: &Arc<SimulatedCluster>, rng: &mut StdRng) -> Option<Vec<String>> {
    let a = active_leader(cluster, None).await?;
    let leader = cluster.running(a)?;
    let followers: Vec<u64> = cluster.node_ids().into_iter().filter(|&n| n != a).collect();
    let f = followers[rng.random_range(0..followers.len())];
    let follower = cluster.running(f)?;
    let key = Bytes::from(format!("scenario/step/{}", rng.random::<u32>()));
    commit_at(&leader, &write(TxnId(rng.random()), &key, "before")).await?;
    // F serves a read first, so that the step happens to a clock with a past.
    let ts =
        tokio::time::timeout(STEP, follower.begin_read_only(ReadAt::Latest)).await.ok()?.ok()?;
    follower.get(ts, &key).await.ok()?;
    let step = if rng.random_bool(0.5) {
        -(rng.random_range(100..=1_000) as i64) * 1_000_000
    } else {
        -250_000_000
    };
    // A third of the time the clock strobes first (±200 ms every 10 ms) and settles back; its
    // peers' clock checks may fence it meanwhile, so wait for the fence to lift before the step
    // that matters.
    if rng.random_ratio(1, 3) {
        let clock = cluster.clock(f);
        let base = clock.local_error_nanos();
        for i in 0..rng.random_range(10..100) {
            clock.set_offset_nanos(base + if i % 2 == 0 { 200_000_000 } else { -200_000_000 });
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        clock.set_offset_nanos(base);
        cluster.trace().record(format!("scenario: n{f}'s clock strobed ±200 ms"));
        eventually(STEP, || follower.state().clock_fence.is_none()).await;
    }
    // The write is acknowledged before the step, and the read is sent at once after it: before
    // any probe round of the peer clock checks could notice, so only the step guard stands
    // between the stepped clock and a stale read.
    let acked = commit_at(&leader, &write(TxnId(rng.random()), &key, "after")).await?;
    cluster.clock(f).step_nanos(step);
    cluster.trace().record(format!("scenario: n{f}'s clock steps {step} ns, its bound unchanged"));
    let read = tokio::time::timeout(STEP, async {
        let ts = follower.begin_read_only(ReadAt::Latest).await?;
        follower.get(ts, &key).await.map(|v| (ts, v))
    })
    .await;
    // Put the clock back (as the time service would), so the random phase runs on true clocks.
    cluster.clock(f).step_nanos(-step);
    match read {
        Ok(Ok((ts, Some(v)))) if v.as_ref() == b"before" => Some(vec![format!(
            "n{f}, its clock stepped {step} ns, read at {ts} and missed the write acknowledged at \
             {acked} before the read began"
        )]),
        _ => Some(Vec::new()),
    }
}

/// How far the restarted node's clock lies, either way, while claiming the bound it had.
const LIE_NANOS: i64 = 250_000_000;

/// How far a clock lies in [`clock_lie_at_restart`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Lie {
    /// `LIE_NANOS`: the peer clock checks see it at once and fence the node.
    Large,
    /// Every clock's bound is set to `ε` (drawn, 6 to 10 ms) but one other node R's, set to
    /// `ε_R` (2 to 3 ms), and the node's clock is off by `ε + δ`, `δ` drawn from
    /// `[ε_R + 1.2 ms, min(2.8 ε_R, 0.9 ε)]`: beyond its bound by more than R's bound plus a
    /// timer tick (so a read at R after the node acknowledged a commit, or a read at the node
    /// after R did, lands below the commit), but less than the checks resolve on a network
    /// without delay (`2 ε + ε_R` beyond its bound for its own verdict, `3 ε_R` for R's, `ε`
    /// for a peer of bound `ε`'s Cristian check), so nobody is fenced and the node may lead.
    /// Only the widening of readings to what the peers verify keeps it safe.
    Small,
}

/// Node V crashes and restarts with its clock `LIE_NANOS` behind or ahead, its bound unchanged:
/// a lie no local check can see. Then, with W a write acknowledged before each step began:
///
/// 1. a read at V (`now().latest` of V's clock): behind, it lands below W and misses it;
/// 2. V is made leader (transfers for a while) and commits X; ahead, its commit wait ends by
///    its own clock, 250 ms early in true time, and a read at another node begun after X was
///    acknowledged misses it.
///
/// With the peer clock checks V is fenced from its start: it refuses both, and refuses to
/// lead. At the end V's clock is put right, and its fence must lift by itself (liveness).
///
/// With a [`Lie::Small`] V is not fenced: it reads and leads, and both must be right.
async fn clock_lie_at_restart(
    cluster: &Arc<SimulatedCluster>,
    rng: &mut StdRng,
    size: Lie,
) -> Option<Vec<String>> {
    let mut problems = Vec::new();
    let key = Bytes::from_static(b"scenario/clock-lie");
    let ids = cluster.node_ids();
    let v = ids[rng.random_range(0..ids.len())];
    // With a small lie: R, the node of small bound, that acknowledges before V reads and reads
    // after V acknowledged.
    let (magnitude, narrow) = match size {
        Lie::Large => (LIE_NANOS, None),
        Lie::Small => {
            let bound: u64 = rng.random_range(6_000_000..=10_000_000);
            let narrow: u64 = rng.random_range(2_000_000..=3_000_000);
            let others: Vec<u64> = ids.iter().copied().filter(|&n| n != v).collect();
            let r = others[rng.random_range(0..others.len())];
            for &id in &ids {
                let b = if id == r { narrow } else { bound };
                cluster.clock(id).set_bound(Duration::from_nanos(b));
            }
            let delta =
                rng.random_range(narrow + 1_200_000..=(narrow * 28 / 10).min(bound * 9 / 10));
            cluster.trace().record(format!("scenario: bounds {bound} ns, n{r}'s {narrow} ns"));
            ((bound + delta) as i64, Some(r))
        }
    };
    let lie = if rng.random_bool(0.5) { -magnitude } else { magnitude };
    let a = active_leader(cluster, None).await?;
    commit_at(&cluster.running(a)?, &write(TxnId(rng.random()), &key, "before")).await?;
    cluster.crash(v);
    cluster.clock(v).set_offset_nanos(lie);
    tokio::time::sleep(Duration::from_millis(rng.random_range(100..1_000))).await;
    cluster.restart(v);
    cluster.trace().record(format!("scenario: n{v} restarted with its clock {lie} ns off"));
    let lied = cluster.running(v)?;
    // Let V catch up on the log (and, with the checks, hear its peers).
    let leader = active_leader(cluster, Some(v)).await?;
    let target = cluster.running(leader)?.state().commit_index;
    if !eventually(STEP, || lied.state().applied_index >= target).await {
        return None;
    }
    // 1. A write acknowledged, then a read at V.
    if let Some(r) = narrow {
        cluster.make_leader(r, STEP).await;
    }
    let leader = active_leader(cluster, Some(v)).await?;
    let w = commit_at(&cluster.running(leader)?, &write(TxnId(rng.random()), &key, "w")).await?;
    let read = async {
        let at = lied.begin_read_only(ReadAt::Latest).await?;
        Ok::<_, boundkv_txn::Error>((at, lied.get(at, &key).await?))
    };
    // With a small lie V is not fenced, and each step must really run (else the corner was
    // not built): its read served, its leadership, its commit, R's read.
    let mut built = true;
    match tokio::time::timeout(STEP, read).await {
        Ok(Ok((at, got))) if at < w || got.as_deref() != Some(&b"w"[..]) => problems.push(format!(
            "n{v}, its clock {lie} ns off, read {got:?} at {at} after `w` was acknowledged at {w}"
        )),
        Ok(Ok(_)) => {}
        Ok(Err(e)) => {
            built = false;
            cluster.trace().record(format!("scenario: n{v} refused the read: {e}"));
        }
        Err(_) => built = false,
    }
    // 2. V leads (if it will), commits; another node reads after the acknowledgement. With a
    // small lie R finds V's clock inconsistent (if not enough to fence either) and would not
    // hand it leadership: a third node leads first.
    if let Some(r) = narrow
        && let Some(&third) = ids.iter().find(|&&n| n != v && n != r)
    {
        cluster.make_leader(third, STEP).await;
    }
    if cluster.make_leader(v, Duration::from_secs(3)).await {
        cluster.trace().record(format!("scenario: n{v} leads with its clock {lie} ns off"));
        if let Some(x) = commit_at(&lied, &write(TxnId(rng.random()), &key, "x")).await {
            let others: Vec<u64> = ids.iter().copied().filter(|&n| n != v).collect();
            let reader =
                cluster.running(narrow.unwrap_or(others[rng.random_range(0..others.len())]))?;
            let read = async {
                let at = reader.begin_read_only(ReadAt::Latest).await?;
                Ok::<_, boundkv_txn::Error>((at, reader.get(at, &key).await?))
            };
            match tokio::time::timeout(STEP, read).await {
                Ok(Ok((at, got))) if at < x || got.as_deref() != Some(&b"x"[..]) => {
                    problems.push(format!(
                        "n{}, reading after n{v} (its clock {lie} ns off, leading) acknowledged \
                         `x` at {x}, read {got:?} at {at}",
                        reader.id(),
                    ))
                }
                Ok(Ok(_)) => {}
                _ => built = false,
            }
        } else {
            built = false;
        }
    } else {
        built = false;
        cluster.trace().record(format!("scenario: n{v} did not lead with its clock {lie} ns off"));
    }
    // The operator puts V's clock right; its fence lifts by itself. A small lie was never
    // fenced, so V's step guard would hold the lie over the correction (a step back): V is
    // restarted with its clock right instead, as an operator would.
    if let Some(r) = narrow {
        // Not as the leader: the random phase starts without an election to wait out.
        cluster.make_leader(r, STEP).await;
        cluster.crash(v);
        for &id in &ids {
            cluster.clock(id).set_bound(cluster.config().bound);
        }
        cluster.clock(v).set_offset_nanos(0);
        cluster.restart(v);
        // The random phase starts on a cluster that can commit at once.
        active_leader(cluster, None).await;
    } else {
        cluster.clock(v).set_offset_nanos(0);
    }
    cluster.trace().record(format!("scenario: n{v}'s clock put right"));
    let lifted =
        eventually(STEP, || cluster.running(v).is_none_or(|r| r.state().clock_fence.is_none()))
            .await;
    if !lifted {
        problems.push(format!(
            "n{v}'s clock fence did not lift within {STEP:?} of its clock being put right"
        ));
    }
    if size == Lie::Small && !built && problems.is_empty() {
        cluster
            .trace()
            .record("scenario: a step did not run (V refused, did not lead, or a read failed)");
        return None;
    }
    Some(problems)
}

/// The read-floor scenario's short history, in the register workload's format: one key (`0`),
/// `before` as `1` and `w` as `2`. Event times are the simulation's; the register and timestamp
/// checkers judge it as they judge the clients' histories.
struct MiniHistory {
    events: Vec<Event>,
    cluster: Arc<SimulatedCluster>,
}

impl MiniHistory {
    fn new(cluster: &Arc<SimulatedCluster>) -> MiniHistory {
        MiniHistory { events: Vec::new(), cluster: cluster.clone() }
    }

    fn push(
        &mut self,
        process: u64,
        kind: EventType,
        f: &str,
        value: Value,
        at: Option<(u64, Timestamp)>,
    ) {
        let index = self.events.len() as u64;
        let mut e = Event::new(index, self.cluster.now_nanos(), process, kind, f, value);
        if let Some((node, ts)) = at {
            e.node = Some(format!("n{node}"));
            e.ts = Some(ts.as_nanos());
        }
        self.events.push(e);
    }

    /// What the register and timestamp checkers find wrong with it.
    fn problems(&self) -> Vec<String> {
        let ops = match pair(&self.events) {
            Ok(ops) => ops,
            Err(e) => return vec![format!("the scenario's history is malformed: {e}")],
        };
        check_workload("register", &ops, &CheckParams::default())
            .into_iter()
            .filter(|r| r.valid == Validity::Invalid)
            .flat_map(|r| {
                r.anomalies
                    .into_iter()
                    .map(move |a| format!("{} checker: {}: {}", r.checker, a.kind, a.explanation))
            })
            .collect()
    }
}

/// The register value of a read: `1` for `before`, `2` for `w`.
fn register_value(v: &Option<Bytes>) -> Value {
    match v.as_deref() {
        Some(b"before") => json!(1),
        Some(b"w") => json!(2),
        Some(_) => json!(-1),
        None => Value::Null,
    }
}

/// A follower F's clock bound widens to 200–300 ms (its source loses its reference; still
/// true). F serves a read at `ReadAt::Latest`, at `t₁ + wide`, which waits for the closed
/// timestamp; meanwhile the leader commits `w` (at `s`, below the read's timestamp) and
/// acknowledges it, and the read returns `w`. F's source then resynchronises wrongly: it claims
/// 50 µs around a time 75–100 % of the old bound in the past. The step guard lets that reading
/// through (it overlaps the wide interval carried forward), although true time is above it, and
/// only the next round of peer clock checks could see it. A second read at F, sent at once, must
/// still return `w`: it began after the first returned `w`, and after `w` was acknowledged. The
/// floor (every timestamp F served) holds it at or above the first read's; the clock alone puts
/// it below `s`.
///
/// With true clocks the floor changes nothing here: a follower sees `w` only once its commit
/// wait is over, so true time, and any true `latest`, is past `s` by then. What the floor
/// guards against is a clock that goes back by less than the guard can see.
async fn read_floor(cluster: &Arc<SimulatedCluster>, rng: &mut StdRng) -> Option<Vec<String>> {
    let mut history = MiniHistory::new(cluster);
    let a = active_leader(cluster, None).await?;
    let leader = cluster.running(a)?;
    let followers: Vec<u64> = cluster.node_ids().into_iter().filter(|&n| n != a).collect();
    let f = followers[rng.random_range(0..followers.len())];
    let follower = cluster.running(f)?;
    let clock = cluster.clock(f);
    let key = Bytes::from(format!("scenario/floor/{}", rng.random::<u32>()));
    history.push(0, EventType::Invoke, "write", json!([0, 1]), None);
    let before = commit_at(&leader, &write(TxnId(rng.random()), &key, "before")).await?;
    history.push(0, EventType::Ok, "write", json!([0, 1]), Some((a, before)));
    // Wide, but well inside what the lease allows (`ReplicaOptions::lease_bound_ceiling`,
    // 400 ms and more with the lease `shape` sets).
    let wide = Duration::from_millis(rng.random_range(200..=300));
    let narrow = Duration::from_micros(50);
    let base = clock.local_error_nanos();
    clock.set_bound(wide);
    cluster.trace().record(format!("scenario: n{f}'s clock bound widens to {wide:?}"));
    let read = || async {
        let ts = follower.begin_read_only(ReadAt::Latest).await?;
        follower.get(ts, &key).await.map(|v| (ts, v))
    };
    // The first read at F, and `w` committed and acknowledged while it waits.
    history.push(2, EventType::Invoke, "read", json!([0, null]), None);
    let first = tokio::time::timeout(STEP, async {
        let (first, w) = tokio::join!(read(), async {
            tokio::time::sleep(wide / 2).await;
            history.push(1, EventType::Invoke, "write", json!([0, 2]), None);
            let s = commit_at(&leader, &write(TxnId(rng.random()), &key, "w")).await;
            if let Some(s) = s {
                history.push(1, EventType::Ok, "write", json!([0, 2]), Some((a, s)));
            }
            s
        });
        (first, w)
    })
    .await;
    let put_right = || {
        // Two truthful readings the guard accepts: wide around the truth, then the usual bound.
        clock.set_offset_nanos(base);
        clock.set_bound(wide);
        let _ = follower.clock().now();
        clock.set_bound(cluster.config().bound);
    };
    let Ok((Ok((ts1, v1)), Some(s))) = first else {
        put_right();
        return None;
    };
    history.push(2, EventType::Ok, "read", json!([0, register_value(&v1)]), Some((f, ts1)));
    // The wrong resynchronisation.
    let back = wide.as_nanos() as i64 * rng.random_range(75..=100) / 100;
    clock.set_offset_nanos(base - back);
    clock.set_bound(narrow);
    let raw_latest = clock.now().ok()?.latest();
    cluster.trace().record(format!(
        "scenario: n{f} read `w` at {ts1}; its clock now claims {narrow:?} around a time {back} ns \
         in the past (latest {raw_latest}, `w` at {s})"
    ));
    history.push(2, EventType::Invoke, "read", json!([0, null]), None);
    let second = tokio::time::timeout(STEP, read()).await;
    put_right();
    if let Ok(Ok((ts2, v2))) = &second {
        history.push(2, EventType::Ok, "read", json!([0, register_value(v2)]), Some((f, *ts2)));
    }
    // The corner: the first read saw `w`, and the clock alone now places a read below it.
    if v1.as_deref() != Some(&b"w"[..]) || raw_latest >= s {
        return None;
    }
    let mut problems = Vec::new();
    match second {
        Ok(Ok((ts2, v2))) if v2.as_deref() != Some(&b"w"[..]) => problems.push(format!(
            "n{f} returned `w` (committed at {s}) to a read at {ts1}, then, its clock gone back \
             {back} ns inside its old bound, {v2:?} to a read at {ts2} that began after the \
             first ended"
        )),
        _ => {}
    }
    problems.extend(history.problems());
    Some(problems)
}

/// Leader A's clock source steps forward 4–6 s (an NTP step after a VM resumes, `date -s`): its
/// step guard holds every reading on the monotonic clock, and A goes on renewing its lease. A is
/// paused; B is elected, waits out every earlier lease (by its own clock) and acknowledges `2`; a
/// read sent to A runs when A resumes, `lag` before its Raft loop, still inside the lease A
/// would have measured on the stepped source. It must not return `1`. Measured on the guarded
/// clock A's lease ends on time; measured on the raw source it ends `step` late.
async fn lease_clock_step(
    cluster: &Arc<SimulatedCluster>,
    rng: &mut StdRng,
) -> Option<Vec<String>> {
    let key = Bytes::from_static(b"scenario/lease-clock");
    let a = active_leader(cluster, None).await?;
    let old = cluster.running(a)?;
    commit_at(&old, &write(TxnId(rng.random()), &key, "1")).await?;
    let step = Duration::from_millis(rng.random_range(4_000..=6_000));
    let stepped_at = cluster.true_now();
    cluster.clock(a).step_nanos(step.as_nanos() as i64);
    cluster.trace().record(format!("scenario: n{a}'s clock source steps forward {step:?}"));
    // A renews its lease at least once on the stepped clock (every fifth of the lease).
    let lease = cluster.config().lease;
    tokio::time::sleep(lease / 5 * 2 + Duration::from_millis(rng.random_range(0..100))).await;
    let undo = |cluster: &Arc<SimulatedCluster>| {
        cluster.clock(a).step_nanos(-(step.as_nanos() as i64));
        cluster.resume(a, Duration::ZERO);
    };
    cluster.set_paused(a, true);
    let Some(b) = active_leader(cluster, Some(a)).await else {
        undo(cluster);
        return None;
    };
    let acked = match cluster.running(b) {
        Some(new) => commit_at(&new, &write(TxnId(rng.random()), &key, "2")).await,
        None => None,
    };
    let Some(acked) = acked else {
        undo(cluster);
        return None;
    };
    let (read, lag) = read_on_resume(cluster, a, &old, &key, rng).await;
    let resumed_at = cluster.true_now();
    cluster.resume(a, lag);
    let got = tokio::time::timeout(STEP, read).await;
    cluster.clock(a).step_nanos(-(step.as_nanos() as i64));
    cluster.trace().record(format!("scenario: n{a}'s clock source steps back {step:?}"));
    // The corner: A's last renewal went out after the step, so a lease measured on the stepped
    // source would run at least until `stepped_at + step + lease − 2 × bound` in true time.
    let bound = cluster.config().bound;
    let stretched_until = stepped_at.saturating_add(step + lease).saturating_sub(bound * 2);
    if resumed_at >= stretched_until {
        return None;
    }
    match got {
        Ok(Ok(Ok((ts, Some(v))))) if v.as_ref() == b"1" => Some(vec![format!(
            "n{a}, its clock source stepped {step:?} forward, resumed {lag:?} before its Raft \
             loop and read the value n{b} had replaced: `1` at {ts}, while `2` was \
             acknowledged at {acked} before the read was sent"
        )]),
        _ => Some(Vec::new()),
    }
}
/// The midnight of the leap-second scenario: 2026-12-31T24:00:00Z.
const LEAP: Timestamp = Timestamp::from_nanos(1_798_761_600_000_000_000);

/// The leap-second scenario's epoch: 20 s before [`LEAP`], time enough to elect a leader.
fn leap_epoch() -> Timestamp {
    LEAP.saturating_sub(Duration::from_secs(20))
}

/// Sleeps until true time reaches `t` (at once if it has).
async fn until_true(cluster: &Arc<SimulatedCluster>, t: Timestamp) {
    let left = t.saturating_duration_since(cluster.true_now());
    tokio::time::sleep(left).await;
}

/// Reads `key` at node `id` at `ReadAt::Latest`; `Some(value)` if the read was served.
async fn latest_at(cluster: &Arc<SimulatedCluster>, id: u64, key: &Bytes) -> Option<Option<Bytes>> {
    let replica = cluster.running(id)?;
    let read = async {
        let ts = replica.begin_read_only(ReadAt::Latest).await.ok()?;
        replica.get(ts, key).await.ok()
    };
    tokio::time::timeout(STEP, read).await.ok().flatten()
}

/// A write is acknowledged; every system clock steps back 5–60 s (more than a lease and the downtime, which the new leader's wait would otherwise absorb); every node loses power and
/// restarts (no member keeps an estimate of the old reference); a new leader acknowledges a
/// second write. The second must get the higher timestamp, and every reference started after the
/// restart must start above the first: a new leader that started `R` from its system clock, not
/// above the horizon its log holds, would start it lower (the nodes' high-water marks may then
/// stall its writes rather than let them go back, so the start itself is checked).
async fn cluster_restart(cluster: &Arc<SimulatedCluster>, rng: &mut StdRng) -> Option<Vec<String>> {
    let key = Bytes::from_static(b"scenario/cluster-restart");
    let a = active_leader(cluster, None).await?;
    let first = commit_at(&cluster.running(a)?, &write(TxnId(rng.random()), &key, "1")).await?;
    let back = rng.random_range(5_000_000_000..60_000_000_000i64);
    let last_term = cluster.cluster_clock_starts().last().map_or(0, |&(term, _, _)| term);
    for id in cluster.node_ids() {
        cluster.clock(id).step_nanos(-back);
        cluster.crash(id);
    }
    cluster
        .trace()
        .record(format!("scenario: every system clock stepped back {back} ns; every node crashed"));
    tokio::time::sleep(Duration::from_millis(rng.random_range(0..300))).await;
    for id in cluster.node_ids() {
        cluster.restart(id);
    }
    // Every node restarted on its disk, with no fault left: a leader must take over and
    // acknowledge a write within `STEP`. (A new leader whose reference went back behind what the
    // nodes issued before is held back by their high-water marks: it stalls, it does not go
    // back, and the stall is what shows.)
    let mut problems = Vec::new();
    let second = match active_leader(cluster, None).await {
        Some(b) => match cluster.running(b) {
            Some(r) => {
                commit_at(&r, &write(TxnId(rng.random()), &key, "2")).await.map(|ts| (b, ts))
            }
            None => None,
        },
        None => None,
    };
    match second {
        Some((b, second)) if second <= first => problems.push(format!(
            "after a full restart n{b} acknowledged a write at {second}, at or below one \
             acknowledged before the restart at {first}"
        )),
        Some(_) => {}
        None => problems.push(format!(
            "no write acknowledged within {STEP:?} of a leader after a full restart"
        )),
    }
    // Whether or not a write got through: every reference started after the restart starts
    // above the write acknowledged before it (the reference goes forward across terms).
    for (term, leader, start) in cluster.cluster_clock_starts() {
        if term > last_term && start <= first {
            problems.push(format!(
                "after a full restart n{leader} started term {term}'s reference at {start}, at or \
                 below a write acknowledged before the restart at {first}"
            ));
        }
    }
    for id in cluster.node_ids() {
        cluster.clock(id).step_nanos(back);
    }
    Some(problems)
}

/// Leader X's oscillator starts running 25–100 × `RHO` fast or slow: the cluster clock's one
/// assumption broken on purpose. Its followers' estimates of `R` then contradict its answers,
/// they report it in their probes, and a majority of reports convicts X: it hands leadership to
/// an accuser (or steps down), gives no reading and does not campaign (see "Fencing" in
/// `consensus::cluster_clock`). Nobody reads or writes while X leads on the bad oscillator (no
/// defence can make those safe, only short: the simulator does not check the invariant for a
/// term whose leader broke the assumption). Then, with X still broken: within 10 s X is
/// convicted and another node leads and acknowledges a write that every node but X serves at
/// `ReadAt::Latest`; for 3 s X is offered leadership (transfers) and must not take it; the new
/// leader crashes, and another node than X must win the election that follows (within 10 s,
/// with X's vote where the majority needs it). Finally its oscillator is
/// repaired and its conviction must lift within 10 s.
async fn cluster_bad_oscillator(
    cluster: &Arc<SimulatedCluster>,
    rng: &mut StdRng,
) -> Option<Vec<String>> {
    let rho = i64::from(cluster.config().cluster_clock_rho_ppm?);
    let ids = cluster.node_ids();
    if ids.len() < 3 {
        return None; // Nobody to convict a leader.
    }
    let x = active_leader(cluster, None).await?;
    let oscillator = cluster.oscillator(x);
    let honest = oscillator.ppm();
    let bad = rng.random_range(25 * rho..=100 * rho) * if rng.random_bool(0.5) { 1 } else { -1 };
    oscillator.set_ppm(bad, false);
    cluster.trace().record(format!(
        "scenario: n{x}'s oscillator runs {bad:+} ppm (RHO {rho} ppm) while it leads"
    ));
    let problems = while_broken(cluster, rng, x, bad).await;
    oscillator.set_ppm(honest, true);
    cluster.trace().record(format!("scenario: n{x}'s oscillator back at {honest:+} ppm"));
    let mut problems = problems;
    let fence = |id: u64| cluster.running(id).and_then(|r| r.state().clock_fence);
    if !eventually(STEP, || cluster.is_up(x) && fence(x).is_none()).await {
        problems.push(format!(
            "n{x} is still fenced {STEP:?} after its oscillator came back within RHO: {:?}",
            fence(x)
        ));
    }
    Some(problems)
}

/// The checks of [`cluster_bad_oscillator`] while X's oscillator is broken.
async fn while_broken(
    cluster: &Arc<SimulatedCluster>,
    rng: &mut StdRng,
    x: u64,
    bad: i64,
) -> Vec<String> {
    let mut problems = Vec::new();
    let convicted = |id: u64| {
        cluster
            .running(id)
            .and_then(|r| r.state().clock_fence)
            .is_some_and(|why| why.contains("by the cluster clock: as leader of term"))
    };
    let deposed =
        eventually(STEP, || convicted(x) && cluster.leader().is_some_and(|l| l != x)).await;
    if !deposed {
        problems.push(format!(
            "n{x} still leads (or is not convicted) {STEP:?} after its oscillator went {bad:+} ppm"
        ));
        return problems;
    }
    let key = Bytes::from_static(b"scenario/bad-oscillator");
    let Some(y) = active_leader(cluster, Some(x)).await else {
        problems.push(format!("no node but n{x} leads with a lease {STEP:?} after the conviction"));
        return problems;
    };
    let acked = match cluster.running(y) {
        Some(r) => commit_at(&r, &write(TxnId(rng.random()), &key, "after")).await,
        None => None,
    };
    if acked.is_none() {
        problems
            .push(format!("n{y} acknowledged no write within {STEP:?} after n{x}'s conviction"));
        return problems;
    }
    for id in cluster.node_ids().into_iter().filter(|&id| id != x) {
        let deadline = tokio::time::Instant::now() + STEP;
        let mut served = false;
        while !served && tokio::time::Instant::now() < deadline {
            match latest_at(cluster, id, &key).await {
                Some(Some(v)) if v.as_ref() == b"after" => served = true,
                Some(other) => {
                    problems.push(format!("n{id} read {other:?} after `after` was acknowledged"));
                    served = true;
                }
                None => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
        if !served {
            problems.push(format!("n{id} served no read within {STEP:?} after n{x}'s conviction"));
        }
    }
    // Offered leadership, a convicted member refuses it.
    if cluster.make_leader(x, Duration::from_secs(3)).await {
        problems.push(format!("n{x} took leadership over while its oscillator runs {bad:+} ppm"));
        return problems;
    }
    // Nor does it win an election: the leader crashes.
    if let Some(l) = cluster.leader().filter(|&l| l != x) {
        cluster.crash(l);
        cluster.trace().record(format!("scenario: n{l} crashed: an election without it"));
        // Another node must be elected, with the convicted one's vote if the majority needs it
        // (a member held inside raft-rs's check-quorum lease would refuse it forever).
        let mut winner = None;
        let won = eventually(Duration::from_secs(10), || {
            winner = cluster.leader().filter(|&w| w != l);
            winner.is_some()
        })
        .await;
        match winner {
            Some(w) if w == x => {
                problems.push(format!("n{x} won an election while its oscillator runs {bad:+} ppm"))
            }
            Some(_) => {}
            None => problems.push(format!(
                "no leader elected within 10 s of n{l}'s crash (n{x} convicted{})",
                if won { "" } else { ", no vote for anyone?" }
            )),
        }
        cluster.restart(l);
    }
    problems
}

/// Every kernel announces a leap second for [`LEAP`]; a write is acknowledged just before it; at
/// `LEAP` every clock steps back one second (the kernel's `TIME_OOP`, then `TIME_WAIT`, then the
/// daemon clears its flag). A write is acknowledged at once, above the one before, and every
/// node must serve it at `ReadAt::Latest`; writes and reads go on for a few seconds. No node may
/// hold over (its bound would grow until it refuses timestamps, about 13 minutes later) or be
/// fenced: the stepping members absorb the step alike.
async fn leap_second(cluster: &Arc<SimulatedCluster>, rng: &mut StdRng) -> Option<Vec<String>> {
    let mut problems = Vec::new();
    let key = Bytes::from_static(b"scenario/leap");
    cluster.kernel().set(LeapState::InsertScheduled);
    cluster.trace().record(format!("scenario: every kernel announces a leap second at {LEAP}"));
    let a = active_leader(cluster, None).await?;
    if cluster.true_now() >= LEAP.saturating_sub(Duration::from_secs(2)) {
        return None; // No leader in time to write before the leap.
    }
    // Every node serves a read first, so that the step happens to clocks with a past.
    for id in cluster.node_ids() {
        latest_at(cluster, id, &key).await;
    }
    let lead = || cluster.leader().and_then(|l| cluster.running(l));
    until_true(cluster, LEAP.saturating_sub(Duration::from_millis(rng.random_range(300..800))))
        .await;
    let before =
        commit_at(&cluster.running(a)?, &write(TxnId(rng.random()), &key, "before")).await?;
    until_true(cluster, LEAP).await;
    cluster.kernel().set(LeapState::InLeapSecond);
    for id in cluster.node_ids() {
        cluster.clock(id).step_nanos(-1_000_000_000);
    }
    cluster.shift_utc(-1_000_000_000);
    cluster.trace().record("scenario: every clock steps back 1 s (23:59:60)");
    let leader = lead()?;
    let Some(after) = commit_at(&leader, &write(TxnId(rng.random()), &key, "after")).await else {
        problems.push("no commit was acknowledged just after the leap".into());
        return Some(problems);
    };
    if after <= before {
        problems.push(format!("the commit after the leap got {after}, not above {before}"));
    }
    for id in cluster.node_ids() {
        match latest_at(cluster, id, &key).await {
            Some(Some(v)) if v.as_ref() == b"before" => problems.push(format!(
                "n{id} read `before` after `after` was acknowledged at {after} (a stale read \
                 across the leap)"
            )),
            _ => {}
        }
    }
    // The repeated second ends; later the daemon clears its flag. Writes and reads go on.
    tokio::time::sleep(Duration::from_secs(1)).await;
    cluster.kernel().set(LeapState::JustHappened);
    for i in 0..rng.random_range(5..15) {
        if i == 3 {
            cluster.kernel().set(LeapState::None);
        }
        let value = format!("v{i}");
        let Some(leader) = lead() else { continue };
        let Some(ts) = commit_at(&leader, &write(TxnId(rng.random()), &key, &value)).await else {
            problems.push(format!("commit {i} after the leap was not acknowledged in {STEP:?}"));
            continue;
        };
        let id = cluster.node_ids()[rng.random_range(0..cluster.node_ids().len())];
        if let Some(Some(v)) = latest_at(cluster, id, &key).await
            && v.as_ref() != value.as_bytes()
        {
            problems.push(format!(
                "n{id} read {v:?} after {value:?} was acknowledged at {ts} (a stale read after \
                 the leap)"
            ));
        }
        tokio::time::sleep(Duration::from_millis(rng.random_range(50..400))).await;
    }
    for id in cluster.node_ids() {
        let Some(replica) = cluster.running(id) else { continue };
        if replica.clock().guard_report().is_some_and(|g| g.holding_over) {
            problems.push(format!(
                "n{id} holds over since the leap: its step guard did not absorb the announced \
                 step (its bound grows until it refuses timestamps)"
            ));
        }
        if let Some(why) = replica.state().clock_fence {
            problems.push(format!("n{id} is fenced after the leap: {why}"));
        }
    }
    cluster.trace().record(format!(
        "scenario: the leap is behind; guards absorbing: {:?}",
        cluster
            .node_ids()
            .into_iter()
            .filter_map(|id| cluster.running(id))
            .map(|r| r.clock().leap_report().and_then(|l| l.absorbing).is_some())
            .collect::<Vec<_>>()
    ));
    Some(problems)
}
