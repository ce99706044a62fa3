//! Closed timestamps off the log: how a leader tells the other replicas which timestamps they
//! may serve reads at, without writing anything to disk.
//!
//! # The promise
//!
//! A *closed timestamp* `c` is the leader's promise that no commit at or below `c` will ever be
//! applied after the entry at index `i`: every commit at or below `c` is already applied on the
//! leader, at or before `i`. The leader picks `c = min(now().latest, min(pending) - 1)`, raising
//! its floor to `now().latest` (at or above `c`) so that every later commit lands above `c`
//! ([`TxnManager::close_timestamp`]),
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
//!   it is applied here and its commit wait is over, or until it surely never applies
//!   (`NotLeader`, `Dropped`). The one other way out is `Stopped`, when the Raft node stops: its
//!   entry may still commit under the next leader, but a stopped node publishes that it leads
//!   nothing before it fails its proposals, and a stopping replica sends no close (checked after
//!   choosing one). So a commit at or below `c` is applied here at or before `i`, and every other
//!   one lands above `c` (above the pending minimum, or above the floor).
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
//! A follower keeps one request out at a time (many waiting reads share it; the answer sends the
//! next), and asks again after [`REASK`] if a request or its answer was lost. The leader keeps at
//! most one waiting task per member.
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

/// A follower's requests for closes (see [`Replica::request_close`]).
#[derive(Default)]
pub(super) struct CloseAsks {
    /// When the request now out was sent.
    out: Option<Instant>,
    /// The highest timestamp a waiting read wants closed.
    wanted: Timestamp,
}

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
                        replica.answered(closed);
                    }
                }
                ClockMessage::CloseRequest { ts } => {
                    if replica.safe_time() >= ts {
                        replica.send_closed(&[frame.from]).await;
                    } else {
                        replica.wait_to_close(frame.from, ts);
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
        // The close passed the gate in the term it is labelled with (terms only grow: the same
        // term before and after means the same term at the gate), and not on a stopping node,
        // whose proposals have failed as `Stopped` though they may still commit elsewhere.
        // `lease_valid` again: a Raft node that stopped on its own (a storage failure) published
        // that it leads nothing before failing its proposals.
        if self.state.borrow().term != term || *self.stopping.borrow() || !self.lease_valid() {
            return;
        }
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

    /// As leader: answers `from`'s request for `ts` once it can, off the receiving loop (it
    /// waits for the clock or a pending commit). One task per asking member at most: a request
    /// that arrives while one waits only raises what that one closes next, so neither a busy
    /// follower nor a hostile one can make the leader hold a task per request.
    fn wait_to_close(self: &Arc<Self>, from: u64, ts: Timestamp) {
        {
            let mut waits = self.close_waits.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(asked) = waits.get_mut(&from) {
                *asked = (*asked).max(ts);
                return;
            }
            waits.insert(from, ts);
        }
        let replica = self.clone();
        tokio::spawn(async move {
            loop {
                let asked = {
                    let waits = replica.close_waits.lock().unwrap_or_else(|e| e.into_inner());
                    waits.get(&from).copied().unwrap_or(ts)
                };
                replica.answer_close_request(from, asked).await;
                let mut waits = replica.close_waits.lock().unwrap_or_else(|e| e.into_inner());
                if waits.get(&from).is_none_or(|&t| t <= asked) {
                    waits.remove(&from);
                    return;
                }
            }
        });
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

    /// As a follower whose read waits for `ts`: asks the leader to close it. One request at a
    /// time: while one is out (for less than [`REASK`]), a read that wants more only raises what
    /// the next asks for, and the next goes out when the answer comes ([`Self::answered`]). So
    /// a follower sends about one request per round trip however many reads it serves, and the
    /// clock frames they share a queue with are not crowded out.
    ///
    /// A timestamp further ahead of this clock than `follower_wait` is not asked for: the leader
    /// could not close it before the read gives up, and it would stand in every later request.
    /// What a request asks for starts afresh each time one goes out after [`REASK`], so a read
    /// that gave up stops raising it.
    pub(super) fn request_close(&self, ts: Timestamp) {
        let Some(reading) = self.usable_now() else { return };
        if ts > reading.latest().saturating_add(self.options.follower_wait) {
            return;
        }
        let ask = {
            let mut asks = self.close_asks.lock().unwrap_or_else(|e| e.into_inner());
            let now = Instant::now();
            if asks.out.is_some_and(|at| now.duration_since(at) < REASK) {
                asks.wanted = asks.wanted.max(ts);
                return;
            }
            asks.wanted = ts;
            asks.out = Some(now);
            ts
        };
        self.ask_to_close(ask);
    }

    /// A close arrived from the leader: the request out (if any) is answered. If a read wants
    /// more than it closed, asks again at once.
    fn answered(&self, closed: Timestamp) {
        let ask = {
            let mut asks = self.close_asks.lock().unwrap_or_else(|e| e.into_inner());
            if asks.wanted <= closed {
                asks.out = None;
                return;
            }
            asks.out = Some(Instant::now());
            asks.wanted
        };
        self.ask_to_close(ask);
    }

    fn ask_to_close(&self, ts: Timestamp) {
        let Some(leader) = self.leader().filter(|&l| l != self.id) else { return };
        self.node.send_closed_timestamps(ClockFrame {
            from: self.id,
            to: leader,
            message: ClockMessage::CloseRequest { ts },
        });
    }
}
