//! [`Trace`]: the simulation's log of everything that happened, stamped with virtual time, and the
//! hash that proves two runs of one seed were the same run.
//!
//! Every component of the simulator that makes or observes a decision (the network choosing a
//! message's fate, the fault schedule crashing a node, a client's operation completing) records
//! one line here. A line is stamped with the simulation's elapsed time in seconds, right-aligned,
//! so that a trace reads as a timeline:
//!
//! ```text
//!     0.000000s sim start seed 42
//!     0.012000s net #1 1->2 MsgHeartbeat t1 i0 n0 delay 3.2ms
//!     0.016000s net #1 1->2 MsgHeartbeat t1 i0 n0 deliver
//! ```
//!
//! `boundkv-sim --seed N --trace` echoes the lines as they are recorded. The determinism check
//! runs a seed twice and compares [`Trace::hash`]: FNV-1a (64 bit) over every line followed by
//! `'\n'`, kept up to date as lines arrive, so the comparison is one integer however long the run.
//! Any difference between the runs (a message delivered in another order, a timer firing a
//! millisecond later) changes some line, and with it the hash; [`Trace::tail`] then shows where
//! the runs parted.
//!
//! For example, a trace holding the single line `"a"` (as stored: the stamp, then `a`) hashes
//! the bytes of that line and then `0x0a`, starting from the FNV offset basis
//! `0xcbf29ce484222325` and, for each byte, xoring it in and multiplying by `0x100000001b3`.

use std::fmt::Display;
use std::sync::{Arc, Mutex, MutexGuard};

use crate::time::SimTime;

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// The simulation's trace. Cheap to clone; clones share the lines.
#[derive(Clone)]
pub struct Trace {
    inner: Arc<Mutex<TraceState>>,
    time: SimTime,
    echo: bool,
}

struct TraceState {
    lines: Vec<String>,
    hash: u64,
}

impl Trace {
    /// An empty trace stamped with `time`; with `echo`, every line is also printed to stdout as
    /// it is recorded.
    pub fn new(time: SimTime, echo: bool) -> Self {
        Trace {
            inner: Arc::new(Mutex::new(TraceState { lines: Vec::new(), hash: FNV_OFFSET })),
            time,
            echo,
        }
    }

    /// The time the trace is stamped with.
    pub fn time(&self) -> SimTime {
        self.time
    }

    /// Records `line`, stamped with the elapsed simulated time.
    pub fn record(&self, line: impl Display) {
        let secs = self.time.now_nanos() as f64 / 1e9;
        let line = format!("{secs:>12.6}s {line}");
        if self.echo {
            println!("{line}");
        }
        let mut s = self.state();
        s.hash = fnv1a(s.hash, line.as_bytes());
        s.hash = fnv1a(s.hash, b"\n");
        s.lines.push(line);
    }

    /// FNV-1a 64 over every line recorded so far, each followed by `'\n'`.
    pub fn hash(&self) -> u64 {
        self.state().hash
    }

    /// Every line recorded so far, stamps included.
    pub fn lines(&self) -> Vec<String> {
        self.state().lines.clone()
    }

    /// The last `n` lines (fewer if there are fewer).
    pub fn tail(&self, n: usize) -> Vec<String> {
        let s = self.state();
        s.lines[s.lines.len().saturating_sub(n)..].to_vec()
    }

    /// How many lines.
    pub fn len(&self) -> usize {
        self.state().lines.len()
    }

    /// Whether nothing has been recorded.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn state(&self) -> MutexGuard<'_, TraceState> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn fnv1a(mut hash: u64, bytes: &[u8]) -> u64 {
    for &b in bytes {
        hash ^= u64::from(b);
        hash = hash.wrapping_mul(FNV_PRIME);
    }
    hash
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn lines_are_stamped_and_hashed() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .unwrap();
        rt.block_on(async {
            let trace = Trace::new(SimTime::new(), false);
            assert!(trace.is_empty());
            assert_eq!(trace.hash(), FNV_OFFSET);
            trace.record("start");
            // Sleeps end on tokio's millisecond ticks; `advance` moves time exactly.
            tokio::time::sleep(Duration::from_millis(1_500)).await;
            tokio::time::advance(Duration::from_micros(250)).await;
            trace.record(format_args!("net {}->{}", 1, 2));
            assert_eq!(trace.lines(), ["    0.000000s start", "    1.500250s net 1->2"]);
            assert_eq!(trace.tail(1), ["    1.500250s net 1->2"]);
            assert_eq!(trace.tail(5).len(), 2);
            let all = "    0.000000s start\n    1.500250s net 1->2\n";
            assert_eq!(trace.hash(), fnv1a(FNV_OFFSET, all.as_bytes()));
            // The FNV-1a 64 test vector for "a".
            assert_eq!(fnv1a(FNV_OFFSET, b"a"), 0xaf63_dc4c_8601_ec8c);
        });
    }
}
