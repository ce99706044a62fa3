//! The client's errors: what went wrong, and whether trying again can help.
//!
//! A request can fail at three levels, and [`Error`] keeps them apart because the right
//! reaction differs:
//!
//! | level | variant | example | a read | a commit |
//! |---|---|---|---|---|
//! | the server answered | [`Error::Server`] | `Conflict { key: "x", .. }` | per [`WireError::is_retryable`] | did **not** apply |
//! | the transport | [`Error::Connection`], [`Error::Timeout`], [`Error::NoNodeReachable`] | connection refused | resend | see below |
//! | the conversation | [`Error::Protocol`] | a `Rows` answer to a `Get` | give up | give up |
//!
//! A commit whose request may have reached a server but whose answer never came back is never
//! reported as a transport error: the client resends it with the same transaction id until it
//! gets a definite answer, and if the deadline passes first it reports
//! [`Error::OutcomeUnknown`]. So a transport error *from a commit* always means the request
//! never left the client, and the transaction did not apply.
//!
//! [`Error::is_retryable`] and [`Error::commit_may_have_applied`] extend the wire error's methods
//! of the same names to the client's own variants, so that
//!
//! ```
//! # use boundkv_client::Error;
//! fn may_start_over(e: &Error) -> bool {
//!     e.is_retryable() && !e.commit_may_have_applied()
//! }
//! ```
//!
//! is exactly the test [`Client::transaction`](crate::Client::transaction) applies before
//! re-running a transaction with a new id.

use crate::TxnId;
use boundkv_wire::WireError;

/// The client's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Why a client call failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The server answered with an error. The error is kept typed so callers can match on it,
    /// for example `Error::Server(WireError::Conflict { .. })`.
    ///
    /// Two of these come from the client itself rather than from an answer:
    /// [`WireError::FrameTooLarge`] when a request is too large to send (the server would have
    /// refused it), and [`WireError::UnsupportedVersion`] when the server's frames are of another
    /// protocol version (the client could not read its answer).
    #[error(transparent)]
    Server(WireError),
    /// The connection to `address` could not be opened, or broke before the answer came.
    #[error("connection to {address} failed: {reason}")]
    Connection {
        /// The node's client address, `host:port`.
        address: String,
        /// What went wrong, for people.
        reason: String,
    },
    /// No answer from `address` within the request timeout.
    #[error("request to {address} timed out")]
    Timeout {
        /// The node's client address, `host:port`.
        address: String,
    },
    /// Every node the client knows of was tried and none could serve the request.
    #[error(
        "no node could be reached (tried {}){}",
        .tried.join(", "),
        match .last_error { Some(e) => format!("; the last error: {e}"), None => String::new() }
    )]
    NoNodeReachable {
        /// The client addresses tried, in order.
        tried: Vec<String>,
        /// The last of the errors that made the client give up, if there was one.
        last_error: Option<Box<Error>>,
    },
    /// The client stopped resending a commit before it got a definite answer. The transaction
    /// may or may not have applied: read to find out, and never re-run it under a new id
    /// without knowing.
    #[error(
        "the outcome of transaction {txn_id} is unknown: it may or may not have applied \
         ({reason})"
    )]
    OutcomeUnknown {
        /// The transaction whose outcome is unknown.
        txn_id: TxnId,
        /// The last error seen while resending, for people.
        reason: String,
    },
    /// The server sent something the client cannot make sense of: an undecodable frame, or an
    /// answer of the wrong type for the request.
    #[error("protocol error: {0}")]
    Protocol(String),
    /// No node with this id is known (for [`ReadPreference::Node`](crate::ReadPreference::Node)
    /// and [`Client::status_of`](crate::Client::status_of)).
    #[error("no node with id {id} is known to the client")]
    UnknownNode {
        /// The id asked for.
        id: u64,
    },
}

impl Error {
    /// Whether trying again may succeed: the same read, the same commit (which the client
    /// already did until its deadline), or the transaction from the start.
    ///
    /// - [`Error::Server`]: as [`WireError::is_retryable`].
    /// - [`Error::Connection`], [`Error::Timeout`], [`Error::NoNodeReachable`]: yes, later.
    /// - [`Error::OutcomeUnknown`]: yes, but only as the same transaction (its writes may have
    ///   applied); check [`Error::commit_may_have_applied`] before starting over.
    /// - [`Error::Protocol`], [`Error::UnknownNode`]: no.
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::Server(e) => e.is_retryable(),
            Error::Connection { .. }
            | Error::Timeout { .. }
            | Error::NoNodeReachable { .. }
            | Error::OutcomeUnknown { .. } => true,
            Error::Protocol(_) | Error::UnknownNode { .. } => false,
        }
    }

    /// Whether a commit that failed with this error may nevertheless have applied. True only for
    /// [`Error::OutcomeUnknown`] (and the wire error it stands for): every other error from
    /// [`Transaction::commit`](crate::Transaction::commit) means the transaction did not apply.
    pub fn commit_may_have_applied(&self) -> bool {
        match self {
            Error::Server(e) => e.commit_may_have_applied(),
            Error::OutcomeUnknown { .. } => true,
            Error::Connection { .. }
            | Error::Timeout { .. }
            | Error::NoNodeReachable { .. }
            | Error::Protocol(_)
            | Error::UnknownNode { .. } => false,
        }
    }

    /// The wire error, if the server answered with one.
    pub fn server_error(&self) -> Option<&WireError> {
        match self {
            Error::Server(e) => Some(e),
            _ => None,
        }
    }
}

impl From<WireError> for Error {
    fn from(e: WireError) -> Self {
        Error::Server(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use boundkv_wire::Timestamp;

    #[test]
    fn retry_classes_extend_the_wire_errors() {
        let conflict = Error::Server(WireError::Conflict {
            key: "x".into(),
            read_ts: Timestamp::ZERO,
            conflicting_commit_ts: Timestamp::ZERO,
        });
        assert!(conflict.is_retryable() && !conflict.commit_may_have_applied());
        let unknown =
            Error::OutcomeUnknown { txn_id: TxnId::from_bytes([7; 16]), reason: "".into() };
        assert!(unknown.is_retryable() && unknown.commit_may_have_applied());
        let lost = Error::Connection { address: "a:1".into(), reason: "reset".into() };
        assert!(lost.is_retryable() && !lost.commit_may_have_applied());
        let garbage = Error::Protocol("nonsense".into());
        assert!(!garbage.is_retryable() && !garbage.commit_may_have_applied());
        let fatal = Error::Server(WireError::Fatal("disk".into()));
        assert!(!fatal.is_retryable());
    }

    #[test]
    fn no_node_reachable_names_the_addresses_and_the_last_error() {
        let e = Error::NoNodeReachable {
            tried: vec!["a:1".into(), "b:2".into()],
            last_error: Some(Box::new(Error::Timeout { address: "b:2".into() })),
        };
        assert_eq!(
            e.to_string(),
            "no node could be reached (tried a:1, b:2); the last error: request to b:2 timed out"
        );
    }
}
