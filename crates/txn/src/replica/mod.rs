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
//! [`Applier`]: crate::apply::Applier
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
//! A follower cannot know which commits are pending at the leader. The leader tells it, beside
//! the log (the `closed` module): `Closed(c, i)`, with `c` its safe time (below every pending
//! commit, at or below its floor, so every commit at or below `c` is finished and applied at or
//! before its applied index `i`, and every later commit lands above `c`). A replica that has
//! applied `i` serves reads at `ts <= c` exactly. The leader pushes one to every member every
//! `close_interval` (25 ms by default), and a follower read at `now().latest` of the follower's
//! own clock asks for one at once (`CloseRequest(ts)`), which the leader answers as soon as its
//! own `latest` has reached `ts` and nothing at or below it is pending:
//!
//! ```text
//! t (ms)    0.00                     0.05                         0.10
//! follower  read: ts = latest ≈ 5 + ε ── CloseRequest(ts) ──►
//! leader                             latest ≥ ts, nothing pending ≤ ts:
//!                                    c = its latest, i = applied ── Closed(c, i) ──►
//! follower                                                        applied ≥ i, c ≥ ts → serves
//! ```
//!
//! The wait is a round trip, plus the gap between the two clocks' `latest` (at most both bounds),
//! plus applying up to `i`; a follower that cannot catch up within `follower_wait` answers
//! [`Error::FollowerBehind`], naming the leader. Reads at the active leader need no closed
//! timestamp: its own safe time (below every pending commit) is exact. Nothing of this is
//! written: an idle cluster appends nothing to its log for them (under the cluster clock its
//! leader still commits a horizon entry about every 500 ms, see `docs/architecture/time.md`).
//!
//! # Leader changes
//!
//! A new leader's conflict index knows nothing of what an earlier leader validated, so
//! transactions that read before the new term fail with `Expired` and are retried. Proposals
//! of a deposed leader end one of three ways: applied (the new leader committed them), dropped
//! (their index holds another entry, or a later term committed an entry below it: they never
//! apply, the client hears `NotLeader`), or unknown
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
//! gc_retention, its safe time)` (and below any read registered with its transaction manager;
//! replica reads are not registered, so a read that outlives the retention gets
//! `BelowGcHorizon`); with the default hour of retention:
//!
//! ```text
//! 12:00:00  leader's safe time 12:00:00.001, proposes Gc(h = 11:00:00)
//!           every replica applies it: GC_HORIZON = 11:00:00, in the batch with the applied index
//!           from now on, reads at ts < 11:00:00 answer BelowGcHorizon (here and on every replica)
//!           in the background each replica deletes, per key, every version below the newest one
//!           at or below 11:00:00 (and that one too if it is a tombstone)
//! ```
//!
//! Because `h` is at or below the leader's safe time when it proposed `Gc(h)`, every commit not
//! yet applied lies above it (pending ones above the safe time, later ones above the floor), and
//! a later leader's commits lie above the proposer's lease. A read that passed the horizon check
//! when it began checks again after reading: collection starts only once the horizon has risen,
//! so if the horizon is still at or below the read's timestamp, nothing it could see was deleted
//! meanwhile.
//!
//! Transaction records below the horizon count for nothing when deduplicating a resent commit
//! (each replica's collector deletes them in its own time, so their presence is not the same
//! everywhere). A snapshot install stops a collection running meanwhile (see
//! `Mvcc::import_batch`); the install's horizon notification starts it again.

mod applier;
mod background;
mod closed;
mod command;
mod commit;
mod gate;
pub mod leap;
mod machine;
mod membership;
mod options;
mod reads;

use std::collections::BTreeMap;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

use boundkv_clockbound::{Clock, ClockPolicy, OracleOptions, Timestamp, TimestampOracle};
use boundkv_consensus::log_store::RaftLogStore;
use boundkv_consensus::node::{Node, NodeHandle, NodeParts, NodeState, Waker};
use boundkv_consensus::transport::{Deliverer, Transport};
use boundkv_storage::{Engine, Mvcc};

use crate::error::{Error, Result};
use crate::hwm::MvccHighWaterMark;
use crate::manager::TxnManager;
use crate::record::TxnId;

use applier::RaftApplier;
use commit::SharedCommit;
use gate::LeaderGate;

pub use command::{Command, DecodeError, LOCAL_META, Member, SnapshotData, meta};
pub use machine::{ApplyOutput, MvccStateMachine, ReplicaShared};
pub use membership::MemberInfo;
pub use options::{ReplicaOptions, ReplicaOptionsError, UnsafeLeaseClock};
pub use reads::ReadAt;

/// The Raft member under a replica over engine `E`, for a caller that drives it
/// ([`Replica::start_driven`]).
pub type RaftNode<E> = Node<E, MvccStateMachine<E>>;

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
    /// The clock handed to [`Replica::start`], before the peer clock checks widen it.
    source_clock: Arc<dyn Clock>,
    in_flight: Mutex<BTreeMap<TxnId, SharedCommit>>,
    stopping: watch::Sender<bool>,
    /// The highest `ReadAt::Latest` timestamp served here (see `reads.rs`).
    latest_read_floor: AtomicU64,
    /// This follower's requests for closes (see `closed`).
    close_asks: Mutex<closed::CloseAsks>,
    /// As leader: per member whose request waits, the highest timestamp it asked for.
    close_waits: Mutex<BTreeMap<u64, Timestamp>>,
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
        let (sm, shared) =
            MvccStateMachine::new(mvcc.clone(), options.founding.clone().unwrap_or_default())
                .map_err(|e| Error::Fatal(e.to_string()))?;
        leap::check_at_start(id, options.leap, &shared.members(), options.founding.as_deref())?;
        if options.unsafe_ignore_lease {
            tracing::error!(
                node = id,
                "UNSAFE: leases are ignored; external consistency does not hold"
            );
        }
        if options.unsafe_no_read_floor {
            tracing::error!(
                node = id,
                "UNSAFE: follower reads at the latest time take no floor; reads may go back in time"
            );
        }
        if options.unsafe_lease_clock.is_some() {
            tracing::error!(
                node = id,
                "UNSAFE: the lease is measured on a second clock; external consistency does not hold"
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
                unsafe_lease_clock: options.unsafe_lease_clock.as_ref().map(|c| c.0.clone()),
                policy: options.policy.clone(),
                cluster_clock: options.cluster_clock.clone(),
                bootstrap,
            },
            waker,
            now,
        )
        .map_err(|e| Error::Fatal(e.to_string()))?;
        // From here on every reading is the node's: `clock` widened to what the peer clock
        // checks verify (boundkv_consensus::verified_clock).
        let source_clock = clock;
        let clock = handle.clock().clone();
        let oracle = TimestampOracle::open(
            clock.clone(),
            OracleOptions { policy: options.policy.clone(), ..OracleOptions::default() },
            Box::new(MvccHighWaterMark::new(mvcc.clone())),
        )?;
        let state = handle.watch();
        let gate = Arc::new(LeaderGate {
            id,
            ignore_lease: options.unsafe_ignore_lease,
            policy: options.policy.clone(),
            node: state.clone(),
            activated_term: Arc::new(AtomicU64::new(0)),
            shared: shared.clone(),
            cluster: options.cluster_clock.clone(),
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
            source_clock,
            in_flight: Mutex::new(BTreeMap::new()),
            latest_read_floor: AtomicU64::new(0),
            close_asks: Mutex::new(closed::CloseAsks::default()),
            close_waits: Mutex::new(BTreeMap::new()),
            stopping: watch::Sender::new(false),
        });
        replica.start_closed_timestamps();
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
        tokio::spawn(Self::watch_leap_policy(
            Arc::downgrade(&replica),
            replica.stopping.subscribe(),
        ));
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

    /// The cluster clock, when it is this replica's source (`--clock cluster:RHO`): for status
    /// pages and metrics.
    pub fn cluster_clock(&self) -> Option<&Arc<boundkv_consensus::cluster_clock::ClusterClock>> {
        self.options.cluster_clock.as_ref()
    }

    /// The clock this replica was started on, before the peer clock checks widened its
    /// readings to what the peers verify ([`Replica::clock`] is the one every timestamp is
    /// taken from): for status pages and metrics, to show what the widening adds.
    pub fn source_clock(&self) -> &Arc<dyn Clock> {
        &self.source_clock
    }

    /// Which clock readings this replica uses: [`ReplicaOptions::clock_policy`] of its options.
    pub fn policy(&self) -> &ClockPolicy {
        &self.options.policy
    }

    /// How this member's clock handles a leap second (its `--leap`).
    pub fn leap_policy(&self) -> boundkv_clockbound::LeapPolicy {
        self.options.leap
    }

    /// What the state machine publishes: applied index, closed timestamp, members.
    pub fn shared(&self) -> &Arc<ReplicaShared> {
        &self.shared
    }

    /// The closed timestamp here: reads at or below it are exact on this replica.
    pub fn closed_ts(&self) -> Timestamp {
        self.shared.closed()
    }

    /// The leader this node knows of.
    pub fn leader(&self) -> Option<u64> {
        self.state.borrow().leader
    }

    /// The GC horizon: reads below it are refused.
    pub fn gc_horizon(&self) -> Timestamp {
        Timestamp::from_nanos(self.mvcc.gc_horizon())
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
}

fn humantime_short(d: Duration) -> String {
    if d.as_secs() >= 1 && d.subsec_millis() == 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{}ms", d.as_millis())
    }
}
