//! The embedded key-value commands, run as a user runs them.

use std::process::{Command, Output};

fn boundkv(data: &std::path::Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_boundkv"))
        .args(["--clock", "system:200us", "--data"])
        .arg(data)
        .args(args)
        .env_remove("BOUNDKV_CLOCK")
        .env_remove("BOUNDKV_DATA")
        .output()
        .expect("run boundkv")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// The nanosecond timestamp a put prints: `committed at RFC3339 (NANOS) in ...`.
fn committed_ts(o: &Output) -> String {
    let out = stdout(o);
    let start = out.find('(').expect("a timestamp") + 1;
    out[start..start + out[start..].find(')').unwrap()].to_string()
}

#[test]
fn put_get_delete_scan_and_time_travel() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let put = boundkv(d, &["put", "greeting", "hello world"]);
    assert!(put.status.success(), "{}", stderr(&put));
    assert!(stdout(&put).contains("commit wait"), "{}", stdout(&put));
    let first = committed_ts(&put);
    boundkv(d, &["put", "greeting", "goodbye"]);
    boundkv(d, &["put", "other", "x"]);

    let get = boundkv(d, &["get", "greeting"]);
    assert_eq!(stdout(&get), "goodbye\n");
    let then = boundkv(d, &["get", "greeting", "--at", &first]);
    assert_eq!(stdout(&then), "hello world\n", "{}", stderr(&then));
    let stale = boundkv(d, &["get", "greeting", "--max-staleness", "1h"]);
    assert_eq!(stdout(&stale), "goodbye\n");

    let scan = boundkv(d, &["scan"]);
    assert_eq!(stdout(&scan), "greeting\tgoodbye\nother\tx\n");
    let ranged = boundkv(d, &["scan", "h", "z", "--limit", "1"]);
    assert_eq!(stdout(&ranged), "other\tx\n");

    let del = boundkv(d, &["delete", "greeting"]);
    assert!(stdout(&del).starts_with("deleted at"));
    let gone = boundkv(d, &["get", "greeting"]);
    assert_eq!(gone.status.code(), Some(1));
    assert!(stderr(&gone).contains("greeting not found"));

    let status = boundkv(d, &["status"]);
    assert!(
        stdout(&status).contains("sled 0.34.7") && stdout(&status).contains("fdatasync"),
        "{}",
        stdout(&status)
    );
}

#[test]
fn a_txn_script_runs_atomically_and_a_bad_one_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let ok = boundkv(d, &["txn", "put a 1; put b \"two words\"; get a; scan"]);
    assert!(ok.status.success(), "{}", stderr(&ok));
    assert_eq!(
        stdout(&ok).lines().take(3).collect::<Vec<_>>(),
        ["a = 1", "a\t1", "b\ttwo words"],
        "reads see the transaction's own writes"
    );
    let bad = boundkv(d, &["txn", "put c 3; frobnicate d"]);
    assert_eq!(bad.status.code(), Some(1));
    assert!(stderr(&bad).contains("statement 2"), "{}", stderr(&bad));
    assert_eq!(
        boundkv(d, &["get", "c"]).status.code(),
        Some(1),
        "nothing of the bad script was written"
    );

    let mut child = Command::new(env!("CARGO_BIN_EXE_boundkv"))
        .args(["--clock", "system:200us", "--data"])
        .arg(d)
        .args(["txn", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child.stdin.take().unwrap().write_all(b"get b\ndelete a\n").unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(stdout(&out).starts_with("b = two words\ncommitted at"), "{}", stdout(&out));
}

#[test]
fn oversized_input_and_missing_data_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let big = "k".repeat(4097);
    let o = boundkv(dir.path(), &["put", &big, "v"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("key of 4097 bytes exceeds the limit of 4096"), "{}", stderr(&o));

    let o = Command::new(env!("CARGO_BIN_EXE_boundkv"))
        .args(["--clock", "system:200us", "put", "k", "v"])
        .env_remove("BOUNDKV_DATA")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("pass --data DIR"), "{}", stderr(&o));

    let o = boundkv(dir.path(), &["get", "k", "--at", "yesterday-ish"]);
    assert_eq!(o.status.code(), Some(2));
}

#[test]
fn the_demo_runs_and_checks_its_invariant() {
    let o = Command::new(env!("CARGO_BIN_EXE_boundkv"))
        .args([
            "--clock",
            "system:200us",
            "demo",
            "--duration",
            "1s",
            "--threads",
            "4",
            "--accounts",
            "20",
        ])
        .env_remove("BOUNDKV_DATA")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}\n{}", stdout(&o), stderr(&o));
    let out = stdout(&o);
    assert!(out.contains("money was never created or lost"), "{out}");
    assert!(out.contains("commit wait") && out.contains("commits "), "{out}");
}
