//! The clock every timestamp is taken from: this member's own interval, widened to what its
//! peers can verify.
//!
//! # Why fencing alone is not enough
//!
//! The peer clock checks ([`crate::clock_check`]) fence a member whose clock disagrees with the
//! majority, but "disagrees" can only mean "off by more than the measurement can resolve": its
//! own bound, the peer's bound, half a round trip, and what the answers' age adds. A clock whose
//! oscillator drifts (wall and monotonic clock together, so the local step guard sees nothing)
//! while its ClockBound segment still claims a narrow bound escapes that bound *slowly*, and for
//! a while it is off by more than its bound but by less than the checks can see. In that window
//! a fast leader acknowledges a commit whose timestamp is still in the future, or a slow
//! follower places a read below an acknowledged commit. The consistency suite's `clock-drift`
//! fault found exactly this (a register read 97 µs stale, one run in twenty).
//!
//! So a member does not use its own interval alone. It uses the union of its own interval and
//! the **verified range**: the stretch of time that its peers' answers prove true time lies in,
//! if a majority of the clocks tell the truth, *whether or not this one does*. An honest member
//! loses nothing (its own interval still contains true time); a lying one is held to what its
//! peers measured of it, however small the lie.
//!
//! # The verified range
//!
//! Each answer from peer `p` is a Cristian interval (see [`crate::clock_check`]): at the moment
//! `T` the peer read its clock, `T − mid(T) ∈ [lo, hi]`, where `mid` is this member's midpoint.
//! That holds whenever `p` is honest, and needs nothing of this member's clock but that it does
//! not run backwards during the probe. Carried forward, the claim stays true if this member's
//! *error* (`mid − true time`) changes by at most `ρ` per second of true time: it is widened by
//! `ρ/(1−ρ)` times the elapsed time measured on this member's own midpoint, starting from the
//! probe's send (at or before `T`). `ρ` is [`ClockCheckOptions::max_drift_ppm`]: not what the
//! segment claims (the segment is what may lie), but the fastest a clock's error may grow
//! without being a step (a step, wall clock against monotonic clock, is the step guard's).
//!
//! With `n` voters, at most `f = (n − 1)/2` clocks lie (the checks' majority assumption). Of the
//! `k` sources this member holds (its own interval and one claim per voter peer, the tightest
//! one it has), at least `k − f` are honest, and true time lies in all of theirs: so it lies
//! among the points covered by at least `k − f` sources, and the verified range is their hull.
//!
//! # A worked example
//!
//! Three voters, bounds 50 µs, round trips 100 µs, `ρ` = 1000 ppm. Node 1's oscillator runs
//! 500 ppm fast; 180 ms after its last correction it is 90 µs ahead, 40 µs beyond its claimed
//! bound: too little for the checks to see (they resolve about 200 µs here). Its two latest
//! answers, in its own frame (`T − mid`), are node 2's `[−190, +10] µs` and node 3's
//! `[−195, +5] µs`, each 20 ms old: widened by 20 µs, `[−210, +30]` and `[−215, +25]`. Its own
//! interval is `[−50, +50]`. Points covered by at least `3 − 1 = 2` sources: `[−210, +25]` (2
//! and 3) and `[−50, +30]` (1 and 2): the hull is `[−210, +30]`. Node 1 reads its clock at
//! midpoint `m`: it uses `[m − 210 µs, m + 50 µs]`. True time, `m − 90 µs`, is inside; its own
//! interval `[m − 50, m + 50]` was not. A commit it leads waits until `earliest` passes the
//! commit timestamp: 260 µs of its clock instead of 100, and the commit is not acknowledged
//! before its timestamp has passed in true time.
//!
//! # What it costs
//!
//! An honest member's range is about its peers' bound plus half a round trip plus `ρ` times
//! the age of the freshest answer (up to a probe interval): with the defaults (200 ms, 1000 ppm)
//! up to 200 µs beyond its own bound. Commit wait grows by twice that and runs alongside
//! replication, which on a disk that syncs takes longer. A member that hears from nobody keeps
//! its last range, widening at `ρ` (a partitioned member's clock is trusted ever less), and a
//! range wider than the clock policy's ceiling makes the clock unusable, as any wide bound does.
//!
//! Not covered: a majority of liars, and an error that grows faster than `ρ` without a step.

use std::sync::{Arc, Mutex};

use boundkv_clockbound::{
    Clock, ClockError, ClockReading, GuardReport, LeapReport, TimeInterval, Timebase, Timestamp,
};

/// One source's claim about true time, in the frame of this member's midpoint: at the moment
/// this member's midpoint read `as_of`, true time minus the midpoint lay in `[lo, hi]`
/// (nanoseconds).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameClaim {
    /// The lower end, nanoseconds.
    pub lo: i64,
    /// The upper end, nanoseconds.
    pub hi: i64,
    /// This member's midpoint when the claim held, nanoseconds since the epoch.
    pub as_of: u64,
}

impl FrameClaim {
    /// The claim carried to the moment this member's midpoint reads `mid`: widened by
    /// `ρ/(1−ρ)` of the midpoint's progress since `as_of` (none if it has not progressed).
    pub fn carried(&self, mid: u64, max_drift_ppm: u32) -> (i64, i64) {
        let w = drift_allowance(mid.saturating_sub(self.as_of), max_drift_ppm);
        (self.lo.saturating_sub(w), self.hi.saturating_add(w))
    }
}

/// How far an error growing at `ppm` parts per million of true time can move while this
/// member's midpoint advances `elapsed` nanoseconds: `elapsed · ρ/(1−ρ)`, rounded up.
pub fn drift_allowance(elapsed: u64, ppm: u32) -> i64 {
    let ppm = u128::from(ppm.min(999_999));
    let w = (u128::from(elapsed) * ppm).div_ceil(1_000_000 - ppm);
    i64::try_from(w).unwrap_or(i64::MAX)
}

/// The hull of the points covered by at least `k` of the closed intervals `claims`, or `None`
/// if no point is (or `k` is 0: then every point is, and nothing is proven).
///
/// ```
/// use boundkv_consensus::verified_clock::covered_hull;
/// // Two of three agree around 0; the third is 100 off: covered twice is [-2, 3].
/// assert_eq!(covered_hull(&[(-5, 3), (-2, 8), (100, 110)], 2), Some((-2, 3)));
/// assert_eq!(covered_hull(&[(-5, 3), (-2, 8), (100, 110)], 1), Some((-5, 110)));
/// assert_eq!(covered_hull(&[(-5, 3), (100, 110)], 2), None);
/// ```
pub fn covered_hull(claims: &[(i64, i64)], k: usize) -> Option<(i64, i64)> {
    if k == 0 {
        return None;
    }
    // (point, kind): kind 0 = start, 1 = end, so that touching intervals count as overlapping.
    let mut edges: Vec<(i64, u8)> = Vec::with_capacity(claims.len() * 2);
    for &(lo, hi) in claims.iter().filter(|(lo, hi)| lo <= hi) {
        edges.push((lo, 0));
        edges.push((hi, 1));
    }
    edges.sort_unstable();
    let (mut count, mut first, mut last) = (0usize, None, None);
    for (x, kind) in edges {
        if kind == 0 {
            count += 1;
            if count >= k && first.is_none() {
                first = Some(x);
            }
        } else {
            if count >= k {
                last = Some(x);
            }
            count -= 1;
        }
    }
    first.zip(last)
}

/// The verified range a member last computed, shared between its Raft node (which computes it
/// after each round of clock checks) and its [`PeerVerifiedClock`] (which applies it to every
/// reading).
#[derive(Debug, Default)]
pub struct VerifiedRange {
    range: Mutex<Option<FrameClaim>>,
}

impl VerifiedRange {
    /// Publishes a newly computed range (relative to the midpoint `as_of`).
    pub fn publish(&self, range: FrameClaim) {
        *self.range.lock().unwrap_or_else(|e| e.into_inner()) = Some(range);
    }

    /// Withdraws the range (the member's clock was re-anchored: the range is in its old frame).
    /// Readings are the source's until the next is published; the member is fenced meanwhile.
    pub fn clear(&self) {
        *self.range.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }

    /// The range last published, if any.
    pub fn get(&self) -> Option<FrameClaim> {
        *self.range.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A clock that widens its source's readings to include the member's [`VerifiedRange`]
/// carried to the reading (see the module docs). Until a range has been published (before the
/// first round of checks heard from enough peers, when the member is fenced anyway) its
/// readings are the source's.
pub struct PeerVerifiedClock {
    source: Arc<dyn Clock>,
    range: Arc<VerifiedRange>,
    max_drift_ppm: u32,
}

impl PeerVerifiedClock {
    /// `source` widened by what `range` holds, carried at `max_drift_ppm`.
    pub fn new(source: Arc<dyn Clock>, range: Arc<VerifiedRange>, max_drift_ppm: u32) -> Self {
        PeerVerifiedClock { source, range, max_drift_ppm }
    }

    /// `reading` widened to include `range` carried to it.
    pub fn widen(reading: ClockReading, range: FrameClaim, max_drift_ppm: u32) -> ClockReading {
        let mid = reading.interval.midpoint().as_nanos();
        let (lo, hi) = range.carried(mid, max_drift_ppm);
        let at = |offset: i64| {
            let t = i128::from(mid) + i128::from(offset);
            Timestamp::from_nanos(u64::try_from(t.max(0)).unwrap_or(u64::MAX))
        };
        let interval =
            TimeInterval::new(reading.earliest().min(at(lo)), reading.latest().max(at(hi)));
        ClockReading { interval, ..reading }
    }
}

impl Clock for PeerVerifiedClock {
    fn now(&self) -> Result<ClockReading, ClockError> {
        let reading = self.source.now()?;
        Ok(match self.range.get() {
            Some(range) => Self::widen(reading, range, self.max_drift_ppm),
            None => reading,
        })
    }

    fn describe(&self) -> String {
        format!("{}, widened to what the peers verify", self.source.describe())
    }

    fn timebase(&self) -> &dyn Timebase {
        self.source.timebase()
    }

    fn guard_report(&self) -> Option<GuardReport> {
        self.source.guard_report()
    }

    fn reanchor(&self) {
        self.source.reanchor();
    }

    fn leap_report(&self) -> Option<LeapReport> {
        self.source.leap_report()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use boundkv_clockbound::ClockStatus;
    use proptest::prelude::*;

    fn reading(mid: u64, bound: u64) -> ClockReading {
        ClockReading {
            interval: TimeInterval::new(
                Timestamp::from_nanos(mid - bound),
                Timestamp::from_nanos(mid + bound),
            ),
            status: ClockStatus::Synchronized,
        }
    }

    #[test]
    fn the_worked_example() {
        let m = 1_000_000_000_000u64;
        let claims = [(-210_000, 30_000), (-215_000, 25_000), (-50_000, 50_000)];
        assert_eq!(covered_hull(&claims, 2), Some((-210_000, 30_000)));
        let range = FrameClaim { lo: -210_000, hi: 30_000, as_of: m };
        let r = PeerVerifiedClock::widen(reading(m, 50_000), range, 1000);
        assert_eq!(r.earliest().as_nanos(), m - 210_000);
        assert_eq!(r.latest().as_nanos(), m + 50_000);
        assert!(r.interval.contains(Timestamp::from_nanos(m - 90_000)));
    }

    #[test]
    fn a_range_widens_as_the_midpoint_advances() {
        let range = FrameClaim { lo: -100, hi: 100, as_of: 1_000_000_000 };
        // 1 s later at 1000 ppm: 1000.001 µs (ρ/(1−ρ), rounded up).
        assert_eq!(range.carried(2_000_000_000, 1000), (-100 - 1_001_002, 100 + 1_001_002));
        // A midpoint behind `as_of` adds nothing.
        assert_eq!(range.carried(999_000_000, 1000), (-100, 100));
    }

    proptest! {
        /// The verified range holds true time whenever at most `f` of the `n` clocks lie,
        /// however far and whichever way, and the member's own error grows at most `ρ`: the
        /// union of its own interval and the carried range contains true time even when the
        /// member itself is one of the liars.
        #[test]
        fn the_widened_reading_holds_true_time_if_a_majority_is_honest(
            n in 1usize..6,
            liars in proptest::collection::vec(any::<bool>(), 6),
            lie in proptest::collection::vec(-5_000_000i64..5_000_000, 6),
            bounds in proptest::collection::vec(1_000i64..100_000, 6),
            halfrtt in proptest::collection::vec(0i64..500_000, 6),
            my_rate_ppm in -1000i64..=1000,
            since in 0u64..2_000_000_000,
        ) {
            let f = (n - 1) / 2;
            let mut liar: Vec<bool> = liars[..n].to_vec();
            // At most f liars (the first ones marked, from the member itself on).
            let mut allowed = f;
            for l in liar.iter_mut() {
                if *l && allowed > 0 { allowed -= 1 } else { *l = false }
            }
            // Member 0's error (mid − true) at the claims' moment, and true time then.
            let t0: i64 = 1_000_000_000_000;
            let err0 = if liar[0] { lie[0] } else { lie[0] % (bounds[0] + 1) };
            // Each source's claim about T − mid₀(T): an honest peer's is its interval, shifted
            // by member 0's error and widened by half a round trip each way; a liar's is off.
            let mut claims = vec![(-bounds[0], bounds[0])];
            for p in 1..n {
                let centre = -err0 + if liar[p] { lie[p] } else { lie[p] % (bounds[p] + 1) };
                claims.push((centre - bounds[p] - halfrtt[p], centre + bounds[p] + halfrtt[p]));
            }
            let k = claims.len() - f;
            let Some((lo, hi)) = covered_hull(&claims, k) else { return Ok(()) };
            let mid0 = u64::try_from(t0 + err0).unwrap();
            let range = FrameClaim { lo, hi, as_of: mid0 };
            // `since` ns of true time later: member 0's error moved by its rate (an honest
            // member's error stays within its bound instead).
            let t1 = t0 + i64::try_from(since).unwrap();
            let err1 = if liar[0] {
                err0 + (i128::from(since) * i128::from(my_rate_ppm) / 1_000_000) as i64
            } else {
                lie[1 % n] % (bounds[0] + 1)
            };
            let mid1 = u64::try_from(t1 + err1).unwrap();
            let widened = PeerVerifiedClock::widen(
                reading(mid1, u64::try_from(bounds[0]).unwrap()),
                range,
                1000,
            );
            prop_assert!(
                widened.interval.contains(Timestamp::from_nanos(u64::try_from(t1).unwrap())),
                "true time {t1} outside {:?} (liars {liar:?}, range {range:?})",
                widened.interval
            );
        }
    }
}
