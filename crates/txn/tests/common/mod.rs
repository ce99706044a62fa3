//! A transaction manager over the memory engine and a simulated clock, for tests.
#![allow(dead_code, unreachable_pub)]

use std::sync::Arc;
use std::time::Duration;

use boundkv_clockbound::{
    ClockPolicy, MemoryHighWaterMark, OracleOptions, SimClock, TimestampOracle,
};
use boundkv_storage::{Engine, MemoryEngine, Mvcc};
use boundkv_txn::{LocalApplier, TxnManager, TxnOptions};
use bytes::Bytes;

pub use futures::executor::block_on;

/// A manager over `engine` and `clock`.
pub fn manager_on<E: Engine>(
    engine: E,
    clock: &SimClock,
    options: TxnOptions,
) -> Arc<TxnManager<E>> {
    manager_with_policy(engine, clock, options, ClockPolicy::default())
}

/// A manager over `engine` and `clock` whose oracle follows `policy`.
pub fn manager_with_policy<E: Engine>(
    engine: E,
    clock: &SimClock,
    options: TxnOptions,
    policy: ClockPolicy,
) -> Arc<TxnManager<E>> {
    let mvcc = Arc::new(Mvcc::new(Arc::new(engine)).unwrap());
    let oracle = Arc::new(
        TimestampOracle::open(
            Arc::new(clock.clone()),
            OracleOptions { policy, ..OracleOptions::default() },
            Box::new(MemoryHighWaterMark::default()),
        )
        .unwrap(),
    );
    let applier = Arc::new(LocalApplier::start(mvcc.clone()));
    TxnManager::new(mvcc, oracle, applier, options)
}

/// A manager over a memory engine and a real-time clock with the given bound.
pub fn manager(bound: Duration) -> (Arc<TxnManager<MemoryEngine>>, SimClock) {
    let clock = SimClock::real_time();
    clock.set_bound(bound);
    (manager_on(MemoryEngine::new(), &clock, TxnOptions::default()), clock)
}

pub fn b(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}
