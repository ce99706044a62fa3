//! `boundkv-jepsen`: boundkv's Jepsen-style consistency test, as a program.
//!
//! ```text
//! boundkv-jepsen --workload append --nemesis partition,kill,clock-skew --time-limit 60 --seed 7
//! ```
//!
//! It starts a cluster of real `boundkv serve` processes (each in its own network namespace, or
//! without root behind the runner's peer proxy on 127.0.0.1; each with its own ClockBound segment
//! and libfaketime clock), runs the workload with the nemesis on a
//! schedule, heals everything, lets the cluster recover, performs final reads, stops the cluster,
//! checks the history and prints the verdict. Exit status 0 only when the history is valid; 1
//! when it is not; 2 when the run could not be made. Network namespaces need root; clock faults
//! need Debian's libfaketime, nftables and iproute2: `tests/setup-jepsen.sh` installs them. The
//! `boundkv` binary must be built (`cargo build --release -p boundkv-cli`); this program builds
//! nothing itself.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use boundkv_tests::jepsen::{self, NetworkMode, RunOptions};
use clap::Parser;

/// boundkv's Jepsen-style consistency test.
#[derive(Parser, Debug)]
#[command(name = "boundkv-jepsen", version)]
#[command(long_about = "boundkv's Jepsen-style consistency test.\n\n\
    Starts a cluster of real `boundkv serve` processes (network namespaces, or the runner's peer \
    proxy on 127.0.0.1 without root; per-node ClockBound segments and libfaketime clocks), runs a workload from concurrent clients while a nemesis \
    injects faults, records every operation, heals, performs final reads, and checks the history.\n\n\
    Each run writes a directory under --store: history.jsonl, results.json, latency.svg, index.md, \
    and the nodes' data and logs.\n\n\
    Exit status: 0 valid, 1 invalid, 2 the run could not be made.")]
struct Args {
    /// The workload: register (per-key linearizability), append (Elle's list-append: strict
    /// serializability), bank (snapshot totals), causal (acknowledged writes seen by followers).
    #[arg(long, default_value = "register")]
    workload: String,
    /// Faults, comma-separated: partition, slow-net, kill, pause, member, clock-skew,
    /// clock-bound, clock-status, clock-stale, clock-step-restart, clock-lie, leap-step,
    /// leap-mixed, clock-strobe, clock-drift, and with --clock cluster:RHO
    /// clock-oscillator-break (each described in tests/README.md). clock-drift and
    /// clock-oscillator-break fake the nodes' monotonic clocks too, so they run apart from the
    /// faults that step clocks.
    #[arg(long, value_delimiter = ',')]
    nemesis: Vec<String>,
    /// Nodes: 3 or 5.
    #[arg(long, default_value_t = 3)]
    nodes: u64,
    /// Client processes.
    #[arg(long, default_value_t = 6)]
    clients: usize,
    /// How long the workload runs, seconds.
    #[arg(long, default_value_t = 30)]
    time_limit: u64,
    /// Operations per second over all clients.
    #[arg(long, default_value_t = 100.0)]
    rate: f64,
    /// The seed of every random choice (which faults, which keys, ...).
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Where run directories go.
    #[arg(long, default_value = "jepsen-store")]
    store: PathBuf,
    /// How nodes are networked: netns (a network namespace per node, partitions by nftables;
    /// needs root), proxy (127.0.0.1, Raft traffic through the runner's proxy, which drops or
    /// delays it), auto (netns if it can be made, else proxy), or loopback (direct; no partitions).
    #[arg(long, default_value = "auto")]
    network: String,
    /// Quiet time between faults, seconds.
    #[arg(long, default_value_t = 3.0)]
    quiet: f64,
    /// How long each fault lasts, seconds.
    #[arg(long, default_value_t = 5.0)]
    hold: f64,
    /// Start the nodes with this GC retention in seconds (and a 1 s GC interval), so old
    /// versions are collected while the faults run [default: the server's, 1 h].
    #[arg(long, value_name = "SECONDS")]
    gc_retention: Option<f64>,
    /// Run the drift experiment alongside the workload: every node's clock (wall and
    /// monotonic) drifts at its own random rate within ±RHO ppm and is corrected every R
    /// seconds; the report compares the worst offset the peer clock checks measured with the
    /// theoretical 2ρR. Format RHO_PPM:R_SECONDS, e.g. 200:2. Runs apart from clock faults.
    #[arg(long, value_name = "RHO_PPM:R_SECONDS")]
    drift_experiment: Option<jepsen::drift::DriftExperiment>,
    /// Run the nodes on the cluster clock, `cluster:RHO` (e.g. `cluster:200ppm`), instead of
    /// per-node ClockBound segments: the Raft leader's monotonic clock, measured by probes.
    /// Under it `clock-drift` drifts every node within ±100 ppm and never slews back, and
    /// `clock-oscillator-break` breaks the leader's oscillator far beyond RHO.
    #[arg(long, value_name = "SOURCE")]
    clock: Option<String>,
    /// Never show a progress bar (it shows only on a terminal anyway).
    #[arg(long)]
    progress_off: bool,
    /// Test only: start the nodes with --unsafe-skip-commit-wait (a mutant the checkers must
    /// catch). Refused unless BOUNDKV_ALLOW_UNSAFE=1.
    #[arg(long, hide = true)]
    unsafe_skip_commit_wait: bool,
    /// Test only: start the nodes with --unsafe-no-step-guard (a mutant the checkers must catch
    /// under clock-lie or leap-step). Refused unless BOUNDKV_ALLOW_UNSAFE=1.
    #[arg(long, hide = true)]
    unsafe_no_step_guard: bool,
    /// Test only: start the nodes with --unsafe-no-peer-clock-checks (their clock checks never
    /// fence). Refused unless BOUNDKV_ALLOW_UNSAFE=1.
    #[arg(long, hide = true)]
    unsafe_no_peer_clock_checks: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).init();
    if (args.unsafe_skip_commit_wait
        || args.unsafe_no_step_guard
        || args.unsafe_no_peer_clock_checks)
        && std::env::var("BOUNDKV_ALLOW_UNSAFE").as_deref() != Ok("1")
    {
        eprintln!(
            "error: the --unsafe-* mutants break external consistency; set BOUNDKV_ALLOW_UNSAFE=1 to run one"
        );
        return ExitCode::from(2);
    }
    let network = match args.network.as_str() {
        "auto" => NetworkMode::Auto,
        "netns" => NetworkMode::Netns,
        "proxy" => NetworkMode::Proxy,
        "loopback" => NetworkMode::Loopback,
        other => {
            eprintln!("error: --network {other}: use auto, netns, proxy or loopback");
            return ExitCode::from(2);
        }
    };
    let opts = RunOptions {
        workload: args.workload,
        nemeses: args.nemesis.into_iter().filter(|n| !n.is_empty()).collect(),
        nodes: args.nodes,
        clients: args.clients,
        time_limit: Duration::from_secs(args.time_limit),
        rate: args.rate,
        seed: args.seed,
        store: args.store,
        unsafe_skip_commit_wait: args.unsafe_skip_commit_wait,
        unsafe_no_step_guard: args.unsafe_no_step_guard,
        unsafe_no_peer_clock_checks: args.unsafe_no_peer_clock_checks,
        gc_retention: args.gc_retention.map(Duration::from_secs_f64),
        network,
        quiet: Duration::from_secs_f64(args.quiet),
        hold: Duration::from_secs_f64(args.hold),
        recovery: Duration::from_secs(5),
        progress: !args.progress_off,
        drift_experiment: args.drift_experiment,
        cluster_clock: args.clock.clone(),
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    match runtime.block_on(jepsen::run(opts)) {
        Ok(summary) => {
            let c = summary.counts;
            println!("run:        {}", summary.dir.display());
            println!(
                "operations: {} invoked, {} ok, {} fail, {} info",
                c.invoked, c.ok, c.fail, c.info
            );
            if summary.anomalies.is_empty() {
                println!("anomalies:  none");
            } else {
                let list: Vec<String> =
                    summary.anomalies.iter().map(|(k, n)| format!("{k} ×{n}")).collect();
                println!("anomalies:  {}", list.join(", "));
            }
            println!("verdict:    {}", if summary.valid { "VALID" } else { "INVALID" });
            if summary.valid { ExitCode::SUCCESS } else { ExitCode::from(1) }
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}
