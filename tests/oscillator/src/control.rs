//! The control file's layout, shared by the library (which reads it) and the consistency
//! suite's runner (which writes it, and includes this file with `#[path]` rather than linking
//! the library, whose exported `clock_gettime` would replace its own).

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering, fence};

/// The control file's layout: a sequence lock and the drift's numbers, native-endian. The
/// writer makes `seq` odd, writes the fields, then makes it even; a reader retries while it is
/// odd or changed.
///
/// The error is continuous in `m` by construction: before `m0` it follows the previous rate
/// back from `e0` (a coarse clock reads a tick's start, before `m0`, in the tick the rate
/// changed), and after `until` it stays where it got to (a slew ends exactly at zero without a
/// step).
#[repr(C)]
pub struct Control {
    /// Odd while the writer is writing.
    pub seq: AtomicU64,
    /// The true `CLOCK_MONOTONIC` when the rate was set, nanoseconds.
    pub m0: AtomicI64,
    /// The error at `m0`, nanoseconds (the process's clocks minus the machine's).
    pub e0: AtomicI64,
    /// The rate from `m0` until `until`, parts per billion (positive: fast).
    pub rate_ppb: AtomicI64,
    /// When the rate stops (true monotonic nanoseconds; `i64::MAX`: never).
    pub until: AtomicI64,
    /// The rate just before `m0`, parts per billion.
    pub before_ppb: AtomicI64,
}

/// The control file's size.
pub const CONTROL_LEN: usize = std::mem::size_of::<Control>();

/// The variable that names the control file.
pub const CONTROL_VAR: &str = "BOUNDKV_OSCILLATOR";

/// The drift's parameters, as [`Control`] holds them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Drift {
    /// See [`Control::m0`].
    pub m0: i64,
    /// See [`Control::e0`].
    pub e0: i64,
    /// See [`Control::rate_ppb`].
    pub rate_ppb: i64,
    /// See [`Control::until`].
    pub until: i64,
    /// See [`Control::before_ppb`].
    pub before_ppb: i64,
}

impl Drift {
    /// No drift at all (a zeroed control file reads as this, but for `until` 0, which is the
    /// same).
    pub const NONE: Drift = Drift { m0: 0, e0: 0, rate_ppb: 0, until: i64::MAX, before_ppb: 0 };

    /// The error at true monotonic time `m`, nanoseconds.
    pub fn error_at(&self, m: i64) -> i64 {
        let scaled = |d: i64, ppb: i64| (d as i128 * ppb as i128 / 1_000_000_000) as i64;
        if m < self.m0 {
            self.e0 - scaled(self.m0 - m, self.before_ppb)
        } else {
            self.e0 + scaled(m.min(self.until.max(self.m0)) - self.m0, self.rate_ppb)
        }
    }

    /// The rate in force at `m`.
    pub fn rate_at(&self, m: i64) -> i64 {
        if m < self.m0 {
            self.before_ppb
        } else if m < self.until {
            self.rate_ppb
        } else {
            0
        }
    }

    /// From true monotonic time `m` on, the error changes at `rate_ppb` until `until`, starting
    /// from where it is then.
    pub fn then(&self, m: i64, rate_ppb: i64, until: i64) -> Drift {
        Drift { m0: m, e0: self.error_at(m), rate_ppb, until, before_ppb: self.rate_at(m) }
    }
}

impl Control {
    /// The drift in force.
    pub fn drift(&self) -> Drift {
        loop {
            let seq = self.seq.load(Ordering::Acquire);
            if seq % 2 == 1 {
                std::hint::spin_loop();
                continue;
            }
            let d = Drift {
                m0: self.m0.load(Ordering::Relaxed),
                e0: self.e0.load(Ordering::Relaxed),
                rate_ppb: self.rate_ppb.load(Ordering::Relaxed),
                until: self.until.load(Ordering::Relaxed),
                before_ppb: self.before_ppb.load(Ordering::Relaxed),
            };
            fence(Ordering::Acquire);
            if self.seq.load(Ordering::Relaxed) == seq {
                // A file never written (all zero) means no drift.
                return if seq == 0 { Drift::NONE } else { d };
            }
        }
    }

    /// The error at true monotonic time `m`, nanoseconds.
    pub fn error_at(&self, m: i64) -> i64 {
        self.drift().error_at(m)
    }

    /// Sets the drift (the runner's side, one writer).
    pub fn set(&self, d: Drift) {
        let seq = self.seq.load(Ordering::Relaxed);
        self.seq.store(seq | 1, Ordering::Relaxed);
        fence(Ordering::Release);
        self.m0.store(d.m0, Ordering::Relaxed);
        self.e0.store(d.e0, Ordering::Relaxed);
        self.rate_ppb.store(d.rate_ppb, Ordering::Relaxed);
        self.until.store(d.until, Ordering::Relaxed);
        self.before_ppb.store(d.before_ppb, Ordering::Relaxed);
        self.seq.store((seq | 1) + 1, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_error_is_continuous_across_changes_and_a_slew_ends_at_zero() {
        let d = Drift::NONE.then(1_000, 1_000_000, i64::MAX); // +1,000 ppm from t = 1 µs
        assert_eq!(d.error_at(1_001_000), 1_000);
        assert_eq!(d.error_at(500), 0, "before the change: the old rate, 0");
        // A slew back over 1 ms from t = 1.001 ms: the error reaches 0 at its end, then stays.
        let s = d.then(1_001_000, -1_000_000, 2_001_000);
        assert_eq!(s.error_at(1_001_000), 1_000);
        assert_eq!(s.error_at(1_000_000), 999, "before m0: the previous rate, backwards");
        assert_eq!(s.error_at(2_001_000), 0);
        assert_eq!(s.error_at(9_000_000), 0);
        let next = s.then(9_000_000, 5, i64::MAX);
        assert_eq!(next.before_ppb, 0, "the slew had ended");
        assert_eq!(next.error_at(8_000_000), 0);
    }
}
