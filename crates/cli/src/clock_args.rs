//! `--clock SOURCE` and `--vmclock PATH`: how every command chooses its clock, and the one place
//! that explains what to do when the default ClockBound segment is missing.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::anyhow;
use boundkv_clockbound::{
    CLOCK_ENV, Clock, ClockBoundClock, ClockBoundOptions, ClockBoundV1Clock, ClockError,
    ClockSource, KernelLeapSource, LeapPolicy, StepGuard, SystemClock, VMCLOCK_ENV,
    segment::layout::DEFAULT_VMCLOCK_PATH,
};
use clap::Args;

/// The clock options shared by every command.
#[derive(Args, Debug, Clone)]
pub(crate) struct ClockArgs {
    /// Where bounded time comes from: `clockbound` (the ClockBound daemon's segment at
    /// /var/run/clockbound/shm0), `clockbound:PATH`, `clockbound-v1` (a ClockBound 0.1.x daemon's
    /// socket at /run/clockboundd/clockboundd.sock), `clockbound-v1:SOCKET`, `cluster[:RHO]`
    /// (servers only: the Raft leader's clock, measured over the network, assuming only that no
    /// machine's oscillator drifts faster than RHO, default `cluster:200ppm`; what `boundkv up`
    /// uses where no daemon runs), or `system:BOUND` (the system clock with an ASSUMED bound,
    /// e.g. `system:500us`; for an embedded database without a daemon).
    #[arg(long, global = true, env = CLOCK_ENV, default_value = "clockbound", value_name = "SOURCE")]
    pub(crate) clock: ClockSource,

    /// The VMClock device checked for disruptions when the ClockBound segment asks for it.
    #[arg(long, global = true, env = VMCLOCK_ENV, default_value = DEFAULT_VMCLOCK_PATH, value_name = "PATH")]
    pub(crate) vmclock: PathBuf,

    /// How this machine's clock handles a leap second: `step` (the kernel steps the clock at
    /// the leap: a default Linux kernel with chrony or ntpd; boundkv's step guard then absorbs
    /// the second over 24 h) or `smear` (the time source smears it: AWS Time Sync, Google).
    /// Every member of a cluster must say the same; `serve` records it in the membership.
    #[arg(
        long,
        global = true,
        env = "BOUNDKV_LEAP",
        default_value = "step",
        value_name = "POLICY"
    )]
    pub(crate) leap: LeapPolicy,
}

/// The environment variable behind `--leap`.
pub(crate) const LEAP_ENV: &str = "BOUNDKV_LEAP";

/// An opened clock: the trait object every layer uses (behind a step guard), plus the concrete ClockBound reader when
/// that is the source (for commands that show the segment itself).
pub(crate) struct OpenedClock {
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) clockbound: Option<Arc<ClockBoundClock>>,
    /// The source without its step guard: only for `serve --unsafe-no-step-guard`, a mutant.
    pub(crate) unguarded: Arc<dyn Clock>,
}

impl ClockArgs {
    /// Opens the chosen source, turning a missing default segment into advice.
    pub(crate) fn open(&self) -> anyhow::Result<OpenedClock> {
        self.open_recording_leaps(None)
    }

    /// As [`ClockArgs::open`]; the step guard remembers a leap it is absorbing in `leap_record`
    /// (a server's data directory), so that a restart inside the absorption resumes it.
    pub(crate) fn open_recording_leaps(
        &self,
        leap_record: Option<&Path>,
    ) -> anyhow::Result<OpenedClock> {
        let guard = |c: Arc<dyn Clock>| {
            let g = StepGuard::new(c).with_leap(self.leap, Arc::new(KernelLeapSource));
            let g = match leap_record {
                Some(path) => g.with_leap_record(path),
                None => g,
            };
            Arc::new(g) as Arc<dyn Clock>
        };
        match &self.clock {
            ClockSource::ClockBound { segment } => {
                let reader = ClockBoundClock::open(ClockBoundOptions {
                    segment_path: segment.clone(),
                    vmclock_path: self.vmclock.clone(),
                })
                .map_err(|e| self.explain(e))?;
                let reader = Arc::new(reader);
                // As `ClockSource::open` does: every reading through a step guard.
                let clock = guard(reader.clone());
                Ok(OpenedClock { clock, clockbound: Some(reader.clone()), unguarded: reader })
            }
            ClockSource::ClockBoundV1 { socket } => {
                let reader: Arc<dyn Clock> = Arc::new(ClockBoundV1Clock::open(socket)?);
                Ok(OpenedClock {
                    clock: guard(reader.clone()),
                    clockbound: None,
                    unguarded: reader,
                })
            }
            ClockSource::Cluster { rho_ppm } => {
                Err(anyhow!(ClockError::NeedsRaftGroup { rho_ppm: *rho_ppm }))
            }
            ClockSource::System { bound } => {
                // One source (its start-up warning once), guarded and unguarded.
                let system = Arc::new(SystemClock::new(*bound));
                Ok(OpenedClock {
                    clock: guard(system.clone()),
                    clockbound: None,
                    unguarded: system,
                })
            }
        }
    }

    fn explain(&self, e: ClockError) -> anyhow::Error {
        match e {
            ClockError::SegmentMissing { path } if self.clock.is_default_clockbound() => anyhow!(
                "no ClockBound daemon on this machine: {} does not exist.\n\n\
                 boundkv takes its true-time bounds from the AWS ClockBound daemon by default. \
                 Either\n\
                 \x20 - install and start the daemon (it needs chrony; see \
                 docs/architecture/clock.md, \"Installing ClockBound\"), or\n\
                 \x20 - for a cluster (`serve`, `up`), keep the cluster's own clock, measured over \
                 the network from the Raft leader's (`boundkv up` does this by itself):\n\
                 \x20     boundkv --clock cluster serve ...\n\
                 \x20 - run on the system clock with a bound you assert, which boundkv labels as \
                 an assumption:\n\
                 \x20     boundkv --clock system:500us ...    (or export {CLOCK_ENV}=system:500us)",
                path.display()
            ),
            other => anyhow!(other),
        }
    }
}
