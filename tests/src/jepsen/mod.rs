//! boundkv's Jepsen-style consistency suite: real `boundkv serve` processes, each in its own
//! network namespace (or, without root, behind the runner's peer proxy) with its own ClockBound
//! segment and libfaketime clock, driven by concurrent
//! clients whose every operation is recorded, while a nemesis injects faults; then the history is
//! checked.
//!
//! A run:
//!
//! 1. makes the run directory, the network (see [`net`], or [`proxy`] where namespaces cannot
//!    be made) and the clocks (see [`clock`]);
//! 2. starts the cluster and waits for a leader;
//! 3. runs the workload (see [`workload`]) from `clients` processes at `rate` operations per
//!    second for `time_limit`, with the nemesis (see [`nemesis`]) injecting faults on a schedule;
//! 4. heals everything, lets the cluster recover, and performs final reads;
//! 5. stops the cluster (its data and logs stay in the run directory);
//! 6. checks the history (see `crate::check`), and writes `results.json`, `latency.svg` and
//!    `index.md`. The run is valid only if every checker says so.
//!
//! ```text
//! RUN/history.jsonl    every operation, Jepsen's conventions (invoke, then ok / fail / info)
//! RUN/results.json     the verdict, each checker's anomalies with minimal examples, counts, faults,
//!                      requests each node refused for its clock, the drift experiment's figures
//! RUN/latency.svg      latency over time, faults shaded
//! RUN/index.md         what happened, in a page
//! RUN/nodes/…/node-N/  each node's data directory and node.log
//! RUN/clock/           the ClockBound segments and the libfaketime offsets (or oscillator control
//!                      files) the runner wrote
//! ```

pub mod clock;
pub mod drift;
pub mod nemesis;
pub mod net;
pub mod proxy;
pub mod recorder;
pub mod report;
pub mod verdict;
pub mod workload;

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use boundkv_client::{Client, ReadPreference};
use serde_json::json;

use crate::{ClusterOptions, NodeSetup, TestCluster};
use clock::{ClockMode, Clocks};
use nemesis::{DRIFTING_NEMESES, Nemesis, STEPPING_NEMESES, UNSAFE_NEMESES, needs_clocks};
use net::Netns;
use proxy::PeerProxy;
use recorder::Recorder;
use workload::{Process, Shared};

/// How nodes are networked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NetworkMode {
    /// Network namespaces when available, else the peer proxy.
    Auto,
    /// Network namespaces, or fail.
    Netns,
    /// 127.0.0.1, Raft traffic through the runner's proxy (see [`proxy`]).
    Proxy,
    /// 127.0.0.1, nodes dial each other directly (no partitions, no added latency).
    Loopback,
}

/// The network of a run, and how it cuts and slows links.
pub enum Network {
    /// A namespace per node, partitions by nftables (see [`net`]).
    Namespaces(Netns),
    /// 127.0.0.1 through the peer proxy (see [`proxy`]).
    Proxy(PeerProxy),
}

impl Network {
    /// Cuts the links between every pair in `blocked`, replacing any earlier partition.
    pub fn partition(
        &self,
        blocked: &std::collections::BTreeSet<(u64, u64)>,
    ) -> anyhow::Result<()> {
        match self {
            Network::Namespaces(n) => n.partition(blocked),
            Network::Proxy(p) => {
                p.partition(blocked);
                Ok(())
            }
        }
    }

    /// Removes every partition and added delay.
    pub fn heal(&self) -> anyhow::Result<()> {
        match self {
            Network::Namespaces(n) => n.heal(),
            Network::Proxy(p) => {
                p.heal();
                p.set_delay(Duration::ZERO);
                Ok(())
            }
        }
    }

    /// The proxy, when Raft traffic passes one (added latency needs it).
    pub fn proxy(&self) -> Option<&PeerProxy> {
        match self {
            Network::Proxy(p) => Some(p),
            Network::Namespaces(_) => None,
        }
    }

    /// What it is, for reports.
    pub fn describe(&self) -> &'static str {
        match self {
            Network::Namespaces(_) => "network namespaces (nftables partitions)",
            Network::Proxy(_) => "127.0.0.1 through the runner's peer proxy",
        }
    }
}

/// What to run.
#[derive(Clone, Debug)]
pub struct RunOptions {
    /// `register`, `append`, `bank` or `causal`.
    pub workload: String,
    /// Nemesis names.
    pub nemeses: Vec<String>,
    /// 3 or 5.
    pub nodes: u64,
    /// Client processes.
    pub clients: usize,
    /// How long the workload runs.
    pub time_limit: Duration,
    /// Operations per second, over all clients.
    pub rate: f64,
    /// The seed of every random choice.
    pub seed: u64,
    /// Where run directories go.
    pub store: PathBuf,
    /// Run the nodes with `--unsafe-skip-commit-wait` (a mutant the checkers must catch).
    pub unsafe_skip_commit_wait: bool,
    /// Run the nodes with `--unsafe-no-step-guard` (a mutant the checkers must catch under
    /// `clock-lie` or `leap-step`).
    pub unsafe_no_step_guard: bool,
    /// Run the nodes with `--unsafe-no-peer-clock-checks` (their clock checks never fence).
    pub unsafe_no_peer_clock_checks: bool,
    /// Run the nodes with this GC retention and a 1 s GC interval, so old versions are
    /// collected (and snapshots installed) while the faults run. `None`: the server's default
    /// (1 h, which a short run never reaches).
    pub gc_retention: Option<Duration>,
    /// How nodes are networked.
    pub network: NetworkMode,
    /// Quiet time between faults.
    pub quiet: Duration,
    /// How long each fault lasts.
    pub hold: Duration,
    /// How long the healed cluster gets before the final reads.
    pub recovery: Duration,
    /// Show a progress bar (on a terminal).
    pub progress: bool,
    /// Run the drift experiment (see [`drift`]) alongside the workload.
    pub drift_experiment: Option<drift::DriftExperiment>,
    /// Run the nodes on the cluster clock (`cluster:RHO`, e.g. `cluster:200ppm`) instead of the
    /// runner's per-node ClockBound segments: `clock-drift` then drifts every node's oscillator
    /// within ±RHO/2 and never slews it back (a slew is a rate too).
    pub cluster_clock: Option<String>,
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            workload: "register".into(),
            nemeses: Vec::new(),
            nodes: 3,
            clients: 6,
            time_limit: Duration::from_secs(30),
            rate: 100.0,
            seed: 1,
            store: PathBuf::from("jepsen-store"),
            unsafe_skip_commit_wait: false,
            unsafe_no_step_guard: false,
            unsafe_no_peer_clock_checks: false,
            gc_retention: None,
            network: NetworkMode::Auto,
            quiet: Duration::from_secs(3),
            hold: Duration::from_secs(5),
            recovery: Duration::from_secs(5),
            progress: true,
            drift_experiment: None,
            cluster_clock: None,
        }
    }
}

/// What a run found.
#[derive(Clone, Debug)]
pub struct RunSummary {
    /// The run directory.
    pub dir: PathBuf,
    /// Whether every checker found the history valid.
    pub valid: bool,
    /// Invoked, ok, fail, info.
    pub counts: recorder::Counts,
    /// Anomaly kinds found, with counts.
    pub anomalies: Vec<(String, usize)>,
    /// `results.json`, parsed.
    pub results: serde_json::Value,
}

/// Runs one test (see the module docs).
pub async fn run(opts: RunOptions) -> anyhow::Result<RunSummary> {
    if !workload::WORKLOADS.contains(&opts.workload.as_str()) {
        bail!(
            "unknown workload {:?}; choose one of {}",
            opts.workload,
            workload::WORKLOADS.join(", ")
        );
    }
    for n in &opts.nemeses {
        if !nemesis::NEMESES.contains(&n.as_str()) {
            bail!("unknown nemesis {n:?}; choose from {}", nemesis::NEMESES.join(", "));
        }
    }
    if !(opts.nodes == 3 || opts.nodes == 5) {
        bail!("--nodes must be 3 or 5");
    }
    let stamp = humantime::format_rfc3339_seconds(std::time::SystemTime::now())
        .to_string()
        .replace(':', "");
    let label = if opts.nemeses.is_empty() { "none".to_string() } else { opts.nemeses.join("+") };
    let dir = opts.store.join(format!("{stamp}-{}-{label}-s{}", opts.workload, opts.seed));
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let dir = dir.canonicalize()?;
    let ids: Vec<u64> = (1..=opts.nodes).collect();

    // The network.
    let want_partitions = opts.nemeses.iter().any(|n| n == "partition");
    let want_delay = opts.nemeses.iter().any(|n| n == "slow-net");
    let namespaces = || -> anyhow::Result<Network> {
        Ok(Network::Namespaces(Netns::create(std::process::id() ^ (opts.seed as u32), &ids)?))
    };
    let net: Option<Arc<Network>> = match opts.network {
        NetworkMode::Loopback => None,
        NetworkMode::Netns | NetworkMode::Auto if Netns::available() => {
            Some(Arc::new(namespaces()?))
        }
        NetworkMode::Netns => bail!(
            "network namespaces are not available (run as root, with iproute2 and nftables: tests/setup-jepsen.sh), or use --network proxy"
        ),
        NetworkMode::Proxy | NetworkMode::Auto => {
            Some(Arc::new(Network::Proxy(PeerProxy::start(&ids)?)))
        }
    };
    if want_partitions && net.is_none() {
        bail!("the partition nemesis needs --network auto, netns or proxy, not loopback");
    }
    if want_delay && net.as_ref().and_then(|n| n.proxy()).is_none() {
        bail!(
            "the slow-net nemesis adds latency in the peer proxy (this kernel has no netem): use --network proxy"
        );
    }
    // The clocks.
    if let Some(source) = &opts.cluster_clock
        && !matches!(
            source.parse::<boundkv_clockbound::ClockSource>(),
            Ok(boundkv_clockbound::ClockSource::Cluster { .. })
        )
    {
        bail!("--clock takes the cluster clock, cluster:RHO (e.g. cluster:200ppm), not {source}");
    }
    let want_clocks = opts.nemeses.iter().any(|n| needs_clocks(n));
    let drift = opts.nemeses.iter().any(|n| DRIFTING_NEMESES.contains(&n.as_str()));
    if drift && let Some(n) = opts.nemeses.iter().find(|n| STEPPING_NEMESES.contains(&n.as_str())) {
        bail!(
            "clock-drift and clock-oscillator-break fake the nodes' monotonic clocks too, so {n} \
             would step them: run it apart"
        );
    }
    if opts.cluster_clock.is_none() && opts.nemeses.iter().any(|n| n == "clock-oscillator-break") {
        bail!(nemesis::OSCILLATOR_BREAK_NEEDS_CLUSTER_CLOCK);
    }
    if opts.drift_experiment.is_some()
        && let Some(n) = opts.nemeses.iter().find(|n| needs_clocks(n))
    {
        bail!("the drift experiment sets every clock itself: run {n} apart");
    }
    let mode = if drift || opts.drift_experiment.is_some() {
        ClockMode::Oscillators
    } else {
        ClockMode::Steps
    };
    let clocks = if Clocks::faketime_available() {
        Some(Arc::new(Clocks::start_with(&dir.join("clock"), &ids, mode)?))
    } else if want_clocks || opts.unsafe_skip_commit_wait || opts.drift_experiment.is_some() {
        bail!("clock faults need libfaketime ({}): run tests/setup-jepsen.sh", clock::LIBFAKETIME);
    } else {
        None
    };

    // The cluster.
    let setup_net = net.clone();
    let setup_clocks = clocks.clone();
    let setup_cluster_clock = opts.cluster_clock.clone();
    if opts.cluster_clock.is_some()
        && let Some(c) = &clocks
    {
        c.hold_errors_on_heal();
    }
    let setup: crate::SetupFn = Arc::new(move |id| {
        let mut setup = NodeSetup {
            env: setup_clocks.as_ref().map(|c| c.env(id)).unwrap_or_default(),
            clock: match &setup_cluster_clock {
                Some(source) => Some(source.clone()),
                None => setup_clocks.as_ref().map(|c| c.source(id)),
            },
            ..NodeSetup::default()
        };
        match setup_net.as_deref() {
            Some(Network::Namespaces(n)) => {
                setup.host = Some(n.node_ip(id));
                setup.ports = Some((7000, 7100, 9000));
                setup.prefix = n.prefix(id);
            }
            Some(Network::Proxy(p)) => {
                if let (Some(advertised), Some(listen)) =
                    (p.advertised_address(id), p.listen_address(id))
                {
                    setup.ports = Some((crate::free_port(), listen.port(), crate::free_port()));
                    setup.advertise_peer = Some(advertised.to_string());
                }
            }
            None => {}
        }
        setup
    });
    let mut serve_args: Vec<String> = Vec::new();
    let mut env = Vec::new();
    if opts.unsafe_skip_commit_wait {
        serve_args.push("--unsafe-skip-commit-wait".into());
    }
    if opts.unsafe_no_step_guard {
        serve_args.push("--unsafe-no-step-guard".into());
    }
    if opts.unsafe_no_peer_clock_checks {
        serve_args.push("--unsafe-no-peer-clock-checks".into());
    }
    if opts.unsafe_skip_commit_wait || opts.unsafe_no_step_guard || opts.unsafe_no_peer_clock_checks
    {
        env.push(("BOUNDKV_ALLOW_UNSAFE".to_string(), "1".to_string()));
    }
    if let Some(r) = opts.gc_retention {
        serve_args.extend([
            "--gc-retention".into(),
            format!("{}ms", r.as_millis()),
            "--gc-interval".into(),
            "1s".into(),
        ]);
    }
    let mut cluster = TestCluster::start(ClusterOptions {
        nodes: opts.nodes,
        clock: opts.cluster_clock.clone().unwrap_or_else(|| "system:1ms".into()),
        serve_args,
        env,
        setup: Some(setup),
        dir: Some(dir.join("nodes")),
    })?;
    cluster.keep_dir();
    let leader = cluster.leader().await?;
    let nodes: Vec<(u64, String)> =
        cluster.nodes.iter().map(|n| (n.id, n.client.clone())).collect();
    let addrs: Vec<String> = nodes.iter().map(|(_, a)| a.clone()).collect();
    let admin =
        Client::connect_with(addrs.clone(), workload::client_options(ReadPreference::Leader))
            .await?;
    if opts.workload == "bank" {
        workload::bank_setup(&admin).await?;
    }
    let cluster = Arc::new(Mutex::new(cluster));

    // The workload and the nemesis.
    let recorder = Arc::new(Recorder::create(&dir.join("history.jsonl"))?);
    let shared = Shared::new(recorder.clone(), nodes.clone());
    let start = Instant::now();
    let deadline = start + opts.time_limit;
    let nemesis =
        Nemesis::new(cluster.clone(), net.clone(), clocks.clone(), admin.clone(), opts.seed, start)
            .on_cluster_clock(opts.cluster_clock.is_some());
    let active = nemesis.active();
    let nemesis_task =
        tokio::spawn(nemesis.run(opts.nemeses.clone(), deadline, opts.quiet, opts.hold));
    let drift_task = match (opts.drift_experiment, &clocks) {
        (Some(exp), Some(c)) => Some(tokio::spawn(drift::run(
            exp,
            c.clone(),
            admin.clone(),
            ids.clone(),
            opts.seed,
            deadline,
        ))),
        _ => None,
    };
    let clients = spawn_clients(&opts, &shared, &nodes, leader, deadline).await?;
    let progress = progress_bar(&opts, recorder.clone(), active, start);
    for c in clients {
        let _ = c.await;
    }
    let timeline = nemesis_task.await.unwrap_or_default();
    let drift_report = match drift_task {
        Some(t) => Some(t.await.map_err(anyhow::Error::from).and_then(|r| r)?),
        None => None,
    };

    // Recovery and final reads.
    tokio::time::sleep(opts.recovery).await;
    // Wait (at most 30 s) until a leader serves again.
    let recovered = Instant::now() + Duration::from_secs(30);
    while Instant::now() < recovered {
        if let Ok(Ok(s)) = tokio::time::timeout(Duration::from_secs(2), admin.status()).await
            && (s.role == boundkv_client::Role::Leader || s.leader.is_some())
            && admin.get("recovered?").await.is_ok()
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    final_reads(&opts, &shared).await?;
    recorder.flush()?;
    if let Some(p) = progress {
        p.finish_and_clear();
    }
    let elapsed = start.elapsed();
    let refusals = clock_refusals(&cluster).await;
    {
        let mut c = cluster.lock().unwrap_or_else(|e| e.into_inner());
        for &id in &ids {
            c.resume(id);
            c.stop(id);
        }
    }
    let network_used = net.as_ref().map(|n| n.describe()).unwrap_or("127.0.0.1, direct");
    let proxy_counts = net.as_ref().and_then(|n| n.proxy()).map(|p| p.counts());
    drop(cluster);
    drop(clocks);
    drop(net);

    // Check and report.
    let counts = recorder.counts();
    let checked = verdict::check_history(&dir.join("history.jsonl"), &opts.workload)?;
    report::latency_svg(
        &dir.join("latency.svg"),
        &recorder.latencies(),
        &timeline,
        elapsed.as_secs_f64(),
    )?;
    let unsafe_faults: Vec<&str> =
        opts.nemeses.iter().map(String::as_str).filter(|n| UNSAFE_NEMESES.contains(n)).collect();
    let results = json!({
        "valid": checked.valid,
        "verdict": match checked.validity {
            crate::check::Validity::Valid => "valid",
            crate::check::Validity::Invalid => "INVALID",
            crate::check::Validity::Unknown => "UNKNOWN (a checker could not decide)",
        },
        "workload": opts.workload,
        "nemeses": opts.nemeses,
        "not_yet_expected_safe": unsafe_faults,
        "mutant": if opts.unsafe_skip_commit_wait {
            Some("--unsafe-skip-commit-wait")
        } else if opts.unsafe_no_step_guard || opts.unsafe_no_peer_clock_checks {
            Some("--unsafe-no-step-guard / --unsafe-no-peer-clock-checks")
        } else {
            None
        },
        "gc_retention_s": opts.gc_retention.map(|r| r.as_secs_f64()),
        "nodes": opts.nodes,
        "clients": opts.clients,
        "rate": opts.rate,
        "seed": opts.seed,
        "time_limit_s": opts.time_limit.as_secs_f64(),
        "network": network_used,
        "clock": match &opts.cluster_clock {
            Some(source) => format!("{source} (the Raft leader's clock; libfaketime oscillators drift the nodes' monotonic clocks under clock-drift)"),
            None if Clocks::faketime_available() => "per-node ClockBound segments + libfaketime".to_string(),
            None => "system clock, ±1 ms assumed".to_string(),
        },
        "counts": {"invoked": counts.invoked, "ok": counts.ok, "fail": counts.fail, "info": counts.info},
        "clock_refusals": refusals,
        "drift_experiment": drift_report,
        "checkers": checked.results,
        "faults": timeline,
        "proxy_frames": proxy_counts.map(|(forwarded, dropped)| json!({"forwarded": forwarded, "dropped": dropped})),
        "elapsed_s": elapsed.as_secs_f64(),
    });
    std::fs::write(dir.join("results.json"), serde_json::to_vec_pretty(&results)?)?;
    write_index(&dir, &opts, &results)?;
    Ok(RunSummary { dir, valid: checked.valid, counts, anomalies: checked.anomalies, results })
}

/// How many client requests each node refused because its clock was unusable or fenced
/// (`boundkv_requests_total{outcome="clock_unavailable"}` summed over kinds), scraped from every
/// running node before the cluster stops; by node id (`null`: the scrape failed).
async fn clock_refusals(cluster: &Arc<Mutex<TestCluster>>) -> serde_json::Value {
    let nodes: Vec<(u64, String)> = {
        let c = cluster.lock().unwrap_or_else(|e| e.into_inner());
        c.nodes.iter().map(|n| (n.id, n.metrics.clone())).collect()
    };
    let counted = tokio::task::spawn_blocking(move || {
        let mut out = serde_json::Map::new();
        for (id, address) in nodes {
            let count = crate::scrape_metrics(&address).ok().map(|page| {
                page.lines()
                    .filter(|l| {
                        l.starts_with("boundkv_requests_total{")
                            && l.contains("outcome=\"clock_unavailable\"")
                    })
                    .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
                    .sum::<f64>() as u64
            });
            out.insert(format!("n{id}"), json!(count));
        }
        serde_json::Value::Object(out)
    });
    counted.await.unwrap_or(serde_json::Value::Null)
}

/// Starts the client processes; each runs until `deadline`.
async fn spawn_clients(
    opts: &RunOptions,
    shared: &Arc<Shared>,
    nodes: &[(u64, String)],
    leader: u64,
    deadline: Instant,
) -> anyhow::Result<Vec<tokio::task::JoinHandle<()>>> {
    let mut tasks = Vec::new();
    let per_process = Duration::from_secs_f64(opts.clients as f64 / opts.rate.max(0.1));
    let followers: Vec<u64> = nodes.iter().map(|(id, _)| *id).filter(|&i| i != leader).collect();
    if opts.workload == "causal" {
        // A writer per key (through the leader) and a reader per node.
        let keys = (opts.clients / 2).max(1);
        for key in 0..keys as u64 {
            let mut writer =
                Process::new(shared.clone(), ReadPreference::Leader, opts.seed + key).await?;
            let mut readers = Vec::new();
            for &(id, _) in nodes {
                readers.push((
                    id,
                    Process::new(
                        shared.clone(),
                        ReadPreference::Node(id),
                        opts.seed + 100 + key * 10 + id,
                    )
                    .await?,
                ));
            }
            tasks.push(tokio::spawn(async move {
                let mut v = 1;
                let mut turn = 0usize;
                while Instant::now() < deadline {
                    let next = Instant::now() + per_process * 2;
                    if writer.causal_write(key, v).await {
                        // The acknowledgement is in: read through a node that is not the leader.
                        let leader = writer.client().leader().map(|m| m.id);
                        let candidates: Vec<usize> =
                            (0..readers.len()).filter(|&i| Some(readers[i].0) != leader).collect();
                        if !candidates.is_empty() {
                            let i = candidates[turn % candidates.len()];
                            turn += 1;
                            readers[i].1.causal_read(key).await;
                        }
                    }
                    v += 1;
                    tokio::time::sleep_until(next.into()).await;
                }
            }));
        }
        return Ok(tasks);
    }
    for i in 0..opts.clients {
        let preference = match i % 3 {
            0 => ReadPreference::Leader,
            1 if !followers.is_empty() => ReadPreference::Node(followers[i % followers.len()]),
            _ => ReadPreference::Any,
        };
        let mut p =
            Process::new(shared.clone(), preference, opts.seed.wrapping_mul(1000) + i as u64)
                .await?;
        let workload = opts.workload.clone();
        tasks.push(tokio::spawn(async move {
            while Instant::now() < deadline {
                let next = Instant::now() + per_process;
                match workload.as_str() {
                    "register" => p.register_op().await,
                    "append" => p.append_op().await,
                    "bank" => p.bank_op().await,
                    _ => return,
                }
                tokio::time::sleep_until(next.into()).await;
            }
        }));
    }
    Ok(tasks)
}

async fn final_reads(opts: &RunOptions, shared: &Arc<Shared>) -> anyhow::Result<()> {
    let mut p = Process::new(shared.clone(), ReadPreference::Leader, opts.seed ^ 0xf1).await?;
    match opts.workload.as_str() {
        "register" => {
            for key in 0..8 {
                p.register_final_read(key).await;
            }
        }
        "append" => {
            let keys = workload::final_append_keys(shared);
            p.append_final_read(&keys).await;
        }
        "bank" => p.bank_op_read().await,
        "causal" => {
            for key in 0..(opts.clients / 2).max(1) as u64 {
                p.causal_read(key).await;
            }
        }
        _ => {}
    }
    Ok(())
}

fn progress_bar(
    opts: &RunOptions,
    recorder: Arc<Recorder>,
    active: Arc<Mutex<Option<String>>>,
    start: Instant,
) -> Option<indicatif::ProgressBar> {
    use std::io::IsTerminal;
    if !opts.progress || !std::io::stderr().is_terminal() {
        return None;
    }
    let bar = indicatif::ProgressBar::new(opts.time_limit.as_secs());
    bar.set_style(
        indicatif::ProgressStyle::with_template("{elapsed_precise} [{bar:30}] {pos}/{len}s  {msg}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let b = bar.clone();
    tokio::spawn(async move {
        while !b.is_finished() {
            let c = recorder.counts();
            let fault = active
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone()
                .unwrap_or_else(|| "none".into());
            b.set_position(start.elapsed().as_secs());
            b.set_message(format!(
                "ops {} (ok {}, fail {}, info {})  fault: {fault}",
                c.invoked, c.ok, c.fail, c.info
            ));
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    });
    Some(bar)
}

fn write_index(
    dir: &std::path::Path,
    opts: &RunOptions,
    results: &serde_json::Value,
) -> anyhow::Result<()> {
    let mut md = String::new();
    use std::fmt::Write as _;
    let _ = writeln!(
        md,
        "# boundkv consistency run: {} under {}\n",
        opts.workload,
        if opts.nemeses.is_empty() { "no faults".into() } else { opts.nemeses.join(", ") }
    );
    let _ = writeln!(md, "**Verdict: {}**\n", results["verdict"].as_str().unwrap_or("?"));
    if let Some(m) = results["mutant"].as_str() {
        let _ = writeln!(
            md,
            "This run is a **mutant** (nodes started with `{m}`): a valid verdict would mean the checkers are blind.\n"
        );
    }
    let unsafe_faults = results["not_yet_expected_safe"].as_array().map(|a| a.len()).unwrap_or(0);
    if unsafe_faults > 0 {
        let _ = writeln!(
            md,
            "Some faults here are **not yet expected to be safe** ({}): an invalid verdict documents a known limitation.\n",
            results["not_yet_expected_safe"]
        );
    }
    let c = &results["counts"];
    let _ = writeln!(
        md,
        "- {} nodes ({}), {} clients at {} ops/s for {} s, seed {}",
        opts.nodes,
        results["network"].as_str().unwrap_or(""),
        opts.clients,
        opts.rate,
        opts.time_limit.as_secs(),
        opts.seed
    );
    let _ = writeln!(md, "- clock: {}", results["clock"].as_str().unwrap_or(""));
    let _ = writeln!(
        md,
        "- operations: {} invoked, {} ok, {} fail, {} info",
        c["invoked"], c["ok"], c["fail"], c["info"]
    );
    let _ = writeln!(
        md,
        "- requests each node refused for its clock (unusable or fenced): {}\n",
        results["clock_refusals"]
    );
    if let Some(d) = results["drift_experiment"].as_object() {
        let (w, any) = (&d["measured_worst"], &d["measured_worst_any"]);
        let us = |v: &serde_json::Value| v.as_f64().unwrap_or(0.0);
        let _ = writeln!(
            md,
            "## Drift experiment\n\nEvery clock drifting within ±{} ppm (rates {}), corrected every {} s ({} corrections); {} peer-check measurements polled.\n\n| theoretical 2ρR | true worst offset | worst measured (round trip ≤ 1 ms) | its half round trip | truly | within theory | worst measured at all (uncertainty) |\n|---:|---:|---:|---:|---:|---|---:|\n| {:.0} µs | {:.0} µs | {:.0} µs (n{} of n{}) | {:.0} µs | {:.0} µs | {} | {:.0} µs (±{:.0} µs) |\n",
            d["rho_ppm"],
            d["rates_ppm"],
            d["correct_every_s"],
            d["corrections"],
            d["measurements"],
            us(&d["theoretical_us"]),
            us(&d["true_worst_us"]),
            us(&w["offset_us"]),
            w["by"],
            w["of"],
            us(&w["half_rtt_us"]),
            us(&w["true_offset_us"]),
            d["within_theory"],
            us(&any["offset_us"]),
            us(&any["uncertainty_us"]),
        );
    }
    let _ = writeln!(md, "## Checkers\n\n| checker | verdict | anomalies |\n|---|---|---|");
    if let Some(list) = results["checkers"].as_array() {
        for r in list {
            let anomalies = r["anomalies"].as_array().map(|a| {
                let mut kinds: std::collections::BTreeMap<String, usize> = Default::default();
                for x in a {
                    *kinds.entry(x["kind"].as_str().unwrap_or("?").to_string()).or_default() += 1;
                }
                kinds.iter().map(|(k, n)| format!("{k} ×{n}")).collect::<Vec<_>>().join(", ")
            });
            let _ = writeln!(
                md,
                "| {} | {} | {} |",
                r["checker"].as_str().unwrap_or("?"),
                r["valid"].as_str().map(String::from).unwrap_or_else(|| r["valid"].to_string()),
                anomalies.filter(|s| !s.is_empty()).unwrap_or_else(|| "none".into())
            );
        }
    }
    let _ = writeln!(md, "\n## Faults\n\n| start | end | nemesis | what |\n|---:|---:|---|---|");
    if let Some(list) = results["faults"].as_array() {
        for f in list {
            let _ = writeln!(
                md,
                "| {:.1} s | {} | {} | {}{} |",
                f["start"].as_f64().unwrap_or(0.0),
                f["end"].as_f64().map(|e| format!("{e:.1} s")).unwrap_or_default(),
                f["name"].as_str().unwrap_or(""),
                f["detail"].as_str().unwrap_or("").replace('|', "\\|"),
                f["error"].as_str().map(|e| format!(" (error: {e})")).unwrap_or_default()
            );
        }
    }
    let _ = writeln!(
        md,
        "\n## Files\n\n- [history.jsonl](history.jsonl): every operation\n- [results.json](results.json): verdicts, anomalies with examples, counts, faults\n- ![latency over time](latency.svg)\n- `nodes/`: each node's data directory and `node.log`; `clock/`: the segments and clock offsets the runner wrote"
    );
    std::fs::write(dir.join("index.md"), md)?;
    Ok(())
}
