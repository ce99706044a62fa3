//! `boundkv clock`, run as a user runs it: the real binary, real segments, real exit codes.

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use boundkv_clockbound::segment::layout::{DEFAULT_SEGMENT_PATH, SegmentBody};
use boundkv_clockbound::{ClockStatus, SegmentWriter, monotonic_coarse_nanos};

fn boundkv(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_boundkv"))
        .args(args)
        .env_remove("BOUNDKV_CLOCK")
        .env_remove("RUST_LOG")
        .output()
        .expect("run boundkv")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn segment(dir: &Path, bound: Duration, status: ClockStatus) -> String {
    let path = dir.join("shm0");
    let mut w = SegmentWriter::create(&path).unwrap();
    w.write(&SegmentBody::healthy(monotonic_coarse_nanos(), bound, 50_000, status));
    path.to_str().unwrap().to_string()
}

#[test]
fn the_system_fallback_works_and_says_its_bound_is_assumed() {
    let out = boundkv(&["--clock", "system:500us", "clock"]);
    assert!(out.status.success(), "{out:?}");
    let stdout = text(&out.stdout);
    assert!(stdout.contains("assumed bound of ±500us (not measured)"), "{stdout}");
    assert!(stdout.contains("Synchronized (usable)"), "{stdout}");
    assert!(stdout.contains("bound     ±500.0µs"), "{stdout}");
    assert!(text(&out.stderr).contains("ASSUMPTION"), "the start-up warning is missing");
}

#[test]
fn the_environment_variable_chooses_the_source() {
    let out = Command::new(env!("CARGO_BIN_EXE_boundkv"))
        .args(["clock", "--json"])
        .env("BOUNDKV_CLOCK", "system:2ms")
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["bound_ns"], 2_000_000);
    assert_eq!(v["usable"], true);
}

#[test]
fn a_missing_default_segment_is_explained_with_the_fallback_flag() {
    let out = boundkv(&["clock"]);
    if Path::new(DEFAULT_SEGMENT_PATH).exists() {
        // A machine with a real daemon reads it.
        assert!(text(&out.stdout).contains("clockbound segment"), "{out:?}");
        return;
    }
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(stderr.contains("no ClockBound daemon on this machine"), "{stderr}");
    assert!(stderr.contains("--clock system:500us"), "{stderr}");
    assert!(stderr.contains("Installing ClockBound"), "{stderr}");
}

#[test]
fn a_segment_is_shown_with_its_raw_state() {
    let dir = tempfile::tempdir().unwrap();
    let seg = segment(dir.path(), Duration::from_micros(20), ClockStatus::Synchronized);
    let out = boundkv(&["--clock", &format!("clockbound:{seg}"), "clock"]);
    assert!(out.status.success(), "{out:?}");
    let stdout = text(&out.stdout);
    assert!(stdout.contains(&format!("clockbound segment {seg}")), "{stdout}");
    assert!(stdout.contains("generation 2"), "{stdout}");
    assert!(stdout.contains("drift 50000 ppb"), "{stdout}");
    assert!(stdout.contains("VMClock check off"), "{stdout}");
}

#[test]
fn an_untrusted_status_exits_non_zero_and_says_why() {
    let dir = tempfile::tempdir().unwrap();
    let seg = segment(dir.path(), Duration::from_micros(20), ClockStatus::Disrupted);
    let out = boundkv(&["--clock", &format!("clockbound:{seg}"), "clock"]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(text(&out.stdout).contains("Disrupted (NOT usable: the clock's status is Disrupted)"));
}

#[test]
fn watch_refreshes_count_times() {
    let dir = tempfile::tempdir().unwrap();
    let seg = segment(dir.path(), Duration::from_micros(20), ClockStatus::FreeRunning);
    let out = boundkv(&[
        "--clock",
        &format!("clockbound:{seg}"),
        "clock",
        "--watch",
        "--count",
        "3",
        "--interval",
        "10ms",
        "--json",
    ]);
    assert!(out.status.success(), "{out:?}");
    let lines: Vec<serde_json::Value> =
        text(&out.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 3);
    assert!(lines.iter().all(|v| v["status"] == "FreeRunning" && v["segment"]["generation"] == 2));
    let earliest: Vec<u64> = lines.iter().map(|v| v["earliest_ns"].as_u64().unwrap()).collect();
    assert!(earliest.windows(2).all(|w| w[0] < w[1]), "time moves on: {earliest:?}");
}

#[test]
fn a_bad_source_or_a_broken_segment_is_a_clear_error() {
    let out = boundkv(&["--clock", "ntp", "clock"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("system:500us"));

    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope");
    let out = boundkv(&["--clock", &format!("clockbound:{}", missing.display()), "clock"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("does not exist"), "{}", text(&out.stderr));

    std::fs::write(dir.path().join("junk"), [0u8; 80]).unwrap();
    let out = boundkv(&[
        "--clock",
        &format!("clockbound:{}", dir.path().join("junk").display()),
        "clock",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("bad magic"), "{}", text(&out.stderr));
}

#[test]
fn help_explains_the_clock_sources() {
    let out = boundkv(&["--help"]);
    let help = text(&out.stdout);
    assert!(help.contains("system:500us") && help.contains("BOUNDKV_CLOCK"), "{help}");
    let out = boundkv(&["clock", "--help"]);
    assert!(text(&out.stdout).contains("Exit status"));
}
