//! boundkv, embedded: an externally consistent transactional key-value database in your process.
//!
//! ```no_run
//! use boundkv::{Db, Options, ClockSource};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! // On a machine without the ClockBound daemon, assume the system clock is within 500 µs.
//! let db = Db::open("./my-data", Options::with_clock("system:500us".parse::<ClockSource>()?))?;
//!
//! let info = db.put("greeting", "hello")?;
//! println!("committed at {} after a commit wait of {:?}", info.ts, info.commit_wait);
//!
//! // A read-write transaction, retried on conflicts.
//! let (moved, _info) = db.transaction(|txn| {
//!     let a: u64 = txn.get("a")?.map_or(0, |v| String::from_utf8_lossy(&v).parse().unwrap_or(0));
//!     txn.put("a", (a + 1).to_string())?;
//!     txn.put("b", a.to_string())?;
//!     Ok(a)
//! })?;
//!
//! // Lock-free reads: now, at an exact past timestamp, or no staler than 10 s.
//! let snapshot = db.read_only()?;
//! assert_eq!(snapshot.get("greeting")?.as_deref(), Some(&b"hello"[..]));
//! let then = db.read_at(info.ts)?;
//! let recent = db.read_stale(std::time::Duration::from_secs(10))?;
//! # let _ = (moved, then, recent);
//! # Ok(()) }
//! ```
//!
//! # What it guarantees
//!
//! Every read-write transaction commits at a timestamp taken at the clock's `latest` edge and is
//! acknowledged only once the clock's `earliest` has passed it (commit wait). Transactions are
//! serializable in timestamp order, and timestamp order is real-time order: if one commit returns
//! before another transaction begins, the second sees the first and commits above it (strict
//! serializability). An acknowledged commit has been `fdatasync`ed: it survives a power loss.
//! See `boundkv_txn` for the protocol and `boundkv_clockbound` for the clock.
//!
//! # Layout of a data directory
//!
//! `DIR/data/` holds the sled database: versions, metadata (the clock's high-water mark, the GC
//! horizon, the newest commit timestamp). One process opens a directory at a time.

mod db;

pub use boundkv_clockbound::{
    Clock, ClockPolicy, ClockReading, ClockSource, ClockStatus, SimClock, TimeInterval, Timestamp,
};
pub use boundkv_storage::{Durability, GcStats};
pub use boundkv_txn::{CommitInfo, Error, Limits, Result, TxnId};
pub use bytes::Bytes;
pub use db::{
    ClockChoice, Db, DbStatus, GcOptions, OpenError, Options, RetryPolicy, Snapshot, Txn,
};
