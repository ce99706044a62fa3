//! The cluster clock (`--clock cluster:RHO`, issue 13): every member's bounded time derived from
//! its Raft leader's monotonic clock, with no daemon and no assumption about UTC. The argument,
//! with the worked example below, is in `docs/architecture/time.md` ("The cluster clock"); this
//! module holds its arithmetic (pure functions of monotonic readings, which the property tests
//! below drive with clocks that drift) and [`ClusterClock`], the [`Clock`] the Raft node drives.
//!
//! # The one assumption
//!
//! `RHO` (`rho_ppm`, in parts per million): no member's monotonic clock runs faster or slower
//! than true time by more than that. Nothing else about any clock is trusted, UTC included.
//!
//! # A member's interval for R
//!
//! The leader of term `T` answers a probe with its interval for `R` (a point, `[R, R]`, since it
//! *is* the reference). The member sent the probe at its monotonic `m₀` and read the answer at
//! `m₁`; the leader read `R` somewhere between. At a later monotonic `m` of the member, `R` has
//! advanced since then by at least `(m − m₁)` and at most `(m − m₀)` of the member's time, each
//! converted by the two clocks' worst drift:
//!
//! ```text
//! R ∈ [ e + (m − m₁)·(1 − RHO)/(1 + RHO),   l + (m − m₀)·(1 + RHO)/(1 − RHO) ]
//! ```
//!
//! Every answer of one leader in one term holds at once, so the member intersects them
//! ([`LeaderEstimate::interval`]): one round trip's quick way out meets another's quick way
//! back. Worked example, `RHO` = 200 ppm: sent at `m₀` = 10.000 000 s, the answer
//! `[5 000.000 300, 5 000.000 300]` read at `m₁` = 10.000 100 s; at `m` = 10.050 100 s,
//! `R ∈ [5 000.050 280, 5 000.050 420]`: ±70 µs, the round trip's 100 µs and 20 µs a side for
//! 50 ms at `2·RHO`.
//!
//! An empty intersection means the assumption broke (a clock drifting faster than `RHO`, or a
//! leader that lied): the estimate then gives no interval at all.
//!
//! # Terms
//!
//! Answers are tagged with the term of the leader that gave them, and an estimate holds the
//! answers of one term only ([`LeaderEstimate::follow`] drops the rest): once a later leader may
//! issue timestamps, `R` is its reference, not the old leader's.
//!
//! # A new leader's start, and the horizon
//!
//! A leader gives readings (so issues timestamps) only below a **horizon** it has committed to
//! the log in its term ([`HORIZON_CONTEXT_TAG`]); a new leader starts `R` above every horizon it
//! holds, above its estimate of the last reference plus [`handover_margin`], and not below its
//! system clock ([`start_reference`], [`ClusterClock::lead`]). Every timestamp of a term thus lies
//! below every timestamp of a later one, whatever the clocks say and whoever restarted: Raft's
//! leader completeness puts every committed horizon in the new leader's log. For example, leader
//! A of term 4 has committed `H` = 10:00:03.000 and reads `R_4` = 10:00:02.700; it crashes. B
//! wins term 5 holding that horizon, with a system clock reading 09:59:40 (stepped back) and no
//! estimate (it restarted too): it starts `R_5` at 10:00:03.000 000 001 plus the margin, and its
//! first timestamp, a lease later, lies above everything A issued.
//!
//! # Fencing
//!
//! `RHO` is assumed, but a broken oscillator shows: the answers of one leader in one term hold
//! at once only while both oscillators keep it, so an empty intersection proves that the
//! leader's or the member's broke it. Which one, the member cannot tell; a majority can, if at
//! most a minority of the voters' oscillators is broken at a time (the one assumption fencing
//! adds, as the peer clock checks do):
//!
//! - **a member whose leader's answers contradict each other is fenced**: it keeps only the
//!   newest answer, gives no reading (so it serves no read and issues nothing), says so in every
//!   probe ([`ClockMessage::Probe`]'s `contradicts`, the term), and does not campaign within
//!   [`ClusterClockOptions::rejoin_after`] (2 s) of the last contradiction. It rejoins once the
//!   answers its estimate holds have agreed for `rejoin_after` (the window starts again at every
//!   contradiction and change of term: one answer of a new leader is no agreement), or at once if
//!   it is elected (a leader's readings rest on its own oscillator alone);
//! - **a leader that a majority of voters reports is convicted** ([`ClusterClock::convict`]):
//!   an honest member finds contradictions only if the leader's oscillator is broken, and a
//!   majority holds an honest one. It drops its reference (no more readings), hands leadership
//!   to its most caught-up accuser (stepping down if that fails), and neither campaigns nor takes
//!   leadership over until a later leader's answers have agreed with its oscillator for
//!   `rejoin_after`. Contradictions it finds meanwhile do not lift or replace the conviction.
//!
//! A member whose oscillator stopped while the machine was suspended drops the answers that
//! arrive after it (see [`ClusterClock::real`]) and accuses nobody.
//!
//! The majority counts the other voters only: with 3 or 4 voters every follower must report (one
//! of them down, a broken leader is not convicted, and its followers stay fenced), and 1 or 2
//! voters never convict. A conviction is not kept across a restart: a restarted member whose
//! oscillator is still broken is fenced again by its leader's first contradicting answers, and
//! after a full restart it may lead until its followers convict it again.
//!
//! For example, with 3 voters and `RHO` = 200 ppm, leader A's oscillator starts running
//! 5,000 ppm fast. Followers B and C probe every 50 ms with round trips of 100 µs; their
//! carried estimates allow `R` about a round trip of slack and 2 · 200 ppm more than their own
//! clocks count, so once `R` has gained 100 µs beyond that (100 µs / 4,600 ppm ≈ 22 ms), the
//! next answer lies above the upper edge of each one's estimate: the first probe after the
//! fault, or the second. Both are fenced and report it; A, with two of three voters against
//! it, hands leadership to B, which starts `R` above the horizons. A, probing B, finds the same
//! contradictions from the other side and stays convicted until its oscillator is repaired.
//!
//! Fencing limits the damage, it does not undo it: until the contradiction shows, the broken
//! oscillator's readings were used (the simulator's `cluster-bad-oscillator` scenario breaks a
//! leader's oscillator on purpose and checks that it is convicted, that the others serve again,
//! and that it rejoins once repaired).

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use boundkv_clockbound::{
    Clock, ClockError, ClockReading, ClockStatus, TimeInterval, Timebase, Timestamp,
};

use crate::clock_check::{ClockFrame, ClockMessage};

/// How many of the leader's answers an estimate keeps (the most recent).
pub const MAX_ANSWERS: usize = 64;

/// A leader's reference: `R = base + (mono − at)` on the leader's monotonic clock.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Reference {
    /// The term it is the reference of.
    pub term: u64,
    /// `R` at monotonic `at`.
    pub base: Timestamp,
    /// The leader's monotonic clock when `R` was `base`.
    pub at: Duration,
}

impl Reference {
    /// `R` when the leader's monotonic clock reads `mono` (not before `at`).
    pub fn at(&self, mono: Duration) -> Timestamp {
        self.base.saturating_add(mono.saturating_sub(self.at))
    }
}

/// One Cristian probe of the leader, as the member measured it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LeaderAnswer {
    /// The term the answering member said it leads.
    pub term: u64,
    /// This member's monotonic clock just before the probe left.
    pub sent: Duration,
    /// This member's monotonic clock just after the answer arrived.
    pub received: Duration,
    /// The leader's interval for `R` when it answered.
    pub leader: TimeInterval,
}

/// `elapsed` of one monotonic clock as the least and the most another may have counted, both
/// drifting at most `rho_ppm`: `[elapsed·(1−ρ)/(1+ρ), elapsed·(1+ρ)/(1−ρ)]`, rounded outwards.
pub fn elapsed_range(elapsed: Duration, rho_ppm: u32) -> (Duration, Duration) {
    let e = elapsed.as_nanos();
    let (slow, fast) = (1_000_000u128 - u128::from(rho_ppm), 1_000_000u128 + u128::from(rho_ppm));
    let least = e * slow / fast;
    let most = (e * fast).div_ceil(slow);
    let nanos = |n: u128| Duration::from_nanos(u64::try_from(n).unwrap_or(u64::MAX));
    (nanos(least), nanos(most))
}

impl LeaderAnswer {
    /// What this answer says of `R` when this member's monotonic clock reads `now` (not before
    /// `received`).
    pub fn carried(&self, now: Duration, rho_ppm: u32) -> (Timestamp, Timestamp) {
        let (since_received, _) = elapsed_range(now.saturating_sub(self.received), rho_ppm);
        let (_, since_sent) = elapsed_range(now.saturating_sub(self.sent), rho_ppm);
        (
            self.leader.earliest.saturating_add(since_received),
            self.leader.latest.saturating_add(since_sent),
        )
    }
}

/// A member's estimate of the current leader's `R`: the leader's answers of one term.
#[derive(Clone, Debug)]
pub struct LeaderEstimate {
    rho_ppm: u32,
    term: u64,
    answers: VecDeque<LeaderAnswer>,
}

impl LeaderEstimate {
    /// An estimate with no answers, for term 0.
    pub fn new(rho_ppm: u32) -> Self {
        LeaderEstimate { rho_ppm, term: 0, answers: VecDeque::new() }
    }

    /// The term whose leader this estimate follows.
    pub fn term(&self) -> u64 {
        self.term
    }

    /// This member is in `term` now: answers of any other term no longer count.
    pub fn follow(&mut self, term: u64) {
        if term != self.term {
            self.term = term;
            self.answers.clear();
        }
    }

    /// Forgets every answer (the followed term stays).
    pub fn clear(&mut self) {
        self.answers.clear();
    }

    /// Forgets every answer but the newest.
    pub fn keep_newest(&mut self) {
        let newest = self.answers.pop_back();
        self.answers.clear();
        self.answers.extend(newest);
    }

    /// Whether any answer is kept.
    pub fn has_answers(&self) -> bool {
        !self.answers.is_empty()
    }

    /// **Mutation only:** follows `term` keeping the answers of the old one, relabelled.
    fn retag(&mut self, term: u64) {
        self.term = term;
        for a in &mut self.answers {
            a.term = term;
        }
    }

    /// Keeps `answer` if it is of the followed term. Returns whether it was kept.
    pub fn record(&mut self, answer: LeaderAnswer) -> bool {
        if answer.term != self.term {
            return false;
        }
        if self.answers.len() == MAX_ANSWERS {
            self.answers.pop_front();
        }
        self.answers.push_back(answer);
        true
    }

    /// The interval for `R` when this member's monotonic clock reads `now`: the intersection of
    /// every kept answer, carried. `None` without answers, or when they contradict each other
    /// (the drift assumption broke, or the leader lied).
    pub fn interval(&self, now: Duration) -> Option<TimeInterval> {
        let (lo, hi) = self
            .answers
            .iter()
            .map(|a| a.carried(now.max(a.received), self.rho_ppm))
            .reduce(|(lo1, hi1), (lo2, hi2)| (lo1.max(lo2), hi1.min(hi2)))?;
        (lo <= hi).then(|| TimeInterval::new(lo, hi))
    }
}

/// How far ahead of its estimate's upper edge a new leader starts `R`: `2·RHO/(1 − RHO)` of a
/// lease and the longest commit wait (see the module docs; the span is counted on the new
/// leader's clock, which may run `RHO` slow, hence the division), rounded up.
pub fn handover_margin(rho_ppm: u32, lease: Duration, max_commit_wait: Duration) -> Duration {
    let span = (lease + max_commit_wait).as_nanos();
    let rho = u128::from(rho_ppm);
    let nanos = (span * 2 * rho).div_ceil(1_000_000 - rho);
    Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
}

/// Where the new leader of `term` starts `R`, at its monotonic `mono`: the upper edge of its
/// interval for the old reference (if it has one), not below `floor` (every timestamp its log
/// holds, or the system clock after a full restart), plus `margin` ([`handover_margin`]).
pub fn start_reference(
    term: u64,
    estimate: Option<TimeInterval>,
    floor: Timestamp,
    margin: Duration,
    mono: Duration,
) -> Reference {
    let edge = estimate.map_or(floor, |i| i.latest.max(floor));
    Reference { term, base: edge.saturating_add(margin), at: mono }
}

/// The engine key a member keeps [`ClusterClock`]'s horizon floor under (next to the Raft log's
/// `0x10..=0x13`, outside the MVCC state's `0x01..=0x03`): the highest horizon in any entry or
/// snapshot it has durably held, written in the same batch as that entry.
pub const HORIZON_KEY: &[u8] = &[0x14];

/// The first byte of a horizon entry's context (`tag ++ horizon (u64 BE)`; the entry's data is
/// empty, so the state machine sees a no-op). Proposals' contexts are 8-byte request ids, so a
/// 9-byte context never collides with one.
pub const HORIZON_CONTEXT_TAG: u8 = 0xC1;

/// The bit that marks a probe id as the cluster clock's (the peer clock checks number theirs
/// from 1 up).
pub const CLUSTER_PROBE_BIT: u64 = 1 << 63;

/// A horizon entry's context.
pub fn horizon_context(horizon: Timestamp) -> Vec<u8> {
    let mut ctx = Vec::with_capacity(9);
    ctx.push(HORIZON_CONTEXT_TAG);
    ctx.extend_from_slice(&horizon.as_nanos().to_be_bytes());
    ctx
}

/// The horizon an entry's context carries, if it is a horizon entry.
pub fn horizon_of(context: &[u8]) -> Option<Timestamp> {
    match context {
        [HORIZON_CONTEXT_TAG, rest @ ..] => {
            Some(Timestamp::from_nanos(u64::from_be_bytes(rest.try_into().ok()?)))
        }
        _ => None,
    }
}

/// Settings of a [`ClusterClock`].
#[derive(Clone, Debug)]
pub struct ClusterClockOptions {
    /// `RHO`: the fastest any member's monotonic clock drifts from true time, in ppm. Default
    /// 200.
    pub rho_ppm: u32,
    /// How far ahead of `R` a leader commits its horizon. Default 1 s: at a leader change `R`
    /// jumps forward by at most about this much.
    pub horizon_lead: Duration,
    /// A leader proposes a new horizon once its committed one is less than this ahead of `R`.
    /// Default 500 ms (one small entry every half second while leading).
    pub renew_before: Duration,
    /// How often a member probes its leader. Default 50 ms.
    pub probe_interval: Duration,
    /// How often a member without an interval probes its leader. Default 5 ms.
    pub probe_interval_unsynced: Duration,
    /// A reading is `FreeRunning` once its freshest answer is this old. Default 1 s.
    pub free_running_after: Duration,
    /// A fenced member (see "Fencing" in the module docs) rejoins once its leader's answers
    /// have agreed for this long since the last contradiction. Default 2 s.
    pub rejoin_after: Duration,
    /// **Test only; breaks external consistency.** The mutations the simulator runs to show its
    /// checks catch what each rule prevents.
    #[doc(hidden)]
    pub unsafe_mutation: Option<ClusterClockMutation>,
}

/// How long a follower's report that its leader's answers contradicted each other counts (it
/// repeats it in every probe while fenced, so a report a second old is one its fence outlived).
pub const REPORT_TTL: Duration = Duration::from_secs(1);

/// A rule of the cluster clock switched off (see [`ClusterClockOptions::unsafe_mutation`]).
#[doc(hidden)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClusterClockMutation {
    /// Keep a leader's answers across a term change (no term rule).
    KeepAcrossTerms,
    /// A new leader starts `R` from the lower edge of its estimate of the old one, ignoring the
    /// horizons and the margin.
    StartFromLowerEdge,
    /// Answers are taken as read at the instant they arrived: no round trip in the bound.
    IgnoreRoundTrip,
    /// A leader whose answers a majority of voters found contradicting is never convicted: it
    /// keeps leading on an oscillator that drifts faster than `RHO`.
    NeverConvict,
}

impl Default for ClusterClockOptions {
    fn default() -> Self {
        ClusterClockOptions {
            rho_ppm: 200,
            horizon_lead: Duration::from_secs(1),
            renew_before: Duration::from_millis(500),
            probe_interval: Duration::from_millis(50),
            probe_interval_unsynced: Duration::from_millis(5),
            free_running_after: Duration::from_secs(1),
            rejoin_after: Duration::from_secs(2),
            unsafe_mutation: None,
        }
    }
}

/// What `boundkv status` and `/metrics` show of a [`ClusterClock`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClusterClockReport {
    /// The term this member is in.
    pub term: u64,
    /// The leader it follows in that term (itself while leading).
    pub leader: Option<u64>,
    /// Whether it leads: its reading is `R` itself.
    pub leading: bool,
    /// The round trip of the last answer of the leader.
    pub last_rtt: Option<Duration>,
    /// How long ago the freshest answer arrived.
    pub last_answer_age: Option<Duration>,
    /// The bound of the current interval (`None` without one).
    pub bound: Option<Duration>,
    /// While leading: how far the committed horizon is ahead of `R` (zero once passed).
    pub horizon_ahead: Option<Duration>,
    /// The highest horizon this member holds in its log or snapshots.
    pub horizon_floor: Timestamp,
    /// Probes this member has sent its leaders.
    pub probes_sent: u64,
    /// Answers of its leaders it has kept.
    pub answers_kept: u64,
    /// Probes it has answered.
    pub probes_answered: u64,
    /// Why this member is fenced (see "Fencing" in the module docs), if it is.
    pub fenced: Option<String>,
}

/// The cluster clock (`--clock cluster:RHO`): every member's bounded time derived from its Raft
/// leader's monotonic clock, with no daemon and no assumption about UTC. See the module docs and
/// `docs/architecture/time.md` for the argument; the Raft node ([`crate::node::Node`]) drives it:
///
/// - [`ClusterClock::follow`] with its term and leader on every turn, before it applies entries;
/// - [`ClusterClock::lead`] when it becomes leader, and [`ClusterClock::horizon_due`] /
///   [`ClusterClock::horizon_committed`] to keep a horizon committed ahead of `R`;
/// - [`ClusterClock::saw_horizon`] for every horizon it durably holds;
/// - [`ClusterClock::probe`] to measure the leader, and the transport's
///   [`ClusterClock::on_reply`] / [`ClusterClock::answer`] for the probes' two ends.
///
/// # To ensure correctness
/// Every reading with a trustworthy status holds `R_T` for the term `T` of [`Clock::epoch`] at
/// the time of the call (the leader's own: exactly). A member must not serve a read chosen under
/// one epoch from state of another (the replica re-checks the epoch after its wait).
pub struct ClusterClock {
    id: u64,
    options: ClusterClockOptions,
    timebase: Arc<dyn Timebase>,
    /// The system clock, read once, when a leader finds no horizon anywhere (a new cluster): it
    /// is where `R` starts, so that timestamps begin near UTC. Never trusted for anything else.
    wall: Box<dyn Fn() -> Timestamp + Send + Sync>,
    /// Told every reference this member starts (the simulator checks the invariant with it).
    on_lead: Option<LeadObserver>,
    /// A clock that keeps counting while the machine is suspended (`CLOCK_BOOTTIME`), against
    /// which the oscillator is checked (see [`ClusterClock::real`]).
    suspend_witness: Option<Box<dyn Fn() -> Duration + Send + Sync>>,
    state: Mutex<State>,
}

/// A member's leader's answers contradicted each other (see "Fencing" in the module docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Contradiction {
    leader: u64,
    term: u64,
    /// This member's monotonic clock at the last contradiction.
    at: Duration,
}

impl std::fmt::Display for Contradiction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "the answers of node {} (leader of term {}) contradicted each other: its oscillator or \
             this one drifts faster than RHO",
            self.leader, self.term
        )
    }
}

/// As the leader of `term`, a majority of voters (`by`) reported that its answers contradicted
/// each other (see [`ClusterClock::convict`]).
#[derive(Clone, Debug, PartialEq, Eq)]
struct Conviction {
    term: u64,
    by: Vec<u64>,
    /// This member's monotonic clock at the conviction.
    at: Duration,
}

impl std::fmt::Display for Conviction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "as leader of term {}, a majority of voters ({:?}) found its answers contradicting: \
             this oscillator drifts faster than RHO",
            self.term, self.by
        )
    }
}

impl State {
    /// This member no longer leads with a reference: no readings of its own, no horizon.
    fn end_reference(&mut self) {
        self.reference = None;
        self.horizon = Timestamp::ZERO;
        self.proposed_at = None;
    }

    /// Whether `member`'s latest probe, within [`REPORT_TTL`] of `mono`, reported that this
    /// leader's answers contradicted each other.
    fn reported_recently(&self, member: u64, mono: Duration) -> bool {
        self.reports.get(&member).is_some_and(|at| mono.saturating_sub(*at) <= REPORT_TTL)
    }
}

/// See [`ClusterClock::with_lead_observer`].
pub type LeadObserver = Box<dyn Fn(u64, Reference) + Send + Sync>;

struct State {
    term: u64,
    leader: Option<u64>,
    /// The leader of `term`'s answers.
    estimate: LeaderEstimate,
    /// The last estimate that held answers, of an earlier term: where a new leader starts from.
    prior: Option<LeaderEstimate>,
    /// While leading `term`: `R`.
    reference: Option<Reference>,
    /// The highest horizon committed in the reference's term: readings stop below it.
    horizon: Timestamp,
    /// When this leader last proposed a horizon (monotonic).
    proposed_at: Option<Duration>,
    /// The highest horizon this member holds durably (log, snapshot, or [`HORIZON_KEY`]).
    seen: Timestamp,
    /// Probes in flight: id → (to, term, sent).
    in_flight: BTreeMap<u64, (u64, u64, Duration)>,
    next_probe: u64,
    last_rtt: Option<Duration>,
    last_answer: Option<Duration>,
    probes_sent: u64,
    answers_kept: u64,
    probes_answered: u64,
    /// Set while its leader's answers contradict each other (see "Fencing" in the module docs).
    contradicted: Option<Contradiction>,
    /// Set while this member is convicted (see [`ClusterClock::convict`]).
    conviction: Option<Conviction>,
    /// When (this member's monotonic clock) the answers its estimate holds began to agree: the
    /// receipt of the first answer kept since the last contradiction or change of term. `None`
    /// with no answer kept since.
    agree_since: Option<Duration>,
    /// While leading: the followers whose latest probe reported that this leader's answers
    /// contradicted each other, and when (monotonic) that probe arrived.
    reports: BTreeMap<u64, Duration>,
    /// The oscillator and the suspend witness at the last check.
    last_witnessed: Option<(Duration, Duration)>,
    /// The term in which the oscillator was found to have stopped.
    suspended_in: Option<u64>,
}

impl ClusterClock {
    /// The cluster clock of member `id`, measuring on `timebase` (`RealTimebase`, the raw
    /// monotonic clock, in a server), with `wall` the system clock (read only to start `R` in a
    /// brand-new cluster).
    pub fn new(
        id: u64,
        options: ClusterClockOptions,
        timebase: Arc<dyn Timebase>,
        wall: Box<dyn Fn() -> Timestamp + Send + Sync>,
    ) -> Self {
        if let Some(m) = options.unsafe_mutation {
            tracing::error!(node = id, mutation = ?m, "UNSAFE: a cluster clock rule is switched off");
        }
        let rho = options.rho_ppm;
        ClusterClock {
            id,
            options,
            timebase,
            wall,
            on_lead: None,
            suspend_witness: None,
            state: Mutex::new(State {
                term: 0,
                leader: None,
                estimate: LeaderEstimate::new(rho),
                prior: None,
                reference: None,
                horizon: Timestamp::ZERO,
                proposed_at: None,
                seen: Timestamp::ZERO,
                in_flight: BTreeMap::new(),
                // Probe ids from a random start (62 bits), so that a late answer to a probe of an
                // earlier incarnation of this member (a reply queued on an old connection) is
                // never taken for one of this incarnation's (its `sent` would be wrong).
                next_probe: rand::random::<u64>() >> 2,
                last_rtt: None,
                last_answer: None,
                probes_sent: 0,
                answers_kept: 0,
                probes_answered: 0,
                contradicted: None,
                conviction: None,
                agree_since: None,
                reports: BTreeMap::new(),
                last_witnessed: None,
                suspended_in: None,
            }),
        }
    }

    /// The cluster clock on real time: the raw monotonic clock, and the system clock for `R`'s
    /// start.
    ///
    /// `CLOCK_MONOTONIC_RAW` stops while the machine is suspended, and so would `R` and a
    /// leader's lease, measured on it: a resumed leader would serve reads after its successor
    /// acknowledged writes. So every reading compares the oscillator with `CLOCK_BOOTTIME`,
    /// which counts suspended time: if the latter ran more than 10 % + 50 ms ahead between two
    /// readings (chrony slews `CLOCK_BOOTTIME`'s rate by at most 8.3 %), the member drops its
    /// reference and its answers and gives no reading for the rest of its term (a leader steps
    /// down).
    pub fn real(id: u64, options: ClusterClockOptions) -> Self {
        let wall = || {
            let since = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default();
            Timestamp::from_nanos(u64::try_from(since.as_nanos()).unwrap_or(u64::MAX))
        };
        Self::new(id, options, Arc::new(boundkv_clockbound::RealTimebase), Box::new(wall))
            .with_suspend_witness(Box::new(boundkv_clockbound::boottime))
    }

    /// Checks the oscillator against `witness`, a clock that keeps counting while the machine is
    /// suspended (see [`ClusterClock::real`]).
    pub fn with_suspend_witness(
        mut self,
        witness: Box<dyn Fn() -> Duration + Send + Sync>,
    ) -> Self {
        self.suspend_witness = Some(witness);
        self
    }

    /// Checks the oscillator against the suspend witness (see [`ClusterClock::real`]): whether
    /// it stopped counting, now or earlier in this term.
    fn suspended(&self, s: &mut State, mono: Duration) -> bool {
        if let Some(witness) = &self.suspend_witness {
            let boot = witness();
            if let Some((m0, b0)) = s.last_witnessed {
                let (dm, db) = (mono.saturating_sub(m0), boot.saturating_sub(b0));
                if db > dm + dm / 10 + Duration::from_millis(50) && s.suspended_in != Some(s.term) {
                    tracing::error!(
                        node = self.id,
                        term = s.term,
                        oscillator = ?dm,
                        boottime = ?db,
                        "cluster clock: the machine was suspended (the oscillator stopped while \
                         CLOCK_BOOTTIME ran): no readings for the rest of this term"
                    );
                    s.suspended_in = Some(s.term);
                    s.end_reference();
                    s.estimate.clear();
                }
            }
            s.last_witnessed = Some((mono, boot));
        }
        s.suspended_in == Some(s.term)
    }

    /// Whether this member's oscillator stopped counting in its current term (see
    /// [`ClusterClock::real`]): a leader then steps down.
    pub fn suspended_this_term(&self) -> bool {
        let mono = self.timebase.elapsed();
        let mut s = self.state();
        self.suspended(&mut s, mono)
    }

    /// Numbers this member's probes from `base` (the simulator passes one drawn from its seed, so
    /// that a run repeats; a server's start is random, see [`ClusterClock::new`]).
    pub fn with_probe_ids_from(self, base: u64) -> Self {
        self.state().next_probe = base >> 2;
        self
    }

    /// Calls `observer(id, reference)` whenever this member starts a reference (a test hook:
    /// the simulator records every term's `R` and checks every reading against it).
    pub fn with_lead_observer(mut self, observer: LeadObserver) -> Self {
        self.on_lead = Some(observer);
        self
    }

    /// The settings.
    pub fn options(&self) -> &ClusterClockOptions {
        &self.options
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// How long a new leader waits before its first timestamp, for a `lease` counted by the old
    /// leader: the old one counted its lease on its monotonic clock (through `R`), this one
    /// counts on its own; one may run `RHO` slow and the other `RHO` fast, so `lease·(1+ρ)/(1−ρ)`.
    pub fn ready_wait(&self, lease: Duration) -> Duration {
        elapsed_range(lease, self.options.rho_ppm).1
    }

    /// This member is in `term`, following `leader` (itself if it leads). Called by the node on
    /// every turn, before it applies entries: a member that learns of a newer term drops its
    /// answers (and stops leading) before it applies anything of that term.
    pub fn follow(&self, term: u64, leader: Option<u64>, leading: bool) {
        let mut s = self.state();
        if term != s.term {
            if s.estimate.has_answers() {
                s.prior = Some(s.estimate.clone());
            }
            if self.options.unsafe_mutation == Some(ClusterClockMutation::KeepAcrossTerms) {
                s.estimate.retag(term);
            } else {
                s.estimate.follow(term);
            }
            s.term = term;
            s.reports.clear();
            s.agree_since = None;
        }
        s.leader = leader;
        if !leading || s.reference.is_some_and(|r| r.term != term) {
            s.end_reference();
        }
    }

    /// This member became leader of `term`, with `lease` ([`crate::node::NodeConfig::lease`]):
    /// starts `R_term` (see the module docs) and returns where. No reading is usable until its
    /// first horizon commits.
    pub fn lead(&self, term: u64, lease: Duration) -> Reference {
        let mono = self.timebase.elapsed();
        let mut s = self.state();
        let estimate = s.prior.as_ref().and_then(|e| e.interval(mono));
        let start = match self.options.unsafe_mutation {
            Some(ClusterClockMutation::StartFromLowerEdge) => Reference {
                term,
                base: estimate.map_or_else(|| (self.wall)(), |i| i.earliest),
                at: mono,
            },
            _ => {
                // Above every horizon this member holds (every timestamp any earlier leader
                // issued lay below a horizon committed before it, which this log holds), above
                // its estimate of the last reference plus the margin, and not below the system
                // clock (so that a new cluster starts near UTC; a clock far behind is ignored).
                let floor = s.seen.saturating_add(Duration::from_nanos(1)).max((self.wall)());
                let margin = handover_margin(self.options.rho_ppm, lease, lease);
                start_reference(term, estimate, floor, margin, mono)
            }
        };
        s.term = term;
        s.leader = Some(self.id);
        s.reference = Some(start);
        s.horizon = Timestamp::ZERO;
        s.proposed_at = None;
        s.reports.clear();
        // A leader's readings rest on its own oscillator, not on answers: a contradiction seen
        // as a follower no longer fences it (if its oscillator is the one at fault, its
        // followers will say so). A conviction stands: it gives no reading (see `read`), and
        // the node steps down again.
        s.contradicted = None;
        drop(s);
        tracing::info!(node = self.id, term, start = %start.base, "cluster clock: leading, R starts here");
        if let Some(observer) = &self.on_lead {
            observer(self.id, start);
        }
        start
    }

    /// A horizon to propose now, if one is due: while leading, once the committed horizon is
    /// less than `renew_before` ahead of `R` (and no proposal is younger than a tenth of that).
    pub fn horizon_due(&self) -> Option<Timestamp> {
        let mono = self.timebase.elapsed();
        let mut s = self.state();
        let reference = s.reference?;
        let r = reference.at(mono);
        let ahead = s.horizon.saturating_duration_since(r);
        let recent = s
            .proposed_at
            .is_some_and(|at| mono.saturating_sub(at) < self.options.renew_before / 10);
        if ahead >= self.options.renew_before || recent {
            return None;
        }
        s.proposed_at = Some(mono);
        Some(r.saturating_add(self.options.horizon_lead))
    }

    /// A horizon entry of `term` committed: if this member leads `term`, its readings may go up
    /// to it.
    pub fn horizon_committed(&self, term: u64, horizon: Timestamp) {
        let mut s = self.state();
        s.seen = s.seen.max(horizon);
        if s.reference.is_some_and(|r| r.term == term) {
            s.horizon = s.horizon.max(horizon);
        }
    }

    /// While this member leads `term` with its reference: the committed horizon, which every
    /// timestamp it issues must lie below (`ZERO` until one commits). `None` otherwise.
    pub fn issue_limit(&self, term: u64) -> Option<Timestamp> {
        let s = self.state();
        s.reference.filter(|r| r.term == term && s.term == term).map(|_| s.horizon)
    }

    /// This member durably holds `horizon` (an appended entry's, a snapshot's, the stored floor).
    pub fn saw_horizon(&self, horizon: Timestamp) {
        let mut s = self.state();
        s.seen = s.seen.max(horizon);
    }

    /// The highest horizon this member holds.
    pub fn horizon_floor(&self) -> Timestamp {
        self.state().seen
    }

    /// The probe to send the leader now, and when the next is due (from `probe_interval`, or the
    /// faster `probe_interval_unsynced` while this member has no interval).
    pub fn probe(&self) -> (Option<ClockFrame>, Duration) {
        let mono = self.timebase.elapsed();
        let mut s = self.state();
        // A fenced member probes at the slow pace: it has an interval to wait out, not to win.
        let synced = s.reference.is_some()
            || s.contradicted.is_some()
            || s.conviction.is_some()
            || s.estimate.interval(mono).is_some();
        let next =
            if synced { self.options.probe_interval } else { self.options.probe_interval_unsynced };
        let Some(leader) = s.leader.filter(|&l| l != self.id && s.reference.is_none()) else {
            return (None, next);
        };
        s.next_probe += 1;
        let id = CLUSTER_PROBE_BIT | s.next_probe;
        let term = s.term;
        // Probes unanswered for a second are lost.
        s.in_flight.retain(|_, (_, _, sent)| mono.saturating_sub(*sent) < Duration::from_secs(1));
        s.in_flight.insert(id, (leader, term, mono));
        s.probes_sent += 1;
        let frame = ClockFrame {
            from: self.id,
            to: leader,
            message: ClockMessage::Probe { probe: id, sent: None, contradicts: self.reported(&s) },
        };
        (Some(frame), next)
    }

    /// What this member's probes report: the term of the leader it follows, if that leader's
    /// answers contradicted each other.
    fn reported(&self, s: &State) -> Option<u64> {
        s.contradicted
            .filter(|c| {
                c.term == s.term && s.leader == Some(c.leader) && s.suspended_in != Some(s.term)
            })
            .map(|c| c.term)
    }

    /// The answer to a probe from member `from`, which reported `contradicts` (the term of the
    /// leader whose answers contradicted each other, see [`ClusterClock::probe`]): this
    /// member's reading (if usable) and, while it leads with a committed horizon, the term whose
    /// `R` the reading is. A report about this leader's term is kept for [`ClusterClock::convict`].
    pub fn answer(
        &self,
        from: u64,
        contradicts: Option<u64>,
    ) -> (Option<ClockReading>, Option<u64>) {
        let mono = self.timebase.elapsed();
        let mut s = self.state();
        s.probes_answered += 1;
        if s.reference.is_some_and(|r| r.term == s.term) {
            if contradicts == Some(s.term) {
                s.reports.insert(from, mono);
            } else {
                s.reports.remove(&from);
            }
        }
        match self.read(&mut s, mono) {
            Some(r) if s.reference.is_some() => (Some(r), Some(s.term)),
            r => (r, None),
        }
    }

    /// An answer to one of this member's probes arrived (called by the transport the moment it
    /// does). Kept if it is the leader's of this member's term, about its own `R`.
    pub fn on_reply(
        &self,
        from: u64,
        probe: u64,
        reading: Option<ClockReading>,
        leads: Option<u64>,
    ) {
        let mono = self.timebase.elapsed();
        let mut s = self.state();
        let Some((to, term, sent)) = s.in_flight.remove(&probe) else { return };
        // An oscillator that stopped while the machine was suspended measures nothing, and a
        // contradiction it saw would accuse an honest leader.
        if self.suspended(&mut s, mono) {
            return;
        }
        let Some(reading) = reading.filter(|r| r.status.is_trustworthy()) else { return };
        if to != from || leads != Some(term) || term != s.term || s.leader != Some(from) {
            return;
        }
        let sent = match self.options.unsafe_mutation {
            Some(ClusterClockMutation::IgnoreRoundTrip) => mono,
            _ => sent,
        };
        let kept = s.estimate.record(LeaderAnswer {
            term,
            sent,
            received: mono,
            leader: reading.interval,
        });
        if kept {
            s.answers_kept += 1;
            s.last_rtt = Some(mono.saturating_sub(sent));
            s.last_answer = Some(mono);
            if s.estimate.interval(mono).is_none() {
                // The assumption broke between this member and its leader. Start the estimate
                // afresh from the newest answer (the older ones are what it contradicts) and
                // give no reading until answers agree again for `rejoin_after`.
                s.estimate.keep_newest();
                s.agree_since = Some(mono);
                let contradiction = Contradiction { leader: from, term, at: mono };
                if s.contradicted.is_none_or(|c| (c.leader, c.term) != (from, term)) {
                    tracing::warn!(
                        node = self.id,
                        leader = from,
                        term,
                        rho_ppm = self.options.rho_ppm,
                        "cluster clock fenced: {contradiction}; no readings until its answers agree for {:?}",
                        self.options.rejoin_after
                    );
                }
                s.contradicted = Some(contradiction);
            } else if s.agree_since.is_none() {
                s.agree_since = Some(mono);
            }
        }
    }

    /// While this member leads: convicts it if a majority of `voters` (other than itself,
    /// reporting within [`REPORT_TTL`]) found its answers contradicting each other. An honest
    /// follower finds that only if the leader's oscillator is out of bounds, and at most a
    /// minority of the voters' oscillators is (the assumption fencing adds to `RHO`), so a
    /// majority of reports convicts the leader. A convicted member drops its reference at once,
    /// gives no reading, and the node steps down and does not campaign until it rejoins (see
    /// "Fencing" in the module docs). Returns why, once, on conviction.
    ///
    /// `voters` is asked for only when some follower reported: the node calls this on every
    /// turn while it leads.
    pub fn convict(&self, voters: impl FnOnce() -> Vec<u64>) -> Option<(String, Vec<u64>)> {
        if self.options.unsafe_mutation == Some(ClusterClockMutation::NeverConvict) {
            return None;
        }
        let mono = self.timebase.elapsed();
        let mut s = self.state();
        let term = s.reference.filter(|r| r.term == s.term)?.term;
        if s.reports.is_empty() {
            return None;
        }
        let voters = voters();
        let by: Vec<u64> = voters
            .iter()
            .copied()
            .filter(|&v| v != self.id && s.reported_recently(v, mono))
            .collect();
        if by.len() < voters.len() / 2 + 1 {
            return None;
        }
        let conviction = Conviction { term, by: by.clone(), at: mono };
        let why = conviction.to_string();
        // The node logs it (at WARN, with `why`) as it hands leadership away.
        s.conviction = Some(conviction);
        s.end_reference();
        s.reports.clear();
        Some((why, by))
    }

    /// While this member leads: whether `member` reported within [`REPORT_TTL`] that its answers
    /// contradicted each other (its own oscillator may be the broken one: leadership is not
    /// handed to it).
    pub fn reported_by(&self, member: u64) -> bool {
        let mono = self.timebase.elapsed();
        self.state().reported_recently(member, mono)
    }

    /// Whether this member is convicted (see [`ClusterClock::convict`]) and has not rejoined:
    /// the node then neither campaigns nor takes leadership over, and a leader hands it away.
    pub fn convicted(&self) -> bool {
        let mono = self.timebase.elapsed();
        let mut s = self.state();
        self.lift_rejoined(&mut s, mono);
        s.conviction.is_some()
    }

    /// Whether this member may campaign: not while convicted, nor within `rejoin_after` of its
    /// leader's last contradicting answer (the oscillator at fault may be its own; if it is the
    /// leader's, that leader is convicted and hands leadership to one of its accusers, or, if
    /// that fails, the accusers campaign once the contradictions have stopped that long).
    pub fn may_campaign(&self) -> bool {
        let mono = self.timebase.elapsed();
        let mut s = self.state();
        self.lift_rejoined(&mut s, mono);
        s.conviction.is_none()
            && s.contradicted.is_none_or(|c| mono.saturating_sub(c.at) >= self.options.rejoin_after)
    }

    /// Why this member is fenced, if it is.
    pub fn fence_reason(&self) -> Option<String> {
        let mono = self.timebase.elapsed();
        let mut s = self.state();
        self.lift_rejoined(&mut s, mono);
        Self::reason(&s)
    }

    fn reason(s: &State) -> Option<String> {
        match (&s.conviction, &s.contradicted) {
            (Some(c), _) => Some(c.to_string()),
            (None, Some(c)) => Some(c.to_string()),
            (None, None) => None,
        }
    }

    /// Lifts the contradiction and the conviction this member has rejoined from: while it
    /// follows, the answers its estimate holds have agreed since at or after it (for a
    /// conviction, of a later term: the convicted leader had none of its own term), the newest
    /// of them `rejoin_after` or more after the first.
    fn lift_rejoined(&self, s: &mut State, mono: Duration) {
        let agreed_since = |s: &State, since: Duration| {
            s.reference.is_none()
                && s.agree_since.is_some_and(|a| {
                    a >= since && s.last_answer.is_some_and(|l| l >= a + self.options.rejoin_after)
                })
                && s.estimate.interval(mono).is_some()
        };
        if let Some(c) = s.contradicted
            && agreed_since(s, c.at)
        {
            tracing::warn!(
                node = self.id,
                term = s.term,
                "cluster clock: fence lifted, the leader's answers have agreed for {:?} (it was: {c})",
                self.options.rejoin_after
            );
            s.contradicted = None;
        }
        if let Some(c) = s.conviction.clone()
            && s.term > c.term
            && agreed_since(s, c.at)
        {
            tracing::warn!(
                node = self.id,
                term = s.term,
                "cluster clock: conviction lifted, a later leader's answers have agreed with this \
                 oscillator for {:?} (it was: {c})",
                self.options.rejoin_after
            );
            s.conviction = None;
        }
    }

    /// What status pages show.
    pub fn report(&self) -> ClusterClockReport {
        let mono = self.timebase.elapsed();
        let mut s = self.state();
        let reading = self.read(&mut s, mono);
        ClusterClockReport {
            term: s.term,
            leader: s.leader,
            leading: s.reference.is_some(),
            last_rtt: s.last_rtt,
            last_answer_age: s.last_answer.map(|a| mono.saturating_sub(a)),
            bound: reading.map(|r| r.bound()),
            horizon_ahead: s.reference.map(|r| s.horizon.saturating_duration_since(r.at(mono))),
            horizon_floor: s.seen,
            probes_sent: s.probes_sent,
            answers_kept: s.answers_kept,
            probes_answered: s.probes_answered,
            fenced: {
                self.lift_rejoined(&mut s, mono);
                Self::reason(&s)
            },
        }
    }

    /// The reading at `mono`, if there is one to give.
    fn read(&self, s: &mut State, mono: Duration) -> Option<ClockReading> {
        self.lift_rejoined(s, mono);
        if self.suspended(s, mono) || s.contradicted.is_some() || s.conviction.is_some() {
            return None;
        }
        if let Some(reference) = s.reference {
            let r = reference.at(mono);
            // At or past the committed horizon the leader has nothing to give: a timestamp
            // there could lie above what its successor starts from.
            return (r < s.horizon).then(|| ClockReading {
                interval: TimeInterval::new(r, r),
                status: ClockStatus::Synchronized,
            });
        }
        let interval = s.estimate.interval(mono)?;
        let fresh =
            s.last_answer.is_some_and(|a| mono.saturating_sub(a) < self.options.free_running_after);
        let status = if fresh { ClockStatus::Synchronized } else { ClockStatus::FreeRunning };
        Some(ClockReading { interval, status })
    }
}

impl std::fmt::Debug for ClusterClock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterClock")
            .field("id", &self.id)
            .field("options", &self.options)
            .finish()
    }
}

impl Clock for ClusterClock {
    /// `R_T`'s interval for this member's term `T`, or an `Unknown` reading while it has none
    /// (no answer of this term's leader yet, contradicting answers, a leader whose horizon has
    /// not committed).
    fn now(&self) -> Result<ClockReading, ClockError> {
        let mono = self.timebase.elapsed();
        let mut s = self.state();
        Ok(self.read(&mut s, mono).unwrap_or(ClockReading {
            interval: TimeInterval::new(Timestamp::ZERO, Timestamp::MAX),
            status: ClockStatus::Unknown,
        }))
    }

    /// The source and where it stands now: the leader followed, its term, the last round trip
    /// (what `boundkv status` shows as the source).
    fn describe(&self) -> String {
        let r = self.report();
        let us = |d: Duration| format!("{:.0}µs", d.as_secs_f64() * 1e6);
        let state = match (r.leading, r.leader) {
            (true, _) => format!("this node leads term {}: its reading is the reference", r.term),
            (false, Some(leader)) => format!(
                "follows node {leader} in term {}, last round trip {}, last answer {} ago",
                r.term,
                r.last_rtt.map_or_else(|| "none".into(), us),
                r.last_answer_age.map_or_else(|| "never".into(), |a| format!("{a:.0?}")),
            ),
            (false, None) => format!("no leader known in term {}", r.term),
        };
        let state = match &r.fenced {
            Some(why) => format!("{state}; FENCED: {why}"),
            None => state,
        };
        format!(
            "cluster clock (RHO {} ppm: the Raft leader's monotonic clock, measured by probes); {state}",
            self.options.rho_ppm
        )
    }

    fn timebase(&self) -> &dyn Timebase {
        &*self.timebase
    }

    fn epoch(&self) -> u64 {
        self.state().term
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const RHO: u32 = 200;

    fn ts(nanos: u64) -> Timestamp {
        Timestamp::from_nanos(nanos)
    }

    /// A monotonic clock that runs at `1 + ppm/10⁶` of true time from `start` (true time `t`
    /// in nanoseconds).
    #[derive(Clone, Copy, Debug)]
    struct Oscillator {
        ppm: i64,
        start: u64,
    }

    impl Oscillator {
        fn read(&self, t: u64) -> Duration {
            let t = i128::from(t);
            let n = t + t * i128::from(self.ppm) / 1_000_000;
            Duration::from_nanos(self.start + u64::try_from(n).unwrap())
        }
    }

    #[test]
    fn the_worked_example_of_the_module_docs() {
        let s = |secs: f64| Duration::from_nanos((secs * 1e9).round() as u64);
        let r = ts(5_000_000_300_000);
        let answer = LeaderAnswer {
            term: 3,
            sent: s(10.0),
            received: s(10.0001),
            leader: TimeInterval::new(r, r),
        };
        let (lo, hi) = answer.carried(s(10.0501), RHO);
        // In microseconds, as the docs give it (exactly: 3 ns and 45 ns more, from the
        // second-order terms of (1 ∓ ρ)/(1 ± ρ)).
        assert_eq!((lo.as_nanos() / 1_000, hi.as_nanos() / 1_000), (5_000_050_280, 5_000_050_420));
    }

    #[test]
    fn answers_of_another_term_do_not_count() {
        let mut e = LeaderEstimate::new(RHO);
        e.follow(2);
        let a = |term| LeaderAnswer {
            term,
            sent: Duration::from_millis(1),
            received: Duration::from_millis(2),
            leader: TimeInterval::new(ts(1_000_000), ts(1_000_000)),
        };
        assert!(!e.record(a(1)));
        assert!(e.record(a(2)));
        assert!(e.interval(Duration::from_millis(3)).is_some());
        e.follow(3);
        assert!(e.interval(Duration::from_millis(3)).is_none(), "term 2's answers dropped");
    }

    #[test]
    fn contradicting_answers_give_no_interval() {
        let mut e = LeaderEstimate::new(RHO);
        let at = |r: u64| LeaderAnswer {
            term: 0,
            sent: Duration::from_millis(1),
            received: Duration::from_millis(2),
            leader: TimeInterval::new(ts(r), ts(r)),
        };
        e.record(at(1_000_000_000));
        e.record(at(1_000_000_000 + 10_000_000)); // 10 ms apart in one 1 ms round trip
        assert_eq!(e.interval(Duration::from_millis(3)), None);
    }

    #[test]
    fn the_margin_is_twice_rho_over_a_lease_and_a_commit_wait() {
        let m = handover_margin(200, Duration::from_secs(1), Duration::from_millis(500));
        // 2 · 200 ppm · 1.5 s / (1 − 200 ppm), rounded up.
        assert_eq!(m, Duration::from_nanos(600_121));
    }

    /// A monotonic clock the test moves by hand.
    #[derive(Default)]
    struct ManualMono(std::sync::atomic::AtomicU64);

    impl ManualMono {
        fn advance(&self, d: Duration) {
            self.0.fetch_add(d.as_nanos() as u64, std::sync::atomic::Ordering::SeqCst);
        }
    }

    impl Timebase for ManualMono {
        fn elapsed(&self) -> Duration {
            Duration::from_nanos(self.0.load(std::sync::atomic::Ordering::SeqCst))
        }
        fn sleep_blocking(&self, d: Duration) {
            self.advance(d);
        }
        fn sleep(&self, d: Duration) -> boundkv_clockbound::clock::BoxFuture {
            self.advance(d);
            Box::pin(async {})
        }
    }

    const WALL: u64 = 1_700_000_000_000_000_000;

    fn clock(id: u64) -> (ClusterClock, Arc<ManualMono>) {
        let mono = Arc::new(ManualMono::default());
        mono.advance(Duration::from_secs(100));
        let c = ClusterClock::new(
            id,
            ClusterClockOptions::default(),
            mono.clone(),
            Box::new(|| Timestamp::from_nanos(WALL)),
        );
        (c, mono)
    }

    fn point(t: Timestamp) -> Option<ClockReading> {
        Some(ClockReading { interval: TimeInterval::new(t, t), status: ClockStatus::Synchronized })
    }

    fn probe_id(frame: &ClockFrame) -> u64 {
        match frame.message {
            ClockMessage::Probe { probe, .. } => probe,
            _ => panic!("a probe"),
        }
    }

    #[test]
    fn a_leader_gives_readings_only_below_its_committed_horizon() {
        let (c, mono) = clock(1);
        c.follow(5, Some(1), true);
        let r = c.lead(5, Duration::from_secs(1));
        let margin = handover_margin(200, Duration::from_secs(1), Duration::from_secs(1));
        let start = ts(WALL).saturating_add(margin);
        assert_eq!(
            r.base, start,
            "a brand-new cluster starts R at the system clock (and the margin)"
        );
        assert_eq!(c.now().unwrap().status, ClockStatus::Unknown, "no horizon committed yet");
        assert_eq!(c.answer(9, None).1, None, "nor an answer that claims the reference");
        let h = c.horizon_due().expect("a horizon is due at once");
        assert_eq!(h, start.saturating_add(Duration::from_secs(1)));
        assert_eq!(c.horizon_due(), None, "not proposed again straight away");
        c.horizon_committed(4, h); // another term's horizon: not this leader's
        assert_eq!(c.now().unwrap().status, ClockStatus::Unknown);
        c.horizon_committed(5, h);
        let now = c.now().unwrap();
        assert_eq!((now.status, now.bound()), (ClockStatus::Synchronized, Duration::ZERO));
        assert_eq!(now.earliest(), start);
        assert_eq!(c.answer(9, None), (point(start), Some(5)));
        assert_eq!(c.epoch(), 5);
        mono.advance(Duration::from_millis(600));
        assert!(c.horizon_due().is_some(), "renewed once less than 500 ms ahead");
        mono.advance(Duration::from_millis(400));
        assert_eq!(c.now().unwrap().status, ClockStatus::Unknown, "R reached the horizon");
        // Stepping down (check-quorum, same term) ends the reference at once.
        c.horizon_committed(5, ts(WALL + 10_000_000_000));
        c.follow(5, None, false);
        assert_eq!(c.now().unwrap().status, ClockStatus::Unknown);
    }

    #[test]
    fn a_new_leader_starts_above_every_horizon_it_holds_and_its_estimate() {
        let (c, mono) = clock(2);
        // Following node 1 in term 3, one answer.
        c.follow(3, Some(1), false);
        let (frame, _) = c.probe();
        let frame = frame.expect("a probe of the leader");
        assert_eq!((frame.to, probe_id(&frame) & CLUSTER_PROBE_BIT), (1, CLUSTER_PROBE_BIT));
        mono.advance(Duration::from_micros(200));
        let r = ts(WALL + 50_000_000_000); // the old reference, 50 s ahead of the system clock
        c.on_reply(1, probe_id(&frame), point(r), Some(3));
        // A horizon above it was committed.
        c.saw_horizon(ts(WALL + 51_000_000_000));
        mono.advance(Duration::from_millis(10));
        c.follow(4, None, false); // a campaign
        c.follow(4, Some(2), true);
        let start = c.lead(4, Duration::from_secs(1));
        let margin = handover_margin(200, Duration::from_secs(1), Duration::from_secs(1));
        assert_eq!(
            start.base,
            ts(WALL + 51_000_000_001).saturating_add(margin),
            "above the horizon held (and the margin)"
        );
        // Without the horizon, above the estimate's upper edge plus the margin.
        let (c, mono) = clock(2);
        c.follow(3, Some(1), false);
        let frame = c.probe().0.unwrap();
        mono.advance(Duration::from_micros(200));
        c.on_reply(1, probe_id(&frame), point(r), Some(3));
        mono.advance(Duration::from_millis(10));
        let hi = c.now().unwrap().latest();
        c.follow(4, Some(2), true);
        let start = c.lead(4, Duration::from_secs(1));
        assert_eq!(start.base, hi.saturating_add(margin));
    }

    #[test]
    fn a_member_takes_only_its_leaders_answers_of_its_term() {
        let (c, mono) = clock(3);
        c.follow(7, Some(1), false);
        assert_eq!(c.now().unwrap().status, ClockStatus::Unknown, "no answer yet");
        let (p1, next) = c.probe();
        assert_eq!(next, Duration::from_millis(5), "fast probes while unsynchronized");
        let p1 = probe_id(&p1.unwrap());
        let r = ts(WALL + 3_000_000_000);
        mono.advance(Duration::from_micros(100));
        c.on_reply(2, p1, point(r), Some(7)); // not the leader
        c.on_reply(1, p1, point(r), None); // not claiming the reference
        c.on_reply(1, p1, point(r), Some(6)); // another term
        assert_eq!(c.now().unwrap().status, ClockStatus::Unknown);
        let p2 = probe_id(&c.probe().0.unwrap());
        mono.advance(Duration::from_micros(100));
        c.on_reply(1, p2, point(r), Some(7));
        let now = c.now().unwrap();
        assert_eq!(now.status, ClockStatus::Synchronized);
        assert!(now.interval.contains(r) && now.bound() <= Duration::from_micros(51));
        assert_eq!(c.probe().1, Duration::from_millis(50), "slower once synchronized");
        // A newer term: its intervals are gone before anything of that term is applied, and an
        // answer of the old term still in flight does not bring them back.
        let p3 = probe_id(&c.probe().0.unwrap());
        c.follow(8, Some(3), false);
        c.on_reply(1, p3, point(r), Some(7));
        assert_eq!(c.now().unwrap().status, ClockStatus::Unknown);
        assert_eq!(c.epoch(), 8);
        // Stale answers turn the reading FreeRunning, widening, not wrong.
        let (c, mono) = clock(3);
        c.follow(1, Some(1), false);
        let p = probe_id(&c.probe().0.unwrap());
        c.on_reply(1, p, point(r), Some(1));
        mono.advance(Duration::from_secs(2));
        let later = c.now().unwrap();
        assert_eq!(later.status, ClockStatus::FreeRunning);
        assert!(later.bound() >= Duration::from_micros(790), "{:?}", later.bound());
    }

    #[test]
    fn a_suspend_ends_the_reference_for_the_rest_of_the_term() {
        let (c, mono) = clock(1);
        let boot = Arc::new(ManualMono::default());
        let witness = boot.clone();
        let c = c.with_suspend_witness(Box::new(move || witness.elapsed()));
        c.follow(2, Some(1), true);
        c.lead(2, Duration::from_secs(1));
        let h = c.horizon_due().unwrap();
        c.horizon_committed(2, h);
        assert_eq!(c.now().unwrap().status, ClockStatus::Synchronized);
        // Both run (a slew of 8 % is no suspend).
        mono.advance(Duration::from_millis(100));
        boot.advance(Duration::from_millis(108));
        assert_eq!(c.now().unwrap().status, ClockStatus::Synchronized);
        assert!(!c.suspended_this_term());
        // Suspended for 3 s: the oscillator stood still.
        boot.advance(Duration::from_secs(3));
        assert_eq!(c.now().unwrap().status, ClockStatus::Unknown);
        assert!(c.suspended_this_term());
        assert_eq!(c.issue_limit(2), None);
        // A new term starts afresh.
        c.follow(3, Some(2), false);
        assert!(!c.suspended_this_term());
        let p = probe_id(&c.probe().0.unwrap());
        c.on_reply(2, p, point(ts(WALL + 9_000_000_000)), Some(3));
        assert_eq!(c.now().unwrap().status, ClockStatus::Synchronized);
    }

    /// Probes `c`'s leader `leader` of `term` and answers with `r` after a 100 µs round trip;
    /// returns what the probe reported.
    fn probe_and_answer(
        c: &ClusterClock,
        mono: &ManualMono,
        leader: u64,
        term: u64,
        r: Timestamp,
    ) -> Option<u64> {
        let frame = c.probe().0.expect("a probe of the leader");
        let ClockMessage::Probe { probe, contradicts, .. } = frame.message else { panic!() };
        mono.advance(Duration::from_micros(100));
        c.on_reply(leader, probe, point(r), Some(term));
        contradicts
    }

    #[test]
    fn contradicting_answers_fence_a_follower_until_they_agree_for_a_while() {
        let (c, mono) = clock(2);
        c.follow(3, Some(1), false);
        let r0 = WALL + 5_000_000_000;
        assert_eq!(probe_and_answer(&c, &mono, 1, 3, ts(r0)), None);
        assert_eq!(c.now().unwrap().status, ClockStatus::Synchronized);
        // 50 ms later the leader's R has moved 10 ms more than 50 ms: no oscillator within
        // RHO does that.
        mono.advance(Duration::from_millis(50));
        let mut r = r0 + 60_000_000;
        assert_eq!(probe_and_answer(&c, &mono, 1, 3, ts(r)), None, "not fenced when it left");
        assert_eq!(c.now().unwrap().status, ClockStatus::Unknown, "no reading while fenced");
        let why = c.fence_reason().expect("fenced");
        assert!(why.contains("node 1 (leader of term 3)"), "{why}");
        assert!(!c.convicted(), "a follower's fence is no conviction");
        assert!(c.describe().contains("FENCED"), "{}", c.describe());
        // It says so in every probe, and probes at the slow pace.
        let (p, next) = c.probe();
        let Some(ClockFrame { message: ClockMessage::Probe { contradicts, .. }, .. }) = p else {
            panic!()
        };
        assert_eq!((contradicts, next), (Some(3), Duration::from_millis(50)));
        // Answers that agree with the newest one: still fenced until they have for 2 s.
        for _ in 0..39 {
            mono.advance(Duration::from_millis(50));
            r += 50_100_000;
            probe_and_answer(&c, &mono, 1, 3, ts(r));
            assert_eq!(c.now().unwrap().status, ClockStatus::Unknown);
        }
        mono.advance(Duration::from_millis(50));
        r += 50_100_000;
        probe_and_answer(&c, &mono, 1, 3, ts(r));
        let now = c.now().unwrap();
        assert_eq!(now.status, ClockStatus::Synchronized, "rejoined after 2 s of agreement");
        assert!(now.interval.contains(ts(r)));
        assert_eq!(c.fence_reason(), None);
        // A new term's leader: one answer, even 3 s later, is no agreement (the window starts
        // again at a change of term), and the fence keeps it from campaigning for 2 s after the
        // contradiction.
        mono.advance(Duration::from_millis(50));
        probe_and_answer(&c, &mono, 1, 3, ts(r + 80_000_000));
        assert!(c.fence_reason().is_some() && !c.may_campaign());
        mono.advance(Duration::from_secs(3));
        assert!(c.may_campaign(), "contradictions stopped 3 s ago");
        c.follow(4, Some(3), false);
        probe_and_answer(&c, &mono, 3, 4, ts(r + 90_000_000_000));
        assert!(c.fence_reason().is_some(), "one answer of the new term");
        assert_eq!(c.now().unwrap().status, ClockStatus::Unknown);
        // Becoming leader ends a follower's fence at once (its readings rest on its own
        // oscillator).
        c.follow(5, Some(2), true);
        c.lead(5, Duration::from_secs(1));
        assert_eq!(c.fence_reason(), None);
    }

    #[test]
    fn a_majority_of_reports_convicts_the_leader_until_it_agrees_with_a_later_one() {
        let (c, mono) = clock(1);
        let voters = [1, 2, 3];
        c.follow(5, Some(1), true);
        c.lead(5, Duration::from_secs(1));
        let h = c.horizon_due().unwrap();
        c.horizon_committed(5, h);
        assert_eq!(c.now().unwrap().status, ClockStatus::Synchronized);
        // One follower reports: a minority, which may be its own oscillator.
        c.answer(2, Some(5));
        c.answer(3, Some(4)); // about another term
        assert_eq!(c.convict(|| voters.to_vec()), None);
        // A report older than REPORT_TTL no longer counts; one withdrawn neither.
        mono.advance(REPORT_TTL + Duration::from_millis(1));
        c.answer(3, Some(5));
        assert_eq!(c.convict(|| voters.to_vec()), None, "node 2's report is stale");
        c.answer(2, Some(5));
        c.answer(3, None);
        assert_eq!(c.convict(|| voters.to_vec()), None, "node 3 withdrew its report");
        c.answer(3, Some(5));
        let (why, accusers) = c.convict(|| voters.to_vec()).expect("two of three voters");
        assert!(why.contains("[2, 3]"), "{why}");
        assert_eq!(accusers, vec![2, 3]);
        assert_eq!(c.now().unwrap().status, ClockStatus::Unknown, "no reference any more");
        assert_eq!(c.issue_limit(5), None);
        assert!(c.convicted() && !c.may_campaign());
        assert_eq!(c.convict(|| voters.to_vec()), None, "convicted once");
        // Following a later leader whose first answer comes 3 s later: one answer is no
        // agreement; its answers contradicting each other (this oscillator is the broken one)
        // do not turn the conviction into a follower's fence; it stays convicted until a
        // later leader's answers have agreed for 2 s.
        c.follow(5, None, false);
        c.follow(6, Some(2), false);
        mono.advance(Duration::from_secs(3));
        let mut r = WALL + 90_000_000_000;
        probe_and_answer(&c, &mono, 2, 6, ts(r));
        assert!(c.convicted(), "one answer is no agreement");
        mono.advance(Duration::from_millis(50));
        probe_and_answer(&c, &mono, 2, 6, ts(r + 60_000_000)); // R moved 10 ms too far
        assert!(c.convicted() && !c.may_campaign(), "still convicted, not merely contradicted");
        assert!(c.fence_reason().unwrap().contains("as leader of term 5"));
        r += 60_000_000;
        for _ in 0..39 {
            mono.advance(Duration::from_millis(50));
            r += 50_100_000;
            probe_and_answer(&c, &mono, 2, 6, ts(r));
            assert!(c.convicted());
        }
        mono.advance(Duration::from_millis(50));
        r += 50_100_000;
        probe_and_answer(&c, &mono, 2, 6, ts(r));
        assert!(!c.convicted(), "rejoined");
        assert_eq!(c.now().unwrap().status, ClockStatus::Synchronized);
        assert!(c.may_campaign());
        // With the mutation, nothing convicts.
        let mono = Arc::new(ManualMono::default());
        let options = ClusterClockOptions {
            unsafe_mutation: Some(ClusterClockMutation::NeverConvict),
            ..Default::default()
        };
        let c = ClusterClock::new(1, options, mono, Box::new(|| Timestamp::from_nanos(WALL)));
        c.follow(5, Some(1), true);
        c.lead(5, Duration::from_secs(1));
        c.answer(2, Some(5));
        c.answer(3, Some(5));
        assert_eq!(c.convict(|| voters.to_vec()), None);
    }

    #[test]
    fn a_suspended_follower_accuses_nobody() {
        let (c, mono) = clock(2);
        let boot = Arc::new(ManualMono::default());
        let witness = boot.clone();
        let c = c.with_suspend_witness(Box::new(move || witness.elapsed()));
        c.follow(3, Some(1), false);
        let r = WALL + 5_000_000_000;
        probe_and_answer(&c, &mono, 1, 3, ts(r));
        assert_eq!(c.now().unwrap().status, ClockStatus::Synchronized);
        // The machine sleeps 3 s with a probe in flight: the oscillator stands still, the
        // leader's R does not, and its answer arrives after the resume.
        let frame = c.probe().0.unwrap();
        let ClockMessage::Probe { probe, .. } = frame.message else { panic!() };
        boot.advance(Duration::from_secs(3));
        mono.advance(Duration::from_micros(100));
        c.on_reply(1, probe, point(ts(r + 3_000_000_000)), Some(3));
        assert_eq!(c.fence_reason(), None, "a suspend is not a contradiction");
        let (frame, _) = c.probe();
        let Some(ClockFrame { message: ClockMessage::Probe { contradicts, .. }, .. }) = frame
        else {
            panic!()
        };
        assert_eq!(contradicts, None, "nothing reported");
        assert_eq!(c.now().unwrap().status, ClockStatus::Unknown, "no reading this term");
    }

    #[test]
    fn the_ready_wait_covers_two_oscillators_drifting_apart() {
        let (c, _) = clock(1);
        // 1 s · (1 + 200 ppm) / (1 − 200 ppm), rounded up.
        assert_eq!(c.ready_wait(Duration::from_secs(1)), Duration::from_nanos(1_000_400_081));
    }

    proptest! {
        /// The member's interval contains the leader's `R` whenever it is read, for any drift of
        /// either monotonic clock within `RHO` and any delays each way.
        #[test]
        fn a_members_interval_contains_the_leaders_reference(
            leader_ppm in -(RHO as i64)..=(RHO as i64),
            member_ppm in -(RHO as i64)..=(RHO as i64),
            probes in proptest::collection::vec(
                (0u64..2_000_000_000, 0u64..5_000_000, 0u64..5_000_000),
                1..12,
            ),
            later in proptest::collection::vec(0u64..3_000_000_000, 1..8),
        ) {
            let leader = Oscillator { ppm: leader_ppm, start: 7_000_000_000 };
            let member = Oscillator { ppm: member_ppm, start: 123_456_789 };
            let reference = Reference { term: 4, base: ts(1_700_000_000_000_000_000), at: leader.read(0) };
            let r = |t: u64| reference.at(leader.read(t));
            let mut estimate = LeaderEstimate::new(RHO);
            estimate.follow(4);
            let mut last = 0;
            for (send, out, back) in probes {
                let answered = send + out;
                let arrived = answered + back;
                let at = r(answered);
                estimate.record(LeaderAnswer {
                    term: 4,
                    sent: member.read(send),
                    received: member.read(arrived),
                    leader: TimeInterval::new(at, at),
                });
                last = last.max(arrived);
            }
            for dt in later {
                let t = last + dt;
                let i = estimate.interval(member.read(t)).expect("honest answers agree");
                prop_assert!(i.contains(r(t)), "R = {} outside {:?} at t = {}", r(t), i, t);
            }
        }

        /// A new leader that starts from its estimate's upper edge plus the margin stays at or
        /// ahead of the old reference until its first timestamp may be issued: `R` goes forward
        /// at the switch.
        #[test]
        fn a_new_leader_starts_ahead_of_the_old_reference(
            old_ppm in -(RHO as i64)..=(RHO as i64),
            new_ppm in -(RHO as i64)..=(RHO as i64),
            out in 0u64..5_000_000,
            back in 0u64..5_000_000,
            since in 0u64..2_000_000_000,
            at in prop_oneof![0u64..1_500_000_000, Just(1_500_000_000u64)],
        ) {
            let lease = Duration::from_secs(1);
            let max_commit_wait = Duration::from_millis(500);
            let old = Oscillator { ppm: old_ppm, start: 42 };
            let new = Oscillator { ppm: new_ppm, start: 9_999 };
            let old_ref = Reference { term: 4, base: ts(1_700_000_000_000_000_000), at: old.read(0) };
            // The new leader's last probe of the old one, then its election `since` later.
            let send = 1_000_000;
            let answered = send + out;
            let r_answer = old_ref.at(old.read(answered));
            let mut estimate = LeaderEstimate::new(RHO);
            estimate.follow(4);
            estimate.record(LeaderAnswer {
                term: 4,
                sent: new.read(send),
                received: new.read(answered + back),
                leader: TimeInterval::new(r_answer, r_answer),
            });
            let elected = answered + back + since;
            let start = start_reference(
                5,
                estimate.interval(new.read(elected)),
                Timestamp::ZERO,
                handover_margin(RHO, lease, max_commit_wait),
                new.read(elected),
            );
            // Any moment up to a lease and a commit wait after the election, counted on the
            // new leader's clock (which may run slow: more true time passes).
            let rate = u128::try_from(1_000_000 + new_ppm).unwrap();
            let t = elected + u64::try_from(u128::from(at) * 1_000_000 / rate).unwrap();
            let (r_old, r_new) = (old_ref.at(old.read(t)), start.at(new.read(t)));
            prop_assert!(r_new >= r_old, "R went back at the switch: {r_new} < {r_old}");
        }
    }
}
