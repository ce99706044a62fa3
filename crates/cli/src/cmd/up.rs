//! `boundkv up`: a local cluster on 127.0.0.1, as child processes, in one command.
//!
//! Each node is a `boundkv serve` child process of this one, with its data in `DIR/node-N/` and
//! its log in `DIR/node-N/node.log`. The layout (ids and ports) is recorded in
//! `DIR/cluster.json`, so running `up` again on the same directory restarts the same cluster with
//! its data; the running cluster is recorded where the other commands look for it (see
//! [`crate::local`]). Ctrl-C or SIGTERM stops every node gracefully (SIGTERM, then SIGKILL for
//! any that has not stopped within 20 s). The children ask the kernel to send them SIGTERM if
//! this process dies, so a killed `up` leaves no orphans.

use std::io::IsTerminal;
use std::net::{SocketAddr, TcpListener};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ExitCode, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use clap::Args;

use boundkv_clockbound::segment::layout::DEFAULT_SEGMENT_PATH;
use boundkv_clockbound::{CLOCK_ENV, ClockSource, DEFAULT_CLUSTER_RHO_PPM};

use crate::clock_args::ClockArgs;
use crate::local::{self, LocalCluster, LocalNode};

/// `boundkv up`.
#[derive(Args, Debug)]
pub(crate) struct Up {
    /// Where the cluster's data and logs go (created if missing; reused if it holds a cluster).
    #[arg(long, value_name = "DIR", default_value = "boundkv-cluster")]
    dir: PathBuf,
    /// How many nodes (1 to 9). A cluster in DIR keeps the size it was created with.
    #[arg(long, value_name = "N", default_value_t = 3, value_parser = clap::value_parser!(u64).range(1..=9))]
    nodes: u64,
    /// Client ports are BASE, BASE+1, ...; peer ports BASE+100, ...; metrics BASE+2000, ... When
    /// any is taken, free ports are chosen instead.
    #[arg(long, value_name = "BASE", default_value_t = 7001)]
    base_port: u16,
    /// Stop after this long (for scripts and tests); by default run until Ctrl-C or SIGTERM.
    #[arg(long, value_parser = humantime::parse_duration, value_name = "DURATION")]
    run_for: Option<Duration>,
    /// Extra arguments for every node's `boundkv serve` (after `--`), e.g. `-- --lease 500ms`.
    #[arg(last = true, value_name = "SERVE_ARGS")]
    serve_args: Vec<String>,
}

/// The layout file in the cluster's directory.
#[derive(serde::Serialize, serde::Deserialize)]
struct Layout {
    nodes: Vec<LocalNode>,
}

impl Up {
    pub(crate) fn run(&self, clock: &ClockArgs) -> anyhow::Result<ExitCode> {
        let clock = &cluster_clock_without_daemon(clock);
        // Fail early, with the clock command's advice, if the clock cannot be opened.
        let clock_description = match clock.clock {
            ClockSource::Cluster { rho_ppm } => format!(
                "cluster:{rho_ppm}ppm, the leader's clock measured over the network; no daemon \
                 needed, nothing assumed but a drift of at most {rho_ppm} ppm"
            ),
            _ => clock.open()?.clock.describe(),
        };
        std::fs::create_dir_all(&self.dir)
            .with_context(|| format!("creating {}", self.dir.display()))?;
        let dir = self.dir.canonicalize()?;
        if let Some(other) = local::running() {
            bail!(
                "a local cluster is already running (boundkv up, pid {}, in {}); stop it first",
                other.pid,
                other.dir.display()
            );
        }
        let layout_path = dir.join("cluster.json");
        let nodes = match std::fs::read(&layout_path) {
            Ok(bytes) => {
                let layout: Layout = serde_json::from_slice(&bytes)
                    .with_context(|| format!("reading {}", layout_path.display()))?;
                eprintln!(
                    "restarting the {}-node cluster in {}",
                    layout.nodes.len(),
                    dir.display()
                );
                layout.nodes
            }
            Err(_) => {
                let nodes = self.allocate()?;
                local::write_json(&layout_path, &Layout { nodes: nodes.clone() })?;
                nodes
            }
        };
        // Every member declares the same leap policy (a step one is the default and unwritten).
        let leap = match clock.leap {
            boundkv_clockbound::LeapPolicy::Step => "",
            boundkv_clockbound::LeapPolicy::Smear => "/smear",
        };
        let initial = nodes
            .iter()
            .map(|n| format!("{}={}/{}{leap}", n.id, n.peer, n.client))
            .collect::<Vec<_>>()
            .join(",");
        let exe = std::env::current_exe().context("locating the boundkv binary")?;
        let mut children: Vec<(u64, Child)> = Vec::new();
        for n in &nodes {
            let node_dir = dir.join(format!("node-{}", n.id));
            std::fs::create_dir_all(&node_dir)?;
            let log = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(node_dir.join("node.log"))?;
            let mut cmd = std::process::Command::new(&exe);
            cmd.arg("--clock")
                .arg(clock.clock.to_string())
                .arg("--vmclock")
                .arg(&clock.vmclock)
                .arg("--leap")
                .arg(clock.leap.to_string())
                .arg("--data")
                .arg(&node_dir)
                .arg("serve")
                .args(["--id", &n.id.to_string()])
                .args(["--listen-client", &n.client, "--listen-peer", &n.peer])
                .args(["--metrics", &n.metrics, "--initial-cluster", &initial])
                .args(&self.serve_args)
                .env_remove("BOUNDKV_CLUSTER")
                .env("RUST_LOG", std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()))
                .stdin(Stdio::null())
                .stdout(log.try_clone()?)
                .stderr(log)
                // Its own process group: Ctrl-C reaches `up`, which stops the nodes in order.
                .process_group(0);
            // SAFETY: prctl(PR_SET_PDEATHSIG) is async-signal-safe and touches no memory of ours.
            unsafe {
                cmd.pre_exec(|| {
                    libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
                    Ok(())
                });
            }
            let child = cmd.spawn().with_context(|| format!("starting node {}", n.id))?;
            children.push((n.id, child));
        }
        let cluster =
            LocalCluster { pid: std::process::id(), dir: dir.clone(), nodes: nodes.clone() };
        local::write_json(&local::pointer_path(), &cluster)?;

        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        let outcome = runtime.block_on(async {
            let ready = wait_ready(&cluster, &mut children).await;
            match &ready {
                Ok(leader) => print_welcome(&cluster, *leader, &exe, &clock_description),
                Err(e) => eprintln!("error: the cluster did not become ready: {e:#}"),
            }
            if ready.is_ok() {
                supervise(&mut children, self.run_for).await;
            }
            ready.map(|_| ())
        });
        stop(&mut children);
        local::remove_pointer(std::process::id());
        match outcome {
            Ok(()) => {
                eprintln!(
                    "stopped; the data stays in {} (boundkv up --dir {} restarts it)",
                    dir.display(),
                    self.dir.display()
                );
                Ok(ExitCode::SUCCESS)
            }
            Err(_) => Ok(ExitCode::from(1)),
        }
    }

    /// Ports for a new cluster: the defaults if all are free, else free ones.
    fn allocate(&self) -> anyhow::Result<Vec<LocalNode>> {
        let n = self.nodes as u16;
        let wanted: Vec<[u16; 3]> = (0..n)
            .map(|i| {
                let b = self.base_port.saturating_add(i);
                [b, b.saturating_add(100), b.saturating_add(2000)]
            })
            .collect();
        let all_free = wanted.iter().flatten().all(|&p| port_free(p));
        if !all_free {
            eprintln!("some of the ports from {} are taken; choosing free ones", self.base_port);
        }
        (1..=u64::from(n))
            .zip(wanted)
            .map(|(id, ports)| {
                let [c, p, m] =
                    if all_free { ports } else { [free_port()?, free_port()?, free_port()?] };
                Ok(LocalNode {
                    id,
                    client: format!("127.0.0.1:{c}"),
                    peer: format!("127.0.0.1:{p}"),
                    metrics: format!("127.0.0.1:{m}"),
                })
            })
            .collect()
    }
}

fn port_free(port: u16) -> bool {
    TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], port))).is_ok()
}

fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Waits until a node reports itself leader with a valid lease; returns its id.
async fn wait_ready(cluster: &LocalCluster, children: &mut [(u64, Child)]) -> anyhow::Result<u64> {
    let deadline = Instant::now() + Duration::from_secs(60);
    let spinner = std::io::stderr().is_terminal().then(|| {
        let s = indicatif::ProgressBar::new_spinner();
        s.set_message("starting the nodes and electing a leader");
        s.enable_steady_tick(Duration::from_millis(100));
        s
    });
    let result = loop {
        for (id, child) in children.iter_mut() {
            if let Ok(Some(status)) = child.try_wait() {
                break_with_log(cluster, *id, status)?;
            }
        }
        for n in &cluster.nodes {
            let status = tokio::time::timeout(
                Duration::from_millis(500),
                boundkv_client::Client::connect_with(
                    [n.client.clone()],
                    boundkv_client::ClientOptions {
                        connect_timeout: Duration::from_millis(300),
                        ..boundkv_client::ClientOptions::default()
                    },
                ),
            )
            .await;
            if let Ok(Ok(client)) = status
                && let Ok(Ok(s)) =
                    tokio::time::timeout(Duration::from_millis(500), client.status()).await
                && s.role == boundkv_client::Role::Leader
                && s.lease_valid
            {
                break_ok(&spinner);
                return Ok(s.id);
            }
        }
        if Instant::now() > deadline {
            break Err(anyhow!(
                "no leader within 60 s; see the nodes' logs in {}",
                cluster.dir.display()
            ));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    break_ok(&spinner);
    result
}

fn break_ok(spinner: &Option<indicatif::ProgressBar>) {
    if let Some(s) = spinner {
        s.finish_and_clear();
    }
}

fn break_with_log(
    cluster: &LocalCluster,
    id: u64,
    status: std::process::ExitStatus,
) -> anyhow::Result<()> {
    let log = cluster.dir.join(format!("node-{id}")).join("node.log");
    Err(anyhow!("node {id} exited ({status}); the end of {}:\n{}", log.display(), tail(&log, 15)))
}

/// `up`'s clock: as given, except that the default (the ClockBound daemon's segment) becomes
/// the cluster clock at its default `RHO` when no daemon runs here and neither `--clock` nor
/// `BOUNDKV_CLOCK` asked for the daemon: a newcomer's cluster then asserts nothing it cannot
/// check (the system clock's bound would be an assumption).
fn cluster_clock_without_daemon(clock: &ClockArgs) -> ClockArgs {
    let asked = std::env::var_os(CLOCK_ENV).is_some()
        || std::env::args().any(|a| a == "--clock" || a.starts_with("--clock="));
    if clock.clock.is_default_clockbound() && !asked && !Path::new(DEFAULT_SEGMENT_PATH).exists() {
        eprintln!(
            "no ClockBound daemon here ({DEFAULT_SEGMENT_PATH} does not exist): the nodes keep \
             the cluster's own clock (--clock cluster:{DEFAULT_CLUSTER_RHO_PPM}ppm)"
        );
        return ClockArgs {
            clock: ClockSource::Cluster { rho_ppm: DEFAULT_CLUSTER_RHO_PPM },
            ..clock.clone()
        };
    }
    clock.clone()
}

fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

fn print_welcome(cluster: &LocalCluster, leader: u64, exe: &Path, clock: &str) {
    let cwd = std::env::current_dir().unwrap_or_default();
    let bin = exe
        .strip_prefix(&cwd)
        .map(|p| p.display().to_string())
        .unwrap_or_else(|_| exe.display().to_string());
    let rel = |p: &Path| {
        p.strip_prefix(&cwd)
            .map(|p| p.display().to_string())
            .unwrap_or_else(|_| p.display().to_string())
    };
    println!(
        "boundkv: a {}-node cluster is running in {} (clock: {clock})",
        cluster.nodes.len(),
        rel(&cluster.dir)
    );
    for n in &cluster.nodes {
        println!(
            "  node {}{}  clients {}  peers {}  metrics http://{}/metrics  log {}",
            n.id,
            if n.id == leader { " (leader)" } else { "         " },
            n.client,
            n.peer,
            n.metrics,
            rel(&cluster.dir.join(format!("node-{}", n.id)).join("node.log")),
        );
    }
    println!();
    println!("In another terminal (the commands find this cluster by themselves):");
    println!("  {bin} put greeting hello");
    println!("  {bin} get greeting");
    println!("  {bin} txn 'get greeting; put a 1; put b 2'");
    println!("  {bin} status");
    println!("From elsewhere, name the nodes: --cluster {}", cluster.client_addresses().join(","));
    println!();
    println!("Ctrl-C stops the cluster.");
}

/// Runs until a signal (or `run_for`), reporting nodes that exit.
async fn supervise(children: &mut [(u64, Child)], run_for: Option<Duration>) {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: cannot watch for SIGTERM: {e}");
            return;
        }
    };
    let until = run_for.map(|d| Instant::now() + d);
    let mut reported = std::collections::BTreeSet::new();
    loop {
        tokio::select! {
            _ = term.recv() => { eprintln!("SIGTERM: stopping the cluster"); return; }
            _ = tokio::signal::ctrl_c() => { eprintln!("stopping the cluster"); return; }
            _ = tokio::time::sleep(Duration::from_millis(250)) => {}
        }
        for (id, child) in children.iter_mut() {
            if let Ok(Some(status)) = child.try_wait()
                && reported.insert(*id)
            {
                eprintln!("warning: node {id} exited ({status}); the others go on");
            }
        }
        if reported.len() == children.len() {
            eprintln!("every node has exited");
            return;
        }
        if until.is_some_and(|u| Instant::now() >= u) {
            return;
        }
    }
}

/// SIGTERM to every node, then SIGKILL to any still running after 20 s.
fn stop(children: &mut [(u64, Child)]) {
    for (_, child) in children.iter() {
        // SAFETY: kill sends a signal to a process we started; no memory is involved.
        unsafe {
            libc::kill(child.id() as libc::pid_t, libc::SIGTERM);
        }
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    for (id, child) in children.iter_mut() {
        loop {
            match child.try_wait() {
                Ok(Some(_)) | Err(_) => break,
                Ok(None) if Instant::now() >= deadline => {
                    eprintln!("node {id} did not stop within 20 s; killing it");
                    let _ = child.kill();
                    let _ = child.wait();
                    break;
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(50)),
            }
        }
    }
}
