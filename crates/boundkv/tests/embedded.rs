//! The embedded database on disk, end to end: the closure API under contention, restarts (data,
//! the clock's high-water mark, a clock stepped back), crashes (SIGKILL mid-stream), and the
//! fsync that precedes every acknowledgement.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use boundkv::{Clock, ClockSource, Db, Options, SimClock, Timestamp};

fn sim_options(clock: &SimClock) -> Options {
    Options::with_clock_instance(Arc::new(clock.clone()))
}

#[test]
fn the_transaction_closure_retries_conflicts_until_every_increment_lands() {
    let dir = tempfile::tempdir().unwrap();
    let clock = SimClock::real_time();
    clock.set_bound(Duration::from_micros(200));
    let db = Db::open(dir.path(), sim_options(&clock)).unwrap();
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let db = db.clone();
            std::thread::spawn(move || {
                for _ in 0..25 {
                    db.transaction(|txn| {
                        let n: u64 = txn
                            .get("counter")?
                            .map_or(0, |v| std::str::from_utf8(&v).unwrap().parse().unwrap());
                        txn.put("counter", (n + 1).to_string())
                    })
                    .unwrap();
                }
            })
        })
        .collect();
    threads.into_iter().for_each(|t| t.join().unwrap());
    assert_eq!(db.get("counter").unwrap().as_deref(), Some(&b"100"[..]));
    let status = db.status().unwrap();
    assert!(status.clock.contains("simulated"));
    assert!(status.max_commit_ts > Timestamp::ZERO);
    assert!(status.storage.durability.contains("fdatasync"));
}

#[test]
fn a_restart_keeps_the_data_and_never_goes_back_in_time() {
    let dir = tempfile::tempdir().unwrap();
    let clock = SimClock::real_time();
    clock.set_bound(Duration::from_millis(1));
    let (last, acked_at) = {
        let db = Db::open(dir.path(), sim_options(&clock)).unwrap();
        let mut last = Timestamp::ZERO;
        for i in 0..20 {
            last = db.put(format!("k{i}"), format!("v{i}")).unwrap().ts;
        }
        (last, clock.true_now())
    };
    // The clock steps back 2 s while the database is down.
    clock.step_nanos(-2_000_000_000);
    let db = Db::open(dir.path(), sim_options(&clock)).unwrap();
    assert_eq!(db.get("k19").unwrap().as_deref(), Some(&b"v19"[..]));
    let next = db.put("after", "restart").unwrap();
    assert!(next.ts > last, "{:?} is not above {:?}", next.ts, last);
    assert!(
        clock.now().unwrap().after(next.ts),
        "acknowledged only once the stepped clock passed it"
    );
    // The stepped clock had to catch up with the last timestamp: about 2 s after the last commit.
    let waited = clock.true_now().saturating_duration_since(acked_at);
    assert!(waited >= Duration::from_millis(1990), "{waited:?}");
    assert!(clock.true_now() > next.ts, "true time passed the commit before it was acknowledged");
    drop(db);

    // 30 s behind is more than a commit may wait: opening says so instead of hanging.
    clock.step_nanos(-30_000_000_000);
    let e = Db::open(dir.path(), sim_options(&clock)).err().expect("must refuse");
    assert!(e.to_string().contains("ahead of the clock"), "{e}");
}

const CHILD_ENV: &str = "BOUNDKV_EMBEDDED_CHILD";

/// The child: open the database, put keys one by one, print each acknowledgement.
fn child(dir: &str, start: u64) -> ! {
    let options =
        Options { gc: None, ..Options::with_clock("system:100us".parse::<ClockSource>().unwrap()) };
    let db = Db::open(dir, options).expect("child open");
    for i in start..start + 1_000_000 {
        db.put(format!("key{i:012}"), format!("{i}")).expect("put");
        println!("ack {i}");
    }
    std::process::exit(0)
}

#[test]
fn a_killed_process_loses_no_acknowledged_commit() {
    if let Ok(spec) = std::env::var(CHILD_ENV) {
        let (dir, start) = spec.split_once(',').unwrap();
        child(dir, start.parse().unwrap());
    }
    let dir = tempfile::tempdir().unwrap();
    let mut acked = Vec::new();
    for round in 0..4u64 {
        let start = round * 1_000_000_000;
        let mut c = Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "a_killed_process_loses_no_acknowledged_commit", "--nocapture"])
            .env(CHILD_ENV, format!("{},{start}", dir.path().display()))
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = c.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let reader = std::thread::spawn(move || {
            let mut last = None;
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(i) = line.strip_prefix("ack ").and_then(|n| n.parse::<u64>().ok()) {
                    if last.is_none() {
                        let _ = tx.send(());
                    }
                    last = Some(i);
                }
            }
            last
        });
        rx.recv_timeout(Duration::from_secs(30)).expect("the child never committed");
        std::thread::sleep(Duration::from_millis(40 + round * 37));
        c.kill().unwrap();
        c.wait().unwrap();
        acked.push((start, reader.join().unwrap().unwrap()));
    }
    let db = Db::open(dir.path(), Options::with_clock("system:100us".parse().unwrap())).unwrap();
    let snapshot = db.read_only().unwrap();
    let mut total = 0;
    for (start, last) in &acked {
        for i in *start..=*last {
            let v = snapshot.get(format!("key{i:012}")).unwrap();
            assert_eq!(
                v.as_deref(),
                Some(i.to_string().as_bytes()),
                "acknowledged commit {i} is gone"
            );
            total += 1;
        }
    }
    eprintln!("4 kills; all {total} acknowledged commits present");
}

/// `strace` shows an `fdatasync` of the database's log between any two acknowledgements: an
/// acknowledged commit survives power loss, not just a killed process. `scripts/setup.sh`
/// installs strace.
#[test]
fn every_acknowledged_commit_follows_an_fdatasync() {
    const STRACE_CHILD: &str = "BOUNDKV_EMBEDDED_STRACE_CHILD";
    if let Ok(dir) = std::env::var(STRACE_CHILD) {
        let options = Options {
            gc: None,
            ..Options::with_clock("system:50us".parse::<ClockSource>().unwrap())
        };
        let db = Db::open(&dir, options).unwrap();
        for i in 0..25 {
            db.put(format!("k{i}"), "v").unwrap();
            println!("ack {i}");
        }
        std::process::exit(0);
    }
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("strace.log");
    let out = Command::new("strace")
        .args(["-f", "-y", "-qq", "-e", "trace=fdatasync,write", "-o"])
        .arg(&log)
        .arg(std::env::current_exe().unwrap())
        .args(["--exact", "every_acknowledged_commit_follows_an_fdatasync", "--nocapture"])
        .env(STRACE_CHILD, dir.path().join("db"))
        .output()
        .expect("strace is needed: run scripts/setup.sh");
    assert!(out.status.success());
    let trace = std::fs::read_to_string(&log).unwrap();
    let mut synced = false;
    let mut acks = 0;
    for line in trace.lines() {
        if line.contains("fdatasync(") && line.contains("/data/db>") {
            synced = true;
        } else if line.contains("write(1") && line.contains("ack ") {
            assert!(synced, "acknowledged without a sync since the previous ack: {line}");
            synced = false;
            acks += 1;
        }
    }
    assert_eq!(acks, 25);
}
