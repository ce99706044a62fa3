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
//! stepped for good (an NTP step that corrected a real error, an unannounced leap second) holds
//! over until its bound passes the policy's ceiling, and the node then refuses to issue
//! timestamps until it is restarted, which anchors afresh (`boundkv status` and the log say so).
//! Refusing is the safe answer: an anchor cannot tell a correction from a lie without asking
//! other clocks.
//!
//! # Leap seconds
//!
//! A leap second the kernel *announced* is the one step the guard can tell from a lie without
//! asking anyone: its size (one second), its direction and its instant (the UTC midnight `L`)
//! are known in advance. A guard built [`StepGuard::with_leap`] with [`LeapPolicy::Step`]
//! reads the kernel's leap state ([`crate::leap`], `adjtimex`) once a second and at once when
//! it sees a step, and when a reading disagrees with the projection but *the same reading
//! corrected by the announced leap* ([`LeapEvent::absorb_interval`]) agrees with it, it
//! absorbs the leap instead of holding over: from then on every reading is corrected by
//! `c(raw)`, one second at the step falling linearly to zero over 24 h, and the corrected
//! reading is anchored, passed on with its own status and its own bound.
//!
//! **The reference time and why every interval contains it.** Call `U(τ)` the correctly
//! stepped Unix clock at true instant `τ` (what an honest raw reading brackets). The reference
//! is `S(τ) = U(τ)` before the step and `S(τ) = absorb(U(τ))` after it. `S` never goes back:
//! at the step `U` falls from `L` to `L − 1 s` and `absorb(L − 1 s) = L`, and after it `absorb`
//! is non-decreasing (slope `1 − 1/24 h`). An honest raw reading `[e, l] ∋ U(τ)` therefore
//! maps to `[absorb(e), absorb(l)] ∋ S(τ)`, no wider than `[e, l]` (a delete widens it by
//! 11.6 ppm of itself). `S` runs 11.6 ppm slow against true time for the 24 h, well inside the
//! 500 ppm the projection allows, so the projection's guarantee still holds with `S` as the
//! truth. Every stepping member computes the same `absorb` from the same `L`, so their
//! intervals all contain the same `S(τ)` and keep meeting each other: the peer clock checks do
//! not fence, commit wait on one member and a read on another still compare the same time.
//!
//! **What it does not do.** An unannounced step, a step away from the announced midnight, or a
//! step that is not one second (the corrected reading still misses the projection) holds over
//! as before. A member that declared [`LeapPolicy::Smear`] never absorbs: its clock should
//! never step, and if its kernel announces a leap it warns (the smear and the kernel's step
//! would both apply). A member restarted while the absorption runs reads the kernel's state
//! (`TIME_OOP`, or `TIME_WAIT` within [`KERNEL_WAIT_TRUSTED`] of the midnight: it resumes the
//! absorption) or the record the guard wrote
//! when the absorption began ([`StepGuard::with_leap_record`]; the server keeps it in its data
//! directory). Without either it anchors on the raw clock, which is honest about raw time but
//! up to one second behind its peers' corrected clocks: the peer clock checks see that
//! (Cristian's intervals do not meet) and fence it until it agrees, so it is unavailable, never
//! wrong.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::clock::{Clock, Timebase};
use crate::error::ClockError;
use crate::leap::{KernelLeap, LeapEvent, LeapKind, LeapPolicy, LeapSource, LeapState};
use crate::time::{ClockReading, ClockStatus, TimeInterval, Timestamp};

/// How often the guard asks the kernel for its leap state (it also asks at once when it sees a
/// step).
pub const LEAP_POLL_INTERVAL: Duration = Duration::from_secs(1);

/// How long after a UTC midnight the kernel's `TIME_WAIT` is taken to mean "a leap happened at
/// that midnight". NTP daemons clear their flag within seconds to minutes of the leap; a flag
/// left set for longer (a daemon that died) keeps the kernel in `TIME_WAIT` for days, and would
/// otherwise name every later midnight.
pub const KERNEL_WAIT_TRUSTED: Duration = Duration::from_secs(3600);

/// The leap the kernel's state names at raw time `raw`, with `TIME_WAIT` trusted only within
/// [`KERNEL_WAIT_TRUSTED`] of the midnight it names.
fn kernel_event(kernel: &KernelLeap, raw: Timestamp) -> Option<LeapEvent> {
    let event = kernel.event(raw)?;
    if kernel.state == LeapState::JustHappened
        && raw.saturating_duration_since(event.at) > KERNEL_WAIT_TRUSTED
    {
        return None;
    }
    Some(event)
}

/// The default maximum drift of the monotonic clock against true time: the kernel's largest
/// slew rate.
pub const DEFAULT_MAX_DRIFT_PPM: u32 = 500;

/// Wraps a [`Clock`] and refuses to pass on a reading that disagrees with the clock's own past
/// (see the module docs).
pub struct StepGuard<C> {
    inner: C,
    max_drift_ppm: u32,
    leap: Option<LeapConfig>,
    state: Mutex<GuardState>,
}

/// The member's leap policy and where the kernel's leap state comes from.
struct LeapConfig {
    policy: LeapPolicy,
    source: Arc<dyn LeapSource>,
    /// Where a leap being absorbed is remembered across restarts, if anywhere.
    record: Option<Arc<dyn LeapRecord>>,
}

/// Where a step guard remembers the leap it is absorbing, so that the node's next incarnation
/// resumes the absorption ([`StepGuard::with_leap_record`]).
pub trait LeapRecord: Send + Sync {
    /// The leap recorded, if any.
    fn load(&self) -> Option<LeapEvent>;
    /// Records `event` (best effort: a record lost means a restart anchors on the raw clock and
    /// is fenced by its peers until it agrees).
    fn store(&self, event: &LeapEvent);
}

/// A [`LeapRecord`] in a file (`"AT_NANOS insert|delete"`), written by a rename: what a server
/// keeps in its data directory.
#[derive(Clone, Debug)]
pub struct FileLeapRecord(pub PathBuf);

impl LeapRecord for FileLeapRecord {
    fn load(&self) -> Option<LeapEvent> {
        read_leap_record(&self.0)
    }
    fn store(&self, event: &LeapEvent) {
        write_leap_record(&self.0, event);
    }
}

/// A [`LeapRecord`] in memory, shared between clones: a simulated node's, which outlives its
/// incarnations as its disk does.
#[derive(Clone, Debug, Default)]
pub struct MemoryLeapRecord(Arc<Mutex<Option<LeapEvent>>>);

impl LeapRecord for MemoryLeapRecord {
    fn load(&self) -> Option<LeapEvent> {
        *self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
    fn store(&self, event: &LeapEvent) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = Some(*event);
    }
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
    /// The kernel's leap state as last read, and when (monotonic).
    kernel: Option<(KernelLeap, Duration)>,
    /// The leap the kernel announced (kept after the kernel forgets it, until its absorption
    /// is over).
    announced: Option<LeapEvent>,
    /// The leap being absorbed: every reading is corrected by it (see [`crate::leap`]).
    absorbing: Option<LeapEvent>,
    /// Leaps absorbed since start.
    leaps: u64,
    /// The correction applied to the last reading (ns).
    correction_nanos: i64,
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

/// What the guard knows of leap seconds, for `boundkv clock`, status pages and metrics.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeapReport {
    /// The member's declared policy.
    pub policy: LeapPolicy,
    /// The kernel's state as last read.
    pub kernel: KernelLeap,
    /// The leap the kernel announced, if any (kept until its absorption is over).
    pub announced: Option<LeapEvent>,
    /// The leap being absorbed, if one is.
    pub absorbing: Option<LeapEvent>,
    /// The correction applied to the last reading, in signed nanoseconds (0 when none).
    pub correction_nanos: i64,
}

impl<C: Clock> StepGuard<C> {
    /// Guards `inner` with the default maximum drift ([`DEFAULT_MAX_DRIFT_PPM`]).
    pub fn new(inner: C) -> Self {
        Self::with_max_drift_ppm(inner, DEFAULT_MAX_DRIFT_PPM)
    }

    /// Guards `inner`, assuming the monotonic clock runs within `ppm` of true time.
    pub fn with_max_drift_ppm(inner: C, ppm: u32) -> Self {
        StepGuard {
            inner,
            max_drift_ppm: ppm,
            leap: None,
            state: Mutex::new(GuardState::default()),
        }
    }

    /// Declares the member's leap policy and reads the kernel's leap state from `source`. With
    /// [`LeapPolicy::Step`], a step of one second that the kernel announced is absorbed (see the
    /// module docs) instead of held over. Without this call the guard knows nothing of leap
    /// seconds: every step holds over.
    pub fn with_leap(mut self, policy: LeapPolicy, source: Arc<dyn LeapSource>) -> Self {
        self.leap = Some(LeapConfig { policy, source, record: None });
        self
    }

    /// Remembers a leap being absorbed in the file at `path` (written when the absorption
    /// starts, read at the first reading), so that a member restarted during the absorption
    /// goes on correcting its clock as its peers do instead of anchoring one second behind them.
    /// Needs [`StepGuard::with_leap`] first.
    pub fn with_leap_record(self, path: impl Into<PathBuf>) -> Self {
        self.with_leap_record_in(Arc::new(FileLeapRecord(path.into())))
    }

    /// As [`StepGuard::with_leap_record`], in any [`LeapRecord`].
    pub fn with_leap_record_in(mut self, record: Arc<dyn LeapRecord>) -> Self {
        if let Some(l) = self.leap.as_mut() {
            l.record = Some(record);
        }
        self
    }

    /// What the guard knows of leap seconds (`None` without [`StepGuard::with_leap`]).
    pub fn leap_report(&self) -> Option<LeapReport> {
        let leap = self.leap.as_ref()?;
        let s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let kernel = s.kernel.map_or_else(|| leap.source.read(), |(k, _)| k);
        Some(LeapReport {
            policy: leap.policy,
            kernel,
            announced: s.announced,
            absorbing: s.absorbing,
            correction_nanos: s.correction_nanos,
        })
    }

    /// Reads the kernel's leap state if it is due (or `force`d), remembering what it announces
    /// (at raw time `raw`) and logging a new announcement once.
    fn poll_leap(&self, s: &mut GuardState, mono: Duration, raw: Timestamp, force: bool) {
        let Some(leap) = self.leap.as_ref() else { return };
        let due = s.kernel.is_none_or(|(_, at)| mono.saturating_sub(at) >= LEAP_POLL_INTERVAL);
        if !due && !force {
            return;
        }
        let kernel = leap.source.read();
        s.kernel = Some((kernel, mono));
        // A remembered announcement stays until its absorption is over, even once the kernel
        // has cleared its flag (and a flag left set after the leap, which would name the next
        // midnight, does not replace it).
        if let Some(a) = s.announced
            && !a.window_contains(raw)
            && !a.absorbing_at(raw)
        {
            s.announced = None;
        }
        let Some(event) = kernel_event(&kernel, raw) else { return };
        if s.announced.is_some() {
            return;
        }
        s.announced = Some(event);
        match leap.policy {
            LeapPolicy::Step => tracing::warn!(
                leap = %event,
                kernel = %kernel,
                "the kernel announces a leap second; this member steps (--leap step): the step \
                 guard will absorb the kernel's one-second step over 24 h, as every stepping \
                 member does"
            ),
            LeapPolicy::Smear => tracing::warn!(
                leap = %event,
                kernel = %kernel,
                "the kernel announces a leap second although this member declared --leap smear: \
                 the kernel will step the clock (is chrony's leapsectz or leapsecmode system set \
                 with a smearing source?); the step guard will hold over and the node will \
                 refuse timestamps once its bound passes the ceiling"
            ),
        }
    }

    /// At the first reading: a member started after the step (the kernel still says so, or its
    /// leap record does) absorbs from its first reading on.
    fn resume_absorption(&self, s: &mut GuardState, raw: Timestamp) {
        let Some(leap) = self.leap.as_ref().filter(|l| l.policy == LeapPolicy::Step) else {
            return;
        };
        let from_kernel = s.kernel.and_then(|(k, _)| {
            matches!(k.state, LeapState::InLeapSecond | LeapState::JustHappened)
                .then(|| kernel_event(&k, raw))
                .flatten()
        });
        let event = from_kernel.or_else(|| leap.record.as_ref().and_then(|r| r.load()));
        let Some(event) = event.filter(|e| raw >= e.base() && e.absorbing_at(raw)) else {
            return;
        };
        tracing::warn!(
            leap = %event,
            correction_ms = event.correction_nanos(raw) as f64 / 1e6,
            "clock step guard: started after a leap second it must still absorb; correcting the \
             clock as every stepping member does"
        );
        s.absorbing = Some(event);
        s.announced = Some(event);
    }

    /// A reading disjoint from the projection: if it is the announced leap's step, start
    /// absorbing it and return the corrected reading.
    fn absorb_leap_step(
        &self,
        s: &mut GuardState,
        mono: Duration,
        raw: &ClockReading,
        projected: &TimeInterval,
    ) -> Option<ClockReading> {
        let leap = self.leap.as_ref().filter(|l| l.policy == LeapPolicy::Step)?;
        self.poll_leap(s, mono, raw.interval.midpoint(), true);
        let event = s.announced?;
        if raw.latest() < event.base() || !event.absorbing_at(raw.earliest()) {
            return None;
        }
        let corrected = event.absorb_interval(raw.interval);
        if !intersects(&corrected, projected) {
            return None;
        }
        s.absorbing = Some(event);
        s.leaps += 1;
        s.correction_nanos = event.correction_nanos(raw.interval.midpoint());
        s.holding_over = None;
        s.anchor = Some((corrected, mono));
        if let Some(record) = &leap.record {
            record.store(&event);
        }
        tracing::warn!(
            leap = %event,
            source = %format!("[{}, {}]", raw.earliest(), raw.latest()),
            corrected = %format!("[{}, {}]", corrected.earliest, corrected.latest),
            "clock step guard: the kernel stepped the clock for the announced leap second; \
             absorbing the second over 24 h (the clock never goes back, its bound does not grow)"
        );
        Some(ClockReading { interval: corrected, status: raw.status })
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

/// The leap being absorbed, as [`write_leap_record`] left it: `"AT_NANOS insert|delete"`.
fn read_leap_record(path: &std::path::Path) -> Option<LeapEvent> {
    let text = std::fs::read_to_string(path).ok()?;
    let (at, kind) = text.trim().split_once(' ')?;
    let kind = match kind {
        "insert" => LeapKind::Insert,
        "delete" => LeapKind::Delete,
        _ => return None,
    };
    Some(LeapEvent { at: Timestamp::from_nanos(at.parse().ok()?), kind })
}

fn write_leap_record(path: &std::path::Path, event: &LeapEvent) {
    let kind = match event.kind {
        LeapKind::Insert => "insert",
        LeapKind::Delete => "delete",
    };
    let tmp = path.with_extension("tmp");
    let written = std::fs::write(&tmp, format!("{} {kind}\n", event.at.as_nanos()))
        .and_then(|()| std::fs::rename(&tmp, path));
    if let Err(e) = written {
        // Without the record a restart inside the absorption anchors on the raw clock and is
        // fenced by its peers until it agrees: unavailable there, not wrong.
        tracing::warn!(path = %path.display(), error = %e, "cannot record the leap being absorbed");
    }
}

impl std::fmt::Display for LeapReport {
    /// One line: `step; kernel: insert scheduled (adjtimex 1, status 0x0011, TAI−UTC 37 s);
    /// leap: insert at 2016-12-31T24:00:00Z; absorbing: +0.500000000 s`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}; kernel: {}", self.policy, self.kernel)?;
        if let Some(e) = self.announced {
            write!(f, "; leap: {e}")?;
        }
        if self.absorbing.is_some() {
            write!(f, "; absorbing: {:+.9} s", self.correction_nanos as f64 / 1e9)?;
        }
        Ok(())
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
        self.poll_leap(&mut s, mono, reading.interval.midpoint(), false);
        if !reading.status.is_trustworthy() {
            // The source itself says it does not know: pass that on (on the absorbed time scale
            // while a leap is being absorbed, like every other reading). The anchor stays: a
            // status flap is no reason to believe a stepped clock.
            return Ok(match s.absorbing {
                Some(e) => {
                    ClockReading { interval: e.absorb_interval(reading.interval), ..reading }
                }
                None => reading,
            });
        }
        if s.anchor.is_none() && s.absorbing.is_none() {
            self.resume_absorption(&mut s, reading.interval.midpoint());
        }
        if let Some(event) = s.absorbing
            && !event.absorbing_at(reading.earliest())
        {
            tracing::info!(leap = %event, "clock step guard: the leap second is absorbed; the clock is passed through again");
            s.absorbing = None;
        }
        let raw = reading;
        s.correction_nanos = s.absorbing.map_or(0, |e| e.correction_nanos(raw.interval.midpoint()));
        let reading = match s.absorbing {
            Some(event) => ClockReading { interval: event.absorb_interval(raw.interval), ..raw },
            None => raw,
        };
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
        if s.absorbing.is_none()
            && let Some(corrected) = self.absorb_leap_step(&mut s, mono, &raw, &projected)
        {
            return Ok(corrected);
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
        let leap = self.leap.as_ref().map_or(String::new(), |l| format!(", leap {}", l.policy));
        format!(
            "{} (step guard, monotonic drift ≤ {} ppm{leap})",
            self.inner.describe(),
            self.max_drift_ppm
        )
    }

    fn leap_report(&self) -> Option<LeapReport> {
        StepGuard::leap_report(self)
    }

    fn epoch(&self) -> u64 {
        self.inner.epoch()
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

    mod leap {
        use super::*;
        use crate::leap::{ABSORB_PERIOD, LeapState, SimLeapSource};

        /// 2016-12-31T24:00:00Z, the last leap second so far.
        const L: u64 = 1_483_228_800_000_000_000;
        const SEC: i64 = 1_000_000_000;

        struct Member {
            sim: SimClock,
            guard: StepGuard<SimClock>,
            last: Option<TimeInterval>,
        }

        fn member(offset_nanos: i64, start: u64, kernel: &SimLeapSource) -> Member {
            let sim = SimClock::manual(Timestamp::from_nanos(start));
            sim.set_bound(Duration::from_micros(50));
            sim.set_offset_nanos(offset_nanos);
            let guard =
                StepGuard::new(sim.clone()).with_leap(LeapPolicy::Step, Arc::new(kernel.clone()));
            Member { sim, guard, last: None }
        }

        /// The reference time: UTC before the leap, the absorbed clock after it (`true` is
        /// the simulation's true time on the pre-leap timescale: after the leap the kernel's
        /// correct clock reads `true − 1 s`).
        fn reference(truth: Timestamp) -> Timestamp {
            let event = LeapEvent { at: Timestamp::from_nanos(L), kind: LeapKind::Insert };
            if truth.as_nanos() < L {
                truth
            } else {
                event.absorb(Timestamp::from_nanos(truth.as_nanos() - SEC as u64))
            }
        }

        /// Reads every member: each answer must be trusted (no holdover), contain the
        /// reference, never go back, keep its source's bound, and meet every other answer.
        fn read_all(members: &mut [Member]) -> Vec<ClockReading> {
            let readings: Vec<ClockReading> =
                members.iter().map(|m| m.guard.now().unwrap()).collect();
            for (m, r) in members.iter_mut().zip(&readings) {
                let truth = m.sim.true_now();
                assert_eq!(r.status, ClockStatus::Synchronized, "at {truth}: {r:?}");
                assert!(!m.guard.report().holding_over, "at {truth}: {:?}", m.guard.report());
                assert!(
                    r.interval.contains(reference(truth)),
                    "at {truth}: {r:?} misses {}",
                    reference(truth)
                );
                assert!(
                    r.bound() <= Duration::from_micros(50),
                    "at {truth}: the bound grew: {r:?}"
                );
                if let Some(last) = m.last {
                    assert!(
                        r.earliest() >= last.earliest && r.latest() >= last.latest,
                        "at {truth}: went back from {last:?} to {r:?}"
                    );
                }
                m.last = Some(r.interval);
            }
            for a in &readings {
                for b in &readings {
                    assert!(intersects(&a.interval, &b.interval), "members disagree: {a:?} {b:?}");
                }
            }
            readings
        }

        fn advance(members: &[Member], d: Duration) {
            for m in members {
                m.sim.advance(d);
            }
        }

        #[test]
        fn every_stepping_member_carries_through_an_announced_leap_with_nothing_stale() {
            let kernel = SimLeapSource::new();
            kernel.set(LeapState::InsertScheduled);
            let start = L - 10 * SEC as u64;
            let mut members: Vec<Member> =
                [-20_000, 0, 30_000].iter().map(|&o| member(o, start, &kernel)).collect();
            for _ in 0..100 {
                read_all(&mut members);
                advance(&members, Duration::from_millis(100));
            }
            // True time L: every kernel steps back one second and reads 23:59:59 again.
            assert_eq!(members[0].sim.true_now().as_nanos(), L);
            kernel.set(LeapState::InLeapSecond);
            for m in &members {
                m.sim.step_nanos(-SEC);
            }
            for i in 0..100 {
                if i == 10 {
                    kernel.set(LeapState::JustHappened);
                }
                if i == 50 {
                    kernel.set(LeapState::None); // the daemon cleared its flag
                }
                read_all(&mut members);
                advance(&members, Duration::from_millis(100));
            }
            for m in &members {
                let leap = m.guard.leap_report().unwrap();
                assert!(leap.absorbing.is_some(), "{leap:?}");
                assert!(leap.correction_nanos > 999_000_000, "{leap:?}");
                assert_eq!(m.guard.report().steps, 0);
            }
            // Through the absorption, hour by hour, and past its end.
            for _ in 0..26 {
                advance(&members, Duration::from_secs(3600));
                read_all(&mut members);
            }
            for m in &mut members {
                // Absorbed: the raw clock is passed through again, and there is no holdover
                // ceiling to reach.
                assert_eq!(m.guard.now().unwrap(), m.sim.now().unwrap());
                let leap = m.guard.leap_report().unwrap();
                assert_eq!((leap.absorbing, leap.correction_nanos), (None, 0), "{leap:?}");
            }
            assert!(ABSORB_PERIOD < Duration::from_secs(26 * 3600));
        }

        #[test]
        fn an_unannounced_step_still_holds_over() {
            let kernel = SimLeapSource::new(); // nothing announced
            let m = member(0, L - 5 * SEC as u64, &kernel);
            m.guard.now().unwrap();
            m.sim.advance(Duration::from_secs(5));
            m.sim.step_nanos(-SEC);
            let r = m.guard.now().unwrap();
            assert_eq!(r.status, ClockStatus::FreeRunning);
            assert!(m.guard.report().holding_over);
            assert!(m.guard.leap_report().unwrap().absorbing.is_none());
        }

        #[test]
        fn an_announced_leap_is_not_absorbed_by_a_smearing_member_or_away_from_midnight() {
            let kernel = SimLeapSource::new();
            kernel.set(LeapState::InsertScheduled);
            // A member that declared smear: the kernel's step is a step like any other.
            let sim = SimClock::manual(Timestamp::from_nanos(L - 5 * SEC as u64));
            let smear =
                StepGuard::new(sim.clone()).with_leap(LeapPolicy::Smear, Arc::new(kernel.clone()));
            smear.now().unwrap();
            sim.advance(Duration::from_secs(5));
            sim.step_nanos(-SEC);
            assert_eq!(smear.now().unwrap().status, ClockStatus::FreeRunning);
            assert!(smear.report().holding_over);
            // A one-second step back six hours before the announced midnight is not the leap.
            let m = member(0, L - 6 * 3600 * SEC as u64, &kernel);
            m.guard.now().unwrap();
            m.sim.advance(Duration::from_secs(1));
            m.sim.step_nanos(-SEC);
            assert_eq!(m.guard.now().unwrap().status, ClockStatus::FreeRunning);
            assert!(m.guard.report().holding_over);
        }

        #[test]
        fn a_kernel_stuck_in_time_wait_names_no_later_midnight() {
            // A daemon died with STA_INS set: the kernel stays in TIME_WAIT for days. A node
            // started two days after the leap must not take the last midnight for a leap.
            let kernel = SimLeapSource::new();
            kernel.set(LeapState::JustHappened);
            let m = member(0, L + 2 * 86_400 * SEC as u64 + 3 * 3600 * SEC as u64, &kernel);
            assert_eq!(m.guard.now().unwrap(), m.sim.now().unwrap());
            let leap = m.guard.leap_report().unwrap();
            assert_eq!((leap.announced, leap.absorbing), (None, None), "{leap:?}");
            // Within the hour after the midnight it is believed: a node started then resumes.
            let m = member(-SEC, L + 600 * SEC as u64, &kernel);
            let r = m.guard.now().unwrap();
            assert!(m.guard.leap_report().unwrap().absorbing.is_some());
            assert!(r.interval.contains(reference(m.sim.true_now())), "{r:?}");
        }

        #[test]
        fn a_deleted_second_is_absorbed_too() {
            let kernel = SimLeapSource::new();
            kernel.set(LeapState::DeleteScheduled);
            // The kernel skips 23:59:59: at true L − 1 s the clock jumps to L.
            let m = member(0, L - 3 * SEC as u64, &kernel);
            let before = m.guard.now().unwrap();
            m.sim.advance(Duration::from_secs(2));
            m.sim.step_nanos(SEC);
            kernel.set(LeapState::JustHappened);
            let after = m.guard.now().unwrap();
            assert_eq!(after.status, ClockStatus::Synchronized);
            assert!(after.earliest() > before.latest());
            assert!(after.interval.contains(m.sim.true_now()), "{after:?}");
            assert!(!m.guard.report().holding_over);
        }

        #[test]
        fn a_member_restarted_inside_the_absorption_is_behind_without_its_record_and_agrees_with_it()
         {
            let dir = tempfile::tempdir().unwrap();
            let record = dir.path().join("leap");
            let kernel = SimLeapSource::new();
            kernel.set(LeapState::InsertScheduled);
            let sim = SimClock::manual(Timestamp::from_nanos(L - SEC as u64));
            sim.set_bound(Duration::from_micros(50));
            let running = StepGuard::new(sim.clone())
                .with_leap(LeapPolicy::Step, Arc::new(kernel.clone()))
                .with_leap_record(&record);
            running.now().unwrap();
            sim.advance(Duration::from_secs(1));
            sim.step_nanos(-SEC);
            kernel.set(LeapState::JustHappened);
            assert_eq!(running.now().unwrap().status, ClockStatus::Synchronized);
            assert!(record.exists());
            // An hour later the daemon has cleared the flag; the node restarts.
            kernel.set(LeapState::None);
            sim.advance(Duration::from_secs(3600));
            let peers = running.now().unwrap();
            assert!(peers.interval.contains(reference(sim.true_now())));

            // Without the record it anchors on the raw clock: honest about raw time, but
            // 1 s − 1 h/24 h behind its peers; Cristian's check fails and the peer clock checks
            // fence it (consensus::clock_check) until it agrees.
            let forgetful =
                StepGuard::new(sim.clone()).with_leap(LeapPolicy::Step, Arc::new(kernel.clone()));
            let r = forgetful.now().unwrap();
            assert!(
                r.interval.contains(Timestamp::from_nanos(sim.true_now().as_nanos() - SEC as u64))
            );
            assert!(!intersects(&r.interval, &peers.interval), "{r:?} {peers:?}");
            let behind = peers.interval.midpoint().signed_nanos_since(r.interval.midpoint());
            assert!((950_000_000..960_000_000).contains(&behind), "{behind}");

            // With it, it goes on correcting as its peers do.
            let resumed = StepGuard::new(sim.clone())
                .with_leap(LeapPolicy::Step, Arc::new(kernel.clone()))
                .with_leap_record(&record);
            let r = resumed.now().unwrap();
            assert_eq!(r.status, ClockStatus::Synchronized);
            assert!(r.interval.contains(reference(sim.true_now())), "{r:?}");
            assert_eq!(r, peers);
            // A record of a leap whose absorption is over is ignored.
            sim.advance(Duration::from_secs(24 * 3600));
            let late = StepGuard::new(sim.clone())
                .with_leap(LeapPolicy::Step, Arc::new(kernel.clone()))
                .with_leap_record(&record);
            assert_eq!(late.now().unwrap(), sim.now().unwrap());
        }
    }
}
