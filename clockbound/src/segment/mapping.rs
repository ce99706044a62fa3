//! A read-only, one-page `MAP_SHARED` mapping of a file that survives the file being truncated
//! under it.
//!
//! # Why this exists
//!
//! The ClockBound daemon owns its segment file. When a 3.x daemon starts, or a 2.x daemon finds
//! the file unusable, it *truncates* the file and writes it again (clockbound.md §2.1). A reader
//! that touches its mapping while the file is shorter than the mapped page gets `SIGBUS`, whose
//! default action kills the process: a database that dies because a time daemon restarted.
//!
//! Reading with `pread` instead would avoid the signal but costs a system call (≈200 ns) on every
//! `now()`, several times the whole budget. So the reader keeps the mapping, and this module makes
//! the fault harmless:
//!
//! 1. Every mapping is one page, and its page address is registered in a fixed, lock-free table.
//! 2. A process-wide `SIGBUS` handler, installed once, looks the faulting address up. If it is one
//!    of ours, it maps an anonymous zero page over it with `MAP_FIXED` (an atomic replacement of
//!    the page: the address stays valid), marks the mapping *faulted*, and returns; the faulting
//!    load re-executes and reads zeros. Zeros carry no magic and no generation, so the reader
//!    treats them as "daemon restarting", serves its last good snapshot, and remaps.
//! 3. Anything else is passed on: a fault at another address, a hardware memory error
//!    (`BUS_MCEERR_*`), a `SIGBUS` sent with `kill`. It goes to the handler installed before ours
//!    (Rust's own stack-overflow handler, typically), or, if there was none, to the default
//!    action: a foreign `SIGBUS` still kills the process as it would have. `errno` is preserved.
//!
//! A fault can race with a remap (the handler's zero page landing just after the file was mapped
//! back). The reader does not depend on winning that race: zeros read as "daemon restarting",
//! which serves the last good snapshot and forces a revalidation, and revalidation remaps
//! whenever the mapped header is not a valid one.
//!
//! Remapping (after a fault, or when the daemon replaced the file) also uses `MAP_FIXED` over the
//! same address, so concurrent readers never touch unmapped memory. An *epoch* counter, odd while
//! a remap is in progress, lets a reader detect that its copy may straddle two files and retry.
//!
//! `mmap` is not on POSIX's list of async-signal-safe functions, but on Linux it is a plain system
//! call wrapper with no locks in user space, which is what the handler relies on.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU16, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Once, OnceLock};

/// How many mappings may be alive at once (each clock holds one or two).
const SLOTS: usize = 256;

struct Slot {
    /// Page address of a live mapping, or 0 when the slot is free.
    base: AtomicUsize,
    /// Set by the signal handler when it patched this page with zeros.
    faulted: AtomicBool,
}

#[allow(clippy::declare_interior_mutable_const)] // used only as an array initializer
const FREE_SLOT: Slot = Slot { base: AtomicUsize::new(0), faulted: AtomicBool::new(false) };
static SLOT_TABLE: [Slot; SLOTS] = [FREE_SLOT; SLOTS];
static FAULTS_HANDLED: AtomicU64 = AtomicU64::new(0);
static PAGE_SIZE: OnceLock<usize> = OnceLock::new();
static HANDLER_INSTALLED: Once = Once::new();
static PREVIOUS_ACTION: OnceLock<PreviousAction> = OnceLock::new();

/// The `sigaction` that was in place before ours.
struct PreviousAction(libc::sigaction);
// SAFETY: a plain C struct of integers and function addresses, written once before it is shared.
unsafe impl Sync for PreviousAction {}
// SAFETY: as above.
unsafe impl Send for PreviousAction {}

fn page_size() -> usize {
    // SAFETY: sysconf has no preconditions.
    *PAGE_SIZE.get_or_init(|| unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as usize)
}

/// How many truncation faults the handler has absorbed in this process (for tests and metrics).
pub fn faults_handled() -> u64 {
    FAULTS_HANDLED.load(Ordering::Relaxed)
}

fn install_handler() {
    HANDLER_INSTALLED.call_once(|| {
        // SAFETY: we build a zeroed sigaction, fill in a valid handler, an empty mask and flags,
        // and swap it in atomically, keeping the previous action for chaining.
        unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = on_sigbus as *const () as usize;
            action.sa_flags = libc::SA_SIGINFO | libc::SA_ONSTACK;
            libc::sigemptyset(&mut action.sa_mask);
            let mut previous: libc::sigaction = std::mem::zeroed();
            if libc::sigaction(libc::SIGBUS, &action, &mut previous) == 0 {
                let _ = PREVIOUS_ACTION.set(PreviousAction(previous));
            } else {
                tracing::error!(
                    "could not install the SIGBUS handler ({}); a ClockBound daemon restart may \
                     crash this process",
                    io::Error::last_os_error()
                );
            }
        }
    });
}

/// The process-wide `SIGBUS` handler. Only async-signal-safe work: atomic loads and stores, one
/// `mmap`, and a chained call, `sigaction` or `raise` for signals that are not ours.
extern "C" fn on_sigbus(sig: libc::c_int, info: *mut libc::siginfo_t, ctx: *mut libc::c_void) {
    // SAFETY: __errno_location returns this thread's errno; we restore it before returning so the
    // interrupted code never sees our system calls' errors.
    let saved_errno = unsafe { *libc::__errno_location() };
    // SAFETY: the kernel passes a valid siginfo for SA_SIGINFO handlers.
    let (code, addr) = unsafe { ((*info).si_code, (*info).si_addr() as usize) };
    // Only an access beyond the end of a file (BUS_ADRERR) is a truncation; a hardware memory
    // error (BUS_MCEERR_*) or a signal someone sent is never ours to swallow.
    if code == libc::BUS_ADRERR && patch_truncated_page(addr) {
        // SAFETY: as above.
        unsafe { *libc::__errno_location() = saved_errno };
        return;
    }
    // Not ours: behave exactly as if we were never installed.
    // SAFETY: the previous action is a valid sigaction recorded at install time; calling its
    // handler with the kernel's arguments is what the kernel would have done.
    unsafe {
        match PREVIOUS_ACTION.get() {
            Some(PreviousAction(prev))
                if prev.sa_sigaction != libc::SIG_DFL && prev.sa_sigaction != libc::SIG_IGN =>
            {
                if prev.sa_flags & libc::SA_SIGINFO != 0 {
                    let f: extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut libc::c_void) =
                        std::mem::transmute(prev.sa_sigaction);
                    f(sig, info, ctx);
                } else {
                    let f: extern "C" fn(libc::c_int) = std::mem::transmute(prev.sa_sigaction);
                    f(sig);
                }
            }
            _ => {
                // Restore the default action. A fault re-executes the faulting instruction on
                // return and dies of it; a signal that was *sent* (si_code <= 0) would not come
                // back by itself, so send it again (it is delivered as soon as we return).
                let mut dfl: libc::sigaction = std::mem::zeroed();
                dfl.sa_sigaction = libc::SIG_DFL;
                libc::sigaction(libc::SIGBUS, &dfl, std::ptr::null_mut());
                if code <= 0 {
                    libc::raise(libc::SIGBUS);
                }
            }
        }
        *libc::__errno_location() = saved_errno;
    }
}

/// Replaces our page at `addr`, if it is one, with zeros. Returns whether it was ours.
fn patch_truncated_page(addr: usize) -> bool {
    let page = *PAGE_SIZE.get().unwrap_or(&4096);
    let base = addr & !(page - 1);
    if base == 0 {
        return false;
    }
    for slot in &SLOT_TABLE {
        if slot.base.load(Ordering::Acquire) == base {
            // Mark first: whoever reads the zeros we are about to map must see the mark.
            slot.faulted.store(true, Ordering::Release);
            // SAFETY: `base` is the start of a one-page mapping we own (registered, not yet
            // unregistered); replacing it with an anonymous read-only page keeps the address
            // valid for every reader.
            let p = unsafe { map_zero_page(base, page) };
            if p {
                FAULTS_HANDLED.fetch_add(1, Ordering::Relaxed);
                return true;
            }
        }
    }
    false
}

/// Maps an anonymous, read-only zero page over `base` (MAP_FIXED).
///
/// # Safety
/// `base` must be the page address of a mapping this module owns.
unsafe fn map_zero_page(base: usize, page: usize) -> bool {
    // SAFETY: per the contract, `base` is ours to replace.
    let p = unsafe {
        libc::mmap(
            base as *mut libc::c_void,
            page,
            libc::PROT_READ,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED,
            -1,
            0,
        )
    };
    p != libc::MAP_FAILED
}

/// One page of a file, mapped read-only and shared, at an address that stays valid for the
/// lifetime of the value whatever happens to the file.
pub(crate) struct SharedPage {
    base: *mut u8,
    slot: usize,
    /// Odd while [`SharedPage::remap`] is replacing the page.
    epoch: AtomicU64,
}

// SAFETY: the page is only ever read through atomic loads, and the address is valid until drop.
unsafe impl Send for SharedPage {}
// SAFETY: as above; `remap` replaces the page atomically with MAP_FIXED.
unsafe impl Sync for SharedPage {}

impl SharedPage {
    /// Maps the first page of `file`, read-only and shared.
    pub(crate) fn map(file: &File) -> io::Result<SharedPage> {
        install_handler();
        let page = page_size();
        // SAFETY: a fresh mapping at a kernel-chosen address of a file we hold open.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                page,
                libc::PROT_READ,
                libc::MAP_SHARED,
                file.as_raw_fd(),
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let base = p as usize;
        let slot = SLOT_TABLE.iter().position(|s| {
            s.base.compare_exchange(0, base, Ordering::AcqRel, Ordering::Relaxed).is_ok()
        });
        match slot {
            Some(slot) => {
                // Clear a mark left by the slot's previous owner before anyone reads this page.
                SLOT_TABLE[slot].faulted.store(false, Ordering::Release);
                Ok(SharedPage { base: p.cast(), slot, epoch: AtomicU64::new(0) })
            }
            None => {
                // SAFETY: we just created this mapping and nobody else knows its address.
                unsafe { libc::munmap(p, page) };
                Err(io::Error::other(format!("more than {SLOTS} ClockBound mappings are open")))
            }
        }
    }

    /// Replaces the page, in place, with the first page of `file` and clears the faulted mark.
    pub(crate) fn remap(&self, file: &File) -> io::Result<()> {
        self.epoch.fetch_add(1, Ordering::AcqRel);
        // SAFETY: MAP_FIXED over our own registered page; readers keep a valid address throughout.
        let p = unsafe {
            libc::mmap(
                self.base.cast(),
                page_size(),
                libc::PROT_READ,
                libc::MAP_SHARED | libc::MAP_FIXED,
                file.as_raw_fd(),
                0,
            )
        };
        let result = if p == libc::MAP_FAILED {
            let e = io::Error::last_os_error();
            // A failed MAP_FIXED may already have unmapped the old page; never leave a hole that
            // readers would fault on. Zeros read as "daemon restarting" and are retried.
            // SAFETY: our own registered page.
            unsafe { map_zero_page(self.base as usize, page_size()) };
            SLOT_TABLE[self.slot].faulted.store(true, Ordering::Release);
            Err(e)
        } else {
            SLOT_TABLE[self.slot].faulted.store(false, Ordering::Release);
            Ok(())
        };
        self.epoch.fetch_add(1, Ordering::AcqRel);
        result
    }

    /// Whether the signal handler replaced this page with zeros since the last (re)map.
    pub(crate) fn faulted(&self) -> bool {
        SLOT_TABLE[self.slot].faulted.load(Ordering::Acquire)
    }

    /// The remap epoch; compare two loads around a copy to detect a concurrent remap.
    pub(crate) fn epoch(&self, order: Ordering) -> u64 {
        self.epoch.load(order)
    }

    /// Loads the `u16` at byte `offset` (2-aligned, within the page).
    pub(crate) fn load_u16(&self, offset: usize, order: Ordering) -> u16 {
        debug_assert!(offset.is_multiple_of(2) && offset + 2 <= page_size());
        // SAFETY: in bounds of our page, aligned, and the page stays mapped until drop.
        unsafe { (*self.base.add(offset).cast::<AtomicU16>()).load(order) }
    }

    /// Loads the `u32` at byte `offset` (4-aligned, within the page).
    pub(crate) fn load_u32(&self, offset: usize, order: Ordering) -> u32 {
        debug_assert!(offset.is_multiple_of(4) && offset + 4 <= page_size());
        // SAFETY: as in load_u16.
        unsafe { (*self.base.add(offset).cast::<AtomicU32>()).load(order) }
    }

    /// Loads the `u64` at byte `offset` (8-aligned, within the page).
    pub(crate) fn load_u64(&self, offset: usize, order: Ordering) -> u64 {
        debug_assert!(offset.is_multiple_of(8) && offset + 8 <= page_size());
        // SAFETY: as in load_u16.
        unsafe { (*self.base.add(offset).cast::<AtomicU64>()).load(order) }
    }
}

impl Drop for SharedPage {
    fn drop(&mut self) {
        // Unregister first, so the handler never patches an address that is about to be reused.
        SLOT_TABLE[self.slot].base.store(0, Ordering::Release);
        // SAFETY: our own mapping; `&mut self` proves no reader is using it.
        unsafe { libc::munmap(self.base.cast(), page_size()) };
    }
}
