//! `boundkv clock`: a look at the clock, for people.

use std::io::{IsTerminal, Write};
use std::process::ExitCode;
use std::time::Duration;

use boundkv_clockbound::{ClockPolicy, ClockStatus, LeapReport, monotonic_coarse_nanos};
use clap::Args;
use serde::Serialize;

use boundkv_clockbound::ClockSource;

use crate::clock_args::{ClockArgs, OpenedClock};
use crate::data_args::DataArgs;
use crate::fmt;
use crate::target::{ClusterArgs, Target};

/// Options of `boundkv clock`.
#[derive(Args, Debug)]
pub(crate) struct ClockCommand {
    /// Keep refreshing the display (Ctrl-C to stop).
    #[arg(long)]
    watch: bool,

    /// Time between refreshes with --watch (at least 10ms).
    #[arg(long, default_value = "1s", value_parser = parse_interval, value_name = "DURATION")]
    interval: Duration,

    /// Stop after this many readings (with --watch; default: until interrupted).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    count: Option<u64>,

    /// Print JSON, one object per reading.
    #[arg(long)]
    json: bool,
}

/// One look at the clock, as printed.
#[derive(Serialize)]
struct Sample {
    source: String,
    status: Option<ClockStatus>,
    usable: bool,
    problem: Option<String>,
    earliest: Option<String>,
    latest: Option<String>,
    earliest_ns: Option<u64>,
    latest_ns: Option<u64>,
    bound_ns: Option<u64>,
    segment: Option<SegmentState>,
    /// The leap policy, the kernel's leap state and a leap being absorbed.
    leap: Option<LeapReport>,
}

/// The raw state of a ClockBound segment.
#[derive(Serialize)]
struct SegmentState {
    path: String,
    generation: u16,
    stored_status: ClockStatus,
    age_ns: i64,
    bound_at_as_of_ns: u64,
    max_drift_ppb: u32,
    disruption_check: bool,
}

impl ClockCommand {
    pub(crate) fn run(
        &self,
        args: &ClockArgs,
        cluster: &ClusterArgs,
        data: &DataArgs,
    ) -> anyhow::Result<ExitCode> {
        if let ClockSource::Cluster { .. } = args.clock {
            // The cluster clock lives in the nodes: show what each of them reads.
            let c = Target::cluster_only(cluster, data, "clock --clock cluster")?;
            return crate::cmd::cluster::print_clocks(&c);
        }
        let opened = args.open()?;
        let policy = ClockPolicy::default();
        let redraw = self.watch && !self.json && std::io::stdout().is_terminal();
        let mut out = std::io::stdout().lock();
        let mut drawn_lines = 0;
        let mut taken = 0u64;
        loop {
            let sample = sample(&opened, &policy);
            taken += 1;
            if self.json {
                writeln!(out, "{}", serde_json::to_string(&sample)?)?;
            } else {
                let text = render(&sample);
                if redraw && drawn_lines > 0 {
                    write!(out, "\x1b[{drawn_lines}A\x1b[J")?;
                } else if drawn_lines > 0 {
                    writeln!(out)?;
                }
                write!(out, "{text}")?;
                drawn_lines = text.lines().count();
            }
            out.flush()?;
            let done = !self.watch || self.count.is_some_and(|n| taken >= n);
            if done {
                return Ok(if sample.usable { ExitCode::SUCCESS } else { ExitCode::from(1) });
            }
            std::thread::sleep(self.interval);
        }
    }
}

fn parse_interval(s: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(s).map_err(|e| e.to_string())?;
    if d < Duration::from_millis(10) {
        return Err(format!("{s} is too short; use 10ms or more"));
    }
    Ok(d)
}

fn sample(opened: &OpenedClock, policy: &ClockPolicy) -> Sample {
    // One read gives both the interval and the segment state it was computed from.
    let (answer, segment) = match &opened.clockbound {
        Some(cb) => match cb.now_with_snapshot() {
            Ok((reading, generation, snap)) => (
                Ok(reading),
                Some(SegmentState {
                    path: cb.options().segment_path.display().to_string(),
                    generation,
                    stored_status: snap.status,
                    age_ns: monotonic_coarse_nanos() - snap.as_of_nanos,
                    bound_at_as_of_ns: snap.bound_nanos,
                    max_drift_ppb: snap.max_drift_ppb,
                    disruption_check: snap.disruption_support,
                }),
            ),
            Err(e) => (Err(e), None),
        },
        None => (opened.clock.now(), None),
    };
    let checked = policy.check(answer.clone());
    let reading = answer.as_ref().ok();
    Sample {
        source: opened.clock.describe(),
        status: reading.map(|r| r.status),
        usable: checked.is_ok(),
        problem: checked.err().map(|u| u.to_string()),
        earliest: reading.map(|r| r.earliest().to_string()),
        latest: reading.map(|r| r.latest().to_string()),
        earliest_ns: reading.map(|r| r.earliest().as_nanos()),
        latest_ns: reading.map(|r| r.latest().as_nanos()),
        bound_ns: reading.map(|r| r.bound().as_nanos() as u64),
        segment,
        leap: opened.clock.leap_report(),
    }
}

fn render(s: &Sample) -> String {
    let mut t = format!("source    {}\n", s.source);
    match (&s.status, &s.problem) {
        (Some(status), None) => t += &format!("status    {status} (usable)\n"),
        (Some(status), Some(p)) => t += &format!("status    {status} (NOT usable: {p})\n"),
        (None, Some(p)) => t += &format!("status    unavailable: {p}\n"),
        (None, None) => {}
    }
    if let (Some(e), Some(l), Some(b)) = (&s.earliest, &s.latest, s.bound_ns) {
        t += &format!(
            "earliest  {e}\nlatest    {l}\nbound     ±{}\n",
            fmt::duration(Duration::from_nanos(b))
        );
    }
    if let Some(seg) = &s.segment {
        t += &format!(
            "segment   generation {}, written {} ago with bound {} and status {}, drift {} ppb, \
             VMClock check {}\n",
            seg.generation,
            fmt::duration(Duration::from_nanos(seg.age_ns.max(0) as u64)),
            fmt::duration(Duration::from_nanos(seg.bound_at_as_of_ns)),
            seg.stored_status,
            seg.max_drift_ppb,
            if seg.disruption_check { "on" } else { "off" },
        );
    }
    if let Some(leap) = &s.leap {
        t += &format!("leap      {leap}\n");
    }
    t
}
