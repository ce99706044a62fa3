//! Errors of reading a clock.
//!
//! A [`ClockError`] means *no interval could be produced at all*. A segment that was read fine but
//! says `Unknown` or `Disrupted` is not an error: it is a [`crate::ClockReading`] with that status,
//! and the policy layer ([`crate::ClockPolicy`]) decides what to do with it. Every variant is
//! `Clone + PartialEq + Serialize`, so a server can carry it to a client unchanged.
//!
//! [`ClockError::kind`] maps each error onto the five error kinds of AWS's own client
//! (`clock_bound_client::ClockBoundErrorKind`), which the compatibility tests compare.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Why a clock could not produce an interval.
#[derive(Clone, PartialEq, Eq, Debug, thiserror::Error, Serialize, Deserialize)]
#[non_exhaustive]
pub enum ClockError {
    /// The segment file does not exist: no ClockBound daemon has ever run here, or its file was
    /// removed. Fails closed.
    #[error("ClockBound segment {} does not exist (is the clockbound daemon running?)", path.display())]
    SegmentMissing {
        /// The segment path that was looked for.
        path: PathBuf,
    },
    /// The file exists but holds no usable data yet: too short, wrong magic, or never written
    /// (version or generation 0, or a write stuck half-way) with no earlier good read to fall back
    /// on.
    #[error("ClockBound segment {} is not initialized: {reason}", path.display())]
    SegmentNotInitialized {
        /// The segment path.
        path: PathBuf,
        /// What exactly was missing.
        reason: String,
    },
    /// The segment uses a layout this reader does not implement (boundkv reads layout 2).
    #[error(
        "ClockBound segment {} has layout version {version:#06x}; boundkv reads layout 2 (the \
         daemon's shm0 file, written by every daemon since 2.0)",
        path.display()
    )]
    SegmentVersionNotSupported {
        /// The segment path.
        path: PathBuf,
        /// The version word found in the header.
        version: u16,
    },
    /// A field is out of its plausible range (negative bound, `tv_nsec >= 1e9`, unknown status,
    /// drift of a second per second or more, `void_after` before `as_of`, a short segment size).
    #[error("ClockBound segment {} is malformed: {reason}", path.display())]
    SegmentMalformed {
        /// The segment path.
        path: PathBuf,
        /// The field and the value that failed the check.
        reason: String,
    },
    /// The segment's `as_of` lies ahead of this machine's `CLOCK_MONOTONIC_COARSE` by more than
    /// the 1 µs of jitter the clock is allowed. The data cannot describe the present.
    #[error("causality breach: the segment's as_of is {ahead:?} ahead of CLOCK_MONOTONIC_COARSE")]
    CausalityBreach {
        /// How far ahead `as_of` was.
        ahead: Duration,
    },
    /// The segment says VMClock disruption support is on, but the VMClock page could not be read.
    /// Without it a disruption could go unnoticed, so this fails closed.
    #[error("VMClock {}: {reason}", path.display())]
    VmClock {
        /// The VMClock device or file.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// A system call failed.
    #[error("{op} {}: {message}", path.display())]
    Io {
        /// The operation (`open`, `mmap`, `clock_gettime`, ...).
        op: String,
        /// The file involved, or an empty path.
        path: PathBuf,
        /// The OS error text.
        message: String,
        /// The raw errno, when there was one.
        errno: Option<i32>,
    },
    /// No ClockBound 0.1.x daemon at this socket: no file, or nothing bound to it. Fails
    /// closed.
    #[error(
        "ClockBound socket {} does not exist or nothing answers there (is clockboundd 0.1.x \
         running?)",
        path.display()
    )]
    SocketMissing {
        /// The daemon's socket path.
        path: PathBuf,
    },
    /// The 0.1.x daemon answered its Error response.
    #[error("ClockBound daemon at {}: {reason}", path.display())]
    DaemonError {
        /// The daemon's socket path.
        path: PathBuf,
        /// What the answer said.
        reason: String,
    },
    /// The 0.1.x daemon's answer breaks the protocol (size, version, type, flags, interval).
    #[error("ClockBound daemon at {} answered malformed: {reason}", path.display())]
    ResponseMalformed {
        /// The daemon's socket path.
        path: PathBuf,
        /// What was wrong, and the answer's bytes.
        reason: String,
    },
    /// The cluster clock (`--clock cluster:RHO`) derives every member's time from its Raft
    /// leader's: it exists only inside a server's Raft group.
    #[error(
        "the cluster clock (cluster:{rho_ppm}ppm) runs inside a Raft group: use it with `boundkv \
         serve` or `boundkv up`; an embedded database or a command without a node needs \
         `clockbound` or `system:BOUND`"
    )]
    NeedsRaftGroup {
        /// The `RHO` asked for.
        rho_ppm: u32,
    },
    /// A simulated clock was told to fail (tests only; never produced by a real source).
    #[error("simulated clock failure: {0}")]
    Simulated(String),
}

/// The five error kinds of AWS's `clock-bound-client`, onto which every [`ClockError`] maps.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum ClockErrorKind {
    /// A system call failed.
    Syscall,
    /// Missing file, short header, bad magic, version or generation 0.
    SegmentNotInitialized,
    /// A field failed a plausibility check.
    SegmentMalformed,
    /// `as_of` is in the future.
    CausalityBreach,
    /// A layout other than 2.
    SegmentVersionNotSupported,
}

impl ClockError {
    /// The AWS client's error kind for this error.
    pub fn kind(&self) -> ClockErrorKind {
        match self {
            ClockError::SegmentMissing { .. }
            | ClockError::SegmentNotInitialized { .. }
            | ClockError::SocketMissing { .. }
            | ClockError::DaemonError { .. }
            | ClockError::NeedsRaftGroup { .. } => ClockErrorKind::SegmentNotInitialized,
            ClockError::SegmentVersionNotSupported { .. } => {
                ClockErrorKind::SegmentVersionNotSupported
            }
            ClockError::SegmentMalformed { .. } | ClockError::ResponseMalformed { .. } => {
                ClockErrorKind::SegmentMalformed
            }
            ClockError::CausalityBreach { .. } => ClockErrorKind::CausalityBreach,
            // The AWS client reports an unreadable VMClock as SegmentNotInitialized.
            ClockError::VmClock { .. } => ClockErrorKind::SegmentNotInitialized,
            ClockError::Io { .. } | ClockError::Simulated(_) => ClockErrorKind::Syscall,
        }
    }

    pub(crate) fn io(op: &str, path: impl Into<PathBuf>, err: &std::io::Error) -> Self {
        ClockError::Io {
            op: op.to_string(),
            path: path.into(),
            message: err.to_string(),
            errno: err.raw_os_error(),
        }
    }
}
