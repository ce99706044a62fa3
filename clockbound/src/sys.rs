//! The two kernel clocks the reader needs, through the vDSO (`clock_gettime` never enters the
//! kernel for these ids on Linux).
//!
//! - `CLOCK_REALTIME`: the system clock that ClockBound bounds. It can be stepped, slewed and
//!   stepped back by a leap second.
//! - `CLOCK_MONOTONIC_COARSE`: the clock the daemon stamps `as_of` with. It never jumps, and the
//!   coarse variant is the cheapest read the kernel offers (its resolution is one scheduler tick,
//!   which only makes the elapsed time, and so the bound, slightly larger).
//! - `CLOCK_MONOTONIC_RAW`: the oscillator itself, which no time service adjusts: what every
//!   elapsed time that a bound is carried on is measured with ([`crate::RealTimebase`]).
//!   `CLOCK_MONOTONIC` would not do: it runs at the rate a time service sets, and chrony slews
//!   it (with the wall clock) by up to 8.3 % while it corrects an offset.

/// Nanoseconds on `clock_id`, as a signed count (monotonic clocks start at boot).
fn clock_nanos(clock_id: libc::clockid_t) -> i64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `ts` is a valid, writable timespec and the clock ids used here exist on every Linux
    // since 2.6.32, so the call cannot fail; we check anyway and abort loudly if it ever does,
    // because every timestamp decision rests on it.
    let rc = unsafe { libc::clock_gettime(clock_id, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime({clock_id}) failed: {}", std::io::Error::last_os_error());
    ts.tv_sec * 1_000_000_000 + ts.tv_nsec
}

/// `CLOCK_REALTIME` in nanoseconds since the Unix epoch (negative before 1970).
pub(crate) fn realtime_nanos() -> i64 {
    clock_nanos(libc::CLOCK_REALTIME)
}

/// `CLOCK_MONOTONIC_RAW` in nanoseconds since boot.
pub(crate) fn monotonic_raw_nanos() -> i64 {
    clock_nanos(libc::CLOCK_MONOTONIC_RAW)
}

/// `CLOCK_BOOTTIME` (the monotonic clock, counting time suspended too) since boot. Public for
/// the cluster clock, which checks that its oscillator (`CLOCK_MONOTONIC_RAW`, which stops
/// while the machine is suspended) kept counting.
pub fn boottime() -> std::time::Duration {
    std::time::Duration::from_nanos(u64::try_from(clock_nanos(libc::CLOCK_BOOTTIME)).unwrap_or(0))
}

/// `CLOCK_MONOTONIC_COARSE` in nanoseconds since boot.
pub(crate) fn monotonic_coarse_nanos() -> i64 {
    clock_nanos(libc::CLOCK_MONOTONIC_COARSE)
}

/// `CLOCK_MONOTONIC_COARSE` as a `(tv_sec, tv_nsec)` pair, the way the segment stores `as_of`.
///
/// Public for segment writers (tests, the Jepsen runner) that must stamp `as_of` on the same
/// clock the reader compares it with.
pub fn monotonic_coarse_timespec() -> (i64, i64) {
    let n = monotonic_coarse_nanos();
    (n.div_euclid(1_000_000_000), n.rem_euclid(1_000_000_000))
}
