//! boundkv's replication (in progress).

pub mod codec;
pub mod log_store;
mod logger;
pub mod node;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
pub mod transport;

pub use raft;
