//! Transactions over Raft: a [`Replica`] is one member of a replicated boundkv group. Its leader
//! coordinates read-write transactions exactly as the embedded database does (optimistic
//! validation, a commit timestamp at `now().latest`, commit wait), with Raft between deciding a
//! commit and applying it; every replica serves lock-free reads at timestamps it can vouch for.
//!
//! # The commit path at the leader
//!
//! ```text
//! client ── Commit(req) ──► leader
//!   1. validate req's reads against the conflict index; choose s = max(now().latest, r + 1,
//!      floor + 1); the gate checks the leader may issue s (below)      ┐
//!   2. propose Commit(record at s) to Raft                             │ commit wait runs from
//!   3. a quorum has it durably; it is applied to MVCC here             │ step 1: it overlaps
//!   4. commit wait: now().earliest > s                                 ┘ replication
//!   5. s stops being pending (leader reads at ≥ s now see it); answer the client
//! ```
//!
//! With a bound smaller than the replication time, step 4 has nothing left to wait. The embedded
//! path is the same code ([`TxnManager::commit_request`]); only the [`Applier`] differs: here
//! it proposes the record and resolves when the entry is applied on this node. Many commits in
//! flight share Raft Readies, so they share log writes and fsyncs.
//!
//! A commit is identified by its transaction id. A client that lost its answer resends the same
//! request; a replica answers it from the in-flight commit, or from the transaction record that
//! the state machine wrote with the commit, and the state machine never applies one id twice.
//!
//! # Who may issue timestamps
//!
//! Only an *active* leader, checked by the gate every time a timestamp is chosen:
//!
//! - it leads the current term, and has applied every entry of earlier terms in its log;
//! - its floor has been raised above every timestamp in the log (Spanner's `s_max` rule:
//!   commits and closed timestamps of earlier leaders);
//! - `now().earliest` has passed its `ready_at`: every earlier leader's lease has surely expired
//!   (see `boundkv_consensus::node` for the lease and why leases are disjoint);
//! - the timestamp lies below its own lease's end.
//!
//! So every timestamp a leader hands out lies inside its lease, leases are disjoint in true time,
//! and a later leader's timestamps are above an earlier one's: timestamps follow real time across
//! leader changes, and a deposed leader cannot serve a stale read. When the lease has lapsed
//! (no quorum heard from for a while), the leader renews it with a Safe ReadIndex round before
//! going on.
//!
//! # The widest clock bound a lease allows
//!
//! A lease renewed by a heartbeat sent with a reading of bound `ε₀` is usable while
//! `now().latest` stays below that reading's `earliest + lease`: for `lease − ε₀ − ε` of elapsed
//! time, where `ε` is the bound of the reading that issues (the clock's offset cancels out; see
//! [`ReplicaOptions::lease_bound_ceiling`]). Renewals go out every `lease_renewal`, so the lease
//! lasts from one renewal to the next only while `2 × ε + lease_renewal ≤ lease`. A wider bound
//! leaves no timestamp (or only some, in bursts) that passes the gate: no commits, no leader
//! reads, no closed timestamps, so no follower reads either. A replica therefore treats a reading
//! whose bound exceeds `(lease − lease_renewal) / 2` as unusable, like any reading its
//! [`ClockPolicy`] refuses: it lowers the policy's `max_bound` to that
//! ([`ReplicaOptions::clock_policy`]), so requests fail with [`Error::Clock`] naming the bound and
//! the lease, and the node's clock status says why. Settings that leave no bound at all are
//! refused at start ([`ReplicaOptions::validate`]).
//!
//! # Reads at any replica: closed timestamps
//!
//! A follower cannot know which commits are pending at the leader. The leader tells it: every
//! `close_interval` (25 ms by default) it proposes `Close(c)`, with `c` its safe time (below every
//! pending commit, at or below its floor, so every commit at or below `c` is finished and sits in
//! an earlier entry, and every later commit lands above `c`). A replica that has applied
//! `Close(c)` serves reads at `ts <= c` exactly. A read at `now().latest` of the follower's own
//! clock waits until a closed timestamp reaches it:
//!
//! ```text
//! t (ms)  0        5          25        27            30
//! leader  Close(c₀)           Close(c₁ = its latest ≈ 25 + ε)
//! follower    read arrives: ts = latest ≈ 5 + ε     applies Close(c₁): c₁ ≥ ts → serves
//! ```
//!
//! The wait is at most about `close_interval` + one replication round + the clocks' combined
//! error (the leader closes at its own `latest`, the follower asks at its own); a follower that
//! cannot catch up within `follower_wait` answers [`Error::FollowerBehind`], naming the leader.
//! Reads at the active leader need no closed timestamp: its own safe time (below every pending
//! commit) is exact.
//!
//! # Leader changes
//!
//! A new leader's conflict index knows nothing of what an earlier leader validated, so
//! transactions that read before the new term fail with `Expired` and are retried. Proposals
//! of a deposed leader end one of three ways: applied (the new leader committed them), dropped
//! (their index holds another entry: they never apply, the client hears `NotLeader`), or unknown
//! (the client hears `OutcomeUnknown` and resends with the same transaction id).
//!
//! # Membership
//!
//! [`Replica::add_member`] adds a learner (with its addresses in the change's context), waits for
//! it to catch up, then promotes it through a joint configuration that it leaves explicitly;
//! [`Replica::remove_member`] removes a voter the same way. The addresses are replicated state
//! (in the same metadata as the data), so snapshots carry them to new members.
//!
//! # Garbage collection
//!
//! Old versions go through the log, so that every replica refuses the same reads. Every
//! `gc_interval` (60 s) the active leader proposes `Gc(h)`, `h = min(now().earliest -
//! gc_retention, the closed timestamp it applied)` (and below any read registered with its
//! transaction manager; replica reads are not registered, so a read that outlives the
//! retention gets `BelowGcHorizon`); with the default hour of retention:
//!
//! ```text
//! 12:00:00  leader applies Close(c = 12:00:00.020), proposes Gc(h = 11:00:00)
//!           every replica applies it: GC_HORIZON = 11:00:00, in the batch with the applied index
//!           from now on, reads at ts < 11:00:00 answer BelowGcHorizon (here and on every replica)
//!           in the background each replica deletes, per key, every version below the newest one
//!           at or below 11:00:00 (and that one too if it is a tombstone)
//! ```
//!
//! Because `h` is at or below a closed timestamp already applied, every commit later in the log
//! lies above it. A read that passed the horizon check when it began checks again after reading:
//! collection starts only once the horizon has risen, so if the horizon is still at or below
//! the read's timestamp, nothing it could see was deleted meanwhile.
//!
//! Transaction records below the horizon count for nothing when deduplicating a resent commit
//! (each replica's collector deletes them in its own time, so their presence is not the same
//! everywhere). A snapshot install stops a collection running meanwhile (see
//! `Mvcc::import_batch`); the install's horizon notification starts it again.

mod command;
mod machine;

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use bytes::Bytes;
use futures::FutureExt;
use futures::future::{BoxFuture, Shared};
use raft::prelude::{
    ConfChangeSingle, ConfChangeTransition, ConfChangeType, ConfChangeV2, ConfState,
};
use tokio::sync::{oneshot, watch};

use boundkv_clockbound::{
    Clock, ClockPolicy, ClockReading, OracleOptions, Timestamp, TimestampOracle, Unusable,
    WaitError, wait,
};
use boundkv_consensus::log_store::RaftLogStore;
use boundkv_consensus::node::{
    Node, NodeConfig, NodeHandle, NodeParts, NodeState, ProposeError, Role, Waker,
};
use boundkv_consensus::raft;
use boundkv_consensus::transport::{Deliverer, Transport};
use boundkv_storage::{Engine, Mvcc};

use crate::apply::{Applier, ApplyHandle};
use crate::error::{Error, Result};
use crate::hwm::MvccHighWaterMark;
use crate::manager::{TimestampGate, TxnManager, TxnOptions};
use crate::record::{CommitRecord, TxnId};
use crate::txn::{CommitInfo, CommitRequest};

pub use command::{Command, DecodeError, LOCAL_META, Member, SnapshotData, meta};
pub use machine::{ApplyOutput, MvccStateMachine, ReplicaShared};

/// The Raft member under a replica over engine `E`, for a caller that drives it
/// ([`Replica::start_driven`]).
pub type RaftNode<E> = Node<E, MvccStateMachine<E>>;

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

/// Settings of a [`Replica`].
#[derive(Clone, Debug)]
pub struct ReplicaOptions {
    /// The Raft member's settings (id, ticks, lease).
    pub node: NodeConfig,
    /// Transaction limits (and the test-only mutation switch).
    pub txn: TxnOptions,
    /// Which clock readings are usable. The replica lowers `max_bound` to the widest bound its
    /// lease allows ([`ReplicaOptions::clock_policy`]).
    pub policy: ClockPolicy,
    /// How often an idle leader closes a timestamp. Default 25 ms.
    pub close_interval: Duration,
    /// How long a replica waits for its closed timestamp to reach a read's timestamp before
    /// answering `FollowerBehind`. Default 2 s.
    pub follower_wait: Duration,
    /// How long a commit may take before its caller hears `OutcomeUnknown` (it goes on in the
    /// background and may still apply). Default 10 s.
    pub commit_timeout: Duration,
    /// How long `add_member` waits for a new learner to catch up before promoting it. Default
    /// 60 s.
    pub catch_up_timeout: Duration,
    /// How far back reads may go: the leader raises the GC horizon to about `now - retention`
    /// every `gc_interval`, and every replica deletes the versions no read above it can see.
    /// `None` keeps every version. Default 1 h. Set the same on every member (the leader's
    /// counts).
    pub gc_retention: Option<Duration>,
    /// How often the leader raises the GC horizon. Default 60 s.
    pub gc_interval: Duration,
    /// For a brand-new group: the founding members (every founding member is started with the
    /// same list). `None` for a member that joins an existing group, or restarts.
    pub founding: Option<Vec<Member>>,
    /// Collect garbage on the runtime's own thread instead of tokio's blocking pool. For the
    /// simulator, whose one thread must see every piece of work start and end; a server keeps
    /// the default (`false`), so that a long collection never holds up the runtime.
    pub collect_garbage_inline: bool,
    /// **Test only; breaks external consistency.** Issue timestamps and serve leader reads
    /// without a valid lease and without waiting out earlier leaders' leases. The lease tests'
    /// mutation twin turns it on to show that they catch the stale reads it allows.
    #[doc(hidden)]
    pub unsafe_ignore_lease: bool,
}

impl Default for ReplicaOptions {
    fn default() -> Self {
        ReplicaOptions {
            node: NodeConfig::default(),
            txn: TxnOptions::default(),
            policy: ClockPolicy::default(),
            close_interval: Duration::from_millis(25),
            follower_wait: Duration::from_secs(2),
            commit_timeout: Duration::from_secs(10),
            catch_up_timeout: Duration::from_secs(60),
            gc_retention: Some(Duration::from_secs(3600)),
            gc_interval: Duration::from_secs(60),
            founding: None,
            collect_garbage_inline: false,
            unsafe_ignore_lease: false,
        }
    }
}

impl ReplicaOptions {
    /// The widest clock bound with which this replica's leader lease stays usable from one
    /// renewal to the next: `(lease − lease_renewal) / 2`, the largest `ε` with
    /// `2 × ε + lease_renewal ≤ lease` (zero when the lease is no longer than its renewal
    /// interval).
    ///
    /// Why. A renewal's heartbeat goes out at true time `t₀` with a reading of bound `ε₀` and
    /// midpoint `t₀ + δ` (`δ` the clock's offset); once a quorum answers, the lease runs until
    /// `earliest + lease = t₀ + δ − ε₀ + lease`. A timestamp issued at true time `t` from a
    /// reading of bound `ε` is at least its `latest = t + δ + ε`, and the gate passes it only
    /// below the lease's end: `t − t₀ < lease − ε₀ − ε` (a steady offset cancels out). The next
    /// renewal goes out `lease_renewal` after `t₀`, so the lease lasts until then only if
    /// `lease − ε₀ − ε ≥ lease_renewal`; with both bounds at most `ε_max`, that is
    /// `2 × ε_max + lease_renewal ≤ lease`. The renewal's round trip comes on top: for that long
    /// the lease may lapse, and the first request that finds it lapsed renews it on demand (a
    /// Safe ReadIndex round, after which the lease is usable for `lease − 2ε ≥ lease_renewal`,
    /// so this works whenever a round trip is shorter than `lease_renewal`).
    ///
    /// With a wider bound some timestamps may still pass, in bursts after each renewal, and with
    /// `2 × ε ≥ lease` none can. One rule for every case: a replica refuses every reading wider
    /// than this ([`ReplicaOptions::clock_policy`]).
    pub fn lease_bound_ceiling(&self) -> Duration {
        self.node.lease.saturating_sub(self.node.lease_renewal) / 2
    }

    /// The clock policy the replica acts on: [`ReplicaOptions::policy`] with `max_bound` lowered
    /// to [`ReplicaOptions::lease_bound_ceiling`] when that is smaller, saying why. Every reading
    /// the replica takes goes through it (its Raft node's lease and election readings, its
    /// timestamp oracle, its waits, its gate, its status), so a bound too wide for the lease is
    /// an unusable clock everywhere: requests fail with [`Error::Clock`] naming the bound.
    pub fn clock_policy(&self) -> ClockPolicy {
        let ceiling = self.lease_bound_ceiling();
        if ceiling >= self.policy.max_bound {
            return self.policy.clone();
        }
        ClockPolicy {
            max_bound: ceiling,
            max_bound_reason: Some(format!(
                "the widest a {} lease renewed every {} allows: 2 × bound + renewal must not \
                 exceed the lease",
                humantime::format_duration(self.node.lease),
                humantime::format_duration(self.node.lease_renewal)
            )),
            ..self.policy.clone()
        }
    }

    /// Refuses settings no clock can work with: a lease that no clock bound fits
    /// ([`ReplicaOptionsError::NoUsableLease`], when [`ReplicaOptions::lease_bound_ceiling`] is
    /// zero). [`Replica::start_driven`] (and so [`Replica::start`]) calls it first.
    pub fn validate(&self) -> std::result::Result<(), ReplicaOptionsError> {
        if self.lease_bound_ceiling().is_zero() {
            return Err(ReplicaOptionsError::NoUsableLease {
                lease: self.node.lease,
                lease_renewal: self.node.lease_renewal,
            });
        }
        Ok(())
    }
}

/// Settings a replica refuses to start with ([`ReplicaOptions::validate`]). Deterministic: the
/// same settings are always refused; change them.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error, serde::Serialize, serde::Deserialize)]
#[non_exhaustive]
pub enum ReplicaOptionsError {
    /// No clock bound fits the lease: `2 × bound + lease_renewal ≤ lease` holds for none (see
    /// [`ReplicaOptions::lease_bound_ceiling`]).
    #[error(
        "a lease of {} renewed every {} leaves no usable lease for any clock bound: \
         2 × bound + lease renewal must not exceed the lease; raise the lease (--lease) or renew \
         it more often",
        humantime::format_duration(*lease),
        humantime::format_duration(*lease_renewal)
    )]
    NoUsableLease {
        /// The lease.
        lease: Duration,
        /// How often the leader renews it.
        lease_renewal: Duration,
    },
}

/// A member as [`Replica::members`] reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemberInfo {
    /// The member and its addresses (empty if the membership never recorded them).
    pub member: Member,
    /// Whether it votes.
    pub voter: bool,
}

/// Where leadership stands on this node, for one request.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Leadership {
    /// This node may issue timestamps (subject to the lease per timestamp).
    Active { lease_until: Option<Timestamp> },
    /// This node leads but may not issue yet; why.
    Starting(String),
    /// Another node leads (or none is known).
    Follower { leader: Option<u64> },
}

/// The timestamp gate of a replicated node (see the module docs).
struct LeaderGate {
    id: u64,
    ignore_lease: bool,
    /// The replica's clock policy ([`ReplicaOptions::clock_policy`]).
    policy: ClockPolicy,
    node: watch::Receiver<NodeState>,
    activated_term: Arc<AtomicU64>,
    shared: Arc<ReplicaShared>,
}

impl LeaderGate {
    fn leadership(&self, reading: Option<&ClockReading>) -> Leadership {
        let state = self.node.borrow();
        let Some(ls) = state.leader_state else {
            return Leadership::Follower { leader: state.leader };
        };
        if !ls.caught_up {
            return Leadership::Starting(
                "the new leader is still applying earlier terms' entries".into(),
            );
        }
        if self.activated_term.load(Ordering::Acquire) != ls.term {
            return Leadership::Starting("the new leader is starting its term".into());
        }
        if self.ignore_lease {
            return Leadership::Active { lease_until: Some(Timestamp::MAX) };
        }
        if let Some(r) = reading
            && r.earliest() <= ls.ready_at
        {
            return Leadership::Starting(format!(
                "the new leader waits until {} for every earlier leader's lease to expire",
                ls.ready_at
            ));
        }
        Leadership::Active { lease_until: ls.lease_until }
    }
}

impl TimestampGate for LeaderGate {
    fn check(&self, ts: Timestamp, reading: &ClockReading) -> Result<()> {
        match self.leadership(Some(reading)) {
            Leadership::Follower { leader } => {
                Err(Error::NotLeader { leader, reason: "this node is not the leader".into() })
            }
            Leadership::Starting(why) => Err(Error::Unavailable(why)),
            Leadership::Active { lease_until } => {
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

/// The applier of a replicated node: proposes the record and resolves once it is applied here.
struct RaftApplier {
    node: NodeHandle<ApplyOutput>,
}

impl Applier for RaftApplier {
    fn apply(&self, record: CommitRecord) -> ApplyHandle {
        let (tx, rx) = oneshot::channel();
        self.node.propose_then(Command::Commit(record).encode(), move |outcome| {
            let result = match outcome {
                Ok(ApplyOutput::Applied { .. }) => Ok(()),
                Ok(ApplyOutput::Duplicate { ts }) => Err(Error::OutcomeUnknown(format!(
                    "this transaction id was already committed at {ts}; resend to learn its outcome"
                ))),
                Ok(ApplyOutput::Rejected(why)) => Err(Error::Rejected(why)),
                Ok(other) => {
                    Err(Error::OutcomeUnknown(format!("unexpected apply output {other:?}")))
                }
                Err(ProposeError::NotLeader { leader }) => Err(Error::NotLeader {
                    leader,
                    reason: "leadership moved before the commit was proposed; it did not apply"
                        .into(),
                }),
                Err(ProposeError::Dropped) => Err(Error::NotLeader {
                    leader: None,
                    reason: "leadership changed before the commit was replicated; it did not apply"
                        .into(),
                }),
                Err(e) => Err(Error::OutcomeUnknown(e.to_string())),
            };
            let _ = tx.send(result);
        });
        rx
    }
}

type SharedCommit = Shared<BoxFuture<'static, Result<CommitInfo>>>;

/// One member of a replicated boundkv group (see the module docs).
pub struct Replica<E: Engine> {
    id: u64,
    options: ReplicaOptions,
    mvcc: Arc<Mvcc<E>>,
    txn: Arc<TxnManager<E>>,
    node: NodeHandle<ApplyOutput>,
    state: watch::Receiver<NodeState>,
    shared: Arc<ReplicaShared>,
    gate: Arc<LeaderGate>,
    clock: Arc<dyn Clock>,
    in_flight: Mutex<BTreeMap<TxnId, SharedCommit>>,
    stopping: watch::Sender<bool>,
}

impl<E: Engine> Replica<E> {
    /// Starts a replica on `engine` (which holds both the MVCC data and the Raft log), sending
    /// through `transport`. Hand the transport's receiving side [`Replica::deliverer`] once it
    /// has started. Must be called inside a tokio runtime: the leader's background work
    /// (closing timestamps, starting terms) runs on it. The Raft node runs on a thread of its
    /// own.
    pub fn start(
        options: ReplicaOptions,
        engine: Arc<E>,
        clock: Arc<dyn Clock>,
        transport: Arc<dyn Transport>,
    ) -> Result<Arc<Self>> {
        let (replica, node) =
            Self::start_driven(options, engine, clock, transport, None, Instant::now().into_std())?;
        node.spawn(&replica.node).map_err(|e| Error::Fatal(e.to_string()))?;
        Ok(replica)
    }

    /// As [`Replica::start`], but the caller drives the Raft node: it gets the node back and
    /// takes its turns ([`Node::turn`]) on its own clock, starting at `now`, woken by `waker`
    /// when the node has input (see [`Node::new`]). The simulator does this, on virtual time; a
    /// server calls [`Replica::start`]. The code is the same either way.
    pub fn start_driven(
        mut options: ReplicaOptions,
        engine: Arc<E>,
        clock: Arc<dyn Clock>,
        transport: Arc<dyn Transport>,
        waker: Option<Waker>,
        now: std::time::Instant,
    ) -> Result<(Arc<Self>, RaftNode<E>)> {
        options.validate()?;
        let id = options.node.id;
        let policy = options.clock_policy();
        if policy.max_bound < options.policy.max_bound {
            tracing::info!(
                node = id,
                ceiling = %humantime::format_duration(policy.max_bound),
                lease = %humantime::format_duration(options.node.lease),
                lease_renewal = %humantime::format_duration(options.node.lease_renewal),
                "clock bounds above the ceiling are unusable: 2 × bound + lease renewal must not exceed the lease"
            );
        }
        options.policy = policy;
        let mvcc = Arc::new(Mvcc::new(engine.clone())?);
        let oracle = TimestampOracle::open(
            clock.clone(),
            OracleOptions { policy: options.policy.clone(), ..OracleOptions::default() },
            Box::new(MvccHighWaterMark::new(mvcc.clone())),
        )?;
        let (sm, shared) =
            MvccStateMachine::new(mvcc.clone(), options.founding.clone().unwrap_or_default())
                .map_err(|e| Error::Fatal(e.to_string()))?;
        if options.unsafe_ignore_lease {
            tracing::error!(
                node = id,
                "UNSAFE: leases are ignored; external consistency does not hold"
            );
        }
        let store = RaftLogStore::open(engine).map_err(|e| Error::Fatal(e.to_string()))?;
        let bootstrap =
            options.founding.as_ref().map(|members| members.iter().map(|m| m.id).collect());
        // The node first; everything that talks to it gets a handle.
        let (node, handle) = Node::new(
            NodeParts {
                config: options.node.clone(),
                store,
                state_machine: sm,
                transport,
                clock: clock.clone(),
                policy: options.policy.clone(),
                bootstrap,
            },
            waker,
            now,
        )
        .map_err(|e| Error::Fatal(e.to_string()))?;
        let state = handle.watch();
        let gate = Arc::new(LeaderGate {
            id,
            ignore_lease: options.unsafe_ignore_lease,
            policy: options.policy.clone(),
            node: state.clone(),
            activated_term: Arc::new(AtomicU64::new(0)),
            shared: shared.clone(),
        });
        let applier = Arc::new(RaftApplier { node: handle.clone() });
        let mut txn_options = options.txn.clone();
        txn_options.gate = Some(gate.clone());
        let txn = TxnManager::new(mvcc.clone(), Arc::new(oracle), applier, txn_options);
        let replica = Arc::new(Replica {
            id,
            options,
            mvcc,
            txn,
            node: handle,
            state,
            shared,
            gate,
            clock,
            in_flight: Mutex::new(BTreeMap::new()),
            stopping: watch::Sender::new(false),
        });
        tokio::spawn(Self::start_terms(Arc::downgrade(&replica), replica.stopping.subscribe()));
        tokio::spawn(Self::close_timestamps(
            Arc::downgrade(&replica),
            replica.stopping.subscribe(),
        ));
        tokio::spawn(Self::raise_gc_horizon(
            Arc::downgrade(&replica),
            replica.stopping.subscribe(),
        ));
        tokio::spawn(Self::collect_garbage(Arc::downgrade(&replica), replica.stopping.subscribe()));
        tokio::spawn(Self::stop_on_fatal(Arc::downgrade(&replica), replica.stopping.subscribe()));
        Ok((replica, node))
    }

    /// This member's id.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// The Raft member.
    pub fn node(&self) -> &NodeHandle<ApplyOutput> {
        &self.node
    }

    /// What a transport's receiving side delivers this replica's inbound Raft messages through.
    pub fn deliverer(&self) -> Deliverer {
        self.node.deliverer()
    }

    /// The latest published Raft state.
    pub fn state(&self) -> NodeState {
        self.state.borrow().clone()
    }

    /// The transaction machinery (the leader's).
    pub fn txn(&self) -> &Arc<TxnManager<E>> {
        &self.txn
    }

    /// The storage.
    pub fn mvcc(&self) -> &Arc<Mvcc<E>> {
        &self.mvcc
    }

    /// The clock.
    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.clock
    }

    /// Which clock readings this replica uses: [`ReplicaOptions::clock_policy`] of its options.
    pub fn policy(&self) -> &ClockPolicy {
        &self.options.policy
    }

    /// Why this replica's clock is unusable right now by [`Replica::policy`] (which refuses
    /// bounds too wide for the lease), if it is. A leader whose clock is unusable serves
    /// nothing: no commits, no leader reads, no closed timestamps (so no follower reads).
    pub fn clock_problem(&self) -> Option<Unusable> {
        self.options.policy.check(self.clock.now()).err()
    }

    /// Logs when this node leads with an unusable clock (it serves nothing then) and when that
    /// ends; once per change.
    fn report_clock(&self, reported: &mut bool) {
        let leads = self.state.borrow().role == Role::Leader;
        let problem = if leads { self.clock_problem() } else { None };
        match &problem {
            Some(why) if !*reported => {
                tracing::warn!(node = self.id, %why, "the leader cannot serve: its clock is unusable");
            }
            None if *reported && leads => {
                tracing::info!(node = self.id, "the leader's clock is usable again");
            }
            _ => {}
        }
        *reported = problem.is_some();
    }

    /// What the state machine publishes: applied index, closed timestamp, members.
    pub fn shared(&self) -> &Arc<ReplicaShared> {
        &self.shared
    }

    /// The highest closed timestamp applied here.
    pub fn closed_ts(&self) -> Timestamp {
        self.shared.closed()
    }

    /// Whether this node leads and holds a lease that is valid now.
    pub fn lease_valid(&self) -> bool {
        let reading = self.usable_now();
        match (self.gate.leadership(reading.as_ref()), reading) {
            (Leadership::Active { lease_until: Some(until) }, Some(r)) => r.latest() < until,
            _ => false,
        }
    }

    fn usable_now(&self) -> Option<ClockReading> {
        self.options.policy.check(self.clock.now()).ok()
    }

    /// The highest timestamp a read may use here right now: the closed timestamp, or at an
    /// active leader with a valid lease its own safe time (never beyond the lease, since a
    /// later leader's commits land above it).
    pub fn safe_time(&self) -> Timestamp {
        let closed = self.shared.closed();
        let reading = self.usable_now();
        match (self.gate.leadership(reading.as_ref()), reading) {
            (Leadership::Active { lease_until: Some(until) }, Some(r)) if r.latest() < until => {
                closed.max(self.txn.safe_time().min(Timestamp::from_nanos(until.as_nanos() - 1)))
            }
            _ => closed,
        }
    }

    /// The leader this node knows of.
    pub fn leader(&self) -> Option<u64> {
        self.state.borrow().leader
    }

    /// The members with their addresses, in id order; learners say so.
    pub fn members(&self) -> Vec<MemberInfo> {
        let conf = self.state.borrow().conf.clone();
        self.members_in(&conf)
    }

    fn members_in(&self, conf: &ConfState) -> Vec<MemberInfo> {
        let state = NodeState { conf: conf.clone(), ..self.state.borrow().clone() };
        let known = self.shared.members();
        state
            .members()
            .into_iter()
            .map(|id| MemberInfo {
                member: known.get(&id).cloned().unwrap_or(Member {
                    id,
                    peer_address: String::new(),
                    client_address: String::new(),
                }),
                voter: state.is_voter(id),
            })
            .collect()
    }

    fn not_leader(&self, leader: Option<u64>) -> Error {
        Error::NotLeader { leader, reason: "this node is not the leader".into() }
    }

    /// Fails unless this node is an active leader; renews a lapsed lease with a Safe ReadIndex
    /// round first.
    async fn ensure_active(&self) -> Result<()> {
        let reading = wait::usable_reading(&*self.clock, &self.options.policy).await?;
        match self.gate.leadership(Some(&reading)) {
            Leadership::Follower { leader } => Err(self.not_leader(leader)),
            Leadership::Starting(why) => Err(Error::Unavailable(why)),
            Leadership::Active { lease_until } => {
                if lease_until.is_some_and(|until| reading.latest() < until) {
                    return Ok(());
                }
                self.renew_lease().await
            }
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
    pub async fn begin_read_only(&self, at: ReadAt) -> Result<Timestamp> {
        self.txn_failed()?;
        if self.ensure_active().await.is_ok() {
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
                    return Ok(ts);
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
            ReadAt::Latest => reading.latest(),
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
        Ok(ts)
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

    /// Waits until reads at `ts` are exact here, at most `follower_wait`.
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

    /// The GC horizon: reads below it are refused.
    pub fn gc_horizon(&self) -> Timestamp {
        Timestamp::from_nanos(self.mvcc.gc_horizon())
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

    /// Commits a decided transaction (leader only; see the module docs). Safe to call again with
    /// the same transaction id: a commit in flight is joined, an applied one answered.
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

    /// Adds a member: as a learner first, then, once it has caught up, as a voter through a joint
    /// configuration left explicitly. Leader only.
    pub async fn add_member(&self, member: Member) -> Result<Vec<MemberInfo>> {
        if member.id == 0 {
            return Err(Error::Rejected("member id 0 is reserved".into()));
        }
        let state = self.leader_state_or_not_leader()?;
        if state.is_voter(member.id) {
            return Ok(self.members());
        }
        if !state.conf.learners.contains(&member.id) {
            let mut cc = ConfChangeV2::default();
            cc.set_changes(vec![single(ConfChangeType::AddLearnerNode, member.id)].into());
            cc.context = member.encode().into();
            self.change_membership(cc).await?;
        }
        self.wait_caught_up(member.id).await?;
        let mut cc = ConfChangeV2::default();
        cc.set_transition(ConfChangeTransition::Explicit);
        cc.set_changes(vec![single(ConfChangeType::AddNode, member.id)].into());
        let joint = self.change_membership(cc).await?;
        let conf = if joint.voters_outgoing.is_empty() {
            joint
        } else {
            self.change_membership(ConfChangeV2::default()).await?
        };
        Ok(self.members_in(&conf))
    }

    /// Removes a member through a joint configuration left explicitly. The leader hands its
    /// leadership to another voter before removing itself (the caller then retries there).
    pub async fn remove_member(&self, id: u64) -> Result<Vec<MemberInfo>> {
        let state = self.leader_state_or_not_leader()?;
        if !state.members().contains(&id) {
            return Ok(self.members());
        }
        if id == self.id {
            let Some(&to) = state.conf.voters.iter().find(|&&v| v != id) else {
                return Err(Error::Rejected("cannot remove the only voter".into()));
            };
            self.node.transfer_leader(to);
            return Err(Error::NotLeader {
                leader: Some(to),
                reason:
                    "the leader is handing over before removing itself; retry at the new leader"
                        .into(),
            });
        }
        let mut cc = ConfChangeV2::default();
        if state.is_voter(id) {
            cc.set_transition(ConfChangeTransition::Explicit);
        }
        cc.set_changes(vec![single(ConfChangeType::RemoveNode, id)].into());
        let mut conf = self.change_membership(cc).await?;
        if !conf.voters_outgoing.is_empty() {
            conf = self.change_membership(ConfChangeV2::default()).await?;
        }
        Ok(self.members_in(&conf))
    }

    fn leader_state_or_not_leader(&self) -> Result<NodeState> {
        let state = self.state.borrow().clone();
        if state.role != Role::Leader {
            return Err(self.not_leader(state.leader));
        }
        Ok(state)
    }

    async fn change_membership(&self, cc: ConfChangeV2) -> Result<ConfState> {
        match self.node.change_membership(cc).await {
            Ok(Ok(conf)) => Ok(conf),
            Ok(Err(ProposeError::NotLeader { leader })) => Err(self.not_leader(leader)),
            Ok(Err(ProposeError::Refused(why))) => Err(Error::Unavailable(why)),
            Ok(Err(e)) => Err(Error::OutcomeUnknown(format!("membership change: {e}"))),
            Err(_) => Err(Error::OutcomeUnknown("the Raft node stopped".into())),
        }
    }

    /// Waits until member `id` has replicated the leader's log up to the commit index seen at the
    /// start.
    async fn wait_caught_up(&self, id: u64) -> Result<()> {
        let target = self.state.borrow().commit_index;
        let deadline = Instant::now() + self.options.catch_up_timeout;
        let mut state = self.state.clone();
        loop {
            {
                let s = state.borrow_and_update();
                if s.role != Role::Leader {
                    return Err(self.not_leader(s.leader));
                }
                if s.progress.get(&id).is_some_and(|&m| m >= target) {
                    return Ok(());
                }
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(Error::Unavailable(format!(
                    "node {id} did not catch up within {}; it stays a learner",
                    humantime_short(self.options.catch_up_timeout)
                )));
            }
            let _ = tokio::time::timeout(left, state.changed()).await;
        }
    }

    /// Stops the background tasks and the Raft node, after persisting the clock's exact floor.
    pub fn shutdown(&self) {
        self.stopping.send_replace(true);
        self.mvcc.halt_gc();
        self.node.shutdown();
        if let Err(e) = self.txn.oracle().persist_floor() {
            tracing::warn!(node = self.id, error = %e, "could not persist the exact timestamp floor");
        }
        if let Err(e) = self.mvcc.flush() {
            tracing::error!(node = self.id, error = %e, "final flush failed");
        }
    }

    /// A fatal error in the transaction layer (a failed write of the clock's high-water mark,
    /// say) means this node's storage can no longer be trusted: the Raft member stops too, so
    /// that it neither wins elections it cannot serve nor acknowledges appends.
    async fn stop_on_fatal(this: std::sync::Weak<Self>, mut stopping: watch::Receiver<bool>) {
        let Some(mut failure) = this.upgrade().map(|r| r.txn.watch_failure()) else {
            return;
        };
        tokio::select! {
            biased;
            _ = stopping.changed() => {}
            r = failure.wait_for(Option::is_some) => {
                let why = match r {
                    Ok(e) => e.as_ref().map(ToString::to_string).unwrap_or_default(),
                    Err(_) => return,
                };
                if let Some(replica) = this.upgrade() {
                    replica.node.fail(format!("transactions stopped: {why}"));
                }
            }
        }
    }

    /// Raises the floor above the log's timestamps and resets the conflict index whenever this
    /// node becomes leader and has caught up (see the module docs).
    async fn start_terms(this: std::sync::Weak<Self>, mut stopping: watch::Receiver<bool>) {
        let Some(mut state) = this.upgrade().map(|r| r.state.clone()) else {
            return;
        };
        loop {
            let Some(replica) = this.upgrade() else { return };
            let pending = {
                let s = state.borrow_and_update();
                s.leader_state.filter(|ls| {
                    ls.caught_up && replica.gate.activated_term.load(Ordering::Acquire) != ls.term
                })
            };
            if let Some(ls) = pending {
                match replica.activate(ls.term, ls.ready_at).await {
                    Ok(()) => tracing::info!(
                        node = replica.id,
                        term = ls.term,
                        "leader active: timestamps above the log's, conflict index reset"
                    ),
                    Err(e) => {
                        tracing::warn!(node = replica.id, term = ls.term, error = %e, "cannot start the term yet; retrying");
                        drop(replica);
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                }
            }
            drop(replica);
            tokio::select! {
                biased;
                r = state.changed() => if r.is_err() { return },
                _ = stopping.changed() => return,
            }
        }
    }

    async fn activate(&self, term: u64, ready_at: Timestamp) -> Result<()> {
        let reading = wait::usable_reading(&*self.clock, &self.options.policy).await?;
        // Straight to the oracle: the gate refuses everything until the term is activated.
        self.txn.oracle().observe(self.shared.max_log_ts(), reading)?;
        // Earlier leaders' read timestamps all lie below their leases' ends, below ready_at.
        self.txn.start_term(ready_at);
        self.gate.activated_term.store(term, Ordering::Release);
        Ok(())
    }

    /// While this node is an active leader: proposes a closed timestamp every `close_interval`
    /// (one at a time).
    async fn close_timestamps(this: std::sync::Weak<Self>, mut stopping: watch::Receiver<bool>) {
        let Some(interval) = this.upgrade().map(|r| r.options.close_interval) else {
            return;
        };
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let in_flight = Arc::new(AtomicBool::new(false));
        let mut clock_reported = false;
        loop {
            tokio::select! {
                biased;
                _ = ticker.tick() => {}
                _ = stopping.changed() => return,
            }
            let Some(replica) = this.upgrade() else { return };
            replica.report_clock(&mut clock_reported);
            if in_flight.load(Ordering::Acquire) || !replica.lease_valid() {
                continue;
            }
            let Ok(ts) = replica.txn.close_timestamp().await else {
                continue;
            };
            in_flight.store(true, Ordering::Release);
            let done = in_flight.clone();
            replica.node.propose_then(Command::Close(ts).encode(), move |_| {
                done.store(false, Ordering::Release);
            });
        }
    }
}

impl<E: Engine + 'static> Replica<E> {
    /// While this node is an active leader: every `gc_interval`, proposes `Gc(h)` with
    /// `h = min(now().earliest - gc_retention, the closed timestamp applied, the oldest read in
    /// use here)`, when that is above the current horizon. The closed timestamp keeps every later
    /// commit above `h` (see the `command` module).
    async fn raise_gc_horizon(this: std::sync::Weak<Self>, mut stopping: watch::Receiver<bool>) {
        let Some((interval, Some(retention))) =
            this.upgrade().map(|r| (r.options.gc_interval, r.options.gc_retention))
        else {
            return;
        };
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                biased;
                _ = ticker.tick() => {}
                _ = stopping.changed() => return,
            }
            let Some(replica) = this.upgrade() else { return };
            if !replica.lease_valid() {
                continue;
            }
            let Some(reading) = replica.usable_now() else { continue };
            let mut horizon =
                reading.earliest().saturating_sub(retention).min(replica.shared.closed());
            if let Some(oldest) = replica.txn.oldest_active_read() {
                horizon = horizon.min(oldest);
            }
            if horizon <= replica.gc_horizon() {
                continue;
            }
            let id = replica.id;
            replica.node.propose_then(Command::Gc(horizon).encode(), move |outcome| {
                if let Err(e) = outcome {
                    tracing::debug!(node = id, %horizon, error = %e, "GC horizon not raised");
                }
            });
        }
    }

    /// On every replica: whenever the applied GC horizon rises (and once at start), deletes what
    /// it makes unreachable, off the Raft thread. Deletions decided at a horizon stay right on
    /// any later state of the same log (a snapshot installed meanwhile has a horizon at least as
    /// high), so this needs no lock against applying or installing.
    async fn collect_garbage(this: std::sync::Weak<Self>, mut stopping: watch::Receiver<bool>) {
        let Some(mut horizons) = this.upgrade().map(|r| r.shared.watch_gc_horizon()) else {
            return;
        };
        horizons.mark_changed(); // a collection a crash interrupted is finished at start
        // The horizon the last whole collection ran at: nothing to do again below it.
        let mut collected = Timestamp::ZERO;
        loop {
            tokio::select! {
                biased;
                changed = horizons.changed() => if changed.is_err() { return },
                _ = stopping.changed() => return,
            }
            let horizon = *horizons.borrow_and_update();
            if horizon == Timestamp::ZERO || horizon <= collected {
                continue;
            }
            let Some(replica) = this.upgrade() else { return };
            let (id, mvcc, inline) =
                (replica.id, replica.mvcc.clone(), replica.options.collect_garbage_inline);
            drop(replica);
            let outcome = if inline {
                Ok(mvcc.collect_garbage())
            } else {
                tokio::task::spawn_blocking(move || mvcc.collect_garbage()).await
            };
            match outcome {
                Ok(Ok(stats)) if stats.interrupted => {
                    // A snapshot replaced the state meanwhile; its install notifies again.
                    tracing::debug!(node = id, %horizon, "garbage collection interrupted")
                }
                Ok(Ok(stats)) => {
                    collected = horizon;
                    tracing::info!(
                    node = id,
                    %horizon,
                    versions_deleted = stats.versions_deleted,
                    versions_kept = stats.versions_kept,
                    txn_records_deleted = stats.txn_records_deleted,
                    "garbage collected"
                    )
                }
                // The next horizon tries again; reads stay exact meanwhile (old versions only
                // linger).
                Ok(Err(e)) => {
                    tracing::error!(node = id, %horizon, error = %e, "garbage collection failed")
                }
                Err(e) => tracing::error!(node = id, error = %e, "garbage collection panicked"),
            }
        }
    }
}

fn single(change_type: ConfChangeType, node_id: u64) -> ConfChangeSingle {
    let mut s = ConfChangeSingle::default();
    s.set_change_type(change_type);
    s.node_id = node_id;
    s
}

fn humantime_short(d: Duration) -> String {
    if d.as_secs() >= 1 && d.subsec_millis() == 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{}ms", d.as_millis())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_lease(lease_ms: u64, renewal_ms: u64) -> ReplicaOptions {
        let mut o = ReplicaOptions::default();
        o.node.lease = Duration::from_millis(lease_ms);
        o.node.lease_renewal = Duration::from_millis(renewal_ms);
        o
    }

    #[test]
    fn the_defaults_are_valid_and_refuse_bounds_too_wide_for_the_lease() {
        let o = ReplicaOptions::default();
        assert_eq!(o.validate(), Ok(()));
        // lease 1 s, renewal 200 ms: 2 × 400 ms + 200 ms = 1 s.
        assert_eq!(o.lease_bound_ceiling(), Duration::from_millis(400));
        let policy = o.clock_policy();
        assert_eq!(policy.max_bound, Duration::from_millis(400));
        let reading = |bound_ms| {
            Ok(ClockReading {
                interval: boundkv_clockbound::TimeInterval::around(
                    Timestamp::from_nanos(1 << 60),
                    Duration::from_millis(bound_ms),
                ),
                status: boundkv_clockbound::ClockStatus::FreeRunning,
            })
        };
        assert!(policy.check(reading(400)).is_ok());
        let e = policy.check(reading(401)).unwrap_err().to_string();
        assert!(
            e.contains("±401ms exceeds the ceiling ±400ms")
                && e.contains("a 1s lease renewed every 200ms"),
            "{e}"
        );
    }

    #[test]
    fn a_tighter_policy_is_kept() {
        let mut o = with_lease(1000, 200);
        o.policy.max_bound = Duration::from_millis(50);
        assert_eq!(o.clock_policy(), o.policy);
    }

    #[test]
    fn a_lease_no_bound_fits_is_refused() {
        for (lease, renewal) in [(200, 200), (100, 200), (0, 0)] {
            let o = with_lease(lease, renewal);
            assert_eq!(
                o.validate(),
                Err(ReplicaOptionsError::NoUsableLease {
                    lease: Duration::from_millis(lease),
                    lease_renewal: Duration::from_millis(renewal),
                })
            );
        }
        let e = Error::from(with_lease(200, 200).validate().unwrap_err()).to_string();
        assert!(
            e.contains("a lease of 200ms renewed every 200ms leaves no usable lease")
                && e.contains("raise the lease"),
            "{e}"
        );
        // The smallest room there is: a nanosecond of bound.
        let mut o = with_lease(200, 200);
        o.node.lease += Duration::from_nanos(2);
        assert_eq!(o.validate(), Ok(()));
        assert_eq!(o.lease_bound_ceiling(), Duration::from_nanos(1));
    }
}
