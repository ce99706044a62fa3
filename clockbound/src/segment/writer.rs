//! [`SegmentWriter`]: boundkv's own writer of layout-2 segments.
//!
//! The AWS daemon's writer only produces well-formed segments. This one produces those too, with
//! the same seqlock protocol, and every state a reader must survive that the daemon never writes
//! on purpose: a bad magic, other layout versions, generation 0 or stuck odd, implausible fields,
//! a daemon restart that truncates the file under the readers. Tests use it, and so does the
//! Jepsen runner, which gives every node a segment of its own and turns the clock faults on and
//! off by writing to it.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU16, AtomicU32, AtomicU64, Ordering, fence};

use super::layout::{
    BODY_LEN, GENERATION_OFFSET, HEADER_LEN, LAYOUT_VERSION, SEGMENT_LEN, SegmentBody,
    SegmentHeader, VERSION_OFFSET,
};

/// A writer of a ClockBound layout-2 segment file.
///
/// # Protocol
/// [`SegmentWriter::write`] follows the daemon exactly: read the generation; make it odd (keep it
/// if a previous writer died with it odd); store it (Release); store the body; add one, skipping
/// 0 on wrap-around; store it (Release). Only one writer may write a file at a time.
pub struct SegmentWriter {
    path: PathBuf,
    file: File,
    map: *mut u8,
    map_len: usize,
}

// SAFETY: the mapping is owned by the writer and written only through `&mut self`.
unsafe impl Send for SegmentWriter {}

impl SegmentWriter {
    /// Creates `path` (or truncates it) the way a starting daemon does: magic, `segsize` 80,
    /// version 0, generation 0 and a zero body, synced; then version 2. Readers see the segment
    /// as "not yet written" until the first [`SegmentWriter::write`].
    pub fn create(path: impl AsRef<Path>) -> io::Result<Self> {
        let path = path.as_ref();
        if let Some(parent) = path.parent()
            && !parent.as_os_str().is_empty()
        {
            std::fs::create_dir_all(parent)?;
        }
        let file =
            OpenOptions::new().read(true).write(true).create(true).truncate(true).open(path)?;
        let mut writer =
            SegmentWriter { path: path.to_path_buf(), file, map: std::ptr::null_mut(), map_len: 0 };
        writer.write_initial_image()?;
        writer.map()?;
        writer.set_version(LAYOUT_VERSION);
        Ok(writer)
    }

    /// Opens an existing segment for writing without changing it.
    pub fn open(path: impl AsRef<Path>) -> io::Result<Self> {
        let path = path.as_ref();
        let file = OpenOptions::new().read(true).write(true).open(path)?;
        if file.metadata()?.len() < SEGMENT_LEN as u64 {
            file.set_len(SEGMENT_LEN as u64)?;
        }
        let mut writer =
            SegmentWriter { path: path.to_path_buf(), file, map: std::ptr::null_mut(), map_len: 0 };
        writer.map()?;
        Ok(writer)
    }

    /// The file this writer writes.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Publishes `body` under the seqlock protocol.
    pub fn write(&mut self, body: &SegmentBody) {
        let cell = self.generation_cell();
        let g = cell.load(Ordering::Acquire);
        let odd = if g & 1 == 0 { g.wrapping_add(1) } else { g };
        cell.store(odd, Ordering::Release);
        fence(Ordering::Release);
        self.store_body(body);
        let mut even = odd.wrapping_add(1);
        if even == 0 {
            even = 2;
        }
        cell.store(even, Ordering::Release);
    }

    /// Stores `body` without touching the generation (a torn or unannounced write).
    pub fn write_body_unannounced(&mut self, body: &SegmentBody) {
        self.store_body(body);
    }

    /// Makes the generation odd and leaves it so, as a daemon that died mid-update would.
    pub fn leave_write_in_progress(&mut self) {
        let cell = self.generation_cell();
        let g = cell.load(Ordering::Acquire);
        cell.store(g | 1, Ordering::Release);
    }

    /// Overwrites the whole header with arbitrary values (bad magic, another version, any
    /// generation, a short `segsize`).
    pub fn set_header(&mut self, header: SegmentHeader) {
        self.cell_u32(0).store(header.magic[0], Ordering::Relaxed);
        self.cell_u32(4).store(header.magic[1], Ordering::Relaxed);
        self.cell_u32(8).store(header.segsize, Ordering::Relaxed);
        self.cell_u16(VERSION_OFFSET).store(header.version, Ordering::Relaxed);
        self.cell_u16(GENERATION_OFFSET).store(header.generation, Ordering::Release);
    }

    /// Sets the version word alone (0 = initializing, 2 = layout 2, 1 or 0x0303 = other layouts).
    pub fn set_version(&mut self, version: u16) {
        self.cell_u16(VERSION_OFFSET).store(version, Ordering::Release);
    }

    /// The header as currently stored.
    pub fn header(&self) -> SegmentHeader {
        SegmentHeader {
            magic: [
                self.cell_u32(0).load(Ordering::Relaxed),
                self.cell_u32(4).load(Ordering::Relaxed),
            ],
            segsize: self.cell_u32(8).load(Ordering::Relaxed),
            version: self.cell_u16(VERSION_OFFSET).load(Ordering::Relaxed),
            generation: self.cell_u16(GENERATION_OFFSET).load(Ordering::Acquire),
        }
    }

    /// A daemon restart as a 3.x daemon (or a 2.x daemon finding the file unusable) performs it:
    /// truncate the file to nothing, rewrite magic with version 0 and generation 0 and a zero
    /// body, sync, then set version 2. Readers that touch their mapping during the truncation get
    /// `SIGBUS`; boundkv's reader must survive that. `pause` holds the file truncated for that long
    /// to make the window wide.
    pub fn restart_daemon(&mut self, pause: std::time::Duration) -> io::Result<()> {
        self.unmap();
        self.file.set_len(0)?;
        if !pause.is_zero() {
            std::thread::sleep(pause);
        }
        self.write_initial_image()?;
        self.map()?;
        self.set_version(LAYOUT_VERSION);
        Ok(())
    }

    /// Truncates the file to `len` bytes (a short or empty file) and keeps it so.
    pub fn truncate(&mut self, len: u64) -> io::Result<()> {
        self.unmap();
        self.file.set_len(len)?;
        self.file.sync_all()?;
        Ok(())
    }

    fn write_initial_image(&mut self) -> io::Result<()> {
        let mut image = [0u8; SEGMENT_LEN];
        let header = SegmentHeader { version: 0, generation: 0, ..SegmentHeader::layout2(0) };
        image[..HEADER_LEN].copy_from_slice(&header.to_bytes());
        self.file.write_all_at(&image, 0)?;
        self.file.sync_all()
    }

    fn map(&mut self) -> io::Result<()> {
        let len = SEGMENT_LEN;
        // SAFETY: a fresh shared read-write mapping of a file we hold open and that is at least
        // `len` bytes long.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                self.file.as_raw_fd(),
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        self.map = p.cast();
        self.map_len = len;
        Ok(())
    }

    fn unmap(&mut self) {
        if !self.map.is_null() {
            // SAFETY: our own mapping, not referenced elsewhere.
            unsafe { libc::munmap(self.map.cast(), self.map_len) };
            self.map = std::ptr::null_mut();
        }
    }

    fn generation_cell(&self) -> &AtomicU16 {
        self.cell_u16(GENERATION_OFFSET)
    }

    fn cell_u16(&self, offset: usize) -> &AtomicU16 {
        assert!(!self.map.is_null(), "SegmentWriter: the file is truncated; restart it first");
        assert!(offset.is_multiple_of(2) && offset + 2 <= self.map_len);
        // SAFETY: aligned and within our mapping, which lives as long as `&self`.
        unsafe { &*self.map.add(offset).cast::<AtomicU16>() }
    }

    fn cell_u32(&self, offset: usize) -> &AtomicU32 {
        assert!(!self.map.is_null(), "SegmentWriter: the file is truncated; restart it first");
        assert!(offset.is_multiple_of(4) && offset + 4 <= self.map_len);
        // SAFETY: aligned and within our mapping, which lives as long as `&self`.
        unsafe { &*self.map.add(offset).cast::<AtomicU32>() }
    }

    fn store_body(&self, body: &SegmentBody) {
        assert!(!self.map.is_null(), "SegmentWriter: the file is truncated; restart it first");
        for (i, w) in body.to_words().iter().enumerate() {
            debug_assert!(HEADER_LEN + 8 * i + 8 <= HEADER_LEN + BODY_LEN);
            // SAFETY: 8-aligned (page + 16 + 8i) and within the mapping.
            let cell = unsafe { &*self.map.add(HEADER_LEN + 8 * i).cast::<AtomicU64>() };
            cell.store(*w, Ordering::Relaxed);
        }
    }
}

impl Drop for SegmentWriter {
    fn drop(&mut self) {
        self.unmap();
    }
}
