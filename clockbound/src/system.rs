//! [`SystemClock`]: the fallback for machines without a ClockBound daemon.
//!
//! It reads `CLOCK_REALTIME` and widens it by a bound the operator *asserts* (`--clock
//! system:500us`). Nothing measures that bound: if NTP is off, or the machine's clock is a second
//! wrong, every guarantee that rests on the interval is void. That is acceptable on a laptop, in
//! CI and in benchmarks that sweep the bound on purpose, and it is why the source says so, loudly,
//! when it is created and in every [`Clock::describe`].

use std::time::Duration;

use crate::clock::Clock;
use crate::error::ClockError;
use crate::sys;
use crate::time::{ClockReading, ClockStatus, TimeInterval, Timestamp};

/// The system clock with an assumed, configured error bound. Always reports `Synchronized`.
#[derive(Clone, Debug)]
pub struct SystemClock {
    bound: Duration,
}

impl SystemClock {
    /// A system clock assumed to be within `bound` of true time. Logs a warning that the bound is
    /// an assumption.
    pub fn new(bound: Duration) -> Self {
        tracing::warn!(
            bound = %humantime::format_duration(bound),
            "clock source system:{}: the error bound is an ASSUMPTION, not a measurement. \
             External consistency holds only if this machine's clock really stays within it. \
             Run the ClockBound daemon and use --clock clockbound for a measured bound.",
            humantime::format_duration(bound)
        );
        SystemClock { bound }
    }

    /// The assumed bound.
    pub fn bound(&self) -> Duration {
        self.bound
    }
}

impl Clock for SystemClock {
    fn now(&self) -> Result<ClockReading, ClockError> {
        let real = Timestamp::from_nanos(u64::try_from(sys::realtime_nanos()).unwrap_or(0));
        Ok(ClockReading {
            interval: TimeInterval::around(real, self.bound),
            status: ClockStatus::Synchronized,
        })
    }

    fn describe(&self) -> String {
        format!(
            "system clock with an assumed bound of ±{} (not measured)",
            humantime::format_duration(self.bound)
        )
    }
}
