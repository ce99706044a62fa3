//! A three-node boundkv cluster on loopback: write throughput and commit latency by clients and
//! clock bound, and follower read latency.
//!
//! ```text
//! cargo build --release -p boundkv-cli --bin boundkv
//! cargo run --release -p boundkv-bench --bin cluster [-- --duration 10s --clients 1,64 --bounds 0,1ms --json out.json]
//! cargo run --release -p boundkv-bench --bin cluster -- --clocks cluster:200ppm,system:500us,clockbound-v1:SOCKET
//! ```
//!
//! `--clocks` runs the same on whole clock sources instead of system-clock bounds. For each, a
//! sampler reads every follower's bound (`boundkv_clock_bound_seconds`) every 20 ms through the
//! whole run, idle and loaded, and reports its p50, p99 and maximum, and the cluster clock's probe
//! traffic (probes sent and answered per second, over all nodes, from its `/metrics` counters).
//!
//! For each clock bound (the system clock with an assumed bound, `--clock system:BOUND`, so the
//! bound is exactly what is asked for), a fresh three-node cluster of release `boundkv serve`
//! processes on 127.0.0.1 with default settings (fdatasync durability), then:
//!
//! 1. **Writes**: for each value size (`--value-sizes`, 256 bytes by default) and client count,
//!    closed-loop single-key puts (8-byte keys drawn uniformly from 100,000) for `--duration`;
//!    latency measured at the client, from sending the commit to its acknowledgement (after
//!    commit wait). Beside it, what the servers say: the leader's mean commit latency, how much
//!    of it was replication to a durable quorum and how much commit wait added beyond that, and
//!    the CPU all three servers spent per commit, and the leader's share of it.
//! 2. **Follower reads**: one client reading single keys at `now().latest` of a follower
//!    (`ReadPreference::Node`), on the idle cluster (`follower-read`) and while 16 clients write
//!    through the leader (`follower-read-load`): the follower waits for a closed timestamp to
//!    pass the read's timestamp (it asks the leader for one), so this measures that wait. The
//!    same at the leader (`leader-read`, `leader-read-load`) is the baseline: its own safe time
//!    needs no asking, but under load it too waits for the commits in flight below the read.
//!
//! Nothing here is a test: the numbers are reported, never judged.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use boundkv_client::{Client, ClientOptions, ReadPreference};
use boundkv_tests::{ClusterOptions, TestCluster, metric_value, scrape_metrics};
use clap::Parser;
use hdrhistogram::Histogram;
use serde::Serialize;

#[derive(Parser)]
struct Args {
    /// How long each workload runs.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// Client counts to run the write workload with.
    #[arg(long, value_delimiter = ',', default_value = "1,64")]
    clients: Vec<usize>,
    /// Value sizes of the write workload, bytes (each with every client count).
    #[arg(long, value_delimiter = ',', default_value = "256")]
    value_sizes: Vec<usize>,
    /// Clock bounds to run with (each gets a fresh cluster).
    #[arg(long, value_delimiter = ',', default_value = "0,1ms", value_parser = parse_bound)]
    bounds: Vec<Duration>,
    /// Clock sources to run with instead of `--bounds` (each gets a fresh cluster), e.g.
    /// `cluster:200ppm,system:500us`.
    #[arg(long, value_delimiter = ',')]
    clocks: Vec<String>,
    /// Also write the results as JSON here.
    #[arg(long)]
    json: Option<std::path::PathBuf>,
    /// Extra arguments for every `boundkv serve` (after `--`).
    #[arg(last = true)]
    serve_args: Vec<String>,
}

fn parse_bound(s: &str) -> Result<Duration, String> {
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    humantime::parse_duration(s).map_err(|e| e.to_string())
}

const KEYS: u64 = 100_000;

#[derive(Serialize, Clone)]
struct Summary {
    workload: String,
    /// The clock source the cluster ran on.
    clock: String,
    bound_us: u64,
    clients: usize,
    /// Writes only: the size of each put's value, bytes.
    #[serde(skip_serializing_if = "Option::is_none")]
    value_bytes: Option<usize>,
    ops: u64,
    ops_per_sec: f64,
    p50_us: u64,
    p90_us: u64,
    p99_us: u64,
    p999_us: u64,
    max_us: u64,
    /// Writes only: where the time and CPU went, from the servers (see [`ServerSide`]).
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    server: Option<ServerSide>,
}

/// What the servers say about a write workload, as the difference of two scrapes of the leader's
/// `/metrics` (before and after) and of every node's CPU time in `/proc`. Throughput on this
/// noisy machine moves by ±20 % from run to run; these move far less, so they show what a change
/// costs: commit wait beyond replication, the replication itself, and CPU per commit.
#[derive(Serialize, Clone)]
struct ServerSide {
    /// Commits the leader acknowledged during the workload.
    commits: f64,
    /// Mean server-side commit latency (`boundkv_request_duration_seconds{kind="commit"}`).
    server_commit_mean_us: f64,
    /// Mean time from choosing `s` until the commit was applied on a quorum-durable log.
    durable_mean_us: f64,
    /// Mean of what commit wait added beyond replication and durability.
    wait_added_mean_us: f64,
    /// CPU time (user + system) of all three servers, per acknowledged commit (and below, the
    /// leader's, and each node's).
    cpu_us_per_commit: f64,
    /// Of that, the leader's.
    leader_cpu_us_per_commit: f64,
    /// Each node's, by node id (the leader's included).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    node_cpu_us_per_commit: Vec<(u64, f64)>,
}

/// The counters [`ServerSide`] is the difference of.
struct ServerCounters {
    /// (sum in seconds, count) of the leader's histograms.
    commit: (f64, f64),
    durable: (f64, f64),
    wait_added: (f64, f64),
    /// Clock ticks of user + system time, all servers.
    cpu_ticks: f64,
    /// The same, the leader's alone.
    leader_cpu_ticks: f64,
    /// The same, per node: (id, ticks).
    node_cpu_ticks: Vec<(u64, f64)>,
}

impl ServerCounters {
    fn read(cluster: &TestCluster, leader: u64) -> Option<Self> {
        let node = cluster.nodes.iter().find(|n| n.id == leader)?;
        let page = scrape_metrics(&node.metrics).ok()?;
        let histogram = |name: &str, labels: &str| -> Option<(f64, f64)> {
            Some((
                metric_value(&page, &format!("{name}_sum{labels}"))?,
                metric_value(&page, &format!("{name}_count{labels}"))?,
            ))
        };
        let (mut cpu_ticks, mut leader_cpu_ticks) = (0.0, 0.0);
        let mut node_cpu_ticks = Vec::new();
        for n in &cluster.nodes {
            let stat =
                std::fs::read_to_string(format!("/proc/{}/stat", cluster.pid(n.id)?)).ok()?;
            // After the command's closing parenthesis: state is field 3, utime 14, stime 15.
            let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
            let ticks =
                fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
            cpu_ticks += ticks;
            node_cpu_ticks.push((n.id, ticks));
            if n.id == leader {
                leader_cpu_ticks = ticks;
            }
        }
        Some(Self {
            commit: histogram("boundkv_request_duration_seconds", "{kind=\"commit\"}")?,
            durable: histogram("boundkv_commit_durable_seconds", "")?,
            wait_added: histogram("boundkv_commit_wait_added_seconds", "")?,
            cpu_ticks,
            leader_cpu_ticks,
            node_cpu_ticks,
        })
    }

    fn since(&self, before: &Self) -> Option<ServerSide> {
        let mean_us = |a: (f64, f64), b: (f64, f64)| (a.0 - b.0) / (a.1 - b.1).max(1.0) * 1e6;
        let commits = self.commit.1 - before.commit.1;
        if commits <= 0.0 {
            return None;
        }
        // SAFETY: sysconf has no preconditions.
        let ticks_per_sec = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
        Some(ServerSide {
            commits,
            server_commit_mean_us: mean_us(self.commit, before.commit),
            durable_mean_us: mean_us(self.durable, before.durable),
            wait_added_mean_us: mean_us(self.wait_added, before.wait_added),
            cpu_us_per_commit: (self.cpu_ticks - before.cpu_ticks) / ticks_per_sec * 1e6 / commits,
            leader_cpu_us_per_commit: (self.leader_cpu_ticks - before.leader_cpu_ticks)
                / ticks_per_sec
                * 1e6
                / commits,
            node_cpu_us_per_commit: self
                .node_cpu_ticks
                .iter()
                .zip(&before.node_cpu_ticks)
                .map(|(&(id, after), &(_, was))| {
                    (id, (after - was) / ticks_per_sec * 1e6 / commits)
                })
                .collect(),
        })
    }
}

fn summarize(
    workload: &str,
    clock: &str,
    bound: Duration,
    clients: usize,
    h: &Histogram<u64>,
    took: Duration,
) -> Summary {
    Summary {
        workload: workload.into(),
        clock: clock.into(),
        bound_us: bound.as_micros() as u64,
        clients,
        value_bytes: None,
        ops: h.len(),
        ops_per_sec: h.len() as f64 / took.as_secs_f64(),
        p50_us: h.value_at_quantile(0.5),
        p90_us: h.value_at_quantile(0.9),
        p99_us: h.value_at_quantile(0.99),
        p999_us: h.value_at_quantile(0.999),
        max_us: h.max(),
        server: None,
    }
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid bounds")
}

async fn writes(
    client: &Client,
    clients: usize,
    duration: Duration,
) -> anyhow::Result<(Histogram<u64>, Duration)> {
    writes_of(client, clients, 256, duration).await
}

/// Closed-loop puts of `value_bytes`-byte values from `clients` tasks for `duration`.
async fn writes_of(
    client: &Client,
    clients: usize,
    value_bytes: usize,
    duration: Duration,
) -> anyhow::Result<(Histogram<u64>, Duration)> {
    let stop = Arc::new(AtomicBool::new(false));
    let errors = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..clients {
        let (client, stop, errors) = (client.clone(), stop.clone(), errors.clone());
        tasks.push(tokio::spawn(async move {
            let mut h = histogram();
            let mut n: u64 = c as u64 * 7919;
            let value = vec![0x5Au8; value_bytes];
            while !stop.load(Ordering::Relaxed) {
                n = n.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                let key = format!("{:08}", (n >> 33) % KEYS);
                let t = Instant::now();
                match client.put(&key, &value).await {
                    Ok(_) => {
                        let _ = h.record(t.elapsed().as_micros().max(1) as u64);
                    }
                    Err(_) => {
                        errors.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            h
        }));
    }
    tokio::time::sleep(duration).await;
    stop.store(true, Ordering::Relaxed);
    let mut total = histogram();
    for t in tasks {
        total.add(t.await?)?;
    }
    let took = start.elapsed();
    let errs = errors.load(Ordering::Relaxed);
    if errs > 0 {
        eprintln!("  ({errs} writes failed and were not counted)");
    }
    Ok((total, took))
}

async fn follower_reads(
    client: &Client,
    duration: Duration,
) -> anyhow::Result<(Histogram<u64>, Duration)> {
    let mut h = histogram();
    let start = Instant::now();
    let mut n: u64 = 1;
    while start.elapsed() < duration {
        n = n.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        let key = format!("{:08}", (n >> 33) % KEYS);
        let t = Instant::now();
        let snapshot = client.read_only().await?;
        snapshot.get(&key).await?;
        let _ = h.record(t.elapsed().as_micros().max(1) as u64);
    }
    Ok((h, start.elapsed()))
}

fn print(s: &Summary) {
    println!(
        "{:<16} {:<16} clients {:>3} {:>6}  {:>9.0} ops/s  p50 {:>7} µs  p90 {:>7} µs  p99 {:>7} µs  p99.9 {:>7} µs  max {:>8} µs",
        s.workload,
        s.clock,
        s.clients,
        s.value_bytes.map(|b| format!("{b}B")).unwrap_or_default(),
        s.ops_per_sec,
        s.p50_us,
        s.p90_us,
        s.p99_us,
        s.p999_us,
        s.max_us
    );
    if let Some(v) = &s.server {
        println!(
            "{:<16} server side, means: commit {:.0} µs, of which durable {:.0} µs and commit wait beyond it {:.1} µs; CPU {:.0} µs per commit, leader {:.0} µs ({:.0} commits)",
            "",
            v.server_commit_mean_us,
            v.durable_mean_us,
            v.wait_added_mean_us,
            v.cpu_us_per_commit,
            v.leader_cpu_us_per_commit,
            v.commits
        );
        let nodes: Vec<String> =
            v.node_cpu_us_per_commit.iter().map(|(id, us)| format!("n{id} {us:.0} µs")).collect();
        println!("{:<16} CPU per commit by node: {}", "", nodes.join(", "));
    }
}

/// Every follower's bound, sampled through a run (see the module docs), and the cluster clock's
/// probe counters at the start.
struct BoundSampler {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<Histogram<u64>>,
    probes_before: f64,
    started: Instant,
}

/// Probes sent and answered so far, over every node (0 without the cluster clock).
fn probe_count(cluster: &TestCluster) -> f64 {
    cluster
        .nodes
        .iter()
        .filter_map(|n| scrape_metrics(&n.metrics).ok())
        .map(|page| {
            metric_value(&page, "boundkv_cluster_clock_probes_sent").unwrap_or(0.0)
                + metric_value(&page, "boundkv_cluster_clock_probes_answered").unwrap_or(0.0)
        })
        .sum()
}

impl BoundSampler {
    fn start(cluster: &TestCluster, leader: u64) -> Self {
        let followers: Vec<String> =
            cluster.nodes.iter().filter(|n| n.id != leader).map(|n| n.metrics.clone()).collect();
        let stop = Arc::new(AtomicBool::new(false));
        let done = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut h = histogram();
            while !done.load(Ordering::Relaxed) {
                for f in &followers {
                    if let Some(b) = scrape_metrics(f)
                        .ok()
                        .and_then(|p| metric_value(&p, "boundkv_clock_bound_seconds"))
                    {
                        let _ = h.record(((b * 1e6).round() as u64).max(1));
                    }
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            h
        });
        BoundSampler { stop, thread, probes_before: probe_count(cluster), started: Instant::now() }
    }

    fn finish(self, cluster: &TestCluster, clock: &str) {
        self.stop.store(true, Ordering::Relaxed);
        let probes =
            (probe_count(cluster) - self.probes_before) / self.started.elapsed().as_secs_f64();
        let h = self.thread.join().expect("the sampler thread");
        println!(
            "{:<16} {:<16} followers' bound over the run ({} samples): p50 {} µs  p99 {} µs  max {} µs; cluster clock probes {:.0}/s sent+answered, all nodes",
            "bound",
            clock,
            h.len(),
            h.value_at_quantile(0.5),
            h.value_at_quantile(0.99),
            h.max(),
            probes
        );
    }
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let mut results = Vec::new();
    let runs: Vec<(String, Duration)> = if args.clocks.is_empty() {
        args.bounds
            .iter()
            .map(|&bound| {
                let clock = if bound.is_zero() {
                    "system:0".to_string()
                } else {
                    format!("system:{}us", bound.as_micros())
                };
                (clock, bound)
            })
            .collect()
    } else {
        args.clocks.iter().map(|c| (c.clone(), Duration::ZERO)).collect()
    };
    for (clock, bound) in runs {
        let cluster = TestCluster::start(ClusterOptions {
            clock: clock.clone(),
            serve_args: args.serve_args.clone(),
            env: vec![("BOUNDKV_TEST_LOG".into(), "warn".into())],
            ..ClusterOptions::default()
        })
        .context("starting the cluster (build it first: cargo build --release -p boundkv-cli)")?;
        runtime.block_on(async {
            let leader = cluster.leader().await?;
            let client = cluster.client().await?;
            // Warm up: connections, the leader's caches.
            writes(&client, 4, Duration::from_secs(1)).await?;
            let sampler = (!args.clocks.is_empty()).then(|| BoundSampler::start(&cluster, leader));
            for &value_bytes in &args.value_sizes {
                for &clients in &args.clients {
                    let before = ServerCounters::read(&cluster, leader);
                    let (h, took) = writes_of(&client, clients, value_bytes, args.duration).await?;
                    let after = ServerCounters::read(&cluster, leader);
                    let mut s = summarize("write", &clock, bound, clients, &h, took);
                    s.value_bytes = Some(value_bytes);
                    s.server = before.zip(after).and_then(|(b, a)| a.since(&b));
                    print(&s);
                    results.push(s);
                }
            }
            let follower =
                cluster.nodes.iter().map(|n| n.id).find(|&i| i != leader).expect("a follower");
            let reader = cluster
                .client_with(ClientOptions {
                    read_preference: ReadPreference::Node(follower),
                    ..ClientOptions::default()
                })
                .await?;
            let leader_reader = cluster.client().await?;
            for (name, reader) in [("follower-read", &reader), ("leader-read", &leader_reader)] {
                // Idle, then while 16 clients write through the leader.
                let (h, took) = follower_reads(reader, args.duration).await?;
                let s = summarize(name, &clock, bound, 1, &h, took);
                print(&s);
                results.push(s);
                let load = tokio::spawn({
                    let client = client.clone();
                    let duration = args.duration;
                    async move { writes(&client, 16, duration).await }
                });
                let (h, took) = follower_reads(reader, args.duration).await?;
                load.await??;
                let s = summarize(&format!("{name}-load"), &clock, bound, 1, &h, took);
                print(&s);
                results.push(s);
            }
            if let Some(sampler) = sampler {
                sampler.finish(&cluster, &clock);
            }
            anyhow::Ok(())
        })?;
        drop(cluster);
    }
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_vec_pretty(&results)?)?;
    }
    Ok(())
}
