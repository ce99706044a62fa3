//! The errors of the protocol: what a server answers with, and what decoding a frame can fail
//! with.
//!
//! # Errors a server answers with
//!
//! A failed request is answered with [`Response::Error`](crate::Response::Error) carrying a
//! [`WireError`]. The variants are typed, so a client acts on them without parsing messages. They
//! fall into four groups by what the client should do:
//!
//! - **Send the same request elsewhere or later**; nothing happened: [`NotLeader`],
//!   [`FollowerBehind`], [`Unavailable`], [`ClockUnavailable`].
//! - **Restart the transaction** with a new read timestamp: [`Conflict`], [`Expired`].
//! - **Resend the same commit, with the same `txn_id`**: [`OutcomeUnknown`].
//! - **Give up**, since retrying the same request cannot help: everything else.
//!
//! [`WireError::is_retryable`] answers "may I try again?", and
//! [`WireError::commit_may_have_applied`] answers "must I keep the transaction id?". For example,
//! a client that gets `NotLeader { leader: Some(node 2 at 10.0.0.2:7000) }` reconnects to node 2
//! and resends; one that gets `Conflict { key: "x", .. }` begins a new transaction; one that gets
//! `OutcomeUnknown` resends the commit until it gets a definite answer, and only then tells its
//! caller.
//!
//! [`WireError::Fatal`] means the node has stopped serving: it is not retryable *on that node*,
//! though another replica may serve the request.
//!
//! # Errors decoding a frame
//!
//! [`DecodeError`] is what [`decode_request`](crate::decode_request) and
//! [`decode_response`](crate::decode_response) return: either the frame is of another protocol
//! version, or it is malformed. A server that cannot decode a request answers with
//! [`DecodeError::into_server_error`]; a client that cannot decode a response reports
//! [`DecodeError::into_client_error`].
//!
//! [`NotLeader`]: WireError::NotLeader
//! [`FollowerBehind`]: WireError::FollowerBehind
//! [`Unavailable`]: WireError::Unavailable
//! [`ClockUnavailable`]: WireError::ClockUnavailable
//! [`Conflict`]: WireError::Conflict
//! [`Expired`]: WireError::Expired
//! [`OutcomeUnknown`]: WireError::OutcomeUnknown

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::{Member, PROTOCOL_VERSION, Timestamp};

/// Errors a server answers with. Typed, so clients can act on them.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, thiserror::Error)]
pub enum WireError {
    /// This node is not the leader and the request needs one. Retry at `leader` if known,
    /// otherwise shortly at any node.
    #[error("this node is not the leader; {}", RetryAtLeader(.leader))]
    NotLeader {
        /// The leader, if this node knows one.
        leader: Option<Member>,
    },
    /// A key the transaction read (or a key in a range it scanned) was written by another
    /// transaction that committed after the read. Restart the transaction.
    #[error(
        "write conflict on key \"{}\": read at {read_ts}, but another transaction committed a \
         write to it at {conflicting_commit_ts}; retry the transaction",
        .key.escape_ascii()
    )]
    Conflict {
        /// The key that changed (for a range, the first key found to have changed).
        key: Bytes,
        /// The transaction's read timestamp.
        read_ts: Timestamp,
        /// The commit timestamp of the write that conflicts.
        conflicting_commit_ts: Timestamp,
    },
    /// The transaction's read timestamp is too old to validate against (the leader no longer
    /// tracks writes that far back, or leadership changed since). Restart the transaction.
    #[error("the transaction's read timestamp {read_ts} has expired; retry the transaction")]
    Expired {
        /// The transaction's read timestamp.
        read_ts: Timestamp,
    },
    /// The server's clock cannot currently be trusted to produce timestamps (the bound is too
    /// wide, the clock daemon is down, ...), and no usable reading came within the server's
    /// `unavailable_timeout`. Nothing was done: a commit answered with it did not apply (the
    /// server answers a resend of a commit that may have applied with its outcome, never with
    /// this). Retry later or at another node; the message names the clock's state and bound.
    #[error("the server's clock is unusable, so nothing was done: {0}; retry later")]
    ClockUnavailable(String),
    /// The server's clock is behind a timestamp it must exceed (for example one it handed out
    /// before its clock stepped back), so it cannot issue a timestamp yet.
    #[error("the server's clock is behind: it must exceed {ts}, but its latest is {latest}")]
    ClockBehind {
        /// The timestamp the clock must exceed.
        ts: Timestamp,
        /// The clock's latest possible time now.
        latest: Timestamp,
    },
    /// The versions at `ts` have been garbage collected. Read at a later timestamp.
    #[error(
        "timestamp {ts} is below the garbage-collection horizon {horizon}: versions that old are \
         gone; read at a later timestamp"
    )]
    BelowGcHorizon {
        /// The timestamp requested.
        ts: Timestamp,
        /// The oldest timestamp that can still be read.
        horizon: Timestamp,
    },
    /// The timestamp lies beyond anything the server's clock can vouch for, so a read there
    /// could miss writes that are yet to come.
    #[error("timestamp {ts} is in the future: the server's clock reads at most {latest}")]
    TimestampInFuture {
        /// The timestamp requested.
        ts: Timestamp,
        /// The clock's latest possible time now.
        latest: Timestamp,
    },
    /// A key is longer than the server accepts.
    #[error("a key of {len} bytes exceeds the maximum key length of {max} bytes")]
    KeyTooLarge {
        /// The key's length in bytes.
        len: u64,
        /// The largest key length accepted.
        max: u64,
    },
    /// A value is longer than the server accepts.
    #[error("a value of {len} bytes exceeds the maximum value length of {max} bytes")]
    ValueTooLarge {
        /// The value's length in bytes.
        len: u64,
        /// The largest value length accepted.
        max: u64,
    },
    /// The transaction exceeds a limit on its size.
    #[error("the transaction is too large: {what} exceeds the maximum of {max}")]
    TransactionTooLarge {
        /// What is too large, e.g. "the number of writes" or "the total size of the writes".
        what: String,
        /// The limit on it.
        max: u64,
    },
    /// This replica has not caught up to the requested timestamp. Retry later, or at the
    /// leader.
    #[error(
        "this replica can serve reads only up to {safe_time}, before the requested {requested}; \
         retry later or {}",
        AtLeader(.leader)
    )]
    FollowerBehind {
        /// The timestamp requested.
        requested: Timestamp,
        /// The timestamp this replica can serve reads at.
        safe_time: Timestamp,
        /// The leader, if this replica knows one.
        leader: Option<Member>,
    },
    /// A commit may or may not have applied (for example, leadership changed while it was being
    /// replicated). Resend the same commit with the **same transaction id**: the server applies
    /// a transaction id at most once, so the resend either reports the first attempt's outcome
    /// or applies it now.
    #[error(
        "the commit's outcome is unknown ({0}): it may or may not have applied; retry it with the \
         same transaction id"
    )]
    OutcomeUnknown(String),
    /// The service cannot take the request now (for example, no leader has been elected yet).
    /// Nothing happened; retry.
    #[error("unavailable: {0}; nothing was done, retry")]
    Unavailable(String),
    /// The client and server speak different protocol versions.
    #[error(
        "unsupported protocol version: the server speaks version {server}, the client version \
         {client}"
    )]
    UnsupportedVersion {
        /// The server's protocol version.
        server: u16,
        /// The client's protocol version.
        client: u16,
    },
    /// A frame could not be decoded, or a request made no sense (for example an empty key).
    #[error("malformed message: {0}")]
    Malformed(String),
    /// A frame is longer than [`MAX_FRAME_LEN`](crate::MAX_FRAME_LEN).
    #[error("a frame of {len} bytes exceeds the maximum frame length of {max} bytes")]
    FrameTooLarge {
        /// The frame's length in bytes.
        len: u64,
        /// The largest frame length accepted.
        max: u64,
    },
    /// The node has stopped serving (for example after a storage failure). Another node may
    /// serve the request.
    #[error("the node has stopped serving: {0}")]
    Fatal(String),
}

impl WireError {
    /// Whether the client may try again: the same request elsewhere or later (`NotLeader`,
    /// `FollowerBehind`, `Unavailable`, `ClockUnavailable`), the transaction from the start
    /// (`Conflict`, `Expired`), or the same commit (`OutcomeUnknown`).
    ///
    /// `OutcomeUnknown` is retryable **only with the same transaction id**: the first attempt may
    /// have applied, and a new id would apply the writes a second time. Check
    /// [`WireError::commit_may_have_applied`] before choosing a new id.
    pub fn is_retryable(&self) -> bool {
        match self {
            WireError::Conflict { .. }
            | WireError::Expired { .. }
            | WireError::NotLeader { .. }
            | WireError::FollowerBehind { .. }
            | WireError::Unavailable(_)
            | WireError::ClockUnavailable(_)
            | WireError::OutcomeUnknown(_) => true,
            WireError::ClockBehind { .. }
            | WireError::BelowGcHorizon { .. }
            | WireError::TimestampInFuture { .. }
            | WireError::KeyTooLarge { .. }
            | WireError::ValueTooLarge { .. }
            | WireError::TransactionTooLarge { .. }
            | WireError::UnsupportedVersion { .. }
            | WireError::Malformed(_)
            | WireError::FrameTooLarge { .. }
            | WireError::Fatal(_) => false,
        }
    }

    /// Whether a commit answered with this error may have applied. Only
    /// [`WireError::OutcomeUnknown`]: every other error means the commit did not apply.
    pub fn commit_may_have_applied(&self) -> bool {
        matches!(self, WireError::OutcomeUnknown(_))
    }

    /// The leader the error points to, for `NotLeader` and `FollowerBehind`, if the node knew
    /// one.
    pub fn leader_hint(&self) -> Option<&Member> {
        match self {
            WireError::NotLeader { leader } | WireError::FollowerBehind { leader, .. } => {
                leader.as_ref()
            }
            _ => None,
        }
    }
}

/// Formats "retry at the leader, node 2 at host:port" or "no leader is known yet; retry shortly".
struct RetryAtLeader<'a>(&'a Option<Member>);

impl std::fmt::Display for RetryAtLeader<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            Some(leader) => write!(f, "retry at the leader, {leader}"),
            None => write!(f, "no leader is known yet; retry shortly"),
        }
    }
}

/// Formats "at the leader, node 2 at host:port" or "at the leader once one is known".
struct AtLeader<'a>(&'a Option<Member>);

impl std::fmt::Display for AtLeader<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            Some(leader) => write!(f, "at the leader, {leader}"),
            None => write!(f, "at the leader once one is known"),
        }
    }
}

/// Why a frame payload could not be decoded.
#[derive(Clone, Debug, PartialEq, Eq, Hash, thiserror::Error)]
pub enum DecodeError {
    /// The frame is of another protocol version. Checked before anything else, so it is
    /// reported whatever follows the version.
    #[error("unsupported protocol version {got}; this side speaks version {}", PROTOCOL_VERSION)]
    UnsupportedVersion {
        /// The version the frame carries.
        got: u16,
    },
    /// The frame is not a valid encoding of a frame of this version: truncated, trailing bytes,
    /// an unknown variant, invalid UTF-8, a bad varint, ...
    #[error("malformed frame: {0}")]
    Malformed(String),
}

impl DecodeError {
    /// The error a server answers with when it cannot decode a request: a frame of another
    /// version becomes `UnsupportedVersion { server: PROTOCOL_VERSION, client: got }`.
    pub fn into_server_error(self) -> WireError {
        match self {
            DecodeError::UnsupportedVersion { got } => {
                WireError::UnsupportedVersion { server: PROTOCOL_VERSION, client: got }
            }
            DecodeError::Malformed(why) => WireError::Malformed(why),
        }
    }

    /// The error a client reports when it cannot decode a response: a frame of another version
    /// becomes `UnsupportedVersion { server: got, client: PROTOCOL_VERSION }`.
    pub fn into_client_error(self) -> WireError {
        match self {
            DecodeError::UnsupportedVersion { got } => {
                WireError::UnsupportedVersion { server: got, client: PROTOCOL_VERSION }
            }
            DecodeError::Malformed(why) => WireError::Malformed(why),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node2() -> Member {
        Member {
            id: 2,
            peer_address: "10.0.0.2:7100".into(),
            client_address: "10.0.0.2:7000".into(),
            voter: true,
            leap: "step".into(),
        }
    }

    #[test]
    fn not_leader_names_the_leader() {
        let err = WireError::NotLeader { leader: Some(node2()) };
        assert_eq!(
            err.to_string(),
            "this node is not the leader; retry at the leader, node 2 at 10.0.0.2:7000"
        );
        let err = WireError::NotLeader { leader: None };
        assert_eq!(
            err.to_string(),
            "this node is not the leader; no leader is known yet; retry shortly"
        );
    }

    #[test]
    fn conflict_names_the_key_and_both_timestamps() {
        let err = WireError::Conflict {
            key: Bytes::from_static(b"user/\x00\xff\"x"),
            read_ts: Timestamp::from_nanos(1_700_000_000_000_000_001),
            conflicting_commit_ts: Timestamp::from_nanos(1_700_000_000_000_000_002),
        };
        assert_eq!(
            err.to_string(),
            "write conflict on key \"user/\\x00\\xff\\\"x\": read at \
             2023-11-14T22:13:20.000000001Z, but another transaction committed a write to it at \
             2023-11-14T22:13:20.000000002Z; retry the transaction"
        );
    }

    #[test]
    fn follower_behind_points_at_the_leader() {
        let err = WireError::FollowerBehind {
            requested: Timestamp::from_nanos(2_000_000_000),
            safe_time: Timestamp::from_nanos(1_000_000_000),
            leader: Some(Member { voter: true, ..node2() }),
        };
        assert_eq!(
            err.to_string(),
            "this replica can serve reads only up to 1970-01-01T00:00:01.000000000Z, before the \
             requested 1970-01-01T00:00:02.000000000Z; retry later or at the leader, node 2 at \
             10.0.0.2:7000"
        );
        assert_eq!(err.leader_hint(), Some(&node2()));
    }

    #[test]
    fn retry_classes() {
        let ts = Timestamp::ZERO;
        let retryable = [
            WireError::NotLeader { leader: None },
            WireError::Conflict { key: Bytes::new(), read_ts: ts, conflicting_commit_ts: ts },
            WireError::Expired { read_ts: ts },
            WireError::ClockUnavailable("daemon down".into()),
            WireError::FollowerBehind { requested: ts, safe_time: ts, leader: None },
            WireError::OutcomeUnknown("leader changed".into()),
            WireError::Unavailable("no leader".into()),
        ];
        let final_ = [
            WireError::ClockBehind { ts, latest: ts },
            WireError::BelowGcHorizon { ts, horizon: ts },
            WireError::TimestampInFuture { ts, latest: ts },
            WireError::KeyTooLarge { len: 2, max: 1 },
            WireError::ValueTooLarge { len: 2, max: 1 },
            WireError::TransactionTooLarge { what: "writes".into(), max: 1 },
            WireError::UnsupportedVersion { server: 1, client: 2 },
            WireError::Malformed("x".into()),
            WireError::FrameTooLarge { len: 2, max: 1 },
            WireError::Fatal("disk".into()),
        ];
        for err in &retryable {
            assert!(err.is_retryable(), "{err:?} should be retryable");
        }
        for err in &final_ {
            assert!(!err.is_retryable(), "{err:?} should not be retryable");
            assert!(!err.commit_may_have_applied(), "{err:?}");
        }
        for err in &retryable {
            assert_eq!(
                err.commit_may_have_applied(),
                matches!(err, WireError::OutcomeUnknown(_)),
                "{err:?}"
            );
        }
    }

    #[test]
    fn decode_errors_map_to_each_side() {
        let err = DecodeError::UnsupportedVersion { got: 7 };
        assert_eq!(
            err.clone().into_server_error(),
            WireError::UnsupportedVersion { server: PROTOCOL_VERSION, client: 7 }
        );
        assert_eq!(
            err.into_client_error(),
            WireError::UnsupportedVersion { server: 7, client: PROTOCOL_VERSION }
        );
        assert_eq!(
            DecodeError::Malformed("eof".into()).into_server_error(),
            WireError::Malformed("eof".into())
        );
    }
}
