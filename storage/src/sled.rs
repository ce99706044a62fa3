//! [`SledEngine`]: sled 0.34.7 on disk, made durable for real.
//!
//! # What sled gives, and what it does not
//!
//! sled's `apply_batch` is atomic in memory (a global write lock against readers) and on disk (the
//! batch is sealed in its log and replayed all or nothing). Its `flush()`, however, is **not an
//! fsync**: on Linux it `pwrite`s the log buffer and calls `sync_file_range`, which neither flushes
//! the device's write cache nor commits the file system's journal; sled's background thread calls
//! `fsync` only every 500 ms. A write acknowledged after `flush()` survives a process crash (the
//! page cache survives) but not a power loss or a VM crash (measured: 40,907 `sync_file_range` to
//! 12 `fsync` in 5 s of insert+flush; `../shared/docs/dependencies.md`, A2).
//!
//! So [`Durability::Sync`], the default, follows every `flush()` with `fdatasync` of sled's log
//! file (`<dir>/db`). Two more gaps are closed:
//!
//! - sled writes a page larger than `segment_size / 4` to a separate *blob* file and never syncs
//!   it. This engine raises `segment_size` to 8 MiB (blob threshold 2 MiB) and the MVCC layer caps
//!   keys at 4 KiB and values at 64 KiB, so a leaf (at most ~17 entries before sled splits it)
//!   stays under 1.2 MiB and never becomes a blob. As a second line of defence, `flush` syncs any
//!   blob files that do exist, and their directory.
//! - A newly created database's files need their directory entry synced: `open` syncs the
//!   directory once.
//!
//! # Group commit
//!
//! Every `write` bumps a counter; `flush` notes the counter when it is called and returns at once
//! if a sync that started later has already covered it. Otherwise it takes the sync lock and runs
//! one `sled flush + fdatasync` for everything written so far. N threads committing at once share
//! one sync instead of queueing for N.
//!
//! # Failure
//!
//! A failed write or sync poisons the engine: every later `write` and `flush` fails with the first
//! error. After a failed `fdatasync` the kernel may already have dropped the dirty pages it could
//! not write, so a retry that "succeeds" would be a lie; the node must stop and recover from disk.

use std::fs::File;
use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};

use crate::engine::{Engine, ScanIter, Status, WriteBatch};
use crate::error::{Error, Result};

/// What [`Engine::flush`] promises on a [`SledEngine`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Durability {
    /// `flush` returns once the data is on stable storage (`fdatasync`). Survives power loss.
    #[default]
    Sync,
    /// `flush` returns once sled has written the data to the OS (`sync_file_range`). Survives a
    /// process crash, **not** a power loss or kernel crash; sled's own background fsync (every
    /// 500 ms) bounds the loss window. For benchmarks and data you can rebuild.
    Buffered,
}

impl Durability {
    fn describe(self) -> &'static str {
        match self {
            Durability::Sync => "sync (fdatasync on every flush; survives power loss)",
            Durability::Buffered => "buffered (survives a process crash, not a power loss)",
        }
    }
}

/// How to open a [`SledEngine`].
#[derive(Clone, Debug)]
pub struct SledOptions {
    /// What `flush` guarantees. Default [`Durability::Sync`].
    pub durability: Durability,
    /// sled's page cache, in bytes. Default 256 MiB.
    pub cache_capacity: u64,
}

impl Default for SledOptions {
    fn default() -> Self {
        SledOptions { durability: Durability::Sync, cache_capacity: 256 << 20 }
    }
}

/// sled's segment size here: 8 MiB, so that pages up to 2 MiB stay in the (synced) log.
const SEGMENT_SIZE: usize = 8 << 20;

/// sled 0.34.7 behind the [`Engine`] trait, with real durability (see the module docs).
pub struct SledEngine {
    db: sled::Db,
    dir: PathBuf,
    /// sled's log file, kept open for `fdatasync`.
    log: File,
    options: SledOptions,
    /// Batches written so far.
    written: AtomicU64,
    /// Batches covered by a completed sync.
    synced: AtomicU64,
    sync_lock: Mutex<()>,
    /// The first fatal error; once set, writes and flushes fail.
    poisoned: AtomicBool,
    poison: OnceLock<Error>,
}

impl SledEngine {
    /// Opens (or creates) the database in `dir`.
    pub fn open(dir: impl AsRef<Path>, options: SledOptions) -> Result<Self> {
        let dir = dir.as_ref().to_path_buf();
        std::fs::create_dir_all(&dir)?;
        let config = sled::Config::new()
            .path(&dir)
            .segment_size(SEGMENT_SIZE)
            .cache_capacity(options.cache_capacity);
        // sled releases its file lock only when its background flusher has let go of the
        // database, which can be a moment after the last handle was dropped (a reopen in the
        // same process right after a close). Retry the lock for up to a second before calling
        // the directory busy.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(1);
        let db = loop {
            match config.open() {
                Err(sled::Error::Io(io))
                    if io.to_string().contains("could not acquire lock")
                        && std::time::Instant::now() < deadline =>
                {
                    std::thread::sleep(std::time::Duration::from_millis(10));
                }
                other => break other,
            }
        }
        .map_err(|e| match e {
            sled::Error::Io(io) if io.to_string().contains("could not acquire lock") => {
                Error::Io(format!(
                    "{} is in use by another process (sled allows one at a time): {io}",
                    dir.display()
                ))
            }
            other => other.into(),
        })?;
        let log = File::open(dir.join("db")).map_err(|e| {
            Error::Io(format!("cannot open sled's log file {}/db: {e}", dir.display()))
        })?;
        // Make the creation of sled's files durable (their directory entries).
        File::open(&dir)?.sync_all()?;
        Ok(SledEngine {
            db,
            dir,
            log,
            options,
            written: AtomicU64::new(0),
            synced: AtomicU64::new(0),
            sync_lock: Mutex::new(()),
            poisoned: AtomicBool::new(false),
            poison: OnceLock::new(),
        })
    }

    /// The database directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The durability mode.
    pub fn durability(&self) -> Durability {
        self.options.durability
    }

    fn check_poison(&self) -> Result<()> {
        if self.poisoned.load(Ordering::Acquire) {
            let e = self.poison.get().cloned().unwrap_or_else(|| Error::Io("engine failed".into()));
            return Err(Error::Io(format!("the engine failed earlier and accepts no writes: {e}")));
        }
        Ok(())
    }

    fn fail(&self, e: Error) -> Error {
        if e.is_fatal() {
            let _ = self.poison.set(e.clone());
            self.poisoned.store(true, Ordering::Release);
            tracing::error!(error = %e, dir = %self.dir.display(), "storage engine failed; no more writes");
        }
        e
    }

    /// Syncs any blob files sled wrote (it never syncs them itself). With the size limits of the
    /// MVCC layer there are none; this is the second line of defence.
    fn sync_blobs(&self) -> Result<()> {
        let blobs = self.dir.join("blobs");
        let Ok(entries) = std::fs::read_dir(&blobs) else {
            return Ok(());
        };
        let mut any = false;
        for entry in entries {
            let path = entry?.path();
            File::open(&path)?.sync_data()?;
            any = true;
        }
        if any {
            File::open(&blobs)?.sync_all()?;
        }
        Ok(())
    }
}

impl Engine for SledEngine {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        Ok(self.db.get(key)?.map(|v| v.to_vec()))
    }

    fn scan(&self, range: (Bound<Vec<u8>>, Bound<Vec<u8>>)) -> ScanIter<'_> {
        Box::new(
            self.db
                .range::<Vec<u8>, _>(range)
                .map(|r| r.map(|(k, v)| (k.to_vec(), v.to_vec())).map_err(Error::from)),
        )
    }

    fn write(&self, batch: WriteBatch) -> Result<()> {
        self.check_poison()?;
        let mut b = sled::Batch::default();
        for (key, value) in batch.into_ops() {
            match value {
                Some(v) => b.insert(key, v),
                None => b.remove(key),
            }
        }
        self.db.apply_batch(b).map_err(|e| self.fail(e.into()))?;
        self.written.fetch_add(1, Ordering::AcqRel);
        Ok(())
    }

    fn flush(&self) -> Result<()> {
        self.check_poison()?;
        let target = self.written.load(Ordering::Acquire);
        if self.synced.load(Ordering::Acquire) >= target {
            return Ok(()); // a sync that started after our writes already covered them
        }
        let _guard = self.sync_lock.lock().unwrap_or_else(|e| e.into_inner());
        if self.synced.load(Ordering::Acquire) >= target {
            return Ok(());
        }
        self.check_poison()?;
        let upto = self.written.load(Ordering::Acquire);
        self.db.flush().map_err(|e| self.fail(e.into()))?;
        if self.options.durability == Durability::Sync {
            self.log
                .sync_data()
                .map_err(|e| self.fail(Error::Io(format!("fdatasync of sled's log: {e}"))))?;
            self.sync_blobs().map_err(|e| self.fail(e))?;
        }
        self.synced.fetch_max(upto, Ordering::AcqRel);
        Ok(())
    }

    fn status(&self) -> Result<Status> {
        Ok(Status {
            name: "sled 0.34.7".into(),
            size_on_disk: self.db.size_on_disk()?,
            durability: self.options.durability.describe().into(),
        })
    }
}
