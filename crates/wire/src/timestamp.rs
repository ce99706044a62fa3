//! The protocol's own timestamp type.
//!
//! A boundkv timestamp is a count of nanoseconds since the Unix epoch on the `CLOCK_REALTIME`
//! timescale, the same count the server's bounded clock hands out. The client crate depends only
//! on this crate, so the protocol cannot borrow the clock crate's `Timestamp`; it defines its own
//! with the same representation, and the server converts at the edge with
//! `Timestamp::from_nanos(ts.as_nanos())`.
//!
//! On the wire a timestamp is a bare `u64` (serde `transparent`), which postcard writes as a
//! varint: `Timestamp::from_nanos(300)` is the two bytes `AC 02`, and a timestamp in 2026 is
//! nine bytes. For people, `Display` prints RFC 3339 with nanoseconds
//! (`2026-11-23T18:20:01.123456789Z`), and `Debug` prints the raw count (`Timestamp(300)`), which
//! is what you want when comparing timestamps in a test failure.

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// A point in time: nanoseconds since the Unix epoch.
///
/// Ordered, hashable, and serialized as a bare `u64`. `Display` prints RFC 3339 with nanoseconds;
/// `Debug` prints the raw nanosecond count.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Timestamp(u64);

impl Timestamp {
    /// The Unix epoch itself.
    pub const ZERO: Timestamp = Timestamp(0);
    /// The largest representable timestamp (in the year 2554).
    pub const MAX: Timestamp = Timestamp(u64::MAX);

    /// The timestamp `nanos` nanoseconds after the epoch.
    pub const fn from_nanos(nanos: u64) -> Self {
        Timestamp(nanos)
    }

    /// Nanoseconds since the epoch.
    pub const fn as_nanos(self) -> u64 {
        self.0
    }

    /// This timestamp as a [`SystemTime`], for formatting and for interoperating with std.
    pub fn to_system_time(self) -> SystemTime {
        UNIX_EPOCH + Duration::from_nanos(self.0)
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Every u64 of nanoseconds lies between 1970 and 2554, inside humantime's range
        // (years 1970 to 9999), so formatting cannot fail.
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_is_rfc3339_with_nanoseconds() {
        assert_eq!(Timestamp::ZERO.to_string(), "1970-01-01T00:00:00.000000000Z");
        assert_eq!(
            Timestamp::from_nanos(1_700_000_000_123_456_789).to_string(),
            "2023-11-14T22:13:20.123456789Z"
        );
        assert_eq!(Timestamp::MAX.to_string(), "2554-07-21T23:34:33.709551615Z");
    }

    #[test]
    fn debug_is_the_raw_count() {
        assert_eq!(format!("{:?}", Timestamp::from_nanos(300)), "Timestamp(300)");
    }

    #[test]
    fn serializes_as_a_bare_varint() {
        let bytes = postcard::to_stdvec(&Timestamp::from_nanos(300)).unwrap();
        assert_eq!(bytes, [0xAC, 0x02]);
        assert_eq!(postcard::from_bytes::<Timestamp>(&bytes).unwrap(), Timestamp::from_nanos(300));
    }

    #[test]
    fn orders_by_nanoseconds() {
        assert!(Timestamp::ZERO < Timestamp::from_nanos(1));
        assert!(Timestamp::from_nanos(u64::MAX - 1) < Timestamp::MAX);
        assert_eq!(u64::from(Timestamp::from(42)), 42);
    }
}
