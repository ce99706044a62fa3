//! How Raft messages leave a node: the [`Transport`] trait, and an in-memory [`MemoryRouter`] for
//! tests that can cut links, drop messages and pause nodes.
//!
//! A transport must never block the Raft thread: sends are fire-and-forget onto bounded per-peer
//! queues, and a full queue drops the message (Raft retransmits whatever matters). It reports
//! back through a [`Reporter`]: peers it cannot reach (so the leader stops pipelining to them) and
//! whether a snapshot it was asked to deliver arrived (raft-rs keeps a follower in snapshot state
//! until it hears, so every `MsgSnap` must be reported, one way or the other).
//!
//! A transport also carries the peer clock checks' probes and answers ([`ClockFrame`], see
//! [`crate::clock_check`]): not Raft messages, but sent and lost the same way, over the same
//! links, so that they see the delays, losses and partitions Raft sees.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use raft::prelude::{Message, MessageType};

use crate::clock_check::{ClockFrame, ClockMessage};
use crate::cluster_clock::{CLUSTER_PROBE_BIT, ClusterClock};
use crate::verified_clock::{Frame, FramedReader};
use boundkv_clockbound::{ClockPolicy, ClockReading};

/// Delivers Raft messages to peers.
pub trait Transport: Send + Sync + 'static {
    /// Sends `msg` to `msg.to`.
    ///
    /// # To ensure correctness
    /// Must not block and may drop messages (Raft tolerates loss, duplication and reordering
    /// between distinct messages). For a `MsgSnap` it must eventually call
    /// [`Reporter::snapshot`] with whether the snapshot was delivered.
    fn send(&self, msg: Message, reporter: &Reporter);

    /// Sends a clock probe or answer to `frame.to`, fire-and-forget.
    ///
    /// # To ensure correctness
    /// Must not block. May drop, delay and reorder frames (a lost probe is a peer not heard
    /// from; a late answer only widens its measurement), but must not alter them: the checks
    /// rest on the readings being the ones the peer took.
    fn send_clock(&self, frame: ClockFrame);
}

/// What a transport hands a node: the part of a node's input that does not depend on its state
/// machine, so that a transport (and a router keeping many nodes) needs no type parameter.
pub(crate) enum PeerInput {
    /// A Raft message from a peer.
    Message(Box<Message>),
    /// A peer could not be reached.
    Unreachable(u64),
    /// A snapshot for a peer was delivered (`true`) or not.
    SnapshotStatus { to: u64, delivered: bool },
    /// A clock answer from a peer (or a probe, from a deliverer that does not answer probes
    /// itself), with this member's reading taken the moment it arrived, if the deliverer took
    /// one (see [`ClockResponder`]).
    Clock(Box<ClockFrame>, Option<(ClockReading, Frame)>),
}

/// What lets a [`Deliverer`] handle clock frames the moment they arrive, instead of when the
/// node next takes a turn (which may be behind a log write's `fdatasync`): it answers a probe at
/// once with this member's reading, and stamps an answer with this member's reading on arrival.
/// The peer clock checks' uncertainty is the probe's round trip, so every millisecond a frame
/// waits for the node is a millisecond added to every member's verified range (and twice that
/// to commit wait).
pub struct ClockResponder {
    /// This member.
    pub id: u64,
    /// How it reads its clock.
    pub framed: Arc<FramedReader>,
    /// Which readings are usable.
    pub policy: ClockPolicy,
    /// Where answers go.
    pub transport: Arc<dyn Transport>,
    /// The cluster clock, when it is the source: it answers probes (saying whether its reading
    /// is the leader's reference) and takes the answers to its own probes.
    pub cluster: Option<Arc<ClusterClock>>,
}

/// The node's input channel as a transport sees it: a closure that sends a [`PeerInput`] into the
/// node's typed channel (wrapped there, see [`crate::node::NodeHandle::deliverer`]) and returns
/// `false` once the node has stopped. It erases the channel's type, not the values sent.
pub(crate) type PeerSender = Arc<dyn Fn(PeerInput) -> bool + Send + Sync>;

/// Where a member's closed timestamp frames go ([`ClockMessage::Closed`],
/// [`ClockMessage::CloseRequest`]): a handler the transaction layer sets once, through
/// [`crate::node::NodeHandle::on_closed_timestamps`]. Until it is set they are dropped (the
/// sender sends again). It runs on the transport's task or thread: it must not block.
pub(crate) type ClosedTimestampsInbox =
    Arc<std::sync::OnceLock<Box<dyn Fn(ClockFrame) + Send + Sync>>>;

/// Hands inbound messages to a node: what a transport's receiving side holds. Cheap to clone;
/// never blocks. A node hands it out ([`crate::node::NodeHandle::deliverer`]).
#[derive(Clone)]
pub struct Deliverer {
    send: PeerSender,
    clock: Option<Arc<ClockResponder>>,
    closed: ClosedTimestampsInbox,
}

impl Deliverer {
    /// Delivers through `send`; with `clock`, answers probes and stamps answers itself; hands
    /// closed timestamp frames to `closed`.
    pub(crate) fn new(
        send: PeerSender,
        clock: Option<Arc<ClockResponder>>,
        closed: ClosedTimestampsInbox,
    ) -> Self {
        Deliverer { send, clock, closed }
    }

    /// Delivers `msg` to the node. Returns `false` if the node has stopped.
    pub fn deliver(&self, msg: Message) -> bool {
        (self.send)(PeerInput::Message(Box::new(msg)))
    }

    /// Delivers a clock probe or answer to the node: with a [`ClockResponder`], a probe is
    /// answered here and now, and an answer is stamped with this member's reading on arrival.
    /// Under the cluster clock, the clock answers probes itself, and takes the answers to its own
    /// probes (marked by [`CLUSTER_PROBE_BIT`]) the moment they arrive, not behind a turn.
    /// Returns `false` if the node has stopped.
    ///
    /// Closed timestamp frames go straight to the handler the transaction layer set (they must
    /// not wait for the node's turn, which may be behind a log write's `fdatasync`).
    pub fn deliver_clock(&self, frame: ClockFrame) -> bool {
        if frame.message.is_closed_timestamps() {
            if let Some(handler) = self.closed.get() {
                handler(frame);
            }
            return true;
        }
        let Some(clock) = &self.clock else {
            return (self.send)(PeerInput::Clock(Box::new(frame), None));
        };
        match (&frame.message, &clock.cluster) {
            (&ClockMessage::Probe { probe, contradicts, .. }, Some(cluster))
                if frame.to == clock.id =>
            {
                let (reading, leads) = cluster.answer(frame.from, contradicts);
                let message = ClockMessage::Reply { probe, reading, leads };
                clock.transport.send_clock(ClockFrame { from: clock.id, to: frame.from, message });
                true
            }
            (&ClockMessage::Reply { probe, reading, leads }, Some(cluster))
                if frame.to == clock.id && probe & CLUSTER_PROBE_BIT != 0 =>
            {
                cluster.on_reply(frame.from, probe, reading, leads);
                true
            }
            (&ClockMessage::Probe { probe, .. }, _) if frame.to == clock.id => {
                let reading = clock.framed.read_usable(&clock.policy).map(|(r, _)| r);
                clock.transport.send_clock(ClockFrame::reply(clock.id, frame.from, probe, reading));
                true
            }
            _ => {
                let arrived = clock.framed.read_usable(&clock.policy);
                (self.send)(PeerInput::Clock(Box::new(frame), arrived))
            }
        }
    }
}

/// A node's way back from its transport. A node hands it to its transport with every message
/// ([`Transport::send`]).
#[derive(Clone)]
pub struct Reporter {
    send: PeerSender,
}

impl Reporter {
    /// Reports through `send`.
    pub(crate) fn new(send: PeerSender) -> Self {
        Reporter { send }
    }

    /// `to` could not be reached.
    pub fn unreachable(&self, to: u64) {
        let _ = (self.send)(PeerInput::Unreachable(to));
    }

    /// A snapshot for `to` was delivered (`true`) or not.
    pub fn snapshot(&self, to: u64, delivered: bool) {
        let _ = (self.send)(PeerInput::SnapshotStatus { to, delivered });
    }
}

/// An in-memory network between in-process nodes, for tests: links can be cut one way or both,
/// nodes isolated and healed. Delivery is immediate and in order per link.
#[derive(Clone, Default)]
pub struct MemoryRouter {
    inner: Arc<Mutex<RouterState>>,
}

#[derive(Default)]
struct RouterState {
    inboxes: HashMap<u64, Deliverer>,
    /// Directed links that drop everything: (from, to).
    cut: HashSet<(u64, u64)>,
    delivered: u64,
    dropped: u64,
}

impl MemoryRouter {
    /// An empty network.
    pub fn new() -> Self {
        Self::default()
    }

    /// Connects node `id`, delivering to it through `deliverer`.
    pub fn register(&self, id: u64, deliverer: Deliverer) {
        self.inner.lock().unwrap_or_else(|e| e.into_inner()).inboxes.insert(id, deliverer);
    }

    /// Removes node `id` from the network (it was stopped).
    pub fn unregister(&self, id: u64) {
        self.inner.lock().unwrap_or_else(|e| e.into_inner()).inboxes.remove(&id);
    }

    /// Cuts the link from `from` to `to` (one way).
    pub fn cut(&self, from: u64, to: u64) {
        self.inner.lock().unwrap_or_else(|e| e.into_inner()).cut.insert((from, to));
    }

    /// Cuts every link into and out of `id`.
    pub fn isolate(&self, id: u64, peers: &[u64]) {
        let mut s = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        for &p in peers {
            if p != id {
                s.cut.insert((id, p));
                s.cut.insert((p, id));
            }
        }
    }

    /// Restores every link.
    pub fn heal(&self) {
        self.inner.lock().unwrap_or_else(|e| e.into_inner()).cut.clear();
    }

    /// Messages delivered and dropped so far.
    pub fn counts(&self) -> (u64, u64) {
        let s = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        (s.delivered, s.dropped)
    }

    /// A transport for node `id` on this network.
    pub fn transport(&self, id: u64) -> Arc<dyn Transport> {
        Arc::new(RouterTransport { id, router: self.clone() })
    }
}

struct RouterTransport {
    id: u64,
    router: MemoryRouter,
}

impl Transport for RouterTransport {
    fn send(&self, msg: Message, reporter: &Reporter) {
        let to = msg.to;
        let is_snapshot = msg.get_msg_type() == MessageType::MsgSnapshot;
        let target = {
            let mut s = self.router.inner.lock().unwrap_or_else(|e| e.into_inner());
            let target =
                if s.cut.contains(&(self.id, to)) { None } else { s.inboxes.get(&to).cloned() };
            match target {
                Some(_) => s.delivered += 1,
                None => s.dropped += 1,
            }
            target
        };
        let delivered = target.is_some_and(|t| t.deliver(msg));
        if !delivered {
            reporter.unreachable(to);
        }
        if is_snapshot {
            reporter.snapshot(to, delivered);
        }
    }

    fn send_clock(&self, frame: ClockFrame) {
        let target = {
            let mut s = self.router.inner.lock().unwrap_or_else(|e| e.into_inner());
            let target = if s.cut.contains(&(self.id, frame.to)) {
                None
            } else {
                s.inboxes.get(&frame.to).cloned()
            };
            match target {
                Some(_) => s.delivered += 1,
                None => s.dropped += 1,
            }
            target
        };
        if let Some(t) = target {
            t.deliver_clock(frame);
        }
    }
}
