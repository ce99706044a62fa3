//! The reader under a writer that never stops: no torn snapshot is ever accepted, and a daemon
//! restart that truncates the file under busy readers neither crashes the process nor yields a
//! wrong reading. Every loop here is bounded in time and count.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use boundkv_clockbound::segment::layout::{MonoTimespec, SegmentBody};
use boundkv_clockbound::segment::truncation_faults_handled;
use boundkv_clockbound::{Clock, ClockBoundClock, ClockStatus, SegmentWriter};
use common::{TestSegment, body_now};

/// A writer rewrites the body as fast as it can, keeping three fields equal to a counter; readers
/// check every accepted snapshot for a mix of two writes.
#[test]
fn no_torn_snapshot_is_ever_accepted() {
    let mut seg = TestSegment::new();
    let base = body_now(Duration::ZERO, 0, ClockStatus::Synchronized);
    seg.writer.write(&base); // bound = marker = drift = 0: the invariant holds from the start
    let clock = Arc::new(ClockBoundClock::open_path(&seg.path).unwrap());
    let stop = Arc::new(AtomicBool::new(false));
    let mut writer = seg.writer;
    let stop_w = stop.clone();
    let writes = std::thread::spawn(move || {
        let mut i: u64 = 1;
        let deadline = Instant::now() + Duration::from_millis(1500);
        while Instant::now() < deadline && i < 50_000_000 {
            // Like a real daemon, every update carries a later as_of.
            writer.write(&SegmentBody {
                as_of: MonoTimespec::from_nanos(base.as_of.as_nanos() + i as i64),
                bound_nsec: i as i64,
                disruption_marker: i,
                max_drift_ppb: (i % 1_000_000) as u32,
                ..base
            });
            i += 1;
        }
        stop_w.store(true, Ordering::Relaxed);
        i
    });
    let checked = Arc::new(AtomicU64::new(0));
    let readers: Vec<_> = (0..2)
        .map(|_| {
            let (clock, stop, checked) = (clock.clone(), stop.clone(), checked.clone());
            std::thread::spawn(move || {
                let mut last = 0;
                while !stop.load(Ordering::Relaxed) {
                    let (_, s) = clock.snapshot_with_generation().unwrap();
                    assert_eq!(s.bound_nanos, s.disruption_marker, "torn read accepted: {s:?}");
                    assert_eq!(u64::from(s.max_drift_ppb), s.disruption_marker % 1_000_000);
                    assert!(s.disruption_marker >= last, "went backwards: {s:?}");
                    last = s.disruption_marker;
                    checked.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    let written = writes.join().unwrap();
    readers.into_iter().for_each(|r| r.join().unwrap());
    eprintln!("{written} writes, {} snapshots checked", checked.load(Ordering::Relaxed));
    assert!(written > 1000 && checked.load(Ordering::Relaxed) > 1000);
}

/// The daemon restarts again and again, each time holding the file truncated for a few ms while
/// readers hammer `now()`. Without the SIGBUS handler this process would die on the first touch
/// of the truncated page. Every reading must still be one the daemon actually published, and none
/// may fail: the last good snapshot covers the restart.
#[test]
fn daemon_restarts_under_busy_readers_are_survived() {
    let seg = TestSegment::healthy(Duration::from_micros(5), 0, ClockStatus::Synchronized);
    let clock = Arc::new(ClockBoundClock::open_path(&seg.path).unwrap());
    let faults_before = truncation_faults_handled();
    let stop = Arc::new(AtomicBool::new(false));
    let readers: Vec<_> = (0..2)
        .map(|_| {
            let (clock, stop) = (clock.clone(), stop.clone());
            std::thread::spawn(move || {
                let (mut ok, mut errors) = (0u64, 0u64);
                while !stop.load(Ordering::Relaxed) {
                    match clock.now() {
                        Ok(r) => {
                            // Only bounds the "daemon" ever wrote: 5 µs, or 1 000 + k µs.
                            let us = r.bound().as_micros();
                            assert!(us == 5 || (1000..1100).contains(&us), "bound {us} µs");
                            ok += 1;
                        }
                        Err(e) => {
                            if errors < 3 {
                                eprintln!("error during restart: {e}");
                            }
                            errors += 1
                        }
                    }
                }
                (ok, errors)
            })
        })
        .collect();
    let mut writer = seg.writer;
    for k in 0..20u64 {
        std::thread::sleep(Duration::from_millis(5));
        writer.restart_daemon(Duration::from_millis(3)).unwrap();
        writer.write(&body_now(Duration::from_micros(1000 + k), 0, ClockStatus::Synchronized));
    }
    // After the last restart, readers converge on the last published bound.
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        if clock.now().is_ok_and(|r| r.bound() == Duration::from_micros(1019)) {
            break;
        }
        assert!(Instant::now() < deadline, "readers never caught up: {:?}", clock.now());
        std::thread::sleep(Duration::from_millis(5));
    }
    stop.store(true, Ordering::Relaxed);
    let (ok, errors): (u64, u64) = readers
        .into_iter()
        .map(|r| r.join().unwrap())
        .fold((0, 0), |(a, b), (c, d)| (a + c, b + d));
    let faults = truncation_faults_handled() - faults_before;
    eprintln!("{ok} readings, {errors} errors, {faults} truncation faults absorbed");
    assert!(ok > 1000);
    assert_eq!(errors, 0, "a restart must never turn into an error while a good snapshot exists");
    assert!(faults > 0, "the test never hit the truncation window; it proves nothing");
}

/// The same under AWS's own writer: a daemon that finds the segment unusable truncates it with
/// `File::create` and rewrites the header in several small writes, so readers see half-written
/// headers (magic `[0x414D5A4E, 0]`) as well as truncation faults. They must serve the last good
/// snapshot throughout, never an error, and follow the new data.
#[test]
fn aws_writer_restarts_under_busy_readers_are_survived() {
    use clock_bound_shm::{ClockErrorBound, ShmWrite, ShmWriter};
    use nix::sys::time::TimeSpec;

    let seg = TestSegment::healthy(Duration::from_micros(5), 0, ClockStatus::Synchronized);
    let clock = Arc::new(ClockBoundClock::open_path(&seg.path).unwrap());
    let stop = Arc::new(AtomicBool::new(false));
    let readers: Vec<_> = (0..2)
        .map(|_| {
            let (clock, stop) = (clock.clone(), stop.clone());
            std::thread::spawn(move || {
                let (mut ok, mut errors) = (0u64, Vec::new());
                while !stop.load(Ordering::Relaxed) {
                    match clock.now() {
                        Ok(r) => {
                            let us = r.bound().as_micros();
                            assert!(us == 5 || (2000..2100).contains(&us), "bound {us} µs");
                            ok += 1;
                        }
                        Err(e) => errors.push(e.to_string()),
                    }
                }
                (ok, errors)
            })
        })
        .collect();
    let mut ours = seg.writer;
    for k in 0..20i64 {
        std::thread::sleep(Duration::from_millis(5));
        // Make the segment unusable to AWS's reader (version 0), so its writer wipes it.
        ours.set_version(0);
        let mut aws = ShmWriter::new(&seg.path).expect("AWS writer");
        let as_of = boundkv_clockbound::monotonic_coarse_nanos();
        let ts = |n: i64| TimeSpec::new(n / 1_000_000_000, n % 1_000_000_000);
        aws.write(&ClockErrorBound::new(
            ts(as_of),
            ts(as_of + 1_000_000_000_000),
            2_000_000 + k * 1000,
            0,
            0,
            clock_bound_shm::ClockStatus::Synchronized,
            false,
        ));
        drop(aws);
        ours = SegmentWriter::open(&seg.path).unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        if clock.now().is_ok_and(|r| r.bound() == Duration::from_micros(2019)) {
            break;
        }
        assert!(Instant::now() < deadline, "readers never caught up: {:?}", clock.now());
        std::thread::sleep(Duration::from_millis(5));
    }
    stop.store(true, Ordering::Relaxed);
    let mut ok = 0;
    for r in readers {
        let (n, errors) = r.join().unwrap();
        assert!(
            errors.is_empty(),
            "errors during AWS-style restarts: {:?}",
            &errors[..errors.len().min(3)]
        );
        ok += n;
    }
    assert!(ok > 1000);
}

/// The handler absorbs faults on our pages only. A SIGBUS anywhere else must still kill the
/// process, as it would without boundkv. Runs itself as a child process to watch it die.
#[test]
fn a_foreign_sigbus_still_kills_the_process() {
    const CHILD: &str = "BOUNDKV_SIGBUS_CHILD";
    if std::env::var_os(CHILD).is_some() {
        // Install our handler by opening a clock, and show it works: a truncation of our own
        // segment under the reader is absorbed.
        let mut seg = TestSegment::healthy(Duration::from_micros(5), 0, ClockStatus::Synchronized);
        let clock = ClockBoundClock::open_path(&seg.path).unwrap();
        let before = truncation_faults_handled();
        seg.writer.truncate(0).unwrap();
        let _ = clock.now();
        assert_eq!(truncation_faults_handled(), before + 1, "our own fault was not absorbed");
        println!("absorbed our own fault");
        if std::env::var_os("BOUNDKV_SIGBUS_SENT").is_some() {
            // A SIGBUS someone sends is not a fault of ours either: it goes where it would have
            // gone without boundkv. Rust's own handler swallows the first one (it resets the
            // default action and returns); the second one therefore kills, unless boundkv's
            // handler were wrongly absorbing sent signals.
            for _ in 0..2 {
                // SAFETY: raising a signal at ourselves.
                unsafe { libc::raise(libc::SIGBUS) };
            }
            println!("survived two sent SIGBUS");
            std::process::exit(0);
        }
        let path = seg.dir.path().join("other");
        std::fs::write(&path, [1u8; 4096]).unwrap();
        let f = std::fs::File::open(&path).unwrap();
        use std::os::fd::AsRawFd;
        // SAFETY: a fresh private mapping of a file we own; reading it after truncation is the
        // point of the test.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                4096,
                libc::PROT_READ,
                libc::MAP_SHARED,
                f.as_raw_fd(),
                0,
            )
        };
        assert_ne!(p, libc::MAP_FAILED);
        std::fs::OpenOptions::new().write(true).open(&path).unwrap().set_len(0).unwrap();
        // SAFETY: deliberately faulting.
        let v = unsafe { std::ptr::read_volatile(p.cast::<u8>()) };
        println!("survived a foreign SIGBUS and read {v}");
        std::process::exit(0);
    }
    for sent in [false, true] {
        let mut cmd = std::process::Command::new(std::env::current_exe().unwrap());
        cmd.args(["--exact", "a_foreign_sigbus_still_kills_the_process", "--nocapture"])
            .env(CHILD, "1");
        if sent {
            cmd.env("BOUNDKV_SIGBUS_SENT", "1");
        }
        let out = cmd.output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        use std::os::unix::process::ExitStatusExt;
        assert!(stdout.contains("absorbed our own fault"), "the handler was not working: {stdout}");
        assert_eq!(
            out.status.signal(),
            Some(libc::SIGBUS),
            "child (sent={sent}) should have died of SIGBUS: {:?}\n{stdout}",
            out.status
        );
    }
}
