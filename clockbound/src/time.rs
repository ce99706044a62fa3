//! The values a clock hands out: [`Timestamp`], [`TimeInterval`], [`ClockStatus`] and the
//! [`ClockReading`] that bundles an interval with the status it was read under.
//!
//! A timestamp is a count of nanoseconds since the Unix epoch (1970-01-01T00:00:00Z, leap seconds
//! not counted, exactly as `CLOCK_REALTIME` counts them). A `u64` of nanoseconds reaches the year
//! 2554, and it sorts the way time does, which is what the MVCC key encoding and the Raft log need.
//!
//! A reading is an *interval*, not a point: the clock promises that true time lay inside
//! `[earliest, latest]` at some instant during the call. Spanner calls this `TT.now()`, and the two
//! questions a database asks of it are:
//!
//! - [`ClockReading::after`]`(t)`: has `t` surely passed? True when `t < earliest`.
//! - [`ClockReading::before`]`(t)`: has `t` surely not arrived? True when `t > latest`.
//!
//! For example, a reading of `[100, 120]` (ns, with a bound of 10 ns around a local clock at 110)
//! says nothing about 105 or 115: `after(99)` is true, `after(100)` is false, `before(121)` is true.

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// A point in time: nanoseconds since the Unix epoch, on the `CLOCK_REALTIME` timescale.
///
/// `Timestamp` is ordered, hashable, and serializes as a bare `u64`. `Display` prints RFC 3339
/// with nanoseconds (`2026-11-23T18:20:01.123456789Z`); `Debug` prints the raw count.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Timestamp(u64);

impl Timestamp {
    /// The Unix epoch itself; also the "never" value of a fresh high-water mark.
    pub const ZERO: Timestamp = Timestamp(0);
    /// The largest representable timestamp (in the year 2554).
    pub const MAX: Timestamp = Timestamp(u64::MAX);

    /// A timestamp `nanos` nanoseconds after the epoch.
    pub const fn from_nanos(nanos: u64) -> Self {
        Timestamp(nanos)
    }

    /// Nanoseconds since the epoch.
    pub const fn as_nanos(self) -> u64 {
        self.0
    }

    /// The next representable timestamp (`self + 1 ns`), saturating at [`Timestamp::MAX`].
    pub const fn next(self) -> Self {
        Timestamp(self.0.saturating_add(1))
    }

    /// `self + d`, saturating at [`Timestamp::MAX`].
    pub fn saturating_add(self, d: Duration) -> Self {
        Timestamp(self.0.saturating_add(duration_nanos(d)))
    }

    /// `self - d`, saturating at [`Timestamp::ZERO`].
    pub fn saturating_sub(self, d: Duration) -> Self {
        Timestamp(self.0.saturating_sub(duration_nanos(d)))
    }

    /// How far `self` lies after `earlier`; zero when it does not.
    pub fn saturating_duration_since(self, earlier: Timestamp) -> Duration {
        Duration::from_nanos(self.0.saturating_sub(earlier.0))
    }

    /// The signed distance `self - other` in nanoseconds.
    pub fn signed_nanos_since(self, other: Timestamp) -> i128 {
        i128::from(self.0) - i128::from(other.0)
    }

    /// This timestamp as a [`SystemTime`], for formatting and for interoperating with std.
    pub fn to_system_time(self) -> SystemTime {
        UNIX_EPOCH + Duration::from_nanos(self.0)
    }

    /// The timestamp of a [`SystemTime`]; times before the epoch map to [`Timestamp::ZERO`].
    pub fn from_system_time(t: SystemTime) -> Self {
        match t.duration_since(UNIX_EPOCH) {
            Ok(d) => Timestamp(duration_nanos(d)),
            Err(_) => Timestamp::ZERO,
        }
    }
}

/// A [`Duration`] in whole nanoseconds, saturating at `u64::MAX` (584 years).
pub(crate) fn duration_nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", humantime::format_rfc3339_nanos(self.to_system_time()))
    }
}

impl fmt::Debug for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Timestamp({})", self.0)
    }
}

impl From<u64> for Timestamp {
    fn from(nanos: u64) -> Self {
        Timestamp(nanos)
    }
}

impl From<Timestamp> for u64 {
    fn from(ts: Timestamp) -> Self {
        ts.0
    }
}

/// An interval `[earliest, latest]` that contains true time, as `TT.now()` returns it.
///
/// The invariant `earliest <= latest` holds for every interval a [`crate::Clock`] returns.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Serialize, Deserialize)]
pub struct TimeInterval {
    /// True time was at or after this instant.
    pub earliest: Timestamp,
    /// True time was at or before this instant.
    pub latest: Timestamp,
}

impl TimeInterval {
    /// The interval `[earliest, latest]`.
    ///
    /// # Panics
    /// If `earliest > latest`: such an interval contains no time at all and can only come from a
    /// bug in the caller.
    pub fn new(earliest: Timestamp, latest: Timestamp) -> Self {
        assert!(earliest <= latest, "TimeInterval::new: earliest {earliest:?} > latest {latest:?}");
        TimeInterval { earliest, latest }
    }

    /// The interval `[t - bound, t + bound]`, saturating at the ends of the timescale.
    pub fn around(t: Timestamp, bound: Duration) -> Self {
        TimeInterval { earliest: t.saturating_sub(bound), latest: t.saturating_add(bound) }
    }

    /// Half the width of the interval: the clock error bound (Spanner's epsilon).
    ///
    /// For an odd width the half is rounded up, so that `[mid - bound, mid + bound]` always covers
    /// the interval.
    pub fn bound(&self) -> Duration {
        let width = self.latest.as_nanos() - self.earliest.as_nanos();
        Duration::from_nanos(width.div_ceil(2))
    }

    /// The midpoint: the local clock's own estimate of true time.
    pub fn midpoint(&self) -> Timestamp {
        let width = self.latest.as_nanos() - self.earliest.as_nanos();
        Timestamp::from_nanos(self.earliest.as_nanos() + width / 2)
    }

    /// Whether `t` lies inside the interval (ends included).
    pub fn contains(&self, t: Timestamp) -> bool {
        self.earliest <= t && t <= self.latest
    }
}

/// How far a reading may be trusted, with ClockBound's four meanings.
///
/// The numeric values are those of the ClockBound shared-memory segment's `clock_status` field.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Serialize, Deserialize)]
#[repr(i32)]
pub enum ClockStatus {
    /// Nothing is known; the interval must not be trusted.
    Unknown = 0,
    /// The clock is disciplined by a time source and the bound is current.
    Synchronized = 1,
    /// The time source was lost; the bound keeps growing at the maximum drift rate and is still
    /// valid.
    FreeRunning = 2,
    /// The clock was disrupted (for example by a VM live migration); the interval must not be
    /// trusted until the daemon recovers.
    Disrupted = 3,
}

impl ClockStatus {
    /// Whether a reading with this status bounds true time: `Synchronized` or `FreeRunning`.
    pub fn is_trustworthy(self) -> bool {
        matches!(self, ClockStatus::Synchronized | ClockStatus::FreeRunning)
    }

    /// The status with the segment's numeric code, or `None` for a code ClockBound never writes.
    pub fn from_code(code: i32) -> Option<Self> {
        match code {
            0 => Some(ClockStatus::Unknown),
            1 => Some(ClockStatus::Synchronized),
            2 => Some(ClockStatus::FreeRunning),
            3 => Some(ClockStatus::Disrupted),
            _ => None,
        }
    }

    /// The segment's numeric code for this status.
    pub fn code(self) -> i32 {
        self as i32
    }
}

impl fmt::Display for ClockStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ClockStatus::Unknown => "Unknown",
            ClockStatus::Synchronized => "Synchronized",
            ClockStatus::FreeRunning => "FreeRunning",
            ClockStatus::Disrupted => "Disrupted",
        })
    }
}

/// One answer of [`crate::Clock::now`]: the interval and the status it was read under.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Serialize, Deserialize)]
pub struct ClockReading {
    /// Where true time lay during the call.
    pub interval: TimeInterval,
    /// Whether the interval may be trusted at all.
    pub status: ClockStatus,
}

impl ClockReading {
    /// `interval.earliest`.
    pub fn earliest(&self) -> Timestamp {
        self.interval.earliest
    }

    /// `interval.latest`.
    pub fn latest(&self) -> Timestamp {
        self.interval.latest
    }

    /// `interval.bound()`: the half-width, Spanner's epsilon.
    pub fn bound(&self) -> Duration {
        self.interval.bound()
    }

    /// Spanner's `TT.after(t)`: `t` has surely passed (`t < earliest`).
    ///
    /// This is a statement about the interval only; it means something only when
    /// [`ClockStatus::is_trustworthy`] holds for `self.status`. The policy-aware helpers in
    /// [`crate::wait`] check both.
    pub fn after(&self, t: Timestamp) -> bool {
        t < self.interval.earliest
    }

    /// Spanner's `TT.before(t)`: `t` has surely not arrived (`t > latest`). Same caveat as
    /// [`ClockReading::after`].
    pub fn before(&self, t: Timestamp) -> bool {
        t > self.interval.latest
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn after_and_before_follow_spanner() {
        let r = ClockReading {
            interval: TimeInterval::new(Timestamp(100), Timestamp(120)),
            status: ClockStatus::Synchronized,
        };
        assert!(r.after(Timestamp(99)));
        assert!(!r.after(Timestamp(100)));
        assert!(!r.after(Timestamp(115)));
        assert!(r.before(Timestamp(121)));
        assert!(!r.before(Timestamp(120)));
        assert_eq!(r.bound(), Duration::from_nanos(10));
        assert_eq!(r.interval.midpoint(), Timestamp(110));
    }

    #[test]
    fn display_is_rfc3339_with_nanos() {
        let t = Timestamp(1_700_000_000_123_456_789);
        assert_eq!(t.to_string(), "2023-11-14T22:13:20.123456789Z");
        assert_eq!(format!("{t:?}"), "Timestamp(1700000000123456789)");
    }

    #[test]
    #[should_panic(expected = "earliest")]
    fn inverted_interval_is_a_bug() {
        let _ = TimeInterval::new(Timestamp(2), Timestamp(1));
    }

    #[test]
    fn status_codes_round_trip_and_reject_unknown_codes() {
        for s in [
            ClockStatus::Unknown,
            ClockStatus::Synchronized,
            ClockStatus::FreeRunning,
            ClockStatus::Disrupted,
        ] {
            assert_eq!(ClockStatus::from_code(s.code()), Some(s));
        }
        assert_eq!(ClockStatus::from_code(4), None);
        assert_eq!(ClockStatus::from_code(-1), None);
        assert!(ClockStatus::Synchronized.is_trustworthy());
        assert!(ClockStatus::FreeRunning.is_trustworthy());
        assert!(!ClockStatus::Unknown.is_trustworthy());
        assert!(!ClockStatus::Disrupted.is_trustworthy());
    }

    proptest! {
        #[test]
        fn around_covers_its_center_and_bound_covers_the_width(
            t in 0u64..u64::MAX / 2, b in 0u64..10_000_000_000u64
        ) {
            let i = TimeInterval::around(Timestamp(t), Duration::from_nanos(b));
            prop_assert!(i.contains(Timestamp(t)));
            prop_assert!(i.earliest <= i.latest);
            let bound = crate::time::duration_nanos(i.bound());
            let mid = i.midpoint().as_nanos();
            prop_assert!(mid.saturating_sub(bound) <= i.earliest.as_nanos());
            prop_assert!(mid + bound >= i.latest.as_nanos());
        }

        #[test]
        fn timestamps_order_like_their_nanos(a: u64, b: u64) {
            prop_assert_eq!(Timestamp(a).cmp(&Timestamp(b)), a.cmp(&b));
        }
    }
}
