//! Compatibility with the real thing: segments written by AWS's own writer (`clock-bound-shm`
//! 2.0.3) and read by both boundkv's reader and AWS's own client (`clock-bound-client` 2.0.3)
//! must give the same status, and intervals that agree to within the time between the two reads.
//! For the states AWS's writer will not produce, boundkv's writer makes them and the two readers
//! must agree on the kind of error.

mod common;

use std::path::Path;
use std::time::Duration;

use boundkv_clockbound::segment::layout::{SegmentBody, SegmentHeader};
use boundkv_clockbound::{
    Clock, ClockBoundClock, ClockBoundOptions, ClockErrorKind, ClockReading, ClockStatus,
    monotonic_coarse_nanos,
};
use clock_bound_client::{ClockBoundClient, ClockBoundErrorKind};
use clock_bound_shm::{ClockErrorBound, ShmWrite, ShmWriter};
use clock_bound_vmclock::shm::VMClockShmBody;
use clock_bound_vmclock::shm_writer::{VMClockShmWrite, VMClockShmWriter};
use common::{SEC, TestSegment, ensure_uptime};
use nix::sys::time::TimeSpec;

fn timespec(nanos: i64) -> TimeSpec {
    TimeSpec::new(nanos.div_euclid(SEC), nanos.rem_euclid(SEC))
}

fn aws_status(s: ClockStatus) -> clock_bound_shm::ClockStatus {
    match s {
        ClockStatus::Unknown => clock_bound_shm::ClockStatus::Unknown,
        ClockStatus::Synchronized => clock_bound_shm::ClockStatus::Synchronized,
        ClockStatus::FreeRunning => clock_bound_shm::ClockStatus::FreeRunning,
        ClockStatus::Disrupted => clock_bound_shm::ClockStatus::Disrupted,
    }
}

fn from_aws_status(s: clock_bound_shm::ClockStatus) -> ClockStatus {
    match s {
        clock_bound_shm::ClockStatus::Unknown => ClockStatus::Unknown,
        clock_bound_shm::ClockStatus::Synchronized => ClockStatus::Synchronized,
        clock_bound_shm::ClockStatus::FreeRunning => ClockStatus::FreeRunning,
        clock_bound_shm::ClockStatus::Disrupted => ClockStatus::Disrupted,
    }
}

fn from_aws_kind(k: ClockBoundErrorKind) -> ClockErrorKind {
    match k {
        ClockBoundErrorKind::Syscall => ClockErrorKind::Syscall,
        ClockBoundErrorKind::SegmentNotInitialized => ClockErrorKind::SegmentNotInitialized,
        ClockBoundErrorKind::SegmentMalformed => ClockErrorKind::SegmentMalformed,
        ClockBoundErrorKind::CausalityBreach => ClockErrorKind::CausalityBreach,
        ClockBoundErrorKind::SegmentVersionNotSupported => {
            ClockErrorKind::SegmentVersionNotSupported
        }
    }
}

/// What AWS's writer puts in the segment.
struct Published {
    age: i64,
    void_after: Duration,
    bound_nsec: i64,
    drift_ppb: u32,
    status: ClockStatus,
    marker: u64,
    disruption_support: bool,
}

impl Default for Published {
    fn default() -> Self {
        Published {
            age: 0,
            void_after: Duration::from_secs(1000),
            bound_nsec: 10_000,
            drift_ppb: 50_000,
            status: ClockStatus::Synchronized,
            marker: 0,
            disruption_support: false,
        }
    }
}

fn publish_with_aws_writer(path: &Path, p: &Published) {
    let as_of = monotonic_coarse_nanos() - p.age;
    let ceb = ClockErrorBound::new(
        timespec(as_of),
        timespec(as_of + p.void_after.as_nanos() as i64),
        p.bound_nsec,
        p.marker,
        p.drift_ppb,
        aws_status(p.status),
        p.disruption_support,
    );
    ShmWriter::new(path).expect("AWS writer").write(&ceb);
}

fn realtime() -> i128 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as i128
}

/// Reads the segment with both clients and checks that they agree.
fn assert_agree(
    segment: &Path,
    vmclock: &Path,
    drift_ppb: u32,
) -> Result<(ClockReading, ClockStatus), ClockErrorKind> {
    let r0 = realtime();
    let ours = ClockBoundClock::open(ClockBoundOptions {
        segment_path: segment.to_path_buf(),
        vmclock_path: vmclock.to_path_buf(),
    })
    .and_then(|c| c.now());
    let theirs =
        ClockBoundClient::new_with_paths(segment.to_str().unwrap(), vmclock.to_str().unwrap())
            .and_then(|mut c| c.now());
    let r1 = realtime();
    match (ours, theirs) {
        (Ok(o), Ok(t)) => {
            let status = from_aws_status(t.clock_status);
            assert_eq!(o.status, status, "statuses differ");
            // Both intervals are centred on CLOCK_REALTIME read somewhere in [r0, r1]; their
            // bounds can differ by the drift over that span plus one coarse-clock tick (≤ 10 ms)
            // and by the 1 ns of our rounding up.
            let span = r1 - r0;
            let tolerance = span + i128::from(drift_ppb) * (span + 10_000_000) / 1_000_000_000 + 2;
            let te =
                i128::from(t.earliest.tv_sec()) * 1_000_000_000 + i128::from(t.earliest.tv_nsec());
            let tl = i128::from(t.latest.tv_sec()) * 1_000_000_000 + i128::from(t.latest.tv_nsec());
            let de = i128::from(o.earliest().as_nanos()) - te;
            let dl = i128::from(o.latest().as_nanos()) - tl;
            assert!(de.abs() <= tolerance, "earliest differs by {de} ns (tolerance {tolerance})");
            assert!(dl.abs() <= tolerance, "latest differs by {dl} ns (tolerance {tolerance})");
            Ok((o, status))
        }
        (Err(o), Err(t)) => {
            assert_eq!(o.kind(), from_aws_kind(t.kind.clone()), "ours: {o}; theirs: {t:?}");
            Err(o.kind())
        }
        (o, t) => panic!("the readers disagree: ours {o:?}, theirs {t:?}"),
    }
}

#[test]
fn every_status_the_daemon_publishes_reads_the_same() {
    for status in [
        ClockStatus::Synchronized,
        ClockStatus::FreeRunning,
        ClockStatus::Unknown,
        ClockStatus::Disrupted,
    ] {
        let seg = TestSegment::new();
        publish_with_aws_writer(&seg.path, &Published { status, ..Published::default() });
        let (r, s) = assert_agree(&seg.path, &seg.vmclock_path(), 50_000).unwrap();
        assert_eq!(s, status);
        assert!(r.bound() >= Duration::from_micros(10));
    }
}

#[test]
fn a_stale_daemon_and_a_void_segment_read_the_same() {
    ensure_uptime(30 * SEC);
    let seg = TestSegment::new();
    publish_with_aws_writer(&seg.path, &Published { age: 10 * SEC, ..Published::default() });
    let (r, s) = assert_agree(&seg.path, &seg.vmclock_path(), 50_000).unwrap();
    assert_eq!(s, ClockStatus::FreeRunning);
    assert!(r.bound() >= Duration::from_micros(510));

    let seg = TestSegment::new();
    publish_with_aws_writer(
        &seg.path,
        &Published { age: 30 * SEC, void_after: Duration::from_secs(20), ..Published::default() },
    );
    assert_eq!(
        assert_agree(&seg.path, &seg.vmclock_path(), 50_000).unwrap().1,
        ClockStatus::Unknown
    );
}

#[test]
fn a_large_bound_and_a_large_drift_read_the_same() {
    let seg = TestSegment::new();
    publish_with_aws_writer(
        &seg.path,
        &Published {
            bound_nsec: 400_000_000,
            drift_ppb: 999_999_999,
            age: 0,
            ..Published::default()
        },
    );
    let (r, _) = assert_agree(&seg.path, &seg.vmclock_path(), 999_999_999).unwrap();
    assert!(r.bound() >= Duration::from_millis(400));
}

#[test]
fn errors_the_daemon_can_publish_are_the_same_kind() {
    // as_of a second in the future.
    let seg = TestSegment::new();
    publish_with_aws_writer(&seg.path, &Published { age: -SEC, ..Published::default() });
    assert_eq!(
        assert_agree(&seg.path, &seg.vmclock_path(), 0).unwrap_err(),
        ClockErrorKind::CausalityBreach
    );

    // A drift of a second per second.
    let seg = TestSegment::new();
    publish_with_aws_writer(
        &seg.path,
        &Published { drift_ppb: 1_000_000_000, ..Published::default() },
    );
    assert_eq!(
        assert_agree(&seg.path, &seg.vmclock_path(), 0).unwrap_err(),
        ClockErrorKind::SegmentMalformed
    );
}

#[test]
fn the_vmclock_check_reads_the_same() {
    let seg = TestSegment::new();
    publish_with_aws_writer(
        &seg.path,
        &Published { disruption_support: true, marker: 7, ..Published::default() },
    );
    // No VMClock page: both refuse.
    assert_eq!(
        assert_agree(&seg.path, &seg.vmclock_path(), 50_000).unwrap_err(),
        ClockErrorKind::SegmentNotInitialized
    );
    // AWS's own VMClock writer, marker equal: the stored status stands.
    let mut vm = VMClockShmWriter::new(&seg.vmclock_path()).expect("AWS VMClock writer");
    vm.write(&VMClockShmBody { disruption_marker: 7, ..VMClockShmBody::default() });
    assert_eq!(
        assert_agree(&seg.path, &seg.vmclock_path(), 50_000).unwrap().1,
        ClockStatus::Synchronized
    );
    // A disruption the daemon has not acted on: both say Unknown.
    vm.write(&VMClockShmBody { disruption_marker: 8, ..VMClockShmBody::default() });
    assert_eq!(
        assert_agree(&seg.path, &seg.vmclock_path(), 50_000).unwrap().1,
        ClockStatus::Unknown
    );
}

#[test]
fn states_only_boundkvs_writer_makes_are_refused_the_same_way() {
    let kinds = |setup: &dyn Fn(&mut TestSegment)| {
        let mut seg = TestSegment::healthy(Duration::from_micros(5), 0, ClockStatus::Synchronized);
        setup(&mut seg);
        assert_agree(&seg.path, &seg.vmclock_path(), 0).unwrap_err()
    };
    assert_eq!(
        kinds(&|s| s.writer.set_header(SegmentHeader { magic: [1, 2], ..s.writer.header() })),
        ClockErrorKind::SegmentNotInitialized
    );
    for version in [1u16, 3, 0x0303] {
        assert_eq!(
            kinds(&|s| s.writer.set_version(version)),
            ClockErrorKind::SegmentVersionNotSupported
        );
    }
    assert_eq!(kinds(&|s| s.writer.set_version(0)), ClockErrorKind::SegmentNotInitialized);
    assert_eq!(
        kinds(&|s| s.writer.set_header(SegmentHeader { generation: 0, ..s.writer.header() })),
        ClockErrorKind::SegmentNotInitialized
    );
    assert_eq!(
        kinds(&|s| s.writer.set_header(SegmentHeader { segsize: 72, ..s.writer.header() })),
        ClockErrorKind::SegmentMalformed
    );
    assert_eq!(kinds(&|s| s.writer.truncate(0).unwrap()), ClockErrorKind::SegmentNotInitialized);
    assert_eq!(
        kinds(&|s| std::fs::remove_file(&s.path).unwrap()),
        ClockErrorKind::SegmentNotInitialized
    );
}

#[test]
fn boundkvs_writer_is_read_by_the_aws_client() {
    // The other direction: segments from boundkv's writer (used by the Jepsen runner) are valid
    // to AWS's client too.
    let mut seg = TestSegment::new();
    seg.writer.write(&SegmentBody::healthy(
        monotonic_coarse_nanos(),
        Duration::from_micros(42),
        0,
        ClockStatus::FreeRunning,
    ));
    let (r, s) = assert_agree(&seg.path, &seg.vmclock_path(), 0).unwrap();
    assert_eq!(s, ClockStatus::FreeRunning);
    assert_eq!(r.bound(), Duration::from_micros(42));
}
