//! [`TxnManager`]: the shared state of all transactions on one node: the timestamps and pending
//! commits, the conflict index, the set of active read timestamps, and where commits go.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use boundkv_clockbound::{Timestamp, TimestampOracle, WaitError};
use boundkv_storage::{Engine, GcStats, Mvcc};

use crate::apply::Applier;
use crate::conflicts::ConflictIndex;
use crate::error::{Error, Result};
use crate::limits::Limits;
use crate::timestamps::Timestamps;
use crate::txn::{ReadOnlyTransaction, Transaction};

/// Settings of a [`TxnManager`].
#[derive(Clone, Debug, Default)]
pub struct TxnOptions {
    /// Transaction limits.
    pub limits: Limits,
    /// **Test only; breaks external consistency.** Acknowledge commits without commit wait. The
    /// mutation checks of the test suites turn it on to show that their checkers catch the
    /// anomaly commit wait exists to prevent.
    #[doc(hidden)]
    pub unsafe_skip_commit_wait: bool,
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
            timestamps: Timestamps::new(oracle),
            conflicts: Mutex::new(ConflictIndex::default()),
            active: Mutex::new(BTreeMap::new()),
            applier,
            limits: options.limits,
            skip_commit_wait: AtomicBool::new(options.unsafe_skip_commit_wait),
            failed: OnceLock::new(),
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
        self.check_failed()?;
        let reading = self.timestamps.usable_reading().await?;
        let ts = self.timestamps.read_ts(reading)?;
        self.read_only_at(ts).await
    }

    /// A read-only transaction at exactly `ts`, which must not be in the future. Returns exactly
    /// the state as of `ts`, every time (until GC passes it).
    pub async fn read_at(self: &Arc<Self>, ts: Timestamp) -> Result<ReadOnlyTransaction<E>> {
        self.check_failed()?;
        let reading = self.timestamps.usable_reading().await?;
        if ts > reading.latest() {
            return Err(Error::TimestampInFuture { ts, latest: reading.latest() });
        }
        // Later commits must land above ts, or a later read at ts could differ.
        self.timestamps.observe(ts, reading)?;
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
            self.timestamps.observe(oldest, reading)?;
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
        let ts = self.timestamps.read_ts(reading)?;
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
        }
        e
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
