//! [`StepGuard`]: every reading must agree with the clock's own recent past.
//!
//! ClockBound promises that true time lies inside `[earliest, latest]`. A clock that steps (a
//! kernel inserting a leap second by stepping `CLOCK_REALTIME` back 1 s, an operator's `date
//! -s`, an NTP step after a VM migration) or that lies (a misconfigured daemon claiming 50 µs
//! while 250 ms off) breaks that promise, and everything boundkv guarantees rests on it: a
//! commit timestamp below one already acknowledged, a lease stretched by the step into the next
//! leader's, a follower read placed below writes it must see.
//!
//! The guard checks each reading against the last one it trusted, carried forward on the
//! monotonic clock (which never steps) with a maximum drift `ρ` between the monotonic clock and
//! true time:
//!
//! ```text
//! anchor: [e, l] read at monotonic m          now: monotonic m + Δ
//! projected = [e + Δ − ρΔ, l + Δ + ρΔ]        (true time must lie here if the anchor was true)
//! new reading [e', l']:
//!   intersects projected   → consistent: use it, and it becomes the anchor
//!   disjoint from it       → the clock stepped (or lied): hold over on the monotonic clock:
//!                            answer `projected`, status FreeRunning, and keep the old anchor
//! ```
//!
//! For example, with `ρ` = 500 ppm: the anchor is `[10.000 000, 10.000 100]` at monotonic 5 s.
//! At monotonic 7 s the kernel has stepped back 1 s and the source says
//! `[11.000 000 − 1 s ± 50 µs]`, around `10.000 000`. The projection is
//! `[12.000 000 − 1 ms, 12.000 100 + 1 ms]`: no overlap, so the guard answers
//! `[11.999 000, 12.001 100]` (FreeRunning), widening by 1 ms every 2 s, until the source agrees
//! with the projection again, or the bound passes the policy's ceiling and the reading is
//! refused ([`crate::ClockPolicy`]). Nothing boundkv computes from readings (commit wait,
//! leases, `ready_at`, closed timestamps, follower-read timestamps) ever sees the stepped time.
//!
//! **What it assumes.** The monotonic clock runs within `ρ` of true time (the kernel slews it at
//! most 500 ppm, the default; [`StepGuard::with_max_drift_ppm`] changes it), and the first
//! reading after start is true: a clock that lies from the start, or drifts slowly out of its
//! bound, agrees with its own past and cannot be seen from inside. Peer clock checks exist for
//! that.
//!
//! **When it trusts the source again.** When a reading intersects the projection again (a
//! step that was undone, a lie that stopped), or when the peer clock checks, having fenced the
//! node because its clock disagrees with a majority of its peers', ask it to
//! ([`Clock::reanchor`]): an anchor taken at a restart on a clock that lied then is the one case
//! the guard cannot undo alone. Not when the source merely reports a loss of
//! synchronisation and a recovery: a source that lies can flap its status too. A clock that
//! stepped for good (an NTP step that corrected a real error, a leap second) holds over until its
//! bound passes the policy's ceiling, and the node then refuses to issue timestamps until it is
//! restarted, which anchors afresh (`boundkv status` and the log say so). Refusing is the safe
//! answer: an anchor cannot tell a correction from a lie without asking other clocks.

use std::sync::Mutex;
use std::time::Duration;

use crate::clock::{Clock, Timebase};
use crate::error::ClockError;
use crate::time::{ClockReading, ClockStatus, TimeInterval, Timestamp};

/// The default maximum drift of the monotonic clock against true time: the kernel's largest
/// slew rate.
pub const DEFAULT_MAX_DRIFT_PPM: u32 = 500;

/// Wraps a [`Clock`] and refuses to pass on a reading that disagrees with the clock's own past
/// (see the module docs).
pub struct StepGuard<C> {
    inner: C,
    max_drift_ppm: u32,
    state: Mutex<GuardState>,
}

#[derive(Default)]
struct GuardState {
    /// The last trusted reading's interval and the monotonic time it was read at.
    anchor: Option<(TimeInterval, Duration)>,
    /// Set while holding over: when the step was first seen (monotonic) and how far the source
    /// was from the projection then.
    holding_over: Option<Holdover>,
    /// Steps seen since start.
    steps: u64,
}

#[derive(Clone, Copy, Debug)]
struct Holdover {
    since: Duration,
    /// The source's distance from the projection when the step was seen, in signed nanoseconds
    /// (negative: the source was behind).
    jump_nanos: i128,
}

/// What the guard has seen, for status pages and metrics.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GuardReport {
    /// Whether the guard is holding over now (the source disagrees with the clock's past).
    pub holding_over: bool,
    /// How far the source was from where it should have been when the current holdover began,
    /// in signed nanoseconds (negative: behind).
    pub jump_nanos: Option<i128>,
    /// Steps seen since start.
    pub steps: u64,
}

impl<C: Clock> StepGuard<C> {
    /// Guards `inner` with the default maximum drift ([`DEFAULT_MAX_DRIFT_PPM`]).
    pub fn new(inner: C) -> Self {
        Self::with_max_drift_ppm(inner, DEFAULT_MAX_DRIFT_PPM)
    }

    /// Guards `inner`, assuming the monotonic clock runs within `ppm` of true time.
    pub fn with_max_drift_ppm(inner: C, ppm: u32) -> Self {
        StepGuard { inner, max_drift_ppm: ppm, state: Mutex::new(GuardState::default()) }
    }

    /// The guarded clock.
    pub fn inner(&self) -> &C {
        &self.inner
    }

    /// What the guard has seen.
    pub fn report(&self) -> GuardReport {
        let s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        GuardReport {
            holding_over: s.holding_over.is_some(),
            jump_nanos: s.holding_over.map(|h| h.jump_nanos),
            steps: s.steps,
        }
    }

    /// Where true time must lie at monotonic `now`, from the anchor.
    fn project(&self, anchor: TimeInterval, at: Duration, now: Duration) -> TimeInterval {
        let elapsed = now.saturating_sub(at);
        let nanos = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
        let growth = nanos.saturating_mul(u64::from(self.max_drift_ppm)).div_ceil(1_000_000);
        let earliest = anchor.earliest.as_nanos().saturating_add(nanos).saturating_sub(growth);
        let latest = anchor.latest.as_nanos().saturating_add(nanos).saturating_add(growth);
        TimeInterval::new(Timestamp::from_nanos(earliest), Timestamp::from_nanos(latest))
    }
}

fn intersects(a: &TimeInterval, b: &TimeInterval) -> bool {
    a.earliest <= b.latest && b.earliest <= a.latest
}

/// Signed distance from `b` to `a` (0 when they overlap).
fn gap_nanos(a: &TimeInterval, b: &TimeInterval) -> i128 {
    if a.latest < b.earliest {
        -(b.earliest.signed_nanos_since(a.latest))
    } else if a.earliest > b.latest {
        a.earliest.signed_nanos_since(b.latest)
    } else {
        0
    }
}

impl<C: Clock> Clock for StepGuard<C> {
    fn now(&self) -> Result<ClockReading, ClockError> {
        let reading = self.inner.now()?;
        let mono = self.inner.timebase().elapsed();
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if !reading.status.is_trustworthy() {
            // The source itself says it does not know: pass that on, unchanged. The anchor stays:
            // a status flap is no reason to believe a stepped clock.
            return Ok(reading);
        }
        let Some((anchor, at)) = s.anchor else {
            s.anchor = Some((reading.interval, mono));
            return Ok(reading);
        };
        let projected = self.project(anchor, at, mono);
        if intersects(&reading.interval, &projected) {
            if let Some(h) = s.holding_over.take() {
                tracing::warn!(
                    held_over = ?mono.saturating_sub(h.since),
                    "clock step guard: the source agrees with the clock's past again; holdover ends"
                );
            }
            s.anchor = Some((reading.interval, mono));
            return Ok(reading);
        }
        if s.holding_over.is_none() {
            let jump_nanos = gap_nanos(&reading.interval, &projected);
            s.steps += 1;
            s.holding_over = Some(Holdover { since: mono, jump_nanos });
            tracing::warn!(
                jump_ns = jump_nanos as i64,
                source = %format!("[{}, {}]", reading.earliest(), reading.latest()),
                expected = %format!("[{}, {}]", projected.earliest, projected.latest),
                max_drift_ppm = self.max_drift_ppm,
                "clock step guard: the clock stepped or lied (its reading disagrees with its own past); holding over on the monotonic clock"
            );
        }
        Ok(ClockReading { interval: projected, status: ClockStatus::FreeRunning })
    }

    fn describe(&self) -> String {
        format!(
            "{} (step guard, monotonic drift ≤ {} ppm)",
            self.inner.describe(),
            self.max_drift_ppm
        )
    }

    fn timebase(&self) -> &dyn Timebase {
        self.inner.timebase()
    }

    fn guard_report(&self) -> Option<GuardReport> {
        Some(self.report())
    }

    fn reanchor(&self) {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if s.holding_over.take().is_some() {
            tracing::warn!(
                "clock step guard: re-anchoring on the source at the peer clock checks' request (this node is fenced; its anchor disagrees with its peers)"
            );
        }
        s.anchor = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::SimClock;

    fn guarded(bound_us: u64) -> (SimClock, StepGuard<SimClock>) {
        let sim = SimClock::manual(Timestamp::from_nanos(1_000_000_000_000));
        sim.set_bound(Duration::from_micros(bound_us));
        (sim.clone(), StepGuard::new(sim))
    }

    #[test]
    fn a_steady_clock_passes_through() {
        let (sim, guard) = guarded(50);
        for _ in 0..10 {
            let r = guard.now().unwrap();
            assert_eq!(r, sim.now().unwrap());
            assert_eq!(r.status, ClockStatus::Synchronized);
            sim.advance(Duration::from_millis(100));
        }
        assert!(!guard.report().holding_over);
    }

    #[test]
    fn a_step_inside_the_bound_is_truthful_and_passes() {
        let (sim, guard) = guarded(500);
        guard.now().unwrap();
        sim.set_offset_nanos(-400_000);
        let r = guard.now().unwrap();
        assert_eq!(r.status, ClockStatus::Synchronized);
        assert!(!guard.report().holding_over);
    }

    #[test]
    fn a_step_back_holds_over_on_the_monotonic_clock_and_true_time_stays_inside() {
        let (sim, guard) = guarded(50);
        guard.now().unwrap();
        sim.advance(Duration::from_secs(2));
        sim.step_nanos(-1_000_000_000);
        for _ in 0..20 {
            let r = guard.now().unwrap();
            assert_eq!(r.status, ClockStatus::FreeRunning);
            assert!(r.interval.contains(sim.true_now()), "{r:?} misses {}", sim.true_now());
            sim.advance(Duration::from_millis(500));
        }
        let report = guard.report();
        assert!(report.holding_over);
        assert_eq!(report.steps, 1);
        assert!(report.jump_nanos.unwrap() < -900_000_000, "{report:?}");
    }

    #[test]
    fn the_holdover_bound_grows_at_the_maximum_drift() {
        let (sim, guard) = guarded(0);
        guard.now().unwrap();
        sim.step_nanos(250_000_000);
        sim.advance(Duration::from_secs(10));
        let r = guard.now().unwrap();
        // 10 s at 500 ppm: 5 ms each way.
        assert_eq!(r.bound(), Duration::from_millis(5));
    }

    #[test]
    fn the_source_is_trusted_again_once_it_agrees() {
        let (sim, guard) = guarded(50);
        guard.now().unwrap();
        sim.set_offset_nanos(250_000_000);
        assert_eq!(guard.now().unwrap().status, ClockStatus::FreeRunning);
        sim.set_offset_nanos(0);
        sim.advance(Duration::from_millis(10));
        let r = guard.now().unwrap();
        assert_eq!(r.status, ClockStatus::Synchronized);
        assert!(!guard.report().holding_over);
    }

    #[test]
    fn reanchoring_trusts_the_source_afresh() {
        let (sim, guard) = guarded(50);
        guard.now().unwrap();
        sim.set_offset_nanos(-250_000_000);
        assert_eq!(guard.now().unwrap().status, ClockStatus::FreeRunning);
        guard.reanchor();
        assert_eq!(guard.now().unwrap(), sim.now().unwrap());
        assert!(!guard.report().holding_over);
    }

    #[test]
    fn a_status_flap_does_not_make_a_stepped_clock_trusted() {
        let (sim, guard) = guarded(50);
        guard.now().unwrap();
        sim.step_nanos(-1_000_000_000);
        assert_eq!(guard.now().unwrap().status, ClockStatus::FreeRunning);
        sim.set_status(ClockStatus::Unknown);
        assert_eq!(guard.now().unwrap().status, ClockStatus::Unknown);
        sim.set_status(ClockStatus::Synchronized);
        let r = guard.now().unwrap();
        assert_eq!(r.status, ClockStatus::FreeRunning);
        assert!(r.interval.contains(sim.true_now()));
    }
}
