//! `boundkv-sim`: runs boundkv's deterministic simulator over a range of seeds.
//!
//! ```text
//! boundkv-sim --seeds 1..300 --duration 30s          # what CI runs (a few minutes on 2 cores)
//! boundkv-sim --seeds 1..100000 --jobs 2             # a soak
//! boundkv-sim --seed 4711 --trace                    # replay one seed, printing its trace
//! boundkv-sim --seeds 1..300 --mutation no-commit-wait --expect-failure
//! ```
//!
//! Each seed builds a cluster, runs clients and a nemesis on simulated time, then checks
//! liveness, agreement between replicas and the history (see `boundkv_sim::run`). A seed
//! replays exactly: the same seed prints the same trace hash on every run and every machine of
//! the same build. A failing seed prints its fault schedule, its anomalies and the end of its
//! trace; `--seed N --trace` replays the whole story.

use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use boundkv_clockbound::ClockSource;
use clap::Parser;

use boundkv_sim::run::{Mutation, RunOptions, RunReport, ScenarioChoice, run_seed};
use boundkv_sim::scenario::Scenario;
use boundkv_sim::workload::Workload;
use boundkv_tests::check::Validity;

#[derive(Parser, Debug)]
#[command(
    name = "boundkv-sim",
    about = "Runs whole boundkv clusters on simulated time, network, disks and clocks, one seed at a time",
    long_about = "Runs whole boundkv clusters (the real Raft node, replica and MVCC code) inside a \
                  deterministic scheduler: one thread, virtual time, and one seed that decides every \
                  message delay, fault and client choice. Every seed is checked for liveness after \
                  healing, agreement between replicas, and the consistency of the recorded history."
)]
struct Args {
    /// Seeds to run: `A..B` (B excluded) or a single number.
    #[arg(long, default_value = "1..51", conflicts_with = "seed")]
    seeds: String,
    /// Run this one seed (same as `--seeds N..N+1`).
    #[arg(long)]
    seed: Option<u64>,
    /// Simulated time the clients and the nemesis run, per seed.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// The workload (`register`, `append`, `bank`); by default each seed chooses.
    #[arg(long)]
    workload: Option<String>,
    /// Client tasks per run.
    #[arg(long, default_value_t = 4)]
    clients: usize,
    /// Print every seed's trace as it runs (use with `--seed`).
    #[arg(long)]
    trace: bool,
    /// Add the clock faults boundkv does not survive yet (a clock outside its bound, a 1 s step back).
    #[arg(long)]
    unsafe_clocks: bool,
    /// Plant a bug: `no-commit-wait`, `no-lease-check`, `no-step-guard`, `no-peer-checks`,
    /// `no-peer-widening`, `no-read-floor`, `raw-lease-clock` or `no-leap-absorb`; with
    /// `--cluster-clock`, `cluster-no-term-rule`, `cluster-lower-edge`,
    /// `cluster-no-round-trip` or `cluster-never-convict`.
    #[arg(long)]
    mutation: Option<String>,
    /// Succeed only if some seed fails (for mutation checks): stops at the first failing seed.
    #[arg(long)]
    expect_failure: bool,
    /// Inject no faults.
    #[arg(long)]
    no_faults: bool,
    /// Run without peer clock checks (as an embedded database does): the step guard and the read
    /// floor are then a clock's only defence, which the `no-step-guard` and `no-read-floor`
    /// mutations need to be seen (with the checks, readings widened to what the peers verify
    /// cover a step too).
    #[arg(long)]
    no_peer_clock_checks: bool,
    /// The targeted scenario each seed opens with: `drawn` (a quarter of the seeds draw one),
    /// `none`, or one of `lease-handover`, `snapshot-over-proposals`, `dedup-across-gc`,
    /// `clock-step`, `clock-lie-at-restart`, `small-clock-lie`, `read-floor`, `lease-clock-step`
    /// (and, not drawn, `leap-second`; under `--cluster-clock` only `cluster-restart` and
    /// `cluster-bad-oscillator` are drawn).
    #[arg(long, default_value = "drawn")]
    scenario: String,
    /// Run every node on the cluster clock (`--clock cluster:RHO`, e.g. `200ppm`), each on a
    /// monotonic clock drifting at a rate the seed draws within ±RHO; every reading is checked
    /// against the reference of its term.
    #[arg(long, value_name = "RHO")]
    cluster_clock: Option<String>,
    /// Seeds run in parallel (each on its own thread, each deterministic).
    #[arg(long, default_value_t = 2)]
    jobs: usize,
}

fn parse_seeds(s: &str) -> anyhow::Result<Range<u64>> {
    if let Some((a, b)) = s.split_once("..") {
        let a: u64 = a.parse().context("the first seed")?;
        let b: u64 = b.parse().context("the end seed")?;
        if b <= a {
            bail!("empty seed range {s}");
        }
        Ok(a..b)
    } else {
        let a: u64 = s.parse().context("a seed")?;
        Ok(a..a + 1)
    }
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let seeds = match args.seed {
        Some(s) => s..s + 1,
        None => parse_seeds(&args.seeds)?,
    };
    let workload = match &args.workload {
        Some(w) => Some(Workload::from_name(w).with_context(|| format!("unknown workload {w}"))?),
        None => None,
    };
    let mutation = match args.mutation.as_deref() {
        None => None,
        Some(m) => match Mutation::from_name(m) {
            Some(m) => Some(m),
            None => {
                let names: Vec<&str> = Mutation::ALL.iter().map(|m| m.name()).collect();
                bail!("unknown mutation {m} ({})", names.join(", "))
            }
        },
    };
    let scenario = match args.scenario.as_str() {
        "drawn" => ScenarioChoice::Drawn,
        "none" => ScenarioChoice::None,
        name => ScenarioChoice::This(
            Scenario::EVERY
                .into_iter()
                .find(|s| s.name() == name)
                .with_context(|| format!("unknown scenario {name}"))?,
        ),
    };
    if args.trace {
        tracing_subscriber::fmt().with_env_filter("info").with_target(false).init();
    }
    let base = RunOptions {
        duration: args.duration,
        workload,
        clients: args.clients,
        unsafe_clocks: args.unsafe_clocks,
        mutation,
        echo_trace: args.trace,
        no_faults: args.no_faults,
        scenario,
        no_peer_clock_checks: args.no_peer_clock_checks,
        cluster_clock: match args.cluster_clock.as_deref() {
            None => None,
            Some(rho) => match format!("cluster:{rho}").parse::<ClockSource>()? {
                ClockSource::Cluster { rho_ppm } => Some(rho_ppm),
                other => bail!("--cluster-clock {rho}: not a drift ({other})"),
            },
        },
        ..RunOptions::default()
    };
    let total = seeds.end - seeds.start;
    let next = Arc::new(AtomicU64::new(seeds.start));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reports: Arc<Mutex<Vec<RunReport>>> = Arc::new(Mutex::new(Vec::new()));
    let started = Instant::now();
    let workers: Vec<_> = (0..args.jobs.max(1))
        .map(|_| {
            let (next, stop, reports, base) =
                (next.clone(), stop.clone(), reports.clone(), base.clone());
            let (end, expect_failure) = (seeds.end, args.expect_failure);
            std::thread::spawn(move || {
                loop {
                    if stop.load(Ordering::Relaxed) {
                        return;
                    }
                    let seed = next.fetch_add(1, Ordering::Relaxed);
                    if seed >= end {
                        return;
                    }
                    let report = run_seed(&RunOptions { seed, ..base.clone() });
                    let failed = report.valid == Validity::Invalid;
                    if failed || !expect_failure {
                        println!("{}", report.summary());
                    }
                    if failed && !expect_failure {
                        print_failure(&report);
                    }
                    if failed && expect_failure {
                        stop.store(true, Ordering::Relaxed);
                    }
                    reports.lock().unwrap_or_else(|e| e.into_inner()).push(report);
                }
            })
        })
        .collect();
    for w in workers {
        let _ = w.join();
    }
    let wall = started.elapsed();
    let reports = reports.lock().unwrap_or_else(|e| e.into_inner());
    let failed: Vec<u64> =
        reports.iter().filter(|r| r.valid == Validity::Invalid).map(|r| r.seed).collect();
    let unknown = reports.iter().filter(|r| r.valid == Validity::Unknown).count();
    let simulated: f64 = reports.iter().map(|r| r.simulated.as_secs_f64()).sum();
    let ok: usize = reports.iter().map(|r| r.ok).sum();
    println!(
        "{} of {total} seeds run in {:.1}s wall: {} valid, {} invalid, {unknown} unknown; {ok} ops ok; \
         {:.0} simulated s ({:.1} simulated s per wall s, {:.0} seeds/min)",
        reports.len(),
        wall.as_secs_f64(),
        reports.len() - failed.len() - unknown,
        failed.len(),
        simulated,
        simulated / wall.as_secs_f64(),
        reports.len() as f64 / wall.as_secs_f64() * 60.0,
    );
    for scenario in Scenario::EVERY {
        let drawn: Vec<&RunReport> =
            reports.iter().filter(|r| r.scenario == Some(scenario)).collect();
        if !drawn.is_empty() {
            println!(
                "scenario {}: {} seeds, {} built their corner",
                scenario.name(),
                drawn.len(),
                drawn.iter().filter(|r| r.scenario_built == Some(true)).count()
            );
        }
    }
    if args.expect_failure {
        match failed.iter().min() {
            Some(s) => {
                println!(
                    "mutation caught: first failing seed {s} ({} seeds run)",
                    reports.iter().filter(|r| r.seed <= *s).count()
                );
                Ok(())
            }
            None => bail!("no seed failed: the planted bug was not caught"),
        }
    } else if failed.is_empty() {
        Ok(())
    } else {
        let mut sorted = failed.clone();
        sorted.sort_unstable();
        bail!("failing seeds: {sorted:?} (replay one with --seed N --trace)")
    }
}

fn print_failure(report: &RunReport) {
    println!("  config: {:?}", report.config);
    println!("  faults:");
    for (at, what) in &report.schedule {
        println!("    {at:>8.3}s {what}");
    }
    for r in report.results.iter().filter(|r| r.valid != Validity::Valid) {
        for a in r.anomalies.iter().take(5) {
            println!("  {} {}: {}", r.checker, a.kind, a.explanation);
        }
    }
    println!("  trace (last lines; replay with --seed {} --trace):", report.seed);
    for line in &report.trace_tail {
        println!("    {line}");
    }
}
