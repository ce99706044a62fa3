//! The cluster clock's arithmetic (`--clock cluster:RHO`, issue 13; the design and its argument
//! are in `docs/design/cluster-clock.md`): the leader's reference `R` carried on its monotonic
//! clock, a member's interval for `R` from Cristian probes of the leader, and where a new leader
//! starts `R`. Pure functions of monotonic readings, so that the property tests below can drive
//! them with clocks that drift; the Raft node is what will feed them (not yet built).
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
//! # A new leader's start
//!
//! [`start_reference`]: from the upper edge of the new leader's interval for the old reference,
//! plus [`handover_margin`] = `2·RHO/(1 − RHO)·(lease + max commit wait)`: until the new leader's first
//! timestamp (one lease after its election) the old reference runs on at its leader's rate and
//! the new one at this one's; the margin keeps the new one ahead, so `R` never goes backwards
//! at the switch.

use std::collections::VecDeque;
use std::time::Duration;

use boundkv_clockbound::{TimeInterval, Timestamp};

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
