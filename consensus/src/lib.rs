//! boundkv's replication (in progress).

pub mod log_store;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
