//! The suite's clocks: for every node, a ClockBound segment the runner writes (standing in for
//! the ClockBound daemon) and a libfaketime file (standing in for the node's system clock being
//! wrong). The node runs the real reader, unchanged, with `--clock clockbound:SEGMENT`, under
//! `LD_PRELOAD=libfaketime.so.1` with `FAKETIME_TIMESTAMP_FILE` and `FAKETIME_NO_CACHE=1` (the
//! file can change while it runs).
//!
//! What a node's reader computes is `[realtime - bound', realtime + bound']` with `realtime` its
//! faked `CLOCK_REALTIME` and `bound'` the segment's bound grown by its drift allowance since
//! `as_of`. So with error `o` (the node's clock minus true time) and segment bound `b`:
//!
//! | fault | o | b | status | true time inside the interval? |
//! |---|---|---|---|---|
//! | healthy | 0 | 50 µs | Synchronized | yes |
//! | in-bound skew | \|o\| < b | 10 ms | Synchronized | yes: must stay safe |
//! | inflated bound | 0 | 500 ms | Synchronized | yes: safe, slower |
//! | status flip | 0 | 50 µs | FreeRunning / Unknown / Disrupted | FreeRunning usable, others refused |
//! | stale daemon | 0 | grows 50 µs/s | Synchronized, then FreeRunning after 5 s | yes |
//! | lying clock, leap step, strobe | \|o\| ≫ b, in steps | 50 µs | Synchronized | **no**: the step guard must see the steps |
//! | drifting oscillator | grows at 100–1,000 ppm | 50 µs, 50 ppm claimed | Synchronized | **no**: only the peer checks can see it |
//!
//! # Two kinds of error: steps and drift
//!
//! **Steps** (every fault but drift) move `CLOCK_REALTIME` alone: the nodes run with
//! `DONT_FAKE_MONOTONIC=1`, so their monotonic clock, on which the step guard carries its
//! history forward, stays true, as it does when a kernel or an operator steps the wall clock.
//!
//! **Drift** is a bad oscillator, which moves every clock of the machine together, the
//! monotonic clock included; then the step guard, which compares the two, cannot see it. A run
//! that drifts clocks ([`ClockMode::Oscillators`]) preloads `tests/oscillator`'s library
//! instead of libfaketime: every clock of the node reads `true + e0 + (m − m0) · rate`, with
//! `m0`, `e0` and `rate` in a small shared control file the runner rewrites (see that crate).
//! The runner changes a rate at `m0 = now` with `e0 = error(now)`, so no clock ever jumps; it
//! slews an error back to zero with a negative rate instead of stepping it (a monotonic clock
//! never steps back); and it writes the segment's `as_of` on the node's own, drifted,
//! monotonic clock, as the daemon on that machine would. (libfaketime cannot do this: it counts
//! a faked monotonic clock from the faked wall clock's value, and the futex deadlines Rust
//! computes from that never arrive.) Faults that step the wall clock alone are refused in such
//! a run.
//!
//! A background thread rewrites every segment every 100 ms (ClockBound 2.0.3's rate) from its
//! node's current settings, unless the node's daemon is "stopped" (stale).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use boundkv_clockbound::segment::layout::SegmentBody;
use boundkv_clockbound::{ClockStatus, SegmentWriter, monotonic_coarse_nanos};

/// Where Debian's libfaketime lives.
pub const LIBFAKETIME: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1";

/// The healthy bound the segments advertise.
pub const HEALTHY_BOUND: Duration = Duration::from_micros(50);

/// The drift allowance the segments advertise (50 ppm, ClockBound's recommended setting).
pub const MAX_DRIFT_PPB: u32 = 50_000;

/// Which clocks the runner moves, and with what (see the module docs).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ClockMode {
    /// `CLOCK_REALTIME` alone, by steps; the monotonic clock stays true.
    #[default]
    Steps,
    /// Every clock, by rates (a bad oscillator); the error changes continuously.
    Oscillators,
}

/// One node's clock settings.
#[derive(Clone, Debug, PartialEq)]
pub struct NodeClock {
    /// The advertised bound (at the last synchronisation, when `synced_at` is set).
    pub bound: Duration,
    /// The advertised status.
    pub status: ClockStatus,
    /// The stepped part of the system clock's error, nanoseconds (local minus true).
    pub offset_nanos: i64,
    /// Whether the "daemon" updates the segment.
    pub daemon_running: bool,
    /// The drift allowance the segment advertises, parts per billion.
    pub max_drift_ppb: u32,
    /// When set, the daemon last synchronised then, and the bound it writes grows from `bound`
    /// at `max_drift_ppb` since (as a daemon's does between corrections).
    pub synced_at: Option<Instant>,
}

impl Default for NodeClock {
    fn default() -> Self {
        NodeClock {
            bound: HEALTHY_BOUND,
            status: ClockStatus::Synchronized,
            offset_nanos: 0,
            daemon_running: true,
            max_drift_ppb: MAX_DRIFT_PPB,
            synced_at: None,
        }
    }
}

#[path = "../../oscillator/src/control.rs"]
#[allow(dead_code, unreachable_pub)]
mod control;

/// How the runner moves a node's clocks.
enum NodeTime {
    /// A libfaketime offset file ([`ClockMode::Steps`]).
    Faketime(PathBuf),
    /// An oscillator control file, mapped ([`ClockMode::Oscillators`]).
    Oscillator(MappedControl),
}

/// An oscillator control file, mapped shared and writable.
struct MappedControl {
    path: PathBuf,
    control: *mut control::Control,
}

// SAFETY: the mapping is owned by this value and the control block's fields are atomics.
unsafe impl Send for MappedControl {}

impl MappedControl {
    fn create(path: &Path) -> anyhow::Result<MappedControl> {
        use std::os::fd::AsRawFd;
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(path)?;
        file.set_len(control::CONTROL_LEN as u64)?;
        // SAFETY: a shared mapping of a file we just sized; unmapped in Drop.
        let addr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                control::CONTROL_LEN,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                file.as_raw_fd(),
                0,
            )
        };
        anyhow::ensure!(addr != libc::MAP_FAILED, "mapping {}", path.display());
        Ok(MappedControl { path: path.to_path_buf(), control: addr.cast() })
    }

    fn get(&self) -> &control::Control {
        // SAFETY: mapped for our lifetime; the fields are atomics.
        unsafe { &*self.control }
    }

    /// The node's clock error now, nanoseconds.
    fn error(&self) -> i64 {
        self.get().error_at(true_monotonic_nanos())
    }

    /// From now on, the error grows at `rate_ppb`, starting from where it is.
    fn set_rate(&self, rate_ppb: i64) {
        let c = self.get();
        c.set(c.drift().then(true_monotonic_nanos(), rate_ppb, i64::MAX));
    }

    /// Slews the error to zero over `over`, starting now: the rate `−error / over` until then,
    /// none after (the control block ends the slew itself, so no clock ever steps).
    fn slew_to_zero(&self, over: Duration) {
        let c = self.get();
        let (m, over) = (true_monotonic_nanos(), over.as_nanos().max(1) as i64);
        let error = c.error_at(m);
        let rate = (-(error as i128) * 1_000_000_000 / over as i128) as i64;
        c.set(c.drift().then(m, rate, m + over));
    }
}

impl Drop for MappedControl {
    fn drop(&mut self) {
        // SAFETY: our own mapping, not used after this.
        unsafe { libc::munmap(self.control.cast(), control::CONTROL_LEN) };
    }
}

/// This process's `CLOCK_MONOTONIC` (the runner's clocks are true), nanoseconds.
fn true_monotonic_nanos() -> i64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes one timespec into a local.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec * 1_000_000_000 + ts.tv_nsec
}

struct Node {
    settings: NodeClock,
    writer: SegmentWriter,
    time: NodeTime,
}

impl Node {
    fn body(&self) -> SegmentBody {
        let mut as_of = monotonic_coarse_nanos();
        if let NodeTime::Oscillator(c) = &self.time {
            // The daemon on a drifting machine reads the drifted coarse monotonic clock (the
            // error taken at the coarse time, as the oscillator library takes it).
            as_of += c.get().error_at(as_of);
        }
        let s = &self.settings;
        let grown = s
            .synced_at
            .map_or(Duration::ZERO, |at| at.elapsed().mul_f64(s.max_drift_ppb as f64 / 1e9));
        SegmentBody::healthy(as_of, s.bound + grown, s.max_drift_ppb, s.status)
    }

    /// The node's clock error now, nanoseconds.
    fn error(&self) -> i64 {
        match &self.time {
            NodeTime::Faketime(_) => self.settings.offset_nanos,
            NodeTime::Oscillator(c) => c.error(),
        }
    }

    fn oscillator(&self) -> anyhow::Result<&MappedControl> {
        match &self.time {
            NodeTime::Oscillator(c) => Ok(c),
            NodeTime::Faketime(_) => anyhow::bail!("drift needs ClockMode::Oscillators"),
        }
    }
}

/// Every node's clock (see the module docs).
pub struct Clocks {
    dir: PathBuf,
    mode: ClockMode,
    /// The oscillator library, in [`ClockMode::Oscillators`].
    oscillator: Option<PathBuf>,
    nodes: Arc<Mutex<BTreeMap<u64, Node>>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
    /// [`Clocks::hold_errors_on_heal`] was called.
    hold_errors: AtomicBool,
}

impl Clocks {
    /// Whether libfaketime is installed.
    pub fn faketime_available() -> bool {
        Path::new(LIBFAKETIME).exists()
    }

    /// Segments and offset files for `nodes` in `dir`, healthy, and the updater thread.
    pub fn start(dir: &Path, nodes: &[u64]) -> anyhow::Result<Clocks> {
        Self::start_with(dir, nodes, ClockMode::Steps)
    }

    /// [`Clocks::start`] in `mode`.
    pub fn start_with(dir: &Path, nodes: &[u64], mode: ClockMode) -> anyhow::Result<Clocks> {
        std::fs::create_dir_all(dir)?;
        let oscillator = match mode {
            ClockMode::Steps => None,
            ClockMode::Oscillators => Some(crate::oscillator_lib()?),
        };
        let clocks = Clocks {
            dir: dir.to_path_buf(),
            mode,
            oscillator,
            nodes: Arc::new(Mutex::new(BTreeMap::new())),
            stop: Arc::new(AtomicBool::new(false)),
            thread: None,
            hold_errors: AtomicBool::new(false),
        };
        for &id in nodes {
            clocks.add(id)?;
        }
        let mut clocks = clocks;
        let (nodes, stop) = (clocks.nodes.clone(), clocks.stop.clone());
        clocks.thread = Some(std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                for node in nodes.lock().unwrap_or_else(|e| e.into_inner()).values_mut() {
                    if node.settings.daemon_running {
                        let body = node.body();
                        node.writer.write(&body);
                    }
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }));
        Ok(clocks)
    }

    fn add(&self, id: u64) -> anyhow::Result<()> {
        let segment = self.segment(id);
        let writer = SegmentWriter::create(&segment)
            .with_context(|| format!("creating the segment {}", segment.display()))?;
        let time = match self.mode {
            ClockMode::Steps => {
                let path = self.dir.join(format!("n{id}.faketime"));
                write_offset(&path, 0)?;
                NodeTime::Faketime(path)
            }
            ClockMode::Oscillators => NodeTime::Oscillator(MappedControl::create(
                &self.dir.join(format!("n{id}.oscillator")),
            )?),
        };
        let mut node = Node { settings: NodeClock::default(), writer, time };
        let body = node.body();
        node.writer.write(&body);
        self.nodes.lock().unwrap_or_else(|e| e.into_inner()).insert(id, node);
        Ok(())
    }

    fn with_node<T>(&self, id: u64, f: impl FnOnce(&mut Node) -> T) -> anyhow::Result<T> {
        let mut nodes = self.nodes.lock().unwrap_or_else(|e| e.into_inner());
        Ok(f(nodes.get_mut(&id).context("an unknown node")?))
    }

    /// Node `id`'s segment path.
    pub fn segment(&self, id: u64) -> PathBuf {
        self.dir.join(format!("n{id}.shm0"))
    }

    /// The clock source argument for node `id`.
    pub fn source(&self, id: u64) -> String {
        format!("clockbound:{}", self.segment(id).display())
    }

    /// The environment node `id` runs with: libfaketime on its offset file, or the oscillator
    /// library on its control file.
    pub fn env(&self, id: u64) -> Vec<(String, String)> {
        let nodes = self.nodes.lock().unwrap_or_else(|e| e.into_inner());
        match (nodes.get(&id).map(|n| &n.time), &self.oscillator) {
            (Some(NodeTime::Oscillator(c)), Some(lib)) => vec![
                ("LD_PRELOAD".into(), lib.display().to_string()),
                (control::CONTROL_VAR.into(), c.path.display().to_string()),
            ],
            (Some(NodeTime::Faketime(path)), _) => vec![
                ("LD_PRELOAD".into(), LIBFAKETIME.into()),
                ("FAKETIME_TIMESTAMP_FILE".into(), path.display().to_string()),
                ("FAKETIME_NO_CACHE".into(), "1".into()),
                ("DONT_FAKE_MONOTONIC".into(), "1".into()),
            ],
            _ => Vec::new(),
        }
    }

    /// Node `id`'s current settings.
    pub fn get(&self, id: u64) -> NodeClock {
        self.nodes.lock().unwrap_or_else(|e| e.into_inner())[&id].settings.clone()
    }

    /// Changes node `id`'s settings; the segment and offset file are rewritten at once. A
    /// change of `offset_nanos` needs [`ClockMode::Steps`].
    pub fn set(&self, id: u64, settings: NodeClock) -> anyhow::Result<()> {
        self.with_node(id, |node| {
            if settings.offset_nanos != node.settings.offset_nanos {
                match &node.time {
                    NodeTime::Faketime(path) => write_offset(path, settings.offset_nanos)?,
                    NodeTime::Oscillator(_) => {
                        anyhow::bail!("steps need ClockMode::Steps (clock-drift runs apart)")
                    }
                }
            }
            node.settings = settings;
            if node.settings.daemon_running {
                let body = node.body();
                node.writer.write(&body);
            }
            Ok(())
        })?
    }

    /// Changes node `id`'s settings with `f`.
    pub fn update(&self, id: u64, f: impl FnOnce(&mut NodeClock)) -> anyhow::Result<()> {
        let mut s = self.get(id);
        f(&mut s);
        self.set(id, s)
    }

    /// Makes node `id`'s clocks run `ppb` parts per billion fast (negative: slow), from now,
    /// without a jump ([`ClockMode::Oscillators`] only).
    pub fn set_drift(&self, id: u64, ppb: i64) -> anyhow::Result<()> {
        self.with_node(id, |node| -> anyhow::Result<()> {
            node.oscillator()?.set_rate(ppb);
            Ok(())
        })?
    }

    /// Node `id`'s clock error now, nanoseconds (its clocks minus true time).
    pub fn error_nanos(&self, id: u64) -> i64 {
        self.with_node(id, |node| node.error()).unwrap_or(0)
    }

    /// Slews the error of every node in `ids` back to zero over `over`, as a time service
    /// corrects a clock (at `error / over`, every clock of the node together), and returns once
    /// they run true again.
    pub async fn slew_back(&self, ids: &[u64], over: Duration) -> anyhow::Result<()> {
        for &id in ids {
            self.with_node(id, |node| -> anyhow::Result<()> {
                node.oscillator()?.slew_to_zero(over);
                Ok(())
            })??;
        }
        tokio::time::sleep(over).await;
        Ok(())
    }

    /// From now on, healing stops drifting oscillators where they are instead of slewing them
    /// back: under the cluster clock the monotonic clock is the source, and a slew is a rate
    /// (1 ms over 1 s is 1000 ppm), which would break the drift assumption itself.
    pub fn hold_errors_on_heal(&self) {
        self.hold_errors.store(true, std::sync::atomic::Ordering::SeqCst);
    }

    /// Every node healthy again: offsets first, then bounds (so that no moment has a large
    /// offset under a small bound). Drifting clocks are slewed back (over 1 s), never stepped.
    pub async fn heal(&self) -> anyhow::Result<()> {
        let ids: Vec<u64> =
            self.nodes.lock().unwrap_or_else(|e| e.into_inner()).keys().copied().collect();
        for &id in &ids {
            self.update(id, |s| {
                s.offset_nanos = 0;
                s.daemon_running = true;
                s.status = ClockStatus::Synchronized;
            })?;
        }
        if self.mode == ClockMode::Oscillators {
            let drifting: Vec<u64> =
                ids.iter().copied().filter(|&id| self.error_nanos(id) != 0).collect();
            if self.hold_errors.load(std::sync::atomic::Ordering::SeqCst) {
                for &id in &drifting {
                    self.set_drift(id, 0)?;
                }
            } else if !drifting.is_empty() {
                self.slew_back(&drifting, Duration::from_secs(1)).await?;
            }
        }
        // Let every node's libfaketime see the offset back at zero before the bound shrinks.
        tokio::time::sleep(Duration::from_millis(50)).await;
        for &id in &ids {
            self.update(id, |s| {
                s.bound = HEALTHY_BOUND;
                s.max_drift_ppb = MAX_DRIFT_PPB;
                s.synced_at = None;
            })?;
        }
        Ok(())
    }
}

impl Drop for Clocks {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Writes an offset in libfaketime's relative format (`+0.000250000s`), atomically.
fn write_offset(path: &Path, nanos: i64) -> anyhow::Result<()> {
    let sign = if nanos < 0 { '-' } else { '+' };
    let abs = nanos.unsigned_abs();
    let text = format!("{sign}{}.{:09}s\n", abs / 1_000_000_000, abs % 1_000_000_000);
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_rate_keeps_the_clock_continuous_and_a_slew_ends_at_zero() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let c = MappedControl::create(&dir.path().join("c"))?;
        assert_eq!(c.error(), 0);
        c.set_rate(1_000_000_000); // twice as fast: easy to see over a short sleep
        std::thread::sleep(Duration::from_millis(20));
        let e = c.error();
        assert!((20_000_000..200_000_000).contains(&e), "{e}");
        c.set_rate(0);
        let held = c.error();
        assert!(held >= e && held - e < 50_000_000, "{held} after {e}");
        std::thread::sleep(Duration::from_millis(20));
        assert_eq!(c.error(), held, "a zero rate holds the error");
        c.slew_to_zero(Duration::from_millis(20));
        std::thread::sleep(Duration::from_millis(30));
        assert!(c.error().abs() < 1_000, "the slew ends at zero: {}", c.error());
        Ok(())
    }
}
