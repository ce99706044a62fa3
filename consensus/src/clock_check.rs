//! Peer clock checks: every member measures every other member's clock over the network
//! (Cristian's method), finds the largest set of members whose clocks can all be right at once
//! (Marzullo's algorithm), and **fences itself** when it is not in that set.
//!
//! # Why a node needs its peers
//!
//! A clock that lies *consistently* cannot be seen from inside. A node restarted with its
//! clock 250 ms off while its ClockBound segment claims 50 µs reads intervals that are narrow,
//! `Synchronized` and steady: every local check passes. Only another clock can tell, and only
//! if the two are compared with an error bar that honest clocks never exceed.
//!
//! # Cristian's interval
//!
//! Member A probes member B: it reads its own clock at monotonic time `t0` (reading `r0`),
//! sends the probe; B answers at once with its own reading `rB`; the answer arrives at `t1`,
//! where A reads again (`r1`). B's reading was taken at some true time `T` after the probe left
//! and before the answer arrived: in true time, `T ∈ [true(t0), true(t1)]`. If A's clock tells
//! the truth, `r0.earliest ≤ true(t0)` and `true(t1) ≤ r1.latest`, so
//!
//! ```text
//!     T ∈ [e0, l1]          (e0 = r0.earliest, l1 = r1.latest)
//! ```
//!
//! and if B's clock tells the truth, `T ∈ [rB.earliest, rB.latest]`. Two truthful clocks
//! therefore always give intersecting intervals, however long or lopsided the round trip, and a
//! probe whose intervals do not intersect proves that at least one of the two lies. Nothing is
//! assumed about the network's delays; they only widen `[e0, l1]`.
//!
//! For the comparison of many clocks A maps each answer into its own frame: the offset of true
//! time from A's midpoint. A's midpoint at `T` lies between `m0 = mid(r0)` and `m1 = mid(r1)`,
//! so B's answer says `T − mid_A(T) ∈ [rB.earliest − m1, rB.latest − m0]`, an interval centred
//! on the **offset estimate** `mid(rB) − (m0 + m1)/2` with half-width `ε_B + rtt/2`. A's own
//! reading says `T − mid_A(T) ∈ [−ε_A, ε_A]`. The **uncertainty** reported for the pair is
//! `rtt/2 + ε_B + ε_A`: two honest clocks never differ by more.
//!
//! # Marzullo's intersection, by majority
//!
//! From its own interval and those of every voter heard from within
//! [`ClockCheckOptions::sample_ttl`], a member computes the points covered by the most
//! intervals ([`marzullo`]). The members covering such a point form a *consistent set*: all of
//! them can be right at once. Then:
//!
//! - if it heard from fewer than a majority of the voters (itself included), it decides
//!   nothing new and keeps its current state ([`Verdict::Undecided`]);
//! - if a consistent set holds a majority of the voters and the member is in every largest
//!   consistent set, it **agrees** ([`Verdict::Agrees`]);
//! - otherwise it **disagrees** ([`Verdict::Disagrees`]) and fences itself: either it lies
//!   outside the majority, or no majority agrees on anything (then every member fences, and the
//!   cluster issues nothing until it does: unavailable, but not wrong).
//!
//! Why a majority: with at most a minority of liars, the truthful majority's intervals all
//! contain true time, so the largest consistent set holds at least a majority; a liar whose
//! interval misses true time cannot be in every such set (it shares no point with the truthful
//! set's common region unless its interval happens to overlap it, in which case its error is
//! within its claimed bound plus the measurement's uncertainty and harmless to the degree it
//! was measured). Why keep state without a majority: a minority's view cannot tell a liar from
//! an honest member (two clocks that disagree: which one lies?), and a node that cannot reach a
//! majority can neither commit nor renew a lease nor receive closed timestamps, so it can do no
//! harm by not deciding; a node starts **fenced** ([`Fence::Unchecked`]) so that "keeping its
//! state" never means trusting an unchecked clock after a restart.
//!
//! What is not covered: a majority of liars (they outvote the truth, as every majority
//! algorithm is outvoted), and a lie that starts while the node runs, during the time until
//! the next probe round shows it (up to one `probe_interval` plus a round trip; the local step
//! guard is what sees a step).
//!
//! # Answers age, and clocks get corrected
//!
//! A verdict weighs answers up to [`ClockCheckOptions::sample_ttl`] old against this member's
//! reading *now*, and in between its clock may have been corrected: a time service slews a
//! clock by up to 83 ms a second, and the slew moves `CLOCK_MONOTONIC` as well as the wall
//! clock, so no local clock can say how far this member's frame has moved since. An answer
//! kept as measured is then off by the correction, and an honest member just corrected would be
//! judged against its own past error (the consistency suite's drift experiment fenced truthful
//! nodes that way, clocks corrected every 2 s). What can be said without any clock: an honest
//! member's error was within its bound `ε_then` when the answer arrived and is within `ε_now`
//! now, so its frame moved by at most `ε_then + ε_now`. A kept answer `T − mid(T) ∈ [lo, hi]`
//! therefore says `T_now − mid(now) ∈ [lo − ε_then − ε_now, hi + ε_then + ε_now]`: true
//! whenever the answer was, whatever the clock did in between, and no timing of the readings
//! enters it. The price is sensitivity: a liar is seen once it is off by about four bounds plus
//! half a round trip, instead of two.
//!
//! # A worked example
//!
//! Three voters, bounds 50 µs. Node 3 restarted with its clock 250 ms behind. Node 3 probes
//! node 1: `r0 = [99.999 950, 100.000 050]` (its own, wrong, time), the answer arrives 2 ms
//! later, `r1 = [100.001 950, 100.002 050]`, node 1 answered `[100.250 950, 100.251 050]`.
//! `[e0, l1] = [99.999 950, 100.002 050]` and node 1's interval do not intersect: Cristian's
//! check fails. In node 3's frame node 1 says `T − mid₃ ∈ [+248.9 ms, +251.1 ms]`, node 2 says
//! about the same, node 3 itself says `[−0.05 ms, +0.05 ms]`. Marzullo: the point +250 ms is
//! covered by {1, 2}, a majority of 3; node 3 is outside it and fences itself:
//!
//! ```text
//! WARN clock fenced: this clock disagrees with the majority {1, 2} (offsets: n1 +250.0ms ±1.1ms, n2 +250.0ms ±1.2ms)
//! ```
//!
//! Nodes 1 and 2 each see {1, 2} as the largest consistent set and themselves in it. Once node
//! 3's clock is corrected, its next probes agree, and it lifts the fence and logs so.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt::Write as _;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use boundkv_clockbound::{ClockReading, Timestamp};

use crate::verified_clock::{Frame, FrameClaim, covered_hull};

/// How many recent claims the verified range keeps per peer (the default `sample_ttl` holds ten
/// probe rounds' worth).
const MAX_CLAIMS_PER_PEER: usize = 16;

/// Settings of the peer clock checks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClockCheckOptions {
    /// How often a member probes every other member. Default 100 ms. The verified range ages at
    /// `max_drift_ppm` from the freshest answer (see [`crate::verified_clock`]): at most 100 µs a
    /// side between rounds at 1000 ppm, which commit wait hides behind replication. Probing
    /// more often narrows it but costs wakeups on both ends of every link: measured with
    /// `bench/ab.sh` against the code before the checks (10 rounds of 64-client puts each, one
    /// machine), 20 ms probes cost 7 % of the throughput, 100 ms 4 %, and none 1 %.
    pub probe_interval: Duration,
    /// How long a peer's answer counts as "heard from recently". Default 1 s.
    pub sample_ttl: Duration,
    /// The fastest a clock's oscillator may drift (its monotonic and wall clocks together), in
    /// parts per million, whatever its segment claims: how fast the peers' answers age in the
    /// verified range (see [`crate::verified_clock`]; moves of the wall clock against the
    /// monotonic clock are measured, not assumed). Default 1000 ppm, 20 times a quartz
    /// oscillator's usual tolerance and twice the 500 ppm a Linux kernel lets a time service
    /// set a clock's frequency to.
    pub max_drift_ppm: u32,
    /// **Mutation switch**: when `true` the checks still measure (and show what they
    /// measure) but never fence, and readings are not widened to the verified range. Unsafe: a
    /// lying clock is trusted.
    pub unsafe_never_fence: bool,
    /// **Mutation switch**: when `true` the checks fence, but readings are not widened to the
    /// verified range. Unsafe: a lie smaller than the checks resolve is trusted.
    pub unsafe_no_widening: bool,
}

impl Default for ClockCheckOptions {
    fn default() -> Self {
        ClockCheckOptions {
            probe_interval: Duration::from_millis(100),
            sample_ttl: Duration::from_secs(1),
            max_drift_ppm: 1000,
            unsafe_never_fence: false,
            unsafe_no_widening: false,
        }
    }
}

/// What travels between two members for a clock check: not a Raft message, but carried by the
/// same transport ([`crate::transport::Transport::send_clock`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClockFrame {
    /// The sender.
    pub from: u64,
    /// The receiver.
    pub to: u64,
    /// A probe or its answer.
    pub message: ClockMessage,
}

impl ClockFrame {
    /// `from`'s answer to `to`'s probe `probe`, with `from`'s usable reading (if any).
    pub fn reply(from: u64, to: u64, probe: u64, reading: Option<ClockReading>) -> ClockFrame {
        ClockFrame { from, to, message: ClockMessage::Reply { probe, reading, leads: None } }
    }
}

/// A probe or its answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ClockMessage {
    /// "What time is it?", with the prober's own reading when it sent it (for the trace and
    /// for humans: the answer does not depend on it).
    Probe {
        /// The prober's id for this probe.
        probe: u64,
        /// The prober's reading at `t0`.
        sent: Option<ClockReading>,
        /// Under the cluster clock (`crate::cluster_clock`): the term of the leader probed, if
        /// that leader's answers contradicted each other (the prober is fenced for it). A
        /// majority of such reports convicts the leader. `None` under every other source.
        contradicts: Option<u64>,
    },
    /// The answer, taken the moment the probe was handled: `None` if the answering clock is
    /// unusable (it then claims nothing).
    Reply {
        /// The probe answered.
        probe: u64,
        /// The answerer's reading.
        reading: Option<ClockReading>,
        /// Under the cluster clock (`crate::cluster_clock`): the term the answerer leads, when
        /// `reading` is that term's reference `R` itself. `None` otherwise, and always under
        /// every other clock source.
        leads: Option<u64>,
    },
    /// The closed timestamp side transport (see `boundkv_txn`'s replica docs): not a clock
    /// check, but time-critical traffic that must not wait behind a log write either, so it
    /// rides the same frames and is handed to the handler a member registered
    /// ([`crate::node::NodeHandle::on_closed_timestamps`]) the moment it arrives.
    ///
    /// A leader's promise: no commit at or below `closed` will ever apply after the entry at
    /// `applied` (every commit at or below it is applied at or before that index).
    Closed {
        /// The term the sender leads.
        term: u64,
        /// The closed timestamp.
        closed: Timestamp,
        /// The sender's applied index when it closed `closed` (a committed index).
        applied: u64,
    },
    /// A member asks the leader to close at least `ts` (a follower read waits on it); the
    /// answer is a [`ClockMessage::Closed`].
    CloseRequest {
        /// The timestamp the member wants closed.
        ts: Timestamp,
    },
}

impl ClockMessage {
    /// Whether this message belongs to the closed timestamp side transport rather than to the
    /// clock checks.
    pub fn is_closed_timestamps(&self) -> bool {
        matches!(self, ClockMessage::Closed { .. } | ClockMessage::CloseRequest { .. })
    }
}

/// What one member measured of another, from its latest answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerClock {
    /// The peer's midpoint minus this member's midpoint at the peer's reading (estimated as the
    /// mean of its own midpoints at `t0` and `t1`), in signed nanoseconds.
    pub offset_nanos: i64,
    /// How far two honest clocks may differ in this measurement: `rtt/2` plus both bounds.
    pub uncertainty: Duration,
    /// The probe's round trip on the monotonic clock.
    pub round_trip: Duration,
    /// Whether Cristian's check passed: the peer's interval meets `[e0, l1]`.
    pub consistent: bool,
    /// When the answer arrived (monotonic).
    pub at: Instant,
    /// The prober's bound when the answer arrived (the larger of its two readings').
    own_bound: Duration,
    /// The peer's claim in this member's frame when the answer arrived: `T − mid(T) ∈ [lo, hi]`,
    /// nanoseconds.
    lo: i64,
    hi: i64,
    /// The peer's claim for the verified range, as of this member's reading when the answer
    /// arrived, true whether or not this member's clock is honest (see [`measure`]).
    pub claim: FrameClaim,
}

impl PeerClock {
    /// The peer's claim carried to now, in the frame of this member's reading `mine` (see
    /// "Answers age"): `T_now − mid(now) ∈ [lo, hi]`, nanoseconds.
    fn claim_now(&self, mine: &ClockReading) -> (i64, i64) {
        let widen = i64::try_from((self.own_bound + mine.bound()).as_nanos()).unwrap_or(i64::MAX);
        (self.lo.saturating_sub(widen), self.hi.saturating_add(widen))
    }
}

fn clamp(x: i128) -> i64 {
    i64::try_from(x).unwrap_or(if x < 0 { i64::MIN } else { i64::MAX })
}

/// Where this member's fence stands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fence {
    /// No verdict yet since the node started: treated as fenced.
    Unchecked,
    /// The clock agrees with a majority.
    Agrees,
    /// The clock disagrees; why.
    Fenced(String),
}

impl Fence {
    /// Why the node is fenced, if it is.
    pub fn reason(&self) -> Option<String> {
        match self {
            Fence::Unchecked => {
                Some("no peer clock check has reached a majority of the voters yet".into())
            }
            Fence::Agrees => None,
            Fence::Fenced(why) => Some(why.clone()),
        }
    }
}

/// A verdict of one evaluation (see the module docs).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Fewer than a majority of the voters heard from recently: keep the current state.
    Undecided,
    /// In every largest consistent set, which holds a majority.
    Agrees,
    /// Outside the consistent majority, or no majority agrees; why.
    Disagrees(String),
}

/// A change of the fence, for the node to act on (and log).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FenceChange {
    /// The node just fenced itself; why.
    Fenced(String),
    /// The fence was lifted (or the first check agreed).
    Lifted {
        /// Whether it had been fenced by a disagreement (not just unchecked since start).
        was_disagreeing: bool,
    },
}

/// A snapshot of what a member knows of the clocks, for status pages and metrics.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClockCheckReport {
    /// Whether checks run at all.
    pub enabled: bool,
    /// Why this member is fenced (`None`: it is not).
    pub fenced: Option<String>,
    /// Whether fencing is switched off (the `unsafe_never_fence` mutation).
    pub never_fence: bool,
    /// Every peer's latest measurement: offset (ns), uncertainty, round trip, consistent, age.
    pub peers: BTreeMap<u64, PeerClockReport>,
}

/// One peer in a [`ClockCheckReport`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerClockReport {
    /// See [`PeerClock::offset_nanos`].
    pub offset_nanos: i64,
    /// See [`PeerClock::uncertainty`].
    pub uncertainty: Duration,
    /// See [`PeerClock::round_trip`].
    pub round_trip: Duration,
    /// See [`PeerClock::consistent`].
    pub consistent: bool,
    /// How long ago the answer arrived.
    pub age: Duration,
}

/// A probe in flight.
struct Outstanding {
    to: u64,
    t0: Instant,
    r0: ClockReading,
    f0: Frame,
}

/// One member's clock checker: the probes it sends, the answers it keeps, its fence. Pure: the
/// node hands it the time and clock readings, and sends what it returns.
pub struct ClockChecker {
    id: u64,
    options: ClockCheckOptions,
    next_probe: Instant,
    next_probe_id: u64,
    outstanding: BTreeMap<u64, Outstanding>,
    samples: BTreeMap<u64, PeerClock>,
    /// Each peer's claims for the verified range from the last `sample_ttl` (when each
    /// arrived): their intersection, carried, is the one used (see
    /// [`ClockChecker::verified_range`]).
    claims: BTreeMap<u64, VecDeque<(Instant, FrameClaim)>>,
    fence: Fence,
    /// A fence set by a layer above for a reason of policy, not measurement (a member whose
    /// `--leap` policy differs from the majority's, inside a leap window); why.
    policy_fence: Option<String>,
}

impl ClockChecker {
    /// A checker for member `id`, probing first at `now`; it starts [`Fence::Unchecked`].
    pub fn new(id: u64, options: ClockCheckOptions, now: Instant) -> Self {
        ClockChecker {
            id,
            options,
            next_probe: now,
            next_probe_id: 1,
            outstanding: BTreeMap::new(),
            samples: BTreeMap::new(),
            claims: BTreeMap::new(),
            fence: Fence::Unchecked,
            policy_fence: None,
        }
    }

    /// Sets (or, with `None`, lifts) a fence for a reason of policy, whatever the measurements
    /// say; returns the change of the node's fenced state, if any.
    pub fn set_policy_fence(&mut self, why: Option<String>) -> Option<FenceChange> {
        let before = self.is_fenced();
        self.policy_fence = why.clone();
        match (before, self.is_fenced(), why) {
            (false, true, Some(why)) => Some(FenceChange::Fenced(why)),
            (true, false, _) => Some(FenceChange::Lifted { was_disagreeing: true }),
            _ => None,
        }
    }

    /// Why the node is fenced, if it is: the policy fence first, then the measurements'.
    pub fn fence_reason(&self) -> Option<String> {
        self.policy_fence.clone().or_else(|| self.fence.reason())
    }

    /// When the next probe round is due.
    pub fn next_probe(&self) -> Instant {
        self.next_probe
    }

    /// The fence as it stands.
    pub fn fence(&self) -> &Fence {
        &self.fence
    }

    /// Whether the node must behave as fenced (the fence, unless fencing is switched off).
    pub fn is_fenced(&self) -> bool {
        !self.options.unsafe_never_fence
            && (self.fence != Fence::Agrees || self.policy_fence.is_some())
    }

    /// The latest measurement of each peer.
    pub fn samples(&self) -> &BTreeMap<u64, PeerClock> {
        &self.samples
    }

    /// A probe round, if due at `now`: one probe per peer in `peers`, stamped with this
    /// member's usable reading `r0` (and its [`Frame`]) taken before sending (no probes without
    /// one: the answers could not be compared).
    pub fn probes(
        &mut self,
        now: Instant,
        r0: Option<(ClockReading, Frame)>,
        peers: &[u64],
    ) -> Vec<ClockFrame> {
        if now < self.next_probe {
            return Vec::new();
        }
        self.next_probe = now + self.options.probe_interval;
        // Probes never answered (lost, or the peer is down) are forgotten after the ttl.
        let ttl = self.options.sample_ttl;
        self.outstanding.retain(|_, p| now.saturating_duration_since(p.t0) <= ttl);
        let Some((r0, f0)) = r0 else { return Vec::new() };
        let mut frames = Vec::with_capacity(peers.len());
        for &to in peers.iter().filter(|&&p| p != self.id) {
            let probe = self.next_probe_id;
            self.next_probe_id += 1;
            self.outstanding.insert(probe, Outstanding { to, t0: now, r0, f0 });
            frames.push(ClockFrame {
                from: self.id,
                to,
                message: ClockMessage::Probe { probe, sent: Some(r0), contradicts: None },
            });
        }
        frames
    }

    /// Records `from`'s answer to `probe`, arriving at `t1` when this member reads `r1` (at its
    /// [`Frame`]).
    /// Returns whether it was a measurement (an answer to a probe still outstanding, from the
    /// peer it went to, with both clocks usable).
    pub fn on_reply(
        &mut self,
        from: u64,
        probe: u64,
        peer: Option<ClockReading>,
        t1: Instant,
        r1: Option<(ClockReading, Frame)>,
    ) -> bool {
        if self.outstanding.get(&probe).is_none_or(|o| o.to != from) {
            return false;
        }
        let Some(out) = self.outstanding.remove(&probe) else { return false };
        let (Some(peer), Some((r1, f1))) = (peer, r1) else {
            // The peer claims nothing (or we cannot compare): it no longer counts as heard.
            if peer.is_none() {
                self.samples.remove(&from);
            }
            return false;
        };
        let ends = Probe { r0: &out.r0, f0: out.f0, r1: &r1, f1 };
        let rtt = t1.saturating_duration_since(out.t0);
        match measure(ends, &peer, rtt, t1, self.options.max_drift_ppm) {
            Some(sample) => {
                let ttl = self.options.sample_ttl;
                let claims = self.claims.entry(from).or_default();
                claims.retain(|(at, _)| t1.saturating_duration_since(*at) <= ttl);
                if claims.len() >= MAX_CLAIMS_PER_PEER {
                    claims.pop_front();
                }
                claims.push_back((t1, sample.claim));
                self.samples.insert(from, sample);
                true
            }
            None => false,
        }
    }

    /// The verdict at `now` for this member with its usable reading `mine`, among `voters`.
    pub fn verdict(&self, now: Instant, mine: Option<&ClockReading>, voters: &[u64]) -> Verdict {
        let Some(mine) = mine else { return Verdict::Undecided };
        if voters.is_empty() {
            return Verdict::Undecided;
        }
        let voter_set: BTreeSet<u64> = voters.iter().copied().collect();
        let quorum = voter_set.len() / 2 + 1;
        let b = i64::try_from(mine.bound().as_nanos()).unwrap_or(i64::MAX);
        let mut sources = vec![Source { id: self.id, lo: -b, hi: b }];
        for (&id, s) in &self.samples {
            if voter_set.contains(&id)
                && now.saturating_duration_since(s.at) <= self.options.sample_ttl
            {
                let (lo, hi) = s.claim_now(mine);
                sources.push(Source { id, lo, hi });
            }
        }
        let heard = sources.iter().filter(|s| voter_set.contains(&s.id)).count();
        if heard < quorum {
            return Verdict::Undecided;
        }
        let agreement = marzullo(&sources);
        let votes = |members: &BTreeSet<u64>| members.intersection(&voter_set).count();
        let best = agreement.regions.iter().map(|r| votes(&r.members)).max().unwrap_or(0);
        let largest: Vec<&Region> =
            agreement.regions.iter().filter(|r| votes(&r.members) == best).collect();
        if best >= quorum && largest.iter().all(|r| r.members.contains(&self.id)) {
            return Verdict::Agrees;
        }
        let mut why = if best < quorum {
            format!(
                "no majority of the {} voters agrees on the time (the largest consistent set holds {best})",
                voter_set.len()
            )
        } else {
            let majority = largest
                .iter()
                .find(|r| !r.members.contains(&self.id))
                .map(|r| &r.members)
                .unwrap_or(&largest[0].members);
            format!("this clock disagrees with the majority {majority:?}")
        };
        why.push_str(" (offsets:");
        for (&id, s) in &self.samples {
            if voter_set.contains(&id)
                && now.saturating_duration_since(s.at) <= self.options.sample_ttl
            {
                let _ = write!(
                    why,
                    " n{id} {:+.1}ms ±{:.1}ms{}",
                    s.offset_nanos as f64 / 1e6,
                    s.uncertainty.as_secs_f64() * 1e3,
                    if s.consistent { "" } else { " inconsistent" }
                );
            }
        }
        why.push(')');
        Verdict::Disagrees(why)
    }

    /// The verified range at `now` for this member's usable reading `mine` (taken at
    /// `frame`), among `voters` (see [`crate::verified_clock`]): the hull of the points covered
    /// by at least `k − f` of the `k` sources (its own interval and the claim of each voter peer
    /// heard from within [`ClockCheckOptions::sample_ttl`]: the intersection of its claims from
    /// then, each carried to `mine`; a peer whose claims contradict each other lied, so it is
    /// left out and counted among the `f`),
    /// `f = (voters − 1)/2` the liars the majority rule tolerates (one more if this member is
    /// not a voter itself), relative to `mine`'s midpoint. Only recent answers count: the rule
    /// tolerates `f` liars at a time, and a claim kept from a peer that lied once and was
    /// corrected since would be one more. `None` if that proves nothing (too few sources) or no
    /// point is covered that often.
    pub fn verified_range(
        &self,
        now: Instant,
        mine: &ClockReading,
        frame: Frame,
        voters: &[u64],
    ) -> Option<FrameClaim> {
        let voter_set: BTreeSet<u64> = voters.iter().copied().collect();
        let b = i64::try_from(mine.bound().as_nanos()).unwrap_or(i64::MAX);
        let mut sources = vec![(-b, b)];
        let mut liars =
            voter_set.len().saturating_sub(1) / 2 + usize::from(!voter_set.contains(&self.id));
        for (id, claims) in &self.claims {
            if !voter_set.contains(id) || *id == self.id {
                continue;
            }
            // Every recent claim of an honest peer holds, so all of them at once: their
            // intersection, each carried to `frame`. It is narrower than any one claim (one
            // round trip's fast way out meets another's fast way back), so load that slows
            // some round trips widens it little.
            let intersection = claims
                .iter()
                .filter(|(at, _)| now.saturating_duration_since(*at) <= self.options.sample_ttl)
                .map(|(_, c)| c.carried(frame, self.options.max_drift_ppm))
                .reduce(|(lo1, hi1), (lo2, hi2)| (lo1.max(lo2), hi1.min(hi2)));
            match intersection {
                // Two of its claims contradict each other: this peer lied in the window, so it
                // is one of the liars the rule allows, and the others are one fewer.
                Some((lo, hi)) if lo > hi => {
                    if liars == 0 {
                        // More self-contradicting peers than the rule allows liars: more likely
                        // this member's own frames are wrong (an oscillator past `ρ`) than that
                        // a majority lies. Prove nothing; the last range stays, widening. (Each
                        // round would say it again: debug, not warn.)
                        tracing::debug!(
                            node = self.id,
                            peer = id,
                            "verified range: more peers contradict their own answers than the majority rule \
                             allows; keeping the last range"
                        );
                        return None;
                    }
                    liars -= 1;
                }
                Some(claim) => sources.push(claim),
                None => {}
            }
        }
        let (lo, hi) = covered_hull(&sources, sources.len().saturating_sub(liars))?;
        Some(FrameClaim { lo, hi, frame })
    }

    /// Forgets the answers and the probes in flight: this member's clock is being re-anchored
    /// and may jump, and the verdicts weigh answers as honest clocks move (see "Answers age"),
    /// not as a jump does. The fence stays as it is. (The verified range needs no such care:
    /// its frames count every jump.)
    pub fn forget_frame(&mut self) {
        self.samples.clear();
        self.outstanding.clear();
    }

    /// Applies a verdict: returns the change of the fence, if any.
    pub fn apply(&mut self, verdict: Verdict) -> Option<FenceChange> {
        match verdict {
            Verdict::Undecided => None,
            Verdict::Agrees => {
                let was = std::mem::replace(&mut self.fence, Fence::Agrees);
                match was {
                    Fence::Agrees => None,
                    Fence::Unchecked => Some(FenceChange::Lifted { was_disagreeing: false }),
                    Fence::Fenced(_) => Some(FenceChange::Lifted { was_disagreeing: true }),
                }
            }
            Verdict::Disagrees(why) => match &self.fence {
                Fence::Fenced(_) => None,
                Fence::Unchecked | Fence::Agrees => {
                    self.fence = Fence::Fenced(why.clone());
                    Some(FenceChange::Fenced(why))
                }
            },
        }
    }

    /// A report of the measurements and the fence at `now`.
    pub fn report(&self, now: Instant) -> ClockCheckReport {
        ClockCheckReport {
            enabled: true,
            fenced: self.fence_reason(),
            never_fence: self.options.unsafe_never_fence,
            peers: self
                .samples
                .iter()
                .map(|(&id, s)| {
                    (
                        id,
                        PeerClockReport {
                            offset_nanos: s.offset_nanos,
                            uncertainty: s.uncertainty,
                            round_trip: s.round_trip,
                            consistent: s.consistent,
                            age: now.saturating_duration_since(s.at),
                        },
                    )
                })
                .collect(),
        }
    }
}

/// The prober's two readings of one probe, each with its [`Frame`]: `r0` before sending, `r1`
/// after the answer arrived.
#[derive(Clone, Copy, Debug)]
pub struct Probe<'a> {
    /// The reading before sending.
    pub r0: &'a ClockReading,
    /// Its frame.
    pub f0: Frame,
    /// The reading after the answer arrived.
    pub r1: &'a ClockReading,
    /// Its frame.
    pub f1: Frame,
}

/// Cristian's measurement from the prober's readings (`r0` at `t0`, `r1` at `t1`, after `rtt`)
/// and the peer's reading. `None` if the prober's own clock went backwards between its two
/// readings (the interval would be inverted; the step guard's business, not a measurement).
///
/// The claim for the verified range ([`PeerClock::claim`]) is built from the readings alone,
/// so that it holds whether or not the prober's clock tells the truth: if the peer's is honest,
/// its reading was taken at a true time `T` with `pe ≤ T ≤ pl`, after the prober's first
/// reading (true time `T0 ≤ T`) and before its second (`T1 ≥ T`). So `T1 − m1 ≥ pe − m1`, and
/// `T0 − m0 ≤ pl − m0`; between the two readings the prober's error moved by at most `E`
/// ([`Frame::error_change_since`]), so `T1 − m1 ≤ pl − m0 + E`. As of `r1`:
/// `T1 − m1 ∈ [pe − m1, pl − m0 + E]`.
pub fn measure(
    probe: Probe<'_>,
    peer: &ClockReading,
    rtt: Duration,
    t1: Instant,
    max_drift_ppm: u32,
) -> Option<PeerClock> {
    let Probe { r0, f0, r1, f1 } = probe;
    let n = |t: boundkv_clockbound::Timestamp| i128::from(t.as_nanos());
    let (m0, m1) = (n(r0.interval.midpoint()), n(r1.interval.midpoint()));
    if m1 < m0 {
        return None;
    }
    let (pe, pl, pm) = (n(peer.earliest()), n(peer.latest()), n(peer.interval.midpoint()));
    let (e0, l1) = (n(r0.earliest()), n(r1.latest()));
    let own_bound = r0.bound().max(r1.bound());
    Some(PeerClock {
        offset_nanos: clamp(pm - (m0 + m1) / 2),
        uncertainty: rtt / 2 + peer.bound() + own_bound,
        round_trip: rtt,
        consistent: pl >= e0 && pe <= l1,
        at: t1,
        own_bound,
        lo: clamp(pe - m1),
        hi: clamp(pl - m0),
        claim: FrameClaim {
            lo: clamp(pe - m1),
            hi: clamp(pl - m0).saturating_add(f1.error_change_since(f0, max_drift_ppm)),
            frame: f1,
        },
    })
}

/// One interval for [`marzullo`]: source `id` claims the true value lies in `[lo, hi]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Source {
    /// Who claims it.
    pub id: u64,
    /// The claim's lower end (inclusive).
    pub lo: i64,
    /// The claim's upper end (inclusive).
    pub hi: i64,
}

/// A stretch `[lo, hi]` covered by the most sources, and who they are.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Region {
    /// Its lower end.
    pub lo: i64,
    /// Its upper end.
    pub hi: i64,
    /// The sources covering all of it.
    pub members: BTreeSet<u64>,
}

/// The result of [`marzullo`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Agreement {
    /// How many sources the best regions are covered by.
    pub count: usize,
    /// Every maximal region covered by `count` sources, in order.
    pub regions: Vec<Region>,
}

/// Marzullo's algorithm: the stretches covered by the largest number of (closed) intervals,
/// by a sweep over the sorted endpoints, starts before ends at the same point so that intervals
/// that touch count as agreeing. `O(n log n)`. Intervals with `lo > hi` are ignored.
///
/// ```
/// use boundkv_consensus::clock_check::{Source, marzullo};
/// let s = |id, lo, hi| Source { id, lo, hi };
/// // Three honest clocks around 0, one 250 off.
/// let a = marzullo(&[s(1, -5, 5), s(2, -3, 8), s(3, 245, 255), s(4, 0, 2)]);
/// assert_eq!(a.count, 3);
/// assert_eq!((a.regions[0].lo, a.regions[0].hi), (0, 2));
/// assert_eq!(a.regions[0].members.iter().copied().collect::<Vec<_>>(), vec![1, 2, 4]);
/// ```
pub fn marzullo(sources: &[Source]) -> Agreement {
    // (point, kind) with kind 0 = start, 1 = end: starts sort first at equal points.
    let mut edges: Vec<(i64, u8)> = Vec::with_capacity(sources.len() * 2);
    for s in sources.iter().filter(|s| s.lo <= s.hi) {
        edges.push((s.lo, 0));
        edges.push((s.hi, 1));
    }
    edges.sort_unstable();
    let (mut count, mut best) = (0usize, 0usize);
    let mut spans: Vec<(i64, i64)> = Vec::new();
    let mut open: Option<i64> = None;
    for &(x, kind) in &edges {
        if kind == 0 {
            count += 1;
            if count > best {
                best = count;
                spans.clear();
                open = Some(x);
            } else if count == best {
                open = Some(x);
            }
        } else {
            if count == best
                && let Some(lo) = open.take()
            {
                spans.push((lo, x));
            }
            count -= 1;
        }
    }
    let regions = spans
        .into_iter()
        .map(|(lo, hi)| Region {
            lo,
            hi,
            members: sources.iter().filter(|s| s.lo <= lo && hi <= s.hi).map(|s| s.id).collect(),
        })
        .collect();
    Agreement { count: best, regions }
}

#[cfg(test)]
mod tests {
    use super::*;
    use boundkv_clockbound::{ClockStatus, TimeInterval, Timestamp};
    use proptest::prelude::*;

    fn reading(mid: u64, bound: u64) -> ClockReading {
        ClockReading {
            interval: TimeInterval::around(Timestamp::from_nanos(mid), Duration::from_nanos(bound)),
            status: ClockStatus::Synchronized,
        }
    }

    /// A reading at the zero frame (no time elapsed, no moves: nothing to carry).
    fn fr(r: ClockReading) -> (ClockReading, Frame) {
        (r, Frame::default())
    }

    fn s(id: u64, lo: i64, hi: i64) -> Source {
        Source { id, lo, hi }
    }

    #[test]
    fn marzullo_finds_the_majority_and_ties() {
        let a = marzullo(&[s(1, 0, 10), s(2, 5, 15), s(3, 100, 110)]);
        assert_eq!(a.count, 2);
        assert_eq!(a.regions.len(), 1);
        assert_eq!((a.regions[0].lo, a.regions[0].hi), (5, 10));
        // Touching intervals agree.
        let a = marzullo(&[s(1, 0, 10), s(2, 10, 20)]);
        assert_eq!(a.count, 2);
        // Two disjoint pairs: two regions.
        let a = marzullo(&[s(1, 0, 10), s(2, 5, 15), s(3, 100, 110), s(4, 105, 120)]);
        assert_eq!(a.count, 2);
        assert_eq!(a.regions.len(), 2);
        assert!(marzullo(&[]).regions.is_empty());
    }

    #[test]
    fn a_liar_is_fenced_and_unfenced() {
        let t = Instant::now();
        let ms = 1_000_000u64;
        let base = 1_000_000 * ms;
        let voters = [1, 2, 3];
        // Node 3's view: its clock 250 ms behind everyone's, bound 50 µs.
        let mut c = ClockChecker::new(3, ClockCheckOptions::default(), t);
        assert!(c.is_fenced(), "unchecked at start");
        // A probe round at `t` (this clock at `mid`), every peer answering at `peer_mid`, the
        // answers arriving 2 ms later; whether each answer passed Cristian's check.
        let round = |c: &mut ClockChecker, t: Instant, mid: u64, peer_mid: u64| -> Vec<bool> {
            let probes = c.probes(t, Some(fr(reading(mid, 50_000))), &voters);
            assert_eq!(probes.len(), 2);
            let r1 = fr(reading(mid + 2 * ms, 50_000));
            let t1 = t + Duration::from_millis(2);
            probes
                .iter()
                .map(|p| {
                    let ClockMessage::Probe { probe, .. } = p.message else { panic!() };
                    let peer = Some(reading(peer_mid, 50_000));
                    assert!(c.on_reply(p.to, probe, peer, t1, Some(r1)));
                    c.samples()[&p.to].consistent
                })
                .collect()
        };
        assert_eq!(round(&mut c, t, base, base + 250 * ms + ms), [false, false]);
        let mine = reading(base + 2 * ms, 50_000);
        let v = c.verdict(t + Duration::from_millis(2), Some(&mine), &voters);
        let Verdict::Disagrees(why) = &v else { panic!("{v:?}") };
        assert!(why.contains("disagrees with the majority {1, 2}"), "{why}");
        assert!(matches!(c.apply(v), Some(FenceChange::Fenced(_))));
        assert!(c.is_fenced());
        // The clock is fixed: the next round agrees.
        let t2 = t + Duration::from_millis(300);
        let base2 = base + 250 * ms + 300 * ms;
        assert_eq!(round(&mut c, t2, base2, base2 + ms), [true, true]);
        let mine = reading(base2 + 2 * ms, 50_000);
        let v = c.verdict(t2 + Duration::from_millis(2), Some(&mine), &voters);
        assert_eq!(v, Verdict::Agrees);
        assert_eq!(c.apply(v), Some(FenceChange::Lifted { was_disagreeing: true }));
        assert!(!c.is_fenced());
    }

    /// Each peer's claims are intersected (an honest peer's all hold), and a peer whose claims
    /// contradict each other is left out as one of the liars the rule allows.
    #[test]
    fn the_verified_range_intersects_each_peers_claims_and_drops_a_peer_that_contradicts_itself() {
        let t = Instant::now();
        let us = 1_000u64;
        let voters = [1, 2, 3];
        let mut c = ClockChecker::new(1, ClockCheckOptions::default(), t);
        // One round at `t`: this clock at `m0`, both answers arriving 1 ms later; each peer's
        // reading (bound 0) at the given offset from `m0`.
        let round = |c: &mut ClockChecker, t: Instant, m0: u64, offsets: [u64; 2]| {
            let probes = c.probes(t, Some(fr(reading(m0, 0))), &voters);
            assert_eq!(probes.len(), 2);
            let r1 = fr(reading(m0 + 1_000 * us, 0));
            for p in &probes {
                let ClockMessage::Probe { probe, .. } = p.message else { panic!() };
                let peer = Some(reading(m0 + offsets[p.to as usize - 2], 0));
                assert!(c.on_reply(p.to, probe, peer, t + Duration::from_millis(1), Some(r1)));
            }
        };
        let m = 1_000_000_000_000u64;
        // Node 2 answers 900 µs and then 100 µs into 1 ms round trips: claims [−100, +900] µs
        // and [−900, +100] µs, which intersect in [−100, +100]. Node 3 answers like node 2, then
        // 5 ms ahead: [+4000, +5000] µs, which its first claim contradicts.
        round(&mut c, t, m, [900 * us, 900 * us]);
        let t2 = t + Duration::from_millis(300);
        round(&mut c, t2, m + 300_000 * us, [100 * us, 5_000 * us]);
        // This member's own interval is ±500 µs. Sources: its own and node 2's intersection;
        // node 3 is a known liar, so no liar is left among them: both must cover a point.
        let mine = reading(m + 301_000 * us, 500 * us);
        let range =
            c.verified_range(t2 + Duration::from_millis(1), &mine, Frame::default(), &voters);
        let range = range.expect("two sources, no liar left");
        assert_eq!(
            (range.lo, range.hi),
            (-100_000, 100_000),
            "node 2's claims intersected ([−100, +100] µs), not its narrowest claim ([−100, \
             +900] or [−900, +100]); node 3 counted as the liar, not left out of the count \
             (which would give the union, [−500, +500])"
        );
    }

    #[test]
    fn a_policy_fence_fences_whatever_the_measurements_say() {
        let t = Instant::now();
        let mut c = ClockChecker::new(1, ClockCheckOptions::default(), t);
        let mine = reading(1_000_000_000, 50);
        assert_eq!(
            c.apply(c.verdict(t, Some(&mine), &[1])),
            Some(FenceChange::Lifted { was_disagreeing: false })
        );
        assert!(!c.is_fenced());
        let why = "leap policy smear differs from the majority's step".to_string();
        assert_eq!(c.set_policy_fence(Some(why.clone())), Some(FenceChange::Fenced(why.clone())));
        assert!(c.is_fenced());
        assert_eq!(c.fence_reason(), Some(why.clone()));
        assert_eq!(c.report(t).fenced, Some(why.clone()));
        // Measurements that agree do not lift it.
        assert_eq!(c.apply(c.verdict(t, Some(&mine), &[1])), None);
        assert!(c.is_fenced());
        assert_eq!(c.set_policy_fence(Some(why)), None);
        assert_eq!(c.set_policy_fence(None), Some(FenceChange::Lifted { was_disagreeing: true }));
        assert!(!c.is_fenced());
    }

    /// Three stepping members through an announced leap second; one restarts an hour into the
    /// absorption without its leap record and anchors on its raw clock, a second behind. Its
    /// peers' clocks agree with each other; its own checks fence it.
    #[test]
    fn a_member_restarted_behind_its_absorbing_peers_is_fenced() {
        use boundkv_clockbound::{
            Clock, LeapPolicy, LeapState, SimClock, SimLeapSource, StepGuard, Timestamp,
        };
        use std::sync::Arc;
        const L: u64 = 1_483_228_800_000_000_000;
        let kernel = SimLeapSource::new();
        kernel.set(LeapState::InsertScheduled);
        let sims: Vec<SimClock> = (0..3)
            .map(|_| {
                let s = SimClock::manual(Timestamp::from_nanos(L - 1_000_000_000));
                s.set_bound(Duration::from_micros(50));
                s
            })
            .collect();
        let guard = |s: &SimClock| {
            StepGuard::new(s.clone()).with_leap(LeapPolicy::Step, Arc::new(kernel.clone()))
        };
        let guards: Vec<_> = sims.iter().map(guard).collect();
        for g in &guards {
            g.now().unwrap();
        }
        for s in &sims {
            s.advance(Duration::from_secs(1));
            s.step_nanos(-1_000_000_000);
        }
        kernel.set(LeapState::JustHappened);
        for g in &guards {
            g.now().unwrap();
        }
        kernel.set(LeapState::None);
        for s in &sims {
            s.advance(Duration::from_secs(3600));
        }
        let restarted = guard(&sims[2]);
        let clocks: [&dyn Clock; 3] = [&guards[0], &guards[1], &restarted];
        let voters = [1, 2, 3];
        let t = Instant::now();
        let verdict_of = |me: usize| {
            let mut c = ClockChecker::new(me as u64 + 1, ClockCheckOptions::default(), t);
            let r0 = clocks[me].now().unwrap();
            for p in c.probes(t, Some(fr(r0)), &voters) {
                let ClockMessage::Probe { probe, .. } = p.message else { panic!() };
                let peer = clocks[p.to as usize - 1].now().unwrap();
                let r1 = clocks[me].now().unwrap();
                c.on_reply(p.to, probe, Some(peer), t, Some(fr(r1)));
            }
            c.verdict(t, Some(&clocks[me].now().unwrap()), &voters)
        };
        assert_eq!(verdict_of(0), Verdict::Agrees);
        assert_eq!(verdict_of(1), Verdict::Agrees);
        let v = verdict_of(2);
        let Verdict::Disagrees(why) = &v else { panic!("{v:?}") };
        assert!(why.contains("disagrees with the majority {1, 2}"), "{why}");
    }

    #[test]
    fn a_minority_view_decides_nothing_and_a_single_voter_agrees() {
        let t = Instant::now();
        let c = ClockChecker::new(1, ClockCheckOptions::default(), t);
        let mine = reading(1_000_000_000, 50);
        assert_eq!(c.verdict(t, Some(&mine), &[1, 2, 3]), Verdict::Undecided);
        assert_eq!(c.verdict(t, Some(&mine), &[1]), Verdict::Agrees);
        assert_eq!(c.verdict(t, None, &[1]), Verdict::Undecided);
    }

    #[test]
    fn stray_and_stale_answers_do_not_count() {
        let t = Instant::now();
        let mut c = ClockChecker::new(1, ClockCheckOptions::default(), t);
        let r = reading(1_000_000_000, 50);
        assert!(!c.on_reply(2, 99, Some(r), t, Some(fr(r))), "no such probe");
        let p = c.probes(t, Some(fr(r)), &[1, 2, 3]);
        let ClockMessage::Probe { probe, .. } = p[0].message else { panic!() };
        assert!(!c.on_reply(3, probe, Some(r), t, Some(fr(r))), "probe went to another peer");
        assert!(c.on_reply(p[0].to, probe, Some(r), t, Some(fr(r))));
        let later = t + Duration::from_secs(5);
        assert_eq!(c.verdict(later, Some(&r), &[1, 2, 3]), Verdict::Undecided, "stale");
    }

    proptest! {
        /// Cristian's check never fails between two truthful clocks, whatever the delays and
        /// errors inside the bounds.
        #[test]
        fn cristian_never_accuses_truthful_clocks(
            t0 in 1_000_000_000u64..2_000_000_000,
            out in 0u64..200_000, back in 0u64..200_000, later in 0u64..1_000_000_000,
            b0 in 0u64..100_000, b1 in 0u64..100_000, bp in 0u64..100_000, bn in 0u64..100_000,
            e0 in -1.0f64..=1.0, e1 in -1.0f64..=1.0, ep in -1.0f64..=1.0, en in -1.0f64..=1.0,
        ) {
            // Round trips as short as the bounds (longer ones only widen the claim). Every
            // reading inside its bound, its error anywhere in it: between the answer and the
            // verdict the prober's clock may have been corrected by anything its bounds allow.
            let off = |b: u64, e: f64| (b as f64 * e) as i64;
            let at = |truth: u64, b: u64, e: f64| reading((truth as i64 + off(b, e)) as u64, b);
            let tp = t0 + out;
            let t1 = tp + back;
            let (r0, r1) = (at(t0, b0, e0), at(t1, b1, e1));
            let ends = Probe { r0: &r0, f0: Frame::default(), r1: &r1, f1: Frame::default() };
            let m = measure(ends, &at(tp, bp, ep), Duration::from_nanos(t1 - t0), Instant::now(),
                1000);
            if let Some(m) = m {
                prop_assert!(m.consistent);
                prop_assert!(m.offset_nanos.unsigned_abs() as u128 <= m.uncertainty.as_nanos() + 1);
                // The peer's claim, carried to the verdict, holds the truth then (true time minus
                // the prober's midpoint), so every honest member's claim shares that point.
                let mine = at(t1 + later, bn, en);
                let (lo, hi) = m.claim_now(&mine);
                let truth = -off(bn, en);
                prop_assert!(lo <= truth + 1 && truth - 1 <= hi, "{lo} {hi} vs {truth}");
            }
        }

        /// Marzullo's best regions are covered by exactly `count` sources, and no point is
        /// covered by more (checked at every endpoint).
        #[test]
        fn marzullo_is_the_maximum(raw in proptest::collection::vec((-100i64..100, 0i64..50), 0..8)) {
            let sources: Vec<Source> = raw.iter().enumerate()
                .map(|(i, &(lo, w))| s(i as u64, lo, lo + w)).collect();
            let a = marzullo(&sources);
            let cover = |x: i64| sources.iter().filter(|s| s.lo <= x && x <= s.hi).count();
            for s in &sources {
                prop_assert!(cover(s.lo) <= a.count);
                prop_assert!(cover(s.hi) <= a.count);
            }
            for r in &a.regions {
                prop_assert_eq!(r.members.len(), a.count);
                prop_assert_eq!(cover(r.lo), a.count);
                prop_assert_eq!(cover(r.hi), a.count);
            }
        }
    }
}
