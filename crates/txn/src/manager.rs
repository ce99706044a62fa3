//! [`TxnManager`]: the shared state of all transactions on one node: the timestamps and pending
//! commits, the conflict index, the set of active read timestamps, and where commits go.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use tokio::time::Instant;

use boundkv_clockbound::{ClockReading, Timestamp, TimestampOracle, WaitError};
use boundkv_storage::{Engine, GcStats, Mvcc};

use crate::apply::Applier;
use crate::conflicts::ConflictIndex;
use crate::error::{Error, Result};
use crate::limits::Limits;
use crate::record::{CommitRecord, Write};
use crate::timestamps::Timestamps;
use crate::txn::{CommitInfo, CommitRequest, InFlight, ReadOnlyTransaction, Transaction};

/// Decides whether a timestamp may be handed out at all: the replicated server's check that this
/// node leads, has caught up, has waited out every earlier leader's lease, and holds a lease
/// that covers the timestamp. Called under the timestamp lock, after the timestamp is chosen and
/// before anyone sees it; an error withholds it (the floor may have moved, which is harmless).
pub trait TimestampGate: Send + Sync + 'static {
    /// `Ok` if `ts`, chosen from `reading`, may be handed out.
    fn check(&self, ts: Timestamp, reading: &ClockReading) -> Result<()>;
}

/// Settings of a [`TxnManager`].
#[derive(Clone, Default)]
pub struct TxnOptions {
    /// Transaction limits.
    pub limits: Limits,
    /// A check every timestamp must pass before it is handed out (the replicated server's
    /// leadership and lease); `None` for the embedded database.
    pub gate: Option<Arc<dyn TimestampGate>>,
    /// **Test only; breaks external consistency.** Acknowledge commits without commit wait. The
    /// mutation checks of the test suites turn it on to show that their checkers catch the
    /// anomaly commit wait exists to prevent.
    #[doc(hidden)]
    pub unsafe_skip_commit_wait: bool,
}

impl std::fmt::Debug for TxnOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TxnOptions")
            .field("limits", &self.limits)
            .field("gate", &self.gate.is_some())
            .field("unsafe_skip_commit_wait", &self.unsafe_skip_commit_wait)
            .finish()
    }
}

/// The transaction machinery of one node over MVCC storage `E`.
pub struct TxnManager<E: Engine> {
    pub(crate) mvcc: Arc<Mvcc<E>>,
    pub(crate) timestamps: Arc<Timestamps>,
    pub(crate) conflicts: Mutex<ConflictIndex>,
    /// Read timestamps in use, with counts: nothing at or above the smallest may be pruned from
    /// the conflict index or garbage-collected.
    active: Mutex<BTreeMap<Timestamp, usize>>,
    pub(crate) applier: Arc<dyn Applier>,
    pub(crate) limits: Limits,
    skip_commit_wait: AtomicBool,
    failed: OnceLock<Error>,
    /// Announces the fatal error once recorded (a replica stops its Raft node on it).
    failure: tokio::sync::watch::Sender<Option<Error>>,
}

/// A registration of a read timestamp as in use; dropping it releases it.
pub(crate) struct ActiveRead<E: Engine> {
    manager: Arc<TxnManager<E>>,
    ts: Timestamp,
}

impl<E: Engine> Drop for ActiveRead<E> {
    fn drop(&mut self) {
        let mut active = self.manager.active.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = active.get_mut(&self.ts) {
            *n -= 1;
            if *n == 0 {
                active.remove(&self.ts);
            }
        }
    }
}

impl<E: Engine> TxnManager<E> {
    /// The machinery over `mvcc`, issuing timestamps from `oracle` and committing through
    /// `applier`.
    pub fn new(
        mvcc: Arc<Mvcc<E>>,
        oracle: Arc<TimestampOracle>,
        applier: Arc<dyn Applier>,
        options: TxnOptions,
    ) -> Arc<Self> {
        if options.unsafe_skip_commit_wait {
            tracing::error!("UNSAFE: commit wait is disabled; external consistency does not hold");
        }
        Arc::new(TxnManager {
            mvcc,
            timestamps: Timestamps::new(oracle, options.gate),
            conflicts: Mutex::new(ConflictIndex::default()),
            active: Mutex::new(BTreeMap::new()),
            applier,
            limits: options.limits,
            skip_commit_wait: AtomicBool::new(options.unsafe_skip_commit_wait),
            failed: OnceLock::new(),
            failure: tokio::sync::watch::Sender::new(None),
        })
    }

    /// The storage.
    pub fn mvcc(&self) -> &Arc<Mvcc<E>> {
        &self.mvcc
    }

    /// The timestamp oracle.
    pub fn oracle(&self) -> &Arc<TimestampOracle> {
        self.timestamps.oracle()
    }

    /// The limits transactions are held to.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// The highest timestamp a read may use now without waiting.
    pub fn safe_time(&self) -> Timestamp {
        self.timestamps.safe_time()
    }

    /// Begins a read-write transaction. It takes its read timestamp at its first read; a
    /// transaction that only writes never waits for one.
    pub fn begin(self: &Arc<Self>) -> Transaction<E> {
        Transaction::new(self.clone())
    }

    /// A read-only transaction at `now().latest`: lock-free, it waits only until no commit at or
    /// below its timestamp is pending (safe time).
    pub async fn read_only(self: &Arc<Self>) -> Result<ReadOnlyTransaction<E>> {
        let ts = self.read_ts_now().await?;
        self.read_only_at(ts).await
    }

    /// A read timestamp at `now().latest` (raising the floor, so later commits land above it),
    /// not yet waited for: the server's way to start a remote read.
    pub async fn read_ts_now(&self) -> Result<Timestamp> {
        self.check_failed()?;
        let reading = self.timestamps.usable_reading().await?;
        self.timestamps.read_ts(reading).map_err(|e| self.fail(e))
    }

    /// A timestamp for reads no staler than `max_staleness` (see [`TxnManager::read_stale`]),
    /// not yet waited for.
    pub async fn stale_ts(&self, max_staleness: Duration) -> Result<Timestamp> {
        self.check_failed()?;
        let reading = self.timestamps.usable_reading().await?;
        let oldest = reading.latest().saturating_sub(max_staleness);
        let safe = self.timestamps.safe_time();
        if safe >= oldest {
            return Ok(safe);
        }
        self.timestamps.observe(oldest, reading).map_err(|e| self.fail(e))?;
        Ok(oldest)
    }

    /// Checks that `ts` may be read at exactly (not in the future: the floor is raised to it, so
    /// later commits land above it), not yet waited for.
    pub async fn exact_ts(&self, ts: Timestamp) -> Result<Timestamp> {
        self.check_failed()?;
        let reading = self.timestamps.usable_reading().await?;
        if ts > reading.latest() {
            return Err(Error::TimestampInFuture { ts, latest: reading.latest() });
        }
        self.timestamps.observe(ts, reading).map_err(|e| self.fail(e))?;
        Ok(ts)
    }

    /// Waits until no commit at or below `ts` is pending: reads at `ts` are then exact.
    pub async fn wait_safe(&self, ts: Timestamp) {
        self.timestamps.wait_safe(ts).await;
    }

    /// A closed timestamp: one that no future commit will get and that no pending commit has
    /// (`min(now().latest raised into the floor, min(pending) - 1)`). The replicated server
    /// proposes it so that followers can serve reads at or below it.
    pub async fn close_timestamp(&self) -> Result<Timestamp> {
        self.check_failed()?;
        let reading = self.timestamps.usable_reading().await?;
        let ts = self.timestamps.read_ts(reading).map_err(|e| self.fail(e))?;
        Ok(ts.min(self.timestamps.safe_time()))
    }

    /// Raises the floor to `ts` (a timestamp found in the replicated log, say), so that every
    /// later timestamp lands above it.
    pub async fn observe(&self, ts: Timestamp) -> Result<()> {
        let reading = self.timestamps.usable_reading().await?;
        self.timestamps.observe(ts, reading).map_err(|e| self.fail(e))
    }

    /// Starts a new term of leadership: this node's conflict index knows nothing of what an
    /// earlier leader validated or committed, so it starts empty, and transactions that read
    /// below `validate_from` (or below the current floor) can no longer be validated here: they
    /// fail with `Expired` and are retried.
    ///
    /// # To ensure correctness
    /// `validate_from` must be at or above every read timestamp an earlier leader may have
    /// handed out, and above every commit timestamp of an earlier term: the new leader's
    /// `ready_at` (past the end of every earlier lease) is such a timestamp.
    pub fn start_term(&self, validate_from: Timestamp) {
        let floor = self.oracle().floor();
        let mut index = self.conflicts.lock().unwrap_or_else(|e| e.into_inner());
        *index = ConflictIndex::default();
        index.prune(floor.max(validate_from));
    }

    /// A read-only transaction at exactly `ts`, which must not be in the future. Returns exactly
    /// the state as of `ts`, every time (until GC passes it).
    pub async fn read_at(self: &Arc<Self>, ts: Timestamp) -> Result<ReadOnlyTransaction<E>> {
        // Later commits must land above ts, or a later read at ts could differ.
        let ts = self.exact_ts(ts).await?;
        self.read_only_at(ts).await
    }

    /// A read-only transaction no staler than `max_staleness`: at the freshest timestamp that
    /// needs no waiting (safe time), provided it is within `max_staleness` of `now().latest`;
    /// otherwise at `latest - max_staleness`, waiting for safe time to reach it.
    pub async fn read_stale(
        self: &Arc<Self>,
        max_staleness: Duration,
    ) -> Result<ReadOnlyTransaction<E>> {
        self.check_failed()?;
        let reading = self.timestamps.usable_reading().await?;
        let oldest = reading.latest().saturating_sub(max_staleness);
        let safe = self.timestamps.safe_time();
        let ts = if safe >= oldest {
            safe
        } else {
            self.timestamps.observe(oldest, reading).map_err(|e| self.fail(e))?;
            oldest
        };
        self.read_only_at(ts).await
    }

    async fn read_only_at(self: &Arc<Self>, ts: Timestamp) -> Result<ReadOnlyTransaction<E>> {
        let active = self.register_read(ts)?;
        self.timestamps.wait_safe(ts).await;
        Ok(ReadOnlyTransaction::new(self.clone(), ts, active))
    }

    /// Takes a read timestamp for a read-write transaction and waits until it is safe.
    pub(crate) async fn acquire_read_ts(self: &Arc<Self>) -> Result<(Timestamp, ActiveRead<E>)> {
        self.check_failed()?;
        let reading = self.timestamps.usable_reading().await?;
        let ts = self.timestamps.read_ts(reading).map_err(|e| self.fail(e))?;
        let active = self.register_read(ts)?;
        self.timestamps.wait_safe(ts).await;
        Ok((ts, active))
    }

    /// Registers `ts` as in use, after checking it is not below the GC horizon. GC raises the
    /// horizon under the same lock, so a registered read can never have its versions collected.
    fn register_read(self: &Arc<Self>, ts: Timestamp) -> Result<ActiveRead<E>> {
        let mut active = self.active.lock().unwrap_or_else(|e| e.into_inner());
        let horizon = Timestamp::from_nanos(self.mvcc.gc_horizon());
        if ts < horizon {
            return Err(Error::BelowGcHorizon { ts, horizon });
        }
        *active.entry(ts).or_default() += 1;
        Ok(ActiveRead { manager: self.clone(), ts })
    }

    /// The oldest read timestamp in use, if any.
    pub(crate) fn oldest_active_read(&self) -> Option<Timestamp> {
        self.active.lock().unwrap_or_else(|e| e.into_inner()).keys().next().copied()
    }

    /// Garbage-collects versions older than `retention` (by the clock), never above a read in use
    /// or a pending commit. Returns what was deleted.
    pub async fn gc(&self, retention: Duration) -> Result<GcStats> {
        self.check_failed()?;
        let reading = self.timestamps.usable_reading().await?;
        {
            let active = self.active.lock().unwrap_or_else(|e| e.into_inner());
            let mut horizon =
                reading.earliest().saturating_sub(retention).min(self.timestamps.safe_time());
            if let Some(oldest) = active.keys().next() {
                horizon = horizon.min(*oldest);
            }
            self.mvcc.advance_gc_horizon(horizon.as_nanos()).map_err(|e| self.fail(e.into()))?;
        }
        self.mvcc.collect_garbage().map_err(|e| self.fail(e.into()))
    }

    /// Commits a decided transaction (see `Transaction::commit` for the protocol): validates its
    /// reads, takes its timestamp, hands its record to the applier, waits for it to be durable
    /// and for commit wait, then makes it visible.
    pub async fn commit_request(self: &Arc<Self>, req: CommitRequest) -> Result<CommitInfo> {
        let start = Instant::now();
        self.check_failed()?;
        if req.writes.is_empty() {
            let ts = req.read_ts.unwrap_or_else(|| self.safe_time());
            return Ok(CommitInfo {
                ts,
                commit_wait: Duration::ZERO,
                durable: Duration::ZERO,
                wait_beyond_durable: Duration::ZERO,
                latency: start.elapsed(),
            });
        }
        for (key, value) in &req.writes {
            self.limits.check_write(key, value.as_deref())?;
        }
        if req.writes.len() > self.limits.max_writes {
            return Err(Error::TransactionTooLarge {
                what: "writes".into(),
                max: self.limits.max_writes,
            });
        }
        let reading = self.timestamps.usable_reading().await?;
        // Commit wait is measured from the reading `s` is taken from: from then on the wait runs.
        let chosen = Instant::now();
        let lifetime = self.limits.max_lifetime;
        let pending = {
            let mut index = self.conflicts.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(rt) = req.read_ts {
                if rt < reading.earliest().saturating_sub(lifetime) || !index.can_validate(rt) {
                    return Err(Error::Expired {
                        read_ts: rt,
                        lifetime_ms: lifetime.as_millis() as u64,
                    });
                }
                if let Some((key, conflicting_commit_ts)) =
                    index.check(rt, &req.read_keys, &req.read_ranges)
                {
                    return Err(Error::Conflict { key, read_ts: rt, conflicting_commit_ts });
                }
            }
            let at_least = req.read_ts.map_or(Timestamp::ZERO, Timestamp::next);
            let pending = self.timestamps.issue(reading, at_least).map_err(|e| self.fail(e))?;
            index.record(req.writes.keys(), pending.ts());
            if index.wants_prune() {
                let mut horizon = reading.earliest().saturating_sub(lifetime);
                if let Some(oldest) = self.oldest_active_read() {
                    horizon = horizon.min(oldest);
                }
                index.prune(horizon);
            }
            pending
        };
        let record = CommitRecord {
            txn_id: req.txn_id,
            ts: pending.ts(),
            writes: req.writes.into_iter().map(|(key, value)| Write { key, value }).collect(),
        };
        let durable = self.applier.apply(record);
        let mut info = InFlight {
            manager: self.clone(),
            pending: Some(pending),
            durable: Some(durable),
            chosen,
        }
        .finish()
        .await?;
        info.commit_wait = info.ts.saturating_duration_since(reading.earliest());
        info.latency = start.elapsed();
        Ok(info)
    }

    pub(crate) fn skip_commit_wait(&self) -> bool {
        self.skip_commit_wait.load(Ordering::Relaxed)
    }

    /// **Test only**: turn commit wait off or on at run time (see [`TxnOptions`]).
    #[doc(hidden)]
    pub fn set_unsafe_skip_commit_wait(&self, skip: bool) {
        self.skip_commit_wait.store(skip, Ordering::Relaxed);
    }

    pub(crate) fn check_failed(&self) -> Result<()> {
        match self.failed.get() {
            Some(e) => Err(e.clone()),
            None => Ok(()),
        }
    }

    /// Records a fatal error: from now on every operation fails with it.
    pub(crate) fn fail(&self, e: Error) -> Error {
        if e.is_fatal() && self.failed.set(e.clone()).is_ok() {
            tracing::error!(error = %e, "transactions stopped after a fatal error");
            self.failure.send_replace(Some(e.clone()));
        }
        e
    }

    /// The fatal error that stopped transactions here, once there is one.
    pub fn watch_failure(&self) -> tokio::sync::watch::Receiver<Option<Error>> {
        self.failure.subscribe()
    }

    /// Waits until `ts` has surely passed, however long the clock stays unusable: used once a
    /// commit is durable, when giving up is no longer an option.
    pub(crate) async fn commit_wait_until_done(
        &self,
        ts: Timestamp,
    ) -> boundkv_clockbound::CommitWait {
        let oracle = self.timestamps.oracle();
        loop {
            match oracle.commit_wait(ts).await {
                Ok(w) => return w,
                Err(e) => {
                    tracing::warn!(%ts, error = %e, "commit is durable but its commit wait cannot finish yet; waiting on");
                    if matches!(e, WaitError::TargetTooFarAhead { .. }) {
                        oracle.clock().timebase().sleep(Duration::from_secs(1)).await;
                    }
                }
            }
        }
    }
}
