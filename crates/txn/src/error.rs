//! Transaction errors, small and typed, in three kinds:
//!
//! - **retryable** ([`Error::is_retryable`]): the same transaction run again may well succeed
//!   (a conflict, an expired transaction). `Db::transaction` retries these with backoff.
//! - **deterministic, tell the client**: the request itself is the problem (a key too large, a
//!   read below the GC horizon, a timestamp in the future, the clock unavailable right now, the
//!   clock fenced by its peers).
//! - **fatal, stop the node** ([`Error::is_fatal`]): storage failed or the clock's high-water mark
//!   could not be persisted; the node's state on disk is unknown.

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use boundkv_clockbound::{OracleError, Timestamp, WaitError};

/// A transaction error.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Error {
    /// Another transaction committed a key this one read, after this one read it. Retryable.
    #[error(
        "conflict on key {}: read at {read_ts}, but a transaction committed it at {conflicting_commit_ts}; retry",
        key.escape_ascii()
    )]
    Conflict {
        /// A key in the read set (or in a scanned range) that changed.
        key: Bytes,
        /// This transaction's read timestamp.
        read_ts: Timestamp,
        /// The commit timestamp of the write that invalidated the read.
        conflicting_commit_ts: Timestamp,
    },
    /// The transaction stayed open longer than the configured lifetime; its reads can no longer be
    /// validated. Retryable (run it again, faster).
    #[error("transaction expired: it read at {read_ts} and was open longer than {lifetime_ms} ms")]
    Expired {
        /// Its read timestamp.
        read_ts: Timestamp,
        /// The limit.
        lifetime_ms: u64,
    },
    /// The clock gave no usable reading in time (or a wait target was implausibly far ahead).
    /// Nothing was committed.
    #[error(transparent)]
    Clock(WaitError),
    /// A read below the garbage-collection horizon: the history it needs is gone.
    #[error("read at {ts} is below the garbage-collection horizon {horizon}")]
    BelowGcHorizon {
        /// The requested timestamp.
        ts: Timestamp,
        /// The horizon.
        horizon: Timestamp,
    },
    /// A read at a timestamp the clock has not reached (`ts > now().latest`).
    #[error("timestamp {ts} is in the future (the clock's latest is {latest})")]
    TimestampInFuture {
        /// The requested timestamp.
        ts: Timestamp,
        /// The clock's `latest` at the time.
        latest: Timestamp,
    },
    /// A commit timestamp would have to lie further beyond the clock than a commit may wait (the
    /// clock is far behind timestamps already issued, after a restart or a step). Nothing was
    /// committed; retry once the clock has caught up.
    #[error("the clock ({latest}) is too far behind timestamp {ts} to commit now")]
    ClockBehind {
        /// The timestamp that would be needed.
        ts: Timestamp,
        /// The clock's `latest`.
        latest: Timestamp,
    },
    /// A key longer than the limit. Nothing was written.
    #[error("key of {len} bytes exceeds the limit of {max} bytes")]
    KeyTooLarge {
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A value longer than the limit. Nothing was written.
    #[error("value of {len} bytes exceeds the limit of {max} bytes")]
    ValueTooLarge {
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// More writes, or more bytes, in one transaction than the limit allows. Nothing was written.
    #[error("transaction too large: {what} exceeds the limit of {max}")]
    TransactionTooLarge {
        /// Which limit (`writes`, `bytes`).
        what: String,
        /// The limit.
        max: usize,
    },
    /// This node cannot hand out timestamps: it does not lead (or not yet: it is catching up or
    /// waiting out the previous leader's lease, or its lease lapsed). Nothing happened; retry, at
    /// the leader if one is named.
    #[error("not the leader{}: {reason}", leader.map(|l| format!(" (the leader is node {l})")).unwrap_or_default())]
    NotLeader {
        /// The leader's id, if known.
        leader: Option<u64>,
        /// Why this node cannot serve (not leading, catching up, lease expired, ...).
        reason: String,
    },
    /// This node leads but cannot serve yet (it is starting its term, waiting out an earlier
    /// leader's lease, renewing its own), or the service is otherwise briefly unable. Nothing
    /// happened; retry shortly.
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// A replica has not caught up to the requested timestamp within the time it waits. Nothing
    /// happened; retry later or at the leader.
    #[error("this replica serves reads up to {safe_time}, not yet {requested}{}", leader.map(|l| format!(" (the leader is node {l})")).unwrap_or_default())]
    FollowerBehind {
        /// The timestamp asked for.
        requested: Timestamp,
        /// What this replica can serve now.
        safe_time: Timestamp,
        /// The leader, if known.
        leader: Option<u64>,
    },
    /// This node's clock is fenced by the peer clock checks (it disagrees with a majority of
    /// the voters' clocks, or has not been checked against them since the node started) or by
    /// the cluster clock (its leader's answers contradicted each other, or, as leader, a
    /// majority of voters found its answers contradicting), so the node issues no timestamps,
    /// holds no lease and serves no reads. Nothing happened.
    /// Deterministic at this node until the fence lifts (it logs when): ask another node.
    #[error("the clock of node {node} is fenced {reason}")]
    ClockFenced {
        /// The fenced node.
        node: u64,
        /// By what and why ("by the peer clock checks: " and the measured offsets, or that no
        /// check has reached a majority yet; "by the cluster clock: " and the contradiction).
        reason: String,
    },
    /// A member's leap-second policy (`--leap`) differs from the one the membership records for
    /// it, or from the membership's: the node refuses to start, or the member is not added.
    /// Mixed policies disagree by up to a second around a leap (see
    /// `docs/architecture/time.md`, "Leap seconds"). Deterministic.
    #[error(
        "node {node} runs with --leap {ours}, but the membership's leap policy is --leap {membership}: \
         every member must handle leap seconds the same way (run it with --leap {membership})"
    )]
    LeapPolicyMismatch {
        /// The node.
        node: u64,
        /// Its policy.
        ours: boundkv_clockbound::LeapPolicy,
        /// The membership's (recorded for the node, or the majority's).
        membership: boundkv_clockbound::LeapPolicy,
    },
    /// The request cannot be carried out, and the same request never will be (an invalid
    /// membership change, a record the state machine refuses). Nothing happened.
    #[error("rejected: {0}")]
    Rejected(String),
    /// A commit whose outcome is unknown: it may or may not apply. Retrying with the same
    /// transaction id is safe (the server deduplicates).
    #[error("commit outcome unknown: {0}")]
    OutcomeUnknown(String),
    /// A write on a read-only transaction.
    #[error("this transaction is read-only")]
    ReadOnly,
    /// Storage failed. Fatal.
    #[error("storage failure: {0}")]
    Storage(boundkv_storage::Error),
    /// The node cannot go on (the clock's high-water mark could not be persisted, the database
    /// failed earlier). Fatal.
    #[error("fatal: {0}")]
    Fatal(String),
    /// A replica's settings cannot work (see `ReplicaOptions::validate`); it did not start.
    /// Deterministic: change the settings.
    #[error("invalid settings: {0}")]
    InvalidOptions(crate::replica::ReplicaOptionsError),
}

impl Error {
    /// Whether running the same transaction again may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            Error::Conflict { .. }
                | Error::Expired { .. }
                | Error::NotLeader { .. }
                | Error::Unavailable(_)
                | Error::FollowerBehind { .. }
        )
    }

    /// Whether the node must stop.
    pub fn is_fatal(&self) -> bool {
        match self {
            Error::Storage(e) => e.is_fatal(),
            Error::Fatal(_) => true,
            _ => false,
        }
    }
}

impl From<boundkv_storage::Error> for Error {
    fn from(e: boundkv_storage::Error) -> Self {
        match e {
            boundkv_storage::Error::BelowGcHorizon { ts, horizon } => Error::BelowGcHorizon {
                ts: Timestamp::from_nanos(ts),
                horizon: Timestamp::from_nanos(horizon),
            },
            other => Error::Storage(other),
        }
    }
}

impl From<crate::replica::ReplicaOptionsError> for Error {
    fn from(e: crate::replica::ReplicaOptionsError) -> Self {
        Error::InvalidOptions(e)
    }
}

impl From<WaitError> for Error {
    fn from(e: WaitError) -> Self {
        Error::Clock(e)
    }
}

impl From<OracleError> for Error {
    fn from(e: OracleError) -> Self {
        match e {
            OracleError::Clock(w) => Error::Clock(w),
            OracleError::HighWaterMark(h) => Error::Fatal(h.to_string()),
            OracleError::TooFarAhead { ts, latest, .. } => Error::ClockBehind { ts, latest },
        }
    }
}

/// A transaction result.
pub type Result<T> = std::result::Result<T, Error>;
