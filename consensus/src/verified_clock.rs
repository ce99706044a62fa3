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
//! Each answer from peer `p` becomes a claim built from this member's readings alone (see
//! [`crate::clock_check::measure`]): if `p` is honest, its reading `[pe, pl]` was taken at a true
//! time `T` after this member's reading `r0` (midpoint `m0`) and before `r1` (`m1`), so at `r1`
//! true time minus this member's midpoint lies in `[pe − m1, pl − m0 + E]`, where `E` bounds how
//! far this member's error moved between its two readings. Nothing about this member's clock
//! being honest enters it. Carried forward, a claim stays true if it is widened by how far the
//! member's error can have moved since, which it measures in its **frames**.
//!
//! # Frames
//!
//! A member's error (`midpoint − true time`) moves two ways, and every reading is taken with
//! what it needs to bound both ([`Frame`]: the midpoint, and the monotonic clock just before and
//! just after the reading):
//!
//! - its oscillator drifts, moving the monotonic clock and the wall clock together: by at most
//!   `ρ/(1−ρ)` of the monotonic time elapsed, `ρ` being [`max_drift_ppm`] (1000 ppm). Not what
//!   the segment claims (the segment is what may lie), but what a clock's oscillator may do;
//!   nothing local can see it, which is why it is assumed;
//! - its midpoint moves against the monotonic clock: a time service's slew, a step the guard
//!   let through (one smaller than the bounds), the guard's re-synchronisation at the end of a
//!   holdover, a re-anchor. These are measured: between two readings, the change of
//!   `midpoint − monotonic` (each known to within the monotonic clock's two reads around the
//!   reading).
//!
//! The error's move between two readings is the midpoint's move minus true time's, whatever
//! happened in between, so the two frames are all it takes ([`Frame::error_change_since`]).
//!
//! With `n` voters, at most `f = (n − 1)/2` clocks lie (the checks' majority assumption). Of the
//! `k` sources this member holds (its own interval and, for each voter peer it heard from
//! within [`sample_ttl`], the intersection of that peer's claims from then: an honest peer's
//! claims all hold, so the intersection does, and it is narrower than any one of them; older
//! claims are dropped, so that a peer that lied once and was corrected since is not one more
//! liar; a peer whose claims contradict each other has lied, and is left out as one of the
//! `f`), at least `k − f` are honest, and
//! true time lies in all of theirs: so it lies among the points covered by at least `k − f`
//! sources, and the **verified range** is their hull. The member publishes it with the frame of
//! the reading it was computed at, and [`PeerVerifiedClock`] carries it to every reading, like a
//! claim. If a round proves nothing (too few answers), the last range stays, widening.
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
//! An honest member's range is about its peers' bound plus the quickest way out and the
//! quickest way back among its recent round trips (the intersection of each peer's claims) plus
//! `ρ` times the age of the freshest answer (up to a probe interval) plus its own clock's slew
//! since: with the defaults (100 ms, 1000 ppm) up to about 100 µs a side beyond the round trip.
//! Commit wait is the whole width and runs alongside replication, which takes a round trip too
//! and an `fdatasync` more, so it hides behind it: on 3 nodes on loopback with bound 0 it added
//! 8–12 µs on average to a commit. The probes themselves cost wakeups (see
//! `docs/architecture/time.md`). A member that hears from nobody keeps
//! its last range, widening at `ρ` (a partitioned member's clock is trusted ever less), and a
//! range wider than the clock policy's ceiling makes the clock unusable, as any wide bound does.
//!
//! Not covered: a majority of liars (at once, or within `sample_ttl`), and an oscillator that
//! drifts faster than `ρ`.
//!
//! [`max_drift_ppm`]: crate::clock_check::ClockCheckOptions::max_drift_ppm
//! [`sample_ttl`]: crate::clock_check::ClockCheckOptions::sample_ttl

use std::sync::{Arc, Mutex};
use std::time::Duration;

use boundkv_clockbound::{
    Clock, ClockError, ClockPolicy, ClockReading, GuardReport, LeapReport, TimeInterval, Timebase,
    Timestamp,
};

/// Where in this member's own time a reading was taken (see "Frames" in the module docs): its
/// midpoint, and its monotonic clock just before and just after the reading.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Frame {
    /// The reading's midpoint, nanoseconds since the epoch.
    pub mid: u64,
    /// The monotonic clock (the source's [`Timebase`]) just before the reading.
    pub mono_before: Duration,
    /// The monotonic clock just after it.
    pub mono_after: Duration,
}

impl Frame {
    /// The midpoint minus the monotonic clock at the reading: between these two ends.
    fn offset(&self) -> (i128, i128) {
        let mid = i128::from(self.mid);
        (mid - self.mono_after.as_nanos() as i128, mid - self.mono_before.as_nanos() as i128)
    }

    /// How far this member's error (midpoint minus true time) can have moved between its
    /// reading at `earlier` and this one: `ρ/(1−ρ)` of the monotonic time elapsed (the
    /// oscillator, which moves the monotonic and wall clocks alike) plus how far the midpoint
    /// moved against the monotonic clock (slews, steps, a step guard's re-synchronisation),
    /// rounded up. Only the two readings count, not the way between them: the error's move is
    /// the midpoint's move minus true time's, whatever happened in between.
    pub fn error_change_since(&self, earlier: Frame, max_drift_ppm: u32) -> i64 {
        let elapsed = self.mono_after.saturating_sub(earlier.mono_before);
        let elapsed = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
        let ((now_lo, now_hi), (then_lo, then_hi)) = (self.offset(), earlier.offset());
        let moved = (now_hi - then_lo).abs().max((now_lo - then_hi).abs());
        let moved = i64::try_from(moved).unwrap_or(i64::MAX);
        drift_allowance(elapsed, max_drift_ppm).saturating_add(moved)
    }
}

/// One source's claim about true time, in the frame of this member's midpoint: at a moment at
/// or after this member's reading at `frame`, true time minus its midpoint lay in `[lo, hi]`
/// (nanoseconds).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameClaim {
    /// The lower end, nanoseconds.
    pub lo: i64,
    /// The upper end, nanoseconds.
    pub hi: i64,
    /// This member's frame when the claim held (or earlier).
    pub frame: Frame,
}

impl FrameClaim {
    /// The claim carried to this member's reading at `now`: widened by how far its error can
    /// have moved since ([`Frame::error_change_since`]).
    pub fn carried(&self, now: Frame, max_drift_ppm: u32) -> (i64, i64) {
        let w = now.error_change_since(self.frame, max_drift_ppm);
        (self.lo.saturating_sub(w), self.hi.saturating_add(w))
    }
}

/// How far an error growing at `ppm` parts per million of true time can move while this
/// member's monotonic clock (drifting by as much) advances `elapsed` nanoseconds:
/// `elapsed · ρ/(1−ρ)`, rounded up.
pub fn drift_allowance(elapsed: u64, ppm: u32) -> i64 {
    let ppm = u128::from(ppm.min(999_999));
    let w = (u128::from(elapsed) * ppm).div_ceil(1_000_000 - ppm);
    i64::try_from(w).unwrap_or(i64::MAX)
}

/// Reads a clock with the [`Frame`] of each reading: the one way this member reads its clock
/// for the peer clock checks and for [`PeerVerifiedClock`].
pub struct FramedReader {
    source: Arc<dyn Clock>,
}

impl FramedReader {
    /// A reader of `source`.
    pub fn new(source: Arc<dyn Clock>) -> Self {
        FramedReader { source }
    }

    /// The source.
    pub fn source(&self) -> &Arc<dyn Clock> {
        &self.source
    }

    /// A reading and its frame.
    pub fn read(&self) -> Result<(ClockReading, Frame), ClockError> {
        let timebase = self.source.timebase();
        let mono_before = timebase.elapsed();
        let reading = self.source.now()?;
        let mono_after = timebase.elapsed();
        let mid = reading.interval.midpoint().as_nanos();
        Ok((reading, Frame { mid, mono_before, mono_after }))
    }

    /// A reading and its frame, if `policy` accepts the reading.
    pub fn read_usable(&self, policy: &ClockPolicy) -> Option<(ClockReading, Frame)> {
        let (reading, frame) = self.read().ok()?;
        policy.check(Ok(reading)).ok().map(|r| (r, frame))
    }
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
    framed: Arc<FramedReader>,
    range: Arc<VerifiedRange>,
    max_drift_ppm: u32,
}

impl PeerVerifiedClock {
    /// The readings of `framed` widened by what `range` holds, carried at `max_drift_ppm`.
    pub fn new(framed: Arc<FramedReader>, range: Arc<VerifiedRange>, max_drift_ppm: u32) -> Self {
        PeerVerifiedClock { framed, range, max_drift_ppm }
    }

    /// `reading` (taken at `frame`) widened to include `range` carried to it.
    pub fn widen(
        reading: ClockReading,
        frame: Frame,
        range: FrameClaim,
        max_drift_ppm: u32,
    ) -> ClockReading {
        let mid = reading.interval.midpoint().as_nanos();
        let (lo, hi) = range.carried(frame, max_drift_ppm);
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
        let (reading, frame) = self.framed.read()?;
        Ok(match self.range.get() {
            Some(range) => Self::widen(reading, frame, range, self.max_drift_ppm),
            None => reading,
        })
    }

    fn describe(&self) -> String {
        format!("{}, widened to what the peers verify", self.framed.source().describe())
    }

    fn timebase(&self) -> &dyn Timebase {
        self.framed.source().timebase()
    }

    fn guard_report(&self) -> Option<GuardReport> {
        self.framed.source().guard_report()
    }

    fn reanchor(&self) {
        self.framed.source().reanchor();
    }

    fn leap_report(&self) -> Option<LeapReport> {
        self.framed.source().leap_report()
    }

    fn epoch(&self) -> u64 {
        self.framed.source().epoch()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock_check::{ClockCheckOptions, ClockChecker, ClockMessage};
    use boundkv_clockbound::ClockStatus;
    use proptest::prelude::*;
    use std::future::Future;
    use std::pin::Pin;
    use std::time::Instant;

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
        let five = Duration::from_secs(5);
        let frame = Frame { mid: m, mono_before: five, mono_after: five };
        let range = FrameClaim { lo: -210_000, hi: 30_000, frame };
        let r = PeerVerifiedClock::widen(reading(m, 50_000), frame, range, 1000);
        assert_eq!(r.earliest().as_nanos(), m - 210_000);
        assert_eq!(r.latest().as_nanos(), m + 50_000);
        assert!(r.interval.contains(Timestamp::from_nanos(m - 90_000)));
    }

    #[test]
    fn a_claim_widens_with_monotonic_time_and_the_midpoints_move() {
        let s = |n: u64| Duration::from_secs(n);
        let then = Frame { mid: 7_000_000_000, mono_before: s(1), mono_after: s(1) };
        let claim = FrameClaim { lo: -100, hi: 100, frame: then };
        // 1 s later at 1000 ppm: 1000.001 µs (ρ/(1−ρ), rounded up), plus the midpoint's 300 ns
        // move against the monotonic clock.
        let now = Frame { mid: 8_000_000_300, mono_before: s(2), mono_after: s(2) };
        assert_eq!(claim.carried(now, 1000), (-100 - 1_001_302, 100 + 1_001_302));
        assert_eq!(claim.carried(then, 1000), (-100, 100));
        // A reading whose monotonic reads straddle 1 µs: up to 1 µs more elapsed (1000.002 µs
        // of drift) and its offset known to within 1 µs (a move of up to 700 ns).
        let wide = Frame { mono_after: s(2) + Duration::from_micros(1), ..now };
        assert_eq!(claim.carried(wide, 1000), (-100 - 1_001_703, 100 + 1_001_703));
    }

    /// A clock whose readings (midpoint, bound) and monotonic time a test sets.
    struct TestClock(Mutex<(u64, u64, Duration)>);

    impl TestClock {
        fn set(&self, mid: u64, bound: u64, mono: Duration) {
            *self.0.lock().unwrap() = (mid, bound, mono);
        }
    }

    impl Clock for TestClock {
        fn now(&self) -> Result<ClockReading, ClockError> {
            let (mid, bound, _) = *self.0.lock().unwrap();
            Ok(reading(mid, bound))
        }
        fn describe(&self) -> String {
            "test".into()
        }
        fn timebase(&self) -> &dyn Timebase {
            self
        }
    }

    impl Timebase for TestClock {
        fn elapsed(&self) -> Duration {
            self.0.lock().unwrap().2
        }
        fn sleep_blocking(&self, _: Duration) {}
        fn sleep(&self, _: Duration) -> Pin<Box<dyn Future<Output = ()> + Send + 'static>> {
            Box::pin(async {})
        }
    }

    /// Member 0 of `n`, and its world: true time, its oscillator, its error.
    struct Prober {
        clock: Arc<TestClock>,
        framed: Arc<FramedReader>,
        /// True time now, ns.
        t: u64,
        start: u64,
        /// Its oscillator's rate error (wall and monotonic clocks alike), ppm.
        rate_ppm: i64,
        /// If it lies: its error at the start, and the jumps of its wall clock so far.
        lie: Option<(i64, i64)>,
        bound: u64,
        /// An honest member's errors, one per reading, as fractions of its bound.
        honest_errors: Vec<f64>,
        readings: usize,
    }

    impl Prober {
        fn read_at(&mut self, t: u64) -> (ClockReading, Frame) {
            self.t = t;
            let elapsed = (t - self.start) as i128;
            let drift = elapsed * i128::from(self.rate_ppm) / 1_000_000;
            let mono = Duration::from_nanos((elapsed + drift) as u64);
            let err = match self.lie {
                Some((e0, jumps)) => i128::from(e0) + drift + i128::from(jumps),
                None => {
                    let f = self.honest_errors[self.readings % self.honest_errors.len()];
                    (self.bound as f64 * f) as i128
                }
            };
            self.readings += 1;
            self.clock.set((i128::from(t) + err) as u64, self.bound, mono);
            self.framed.read().unwrap()
        }
        fn jump(&mut self, by: i64) {
            if let Some((_, jumps)) = self.lie.as_mut() {
                *jumps += by;
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]
        /// The whole path, as the node runs it: member 0 probes its peers through a
        /// [`ClockChecker`] (its readings through a [`FramedReader`]), computes its verified
        /// range from the answers, and reads a [`PeerVerifiedClock`] later. If at most
        /// `f = (n−1)/2` of the `n` clocks lie, by any offset, and a lying member 0's
        /// oscillator drifts at most 1000 ppm while its wall clock jumps by anything between
        /// any two readings, the reading holds true time: member 0's own lie, drift and jumps
        /// included. Fails with the frames' drift allowance or their moves left out, or with
        /// `f` not subtracted. Up to three rounds: an honest peer's claims, all carried, must still
        /// intersect; a liar's may contradict each other.
        #[test]
        fn the_verified_reading_holds_true_time_if_a_majority_is_honest(
            n in 1usize..=5,
            liar_marks in proptest::collection::vec(any::<bool>(), 5),
            offsets in proptest::collection::vec(-5_000_000i64..5_000_000, 5),
            bounds in proptest::collection::vec(1_000u64..100_000, 5),
            honest in proptest::collection::vec(-1.0f64..=1.0, 8),
            delays in proptest::collection::vec(0u64..500_000, 30),
            jumps in proptest::collection::vec(-1_000_000i64..1_000_000, 5),
            rate_ppm in -1000i64..=1000,
            // Up to three probe rounds: every honest peer's claims, whatever the jumps of member
            // 0's clock between them, must still intersect; a liar's may contradict each other.
            rounds in 1usize..=3,
            lie_moves in proptest::collection::vec(-5_000_000i64..5_000_000, 5),
            // As often soon (when little has been widened away) as late.
            later in prop_oneof![0u64..1_000_000, 0u64..2_000_000_000],
            later2 in prop_oneof![0u64..1_000_000, 0u64..2_000_000_000],
        ) {
            let f = (n - 1) / 2;
            let mut allowed = f;
            let liar: Vec<bool> = liar_marks[..n]
                .iter()
                .map(|&l| if l && allowed > 0 { allowed -= 1; true } else { false })
                .collect();
            let start = 1_000_000_000_000u64;
            let clock = Arc::new(TestClock(Mutex::new((start, bounds[0], Duration::ZERO))));
            let framed = Arc::new(FramedReader::new(clock.clone()));
            let mut me = Prober {
                clock: clock.clone(),
                framed: framed.clone(),
                t: start,
                start,
                rate_ppm,
                lie: liar[0].then_some((offsets[0], 0)),
                bound: bounds[0],
                honest_errors: honest.clone(),
                readings: 0,
            };
            let options = ClockCheckOptions { sample_ttl: Duration::from_secs(60), ..Default::default() };
            let first = Instant::now();
            let mut instant = first;
            let voters: Vec<u64> = (0..n as u64).collect();
            let mut checker = ClockChecker::new(0, options.clone(), instant);
            let mut t = start;
            let mut d = delays.iter().copied().cycle();
            for round in 0..rounds {
                // A probe round: one reading, then each answer in turn.
                let r0 = me.read_at(t);
                let probes = checker.probes(instant, Some(r0), &voters);
                for (i, p) in probes.iter().enumerate() {
                    let ClockMessage::Probe { probe, .. } = p.message else { unreachable!() };
                    let peer = p.to as usize;
                    t += d.next().unwrap();
                    let peer_mid = if liar[peer] {
                        (t as i64 + offsets[peer] + lie_moves[peer] * round as i64) as u64
                    } else {
                        let error = honest[(peer + round) % honest.len()];
                        (t as i64 + (bounds[peer] as f64 * error) as i64) as u64
                    };
                    let answer = reading(peer_mid, bounds[peer]);
                    t += d.next().unwrap();
                    me.jump(jumps[round] / (i as i64 + 1));
                    let r1 = me.read_at(t);
                    // (No measurement if member 0's clock went back between its two readings.)
                    checker.on_reply(p.to, probe, Some(answer), instant, Some(r1));
                }
                // The next round, a probe interval later (in true time too).
                instant += options.probe_interval;
                t += options.probe_interval.as_nanos() as u64;
            }
            // The range, published some time later, after another jump.
            me.jump(jumps[3]);
            let (mine, frame) = me.read_at(t + later);
            let range = VerifiedRange::default();
            let Some(published) = checker.verified_range(instant, &mine, frame, &voters) else {
                return Ok(());
            };
            range.publish(published);
            let range = Arc::new(range);
            let verified = PeerVerifiedClock::new(framed.clone(), range, 1000);
            // A reading later still, after one more jump.
            me.jump(jumps[4]);
            let truth = t + later + later2;
            me.read_at(truth);
            // `read_at` set the clock; the verified clock reads it again through the framed.
            let widened = verified.now().unwrap();
            prop_assert!(
                widened.interval.contains(Timestamp::from_nanos(truth)),
                "true time {truth} outside {:?} (n {n}, liars {liar:?}, range {published:?})",
                widened.interval
            );
        }
    }
}
