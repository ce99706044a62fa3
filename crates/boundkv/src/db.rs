//! [`Db`]: the embedded database, a blocking API over the asynchronous transaction layer.

use std::ops::{Bound, RangeBounds};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures::executor::block_on;

use boundkv_clockbound::{
    Clock, ClockError, ClockPolicy, ClockSource, OracleOptions, Timestamp, TimestampOracle,
};
use boundkv_storage::{Durability, GcStats, Mvcc, SledEngine, SledOptions};
use boundkv_txn::{
    CommitInfo, Error, Limits, LocalApplier, MvccHighWaterMark, ReadOnlyTransaction, Result,
    Transaction, TxnId, TxnManager, TxnOptions,
};

/// How [`Db::transaction`] retries a transaction that failed with a retryable error (a conflict).
#[derive(Clone, Debug)]
pub struct RetryPolicy {
    /// Attempts in all, the first included. Default 10.
    pub max_attempts: u32,
    /// The first backoff; it doubles (with jitter) up to `max_backoff`. Default 1 ms.
    pub initial_backoff: Duration,
    /// Default 100 ms.
    pub max_backoff: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 10,
            initial_backoff: Duration::from_millis(1),
            max_backoff: Duration::from_millis(100),
        }
    }
}

/// Background garbage collection.
#[derive(Clone, Debug)]
pub struct GcOptions {
    /// Versions older than this (by the clock) are collected, never above a read in use.
    /// Reads further back fail with `BelowGcHorizon`. Default 1 hour.
    pub retention: Duration,
    /// How often to collect. Default 1 minute.
    pub interval: Duration,
}

impl Default for GcOptions {
    fn default() -> Self {
        GcOptions { retention: Duration::from_secs(3600), interval: Duration::from_secs(60) }
    }
}

/// Where the database's clock comes from.
#[derive(Clone)]
pub enum ClockChoice {
    /// Opened from a source (`clockbound`, `clockbound:PATH`, `system:BOUND`).
    Source(ClockSource),
    /// A clock the caller built (a simulated clock in tests).
    Instance(Arc<dyn Clock>),
}

/// How to open a [`Db`].
#[derive(Clone)]
pub struct Options {
    /// The clock. Default: the ClockBound daemon's segment at its default path.
    pub clock: ClockChoice,
    /// Which clock readings may be used, and how long to wait for one.
    pub policy: ClockPolicy,
    /// What an acknowledged commit survives. Default [`Durability::Sync`]: power loss.
    pub durability: Durability,
    /// Transaction limits.
    pub limits: Limits,
    /// Retries of [`Db::transaction`].
    pub retry: RetryPolicy,
    /// Background GC, or `None` to collect only when [`Db::gc`] is called. Default on.
    pub gc: Option<GcOptions>,
    /// sled's cache, bytes. Default 256 MiB.
    pub cache_capacity: u64,
    /// **Test only; breaks external consistency.** See `boundkv_txn::TxnOptions`.
    #[doc(hidden)]
    pub unsafe_skip_commit_wait: bool,
}

impl Default for Options {
    /// The ClockBound daemon's segment at its default path, synced commits, background GC.
    fn default() -> Self {
        Options {
            clock: ClockChoice::Source(ClockSource::default()),
            policy: ClockPolicy::default(),
            durability: Durability::Sync,
            limits: Limits::default(),
            retry: RetryPolicy::default(),
            gc: Some(GcOptions::default()),
            cache_capacity: 256 << 20,
            unsafe_skip_commit_wait: false,
        }
    }
}

impl Options {
    /// Default options with the clock from `source` (`clockbound`, `clockbound:PATH`,
    /// `system:BOUND`).
    pub fn with_clock(source: ClockSource) -> Self {
        Options { clock: ClockChoice::Source(source), ..Options::default() }
    }

    /// Default options with a clock of the caller's (a [`boundkv_clockbound::SimClock`] in
    /// tests).
    pub fn with_clock_instance(clock: Arc<dyn Clock>) -> Self {
        Options { clock: ClockChoice::Instance(clock), ..Options::default() }
    }
}

/// Why a database could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// The clock source could not be opened (no ClockBound daemon, a malformed segment, ...).
    #[error("cannot open the clock: {0}")]
    Clock(#[from] ClockError),
    /// The storage could not be opened (in use by another process, unreadable, ...).
    #[error("cannot open the database: {0}")]
    Storage(#[from] boundkv_storage::Error),
    /// The timestamp machinery could not start (the clock is unusable or far behind the newest
    /// commit, the high-water mark is unreadable).
    #[error("cannot start: {0}")]
    Start(#[from] Error),
}

/// What [`Db::status`] reports.
#[derive(Clone, Debug)]
pub struct DbStatus {
    /// The data directory.
    pub path: PathBuf,
    /// The storage engine and its size.
    pub storage: boundkv_storage::Status,
    /// The clock source.
    pub clock: String,
    /// The newest commit timestamp (since open, or as of the last clean close).
    pub max_commit_ts: Timestamp,
    /// The highest timestamp a read can use without waiting.
    pub safe_time: Timestamp,
    /// Reads below this fail with `BelowGcHorizon`.
    pub gc_horizon: Timestamp,
}

struct Inner {
    path: PathBuf,
    manager: Arc<TxnManager<SledEngine>>,
    applier: Arc<LocalApplier>,
    retry: RetryPolicy,
    gc_stop: Arc<(Mutex<bool>, Condvar)>,
    gc_thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        {
            let (stop, cv) = &*self.gc_stop;
            *stop.lock().unwrap_or_else(|e| e.into_inner()) = true;
            cv.notify_all();
        }
        if let Some(t) = self.gc_thread.lock().unwrap_or_else(|e| e.into_inner()).take() {
            let _ = t.join();
        }
        self.applier.shutdown();
        // Nothing more will be issued: record the exact floor, so a restart does not wait out
        // the oracle's look-ahead before its first commit.
        if let Err(e) = self.manager.oracle().persist_floor() {
            tracing::warn!(error = %e, "could not record the clock's floor at shutdown");
        }
        let _ = self.manager.mvcc().persist_max_version();
        let _ = self.manager.mvcc().flush();
    }
}

/// An embedded boundkv database. Cheap to clone; clones share one database. Closing happens
/// when the last clone is dropped (queued commits are finished and synced first).
#[derive(Clone)]
pub struct Db {
    inner: Arc<Inner>,
}

impl Db {
    /// Opens (or creates) the database in `path`.
    ///
    /// On reopening, it waits until the clock has surely passed every timestamp the last process
    /// issued (its durable high-water mark) before serving: a commit that was durable but not yet
    /// acknowledged when the process stopped must not become visible before its commit wait would
    /// have ended. After a clean close that mark is exact; after a crash it can be up to 250 ms
    /// ahead, which the first open then waits out.
    pub fn open(path: impl AsRef<Path>, options: Options) -> std::result::Result<Db, OpenError> {
        let path = path.as_ref().to_path_buf();
        let clock: Arc<dyn Clock> = match &options.clock {
            ClockChoice::Source(source) => source.open(None)?,
            ClockChoice::Instance(clock) => clock.clone(),
        };
        let engine = Arc::new(SledEngine::open(
            path.join("data"),
            SledOptions { durability: options.durability, cache_capacity: options.cache_capacity },
        )?);
        let mvcc = Arc::new(Mvcc::new(engine)?);
        let oracle = Arc::new(
            TimestampOracle::open(
                clock,
                OracleOptions { policy: options.policy.clone(), ..OracleOptions::default() },
                Box::new(MvccHighWaterMark::new(mvcc.clone())),
            )
            .map_err(Error::from)?,
        );
        // Every version on disk has a timestamp at or below the durable high-water mark (exact
        // after a clean close, at most the oracle's look-ahead above it after a crash).
        let newest = oracle.durable_mark();
        if newest > Timestamp::ZERO {
            oracle.commit_wait_blocking(newest).map_err(Error::from)?;
        }
        let applier = Arc::new(LocalApplier::start(mvcc.clone()));
        let manager = TxnManager::new(
            mvcc,
            oracle,
            applier.clone(),
            TxnOptions {
                limits: options.limits.clone(),
                gate: None,
                unsafe_skip_commit_wait: options.unsafe_skip_commit_wait,
            },
        );
        let gc_stop = Arc::new((Mutex::new(false), Condvar::new()));
        let gc_thread = options.gc.clone().map(|gc| spawn_gc(manager.clone(), gc, gc_stop.clone()));
        tracing::info!(path = %path.display(), clock = %manager.oracle().clock().describe(), "database open");
        Ok(Db {
            inner: Arc::new(Inner {
                path,
                manager,
                applier,
                retry: options.retry,
                gc_stop,
                gc_thread: Mutex::new(gc_thread),
            }),
        })
    }

    /// The transaction machinery, for callers that want the asynchronous API.
    pub fn manager(&self) -> &Arc<TxnManager<SledEngine>> {
        &self.inner.manager
    }

    /// The clock this database reads.
    pub fn clock(&self) -> &Arc<dyn Clock> {
        self.inner.manager.oracle().clock()
    }

    /// Begins a read-write transaction.
    pub fn begin(&self) -> Txn {
        Txn { inner: self.inner.manager.begin() }
    }

    /// Runs `f` in a read-write transaction and commits it, retrying (with backoff) when the
    /// commit fails with a retryable error such as a conflict. `f` may run several times, so it
    /// should not have side effects outside the transaction. Returns `f`'s result and the
    /// commit's information.
    pub fn transaction<T>(
        &self,
        mut f: impl FnMut(&mut Txn) -> Result<T>,
    ) -> Result<(T, CommitInfo)> {
        let policy = &self.inner.retry;
        let mut backoff = policy.initial_backoff;
        let mut attempt = 1;
        loop {
            let mut txn = self.begin();
            let result = f(&mut txn).and_then(|value| txn.commit().map(|info| (value, info)));
            match result {
                Err(e) if e.is_retryable() && attempt < policy.max_attempts => {
                    tracing::debug!(attempt, error = %e, "retrying transaction");
                    let jitter = rand::random_range(0.5..1.5);
                    std::thread::sleep(backoff.mul_f64(jitter));
                    backoff = (backoff * 2).min(policy.max_backoff);
                    attempt += 1;
                }
                other => return other,
            }
        }
    }

    /// A read-only snapshot at `now().latest`.
    pub fn read_only(&self) -> Result<Snapshot> {
        Ok(Snapshot { inner: block_on(self.inner.manager.read_only())? })
    }

    /// A read-only snapshot at exactly `ts` (not in the future, not below the GC horizon).
    pub fn read_at(&self, ts: Timestamp) -> Result<Snapshot> {
        Ok(Snapshot { inner: block_on(self.inner.manager.read_at(ts))? })
    }

    /// A read-only snapshot no staler than `max_staleness`, taken without waiting when possible.
    pub fn read_stale(&self, max_staleness: Duration) -> Result<Snapshot> {
        Ok(Snapshot { inner: block_on(self.inner.manager.read_stale(max_staleness))? })
    }

    /// The value of `key` now (a one-read read-only transaction).
    pub fn get(&self, key: impl AsRef<[u8]>) -> Result<Option<Bytes>> {
        self.read_only()?.get(key)
    }

    /// Sets `key` to `value` in a transaction of its own.
    pub fn put(&self, key: impl AsRef<[u8]>, value: impl AsRef<[u8]>) -> Result<CommitInfo> {
        let mut txn = self.begin();
        txn.put(key, value)?;
        txn.commit()
    }

    /// Deletes `key` in a transaction of its own.
    pub fn delete(&self, key: impl AsRef<[u8]>) -> Result<CommitInfo> {
        let mut txn = self.begin();
        txn.delete(key)?;
        txn.commit()
    }

    /// Collects versions older than `retention` now (background GC does this periodically).
    pub fn gc(&self, retention: Duration) -> Result<GcStats> {
        block_on(self.inner.manager.gc(retention))
    }

    /// What the database says about itself.
    pub fn status(&self) -> Result<DbStatus> {
        let m = &self.inner.manager;
        Ok(DbStatus {
            path: self.inner.path.clone(),
            storage: boundkv_storage::Engine::status(&**m.mvcc().engine())?,
            clock: self.clock().describe(),
            max_commit_ts: Timestamp::from_nanos(m.mvcc().max_version_ts()),
            safe_time: m.safe_time(),
            gc_horizon: Timestamp::from_nanos(m.mvcc().gc_horizon()),
        })
    }
}

fn spawn_gc(
    manager: Arc<TxnManager<SledEngine>>,
    gc: GcOptions,
    stop: Arc<(Mutex<bool>, Condvar)>,
) -> std::thread::JoinHandle<()> {
    std::thread::Builder::new()
        .name("boundkv-gc".into())
        .spawn(move || {
            let (lock, cv) = &*stop;
            loop {
                // Check the flag under the lock before sleeping, so a stop that came first is
                // never missed (and never waits out a whole interval).
                let guard = lock.lock().unwrap_or_else(|e| e.into_inner());
                let (guard, _) = cv
                    .wait_timeout_while(guard, gc.interval, |stopped| !*stopped)
                    .unwrap_or_else(|e| e.into_inner());
                if *guard {
                    return;
                }
                drop(guard);
                match block_on(manager.gc(gc.retention)) {
                    Ok(stats) if stats.versions_deleted > 0 => {
                        tracing::info!(?stats, "garbage collected");
                    }
                    Ok(_) => {}
                    Err(e) => tracing::warn!(error = %e, "garbage collection failed"),
                }
            }
        })
        .expect("spawn the GC thread")
}

/// Converts any range of byte-like keys to owned bounds.
fn to_bounds<B: AsRef<[u8]> + ?Sized>(range: impl RangeBounds<B>) -> (Bound<Bytes>, Bound<Bytes>) {
    let conv = |b: Bound<&B>| match b {
        Bound::Included(k) => Bound::Included(Bytes::copy_from_slice(k.as_ref())),
        Bound::Excluded(k) => Bound::Excluded(Bytes::copy_from_slice(k.as_ref())),
        Bound::Unbounded => Bound::Unbounded,
    };
    (conv(range.start_bound()), conv(range.end_bound()))
}

/// A read-write transaction of the embedded database (blocking). Dropping it rolls it back.
pub struct Txn {
    inner: Transaction<SledEngine>,
}

impl Txn {
    /// The transaction's id.
    pub fn id(&self) -> TxnId {
        self.inner.id()
    }

    /// The read timestamp, once the first read took it.
    pub fn read_ts(&self) -> Option<Timestamp> {
        self.inner.read_ts()
    }

    /// The value of `key` (this transaction's own write, or the committed value at its read
    /// timestamp).
    pub fn get(&mut self, key: impl AsRef<[u8]>) -> Result<Option<Bytes>> {
        block_on(self.inner.get(Bytes::copy_from_slice(key.as_ref())))
    }

    /// The pairs in `range`, at most `limit`, with this transaction's writes applied.
    pub fn scan<B: AsRef<[u8]> + ?Sized>(
        &mut self,
        range: impl RangeBounds<B>,
        limit: Option<usize>,
    ) -> Result<Vec<(Bytes, Bytes)>> {
        block_on(self.inner.scan(to_bounds(range), limit))
    }

    /// Sets `key` to `value` at commit.
    pub fn put(&mut self, key: impl AsRef<[u8]>, value: impl AsRef<[u8]>) -> Result<()> {
        self.inner.put(Bytes::copy_from_slice(key.as_ref()), Bytes::copy_from_slice(value.as_ref()))
    }

    /// Deletes `key` at commit.
    pub fn delete(&mut self, key: impl AsRef<[u8]>) -> Result<()> {
        self.inner.delete(Bytes::copy_from_slice(key.as_ref()))
    }

    /// Commits (see `boundkv_txn::Transaction::commit`).
    pub fn commit(self) -> Result<CommitInfo> {
        block_on(self.inner.commit())
    }

    /// Abandons the transaction.
    pub fn rollback(self) {}
}

/// A read-only snapshot of the embedded database at one timestamp.
pub struct Snapshot {
    inner: ReadOnlyTransaction<SledEngine>,
}

impl Snapshot {
    /// The snapshot's timestamp.
    pub fn ts(&self) -> Timestamp {
        self.inner.ts()
    }

    /// The value of `key` at the snapshot's timestamp.
    pub fn get(&self, key: impl AsRef<[u8]>) -> Result<Option<Bytes>> {
        self.inner.get(key)
    }

    /// The pairs in `range` at the snapshot's timestamp, at most `limit`.
    pub fn scan<B: AsRef<[u8]> + ?Sized>(
        &self,
        range: impl RangeBounds<B>,
        limit: Option<usize>,
    ) -> Result<Vec<(Bytes, Bytes)>> {
        self.inner.scan(to_bounds(range), limit)
    }
}
