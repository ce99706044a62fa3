//! The nemesis: the faults a seed injects, and when.
//!
//! Every 0.3–3 s of simulated time the nemesis draws one [`Fault`] from the menu below (the
//! seed decides which, where and for how long), injects it, and schedules its end. Faults
//! overlap: a partition may still hold while a node crashes and another's clock goes Unknown.
//!
//! | fault | what it does | ends |
//! |---|---|---|
//! | `Partition` | random halves, the leader isolated, a one-way cut, or a ring (each node hears only its neighbours) | healed after 0.2–4 s |
//! | `Network` | message loss 0–30 %, duplication 0–10 %, delays up to 1–60 ms (which reorders) | back to clean after 0.5–5 s |
//! | `Crash` | power loss at a node (the leader half the time): unsynced writes are lost, a suffix of them at most | restarted after 0.1–3 s |
//! | `Pause` | the node stops taking turns and answering, for up to three leases | resumed |
//! | `RaftStall` | the node's Raft loop stops (a blocked `fdatasync`, a starved thread) while its request handlers keep answering from its last published state, for 0.5–3 leases | resumed |
//! | `SyncFails` | the node's next `fdatasync` fails: it must stop, acknowledging nothing unsynced | restarted on a repaired disk after 0.2–2 s |
//! | `DiskFull` | the node's writes fail (ENOSPC): it must stop | restarted once space is back |
//! | `ClockSkew` | a node's clock moves anywhere inside its bound (so timestamps disagree, truthfully) | stays |
//! | `ClockBound` | a node's bound grows or shrinks (its offset kept inside) | stays |
//! | `ClockStatus` | the node's clock turns `Unknown` (unusable) or `FreeRunning` | back to `Synchronized` after 0.1–2 s |
//! | `StepBackRestart` | a crash, and the node restarts with its clock stepped back (inside its bound) | restarted |
//! | `ClockStrobe` (only with `--unsafe-clocks`) | a node's clock jumps ±200 ms every 10 ms for 0.5–3 s while its bound stays tiny (Jepsen's CockroachDB strobe): the step guard holds a running node over, but a node that restarts mid-strobe anchors on a lie | restored |
//! | `TransferLeader` | the leader hands over to a random voter | — |
//! | `ClockLie` (only with `--unsafe-clocks`) | a node's clock 250 ms off while claiming its bound | stays |
//! | `LeapStep` (only with `--unsafe-clocks`) | every clock steps back 1 s (a kernel inserting a leap second) | stays |
//! | `ClockDrift` (only with `--unsafe-clocks`) | a node's clock drifts 100–1,000 ppm while claiming its bound: too slow for the step guard | stays |
//!
//! The last two break the assumption the guarantee rests on (true time lies inside every
//! interval): boundkv does not survive them yet, and runs with them are reported apart.
//!
//! Every injection is written to the trace and to the schedule the report prints for a failing
//! seed. At the end of a run, [`Nemesis::heal_all`] undoes everything that can be undone so the
//! liveness checks can ask the cluster to serve.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use boundkv_clockbound::{Clock, ClockStatus, Timestamp};

use crate::cluster::SimulatedCluster;
use crate::net::NetFaults;
use crate::workload::SimCluster;

/// The kinds of fault (see the module docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// A network partition.
    Partition,
    /// Loss, duplication, delay.
    Network,
    /// A power loss and restart.
    Crash,
    /// A process pause.
    Pause,
    /// The Raft loop stalls; requests are still served.
    RaftStall,
    /// A failing `fdatasync`.
    SyncFails,
    /// A full disk.
    DiskFull,
    /// A clock offset inside the bound.
    ClockSkew,
    /// A change of the advertised bound.
    ClockBound,
    /// A clock status change.
    ClockStatus,
    /// A restart with the clock stepped back inside the bound.
    StepBackRestart,
    /// A clock jumping back and forth by 200 ms every 10 ms (Jepsen's strobe), its bound unchanged.
    ClockStrobe,
    /// A clock drifting 100–1,000 ppm out of its bound (unsafe: only peer checks can see it).
    ClockDrift,
    /// A leadership transfer.
    TransferLeader,
    /// A clock outside its bound (unsafe).
    ClockLie,
    /// A 1 s step back of every clock (unsafe).
    LeapStep,
}

const SAFE: &[Fault] = &[
    Fault::Partition,
    Fault::Partition,
    Fault::Network,
    Fault::Crash,
    Fault::Crash,
    Fault::Pause,
    Fault::Pause,
    Fault::Pause,
    Fault::RaftStall,
    Fault::SyncFails,
    Fault::DiskFull,
    Fault::ClockSkew,
    Fault::ClockBound,
    Fault::ClockStatus,
    Fault::StepBackRestart,
    Fault::TransferLeader,
];

/// Injects faults into a cluster, from a seed.
pub struct Nemesis {
    cluster: Arc<SimulatedCluster>,
    rng: StdRng,
    unsafe_clocks: bool,
    /// What was injected, for the report: `(simulated seconds, description)`.
    schedule: Vec<(f64, String)>,
    /// Set by [`Nemesis::heal_all`]: the ends of faults still scheduled then do nothing (the heal
    /// undid them), so that nothing disturbs the checks that follow.
    healed: Arc<AtomicBool>,
}

impl Nemesis {
    /// A nemesis for `cluster`, drawing from `seed`; `unsafe_clocks` adds the faults that break
    /// the clock assumption.
    pub fn new(cluster: Arc<SimulatedCluster>, seed: u64, unsafe_clocks: bool) -> Self {
        Nemesis {
            cluster,
            rng: StdRng::seed_from_u64(seed ^ 0x006e_656d_6573_6973),
            unsafe_clocks,
            schedule: Vec::new(),
            healed: Arc::new(AtomicBool::new(false)),
        }
    }

    /// The faults injected so far.
    pub fn schedule(&self) -> &[(f64, String)] {
        &self.schedule
    }

    fn note(&mut self, what: String) {
        let at = self.cluster.now_nanos() as f64 / 1e9;
        self.cluster.trace().record(format!("nemesis: {what}"));
        self.schedule.push((at, what));
    }

    fn millis(&mut self, lo: u64, hi: u64) -> Duration {
        Duration::from_millis(self.rng.random_range(lo..=hi))
    }

    fn any_node(&mut self) -> u64 {
        let n = self.cluster.config().nodes;
        self.rng.random_range(1..=n)
    }

    /// The leader half the time (the interesting victim), else any node.
    fn victim(&mut self) -> u64 {
        match self.cluster.leader() {
            Some(l) if self.rng.random_bool(0.5) => l,
            _ => self.any_node(),
        }
    }

    /// Injects faults until `until_nanos` of simulated time.
    pub async fn run(&mut self, until_nanos: u64) {
        loop {
            let wait = self.millis(300, 3_000);
            tokio::time::sleep(wait).await;
            if self.cluster.now_nanos() >= until_nanos {
                return;
            }
            let mut menu = SAFE.to_vec();
            if self.unsafe_clocks {
                menu.extend([
                    Fault::ClockLie,
                    Fault::LeapStep,
                    Fault::ClockDrift,
                    Fault::ClockStrobe,
                ]);
            }
            let fault = menu[self.rng.random_range(0..menu.len())];
            self.inject(fault);
        }
    }

    /// Injects one fault now (its end, if it has one, is scheduled on a task of its own).
    pub fn inject(&mut self, fault: Fault) {
        let cluster = self.cluster.clone();
        let nodes: Vec<u64> = cluster.node_ids();
        let healed = self.healed.clone();
        match fault {
            Fault::Partition => {
                let groups: Vec<Vec<u64>> = match self.rng.random_range(0..4) {
                    0 => {
                        let l = cluster.leader().unwrap_or(1);
                        vec![vec![l], nodes.iter().copied().filter(|&n| n != l).collect()]
                    }
                    1 => {
                        let (from, to) = (self.any_node(), self.any_node());
                        if from != to {
                            cluster.net().cut(from, to);
                            self.note(format!("one-way cut {from}->{to}"));
                        }
                        Vec::new()
                    }
                    2 if nodes.len() >= 3 => {
                        // A ring: each node reaches only its neighbours.
                        let n = nodes.len() as u64;
                        for a in 1..=n {
                            for b in 1..=n {
                                let d = (a + n - b) % n;
                                if a != b && d != 1 && d != n - 1 {
                                    cluster.net().cut(a, b);
                                }
                            }
                        }
                        self.note("ring partition".into());
                        Vec::new()
                    }
                    _ => {
                        let mut a = Vec::new();
                        let mut b = Vec::new();
                        for &n in &nodes {
                            if self.rng.random_bool(0.5) { a.push(n) } else { b.push(n) }
                        }
                        vec![a, b]
                    }
                };
                if !groups.is_empty() {
                    cluster.net().partition(&groups);
                    self.note(format!("partition {groups:?}"));
                }
                let heal = self.millis(200, 4_000);
                let trace = cluster.trace().clone();
                let net = cluster.net().clone();
                tokio::spawn(async move {
                    tokio::time::sleep(heal).await;
                    if healed.load(Ordering::Acquire) {
                        return;
                    }
                    net.heal();
                    trace.record("nemesis: heal");
                });
            }
            Fault::Network => {
                let faults = NetFaults {
                    loss: self.rng.random_range(0.0..0.3),
                    duplicate: self.rng.random_range(0.0..0.1),
                    min_delay: Duration::from_micros(self.rng.random_range(0..500)),
                    max_delay: self.millis(1, 60),
                };
                self.note(format!("network {faults:?}"));
                cluster.net().set_faults(faults);
                let end = self.millis(500, 5_000);
                let net = cluster.net().clone();
                let trace = cluster.trace().clone();
                tokio::spawn(async move {
                    tokio::time::sleep(end).await;
                    if healed.load(Ordering::Acquire) {
                        return;
                    }
                    net.set_faults(NetFaults::default());
                    trace.record("nemesis: network clean");
                });
            }
            Fault::Crash | Fault::StepBackRestart => {
                let id = self.victim();
                if !cluster.is_up(id) {
                    return;
                }
                cluster.crash(id);
                let down = self.millis(100, 3_000);
                let step = fault == Fault::StepBackRestart;
                self.note(format!("crash n{id}, restart in {down:?} (clock stepped back: {step})"));
                tokio::spawn(async move {
                    tokio::time::sleep(down).await;
                    if healed.load(Ordering::Acquire) {
                        return;
                    }
                    if step {
                        // Back to the bottom of the bound it has *now* (the bound may have
                        // changed meanwhile): truthful, but below the timestamps it issued.
                        // (From UTC: after a leap second 1 s behind true time.)
                        let clock = cluster.clock(id);
                        let bound = clock.now().map(|r| r.bound()).unwrap_or_default();
                        clock
                            .set_offset_nanos(cluster.utc_offset_nanos() - bound.as_nanos() as i64);
                    }
                    cluster.restart(id);
                });
            }
            Fault::Pause => {
                let id = self.victim();
                let lease = cluster.config().lease;
                let d = lease.mul_f64(self.rng.random_range(0.1..3.0));
                self.note(format!("pause n{id} for {d:?}"));
                cluster.set_paused(id, true);
                // Half the time its request handlers run before its Raft loop on resume.
                let lag =
                    if self.rng.random_bool(0.5) { self.millis(1, 20) } else { Duration::ZERO };
                tokio::spawn(async move {
                    tokio::time::sleep(d).await;
                    if healed.load(Ordering::Acquire) {
                        return;
                    }
                    cluster.resume(id, lag);
                });
            }
            Fault::RaftStall => {
                let id = self.victim();
                if !cluster.is_up(id) {
                    return;
                }
                let d = cluster.config().lease.mul_f64(self.rng.random_range(0.5..3.0));
                self.note(format!("stall n{id}'s Raft loop for {d:?}"));
                cluster.stall_raft(id);
                tokio::spawn(async move {
                    tokio::time::sleep(d).await;
                    if healed.load(Ordering::Acquire) {
                        return;
                    }
                    cluster.resume(id, Duration::ZERO);
                });
            }
            Fault::SyncFails | Fault::DiskFull => {
                let id = self.victim();
                if !cluster.is_up(id) {
                    return;
                }
                let disk = cluster.disk(id);
                if fault == Fault::SyncFails {
                    disk.fail_next_flush();
                } else {
                    disk.set_full(true);
                }
                let repair = self.millis(200, 2_000);
                self.note(format!("{fault:?} at n{id}, repaired in {repair:?}"));
                tokio::spawn(async move {
                    tokio::time::sleep(repair).await;
                    if healed.load(Ordering::Acquire) {
                        return;
                    }
                    disk.set_full(false);
                    // A node that stopped on the fault comes back on what its disk kept.
                    if cluster.failed_nodes().contains(&id) {
                        cluster.restart(id);
                    }
                });
            }
            Fault::ClockSkew => {
                let id = self.any_node();
                let clock = cluster.clock(id);
                let bound = clock.now().map(|r| r.bound()).unwrap_or_default().as_nanos() as i64;
                let offset = if bound == 0 { 0 } else { self.rng.random_range(-bound..=bound) };
                clock.set_offset_nanos(cluster.utc_offset_nanos() + offset);
                self.note(format!("clock n{id} offset {offset} ns (bound {bound} ns)"));
            }
            Fault::ClockBound => {
                let id = self.any_node();
                let clock = cluster.clock(id);
                let bound = Duration::from_micros(
                    *[0u64, 20, 200, 1_000, 5_000, 50_000]
                        .get(self.rng.random_range(0..6))
                        .unwrap_or(&0),
                );
                let max = bound.as_nanos() as i64;
                let utc = cluster.utc_offset_nanos();
                let offset = (clock.local_error_nanos() - utc).clamp(-max, max);
                clock.set_bound(bound);
                clock.set_offset_nanos(utc + offset);
                self.note(format!("clock n{id} bound {bound:?} (offset {offset} ns)"));
            }
            Fault::ClockStatus => {
                let id = self.any_node();
                let status = if self.rng.random_bool(0.5) {
                    ClockStatus::Unknown
                } else {
                    ClockStatus::FreeRunning
                };
                let d = self.millis(100, 2_000);
                self.note(format!("clock n{id} {status:?} for {d:?}"));
                let clock = cluster.clock(id);
                clock.set_status(status);
                tokio::spawn(async move {
                    tokio::time::sleep(d).await;
                    if healed.load(Ordering::Acquire) {
                        return;
                    }
                    clock.set_status(ClockStatus::Synchronized);
                });
            }
            Fault::TransferLeader => {
                if let Some(l) = cluster.leader() {
                    let to = self.any_node();
                    if to != l
                        && let Some(r) = cluster.running(l)
                    {
                        r.node().transfer_leader(to);
                        self.note(format!("transfer leadership n{l} -> n{to}"));
                    }
                }
            }
            Fault::ClockStrobe => {
                let id = self.any_node();
                let clock = cluster.clock(id);
                let d = self.millis(500, 3_000);
                self.note(format!("clock n{id} strobes ±200 ms every 10 ms for {d:?}"));
                tokio::spawn(async move {
                    let base = clock.local_error_nanos();
                    let end = tokio::time::Instant::now() + d;
                    let mut ahead = true;
                    while tokio::time::Instant::now() < end && !healed.load(Ordering::Acquire) {
                        let jump = if ahead { 200_000_000 } else { -200_000_000 };
                        clock.set_offset_nanos(base + jump);
                        ahead = !ahead;
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                    clock.set_offset_nanos(base);
                });
            }
            Fault::ClockDrift => {
                let id = self.any_node();
                let ppm = self.rng.random_range(100.0..1_000.0);
                let ppm = if self.rng.random_bool(0.5) { ppm } else { -ppm };
                cluster.clock(id).set_drift_ppm(ppm);
                self.note(format!("UNSAFE clock drift: n{id} {ppm:.0} ppm, bound unchanged"));
            }
            Fault::ClockLie => {
                let id = self.any_node();
                let lie = if self.rng.random_bool(0.5) { 250_000_000 } else { -250_000_000 };
                cluster.clock(id).set_offset_nanos(lie);
                self.note(format!("UNSAFE clock lie: n{id} {lie} ns off, bound unchanged"));
            }
            Fault::LeapStep => {
                for id in nodes {
                    cluster.clock(id).step_nanos(-1_000_000_000);
                }
                self.note("UNSAFE leap step: every clock steps back 1 s".into());
            }
        }
    }

    /// Undoes every fault that can be undone: heals the network, resumes paused nodes, brings
    /// every clock back inside its bound and `Synchronized`, and restarts every node that is
    /// down or failed on a repaired disk.
    pub fn heal_all(&mut self) {
        self.healed.store(true, Ordering::Release);
        let cluster = self.cluster.clone();
        cluster.net().heal();
        cluster.net().set_faults(NetFaults::default());
        for id in cluster.node_ids() {
            cluster.set_paused(id, false);
            let clock = cluster.clock(id);
            clock.set_status(ClockStatus::Synchronized);
            // A clock outside its bound (a lie, a leap step) is put right: to true time, or to
            // where a correct clock stands after a leap second (UTC 1 s behind true time).
            let utc = cluster.utc_offset_nanos();
            let correct = Timestamp::from_nanos(
                (i128::from(clock.true_now().as_nanos()) + i128::from(utc)).max(0) as u64,
            );
            if clock.now().is_ok_and(|r| !r.interval.contains(correct)) {
                clock.set_offset_nanos(utc);
            }
            let disk = cluster.disk(id);
            disk.repair();
            // A node whose sync already failed stops at its next turn: restart it now too.
            if !cluster.is_up(id) || disk.is_poisoned() || cluster.failed_nodes().contains(&id) {
                cluster.restart(id);
            }
        }
        self.note("heal everything".into());
    }
}
