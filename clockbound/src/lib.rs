//! boundkv's bounded clock: the one input that external consistency rests on.
//!
//! # The idea
//!
//! No machine knows the exact time. What a well-run machine *can* know is an interval that
//! contains it: the AWS ClockBound daemon measures how far the system clock may be from true time
//! and publishes that bound, and [`Clock::now`] turns it into `[earliest, latest]`. Spanner's
//! TrueTime is the same idea, and boundkv uses it the way Spanner does:
//!
//! - A read-write transaction commits at `s = now().latest` (raised above every timestamp handed
//!   out before: see [`TimestampOracle`]). At that moment true time is at most `s`.
//! - It is acknowledged only after **commit wait**: `now().earliest > s`
//!   ([`wait::wait_until_after`]). At that moment true time is past `s`.
//! - So if T1 is acknowledged before T2 starts, T2's commit timestamp, taken at T2's `latest`,
//!   is above true time at T2's start, which is above T1's acknowledgement, which is above `s₁`:
//!   `s₁ < s₂`. Timestamp order is real-time order, and reads at a timestamp see every
//!   transaction acknowledged before them. That is external consistency.
//!
//! ```text
//!      T1: s₁ = latest                          T1 acknowledged (earliest > s₁)
//!          │◄──────────── commit wait ≈ 2ε ───────────►│
//! true ────┼──────────────────┬──────────────────────────┼────────────┬──────────────►
//!          t₀               s₁ (≤ t₀ + 2ε)                       T2 starts: s₂ ≥ latest > s₁
//! ```
//!
//! Everything therefore depends on one promise: for every reading with a trustworthy status, true
//! time really lay inside the interval. This crate produces those readings and refuses to produce
//! timestamps from any other kind.
//!
//! # What is here
//!
//! - [`Timestamp`], [`TimeInterval`], [`ClockStatus`], [`ClockReading`]: the values.
//! - [`Clock`]: the trait every source implements.
//! - [`ClockBoundClock`]: the embedded reader of the ClockBound daemon's shared memory (layout 2,
//!   `/var/run/clockbound/shm0`), the default source. See [`segment`] for the protocol, the
//!   seqlock, the status rules and how a daemon restart is survived.
//! - [`ClockBoundV1Clock`]: ClockBound's first protocol (daemon 0.1.x), a Unix datagram socket;
//!   see [`v1`].
//! - [`SystemClock`]: `CLOCK_REALTIME` with an *assumed* bound, for machines without a daemon.
//! - [`SimClock`]: a simulated clock for tests: offsets, drift, steps, statuses, lies.
//! - [`ClockSource`]: parses `--clock clockbound[:PATH] | clockbound-v1[:SOCKET] | system:BOUND`.
//! - [`StepGuard`]: refuses readings that disagree with the clock's own past (a step, a lie),
//!   holding over on the monotonic clock instead; every [`ClockSource`] is opened behind one.
//! - [`leap`]: leap seconds: the kernel's leap state ([`KernelLeap`], read with `adjtimex`), the
//!   member's `--leap step|smear` ([`LeapPolicy`]) and the post-leap correction a stepping
//!   member's step guard applies.
//! - [`ClockPolicy`]: which readings may be acted on (status, bound ceiling, timeouts).
//! - [`ClockHealth`], [`HealthMonitor`]: the clock's state for operators (usable, free-running,
//!   unusable, stepped, fenced), each change logged once.
//! - [`wait`]: commit wait and `after`/`before`, on a precise timer.
//! - [`TimestampOracle`]: monotonic timestamps, safe across clock steps and restarts.

pub mod clock;
pub mod error;
pub mod guard;
pub mod health;
pub mod leap;
pub mod oracle;
pub mod policy;
pub mod segment;
pub mod sim;
pub mod source;
mod sys;
pub mod system;
pub mod time;
pub mod v1;
pub mod wait;

pub use clock::{Clock, RealTimebase, Timebase};
pub use error::{ClockError, ClockErrorKind};
pub use guard::{FileLeapRecord, GuardReport, LeapRecord, LeapReport, MemoryLeapRecord, StepGuard};
pub use health::{ClockHealth, HealthChange, HealthMonitor, HealthReport};
pub use leap::{
    KernelLeap, KernelLeapSource, LeapEvent, LeapKind, LeapPolicy, LeapSource, LeapState,
    ParseLeapPolicyError, SimLeapSource,
};
pub use oracle::{
    FileHighWaterMark, HighWaterMark, HighWaterMarkError, Issued, MemoryHighWaterMark, OracleError,
    OracleOptions, TimestampOracle,
};
pub use policy::{ClockPolicy, Unusable};
pub use segment::{ClockBoundClock, ClockBoundOptions, SegmentWriter};
pub use sim::{ExternalTime, SimClock};
pub use source::{
    CLOCK_ENV, ClockSource, DEFAULT_CLUSTER_RHO_PPM, ParseClockSourceError, VMCLOCK_ENV,
};
pub use sys::{boottime, monotonic_coarse_timespec};
pub use system::SystemClock;
pub use time::{ClockReading, ClockStatus, TimeInterval, Timestamp};
pub use v1::{ClockBoundV1Clock, V1Answer, V1TestDaemon};
pub use wait::{CommitWait, WaitError, wait_until_after, wait_until_after_blocking};

/// `CLOCK_MONOTONIC_COARSE` in nanoseconds, the clock the segment's `as_of` is stamped on; for
/// segment writers.
pub fn monotonic_coarse_nanos() -> i64 {
    sys::monotonic_coarse_nanos()
}
