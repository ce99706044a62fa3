//! The [`Clock`] trait every time source implements, and the [`Timebase`] its waits run on.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use crate::error::ClockError;
use crate::guard::{GuardReport, LeapReport};
use crate::time::ClockReading;

/// A source of bounded time: `now()` returns an interval that contains true time, and the status
/// that says whether to believe it.
///
/// # To ensure correctness
/// Implementations must guarantee, for every `Ok` reading whose status is trustworthy
/// (`Synchronized` or `FreeRunning`), that true time lay in `[earliest, latest]` at some instant
/// between the call and its return. Everything boundkv promises about external consistency rests
/// on this one sentence; a source that cannot promise it must return `Unknown` or an error.
///
/// Implementations are shared between threads (`Send + Sync`) and are cheap to call: `now()` sits
/// on every transaction's path.
pub trait Clock: Send + Sync {
    /// Reads the clock.
    fn now(&self) -> Result<ClockReading, ClockError>;

    /// A one-line, human description of the source, for logs and `boundkv clock`
    /// (for example `clockbound segment /var/run/clockbound/shm0`).
    fn describe(&self) -> String;

    /// The clock that waits on this source are measured and slept on. Real sources use real time;
    /// a simulated clock with manual time uses its own, so that waits follow the simulation.
    fn timebase(&self) -> &dyn Timebase {
        &RealTimebase
    }

    /// What a [`crate::StepGuard`] in front of this source has seen (`None` for an unguarded
    /// source), for status pages and metrics.
    fn guard_report(&self) -> Option<GuardReport> {
        None
    }

    /// Asks a [`crate::StepGuard`] in front of this source to forget its anchor and trust the
    /// source's next reading afresh; nothing for an unguarded source. Only a layer that has
    /// stopped using the clock for anything may ask: the peer clock checks do, while they fence
    /// this node (its guard may be holding over on an anchor that was itself a lie, taken at a
    /// restart, and would otherwise refuse the source's correction forever).
    fn reanchor(&self) {}

    /// What a [`crate::StepGuard`] in front of this source knows of leap seconds: the member's
    /// policy, the kernel's state, a leap being absorbed (`None` for a source without one).
    fn leap_report(&self) -> Option<LeapReport> {
        None
    }

    /// Which reference this source's intervals are of. Every source that bounds true time has
    /// one reference, forever: epoch 0. A source whose reference changes (the cluster clock,
    /// whose intervals are of the current Raft leader's clock, `consensus::cluster_clock`)
    /// counts its references up, and a reader that waits between choosing a timestamp from a
    /// reading and using it must check that the epoch did not change meanwhile.
    fn epoch(&self) -> u64 {
        0
    }
}

impl<C: Clock + ?Sized> Clock for Arc<C> {
    fn now(&self) -> Result<ClockReading, ClockError> {
        (**self).now()
    }
    fn describe(&self) -> String {
        (**self).describe()
    }
    fn timebase(&self) -> &dyn Timebase {
        (**self).timebase()
    }
    fn guard_report(&self) -> Option<GuardReport> {
        (**self).guard_report()
    }
    fn reanchor(&self) {
        (**self).reanchor()
    }
    fn leap_report(&self) -> Option<LeapReport> {
        (**self).leap_report()
    }
    fn epoch(&self) -> u64 {
        (**self).epoch()
    }
}

/// A boxed, sendable future, as [`Timebase::sleep`] returns it.
pub type BoxFuture = Pin<Box<dyn Future<Output = ()> + Send + 'static>>;

/// Where waits happen: a monotonic elapsed-time counter and two ways to sleep on it.
///
/// Real time is the only timebase in production. Tests with a manually driven
/// [`crate::SimClock`] get one whose time moves only when the test moves it.
pub trait Timebase: Send + Sync {
    /// Time elapsed since an arbitrary fixed origin; never decreases.
    fn elapsed(&self) -> Duration;
    /// Blocks the calling thread for at least `d`.
    fn sleep_blocking(&self, d: Duration);
    /// A future that completes after at least `d`.
    fn sleep(&self, d: Duration) -> BoxFuture;
}

/// Real time: `CLOCK_MONOTONIC_RAW` for measuring, the precise timer of [`crate::wait`] for
/// sleeping.
///
/// Measuring on the raw oscillator matters because bounds are carried on it: the step guard
/// projects its last trusted interval by the elapsed time at a maximum drift, and the peer
/// checks' frames carry claims the same way. A drift bound describes an oscillator, and
/// `CLOCK_MONOTONIC` is not one: the kernel runs it at whatever rate a time service sets, and
/// chrony slews it (with the wall clock) by up to 8.3 % while it corrects an offset, which no
/// drift bound of a few hundred ppm covers. `CLOCK_MONOTONIC_RAW` is never adjusted.
#[derive(Clone, Copy, Debug, Default)]
pub struct RealTimebase;

impl Timebase for RealTimebase {
    fn elapsed(&self) -> Duration {
        static ORIGIN: std::sync::OnceLock<i64> = std::sync::OnceLock::new();
        let now = crate::sys::monotonic_raw_nanos();
        let origin = *ORIGIN.get_or_init(|| now);
        Duration::from_nanos(u64::try_from(now - origin).unwrap_or(0))
    }

    fn sleep_blocking(&self, d: Duration) {
        crate::wait::precise_sleep_blocking(d);
    }

    fn sleep(&self, d: Duration) -> BoxFuture {
        Box::pin(crate::wait::precise_sleep(d))
    }
}
