//! [`SimTime`]: the simulation's one clock, tokio's paused virtual time, as the
//! [`ExternalTime`] every simulated replica's [`SimClock`] follows.
//!
//! The simulator runs the whole cluster in one current-thread tokio runtime started with paused
//! time. In such a runtime `tokio::time::Instant::now()` does not read this machine's clock: it
//! stands still while any task can run and, once every task is waiting, jumps straight to the
//! earliest pending timer. Time is therefore a pure function of what the tasks do, and a run is
//! replayable from its seed.
//!
//! `SimTime` captures the runtime's instant at construction as the *origin* and reports time as
//! the span since then. Everything that needs "now" in the simulation reads it from here: the
//! clocks of the replicas (through [`SimTime::clock`], true time = `start + elapsed`), the trace
//! (each line is stamped with [`SimTime::now_nanos`]) and the network (each message's delivery
//! deadline is `now_nanos() + delay`).
//!
//! For example, a simulation built at origin with `clock(Timestamp::from_nanos(1_000 s))` whose
//! tasks then sleep 250 ms and 40 ms in turn sees `now_nanos() == 290_000_000` and a true time of
//! 1000.29 s on every replica, after a few microseconds of real time.
//!
//! Tokio's timer wheel has millisecond resolution: a sleep ends on the first millisecond tick at
//! or after its deadline (a 3.2 ms sleep from 0 ends at 4 ms). Only `tokio::time::advance` moves
//! time by less than a tick. Every timer rounds the same way, so runs stay deterministic.
//!
//! # To ensure correctness
//! Construct and read a `SimTime` only inside the simulation's paused runtime: outside any
//! runtime `tokio::time::Instant::now()` falls back to the real clock, and the run stops being
//! deterministic.

use std::sync::Arc;
use std::time::Duration;

use boundkv_clockbound::clock::BoxFuture;
use boundkv_clockbound::{ExternalTime, SimClock, Timestamp};
use tokio::time::Instant;

/// The simulation's virtual time: tokio's paused clock measured from an origin. `Copy`.
#[derive(Clone, Copy, Debug)]
pub struct SimTime {
    origin: Instant,
}

impl SimTime {
    /// Time starting now (elapsed = 0). Call inside the simulation's runtime.
    pub fn new() -> Self {
        SimTime { origin: Instant::now() }
    }

    /// Virtual time elapsed since construction.
    pub fn elapsed(&self) -> Duration {
        Instant::now().saturating_duration_since(self.origin)
    }

    /// [`SimTime::elapsed`] in nanoseconds, for stamping trace lines and history events.
    pub fn now_nanos(&self) -> u64 {
        u64::try_from(self.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    /// The tokio instant at `nanos` after the origin, for `sleep_until`.
    pub fn instant_at(&self, nanos: u64) -> Instant {
        self.origin + Duration::from_nanos(nanos)
    }

    /// A simulated clock whose true time is `start` plus this time's elapsed span, with zero error;
    /// give each replica its own with [`SimClock::sibling`].
    pub fn clock(&self, start: Timestamp) -> SimClock {
        SimClock::external(start, Arc::new(*self))
    }
}

impl Default for SimTime {
    fn default() -> Self {
        Self::new()
    }
}

impl ExternalTime for SimTime {
    fn elapsed(&self) -> Duration {
        SimTime::elapsed(self)
    }

    fn sleep(&self, d: Duration) -> BoxFuture {
        Box::pin(tokio::time::sleep(d))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use boundkv_clockbound::Clock;

    fn paused() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .unwrap()
    }

    #[test]
    fn time_moves_only_with_the_simulation() {
        paused().block_on(async {
            let time = SimTime::new();
            assert_eq!(time.now_nanos(), 0);
            tokio::time::sleep(Duration::from_millis(250)).await;
            tokio::time::sleep(Duration::from_millis(40)).await;
            assert_eq!(time.now_nanos(), 290_000_000);

            let clock = time.clock(Timestamp::from_nanos(1_000_000_000_000));
            assert_eq!(clock.true_now().as_nanos(), 1_000_290_000_000);
            clock.timebase().sleep(Duration::from_millis(10)).await;
            assert_eq!(time.now_nanos(), 300_000_000);
            assert_eq!(clock.now().unwrap().interval.midpoint().as_nanos(), 1_000_300_000_000);
        });
    }
}
