//! Leap seconds: what the kernel knows of the next one ([`KernelLeap`]), how a member's clock
//! handles one ([`LeapPolicy`]), and the correction a stepping member applies after it
//! ([`LeapEvent::absorb`]).
//!
//! # What the kernel knows
//!
//! UTC inserts (or, in theory, deletes) a second at the end of a UTC day, announced months
//! ahead. An NTP daemon (chrony, ntpd) that hears the announcement tells the kernel on the day
//! itself by setting `STA_INS` (or `STA_DEL`) in the kernel's NTP status. At the next UTC
//! midnight the kernel then steps `CLOCK_REALTIME`: for an insert, back by one second (the clock
//! reads 23:59:59 twice; the kernel's state is `TIME_OOP` during the second time), for a delete,
//! forward (23:59:59 never happens). Afterwards the state is `TIME_WAIT` until the daemon clears
//! the flag, then `TIME_OK` again.
//!
//! All of it is readable without privilege: `adjtimex(2)` with `modes = 0` changes nothing and
//! returns the state (`TIME_OK`, `TIME_INS`, `TIME_DEL`, `TIME_OOP`, `TIME_WAIT`, or
//! `TIME_ERROR` when the clock is not synchronised, `STA_UNSYNC`), the status bits and the TAI
//! offset. [`KernelLeapSource`] reads it; [`KernelLeap::state`] is the typed answer. Because
//! `TIME_ERROR` hides the state, the status bits are read too: `STA_INS` means an insert is
//! scheduled whatever the return value says.
//!
//! # The operator's choice: step or smear
//!
//! A clock either *steps* at the leap (a default Linux kernel with chrony or ntpd: `leapsecmode
//! system`) or *smears* it (AWS Time Sync, Google's public NTP: the second is spread over a day,
//! clocks up to half a second from UTC in the middle, and the kernel never steps). Each member
//! declares which with `--leap step|smear` ([`LeapPolicy`]); the two must never be mixed in one
//! cluster, since during the smear a smeared and a stepped clock disagree by up to a second
//! while each claims microseconds.
//!
//! # After the step: absorbing the second
//!
//! A stepping member's [`crate::StepGuard`] sees the kernel's step as a step back of one second
//! and would hold over forever (see its docs). When the kernel announced the leap, the guard
//! instead maps every later reading through [`LeapEvent::absorb`], a **post-leap smear**:
//!
//! ```text
//! raw r (CLOCK_REALTIME after the step)    B = L − 1 s (insert)   W = 24 h
//! c(r) = 1 s                          r ≤ B
//!        1 s × (1 − (r − B) / W)       B < r < B + W
//!        0                            r ≥ B + W
//! absorbed(r) = r + c(r)               (delete: B = L, r − c(r))
//! ```
//!
//! `absorbed` is non-decreasing (its slope is `1 − 1/W`, 11.6 ppm slow), so an interval
//! `[e, l]` maps to `[absorbed(e), absorbed(l)]` and still contains the reference time
//! `absorbed(raw true time)` whenever `[e, l]` contained the raw true time; its width shrinks by
//! 11.6 ppm rather than growing. Every stepping member computes the same function from the same
//! `L` (a UTC midnight), so their clocks keep agreeing to within their bounds.
//!
//! For example, a leap second inserted at L = 2016-12-31T24:00:00Z (Unix 1 483 228 800). A
//! node's raw clock reads 23:59:59.999 (L − 1 ms), then the kernel steps it back: it reads
//! 23:59:59.000 again (B), and 100 ms later 23:59:59.100. The guard answers B + 100 ms + c with
//! c = 1 s × (1 − 0.1 s / 24 h) ≈ 999 998 842 ns: L + 99 998 842 ns, after the L − 1 ms it
//! answered before. Twelve hours later raw reads L − 1 s + 12 h and the answer is half a second
//! ahead of it; 24 h after the leap the correction is 0 and the guard passes the raw clock
//! through again.

use std::fmt;
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::time::{TimeInterval, Timestamp};

/// How long before a leap the membership's leap policies must agree (a member whose policy
/// differs from the majority's is fenced inside the window): 12 h, the half-width of a 24 h
/// smear. The window closes [`ABSORB_PERIOD`] after the leap, when stepping members have
/// absorbed the second.
pub const LEAP_WINDOW: Duration = Duration::from_secs(12 * 3600);

/// How long a stepping member takes to absorb the second after the step: 24 h, the length of
/// AWS's and Google's smears.
pub const ABSORB_PERIOD: Duration = Duration::from_secs(24 * 3600);

const DAY_NANOS: u64 = 86_400 * 1_000_000_000;
const SECOND_NANOS: u64 = 1_000_000_000;

/// How a member's clock handles a leap second, as declared with `--leap`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum LeapPolicy {
    /// The kernel steps `CLOCK_REALTIME` at the leap (a default Linux kernel under chrony or
    /// ntpd); the step guard absorbs the step over [`ABSORB_PERIOD`]. The default.
    #[default]
    Step,
    /// The time source smears the second (AWS Time Sync, Google); the clock never steps.
    Smear,
}

impl LeapPolicy {
    /// The flag's spelling: `step` or `smear`.
    pub fn as_str(self) -> &'static str {
        match self {
            LeapPolicy::Step => "step",
            LeapPolicy::Smear => "smear",
        }
    }
}

impl fmt::Display for LeapPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A `--leap` value other than `step` or `smear`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid leap policy {0:?}: use `step` (the kernel steps the clock) or `smear` (the time source smears the second)"
)]
pub struct ParseLeapPolicyError(String);

impl FromStr for LeapPolicy {
    type Err = ParseLeapPolicyError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim() {
            "step" => Ok(LeapPolicy::Step),
            "smear" => Ok(LeapPolicy::Smear),
            other => Err(ParseLeapPolicyError(other.into())),
        }
    }
}

/// The kernel's leap-second state, typed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum LeapState {
    /// No leap second is scheduled (`TIME_OK`, no `STA_INS`/`STA_DEL`).
    None,
    /// A second is inserted at the next UTC midnight (`TIME_INS` or `STA_INS`).
    InsertScheduled,
    /// A second is deleted at the next UTC midnight (`TIME_DEL` or `STA_DEL`).
    DeleteScheduled,
    /// The inserted second is under way: the clock reads 23:59:59 for the second time
    /// (`TIME_OOP`).
    InLeapSecond,
    /// The leap happened at the last UTC midnight; the daemon has not cleared its flag yet
    /// (`TIME_WAIT`).
    JustHappened,
    /// The state could not be read (`adjtimex` failed, or returned a value the kernel does not
    /// document).
    Unknown,
}

impl fmt::Display for LeapState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LeapState::None => "none",
            LeapState::InsertScheduled => "insert scheduled",
            LeapState::DeleteScheduled => "delete scheduled",
            LeapState::InLeapSecond => "in the leap second",
            LeapState::JustHappened => "just happened",
            LeapState::Unknown => "unknown",
        })
    }
}

/// What `adjtimex(2)` said, raw and typed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct KernelLeap {
    /// The typed state.
    pub state: LeapState,
    /// The return value (`TIME_OK` 0 … `TIME_ERROR` 5), or -1 if the call failed.
    pub code: i32,
    /// The kernel's NTP status bits (`STA_*`).
    pub status: i32,
    /// TAI − UTC in seconds as the kernel knows it (0 when no daemon set it).
    pub tai_offset: i64,
    /// `STA_UNSYNC`: the kernel considers its clock unsynchronised.
    pub unsynchronized: bool,
}

/// Whether the second is inserted or deleted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum LeapKind {
    /// 23:59:60 is inserted; the kernel steps the clock back one second.
    Insert,
    /// 23:59:59 is skipped; the kernel steps the clock forward one second.
    Delete,
}

/// A leap second at a UTC midnight.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct LeapEvent {
    /// The UTC midnight the second is inserted before (or deleted before), as a Unix timestamp:
    /// the raw clock reads `at` when the kernel steps.
    pub at: Timestamp,
    /// Insert or delete.
    pub kind: LeapKind,
}

/// The next UTC midnight strictly after `t`.
pub fn next_utc_midnight(t: Timestamp) -> Timestamp {
    Timestamp::from_nanos((t.as_nanos() / DAY_NANOS + 1) * DAY_NANOS)
}

/// The last UTC midnight at or before `t`.
pub fn last_utc_midnight(t: Timestamp) -> Timestamp {
    Timestamp::from_nanos(t.as_nanos() / DAY_NANOS * DAY_NANOS)
}

/// The UTC midnight within [`LEAP_WINDOW`] of `t` that ends 30 June or 31 December, if there
/// is one: the only days on which a leap second has ever been scheduled (IERS Bulletin C may
/// also name 31 March and 30 September; it never has). A member whose kernel is never told of
/// a leap (one that smears) knows the leap windows only this way.
pub fn possible_leap_near(t: Timestamp) -> Option<Timestamp> {
    // The window reaches further after a leap than before it: two midnights can qualify.
    let latest = last_utc_midnight(t.saturating_add(LEAP_WINDOW));
    [latest, Timestamp::from_nanos(latest.as_nanos().saturating_sub(DAY_NANOS))]
        .into_iter()
        .filter(|&m| in_window(m, t))
        .find(|&m| {
            let (_, month, day) = civil_from_days((m.as_nanos() / DAY_NANOS) as i64);
            day == 1 && (month == 1 || month == 7)
        })
}

/// Whether `t` lies in the leap window of a leap at `at`: from [`LEAP_WINDOW`] before it (a
/// noon-to-noon smear begins) until the stepping members have absorbed it ([`ABSORB_PERIOD`]
/// and the second itself after it), the whole time a stepped and a smeared clock disagree.
fn in_window(at: Timestamp, t: Timestamp) -> bool {
    let (at, t) = (at.as_nanos(), t.as_nanos());
    let after = (ABSORB_PERIOD.as_nanos() as u64).saturating_add(SECOND_NANOS);
    t.saturating_add(LEAP_WINDOW.as_nanos() as u64) >= at && t <= at.saturating_add(after)
}

/// (year, month, day) of the day `days` after 1970-01-01 (Howard Hinnant's `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

impl KernelLeap {
    /// Types the answer of `adjtimex`: its return value `code`, status bits and TAI offset.
    pub fn from_raw(code: i32, status: i32, tai_offset: i64) -> Self {
        let ins = status & libc::STA_INS != 0;
        let del = status & libc::STA_DEL != 0;
        let state = match code {
            libc::TIME_OOP => LeapState::InLeapSecond,
            libc::TIME_WAIT => LeapState::JustHappened,
            libc::TIME_INS => LeapState::InsertScheduled,
            libc::TIME_DEL => LeapState::DeleteScheduled,
            // TIME_ERROR hides the state machine (it means "unsynchronised"); the bits still say
            // what is scheduled.
            libc::TIME_OK | libc::TIME_ERROR if ins => LeapState::InsertScheduled,
            libc::TIME_OK | libc::TIME_ERROR if del => LeapState::DeleteScheduled,
            libc::TIME_OK | libc::TIME_ERROR => LeapState::None,
            _ => LeapState::Unknown,
        };
        KernelLeap {
            state,
            code,
            status,
            tai_offset,
            unsynchronized: status & libc::STA_UNSYNC != 0,
        }
    }

    /// A state that could not be read.
    pub fn unknown() -> Self {
        KernelLeap {
            state: LeapState::Unknown,
            code: -1,
            status: 0,
            tai_offset: 0,
            unsynchronized: false,
        }
    }

    /// A simulated kernel in `state` (status bits to match), for tests and the simulator.
    pub fn simulated(state: LeapState) -> Self {
        let (code, status) = match state {
            LeapState::None => (libc::TIME_OK, 0),
            LeapState::InsertScheduled => (libc::TIME_INS, libc::STA_INS),
            LeapState::DeleteScheduled => (libc::TIME_DEL, libc::STA_DEL),
            LeapState::InLeapSecond => (libc::TIME_OOP, libc::STA_INS),
            LeapState::JustHappened => (libc::TIME_WAIT, libc::STA_INS),
            LeapState::Unknown => return KernelLeap::unknown(),
        };
        KernelLeap::from_raw(code, status, 37)
    }

    /// The leap this state announces, given the raw clock `now` (`CLOCK_REALTIME`): the next
    /// UTC midnight for a scheduled leap or one under way, the last one for a leap that just
    /// happened. `None` when nothing is announced.
    pub fn event(&self, now: Timestamp) -> Option<LeapEvent> {
        let insert_or_delete =
            if self.status & libc::STA_DEL != 0 { LeapKind::Delete } else { LeapKind::Insert };
        match self.state {
            LeapState::InsertScheduled | LeapState::InLeapSecond => {
                Some(LeapEvent { at: next_utc_midnight(now), kind: LeapKind::Insert })
            }
            LeapState::DeleteScheduled => {
                Some(LeapEvent { at: next_utc_midnight(now), kind: LeapKind::Delete })
            }
            LeapState::JustHappened => {
                Some(LeapEvent { at: last_utc_midnight(now), kind: insert_or_delete })
            }
            LeapState::None | LeapState::Unknown => None,
        }
    }
}

impl fmt::Display for KernelLeap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (adjtimex {}, status {:#06x}", self.state, self.code, self.status)?;
        if self.unsynchronized {
            f.write_str(", STA_UNSYNC")?;
        }
        write!(f, ", TAI−UTC {} s)", self.tai_offset)
    }
}

impl LeapEvent {
    /// The raw clock's reading right after the step: `at − 1 s` for an insert, `at` for a
    /// delete. The correction starts here.
    pub fn base(&self) -> Timestamp {
        match self.kind {
            LeapKind::Insert => Timestamp::from_nanos(self.at.as_nanos() - SECOND_NANOS),
            LeapKind::Delete => self.at,
        }
    }

    /// Whether `t` lies within [`LEAP_WINDOW`] of the leap.
    pub fn window_contains(&self, t: Timestamp) -> bool {
        in_window(self.at, t)
    }

    /// Whether a raw reading at `t`, taken after the step, still needs a correction.
    pub fn absorbing_at(&self, raw: Timestamp) -> bool {
        raw < self.base().saturating_add(ABSORB_PERIOD)
    }

    /// The correction `c(raw)` in nanoseconds (see the module docs): 1 s at the step, falling
    /// linearly to 0 over [`ABSORB_PERIOD`]; positive for an insert (the raw clock is behind),
    /// negative for a delete.
    pub fn correction_nanos(&self, raw: Timestamp) -> i64 {
        let w = i128::from(ABSORB_PERIOD.as_nanos() as u64);
        let since = (i128::from(raw.as_nanos()) - i128::from(self.base().as_nanos())).clamp(0, w);
        // floor((W − since) × 1 s / W): at most 1 s, non-increasing in `raw`, and dropping by at
        // most 1 ns per ns, so `raw + c(raw)` never decreases.
        let c = ((w - since) * i128::from(SECOND_NANOS) / w) as i64;
        match self.kind {
            LeapKind::Insert => c,
            LeapKind::Delete => -c,
        }
    }

    /// `raw` with the correction: the reference time a stepping member reports after the leap.
    pub fn absorb(&self, raw: Timestamp) -> Timestamp {
        let t = i128::from(raw.as_nanos()) + i128::from(self.correction_nanos(raw));
        Timestamp::from_nanos(t.clamp(0, i128::from(u64::MAX)) as u64)
    }

    /// An interval of raw readings, corrected end by end (sound because [`LeapEvent::absorb`]
    /// is non-decreasing).
    pub fn absorb_interval(&self, raw: TimeInterval) -> TimeInterval {
        TimeInterval::new(self.absorb(raw.earliest), self.absorb(raw.latest))
    }
}

impl fmt::Display for LeapEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.kind {
            LeapKind::Insert => "insert",
            LeapKind::Delete => "delete",
        };
        write!(f, "{kind} at {}", self.at)
    }
}

/// Where the kernel's leap state comes from: the kernel itself ([`KernelLeapSource`]), or a
/// simulation ([`SimLeapSource`]).
pub trait LeapSource: Send + Sync {
    /// The current state. Cheap (one system call), but not for every transaction: the step
    /// guard reads it at most once a second, and at once when it sees a step.
    fn read(&self) -> KernelLeap;
}

/// The kernel, through `adjtimex(2)` with `modes = 0` (read only; needs no privilege).
#[derive(Clone, Copy, Debug, Default)]
pub struct KernelLeapSource;

impl LeapSource for KernelLeapSource {
    fn read(&self) -> KernelLeap {
        // SAFETY: `timex` is plain old data; all-zero is a valid value (modes = 0: read only).
        let mut tx: libc::timex = unsafe { std::mem::zeroed() };
        // SAFETY: `tx` is a valid, writable `timex`; with `modes == 0` the kernel only fills it.
        let code = unsafe { libc::adjtimex(&mut tx) };
        if code < 0 {
            tracing::debug!(error = %std::io::Error::last_os_error(), "adjtimex failed");
            return KernelLeap::unknown();
        }
        #[allow(clippy::useless_conversion)] // `tai` is a c_long on glibc, a c_int on musl
        KernelLeap::from_raw(code, tx.status, i64::from(tx.tai))
    }
}

/// A simulated kernel leap state, shared between clones: the test sets it, the guard reads it.
#[derive(Clone)]
pub struct SimLeapSource {
    state: Arc<Mutex<KernelLeap>>,
}

impl Default for SimLeapSource {
    fn default() -> Self {
        SimLeapSource { state: Arc::new(Mutex::new(KernelLeap::simulated(LeapState::None))) }
    }
}

impl SimLeapSource {
    /// A simulated kernel with no leap scheduled.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets what the kernel reports.
    pub fn set(&self, state: LeapState) {
        *self.state.lock().unwrap_or_else(|e| e.into_inner()) = KernelLeap::simulated(state);
    }
}

impl LeapSource for SimLeapSource {
    fn read(&self) -> KernelLeap {
        *self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 2016-12-31T24:00:00Z, the last leap second so far.
    const L: u64 = 1_483_228_800 * SECOND_NANOS;

    #[test]
    fn policies_parse_and_print() {
        assert_eq!("step".parse::<LeapPolicy>().unwrap(), LeapPolicy::Step);
        assert_eq!("smear".parse::<LeapPolicy>().unwrap(), LeapPolicy::Smear);
        assert_eq!(LeapPolicy::default(), LeapPolicy::Step);
        let e = "slew".parse::<LeapPolicy>().unwrap_err().to_string();
        assert!(e.contains("`step`") && e.contains("`smear`"), "{e}");
        for p in [LeapPolicy::Step, LeapPolicy::Smear] {
            assert_eq!(p.to_string().parse::<LeapPolicy>().unwrap(), p);
        }
    }

    #[test]
    fn the_kernel_answer_is_typed_from_the_return_value_and_the_bits() {
        let k = |code, status| KernelLeap::from_raw(code, status, 37).state;
        assert_eq!(k(libc::TIME_OK, 0), LeapState::None);
        assert_eq!(k(libc::TIME_INS, libc::STA_INS), LeapState::InsertScheduled);
        assert_eq!(k(libc::TIME_DEL, libc::STA_DEL), LeapState::DeleteScheduled);
        assert_eq!(k(libc::TIME_OOP, libc::STA_INS), LeapState::InLeapSecond);
        assert_eq!(k(libc::TIME_WAIT, libc::STA_INS), LeapState::JustHappened);
        // Unsynchronised: the state is hidden behind TIME_ERROR, the bits are not.
        assert_eq!(k(libc::TIME_ERROR, libc::STA_UNSYNC), LeapState::None);
        assert_eq!(
            k(libc::TIME_ERROR, libc::STA_UNSYNC | libc::STA_INS),
            LeapState::InsertScheduled
        );
        assert!(KernelLeap::from_raw(libc::TIME_ERROR, libc::STA_UNSYNC, 0).unsynchronized);
        assert_eq!(k(17, 0), LeapState::Unknown);
        assert_eq!(k(-1, 0), LeapState::Unknown);
    }

    #[test]
    fn this_machines_kernel_answers_sanely() {
        let k = KernelLeapSource.read();
        assert!((0..=5).contains(&k.code), "adjtimex returned {k:?}");
        assert_ne!(k.state, LeapState::Unknown, "{k:?}");
        assert!((0..=100).contains(&k.tai_offset), "{k:?}");
        // Both scheduled at once is not a state the kernel allows.
        assert!(k.status & libc::STA_INS == 0 || k.status & libc::STA_DEL == 0, "{k:?}");
        assert!(!k.to_string().is_empty());
    }

    #[test]
    fn the_event_is_the_next_midnight_or_the_last_one() {
        let before = Timestamp::from_nanos(L - 3600 * SECOND_NANOS);
        let ins = KernelLeap::simulated(LeapState::InsertScheduled).event(before).unwrap();
        assert_eq!(ins, LeapEvent { at: Timestamp::from_nanos(L), kind: LeapKind::Insert });
        // During the repeated second the raw clock reads 23:59:59.x: still the next midnight.
        let oop = Timestamp::from_nanos(L - SECOND_NANOS / 2);
        assert_eq!(KernelLeap::simulated(LeapState::InLeapSecond).event(oop), Some(ins));
        let after = Timestamp::from_nanos(L + 5 * SECOND_NANOS);
        assert_eq!(KernelLeap::simulated(LeapState::JustHappened).event(after), Some(ins));
        assert_eq!(KernelLeap::simulated(LeapState::None).event(after), None);
        assert_eq!(KernelLeap::unknown().event(after), None);
        let del = KernelLeap::simulated(LeapState::DeleteScheduled).event(before).unwrap();
        assert_eq!(del.kind, LeapKind::Delete);
        assert!(ins.window_contains(before));
        assert!(!ins.window_contains(Timestamp::from_nanos(L - 13 * 3600 * SECOND_NANOS)));
    }

    #[test]
    fn the_correction_follows_the_worked_example() {
        let ev = LeapEvent { at: Timestamp::from_nanos(L), kind: LeapKind::Insert };
        let b = L - SECOND_NANOS;
        assert_eq!(ev.correction_nanos(Timestamp::from_nanos(b - 5)), 1_000_000_000);
        assert_eq!(ev.correction_nanos(Timestamp::from_nanos(b)), 1_000_000_000);
        // 100 ms after the step: 1 s × (1 − 0.1 / 86 400), floored.
        let r = Timestamp::from_nanos(b + 100_000_000);
        assert_eq!(ev.correction_nanos(r), 999_998_842);
        assert_eq!(ev.absorb(r).as_nanos(), L + 99_998_842);
        let half = Timestamp::from_nanos(b + DAY_NANOS / 2);
        assert_eq!(ev.correction_nanos(half), 500_000_000);
        let end = Timestamp::from_nanos(b + DAY_NANOS);
        assert_eq!(ev.correction_nanos(end), 0);
        assert!(!ev.absorbing_at(end));
        assert!(ev.absorbing_at(half));
        let del = LeapEvent { at: Timestamp::from_nanos(L), kind: LeapKind::Delete };
        assert_eq!(del.absorb(Timestamp::from_nanos(L)).as_nanos(), L - SECOND_NANOS);
    }

    #[test]
    fn possible_leaps_are_at_the_end_of_june_and_december() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days((L / DAY_NANOS) as i64), (2017, 1, 1));
        let h = 3600 * SECOND_NANOS;
        assert_eq!(
            possible_leap_near(Timestamp::from_nanos(L - 11 * h)),
            Some(Timestamp::from_nanos(L))
        );
        assert_eq!(
            possible_leap_near(Timestamp::from_nanos(L + 11 * h)),
            Some(Timestamp::from_nanos(L))
        );
        // The window runs on after the leap until stepping members have absorbed it (24 h).
        assert_eq!(
            possible_leap_near(Timestamp::from_nanos(L + 23 * h)),
            Some(Timestamp::from_nanos(L))
        );
        assert_eq!(possible_leap_near(Timestamp::from_nanos(L + 25 * h)), None);
        assert_eq!(possible_leap_near(Timestamp::from_nanos(L - 13 * h)), None);
        // 2015-06-30T24:00:00Z, a leap second.
        let june = 1_435_708_800 * SECOND_NANOS;
        assert_eq!(
            possible_leap_near(Timestamp::from_nanos(june - h)),
            Some(Timestamp::from_nanos(june))
        );
        // 2016-03-31T24:00:00Z: not a leap date.
        assert_eq!(possible_leap_near(Timestamp::from_nanos(1_459_468_800 * SECOND_NANOS)), None);
    }

    #[test]
    fn the_absorbed_clock_never_goes_back() {
        for kind in [LeapKind::Insert, LeapKind::Delete] {
            let ev = LeapEvent { at: Timestamp::from_nanos(L), kind };
            let b = ev.base().as_nanos();
            let mut last = 0;
            for r in (b - 3..b + 3).chain((1..2002).map(|i| b + i * 43_200_000_017)) {
                let a = ev.absorb(Timestamp::from_nanos(r)).as_nanos();
                assert!(a >= last, "{kind:?}: absorb({r}) = {a} < {last}");
                last = a;
            }
        }
    }
}
