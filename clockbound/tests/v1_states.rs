//! ClockBound's first protocol (daemon 0.1.x, a Unix datagram socket): every answer a daemon can
//! give, served by boundkv's own daemon side of the protocol ([`V1TestDaemon`]), and the reader's
//! defined outcome for each. The table is `boundkv_clockbound::v1`'s; it mirrors the segment
//! reader's (`segment_states.rs`) where the protocol has the same state.
//!
//! | the daemon... | `now()` |
//! |---|---|
//! | absent: no file / a file nothing is bound to | `SocketMissing` (open, and every `now()` until it returns) |
//! | silent | `Io` (timed out), then fine again once it answers, on a new socket |
//! | answers Error, with or without a body | `DaemonError` |
//! | `F = 1` / `F = 0` | `Unknown` / `Synchronized` |
//! | each malformed answer | `ResponseMalformed` naming what |
//! | a late answer to a timed-out request | never read as a later request's answer |
//! | an answer sent twice | the copy is never read as the next request's answer |

use std::os::unix::net::UnixDatagram;
use std::time::{Duration, SystemTime};

use boundkv_clockbound::v1::{decode_now_response, encode_now_response};
use boundkv_clockbound::{
    Clock, ClockBoundV1Clock, ClockError, ClockSource, ClockStatus, Timestamp, V1Answer,
    V1TestDaemon,
};

fn synchronized(bound_us: u64) -> V1Answer {
    V1Answer::Interval { bound: Duration::from_micros(bound_us), unsynchronized: false }
}

fn daemon(dir: &tempfile::TempDir, answer: V1Answer) -> V1TestDaemon {
    V1TestDaemon::start(dir.path().join("clockboundd.sock"), answer).unwrap()
}

fn system_now() -> Timestamp {
    Timestamp::from_system_time(SystemTime::now())
}

#[test]
fn a_synchronized_daemon_gives_its_bound_around_the_system_clock() {
    let dir = tempfile::tempdir().unwrap();
    let d = daemon(&dir, synchronized(50));
    let clock = ClockBoundV1Clock::open(d.path()).unwrap();
    let before = system_now();
    let r = clock.now().unwrap();
    let after = system_now();
    assert_eq!(r.status, ClockStatus::Synchronized);
    assert_eq!(r.interval.bound(), Duration::from_micros(50));
    // The daemon read its clock between the call and its return.
    let mid = r.interval.midpoint();
    assert!(before <= mid && mid <= after, "{before} <= {mid} <= {after}");
    assert!(clock.describe().contains("clockbound-v1"), "{}", clock.describe());
}

#[test]
fn the_worked_example_of_the_module_docs_decodes() {
    let answer = [
        0x01, 0x01, 0x00, 0x00, 0x17, 0x97, 0x9c, 0xfe, 0x36, 0x29, 0x3c, 0xb0, 0x17, 0x97, 0x9c,
        0xfe, 0x36, 0x2a, 0xc3, 0x50,
    ];
    let r = decode_now_response("d.sock".as_ref(), &answer).unwrap();
    assert_eq!(r.earliest().as_nanos(), 1_699_999_999_999_950_000);
    assert_eq!(r.latest().as_nanos(), 1_700_000_000_000_050_000);
    assert_eq!(r.status, ClockStatus::Synchronized);
    assert_eq!(encode_now_response(r.earliest().as_nanos(), r.latest().as_nanos(), false), answer);
}

#[test]
fn an_absent_daemon_is_socket_missing_until_it_comes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("clockboundd.sock");
    // No file at all.
    let e = ClockBoundV1Clock::open(&path).err().unwrap();
    assert!(matches!(e, ClockError::SocketMissing { .. }), "{e}");
    assert!(e.to_string().contains("clockboundd 0.1.x"), "{e}");
    // A file nobody is bound to (a daemon that died and left it).
    drop(UnixDatagram::bind(&path).unwrap());
    assert!(path.exists());
    let e = ClockBoundV1Clock::open(&path).err().unwrap();
    assert!(matches!(e, ClockError::SocketMissing { .. }), "{e}");
    // And through `--clock`: the same error.
    let source: ClockSource = format!("clockbound-v1:{}", path.display()).parse().unwrap();
    assert!(matches!(source.open(None).err().unwrap(), ClockError::SocketMissing { .. }));

    // A daemon that goes away and comes back.
    let d = daemon(&dir, synchronized(10));
    let clock = ClockBoundV1Clock::open(&path).unwrap();
    drop(d);
    let e = clock.now().unwrap_err();
    assert!(matches!(e, ClockError::SocketMissing { .. }), "{e}");
    let _d = daemon(&dir, synchronized(10));
    assert_eq!(clock.now().unwrap().status, ClockStatus::Synchronized);
}

#[test]
fn a_silent_daemon_times_out_and_is_read_again_once_it_answers() {
    let dir = tempfile::tempdir().unwrap();
    let d = daemon(&dir, synchronized(10));
    let clock = ClockBoundV1Clock::open_with_timeout(d.path(), Duration::from_millis(50)).unwrap();
    d.set(V1Answer::Silent);
    let start = std::time::Instant::now();
    let e = clock.now().unwrap_err();
    assert!(matches!(e, ClockError::Io { .. }), "{e}");
    assert!(e.to_string().contains("did not answer"), "{e}");
    assert!(start.elapsed() >= Duration::from_millis(50));
    d.set(synchronized(10));
    assert_eq!(clock.now().unwrap().status, ClockStatus::Synchronized);
}

#[test]
fn error_answers_with_or_without_a_body_are_daemon_errors() {
    let dir = tempfile::tempdir().unwrap();
    let d = daemon(&dir, synchronized(10));
    let clock = ClockBoundV1Clock::open(d.path()).unwrap();
    for with_body in [true, false] {
        d.set(V1Answer::Error { with_body });
        let e = clock.now().unwrap_err();
        assert!(matches!(e, ClockError::DaemonError { .. }), "{with_body}: {e}");
    }
    // And the open fails on one.
    let e = ClockBoundV1Clock::open(d.path()).err().unwrap();
    assert!(matches!(e, ClockError::DaemonError { .. }), "{e}");
}

#[test]
fn the_unsynchronized_flag_is_unknown_and_clearing_it_is_synchronized() {
    let dir = tempfile::tempdir().unwrap();
    let d =
        daemon(&dir, V1Answer::Interval { bound: Duration::from_micros(20), unsynchronized: true });
    let clock = ClockBoundV1Clock::open(d.path()).unwrap();
    let r = clock.now().unwrap();
    assert_eq!(r.status, ClockStatus::Unknown);
    assert!(!r.status.is_trustworthy());
    d.set(synchronized(20));
    assert_eq!(clock.now().unwrap().status, ClockStatus::Synchronized);
}

#[test]
fn every_malformed_answer_is_refused_and_named() {
    let good = encode_now_response(1_000, 2_000, false);
    let with = |at: usize, v: u8| {
        let mut a = good.to_vec();
        a[at] = v;
        a
    };
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("empty", vec![], "shorter than the 4-byte header"),
        ("3 bytes", good[..3].to_vec(), "shorter than the 4-byte header"),
        ("header only", good[..4].to_vec(), "a Now answer has 20"),
        ("19 bytes", good[..19].to_vec(), "a Now answer has 20"),
        ("21 bytes", [&good[..], &[0]].concat(), "a Now answer has 20"),
        ("version 2", with(0, 2), "protocol version 2"),
        ("version 0", with(0, 0), "protocol version 0"),
        ("type Before", with(1, 2), "response type 2"),
        ("type 9", with(1, 9), "response type 9"),
        ("flags 2", with(2, 2), "flags byte 2"),
        ("reserved 1", with(3, 1), "reserved byte 1"),
        ("earliest 0", encode_now_response(0, 2_000, false).to_vec(), "earliest is 0"),
        ("earliest > latest", encode_now_response(3_000, 2_000, false).to_vec(), "is after latest"),
    ];
    let dir = tempfile::tempdir().unwrap();
    let d = daemon(&dir, synchronized(10));
    let clock = ClockBoundV1Clock::open(d.path()).unwrap();
    for (name, bytes, says) in cases {
        // Decoded alone...
        let e = decode_now_response("d.sock".as_ref(), &bytes).unwrap_err();
        assert!(matches!(e, ClockError::ResponseMalformed { .. }), "{name}: {e}");
        assert!(e.to_string().contains(says), "{name}: {e}");
        // ...and sent by a daemon: the same answer, and the next good answer is read.
        d.set(V1Answer::Raw(bytes));
        let e = clock.now().unwrap_err();
        assert!(matches!(e, ClockError::ResponseMalformed { .. }), "{name}: {e}");
        d.set(synchronized(10));
        assert_eq!(clock.now().unwrap().status, ClockStatus::Synchronized, "{name}");
    }
}

/// A daemon that answers late: the late answer must never be read as the next call's. With one
/// socket for every call it would be (the next call's `recv` finds it waiting); a fresh socket
/// after the timeout leaves it behind.
#[test]
fn a_late_answer_is_never_taken_for_a_fresh_one() {
    let dir = tempfile::tempdir().unwrap();
    let (path, server) = scripted_daemon(&dir);
    let client = std::thread::spawn(move || {
        // Opening takes one reading: answered promptly below.
        let clock =
            ClockBoundV1Clock::open_with_timeout(&path, Duration::from_millis(200)).unwrap();
        // This call times out: its answer comes late.
        assert!(matches!(clock.now(), Err(ClockError::Io { .. })));
        // This one is answered with a fresh interval; the stale one must not be read.
        clock.now().unwrap()
    });
    let first = next_request(&server);
    reply(&server, 1_000, &first);
    let late = next_request(&server);
    // After the client gave up (200 ms) and sent its next request, before that is answered.
    std::thread::sleep(Duration::from_millis(250));
    reply(&server, 2_000, &late); // the stale answer
    let fresh = next_request(&server);
    reply(&server, 3_000, &fresh);
    let r = client.join().unwrap();
    assert_eq!(r.earliest().as_nanos(), 3_000, "the late answer was read as a fresh one");
}

/// A daemon side scripted by the test itself: its socket in `dir`.
fn scripted_daemon(dir: &tempfile::TempDir) -> (std::path::PathBuf, UnixDatagram) {
    let path = dir.path().join("scripted.sock");
    let server = UnixDatagram::bind(&path).unwrap();
    (path, server)
}

/// Waits for the next request; returns who sent it.
fn next_request(server: &UnixDatagram) -> std::os::unix::net::SocketAddr {
    let mut buf = [0u8; 16];
    server.recv_from(&mut buf).unwrap().1
}

/// Answers `[earliest, earliest + 10 ns]`, synchronized, to `to`.
fn reply(server: &UnixDatagram, earliest: u64, to: &std::os::unix::net::SocketAddr) {
    let _ = server.send_to_addr(&encode_now_response(earliest, earliest + 10, false), to);
}

#[test]
fn the_source_is_read_behind_the_step_guard() {
    let dir = tempfile::tempdir().unwrap();
    let d = daemon(&dir, synchronized(30));
    let source: ClockSource = format!("clockbound-v1:{}", d.path().display()).parse().unwrap();
    let clock = source.open(None).unwrap();
    assert!(clock.guard_report().is_some(), "every source is read through a step guard");
    let r = clock.now().unwrap();
    assert_eq!(r.status, ClockStatus::Synchronized);
    assert!(d.requests() >= 2, "open and now each asked the daemon");
}

/// The real daemon: clockboundd 0.1.4 from crates.io, fed by a synchronized chrony. Run by
/// `scripts/clockbound-v1.sh`, which starts both and sets `BOUNDKV_CLOCKBOUND_V1_SOCKET`.
#[test]
#[ignore = "needs a running clockboundd 0.1.x: scripts/clockbound-v1.sh runs it"]
fn the_real_0_1_daemon_is_read() {
    let socket = std::env::var("BOUNDKV_CLOCKBOUND_V1_SOCKET")
        .expect("BOUNDKV_CLOCKBOUND_V1_SOCKET: run this through scripts/clockbound-v1.sh");
    let clock = ClockBoundV1Clock::open(&socket).unwrap();
    let mut bounds = Vec::new();
    for _ in 0..200 {
        let before = system_now();
        let r = clock.now().unwrap();
        let after = system_now();
        assert_eq!(r.status, ClockStatus::Synchronized, "chrony is synchronized: {r:?}");
        // The daemon reads the same system clock, between the call and its return.
        assert!(r.earliest() <= after && before <= r.latest(), "{before} {r:?} {after}");
        bounds.push(r.interval.bound());
    }
    bounds.sort();
    eprintln!(
        "clockboundd 0.1.4: 200 readings, bound min {:?}, median {:?}, max {:?}",
        bounds[0], bounds[100], bounds[199]
    );
    // Through `--clock`, behind the step guard, as every command opens it.
    let source: ClockSource = format!("clockbound-v1:{socket}").parse().unwrap();
    let guarded = source.open(None).unwrap();
    assert_eq!(guarded.now().unwrap().status, ClockStatus::Synchronized);
}

/// A daemon that answers one request twice: the second copy waits in the socket and must not be
/// read as the next request's answer.
#[test]
fn a_duplicated_answer_is_not_read_as_the_next_one() {
    let dir = tempfile::tempdir().unwrap();
    let (path, server) = scripted_daemon(&dir);
    let (both_sent, go_on) = std::sync::mpsc::channel::<()>();
    let client = std::thread::spawn(move || {
        let clock = ClockBoundV1Clock::open(&path).unwrap(); // answered twice
        go_on.recv().unwrap(); // the duplicate is in this socket now (a local send is delivery)
        clock.now().unwrap()
    });
    let first = next_request(&server);
    reply(&server, 1_000, &first);
    reply(&server, 2_000, &first); // the duplicate
    both_sent.send(()).unwrap();
    let second = next_request(&server);
    reply(&server, 3_000, &second);
    let r = client.join().unwrap();
    assert_eq!(r.earliest().as_nanos(), 3_000, "the duplicate was read as the next answer");
}
