//! `libboundkv_oscillator.so`: a bad oscillator for one process.
//!
//! A machine whose oscillator runs fast or slow moves **all** its clocks together: the wall
//! clock, the monotonic clock its kernel slews and the raw one. A node on such a machine cannot
//! see the drift by comparing its own clocks (boundkv's step guard does exactly that, and
//! correctly sees nothing); only another machine's clock can. The consistency suite's
//! `clock-drift` nemesis needs that fault on one process, on a shared kernel.
//!
//! Loaded with `LD_PRELOAD` and pointed at a control file by `BOUNDKV_OSCILLATOR=PATH`, this
//! library replaces `clock_gettime`, `gettimeofday` and `time`. Every wall or monotonic reading
//! (`CLOCK_REALTIME`, `CLOCK_MONOTONIC` and their `_COARSE` variants, `CLOCK_MONOTONIC_RAW`,
//! `CLOCK_BOOTTIME`) gets the same error added:
//!
//! ```text
//! error(m) = e0 + (m − m0) · rate          m: the true CLOCK_MONOTONIC now
//! ```
//!
//! where the control file (a [`Control`], mapped shared) holds `m0`, `e0` and `rate` as the
//! runner last set them, with the rate before `m0` (a coarse clock reads the start of its tick,
//! which may be before `m0`) and a time `until` when the rate stops. The runner changes the rate
//! at `m0 = now` with `e0 = error(now)`, so the clocks never jump; it slews the error back to
//! zero with a negative rate that stops exactly there, and never steps a clock. For example, a rate of +800 ppm set at `m0` with `e0 = 0`: 5 s later
//! every clock of the process reads 4 ms ahead of the machine's, and a `sleep(1 s)` (measured on
//! the process's monotonic clock) ends when the process's clock says so, 0.8 ms early.
//!
//! Why not libfaketime, which the suite uses for steps: version 0.9.10 counts a faked
//! monotonic clock from the faked *wall* clock's value (about 1.8 × 10⁹ s), and the absolute
//! futex deadlines Rust's standard library computes from it then never arrive (measured:
//! `mpsc::Receiver::recv_timeout` hangs). Here every clock keeps its own base and is off only by
//! the drift, so deadlines are off by the drift too, as on a real machine. Time-outs given
//! relative to now (`nanosleep`, `epoll_wait`) are not scaled: at 1,000 ppm that is 1 ms in a
//! second, which nothing in boundkv can tell from scheduling noise.
//!
//! Without the variable or the file, every clock is the machine's.

mod control;

pub use control::{CONTROL_LEN, CONTROL_VAR, Control};

use std::sync::atomic::{AtomicPtr, Ordering};

/// Not yet looked for.
const UNMAPPED: *mut Control = std::ptr::null_mut();
/// Looked for and absent: every clock is the machine's.
const ABSENT: *mut Control = std::ptr::dangling_mut::<Control>();

static CONTROL: AtomicPtr<Control> = AtomicPtr::new(UNMAPPED);

/// The control file, mapped on first use (with libc calls only: this can run before `main`).
fn control() -> Option<&'static Control> {
    let mut p = CONTROL.load(Ordering::Acquire);
    if p == UNMAPPED {
        p = map().unwrap_or(ABSENT);
        CONTROL.store(p, Ordering::Release);
    }
    // SAFETY: `p` is either ABSENT or a live, never-unmapped shared mapping of CONTROL_LEN
    // bytes, page-aligned, whose fields are atomics (any bit pattern is valid).
    (p != ABSENT).then(|| unsafe { &*p })
}

fn map() -> Option<*mut Control> {
    // SAFETY: plain libc calls on a NUL-terminated name and a descriptor we own; the mapping
    // is checked before use and never unmapped.
    unsafe {
        let path = libc::getenv(c"BOUNDKV_OSCILLATOR".as_ptr());
        if path.is_null() {
            return None;
        }
        let fd = libc::open(path, libc::O_RDONLY | libc::O_CLOEXEC);
        if fd < 0 {
            return None;
        }
        let addr =
            libc::mmap(std::ptr::null_mut(), CONTROL_LEN, libc::PROT_READ, libc::MAP_SHARED, fd, 0);
        libc::close(fd);
        (addr != libc::MAP_FAILED).then_some(addr as *mut Control)
    }
}

type ClockGettime = unsafe extern "C" fn(libc::clockid_t, *mut libc::timespec) -> libc::c_int;

/// libc's own `clock_gettime` (the vDSO's, fast), found once; null until then.
static MACHINE: AtomicPtr<libc::c_void> = AtomicPtr::new(std::ptr::null_mut());

/// The machine's clock: libc's `clock_gettime` behind this one (through the vDSO, as fast as
/// without this library: a system call per reading would widen the gaps between a node's
/// readings of its two clocks, which its step guard reports as small steps), or the system
/// call if libc's cannot be found.
fn machine(clock: libc::clockid_t, tp: *mut libc::timespec) -> libc::c_int {
    let mut f = MACHINE.load(Ordering::Relaxed);
    if f.is_null() {
        // SAFETY: dlsym on a NUL-terminated name; RTLD_NEXT finds the definition after ours.
        f = unsafe { libc::dlsym(libc::RTLD_NEXT, c"clock_gettime".as_ptr()) };
        MACHINE.store(f, Ordering::Relaxed);
    }
    if f.is_null() {
        // SAFETY: clock_gettime writes one timespec through `tp`, which the caller provides.
        return unsafe { libc::syscall(libc::SYS_clock_gettime, clock, tp) as libc::c_int };
    }
    // SAFETY: `f` is libc's clock_gettime, which has this signature.
    unsafe { std::mem::transmute::<*mut libc::c_void, ClockGettime>(f)(clock, tp) }
}

fn drifts(clock: libc::clockid_t) -> bool {
    matches!(
        clock,
        libc::CLOCK_REALTIME
            | libc::CLOCK_REALTIME_COARSE
            | libc::CLOCK_MONOTONIC
            | libc::CLOCK_MONOTONIC_COARSE
            | libc::CLOCK_MONOTONIC_RAW
            | libc::CLOCK_BOOTTIME
    )
}

fn nanos(ts: &libc::timespec) -> i64 {
    ts.tv_sec * 1_000_000_000 + ts.tv_nsec
}

fn add_nanos(ts: &mut libc::timespec, delta: i64) {
    let total = nanos(ts) + delta;
    ts.tv_sec = total.div_euclid(1_000_000_000);
    ts.tv_nsec = total.rem_euclid(1_000_000_000);
}

/// `clock_gettime(2)`, with the process's drift.
///
/// # Safety
///
/// As `clock_gettime`: `tp` must be valid for one `timespec` write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn clock_gettime(
    clock: libc::clockid_t,
    tp: *mut libc::timespec,
) -> libc::c_int {
    let r = machine(clock, tp);
    if r != 0 || tp.is_null() || !drifts(clock) {
        return r;
    }
    let Some(control) = control() else { return r };
    // The error is taken at the monotonic time of the reading: for a coarse clock the coarse
    // monotonic time, so that a coarse reading never runs ahead of a later one (the clock
    // ticks, and the error moves, together).
    let base = match clock {
        libc::CLOCK_MONOTONIC | libc::CLOCK_MONOTONIC_COARSE => None,
        libc::CLOCK_REALTIME_COARSE => Some(libc::CLOCK_MONOTONIC_COARSE),
        _ => Some(libc::CLOCK_MONOTONIC),
    };
    let mut mono = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    let m = match base {
        // SAFETY: `tp` was just written by the clock.
        None => nanos(unsafe { &*tp }),
        Some(base) if machine(base, &mut mono) == 0 => nanos(&mono),
        Some(_) => return r,
    };
    // SAFETY: `tp` is valid (the kernel just wrote it).
    add_nanos(unsafe { &mut *tp }, control.error_at(m));
    0
}

/// `gettimeofday(2)`, with the process's drift.
///
/// # Safety
///
/// As `gettimeofday`: `tv` is null or valid for one `timeval` write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn gettimeofday(
    tv: *mut libc::timeval,
    _tz: *mut libc::c_void,
) -> libc::c_int {
    if tv.is_null() {
        return 0;
    }
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `ts` is a local timespec.
    let r = unsafe { clock_gettime(libc::CLOCK_REALTIME, &mut ts) };
    if r == 0 {
        // SAFETY: `tv` is non-null and valid per the contract.
        unsafe { *tv = libc::timeval { tv_sec: ts.tv_sec, tv_usec: ts.tv_nsec / 1000 } };
    }
    r
}

/// `time(2)`, with the process's drift.
///
/// # Safety
///
/// As `time`: `t` is null or valid for one `time_t` write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn time(t: *mut libc::time_t) -> libc::time_t {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `ts` is a local timespec.
    unsafe { clock_gettime(libc::CLOCK_REALTIME, &mut ts) };
    if !t.is_null() {
        // SAFETY: `t` is non-null and valid per the contract.
        unsafe { *t = ts.tv_sec };
    }
    ts.tv_sec
}
