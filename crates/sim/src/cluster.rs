//! [`SimulatedCluster`]: the real replicas of a boundkv group, on simulated disks, a simulated
//! network and simulated clocks, in one thread.
//!
//! Every node is the production code: a [`Replica`] over a [`SimDisk`], its Raft member built
//! by [`Replica::start_driven`] and driven here, turn by turn, by a small task on virtual time
//! instead of by a thread on real time. What differs from a server is only what the node is
//! plugged into:
//!
//! | production (`boundkv serve`) | simulation |
//! |---|---|
//! | a thread blocking on the Raft inbox (`Node::spawn`) | a task awaiting the inbox's waker or the node's next deadline, then calling `Node::turn` |
//! | TCP peer links | [`SimNet`]: seeded delay, loss, duplication, partitions |
//! | sled, `fdatasync` | [`SimDisk`]: unsynced writes lost on a crash, failing syncs, a full disk |
//! | ClockBound, `CLOCK_REALTIME` | a [`SimClock`] per node on the simulation's true time, with its own error |
//! | tokio's multi-thread runtime | one current-thread runtime with paused time |
//!
//! A crash is a power loss: the node's disk keeps what was synced plus a random prefix of what
//! was not ([`SimDisk::crash`]), its tasks are stopped, its network incarnation ends, and a
//! restart builds a new replica on what the disk kept. A pause stops the node's turns (its
//! inbox fills up, as a stopped process's socket buffers would) and holds every client request
//! sent to it; on resume the held requests may run before the Raft loop catches up (the
//! nemesis draws the lag), which is the moment leases exist for.
//!
//! ```text
//!  seed ──► nemesis schedule ──► partitions, crashes, pauses, disk and clock faults
//!       └─► clients ──► Replica API ──► history ──► checkers
//!  node i:  driver task ──turn(now)──► Node ──► SimNet ──► node j's inbox (waker ─► its driver)
//! ```

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::sync::{Notify, watch};

use boundkv_clockbound::Timebase;
use boundkv_clockbound::{
    Clock, ClockPolicy, LeapPolicy, MemoryLeapRecord, SimClock, SimLeapSource, StepGuard, Timestamp,
};
use boundkv_consensus::clock_check::ClockCheckOptions;
use boundkv_consensus::cluster_clock::{
    ClusterClock, ClusterClockMutation, ClusterClockOptions, Reference,
};
use boundkv_consensus::node::{NodeConfig, Role};
use boundkv_txn::TxnOptions;
use boundkv_txn::replica::{Member, Replica, ReplicaOptions, UnsafeLeaseClock};

use crate::disk::SimDisk;
use crate::net::SimNet;
use crate::time::SimTime;
use crate::trace::Trace;
use crate::workload::SimCluster;

/// How a simulated cluster is set up (the seed draws some of it).
#[derive(Clone, Debug)]
pub struct ClusterConfig {
    /// How many replicas.
    pub nodes: u64,
    /// Every clock's advertised bound at the start.
    pub bound: Duration,
    /// The lease.
    pub lease: Duration,
    /// Raft's tick.
    pub tick: Duration,
    /// Applied entries kept before the log is compacted (small values make snapshots common).
    pub keep_entries: u64,
    /// GC retention (short values make the horizon pass resent commits).
    pub gc_retention: Duration,
    /// How often the leader raises the GC horizon.
    pub gc_interval: Duration,
    /// How often the leader closes a timestamp.
    pub close_interval: Duration,
    /// **Mutation:** acknowledge commits without commit wait.
    pub unsafe_skip_commit_wait: bool,
    /// **Mutation:** issue timestamps without a lease.
    pub unsafe_ignore_lease: bool,
    /// **Mutation:** read each node's clock without the step guard that `boundkv serve` puts in
    /// front of every source.
    pub unsafe_no_step_guard: bool,
    /// Whether the nodes run peer clock checks (they do, as `boundkv serve` does; without them
    /// the step guard and the read floor are a clock's only defence, as in an embedded
    /// database).
    pub peer_clock_checks: bool,
    /// **Mutation:** the peer clock checks measure but never fence (nor widen readings).
    pub unsafe_never_fence: bool,
    /// **Mutation:** the peer clock checks fence but do not widen readings to what the peers
    /// verify.
    pub unsafe_no_widening: bool,
    /// **Mutation:** follower reads at `ReadAt::Latest` take the clock's `latest` alone, without
    /// the floor of timestamps already served.
    pub unsafe_no_read_floor: bool,
    /// **Mutation:** each Raft node measures its lease and `ready_at` on its clock's source
    /// without the step guard (everything else reads the guarded clock).
    pub unsafe_raw_lease_clock: bool,
    /// True time at the start of the run (a fixed, round one: traces print times relative to
    /// it); the leap-second scenario moves it to just before a UTC midnight.
    pub epoch: Timestamp,
    /// **Mutation:** step guards that know nothing of leap seconds (built without the kernel's
    /// leap state), as before issue 12's item 3: a leap step holds them over.
    pub unsafe_no_leap_absorb: bool,
    /// `Some(RHO)`: every node runs on the cluster clock (`--clock cluster:RHO`) instead of its
    /// `SimClock`, on a monotonic clock of its own that drifts at a rate the seed draws within
    /// `±RHO` (the `SimClock` is then only the system clock a brand-new cluster starts `R`
    /// from). Peer clock checks are off, as in a server on this source.
    pub cluster_clock_rho_ppm: Option<u32>,
    /// **Mutation:** a cluster clock rule switched off.
    pub unsafe_cluster_clock: Option<ClusterClockMutation>,
}

/// The default [`ClusterConfig::epoch`]: 2027-01-15T08:00:00Z.
pub const DEFAULT_EPOCH: Timestamp = Timestamp::from_nanos(1_800_000_000_000_000_000);

impl ClusterConfig {
    /// A configuration drawn from `rng`: the ranges cover the defaults and the corners.
    pub fn draw(rng: &mut StdRng) -> ClusterConfig {
        let tick = Duration::from_millis(rng.random_range(10..=50));
        ClusterConfig {
            nodes: if rng.random_bool(0.25) { 5 } else { 3 },
            bound: Duration::from_micros(*pick(rng, &[0, 50, 500, 2_000, 20_000])),
            lease: tick * 20 + Duration::from_millis(rng.random_range(0..=500)),
            tick,
            keep_entries: *pick(rng, &[20, 100, 1_000, 10_000]),
            gc_retention: Duration::from_millis(*pick(rng, &[200, 1_000, 5_000, 3_600_000])),
            gc_interval: Duration::from_millis(*pick(rng, &[500, 2_000, 10_000])),
            close_interval: Duration::from_millis(*pick(rng, &[5, 25, 100])),
            unsafe_skip_commit_wait: false,
            unsafe_ignore_lease: false,
            unsafe_no_step_guard: false,
            peer_clock_checks: true,
            unsafe_never_fence: false,
            unsafe_no_widening: false,
            unsafe_no_read_floor: false,
            unsafe_raw_lease_clock: false,
            epoch: DEFAULT_EPOCH,
            unsafe_no_leap_absorb: false,
            cluster_clock_rho_ppm: None,
            unsafe_cluster_clock: None,
        }
    }

    /// Node `id`'s options; `raw` is its clock's source without the step guard, which only the
    /// `raw-lease-clock` mutation hands to its Raft node.
    fn replica_options(&self, id: u64, seed: u64, raw: &SimClock) -> ReplicaOptions {
        let election_ticks = 20;
        ReplicaOptions {
            node: NodeConfig {
                id,
                tick: self.tick,
                election_ticks,
                heartbeat_ticks: 2,
                lease: self.lease,
                lease_renewal: self.lease / 5,
                read_timeout: self.tick * (election_ticks as u32) * 3,
                keep_entries: self.keep_entries,
                seed: Some(seed),
                clock_checks: (self.peer_clock_checks && self.cluster_clock_rho_ppm.is_none())
                    .then(|| ClockCheckOptions {
                        unsafe_never_fence: self.unsafe_never_fence,
                        unsafe_no_widening: self.unsafe_no_widening,
                        ..ClockCheckOptions::default()
                    }),
                ..NodeConfig::default()
            },
            txn: TxnOptions {
                unsafe_skip_commit_wait: self.unsafe_skip_commit_wait,
                ..TxnOptions::default()
            },
            policy: ClockPolicy::default(),
            close_interval: self.close_interval,
            follower_wait: Duration::from_secs(2),
            commit_timeout: Duration::from_secs(4),
            catch_up_timeout: Duration::from_secs(10),
            gc_retention: Some(self.gc_retention),
            gc_interval: self.gc_interval,
            founding: Some((1..=self.nodes).map(member).collect()),
            leap: Default::default(),
            collect_garbage_inline: true,
            unsafe_ignore_lease: self.unsafe_ignore_lease,
            unsafe_no_read_floor: self.unsafe_no_read_floor,
            unsafe_lease_clock: self
                .unsafe_raw_lease_clock
                .then(|| UnsafeLeaseClock(Arc::new(raw.clone()) as Arc<dyn Clock>)),
            cluster_clock: None,
        }
    }
}

fn pick<'a, T>(rng: &mut StdRng, items: &'a [T]) -> &'a T {
    &items[rng.random_range(0..items.len())]
}

/// A founding member's (made-up) addresses.
pub fn member(id: u64) -> Member {
    Member {
        id,
        peer_address: format!("sim-peer-{id}"),
        client_address: format!("sim-client-{id}"),
        leap: Default::default(),
    }
}

/// One node's slot: its disk and clock outlive its incarnations.
struct Slot {
    disk: Arc<SimDisk>,
    clock: SimClock,
    /// Its monotonic clock (`CLOCK_MONOTONIC_RAW` on a server), drifting at its own rate: what
    /// the cluster clock runs on.
    oscillator: Oscillator,
    /// Where its step guard remembers a leap second it is absorbing (a file in its data
    /// directory on a server): it outlives incarnations as the disk does.
    leap_record: MemoryLeapRecord,
    /// The running incarnation, if up.
    replica: Option<Arc<Replica<SimDisk>>>,
    /// Stops the running incarnation's driver.
    kill: Option<watch::Sender<bool>>,
    /// Set while the Raft loop is paused: the driver takes no turns.
    paused: watch::Sender<bool>,
    /// Set while requests to the node are held (a paused process answers nothing).
    requests_paused: watch::Sender<bool>,
    incarnation: u64,
}

/// The simulated cluster (see the module docs). Cheap to share.
pub struct SimulatedCluster {
    config: ClusterConfig,
    seed: u64,
    time: SimTime,
    /// True time at the start of the run (what every clock's `start` is).
    epoch: Timestamp,
    net: SimNet,
    trace: Trace,
    slots: Mutex<BTreeMap<u64, Slot>>,
    rng: Mutex<StdRng>,
    /// Broken closed-timestamp promises seen by incarnations that have ended.
    broken_promises: std::sync::atomic::AtomicU64,
    /// Every node's kernel leap state (one kernel's view of UTC, shared: every node's daemon
    /// hears the same announcement).
    kernel: SimLeapSource,
    /// Where a correct raw clock stands against true time: 0, or −1 s once a leap second has
    /// been inserted (UTC repeated a second; true time did not).
    utc_offset_nanos: std::sync::atomic::AtomicI64,
    /// Under the cluster clock: every term's reference, as its leader started it.
    references: References,
}

/// Every term's reference `R_T` and the leader that keeps it, and the readings found not to hold
/// it: the cluster clock's invariant, checked on every reading a node takes.
#[derive(Clone, Default)]
struct References {
    by_term: Arc<Mutex<BTreeMap<u64, (u64, Reference)>>>,
    oscillators: Arc<Mutex<BTreeMap<u64, Oscillator>>>,
    violations: Arc<std::sync::atomic::AtomicU64>,
}

impl References {
    /// `R_term` now, if its leader started one and its oscillator has kept within `RHO` since
    /// (the invariant assumes it: fencing is what ends a term led on a broken oscillator, see
    /// the `cluster-bad-oscillator` scenario). `R_term` is computed on the leader's oscillator as
    /// it runs now, also after the term ended (a member still in it may read), so a term whose
    /// leader's oscillator left its bound at any time since the term began has no `R` this
    /// could compute: it is not checked. Terms begun after the repair are.
    fn at(&self, term: u64) -> Option<Timestamp> {
        let (leader, reference) =
            *self.by_term.lock().unwrap_or_else(|e| e.into_inner()).get(&term)?;
        let oscillators = self.oscillators.lock().unwrap_or_else(|e| e.into_inner());
        let oscillator = &oscillators[&leader];
        if oscillator.out_of_bounds_since(reference.at) {
            return None;
        }
        Some(reference.at(oscillator.elapsed()))
    }
}

/// A monotonic clock that runs `ppm` parts per million fast (or slow, if negative) against the
/// simulation's true time, from an offset of its own. Its rate can be changed while it runs
/// ([`Oscillator::set_ppm`], continuously: no step); clones share it.
#[derive(Clone, Debug)]
pub struct Oscillator {
    time: SimTime,
    rate: Arc<Mutex<Rate>>,
}

/// An oscillator's rate from an anchor on: `mono = at_mono + (t − at_true)·(1 + ppm/10⁶)`.
#[derive(Clone, Copy, Debug)]
struct Rate {
    ppm: i64,
    at_true: Duration,
    at_mono: Duration,
    /// Its own readings when its rate last left the assumption's bound and when it came back
    /// (`None` while it has not): `None` while it never left.
    out_of_bounds: Option<(Duration, Option<Duration>)>,
}

impl Oscillator {
    fn new(time: SimTime, ppm: i64, offset: Duration) -> Self {
        let rate = Rate { ppm, at_true: Duration::ZERO, at_mono: offset, out_of_bounds: None };
        Oscillator { time, rate: Arc::new(Mutex::new(rate)) }
    }

    fn rate(&self) -> std::sync::MutexGuard<'_, Rate> {
        self.rate.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn elapsed(&self) -> Duration {
        let rate = *self.rate();
        let t = i128::try_from(self.time.elapsed().saturating_sub(rate.at_true).as_nanos())
            .unwrap_or(i128::MAX);
        let drifted = t + t * i128::from(rate.ppm) / 1_000_000;
        rate.at_mono + Duration::from_nanos(u64::try_from(drifted.max(0)).unwrap_or(u64::MAX))
    }

    /// Its rate, in ppm against true time.
    pub fn ppm(&self) -> i64 {
        self.rate().ppm
    }

    /// Runs at `ppm` from now on; `within_bounds` says whether that keeps the cluster clock's
    /// assumption (`|ppm| ≤ RHO`).
    pub fn set_ppm(&self, ppm: i64, within_bounds: bool) {
        let now = self.elapsed();
        let mut rate = self.rate();
        rate.at_true = self.time.elapsed();
        rate.at_mono = now;
        rate.ppm = ppm;
        rate.out_of_bounds = match (within_bounds, rate.out_of_bounds) {
            (false, Some((left, None))) => Some((left, None)),
            (false, _) => Some((now, None)),
            (true, Some((left, None))) => Some((left, Some(now))),
            (true, kept) => kept,
        };
    }

    /// Whether its rate was out of the assumption's bound at any time since its reading
    /// `since`.
    fn out_of_bounds_since(&self, since: Duration) -> bool {
        self.rate().out_of_bounds.is_some_and(|(_, back)| back.is_none_or(|b| b >= since))
    }
}

impl Timebase for Oscillator {
    fn elapsed(&self) -> Duration {
        Oscillator::elapsed(self)
    }

    fn sleep_blocking(&self, _d: Duration) {
        unreachable!("nothing blocks a thread in the simulation");
    }

    fn sleep(&self, d: Duration) -> boundkv_clockbound::clock::BoxFuture {
        Box::pin(tokio::time::sleep(d))
    }
}

/// The cluster clock as the simulator hands it to a node: every trustworthy reading is checked
/// against the reference of the term it is of (the invariant of `docs/architecture/time.md`).
struct CheckedClusterClock {
    inner: Arc<ClusterClock>,
    references: References,
    trace: Trace,
    id: u64,
}

impl Clock for CheckedClusterClock {
    fn now(&self) -> Result<boundkv_clockbound::ClockReading, boundkv_clockbound::ClockError> {
        let reading = self.inner.now()?;
        let term = self.inner.epoch();
        if reading.status.is_trustworthy()
            && let Some(r) = self.references.at(term)
            && !reading.interval.contains(r)
        {
            let n = self.references.violations.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
            if n < 5 {
                self.trace.record(format!(
                    "n{} CLUSTER CLOCK VIOLATION: term {term} reading [{}, {}] does not hold R = {r}",
                    self.id,
                    reading.earliest(),
                    reading.latest()
                ));
            }
        }
        Ok(reading)
    }

    fn describe(&self) -> String {
        self.inner.describe()
    }

    fn timebase(&self) -> &dyn Timebase {
        self.inner.timebase()
    }

    fn epoch(&self) -> u64 {
        self.inner.epoch()
    }
}

impl SimulatedCluster {
    /// Builds and starts every node. Must run inside the simulation's runtime.
    pub fn start(config: ClusterConfig, seed: u64, trace: Trace, time: SimTime) -> Arc<Self> {
        let epoch = config.epoch;
        let truth = SimClock::external(epoch, Arc::new(time));
        let mut slots = BTreeMap::new();
        let references = References::default();
        let mut drift = StdRng::seed_from_u64(seed ^ 0x6f73_6369_6c6c);
        for id in 1..=config.nodes {
            let clock = truth.sibling();
            clock.set_bound(config.bound);
            let rho = i64::from(config.cluster_clock_rho_ppm.unwrap_or(0));
            let oscillator = Oscillator::new(
                time,
                drift.random_range(-rho..=rho),
                Duration::from_secs(drift.random_range(1..100_000)),
            );
            references
                .oscillators
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(id, oscillator.clone());
            slots.insert(
                id,
                Slot {
                    disk: Arc::new(SimDisk::new()),
                    clock,
                    oscillator,
                    leap_record: MemoryLeapRecord::default(),
                    replica: None,
                    kill: None,
                    paused: watch::Sender::new(false),
                    requests_paused: watch::Sender::new(false),
                    incarnation: 0,
                },
            );
        }
        let cluster = Arc::new(SimulatedCluster {
            net: SimNet::new(seed ^ 0x6e65_7477_6f72_6b00, trace.clone()),
            config,
            seed,
            time,
            epoch,
            trace,
            slots: Mutex::new(slots),
            rng: Mutex::new(StdRng::seed_from_u64(seed ^ 0x6469_736b)),
            broken_promises: std::sync::atomic::AtomicU64::new(0),
            kernel: SimLeapSource::new(),
            utc_offset_nanos: std::sync::atomic::AtomicI64::new(0),
            references,
        });
        tokio::spawn(cluster.net.clone().run());
        for id in cluster.node_ids() {
            cluster.boot(id);
        }
        cluster
    }

    /// The configuration.
    pub fn config(&self) -> &ClusterConfig {
        &self.config
    }

    /// The network.
    pub fn net(&self) -> &SimNet {
        &self.net
    }

    /// The trace.
    pub fn trace(&self) -> &Trace {
        &self.trace
    }

    /// Node `id`'s clock.
    pub fn clock(&self, id: u64) -> SimClock {
        self.slots()[&id].clock.clone()
    }

    /// Node `id`'s monotonic clock, which the cluster clock runs on.
    pub fn oscillator(&self, id: u64) -> Oscillator {
        self.slots()[&id].oscillator.clone()
    }

    /// Every node's simulated kernel leap state.
    pub fn kernel(&self) -> &SimLeapSource {
        &self.kernel
    }

    /// Where a correct raw clock stands against true time (0, or −1 s after an inserted leap
    /// second): what healing puts a clock back to.
    pub fn utc_offset_nanos(&self) -> i64 {
        self.utc_offset_nanos.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Records that UTC moved by `delta` ns against true time (a leap second).
    pub fn shift_utc(&self, delta: i64) {
        self.utc_offset_nanos.fetch_add(delta, std::sync::atomic::Ordering::AcqRel);
    }

    /// Node `id`'s disk (its current one).
    pub fn disk(&self, id: u64) -> Arc<SimDisk> {
        self.slots()[&id].disk.clone()
    }

    /// True time now.
    pub fn true_now(&self) -> Timestamp {
        self.epoch.saturating_add(self.time.elapsed())
    }

    fn slots(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, Slot>> {
        self.slots.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Starts a new incarnation of node `id` on what its disk holds.
    fn boot(self: &Arc<Self>, id: u64) {
        let (disk, clock, leap_record, incarnation, paused, oscillator) = {
            let mut slots = self.slots();
            let slot = slots.get_mut(&id).expect("a node of the cluster");
            slot.incarnation += 1;
            (
                slot.disk.clone(),
                slot.clock.clone(),
                slot.leap_record.clone(),
                slot.incarnation,
                slot.paused.subscribe(),
                slot.oscillator.clone(),
            )
        };
        let wake = Arc::new(Notify::new());
        let waker = wake.clone();
        // Bound to the incarnation the `register` below starts.
        let transport = self.net.transport(id);
        let seed = self.seed.wrapping_add(incarnation.wrapping_mul(0x1000_0000_01b3));
        let mut options = self.config.replica_options(id, seed, &clock);
        let cluster_clock = self.config.cluster_clock_rho_ppm.map(|rho_ppm| {
            let wall = clock.clone();
            let references = self.references.clone();
            let cluster = ClusterClock::new(
                id,
                ClusterClockOptions {
                    rho_ppm,
                    unsafe_mutation: self.config.unsafe_cluster_clock,
                    ..ClusterClockOptions::default()
                },
                Arc::new(oscillator),
                Box::new(move || wall.now().map_or(Timestamp::ZERO, |r| r.interval.midpoint())),
            )
            .with_probe_ids_from(seed.rotate_left(17) ^ incarnation)
            .with_lead_observer(Box::new(move |leader, reference| {
                references
                    .by_term
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(reference.term, (leader, reference));
            }));
            Arc::new(cluster)
        });
        options.cluster_clock = cluster_clock.clone();
        let started = Replica::start_driven(
            options,
            disk,
            // As `ClockSource::open` does for a server: every reading through a step guard that
            // reads the kernel's leap state.
            if let Some(inner) = cluster_clock {
                Arc::new(CheckedClusterClock {
                    inner,
                    references: self.references.clone(),
                    trace: self.trace.clone(),
                    id,
                })
            } else if self.config.unsafe_no_step_guard {
                Arc::new(clock) as Arc<dyn Clock>
            } else if self.config.unsafe_no_leap_absorb {
                Arc::new(StepGuard::new(clock))
            } else {
                Arc::new(
                    StepGuard::new(clock)
                        .with_leap(LeapPolicy::Step, Arc::new(self.kernel.clone()))
                        .with_leap_record_in(Arc::new(leap_record)),
                )
            },
            transport,
            Some(Arc::new(move || waker.notify_one())),
            tokio::time::Instant::now().into_std(),
        );
        let (replica, mut node) = match started {
            Ok(started) => started,
            Err(e) => {
                self.trace.record(format!("n{id} cannot start: {e}"));
                return;
            }
        };
        self.net.register(id, replica.deliverer());
        self.trace.record(format!("n{id} started (incarnation {incarnation})"));
        let (kill_tx, mut kill) = watch::channel(false);
        let trace = self.trace.clone();
        let state = replica.node().watch();
        tokio::spawn(async move {
            let mut paused = paused;
            let mut last = (Role::Follower, 0u64, None::<u64>);
            loop {
                if *kill.borrow() {
                    break;
                }
                if *paused.borrow() {
                    tokio::select! {
                        biased;
                        _ = kill.changed() => continue,
                        _ = paused.changed() => continue,
                    }
                }
                if !node.turn(tokio::time::Instant::now().into_std()) {
                    let failed = state.borrow().failed.clone();
                    trace.record(format!("n{id} Raft node stopped: {failed:?}"));
                    break;
                }
                {
                    let s = state.borrow();
                    let now = (s.role, s.term, s.leader);
                    if now != last {
                        trace.record(format!(
                            "n{id} {:?} term {} leader {:?} commit {} applied {}",
                            s.role, s.term, s.leader, s.commit_index, s.applied_index
                        ));
                        last = now;
                    }
                }
                if let Some(d) = node.take_pause() {
                    tokio::time::sleep(d).await;
                }
                let deadline = tokio::time::Instant::from_std(node.next_deadline());
                tokio::select! {
                    biased;
                    _ = kill.changed() => {}
                    _ = paused.changed() => {}
                    _ = wake.notified() => {}
                    _ = tokio::time::sleep_until(deadline) => {}
                }
            }
        });
        let mut slots = self.slots();
        let slot = slots.get_mut(&id).expect("a node of the cluster");
        slot.replica = Some(replica);
        slot.kill = Some(kill_tx);
    }

    /// Whether node `id` is running (up, paused or not).
    pub fn is_up(&self, id: u64) -> bool {
        self.slots()[&id].replica.is_some()
    }

    /// The running replica of `id`, paused or not (clients reach it through
    /// [`SimCluster::replica`] and wait for it with [`SimCluster::until_resumed`]).
    pub fn running(&self, id: u64) -> Option<Arc<Replica<SimDisk>>> {
        self.slots()[&id].replica.clone()
    }

    /// The node that leads the highest term among the running ones, if any.
    pub fn leader(&self) -> Option<u64> {
        self.node_ids()
            .into_iter()
            .filter_map(|id| self.running(id).map(|r| (id, r.state())))
            .filter(|(_, s)| s.role == Role::Leader && s.failed.is_none())
            .max_by_key(|(_, s)| s.term)
            .map(|(id, _)| id)
    }

    /// Asks whichever node leads to hand leadership to `target` until `target` leads; false if
    /// it does not within `within` of simulated time.
    pub async fn make_leader(&self, target: u64, within: Duration) -> bool {
        eventually(within, || {
            match self.leader() {
                Some(l) if l == target => return true,
                Some(l) => {
                    if let Some(r) = self.running(l) {
                        r.node().transfer_leader(target);
                    }
                }
                None => {}
            }
            false
        })
        .await
    }

    /// Power loss at node `id`: what was not synced may be lost; the node is down until
    /// [`SimulatedCluster::restart`].
    pub fn crash(&self, id: u64) {
        let (replica, kill) = {
            let mut slots = self.slots();
            let slot = slots.get_mut(&id).expect("a node of the cluster");
            let mut rng = self.rng.lock().unwrap_or_else(|e| e.into_inner());
            let survived = slot.disk.crash(&mut rng);
            slot.disk = Arc::new(survived);
            slot.paused.send_replace(false);
            slot.requests_paused.send_replace(false);
            (slot.replica.take(), slot.kill.take())
        };
        self.net.unregister(id);
        if let Some(kill) = kill {
            kill.send_replace(true);
        }
        if let Some(replica) = replica {
            self.broken_promises
                .fetch_add(replica.shared().broken_promises(), std::sync::atomic::Ordering::AcqRel);
            // Its background tasks stop; whatever it still tries to write fails on the dead disk.
            replica.shutdown();
        }
        self.trace.record(format!("n{id} CRASH"));
    }

    /// Starts node `id` again on what its disk kept (a crashed or failed node).
    pub fn restart(self: &Arc<Self>, id: u64) {
        if self.is_up(id) {
            self.crash(id);
        }
        self.boot(id);
    }

    /// Pauses (`true`) or resumes node `id`, as SIGSTOP / SIGCONT would.
    pub fn set_paused(&self, id: u64, paused: bool) {
        if paused {
            let slots = self.slots();
            let slot = &slots[&id];
            slot.requests_paused.send_replace(true);
            if !slot.paused.send_replace(true) {
                drop(slots);
                self.trace.record(format!("n{id} PAUSE"));
            }
        } else {
            self.resume(id, Duration::ZERO);
        }
    }

    /// Stalls node `id`'s Raft loop while its request handlers keep answering, as a Raft thread
    /// blocked in a slow `fdatasync` (or starved of CPU) would leave them: they serve from the
    /// node's last published state, which may say it leads with a lease that is running out.
    /// [`SimulatedCluster::resume`] ends it.
    pub fn stall_raft(&self, id: u64) {
        let slots = self.slots();
        if !slots[&id].paused.send_replace(true) {
            drop(slots);
            self.trace.record(format!("n{id} RAFT STALL"));
        }
    }

    /// Resumes node `id`: its held requests at once, its Raft loop `raft_lag` later. When a
    /// stopped process continues, its request handlers may run before its Raft thread has
    /// caught up with what happened meanwhile: exactly the moment a lease must protect.
    pub fn resume(&self, id: u64, raft_lag: Duration) {
        let slots = self.slots();
        let slot = &slots[&id];
        if !*slot.paused.borrow() {
            return;
        }
        let paused = slot.paused.clone();
        slot.requests_paused.send_replace(false);
        drop(slots);
        self.trace.record(format!("n{id} RESUME (Raft loop {raft_lag:?} later)"));
        if raft_lag.is_zero() {
            paused.send_replace(false);
        } else {
            tokio::spawn(async move {
                tokio::time::sleep(raft_lag).await;
                paused.send_replace(false);
            });
        }
    }

    /// Whether node `id` is paused.
    pub fn is_paused(&self, id: u64) -> bool {
        *self.slots()[&id].paused.borrow()
    }

    /// Nodes whose Raft member stopped after a fatal error (a failed sync, a full disk).
    pub fn failed_nodes(&self) -> Vec<u64> {
        self.node_ids()
            .into_iter()
            .filter(|&id| self.running(id).is_some_and(|r| r.state().failed.is_some()))
            .collect()
    }

    /// Readings of the cluster clock that did not hold their term's reference `R_T`.
    pub fn cluster_clock_violations(&self) -> u64 {
        self.references.violations.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Under the cluster clock: every term's reference as its leader started it (term, leader,
    /// `R` at the start), in term order.
    pub fn cluster_clock_starts(&self) -> Vec<(u64, u64, Timestamp)> {
        let by_term = self.references.by_term.lock().unwrap_or_else(|e| e.into_inner());
        by_term.iter().map(|(&term, &(leader, r))| (term, leader, r.base)).collect()
    }

    /// Commits refused anywhere, in any incarnation, because they broke a closed timestamp's
    /// promise (see `ReplicaShared::broken_promises`).
    pub fn broken_promises(&self) -> u64 {
        let running: u64 = self
            .node_ids()
            .into_iter()
            .filter_map(|id| self.running(id))
            .map(|r| r.shared().broken_promises())
            .sum();
        running + self.broken_promises.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Stops every node (the end of a run), so that no task outlives it.
    pub fn shutdown(&self) {
        for id in self.node_ids() {
            let (replica, kill) = {
                let mut slots = self.slots();
                let slot = slots.get_mut(&id).expect("a node of the cluster");
                (slot.replica.take(), slot.kill.take())
            };
            if let Some(kill) = kill {
                kill.send_replace(true);
            }
            if let Some(r) = replica {
                r.shutdown();
            }
        }
    }
}

impl SimCluster<SimDisk> for SimulatedCluster {
    fn node_ids(&self) -> Vec<u64> {
        (1..=self.config.nodes).collect()
    }

    fn replica(&self, id: u64) -> Option<Arc<Replica<SimDisk>>> {
        // A paused node is still there: requests to it wait (see `until_resumed`).
        self.slots().get(&id)?.replica.clone()
    }

    fn until_resumed(
        &self,
        id: u64,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send + 'static>> {
        let Some(mut paused) = self.slots().get(&id).map(|s| s.requests_paused.subscribe()) else {
            return Box::pin(std::future::ready(()));
        };
        Box::pin(async move {
            let _ = paused.wait_for(|p| !p).await;
        })
    }

    fn now_nanos(&self) -> u64 {
        self.time.now_nanos()
    }

    /// The GC retention, less 1.5 s under the cluster clock: its reference jumps forward by up
    /// to a second at a leader change (`docs/architecture/time.md`), and the horizon with it.
    fn resend_window(&self) -> Option<Duration> {
        let margin = match self.config.cluster_clock_rho_ppm {
            Some(_) => Duration::from_millis(1_500),
            None => Duration::ZERO,
        };
        Some(self.config.gc_retention.saturating_sub(margin))
    }
}

/// Polls `ready` every 10 ms of simulated time until it holds (true), or `within` has passed and
/// it still does not (false).
pub async fn eventually(within: Duration, mut ready: impl FnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if ready() {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
