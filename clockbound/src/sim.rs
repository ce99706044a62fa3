//! [`SimClock`]: a simulated bounded clock for tests, deterministic and shared between threads.
//!
//! A simulated clock separates the two things a real one conflates:
//!
//! - **true time**, which the test controls: *manual* (it stands still until the test calls
//!   [`SimClock::advance`]), *real* (it follows this machine's monotonic clock from a starting
//!   point) or *external* (it follows an [`ExternalTime`] that a simulation owns, such as a
//!   deterministic simulator's virtual clock);
//! - **the local clock's error**: an offset from true time, a drift in ppm that accumulates with
//!   true time, forward or backward steps, an advertised bound, a status, or an injected error.
//!
//! The reading is `[local - bound, local + bound]` with `local = true + offset + drift × Δtrue`.
//! While `|offset + drift × Δtrue| <= bound` the clock tells the truth; beyond that it *lies*
//! (true time falls outside the interval), which is how tests show that a checker notices a
//! broken clock. [`SimClock::true_now`] reveals true time, so tests can check the invariant the
//! database relies on (`earliest <= true <= latest`) directly.
//!
//! Clones share one state: set the bound from a test thread and every reader sees it at once.
//!
//! ```
//! use std::time::Duration;
//! use boundkv_clockbound::{Clock, ClockStatus, SimClock, Timestamp};
//!
//! let clock = SimClock::manual(Timestamp::from_nanos(1_000_000_000));
//! clock.set_bound(Duration::from_millis(5));
//! let r = clock.now().unwrap();
//! assert_eq!(r.earliest().as_nanos(), 995_000_000);
//! clock.step_nanos(-1_000_000_000); // a leap second: the local clock jumps back 1 s
//! clock.set_status(ClockStatus::Disrupted);
//! assert_eq!(clock.now().unwrap().status, ClockStatus::Disrupted);
//! ```
//!
//! # External true time
//!
//! A deterministic simulator runs a whole cluster on one thread with virtual time, and every
//! replica's clock must follow *that* time: a real-time clock would leak this machine's
//! scheduling into the run, and a manual one would need someone to call `advance`. So
//! [`SimClock::external`] takes the simulation's notion of time as an [`ExternalTime`]: true time
//! is `start + source.elapsed()`, and every wait on the clock ([`Timebase::sleep`]) is the
//! source's own sleep, so a commit wait of 3 ms is 3 ms of *simulated* time. The clock's error
//! model (offset, drift, steps, bound, status, failure) is the same as for the other kinds; each
//! replica gets its own through [`SimClock::sibling`].
//!
//! For example, with the source at 2 s elapsed, `start` = 100 s and an offset of +1 ms, true time
//! is 102 s and the local clock reads 102.001 s. If the simulation then moves on by 500 ms, true
//! time is 102.5 s; with a drift of 100 ppm set at 102 s, the local clock now reads
//! 102.5 s + 1 ms + 50 µs.
//!
//! Blocking waits ([`Timebase::sleep_blocking`]) panic on an external clock: a simulation has one
//! thread, and blocking it would stop the very time being waited for.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use crate::clock::{BoxFuture, Clock, RealTimebase, Timebase};
use crate::error::ClockError;
use crate::time::{ClockReading, ClockStatus, TimeInterval, Timestamp};

/// True time as a simulation defines it: the source of an external [`SimClock`].
///
/// # To ensure correctness
/// - `elapsed()` never decreases, and is the same for every caller at the same moment of the
///   simulation (every replica's clock reads it as its true time).
/// - `sleep(d)` completes only once `elapsed()` has grown by at least `d` since the call; it must
///   not block the calling thread (a simulation runs on one).
pub trait ExternalTime: Send + Sync + 'static {
    /// Time elapsed since the simulation's origin; never decreases.
    fn elapsed(&self) -> Duration;
    /// A future that completes once `elapsed()` has grown by at least `d`.
    fn sleep(&self, d: Duration) -> BoxFuture;
}

/// A simulated clock. Cheap to clone; clones share state.
#[derive(Clone)]
pub struct SimClock {
    inner: Arc<SimInner>,
}

struct SimInner {
    state: Mutex<SimState>,
    advanced: Condvar,
}

#[derive(Clone)]
enum TrueTime {
    /// Stands still until advanced.
    Manual(Timestamp),
    /// `start` plus the real monotonic time elapsed since `origin`.
    Real { start: Timestamp, origin: Instant },
    /// `start` plus the time the simulation's `source` says has elapsed.
    External { start: Timestamp, source: Arc<dyn ExternalTime> },
}

struct SimState {
    truth: TrueTime,
    /// Local minus true time, not counting drift since `drift_anchor`.
    offset_nanos: i64,
    /// Local clock rate error: ns gained per second of true time (ppm × 1000).
    drift_ppb: i64,
    /// True time at which `drift_ppb` last changed.
    drift_anchor: Timestamp,
    bound: Duration,
    status: ClockStatus,
    failure: Option<ClockError>,
    auto_advance: bool,
    wakers: Vec<Waker>,
}

impl SimState {
    fn true_now(&self) -> Timestamp {
        match self.truth {
            TrueTime::Manual(t) => t,
            TrueTime::Real { start, origin } => start.saturating_add(origin.elapsed()),
            TrueTime::External { start, ref source } => start.saturating_add(source.elapsed()),
        }
    }

    fn drift_since_anchor(&self, t: Timestamp) -> i64 {
        let dt = t.signed_nanos_since(self.drift_anchor);
        (dt * i128::from(self.drift_ppb) / 1_000_000_000) as i64
    }

    fn local_error(&self, t: Timestamp) -> i64 {
        self.offset_nanos.saturating_add(self.drift_since_anchor(t))
    }
}

impl SimClock {
    /// A clock whose true time stands at `start` until [`SimClock::advance`] moves it. Bound 0,
    /// status `Synchronized`, no offset, no drift.
    pub fn manual(start: Timestamp) -> Self {
        Self::with_truth(TrueTime::Manual(start))
    }

    /// A clock whose true time starts at this machine's current `CLOCK_REALTIME` and then follows
    /// its monotonic clock, so real sleeps and threads work. Bound 0, status `Synchronized`.
    pub fn real_time() -> Self {
        let start = Timestamp::from_system_time(std::time::SystemTime::now());
        Self::with_truth(TrueTime::Real { start, origin: Instant::now() })
    }

    /// A clock whose true time is `start` plus what `source` says has elapsed: the clock of a
    /// deterministic simulation, whose waits are `source`'s sleeps. Bound 0, status
    /// `Synchronized`, no offset, no drift.
    pub fn external(start: Timestamp, source: Arc<dyn ExternalTime>) -> Self {
        Self::with_truth(TrueTime::External { start, source })
    }

    /// A clock of its own (offset, drift, bound, status all independent, starting at zero error)
    /// on the *same true time* as this one: two replicas whose clocks err differently. Only for
    /// real-time and external clocks.
    ///
    /// # Panics
    /// On a manual clock, whose true time lives in its own state.
    pub fn sibling(&self) -> SimClock {
        let truth = self.state().truth.clone();
        assert!(
            !matches!(truth, TrueTime::Manual(_)),
            "SimClock::sibling needs a real-time or external clock"
        );
        Self::with_truth(truth)
    }

    fn with_truth(truth: TrueTime) -> Self {
        // Drift is zero until `set_drift_ppm`, which re-anchors, so any anchor will do.
        let anchor = match truth {
            TrueTime::Manual(t)
            | TrueTime::Real { start: t, .. }
            | TrueTime::External { start: t, .. } => t,
        };
        SimClock {
            inner: Arc::new(SimInner {
                state: Mutex::new(SimState {
                    truth,
                    offset_nanos: 0,
                    drift_ppb: 0,
                    drift_anchor: anchor,
                    bound: Duration::ZERO,
                    status: ClockStatus::Synchronized,
                    failure: None,
                    auto_advance: false,
                    wakers: Vec::new(),
                }),
                advanced: Condvar::new(),
            }),
        }
    }

    fn state(&self) -> MutexGuard<'_, SimState> {
        self.inner.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sets the advertised bound (half-width of every interval).
    pub fn set_bound(&self, bound: Duration) -> &Self {
        self.state().bound = bound;
        self
    }

    /// Sets the status every reading reports.
    pub fn set_status(&self, status: ClockStatus) -> &Self {
        self.state().status = status;
        self
    }

    /// Sets the local clock's offset from true time, in ns (positive = the local clock is ahead),
    /// replacing any earlier offset and steps.
    pub fn set_offset_nanos(&self, offset: i64) -> &Self {
        let mut s = self.state();
        let t = s.true_now();
        s.offset_nanos = offset - s.drift_since_anchor(t);
        self
    }

    /// Steps the local clock by `delta` ns (negative = backwards, as a leap second or an NTP step
    /// does); true time is unaffected.
    pub fn step_nanos(&self, delta: i64) -> &Self {
        self.state().offset_nanos += delta;
        self
    }

    /// Sets the local clock's drift in parts per million of true time; the error accumulated so
    /// far is kept.
    pub fn set_drift_ppm(&self, ppm: f64) -> &Self {
        let mut s = self.state();
        let t = s.true_now();
        s.offset_nanos = s.local_error(t);
        s.drift_anchor = t;
        s.drift_ppb = (ppm * 1000.0).round() as i64;
        self
    }

    /// Makes every `now()` fail with `error` (or stop failing, with `None`).
    pub fn set_failure(&self, error: Option<ClockError>) -> &Self {
        self.state().failure = error;
        self
    }

    /// With auto-advance on, a manual clock's waits complete at once by moving true time forward
    /// by the time slept: single-threaded tests of commit wait run deterministically and
    /// instantly. No effect on a real-time clock.
    pub fn set_auto_advance(&self, on: bool) -> &Self {
        self.state().auto_advance = on;
        self
    }

    /// Moves a manual clock's true time forward by `d` and wakes every wait on it.
    ///
    /// # Panics
    /// On a real-time or external clock, whose true time cannot be moved.
    pub fn advance(&self, d: Duration) {
        let wakers = {
            let mut s = self.state();
            match &mut s.truth {
                TrueTime::Manual(t) => *t = t.saturating_add(d),
                TrueTime::Real { .. } => panic!("SimClock::advance on a real-time clock"),
                TrueTime::External { .. } => panic!(
                    "SimClock::advance on an external clock: its true time is the simulation's"
                ),
            }
            std::mem::take(&mut s.wakers)
        };
        self.inner.advanced.notify_all();
        wakers.into_iter().for_each(Waker::wake);
    }

    /// True time now (what the database can never see).
    pub fn true_now(&self) -> Timestamp {
        self.state().true_now()
    }

    /// The local clock's current error (local minus true), in ns.
    pub fn local_error_nanos(&self) -> i64 {
        let s = self.state();
        s.local_error(s.true_now())
    }

    fn is_manual(&self) -> bool {
        matches!(self.state().truth, TrueTime::Manual(_))
    }

    /// The external source, if this is an external clock.
    fn external_source(&self) -> Option<Arc<dyn ExternalTime>> {
        match &self.state().truth {
            TrueTime::External { source, .. } => Some(Arc::clone(source)),
            _ => None,
        }
    }
}

impl Clock for SimClock {
    fn now(&self) -> Result<ClockReading, ClockError> {
        let s = self.state();
        if let Some(e) = &s.failure {
            return Err(e.clone());
        }
        let t = s.true_now();
        let local = i128::from(t.as_nanos()) + i128::from(s.local_error(t));
        let local = Timestamp::from_nanos(local.clamp(0, i128::from(u64::MAX)) as u64);
        Ok(ClockReading { interval: TimeInterval::around(local, s.bound), status: s.status })
    }

    fn describe(&self) -> String {
        let s = self.state();
        format!(
            "simulated clock (bound ±{}, error {:+} ns, drift {:+} ppb, status {})",
            humantime::format_duration(s.bound),
            s.local_error(s.true_now()),
            s.drift_ppb,
            s.status
        )
    }

    fn timebase(&self) -> &dyn Timebase {
        self
    }
}

impl Timebase for SimClock {
    fn elapsed(&self) -> Duration {
        let s = self.state();
        match &s.truth {
            TrueTime::Manual(t) => Duration::from_nanos(t.as_nanos()),
            TrueTime::Real { origin, .. } => origin.elapsed(),
            TrueTime::External { source, .. } => source.elapsed(),
        }
    }

    /// # Panics
    /// On an external clock: a simulation has one thread, and blocking it would stop the very
    /// time being waited for.
    fn sleep_blocking(&self, d: Duration) {
        if self.external_source().is_some() {
            panic!(
                "SimClock::sleep_blocking on an external clock: nothing may block a simulation's \
                 only thread (use the async sleep)"
            );
        }
        if !self.is_manual() {
            return RealTimebase.sleep_blocking(d);
        }
        let mut s = self.state();
        let target = s.true_now().saturating_add(d);
        if s.auto_advance {
            drop(s);
            let now = self.true_now();
            self.advance(target.saturating_duration_since(now));
            return;
        }
        while s.true_now() < target {
            s = self.inner.advanced.wait(s).unwrap_or_else(|e| e.into_inner());
        }
    }

    fn sleep(&self, d: Duration) -> BoxFuture {
        if let Some(source) = self.external_source() {
            // The lock is released before the source's sleep is created or polled.
            return source.sleep(d);
        }
        if !self.is_manual() {
            return RealTimebase.sleep(d);
        }
        let target = self.true_now().saturating_add(d);
        Box::pin(ManualSleep { clock: self.clone(), target })
    }
}

/// A wait on a manual clock: ready once true time reaches `target`.
struct ManualSleep {
    clock: SimClock,
    target: Timestamp,
}

impl Future for ManualSleep {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let mut s = self.clock.state();
        let now = s.true_now();
        if now >= self.target {
            return Poll::Ready(());
        }
        if s.auto_advance {
            drop(s);
            self.clock.advance(self.target.saturating_duration_since(now));
            return Poll::Ready(());
        }
        s.wakers.push(cx.waker().clone());
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::ClockPolicy;

    const SEC: u64 = 1_000_000_000;

    #[test]
    fn offset_drift_and_steps_compose() {
        let c = SimClock::manual(Timestamp::from_nanos(100 * SEC));
        c.set_bound(Duration::from_micros(10));
        assert_eq!(c.now().unwrap().interval.midpoint(), Timestamp::from_nanos(100 * SEC));

        c.set_offset_nanos(5_000);
        assert_eq!(c.local_error_nanos(), 5_000);
        c.set_drift_ppm(100.0); // 100 µs per second
        c.advance(Duration::from_secs(2));
        assert_eq!(c.local_error_nanos(), 5_000 + 200_000);
        c.step_nanos(-1_000_000_000);
        assert_eq!(c.local_error_nanos(), 205_000 - 1_000_000_000);
        let r = c.now().unwrap();
        assert_eq!(r.interval.midpoint().as_nanos(), 102 * SEC + 205_000 - SEC);
        assert_eq!(r.bound(), Duration::from_micros(10));
        // Changing drift keeps what was accumulated.
        c.set_drift_ppm(0.0);
        c.advance(Duration::from_secs(10));
        assert_eq!(c.local_error_nanos(), 205_000 - 1_000_000_000);
        // set_offset replaces everything accumulated.
        c.set_offset_nanos(0);
        assert_eq!(c.local_error_nanos(), 0);
    }

    #[test]
    fn a_lying_clock_excludes_true_time() {
        let c = SimClock::manual(Timestamp::from_nanos(10 * SEC));
        c.set_bound(Duration::from_millis(1)).set_offset_nanos(2_000_000);
        let r = c.now().unwrap();
        assert!(!r.interval.contains(c.true_now()));
        c.set_offset_nanos(999_999);
        assert!(c.now().unwrap().interval.contains(c.true_now()));
    }

    #[test]
    fn injected_failures_and_statuses_are_reported() {
        let c = SimClock::manual(Timestamp::from_nanos(SEC));
        c.set_failure(Some(ClockError::Simulated("daemon gone".into())));
        assert!(matches!(c.now(), Err(ClockError::Simulated(_))));
        c.set_failure(None).set_status(ClockStatus::Unknown);
        assert_eq!(c.now().unwrap().status, ClockStatus::Unknown);
    }

    #[test]
    fn clones_share_state_across_threads() {
        let c = SimClock::manual(Timestamp::from_nanos(SEC));
        let c2 = c.clone();
        std::thread::spawn(move || {
            c2.set_bound(Duration::from_millis(7));
            c2.advance(Duration::from_secs(1));
        })
        .join()
        .unwrap();
        assert_eq!(c.now().unwrap().bound(), Duration::from_millis(7));
        assert_eq!(c.true_now(), Timestamp::from_nanos(2 * SEC));
    }

    #[test]
    fn manual_sleeps_wait_for_advance_and_auto_advance_completes_them() {
        let c = SimClock::manual(Timestamp::from_nanos(SEC));
        let c2 = c.clone();
        let waiter = std::thread::spawn(move || c2.sleep_blocking(Duration::from_millis(10)));
        std::thread::sleep(Duration::from_millis(20));
        assert!(!waiter.is_finished(), "manual time has not moved");
        c.advance(Duration::from_millis(10));
        waiter.join().unwrap();

        c.set_auto_advance(true);
        let before = c.true_now();
        c.sleep_blocking(Duration::from_secs(3));
        assert_eq!(c.true_now(), before.saturating_add(Duration::from_secs(3)));
    }

    #[test]
    fn siblings_share_true_time_but_not_their_errors() {
        let a = SimClock::real_time();
        let b = a.sibling();
        a.set_offset_nanos(4_000_000).set_bound(Duration::from_millis(5));
        b.set_offset_nanos(-4_000_000);
        let (ta, tb) = (a.true_now(), b.true_now());
        assert!(tb.saturating_duration_since(ta) < Duration::from_millis(50));
        assert_eq!(b.now().unwrap().bound(), Duration::ZERO);
        assert_eq!(a.local_error_nanos() - b.local_error_nanos(), 8_000_000);
    }

    /// A stand-in for a simulator's virtual time: an atomic count of nanoseconds that only the
    /// test (or a sleep, which jumps straight to its deadline) moves.
    #[derive(Default)]
    struct FakeTime {
        nanos: std::sync::atomic::AtomicU64,
    }

    impl FakeTime {
        fn advance(&self, d: Duration) {
            self.nanos.fetch_add(d.as_nanos() as u64, std::sync::atomic::Ordering::SeqCst);
        }
    }

    impl ExternalTime for FakeTime {
        fn elapsed(&self) -> Duration {
            Duration::from_nanos(self.nanos.load(std::sync::atomic::Ordering::SeqCst))
        }

        fn sleep(&self, d: Duration) -> BoxFuture {
            // An idle simulation jumps to the next deadline: the sleep moves time and is done.
            self.advance(d);
            Box::pin(std::future::ready(()))
        }
    }

    fn block_on<F: Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(f)
    }

    #[test]
    fn external_clocks_follow_their_source() {
        let time = Arc::new(FakeTime::default());
        time.advance(Duration::from_secs(2));
        let c = SimClock::external(Timestamp::from_nanos(100 * SEC), time.clone());
        assert_eq!(c.true_now(), Timestamp::from_nanos(102 * SEC));
        assert_eq!(c.timebase().elapsed(), Duration::from_secs(2));

        // The worked example of the module docs.
        c.set_offset_nanos(1_000_000);
        assert_eq!(c.now().unwrap().interval.midpoint().as_nanos(), 102 * SEC + 1_000_000);
        c.set_drift_ppm(100.0);
        time.advance(Duration::from_millis(500));
        assert_eq!(c.true_now(), Timestamp::from_nanos(102 * SEC + SEC / 2));
        assert_eq!(c.local_error_nanos(), 1_000_000 + 50_000);

        // The other setters work unchanged.
        c.set_bound(Duration::from_millis(2)).set_status(ClockStatus::FreeRunning);
        c.step_nanos(-1_050_000);
        let r = c.now().unwrap();
        assert_eq!(r.interval.midpoint(), c.true_now());
        assert_eq!(r.bound(), Duration::from_millis(2));
        assert_eq!(r.status, ClockStatus::FreeRunning);
        c.set_failure(Some(ClockError::Simulated("daemon gone".into())));
        assert!(c.now().is_err());
    }

    #[test]
    fn external_sleeps_and_commit_waits_run_on_the_source() {
        let time = Arc::new(FakeTime::default());
        let c = SimClock::external(Timestamp::from_nanos(SEC), time.clone());
        block_on(c.timebase().sleep(Duration::from_millis(7)));
        assert_eq!(time.elapsed(), Duration::from_millis(7));
        assert_eq!(c.true_now(), Timestamp::from_nanos(SEC + 7_000_000));

        // A commit wait on a 5 ms bound takes simulated time only.
        c.set_bound(Duration::from_millis(5));
        let target = c.now().unwrap().latest();
        let waited =
            block_on(crate::wait::wait_until_after(&c, target, &ClockPolicy::default())).unwrap();
        assert!(waited.reading.earliest() > target);
        assert!(waited.waited >= Duration::from_millis(10), "{waited:?}");
        assert!(time.elapsed() >= Duration::from_millis(17));
    }

    #[test]
    fn external_siblings_share_true_time_but_not_their_errors() {
        let time = Arc::new(FakeTime::default());
        let a = SimClock::external(Timestamp::from_nanos(SEC), time.clone());
        let b = a.sibling();
        a.set_offset_nanos(4_000_000).set_bound(Duration::from_millis(5));
        b.set_offset_nanos(-4_000_000);
        time.advance(Duration::from_secs(1));
        assert_eq!(a.true_now(), b.true_now());
        assert_eq!(b.true_now(), Timestamp::from_nanos(2 * SEC));
        assert_eq!(b.now().unwrap().bound(), Duration::ZERO);
        assert_eq!(a.local_error_nanos() - b.local_error_nanos(), 8_000_000);
    }

    #[test]
    #[should_panic(expected = "nothing may block a simulation's only thread")]
    fn external_clocks_refuse_to_block() {
        let c = SimClock::external(Timestamp::from_nanos(SEC), Arc::new(FakeTime::default()));
        c.timebase().sleep_blocking(Duration::from_millis(1));
    }

    #[test]
    #[should_panic(expected = "SimClock::advance on an external clock")]
    fn external_clocks_cannot_be_advanced() {
        let c = SimClock::external(Timestamp::from_nanos(SEC), Arc::new(FakeTime::default()));
        c.advance(Duration::from_millis(1));
    }

    #[test]
    fn real_time_clocks_follow_the_monotonic_clock() {
        let c = SimClock::real_time();
        let a = c.true_now();
        std::thread::sleep(Duration::from_millis(5));
        assert!(c.true_now().saturating_duration_since(a) >= Duration::from_millis(5));
    }
}
