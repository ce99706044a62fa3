//! [`Node`]: one Raft group member, driven turn by turn by one owner.
//!
//! The owner holds the `RawNode` and everything it touches. Everything else talks to it through
//! its inbox (a channel): inbound peer messages, proposals, membership changes, read-index
//! requests, transport reports. The node is *step-driven*: it never reads a clock of its own and
//! never blocks; its owner calls [`Node::turn`] with the time and waits for input or
//! [`Node::next_deadline`] in between:
//!
//! ```text
//! loop {                                   // the owner: a thread (Node::spawn) or a simulator
//!     wait for an input, at most until node.next_deadline()
//!     node.turn(now):
//!         drain every input already queued (so many proposals share one Ready, one fsync)
//!         tick if due; renew the lease if due; time out stale reads
//!         handle_ready()
//!         publish the node's state
//! }
//! ```
//!
//! `boundkv serve` runs it on a thread of its own ([`Node::spawn`], real time); the simulator
//! (`boundkv-sim`) takes the same turns on virtual time, woken by the [`Waker`] it passes to
//! [`Node::new`] whenever input arrives. The code that decides anything is the same in both.
//!
//! The node is built first and makes its own inbox, typed by its state machine's output; every
//! other party gets a handle from it afterwards: callers a [`NodeHandle`], a transport's
//! receiving side a [`Deliverer`] ([`NodeHandle::deliverer`]), its sending side a [`Reporter`]
//! with each message. Deliverers and reporters carry no type parameter (a router or a peer
//! transport keeps maps of them): they wrap the typed channel in a closure that sends the
//! peer-facing part of the input only.
//!
//! `Node::handle_ready` is the one place Raft's I/O ordering lives; its steps are numbered in
//! its documentation. Proposals are correlated with the entries that resolve them by a request
//! id in the entry's context and the (index, term) the entry was appended at: an entry applied
//! at that index with another term or context means the proposal was lost in a leader change,
//! and its caller hears [`ProposeError::Dropped`], which means it did not apply and never will.
//! So does a proposal of an earlier term at an index above an applied entry of a later term
//! (`Node::drop_orphaned_proposals`): no later leader's log can hold it.
//!
//! # The lease
//!
//! raft-rs's `LeaseBased` reads assume bounded clock drift and no pauses without measuring
//! either; this node keeps a lease on ClockBound intervals instead. Every read-index request (a
//! periodic renewal, or a caller's) records `earliest` of a clock reading taken *before* raft
//! broadcasts the heartbeat that carries it. When a quorum answers (a `ReadState` for that
//! request), every member of that quorum heard from this leader, in this term, after that
//! moment. A member that has voted for a newer leader answers nothing in this term, so no newer
//! leader had been elected when the heartbeat was sent, in true time. The lease is valid until
//! `sent.earliest + lease`, and the leader uses it only while `now().latest` is below that: in
//! true time, before `sent + lease`.
//!
//! A new leader issues nothing until `now().earliest` exceeds `latest + lease` of a reading
//! taken when it became leader ([`LeaderState::ready_at`]): in true time, `lease` after its
//! election, which came after every heartbeat any earlier leader's lease was measured from.
//! Leases are disjoint in true time whatever the clocks' errors within their bounds, and across
//! pauses: a paused leader that wakes finds `now().latest` past its lease. A worked example
//! (lease 1 s, bound 1 ms; times are true time):
//!
//! ```text
//! 10.000  leader A reads [9.999, 10.001], sends heartbeat h
//! 10.002  a quorum acks h                  A's lease: until 9.999 + 1 = 10.999 (by A's latest)
//! 10.300  A is paused (SIGSTOP)
//! 11.600  B elected, reads [11.599, 11.601]; ready_at = 11.601 + 1 = 12.601 (by B's earliest)
//! 12.000  A resumes: now().latest = 12.001 > 10.999, lease gone: A issues nothing
//! 12.603  B's earliest passes 12.601: B issues its first timestamp, above everything A issued
//! ```
//!
//! The node publishes both numbers in [`NodeState::leader_state`]; the layer that issues
//! timestamps enforces them.
//!
//! # Fencing
//!
//! Every lease and `ready_at` above trusts the clock's interval. The node checks its clock
//! against its peers' ([`crate::clock_check`]): every `probe_interval` it probes every member
//! through [`Transport::send_clock`], answers their probes with its own reading, and judges its
//! clock by majority (Marzullo). While its clock is fenced (and from its start until the first
//! verdict) the node publishes why in [`NodeState::clock_fence`] (the transaction layer then
//! refuses every timestamp and read), starts no lease, sets no `ready_at`, never campaigns
//! (its election clock held at the election timeout, where it still votes for others),
//! refuses `MsgTimeoutNow`, and, leading, hands leadership to a voter whose clock agreed (a
//! transfer a turn, while none is under way). At the fence it drops its lease and `ready_at`;
//! both are measured afresh once the fence lifts. A leader also refuses to transfer to a member
//! whose clock it found inconsistent: the member would refuse, and a pending transfer holds
//! every proposal back for an election timeout.
//!
//! # Durability
//!
//! Everything a Ready asks to persist (a snapshot's reset of the log and the state machine,
//! new entries, the hard state) is written as **one** engine batch and flushed (`fdatasync`)
//! before any message that promises it is sent. The state machine writes its applied index in
//! the same batch as the state it applied, and a membership change its configuration with the
//! log's conf state, so that after a crash the state machine, the configuration and the log
//! agree. The only write without a sync is a commit index that merely moved forward (raft-rs
//! allows it); on restart [`RaftLogStore::repair_commit`] raises it to the applied index if it
//! was lost, which is what raft-rs needs to start (`applied <= commit`).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender, channel};
use std::time::{Duration, Instant};

use protobuf::Message as _;
use raft::prelude::*;
use raft::{ReadOnlyOption, StateRole};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::sync::{oneshot, watch};

use boundkv_clockbound::{Clock, ClockPolicy, ClockReading, Timestamp};
use boundkv_storage::{Engine, WriteBatch};

use crate::clock_check::{
    ClockCheckOptions, ClockCheckReport, ClockChecker, ClockFrame, ClockMessage, Fence, FenceChange,
};
use crate::cluster_clock::{ClusterClock, HORIZON_KEY, horizon_context, horizon_of};
use crate::log_store::{LogStoreError, RaftLogStore, SnapshotSource};
use crate::transport::{
    ClockResponder, ClosedTimestampsInbox, Deliverer, PeerInput, Reporter, Transport,
};
use crate::verified_clock::{Frame, FramedReader, PeerVerifiedClock, VerifiedRange};

/// Settings of a [`Node`].
#[derive(Clone, Debug)]
pub struct NodeConfig {
    /// This member's id (non-zero, unique in the group).
    pub id: u64,
    /// Raft's unit of time. Default 50 ms.
    pub tick: Duration,
    /// Ticks without hearing from a leader before campaigning (raft-rs randomizes between this
    /// and twice this). Default 20 (1 s).
    pub election_ticks: usize,
    /// Ticks between leader heartbeats. Default 2 (100 ms).
    pub heartbeat_ticks: usize,
    /// Largest append message. Default 1 MiB.
    pub max_size_per_msg: u64,
    /// Append messages in flight per follower. Default 256.
    pub max_inflight_msgs: usize,
    /// How long a quorum's confirmation of leadership lasts (see the module docs). Default 1 s.
    pub lease: Duration,
    /// How often a leader renews its lease. Default 200 ms.
    pub lease_renewal: Duration,
    /// A read-index request unanswered this long fails with [`ProposeError::Timeout`] (raft-rs
    /// drops such requests silently when there is no leader). Default 3 s.
    pub read_timeout: Duration,
    /// Keep this many applied entries before compacting the log below them. Default 10,000.
    pub keep_entries: u64,
    /// Seeds the randomized election timeout. `None` (the default) seeds it from the OS; a
    /// simulation passes a seed so that a run repeats exactly. (raft-rs draws the timeout from
    /// `rand::thread_rng`, which cannot be seeded; the node overrides every draw with its own.)
    pub seed: Option<u64>,
    /// Peer clock checks (see [`crate::clock_check`] and "Fencing" in the module docs). `None`
    /// switches them off: no probes, never fenced (for step-by-step scripts that print every
    /// message). Default on.
    pub clock_checks: Option<ClockCheckOptions>,
}

impl Default for NodeConfig {
    fn default() -> Self {
        NodeConfig {
            id: 1,
            tick: Duration::from_millis(50),
            election_ticks: 20,
            heartbeat_ticks: 2,
            max_size_per_msg: 1 << 20,
            max_inflight_msgs: 256,
            lease: Duration::from_secs(1),
            lease_renewal: Duration::from_millis(200),
            read_timeout: Duration::from_secs(3),
            keep_entries: 10_000,
            seed: None,
            clock_checks: Some(ClockCheckOptions::default()),
        }
    }
}

/// An entry Raft has committed, handed to the state machine.
#[derive(Clone, Copy, Debug)]
pub struct Committed<'a> {
    /// Its log index.
    pub index: u64,
    /// The term it was proposed in.
    pub term: u64,
    /// What was proposed (empty for a new leader's no-op).
    pub data: &'a [u8],
}

/// A state-machine failure: fatal, the node stops (its storage can no longer be trusted).
/// Errors a client should hear of are outputs, not these (see [`StateMachine`]).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum StateMachineError {
    /// The engine the state machine keeps its state in failed.
    #[error("state machine: {0}")]
    Storage(#[from] boundkv_storage::Error),
    /// Bytes the state machine must read do not decode: `what` names them (its stored metadata,
    /// a snapshot's data), `why` is the decoder's complaint.
    #[error("state machine: {what} does not decode: {why}")]
    Corrupt {
        /// What does not decode.
        what: String,
        /// Why not.
        why: String,
    },
    /// What the state machine was handed contradicts itself or the state (a snapshot whose data
    /// was taken at another index than the snapshot's), saying how.
    #[error("state machine: {0}")]
    Invalid(String),
}

/// What a Raft group replicates into. It lives in the same engine as the node's
/// [`RaftLogStore`], so that some of its writes can join the log's.
///
/// # To ensure correctness
/// - `apply` must be deterministic: the same entries give the same state on every member. Errors
///   a client should hear of (a commit that is refused) are outputs, not errors.
/// - `apply` must write the index of the last entry it applied *in the same atomic write* as
///   the state changes, and `applied_index` must return the last index so written: after a crash
///   the node re-applies from there, so applying the entries after it again must be harmless.
/// - The batches of `bootstrap`, `membership` and `restore` are written by the node together with
///   the log's own change (in one engine batch); they must carry the applied index as well (1
///   for `bootstrap`, the entry's index, the snapshot's index), and the state machine must not
///   consider them applied until [`StateMachine::staged_written`] is called.
/// - An error is fatal: the node stops.
pub trait StateMachine: Send + 'static {
    /// What applying an entry yields for its proposer.
    type Output: Send + 'static;

    /// The index of the last entry applied.
    fn applied_index(&self) -> u64;

    /// Applies committed entries in order (including empty no-ops), returning one output each.
    fn apply(&mut self, entries: &[Committed<'_>]) -> Result<Vec<Self::Output>, StateMachineError>;

    /// The founding state of a brand-new group, at applied index 1 (see
    /// [`RaftLogStore::bootstrap`]).
    fn bootstrap(&mut self, conf: &ConfState) -> Result<WriteBatch, StateMachineError>;

    /// Records a membership change applied at `index` (its context carries, for instance, a new
    /// member's address) and the configuration that resulted.
    fn membership(
        &mut self,
        index: u64,
        change: &ConfChangeV2,
        conf: &ConfState,
    ) -> Result<WriteBatch, StateMachineError>;

    /// Replaces all state with a snapshot's `data`, taken at `index`.
    fn restore(&mut self, index: u64, data: &[u8]) -> Result<WriteBatch, StateMachineError>;

    /// The last batch from `bootstrap`, `membership` or `restore` is durable: reload what it
    /// changed.
    fn staged_written(&mut self) -> Result<(), StateMachineError>;

    /// Where the log store gets snapshot data from (the state at the applied index).
    fn snapshot_source(&self) -> Arc<dyn SnapshotSource>;
}

/// Why a proposal, a membership change or a read did not go through.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ProposeError {
    /// This member is not the leader (or is handing leadership over); nothing was proposed.
    /// `leader` is the leader it knows of.
    #[error("not the leader (leader: {leader:?})")]
    NotLeader {
        /// The leader's id, if known.
        leader: Option<u64>,
    },
    /// The entry was replaced by another leader's, or a later term committed an entry below it
    /// (so no leader's log can hold it any more): it did not apply and never will.
    #[error("the proposal was dropped by a leader change; it did not apply")]
    Dropped,
    /// raft-rs refused a membership change (another is pending, or it is invalid).
    #[error("membership change refused: {0}")]
    Refused(String),
    /// A snapshot replaced this member's log up to or past the proposal's entry: whether the
    /// entry applied is part of the snapshot's state, not known here. Ask again (a resent commit
    /// is answered from the state).
    #[error("a snapshot covered the proposal's entry; its outcome is unknown here, ask again")]
    Superseded,
    /// A read-index request got no answer in time.
    #[error("no answer within the timeout")]
    Timeout,
    /// The node has stopped. A proposal in flight may or may not apply.
    #[error("the Raft node has stopped")]
    Stopped,
}

/// Role, as the outside needs it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Leads its term.
    Leader,
    /// Follows a leader (or waits for one).
    Follower,
    /// Campaigning.
    Candidate,
    /// Asking whether a campaign could win.
    PreCandidate,
}

/// What a leader publishes about its right to issue timestamps (see the module docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LeaderState {
    /// The term it leads.
    pub term: u64,
    /// Issue nothing until `now().earliest` is past this: every earlier leader's lease has
    /// surely expired by then. `Timestamp::MAX` until a usable clock reading sets it.
    pub ready_at: Timestamp,
    /// Every entry appended before this term began has been applied here.
    pub caught_up: bool,
    /// The lease: valid while `now().latest` is below this. `None` before the first quorum
    /// confirmation of the term.
    pub lease_until: Option<Timestamp>,
}

/// A member's state, published on every change.
#[derive(Clone, Debug, PartialEq)]
pub struct NodeState {
    /// This member.
    pub id: u64,
    /// Its role.
    pub role: Role,
    /// The current term.
    pub term: u64,
    /// The leader it knows of.
    pub leader: Option<u64>,
    /// Raft's commit index.
    pub commit_index: u64,
    /// The state machine's applied index.
    pub applied_index: u64,
    /// The log's last index.
    pub last_index: u64,
    /// The configuration (voters, outgoing voters while joint, learners).
    pub conf: ConfState,
    /// Set while this member leads.
    pub leader_state: Option<LeaderState>,
    /// While leading: the highest log index known to be replicated on each member.
    pub progress: BTreeMap<u64, u64>,
    /// The node stopped after a fatal error.
    pub failed: Option<String>,
    /// Why this member's clock is fenced ("by the peer clock checks: …", or under the cluster
    /// clock "by the cluster clock: …"), if it is: it then issues no timestamps, holds no lease,
    /// serves no reads, and hands leadership away (or, convicted by the cluster clock, steps
    /// down).
    pub clock_fence: Option<String>,
    /// Whether that fence is only the one every member starts with, before its first check has
    /// reached a majority (a transient "starting", not a disagreement).
    pub clock_unchecked: bool,
}

impl NodeState {
    /// Whether `id` votes (in the incoming or, while joint, the outgoing configuration).
    pub fn is_voter(&self, id: u64) -> bool {
        self.conf.voters.contains(&id) || self.conf.voters_outgoing.contains(&id)
    }

    /// Every member, voters and learners.
    pub fn members(&self) -> Vec<u64> {
        let mut ids: Vec<u64> = self
            .conf
            .voters
            .iter()
            .chain(&self.conf.voters_outgoing)
            .chain(&self.conf.learners)
            .chain(&self.conf.learners_next)
            .copied()
            .collect();
        ids.sort_unstable();
        ids.dedup();
        ids
    }

    /// Whether the configuration is joint (between two voter sets).
    pub fn is_joint(&self) -> bool {
        !self.conf.voters_outgoing.is_empty()
    }
}

/// Inputs of the Raft thread, for a state machine whose output is `O`.
enum Input<O> {
    /// From the transport: a message, or a report.
    Peer(PeerInput),
    Propose {
        data: Vec<u8>,
        respond: Respond<O>,
    },
    ConfChange {
        change: ConfChangeV2,
        respond: oneshot::Sender<Result<ConfState, ProposeError>>,
    },
    ReadIndex {
        respond: oneshot::Sender<Result<u64, ProposeError>>,
    },
    Campaign,
    TransferLeader(u64),
    Pause(Duration),
    /// A layer above hit a fatal error: stop as failed.
    Fail(String),
    Shutdown,
}

/// How a proposal's outcome reaches its proposer: called once, on the Raft thread.
type Respond<O> = Box<dyn FnOnce(Result<O, ProposeError>) + Send>;

/// Wakes a driver that does not block on the node's inbox: called after every input sent to it
/// (see [`Node::new`]).
pub type Waker = Arc<dyn Fn() + Send + Sync>;

/// The sending side of a node's inbox.
struct InboxSender<O> {
    tx: Sender<Input<O>>,
    wake: Option<Waker>,
}

impl<O> Clone for InboxSender<O> {
    fn clone(&self) -> Self {
        InboxSender { tx: self.tx.clone(), wake: self.wake.clone() }
    }
}

impl<O> InboxSender<O> {
    fn send(&self, input: Input<O>) -> Result<(), std::sync::mpsc::SendError<Input<O>>> {
        self.tx.send(input)?;
        if let Some(wake) = &self.wake {
            wake();
        }
        Ok(())
    }
}

impl<O: Send + 'static> InboxSender<O> {
    /// The inbox as a transport sees it: peer input only, with the output type erased.
    fn peer_sender(&self) -> crate::transport::PeerSender {
        let inbox = self.clone();
        Arc::new(move |input| inbox.send(Input::Peer(input)).is_ok())
    }
}

/// A cheap, cloneable handle to a running node.
pub struct NodeHandle<O> {
    id: u64,
    inbox: InboxSender<O>,
    state: watch::Receiver<NodeState>,
    clock_report: Arc<std::sync::Mutex<ClockCheckReport>>,
    policy_fence: Arc<std::sync::Mutex<Option<String>>>,
    thread: Arc<std::sync::Mutex<Option<std::thread::JoinHandle<()>>>>,
    clock: Arc<dyn Clock>,
    clock_responder: Option<Arc<ClockResponder>>,
    closed_timestamps: ClosedTimestampsInbox,
    transport: Arc<dyn Transport>,
}

impl<O> Clone for NodeHandle<O> {
    fn clone(&self) -> Self {
        NodeHandle {
            id: self.id,
            inbox: self.inbox.clone(),
            state: self.state.clone(),
            clock_report: self.clock_report.clone(),
            policy_fence: self.policy_fence.clone(),
            thread: self.thread.clone(),
            clock: self.clock.clone(),
            clock_responder: self.clock_responder.clone(),
            closed_timestamps: self.closed_timestamps.clone(),
            transport: self.transport.clone(),
        }
    }
}

impl<O: Send + 'static> NodeHandle<O> {
    /// The clock every timestamp of this member is to be taken from: [`NodeParts::clock`]
    /// widened to what the peer clock checks verify ([`crate::verified_clock`]), or that clock
    /// itself without checks. The node's lease and `ready_at` are measured on it.
    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.clock
    }

    /// This member's id.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// What the peer clock checks measured last, and the fence (refreshed at every probe round
    /// and every verdict).
    pub fn clock_checks(&self) -> ClockCheckReport {
        self.clock_report.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Fences this member's clock for a reason of policy (or lifts that fence, with `None`),
    /// whatever the peer clock checks measure: the transaction layer does so for a member whose
    /// leap-second policy differs from the majority's inside a leap window. Applied at the next
    /// probe round, with the same effects as a measured fence (see "Fencing" in the module
    /// docs); nothing without peer clock checks.
    pub fn set_policy_fence(&self, why: Option<String>) {
        *self.policy_fence.lock().unwrap_or_else(|e| e.into_inner()) = why;
    }

    /// Hands an inbound peer message to the node.
    pub fn step(&self, msg: Message) {
        let _ = self.inbox.send(Input::Peer(PeerInput::Message(Box::new(msg))));
    }

    /// The inbox as a [`Reporter`], for transports that deliver to this node.
    pub fn reporter(&self) -> Reporter {
        Reporter::new(self.inbox.peer_sender())
    }

    /// What a transport's receiving side delivers inbound messages through.
    pub fn deliverer(&self) -> Deliverer {
        Deliverer::new(
            self.inbox.peer_sender(),
            self.clock_responder.clone(),
            self.closed_timestamps.clone(),
        )
    }

    /// Sets where this member's inbound closed timestamp frames go ([`ClockMessage::Closed`],
    /// [`ClockMessage::CloseRequest`]): the transaction layer's side transport. Called once;
    /// a later call is ignored. `handler` runs on the transport's task or thread, the moment a
    /// frame arrives: it must not block.
    pub fn on_closed_timestamps(&self, handler: impl Fn(ClockFrame) + Send + Sync + 'static) {
        let _ = self.closed_timestamps.set(Box::new(handler));
    }

    /// Sends a closed timestamp frame to `frame.to`, fire-and-forget, on the transport the clock
    /// checks use (it may be lost, delayed or reordered like any of them).
    pub fn send_closed_timestamps(&self, frame: ClockFrame) {
        debug_assert!(frame.message.is_closed_timestamps());
        self.transport.send_clock(frame);
    }

    /// Proposes `data`; resolves with the state machine's output for it once applied here.
    ///
    /// [`ProposeError::NotLeader`] and [`ProposeError::Dropped`] mean it did not apply;
    /// [`ProposeError::Stopped`] that it may or may not.
    pub fn propose(&self, data: Vec<u8>) -> oneshot::Receiver<Result<O, ProposeError>> {
        let (tx, rx) = oneshot::channel();
        let respond: Respond<O> = Box::new(move |r| {
            let _ = tx.send(r);
        });
        if let Err(std::sync::mpsc::SendError(Input::Propose { respond, .. })) =
            self.inbox.send(Input::Propose { data, respond })
        {
            respond(Err(ProposeError::Stopped));
        }
        rx
    }

    /// Proposes `data` and calls `then` with the outcome (on the Raft thread, once the entry is
    /// applied here or the proposal failed: keep it short, never block in it). The same outcomes
    /// as [`NodeHandle::propose`], without a channel.
    pub fn propose_then(
        &self,
        data: Vec<u8>,
        then: impl FnOnce(Result<O, ProposeError>) + Send + 'static,
    ) {
        let respond: Respond<O> = Box::new(then);
        if let Err(std::sync::mpsc::SendError(Input::Propose { respond, .. })) =
            self.inbox.send(Input::Propose { data, respond })
        {
            respond(Err(ProposeError::Stopped));
        }
    }

    /// Proposes a membership change; resolves with the new configuration once applied here.
    /// An empty change leaves a joint configuration.
    pub fn change_membership(
        &self,
        change: ConfChangeV2,
    ) -> oneshot::Receiver<Result<ConfState, ProposeError>> {
        let (tx, rx) = oneshot::channel();
        if let Err(std::sync::mpsc::SendError(Input::ConfChange { respond, .. })) =
            self.inbox.send(Input::ConfChange { change, respond: tx })
        {
            let _ = respond.send(Err(ProposeError::Stopped));
        }
        rx
    }

    /// Safe ReadIndex: resolves with a commit index confirmed by a quorum, once this member has
    /// applied up to it (leader only). Also renews the lease.
    pub fn read_index(&self) -> oneshot::Receiver<Result<u64, ProposeError>> {
        let (tx, rx) = oneshot::channel();
        if let Err(std::sync::mpsc::SendError(Input::ReadIndex { respond })) =
            self.inbox.send(Input::ReadIndex { respond: tx })
        {
            let _ = respond.send(Err(ProposeError::Stopped));
        }
        rx
    }

    /// The latest published state.
    pub fn state(&self) -> NodeState {
        self.state.borrow().clone()
    }

    /// A receiver of state changes.
    pub fn watch(&self) -> watch::Receiver<NodeState> {
        self.state.clone()
    }

    /// Asks the node to campaign now.
    pub fn campaign(&self) {
        let _ = self.inbox.send(Input::Campaign);
    }

    /// Asks the leader to hand leadership to `to`.
    pub fn transfer_leader(&self, to: u64) {
        let _ = self.inbox.send(Input::TransferLeader(to));
    }

    /// Stops the node as failed, for `why`: a layer above it found that the node's storage can
    /// no longer be trusted (a fatal error outside Raft, such as a failed write of the clock's
    /// high-water mark). A failed node must not take part in elections: it could win one and
    /// then refuse every request. Proposals in flight fail with [`ProposeError::Stopped`].
    pub fn fail(&self, why: String) {
        let _ = self.inbox.send(Input::Fail(why));
    }

    /// **Tests only**: stops the Raft thread for `d`, as a paused process would be.
    #[doc(hidden)]
    pub fn pause_for_test(&self, d: Duration) {
        let _ = self.inbox.send(Input::Pause(d));
    }

    /// Whether the Raft thread is still running.
    pub fn is_running(&self) -> bool {
        self.thread
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .is_some_and(|t| !t.is_finished())
    }

    /// Stops the node and waits for its thread. Proposals in flight fail with
    /// [`ProposeError::Stopped`].
    pub fn shutdown(&self) {
        let _ = self.inbox.send(Input::Shutdown);
        if let Some(t) = self.thread.lock().unwrap_or_else(|e| e.into_inner()).take() {
            let _ = t.join();
        }
    }
}

/// A proposal awaiting its entry. It has no deadline on purpose: until the entry at its index
/// is applied here (ours: success; someone else's: dropped) or the node stops, its outcome is
/// unknown, and the layer above must keep treating it as possibly committed. Callers put their
/// own timeouts on the answer.
struct PendingProposal<O> {
    index: u64,
    term: u64,
    respond: Responder<O>,
}

enum Responder<O> {
    Data(Respond<O>),
    Conf(oneshot::Sender<Result<ConfState, ProposeError>>),
}

impl<O> Responder<O> {
    fn fail(self, e: ProposeError) {
        match self {
            Responder::Data(f) => f(Err(e)),
            Responder::Conf(tx) => {
                let _ = tx.send(Err(e));
            }
        }
    }
}

struct PendingRead {
    term: u64,
    /// `earliest` of the clock reading taken before the request went out (the lease's start).
    sent_earliest: Option<Timestamp>,
    deadline: Instant,
    waiters: Vec<oneshot::Sender<Result<u64, ProposeError>>>,
}

/// A running Raft member (see the module docs). Construct with [`Node::start`], or with
/// [`Node::new`] to drive it yourself.
pub struct Node<E: Engine, SM: StateMachine> {
    config: NodeConfig,
    raw: RawNode<RaftLogStore<E>>,
    sm: SM,
    transport: Arc<dyn Transport>,
    reporter: Reporter,
    clock: Arc<dyn Clock>,
    /// What the lease and `ready_at` are measured on: `clock`, except under the
    /// `unsafe_lease_clock` mutation.
    lease_clock: Arc<dyn Clock>,
    policy: ClockPolicy,
    inbox: Receiver<Input<SM::Output>>,
    /// An input the thread driver received while blocking, handled first in the next turn.
    stashed: Option<Input<SM::Output>>,
    /// A pause a test asked for, for the driver to carry out.
    paused: Option<Duration>,
    state: watch::Sender<NodeState>,
    next_request: u64,
    /// Proposals awaiting their entry, by request id (ordered, so that failing them all
    /// answers in the same order on every run).
    proposals: BTreeMap<u64, PendingProposal<SM::Output>>,
    /// Request ids by the index their entry was appended at.
    proposal_index: BTreeMap<u64, u64>,
    /// Read-index requests sent to raft, by context.
    reads: BTreeMap<Vec<u8>, PendingRead>,
    /// Callers' read-index requests held until this leader has committed an entry in its term
    /// (raft-rs drops them silently before that).
    deferred_reads: Vec<(Instant, oneshot::Sender<Result<u64, ProposeError>>)>,
    /// Confirmed read indexes waiting for the state machine to catch up.
    read_waiters: BTreeMap<u64, Vec<oneshot::Sender<Result<u64, ProposeError>>>>,
    next_tick: Instant,
    next_lease_renewal: Instant,
    leader: Option<LeaderState>,
    /// The last index when this term's leadership began; caught up once applied.
    term_start_index: u64,
    failed: Option<String>,
    stopped: bool,
    /// The driver's time at the latest turn.
    now: Instant,
    /// Draws randomized election timeouts (see `pin_election_timeout`).
    election_rng: StdRng,
    /// The (term, role) the current election timeout was drawn for.
    election_key: Option<(u64, StateRole)>,
    election_timeout: usize,
    /// The peer clock checks, if on.
    clock_check: Option<ClockChecker>,
    /// The fence of policy [`NodeHandle::set_policy_fence`] asks for.
    policy_fence: Arc<std::sync::Mutex<Option<String>>>,
    /// Answers arrived since the last verdict.
    clock_answers: bool,
    clock_report: Arc<std::sync::Mutex<ClockCheckReport>>,
    /// Where the checks publish the verified range for [`NodeHandle::clock`] (`None` without
    /// checks, or under a mutation that switches the widening off).
    verified_range: Option<Arc<VerifiedRange>>,
    /// How the checks read `clock`: with each reading's [`Frame`].
    framed: Arc<FramedReader>,
    /// The cluster clock, if it is the source.
    cluster: Option<Arc<ClusterClock>>,
    /// When the cluster clock next probes the leader.
    next_cluster_probe: Instant,
}

/// Why a node could not start, or stopped: fatal (its storage or its state machine can no
/// longer be trusted, or raft-rs refused its state).
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// The Raft log store failed.
    #[error(transparent)]
    Store(#[from] LogStoreError),
    /// The state machine failed.
    #[error(transparent)]
    StateMachine(#[from] StateMachineError),
    /// raft-rs refused the configuration or the stored state.
    #[error("raft: {0}")]
    Raft(raft::Error),
    /// A committed membership change raft-rs produced does not decode.
    #[error("a committed membership change does not decode: {0}")]
    Decode(protobuf::ProtobufError),
    /// The state machine broke its contract (one output per entry).
    #[error("the state machine returned {outputs} outputs for {entries} entries")]
    OutputCount {
        /// Outputs returned.
        outputs: usize,
        /// Entries handed over.
        entries: usize,
    },
    /// The node's thread could not be started.
    #[error("cannot start the Raft thread: {0}")]
    Thread(std::io::Error),
}

/// What starts a node.
pub struct NodeParts<E: Engine, SM: StateMachine> {
    /// The settings.
    pub config: NodeConfig,
    /// The log, in the same engine as the state machine.
    pub store: RaftLogStore<E>,
    /// The state machine.
    pub state_machine: SM,
    /// Where messages go.
    pub transport: Arc<dyn Transport>,
    /// The clock the lease is measured on.
    pub clock: Arc<dyn Clock>,
    /// **Test only; breaks external consistency.** Measure the lease (when a renewal's heartbeat
    /// left) and `ready_at` on this clock instead of `clock`. The simulator's `raw-lease-clock`
    /// mutation hands it `clock`'s source without the step guard, to show that a lease measured
    /// on a clock that steps is caught. `None` everywhere else.
    #[doc(hidden)]
    pub unsafe_lease_clock: Option<Arc<dyn Clock>>,
    /// Which clock readings are usable.
    pub policy: ClockPolicy,
    /// The cluster clock, when it is the source (`clock` must then be this same clock): the
    /// node drives it (see [`ClusterClock`]) and the peer clock checks are off (every member's
    /// interval derives from the leader's; the estimate's own consistency is the check).
    pub cluster_clock: Option<Arc<ClusterClock>>,
    /// For a brand-new group: the founding voters, the same on every founding member. Ignored
    /// once the store is initialized. A member started without it on an empty store waits,
    /// uninitialized, for a leader to send it a snapshot (how new members join).
    pub bootstrap: Option<Vec<u64>>,
}

impl<E: Engine, SM: StateMachine> Node<E, SM> {
    /// Starts a member on its own thread. Hand the transport's receiving side its
    /// [`NodeHandle::deliverer`] afterwards; until then peers' messages are not received, which
    /// Raft tolerates like any loss.
    pub fn start(parts: NodeParts<E, SM>) -> Result<NodeHandle<SM::Output>, NodeError> {
        let (node, handle) = Self::new(parts, None, Instant::now())?;
        node.spawn(&handle)?;
        Ok(handle)
    }

    /// Builds a member, and its inbox, without running it: the caller drives it, either with
    /// [`Node::spawn`] (a thread of its own, as a server does) or turn by turn with
    /// [`Node::turn`] (as the simulator does, on its virtual time). `waker`, for a driver that
    /// takes turns itself, is called after every input sent to the node, so that the driver
    /// learns there is input (a thread blocking on the inbox needs none). `now` is the time of
    /// the driver's clock at start.
    pub fn new(
        parts: NodeParts<E, SM>,
        waker: Option<Waker>,
        now: Instant,
    ) -> Result<(Self, NodeHandle<SM::Output>), NodeError> {
        let NodeParts {
            config,
            store,
            mut state_machine,
            transport,
            clock,
            unsafe_lease_clock,
            policy,
            cluster_clock,
            bootstrap,
        } = parts;
        let mut config = config;
        if cluster_clock.is_some() && config.clock_checks.take().is_some() {
            tracing::debug!(
                node = config.id,
                "cluster clock: the peer clock checks are off (every interval derives from the leader's)"
            );
        }
        if let Some(cluster) = &cluster_clock
            && let Some(bytes) = store.engine().get(HORIZON_KEY).map_err(LogStoreError::from)?
        {
            cluster.saw_horizon(decode_horizon(&bytes)?);
        }
        // The checks read `clock` itself (their measurements must not depend on their own
        // results); everything else reads it widened to what they verify. Both read it with each
        // reading's frame (its midpoint and the monotonic clock around it).
        let framed = Arc::new(FramedReader::new(clock.clone()));
        let verified = config
            .clock_checks
            .as_ref()
            .filter(|o| !o.unsafe_never_fence && !o.unsafe_no_widening)
            .map(|o| (Arc::new(VerifiedRange::default()), o.max_drift_ppm));
        let verified_clock: Arc<dyn Clock> = match &verified {
            Some((range, ppm)) => {
                Arc::new(PeerVerifiedClock::new(framed.clone(), range.clone(), *ppm))
            }
            None => clock.clone(),
        };
        let verified_range = verified.map(|(range, _)| range);
        let lease_clock = unsafe_lease_clock.unwrap_or_else(|| verified_clock.clone());
        let sm = &mut state_machine;
        if !store.is_initialized()
            && let Some(voters) = bootstrap
        {
            let mut cs = ConfState::default();
            cs.set_voters(voters);
            let founding = sm.bootstrap(&cs)?;
            store.bootstrap(cs, founding)?;
            sm.staged_written()?;
        }
        store.repair_commit(sm.applied_index())?;
        store.set_snapshot_source(match &cluster_clock {
            Some(cluster) => Arc::new(HorizonSnapshotSource {
                inner: sm.snapshot_source(),
                cluster: cluster.clone(),
            }),
            None => sm.snapshot_source(),
        });
        let raft_config = Config {
            id: config.id,
            election_tick: config.election_ticks,
            heartbeat_tick: config.heartbeat_ticks,
            applied: sm.applied_index(),
            max_size_per_msg: config.max_size_per_msg,
            max_inflight_msgs: config.max_inflight_msgs,
            check_quorum: true,
            pre_vote: true,
            read_only_option: ReadOnlyOption::Safe,
            ..Config::default()
        };
        raft_config.validate().map_err(NodeError::Raft)?;
        let raw = RawNode::new(&raft_config, store, &crate::logger::raft_logger(config.id))
            .map_err(NodeError::Raft)?;
        let (tx, rx) = channel();
        let tx = InboxSender { tx, wake: waker };
        let (state_tx, state_rx) = watch::channel(NodeState {
            id: config.id,
            role: Role::Follower,
            term: 0,
            leader: None,
            commit_index: 0,
            applied_index: 0,
            last_index: 0,
            conf: ConfState::default(),
            leader_state: None,
            progress: BTreeMap::new(),
            failed: None,
            clock_fence: None,
            clock_unchecked: false,
        });
        let id = config.id;
        let election_rng = match config.seed {
            Some(seed) => StdRng::seed_from_u64(seed ^ id.wrapping_mul(0x9E37_79B9_7F4A_7C15)),
            None => StdRng::from_os_rng(),
        };
        let clock_check = config.clock_checks.clone().map(|o| ClockChecker::new(id, o, now));
        let clock_report = Arc::new(std::sync::Mutex::new(ClockCheckReport::default()));
        // Probes are answered, and answers stamped, the moment they arrive (see
        // `ClockResponder`): not behind this node's turn.
        let clock_responder =
            (config.clock_checks.is_some() || cluster_clock.is_some()).then(|| {
                Arc::new(ClockResponder {
                    id: config.id,
                    framed: framed.clone(),
                    policy: policy.clone(),
                    transport: transport.clone(),
                    cluster: cluster_clock.clone(),
                })
            });
        let policy_fence = Arc::new(std::sync::Mutex::new(None));
        let mut node = Node {
            clock_check,
            policy_fence: policy_fence.clone(),
            clock_answers: false,
            clock_report: clock_report.clone(),
            verified_range,
            framed,
            cluster: cluster_clock,
            next_cluster_probe: now,
            next_tick: now + config.tick,
            next_lease_renewal: now,
            now,
            config,
            raw,
            sm: state_machine,
            transport,
            reporter: Reporter::new(tx.peer_sender()),
            clock,
            lease_clock,
            policy,
            inbox: rx,
            stashed: None,
            paused: None,
            state: state_tx,
            next_request: 1,
            proposals: BTreeMap::new(),
            proposal_index: BTreeMap::new(),
            reads: BTreeMap::new(),
            deferred_reads: Vec::new(),
            read_waiters: BTreeMap::new(),
            leader: None,
            term_start_index: 0,
            failed: None,
            stopped: false,
            election_rng,
            election_key: None,
            election_timeout: 0,
        };
        node.pin_election_timeout();
        node.publish();
        let handle = NodeHandle {
            id,
            inbox: tx,
            state: state_rx,
            clock_report,
            policy_fence,
            thread: Arc::new(std::sync::Mutex::new(None)),
            clock: verified_clock,
            clock_responder,
            closed_timestamps: Arc::default(),
            transport: node.transport.clone(),
        };
        Ok((node, handle))
    }

    /// Runs the node on a thread of its own, on real time, until it stops; `handle` (the one
    /// [`Node::new`] returned, or a clone) then waits for the thread on shutdown.
    pub fn spawn(mut self, handle: &NodeHandle<SM::Output>) -> Result<(), NodeError> {
        let thread = std::thread::Builder::new()
            .name(format!("raft-{}", self.config.id))
            .spawn(move || self.run())
            .map_err(NodeError::Thread)?;
        *handle.thread.lock().unwrap_or_else(|e| e.into_inner()) = Some(thread);
        Ok(())
    }

    /// The thread's loop: block on the inbox until the next deadline, then take a turn.
    fn run(&mut self) {
        loop {
            let wait = self.next_deadline().saturating_duration_since(Instant::now());
            match self.inbox.recv_timeout(wait) {
                Ok(input) => self.stashed = Some(input),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return self.stop(ProposeError::Stopped),
            }
            if !self.turn(Instant::now()) {
                return;
            }
            if let Some(d) = self.take_pause() {
                std::thread::sleep(d);
            }
        }
    }

    /// When the node next has time-driven work (a tick, a lease renewal): a driver that has no
    /// input for it waits until then.
    pub fn next_deadline(&self) -> Instant {
        // A leader renews its lease only once it has committed in its term (raft-rs drops
        // read-index requests before that), so the renewal is no deadline until then.
        let next =
            if self.raw.raft.state == StateRole::Leader && self.raw.raft.commit_to_current_term() {
                self.next_tick.min(self.next_lease_renewal.max(self.now))
            } else {
                self.next_tick
            };
        let next = match &self.cluster {
            Some(_) => next.min(self.next_cluster_probe.max(self.now)),
            None => next,
        };
        match &self.clock_check {
            Some(c) => next.min(c.next_probe().max(self.now)),
            None => next,
        }
    }

    /// A pause a test asked for ([`NodeHandle::pause_for_test`]), which the driver carries out
    /// by not taking turns for that long.
    pub fn take_pause(&mut self) -> Option<Duration> {
        self.paused.take()
    }

    /// Whether the node has stopped (shut down, or failed).
    pub fn is_stopped(&self) -> bool {
        self.stopped
    }

    /// One turn of the node at time `now` (the driver's clock, never behind an earlier turn's):
    ///
    /// 1. handle every input already queued (peer messages, proposals, reads, reports), so that
    ///    they all land in one Ready and share one fsync;
    /// 2. tick if a tick is due, fail reads that waited too long; probe the peers' clocks if
    ///    due and judge this member's clock (fencing it, or lifting its fence);
    /// 3. as a leader that has committed in its term: send held reads and renew the lease if due;
    /// 4. handle the Ready (`handle_ready`, where Raft's I/O ordering lives);
    /// 5. publish the node's state.
    ///
    /// Returns `false` once the node has stopped (shutdown, or a fatal error, recorded in the
    /// published state); a stopped node ignores further turns.
    pub fn turn(&mut self, now: Instant) -> bool {
        if self.stopped {
            return false;
        }
        self.now = self.now.max(now);
        let now = self.now;
        // 1.
        let mut inputs: Vec<Input<SM::Output>> = self.stashed.take().into_iter().collect();
        inputs.extend(self.inbox.try_iter().take(4096));
        for input in inputs {
            match input {
                Input::Shutdown => {
                    self.stop(ProposeError::Stopped);
                    return false;
                }
                Input::Fail(why) => {
                    tracing::error!(node = self.config.id, error = %why, "Raft node stopped: a fatal error above it");
                    self.failed = Some(why);
                    self.publish();
                    self.stop(ProposeError::Stopped);
                    return false;
                }
                _ => {}
            }
            self.handle_input(input);
            self.pin_election_timeout();
        }
        // 2.
        if now >= self.next_tick {
            self.raw.tick();
            if self.campaign_blocked() && self.raw.raft.state != StateRole::Leader {
                // A fenced member never campaigns (nor, under the cluster clock, one whose
                // leader's answers just contradicted each other): its election clock is held at
                // the election timeout, short of the randomized timeout pinned above (the
                // longest raft-rs allows), so it never campaigns. Held there, not at zero:
                // raft-rs's check-quorum lease ends at the election timeout, and a member held
                // inside it would refuse every other candidate its vote for as long as it is
                // fenced, so a majority that needs it could never elect anyone.
                let cap = self
                    .raw
                    .raft
                    .election_timeout()
                    .min(self.blocked_election_timeout().saturating_sub(1));
                self.raw.raft.election_elapsed = self.raw.raft.election_elapsed.min(cap);
            }
            self.pin_election_timeout();
            self.next_tick = now + self.config.tick;
            self.expire(now);
        }
        // 2b. The peer clock checks: a probe round if due, a verdict if anything changed.
        self.check_clocks(now);
        // 2c. The cluster clock: a probe of the leader if due; as leader, a horizon if due.
        self.drive_cluster_clock(now);
        // 3.
        if self.raw.raft.state == StateRole::Leader && self.raw.raft.commit_to_current_term() {
            for (deadline, tx) in std::mem::take(&mut self.deferred_reads) {
                self.request_read(Some(tx), deadline);
            }
            if now >= self.next_lease_renewal {
                self.request_read(None, now + self.config.read_timeout);
                self.next_lease_renewal = now + self.config.lease_renewal;
            }
        }
        // 4.
        if let Err(e) = self.handle_ready() {
            tracing::error!(node = self.config.id, error = %e, "Raft node stopped after a fatal error");
            self.failed = Some(e.to_string());
            self.publish();
            self.stop(ProposeError::Stopped);
            return false;
        }
        // 5.
        self.publish();
        true
    }

    /// raft-rs draws each new randomized election timeout from `rand::thread_rng`, which no
    /// one can seed. The node overrides it with a draw of its own (from [`NodeConfig::seed`])
    /// whenever the term or the role changed, the only times raft-rs draws, and pins it after
    /// every call into raft, so that a seeded node behaves the same on every run.
    ///
    /// While this member may not campaign ([`Node::campaign_blocked`]) it pins the longest
    /// timeout raft-rs allows instead, which the capped election clock of step 2 never reaches.
    fn pin_election_timeout(&mut self) {
        let key = (self.raw.raft.term, self.raw.raft.state);
        if self.election_key != Some(key) {
            self.election_key = Some(key);
            let min = self.config.election_ticks;
            self.election_timeout = self.election_rng.random_range(min..2 * min);
        }
        let timeout = if self.raw.raft.state != StateRole::Leader && self.campaign_blocked() {
            self.blocked_election_timeout()
        } else {
            self.election_timeout
        };
        self.raw.raft.set_randomized_election_timeout(timeout);
    }

    /// The randomized election timeout pinned while this member may not campaign: the longest
    /// raft-rs allows (`2 × election_ticks − 1`), so that the election clock, held below it at
    /// the election timeout in step 2, never reaches it.
    fn blocked_election_timeout(&self) -> usize {
        2 * self.config.election_ticks - 1
    }

    /// Whether this member may not campaign: its clock is fenced ([`Node::is_fenced`]), or,
    /// under the cluster clock, its leader's answers contradicted each other in the last
    /// `rejoin_after` ([`ClusterClock::may_campaign`]).
    fn campaign_blocked(&self) -> bool {
        self.is_fenced() || self.cluster.as_ref().is_some_and(|c| !c.may_campaign())
    }

    /// Whether this member's clock is fenced by the peer clock checks (see the module docs), or
    /// convicted by its followers under the cluster clock ([`ClusterClock::convict`]).
    fn is_fenced(&self) -> bool {
        self.clock_check.as_ref().is_some_and(ClockChecker::is_fenced)
            || self.cluster.as_ref().is_some_and(|c| c.convicted())
    }

    /// Whether the latest clock check of `peer` (within its ttl) found its clock inconsistent
    /// with this member's.
    fn clock_disagrees(&self, peer: u64) -> bool {
        let Some(c) = self.clock_check.as_ref() else { return false };
        let Some(options) = self.config.clock_checks.as_ref().filter(|o| !o.unsafe_never_fence)
        else {
            return false;
        };
        let ttl = options.sample_ttl;
        c.samples()
            .get(&peer)
            .is_some_and(|s| !s.consistent && self.now.saturating_duration_since(s.at) <= ttl)
    }

    /// This member's reading and its frame, if the policy accepts the reading.
    fn usable_reading(&self) -> Option<(ClockReading, Frame)> {
        self.framed.read_usable(&self.policy)
    }

    /// Every member but this one, voters and learners: whom the clock checks probe.
    fn clock_peers(&self) -> Vec<u64> {
        let conf = self.raw.raft.prs().conf().to_conf_state();
        let mut ids: Vec<u64> = conf
            .voters
            .iter()
            .chain(&conf.voters_outgoing)
            .chain(&conf.learners)
            .copied()
            .collect();
        ids.sort_unstable();
        ids.dedup();
        ids.retain(|&id| id != self.config.id);
        ids
    }

    /// A probe or an answer arrived. A probe is answered at once with this member's reading
    /// (or `None` if its clock is unusable); an answer is measured, and judged in this turn.
    fn on_clock_frame(&mut self, frame: ClockFrame, arrived: Option<(ClockReading, Frame)>) {
        if frame.to != self.config.id {
            return;
        }
        let Some(checker) = self.clock_check.as_mut() else { return };
        match frame.message {
            ClockMessage::Probe { probe, .. } => {
                let reading = self.framed.read_usable(&self.policy).map(|(r, _)| r);
                self.transport.send_clock(ClockFrame::reply(
                    self.config.id,
                    frame.from,
                    probe,
                    reading,
                ));
            }
            ClockMessage::Reply { probe, reading, .. } => {
                // The reading the transport took as the answer arrived, or, without one, one
                // taken now (after the arrival too, only later).
                let r1 = arrived.or_else(|| self.framed.read_usable(&self.policy));
                if checker.on_reply(frame.from, probe, reading, self.now, r1) {
                    self.clock_answers = true;
                }
            }
            // Handed to the transaction layer by the deliverer, never queued here.
            ClockMessage::Closed { .. } | ClockMessage::CloseRequest { .. } => {}
        }
    }

    /// Step 2b of a turn: a probe round if one is due, and a verdict on this member's clock if
    /// a round went out or answers came in; then acts on a change of the fence, and as a
    /// fenced leader hands leadership away.
    fn check_clocks(&mut self, now: Instant) {
        let Some(checker) = self.clock_check.as_ref() else { return };
        let round_due = now >= checker.next_probe();
        if !round_due && !self.clock_answers {
            return;
        }
        self.clock_answers = false;
        if round_due && self.is_fenced() {
            // Nothing uses this clock while fenced: let its step guard (if any) drop an anchor
            // that may itself be the lie (taken at a restart), so that a corrected source can
            // agree with the peers again and lift the fence. A re-anchored clock may jump, so
            // the answers and probes in flight measured in its old frame are forgotten (the
            // verified range is not: its frames count the jump); this round's probes measure
            // the new one.
            self.clock.reanchor();
            if let Some(checker) = self.clock_check.as_mut() {
                checker.forget_frame();
            }
        }
        let reading = self.usable_reading();
        let peers = if round_due { self.clock_peers() } else { Vec::new() };
        // The majority asked for is of the incoming voters (while joint, the configuration
        // being moved to).
        let voters: Vec<u64> = self.raw.raft.prs().conf().to_conf_state().voters;
        let Some(checker) = self.clock_check.as_mut() else { return };
        if round_due {
            for frame in checker.probes(now, reading, &peers) {
                self.transport.send_clock(frame);
            }
        }
        let verdict = checker.verdict(now, reading.as_ref().map(|(r, _)| r), &voters);
        let measured = checker.apply(verdict);
        // A range that proves nothing (too few answers yet) leaves the last one in place: it
        // stays true as it widens.
        if let (Some(published), Some((mine, frame))) = (&self.verified_range, &reading)
            && let Some(range) = checker.verified_range(now, mine, *frame, &voters)
        {
            published.publish(range);
        }
        let policy = self.policy_fence.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let by_policy = checker.set_policy_fence(policy);
        let never_fence = self.config.clock_checks.as_ref().is_some_and(|o| o.unsafe_never_fence);
        *self.clock_report.lock().unwrap_or_else(|e| e.into_inner()) = checker.report(now);
        // A measured change that a policy fence hides (or the reverse) is reported by whichever
        // changed the node's fenced state.
        let change = match (measured, by_policy) {
            (_, Some(c)) => Some(c),
            (Some(FenceChange::Fenced(why)), None) if checker.is_fenced() => {
                Some(FenceChange::Fenced(why))
            }
            (Some(FenceChange::Lifted { was_disagreeing }), None) if !checker.is_fenced() => {
                Some(FenceChange::Lifted { was_disagreeing })
            }
            _ => None,
        };
        match change {
            Some(FenceChange::Fenced(why)) => {
                if never_fence {
                    tracing::error!(node = self.config.id, reason = %why,
                        "UNSAFE: the clock disagrees with its peers, but fencing is switched off");
                } else {
                    tracing::warn!(node = self.config.id, reason = %why,
                        "clock fenced: no timestamps, leases, leadership or reads until it agrees with a majority again");
                    self.on_fenced();
                }
            }
            Some(FenceChange::Lifted { was_disagreeing: true }) => {
                tracing::warn!(
                    node = self.config.id,
                    "clock fence lifted: this clock agrees with a majority of the voters again"
                );
            }
            Some(FenceChange::Lifted { was_disagreeing: false }) => {
                tracing::debug!(node = self.config.id, "the first peer clock check agrees");
            }
            None => {}
        }
        if self.is_fenced() {
            self.transfer_leadership_away();
        }
    }

    /// The clock was just fenced: nothing measured on it may be used any longer. A leader drops
    /// its lease and its `ready_at` (measured again, once the fence is lifted, from then), and
    /// lease renewals in flight will not extend the lease.
    fn on_fenced(&mut self) {
        if let Some(leader) = self.leader.as_mut() {
            leader.lease_until = None;
            leader.ready_at = Timestamp::MAX;
        }
        for r in self.reads.values_mut() {
            r.sent_earliest = None;
        }
    }

    /// A fenced leader hands leadership to a voter whose clock it found consistent (the most
    /// caught-up one), or else to the most caught-up voter, unless a transfer is under way.
    fn transfer_leadership_away(&mut self) {
        if self.raw.raft.state != StateRole::Leader || self.raw.raft.lead_transferee.is_some() {
            return;
        }
        let me = self.config.id;
        let consistent: BTreeMap<u64, bool> = self
            .clock_check
            .as_ref()
            .map(|c| c.samples().iter().map(|(&id, s)| (id, s.consistent)).collect())
            .unwrap_or_default();
        let voters = self.raw.raft.prs().conf().voters().ids();
        let target = self
            .raw
            .raft
            .prs()
            .iter()
            .filter(|(id, _)| **id != me && voters.contains(**id))
            .max_by_key(|(id, pr)| (consistent.get(id).copied().unwrap_or(false), pr.matched, **id))
            .map(|(id, _)| *id);
        if let Some(to) = target {
            tracing::warn!(node = me, to, "handing leadership away: this member's clock is fenced");
            self.raw.transfer_leader(to);
        }
    }

    fn handle_input(&mut self, input: Input<SM::Output>) {
        match input {
            Input::Peer(PeerInput::Message(m)) => {
                if m.get_msg_type() == MessageType::MsgTimeoutNow && self.is_fenced() {
                    // A fenced member must not take leadership over.
                    tracing::info!(
                        node = self.config.id,
                        from = m.from,
                        "refusing a leadership transfer: this member's clock is fenced"
                    );
                    return;
                }
                if let Err(e) = self.raw.step(*m) {
                    tracing::debug!(node = self.config.id, error = %e, "raft ignored a message");
                }
            }
            Input::Propose { data, respond } => self.propose(data, Responder::Data(respond)),
            Input::ConfChange { change, respond } => {
                self.propose_conf_change(change, Responder::Conf(respond))
            }
            Input::ReadIndex { respond } => {
                let deadline = self.now + self.config.read_timeout;
                if self.raw.raft.state == StateRole::Leader
                    && !self.raw.raft.commit_to_current_term()
                {
                    self.deferred_reads.push((deadline, respond));
                } else {
                    self.request_read(Some(respond), deadline);
                }
            }
            Input::Peer(PeerInput::Clock(frame, arrived)) => self.on_clock_frame(*frame, arrived),
            Input::Peer(PeerInput::Unreachable(to)) => self.raw.report_unreachable(to),
            Input::Peer(PeerInput::SnapshotStatus { to, delivered }) => {
                let status =
                    if delivered { SnapshotStatus::Finish } else { SnapshotStatus::Failure };
                self.raw.report_snapshot(to, status);
            }
            Input::Campaign if self.campaign_blocked() => {
                tracing::info!(
                    node = self.config.id,
                    "not campaigning: this member's clock is fenced (or its leader's answers just \
                     contradicted each other)"
                );
            }
            Input::Campaign => {
                if let Err(e) = self.raw.campaign() {
                    tracing::debug!(node = self.config.id, error = %e, "campaign refused");
                }
            }
            Input::TransferLeader(to)
                if self.clock_disagrees(to)
                    || self.cluster.as_ref().is_some_and(|c| c.reported_by(to)) =>
            {
                // It would refuse (a fenced member takes no leadership), and a transfer in
                // progress holds every proposal back for an election timeout; under the cluster
                // clock, a member that just found this leader's answers contradicting may be the
                // one whose oscillator is broken.
                tracing::info!(
                    node = self.config.id,
                    to,
                    "not handing leadership to a member whose clock disagrees with this one"
                );
            }
            Input::TransferLeader(to) => self.raw.transfer_leader(to),
            Input::Pause(d) => self.paused = Some(d),
            Input::Shutdown | Input::Fail(_) => {}
        }
    }

    fn leader_hint(&self) -> Option<u64> {
        let l = self.raw.raft.leader_id;
        (l != raft::INVALID_ID).then_some(l)
    }

    fn new_request_id(&mut self) -> u64 {
        let id = self.next_request;
        self.next_request += 1;
        id
    }

    fn propose(&mut self, data: Vec<u8>, respond: Responder<SM::Output>) {
        if self.raw.raft.state != StateRole::Leader || self.raw.raft.lead_transferee.is_some() {
            return respond.fail(ProposeError::NotLeader { leader: self.leader_hint() });
        }
        let id = self.new_request_id();
        match self.raw.propose(id.to_be_bytes().to_vec(), data) {
            Ok(()) => self.track(id, respond),
            Err(_) => respond.fail(ProposeError::NotLeader { leader: self.leader_hint() }),
        }
    }

    fn propose_conf_change(&mut self, change: ConfChangeV2, respond: Responder<SM::Output>) {
        if self.raw.raft.state != StateRole::Leader {
            return respond.fail(ProposeError::NotLeader { leader: self.leader_hint() });
        }
        // raft-rs silently turns a conf change it will not take into an empty entry; check its
        // conditions here instead, so the caller hears why.
        let joint = !self.raw.raft.prs().conf().to_conf_state().voters_outgoing.is_empty();
        let leave = change.changes.is_empty();
        let refused = if self.raw.raft.has_pending_conf() {
            Some("another membership change is still being applied")
        } else if joint && !leave {
            Some("the configuration is joint: leave it first")
        } else if !joint && leave {
            Some("the configuration is not joint: there is nothing to leave")
        } else {
            None
        };
        if let Some(why) = refused {
            return respond.fail(ProposeError::Refused(why.into()));
        }
        let id = self.new_request_id();
        match self.raw.propose_conf_change(id.to_be_bytes().to_vec(), change) {
            Ok(()) => self.track(id, respond),
            Err(e) => respond.fail(ProposeError::Refused(e.to_string())),
        }
    }

    /// Remembers a proposal by the (index, term) raft just appended it at.
    fn track(&mut self, id: u64, respond: Responder<SM::Output>) {
        let index = self.raw.raft.raft_log.last_index();
        let term = self.raw.raft.term;
        if let Some(old) = self.proposal_index.insert(index, id)
            && let Some(p) = self.proposals.remove(&old)
        {
            // Only possible if an earlier proposal at this index was overwritten in a term of
            // ours that ended: its entry is gone.
            p.respond.fail(ProposeError::Dropped);
        }
        self.proposals.insert(id, PendingProposal { index, term, respond });
    }

    /// Sends a read-index request (a lease renewal when `respond` is `None`).
    fn request_read(
        &mut self,
        respond: Option<oneshot::Sender<Result<u64, ProposeError>>>,
        deadline: Instant,
    ) {
        if self.raw.raft.state != StateRole::Leader {
            if let Some(tx) = respond {
                let _ = tx.send(Err(ProposeError::NotLeader { leader: self.leader_hint() }));
            }
            return;
        }
        let ctx = self.new_request_id().to_be_bytes().to_vec();
        // The lease starts when the heartbeat goes out: read the clock before raft sends it.
        // A fenced clock starts no lease.
        let sent_earliest = if self.is_fenced() {
            None
        } else {
            self.policy.check(self.lease_clock.now()).ok().map(|r| r.earliest())
        };
        self.raw.read_index(ctx.clone());
        self.reads.insert(
            ctx,
            PendingRead {
                term: self.raw.raft.term,
                sent_earliest,
                deadline,
                waiters: respond.into_iter().collect(),
            },
        );
    }

    /// Fails read-index requests that waited too long.
    fn expire(&mut self, now: Instant) {
        // raft-rs drops read-index requests silently (no leader, or a message lost): they end
        // here.
        self.reads.retain(|_, r| {
            if r.deadline > now {
                return true;
            }
            for w in r.waiters.drain(..) {
                let _ = w.send(Err(ProposeError::Timeout));
            }
            false
        });
        self.deferred_reads.retain(|(deadline, _)| *deadline > now);
    }

    fn stop(&mut self, why: ProposeError) {
        self.stopped = true;
        // First, before any caller hears `why`: a stopped node leads nothing. A proposal failed
        // here may still commit under the next leader, so nothing above may go on issuing
        // timestamps or closing them on this node's lease (see `boundkv_txn`'s `closed`).
        self.state.send_modify(|s| {
            s.leader_state = None;
            s.progress.clear();
            s.role = Role::Follower;
        });
        for (_, p) in std::mem::take(&mut self.proposals) {
            p.respond.fail(why.clone());
        }
        self.proposal_index.clear();
        for (_, mut r) in std::mem::take(&mut self.reads) {
            for w in r.waiters.drain(..) {
                let _ = w.send(Err(why.clone()));
            }
        }
        for (_, w) in self.deferred_reads.drain(..) {
            let _ = w.send(Err(why.clone()));
        }
        for (_, ws) in std::mem::take(&mut self.read_waiters) {
            for w in ws {
                let _ = w.send(Err(why.clone()));
            }
        }
    }

    /// Handles one `Ready`, in the order raft-rs requires. The only place Raft's I/O happens.
    ///
    /// 1. Send `messages()` at once: a leader's appends may go out before its own write; its disk
    ///    and its followers' work in parallel (Raft thesis §10.2.1).
    /// 2. Apply `committed_entries()`. raft-rs 0.7 hands over only entries this node has already
    ///    persisted (in an earlier Ready), so applying them before this Ready's write is safe,
    ///    and it lets this Ready's one flush make the state machine's writes durable too (sled
    ///    syncs everything written before a flush). A crash after the apply but before a commit
    ///    index covering it is durable is repaired on restart ([`RaftLogStore::repair_commit`]).
    /// 3. Stage, in **one** log write: a snapshot's reset of the log together with the state
    ///    machine's restore batch (so the two cannot disagree after a crash), the new entries,
    ///    and the hard state.
    /// 4. Write and flush it (an `fdatasync`): a hard state is never durable without the entries
    ///    it points at, nor a snapshot's log reset without its data. A Ready whose only change
    ///    is the commit index (`must_sync() == false`) is written without the flush.
    /// 5. Only then send `persisted_messages()`: votes and append acknowledgements promise
    ///    durability.
    /// 6. `advance`: send the light ready's messages, apply its committed entries,
    ///    `advance_apply`. Its commit index is not written: raft-rs does not need it durable,
    ///    the next Ready's hard state carries it, and `repair_commit` covers a crash before
    ///    then. (Writing it cost a sled write buffer, and so a `sync_file_range`, per round.)
    /// 7. Handle read states (lease renewals and callers' reads), answer reads whose index is
    ///    applied, compact the log.
    fn handle_ready(&mut self) -> Result<(), NodeError> {
        if !self.raw.has_ready() {
            self.answer_reads();
            return Ok(());
        }
        let mut rd = self.raw.ready();
        if let Some(ss) = rd.ss() {
            self.on_soft_state(ss.raft_state);
        }
        // Before anything of a new term is applied, the cluster clock stops using intervals of
        // the old one (see `ClusterClock::follow`).
        self.follow_in_cluster_clock();
        // 1.
        self.send(rd.take_messages());
        // 2.
        let snapshot = rd.snapshot().clone();
        let restoring = !snapshot.is_empty();
        // (A Ready with a snapshot has no committed entries: raft-rs asserts it.)
        self.apply(rd.take_committed_entries())?;
        // 3.
        let store = self.raw.store().clone();
        let mut w = store.write();
        let mut horizon = None;
        if restoring {
            let meta = snapshot.get_metadata();
            let mut data = snapshot.get_data();
            if self.cluster.is_some() {
                // The snapshot's sender put its horizon floor first (`HorizonSnapshotSource`).
                let (floor, rest) =
                    data.split_at_checked(8).ok_or_else(|| StateMachineError::Corrupt {
                        what: "a snapshot's cluster clock horizon".into(),
                        why: format!("{} bytes", data.len()),
                    })?;
                horizon = Some(decode_horizon(floor)?);
                data = rest;
            }
            let staged = self.sm.restore(meta.index, data)?;
            w.apply_snapshot(meta);
            w.include(staged);
        }
        if !rd.entries().is_empty() {
            w.append(rd.entries());
            if self.cluster.is_some() {
                let appended = rd.entries().iter().filter_map(|e| horizon_of(e.get_context()));
                horizon = horizon.max(appended.max());
            }
        }
        // The highest horizon this member holds, durable with the entry or snapshot that
        // carries it (a later leader starts `R` above it, even once the log is compacted).
        if let (Some(cluster), Some(h)) = (&self.cluster, horizon)
            && h > cluster.horizon_floor()
        {
            let mut b = WriteBatch::new();
            b.put(HORIZON_KEY.to_vec(), h.as_nanos().to_be_bytes().to_vec());
            w.include(b);
        }
        if let Some(hs) = rd.hs() {
            w.set_hard_state(hs);
        }
        if !rd.must_sync() {
            // Only the commit index moved: raft-rs needs no sync for that (see the module docs).
            w.without_sync();
        }
        // 4.
        store.commit(w)?;
        if let (Some(cluster), Some(h)) = (&self.cluster, horizon) {
            cluster.saw_horizon(h);
        }
        if restoring {
            self.sm.staged_written()?;
            let meta = snapshot.get_metadata();
            tracing::info!(
                node = self.config.id,
                index = meta.index,
                term = meta.term,
                "installed a snapshot"
            );
            self.supersede_proposals(meta.index);
        }
        let read_states = rd.take_read_states();
        // 5.
        self.send(rd.take_persisted_messages());
        // 6.
        let mut light = self.raw.advance(rd);
        self.send(light.take_messages());
        self.apply(light.take_committed_entries())?;
        self.raw.advance_apply();
        // 7.
        for rs in read_states {
            self.on_read_state(rs);
        }
        self.answer_reads();
        self.maybe_compact()?;
        Ok(())
    }

    /// How long a new leader waits before its first timestamp: the lease, stretched under the
    /// cluster clock by the drift between two leaders' oscillators
    /// ([`ClusterClock::ready_wait`]).
    fn ready_wait(&self) -> Duration {
        match &self.cluster {
            Some(cluster) => cluster.ready_wait(self.config.lease),
            None => self.config.lease,
        }
    }

    /// Tells the cluster clock (if it is the source) this member's term and leader.
    fn follow_in_cluster_clock(&self) {
        if let Some(cluster) = &self.cluster {
            let leading = self.raw.raft.state == StateRole::Leader;
            cluster.follow(self.raw.raft.term, self.leader_hint(), leading);
        }
    }

    /// Step 2c of a turn, under the cluster clock: probes the leader if due; as leader, proposes
    /// a horizon if due (an entry with empty data, a no-op for the state machine, whose context
    /// carries the horizon).
    fn drive_cluster_clock(&mut self, now: Instant) {
        let Some(cluster) = self.cluster.clone() else { return };
        self.follow_in_cluster_clock();
        if now >= self.next_cluster_probe {
            let (probe, next) = cluster.probe();
            if let Some(frame) = probe {
                self.transport.send_clock(frame);
            }
            self.next_cluster_probe = now + next;
        }
        if self.raw.raft.state == StateRole::Leader {
            let term = self.raw.raft.term;
            // Its reference stopped while the machine was suspended (it gives no reading for the
            // rest of this term), or it is convicted and its handover did not happen (or raft-rs
            // gave it up after an election timeout): it steps down, and an election chooses.
            let step_down = if cluster.suspended_this_term() {
                Some("the cluster clock's oscillator stopped (a suspend)")
            } else if let Some((why, accusers)) =
                // The majority asked for is of the incoming voters (as for the peer clock checks).
                cluster.convict(|| self.raw.raft.prs().conf().to_conf_state().voters)
            {
                // Convicted: no reading until it rejoins, so it hands leadership to the most
                // caught-up accuser (whose oscillator is the honest one) at once, rather than
                // letting an election timeout pass.
                let to = self
                    .raw
                    .raft
                    .prs()
                    .iter()
                    .filter(|(id, _)| accusers.contains(id))
                    .max_by_key(|(id, pr)| (pr.matched, **id))
                    .map(|(id, _)| *id);
                tracing::warn!(node = self.config.id, term, ?to, "handing leadership away: {why}");
                if let Some(to) = to {
                    self.raw.transfer_leader(to);
                }
                return;
            } else if cluster.convicted() && self.raw.raft.lead_transferee.is_none() {
                Some("convicted by the cluster clock and no handover under way")
            } else {
                None
            };
            if let Some(why) = step_down {
                tracing::warn!(node = self.config.id, term, "stepping down: {why}");
                self.raw.raft.become_follower(term, raft::INVALID_ID);
                return;
            }
        }
        if self.raw.raft.state == StateRole::Leader
            && self.raw.raft.lead_transferee.is_none()
            && let Some(h) = cluster.horizon_due()
            && let Err(e) = self.raw.propose(horizon_context(h), Vec::new())
        {
            tracing::debug!(node = self.config.id, error = %e, "cluster clock: horizon not proposed");
        }
    }

    fn send(&self, msgs: Vec<Message>) {
        for m in msgs {
            self.transport.send(m, &self.reporter);
        }
    }

    fn on_soft_state(&mut self, role: StateRole) {
        if role == StateRole::Leader {
            let term = self.raw.raft.term;
            if let Some(cluster) = &self.cluster {
                cluster.lead(term, self.config.lease);
                self.next_cluster_probe = self.now;
            }
            // A fenced clock sets nothing: `ready_at` is measured once the fence is lifted.
            let ready_at = match self.policy.check(self.lease_clock.now()) {
                Ok(r) if !self.is_fenced() => r.latest().saturating_add(self.ready_wait()),
                _ => Timestamp::MAX,
            };
            self.term_start_index = self.raw.raft.raft_log.last_index();
            self.leader = Some(LeaderState { term, ready_at, caught_up: false, lease_until: None });
            self.next_lease_renewal = self.now;
            if ready_at == Timestamp::MAX {
                tracing::info!(
                    node = self.config.id,
                    term,
                    "became leader; no timestamps until the clock is usable and every earlier \
                     leader's lease has surely expired after that"
                );
            } else {
                tracing::info!(
                    node = self.config.id,
                    term,
                    %ready_at,
                    "became leader; no timestamps until every earlier leader's lease has surely expired"
                );
            }
        } else {
            if self.leader.take().is_some() {
                tracing::info!(node = self.config.id, term = self.raw.raft.term, "stepped down");
            }
            // Reads confirmed by this term's quorum can no longer be answered by us.
            let hint = self.leader_hint();
            for (_, mut r) in std::mem::take(&mut self.reads) {
                for w in r.waiters.drain(..) {
                    let _ = w.send(Err(ProposeError::NotLeader { leader: hint }));
                }
            }
            for (_, w) in self.deferred_reads.drain(..) {
                let _ = w.send(Err(ProposeError::NotLeader { leader: hint }));
            }
        }
    }

    fn on_read_state(&mut self, rs: ReadState) {
        let Some(mut read) = self.reads.remove(&rs.request_ctx) else {
            return;
        };
        let term = self.raw.raft.term;
        if read.term != term || self.raw.raft.state != StateRole::Leader {
            for w in read.waiters.drain(..) {
                let _ = w.send(Err(ProposeError::NotLeader { leader: self.leader_hint() }));
            }
            return;
        }
        if let (Some(earliest), Some(leader)) = (read.sent_earliest, self.leader.as_mut())
            && leader.term == term
        {
            let until = earliest.saturating_add(self.config.lease);
            if leader.lease_until.is_none_or(|u| u < until) {
                leader.lease_until = Some(until);
            }
        }
        if !read.waiters.is_empty() {
            self.read_waiters.entry(rs.index).or_default().append(&mut read.waiters);
        }
    }

    fn answer_reads(&mut self) {
        let applied = self.sm.applied_index();
        let ready: Vec<u64> = self.read_waiters.range(..=applied).map(|(i, _)| *i).collect();
        for index in ready {
            for w in self.read_waiters.remove(&index).unwrap_or_default() {
                let _ = w.send(Ok(index));
            }
        }
        let ready_wait = self.ready_wait();
        if let Some(leader) = self.leader.as_mut() {
            if !leader.caught_up && applied >= self.term_start_index {
                leader.caught_up = true;
            }
            let fenced = self.clock_check.as_ref().is_some_and(ClockChecker::is_fenced);
            if leader.ready_at == Timestamp::MAX
                && !fenced
                && let Ok(r) = self.policy.check(self.lease_clock.now())
            {
                // The clock was unusable at the election: measure from now, later is safe.
                leader.ready_at = r.latest().saturating_add(ready_wait);
            }
        }
    }

    /// Applies committed entries: runs of normal entries go to the state machine together;
    /// membership changes are applied to raft and recorded one by one.
    fn apply(&mut self, entries: Vec<Entry>) -> Result<(), NodeError> {
        let mut run: Vec<Entry> = Vec::new();
        for e in entries {
            match e.get_entry_type() {
                EntryType::EntryNormal => run.push(e),
                EntryType::EntryConfChange | EntryType::EntryConfChangeV2 => {
                    self.apply_normal(std::mem::take(&mut run))?;
                    self.apply_conf_change(e)?;
                }
            }
        }
        self.apply_normal(run)
    }

    fn apply_normal(&mut self, entries: Vec<Entry>) -> Result<(), NodeError> {
        if entries.is_empty() {
            return Ok(());
        }
        let committed: Vec<Committed<'_>> = entries
            .iter()
            .map(|e| Committed { index: e.index, term: e.term, data: e.get_data() })
            .collect();
        let outputs = self.sm.apply(&committed)?;
        if let Some(cluster) = &self.cluster {
            for e in &entries {
                if let Some(h) = horizon_of(e.get_context()) {
                    cluster.horizon_committed(e.term, h);
                }
            }
        }
        if outputs.len() != entries.len() {
            return Err(NodeError::OutputCount { outputs: outputs.len(), entries: entries.len() });
        }
        for (e, out) in entries.iter().zip(outputs) {
            match self.take_proposal(e) {
                Some(Responder::Data(f)) => f(Ok(out)),
                Some(Responder::Conf(tx)) => {
                    let _ = tx.send(Err(ProposeError::Dropped));
                }
                None => {}
            }
        }
        if let Some(last) = entries.last() {
            self.drop_orphaned_proposals(last.index, last.term);
        }
        Ok(())
    }

    /// An entry of term `term` committed at `index`: a proposal of an earlier term at a higher
    /// index can never commit (every later leader's log holds this entry, and a log's terms
    /// only grow along it), so it fails as [`ProposeError::Dropped`] now. Without this, such a
    /// proposal (made by a leader deposed before its entry spread, beyond the new leader's log)
    /// would wait until the log grew that far, which on an idle cluster is never; and a pending
    /// commit holds its leader's safe time, and so every closed timestamp, below it.
    fn drop_orphaned_proposals(&mut self, index: u64, term: u64) {
        let orphans: Vec<u64> = self
            .proposal_index
            .range(index + 1..)
            .filter(|(_, id)| self.proposals.get(id).is_some_and(|p| p.term < term))
            .map(|(i, _)| *i)
            .collect();
        self.fail_proposals(
            orphans,
            ProposeError::Dropped,
            "proposal orphaned by a later term's commit",
        );
    }

    /// Fails the proposals at `indexes` with `why` (each logged at debug as `what`).
    fn fail_proposals(&mut self, indexes: Vec<u64>, why: ProposeError, what: &str) {
        for i in indexes {
            if let Some(id) = self.proposal_index.remove(&i)
                && let Some(p) = self.proposals.remove(&id)
            {
                tracing::debug!(node = self.config.id, index = i, term = p.term, "{what}");
                p.respond.fail(why.clone());
            }
        }
    }

    fn apply_conf_change(&mut self, e: Entry) -> Result<(), NodeError> {
        let change = if e.get_entry_type() == EntryType::EntryConfChangeV2 {
            let mut cc = ConfChangeV2::default();
            cc.merge_from_bytes(e.get_data()).map_err(NodeError::Decode)?;
            cc
        } else {
            let mut cc = ConfChange::default();
            cc.merge_from_bytes(e.get_data()).map_err(NodeError::Decode)?;
            raft_proto::ConfChangeI::into_v2(cc)
        };
        let cs = self.raw.apply_conf_change(&change).map_err(NodeError::Raft)?;
        let recorded = self.sm.membership(e.index, &change, &cs)?;
        let store = self.raw.store().clone();
        let mut w = store.write();
        w.set_conf_state(&cs);
        w.include(recorded);
        store.commit(w)?;
        self.sm.staged_written()?;
        tracing::info!(
            node = self.config.id,
            index = e.index,
            voters = ?cs.get_voters(),
            outgoing = ?cs.get_voters_outgoing(),
            learners = ?cs.get_learners(),
            "membership changed"
        );
        match self.take_proposal(&e) {
            Some(Responder::Conf(tx)) => {
                let _ = tx.send(Ok(cs));
            }
            Some(Responder::Data(f)) => f(Err(ProposeError::Dropped)),
            None => {}
        }
        Ok(())
    }

    /// A snapshot installed at `index` replaced the log up to there: the entries of proposals
    /// at or below it will never be applied here one by one, so `take_proposal` would never
    /// resolve them. Whether each applied is in the snapshot's state; their callers hear
    /// [`ProposeError::Superseded`] and ask again.
    fn supersede_proposals(&mut self, index: u64) {
        let covered: Vec<u64> = self.proposal_index.range(..=index).map(|(i, _)| *i).collect();
        self.fail_proposals(covered, ProposeError::Superseded, "proposal superseded by a snapshot");
    }

    /// The proposal an applied entry resolves, if it was ours: the same index, term and request
    /// id. A proposal at this index whose entry is different was lost; it fails as `Dropped`.
    fn take_proposal(&mut self, e: &Entry) -> Option<Responder<SM::Output>> {
        let id = self.proposal_index.remove(&e.index)?;
        let p = self.proposals.remove(&id)?;
        let ours = p.term == e.term && e.get_context() == id.to_be_bytes();
        if ours {
            Some(p.respond)
        } else {
            debug_assert_eq!(p.index, e.index);
            p.respond.fail(ProposeError::Dropped);
            None
        }
    }

    /// Compacts the log below `applied - keep_entries`, in steps of `keep_entries`.
    fn maybe_compact(&mut self) -> Result<(), NodeError> {
        let applied = self.sm.applied_index();
        let store = self.raw.store();
        let first = raft::Storage::first_index(store).map_err(NodeError::Raft)?;
        if applied > first + 2 * self.config.keep_entries {
            let to = applied - self.config.keep_entries;
            store.compact(to)?;
            tracing::debug!(node = self.config.id, to, "compacted the log");
        }
        Ok(())
    }

    fn publish(&mut self) {
        if let Some(failed) = &self.failed {
            // The store may refuse every read now (a failed sync poisons it), and raft-rs
            // unwraps its reads: publish the failure on the last good state, touching nothing.
            let failed = failed.clone();
            self.state.send_modify(|s| {
                s.failed = Some(failed);
                s.role = Role::Follower;
                s.leader_state = None;
                s.progress.clear();
            });
            return;
        }
        let raft = &self.raw.raft;
        let role = match raft.state {
            StateRole::Leader => Role::Leader,
            StateRole::Follower => Role::Follower,
            StateRole::Candidate => Role::Candidate,
            StateRole::PreCandidate => Role::PreCandidate,
        };
        let progress = if raft.state == StateRole::Leader {
            raft.prs().iter().map(|(id, pr)| (*id, pr.matched)).collect()
        } else {
            BTreeMap::new()
        };
        let state = NodeState {
            id: self.config.id,
            role,
            term: raft.term,
            leader: self.leader_hint(),
            commit_index: raft.raft_log.committed,
            applied_index: self.sm.applied_index(),
            last_index: raft.raft_log.last_index(),
            conf: raft.prs().conf().to_conf_state(),
            leader_state: self.leader,
            progress,
            failed: self.failed.clone(),
            clock_fence: self
                .clock_check
                .as_ref()
                .filter(|c| c.is_fenced())
                .and_then(ClockChecker::fence_reason)
                .map(|why| format!("by the peer clock checks: {why}"))
                .or_else(|| {
                    let why = self.cluster.as_ref()?.fence_reason()?;
                    Some(format!("by the cluster clock: {why}"))
                }),
            clock_unchecked: self
                .clock_check
                .as_ref()
                .is_some_and(|c| c.is_fenced() && matches!(c.fence(), Fence::Unchecked)),
        };
        self.state.send_if_modified(|s| {
            if *s != state {
                *s = state;
                true
            } else {
                false
            }
        });
    }
}

/// Under the cluster clock, a snapshot carries its sender's horizon floor in front of the state
/// machine's data (8 bytes, big-endian): a member that catches up by snapshot holds every horizon
/// the entries it skipped carried (see `Node::handle_ready`, which takes it off again).
struct HorizonSnapshotSource {
    inner: Arc<dyn SnapshotSource>,
    cluster: Arc<ClusterClock>,
}

impl SnapshotSource for HorizonSnapshotSource {
    fn snapshot_data(&self) -> boundkv_storage::Result<(u64, Vec<u8>)> {
        // The floor is read before the data: it covers every entry the data does.
        let floor = self.cluster.horizon_floor();
        let (index, data) = self.inner.snapshot_data()?;
        let mut out = Vec::with_capacity(8 + data.len());
        out.extend_from_slice(&floor.as_nanos().to_be_bytes());
        out.extend_from_slice(&data);
        Ok((index, out))
    }
}

/// A stored or sent horizon: 8 bytes, big-endian nanoseconds.
fn decode_horizon(bytes: &[u8]) -> Result<Timestamp, StateMachineError> {
    let nanos: [u8; 8] = bytes.try_into().map_err(|_| StateMachineError::Corrupt {
        what: "the cluster clock's horizon".into(),
        why: format!("{} bytes, not 8", bytes.len()),
    })?;
    Ok(Timestamp::from_nanos(u64::from_be_bytes(nanos)))
}
