//! boundkv's transactions: strictly serializable (externally consistent) read-write transactions
//! with commit wait, and lock-free read-only, exact-timestamp and bounded-staleness reads, over
//! [`boundkv_storage::Mvcc`] and the bounded clock of [`boundkv_clockbound`].
//!
//! # The guarantee
//!
//! If transaction T1 commits (returns to its caller) before T2 begins, then T1's commit timestamp
//! is below T2's, and T2 sees T1's writes. Transactions are serializable in timestamp order, and
//! timestamp order agrees with real time. That is external consistency, Spanner's guarantee, also
//! called strict serializability.
//!
//! # Read-write transactions: optimistic, validated at commit
//!
//! Spanner runs read-write transactions under strict two-phase locking with wound-wait. boundkv
//! uses optimistic concurrency control instead, for three reasons: reads take no locks, so a
//! transaction that only reads a hot key never blocks or wounds writers; there are no deadlocks to
//! prevent, so no wound-wait and no lock queue to persist or hand over at a leader change; and the
//! whole decision happens in one short critical section at commit, which is exactly where a Raft
//! leader sits. The price is aborts under heavy contention, which `Db::transaction` absorbs with
//! retries and backoff. Range reads are validated as ranges, so there are no phantoms.
//!
//! A transaction:
//!
//! 1. **reads** at one read timestamp `r = max(now().latest, floor)`, taken at its first read
//!    (a transaction that only writes never takes one), after waiting until no commit at or below
//!    `r` is pending (safe time); its writes are buffered and it reads its own writes;
//! 2. **validates** at commit, under the conflict-index lock: no key it read, and no key in a range
//!    it scanned, was committed by anyone after `r` (otherwise a typed, retryable
//!    [`Error::Conflict`] names the key and both timestamps);
//! 3. **takes its commit timestamp** in the same critical section:
//!    `s = max(now().latest, r + 1, floor + 1)`, registers `s` as *pending*, and records its
//!    writes in the conflict index at `s`;
//! 4. builds a deterministic [`CommitRecord`] and hands it to the [`Applier`], which makes it
//!    durable and applies it (group commit);
//! 5. **commit wait**: waits until `now().earliest > s`. The wait has been running since `s` was
//!    chosen, so it overlaps the durable write; only what is left of it is waited;
//! 6. marks `s` no longer pending (the writes become visible to readers at or above `s`) and
//!    returns.
//!
//! Readers never see a commit before its commit wait is over: a read at `ts >= s` waits while `s`
//! is pending, and a read at `ts < s` does not see it. So anyone who observed T1's writes did so
//! after true time passed `s₁`, and anything they start later gets a higher timestamp.
//!
//! # A worked example (ε = 5 ms)
//!
//! ```text
//! true time  100.000       100.004            100.010   100.011                100.016
//! T1         reads x@r₁=100.005, commits: s₁=100.009 ─ durable ─ earliest > s₁ → returns
//! T2                                                              begins, reads x at
//!                                                                 r₂ = latest = 100.016 > s₁: sees T1
//! T3         reads x@100.005 ........................... commit: x written at s₁ > 100.005 → Conflict
//! ```
//!
//! # Read-only transactions
//!
//! A read-only transaction takes `s_read = now().latest` (raising the floor, so later commits land
//! above it), waits until no commit at or below `s_read` is pending, and then reads lock-free. A
//! read at an exact past timestamp waits the same way and returns exactly the state as of that
//! timestamp, every time, until garbage collection passes it (then [`Error::BelowGcHorizon`]). A
//! bounded-staleness read takes the freshest timestamp that needs no waiting, as long as it is
//! within the bound of `now().latest`.
//!
//! # Shaped for Raft
//!
//! The commit path is "choose timestamp → build a deterministic record → apply it". The embedded
//! database applies locally ([`LocalApplier`]); the replicated server supplies an [`Applier`]
//! that proposes the record to Raft and resolves once it is committed and applied.

mod apply;
mod conflicts;
mod error;
mod hwm;
mod limits;
mod manager;
mod record;
pub mod replica;
mod timestamps;
mod txn;

pub use apply::{Applier, ApplyHandle, LocalApplier};
pub use conflicts::KeyRange;
pub use error::{Error, Result};
pub use hwm::MvccHighWaterMark;
pub use limits::Limits;
pub use manager::{TimestampGate, TxnManager, TxnOptions};
pub use record::{CommitRecord, TxnId, Write};
pub use txn::{CommitInfo, CommitRequest, ReadOnlyTransaction, Transaction};
