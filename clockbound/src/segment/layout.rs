//! Layout 2 of the ClockBound segment, byte by byte, and the pure arithmetic that turns one
//! snapshot of it into an interval.
//!
//! ```text
//!  off  type   field                          off  type   field
//!    0  u32    magic[0] = 0x414D5A4E           48  i64    bound_nsec
//!    4  u32    magic[1] = 0x43420200           56  u64    disruption_marker
//!    8  u32    segsize  (80)                   64  u32    max_drift_ppb
//!   12  u16    version  (2; 0 = initializing)  68  i32    clock_status (0..=3)
//!   14  u16    generation (seqlock; odd=busy)  72  u8     disruption support (0/1)
//!   16  i64    as_of.tv_sec                    73  [u8;7] padding
//!   24  i64    as_of.tv_nsec
//!   32  i64    void_after.tv_sec               (as_of and void_after are CLOCK_MONOTONIC_COARSE)
//!   40  i64    void_after.tv_nsec
//! ```
//!
//! Every field is in the host's byte order. Nothing here touches memory or files: [`SegmentBody`]
//! converts to and from the eight 64-bit words of the body, [`SegmentBody::validate`] applies the
//! plausibility checks, and [`compute`] applies ClockBound 2.x's client rules. The reader and the
//! writer in the sibling modules do the I/O.

use std::time::Duration;

use crate::error::ClockError;
use crate::time::{ClockReading, ClockStatus, TimeInterval, Timestamp};

/// The default segment path of ClockBound 2.x and later daemons.
pub const DEFAULT_SEGMENT_PATH: &str = "/var/run/clockbound/shm0";
/// The default path of the VMClock device.
pub const DEFAULT_VMCLOCK_PATH: &str = "/dev/vmclock0";
/// The two magic words at offset 0, compared as native `u32`s.
pub const MAGIC: [u32; 2] = [0x414D_5A4E, 0x4342_0200];
/// The layout version this reader implements.
pub const LAYOUT_VERSION: u16 = 2;
/// Bytes in the header.
pub const HEADER_LEN: usize = 16;
/// Bytes in the layout-2 body.
pub const BODY_LEN: usize = 64;
/// Bytes in a whole layout-2 segment (`segsize` as the daemon writes it).
pub const SEGMENT_LEN: usize = HEADER_LEN + BODY_LEN;
/// Offset of the `version` field.
pub const VERSION_OFFSET: usize = 12;
/// Offset of the `generation` field.
pub const GENERATION_OFFSET: usize = 14;
/// For this long after `as_of`, a stored `Synchronized` or `FreeRunning` is believed as is; after
/// it the daemon is presumed dead and the status becomes `FreeRunning` (ClockBound 2.x client).
pub const DAEMON_GRACE: Duration = Duration::from_secs(5);
/// `CLOCK_MONOTONIC_COARSE` may read up to this much *before* `as_of` (vDSO update jitter) without
/// being a causality breach; elapsed time is then taken as zero (ClockBound 2.x client).
pub const CAUSALITY_JITTER: Duration = Duration::from_micros(1);
/// How long after `as_of` the daemons set `void_after`.
pub const DAEMON_VOID_AFTER: Duration = Duration::from_secs(1000);

const NANOS_PER_SEC: i64 = 1_000_000_000;

/// The segment header as stored.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct SegmentHeader {
    /// Must equal [`MAGIC`].
    pub magic: [u32; 2],
    /// Bytes the writer wrote; at least [`SEGMENT_LEN`] for layout 2.
    pub segsize: u32,
    /// Layout version: 0 while (re)initializing, 2 for shm0.
    pub version: u16,
    /// The seqlock counter: 0 = never written, odd = a write is in progress.
    pub generation: u16,
}

impl SegmentHeader {
    /// A well-formed layout-2 header at `generation`.
    pub fn layout2(generation: u16) -> Self {
        SegmentHeader {
            magic: MAGIC,
            segsize: SEGMENT_LEN as u32,
            version: LAYOUT_VERSION,
            generation,
        }
    }

    /// The 16 stored bytes.
    pub fn to_bytes(&self) -> [u8; HEADER_LEN] {
        let mut b = [0u8; HEADER_LEN];
        b[0..4].copy_from_slice(&self.magic[0].to_ne_bytes());
        b[4..8].copy_from_slice(&self.magic[1].to_ne_bytes());
        b[8..12].copy_from_slice(&self.segsize.to_ne_bytes());
        b[12..14].copy_from_slice(&self.version.to_ne_bytes());
        b[14..16].copy_from_slice(&self.generation.to_ne_bytes());
        b
    }

    /// Decodes 16 stored bytes.
    pub fn from_bytes(b: &[u8; HEADER_LEN]) -> Self {
        SegmentHeader {
            magic: [ne_u32(&b[0..4]), ne_u32(&b[4..8])],
            segsize: ne_u32(&b[8..12]),
            version: u16::from_ne_bytes([b[12], b[13]]),
            generation: u16::from_ne_bytes([b[14], b[15]]),
        }
    }
}

/// A `CLOCK_MONOTONIC_COARSE` instant as the segment stores it.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub struct MonoTimespec {
    /// Seconds since boot.
    pub sec: i64,
    /// Nanoseconds, `0..1e9` when well formed.
    pub nsec: i64,
}

impl MonoTimespec {
    /// The instant `nanos` after boot.
    pub fn from_nanos(nanos: i64) -> Self {
        MonoTimespec { sec: nanos.div_euclid(NANOS_PER_SEC), nsec: nanos.rem_euclid(NANOS_PER_SEC) }
    }

    fn is_well_formed(&self) -> bool {
        self.sec >= 0 && (0..NANOS_PER_SEC).contains(&self.nsec)
    }

    /// Nanoseconds since boot (only meaningful when well formed).
    pub fn as_nanos(&self) -> i64 {
        self.sec.saturating_mul(NANOS_PER_SEC).saturating_add(self.nsec)
    }
}

/// The layout-2 body exactly as stored: raw, possibly implausible values.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub struct SegmentBody {
    /// When `bound_nsec` was measured.
    pub as_of: MonoTimespec,
    /// After this instant the data must not be trusted at all.
    pub void_after: MonoTimespec,
    /// Bound on |CLOCK_REALTIME - true time| at `as_of`, in ns.
    pub bound_nsec: i64,
    /// The last VMClock disruption marker the daemon acted on.
    pub disruption_marker: u64,
    /// Maximum drift: ns of bound growth per second elapsed since `as_of`.
    pub max_drift_ppb: u32,
    /// The stored status code (see [`ClockStatus`]).
    pub clock_status: i32,
    /// 1 when the daemon runs with VMClock disruption support.
    pub disruption_support: u8,
}

impl SegmentBody {
    /// A body as a healthy daemon writes it at `as_of_nanos` (on `CLOCK_MONOTONIC_COARSE`):
    /// `void_after` 1000 s later, no disruption support.
    pub fn healthy(
        as_of_nanos: i64,
        bound: Duration,
        max_drift_ppb: u32,
        status: ClockStatus,
    ) -> Self {
        SegmentBody {
            as_of: MonoTimespec::from_nanos(as_of_nanos),
            void_after: MonoTimespec::from_nanos(
                as_of_nanos.saturating_add(DAEMON_VOID_AFTER.as_nanos() as i64),
            ),
            bound_nsec: i64::try_from(bound.as_nanos()).unwrap_or(i64::MAX),
            disruption_marker: 0,
            max_drift_ppb,
            clock_status: status.code(),
            disruption_support: 0,
        }
    }

    /// The body as the eight native-endian 64-bit words the reader copies.
    pub fn to_words(&self) -> [u64; BODY_LEN / 8] {
        [
            self.as_of.sec as u64,
            self.as_of.nsec as u64,
            self.void_after.sec as u64,
            self.void_after.nsec as u64,
            self.bound_nsec as u64,
            self.disruption_marker,
            u64::from_ne_bytes(concat4(
                self.max_drift_ppb.to_ne_bytes(),
                self.clock_status.to_ne_bytes(),
            )),
            u64::from_ne_bytes([self.disruption_support, 0, 0, 0, 0, 0, 0, 0]),
        ]
    }

    /// Decodes the eight words (padding is ignored).
    pub fn from_words(w: &[u64; BODY_LEN / 8]) -> Self {
        let drift_status = w[6].to_ne_bytes();
        SegmentBody {
            as_of: MonoTimespec { sec: w[0] as i64, nsec: w[1] as i64 },
            void_after: MonoTimespec { sec: w[2] as i64, nsec: w[3] as i64 },
            bound_nsec: w[4] as i64,
            disruption_marker: w[5],
            max_drift_ppb: ne_u32(&drift_status[0..4]),
            clock_status: i32::from_ne_bytes([
                drift_status[4],
                drift_status[5],
                drift_status[6],
                drift_status[7],
            ]),
            disruption_support: w[7].to_ne_bytes()[0],
        }
    }

    /// The 64 stored bytes.
    pub fn to_bytes(&self) -> [u8; BODY_LEN] {
        let mut b = [0u8; BODY_LEN];
        for (i, w) in self.to_words().iter().enumerate() {
            b[i * 8..i * 8 + 8].copy_from_slice(&w.to_ne_bytes());
        }
        b
    }

    /// The plausibility checks of every field; `Ok` is a body the arithmetic may trust, `Err` names
    /// the first field that failed.
    ///
    /// A torn read on a weakly ordered CPU, a buggy writer and a file that is not a ClockBound
    /// segment all end here rather than in a wrong interval.
    pub fn validate(&self) -> Result<SegmentSnapshot, String> {
        self.check().ok_or_else(|| self.explain())
    }

    /// The checks of [`SegmentBody::validate`] without the explanation: the reader's hot path.
    #[inline]
    pub fn check(&self) -> Option<SegmentSnapshot> {
        let ok = self.as_of.is_well_formed()
            && self.void_after.is_well_formed()
            && self.void_after.as_nanos() >= self.as_of.as_nanos()
            && self.bound_nsec >= 0
            && self.max_drift_ppb < 1_000_000_000
            && self.disruption_support <= 1;
        let status = ClockStatus::from_code(self.clock_status)?;
        ok.then_some(SegmentSnapshot {
            as_of_nanos: self.as_of.as_nanos(),
            void_after_nanos: self.void_after.as_nanos(),
            bound_nanos: self.bound_nsec as u64,
            disruption_marker: self.disruption_marker,
            max_drift_ppb: self.max_drift_ppb,
            status,
            disruption_support: self.disruption_support == 1,
        })
    }

    #[cold]
    fn explain(&self) -> String {
        if !self.as_of.is_well_formed() {
            return format!("as_of = {:?} is not a valid timespec", self.as_of);
        }
        if !self.void_after.is_well_formed() {
            return format!("void_after = {:?} is not a valid timespec", self.void_after);
        }
        if self.void_after.as_nanos() < self.as_of.as_nanos() {
            return format!(
                "void_after = {:?} is before as_of = {:?}",
                self.void_after, self.as_of
            );
        }
        if self.bound_nsec < 0 {
            return format!("bound_nsec = {} is negative", self.bound_nsec);
        }
        if self.max_drift_ppb >= 1_000_000_000 {
            return format!(
                "max_drift_ppb = {} is a second per second or more",
                self.max_drift_ppb
            );
        }
        if ClockStatus::from_code(self.clock_status).is_none() {
            return format!("clock_status = {} is not 0..=3", self.clock_status);
        }
        format!("disruption support flag = {} is not 0 or 1", self.disruption_support)
    }
}

/// A validated body: every field within its plausible range.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct SegmentSnapshot {
    /// `as_of` in ns on `CLOCK_MONOTONIC_COARSE`.
    pub as_of_nanos: i64,
    /// `void_after` in ns on `CLOCK_MONOTONIC_COARSE`.
    pub void_after_nanos: i64,
    /// The bound at `as_of`, in ns.
    pub bound_nanos: u64,
    /// The VMClock disruption marker the daemon last acted on.
    pub disruption_marker: u64,
    /// Bound growth in ns per second elapsed.
    pub max_drift_ppb: u32,
    /// The stored status.
    pub status: ClockStatus,
    /// Whether the VMClock marker must be checked.
    pub disruption_support: bool,
}

/// The interval and status at the instant `(real_nanos, mono_nanos)`, from one snapshot.
///
/// `real_nanos` is `CLOCK_REALTIME` and `mono_nanos` is `CLOCK_MONOTONIC_COARSE`, read in that
/// order (a late monotonic read only makes the bound larger). The rules are ClockBound 2.x's:
///
/// 1. `elapsed = mono - as_of`; up to [`CAUSALITY_JITTER`] negative counts as 0, more is a
///    [`ClockError::CausalityBreach`].
/// 2. `bound = bound_nsec + elapsed × max_drift_ppb`, rounded *up* to the nanosecond (the AWS
///    client truncates a float; rounding up keeps the interval conservative).
/// 3. `[earliest, latest] = [real - bound, real + bound]`.
/// 4. A stored `Unknown` or `Disrupted` is returned as is. A stored `Synchronized` or
///    `FreeRunning` stays so for [`DAEMON_GRACE`] after `as_of`, then becomes `FreeRunning`
///    until `void_after`, then `Unknown`. Past `void_after` the interval is still computed; only
///    the status says it is void.
pub fn compute(
    snap: &SegmentSnapshot,
    real_nanos: i64,
    mono_nanos: i64,
) -> Result<ClockReading, ClockError> {
    let elapsed = mono_nanos.saturating_sub(snap.as_of_nanos);
    let elapsed = if elapsed >= 0 {
        elapsed as u64
    } else if elapsed.unsigned_abs() < CAUSALITY_JITTER.as_nanos() as u64 {
        0
    } else {
        return Err(ClockError::CausalityBreach {
            ahead: Duration::from_nanos(elapsed.unsigned_abs()),
        });
    };

    let bound = snap.bound_nanos.saturating_add(drift_growth(elapsed, snap.max_drift_ppb));

    let status = match snap.status {
        ClockStatus::Unknown | ClockStatus::Disrupted => snap.status,
        ClockStatus::Synchronized | ClockStatus::FreeRunning => {
            if mono_nanos < snap.as_of_nanos.saturating_add(DAEMON_GRACE.as_nanos() as i64) {
                snap.status
            } else if mono_nanos < snap.void_after_nanos {
                ClockStatus::FreeRunning
            } else {
                ClockStatus::Unknown
            }
        }
    };

    let real = Timestamp::from_nanos(u64::try_from(real_nanos).unwrap_or(0));
    let bound = Duration::from_nanos(bound);
    Ok(ClockReading { interval: TimeInterval::around(real, bound), status })
}

/// `ceil(elapsed_ns × drift_ppb / 1e9)` without 128-bit division: whole seconds times the drift
/// is exact, and the sub-second part's product stays below 1e18.
pub fn drift_growth(elapsed_nanos: u64, drift_ppb: u32) -> u64 {
    let secs = elapsed_nanos / 1_000_000_000;
    let sub = elapsed_nanos % 1_000_000_000;
    let drift = u64::from(drift_ppb);
    secs.saturating_mul(drift).saturating_add((sub * drift).div_ceil(1_000_000_000))
}

fn ne_u32(b: &[u8]) -> u32 {
    u32::from_ne_bytes([b[0], b[1], b[2], b[3]])
}

fn concat4(a: [u8; 4], b: [u8; 4]) -> [u8; 8] {
    [a[0], a[1], a[2], a[3], b[0], b[1], b[2], b[3]]
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn snap(
        as_of_s: i64,
        void_after_s: i64,
        bound: u64,
        drift: u32,
        status: ClockStatus,
    ) -> SegmentSnapshot {
        SegmentBody {
            as_of: MonoTimespec { sec: as_of_s, nsec: 0 },
            void_after: MonoTimespec { sec: void_after_s, nsec: 0 },
            bound_nsec: bound as i64,
            disruption_marker: 0,
            max_drift_ppb: drift,
            clock_status: status.code(),
            disruption_support: 0,
        }
        .validate()
        .unwrap()
    }

    const S: i64 = 1_000_000_000;

    #[test]
    fn the_upstream_example_10us_1000ppb_2s_gives_12us() {
        let s = snap(0, 10, 10_000, 1000, ClockStatus::Synchronized);
        let r = compute(&s, 2 * S, 2 * S).unwrap();
        assert_eq!(r.bound(), Duration::from_micros(12));
        assert_eq!(r.earliest().as_nanos(), 2 * S as u64 - 12_000);
        assert_eq!(r.latest().as_nanos(), 2 * S as u64 + 12_000);
        assert_eq!(r.status, ClockStatus::Synchronized);
    }

    #[test]
    fn status_ages_from_synchronized_to_free_running_to_unknown() {
        let s = snap(0, 100, 10_000, 1000, ClockStatus::Synchronized);
        assert_eq!(compute(&s, 0, 5 * S - 1).unwrap().status, ClockStatus::Synchronized);
        assert_eq!(compute(&s, 0, 5 * S).unwrap().status, ClockStatus::FreeRunning);
        assert_eq!(compute(&s, 0, 100 * S - 1).unwrap().status, ClockStatus::FreeRunning);
        let void = compute(&s, 1000 * S, 100 * S).unwrap();
        assert_eq!(void.status, ClockStatus::Unknown);
        // Past void_after the bound keeps growing; only the status says it is void.
        assert_eq!(void.bound(), Duration::from_nanos(10_000 + 100 * 1000));
        let fr = snap(0, 100, 10_000, 1000, ClockStatus::FreeRunning);
        assert_eq!(compute(&fr, 0, S).unwrap().status, ClockStatus::FreeRunning);
    }

    #[test]
    fn stored_unknown_and_disrupted_are_returned_as_is() {
        for st in [ClockStatus::Unknown, ClockStatus::Disrupted] {
            let s = snap(0, 100, 0, 0, st);
            assert_eq!(compute(&s, 0, 0).unwrap().status, st);
            assert_eq!(compute(&s, 0, 50 * S).unwrap().status, st);
            assert_eq!(compute(&s, 0, 500 * S).unwrap().status, st);
        }
    }

    #[test]
    fn monotonic_up_to_one_microsecond_before_as_of_is_jitter_and_beyond_is_a_breach() {
        let s = snap(10, 100, 500, 1000, ClockStatus::Synchronized);
        let r = compute(&s, 1000 * S, 10 * S - 999).unwrap();
        assert_eq!(r.bound(), Duration::from_nanos(500));
        let e = compute(&s, 0, 10 * S - 1000).unwrap_err();
        assert_eq!(e, ClockError::CausalityBreach { ahead: Duration::from_nanos(1000) });
    }

    #[test]
    fn implausible_fields_are_named() {
        let good =
            SegmentBody::healthy(S, Duration::from_micros(5), 50_000, ClockStatus::Synchronized);
        assert!(good.validate().is_ok());
        let cases: Vec<(SegmentBody, &str)> = vec![
            (SegmentBody { as_of: MonoTimespec { sec: 1, nsec: S }, ..good }, "as_of"),
            (SegmentBody { as_of: MonoTimespec { sec: -1, nsec: 0 }, ..good }, "as_of"),
            (SegmentBody { void_after: MonoTimespec { sec: 0, nsec: -1 }, ..good }, "void_after"),
            (SegmentBody { void_after: MonoTimespec { sec: 0, nsec: 0 }, ..good }, "before as_of"),
            (SegmentBody { bound_nsec: -1, ..good }, "bound_nsec"),
            (SegmentBody { max_drift_ppb: 1_000_000_000, ..good }, "max_drift_ppb"),
            (SegmentBody { clock_status: 4, ..good }, "clock_status"),
            (SegmentBody { clock_status: -1, ..good }, "clock_status"),
            (SegmentBody { disruption_support: 2, ..good }, "flag"),
        ];
        for (body, field) in cases {
            let err = body.validate().unwrap_err();
            assert!(err.contains(field), "{err:?} should name {field}");
        }
    }

    #[test]
    fn header_bytes_match_the_documented_little_endian_disk_image() {
        // clockbound.md §2.2: on a little-endian host the file starts 4E 5A 4D 41 00 02 42 43.
        let b = SegmentHeader::layout2(2).to_bytes();
        if cfg!(target_endian = "little") {
            assert_eq!(&b[0..8], &[0x4E, 0x5A, 0x4D, 0x41, 0x00, 0x02, 0x42, 0x43]);
            assert_eq!(&b[8..16], &[80, 0, 0, 0, 2, 0, 2, 0]);
        }
        assert_eq!(SegmentHeader::from_bytes(&b), SegmentHeader::layout2(2));
    }

    #[test]
    fn drift_growth_rounds_up_and_handles_long_gaps() {
        assert_eq!(drift_growth(0, 50_000), 0);
        assert_eq!(drift_growth(1, 1), 1); // 1e-9 ns, rounded up
        assert_eq!(drift_growth(1_000_000_000, 50_000), 50_000);
        assert_eq!(drift_growth(1_500_000_000, 1000), 1500);
        let exact = (u128::from(u64::MAX) * 999_999_999).div_ceil(1_000_000_000);
        assert_eq!(u128::from(drift_growth(u64::MAX, 999_999_999)), exact);
    }

    proptest! {
        #[test]
        fn body_words_round_trip(
            a in any::<i64>(), b in any::<i64>(), c in any::<i64>(), d in any::<i64>(),
            bound in any::<i64>(), marker in any::<u64>(), drift in any::<u32>(),
            status in any::<i32>(), flag in any::<u8>()
        ) {
            let body = SegmentBody {
                as_of: MonoTimespec { sec: a, nsec: b },
                void_after: MonoTimespec { sec: c, nsec: d },
                bound_nsec: bound, disruption_marker: marker, max_drift_ppb: drift,
                clock_status: status, disruption_support: flag,
            };
            prop_assert_eq!(SegmentBody::from_words(&body.to_words()), body);
        }

        #[test]
        fn drift_growth_matches_exact_rational_rounded_up(e in any::<u64>(), d in 0u32..1_000_000_000) {
            let exact = (u128::from(e) * u128::from(d)).div_ceil(1_000_000_000);
            let expected = u64::try_from(exact).unwrap_or(u64::MAX);
            prop_assert_eq!(drift_growth(e, d), expected);
        }

        #[test]
        fn the_interval_always_contains_the_system_clock_and_grows_with_time(
            bound in 0u64..1_000_000_000, drift in 0u32..1_000_000,
            as_of in 0i64..1_000_000 * S, dt in 0i64..2000 * S, real in 10_000 * S..i64::MAX / 2
        ) {
            let s = snap(0, 1000, bound, drift, ClockStatus::Synchronized);
            let s = SegmentSnapshot { as_of_nanos: as_of, void_after_nanos: as_of + 1000 * S, ..s };
            let r1 = compute(&s, real, as_of + dt).unwrap();
            let r2 = compute(&s, real, as_of + dt + S).unwrap();
            prop_assert!(r1.interval.contains(Timestamp::from_nanos(real as u64)));
            prop_assert!(r2.bound() >= r1.bound());
            prop_assert!(r1.bound() >= Duration::from_nanos(bound));
        }
    }
}
