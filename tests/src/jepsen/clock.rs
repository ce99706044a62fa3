//! The suite's clocks: for every node, a ClockBound segment the runner writes (standing in for
//! the ClockBound daemon) and a libfaketime offset file (standing in for the node's system clock
//! being wrong). The node runs the real reader, unchanged, with `--clock clockbound:SEGMENT`,
//! under `LD_PRELOAD=libfaketime.so.1` with `FAKETIME_TIMESTAMP_FILE`, `FAKETIME_NO_CACHE=1`
//! (the offset can change while it runs) and `DONT_FAKE_MONOTONIC=1` (the segment's `as_of` is on
//! the monotonic clock, which stays true).
//!
//! What a node's reader computes is `[realtime - bound', realtime + bound']` with `realtime` its
//! faked `CLOCK_REALTIME` and `bound'` the segment's bound grown by its drift allowance since
//! `as_of`. So with offset `o` and segment bound `b`:
//!
//! | fault | o | b | status | true time inside the interval? |
//! |---|---|---|---|---|
//! | healthy | 0 | 50 µs | Synchronized | yes |
//! | in-bound skew | \|o\| < b | 10 ms | Synchronized | yes: must stay safe |
//! | inflated bound | 0 | 500 ms | Synchronized | yes: safe, slower |
//! | status flip | 0 | 50 µs | FreeRunning / Unknown / Disrupted | FreeRunning usable, others refused |
//! | stale daemon | 0 | grows 50 µs/s | Synchronized, then FreeRunning after 5 s | yes |
//! | lying clock | \|o\| ≫ b | 50 µs | Synchronized | **no**: not expected to be safe |
//! | leap step | every node −1 s | 50 µs | Synchronized | **no**: not expected to be safe |
//!
//! A background thread rewrites every segment every 100 ms (ClockBound 2.0.3's rate) from its
//! node's current settings, unless the node's daemon is "stopped" (stale).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use boundkv_clockbound::segment::layout::SegmentBody;
use boundkv_clockbound::{ClockStatus, SegmentWriter, monotonic_coarse_nanos};

/// Where Debian's libfaketime lives.
pub const LIBFAKETIME: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1";

/// The healthy bound the segments advertise.
pub const HEALTHY_BOUND: Duration = Duration::from_micros(50);

/// The drift allowance the segments advertise (50 ppm, ClockBound's recommended setting).
pub const MAX_DRIFT_PPB: u32 = 50_000;

/// One node's clock settings.
#[derive(Clone, Debug, PartialEq)]
pub struct NodeClock {
    /// The advertised bound.
    pub bound: Duration,
    /// The advertised status.
    pub status: ClockStatus,
    /// The system clock's error, nanoseconds (local minus true).
    pub offset_nanos: i64,
    /// Whether the "daemon" updates the segment.
    pub daemon_running: bool,
}

impl Default for NodeClock {
    fn default() -> Self {
        NodeClock {
            bound: HEALTHY_BOUND,
            status: ClockStatus::Synchronized,
            offset_nanos: 0,
            daemon_running: true,
        }
    }
}

struct Node {
    settings: NodeClock,
    writer: SegmentWriter,
    faketime: PathBuf,
}

/// Every node's clock (see the module docs).
pub struct Clocks {
    dir: PathBuf,
    nodes: Arc<Mutex<BTreeMap<u64, Node>>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Clocks {
    /// Whether libfaketime is installed.
    pub fn faketime_available() -> bool {
        Path::new(LIBFAKETIME).exists()
    }

    /// Segments and offset files for `nodes` in `dir`, healthy, and the updater thread.
    pub fn start(dir: &Path, nodes: &[u64]) -> anyhow::Result<Clocks> {
        std::fs::create_dir_all(dir)?;
        let clocks = Clocks {
            dir: dir.to_path_buf(),
            nodes: Arc::new(Mutex::new(BTreeMap::new())),
            stop: Arc::new(AtomicBool::new(false)),
            thread: None,
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
                        node.writer.write(&body(&node.settings));
                    }
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }));
        Ok(clocks)
    }

    fn add(&self, id: u64) -> anyhow::Result<()> {
        let segment = self.segment(id);
        let mut writer = SegmentWriter::create(&segment)
            .with_context(|| format!("creating the segment {}", segment.display()))?;
        let settings = NodeClock::default();
        writer.write(&body(&settings));
        let faketime = self.dir.join(format!("n{id}.faketime"));
        write_offset(&faketime, 0)?;
        self.nodes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id, Node { settings, writer, faketime });
        Ok(())
    }

    /// Node `id`'s segment path.
    pub fn segment(&self, id: u64) -> PathBuf {
        self.dir.join(format!("n{id}.shm0"))
    }

    /// The clock source argument for node `id`.
    pub fn source(&self, id: u64) -> String {
        format!("clockbound:{}", self.segment(id).display())
    }

    /// The environment node `id` runs with (libfaketime on its offset file).
    pub fn env(&self, id: u64) -> Vec<(String, String)> {
        vec![
            ("LD_PRELOAD".into(), LIBFAKETIME.into()),
            (
                "FAKETIME_TIMESTAMP_FILE".into(),
                self.dir.join(format!("n{id}.faketime")).display().to_string(),
            ),
            ("FAKETIME_NO_CACHE".into(), "1".into()),
            ("DONT_FAKE_MONOTONIC".into(), "1".into()),
        ]
    }

    /// Node `id`'s current settings.
    pub fn get(&self, id: u64) -> NodeClock {
        self.nodes.lock().unwrap_or_else(|e| e.into_inner())[&id].settings.clone()
    }

    /// Changes node `id`'s settings; the segment and offset file are rewritten at once.
    pub fn set(&self, id: u64, settings: NodeClock) -> anyhow::Result<()> {
        let mut nodes = self.nodes.lock().unwrap_or_else(|e| e.into_inner());
        let node = nodes.get_mut(&id).context("an unknown node")?;
        if settings.offset_nanos != node.settings.offset_nanos {
            write_offset(&node.faketime, settings.offset_nanos)?;
        }
        if settings.daemon_running {
            node.writer.write(&body(&settings));
        }
        node.settings = settings;
        Ok(())
    }

    /// Changes node `id`'s settings with `f`.
    pub fn update(&self, id: u64, f: impl FnOnce(&mut NodeClock)) -> anyhow::Result<()> {
        let mut s = self.get(id);
        f(&mut s);
        self.set(id, s)
    }

    /// Every node healthy again: offsets first, then bounds (so that no moment has a large
    /// offset under a small bound).
    pub fn heal(&self) -> anyhow::Result<()> {
        let ids: Vec<u64> =
            self.nodes.lock().unwrap_or_else(|e| e.into_inner()).keys().copied().collect();
        for &id in &ids {
            self.update(id, |s| {
                s.offset_nanos = 0;
                s.daemon_running = true;
                s.status = ClockStatus::Synchronized;
            })?;
        }
        // Let every node's libfaketime see the offset back at zero before the bound shrinks.
        std::thread::sleep(Duration::from_millis(50));
        for &id in &ids {
            self.update(id, |s| s.bound = HEALTHY_BOUND)?;
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

fn body(s: &NodeClock) -> SegmentBody {
    SegmentBody::healthy(monotonic_coarse_nanos(), s.bound, MAX_DRIFT_PPB, s.status)
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
