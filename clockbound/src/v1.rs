//! [`ClockBoundV1Clock`]: ClockBound's first protocol, a Unix datagram socket (daemon 0.1.x).
//!
//! Before 1.0 the ClockBound daemon (`clockboundd` 0.1.0–0.1.4, 2021–23) published no shared
//! memory. It bound a datagram socket, by default `/run/clockboundd/clockboundd.sock`, and
//! answered three requests: Now, Before and After. boundkv speaks Now, the only one a bounded
//! clock needs (`before`/`after` follow from the interval). `--clock clockbound-v1[:SOCKET]`
//! selects it; like every source it is read behind a [`crate::StepGuard`].
//!
//! # The exchange
//!
//! All integers are big-endian (the daemon and its client use network byte order; the
//! protocol's own description leaves this out).
//!
//! ```text
//! request   [version=1][type=1 Now][0][0]                                        4 bytes
//! response  [version=1][type=1 | 0 Error][F][0][earliest u64][latest u64]       20 bytes
//!           F = 1 when chrony reports "not synchronised" (leap status 3), else 0;
//!           earliest and latest in nanoseconds since the Unix epoch
//! ```
//!
//! A worked example: the daemon's `CLOCK_REALTIME` reads 1 700 000 000.000 000 000 s and chrony's
//! error bound is 50 µs. The answer is
//!
//! ```text
//! 01 01 00 00  17 97 9c fe 36 29 3c b0  17 97 9c fe 36 2a c3 50
//!              earliest = 1 699 999 999 999 950 000 ns   latest = 1 700 000 000 000 050 000 ns
//! ```
//!
//! which becomes the reading `[earliest, latest]`, `Synchronized`. With `F = 1` the same
//! interval is `Unknown` (nothing may be issued from it); with type 0 it is the error
//! [`ClockError::DaemonError`] (the daemon could not poll chrony, or chrony had just restarted).
//!
//! # Why the interval is not widened by the round trip
//!
//! The daemon reads its clock while it builds the answer: at some instant between this client's
//! send and its receive. [`Clock::now`] promises exactly that (true time lay in the interval at
//! some instant between the call and its return), and the layers above account for the rest:
//! commit wait compares `earliest` with a timestamp chosen earlier, and the step guard and the
//! peer clock checks bracket every reading with monotonic reads of their own. A caller that
//! wants "true time now, after the call" widens `latest` by the call's duration itself.
//!
//! # A late answer is never taken for a fresh one
//!
//! Answers carry no request id. If the daemon answered a timed-out request late, that stale
//! answer would wait in the socket and could be read as the next request's: an interval from
//! before the call, which breaks the promise above. So after any failed exchange (a timeout, a
//! short or foreign datagram) the client's socket is closed and the next call binds a new one
//! (an abstract-namespace address, which needs no file and leaves none behind; daemons from
//! 0.1.2 on answer such addresses; its name is unique to this process's lifetime, so a
//! restarted process never inherits answers meant for its predecessor). Before each request,
//! anything already waiting in the socket (a daemon that answered one request twice) is
//! discarded. Calls are serialised by a mutex: one request in flight. Abstract addresses live in
//! the network namespace: boundkv and the daemon must share one.
//!
//! # What is trusted
//!
//! The daemon's bound, as the segment reader trusts the segment's. (The 0.1.x daemon grows its
//! bound with the time since chrony's last update in whole seconds, so within a second of an
//! update its bound is low by that fraction of a second times chrony's frequency error: a few
//! microseconds at most. The step guard and the peer clock checks stand behind every source.)
//!
//! # Every answer's defined outcome
//!
//! | the daemon... | `now()` |
//! |---|---|
//! | is absent (no socket file, or nothing bound to it) | [`ClockError::SocketMissing`] |
//! | does not answer within the timeout (100 ms) | [`ClockError::Io`] (`recv`, timed out); next call on a new socket |
//! | does not read its socket, whose queue is full | [`ClockError::Io`] (`send`, timed out) |
//! | answers type 0 (with or without a body) | [`ClockError::DaemonError`] |
//! | answers `F = 1` | the interval, `Unknown` |
//! | answers `F = 0` | the interval, `Synchronized` |
//! | answers a request twice | the copy is discarded before the next request |
//! | answers fewer or more than 20 bytes, a version other than 1, a type other than 0 or 1, `F` other than 0 or 1, a non-zero reserved byte, `earliest` 0, or `earliest > latest` | [`ClockError::ResponseMalformed`] naming what |
//!
//! The shared-memory reader's other states (`FreeRunning`, `Disrupted`, a stale daemon) have no
//! counterpart here: the 0.1.x daemon had no holdover and no VMClock, and a silent one is a
//! timeout.

use std::io;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::clock::Clock;
use crate::error::ClockError;
use crate::time::{ClockReading, ClockStatus, TimeInterval, Timestamp};

/// Where daemons 0.1.x bind their socket (systemd's `RuntimeDirectory=clockboundd`).
pub const DEFAULT_V1_SOCKET_PATH: &str = "/run/clockboundd/clockboundd.sock";

/// How long a call waits for the daemon's answer. The daemon answers from memory in
/// microseconds; a tenth of a second is a daemon that is not there.
pub const V1_TIMEOUT: Duration = Duration::from_millis(100);

const VERSION: u8 = 1;
const TYPE_ERROR: u8 = 0;
const TYPE_NOW: u8 = 1;
const RESPONSE_LEN: usize = 20;

/// ClockBound 0.1.x's socket, read with its Now request. See the [module](self) docs.
pub struct ClockBoundV1Clock {
    daemon: PathBuf,
    timeout: Duration,
    /// The connected socket, `None` after a failed exchange (the next call binds a new one).
    socket: Mutex<Option<UnixDatagram>>,
}

impl ClockBoundV1Clock {
    /// A client of the daemon at `daemon`. Fails with [`ClockError::SocketMissing`] when no
    /// daemon is there; the first reading is taken here, so a daemon that answers nonsense
    /// fails the open too.
    pub fn open(daemon: impl Into<PathBuf>) -> Result<Self, ClockError> {
        Self::open_with_timeout(daemon, V1_TIMEOUT)
    }

    /// As [`ClockBoundV1Clock::open`], with a timeout other than [`V1_TIMEOUT`] (tests).
    pub fn open_with_timeout(
        daemon: impl Into<PathBuf>,
        timeout: Duration,
    ) -> Result<Self, ClockError> {
        let clock = ClockBoundV1Clock { daemon: daemon.into(), timeout, socket: Mutex::new(None) };
        clock.now()?;
        Ok(clock)
    }

    /// The daemon's socket path.
    pub fn daemon(&self) -> &Path {
        &self.daemon
    }

    fn io_error(&self, op: &str, e: &io::Error) -> ClockError {
        ClockError::Io {
            op: op.into(),
            path: self.daemon.clone(),
            message: e.to_string(),
            errno: e.raw_os_error(),
        }
    }

    /// What a failed `connect`, `send` or `recv` means: no daemon there, a timeout (`waiting`
    /// says for what), or another I/O error.
    fn socket_error(&self, op: &str, waiting: &str, e: &io::Error) -> ClockError {
        match e.kind() {
            io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused => {
                ClockError::SocketMissing { path: self.daemon.clone() }
            }
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => ClockError::Io {
                op: format!("{op} (timed out after {:?})", self.timeout),
                path: self.daemon.clone(),
                message: waiting.into(),
                errno: e.raw_os_error(),
            },
            _ => self.io_error(op, e),
        }
    }

    /// A socket bound to a fresh abstract address, connected to the daemon.
    ///
    /// The name is unique to this process's lifetime as well as to the call: a pid alone comes
    /// back (a restarted container's process is pid 1 again), and a daemon that stalled could
    /// still hold requests from a dead process's socket of the same name, whose late answers
    /// would reach this one.
    fn connect(&self) -> Result<UnixDatagram, ClockError> {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        static PROCESS: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
        let process = *PROCESS.get_or_init(|| {
            // Boot-time nanoseconds at first use, with the pid: distinct across restarts.
            crate::sys::monotonic_raw_nanos() as u64 ^ (u64::from(std::process::id()) << 48)
        });
        let name = format!(
            "boundkv-clockbound-v1-{}-{process:016x}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let address = SocketAddr::from_abstract_name(name.as_bytes())
            .map_err(|e| self.io_error("bind", &e))?;
        let socket = UnixDatagram::bind_addr(&address).map_err(|e| self.io_error("bind", &e))?;
        socket.set_read_timeout(Some(self.timeout)).map_err(|e| self.io_error("setsockopt", &e))?;
        // A hung daemon's full queue must not block a send (and every caller behind the mutex)
        // for ever.
        socket
            .set_write_timeout(Some(self.timeout))
            .map_err(|e| self.io_error("setsockopt", &e))?;
        socket.connect(&self.daemon).map_err(|e| self.socket_error("connect", "", &e))?;
        Ok(socket)
    }

    /// One Now exchange on `socket`: the answer's buffer and length.
    fn exchange(
        &self,
        socket: &UnixDatagram,
    ) -> Result<([u8; RESPONSE_LEN + 1], usize), ClockError> {
        // Anything already waiting answers an earlier request (a daemon that answered twice):
        // it is not this call's answer. One non-blocking receive each, until there is none.
        let mut buf = [0u8; RESPONSE_LEN + 1];
        while recv_waiting(socket, &mut buf) {}
        socket.send(&[VERSION, TYPE_NOW, 0, 0]).map_err(|e| {
            self.socket_error("send", "the daemon's queue is full: it is not reading", &e)
        })?;
        // One byte more than an answer can be, so that a long datagram is seen as long.
        let n = socket
            .recv(&mut buf)
            .map_err(|e| self.socket_error("recv", "the daemon did not answer", &e))?;
        Ok((buf, n))
    }
}

/// Receives a datagram already waiting in `socket` without blocking (`MSG_DONTWAIT`): whether
/// there was one.
fn recv_waiting(socket: &UnixDatagram, buf: &mut [u8]) -> bool {
    use std::os::fd::AsRawFd;
    // SAFETY: `buf` is valid for writes of `buf.len()` bytes and the descriptor is open for the
    // duration of the call (borrowed from `socket`).
    let n = unsafe {
        libc::recv(socket.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), libc::MSG_DONTWAIT)
    };
    n >= 0
}

/// Decodes a Now answer (see the module docs' table). `daemon` names the socket in errors.
pub fn decode_now_response(daemon: &Path, answer: &[u8]) -> Result<ClockReading, ClockError> {
    let malformed = |reason: String| ClockError::ResponseMalformed {
        path: daemon.to_path_buf(),
        reason: format!("{reason} (answer {})", hex(answer)),
    };
    if answer.len() < 4 {
        return Err(malformed(format!("{} bytes, shorter than the 4-byte header", answer.len())));
    }
    if answer[0] != VERSION {
        return Err(malformed(format!("protocol version {}, expected 1", answer[0])));
    }
    match answer[1] {
        TYPE_NOW => {}
        TYPE_ERROR => {
            let unsynchronized = if answer[2] == 1 { "; chrony not synchronised" } else { "" };
            return Err(ClockError::DaemonError {
                path: daemon.to_path_buf(),
                reason: format!(
                    "the daemon answered Error (its last poll of chrony failed, chrony has just \
                     restarted, or chrony's reference time is in the future){unsynchronized}"
                ),
            });
        }
        other => {
            return Err(malformed(format!("response type {other}, expected 1 (Now) or 0 (Error)")));
        }
    }
    if answer.len() != RESPONSE_LEN {
        return Err(malformed(format!("{} bytes, a Now answer has 20", answer.len())));
    }
    let status = match answer[2] {
        0 => ClockStatus::Synchronized,
        1 => ClockStatus::Unknown,
        f => return Err(malformed(format!("flags byte {f}, expected 0 or 1"))),
    };
    if answer[3] != 0 {
        return Err(malformed(format!("reserved byte {}, expected 0", answer[3])));
    }
    let word = |at: usize| {
        u64::from_be_bytes(answer[at..at + 8].try_into().expect("8 bytes of a 20-byte answer"))
    };
    let (earliest, latest) = (word(4), word(12));
    if earliest == 0 {
        return Err(malformed("earliest is 0".into()));
    }
    if earliest > latest {
        return Err(malformed(format!("earliest {earliest} ns is after latest {latest} ns")));
    }
    Ok(ClockReading {
        interval: TimeInterval::new(Timestamp::from_nanos(earliest), Timestamp::from_nanos(latest)),
        status,
    })
}

/// Encodes a Now answer as a 0.1.x daemon sends it (for [`V1TestDaemon`] and tests).
pub fn encode_now_response(earliest: u64, latest: u64, unsynchronized: bool) -> [u8; 20] {
    let mut out = [0u8; RESPONSE_LEN];
    out[..4].copy_from_slice(&[VERSION, TYPE_NOW, u8::from(unsynchronized), 0]);
    out[4..12].copy_from_slice(&earliest.to_be_bytes());
    out[12..20].copy_from_slice(&latest.to_be_bytes());
    out
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(" ")
}

impl Clock for ClockBoundV1Clock {
    fn now(&self) -> Result<ClockReading, ClockError> {
        let mut slot = self.socket.lock().unwrap_or_else(|e| e.into_inner());
        let socket = match slot.take() {
            Some(s) => s,
            None => self.connect()?,
        };
        let (answer, n) = self.exchange(&socket)?;
        let reading = decode_now_response(&self.daemon, &answer[..n]);
        // Keep the socket only after a clean exchange: after anything else a late or foreign
        // datagram may be waiting in it (see the module docs).
        if reading.is_ok() {
            *slot = Some(socket);
        }
        reading
    }

    fn describe(&self) -> String {
        format!("clockbound-v1 socket {} (ClockBound 0.1.x protocol)", self.daemon.display())
    }
}

/// What a [`V1TestDaemon`] answers to the next requests.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum V1Answer {
    /// `CLOCK_REALTIME` ± `bound`, as the real daemon computes it; `unsynchronized` sets `F`.
    Interval {
        /// The half-width of the interval.
        bound: Duration,
        /// Whether chrony is "not synchronised" (`F = 1`).
        unsynchronized: bool,
    },
    /// The Error answer: 20 bytes (as the daemon sends to a Now request) or the bare header.
    Error {
        /// Whether the 16-byte body is appended.
        with_body: bool,
    },
    /// These exact bytes.
    Raw(Vec<u8>),
    /// No answer at all.
    Silent,
}

/// A datagram server that speaks the 0.1.x daemon's side of the protocol, built from its
/// description (`../shared/docs/clockbound.md`, section 1), for tests and for machines where
/// the real 0.1.x daemon cannot run. It answers every Now request as its current [`V1Answer`]
/// says, on a thread of its own, until dropped.
pub struct V1TestDaemon {
    path: PathBuf,
    answer: Arc<Mutex<V1Answer>>,
    requests: Arc<AtomicU64>,
    stop: Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl V1TestDaemon {
    /// Binds `path` (removing a stale file there first) and starts answering `answer`.
    pub fn start(path: impl Into<PathBuf>, answer: V1Answer) -> io::Result<Self> {
        let path = path.into();
        let _ = std::fs::remove_file(&path);
        let socket = UnixDatagram::bind(&path)?;
        socket.set_read_timeout(Some(Duration::from_millis(20)))?;
        let answer = Arc::new(Mutex::new(answer));
        let requests = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let thread = {
            let (answer, requests, stop) = (answer.clone(), requests.clone(), stop.clone());
            std::thread::Builder::new().name("clockbound-v1-test-daemon".into()).spawn(
                move || {
                    let mut buf = [0u8; 12];
                    while !stop.load(Ordering::Relaxed) {
                        let Ok((n, from)) = socket.recv_from(&mut buf) else { continue };
                        requests.fetch_add(1, Ordering::Relaxed);
                        let reply: Vec<u8> = if n != 4 || buf[..2] != [VERSION, TYPE_NOW] {
                            // The real daemon's answer to a request it cannot parse.
                            vec![VERSION, TYPE_ERROR, 0, 0]
                        } else {
                            let a = answer.lock().unwrap_or_else(|e| e.into_inner()).clone();
                            match a {
                                V1Answer::Interval { bound, unsynchronized } => {
                                    let now =
                                        Timestamp::from_system_time(std::time::SystemTime::now())
                                            .as_nanos();
                                    let b = bound.as_nanos() as u64;
                                    encode_now_response(
                                        now.saturating_sub(b),
                                        now.saturating_add(b),
                                        unsynchronized,
                                    )
                                    .to_vec()
                                }
                                V1Answer::Error { with_body: true } => {
                                    let mut r = encode_now_response(1, 2, false).to_vec();
                                    r[1] = TYPE_ERROR;
                                    r
                                }
                                V1Answer::Error { with_body: false } => {
                                    vec![VERSION, TYPE_ERROR, 0, 0]
                                }
                                V1Answer::Raw(bytes) => bytes,
                                V1Answer::Silent => continue,
                            }
                        };
                        send_to_peer(&socket, &reply, &from);
                    }
                },
            )?
        };
        Ok(V1TestDaemon { path, answer, requests, stop, thread: Some(thread) })
    }

    /// The socket path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Answers `answer` from now on.
    pub fn set(&self, answer: V1Answer) {
        *self.answer.lock().unwrap_or_else(|e| e.into_inner()) = answer;
    }

    /// How many requests it has received.
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }
}

/// Sends to a client's address: a path or, since 0.1.2, an abstract name.
fn send_to_peer(socket: &UnixDatagram, reply: &[u8], to: &SocketAddr) {
    let _ = if let Some(path) = to.as_pathname() {
        socket.send_to(reply, path)
    } else {
        socket.send_to_addr(reply, to)
    };
}

impl Drop for V1TestDaemon {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let _ = std::fs::remove_file(&self.path);
    }
}
