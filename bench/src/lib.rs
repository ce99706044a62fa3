//! Shared pieces of boundkv's benchmarks.
//!
//! - `benches/clock.rs` (criterion): the cost of `now()` on every clock source against
//!   `clock_gettime(CLOCK_REALTIME)` itself and against AWS's own client.
//! - `src/bin/clock-report.rs`: reads criterion's results and prints the ratios.
//! - `src/bin/sleep-precision.rs`: how late each way of sleeping wakes, and what that means for
//!   commit wait.
//!
//! See `bench/README.md` for how to run them.

#[cfg(feature = "etcd")]
pub mod etcd;
pub mod floor;
pub mod load;
pub mod plot;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use boundkv_clockbound::segment::layout::SegmentBody;
use boundkv_clockbound::{ClockStatus, SegmentWriter, monotonic_coarse_nanos};

/// A ClockBound segment kept fresh by a background "daemon" that rewrites it every 100 ms (the
/// rate of ClockBound 2.0.3), so benchmarks read a segment that changes the way a real one does.
pub struct LiveSegment {
    /// Where the segment lives (tmpfs when available, like `/var/run`).
    pub path: PathBuf,
    _dir: tempfile::TempDir,
    stop: Arc<AtomicBool>,
    writer: Option<std::thread::JoinHandle<()>>,
}

impl LiveSegment {
    /// Starts the segment and its writer thread.
    pub fn start(bound: Duration, max_drift_ppb: u32) -> anyhow::Result<Self> {
        let dir = if std::path::Path::new("/dev/shm").is_dir() {
            tempfile::tempdir_in("/dev/shm")?
        } else {
            tempfile::tempdir()?
        };
        let path = dir.path().join("shm0");
        let mut writer = SegmentWriter::create(&path)?;
        let body = move || {
            SegmentBody::healthy(
                monotonic_coarse_nanos(),
                bound,
                max_drift_ppb,
                ClockStatus::Synchronized,
            )
        };
        writer.write(&body());
        let stop = Arc::new(AtomicBool::new(false));
        let stop_w = stop.clone();
        let handle = std::thread::spawn(move || {
            while !stop_w.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(100));
                writer.write(&body());
            }
        });
        Ok(LiveSegment { path, _dir: dir, stop, writer: Some(handle) })
    }
}

impl Drop for LiveSegment {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.writer.take() {
            let _ = h.join();
        }
    }
}

/// Percentile `p` (0..=100) of sorted samples.
pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}
