//! The VMClock page (`/dev/vmclock0`), read only for its disruption marker, and a writer of
//! stand-in VMClock files for tests and the Jepsen runner.
//!
//! The hypervisor bumps the marker when the guest's clock is disrupted (live migration, snapshot
//! restore). When the ClockBound segment says disruption support is on, the reader compares the
//! segment's marker with this page's: a mismatch means the daemon has not yet reacted to a
//! disruption, and the reading is forced to `Unknown` (ClockBound 2.x client behaviour).
//!
//! ```text
//!  off  type  field (little-endian, whatever the host)
//!    0  u32   magic = 0x4B4C4356 ("VCLK")
//!    4  u32   size (104)
//!    8  u16   version (1)
//!   12  u32   seq_count (odd while the hypervisor updates the page)
//!   16  u64   disruption_marker
//! ```

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{Ordering, fence};

use super::mapping::SharedPage;
use crate::error::ClockError;

/// "VCLK", little-endian.
pub const VMCLOCK_MAGIC: u32 = 0x4B4C_4356;
/// The only VMClock layout version.
pub const VMCLOCK_VERSION: u16 = 1;
/// Bytes in a version-1 VMClock page.
pub const VMCLOCK_LEN: usize = 104;
const SEQ_OFFSET: usize = 12;
const MARKER_OFFSET: usize = 16;
/// Retries while `seq_count` is odd or changing before giving up (the hypervisor's update is a
/// handful of stores; a page stuck odd means something is broken, not busy).
const MAX_TRIES: u32 = 10_000;

/// A mapped VMClock page.
pub(crate) struct VmClockPage {
    path: PathBuf,
    page: SharedPage,
}

impl VmClockPage {
    pub(crate) fn open(path: &Path) -> Result<Self, ClockError> {
        let err = |reason: String| ClockError::VmClock { path: path.to_path_buf(), reason };
        let file = File::open(path).map_err(|e| err(format!("cannot open: {e}")))?;
        let meta = file.metadata().map_err(|e| err(format!("cannot stat: {e}")))?;
        // A regular file (tests) must hold the fields we read; the device reports size 0.
        if meta.is_file() && meta.len() < (MARKER_OFFSET + 8) as u64 {
            return Err(err(format!("only {} bytes long", meta.len())));
        }
        let page = SharedPage::map(&file).map_err(|e| err(format!("cannot mmap: {e}")))?;
        Ok(VmClockPage { path: path.to_path_buf(), page })
    }

    /// The current disruption marker, read under the page's seqlock.
    pub(crate) fn disruption_marker(&self) -> Result<u64, ClockError> {
        let err = |reason: String| ClockError::VmClock { path: self.path.clone(), reason };
        let magic = u32::from_le(self.page.load_u32(0, Ordering::Relaxed));
        if magic != VMCLOCK_MAGIC {
            return Err(err(format!("bad magic {magic:#010x}")));
        }
        let version = u16::from_le(self.page.load_u16(8, Ordering::Relaxed));
        if version != VMCLOCK_VERSION {
            return Err(err(format!("unsupported version {version}")));
        }
        for _ in 0..MAX_TRIES {
            let s1 = u32::from_le(self.page.load_u32(SEQ_OFFSET, Ordering::Acquire));
            if s1 & 1 == 0 {
                let marker = u64::from_le(self.page.load_u64(MARKER_OFFSET, Ordering::Relaxed));
                fence(Ordering::Acquire);
                let s2 = u32::from_le(self.page.load_u32(SEQ_OFFSET, Ordering::Relaxed));
                if s1 == s2 {
                    return Ok(marker);
                }
            }
            std::hint::spin_loop();
        }
        Err(err(format!("seq_count stayed odd or kept changing over {MAX_TRIES} reads")))
    }
}

/// Writes a stand-in VMClock page to a regular file: for tests and fault injection only (the real
/// page is written by the hypervisor).
pub struct VmClockWriter {
    file: File,
}

impl VmClockWriter {
    /// Creates (or truncates) `path` as a valid version-1 page with `marker` and an even
    /// `seq_count`.
    pub fn create(path: &Path, marker: u64) -> io::Result<Self> {
        let file =
            OpenOptions::new().read(true).write(true).create(true).truncate(true).open(path)?;
        let mut page = [0u8; VMCLOCK_LEN];
        page[0..4].copy_from_slice(&VMCLOCK_MAGIC.to_le_bytes());
        page[4..8].copy_from_slice(&(VMCLOCK_LEN as u32).to_le_bytes());
        page[8..10].copy_from_slice(&VMCLOCK_VERSION.to_le_bytes());
        page[SEQ_OFFSET..SEQ_OFFSET + 4].copy_from_slice(&2u32.to_le_bytes());
        page[MARKER_OFFSET..MARKER_OFFSET + 8].copy_from_slice(&marker.to_le_bytes());
        file.write_all_at(&page, 0)?;
        Ok(VmClockWriter { file })
    }

    fn seq(&self) -> io::Result<u32> {
        let mut b = [0u8; 4];
        self.file.read_exact_at(&mut b, SEQ_OFFSET as u64)?;
        Ok(u32::from_le_bytes(b))
    }

    /// Sets the marker the way the hypervisor does: `seq_count` odd, marker, `seq_count` even.
    pub fn set_disruption_marker(&mut self, marker: u64) -> io::Result<()> {
        let seq = self.seq()? | 1;
        self.file.write_all_at(&seq.to_le_bytes(), SEQ_OFFSET as u64)?;
        self.file.write_all_at(&marker.to_le_bytes(), MARKER_OFFSET as u64)?;
        self.file.write_all_at(&seq.wrapping_add(1).to_le_bytes(), SEQ_OFFSET as u64)
    }

    /// Leaves `seq_count` odd, as a hypervisor that stopped mid-update would.
    pub fn leave_update_in_progress(&mut self) -> io::Result<()> {
        let seq = self.seq()? | 1;
        self.file.write_all_at(&seq.to_le_bytes(), SEQ_OFFSET as u64)
    }

    /// Overwrites the magic (to test the reader's check).
    pub fn set_magic(&mut self, magic: u32) -> io::Result<()> {
        self.file.write_all_at(&magic.to_le_bytes(), 0)
    }

    /// Overwrites the version (to test the reader's check).
    pub fn set_version(&mut self, version: u16) -> io::Result<()> {
        self.file.write_all_at(&version.to_le_bytes(), 8)
    }
}
