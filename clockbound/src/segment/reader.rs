//! [`ClockBoundClock`]: the in-process reader of the daemon's layout-2 segment.

use std::fs::File;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering, fence};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use super::layout::{
    self, BODY_LEN, GENERATION_OFFSET, HEADER_LEN, LAYOUT_VERSION, MAGIC, SEGMENT_LEN, SegmentBody,
    SegmentHeader, SegmentSnapshot, VERSION_OFFSET,
};
use super::mapping::SharedPage;
use super::vmclock::VmClockPage;
use crate::clock::Clock;
use crate::error::ClockError;
use crate::sys;
use crate::time::{ClockReading, ClockStatus};

/// Where the reader finds the daemon's segment and the VMClock page.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClockBoundOptions {
    /// The layout-2 segment; default [`layout::DEFAULT_SEGMENT_PATH`].
    pub segment_path: PathBuf,
    /// The VMClock device, read only when the segment says disruption support is on; default
    /// [`layout::DEFAULT_VMCLOCK_PATH`].
    pub vmclock_path: PathBuf,
}

impl Default for ClockBoundOptions {
    fn default() -> Self {
        ClockBoundOptions {
            segment_path: PathBuf::from(layout::DEFAULT_SEGMENT_PATH),
            vmclock_path: PathBuf::from(layout::DEFAULT_VMCLOCK_PATH),
        }
    }
}

/// While healthy, the reader checks once a second whether the path still names the file it has
/// mapped (the daemon may have replaced it); while something is wrong, ten times a second.
const REVALIDATE_HEALTHY: Duration = Duration::from_secs(1);
const REVALIDATE_TROUBLED: Duration = Duration::from_millis(100);
/// Bounded retries when the generation changes under a read (upstream retries a million times;
/// an update is a few dozen stores, so a thousand misses means something else is wrong).
const MAX_TRIES: u32 = 1000;
/// Generations this small mean the daemon has just (re)started: its first writes follow a zeroed
/// image with generation 0, so a reader descheduled across the restart could see equal
/// generations around a mixed copy. Such snapshots are accepted only when two copies agree.
const FRESH_GENERATION: u16 = 4;

/// The embedded ClockBound reader: `now()` straight from the daemon's shared memory, with no
/// socket, no helper process and no system call beyond the vDSO clock reads.
///
/// See the [module documentation](super) for the protocol. `ClockBoundClock` is `Send + Sync`;
/// share one per process behind an `Arc`.
pub struct ClockBoundClock {
    options: ClockBoundOptions,
    page: SharedPage,
    /// `(st_dev, st_ino)` of the mapped file. The mutex also serializes revalidation.
    identity: Mutex<(u64, u64)>,
    /// `CLOCK_MONOTONIC_COARSE` ns at which the path is next checked.
    revalidate_at: AtomicI64,
    /// The path was missing (or could not be reopened) at the last check: fail closed with the
    /// error in `failure` until it returns.
    failed_closed: AtomicBool,
    failure: Mutex<Option<ClockError>>,
    /// The fallback: the latest snapshot published by the daemon that this reader has seen, for
    /// the moments a writer is mid-update or the daemon is restarting (an older snapshot is still
    /// safe: its bound grows from its own `as_of`). See [`ClockBoundClock::remember`].
    last_good: Mutex<Option<(u16, SegmentSnapshot)>>,
    /// A lock-free stamp of the fallback (see [`stamp`]), to skip the lock when nothing changed.
    last_good_stamp: AtomicU64,
    vmclock: OnceLock<VmClockPage>,
}

/// What one pass over the mapped segment saw.
enum RawRead {
    Body {
        generation: u16,
        segsize: u32,
        body: SegmentBody,
    },
    /// The generation moved to another even value during the copy, or a remap happened.
    Changed,
    /// Odd generation: the writer is mid-update (or died there).
    WriteInProgress,
    /// Version 0 or generation 0: the daemon is (re)initializing the file.
    Initializing(&'static str),
    /// No magic: zeros from a truncation, a header half rewritten, or not a ClockBound file.
    BadMagic([u32; 2]),
    Version(u16),
}

impl ClockBoundClock {
    /// Opens the segment and checks its header: the file must exist, hold at least the 80 bytes
    /// of layout 2, carry the magic, and have been written at least once with version 2.
    ///
    /// Errors mirror the AWS client's: a missing file is [`ClockError::SegmentMissing`]; a short
    /// file, bad magic, version 0 or generation 0 is `SegmentNotInitialized`; version 1 or 3 is
    /// `SegmentVersionNotSupported`.
    pub fn open(options: ClockBoundOptions) -> Result<Self, ClockError> {
        let (file, identity) = open_segment_file(&options.segment_path)?;
        let page = SharedPage::map(&file)
            .map_err(|e| ClockError::io("mmap", &options.segment_path, &e))?;
        let clock = ClockBoundClock {
            options,
            page,
            identity: Mutex::new(identity),
            revalidate_at: AtomicI64::new(
                sys::monotonic_coarse_nanos() + REVALIDATE_HEALTHY.as_nanos() as i64,
            ),
            failed_closed: AtomicBool::new(false),
            failure: Mutex::new(None),
            last_good: Mutex::new(None),
            last_good_stamp: AtomicU64::new(u64::MAX),
            vmclock: OnceLock::new(),
        };
        clock.snapshot_with_generation()?;
        Ok(clock)
    }

    /// Opens the segment at `path` with the default VMClock path.
    pub fn open_path(path: impl Into<PathBuf>) -> Result<Self, ClockError> {
        Self::open(ClockBoundOptions { segment_path: path.into(), ..ClockBoundOptions::default() })
    }

    /// The paths this reader uses.
    pub fn options(&self) -> &ClockBoundOptions {
        &self.options
    }

    /// The current snapshot of the segment and its generation, validated: what `now()` computes
    /// from. Falls back to the last good snapshot while the writer is mid-update or the daemon is
    /// restarting.
    #[inline]
    pub fn snapshot_with_generation(&self) -> Result<(u16, SegmentSnapshot), ClockError> {
        // The common case, kept small: one clean read of a settled segment.
        if let RawRead::Body { generation, segsize, body } = self.read_raw()
            && segsize as usize >= SEGMENT_LEN
            && generation > FRESH_GENERATION
            && let Some(snap) = body.check()
        {
            self.remember(generation, snap);
            return Ok((generation, snap));
        }
        self.snapshot_slow()
    }

    /// Everything else: retries, the fallback, errors with their explanations.
    #[cold]
    #[inline(never)]
    fn snapshot_slow(&self) -> Result<(u16, SegmentSnapshot), ClockError> {
        let path = &self.options.segment_path;
        let mut implausible = None;
        for _ in 0..MAX_TRIES {
            match self.read_raw() {
                RawRead::Body { generation, segsize, body } => {
                    if (segsize as usize) < SEGMENT_LEN {
                        return Err(ClockError::SegmentMalformed {
                            path: path.clone(),
                            reason: format!(
                                "segsize = {segsize} is smaller than layout 2's {SEGMENT_LEN} bytes"
                            ),
                        });
                    }
                    let snap = match body.validate() {
                        Ok(snap) => snap,
                        // Re-read: on a weakly ordered CPU a torn copy can pass the generation
                        // check; a writer's real garbage fails every time.
                        Err(reason) => {
                            implausible = Some(reason);
                            continue;
                        }
                    };
                    if generation <= FRESH_GENERATION && !self.confirm(generation, &body) {
                        continue;
                    }
                    self.remember(generation, snap);
                    return Ok((generation, snap));
                }
                RawRead::Changed => {}
                RawRead::WriteInProgress => {
                    return self.fall_back("a write is in progress (odd generation)");
                }
                RawRead::Initializing(why) => return self.fall_back(why),
                RawRead::BadMagic(found) => {
                    // After a good read, a bad header is the daemon rewriting the file (or zeros
                    // from a truncation): serve the fallback and revalidate at once, which
                    // remaps whatever the path names.
                    self.revalidate_at.store(i64::MIN, Ordering::Relaxed);
                    return self.fall_back(&format!(
                        "bad magic {:#010x} {:#010x} (expected {:#010x} {:#010x})",
                        found[0], found[1], MAGIC[0], MAGIC[1]
                    ));
                }
                RawRead::Version(version) => {
                    return Err(ClockError::SegmentVersionNotSupported {
                        path: path.clone(),
                        version,
                    });
                }
            }
        }
        match implausible {
            Some(reason) => Err(ClockError::SegmentMalformed { path: path.clone(), reason }),
            None => self.fall_back("the generation kept changing while being read"),
        }
    }

    /// One seqlock pass: generation (Acquire), header and body (Relaxed), fence, generation again.
    fn read_raw(&self) -> RawRead {
        let page = &self.page;
        let epoch = page.epoch(Ordering::Acquire);
        if epoch & 1 == 1 {
            return RawRead::Changed;
        }
        let g1 = page.load_u16(GENERATION_OFFSET, Ordering::Acquire);
        let magic = [page.load_u32(0, Ordering::Relaxed), page.load_u32(4, Ordering::Relaxed)];
        let segsize = page.load_u32(8, Ordering::Relaxed);
        let version = page.load_u16(VERSION_OFFSET, Ordering::Relaxed);
        let mut words = [0u64; BODY_LEN / 8];
        for (i, w) in words.iter_mut().enumerate() {
            *w = page.load_u64(HEADER_LEN + 8 * i, Ordering::Relaxed);
        }
        fence(Ordering::Acquire);
        let g2 = page.load_u16(GENERATION_OFFSET, Ordering::Relaxed);
        if page.epoch(Ordering::Relaxed) != epoch {
            return RawRead::Changed;
        }

        if magic != MAGIC {
            return RawRead::BadMagic(magic);
        }
        if version == 0 {
            return RawRead::Initializing("version 0: the daemon is (re)initializing the file");
        }
        if version != LAYOUT_VERSION {
            return RawRead::Version(version);
        }
        if g1 == 0 {
            return RawRead::Initializing("generation 0: the daemon has not written it yet");
        }
        if g1 & 1 == 1 {
            return RawRead::WriteInProgress;
        }
        if g1 != g2 {
            return if g2 & 1 == 1 { RawRead::WriteInProgress } else { RawRead::Changed };
        }
        RawRead::Body { generation: g1, segsize, body: SegmentBody::from_words(&words) }
    }

    /// A second copy agrees with the first (used right after a daemon restart).
    fn confirm(&self, generation: u16, body: &SegmentBody) -> bool {
        matches!(self.read_raw(), RawRead::Body { generation: g, body: b, .. } if g == generation && b == *body)
    }

    /// Keeps the fallback up to date, in the order the daemon published.
    ///
    /// Comparing generations cannot order two snapshots (16 bits wrap; a process idle for an hour
    /// sees the counter where it was), and `as_of` may stand still while only the status changes.
    /// So when anything differs from the fallback, the new fallback is taken by a fresh read made
    /// while holding the fallback's lock: reads under one lock happen one after another, so the
    /// fallback only ever moves forward, and it is never a status the daemon has since withdrawn.
    #[inline]
    fn remember(&self, generation: u16, snap: SegmentSnapshot) {
        if self.last_good_stamp.load(Ordering::Relaxed) == stamp(generation, &snap) {
            return; // the common case: nothing new since the last read
        }
        self.remember_slow(generation, snap);
    }

    #[cold]
    #[inline(never)]
    fn remember_slow(&self, generation: u16, snap: SegmentSnapshot) {
        let mut last = self.last_good.lock().unwrap_or_else(|e| e.into_inner());
        // A write in progress takes nanoseconds: retry the fresh read a little before giving up.
        let mut fresh = None;
        for _ in 0..64 {
            match self.read_raw() {
                RawRead::Body { generation: g, body, .. } => {
                    fresh = body.validate().ok().map(|s| (g, s));
                    break;
                }
                RawRead::Changed | RawRead::WriteInProgress => std::hint::spin_loop(),
                _ => break,
            }
        }
        // Without a fresh read, the caller's snapshot replaces the fallback only if it is surely
        // newer: a later as_of (a daemon's as_of is CLOCK_MONOTONIC_COARSE and never goes back),
        // or the same as_of and a later generation (a status change; generations this close
        // cannot have wrapped).
        let newer = |(g0, s0): &(u16, SegmentSnapshot)| {
            snap.as_of_nanos > s0.as_of_nanos
                || (snap.as_of_nanos == s0.as_of_nanos && (generation.wrapping_sub(*g0) as i16) > 0)
        };
        let chosen =
            fresh.or_else(|| last.as_ref().is_none_or(newer).then_some((generation, snap)));
        let Some((g, s)) = chosen else {
            return;
        };
        *last = Some((g, s));
        self.last_good_stamp.store(stamp(g, &s), Ordering::Relaxed);
    }

    fn fall_back(&self, why: &str) -> Result<(u16, SegmentSnapshot), ClockError> {
        let last = self.last_good.lock().unwrap_or_else(|e| e.into_inner());
        last.ok_or_else(|| ClockError::SegmentNotInitialized {
            path: self.options.segment_path.clone(),
            reason: format!("{why}, and no earlier good read to fall back on"),
        })
    }

    #[inline]
    fn revalidate_if_due(&self, mono: i64) {
        if mono >= self.revalidate_at.load(Ordering::Relaxed) {
            self.revalidate(mono);
        }
    }

    /// Checks that the path still names the mapped file and that the mapped header is valid;
    /// remaps when the daemon replaced or rewrote the file or a truncation zeroed our page; fails
    /// closed when the file is gone.
    #[cold]
    #[inline(never)]
    fn revalidate(&self, mono: i64) {
        let Ok(mut identity) = self.identity.try_lock() else {
            return; // another thread is doing it
        };
        let path = &self.options.segment_path;
        let failed_closed = self.failed_closed.load(Ordering::Relaxed);
        let header_ok =
            [self.page.load_u32(0, Ordering::Relaxed), self.page.load_u32(4, Ordering::Relaxed)]
                == MAGIC
                && !self.page.faulted();
        let outcome = match std::fs::metadata(path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                Err(ClockError::SegmentMissing { path: path.clone() })
            }
            Err(e) => Err(ClockError::io("stat", path, &e)),
            Ok(meta) if (meta.dev(), meta.ino()) == *identity && header_ok && !failed_closed => {
                Ok(false)
            }
            // The daemon replaced or rewrote the file, a truncation zeroed our page, or the file
            // is back after being gone: map whatever the path names now.
            Ok(_) => open_segment_file(path).and_then(|(file, id)| {
                self.page.remap(&file).map_err(|e| ClockError::io("mmap", path, &e))?;
                *identity = id;
                Ok(true)
            }),
        };
        let next = match outcome {
            Ok(remapped) => {
                if self.failed_closed.swap(false, Ordering::Relaxed) {
                    tracing::info!(path = %path.display(), "ClockBound segment is usable again");
                } else if remapped {
                    tracing::info!(path = %path.display(), "ClockBound segment remapped");
                }
                if remapped || !header_ok { REVALIDATE_TROUBLED } else { REVALIDATE_HEALTHY }
            }
            Err(e) => {
                // A missing file fails closed at once. A file that exists but cannot be reopened
                // (the daemon is mid-rewrite) keeps the current mapping and its fallback, which
                // still age safely, unless we were already failed closed.
                let missing = matches!(e, ClockError::SegmentMissing { .. });
                if missing || failed_closed {
                    if !self.failed_closed.swap(true, Ordering::Relaxed) {
                        tracing::warn!(path = %path.display(), error = %e,
                                       "ClockBound segment unusable; refusing to serve time");
                    }
                    *self.failure.lock().unwrap_or_else(|p| p.into_inner()) = Some(e);
                }
                REVALIDATE_TROUBLED
            }
        };
        self.revalidate_at.store(mono.saturating_add(next.as_nanos() as i64), Ordering::Relaxed);
    }

    fn vmclock_marker(&self) -> Result<u64, ClockError> {
        if let Some(page) = self.vmclock.get() {
            return page.disruption_marker();
        }
        let page = VmClockPage::open(&self.options.vmclock_path)?;
        let page = self.vmclock.get_or_init(|| page);
        page.disruption_marker()
    }

    /// The reading at `(real, mono)` from `snap`, with the VMClock check.
    #[inline]
    fn reading(
        &self,
        snap: &SegmentSnapshot,
        real: i64,
        mono: i64,
    ) -> Result<ClockReading, ClockError> {
        let mut reading = layout::compute(snap, real, mono)?;
        if snap.disruption_support && self.vmclock_marker()? != snap.disruption_marker {
            reading.status = ClockStatus::Unknown;
        }
        Ok(reading)
    }

    /// One `now()` together with the snapshot and generation it was computed from (for
    /// `boundkv clock`, which shows both and must not mix two reads).
    pub fn now_with_snapshot(&self) -> Result<(ClockReading, u16, SegmentSnapshot), ClockError> {
        let mut seen = None;
        let reading = self.now_inner(|g, s| seen = Some((g, *s)))?;
        let (g, s) = seen.expect("a reading comes from a snapshot");
        Ok((reading, g, s))
    }

    #[inline]
    fn now_inner(
        &self,
        mut saw: impl FnMut(u16, &SegmentSnapshot),
    ) -> Result<ClockReading, ClockError> {
        if self.failed_closed.load(Ordering::Relaxed) {
            return self.failed_closed_now();
        }
        let (result, mono) = match self.snapshot_with_generation() {
            Ok((generation, snap)) => {
                saw(generation, &snap);
                let real = sys::realtime_nanos();
                let mono = sys::monotonic_coarse_nanos();
                (self.reading(&snap, real, mono), mono)
            }
            Err(e) => (Err(e), sys::monotonic_coarse_nanos()),
        };
        // Housekeeping, on success and on failure alike: has the daemon replaced, rewritten or
        // removed the file?
        self.revalidate_if_due(mono);
        result
    }

    #[cold]
    #[inline(never)]
    fn failed_closed_now(&self) -> Result<ClockReading, ClockError> {
        self.revalidate_if_due(sys::monotonic_coarse_nanos());
        if self.failed_closed.load(Ordering::Relaxed) {
            let failure = self.failure.lock().unwrap_or_else(|p| p.into_inner()).clone();
            return Err(failure.unwrap_or_else(|| ClockError::SegmentMissing {
                path: self.options.segment_path.clone(),
            }));
        }
        self.now_inner(|_, _| {})
    }
}

impl Clock for ClockBoundClock {
    /// ClockBound 2.x's `now()`: one seqlock read of the segment, *then* `CLOCK_REALTIME`, then
    /// `CLOCK_MONOTONIC_COARSE`, then [`layout::compute`], then the VMClock marker check when the
    /// segment asks for it.
    ///
    /// The order matters. The daemon stamps `as_of` before it writes; reading the segment first
    /// guarantees `as_of <= mono`. Reading the clocks first would let an update land in between
    /// and look like a causality breach. A late monotonic read only makes the bound larger.
    fn now(&self) -> Result<ClockReading, ClockError> {
        self.now_inner(|_, _| {})
    }

    fn describe(&self) -> String {
        format!("clockbound segment {}", self.options.segment_path.display())
    }
}

/// A 64-bit stamp of a snapshot: generation (16 bits), status (8 bits), the low 40 bits of
/// `as_of` in ns. Equal stamps skip updating the fallback. Two different snapshots can share a
/// stamp only with the same status, the same generation (32,768 writes apart) and `as_of` a
/// multiple of 2^40 ns (18 minutes) apart; the fallback then keeps the older one, which has the
/// same status and an older `as_of`, so a larger bound: never a wrong answer, at worst a wider one.
fn stamp(generation: u16, snap: &SegmentSnapshot) -> u64 {
    u64::from(generation)
        | (u64::from(snap.status.code() as u8) << 16)
        | ((snap.as_of_nanos as u64) << 24)
}

/// Opens the segment file and checks what can be checked without mapping it.
fn open_segment_file(path: &Path) -> Result<(File, (u64, u64)), ClockError> {
    let file = File::open(path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            ClockError::SegmentMissing { path: path.to_path_buf() }
        } else {
            ClockError::io("open", path, &e)
        }
    })?;
    let meta = file.metadata().map_err(|e| ClockError::io("stat", path, &e))?;
    let len = meta.len();
    if len < HEADER_LEN as u64 {
        return Err(ClockError::SegmentNotInitialized {
            path: path.to_path_buf(),
            reason: format!("the file is {len} bytes, shorter than the {HEADER_LEN}-byte header"),
        });
    }
    if len < SEGMENT_LEN as u64 {
        // Read the header to say the most useful thing: another layout, or a torn file.
        let mut b = [0u8; HEADER_LEN];
        use std::os::unix::fs::FileExt;
        file.read_exact_at(&mut b, 0).map_err(|e| ClockError::io("read", path, &e))?;
        let header = SegmentHeader::from_bytes(&b);
        if header.magic == MAGIC && header.version != LAYOUT_VERSION && header.version != 0 {
            return Err(ClockError::SegmentVersionNotSupported {
                path: path.to_path_buf(),
                version: header.version,
            });
        }
        return Err(ClockError::SegmentMalformed {
            path: path.to_path_buf(),
            reason: format!("the file is {len} bytes; layout 2 needs {SEGMENT_LEN}"),
        });
    }
    Ok((file, (meta.dev(), meta.ino())))
}
