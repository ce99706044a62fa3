//! Reads at any replica: read timestamps (the active leader's own safe time, or a closed
//! timestamp elsewhere), waits until a timestamp is safe here, and the reads themselves.

use std::ops::Bound;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use tokio::time::Instant;

use boundkv_clockbound::{Timestamp, wait};
use boundkv_storage::Engine;

use crate::error::{Error, Result};

use super::Replica;
use super::gate::Leadership;

/// Which snapshot a read-only transaction reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReadAt {
    /// `now().latest`: sees every transaction acknowledged before the request.
    Latest,
    /// Exactly this timestamp (time travel).
    Exact(Timestamp),
    /// Any snapshot at most this old; the freshest that needs no waiting, if there is one.
    MaxStaleness(Duration),
}

impl<E: Engine> Replica<E> {
    /// The highest timestamp a read may use here right now: the closed timestamp, or at an
    /// active leader with a valid lease its own safe time (never beyond the lease, since a
    /// later leader's commits land above it).
    pub fn safe_time(&self) -> Timestamp {
        let closed = self.shared.closed();
        let reading = self.usable_now();
        match (self.gate.leadership(reading.as_ref()), reading) {
            (Leadership::Active { lease_until: Some(until), .. }, Some(r))
                if r.latest() < until =>
            {
                closed.max(self.txn.safe_time().min(Timestamp::from_nanos(until.as_nanos() - 1)))
            }
            _ => closed,
        }
    }

    /// A read timestamp for a read-write transaction (leader only), waited for: reads at it are
    /// exact here and see every transaction acknowledged before the call.
    pub async fn begin_read_write(&self) -> Result<Timestamp> {
        self.ensure_active().await?;
        let ts = self.txn.read_ts_now().await?;
        self.txn.wait_safe(ts).await;
        Ok(ts)
    }

    /// A timestamp for a read-only transaction, at any replica, waited for: the active leader
    /// serves it from its own safe time, any other replica once its closed timestamp reaches it
    /// (or answers `FollowerBehind`).
    ///
    /// A timestamp is served only if the clock's reference did not change while it waited
    /// ([`boundkv_clockbound::Clock::epoch`]): under the cluster clock, a timestamp chosen from
    /// an interval of one leader's reference means nothing against a later leader's closed
    /// timestamps (it may lie below commits that leader acknowledged before the read began).
    /// Such a read starts again, on the new reference; a few changes in a row give up as
    /// `Unavailable`.
    pub async fn begin_read_only(&self, at: ReadAt) -> Result<Timestamp> {
        const ATTEMPTS: usize = 3;
        for _ in 0..ATTEMPTS {
            let epoch = self.clock.epoch();
            if let Some(ts) = self.begin_read_only_in(at, epoch).await? {
                return Ok(ts);
            }
            tracing::debug!(
                node = self.id,
                epoch,
                "the clock's reference changed during a read; reading again"
            );
        }
        Err(Error::Unavailable(format!(
            "the clock's reference changed {ATTEMPTS} times while a read waited (leader changes); retry"
        )))
    }

    /// [`Replica::begin_read_only`] on the clock's reference `epoch`: `None` if it changed.
    async fn begin_read_only_in(&self, at: ReadAt, epoch: u64) -> Result<Option<Timestamp>> {
        self.txn_failed()?;
        self.check_clock_fence()?;
        let active = match self.ensure_active().await {
            // No usable reading within the policy's timeout: a new timestamp needs one here too.
            Err(e @ Error::Clock(_)) => return Err(e),
            active => active.is_ok(),
        };
        if active {
            let leader_ts = match at {
                ReadAt::Latest => self.txn.read_ts_now().await,
                ReadAt::Exact(ts) => self.txn.exact_ts(ts).await,
                ReadAt::MaxStaleness(d) => match self.usable_now() {
                    // The freshest timestamp that needs no waiting, within the lease.
                    Some(r) if self.safe_time() >= r.latest().saturating_sub(d) => {
                        Ok(self.safe_time())
                    }
                    Some(r) => self.txn.exact_ts(r.latest().saturating_sub(d)).await,
                    None => self.txn.stale_ts(d).await,
                },
            };
            match leader_ts {
                Ok(ts) => {
                    self.check_horizon(ts)?;
                    self.txn.wait_safe(ts).await;
                    if self.clock.epoch() != epoch {
                        return Ok(None);
                    }
                    self.served_read(at, ts);
                    return Ok(Some(ts));
                }
                Err(e @ (Error::NotLeader { .. } | Error::Unavailable(_))) => {
                    // Leadership moved (or is moving): read as a follower.
                    tracing::debug!(node = self.id, error = %e, "leader read falls back to the closed timestamp");
                }
                Err(e) => return Err(e),
            }
        }
        let reading = wait::usable_reading(&*self.clock, &self.options.policy).await?;
        let ts = match at {
            // Never below a timestamp this node already served or issued: a clock that stepped
            // back (inside what the step guard lets through, or across a restart) must not move
            // this node's reads back in time.
            ReadAt::Latest if self.options.unsafe_no_read_floor => reading.latest(),
            ReadAt::Latest => reading.latest().max(self.latest_read_floor()),
            ReadAt::Exact(ts) => {
                if ts > reading.latest() {
                    return Err(Error::TimestampInFuture { ts, latest: reading.latest() });
                }
                ts
            }
            ReadAt::MaxStaleness(d) => {
                let oldest = reading.latest().saturating_sub(d);
                self.shared.closed().max(oldest)
            }
        };
        self.check_horizon(ts)?;
        self.wait_until_safe(ts).await?;
        if self.clock.epoch() != epoch {
            return Ok(None);
        }
        self.served_read(at, ts);
        Ok(Some(ts))
    }

    /// Records a `ReadAt::Latest` read's timestamp in the floor later ones keep above.
    fn served_read(&self, at: ReadAt, ts: Timestamp) {
        if at == ReadAt::Latest {
            self.latest_read_floor.fetch_max(ts.as_nanos(), Ordering::AcqRel);
        }
    }

    /// The lowest timestamp a `ReadAt::Latest` read may take here: above every one this node
    /// served and every timestamp its oracle issued (the oracle's floor, which a restart reloads
    /// from the persisted high-water mark).
    fn latest_read_floor(&self) -> Timestamp {
        let served = Timestamp::from_nanos(self.latest_read_floor.load(Ordering::Acquire));
        served.max(self.txn.oracle().floor())
    }

    fn txn_failed(&self) -> Result<()> {
        if let Some(e) = self.state.borrow().failed.as_ref() {
            return Err(Error::Fatal(format!("the Raft node stopped: {e}")));
        }
        Ok(())
    }

    fn check_horizon(&self, ts: Timestamp) -> Result<()> {
        let horizon = self.gc_horizon();
        if ts < horizon {
            return Err(Error::BelowGcHorizon { ts, horizon });
        }
        Ok(())
    }

    /// Waits until reads at `ts` are exact here, at most `follower_wait`; meanwhile a follower
    /// asks the leader to close `ts` (see the `closed` module).
    async fn wait_until_safe(&self, ts: Timestamp) -> Result<()> {
        if self.safe_time() >= ts {
            return Ok(());
        }
        let deadline = Instant::now() + self.options.follower_wait;
        let mut closed = self.shared.watch_closed();
        loop {
            if self.safe_time() >= ts {
                return Ok(());
            }
            self.request_close(ts);
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(Error::FollowerBehind {
                    requested: ts,
                    safe_time: self.safe_time(),
                    leader: self.leader(),
                });
            }
            // The closed timestamp moves by watch; a leader's own safe time moves as its commits
            // finish, which a short poll follows.
            let step = left.min(Duration::from_millis(2));
            let _ = tokio::time::timeout(step, closed.changed()).await;
        }
    }

    /// The value of `key` at `ts`, which must be safe here (it is, for a timestamp this replica
    /// handed out; otherwise the call waits up to `follower_wait`).
    pub async fn get(&self, ts: Timestamp, key: &[u8]) -> Result<Option<Bytes>> {
        self.txn.limits().check_key(key)?;
        self.txn_failed()?;
        self.wait_until_safe(ts).await?;
        let value = self.mvcc.get(key, ts.as_nanos())?.map(Bytes::from);
        // Collection only starts once the horizon has risen: if it is still at or below `ts`,
        // nothing this read could see was deleted while it ran.
        self.check_horizon(ts)?;
        Ok(value)
    }

    /// The live pairs in `range` at `ts` (safe as for [`Replica::get`]), at most `limit`.
    pub async fn scan(
        &self,
        ts: Timestamp,
        range: (Bound<Bytes>, Bound<Bytes>),
        limit: Option<usize>,
    ) -> Result<Vec<(Bytes, Bytes)>> {
        self.txn_failed()?;
        self.wait_until_safe(ts).await?;
        if !crate::conflicts::valid(&range) {
            return Ok(Vec::new());
        }
        let conv = |b: &Bound<Bytes>| match b {
            Bound::Included(k) => Bound::Included(k.to_vec()),
            Bound::Excluded(k) => Bound::Excluded(k.to_vec()),
            Bound::Unbounded => Bound::Unbounded,
        };
        let rows = self
            .mvcc
            .scan((conv(&range.0), conv(&range.1)), ts.as_nanos())?
            .take(limit.unwrap_or(usize::MAX))
            .map(|r| r.map(|(k, v)| (Bytes::from(k), Bytes::from(v))).map_err(Error::from))
            .collect::<Result<Vec<_>>>()?;
        self.check_horizon(ts)?; // as in `get`
        Ok(rows)
    }
}
