//! [`Replica::commit`]: a decided transaction, committed at most once per transaction id (a
//! resend joins the commit in flight, or is answered from the transaction record).

use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use futures::future::{BoxFuture, Shared};
use tokio::time::Instant;

use boundkv_clockbound::Timestamp;
use boundkv_storage::Engine;

use crate::error::{Error, Result};
use crate::record::TxnId;
use crate::txn::{CommitInfo, CommitRequest};

use super::{Replica, humantime_short, machine};

pub(super) type SharedCommit = Shared<BoxFuture<'static, Result<CommitInfo>>>;

/// An earlier attempt of a commit.
enum Found {
    /// In flight: join it.
    Running(SharedCommit),
    /// Applied at this timestamp (nanoseconds).
    Applied(u64),
}

impl<E: Engine> Replica<E> {
    /// Commits a decided transaction (leader only; see the `replica` module's docs). Safe to call
    /// again with the same transaction id: a commit in flight is joined, an applied one answered.
    pub async fn commit(self: &Arc<Self>, req: CommitRequest) -> Result<CommitInfo> {
        let start = Instant::now();
        let id = req.txn_id;
        // A resend joins or answers its first attempt before anything else: in particular before
        // waiting for the clock, whose `ClockUnavailable` says "nothing was applied", which is
        // not for this call to say about an attempt that may have been proposed.
        // An active leader with a usable clock (the common case) needs no wait, so it looks the
        // transaction up once; otherwise it looks before waiting and again after.
        let found = if self.lease_valid() {
            self.find_or_start_commit(req)?
        } else {
            match self.find_commit(id)? {
                Some(found) => found,
                None => {
                    self.ensure_active().await?;
                    self.find_or_start_commit(req)?
                }
            }
        };
        let commit = match found {
            Found::Running(commit) => commit,
            Found::Applied(ts) => {
                let ts = Timestamp::from_nanos(ts);
                // Under the cluster clock, commit wait on this node's reading proves `ts` passed
                // on the reference of this node's term, not on that of the term that issued `ts`,
                // whose leader may still serve reads inside its lease. So a resend is answered
                // only by an active leader: the one that issued `ts` (its own reference), or a
                // later one past `ready_at` (every earlier lease has ended). A follower
                // redirects. (`docs/architecture/time.md`, "Why external consistency holds".)
                if self.options.cluster_clock.is_some() && !self.lease_valid() {
                    match self.ensure_active().await {
                        Ok(()) => {}
                        Err(e @ Error::NotLeader { .. }) => return Err(e),
                        Err(e) => {
                            return Err(Error::OutcomeUnknown(format!(
                                "applied at {ts}, but this node cannot answer for it yet ({e}); \
                                 resend with the same transaction id"
                            )));
                        }
                    }
                }
                return self.answer_applied(ts, start).await;
            }
        };
        match tokio::time::timeout(self.options.commit_timeout, commit).await {
            Ok(result) => result,
            Err(_) => Err(Error::OutcomeUnknown(format!(
                "no outcome within {}; resend with the same transaction id",
                humantime_short(self.options.commit_timeout)
            ))),
        }
    }

    /// The first attempt of transaction `id`, if there was one: in flight, or applied.
    fn find_commit(&self, id: TxnId) -> Result<Option<Found>> {
        let in_flight = self.in_flight.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(running) = in_flight.get(&id) {
            return Ok(Some(Found::Running(running.clone())));
        }
        Ok(machine::recorded_commit_ts(&self.mvcc, &id.0, self.gc_horizon())?.map(Found::Applied))
    }

    /// As [`Replica::find_commit`], else starts the commit, under one lock: two attempts of
    /// one transaction never both start it.
    fn find_or_start_commit(self: &Arc<Self>, req: CommitRequest) -> Result<Found> {
        let id = req.txn_id;
        let mut in_flight = self.in_flight.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(running) = in_flight.get(&id) {
            return Ok(Found::Running(running.clone()));
        }
        if let Some(ts) = machine::recorded_commit_ts(&self.mvcc, &id.0, self.gc_horizon())? {
            return Ok(Found::Applied(ts));
        }
        let this = self.clone();
        // The commit runs to its end in a task of its own even if this caller gives up: its
        // timestamp must stay pending until its record is applied or surely dropped. The task
        // removes itself from the map under the same lock, so not before it was inserted.
        let task = tokio::spawn(async move {
            let result = this.txn.commit_request(req).await;
            this.in_flight.lock().unwrap_or_else(|e| e.into_inner()).remove(&id);
            result
        });
        let shared: SharedCommit = async move {
            task.await.unwrap_or_else(|e| Err(Error::Fatal(format!("commit task: {e}"))))
        }
        .boxed()
        .shared();
        in_flight.insert(id, shared.clone());
        Ok(Found::Running(shared))
    }

    /// Answers a commit whose transaction was already applied at `ts`, once `ts` has surely
    /// passed.
    ///
    /// The transaction applied, so the answer can only be `Committed` or, while the clock is
    /// unusable, `OutcomeUnknown` after `commit_timeout` (resend later): never the definite
    /// `ClockUnavailable`, which would tell the client nothing was applied.
    async fn answer_applied(&self, ts: Timestamp, start: Instant) -> Result<CommitInfo> {
        let wait = self.txn.commit_wait_until_done(ts);
        let waited = match tokio::time::timeout(self.options.commit_timeout, wait).await {
            Ok(w) => w.waited,
            Err(_) => {
                return Err(Error::OutcomeUnknown(format!(
                    "applied at {ts}, but the clock has not shown that {ts} has passed within {}; \
                     resend with the same transaction id",
                    humantime_short(self.options.commit_timeout)
                )));
            }
        };
        Ok(CommitInfo {
            ts,
            commit_wait: Duration::ZERO,
            durable: Duration::ZERO,
            wait_beyond_durable: waited,
            latency: start.elapsed(),
        })
    }
}
