//! boundkv's storage: an ordered, durable key/value [`Engine`] and [`Mvcc`] on top of it.
//!
//! - [`Engine`]: point get, ordered range scan, atomic write batch, `flush` = durable. Two
//!   engines: [`SledEngine`] (sled 0.34.7, made power-loss durable with `fdatasync` and group
//!   commit) and [`MemoryEngine`] (tests). Both pass the conformance suite in `testsuite`
//!   (feature `testing`).
//! - [`keycode`]: the order-preserving encoding of user keys and timestamps.
//! - [`Mvcc`]: versions stamped with commit timestamps, reads and scans at a timestamp,
//!   atomic idempotent commits, metadata, and garbage collection below a horizon. Its module
//!   documentation walks through a worked example.
//!
//! This crate depends on nothing else of boundkv's: timestamps here are plain `u64` nanoseconds.

pub mod engine;
pub mod error;
pub mod keycode;
pub mod memory;
pub mod mvcc;
pub mod sled;
#[cfg(any(test, feature = "testing"))]
pub mod testsuite;

pub use engine::{Engine, ScanIter, Status, WriteBatch};
pub use error::{Error, Result};
pub use memory::MemoryEngine;
pub use mvcc::{Commit, GcStats, MAX_KEY_LEN, MAX_VALUE_LEN, Mvcc, MvccScan, VersionedWrite};
pub use sled::{Durability, SledEngine, SledOptions};
