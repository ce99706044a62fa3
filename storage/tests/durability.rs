//! "Durable means synced": every acknowledged flush of a [`Durability::Sync`] engine is preceded
//! by an `fdatasync` of sled's log file, watched from outside with `strace`.
//!
//! A SIGKILL test cannot show this (the page cache survives a killed process; it does not survive
//! a power loss). sled's own `flush` issues only `sync_file_range`, so without boundkv's sync this
//! test fails: it is the check that the `fdatasync` is really there and really comes *before* the
//! acknowledgement. `scripts/setup.sh` installs `strace`.

use std::process::Command;

use boundkv_storage::{Durability, Engine, SledEngine, SledOptions, WriteBatch};

const CHILD_ENV: &str = "BOUNDKV_DURABILITY_CHILD";
const FLUSHES: usize = 40;

/// The child: write + flush + acknowledge (a write to stdout), `FLUSHES` times, on one thread.
fn child(dir: &str, durability: &str) -> ! {
    let durability = if durability == "sync" { Durability::Sync } else { Durability::Buffered };
    let engine =
        SledEngine::open(dir, SledOptions { durability, ..SledOptions::default() }).unwrap();
    for i in 0..FLUSHES {
        let mut b = WriteBatch::new();
        b.put(format!("k{i}").into_bytes(), vec![7u8; 100]);
        engine.write(b).unwrap();
        engine.flush().unwrap();
        println!("ack {i}");
    }
    std::process::exit(0)
}

/// Runs the child under strace and returns the trace: one line per traced syscall.
fn trace(durability: &str) -> Vec<String> {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("strace.log");
    let data = dir.path().join("data");
    let out = Command::new("strace")
        .args(["-f", "-y", "-qq", "-e", "trace=fdatasync,fsync,sync_file_range,write", "-o"])
        .arg(&log)
        .arg(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "every_acknowledged_flush_is_preceded_by_an_fdatasync_of_the_log",
            "--nocapture",
        ])
        .env(CHILD_ENV, format!("{},{durability}", data.display()))
        .output()
        .expect("strace is needed for this test: run scripts/setup.sh (apt-get install strace)");
    assert!(out.status.success(), "child failed: {}", String::from_utf8_lossy(&out.stderr));
    std::fs::read_to_string(&log).unwrap().lines().map(str::to_string).collect()
}

fn is_log_sync(line: &str) -> bool {
    line.contains("fdatasync(") && line.contains("/data/db>")
}

fn is_ack(line: &str) -> bool {
    line.contains("write(1") && line.contains("ack ")
}

#[test]
fn every_acknowledged_flush_is_preceded_by_an_fdatasync_of_the_log() {
    if let Ok(spec) = std::env::var(CHILD_ENV) {
        let (dir, mode) = spec.split_once(',').unwrap();
        child(dir, mode);
    }

    let sync = trace("sync");
    let acks = sync.iter().filter(|l| is_ack(l)).count();
    assert_eq!(acks, FLUSHES, "the trace must show every acknowledgement");
    // Walk the trace: between two acknowledgements there must be at least one fdatasync of the log.
    let mut synced_since_last_ack = false;
    for line in &sync {
        if is_log_sync(line) {
            synced_since_last_ack = true;
        } else if is_ack(line) {
            assert!(synced_since_last_ack, "an acknowledgement without a sync before it: {line}");
            synced_since_last_ack = false;
        }
    }
    let syncs = sync.iter().filter(|l| is_log_sync(l)).count();
    let ranges = sync.iter().filter(|l| l.contains("sync_file_range(")).count();
    eprintln!("sync mode: {acks} acks, {syncs} fdatasync of the log, {ranges} sync_file_range");

    // The control: in buffered mode boundkv adds no fdatasync, and sled alone issues only
    // sync_file_range, which is exactly the gap this engine closes.
    let buffered = trace("buffered");
    let syncs = buffered.iter().filter(|l| is_log_sync(l)).count();
    let ranges = buffered.iter().filter(|l| l.contains("sync_file_range(")).count();
    eprintln!("buffered mode: {syncs} fdatasync of the log, {ranges} sync_file_range");
    assert_eq!(syncs, 0, "buffered mode must not pay for fdatasync");
    assert!(ranges >= FLUSHES, "sled's own flush is sync_file_range");
}
