//! Embedded boundkv against raw sled, and commit latency against the clock's bound.
//!
//! ```text
//! cargo run --release -p boundkv-bench --bin embedded [-- --duration 5s --json out.json]
//! ```
//!
//! Every workload uses 8-byte keys drawn uniformly from 100,000 and 256-byte values, on a fresh
//! directory under the system's temporary directory, for a fixed time; latencies go into HDR
//! histograms.
//!
//! 1. **Writes, 1 and 16 clients**: raw sled (`insert`, `flush`, then `fdatasync` of its log
//!    file: the same durability boundkv gives) against `Db::put` with a clock bound of 0 (so
//!    commit wait is free and the difference is boundkv's own cost: MVCC versions, timestamps, the
//!    commit path), and against redb 2 (one write transaction per put, committed with its default
//!    `Durability::Immediate`: an `fdatasync` per commit; redb runs one write transaction at a
//!    time): the embedded store a user would otherwise pick.
//! 2. **Reads, 1 client**: raw sled `get` and redb `get` (a read transaction per read) against
//!    `Db::get` (a read-only transaction per read) on 100,000 preloaded keys.
//! 3. **Commit latency** of `Db::put`, 1 client, at bounds 0, 1 ms and 5 ms: commit wait adds
//!    about 2 × bound to each commit.
//! 4. **Throughput, 64 and 256 clients** at bounds 0 and 5 ms: with group commit and parallel
//!    commit waits, throughput should hold as the bound grows; only latency should grow, until
//!    clients / latency (Little's law) caps it.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use boundkv::{ClockSource, Db, Options};
use clap::Parser;
use hdrhistogram::Histogram;
use serde::Serialize;

#[derive(Parser)]
struct Args {
    /// How long each workload runs.
    #[arg(long, default_value = "5s", value_parser = humantime_duration)]
    duration: Duration,
    /// Also write the results as JSON to this file.
    #[arg(long)]
    json: Option<std::path::PathBuf>,
    /// Run only the raw-sled and boundkv one-client write pair (for profiling).
    #[arg(long)]
    writes_only: bool,
}

fn humantime_duration(s: &str) -> Result<Duration, String> {
    let (num, unit) =
        s.split_at(s.find(|c: char| !c.is_ascii_digit() && c != '.').unwrap_or(s.len()));
    let n: f64 = num.parse().map_err(|e| format!("{s}: {e}"))?;
    let secs = match unit {
        "s" | "" => n,
        "ms" => n / 1e3,
        other => return Err(format!("unknown unit {other}")),
    };
    Ok(Duration::from_secs_f64(secs))
}

const KEYS: u64 = 100_000;
const VALUE: [u8; 256] = [0x5A; 256];

#[derive(Serialize, Clone)]
struct Run {
    name: String,
    clients: usize,
    ops: u64,
    seconds: f64,
    ops_per_sec: f64,
    p50_us: f64,
    p90_us: f64,
    p99_us: f64,
    max_us: f64,
}

fn key(i: u64) -> [u8; 8] {
    i.to_be_bytes()
}

/// Runs `op` from `clients` threads for `duration`; each thread gets its own random key stream.
fn drive(
    name: &str,
    clients: usize,
    duration: Duration,
    op: impl Fn(u64) -> anyhow::Result<()> + Sync,
) -> anyhow::Result<Run> {
    let stop = AtomicBool::new(false);
    let started = Instant::now();
    let results: Vec<anyhow::Result<(u64, Histogram<u64>)>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..clients)
            .map(|c| {
                let (stop, op) = (&stop, &op);
                s.spawn(move || {
                    let mut h =
                        Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3).expect("bounds");
                    let mut x = 0x9E37_79B9_7F4A_7C15u64 ^ (c as u64 + 1);
                    let mut n = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        x ^= x << 13;
                        x ^= x >> 7;
                        x ^= x << 17;
                        let t = Instant::now();
                        op(x % KEYS)?;
                        h.record(t.elapsed().as_nanos() as u64).ok();
                        n += 1;
                    }
                    Ok((n, h))
                })
            })
            .collect();
        std::thread::sleep(duration);
        stop.store(true, Ordering::Relaxed);
        handles.into_iter().map(|h| h.join().expect("client thread")).collect()
    });
    let seconds = started.elapsed().as_secs_f64();
    let mut all = Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3)?;
    let mut ops = 0;
    for r in results {
        let (n, h) = r?;
        ops += n;
        all.add(h)?;
    }
    let us = |q: f64| all.value_at_quantile(q) as f64 / 1e3;
    let run = Run {
        name: name.to_string(),
        clients,
        ops,
        seconds,
        ops_per_sec: ops as f64 / seconds,
        p50_us: us(0.5),
        p90_us: us(0.9),
        p99_us: us(0.99),
        max_us: all.max() as f64 / 1e3,
    };
    println!(
        "{:<44} {:>3} {:>10.0} {:>9.1} {:>9.1} {:>9.1} {:>10.1}",
        run.name, run.clients, run.ops_per_sec, run.p50_us, run.p90_us, run.p99_us, run.max_us
    );
    Ok(run)
}

/// Raw sled with boundkv's durability: insert, flush, fdatasync of the log.
struct RawSled {
    db: sled::Db,
    log: std::fs::File,
}

impl RawSled {
    fn open(dir: &Path) -> anyhow::Result<Self> {
        // The same configuration boundkv's engine uses.
        let db =
            sled::Config::new().path(dir).segment_size(8 << 20).cache_capacity(256 << 20).open()?;
        let log = std::fs::File::open(dir.join("db"))?;
        Ok(RawSled { db, log })
    }

    fn put(&self, k: u64) -> anyhow::Result<()> {
        self.db.insert(key(k), &VALUE[..])?;
        self.db.flush()?;
        self.log.sync_data()?;
        Ok(())
    }
}

/// redb 2 with its default durability: every commit is on disk when `commit` returns.
struct Redb {
    db: redb::Database,
}

const REDB_TABLE: redb::TableDefinition<'static, &[u8], &[u8]> = redb::TableDefinition::new("kv");

impl Redb {
    fn open(dir: &Path) -> anyhow::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let db = redb::Database::create(dir.join("redb"))?;
        let w = db.begin_write()?;
        w.open_table(REDB_TABLE)?;
        w.commit()?;
        Ok(Redb { db })
    }

    fn put(&self, k: u64) -> anyhow::Result<()> {
        let w = self.db.begin_write()?;
        w.open_table(REDB_TABLE)?.insert(&key(k)[..], &VALUE[..])?;
        w.commit()?;
        Ok(())
    }

    fn load(&self) -> anyhow::Result<()> {
        let w = self.db.begin_write()?;
        {
            let mut t = w.open_table(REDB_TABLE)?;
            for k in 0..KEYS {
                t.insert(&key(k)[..], &VALUE[..])?;
            }
        }
        w.commit()?;
        Ok(())
    }

    fn get(&self, k: u64) -> anyhow::Result<()> {
        let r = self.db.begin_read()?;
        r.open_table(REDB_TABLE)?.get(&key(k)[..])?;
        Ok(())
    }
}

fn open_db(dir: &Path, bound: &str) -> anyhow::Result<Db> {
    let source: ClockSource = format!("system:{bound}").parse()?;
    Ok(Db::open(dir, Options { gc: None, ..Options::with_clock(source) })?)
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let d = args.duration;
    let scratch = tempfile::Builder::new().prefix("boundkv-bench-").tempdir()?;
    let dir = |name: &str| scratch.path().join(name);
    println!(
        "{:<44} {:>3} {:>10} {:>9} {:>9} {:>9} {:>10}",
        "workload", "cli", "ops/s", "p50 µs", "p90 µs", "p99 µs", "max µs"
    );
    let mut runs = Vec::new();

    // 1. Writes, one client, equal durability.
    let raw = RawSled::open(&dir("raw-writes"))?;
    let raw_w = drive("raw sled: insert + flush + fdatasync", 1, d, |k| raw.put(k))?;
    drop(raw);
    let db = open_db(&dir("kv-writes"), "0")?;
    let kv_w = drive("boundkv: Db::put, bound 0", 1, d, |k| {
        db.put(key(k), VALUE).map(|_| ()).context("put")
    })?;
    drop(db);
    if args.writes_only {
        println!(
            "\nboundkv / raw sled, writes, 1 client: {:.2}",
            kv_w.ops_per_sec / raw_w.ops_per_sec
        );
        return Ok(());
    }

    let redb = Redb::open(&dir("redb-writes"))?;
    let redb_w = drive("redb: put (write txn, Immediate)", 1, d, |k| redb.put(k))?;
    drop(redb);
    let raw = RawSled::open(&dir("raw-writes-16"))?;
    let raw_w16 = drive("raw sled: insert + flush + fdatasync", 16, d, |k| raw.put(k))?;
    drop(raw);
    let db = open_db(&dir("kv-writes-16"), "0")?;
    let kv_w16 = drive("boundkv: Db::put, bound 0", 16, d, |k| {
        db.put(key(k), VALUE).map(|_| ()).context("put")
    })?;
    drop(db);
    let redb = Redb::open(&dir("redb-writes-16"))?;
    let redb_w16 = drive("redb: put (write txn, Immediate)", 16, d, |k| redb.put(k))?;
    drop(redb);

    // 2. Reads, one client, on 100,000 preloaded keys.
    let raw = RawSled::open(&dir("raw-reads"))?;
    for k in 0..KEYS {
        raw.db.insert(key(k), &VALUE[..])?;
    }
    raw.db.flush()?;
    let raw_r = drive("raw sled: get", 1, d, |k| raw.db.get(key(k)).map(|_| ()).context("get"))?;
    drop(raw);
    let db = open_db(&dir("kv-reads"), "0")?;
    for chunk in (0..KEYS).collect::<Vec<_>>().chunks(5000) {
        db.transaction(|t| {
            for k in chunk {
                t.put(key(*k), VALUE)?;
            }
            Ok(())
        })?;
    }
    let kv_r = drive("boundkv: Db::get (read-only txn per read)", 1, d, |k| {
        db.get(key(k)).map(|_| ()).context("get")
    })?;
    let snapshot = db.read_only()?;
    let kv_rs = drive("boundkv: Snapshot::get (one snapshot)", 1, d, |k| {
        snapshot.get(key(k)).map(|_| ()).context("get")
    })?;
    drop(snapshot);
    drop(db);
    let redb = Redb::open(&dir("redb-reads"))?;
    redb.load()?;
    let redb_r = drive("redb: get (read txn per read)", 1, d, |k| redb.get(k))?;
    drop(redb);

    // 3. Commit latency against the bound, one client.
    let mut latency = Vec::new();
    for bound in ["0", "1ms", "5ms"] {
        let db = open_db(&dir(&format!("latency-{bound}")), bound)?;
        latency.push(drive(&format!("boundkv: Db::put, bound {bound}"), 1, d, |k| {
            db.put(key(k), VALUE).map(|_| ()).context("put")
        })?);
    }

    // 4. Many clients, bound 0 and 5 ms. At 64 clients the 5 ms bound caps throughput at about
    // 64 / 10 ms = 6,400 commits/s (Little's law); 256 clients show it is only that cap.
    let mut wide = Vec::new();
    for clients in [64, 256] {
        for bound in ["0", "5ms"] {
            let db = Arc::new(open_db(&dir(&format!("wide-{clients}-{bound}")), bound)?);
            wide.push(drive(&format!("boundkv: Db::put, bound {bound}"), clients, d, |k| {
                db.put(key(k), VALUE).map(|_| ()).context("put")
            })?);
        }
    }
    let raw = RawSled::open(&dir("raw-wide"))?;
    let raw_wide = drive("raw sled: insert + flush + fdatasync", 64, d, |k| raw.put(k))?;
    drop(raw);

    println!();
    println!(
        "boundkv / raw sled, writes, 1 client:        {:.2}",
        kv_w.ops_per_sec / raw_w.ops_per_sec
    );
    println!(
        "boundkv / raw sled, writes, 16 clients:      {:.2}",
        kv_w16.ops_per_sec / raw_w16.ops_per_sec
    );
    println!(
        "boundkv / redb, writes, 1 and 16 clients:    {:.2}, {:.2}",
        kv_w.ops_per_sec / redb_w.ops_per_sec,
        kv_w16.ops_per_sec / redb_w16.ops_per_sec
    );
    println!(
        "boundkv / raw sled, reads, 1 client:         {:.2} (read-only txn per read), {:.2} (one snapshot)",
        kv_r.ops_per_sec / raw_r.ops_per_sec,
        kv_rs.ops_per_sec / raw_r.ops_per_sec
    );
    println!(
        "boundkv / redb, reads, 1 client:             {:.2} (read-only txn per read), {:.2} (one snapshot)",
        kv_r.ops_per_sec / redb_r.ops_per_sec,
        kv_rs.ops_per_sec / redb_r.ops_per_sec
    );
    for r in &latency {
        println!(
            "commit latency {:<24} p50 {:>8.1} µs  p99 {:>8.1} µs",
            r.name.trim_start_matches("boundkv: Db::put, "),
            r.p50_us,
            r.p99_us
        );
    }
    println!(
        "64 clients, bound 5ms / bound 0, throughput: {:.2}",
        wide[1].ops_per_sec / wide[0].ops_per_sec
    );
    println!(
        "256 clients, bound 5ms / bound 0, throughput: {:.2}",
        wide[3].ops_per_sec / wide[2].ops_per_sec
    );
    println!(
        "64 clients, boundkv bound 0 / raw sled:      {:.2}",
        wide[0].ops_per_sec / raw_wide.ops_per_sec
    );

    runs.extend([raw_w, kv_w, redb_w, raw_w16, kv_w16, redb_w16, raw_r, kv_r, kv_rs, redb_r]);
    runs.extend(latency);
    runs.extend(wide);
    runs.push(raw_wide);
    if let Some(path) = args.json {
        std::fs::write(&path, serde_json::to_string_pretty(&runs)?)?;
        println!("\nresults written to {}", path.display());
    }
    Ok(())
}
