//! Storage errors, split the way the layers above need them split.
//!
//! - **Deterministic, tell the client**: [`Error::BelowGcHorizon`] (a read asked for history that
//!   garbage collection has removed) and [`Error::InvalidData`] for inputs the caller got wrong.
//!   The same request gives the same answer on every replica.
//! - **Fatal, stop the node**: [`Error::Io`] and [`Error::Corruption`]. After a failed write or
//!   fsync the engine's state on disk is unknown (a failed `fsync` may have dropped dirty pages that
//!   a retry would report as clean), so the engine refuses further writes and the node must stop
//!   and recover from disk.

use serde::{Deserialize, Serialize};

/// A storage error.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Error {
    /// A read at `ts` below the garbage-collection horizon: the versions it needs may be gone.
    #[error("read at timestamp {ts} is below the garbage-collection horizon {horizon}")]
    BelowGcHorizon {
        /// The requested read timestamp (ns since the epoch).
        ts: u64,
        /// The horizon: the oldest timestamp reads are still exact at.
        horizon: u64,
    },
    /// The caller passed something the storage layer cannot accept.
    #[error("invalid data: {0}")]
    InvalidData(String),
    /// The disk or the engine failed. Fatal: the engine accepts no more writes.
    #[error("storage I/O error: {0}")]
    Io(String),
    /// Stored bytes do not decode. Fatal.
    #[error("storage corruption: {0}")]
    Corruption(String),
}

impl Error {
    /// Whether the node must stop: the error says nothing about the request and everything about
    /// the machine.
    pub fn is_fatal(&self) -> bool {
        matches!(self, Error::Io(_) | Error::Corruption(_))
    }
}

impl From<sled::Error> for Error {
    fn from(e: sled::Error) -> Self {
        match e {
            sled::Error::Corruption { .. } => Error::Corruption(e.to_string()),
            other => Error::Io(other.to_string()),
        }
    }
}

impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Self {
        Error::Io(e.to_string())
    }
}

/// A storage result.
pub type Result<T> = std::result::Result<T, Error>;
