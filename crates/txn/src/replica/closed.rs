//! Closed timestamps off the log: how a leader tells the other replicas which timestamps they
//! may serve reads at, without writing anything to disk.
//!
//! # The promise
//!
//! A *closed timestamp* `c` is the leader's promise that no commit at or below `c` will ever be
//! applied after the entry at index `i`: every commit at or below `c` is already applied on the
//! leader, at or before `i`. The leader picks `c = min(now().latest, min(pending) - 1)`, raising
//! its floor to `c` so that every later commit lands above it ([`TxnManager::close_timestamp`]),
//! and `i` = its applied index *after* choosing `c` (a commit stops being pending only once it is
//! applied here). A replica that has applied index `i` and learned `(c, i)` holds every commit at
//! or below `c`: reads at `ts <= c` are exact there.
//!
//! Earlier versions carried the promise in the log (a `Close(c)` entry every 25 ms): log order
//! made it true, but it cost a log entry, a quorum of `fdatasync`s and the close interval of
//! waiting for every follower read, and an idle cluster wrote 40 entries a second forever. Here
//! it travels beside the log, as CockroachDB's closed-timestamp side transport does, in the
//! frames the clock checks use ([`ClockMessage::Closed`]); nothing of it is written.
//!
//! # Why the promise holds without the log
//!
//! - **This leader's commits.** Each is pending from the moment its timestamp is chosen until
//!   it is applied here and its commit wait is over; a proposal whose outcome is not known stays
//!   pending too (`InFlight::finish`). So a commit at or below `c` is applied here at or before
//!   `i`, and every other one lands above `c` (above the pending minimum, or above the floor).
//! - **Earlier leaders' commits.** Only an *active* leader closes, and it has applied every entry
//!   of earlier terms in its log before it starts its term; an entry of an earlier term that is
//!   not in its log can never be committed after it (Raft's log matching: terms only grow along a
//!   log). So they all lie at or before `i` too.
//! - **Later leaders' commits.** A close passes the same gate as every timestamp the leader
//!   issues: it lies inside the leader's lease, and a later leader issues nothing until every
//!   earlier lease has surely ended (`ready_at`, see `boundkv_consensus::node`). A close that
//!   arrives late, even from a deposed leader, is still true.
//! - **Indexes.** `i` is an *applied*, hence committed, index: every replica's log holds the same
//!   entries up to it, so "applied `i`" means the same thing everywhere.
//!
//! A replica accepts a close only from the leader it follows, in the term it is in: a close from
//! elsewhere would be true too (above), but need not be relied on. A replica that applies a
//! commit at or below a closed timestamp it holds reports a broken promise
//! ([`ReplicaShared::broken_promises`]); the simulator requires none.
//!
//! # Two ways a close travels
//!
//! - **Pushed**: every `close_interval` (25 ms) the active leader sends its close to every
//!   other member. Reads at `MaxStaleness` and at exact past timestamps are served from it, and
//!   a member that loses touch with the leader stops moving (its reads answer `FollowerBehind`).
//! - **Pulled**: a follower read at its own `now().latest` asks the leader to close that
//!   timestamp ([`ClockMessage::CloseRequest`]); the leader answers as soon as its own clock's
//!   `latest` has reached it and no commit at or below it is pending (at once, usually: two
//!   honest clocks' `latest` differ by at most both bounds). The read then waits a round trip,
//!   plus the time to apply the leader's index, instead of up to a close interval:
//!
//! ```text
//! t (ms)   0.00                    0.05                     0.10
//! n2       read k at latest = 7.001  ── CloseRequest(7.001) ──►
//! n1 (ldr)                          latest 7.0011 ≥ 7.001, nothing pending below:
//!                                   close c = 7.0011 at applied i = 42 ── Closed(c, i) ──►
//! n2                                                          applied 42 ≥ i, c ≥ 7.001: serve
//! ```
//!
//! A lost request or answer is asked again every [`REASK`] while the read waits.
//!
//! [`TxnManager::close_timestamp`]: crate::TxnManager::close_timestamp
//! [`ReplicaShared::broken_promises`]: super::ReplicaShared::broken_promises

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use boundkv_clockbound::Timestamp;
use boundkv_consensus::clock_check::{ClockFrame, ClockMessage};
use boundkv_storage::Engine;

use super::Replica;

/// How often a waiting follower read asks the leader again (a request or its answer was lost).
pub(super) const REASK: Duration = Duration::from_millis(10);

impl<E: Engine> Replica<E> {
    /// Routes this member's inbound closed timestamp frames to a task of the replica, and starts
    /// it. Called once, at start.
    pub(super) fn start_closed_timestamps(self: &Arc<Self>) {
        let (tx, rx) = mpsc::unbounded_channel();
        self.node.on_closed_timestamps(move |frame| {
            let _ = tx.send(frame);
        });
        tokio::spawn(Self::serve_closed_timestamps(
            Arc::downgrade(self),
            rx,
            self.stopping.subscribe(),
        ));
    }

    /// Takes in the leader's closes, and as leader answers requests for them.
    async fn serve_closed_timestamps(
        this: std::sync::Weak<Self>,
        mut inbox: mpsc::UnboundedReceiver<ClockFrame>,
        mut stopping: watch::Receiver<bool>,
    ) {
        loop {
            let frame = tokio::select! {
                biased;
                _ = stopping.changed() => return,
                frame = inbox.recv() => match frame {
                    Some(frame) => frame,
                    None => return,
                },
            };
            let Some(replica) = this.upgrade() else { return };
            match frame.message {
                ClockMessage::Closed { term, closed, applied } => {
                    let state = replica.state.borrow();
                    let from_leader = state.term == term && state.leader == Some(frame.from);
                    drop(state);
                    if from_leader {
                        replica.shared.offer_closed(closed, applied);
                    }
                }
                ClockMessage::CloseRequest { ts } => {
                    if replica.safe_time() >= ts {
                        replica.send_closed(&[frame.from]).await;
                    } else {
                        // Waits for the clock or a pending commit: off this loop.
                        tokio::spawn(
                            async move { replica.answer_close_request(frame.from, ts).await },
                        );
                    }
                }
                _ => {}
            }
        }
    }

    /// Closes a timestamp now and sends it to `to` (and takes it here too). Nothing when this
    /// node may not issue timestamps (not an active leader, or its lease has lapsed).
    pub(super) async fn send_closed(&self, to: &[u64]) {
        if !self.lease_valid() {
            return;
        }
        let term = self.state.borrow().term;
        let Ok(closed) = self.txn.close_timestamp().await else { return };
        // After choosing `closed`: every commit at or below it is applied by now.
        let applied = self.shared.applied_index();
        self.shared.offer_closed(closed, applied);
        for &member in to {
            if member != self.id {
                self.node.send_closed_timestamps(ClockFrame {
                    from: self.id,
                    to: member,
                    message: ClockMessage::Closed { term, closed, applied },
                });
            }
        }
    }

    /// As leader: closes `ts` for `to` once it can, within `follower_wait` (the asker gives up
    /// then): once this clock's `latest` has reached `ts` and no commit at or below it is pending.
    async fn answer_close_request(&self, to: u64, ts: Timestamp) {
        let deadline = Instant::now() + self.options.follower_wait;
        loop {
            if !self.lease_valid() {
                return;
            }
            let Some(reading) = self.usable_now() else { return };
            if reading.latest() >= ts {
                break;
            }
            // The asker's clock reads ahead of this one (by at most both bounds, if honest).
            let ahead = ts.saturating_duration_since(reading.latest());
            if Instant::now() + ahead > deadline {
                return;
            }
            self.clock.timebase().sleep(ahead).await;
        }
        if tokio::time::timeout_at(deadline, self.txn.wait_safe(ts)).await.is_err() {
            return;
        }
        self.send_closed(&[to]).await;
    }

    /// As a follower whose read waits for `ts`: asks the leader to close it, unless a request
    /// for `ts` or more went out less than [`REASK`] ago.
    pub(super) fn request_close(&self, ts: Timestamp) {
        let Some(leader) = self.leader().filter(|&l| l != self.id) else { return };
        {
            let mut last = self.close_requested.lock().unwrap_or_else(|e| e.into_inner());
            let now = Instant::now();
            if let Some((asked, at)) = *last
                && asked >= ts
                && now.duration_since(at) < REASK
            {
                return;
            }
            *last = Some((ts, now));
        }
        self.node.send_closed_timestamps(ClockFrame {
            from: self.id,
            to: leader,
            message: ClockMessage::CloseRequest { ts },
        });
    }
}
