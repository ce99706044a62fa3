//! The README's first command, as a newcomer runs it: `boundkv up` with no flags (on a machine
//! without a ClockBound daemon, as CI's, the nodes keep the cluster clock), then the key-value
//! commands with no flags at all (they find the cluster), `status`, a clean stop, and a restart
//! of the whole cluster on its data.

use std::io::{BufRead, BufReader};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

fn run(dir: &std::path::Path, pointer: &std::path::Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_boundkv"))
        .args(args)
        .current_dir(dir)
        .env("BOUNDKV_UP_FILE", pointer)
        .env_remove("BOUNDKV_CLUSTER")
        .env_remove("BOUNDKV_DATA")
        .env_remove("BOUNDKV_CLOCK")
        .output()
        .expect("run boundkv")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn up_then_the_commands_find_the_cluster_then_it_stops() {
    let dir = tempfile::tempdir().unwrap();
    let pointer = dir.path().join("up.json");
    // Without a cluster or a database, the commands explain both options.
    let none = run(dir.path(), &pointer, &["get", "greeting"]);
    assert!(!none.status.success());
    assert!(
        text(&none.stderr).contains("--data DIR") && text(&none.stderr).contains("boundkv"),
        "{}",
        text(&none.stderr)
    );

    let mut up = Command::new(env!("CARGO_BIN_EXE_boundkv"))
        .args(["up", "--base-port", "27001", "--run-for", "60s"])
        .env_remove("BOUNDKV_CLOCK")
        .current_dir(dir.path())
        .env("BOUNDKV_UP_FILE", &pointer)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start boundkv up");
    // Its welcome says how to connect once a leader serves.
    let stdout = BufReader::new(up.stdout.take().unwrap());
    let mut welcome = String::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    for line in stdout.lines() {
        let line = line.unwrap();
        welcome.push_str(&line);
        welcome.push('\n');
        if line.contains("Ctrl-C stops the cluster") || Instant::now() > deadline {
            break;
        }
    }
    assert!(welcome.contains("a 3-node cluster is running"), "{welcome}");
    assert!(welcome.contains("(leader)"), "{welcome}");
    assert!(welcome.contains("put greeting hello"), "{welcome}");
    let no_daemon = !std::path::Path::new("/var/run/clockbound/shm0").exists();
    if no_daemon {
        assert!(welcome.contains("clock: cluster:200ppm"), "{welcome}");
    }

    let put = run(dir.path(), &pointer, &["put", "greeting", "hello"]);
    assert!(put.status.success(), "{}", text(&put.stderr));
    assert!(text(&put.stdout).contains("overlapped the"), "{}", text(&put.stdout));
    let first_ts = commit_ts(&text(&put.stdout));
    let get = run(dir.path(), &pointer, &["get", "greeting"]);
    assert_eq!(text(&get.stdout).trim(), "hello", "{}", text(&get.stderr));
    let txn = run(dir.path(), &pointer, &["txn", "get greeting; put a 1; put b \"two words\""]);
    assert!(txn.status.success(), "{}", text(&txn.stderr));
    assert!(text(&txn.stdout).contains("greeting = hello"), "{}", text(&txn.stdout));
    let scan = run(dir.path(), &pointer, &["scan"]);
    assert_eq!(text(&scan.stdout), "a\t1\nb\ttwo words\ngreeting\thello\n");
    let status = run(dir.path(), &pointer, &["status"]);
    assert!(status.status.success(), "{}", text(&status.stderr));
    let s = text(&status.stdout);
    assert!(s.contains("3 members; leader node") && s.contains("lease valid"), "{s}");
    if no_daemon {
        // The source, the leader each member follows, its round trip and the bound.
        assert!(s.contains("this node leads term"), "{s}");
        assert!(s.contains("follows node") && s.contains("last round trip"), "{s}");
        // `boundkv clock` on the cluster clock shows what each node reads.
        let clock = run(dir.path(), &pointer, &["--clock", "cluster", "clock"]);
        let c = text(&clock.stdout);
        assert!(clock.status.success(), "{c}{}", text(&clock.stderr));
        assert_eq!(c.lines().filter(|l| l.contains("cluster clock")).count(), 3, "{c}");
        assert!(c.contains("follows node") && c.contains("Synchronized"), "{c}");
    }

    // SIGTERM: every node stops, `up` exits 0 and removes its pointer.
    // SAFETY: kill sends a signal to the child we started.
    unsafe {
        libc::kill(up.id() as libc::pid_t, libc::SIGTERM);
    }
    let status = up.wait().unwrap();
    assert!(status.success(), "boundkv up exited with {status}");
    assert!(!pointer.exists(), "the pointer is removed on exit");
    let after = run(dir.path(), &pointer, &["get", "greeting"]);
    assert!(!after.status.success(), "no cluster after up stopped");
    // The data stays: `up` again restarts the same cluster with it.
    let mut again = Command::new(env!("CARGO_BIN_EXE_boundkv"))
        .args(["up", "--run-for", "60s"])
        .env_remove("BOUNDKV_CLOCK")
        .current_dir(dir.path())
        .env("BOUNDKV_UP_FILE", &pointer)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = BufReader::new(again.stdout.take().unwrap());
    for line in stdout.lines() {
        if line.unwrap().contains("Ctrl-C stops the cluster") {
            break;
        }
    }
    let get = run(dir.path(), &pointer, &["get", "greeting"]);
    assert_eq!(text(&get.stdout).trim(), "hello", "{}", text(&get.stderr));
    // A write after the full restart lands above every one before it, whatever the clocks: on
    // the cluster clock the new leader starts its reference above the horizon its log holds.
    let put = run(dir.path(), &pointer, &["put", "greeting", "again"]);
    assert!(put.status.success(), "{}", text(&put.stderr));
    let second_ts = commit_ts(&text(&put.stdout));
    assert!(second_ts > first_ts, "{second_ts} after the restart, {first_ts} before");
    // SAFETY: as above.
    unsafe {
        libc::kill(again.id() as libc::pid_t, libc::SIGTERM);
    }
    assert!(again.wait().unwrap().success());
}

/// The commit timestamp in `put`'s answer: "committed at <date> (<nanoseconds>) in ...".
fn commit_ts(out: &str) -> u64 {
    let open = out.find('(').expect("a timestamp in parentheses");
    let close = out[open..].find(')').expect("a closing parenthesis") + open;
    out[open + 1..close].parse().expect("nanoseconds")
}
