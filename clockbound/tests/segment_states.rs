//! Every state a ClockBound segment can be in, written with boundkv's own writer, and the defined
//! answer of the reader for each.
//!
//! | state | answer |
//! |---|---|
//! | missing file | `SegmentMissing` (open and, later, every `now()` until it returns) |
//! | empty or header-only file | `SegmentNotInitialized` / `SegmentMalformed` |
//! | bad magic | `SegmentNotInitialized` |
//! | layout 1, layout 3 | `SegmentVersionNotSupported` |
//! | version 0 or generation 0 at open | `SegmentNotInitialized` |
//! | generation stuck odd | last good snapshot, or `SegmentNotInitialized` without one |
//! | version 0 mid-run (daemon restarting) | last good snapshot |
//! | segsize < 80 | `SegmentMalformed` |
//! | each implausible field | `SegmentMalformed` naming the field |
//! | `as_of` in the future | `CausalityBreach` |
//! | stale daemon (> 5 s) | `FreeRunning`, bound still growing |
//! | past `void_after` | `Unknown` |
//! | stored `Unknown` / `FreeRunning` / `Disrupted` | that status |
//! | VMClock marker equal / different | stored status / `Unknown` |
//! | VMClock missing, bad, or stuck mid-update | `VmClock` error |

mod common;

use std::time::Duration;

use boundkv_clockbound::segment::layout::{MonoTimespec, SEGMENT_LEN, SegmentBody, SegmentHeader};
use boundkv_clockbound::segment::vmclock::VmClockWriter;
use boundkv_clockbound::{
    Clock, ClockBoundClock, ClockBoundOptions, ClockError, ClockStatus, SegmentWriter,
};
use common::{SEC, TestSegment, body_aged, body_now, ensure_uptime};

fn open(seg: &TestSegment) -> Result<ClockBoundClock, ClockError> {
    ClockBoundClock::open(ClockBoundOptions {
        segment_path: seg.path.clone(),
        vmclock_path: seg.vmclock_path(),
    })
}

#[test]
fn a_fresh_synchronized_segment_gives_its_bound_around_the_system_clock() {
    // Drift 0, so the bound is exactly what was published however slow this machine is.
    let seg = TestSegment::healthy(Duration::from_micros(25), 0, ClockStatus::Synchronized);
    let clock = open(&seg).unwrap();
    let before = std::time::SystemTime::now();
    let r = clock.now().unwrap();
    let after = std::time::SystemTime::now();
    assert_eq!(r.status, ClockStatus::Synchronized);
    assert_eq!(r.bound(), Duration::from_micros(25));
    let mid = r.interval.midpoint().to_system_time();
    assert!(mid >= before - Duration::from_micros(1) && mid <= after + Duration::from_micros(1));
    assert!(clock.describe().contains(seg.path.to_str().unwrap()));
}

#[test]
fn a_missing_segment_is_reported_as_missing() {
    let dir = tempfile::tempdir().unwrap();
    let e = ClockBoundClock::open_path(dir.path().join("shm0")).err().unwrap();
    assert!(matches!(e, ClockError::SegmentMissing { .. }), "{e}");
    assert!(e.to_string().contains("is the clockbound daemon running?"));
}

#[test]
fn short_files_are_not_segments() {
    let mut seg = TestSegment::new();
    seg.writer.truncate(0).unwrap();
    let e = open(&seg).err().unwrap();
    assert!(matches!(e, ClockError::SegmentNotInitialized { .. }), "{e}");
    assert!(e.to_string().contains("0 bytes"), "{e}");

    std::fs::write(&seg.path, SegmentHeader::layout2(2).to_bytes()).unwrap();
    let e = open(&seg).err().unwrap();
    assert!(matches!(e, ClockError::SegmentMalformed { .. }), "{e}");
    assert!(e.to_string().contains("needs 80"), "{e}");
}

#[test]
fn a_bad_magic_is_not_initialized() {
    let mut seg = TestSegment::healthy(Duration::from_micros(5), 0, ClockStatus::Synchronized);
    seg.writer
        .set_header(SegmentHeader { magic: [0xdead_beef, 0x0bad_cafe], ..seg.writer.header() });
    let e = open(&seg).err().unwrap();
    assert!(matches!(e, ClockError::SegmentNotInitialized { .. }), "{e}");
    assert!(e.to_string().contains("bad magic"), "{e}");
}

#[test]
fn layouts_1_and_3_are_not_supported() {
    for version in [1u16, 3, 0x0303] {
        let mut seg = TestSegment::healthy(Duration::from_micros(5), 0, ClockStatus::Synchronized);
        seg.writer.set_version(version);
        let e = open(&seg).err().unwrap();
        assert_eq!(
            e,
            ClockError::SegmentVersionNotSupported { path: seg.path.clone(), version },
            "version {version}"
        );
    }
    // A real layout-1 file is 72 bytes long.
    let mut seg = TestSegment::new();
    seg.writer.set_header(SegmentHeader { segsize: 72, version: 1, ..SegmentHeader::layout2(2) });
    seg.writer.truncate(72).unwrap();
    assert!(matches!(open(&seg), Err(ClockError::SegmentVersionNotSupported { version: 1, .. })));
}

#[test]
fn version_zero_or_generation_zero_at_open_is_not_initialized() {
    // Created but never written: version 2, generation 0.
    let seg = TestSegment::new();
    let e = open(&seg).err().unwrap();
    assert!(e.to_string().contains("generation 0"), "{e}");
    // Version 0: the daemon is initializing the file.
    let mut seg = TestSegment::healthy(Duration::from_micros(5), 0, ClockStatus::Synchronized);
    seg.writer.set_version(0);
    let e = open(&seg).err().unwrap();
    assert!(matches!(e, ClockError::SegmentNotInitialized { .. }), "{e}");
    assert!(e.to_string().contains("version 0"), "{e}");
}

#[test]
fn a_generation_stuck_odd_serves_the_last_good_snapshot_or_nothing() {
    // Without an earlier good read there is nothing safe to serve.
    let mut seg = TestSegment::new();
    seg.writer.write(&body_now(Duration::from_micros(5), 0, ClockStatus::Synchronized));
    seg.writer.leave_write_in_progress();
    let e = open(&seg).err().unwrap();
    assert!(e.to_string().contains("odd generation"), "{e}");

    // With one, the reader keeps using it, and its bound keeps growing from its own as_of.
    let mut seg = TestSegment::new();
    seg.writer.write(&body_now(Duration::from_micros(5), 1_000_000, ClockStatus::Synchronized));
    let clock = open(&seg).unwrap();
    let first = clock.now().unwrap();
    seg.writer.leave_write_in_progress();
    seg.writer.write_body_unannounced(&body_now(Duration::from_secs(100), 0, ClockStatus::Unknown));
    std::thread::sleep(Duration::from_millis(30));
    let later = clock.now().unwrap();
    assert_eq!(later.status, ClockStatus::Synchronized, "the half-written body is never used");
    assert!(later.bound() > first.bound(), "{:?} vs {:?}", later.bound(), first.bound());
    assert!(later.bound() < Duration::from_millis(1));
}

/// The fallback is the latest snapshot the daemon published, never an earlier one: a status the
/// daemon has withdrawn must not come back while a write is in progress.
#[test]
fn the_fallback_never_brings_back_a_withdrawn_status() {
    // (a) A later write with an *older* as_of (a confused writer) that withdraws Synchronized.
    let mut seg = TestSegment::new();
    let sync = body_now(Duration::from_micros(5), 0, ClockStatus::Synchronized);
    seg.writer.write(&sync);
    let clock = open(&seg).unwrap();
    assert_eq!(clock.now().unwrap().status, ClockStatus::Synchronized);
    let older = MonoTimespec::from_nanos(sync.as_of.as_nanos() - 1_000_000);
    seg.writer.write(&SegmentBody {
        as_of: older,
        clock_status: ClockStatus::Unknown.code(),
        ..sync
    });
    assert_eq!(clock.now().unwrap().status, ClockStatus::Unknown);
    seg.writer.leave_write_in_progress();
    assert_eq!(
        clock.now().unwrap().status,
        ClockStatus::Unknown,
        "fallback brought Synchronized back"
    );

    // (b) as_of frozen (a 2.x daemon while chrony is unsynchronized) and so many status updates
    // that the 16-bit generation wraps past the fallback's.
    let mut seg = TestSegment::new();
    let sync = body_now(Duration::from_micros(5), 0, ClockStatus::Synchronized);
    seg.writer.write(&sync);
    let clock = open(&seg).unwrap();
    assert_eq!(clock.now().unwrap().status, ClockStatus::Synchronized);
    let disrupted = SegmentBody { clock_status: ClockStatus::Disrupted.code(), ..sync };
    for _ in 0..20_000 {
        seg.writer.write(&disrupted);
    }
    assert_eq!(clock.now().unwrap().status, ClockStatus::Disrupted);
    seg.writer.leave_write_in_progress();
    assert_eq!(
        clock.now().unwrap().status,
        ClockStatus::Disrupted,
        "fallback brought Synchronized back"
    );
}

#[test]
fn a_restarting_daemon_version_zero_mid_run_serves_the_last_good_snapshot() {
    let mut seg = TestSegment::healthy(Duration::from_micros(7), 0, ClockStatus::Synchronized);
    let clock = open(&seg).unwrap();
    assert!(clock.now().is_ok());
    seg.writer.set_version(0);
    let r = clock.now().unwrap();
    assert_eq!(r.status, ClockStatus::Synchronized);
    assert_eq!(r.bound(), Duration::from_micros(7));
    seg.writer.set_version(2);
    seg.writer.write(&body_now(Duration::from_micros(9), 0, ClockStatus::Synchronized));
    assert_eq!(clock.now().unwrap().bound(), Duration::from_micros(9));
}

#[test]
fn a_segsize_below_layout_2_is_malformed() {
    let mut seg = TestSegment::healthy(Duration::from_micros(5), 0, ClockStatus::Synchronized);
    let h = seg.writer.header();
    seg.writer.set_header(SegmentHeader { segsize: 72, ..h });
    let e = open(&seg).err().unwrap();
    assert!(matches!(e, ClockError::SegmentMalformed { .. }), "{e}");
    assert!(e.to_string().contains("segsize = 72"), "{e}");
}

#[test]
fn every_implausible_field_is_malformed_and_named() {
    let good = body_now(Duration::from_micros(5), 50_000, ClockStatus::Synchronized);
    let cases = [
        (SegmentBody { bound_nsec: -5, ..good }, "bound_nsec"),
        (SegmentBody { as_of: MonoTimespec { sec: good.as_of.sec, nsec: SEC }, ..good }, "as_of"),
        (SegmentBody { void_after: MonoTimespec { sec: 0, nsec: 0 }, ..good }, "void_after"),
        (SegmentBody { clock_status: 7, ..good }, "clock_status"),
        (SegmentBody { max_drift_ppb: 1_000_000_000, ..good }, "max_drift_ppb"),
        (SegmentBody { disruption_support: 9, ..good }, "flag"),
    ];
    for (body, field) in cases {
        let mut seg = TestSegment::new();
        seg.writer.write(&body);
        let e = open(&seg).err().unwrap();
        assert!(matches!(e, ClockError::SegmentMalformed { .. }), "{field}: {e}");
        assert!(e.to_string().contains(field), "{field}: {e}");

        // The same garbage arriving in a later update is an error too, not a silent fallback.
        let mut seg = TestSegment::healthy(Duration::from_micros(5), 0, ClockStatus::Synchronized);
        let clock = open(&seg).unwrap();
        seg.writer.write(&body);
        assert!(matches!(clock.now(), Err(ClockError::SegmentMalformed { .. })), "{field}");
    }
}

#[test]
fn as_of_in_the_future_is_a_causality_breach() {
    let mut seg = TestSegment::new();
    seg.writer.write(&body_aged(
        -SEC,
        Duration::from_secs(1000),
        Duration::from_micros(5),
        ClockStatus::Synchronized,
    ));
    let e = open(&seg).unwrap().now().unwrap_err();
    match e {
        ClockError::CausalityBreach { ahead } => {
            assert!(
                ahead > Duration::from_millis(900) && ahead <= Duration::from_secs(1),
                "{ahead:?}"
            )
        }
        other => panic!("expected a causality breach, got {other}"),
    }
}

#[test]
fn a_stale_daemon_turns_free_running_then_unknown_after_void_after() {
    ensure_uptime(30 * SEC);
    // 10 s since the last update: past the 5 s grace, before void_after.
    let mut seg = TestSegment::new();
    seg.writer.write(&body_aged(
        10 * SEC,
        Duration::from_secs(1000),
        Duration::from_micros(5),
        ClockStatus::Synchronized,
    ));
    let r = open(&seg).unwrap().now().unwrap();
    assert_eq!(r.status, ClockStatus::FreeRunning);
    // 5 µs + 10 s × 50 ppm = 505 µs, and a little more for the time since.
    assert!(r.bound() >= Duration::from_micros(505), "{:?}", r.bound());
    assert!(r.bound() < Duration::from_micros(520), "{:?}", r.bound());

    // 30 s since the update with void_after at 20 s: void.
    let mut seg = TestSegment::new();
    seg.writer.write(&body_aged(
        30 * SEC,
        Duration::from_secs(20),
        Duration::from_micros(5),
        ClockStatus::Synchronized,
    ));
    assert_eq!(open(&seg).unwrap().now().unwrap().status, ClockStatus::Unknown);
}

#[test]
fn stored_statuses_are_reported() {
    for status in [
        ClockStatus::Unknown,
        ClockStatus::FreeRunning,
        ClockStatus::Disrupted,
        ClockStatus::Synchronized,
    ] {
        let seg = TestSegment::healthy(Duration::from_micros(5), 0, status);
        assert_eq!(open(&seg).unwrap().now().unwrap().status, status);
    }
}

#[test]
fn the_vmclock_marker_is_checked_when_the_segment_asks_for_it() {
    let mut seg = TestSegment::new();
    let body = SegmentBody {
        disruption_support: 1,
        disruption_marker: 41,
        ..body_now(Duration::from_micros(5), 0, ClockStatus::Synchronized)
    };
    seg.writer.write(&body);

    // No VMClock page at all: fail closed.
    let clock = open(&seg).unwrap();
    assert!(matches!(clock.now(), Err(ClockError::VmClock { .. })));

    // Markers agree: the stored status stands.
    let mut vm = VmClockWriter::create(&seg.vmclock_path(), 41).unwrap();
    let clock = open(&seg).unwrap();
    assert_eq!(clock.now().unwrap().status, ClockStatus::Synchronized);

    // The hypervisor records a disruption the daemon has not acted on yet: Unknown.
    vm.set_disruption_marker(42).unwrap();
    assert_eq!(clock.now().unwrap().status, ClockStatus::Unknown);

    // The daemon catches up.
    seg.writer.write(&SegmentBody { disruption_marker: 42, ..body });
    assert_eq!(clock.now().unwrap().status, ClockStatus::Synchronized);

    // A page stuck mid-update, a bad magic or an unknown version: errors.
    vm.leave_update_in_progress().unwrap();
    let e = clock.now().unwrap_err();
    assert!(e.to_string().contains("seq_count"), "{e}");
    vm.set_disruption_marker(42).unwrap();
    vm.set_version(2).unwrap();
    assert!(clock.now().unwrap_err().to_string().contains("version"));
    vm.set_version(1).unwrap();
    vm.set_magic(0).unwrap();
    assert!(clock.now().unwrap_err().to_string().contains("magic"));

    // Without the flag the page is never looked at.
    let seg2 = TestSegment::healthy(Duration::from_micros(5), 0, ClockStatus::Synchronized);
    assert!(open(&seg2).unwrap().now().is_ok());
}

#[test]
fn a_segment_that_disappears_fails_closed_and_recovers_when_it_returns() {
    let seg = TestSegment::healthy(Duration::from_micros(5), 0, ClockStatus::Synchronized);
    let clock = open(&seg).unwrap();
    assert!(clock.now().is_ok());
    std::fs::remove_file(&seg.path).unwrap();
    // Within the one-second revalidation period the reader notices.
    let deadline = std::time::Instant::now() + Duration::from_secs(3);
    let err = loop {
        match clock.now() {
            Err(e) => break e,
            Ok(_) => assert!(std::time::Instant::now() < deadline, "never noticed the removal"),
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(matches!(err, ClockError::SegmentMissing { .. }), "{err}");

    // A new daemon creates a new file: the reader maps it and serves its data.
    let mut w = SegmentWriter::create(&seg.path).unwrap();
    w.write(&body_now(Duration::from_micros(11), 0, ClockStatus::Synchronized));
    let deadline = std::time::Instant::now() + Duration::from_secs(3);
    loop {
        if let Ok(r) = clock.now() {
            assert_eq!(r.bound(), Duration::from_micros(11));
            break;
        }
        assert!(std::time::Instant::now() < deadline, "never picked up the new file");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_daemon_that_replaces_the_file_is_followed() {
    let seg = TestSegment::healthy(Duration::from_micros(5), 0, ClockStatus::Synchronized);
    let clock = open(&seg).unwrap();
    // Write a new file beside it and rename it over the old one (a new inode).
    let tmp = seg.dir.path().join("shm0.new");
    let mut w = SegmentWriter::create(&tmp).unwrap();
    w.write(&body_now(Duration::from_micros(13), 0, ClockStatus::FreeRunning));
    std::fs::rename(&tmp, &seg.path).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(3);
    while clock.now().unwrap().status != ClockStatus::FreeRunning {
        assert!(std::time::Instant::now() < deadline, "never followed the new file");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(clock.now().unwrap().bound(), Duration::from_micros(13));
}

#[test]
fn updates_are_seen_at_once() {
    let mut seg = TestSegment::healthy(Duration::from_micros(5), 0, ClockStatus::Synchronized);
    let clock = open(&seg).unwrap();
    for (i, status) in [ClockStatus::FreeRunning, ClockStatus::Disrupted, ClockStatus::Synchronized]
        .into_iter()
        .enumerate()
    {
        let bound = Duration::from_micros(100 + i as u64);
        seg.writer.write(&body_now(bound, 0, status));
        let r = clock.now().unwrap();
        assert_eq!((r.status, r.bound()), (status, bound));
    }
    assert_eq!(SEGMENT_LEN, 80);
}
