//! The control file's layout, shared by the library (which reads it) and the consistency
//! suite's runner (which writes it, and includes this file with `#[path]` rather than linking
//! the library, whose exported `clock_gettime` would replace its own).

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering, fence};

/// The control file's layout: a sequence lock and the drift's three numbers, native-endian.
/// The writer makes `seq` odd, writes the fields, then makes it even; a reader retries while
/// it is odd or changed.
#[repr(C)]
pub struct Control {
    /// Odd while the writer is writing.
    pub seq: AtomicU64,
    /// The true `CLOCK_MONOTONIC` when the rate was set, nanoseconds.
    pub m0: AtomicI64,
    /// The error at `m0`, nanoseconds (the process's clocks minus the machine's).
    pub e0: AtomicI64,
    /// The rate since `m0`, parts per billion (positive: fast).
    pub rate_ppb: AtomicI64,
}

/// The control file's size.
pub const CONTROL_LEN: usize = std::mem::size_of::<Control>();

/// The variable that names the control file.
pub const CONTROL_VAR: &str = "BOUNDKV_OSCILLATOR";

impl Control {
    /// The error at true monotonic time `m`, nanoseconds.
    pub fn error_at(&self, m: i64) -> i64 {
        loop {
            let seq = self.seq.load(Ordering::Acquire);
            if seq % 2 == 1 {
                std::hint::spin_loop();
                continue;
            }
            let (m0, e0, rate) = (
                self.m0.load(Ordering::Relaxed),
                self.e0.load(Ordering::Relaxed),
                self.rate_ppb.load(Ordering::Relaxed),
            );
            fence(Ordering::Acquire);
            if self.seq.load(Ordering::Relaxed) == seq {
                return e0 + ((m - m0) as i128 * rate as i128 / 1_000_000_000) as i64;
            }
        }
    }

    /// Sets the drift (the runner's side): from true monotonic time `m0`, error `e0` growing at
    /// `rate_ppb`.
    pub fn set(&self, m0: i64, e0: i64, rate_ppb: i64) {
        let seq = self.seq.load(Ordering::Relaxed);
        self.seq.store(seq | 1, Ordering::Relaxed);
        fence(Ordering::Release);
        self.m0.store(m0, Ordering::Relaxed);
        self.e0.store(e0, Ordering::Relaxed);
        self.rate_ppb.store(rate_ppb, Ordering::Relaxed);
        self.seq.store((seq | 1) + 1, Ordering::Release);
    }
}
