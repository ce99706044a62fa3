//! [`SimDisk`]: an [`Engine`] that models a disk behind a page cache, so that the simulator can
//! pull the power at any instant and see exactly what a real machine could have kept.
//!
//! # The model
//!
//! A real engine's `write` lands in the operating system's page cache: every reader sees it at
//! once, but it reaches the platter only when the cache is written back, and it is *known* to be
//! there only after `fdatasync` (our [`Engine::flush`]) returns. `SimDisk` keeps the three
//! states apart:
//!
//! - the **visible** map, what `get` and `scan` read: every batch whose `write` returned;
//! - the **durable image**: every batch that a successful `flush` covered;
//! - the **unsynced** list: the batches written since the last successful flush, in order.
//!
//! [`SimDisk::crash`] is a power loss. The machine's next incarnation gets a new `SimDisk` whose
//! state is the durable image plus a *prefix* of the unsynced batches, its length drawn uniformly
//! from `0..=n` with the simulation's rng: the write-back may have got anywhere, but
//!
//! - writes reach the disk **in order** (a later batch is never kept while an earlier one is
//!   lost: sled's log is sequential, and so is every write-ahead log), and
//! - a batch is **never torn** (kept whole or lost whole: sled's batches are atomic).
//!
//! For example, after `write(A)`, `flush()`, `write(B)`, `write(C)`, a crash can recover `A`,
//! `A B` or `A B C`, each with probability 1/3, and never `A C` or half of `B`.
//!
//! The old disk is then *dead*: every later call on it fails with [`Error::Io`], so that a task
//! of the dead incarnation that is still running can neither read a state no machine has nor
//! write into the new one.
//!
//! # Injected faults
//!
//! - [`SimDisk::fail_next_flush`]: the next `flush` fails (a failed `fdatasync`) and nothing it
//!   would have covered becomes durable. The disk is then **poisoned**: as the [`Engine`] docs
//!   require of an engine after a failed flush, every later `write` and `flush` fails too (reads
//!   still work). Only a crash and restart clears it.
//! - [`SimDisk::set_full`]: while full, `write` fails with "no space left on device" and changes
//!   nothing; `flush` still succeeds (it needs no new space) and reads work. Fullness belongs to
//!   the device, so the disk a crash returns is full if the crashed one was.
//!
//! Everything sits behind one mutex: the simulation runs in one thread, but an [`Engine`] must be
//! `Send + Sync`, and the conformance suite calls `flush` from several threads.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::{Arc, Mutex, MutexGuard};

use boundkv_storage::{Engine, Error, Result, ScanIter, Status, WriteBatch};
use rand::Rng;

/// A simulated disk with a page cache. Cheap to clone; clones share one disk.
#[derive(Clone)]
pub struct SimDisk {
    inner: Arc<Mutex<DiskState>>,
}

/// Counters of what a disk has done, for reports and tests.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DiskStats {
    /// Batches written successfully.
    pub writes: u64,
    /// Successful flushes.
    pub flushes: u64,
    /// Writes refused (full, poisoned or crashed).
    pub failed_writes: u64,
    /// Flushes that failed (injected, or on a poisoned or crashed disk).
    pub failed_flushes: u64,
    /// Batches written since the last successful flush: what a crash now may lose.
    pub unsynced_batches: usize,
    /// Keys in the durable image.
    pub durable_keys: usize,
}

/// What happened to the disk, in order of precedence when a call arrives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Condition {
    Healthy,
    /// A flush failed: writes and flushes fail, reads work.
    Poisoned,
    /// The machine lost power: everything fails.
    Crashed,
}

struct DiskState {
    visible: BTreeMap<Vec<u8>, Vec<u8>>,
    durable: BTreeMap<Vec<u8>, Vec<u8>>,
    unsynced: Vec<WriteBatch>,
    condition: Condition,
    fail_next_flush: bool,
    full: bool,
    stats: DiskStats,
}

const CRASHED: &str = "the simulated machine crashed: this disk belongs to a dead incarnation";
const POISONED: &str = "an earlier flush failed (simulated fdatasync error): the disk accepts no \
                        more writes";

fn apply(map: &mut BTreeMap<Vec<u8>, Vec<u8>>, batch: &WriteBatch) {
    for (key, value) in batch.ops() {
        match value {
            Some(v) => map.insert(key.clone(), v.clone()),
            None => map.remove(key),
        };
    }
}

impl SimDisk {
    /// An empty, healthy disk.
    pub fn new() -> Self {
        Self::recovered(BTreeMap::new(), false)
    }

    fn recovered(image: BTreeMap<Vec<u8>, Vec<u8>>, full: bool) -> Self {
        let stats = DiskStats { durable_keys: image.len(), ..DiskStats::default() };
        SimDisk {
            inner: Arc::new(Mutex::new(DiskState {
                visible: image.clone(),
                durable: image,
                unsynced: Vec::new(),
                condition: Condition::Healthy,
                fail_next_flush: false,
                full,
                stats,
            })),
        }
    }

    fn state(&self) -> MutexGuard<'_, DiskState> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Power loss now: this disk dies (every later call on it fails) and the returned disk holds
    /// what survived, the durable image plus a prefix of the unsynced batches whose length is
    /// drawn uniformly from `0..=unsynced` with `rng`.
    ///
    /// # Panics
    /// If this disk has already crashed (its state went to the disk that crash returned).
    pub fn crash(&self, rng: &mut impl Rng) -> SimDisk {
        let unsynced = self.state().unsynced.len();
        self.crash_keeping(rng.random_range(0..=unsynced))
    }

    /// [`SimDisk::crash`] keeping exactly the first `kept` unsynced batches (all of them if there
    /// are fewer), for tests that need one particular outcome.
    ///
    /// # Panics
    /// If this disk has already crashed.
    pub fn crash_keeping(&self, kept: usize) -> SimDisk {
        let mut s = self.state();
        assert!(s.condition != Condition::Crashed, "SimDisk::crash on a disk that already crashed");
        s.condition = Condition::Crashed;
        let mut image = std::mem::take(&mut s.durable);
        for batch in s.unsynced.iter().take(kept) {
            apply(&mut image, batch);
        }
        s.unsynced.clear();
        s.visible.clear();
        Self::recovered(image, s.full)
    }

    /// Makes the next `flush` fail, poisoning the disk (see the module docs).
    pub fn fail_next_flush(&self) {
        self.state().fail_next_flush = true;
    }

    /// Disarms a flush failure not yet hit and frees space (a poisoned disk stays poisoned:
    /// only a crash and restart recovers from a failed sync).
    pub fn repair(&self) {
        let mut s = self.state();
        s.fail_next_flush = false;
        s.full = false;
    }

    /// Fills the disk (`true`: writes fail and change nothing) or frees space again.
    pub fn set_full(&self, full: bool) {
        self.state().full = full;
    }

    /// Whether a flush has failed (and writes are refused until a crash).
    pub fn is_poisoned(&self) -> bool {
        self.state().condition == Condition::Poisoned
    }

    /// Whether this disk's machine has crashed.
    pub fn is_crashed(&self) -> bool {
        self.state().condition == Condition::Crashed
    }

    /// What the disk has done so far.
    pub fn stats(&self) -> DiskStats {
        let s = self.state();
        DiskStats { unsynced_batches: s.unsynced.len(), durable_keys: s.durable.len(), ..s.stats }
    }

    /// Keys in the durable image: what a crash now keeps for certain.
    pub fn durable_len(&self) -> usize {
        self.state().durable.len()
    }
}

impl Default for SimDisk {
    fn default() -> Self {
        Self::new()
    }
}

impl Engine for SimDisk {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        let s = self.state();
        if s.condition == Condition::Crashed {
            return Err(Error::Io(CRASHED.into()));
        }
        Ok(s.visible.get(key).cloned())
    }

    fn scan(&self, range: (Bound<Vec<u8>>, Bound<Vec<u8>>)) -> ScanIter<'_> {
        let s = self.state();
        if s.condition == Condition::Crashed {
            return Box::new(std::iter::once(Err(Error::Io(CRASHED.into()))));
        }
        drop(s);
        // A cursor that takes the lock for each step: no copy of the whole range (MVCC reads a
        // key's newest version with a scan that stops after one item, over thousands of
        // versions), and no lock held between steps.
        Box::new(Cursor { disk: self, front: range.0, back: range.1, done: false })
    }

    fn write(&self, batch: WriteBatch) -> Result<()> {
        let mut s = self.state();
        let refused = match s.condition {
            Condition::Crashed => Some(CRASHED),
            Condition::Poisoned => Some(POISONED),
            Condition::Healthy if s.full => Some("no space left on device (simulated)"),
            Condition::Healthy => None,
        };
        if let Some(why) = refused {
            s.stats.failed_writes += 1;
            return Err(Error::Io(why.into()));
        }
        apply(&mut s.visible, &batch);
        s.unsynced.push(batch);
        s.stats.writes += 1;
        Ok(())
    }

    fn flush(&self) -> Result<()> {
        let mut s = self.state();
        let refused = match s.condition {
            Condition::Crashed => Some(CRASHED),
            Condition::Poisoned => Some(POISONED),
            Condition::Healthy if s.fail_next_flush => {
                s.fail_next_flush = false;
                s.condition = Condition::Poisoned;
                Some("fdatasync failed (simulated)")
            }
            Condition::Healthy => None,
        };
        if let Some(why) = refused {
            s.stats.failed_flushes += 1;
            return Err(Error::Io(why.into()));
        }
        let DiskState { durable, unsynced, .. } = &mut *s;
        for batch in unsynced.drain(..) {
            apply(durable, &batch);
        }
        s.stats.flushes += 1;
        Ok(())
    }

    fn status(&self) -> Result<Status> {
        let s = self.state();
        if s.condition == Condition::Crashed {
            return Err(Error::Io(CRASHED.into()));
        }
        let size_on_disk = s.durable.iter().map(|(k, v)| (k.len() + v.len()) as u64).sum();
        Ok(Status {
            name: "simdisk".into(),
            size_on_disk,
            durability: "simulated: flush makes writes durable; a crash keeps a prefix of the \
                         unflushed batches"
                .into(),
        })
    }
}

/// A lazy scan of a [`SimDisk`] (see `scan`): each step finds the next pair strictly inside the
/// bounds still left, then narrows them past it.
struct Cursor<'a> {
    disk: &'a SimDisk,
    front: Bound<Vec<u8>>,
    back: Bound<Vec<u8>>,
    done: bool,
}

impl Cursor<'_> {
    fn step(&mut self, forward: bool) -> Option<Result<(Vec<u8>, Vec<u8>)>> {
        if self.done {
            return None;
        }
        let s = self.disk.state();
        if s.condition == Condition::Crashed {
            self.done = true;
            return Some(Err(Error::Io(CRASHED.into())));
        }
        if let (Bound::Included(a) | Bound::Excluded(a), Bound::Included(b) | Bound::Excluded(b)) =
            (&self.front, &self.back)
            && (a > b
                || (a == b
                    && !matches!(
                        (&self.front, &self.back),
                        (Bound::Included(_), Bound::Included(_))
                    )))
        {
            self.done = true;
            return None;
        }
        let mut range = s.visible.range((self.front.clone(), self.back.clone()));
        let item = if forward { range.next() } else { range.next_back() };
        match item {
            Some((k, v)) => {
                let (k, v) = (k.clone(), v.clone());
                if forward {
                    self.front = Bound::Excluded(k.clone());
                } else {
                    self.back = Bound::Excluded(k.clone());
                }
                Some(Ok((k, v)))
            }
            None => {
                self.done = true;
                None
            }
        }
    }
}

impl Iterator for Cursor<'_> {
    type Item = Result<(Vec<u8>, Vec<u8>)>;

    fn next(&mut self) -> Option<Self::Item> {
        self.step(true)
    }
}

impl DoubleEndedIterator for Cursor<'_> {
    fn next_back(&mut self) -> Option<Self::Item> {
        self.step(false)
    }
}
