//! The messages: what a client may ask, and what a server answers.
//!
//! Every message travels in a frame ([`RequestFrame`], [`ResponseFrame`]) that carries the
//! protocol version and a request id; see the crate docs for how frames are laid out and
//! correlated. This module is about the bodies.
//!
//! # A read-write transaction
//!
//! A read-write transaction reads at one snapshot and commits at a later timestamp, after the
//! leader has checked that nothing it read has changed since (optimistic concurrency control):
//!
//! ```text
//! client                                   leader
//!   │ BeginReadWrite ───────────────────────►│
//!   │◄────────────────────── Timestamp(r)    │  r = a timestamp the leader can serve reads at
//!   │ Get { ts: r, key: "x" } ──────────────►│
//!   │◄─────────────────── Value(Some("1"))   │
//!   │ Commit(CommitRequest {                 │
//!   │   txn_id, read_ts: Some(r),            │
//!   │   read_keys: ["x"], read_ranges: [],   │
//!   │   writes: [("x", Some("2"))] }) ──────►│  conflict check: no commit to "x" in (r, c]
//!   │                                        │  replicate, commit wait until earliest > c
//!   │◄──────── Committed(CommitInfo { ts: c, … })
//! ```
//!
//! If another transaction committed a write to `x` after `r`, the answer is
//! [`WireError::Conflict`] instead, and the client starts over with a new `BeginReadWrite`. If
//! the connection breaks after the commit was sent, or the leader answers
//! [`WireError::OutcomeUnknown`], the client cannot know whether the commit applied; it resends
//! the *same* `CommitRequest` (same `txn_id`), which the server applies at most once.
//!
//! A transaction that only writes (a blind write) sends `read_ts: None` and no reads; there is
//! nothing to conflict with.
//!
//! # A read-only transaction
//!
//! Read-only transactions take no locks and need no leader. `BeginReadOnly { at }` asks any
//! replica for a snapshot timestamp: [`ReadAt::Latest`] for a strongly consistent read,
//! [`ReadAt::Exact`] for time travel, [`ReadAt::MaxStaleness`] for a read that may be up to that
//! old but can be served by a nearby follower without waiting. The client then sends `Get` and
//! `Scan` at that timestamp to the same replica. A replica that has not yet caught up to the
//! timestamp answers [`WireError::FollowerBehind`] rather than returning a stale answer.
//!
//! # Wire stability
//!
//! postcard encodes an enum as its variant index followed by the variant's fields, and a struct
//! as its fields in declaration order, with no names. So the types here are frozen within one
//! protocol version: adding, removing or reordering a variant or field, or changing a field's
//! type, changes [`PROTOCOL_VERSION`]. (Even adding a variant at the
//! end would break an older peer, which would find an index it does not know.)

use std::ops::Bound;
use std::time::Duration;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::{PROTOCOL_VERSION, Timestamp, WireError};

/// One request on the wire: the protocol version, the id the response will carry, and the body.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestFrame {
    /// The sender's protocol version; always [`PROTOCOL_VERSION`] for frames this crate builds.
    pub version: u16,
    /// Chosen by the client, unique among its requests in flight on this connection; the
    /// response carries it back. Id [`CONNECTION_ERROR_ID`](crate::CONNECTION_ERROR_ID) (0) is
    /// reserved, so clients number requests from 1.
    pub id: u64,
    /// What is asked.
    pub request: Request,
}

impl RequestFrame {
    /// A frame of the current protocol version carrying `request` under `id`.
    pub fn new(id: u64, request: Request) -> Self {
        RequestFrame { version: PROTOCOL_VERSION, id, request }
    }
}

/// One response on the wire: the protocol version, the id of the request it answers, and the
/// body.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResponseFrame {
    /// The sender's protocol version; always [`PROTOCOL_VERSION`] for frames this crate builds.
    pub version: u16,
    /// The id of the request this answers, or
    /// [`CONNECTION_ERROR_ID`](crate::CONNECTION_ERROR_ID) for an error about the connection as a
    /// whole.
    pub id: u64,
    /// The answer.
    pub response: Response,
}

impl ResponseFrame {
    /// A frame of the current protocol version answering request `id` with `response`.
    pub fn new(id: u64, response: Response) -> Self {
        ResponseFrame { version: PROTOCOL_VERSION, id, response }
    }
}

/// Which snapshot a read-only transaction reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ReadAt {
    /// The freshest consistent snapshot: sees every transaction acknowledged before the request
    /// was sent. A follower may have to wait until it has caught up.
    Latest,
    /// Exactly this timestamp (time travel). Fails with [`WireError::BelowGcHorizon`] if the
    /// versions are gone, or [`WireError::TimestampInFuture`] if it lies beyond the server's clock.
    Exact(Timestamp),
    /// Any snapshot at most this old; the replica picks one it can serve without waiting.
    MaxStaleness(Duration),
}

/// What a client asks.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Request {
    /// A read timestamp for a read-write transaction (served by the leader only). Answered with
    /// [`Response::Timestamp`].
    BeginReadWrite,
    /// A snapshot timestamp for read-only reads (served by any replica). Answered with
    /// [`Response::Timestamp`].
    BeginReadOnly {
        /// Which snapshot.
        at: ReadAt,
    },
    /// The value of `key` as of `ts`. Answered with [`Response::Value`].
    Get {
        /// The snapshot to read; a timestamp from `BeginReadWrite` or `BeginReadOnly`.
        ts: Timestamp,
        /// The key.
        key: Bytes,
    },
    /// The live keys in `[start, end]` (bounds as given) as of `ts`, in key order. Answered with
    /// [`Response::Rows`].
    ///
    /// A response must fit in one frame, so scans of large ranges page with `limit` and continue
    /// from `Bound::Excluded(last key)`.
    Scan {
        /// The snapshot to read.
        ts: Timestamp,
        /// The lower bound of the keys.
        start: Bound<Bytes>,
        /// The upper bound of the keys.
        end: Bound<Bytes>,
        /// At most this many rows; `None` for no limit.
        limit: Option<u32>,
    },
    /// Commit a read-write transaction (served by the leader only). Answered with
    /// [`Response::Committed`].
    Commit(CommitRequest),
    /// This node's view of itself and the cluster. Answered with [`Response::Status`].
    Status,
    /// Add a node to the cluster (served by the leader only). Answered with
    /// [`Response::Members`], the membership after the change.
    AddMember {
        /// The new node's id; unique in the cluster, never 0.
        id: u64,
        /// Where the new node listens for Raft traffic from its peers, as `host:port`.
        peer_address: String,
        /// Where the new node listens for clients, as `host:port`.
        client_address: String,
        /// How the new node's clock handles a leap second, as its `--leap`: `step` or `smear`.
        /// The leader refuses a policy other than the membership's.
        leap: String,
    },
    /// Remove a node from the cluster (served by the leader only). Answered with
    /// [`Response::Members`], the membership after the change.
    RemoveMember {
        /// The node to remove.
        id: u64,
    },
}

/// Everything the leader needs to validate and apply a read-write transaction.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommitRequest {
    /// A random id chosen by the client once per transaction. The server applies a transaction
    /// id at most once, so resending the same request after [`WireError::OutcomeUnknown`] is safe.
    pub txn_id: [u8; 16],
    /// The snapshot the transaction read at; `None` for a transaction that read nothing.
    pub read_ts: Option<Timestamp>,
    /// Every key the transaction read (point reads). The commit fails with
    /// [`WireError::Conflict`] if any was written after `read_ts`.
    pub read_keys: Vec<Bytes>,
    /// Every range the transaction scanned, as `(start, end)`, validated like `read_keys`, which
    /// also catches keys inserted into the range (phantoms).
    pub read_ranges: Vec<(Bound<Bytes>, Bound<Bytes>)>,
    /// The writes, in order: `(key, Some(value))` sets a key, `(key, None)` deletes it.
    pub writes: Vec<(Bytes, Option<Bytes>)>,
}

/// What a successful commit reports: its timestamp and where the time went.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct CommitInfo {
    /// The commit timestamp; every read at or after it sees the transaction's writes.
    pub ts: Timestamp,
    /// How long the leader spent in commit wait (until its clock's earliest passed `ts`).
    pub commit_wait: Duration,
    /// How long until the writes were durable on a quorum.
    pub durable: Duration,
    /// How much of the commit wait was left once the writes were durable: the wait replication
    /// did not hide. Zero when replication took longer than commit wait.
    pub wait_beyond_durable: Duration,
    /// The whole commit on the server, from receiving the request to sending this answer.
    pub latency: Duration,
}

/// What a server answers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Response {
    /// A timestamp, for `BeginReadWrite` and `BeginReadOnly`.
    Timestamp(Timestamp),
    /// The value of a key, for `Get`; `None` if the key did not exist at the timestamp.
    Value(Option<Bytes>),
    /// `(key, value)` pairs in key order, for `Scan`.
    Rows(Vec<(Bytes, Bytes)>),
    /// The transaction committed, for `Commit`.
    Committed(CommitInfo),
    /// The node's status, for `Status` (boxed: it is by far the largest answer, and rare; on
    /// the wire a box is its contents).
    Status(Box<NodeStatus>),
    /// The cluster membership, for `AddMember` and `RemoveMember`.
    Members(Vec<Member>),
    /// The request failed; see [`WireError`] for which errors may be retried.
    Error(WireError),
}

/// A node of the cluster.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Member {
    /// The node's id, unique in the cluster.
    pub id: u64,
    /// Where the node listens for Raft traffic from its peers, as `host:port`.
    pub peer_address: String,
    /// Where the node listens for clients, as `host:port`: where a client that is told
    /// [`WireError::NotLeader`] about this node reconnects.
    pub client_address: String,
    /// Whether the node votes; a non-voter is a learner that replicates but does not count
    /// towards quorums.
    pub voter: bool,
    /// How the node's clock handles a leap second, as recorded in the membership: `step` or
    /// `smear`.
    pub leap: String,
}

impl std::fmt::Display for Member {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "node {} at {}", self.id, self.client_address)?;
        if !self.voter {
            write!(f, " (learner)")?;
        }
        Ok(())
    }
}

/// A node's role in its Raft group.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Role {
    /// Serves read-write transactions and coordinates replication.
    Leader,
    /// A voter replicating from the leader.
    Follower,
    /// Campaigning to become leader.
    Candidate,
    /// Checking whether it could win an election before starting one (Raft pre-vote).
    PreCandidate,
    /// A non-voter replicating from the leader.
    Learner,
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Role::Leader => "leader",
            Role::Follower => "follower",
            Role::Candidate => "candidate",
            Role::PreCandidate => "pre-candidate",
            Role::Learner => "learner",
        })
    }
}

/// A node's clock, as it reports it in [`NodeStatus`].
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ClockInfo {
    /// Where the time comes from, e.g. `clockbound:/var/run/clockbound/shm0` or `system:5ms`.
    pub source: String,
    /// The source's own status, e.g. `synchronized` or `free-running`.
    pub status: String,
    /// The earliest true time could be at the moment of the reading.
    pub earliest: Timestamp,
    /// The latest true time could be at the moment of the reading.
    pub latest: Timestamp,
    /// The clock error bound the source reports (true time is within this of the local clock).
    pub bound: Duration,
    /// Why the clock may not be used for timestamps right now, if it may not.
    pub problem: Option<String>,
    /// What the peer clock checks last measured of every other member's clock, from this node
    /// (empty when the checks are off).
    pub peers: Vec<PeerClockInfo>,
    /// Leap seconds: this node's `--leap` policy, the kernel's leap state and a leap being
    /// absorbed, on one line (`step; kernel: none`), empty if the clock knows nothing of them.
    pub leap: String,
}

/// One peer's clock as a node's peer clock checks last measured it (Cristian's method).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct PeerClockInfo {
    /// The peer's node id.
    pub id: u64,
    /// The peer's clock minus this node's, in signed nanoseconds (midpoints).
    pub offset_nanos: i64,
    /// How far two honest clocks may differ in that measurement: half the round trip plus both
    /// bounds.
    pub uncertainty: Duration,
    /// The probe's round trip (half of it is how far the offset estimate can be off).
    pub round_trip: Duration,
    /// Whether the peer's interval met this node's, widened by the round trip.
    pub consistent: bool,
    /// How long ago the answer arrived.
    pub age: Duration,
}

/// A node's view of itself and the cluster.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct NodeStatus {
    /// This node's id.
    pub id: u64,
    /// This node's Raft role.
    pub role: Role,
    /// The current Raft term.
    pub term: u64,
    /// The leader this node knows of, if any.
    pub leader: Option<Member>,
    /// The highest log index known to be committed.
    pub commit_index: u64,
    /// The highest log index applied to this node's state machine.
    pub applied_index: u64,
    /// The cluster membership as this node knows it.
    pub members: Vec<Member>,
    /// This node's clock.
    pub clock: ClockInfo,
    /// Reads at or below this timestamp can be served here without waiting.
    pub safe_time: Timestamp,
    /// The leader has promised no commits at or below this timestamp (the closed timestamp).
    pub closed_ts: Timestamp,
    /// Whether this node holds a valid leader lease (and can serve leader reads without a quorum
    /// round trip).
    pub lease_valid: bool,
}
