//! boundkv's async client: the embedded database's transaction API, over the network, with
//! leader discovery and retries that never apply a transaction twice.
//!
//! ```no_run
//! use std::time::Duration;
//! use boundkv_client::{Client, Error, WireError};
//!
//! # async fn example() -> Result<(), Error> {
//! // Any one node is enough to start; the client learns the rest from its status.
//! let client = Client::connect(["10.0.0.1:7000", "10.0.0.2:7000"]).await?;
//!
//! let info = client.put("greeting", "hello").await?;
//! println!("committed at {} after a commit wait of {:?}", info.ts, info.commit_wait);
//! assert_eq!(client.get("greeting").await?.as_deref(), Some(&b"hello"[..]));
//!
//! // A read-write transaction, re-run on conflicts.
//! let (moved, _info) = client
//!     .transaction(async |txn| {
//!         let a = txn.get("a").await?;
//!         let a: u64 = a.as_deref().map_or(0, |v| String::from_utf8_lossy(v).parse().unwrap_or(0));
//!         txn.put("a", (a + 1).to_string())?;
//!         txn.put("b", a.to_string())?;
//!         Ok(a)
//!     })
//!     .await?;
//!
//! // Lock-free reads: now, at an exact past timestamp, or no staler than 10 s.
//! let snapshot = client.read_only().await?;
//! let users = snapshot.scan("user/".."user0", None).await?;
//! let then = client.read_at(info.ts).await?;
//! let recent = client.read_stale(Duration::from_secs(10)).await?;
//!
//! // A transaction run by hand, matching on the typed server error.
//! let mut txn = client.begin();
//! txn.get("a").await?;
//! txn.put("a", "0")?;
//! match txn.commit().await {
//!     Ok(_) => {}
//!     Err(Error::Server(WireError::Conflict { key, .. })) => println!("{key:?} changed; retry"),
//!     Err(e) if e.commit_may_have_applied() => println!("may or may not have applied: {e}"),
//!     Err(e) => return Err(e),
//! }
//! # let _ = (moved, users, then, recent);
//! # Ok(()) }
//! ```
//!
//! # How it talks to the cluster
//!
//! Every node accepts clients, and the client keeps one TCP connection per node, opened on
//! first use and reopened after it breaks, with any number of requests in flight on it (the
//! [`boundkv_wire`] protocol matches answers to requests by id). Read-write transactions take
//! their read timestamp and commit at the leader; read-only transactions go where the
//! [`ReadPreference`] says, the leader by default. The client learns the members and the leader
//! from the first node that answers [`Client::connect`], and follows the leader when it moves.
//!
//! # Retries
//!
//! Every retry waits a jittered, doubling backoff, and every retry loop ends at a deadline
//! ([`ClientOptions`] has the numbers). What the client does about each outcome:
//!
//! | outcome | request | what the client does |
//! |---|---|---|
//! | `NotLeader { leader: Some(n) }` | needs the leader | goes to `n` at once (after a backoff if this call tried `n` already), and remembers it |
//! | `NotLeader { leader: None }` | needs the leader | backs off, tries the next known node |
//! | `Unavailable` | needs the leader | backs off, tries the same node again |
//! | `ClockUnavailable` | needs the leader | returns the error at once: the node waited its clock policy's `unavailable_timeout` for a usable reading, and nothing was done (a commit an earlier attempt may have applied is resent instead) |
//! | `Unavailable` | read | tries another node (the leader first) |
//! | `ClockUnavailable` | read | tries another node whose clock has not refused yet; once every known node has, returns the error |
//! | `Fatal` | any | the node has stopped: tries the next known node (for a read, at once), and gives up with the error once every known node has answered `Fatal` |
//! | `FollowerBehind { leader, .. }` | read | backs off and retries there; after 3 in a row, moves to the leader (or another node) at the same timestamp |
//! | connection refused | any | tries another node (a refused request was never sent) |
//! | connection lost, timeout | read, `BeginReadWrite` | resends, at another node if possible |
//! | connection lost, timeout | `Commit` | resends the **same** request (same `txn_id`); it may have applied |
//! | connection lost, timeout | `AddMember`, `RemoveMember` | returns the error: it may have applied, and is not resent |
//! | `OutcomeUnknown` | `Commit` | resends the **same** request (same `txn_id`) |
//! | `Committed` | `Commit` | done: the first attempt's outcome, if an earlier one applied |
//! | `Conflict`, `Expired` | `Commit` | returns the error: the transaction did not apply. [`Client::transaction`] re-runs it as a new transaction (new read timestamp, **new** `txn_id`) |
//! | `Malformed`, `UnsupportedVersion`, `FrameTooLarge`, or an unreadable answer | `Commit` | returns the error, or [`Error::OutcomeUnknown`] if an earlier attempt may have applied (the server could not read the request's id, so its answer does not settle earlier attempts) |
//! | deadline passed | `Commit` | [`Error::OutcomeUnknown`] if any attempt may have applied, else the last error |
//! | deadline passed | any other | the last error ([`Error::NoNodeReachable`] if it was the transport's and several nodes were tried) |
//! | anything else (`BelowGcHorizon`, `KeyTooLarge`, `Malformed`, `UnsupportedVersion`, ...) | any | returns the error at once |
//!
//! [`Client::transaction`] re-runs a transaction when its error is retryable and says the commit
//! did not apply ([`Error::is_retryable`] and not [`Error::commit_may_have_applied`]): after
//! `Conflict`, `Expired`, `NotLeader`, `Unavailable`, `FollowerBehind`, or a transport error, up
//! to [`ClientOptions::max_transaction_attempts`] runs. Not after `ClockUnavailable`: the server
//! already waited for its clock, and the caller hears that promptly.
//!
//! # Same id to resend, new id to re-run
//!
//! A commit's request may reach the leader and apply even though its answer never comes back:
//! the connection drops after the leader received it, or the leader loses its leadership while
//! replicating it and answers `OutcomeUnknown`. Sending it again is safe only because the server
//! applies each transaction id at most once: a resend of the same `CommitRequest` (same
//! `txn_id`) returns the first attempt's `Committed` if it applied, and applies it now if it did
//! not. Had the resend carried a new id, a first attempt that did apply would apply again: a
//! counter incremented twice.
//!
//! A re-run after `Conflict` or `Expired` is the opposite case. Those answers say the
//! transaction did not apply and cannot, since what it read has changed since (or can no longer
//! be checked). Running it again reads again, at a new timestamp, and may write different
//! values: it is a different transaction, so it takes a new id. (Were it to reuse the old id,
//! a server that had applied the old one, whose `Committed` answer was lost, would report that
//! outcome for writes it never saw.) So: the same id as long as the outcome is unknown, and a
//! new id only once an answer says nothing applied. [`transaction`] has the step-by-step flow.
//!
//! # Dependencies
//!
//! The client depends only on [`boundkv_wire`] (plus tokio and small general crates), never on
//! the server or the crates it is built from. The wire types it uses in its API are re-exported
//! here.

mod backoff;
mod client;
mod cluster;
mod connection;
mod error;
mod options;
pub mod transaction;

pub use boundkv_wire as wire;
pub use boundkv_wire::{
    ClockInfo, CommitInfo, Member, NodeStatus, ReadAt, Request, Response, Role, Timestamp,
    WireError,
};
pub use bytes::Bytes;
pub use client::{Client, NodeRef};
pub use error::{Error, Result};
pub use options::{ClientOptions, ReadPreference};
pub use transaction::{Snapshot, Transaction, TxnId};
