//! The physical floor of a replicated commit on this machine: what a commit cannot beat.
//!
//! A commit is acknowledged once a quorum has the entry durably (the leader's `fdatasync` and a
//! follower's, in parallel, plus the round trip to the follower) and once commit wait is over
//! (`2 × bound` after the timestamp was chosen). So its floor is
//! `max(round trip + fsync, 2 × bound)`, with both measured here: a 64-byte TCP ping-pong on
//! loopback, and a 4 KiB append plus `fdatasync` in the directory the data lives in. Because the
//! three replicas of the benchmark cluster share this machine's one disk, their fsyncs queue
//! behind each other; so the fsync term is measured as three at once, until the second (a
//! quorum) finishes. The lone fsync is reported too.

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// The measured pieces of the floor (medians).
#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
pub struct Floor {
    /// Loopback TCP round trip, µs.
    pub rtt_us: f64,
    /// 4 KiB append + fdatasync, µs.
    pub fsync_us: f64,
    /// Three 4 KiB append + fdatasync at once (three replicas on this one disk), until the
    /// second finishes (a quorum of two), µs.
    pub quorum_fsync_us: f64,
}

impl Floor {
    /// `max(rtt + fsync, 2 × bound)`, µs, with the fsync of a quorum of three replicas sharing
    /// this machine's disk (their fsyncs queue behind each other, as the cluster's do).
    pub fn at_bound(&self, bound: Duration) -> f64 {
        (self.rtt_us + self.quorum_fsync_us).max(2.0 * bound.as_secs_f64() * 1e6)
    }
}

fn median(mut v: Vec<Duration>) -> f64 {
    v.sort();
    v[v.len() / 2].as_secs_f64() * 1e6
}

/// Measures both, in `dir` for the fsync.
pub fn measure(dir: &std::path::Path) -> anyhow::Result<Floor> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let echo = std::thread::spawn(move || -> std::io::Result<()> {
        let (mut s, _) = listener.accept()?;
        s.set_nodelay(true)?;
        let mut buf = [0u8; 64];
        while s.read_exact(&mut buf).is_ok() {
            s.write_all(&buf)?;
        }
        Ok(())
    });
    let mut s = std::net::TcpStream::connect(addr)?;
    s.set_nodelay(true)?;
    let mut buf = [7u8; 64];
    let mut rtts = Vec::new();
    for _ in 0..2000 {
        let t = Instant::now();
        s.write_all(&buf)?;
        s.read_exact(&mut buf)?;
        rtts.push(t.elapsed());
    }
    drop(s);
    let _ = echo.join();
    let file_dir = tempfile::tempdir_in(dir)?;
    let mut f =
        std::fs::OpenOptions::new().create(true).append(true).open(file_dir.path().join("log"))?;
    let block = [0xA5u8; 4096];
    let mut syncs = Vec::new();
    for _ in 0..500 {
        let t = Instant::now();
        f.write_all(&block)?;
        f.sync_data()?;
        syncs.push(t.elapsed());
    }
    // Three replicas' syncs at once, as a replicated commit does them (one per node, one disk).
    let barrier = std::sync::Arc::new(std::sync::Barrier::new(4));
    let (tx, rx) = std::sync::mpsc::channel::<(usize, Instant)>();
    let mut workers = Vec::new();
    for w in 0..3 {
        let (barrier, tx) = (barrier.clone(), tx.clone());
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(file_dir.path().join(format!("log{w}")))?;
        workers.push(std::thread::spawn(move || -> std::io::Result<()> {
            for round in 0..300 {
                barrier.wait();
                f.write_all(&block)?;
                f.sync_data()?;
                let _ = tx.send((round, Instant::now()));
            }
            Ok(())
        }));
    }
    let mut quorum = Vec::new();
    for _ in 0..300 {
        barrier.wait();
        let t = Instant::now();
        let _first = rx.recv()?;
        let second = rx.recv()?;
        let _third = rx.recv()?;
        quorum.push(second.1.duration_since(t));
    }
    for w in workers {
        let _ = w.join();
    }
    Ok(Floor { rtt_us: median(rtts), fsync_us: median(syncs), quorum_fsync_us: median(quorum) })
}
