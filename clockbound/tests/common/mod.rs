//! Helpers shared by the segment tests: a segment in a temporary directory, written with
//! boundkv's own writer, stamped on the same monotonic clock the reader uses.
#![allow(dead_code, unreachable_pub)]

use std::path::PathBuf;
use std::time::Duration;

use boundkv_clockbound::segment::layout::{MonoTimespec, SegmentBody};
use boundkv_clockbound::{ClockStatus, SegmentWriter, monotonic_coarse_nanos};

pub const SEC: i64 = 1_000_000_000;

/// A fresh segment file in its own temporary directory.
pub struct TestSegment {
    pub dir: tempfile::TempDir,
    pub path: PathBuf,
    pub writer: SegmentWriter,
}

impl TestSegment {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("shm0");
        let writer = SegmentWriter::create(&path).unwrap();
        TestSegment { dir, path, writer }
    }

    /// A segment already holding a healthy body.
    pub fn healthy(bound: Duration, drift_ppb: u32, status: ClockStatus) -> Self {
        let mut s = Self::new();
        s.writer.write(&body_now(bound, drift_ppb, status));
        s
    }

    pub fn vmclock_path(&self) -> PathBuf {
        self.dir.path().join("vmclock0")
    }
}

/// A body as a healthy daemon would write it right now.
pub fn body_now(bound: Duration, drift_ppb: u32, status: ClockStatus) -> SegmentBody {
    SegmentBody::healthy(monotonic_coarse_nanos(), bound, drift_ppb, status)
}

/// A body whose `as_of` lies `age` in the past (negative: in the future), with `void_after`
/// `void_after` after `as_of`.
pub fn body_aged(
    age_nanos: i64,
    void_after: Duration,
    bound: Duration,
    status: ClockStatus,
) -> SegmentBody {
    let as_of = monotonic_coarse_nanos() - age_nanos;
    SegmentBody {
        as_of: MonoTimespec::from_nanos(as_of),
        void_after: MonoTimespec::from_nanos(as_of + void_after.as_nanos() as i64),
        ..SegmentBody::healthy(as_of, bound, 50_000, status)
    }
}

/// Waits, on a machine that booted only moments ago, until CLOCK_MONOTONIC_COARSE has counted
/// past `age_nanos`, so that an `as_of` that old can be written (monotonic time starts at boot).
pub fn ensure_uptime(age_nanos: i64) {
    while monotonic_coarse_nanos() <= age_nanos + SEC {
        std::thread::sleep(Duration::from_millis(100));
    }
}
