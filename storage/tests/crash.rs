//! Crash test: a child process writes 16-key batches to a sled engine, flushes after each one and
//! reports it on stdout; the parent kills it with SIGKILL at random moments, reopens the database
//! and checks that every reported batch is there and that no batch is there only in part.
//!
//! SIGKILL leaves the page cache intact, so this checks atomicity and that `flush` really wrote
//! the data to the OS; what survives a *power loss* is checked separately, by counting the
//! `fdatasync` calls (`durability.rs`).

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::ops::Bound;
use std::process::{Command, Stdio};
use std::time::Duration;

use boundkv_storage::{Engine, SledEngine, SledOptions, WriteBatch};

const CHILD_ENV: &str = "BOUNDKV_CRASH_CHILD";
const KEYS_PER_BATCH: u64 = 16;
const ROUNDS: u64 = 8;

/// The child: write batch after batch until killed.
fn child(dir: &str, start: u64) -> ! {
    let engine = SledEngine::open(dir, SledOptions::default()).expect("child open");
    for i in start..start + 1_000_000 {
        let mut batch = WriteBatch::new();
        for j in 0..KEYS_PER_BATCH {
            batch.put(format!("b{i:012}-{j:02}").into_bytes(), i.to_be_bytes().to_vec());
        }
        engine.write(batch).expect("child write");
        engine.flush().expect("child flush");
        println!("{i}");
    }
    std::process::exit(0)
}

/// A small deterministic generator for kill delays.
fn xorshift(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

#[test]
fn killed_writers_lose_no_flushed_batch_and_leave_no_half_batch() {
    if let Ok(spec) = std::env::var(CHILD_ENV) {
        let (dir, start) = spec.split_once(',').expect("dir,start");
        child(dir, start.parse().unwrap());
    }
    let dir = tempfile::tempdir().unwrap();
    let mut rng = 0x9E37_79B9_7F4A_7C15u64;
    let mut acked: BTreeMap<u64, u64> = BTreeMap::new(); // round -> last batch reported flushed
    for round in 0..ROUNDS {
        let start = round * 1_000_000_000;
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "killed_writers_lose_no_flushed_batch_and_leave_no_half_batch",
                "--nocapture",
            ])
            .env(CHILD_ENV, format!("{},{start}", dir.path().display()))
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (started_tx, started) = std::sync::mpsc::channel();
        let reader = std::thread::spawn(move || {
            let mut last = None;
            for line in BufReader::new(stdout).lines() {
                match line.ok().and_then(|l| l.trim().parse::<u64>().ok()) {
                    Some(i) => {
                        if last.is_none() {
                            let _ = started_tx.send(());
                        }
                        last = Some(i);
                    }
                    None => continue, // the test harness's own lines
                }
            }
            last
        });
        // Wait until the child has flushed its first batch, let it write for a random while,
        // then kill it mid-stream.
        started.recv_timeout(Duration::from_secs(30)).expect("the child never flushed a batch");
        std::thread::sleep(Duration::from_millis(20 + xorshift(&mut rng) % 150));
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        if let Some(last) = reader.join().unwrap() {
            acked.insert(round, last);
        }

        // Reopen and check every batch of every round so far.
        let engine = SledEngine::open(dir.path(), SledOptions::default()).unwrap();
        let mut batches: BTreeMap<u64, u64> = BTreeMap::new();
        for entry in engine.scan((Bound::Unbounded, Bound::Unbounded)) {
            let (k, v) = entry.unwrap();
            let i: u64 = std::str::from_utf8(&k[1..13]).unwrap().parse().unwrap();
            assert_eq!(v, i.to_be_bytes(), "value of {}", String::from_utf8_lossy(&k));
            *batches.entry(i).or_default() += 1;
        }
        for (i, n) in &batches {
            assert_eq!(*n, KEYS_PER_BATCH, "batch {i} is only partly there");
        }
        for (r, last) in &acked {
            let first = r * 1_000_000_000;
            for i in first..=*last {
                assert!(batches.contains_key(&i), "round {r}: batch {i} was flushed but is gone");
            }
        }
    }
    let total: u64 = acked.iter().map(|(r, last)| last - r * 1_000_000_000 + 1).sum();
    eprintln!("{ROUNDS} kills; {total} flushed batches all present, none partial");
    assert_eq!(acked.len() as u64, ROUNDS, "every round flushed at least one batch");
}
