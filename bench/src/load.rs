//! The closed-loop load generator: `clients` tasks, each issuing one operation at a time against
//! a [`Driver`] for a fixed time (or number of operations); every latency goes into an HDR
//! histogram (1 µs to 60 s, 3 significant digits), and completions are counted per second so
//! that throughput over time can be plotted.
//!
//! | workload | operation |
//! |---|---|
//! | `put` | one key, blind write |
//! | `get` | one key, a linearizable read (boundkv: a read-only transaction at `now().latest` at the leader; etcd: a linearizable range request) |
//! | `follower-get` | one key, read at `now().latest` through a follower |
//! | `txn` | a read-write transaction over 2–8 keys (uniform or Zipfian): read them all, write them all |
//! | `snapshot` | a read-only transaction over 2–8 keys |
//! | `bank` | a transfer between two of 1,000 accounts (Zipfian), 10 % snapshot reads of 8 accounts |
//! | `mixed` | single-key gets and puts, a given fraction of them gets |
//!
//! Keys are 8 decimal digits drawn from `keys` (uniform unless the workload says Zipfian, with
//! YCSB's θ = 0.99); values are `value_size` bytes. An operation that fails is counted as an
//! error and not recorded in the latency histogram (conflicts in `txn` are errors the client
//! retries as new transactions, as an application would).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use boundkv_client::Client;
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

/// What the generator drives.
#[derive(Clone)]
pub enum Driver {
    /// A boundkv cluster, through the client.
    Boundkv(Client),
    /// An embedded boundkv database.
    Embedded(Arc<boundkv::Db>),
    /// An etcd cluster, through its gRPC API.
    #[cfg(feature = "etcd")]
    Etcd(Box<etcd_client::KvClient>),
}

/// Which operations.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Workload {
    /// Single-key blind puts.
    Put,
    /// Single-key linearizable reads.
    Get,
    /// Multi-key read-write transactions.
    Txn {
        /// Zipfian keys (hot keys: conflicts) instead of uniform ones.
        zipf: bool,
    },
    /// Multi-key read-only snapshot transactions.
    Snapshot,
    /// Bank transfers with 10 % snapshot reads.
    Bank,
    /// Single-key gets and puts, `read_fraction` of them gets.
    Mixed,
}

impl Workload {
    /// A short name.
    pub fn name(self) -> &'static str {
        match self {
            Workload::Put => "put",
            Workload::Get => "get",
            Workload::Txn { zipf: false } => "txn-uniform",
            Workload::Txn { zipf: true } => "txn-zipf",
            Workload::Snapshot => "snapshot",
            Workload::Bank => "bank",
            Workload::Mixed => "mixed",
        }
    }
}

/// How much load.
#[derive(Clone, Debug)]
pub struct LoadOptions {
    /// Concurrent clients (one operation in flight each).
    pub clients: usize,
    /// How long to run.
    pub duration: Duration,
    /// Stop after this many operations in all, if sooner.
    pub max_ops: Option<u64>,
    /// The key space.
    pub keys: u64,
    /// Value size, bytes.
    pub value_size: usize,
    /// Show a progress bar (on a terminal).
    pub progress: bool,
    /// For [`Workload::Mixed`]: the fraction of operations that are reads.
    pub read_fraction: f64,
    /// Keys per transaction (`txn`, `snapshot`), inclusive range.
    pub txn_keys: (usize, usize),
}

impl Default for LoadOptions {
    fn default() -> Self {
        LoadOptions {
            clients: 1,
            duration: Duration::from_secs(10),
            max_ops: None,
            keys: 100_000,
            value_size: 256,
            progress: true,
            read_fraction: 0.5,
            txn_keys: (2, 8),
        }
    }
}

/// What a run measured.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct LoadResult {
    /// What was driven (`boundkv`, `etcd`, ...).
    pub system: String,
    /// The workload.
    pub workload: String,
    /// Clients.
    pub clients: usize,
    /// The clock bound, when boundkv (µs).
    pub bound_us: Option<u64>,
    /// Successful operations.
    pub ops: u64,
    /// Failed operations.
    pub errors: u64,
    /// Seconds run.
    pub seconds: f64,
    /// Successful operations per second.
    pub ops_per_sec: f64,
    /// Latency percentiles, µs.
    pub p50_us: u64,
    /// p90.
    pub p90_us: u64,
    /// p99.
    pub p99_us: u64,
    /// p99.9.
    pub p999_us: u64,
    /// Maximum.
    pub max_us: u64,
    /// Completions in each second of the run.
    pub per_second: Vec<u64>,
}

impl LoadResult {
    /// One line for people.
    pub fn line(&self) -> String {
        format!(
            "{:<8} {:<12} bound {:>6} clients {:>3}  {:>8.0} ops/s  p50 {:>7} µs  p90 {:>7}  p99 {:>7}  p99.9 {:>8}  max {:>8}  errors {}",
            self.system,
            self.workload,
            self.bound_us.map(|b| format!("{b}µs")).unwrap_or_else(|| "-".into()),
            self.clients,
            self.ops_per_sec,
            self.p50_us,
            self.p90_us,
            self.p99_us,
            self.p999_us,
            self.max_us,
            self.errors
        )
    }
}

/// YCSB's Zipfian generator over `0..n` (θ = 0.99): item 0 is the hottest.
#[derive(Clone, Debug)]
pub struct Zipf {
    n: f64,
    theta: f64,
    alpha: f64,
    zetan: f64,
    eta: f64,
}

impl Zipf {
    /// Over `0..n`.
    pub fn new(n: u64) -> Zipf {
        let theta = 0.99;
        let zeta = |n: u64| (1..=n).map(|i| 1.0 / (i as f64).powf(theta)).sum::<f64>();
        let zetan = zeta(n);
        let zeta2 = zeta(2);
        let nf = n as f64;
        Zipf {
            n: nf,
            theta,
            alpha: 1.0 / (1.0 - theta),
            zetan,
            eta: (1.0 - (2.0 / nf).powf(1.0 - theta)) / (1.0 - zeta2 / zetan),
        }
    }

    /// The next item for a uniform `u` in `[0, 1)`.
    pub fn sample(&self, u: f64) -> u64 {
        let uz = u * self.zetan;
        if uz < 1.0 {
            return 0;
        }
        if uz < 1.0 + 0.5f64.powf(self.theta) {
            return 1;
        }
        ((self.n * (self.eta * u - self.eta + 1.0).powf(self.alpha)) as u64).min(self.n as u64 - 1)
    }
}

/// A small fast generator per client (xorshift).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

fn key(i: u64) -> String {
    format!("{i:08}")
}

impl Driver {
    async fn put(&self, k: String, v: &[u8]) -> anyhow::Result<()> {
        match self {
            Driver::Boundkv(c) => {
                c.put(k, v).await?;
            }
            Driver::Embedded(db) => {
                let db = db.clone();
                let v = v.to_vec();
                tokio::task::spawn_blocking(move || db.put(k, v)).await??;
            }
            #[cfg(feature = "etcd")]
            Driver::Etcd(kv) => {
                kv.as_ref().clone().put(k, v.to_vec(), None).await?;
            }
        }
        Ok(())
    }

    async fn get(&self, k: String) -> anyhow::Result<()> {
        match self {
            Driver::Boundkv(c) => {
                c.get(k).await?;
            }
            Driver::Embedded(db) => {
                let db = db.clone();
                tokio::task::spawn_blocking(move || db.get(k)).await??;
            }
            #[cfg(feature = "etcd")]
            Driver::Etcd(kv) => {
                kv.as_ref().clone().get(k, None).await?;
            }
        }
        Ok(())
    }

    async fn txn(&self, keys: &[String], value: &[u8]) -> anyhow::Result<()> {
        match self {
            Driver::Boundkv(c) => {
                let mut txn = c.begin();
                for k in keys {
                    txn.get(k).await?;
                }
                for k in keys {
                    txn.put(k, value)?;
                }
                txn.commit().await?;
            }
            Driver::Embedded(db) => {
                let (db, keys, value) = (db.clone(), keys.to_vec(), value.to_vec());
                tokio::task::spawn_blocking(move || {
                    let mut txn = db.begin();
                    for k in &keys {
                        txn.get(k)?;
                    }
                    for k in &keys {
                        txn.put(k, &value)?;
                    }
                    txn.commit()
                })
                .await??;
            }
            #[cfg(feature = "etcd")]
            Driver::Etcd(_) => anyhow::bail!("etcd has no interactive transactions here"),
        }
        Ok(())
    }

    async fn snapshot(&self, keys: &[String]) -> anyhow::Result<()> {
        match self {
            Driver::Boundkv(c) => {
                let s = c.read_only().await?;
                for k in keys {
                    s.get(k).await?;
                }
            }
            Driver::Embedded(db) => {
                let (db, keys) = (db.clone(), keys.to_vec());
                tokio::task::spawn_blocking(move || {
                    let s = db.read_only()?;
                    for k in &keys {
                        s.get(k)?;
                    }
                    boundkv::Result::Ok(())
                })
                .await??;
            }
            #[cfg(feature = "etcd")]
            Driver::Etcd(_) => anyhow::bail!("etcd snapshot reads are not driven here"),
        }
        Ok(())
    }

    async fn transfer(&self, from: String, to: String) -> anyhow::Result<()> {
        match self {
            Driver::Boundkv(c) => {
                let mut txn = c.begin();
                let a = txn.get(&from).await?.map_or(1000, |v| parse(&v));
                let b = txn.get(&to).await?.map_or(1000, |v| parse(&v));
                txn.put(&from, (a - 1).to_string())?;
                txn.put(&to, (b + 1).to_string())?;
                txn.commit().await?;
            }
            Driver::Embedded(db) => {
                let db = db.clone();
                tokio::task::spawn_blocking(move || {
                    let mut txn = db.begin();
                    let a = txn.get(&from)?.map_or(1000, |v| parse(&v));
                    let b = txn.get(&to)?.map_or(1000, |v| parse(&v));
                    txn.put(&from, (a - 1).to_string())?;
                    txn.put(&to, (b + 1).to_string())?;
                    txn.commit()
                })
                .await??;
            }
            #[cfg(feature = "etcd")]
            Driver::Etcd(_) => anyhow::bail!("etcd transfers are not driven here"),
        }
        Ok(())
    }
}

fn parse(v: &[u8]) -> i64 {
    std::str::from_utf8(v).ok().and_then(|s| s.parse().ok()).unwrap_or(1000)
}

/// Runs `workload` against `driver` (see the module docs).
pub async fn run(
    system: &str,
    bound_us: Option<u64>,
    driver: &Driver,
    workload: Workload,
    opts: &LoadOptions,
) -> anyhow::Result<LoadResult> {
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let zipf = Arc::new(Zipf::new(opts.keys));
    let accounts = Arc::new(Zipf::new(1000));
    let mut tasks = Vec::new();
    for c in 0..opts.clients {
        let (driver, stop, done, zipf, accounts) =
            (driver.clone(), stop.clone(), done.clone(), zipf.clone(), accounts.clone());
        let (keys, value, max_ops) = (opts.keys, vec![0x5Au8; opts.value_size], opts.max_ops);
        let (read_fraction, (kmin, kmax)) = (opts.read_fraction, opts.txn_keys);
        tasks.push(tokio::spawn(async move {
            let mut h = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("bounds");
            let mut per_second: Vec<u64> = Vec::new();
            let mut errors = 0u64;
            let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ ((c as u64 + 1) * 0x2545_F491_4F6C_DD1D));
            while !stop.load(Ordering::Relaxed) {
                if max_ops.is_some_and(|m| done.fetch_add(1, Ordering::Relaxed) >= m) {
                    break;
                }
                let t = Instant::now();
                let result = match workload {
                    Workload::Put => driver.put(key(rng.next() % keys), &value).await,
                    Workload::Get => driver.get(key(rng.next() % keys)).await,
                    Workload::Txn { .. } | Workload::Snapshot => {
                        let zipfian = matches!(workload, Workload::Txn { zipf: true });
                        let n = kmin.max(1)
                            + (rng.next() % (kmax.max(kmin).max(1) - kmin.max(1) + 1) as u64)
                                as usize;
                        let mut ks: Vec<String> = (0..n)
                            .map(|_| {
                                key(if zipfian {
                                    zipf.sample(rng.unit())
                                } else {
                                    rng.next() % keys
                                })
                            })
                            .collect();
                        ks.sort();
                        ks.dedup();
                        if workload == Workload::Snapshot {
                            driver.snapshot(&ks).await
                        } else {
                            driver.txn(&ks, &value).await
                        }
                    }
                    Workload::Mixed => {
                        if rng.unit() < read_fraction {
                            driver.get(key(rng.next() % keys)).await
                        } else {
                            driver.put(key(rng.next() % keys), &value).await
                        }
                    }
                    Workload::Bank => {
                        if rng.next().is_multiple_of(10) {
                            let ks: Vec<String> = (0..8)
                                .map(|_| format!("acct{:04}", accounts.sample(rng.unit())))
                                .collect();
                            driver.snapshot(&ks).await
                        } else {
                            let a = accounts.sample(rng.unit());
                            let mut b = accounts.sample(rng.unit());
                            if a == b {
                                b = (b + 1) % 1000;
                            }
                            driver.transfer(format!("acct{a:04}"), format!("acct{b:04}")).await
                        }
                    }
                };
                match result {
                    Ok(()) => {
                        let _ = h.record(t.elapsed().as_micros().max(1) as u64);
                        let second = start.elapsed().as_secs() as usize;
                        if per_second.len() <= second {
                            per_second.resize(second + 1, 0);
                        }
                        per_second[second] += 1;
                    }
                    Err(_) => errors += 1,
                }
            }
            (h, per_second, errors)
        }));
    }
    let bar = progress(opts, &format!("{system} {} ×{}", workload.name(), opts.clients));
    let deadline = start + opts.duration;
    while Instant::now() < deadline && !tasks.iter().all(|t| t.is_finished()) {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if let Some(b) = &bar {
            b.set_position(start.elapsed().as_millis() as u64);
        }
    }
    stop.store(true, Ordering::Relaxed);
    let mut all = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    let mut per_second: Vec<u64> = Vec::new();
    let mut errors = 0;
    for t in tasks {
        let (h, ps, e) = t.await?;
        all.add(h)?;
        errors += e;
        if per_second.len() < ps.len() {
            per_second.resize(ps.len(), 0);
        }
        for (i, n) in ps.into_iter().enumerate() {
            per_second[i] += n;
        }
    }
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    let seconds = start.elapsed().as_secs_f64();
    Ok(LoadResult {
        system: system.into(),
        workload: workload.name().into(),
        clients: opts.clients,
        bound_us,
        ops: all.len(),
        errors,
        seconds,
        ops_per_sec: all.len() as f64 / seconds,
        p50_us: all.value_at_quantile(0.5),
        p90_us: all.value_at_quantile(0.9),
        p99_us: all.value_at_quantile(0.99),
        p999_us: all.value_at_quantile(0.999),
        max_us: all.max(),
        per_second,
    })
}

fn progress(opts: &LoadOptions, what: &str) -> Option<indicatif::ProgressBar> {
    use std::io::IsTerminal;
    if !opts.progress || !std::io::stderr().is_terminal() {
        return None;
    }
    let bar = indicatif::ProgressBar::new(opts.duration.as_millis() as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{msg:32} [{bar:30}] {elapsed}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    bar.set_message(what.to_string());
    Some(bar)
}
