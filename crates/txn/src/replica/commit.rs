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
use crate::txn::{CommitInfo, CommitRequest};

use super::{Replica, humantime_short, machine};

pub(super) type SharedCommit = Shared<BoxFuture<'static, Result<CommitInfo>>>;

impl<E: Engine> Replica<E> {
    /// Commits a decided transaction (leader only; see the `replica` module's docs). Safe to call
    /// again with the same transaction id: a commit in flight is joined, an applied one answered.
    pub async fn commit(self: &Arc<Self>, req: CommitRequest) -> Result<CommitInfo> {
        let start = Instant::now();
        self.ensure_active().await?;
        let id = req.txn_id;
        enum Found {
            Running(SharedCommit),
            Applied(u64),
        }
        let found = {
            let mut in_flight = self.in_flight.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(running) = in_flight.get(&id) {
                Found::Running(running.clone())
            } else if let Some(ts) =
                machine::recorded_commit_ts(&self.mvcc, &id.0, self.gc_horizon())?
            {
                Found::Applied(ts)
            } else {
                let this = self.clone();
                // The commit runs to its end in a task of its own even if this caller gives up:
                // its timestamp must stay pending until its record is applied or surely dropped.
                // The task removes itself from the map under the same lock, so not before it
                // was inserted.
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
                Found::Running(shared)
            }
        };
        let commit = match found {
            Found::Running(commit) => commit,
            Found::Applied(ts) => {
                return self.answer_applied(Timestamp::from_nanos(ts), start).await;
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

    /// Answers a commit whose transaction was already applied at `ts`, once `ts` has surely
    /// passed.
    async fn answer_applied(&self, ts: Timestamp, start: Instant) -> Result<CommitInfo> {
        let waited = self.txn.oracle().commit_wait(ts).await?.waited;
        Ok(CommitInfo {
            ts,
            commit_wait: Duration::ZERO,
            durable: Duration::ZERO,
            wait_beyond_durable: waited,
            latency: start.elapsed(),
        })
    }
}
