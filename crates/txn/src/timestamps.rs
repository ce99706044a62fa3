//! Timestamps and safe time: the oracle, plus the set of commits that have a timestamp but are not
//! yet visible (*pending*).
//!
//! **Safe time** is the highest timestamp a read may use without missing a commit: every commit at
//! or below it is finished (durable, past its commit wait, visible), and every future commit will
//! get a higher timestamp. It is `min(pending) - 1` while commits are pending, else the oracle's
//! floor. A read at `ts` therefore waits until no pending commit is at or below `ts`.
//!
//! Choosing a commit timestamp and registering it as pending happen under one lock, and so does
//! choosing a read timestamp. Without that, a read could take a timestamp above a commit whose
//! timestamp was chosen but not yet registered, and miss it.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use tokio::sync::watch;

use boundkv_clockbound::{ClockReading, Timestamp, TimestampOracle, wait};

use crate::error::Result;
use crate::manager::TimestampGate;

/// The oracle and the pending set.
pub(crate) struct Timestamps {
    oracle: Arc<TimestampOracle>,
    pending: Mutex<BTreeMap<Timestamp, usize>>,
    /// The smallest pending timestamp, or `Timestamp::MAX` when none: what readers wait on.
    min_pending: watch::Sender<Timestamp>,
    gate: Option<Arc<dyn TimestampGate>>,
}

/// A commit timestamp registered as pending. Dropping it finishes the commit: its timestamp stops
/// holding readers back. Only drop it once the commit is visible (or abandoned before anything
/// was applied).
pub(crate) struct PendingTs {
    ts: Timestamp,
    timestamps: Arc<Timestamps>,
}

impl PendingTs {
    pub(crate) fn ts(&self) -> Timestamp {
        self.ts
    }
}

impl Drop for PendingTs {
    fn drop(&mut self) {
        self.timestamps.finish(self.ts);
    }
}

impl Timestamps {
    pub(crate) fn new(
        oracle: Arc<TimestampOracle>,
        gate: Option<Arc<dyn TimestampGate>>,
    ) -> Arc<Self> {
        Arc::new(Timestamps {
            oracle,
            pending: Mutex::new(BTreeMap::new()),
            min_pending: watch::Sender::new(Timestamp::MAX),
            gate,
        })
    }

    fn check_gate(&self, ts: Timestamp, reading: &ClockReading) -> Result<()> {
        match &self.gate {
            Some(gate) => gate.check(ts, reading),
            None => Ok(()),
        }
    }

    pub(crate) fn oracle(&self) -> &Arc<TimestampOracle> {
        &self.oracle
    }

    /// Waits for a usable clock reading (the policy's timeout applies).
    pub(crate) async fn usable_reading(&self) -> Result<ClockReading> {
        Ok(wait::usable_reading(&**self.oracle.clock(), self.oracle.policy()).await?)
    }

    /// Chooses a commit timestamp (`max(latest, at_least, floor + 1)`) and registers it pending.
    pub(crate) fn issue(
        self: &Arc<Self>,
        reading: ClockReading,
        at_least: Timestamp,
    ) -> Result<PendingTs> {
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        let ts = self.oracle.issue_with(reading, at_least)?.ts;
        self.check_gate(ts, &reading)?;
        *pending.entry(ts).or_default() += 1;
        let min = *pending.keys().next().expect("just inserted");
        self.min_pending.send_replace(min);
        Ok(PendingTs { ts, timestamps: self.clone() })
    }

    /// Chooses a read timestamp (`max(latest, floor)`); later commits land above it.
    pub(crate) fn read_ts(&self, reading: ClockReading) -> Result<Timestamp> {
        let _pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        let ts = self.oracle.read_with(reading)?.ts;
        self.check_gate(ts, &reading)?;
        Ok(ts)
    }

    /// Raises the floor to `ts`, so later commits land above it (`reading` is a usable reading
    /// that `ts` may not lie far beyond).
    pub(crate) fn observe(&self, ts: Timestamp, reading: ClockReading) -> Result<()> {
        let _pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        self.check_gate(ts, &reading)?;
        Ok(self.oracle.observe(ts, reading)?)
    }

    /// The highest timestamp a read may use right now without waiting.
    pub(crate) fn safe_time(&self) -> Timestamp {
        let pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        match pending.keys().next() {
            Some(min) => Timestamp::from_nanos(min.as_nanos() - 1),
            None => self.oracle.floor(),
        }
    }

    /// Waits until no pending commit is at or below `ts`.
    pub(crate) async fn wait_safe(&self, ts: Timestamp) {
        let mut rx = self.min_pending.subscribe();
        // The sender lives as long as `self`, so this cannot fail.
        let _ = rx.wait_for(|min| *min > ts).await;
    }

    fn finish(&self, ts: Timestamp) {
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = pending.get_mut(&ts) {
            *n -= 1;
            if *n == 0 {
                pending.remove(&ts);
            }
        }
        let min = pending.keys().next().copied().unwrap_or(Timestamp::MAX);
        self.min_pending.send_replace(min);
    }
}
