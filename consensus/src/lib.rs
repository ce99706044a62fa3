//! boundkv's replication: raft-rs 0.7 (`raft`, default protobuf codec) driven turn by turn by
//! one owner per group (a thread in a server, a simulator in tests), a Raft log store on
//! boundkv's storage engine, a transport trait, and a leader lease measured on ClockBound
//! intervals.
//!
//! # The contract
//!
//! A group of members replicates a log of opaque entries. An entry a member's
//! [`node::StateMachine`] is handed has been committed by a quorum (it is durable on a majority
//! and will be in every future leader's log), entries are handed over in log order, and each
//! member applies the same entries to the same state. What this crate adds to raft-rs:
//!
//! - **Durability** ([`log_store`]): entries, the hard state, the conf state and the truncation
//!   point live in the same [`boundkv_storage::Engine`] as the state machine's data, and each
//!   Ready is persisted as one atomic batch followed by one `fdatasync` before anything that
//!   promises it (a vote, an append acknowledgement) is sent.
//! - **One documented place for Raft's I/O ordering** ([`node::Node`]'s `handle_ready`), with
//!   the state machine's applied index written atomically with what it applied, and snapshots
//!   and membership changes written atomically with the log's own change.
//! - **Proposals correlated by request id and (index, term)**: a proposal is answered with the
//!   state machine's output for *its* entry, or `Dropped` if another leader's entry took its
//!   index or a later term committed below it (then it never applies), or `NotLeader` if it was
//!   never appended.
//! - **Read-index requests that never hang**: raft-rs drops them silently when there is no
//!   leader or the leader has not committed in its term; the node holds them until the leader
//!   has, and fails them with a timeout otherwise.
//! - **A leader lease on ClockBound intervals** (see [`node`]): a quorum's answer to a heartbeat
//!   makes the leader's lease valid until `sent.earliest + lease`; a new leader waits until
//!   `now().earliest` passes `latest + lease` of its election before it may issue anything. The
//!   node publishes both; the transaction layer enforces them.
//! - **Peer clock checks and fencing** ([`clock_check`]): every member measures every other
//!   member's clock (Cristian's method, over the transport), and a member whose clock is outside
//!   the majority's consistent set (Marzullo) fences itself: no lease, no leadership, and the
//!   transaction layer issues nothing on it. Below what the checks can resolve, every reading
//!   is widened to what the peers' answers prove ([`verified_clock`]): the clock the node's
//!   lease and the transaction layer's timestamps use ([`node::NodeHandle::clock`]).
//! - **Snapshots from the state machine**, built at its applied index, streamed by the transport
//!   in chunks, installed atomically with the log's reset, and reported back to raft-rs.
//!
//! # raft-rs options
//!
//! | option | value | why |
//! |---|---|---|
//! | `pre_vote` | on | a member that was partitioned away does not disrupt the group when it returns |
//! | `check_quorum` | on | a leader that cannot reach a quorum steps down |
//! | `read_only_option` | `Safe` | ReadIndex confirms leadership with a quorum round; `LeaseBased` trusts tick counts, not clocks, and is not used |
//! | membership | `ConfChangeV2`, joint consensus, left explicitly | a learner is added, caught up, then promoted through a joint configuration the caller leaves with an empty change |
//! | `max_size_per_msg`, `max_inflight_msgs` | 1 MiB, 256 | pipelining for throughput |
//! | async ready (`advance_append_async`) | not used | one synchronous persist per Ready is simpler to get right; many proposals share a Ready, so they share its fsync |
//!
//! # Deliberately left out
//!
//! - One group only: no multi-raft, no splits.
//! - No leadership transfer on shutdown (a stopped leader's followers elect another after the
//!   election timeout).
//! - Snapshots are built and held in memory whole; a state machine of many gigabytes would need
//!   them streamed from disk.
//! - No authentication of peers.

pub mod clock_check;
pub mod cluster_clock;
pub mod codec;
pub mod log_store;
mod logger;
pub mod node;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
pub mod transport;
pub mod verified_clock;

pub use raft;
