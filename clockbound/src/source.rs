//! [`ClockSource`]: the one way every boundkv command chooses its clock.
//!
//! | `--clock` / `BOUNDKV_CLOCK` | source |
//! |---|---|
//! | `clockbound` (default) | the ClockBound daemon's segment at `/var/run/clockbound/shm0` |
//! | `clockbound:PATH` | the segment at `PATH` |
//! | `clockbound-v1` | ClockBound 0.1.x's socket at `/run/clockboundd/clockboundd.sock` ([`crate::v1`]) |
//! | `clockbound-v1:SOCKET` | that daemon's socket at `SOCKET` |
//! | `system:BOUND` (e.g. `system:500us`, `system:2ms`, `system:0`) | `CLOCK_REALTIME` ± an *assumed* `BOUND` |
//! | `cluster` or `cluster:RHO` (e.g. `cluster:200ppm`, the default `RHO`) | the Raft leader's clock, measured over the network (`boundkv_consensus::cluster_clock`); servers only |
//!
//! Durations are humantime's: `ns`, `us` (or `µs`), `ms`, `s`, combinations like `1ms 500us`,
//! and a bare `0`.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use crate::clock::Clock;
use crate::error::ClockError;
use crate::guard::StepGuard;
use crate::leap::{KernelLeapSource, LeapPolicy};
use crate::segment::layout::{DEFAULT_SEGMENT_PATH, DEFAULT_VMCLOCK_PATH};
use crate::segment::{ClockBoundClock, ClockBoundOptions};
use crate::system::SystemClock;
use crate::v1::{ClockBoundV1Clock, DEFAULT_V1_SOCKET_PATH};

/// The environment variable that sets the clock source when `--clock` is not given.
pub const CLOCK_ENV: &str = "BOUNDKV_CLOCK";
/// The environment variable that overrides the VMClock device path.
pub const VMCLOCK_ENV: &str = "BOUNDKV_VMCLOCK";

/// Where a process gets its bounded time.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClockSource {
    /// The ClockBound daemon's layout-2 segment.
    ClockBound {
        /// The segment path.
        segment: PathBuf,
    },
    /// ClockBound 0.1.x's datagram socket (protocol v1, [`crate::v1`]).
    ClockBoundV1 {
        /// The daemon's socket path.
        socket: PathBuf,
    },
    /// The system clock with an assumed bound.
    System {
        /// The assumed bound.
        bound: Duration,
    },
    /// The cluster clock: intervals of the Raft leader's monotonic clock, measured by probes
    /// over the peer transport, assuming only that no oscillator drifts faster than `rho_ppm`.
    /// Built by the server around its Raft node; [`ClockSource::open`] refuses it.
    Cluster {
        /// `RHO`, in parts per million.
        rho_ppm: u32,
    },
}

/// The cluster clock's default `RHO`: 200 ppm, four times the 50 ppm ClockBound 2.x's README
/// recommends for the same quantity (`--max-drift-rate`, with chrony's `maxclockerror 50`).
pub const DEFAULT_CLUSTER_RHO_PPM: u32 = 200;

impl Default for ClockSource {
    fn default() -> Self {
        ClockSource::ClockBound { segment: PathBuf::from(DEFAULT_SEGMENT_PATH) }
    }
}

impl ClockSource {
    /// Whether this is the ClockBound source at its default path.
    pub fn is_default_clockbound(&self) -> bool {
        matches!(self, ClockSource::ClockBound { segment } if segment == Path::new(DEFAULT_SEGMENT_PATH))
    }

    /// Opens the source. `vmclock` overrides the VMClock path (default `/dev/vmclock0`). The
    /// guard assumes the default leap policy ([`LeapPolicy::Step`]); see
    /// [`ClockSource::open_with_leap`].
    pub fn open(&self, vmclock: Option<&Path>) -> Result<Arc<dyn Clock>, ClockError> {
        self.open_with_leap(vmclock, LeapPolicy::default())
    }

    /// Opens the source behind a step guard that knows the member's leap policy and reads the
    /// kernel's leap state (see [`crate::leap`]).
    pub fn open_with_leap(
        &self,
        vmclock: Option<&Path>,
        leap: LeapPolicy,
    ) -> Result<Arc<dyn Clock>, ClockError> {
        // Every source is read through a step guard: a reading that disagrees with the clock's
        // own past (a step, a lie that began while running) is never passed on.
        let kernel = Arc::new(KernelLeapSource);
        Ok(match self {
            ClockSource::ClockBound { segment } => Arc::new(
                StepGuard::new(ClockBoundClock::open(ClockBoundOptions {
                    segment_path: segment.clone(),
                    vmclock_path: vmclock
                        .map_or_else(|| PathBuf::from(DEFAULT_VMCLOCK_PATH), Path::to_path_buf),
                })?)
                .with_leap(leap, kernel),
            ),
            ClockSource::ClockBoundV1 { socket } => {
                Arc::new(StepGuard::new(ClockBoundV1Clock::open(socket)?).with_leap(leap, kernel))
            }
            ClockSource::System { bound } => {
                Arc::new(StepGuard::new(SystemClock::new(*bound)).with_leap(leap, kernel))
            }
            ClockSource::Cluster { rho_ppm } => {
                return Err(ClockError::NeedsRaftGroup { rho_ppm: *rho_ppm });
            }
        })
    }
}

/// A `--clock` value that is not one of the forms above.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid clock source {input:?}: {reason}. Use `clockbound`, `clockbound:PATH`, \
     `clockbound-v1`, `clockbound-v1:SOCKET`, `cluster[:RHO]` (for example `cluster:200ppm`) or \
     `system:BOUND` (for example `system:500us`)"
)]
pub struct ParseClockSourceError {
    input: String,
    reason: String,
}

impl FromStr for ClockSource {
    type Err = ParseClockSourceError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err =
            |reason: &str| ParseClockSourceError { input: s.to_string(), reason: reason.into() };
        let (kind, arg) = match s.split_once(':') {
            Some((k, a)) => (k, Some(a)),
            None => (s, None),
        };
        match (kind, arg) {
            ("clockbound", None) => Ok(ClockSource::default()),
            ("clockbound", Some("")) => Err(err("the path after `clockbound:` is empty")),
            ("clockbound", Some(path)) => {
                Ok(ClockSource::ClockBound { segment: PathBuf::from(path) })
            }
            ("clockbound-v1", None) => {
                Ok(ClockSource::ClockBoundV1 { socket: PathBuf::from(DEFAULT_V1_SOCKET_PATH) })
            }
            ("clockbound-v1", Some("")) => Err(err("the path after `clockbound-v1:` is empty")),
            ("clockbound-v1", Some(path)) => {
                Ok(ClockSource::ClockBoundV1 { socket: PathBuf::from(path) })
            }
            ("system", None | Some("")) => Err(err("`system` needs a bound, as in `system:500us`")),
            ("system", Some(bound)) => {
                parse_bound(bound).map(|bound| ClockSource::System { bound }).map_err(|e| err(&e))
            }
            ("cluster", None) => Ok(ClockSource::Cluster { rho_ppm: DEFAULT_CLUSTER_RHO_PPM }),
            ("cluster", Some(rho)) => {
                parse_ppm(rho).map(|rho_ppm| ClockSource::Cluster { rho_ppm }).map_err(|e| err(&e))
            }
            _ => Err(err("unknown kind")),
        }
    }
}

/// `200ppm` or `200` (parts per million), from 1 to 100,000 (10 %).
fn parse_ppm(s: &str) -> Result<u32, String> {
    let digits = s.trim().strip_suffix("ppm").unwrap_or(s.trim()).trim();
    match digits.parse::<u32>() {
        Ok(ppm @ 1..=100_000) => Ok(ppm),
        Ok(ppm) => Err(format!("RHO {ppm} ppm is outside 1..=100000")),
        Err(_) => Err(format!("bad drift {s:?}: expected parts per million, as in `200ppm`")),
    }
}

fn parse_bound(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    humantime::parse_duration(&s.replace('µ', "u")).map_err(|e| format!("bad bound {s:?}: {e}"))
}

impl fmt::Display for ClockSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            s if s.is_default_clockbound() => f.write_str("clockbound"),
            ClockSource::ClockBound { segment } => write!(f, "clockbound:{}", segment.display()),
            ClockSource::ClockBoundV1 { socket } if socket == Path::new(DEFAULT_V1_SOCKET_PATH) => {
                f.write_str("clockbound-v1")
            }
            ClockSource::ClockBoundV1 { socket } => write!(f, "clockbound-v1:{}", socket.display()),
            ClockSource::Cluster { rho_ppm } => write!(f, "cluster:{rho_ppm}ppm"),
            ClockSource::System { bound } => {
                if bound.is_zero() {
                    f.write_str("system:0")
                } else {
                    write!(
                        f,
                        "system:{}",
                        humantime::format_duration(*bound).to_string().replace(' ', "")
                    )
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn the_documented_forms_parse() {
        assert_eq!("clockbound".parse::<ClockSource>().unwrap(), ClockSource::default());
        assert_eq!(
            "clockbound:/tmp/x/shm0".parse::<ClockSource>().unwrap(),
            ClockSource::ClockBound { segment: "/tmp/x/shm0".into() }
        );
        assert_eq!(
            "clockbound-v1".parse::<ClockSource>().unwrap(),
            ClockSource::ClockBoundV1 { socket: DEFAULT_V1_SOCKET_PATH.into() }
        );
        assert_eq!(
            "clockbound-v1:/tmp/d.sock".parse::<ClockSource>().unwrap(),
            ClockSource::ClockBoundV1 { socket: "/tmp/d.sock".into() }
        );
        assert_eq!(
            "cluster".parse::<ClockSource>().unwrap(),
            ClockSource::Cluster { rho_ppm: DEFAULT_CLUSTER_RHO_PPM }
        );
        for text in ["cluster:200ppm", "cluster:200", "cluster: 200 ppm"] {
            assert_eq!(
                text.parse::<ClockSource>().unwrap(),
                ClockSource::Cluster { rho_ppm: 200 },
                "{text}"
            );
        }
        for (text, bound) in [
            ("system:500us", Duration::from_micros(500)),
            ("system:500µs", Duration::from_micros(500)),
            ("system:2ms", Duration::from_millis(2)),
            ("system:0", Duration::ZERO),
            ("system:1s", Duration::from_secs(1)),
            ("system:100ns", Duration::from_nanos(100)),
        ] {
            assert_eq!(
                text.parse::<ClockSource>().unwrap(),
                ClockSource::System { bound },
                "{text}"
            );
        }
    }

    #[test]
    fn bad_forms_say_what_is_accepted() {
        for bad in [
            "",
            "system",
            "system:",
            "system:fast",
            "clockbound:",
            "clockbound-v1:",
            "cluster:",
            "cluster:fast",
            "cluster:0ppm",
            "cluster:200000ppm",
            "ntp",
            "sim:1ms",
        ] {
            let e = bad.parse::<ClockSource>().unwrap_err().to_string();
            assert!(e.contains("system:500us"), "{bad:?}: {e}");
        }
    }

    #[test]
    fn display_round_trips() {
        for text in [
            "clockbound",
            "clockbound:/x/y",
            "clockbound-v1",
            "clockbound-v1:/x/d.sock",
            "system:500us",
            "system:0",
            "system:1ms500us",
            "cluster",
            "cluster:50ppm",
        ] {
            let s: ClockSource = text.parse().unwrap();
            assert_eq!(s.to_string().parse::<ClockSource>().unwrap(), s, "{text}");
        }
    }

    proptest! {
        #[test]
        fn every_system_bound_round_trips(nanos in 0u64..10_000_000_000_000) {
            let s = ClockSource::System { bound: Duration::from_nanos(nanos) };
            prop_assert_eq!(s.to_string().parse::<ClockSource>().unwrap(), s);
        }
    }
}
