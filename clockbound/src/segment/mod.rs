//! The AWS ClockBound daemon's shared-memory segment, read in-process.
//!
//! # What the daemon publishes
//!
//! The ClockBound daemon (2.0 and later; 3.x keeps writing this file for compatibility) asks its
//! time source, about once a second, how far the system clock can be from true time. It publishes
//! the answer in an 80-byte file, `/var/run/clockbound/shm0`, that every client maps:
//!
//! - `bound_nsec`: the bound on `|CLOCK_REALTIME - true time|` at the instant `as_of`;
//! - `as_of`: that instant, on `CLOCK_MONOTONIC_COARSE` (a clock that is never stepped);
//! - `max_drift_ppb`: how fast the bound grows after `as_of`, in ns per second;
//! - `void_after`: when the data stops meaning anything (as_of + 1000 s);
//! - `clock_status`, a VMClock `disruption_marker` and a flag saying whether to check it.
//!
//! The byte layout is in [`layout`]; the file is guarded by a 16-bit *generation* seqlock that is
//! odd while the daemon writes.
//!
//! # How `now()` is computed, a worked example
//!
//! The daemon measured a bound of 10 µs at `as_of` = 5,000.0 s after boot, with a drift of
//! 50,000 ppb (50 ppm), status `Synchronized`. A transaction calls `now()` when the system clock
//! reads 1,763,920,000.000000000 s since the epoch and `CLOCK_MONOTONIC_COARSE` reads 5,000.4 s:
//!
//! ```text
//! elapsed  = 5000.4 - 5000.0                 = 0.4 s
//! bound    = 10 µs + 0.4 s × 50,000 ns/s      = 30 µs
//! earliest = 1763920000.000000000 - 30 µs     = 1763919999.999970000
//! latest   = 1763920000.000000000 + 30 µs     = 1763920000.000030000
//! status   = Synchronized (0.4 s < the 5 s grace after as_of)
//! ```
//!
//! Had the daemon died, the same segment read at 5,010 s would give a bound of 510 µs and status
//! `FreeRunning` (still a valid bound, growing); read after `void_after` (6,000 s) the status is
//! `Unknown` and nothing may be concluded from it.
//!
//! # The reader's guarantees
//!
//! - **No torn reads.** Generation loaded with Acquire, header and body copied with relaxed
//!   atomic loads, an Acquire fence, generation loaded again; accepted only if both are equal,
//!   even and non-zero, and every field passes its plausibility check.
//! - **Never blocks on the writer.** While a write is in progress, or while a restarting daemon
//!   rewrites the file (truncated, zeroed, header half written), the reader serves its last good
//!   snapshot: it is still correct, because the bound grows from that snapshot's own `as_of`. The
//!   fallback follows the daemon's publication order, so a withdrawn status never comes back.
//! - **Never crashes on a daemon restart.** A restart truncates the file under the mapping; the
//!   resulting `SIGBUS` is absorbed (see `segment/mapping.rs` in the source) and the file
//!   is remapped.
//! - **Fails closed.** A missing file, a wrong layout, a causality breach or an unreadable VMClock
//!   page are errors; a disruption the daemon has not yet acted on, or a dead daemon past
//!   `void_after`, is a reading with status `Unknown`.
//! - **Cheap.** Two vDSO clock reads, about twenty loads and a little integer arithmetic: see
//!   `bench/benches/clock.rs` for the cost against `clock_gettime` itself.

pub mod layout;
mod mapping;
mod reader;
pub mod vmclock;
mod writer;

pub use mapping::faults_handled as truncation_faults_handled;
pub use reader::{ClockBoundClock, ClockBoundOptions};
pub use writer::SegmentWriter;
