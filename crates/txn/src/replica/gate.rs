//! Who may issue timestamps: the [`LeaderGate`] the transaction manager asks for every
//! timestamp it chooses (an active leader, caught up, past every earlier lease, inside its own,
//! its clock not fenced by the peer clock checks), and the replica's checks of its own
//! leadership before serving.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::watch;

use boundkv_clockbound::{ClockPolicy, ClockReading, Timestamp, Unusable, WaitError, wait};
use boundkv_consensus::cluster_clock::ClusterClock;
use boundkv_consensus::node::{NodeState, ProposeError};
use boundkv_storage::Engine;

use crate::error::{Error, Result};
use crate::manager::TimestampGate;

use super::{Replica, ReplicaShared};

/// Where leadership stands on this node, for one request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Leadership {
    /// This node may issue timestamps (subject to the lease per timestamp).
    Active {
        /// The term it leads.
        term: u64,
        /// Its lease (see [`boundkv_consensus::node::LeaderState::lease_until`]).
        lease_until: Option<Timestamp>,
    },
    /// This node leads but may not issue yet; why.
    Starting(String),
    /// Another node leads (or none is known).
    Follower { leader: Option<u64> },
    /// This node's clock is fenced by the peer clock checks (whatever its role); why.
    Fenced(String),
}

/// The timestamp gate of a replicated node (see the `replica` module's docs).
pub(super) struct LeaderGate {
    pub(super) id: u64,
    pub(super) ignore_lease: bool,
    /// The replica's clock policy ([`ReplicaOptions::clock_policy`]).
    pub(super) policy: ClockPolicy,
    pub(super) node: watch::Receiver<NodeState>,
    pub(super) activated_term: Arc<AtomicU64>,
    pub(super) shared: Arc<ReplicaShared>,
    /// The cluster clock, when it is the source: every timestamp must lie below the horizon
    /// this leader committed in its term (see `docs/architecture/time.md`, F1).
    pub(super) cluster: Option<Arc<ClusterClock>>,
}

impl LeaderGate {
    pub(super) fn leadership(&self, reading: Option<&ClockReading>) -> Leadership {
        let state = self.node.borrow();
        // A follower redirects whatever its clock: a commit sent to it belongs at the leader.
        let Some(ls) = state.leader_state else {
            return Leadership::Follower { leader: state.leader };
        };
        if let Some(why) = &state.clock_fence {
            if state.clock_unchecked {
                return Leadership::Starting(why.clone());
            }
            return Leadership::Fenced(why.clone());
        }
        if !ls.caught_up {
            return Leadership::Starting(
                "the new leader is still applying earlier terms' entries".into(),
            );
        }
        if self.activated_term.load(Ordering::Acquire) != ls.term {
            return Leadership::Starting("the new leader is starting its term".into());
        }
        if self.ignore_lease {
            return Leadership::Active { term: ls.term, lease_until: Some(Timestamp::MAX) };
        }
        if let Some(r) = reading
            && r.earliest() <= ls.ready_at
        {
            return Leadership::Starting(format!(
                "the new leader waits until {} for every earlier leader's lease to expire",
                ls.ready_at
            ));
        }
        Leadership::Active { term: ls.term, lease_until: ls.lease_until }
    }
}

impl TimestampGate for LeaderGate {
    fn check(&self, ts: Timestamp, reading: &ClockReading) -> Result<()> {
        match self.leadership(Some(reading)) {
            Leadership::Follower { leader } => {
                Err(Error::NotLeader { leader, reason: "this node is not the leader".into() })
            }
            Leadership::Starting(why) => Err(Error::Unavailable(why)),
            Leadership::Fenced(reason) => Err(Error::ClockFenced { node: self.id, reason }),
            Leadership::Active { term, lease_until } => {
                // The oracle hands out only readings the policy accepts; the gate says so too,
                // so that a bound too wide for the lease is never reported as a lapsed lease.
                if let Err(reason) = self.policy.check(Ok(*reading)) {
                    return Err(Error::Clock(WaitError::ClockUnavailable {
                        waited: Duration::ZERO,
                        reason,
                    }));
                }
                if lease_until.is_none_or(|until| ts >= until) {
                    return Err(Error::Unavailable(
                        "the leader's lease has lapsed; it is renewing it".into(),
                    ));
                }
                // Under the cluster clock: below the horizon committed in this leader's term, the
                // one a later leader starts above. A timestamp raised above the reading (a
                // client's read timestamp, the oracle's floor) is refused past it, and so is a
                // reading of another term's reference (the clock moved to a newer term before
                // the node published that it no longer leads).
                if let Some(cluster) = &self.cluster {
                    match cluster.issue_limit(term) {
                        Some(horizon) if ts < horizon => {}
                        Some(horizon) => {
                            return Err(Error::Unavailable(format!(
                                "{ts} is at or past the cluster clock's committed horizon \
                                 {horizon}; the leader is renewing it"
                            )));
                        }
                        None => {
                            return Err(Error::Unavailable(
                                "the cluster clock is not this leader's reference (a term change \
                                 is under way)"
                                    .into(),
                            ));
                        }
                    }
                }
                if ts <= self.shared.max_log_ts() {
                    return Err(Error::Unavailable(format!(
                        "the leader is raising its floor above the log's timestamps (node {})",
                        self.id
                    )));
                }
                Ok(())
            }
        }
    }
}

impl<E: Engine> Replica<E> {
    /// Why this replica's clock is unusable right now by [`Replica::policy`] (which refuses
    /// bounds too wide for the lease), if it is. A leader whose clock is unusable serves
    /// nothing: no commits, no leader reads, no closed timestamps (so no follower reads).
    pub fn clock_problem(&self) -> Option<Unusable> {
        self.options.policy.check(self.clock.now()).err()
    }

    /// Whether this node leads and holds a lease that is valid now: then
    /// `Replica::ensure_active` succeeds at once, with neither a wait for the clock nor a
    /// quorum round.
    pub fn lease_valid(&self) -> bool {
        let Some(reading) = self.usable_now() else { return false };
        matches!(
            self.gate.leadership(Some(&reading)),
            Leadership::Active { lease_until, .. } if lease_holds(lease_until, &reading)
        )
    }

    pub(super) fn usable_now(&self) -> Option<ClockReading> {
        self.options.policy.check(self.clock.now()).ok()
    }

    /// Fails with [`Error::ClockFenced`] while the peer clock checks fence this node's clock:
    /// it then serves no reads, not even at a follower's closed timestamp (its own clock would
    /// choose the timestamp).
    ///
    /// The fence every member starts with, until its first check reaches a majority, is a
    /// transient start-up state: it answers `Unavailable` (retry), not `ClockFenced`.
    pub(super) fn check_clock_fence(&self) -> Result<()> {
        let state = self.state.borrow();
        match &state.clock_fence {
            Some(reason) if state.clock_unchecked => {
                Err(Error::Unavailable(format!("node {} is starting: {reason}", self.id)))
            }
            Some(reason) => Err(Error::ClockFenced { node: self.id, reason: reason.clone() }),
            None => Ok(()),
        }
    }

    pub(super) fn not_leader(&self, leader: Option<u64>) -> Error {
        Error::NotLeader { leader, reason: "this node is not the leader".into() }
    }

    /// Fails unless this node is an active leader; renews a lapsed lease with a Safe ReadIndex
    /// round first.
    pub(super) async fn ensure_active(&self) -> Result<()> {
        let reading = wait::usable_reading(&*self.clock, &self.options.policy).await?;
        match self.gate.leadership(Some(&reading)) {
            Leadership::Follower { leader } => Err(self.not_leader(leader)),
            Leadership::Starting(why) => Err(Error::Unavailable(why)),
            Leadership::Fenced(reason) => Err(Error::ClockFenced { node: self.id, reason }),
            Leadership::Active { lease_until, .. } if lease_holds(lease_until, &reading) => Ok(()),
            Leadership::Active { .. } => self.renew_lease().await,
        }
    }

    /// A Safe ReadIndex round: a quorum confirms this leader, which renews its lease.
    async fn renew_lease(&self) -> Result<()> {
        match self.node.read_index().await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(ProposeError::NotLeader { leader })) => Err(self.not_leader(leader)),
            Ok(Err(e)) => Err(Error::Unavailable(format!("cannot confirm leadership: {e}"))),
            Err(_) => Err(Error::Unavailable("the Raft node stopped".into())),
        }
    }
}

/// Whether a leader's lease, valid until `lease_until`, still covers `reading` (all of it: its
/// `latest` is below the lease's end).
fn lease_holds(lease_until: Option<Timestamp>, reading: &ClockReading) -> bool {
    lease_until.is_some_and(|until| reading.latest() < until)
}
