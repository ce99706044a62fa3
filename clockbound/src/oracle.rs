//! [`TimestampOracle`]: the one place in a process where timestamps are handed out.
//!
//! # Rules
//!
//! 1. **Only from usable readings.** A timestamp comes from a reading that [`ClockPolicy`] accepts:
//!    `Synchronized` (or `FreeRunning`), with a bound under the ceiling. On `Unknown`, `Disrupted`
//!    or an error the oracle waits, up to [`ClockPolicy::unavailable_timeout`], then fails with
//!    [`WaitError::ClockUnavailable`].
//! 2. **Never backwards.** The oracle keeps a *floor*: every timestamp it has handed out is at or
//!    below it. A write timestamp is `max(now().latest, at_least, floor + 1)`, so it is strictly
//!    greater than everything before it, even when `CLOCK_REALTIME` steps back (an NTP step, a
//!    leap second inserted by the kernel). A read timestamp is `max(now().latest, floor)` and
//!    raises the floor to itself, so every later write lands above every earlier read.
//! 3. **Not backwards across a restart either.** Before a timestamp above the durable
//!    *high-water mark* is returned, the oracle persists a new mark `persist_ahead` beyond it
//!    through a [`HighWaterMark`] store (an fsync, so it happens once per `persist_ahead` of
//!    clock time rather than once per timestamp). On restart the floor starts at the mark, so a
//!    process restarted with its clock stepped back issues timestamps above the mark; the commit
//!    wait that follows each of them then waits, on the clock, until true time has passed it.
//! 4. **Never far ahead of the clock.** A timestamp more than [`ClockPolicy::max_commit_wait`]
//!    beyond the clock's `latest` is refused with [`OracleError::TooFarAhead`], and the floor does
//!    not move: a bad timestamp from elsewhere, or a restart with the clock hours behind the mark,
//!    must not wedge every later commit behind an hours-long commit wait.
//!
//! # Worked example: a leap second
//!
//! ```text
//! true time     clock reads      bound   issue()                    commit wait ends when
//! 10.000 000    10.000 000       1 ms    10.001 000 (= latest)      earliest > 10.001 000: true 10.002
//! 10.500 000     9.500 000 ← kernel steps CLOCK_REALTIME back by 1 s
//! 10.500 000     9.500 000       1 ms    10.001 001 (= floor + 1)   earliest > 10.001 001: true 11.002
//! ```
//!
//! The second transaction still gets a larger timestamp than the first, and is acknowledged only
//! once the (stepped) clock has surely passed it: at true time 11.002, half a second after it
//! began, when the stepped clock reads 10.002. Nothing is reordered; writes are merely slower until
//! the clock catches up with the floor.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::clock::Clock;
use crate::policy::ClockPolicy;
use crate::time::{ClockReading, Timestamp};
use crate::wait::{self, CommitWait, WaitError};

/// Durable storage for the oracle's high-water mark.
///
/// The storage crate implements this on the database's own engine so the mark is synced with the
/// data; [`FileHighWaterMark`] is a standalone implementation.
pub trait HighWaterMark: Send + Sync {
    /// The last mark stored, or `None` if none ever was.
    ///
    /// # To ensure correctness
    /// Must return the value of the last `store` that returned `Ok`, or a larger one; never a
    /// smaller one, whatever crashed in between.
    fn load(&self) -> Result<Option<Timestamp>, HighWaterMarkError>;

    /// Records `mark` durably.
    ///
    /// # To ensure correctness
    /// Must not return `Ok` before `mark` survives a crash or power loss (fsync, not just a write
    /// to the page cache). Every mark the oracle stores is at or above every timestamp it has
    /// handed out; it may be lower than the previous mark only when the oracle shuts down cleanly
    /// ([`TimestampOracle::persist_floor`]).
    fn store(&self, mark: Timestamp) -> Result<(), HighWaterMarkError>;
}

/// A high-water mark could not be read or written. Fatal: the oracle cannot promise monotonic
/// timestamps across a restart without it.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("clock high-water mark: {0}")]
pub struct HighWaterMarkError(pub String);

/// A mark kept in memory only: survives nothing but sharing the `Arc` between oracles. For tests.
#[derive(Debug, Default)]
pub struct MemoryHighWaterMark {
    mark: Mutex<Option<Timestamp>>,
    stores: AtomicU64,
}

impl MemoryHighWaterMark {
    /// How many times `store` was called.
    pub fn stores(&self) -> u64 {
        self.stores.load(Ordering::Relaxed)
    }
}

impl HighWaterMark for MemoryHighWaterMark {
    fn load(&self) -> Result<Option<Timestamp>, HighWaterMarkError> {
        Ok(*self.mark.lock().unwrap_or_else(|e| e.into_inner()))
    }
    fn store(&self, mark: Timestamp) -> Result<(), HighWaterMarkError> {
        self.stores.fetch_add(1, Ordering::Relaxed);
        *self.mark.lock().unwrap_or_else(|e| e.into_inner()) = Some(mark);
        Ok(())
    }
}

impl<H: HighWaterMark + ?Sized> HighWaterMark for Arc<H> {
    fn load(&self) -> Result<Option<Timestamp>, HighWaterMarkError> {
        (**self).load()
    }
    fn store(&self, mark: Timestamp) -> Result<(), HighWaterMarkError> {
        (**self).store(mark)
    }
}

/// A mark in a small file of its own: written to a temporary file, fsynced, renamed over the old
/// one, and the directory fsynced, so a crash leaves either the old mark or the new one.
#[derive(Debug, Clone)]
pub struct FileHighWaterMark {
    path: PathBuf,
}

const FILE_MAGIC: &str = "boundkv-clock-high-water-mark v1";

impl FileHighWaterMark {
    /// A mark stored at `path` (its directory must exist).
    pub fn new(path: impl Into<PathBuf>) -> Self {
        FileHighWaterMark { path: path.into() }
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl HighWaterMark for FileHighWaterMark {
    fn load(&self) -> Result<Option<Timestamp>, HighWaterMarkError> {
        let text = match std::fs::read_to_string(&self.path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(HighWaterMarkError(format!("{}: {e}", self.path.display()))),
        };
        let mut lines = text.lines();
        let (Some(FILE_MAGIC), Some(value), None) = (lines.next(), lines.next(), lines.next())
        else {
            return Err(HighWaterMarkError(format!(
                "{}: not a high-water mark file (refusing to guess a floor)",
                self.path.display()
            )));
        };
        value.parse::<u64>().map(|n| Some(Timestamp::from_nanos(n))).map_err(|e| {
            HighWaterMarkError(format!("{}: bad value {value:?}: {e}", self.path.display()))
        })
    }

    fn store(&self, mark: Timestamp) -> Result<(), HighWaterMarkError> {
        let err = |e: std::io::Error| HighWaterMarkError(format!("{}: {e}", self.path.display()));
        let dir = match self.path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        let tmp = self.path.with_extension("tmp");
        let mut f = std::fs::File::create(&tmp).map_err(err)?;
        write!(f, "{FILE_MAGIC}\n{}\n", mark.as_nanos()).map_err(err)?;
        f.sync_all().map_err(err)?;
        std::fs::rename(&tmp, &self.path).map_err(err)?;
        std::fs::File::open(dir).and_then(|d| d.sync_all()).map_err(err)?;
        Ok(())
    }
}

/// Settings of a [`TimestampOracle`].
#[derive(Clone, Debug)]
pub struct OracleOptions {
    /// Which readings are usable and how long to wait for one.
    pub policy: ClockPolicy,
    /// How far beyond the newest timestamp the durable mark is set, so that one fsync covers many
    /// timestamps. After a restart the first commit waits out at most this much. Default 250 ms.
    pub persist_ahead: Duration,
}

impl Default for OracleOptions {
    fn default() -> Self {
        OracleOptions { policy: ClockPolicy::default(), persist_ahead: Duration::from_millis(250) }
    }
}

/// A timestamp handed out by the oracle, with the reading it came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Issued {
    /// The timestamp.
    pub ts: Timestamp,
    /// The usable reading it was derived from.
    pub reading: ClockReading,
}

/// Why the oracle could not hand out a timestamp.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum OracleError {
    /// The clock gave no usable reading in time, or the target is too far ahead. Deterministic
    /// and retryable: tell the client.
    #[error(transparent)]
    Clock(#[from] WaitError),
    /// The high-water mark could not be persisted. Fatal: stop the node.
    #[error(transparent)]
    HighWaterMark(#[from] HighWaterMarkError),
    /// A timestamp further beyond the clock's `latest` than a commit may wait
    /// ([`ClockPolicy::max_commit_wait`]) was asked for or would have to be issued (a bad
    /// timestamp from elsewhere, or a restart with the clock far behind the high-water mark).
    /// Nothing was issued and the floor did not move. Deterministic: tell the client.
    #[error("timestamp {ts} is more than {} ahead of the clock's latest {latest}", humantime::format_duration(*max_ahead))]
    TooFarAhead {
        /// The timestamp asked for or needed.
        ts: Timestamp,
        /// The clock's `latest`.
        latest: Timestamp,
        /// The limit.
        max_ahead: Duration,
    },
}

impl OracleError {
    /// Whether the node must stop (as opposed to telling the client and carrying on).
    pub fn is_fatal(&self) -> bool {
        matches!(self, OracleError::HighWaterMark(_))
    }
}

/// Hands out monotonic timestamps from a bounded clock (see the module docs for the rules).
pub struct TimestampOracle {
    clock: Arc<dyn Clock>,
    options: OracleOptions,
    /// Every timestamp handed out is `<= floor`.
    floor: AtomicU64,
    /// The persisted mark; every timestamp returned so far is `<= durable`.
    durable: AtomicU64,
    store: Mutex<Box<dyn HighWaterMark>>,
}

impl TimestampOracle {
    /// An oracle over `clock`, starting above the mark in `store`.
    pub fn open(
        clock: Arc<dyn Clock>,
        options: OracleOptions,
        store: Box<dyn HighWaterMark>,
    ) -> Result<Self, OracleError> {
        let mark = store.load()?.unwrap_or(Timestamp::ZERO);
        if mark > Timestamp::ZERO {
            tracing::info!(%mark, "timestamp oracle resumes above the persisted high-water mark");
        }
        Ok(TimestampOracle {
            clock,
            options,
            floor: AtomicU64::new(mark.as_nanos()),
            durable: AtomicU64::new(mark.as_nanos()),
            store: Mutex::new(store),
        })
    }

    /// The clock this oracle reads.
    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.clock
    }

    /// The policy its waits follow.
    pub fn policy(&self) -> &ClockPolicy {
        &self.options.policy
    }

    /// The highest timestamp handed out (or observed) so far.
    pub fn floor(&self) -> Timestamp {
        Timestamp::from_nanos(self.floor.load(Ordering::Acquire))
    }

    /// The persisted high-water mark.
    pub fn durable_mark(&self) -> Timestamp {
        Timestamp::from_nanos(self.durable.load(Ordering::Acquire))
    }

    /// A commit timestamp: `max(latest, at_least, floor + 1)`, strictly above everything handed
    /// out before. Waits for a usable reading (async).
    pub async fn issue(&self, at_least: Timestamp) -> Result<Issued, OracleError> {
        let reading = wait::usable_reading(&*self.clock, &self.options.policy).await?;
        self.issue_from(reading, at_least)
    }

    /// [`TimestampOracle::issue`] for threads that may block.
    pub fn issue_blocking(&self, at_least: Timestamp) -> Result<Issued, OracleError> {
        let reading = wait::usable_reading_blocking(&*self.clock, &self.options.policy)?;
        self.issue_from(reading, at_least)
    }

    /// A read timestamp: `max(latest, floor)`; every later commit timestamp will exceed it.
    pub async fn read_timestamp(&self) -> Result<Issued, OracleError> {
        let reading = wait::usable_reading(&*self.clock, &self.options.policy).await?;
        self.read_from(reading)
    }

    /// [`TimestampOracle::read_timestamp`] for threads that may block.
    pub fn read_timestamp_blocking(&self) -> Result<Issued, OracleError> {
        let reading = wait::usable_reading_blocking(&*self.clock, &self.options.policy)?;
        self.read_from(reading)
    }

    /// Raises the floor to `ts`: a timestamp seen elsewhere (in a replicated log, from another
    /// node) that later timestamps must exceed. `reading` is a usable reading taken by the caller;
    /// `ts` may not lie further beyond its `latest` than a commit may wait.
    pub fn observe(&self, ts: Timestamp, reading: ClockReading) -> Result<(), OracleError> {
        self.check_reading(&reading)?;
        let limit = self.limit(&reading);
        if ts > limit {
            return Err(self.too_far(ts, &reading));
        }
        let floor = self.raise_floor(|f| Some(f.max(ts.as_nanos()))).expect("never refused");
        self.ensure_durable(floor)
    }

    /// Persists the exact floor as the mark, for a clean shutdown: the next process resumes right
    /// above the last timestamp handed out instead of up to `persist_ahead` beyond it, so its
    /// first commit does not wait out the look-ahead. Call it only once nothing more will be
    /// issued.
    pub fn persist_floor(&self) -> Result<(), OracleError> {
        let store = self.store.lock().unwrap_or_else(|e| e.into_inner());
        let floor = self.floor.load(Ordering::Acquire);
        if floor == self.durable.load(Ordering::Acquire) {
            return Ok(());
        }
        store.store(Timestamp::from_nanos(floor))?;
        self.durable.store(floor, Ordering::Release);
        Ok(())
    }

    /// Commit wait on this oracle's clock and policy (async).
    pub async fn commit_wait(&self, ts: Timestamp) -> Result<CommitWait, WaitError> {
        wait::wait_until_after(&*self.clock, ts, &self.options.policy).await
    }

    /// Commit wait for threads that may block.
    pub fn commit_wait_blocking(&self, ts: Timestamp) -> Result<CommitWait, WaitError> {
        wait::wait_until_after_blocking(&*self.clock, ts, &self.options.policy)
    }

    /// [`TimestampOracle::issue`] from a reading the caller already holds (it must be usable:
    /// obtain it with [`wait::usable_reading`]). Never waits on the clock, so it can run inside a
    /// caller's critical section, which is how the transaction layer registers a commit as
    /// pending atomically with choosing its timestamp. It may block briefly to persist the mark.
    pub fn issue_with(
        &self,
        reading: ClockReading,
        at_least: Timestamp,
    ) -> Result<Issued, OracleError> {
        self.issue_from(reading, at_least)
    }

    /// [`TimestampOracle::read_timestamp`] from a usable reading the caller already holds.
    pub fn read_with(&self, reading: ClockReading) -> Result<Issued, OracleError> {
        self.read_from(reading)
    }

    fn issue_from(
        &self,
        reading: ClockReading,
        at_least: Timestamp,
    ) -> Result<Issued, OracleError> {
        self.check_reading(&reading)?;
        let limit = self.limit(&reading).as_nanos();
        let candidate = reading.latest().max(at_least).as_nanos();
        // floor + 1, checked: a floor at the end of the timescale must refuse, never repeat.
        let ts = self
            .raise_floor(|f| {
                f.checked_add(1).map(|next| next.max(candidate)).filter(|ts| *ts <= limit)
            })
            .ok_or_else(|| {
                let needed = self.floor().next().max(Timestamp::from_nanos(candidate));
                self.too_far(needed, &reading)
            })?;
        self.ensure_durable(ts)?;
        Ok(Issued { ts: Timestamp::from_nanos(ts), reading })
    }

    fn read_from(&self, reading: ClockReading) -> Result<Issued, OracleError> {
        self.check_reading(&reading)?;
        let latest = reading.latest().as_nanos();
        let ts = self.raise_floor(|f| Some(latest.max(f))).expect("never refused");
        self.ensure_durable(ts)?;
        Ok(Issued { ts: Timestamp::from_nanos(ts), reading })
    }

    /// Readings handed in by callers must be usable by this oracle's policy too.
    fn check_reading(&self, reading: &ClockReading) -> Result<(), OracleError> {
        self.options.policy.check(Ok(*reading)).map(|_| ()).map_err(|reason| {
            OracleError::Clock(WaitError::ClockUnavailable { waited: Duration::ZERO, reason })
        })
    }

    /// The highest timestamp that may be issued against `reading`.
    fn limit(&self, reading: &ClockReading) -> Timestamp {
        reading.latest().saturating_add(self.options.policy.max_commit_wait)
    }

    fn too_far(&self, ts: Timestamp, reading: &ClockReading) -> OracleError {
        OracleError::TooFarAhead {
            ts,
            latest: reading.latest(),
            max_ahead: self.options.policy.max_commit_wait,
        }
    }

    /// Atomically replaces the floor with `f(floor)` (never lowering it) and returns the new
    /// value, or `None` (leaving the floor alone) when `f` refuses.
    fn raise_floor(&self, f: impl Fn(u64) -> Option<u64>) -> Option<u64> {
        let mut current = self.floor.load(Ordering::Acquire);
        loop {
            let new = f(current)?.max(current);
            match self.floor.compare_exchange_weak(
                current,
                new,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return Some(new),
                Err(seen) => current = seen,
            }
        }
    }

    /// Makes sure the durable mark covers `ts` before `ts` is returned to anyone.
    fn ensure_durable(&self, ts: u64) -> Result<(), OracleError> {
        if ts <= self.durable.load(Ordering::Acquire) {
            return Ok(());
        }
        let store = self.store.lock().unwrap_or_else(|e| e.into_inner());
        if ts <= self.durable.load(Ordering::Acquire) {
            return Ok(()); // another thread persisted a mark that covers us while we waited
        }
        // Cover everything handed out so far, plus the look-ahead.
        let covered = self.floor.load(Ordering::Acquire).max(ts);
        let mark = Timestamp::from_nanos(covered).saturating_add(self.options.persist_ahead);
        store.store(mark)?;
        self.durable.store(mark.as_nanos(), Ordering::Release);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::Unusable;
    use crate::sim::SimClock;
    use crate::time::{ClockReading, ClockStatus};

    const SEC: u64 = 1_000_000_000;

    fn oracle(clock: &SimClock, store: Arc<MemoryHighWaterMark>) -> TimestampOracle {
        TimestampOracle::open(Arc::new(clock.clone()), OracleOptions::default(), Box::new(store))
            .unwrap()
    }

    #[test]
    fn issues_at_latest_and_strictly_increasing() {
        let c = SimClock::manual(Timestamp::from_nanos(100 * SEC));
        c.set_bound(Duration::from_millis(1));
        let o = oracle(&c, Arc::default());
        let a = o.issue_blocking(Timestamp::ZERO).unwrap().ts;
        assert_eq!(a, Timestamp::from_nanos(100 * SEC + 1_000_000));
        // Same reading again: floor + 1.
        let b = o.issue_blocking(Timestamp::ZERO).unwrap().ts;
        assert_eq!(b, a.next());
        // at_least wins when it is higher.
        let c3 = o.issue_blocking(Timestamp::from_nanos(105 * SEC)).unwrap().ts;
        assert_eq!(c3, Timestamp::from_nanos(105 * SEC));
    }

    #[test]
    fn reads_raise_the_floor_so_later_writes_land_above_them() {
        let c = SimClock::manual(Timestamp::from_nanos(100 * SEC));
        c.set_bound(Duration::from_millis(1));
        let o = oracle(&c, Arc::default());
        let r = o.read_timestamp_blocking().unwrap().ts;
        assert_eq!(r, Timestamp::from_nanos(100 * SEC + 1_000_000));
        assert_eq!(o.read_timestamp_blocking().unwrap().ts, r, "reads may share a timestamp");
        c.step_nanos(-5 * SEC as i64);
        assert!(o.issue_blocking(Timestamp::ZERO).unwrap().ts > r);
    }

    #[test]
    fn a_leap_second_step_back_never_yields_a_lower_timestamp_and_commit_wait_absorbs_it() {
        let c = SimClock::manual(Timestamp::from_nanos(1_000 * SEC));
        c.set_bound(Duration::from_millis(1)).set_auto_advance(true);
        let o = oracle(&c, Arc::default());
        let first = o.issue_blocking(Timestamp::ZERO).unwrap().ts;
        o.commit_wait_blocking(first).unwrap();
        // The kernel inserts a leap second: CLOCK_REALTIME steps back by one second.
        c.step_nanos(-(SEC as i64));
        let second = o.issue_blocking(Timestamp::ZERO).unwrap();
        assert!(second.ts > first, "{:?} must exceed {:?}", second.ts, first);
        assert!(second.reading.latest() < first, "the clock itself did go backwards");
        let before = c.true_now();
        let w = o.commit_wait_blocking(second.ts).unwrap();
        assert!(w.reading.after(second.ts));
        // The wait lasted about the step: the stepped clock had to catch up with the floor.
        let waited = c.true_now().saturating_duration_since(before);
        assert!(waited >= Duration::from_millis(990), "{waited:?}");
        assert!(waited <= Duration::from_millis(1003), "{waited:?}");
    }

    #[test]
    fn a_restart_with_the_clock_stepped_back_resumes_above_the_mark() {
        let c = SimClock::manual(Timestamp::from_nanos(1_000 * SEC));
        c.set_bound(Duration::from_micros(100)).set_auto_advance(true);
        let store = Arc::new(MemoryHighWaterMark::default());
        let mut last = Timestamp::ZERO;
        {
            let o = oracle(&c, store.clone());
            for _ in 0..1000 {
                last = o.issue_blocking(Timestamp::ZERO).unwrap().ts;
                c.advance(Duration::from_millis(1));
            }
            assert!(o.durable_mark() >= last);
        }
        // Fewer fsyncs than timestamps: one per persist_ahead (250 ms) of clock time, over 1 s.
        assert!(store.stores() <= 6, "{} stores", store.stores());

        // Restart with the clock stepped back 2 s: timestamps resume above the mark, and the
        // commit wait of the first one waits, on the clock, until it has surely passed.
        c.step_nanos(-2 * SEC as i64);
        let o = oracle(&c, store.clone());
        let next = o.issue_blocking(Timestamp::ZERO).unwrap();
        assert!(next.ts > last, "{:?} <= {:?} after restart", next.ts, last);
        assert!(next.reading.latest() < last, "the clock really is behind the mark");
        let before = c.true_now();
        let w = o.commit_wait_blocking(next.ts).unwrap();
        assert!(w.reading.after(next.ts) && w.reading.after(last));
        let waited = c.true_now().saturating_duration_since(before);
        assert!(waited >= Duration::from_secs(2), "{waited:?}");

        // Restart with the clock 20 s behind: issuing would mean a 20 s commit wait, more than the
        // policy's 10 s, so the oracle refuses, and the floor does not move.
        drop(o);
        c.step_nanos(-20 * SEC as i64);
        let o = oracle(&c, store.clone());
        let floor = o.floor();
        assert!(matches!(o.issue_blocking(Timestamp::ZERO), Err(OracleError::TooFarAhead { .. })));
        assert_eq!(o.floor(), floor);
        // Reads are fine: they need no commit wait.
        assert!(o.read_timestamp_blocking().unwrap().ts >= floor);
    }

    #[test]
    fn timestamps_far_beyond_the_clock_are_refused_not_saturated() {
        let c = SimClock::manual(Timestamp::from_nanos(100 * SEC));
        let o = oracle(&c, Arc::default());
        let r = c.now().unwrap();
        for bad in [Timestamp::MAX, Timestamp::from_nanos(200 * SEC)] {
            assert!(matches!(o.issue_blocking(bad), Err(OracleError::TooFarAhead { .. })));
            assert!(matches!(o.observe(bad, r), Err(OracleError::TooFarAhead { .. })));
        }
        // Within the limit both work, and what is issued stays strictly increasing.
        let near = Timestamp::from_nanos(105 * SEC);
        o.observe(near, r).unwrap();
        let a = o.issue_blocking(Timestamp::ZERO).unwrap().ts;
        let b = o.issue_blocking(Timestamp::ZERO).unwrap().ts;
        assert!(near < a && a < b);
        // An unusable reading handed in by a caller is refused too.
        let unknown = ClockReading { status: ClockStatus::Unknown, ..r };
        assert!(matches!(o.issue_with(unknown, Timestamp::ZERO), Err(OracleError::Clock(_))));
    }

    #[test]
    fn the_file_mark_survives_a_restart_and_rejects_garbage() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hwm");
        let c = SimClock::manual(Timestamp::from_nanos(50 * SEC));
        let open = || {
            TimestampOracle::open(
                Arc::new(c.clone()),
                OracleOptions::default(),
                Box::new(FileHighWaterMark::new(&path)),
            )
        };
        let first = open().unwrap().issue_blocking(Timestamp::ZERO).unwrap().ts;
        c.step_nanos(-(SEC as i64));
        let second = open().unwrap().issue_blocking(Timestamp::ZERO).unwrap().ts;
        assert!(second > first);
        assert!(FileHighWaterMark::new(&path).load().unwrap().unwrap() >= second);

        std::fs::write(&path, "not a mark\n").unwrap();
        assert!(matches!(open(), Err(OracleError::HighWaterMark(_))));
    }

    #[test]
    fn unusable_clocks_fail_with_clock_unavailable_after_the_deadline() {
        let c = SimClock::manual(Timestamp::from_nanos(100 * SEC));
        c.set_auto_advance(true).set_status(ClockStatus::Unknown);
        let policy = ClockPolicy {
            unavailable_timeout: Duration::from_millis(300),
            max_bound: Duration::from_millis(10),
            ..ClockPolicy::default()
        };
        let o = TimestampOracle::open(
            Arc::new(c.clone()),
            OracleOptions { policy, ..OracleOptions::default() },
            Box::new(MemoryHighWaterMark::default()),
        )
        .unwrap();
        let start = c.true_now();
        let e = o.issue_blocking(Timestamp::ZERO).unwrap_err();
        assert!(!e.is_fatal());
        assert!(matches!(
            e,
            OracleError::Clock(WaitError::ClockUnavailable {
                reason: Unusable::Status(ClockStatus::Unknown),
                ..
            })
        ));
        assert_eq!(c.true_now().saturating_duration_since(start), Duration::from_millis(300));

        // The ceiling: a usable status with a bound over the ceiling is refused too.
        c.set_status(ClockStatus::Synchronized).set_bound(Duration::from_millis(11));
        assert!(matches!(
            o.issue_blocking(Timestamp::ZERO),
            Err(OracleError::Clock(WaitError::ClockUnavailable {
                reason: Unusable::BoundTooLarge { .. },
                ..
            }))
        ));
        // And it resumes as soon as the clock is usable again.
        c.set_bound(Duration::from_millis(10));
        assert!(o.issue_blocking(Timestamp::ZERO).is_ok());
        c.set_status(ClockStatus::Disrupted);
        assert!(o.read_timestamp_blocking().is_err());
        c.set_status(ClockStatus::FreeRunning);
        assert!(o.read_timestamp_blocking().is_ok());
    }

    #[test]
    fn a_failing_store_is_fatal() {
        struct Broken;
        impl HighWaterMark for Broken {
            fn load(&self) -> Result<Option<Timestamp>, HighWaterMarkError> {
                Ok(None)
            }
            fn store(&self, _: Timestamp) -> Result<(), HighWaterMarkError> {
                Err(HighWaterMarkError("disk full".into()))
            }
        }
        let c = SimClock::manual(Timestamp::from_nanos(100 * SEC));
        let o =
            TimestampOracle::open(Arc::new(c), OracleOptions::default(), Box::new(Broken)).unwrap();
        let e = o.issue_blocking(Timestamp::ZERO).unwrap_err();
        assert!(e.is_fatal(), "{e}");
    }

    /// A store that blocks until released: while the mark is not durable, no timestamp above the
    /// old mark may be handed out, to this caller or any other.
    #[test]
    fn no_timestamp_is_handed_out_before_its_mark_is_durable() {
        use std::sync::mpsc;
        struct Gated {
            inner: MemoryHighWaterMark,
            gate: Mutex<mpsc::Receiver<()>>,
        }
        impl HighWaterMark for Gated {
            fn load(&self) -> Result<Option<Timestamp>, HighWaterMarkError> {
                self.inner.load()
            }
            fn store(&self, mark: Timestamp) -> Result<(), HighWaterMarkError> {
                self.gate.lock().unwrap().recv().unwrap();
                self.inner.store(mark)
            }
        }
        let (release, gate) = mpsc::channel();
        let c = SimClock::manual(Timestamp::from_nanos(100 * SEC));
        let o = Arc::new(
            TimestampOracle::open(
                Arc::new(c.clone()),
                OracleOptions::default(),
                Box::new(Gated { inner: MemoryHighWaterMark::default(), gate: Mutex::new(gate) }),
            )
            .unwrap(),
        );
        let (done_tx, done) = mpsc::channel();
        let issuers: Vec<_> = (0..2)
            .map(|_| {
                let (o, done_tx) = (o.clone(), done_tx.clone());
                std::thread::spawn(move || {
                    done_tx.send(o.issue_blocking(Timestamp::ZERO).unwrap().ts).unwrap()
                })
            })
            .collect();
        assert!(
            done.recv_timeout(Duration::from_millis(200)).is_err(),
            "a timestamp came back while its mark was still being persisted"
        );
        release.send(()).unwrap();
        let a = done.recv_timeout(Duration::from_secs(10)).unwrap();
        let b = done.recv_timeout(Duration::from_secs(10)).unwrap();
        issuers.into_iter().for_each(|t| t.join().unwrap());
        assert_ne!(a, b);
        assert!(o.durable_mark() >= a.max(b));
    }

    #[test]
    fn concurrent_issuers_get_unique_increasing_durable_timestamps() {
        let c = SimClock::real_time();
        c.set_bound(Duration::from_micros(50));
        let store = Arc::new(MemoryHighWaterMark::default());
        let o = Arc::new(oracle(&c, store.clone()));
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let o = o.clone();
                std::thread::spawn(move || {
                    let mut mine = Vec::with_capacity(5000);
                    for _ in 0..5000 {
                        let ts = o.issue_blocking(Timestamp::ZERO).unwrap().ts;
                        assert!(ts <= o.durable_mark(), "returned before it was durable");
                        mine.push(ts);
                    }
                    mine
                })
            })
            .collect();
        let mut all = Vec::new();
        for t in threads {
            let mine = t.join().unwrap();
            assert!(mine.windows(2).all(|w| w[0] < w[1]), "per-thread order");
            all.extend(mine);
        }
        let n = all.len();
        all.sort();
        all.dedup();
        assert_eq!(all.len(), n, "no timestamp was handed out twice");
        assert!(store.load().unwrap().unwrap() >= *all.last().unwrap());
    }
}
