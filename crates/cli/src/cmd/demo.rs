//! `boundkv demo`: a bank on an embedded database, to see boundkv work.
//!
//! Writer threads move money between accounts in read-write transactions (retried on conflict);
//! a reader thread takes read-only snapshots and checks that the total never changed. At the end
//! it prints commits per second, the commit-wait distribution against the clock's bound, and the
//! verdict of every snapshot check.

use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use boundkv::{Db, Error};
use clap::Args;
use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::clock_args::ClockArgs;
use crate::data_args::{DataArgs, open_at};
use crate::fmt;

/// Options of `boundkv demo`.
#[derive(Args, Debug)]
pub(crate) struct Demo {
    /// Number of accounts.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(2..=100_000))]
    accounts: u64,
    /// Writer threads moving money.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u64).range(1..=256))]
    threads: u64,
    /// How long to run.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration, value_name = "DURATION")]
    duration: Duration,
}

const START_BALANCE: i64 = 1000;

/// What the threads count, shared.
#[derive(Default)]
struct Counters {
    commits: AtomicU64,
    conflicts: AtomicU64,
    snapshots: AtomicU64,
    bad_snapshots: AtomicU64,
}

fn balance(v: Option<boundkv::Bytes>) -> Result<i64, Error> {
    let v = v.ok_or_else(|| Error::Fatal("an account disappeared".into()))?;
    std::str::from_utf8(&v)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| Error::Fatal(format!("an account holds {v:?}, not a number")))
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000_000, 3).expect("valid bounds")
}

impl Demo {
    pub(crate) fn run(&self, clock: &ClockArgs, data: &DataArgs) -> anyhow::Result<ExitCode> {
        // A fresh temporary database unless --data names one.
        let temp;
        let dir = match &data.data {
            Some(d) => d.clone(),
            None => {
                temp = tempfile::Builder::new().prefix("boundkv-demo-").tempdir()?;
                temp.path().to_path_buf()
            }
        };
        let db = open_at(&dir, clock)?;
        let bound = db.clock().now().map(|r| r.bound()).unwrap_or_default();
        println!(
            "bank demo: {} accounts of {START_BALANCE}, {} writer threads, {}, database {}",
            self.accounts,
            self.threads,
            humantime::format_duration(self.duration),
            dir.display()
        );
        println!("clock: {} (bound now ±{})", db.clock().describe(), fmt::duration(bound));

        db.transaction(|txn| {
            for a in 0..self.accounts {
                txn.put(account(a), START_BALANCE.to_string())?;
            }
            Ok(())
        })
        .context("creating the accounts")?;

        let counters = Arc::new(Counters::default());
        let stop = Arc::new(AtomicBool::new(false));
        let started = Instant::now();
        let writers: Vec<_> = (0..self.threads)
            .map(|t| spawn_writer(db.clone(), self.accounts, t, counters.clone(), stop.clone()))
            .collect();
        let reader = spawn_reader(db.clone(), self.accounts, counters.clone(), stop.clone());

        let bar = ProgressBar::with_draw_target(
            Some(self.duration.as_secs()),
            ProgressDrawTarget::stderr(),
        );
        bar.set_style(
            ProgressStyle::with_template("{spinner} [{elapsed_precise}] {bar:30} {msg}")
                .expect("valid template"),
        );
        while started.elapsed() < self.duration {
            std::thread::sleep(Duration::from_millis(200).min(self.duration));
            bar.set_position(started.elapsed().as_secs());
            bar.set_message(format!(
                "{} commits, {} conflicts retried, {} snapshots checked",
                counters.commits.load(Ordering::Relaxed),
                counters.conflicts.load(Ordering::Relaxed),
                counters.snapshots.load(Ordering::Relaxed)
            ));
        }
        stop.store(true, Ordering::Relaxed);
        bar.finish_and_clear();

        let [mut txn_latency, mut latency, mut wait, mut beyond] =
            [histogram(), histogram(), histogram(), histogram()];
        for w in writers {
            let [t, l, c, b] = w.join().expect("writer thread")?;
            txn_latency.add(t).expect("same bounds");
            latency.add(l).expect("same bounds");
            wait.add(c).expect("same bounds");
            beyond.add(b).expect("same bounds");
        }
        reader.join().expect("reader thread")?;
        let elapsed = started.elapsed();

        // The final check, at one snapshot: every account, the exact total.
        let snapshot = db.read_only()?;
        let rows = snapshot.scan(account(0).as_bytes()..b"acct~".as_slice(), None)?;
        let total: i64 =
            rows.iter().map(|(_, v)| balance(Some(v.clone()))).sum::<Result<i64, Error>>()?;
        let expected = START_BALANCE * self.accounts as i64;

        let commits = counters.commits.load(Ordering::Relaxed);
        let pct = |h: &Histogram<u64>, q: f64| {
            fmt::duration(Duration::from_nanos(h.value_at_quantile(q)))
        };
        println!();
        println!(
            "commits          {commits} in {} ({:.1}/s), {} conflicts retried",
            fmt::duration(elapsed),
            commits as f64 / elapsed.as_secs_f64(),
            counters.conflicts.load(Ordering::Relaxed)
        );
        println!(
            "transaction      p50 {}  p90 {}  p99 {}  max {}   (reads, retries and commit)",
            pct(&txn_latency, 0.5),
            pct(&txn_latency, 0.9),
            pct(&txn_latency, 0.99),
            fmt::duration(Duration::from_nanos(txn_latency.max()))
        );
        println!(
            "commit latency   p50 {}  p90 {}  p99 {}  max {}",
            pct(&latency, 0.5),
            pct(&latency, 0.9),
            pct(&latency, 0.99),
            fmt::duration(Duration::from_nanos(latency.max()))
        );
        println!(
            "commit wait      p50 {}  p99 {}   imposed by the clock (bound ±{}: ≈ 2 × bound = {})",
            pct(&wait, 0.5),
            pct(&wait, 0.99),
            fmt::duration(bound),
            fmt::duration(bound * 2)
        );
        println!(
            "  of which added p50 {}  p99 {}   to latency (the rest overlapped the synced write)",
            pct(&beyond, 0.5),
            pct(&beyond, 0.99)
        );
        let snapshots = counters.snapshots.load(Ordering::Relaxed);
        let bad = counters.bad_snapshots.load(Ordering::Relaxed);
        let ok = bad == 0 && total == expected && rows.len() as u64 == self.accounts;
        println!(
            "snapshot reads   {snapshots} during the run, {bad} with a wrong total; final total {total} of {expected} {}",
            if ok { "✓ money was never created or lost" } else { "✗ INVARIANT BROKEN" }
        );
        Ok(if ok { ExitCode::SUCCESS } else { ExitCode::from(1) })
    }
}

fn account(a: u64) -> String {
    format!("acct{a:06}")
}

/// Per writer: whole-transaction latency, commit latency, imposed commit wait, added wait.
type WriterResult = anyhow::Result<[Histogram<u64>; 4]>;

fn spawn_writer(
    db: Db,
    accounts: u64,
    seed: u64,
    counters: Arc<Counters>,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<WriterResult> {
    std::thread::spawn(move || {
        let [mut txn_latency, mut latency, mut wait, mut beyond] =
            [histogram(), histogram(), histogram(), histogram()];
        let mut i = seed;
        while !stop.load(Ordering::Relaxed) {
            i = i.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            let from = (i >> 33) % accounts;
            let to = (from + 1 + (i >> 17) % (accounts - 1)) % accounts;
            let amount = 1 + (i >> 7) as i64 % 50;
            let mut attempts = 0;
            let began = Instant::now();
            let (_, info) = db.transaction(|txn| {
                attempts += 1;
                let f = balance(txn.get(account(from))?)?;
                let t = balance(txn.get(account(to))?)?;
                let amount = amount.min(f.max(0)); // never overdraw
                txn.put(account(from), (f - amount).to_string())?;
                txn.put(account(to), (t + amount).to_string())
            })?;
            let _ = txn_latency.record(began.elapsed().as_nanos() as u64);
            counters.commits.fetch_add(1, Ordering::Relaxed);
            counters.conflicts.fetch_add(attempts - 1, Ordering::Relaxed);
            let _ = latency.record(info.latency.as_nanos() as u64);
            let _ = wait.record(info.commit_wait.as_nanos() as u64);
            let _ = beyond.record(info.wait_beyond_durable.as_nanos() as u64);
        }
        Ok([txn_latency, latency, wait, beyond])
    })
}

fn spawn_reader(
    db: Db,
    accounts: u64,
    counters: Arc<Counters>,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<anyhow::Result<()>> {
    std::thread::spawn(move || {
        let expected = START_BALANCE * accounts as i64;
        while !stop.load(Ordering::Relaxed) {
            let snapshot = db.read_only()?;
            let rows = snapshot.scan(account(0).as_bytes()..b"acct~".as_slice(), None)?;
            let total: i64 =
                rows.iter().map(|(_, v)| balance(Some(v.clone()))).sum::<Result<i64, Error>>()?;
            counters.snapshots.fetch_add(1, Ordering::Relaxed);
            if total != expected || rows.len() as u64 != accounts {
                counters.bad_snapshots.fetch_add(1, Ordering::Relaxed);
                tracing::error!(ts = %snapshot.ts(), total, expected, "a snapshot saw the wrong total");
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        Ok(())
    })
}
