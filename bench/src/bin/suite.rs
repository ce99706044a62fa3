//! The benchmark suite: boundkv against etcd, against raw sled, and against its own physical
//! floor, in one run on this machine, written up as a Markdown report with plots.
//!
//! ```text
//! bench/run.sh                      # installs etcd and protoc, builds, runs this, writes bench/results/
//! cargo run --release -p boundkv-bench --features etcd --bin suite -- --duration 10s --out bench/results
//! ```
//!
//! In order, each system alone on the machine while it is measured:
//!
//! 1. the floor: loopback round trip and 4 KiB append + `fdatasync` (see `boundkv_bench::floor`);
//! 2. a three-node boundkv cluster (bound 0): puts at 1, 16 and 64 clients; linearizable reads at
//!    1 and 64; read-write transactions over 2-8 keys, uniform and Zipfian, at 16; read-only
//!    snapshots at 16; follower reads at 1 and 16; the bank mix at 16;
//! 3. a three-member etcd cluster (Debian's etcd 3.4, gRPC through the `etcd-client` crate): puts
//!    at 1, 16 and 64, linearizable reads at 1 and 64;
//! 4. the bound sweep: fresh boundkv clusters at 100 µs, 1 ms and 5 ms, puts at 1 and 64 clients;
//! 5. the embedded database against raw sled and redb 2 (the `embedded` benchmark, run as a
//!    child);
//! 6. criterion's latest micro-benchmark results, if `cargo bench` has run.
//!
//! Then `results.json`, `report.md` and the plots (`latency-vs-clients.svg`,
//! `commit-vs-bound.svg`, `throughput-vs-bound.svg`).

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use boundkv_bench::floor::{self, Floor};
use boundkv_bench::load::{self, Driver, LoadOptions, LoadResult, Workload};
use boundkv_bench::plot::{Chart, Series};
use boundkv_client::{Client, ClientOptions, ReadPreference};
use boundkv_tests::{ClusterOptions, TestCluster};
use clap::Parser;
use serde::{Deserialize, Serialize};

#[derive(Parser)]
struct Args {
    /// How long each measurement runs.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// Where the report goes.
    #[arg(long, default_value = "bench/results")]
    out: PathBuf,
    /// Skip etcd even when it is available.
    #[arg(long)]
    no_etcd: bool,
    /// Skip the embedded benchmark.
    #[arg(long)]
    no_embedded: bool,
    /// Fewer points (1 and 16 clients, bounds 0 and 1 ms): for a smoke run.
    #[arg(long)]
    quick: bool,
    /// Measure nothing: rewrite report.md and the plots from OUT/results.json.
    #[arg(long)]
    render: bool,
}

#[derive(Serialize, Deserialize)]
struct Results {
    date: String,
    duration_s: f64,
    floor: Floor,
    runs: Vec<LoadResult>,
    embedded: Option<serde_json::Value>,
    criterion: Vec<(String, f64)>,
    notes: Vec<String>,
}

async fn boundkv_cluster(bound: Duration) -> anyhow::Result<(TestCluster, Client, u64)> {
    let clock = if bound.is_zero() {
        "system:0".to_string()
    } else {
        format!("system:{}us", bound.as_micros())
    };
    let cluster = TestCluster::start(ClusterOptions {
        clock,
        serve_args: Vec::new(),
        ..ClusterOptions::default()
    })
    .context("starting boundkv (build it first: cargo build --release -p boundkv-cli)")?;
    let leader = cluster.leader().await?;
    let client = cluster.client().await?;
    Ok((cluster, client, leader))
}

async fn measure(
    runs: &mut Vec<LoadResult>,
    system: &str,
    bound: Option<Duration>,
    driver: &Driver,
    workload: Workload,
    clients: usize,
    duration: Duration,
) -> anyhow::Result<()> {
    let opts = LoadOptions { clients, duration, ..LoadOptions::default() };
    let r = load::run(system, bound.map(|b| b.as_micros() as u64), driver, workload, &opts).await?;
    println!("{}", r.line());
    runs.push(r);
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    std::fs::create_dir_all(&args.out)?;
    if args.render {
        let path = args.out.join("results.json");
        let bytes = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
        let results: Results = serde_json::from_slice(&bytes)
            .with_context(|| format!("parsing {}", path.display()))?;
        write_report(&args.out, &results)?;
        println!("report: {}", args.out.join("report.md").display());
        return Ok(());
    }
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let d = args.duration;
    let client_counts: &[usize] = if args.quick { &[1, 16] } else { &[1, 16, 64] };
    let mut notes = Vec::new();
    let floor = floor::measure(&std::env::temp_dir())?;
    println!(
        "floor: loopback round trip {:.1} µs, 4 KiB append + fdatasync {:.1} µs",
        floor.rtt_us, floor.fsync_us
    );
    let mut runs = Vec::new();
    runtime.block_on(async {
        // boundkv at bound 0.
        let (cluster, client, leader) = boundkv_cluster(Duration::ZERO).await?;
        let driver = Driver::Boundkv(client.clone());
        let zero = Some(Duration::ZERO);
        for &c in client_counts {
            measure(&mut runs, "boundkv", zero, &driver, Workload::Put, c, d).await?;
        }
        for &c in &[1, *client_counts.last().unwrap_or(&16)] {
            measure(&mut runs, "boundkv", zero, &driver, Workload::Get, c, d).await?;
        }
        for w in [
            Workload::Txn { zipf: false },
            Workload::Txn { zipf: true },
            Workload::Snapshot,
            Workload::Bank,
        ] {
            measure(&mut runs, "boundkv", zero, &driver, w, 16, d).await?;
        }
        let follower =
            cluster.nodes.iter().map(|n| n.id).find(|&i| i != leader).expect("a follower");
        let reader = Client::connect_with(
            cluster.client_addresses(),
            ClientOptions {
                read_preference: ReadPreference::Node(follower),
                ..ClientOptions::default()
            },
        )
        .await?;
        let fdriver = Driver::Boundkv(reader);
        for c in [1, 16] {
            let opts = LoadOptions { clients: c, duration: d, ..LoadOptions::default() };
            let mut r = load::run("boundkv", Some(0), &fdriver, Workload::Get, &opts).await?;
            r.workload = "follower-get".into();
            println!("{}", r.line());
            runs.push(r);
        }
        drop(cluster);

        // etcd.
        #[cfg(feature = "etcd")]
        if !args.no_etcd {
            match boundkv_bench::etcd::EtcdCluster::start() {
                Ok(etcd) => {
                    let client = etcd_client::Client::connect(etcd.endpoints.clone(), None).await?;
                    let driver = Driver::Etcd(Box::new(client.kv_client()));
                    for &c in client_counts {
                        measure(&mut runs, "etcd", None, &driver, Workload::Put, c, d).await?;
                    }
                    for &c in &[1, *client_counts.last().unwrap_or(&16)] {
                        measure(&mut runs, "etcd", None, &driver, Workload::Get, c, d).await?;
                    }
                }
                Err(e) => notes.push(format!("etcd was not measured: {e:#}")),
            }
        }
        #[cfg(not(feature = "etcd"))]
        notes.push(
            "etcd was not measured: built without the `etcd` feature (bench/run.sh enables it)"
                .into(),
        );

        // The bound sweep.
        let bounds: &[u64] = if args.quick { &[1000] } else { &[100, 1000, 5000] };
        let many = *client_counts.last().unwrap_or(&16);
        for &b in bounds {
            let bound = Duration::from_micros(b);
            let (cluster, client, _) = boundkv_cluster(bound).await?;
            let driver = Driver::Boundkv(client);
            measure(&mut runs, "boundkv", Some(bound), &driver, Workload::Put, 1, d).await?;
            measure(&mut runs, "boundkv", Some(bound), &driver, Workload::Put, many, d).await?;
            drop(cluster);
        }
        anyhow::Ok(())
    })?;

    // The embedded database against raw sled.
    let embedded = if args.no_embedded {
        None
    } else {
        let exe = std::env::current_exe()?.with_file_name("embedded");
        let json = args.out.join("embedded.json");
        let status = std::process::Command::new(&exe)
            .args(["--duration", &format!("{}s", d.as_secs_f64().min(5.0))])
            .arg("--json")
            .arg(&json)
            .status()
            .with_context(|| format!("running {}", exe.display()))?;
        if status.success() {
            std::fs::read(&json).ok().and_then(|b| serde_json::from_slice(&b).ok())
        } else {
            None
        }
    };
    let criterion = criterion_results(Path::new("target/criterion"));
    let results = Results {
        date: humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
        duration_s: d.as_secs_f64(),
        floor,
        runs,
        embedded,
        criterion,
        notes,
    };
    std::fs::write(args.out.join("results.json"), serde_json::to_vec_pretty(&results)?)?;
    write_report(&args.out, &results)?;
    println!("report: {}", args.out.join("report.md").display());
    Ok(())
}

/// Criterion's latest estimates: (benchmark id, median ns).
fn criterion_results(dir: &Path) -> Vec<(String, f64)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else { continue };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                if p.ends_with("new") {
                    if let Ok(bytes) = std::fs::read(p.join("estimates.json"))
                        && let Ok(v) = serde_json::from_slice::<serde_json::Value>(&bytes)
                        && let Some(m) = v["median"]["point_estimate"].as_f64()
                    {
                        let id = p
                            .parent()
                            .and_then(|x| x.strip_prefix(dir).ok())
                            .map(|x| x.display().to_string())
                            .unwrap_or_default();
                        out.push((id, m));
                    }
                } else if !p.ends_with("report") {
                    stack.push(p);
                }
            }
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

fn find<'a>(
    r: &'a Results,
    system: &str,
    workload: &str,
    clients: usize,
    bound: Option<u64>,
) -> Option<&'a LoadResult> {
    r.runs.iter().find(|x| {
        x.system == system
            && x.workload == workload
            && x.clients == clients
            && (bound.is_none() || x.bound_us == bound)
    })
}

/// "1 client", "16 clients".
fn clients(n: usize) -> String {
    if n == 1 { "1 client".into() } else { format!("{n} clients") }
}

fn ms(us: u64) -> String {
    format!("{:.2} ms", us as f64 / 1000.0)
}

fn write_report(out: &Path, r: &Results) -> anyhow::Result<()> {
    use std::fmt::Write as _;
    let mut md = String::new();
    let _ = writeln!(
        md,
        "# boundkv benchmark report\n\nRun {} on this machine; {:.0} s per measurement; each system alone on the machine while measured. Generated by `bench/src/bin/suite.rs` from `results.json`.\n",
        r.date, r.duration_s
    );
    let _ = writeln!(md, "## Headline ratios\n");
    let ratio = |a: Option<f64>, b: Option<f64>| match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => format!("**{:.2}**", a / b),
        _ => "n/a".into(),
    };
    let max_clients = r
        .runs
        .iter()
        .filter(|x| x.system == "boundkv" && x.workload == "put")
        .map(|x| x.clients)
        .max()
        .unwrap_or(1);
    let mut put_clients: Vec<usize> = r
        .runs
        .iter()
        .filter(|x| x.system == "etcd" && x.workload == "put")
        .map(|x| x.clients)
        .collect();
    put_clients.sort();
    put_clients.dedup();
    let _ = writeln!(md, "| ratio | value |\n|---|---:|");
    // Write throughput (most clients first: the issue's headline), write latency, read
    // throughput: boundkv over etcd at each client count both were measured at.
    type Metric = fn(&LoadResult) -> f64;
    let throughput: Metric = |x| x.ops_per_sec;
    let p50: Metric = |x| x.p50_us as f64;
    let rows: [(&str, &str, Vec<usize>, Metric); 3] = [
        ("write throughput", "put", put_clients.iter().rev().copied().collect(), throughput),
        ("p50 write latency", "put", put_clients.clone(), p50),
        ("linearizable-read throughput", "get", vec![1, max_clients], throughput),
    ];
    for (what, workload, counts, metric) in rows {
        for c in counts {
            let (b, e) =
                (find(r, "boundkv", workload, c, Some(0)), find(r, "etcd", workload, c, None));
            let _ = writeln!(
                md,
                "| boundkv / etcd {what}, {} | {} |",
                clients(c),
                ratio(b.map(metric), e.map(metric))
            );
        }
    }
    if let Some(e) = &r.embedded
        && let Some(list) = e.as_array()
    {
        let get = |name: &str, clients: u64| {
            list.iter()
                .find(|x| {
                    x["name"].as_str().is_some_and(|n| n.starts_with(name))
                        && x["clients"].as_u64() == Some(clients)
                })
                .and_then(|x| x["ops_per_sec"].as_f64())
        };
        let (kv_put, raw_put, redb_put) =
            ("boundkv: Db::put, bound 0", "raw sled: insert + flush + fdatasync", "redb: put");
        for clients in [1, 16] {
            let _ = writeln!(
                md,
                "| embedded boundkv / raw sled, {clients}-client writes (same fdatasync) | {} |",
                ratio(get(kv_put, clients), get(raw_put, clients))
            );
            let _ = writeln!(
                md,
                "| embedded boundkv / redb 2, {clients}-client writes (both durable per commit) | {} |",
                ratio(get(kv_put, clients), get(redb_put, clients))
            );
        }
        let _ = writeln!(
            md,
            "| embedded boundkv / raw sled, 1-client reads | {} |",
            ratio(get("boundkv: Db::get", 1), get("raw sled: get", 1))
        );
        let _ = writeln!(
            md,
            "| embedded boundkv / redb 2, 1-client reads | {} |",
            ratio(get("boundkv: Db::get", 1), get("redb: get", 1))
        );
    }
    let mut bounds: Vec<u64> = r
        .runs
        .iter()
        .filter(|x| x.workload == "put" && x.clients == 1)
        .filter_map(|x| x.bound_us)
        .collect();
    bounds.sort();
    bounds.dedup();
    for &b in &bounds {
        if let Some(x) = find(r, "boundkv", "put", 1, Some(b)) {
            let f = r.floor.at_bound(Duration::from_micros(b));
            let _ = writeln!(
                md,
                "| commit latency p50 / floor, bound {} µs | **{:.2}** ({} over {:.2} ms) |",
                b,
                x.p50_us as f64 / f,
                ms(x.p50_us),
                f / 1000.0
            );
        }
    }
    let _ = writeln!(
        md,
        "\nThe floor of a commit is `max(round trip + fsync, 2 × bound)` = `max({:.1} µs + {:.1} µs, 2 × bound)`, both measured on this machine: a loopback TCP ping-pong, and three 4 KiB appends + `fdatasync` at once until the second finishes (the three replicas share one disk, so their syncs queue; one sync alone takes {:.1} µs).\n",
        r.floor.rtt_us, r.floor.quorum_fsync_us, r.floor.fsync_us
    );
    let _ = writeln!(
        md,
        "## Every measurement\n\n| system | workload | bound | clients | ops/s | p50 | p90 | p99 | p99.9 | max | errors |\n|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    );
    for x in &r.runs {
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {:.0} | {} | {} | {} | {} | {} | {} |",
            x.system,
            x.workload,
            x.bound_us.map(|b| format!("{b} µs")).unwrap_or_else(|| "-".into()),
            x.clients,
            x.ops_per_sec,
            ms(x.p50_us),
            ms(x.p90_us),
            ms(x.p99_us),
            ms(x.p999_us),
            ms(x.max_us),
            x.errors
        );
    }
    if let Some(e) = &r.embedded
        && let Some(list) = e.as_array()
    {
        let _ = writeln!(
            md,
            "\n## Embedded: boundkv `Db` against raw sled and redb 2\n\n| workload | clients | ops/s | p50 | p99 |\n|---|---:|---:|---:|---:|"
        );
        for x in list {
            let _ = writeln!(
                md,
                "| {} | {} | {:.0} | {:.0} µs | {:.0} µs |",
                x["name"].as_str().unwrap_or(""),
                x["clients"],
                x["ops_per_sec"].as_f64().unwrap_or(0.0),
                x["p50_us"].as_f64().unwrap_or(0.0),
                x["p99_us"].as_f64().unwrap_or(0.0)
            );
        }
    }
    if !r.criterion.is_empty() {
        let _ = writeln!(
            md,
            "\n## Micro-benchmarks (criterion, median)\n\n| benchmark | median |\n|---|---:|"
        );
        for (id, ns) in &r.criterion {
            let _ = writeln!(
                md,
                "| {id} | {} |",
                if *ns > 1e6 {
                    format!("{:.2} ms", ns / 1e6)
                } else if *ns > 1e3 {
                    format!("{:.2} µs", ns / 1e3)
                } else {
                    format!("{ns:.1} ns")
                }
            );
        }
    }
    for n in &r.notes {
        let _ = writeln!(md, "\n> {n}");
    }
    let _ = writeln!(
        md,
        "\n## Plots\n\n![latency against clients](latency-vs-clients.svg)\n\n![commit latency against the bound](commit-vs-bound.svg)\n\n![throughput against the bound](throughput-vs-bound.svg)"
    );
    std::fs::write(out.join("report.md"), md)?;

    // Latency percentiles against clients, boundkv and etcd puts.
    let mut series = Vec::new();
    for system in ["boundkv", "etcd"] {
        for (q, pick) in [("p50", 0usize), ("p99", 1)] {
            let mut pts: Vec<(f64, f64)> = r
                .runs
                .iter()
                .filter(|x| {
                    x.system == system
                        && x.workload == "put"
                        && (system == "etcd" || x.bound_us == Some(0))
                })
                .map(|x| {
                    (
                        x.clients as f64,
                        (if pick == 0 { x.p50_us } else { x.p99_us }) as f64 / 1000.0,
                    )
                })
                .collect();
            pts.sort_by(|a, b| a.0.total_cmp(&b.0));
            if !pts.is_empty() {
                series.push(Series {
                    name: format!("{system} put {q}"),
                    points: pts,
                    dashed: pick == 1,
                });
            }
        }
    }
    let chart = Chart {
        title: "Write latency against clients (3 nodes, loopback)".into(),
        x_label: "clients".into(),
        y_label: "latency (ms)".into(),
        log_x: true,
        log_y: true,
        series,
    };
    std::fs::write(out.join("latency-vs-clients.svg"), chart.svg())?;
    // Commit latency against the bound, with the floor.
    let per_bound = |clients: usize, f: &dyn Fn(&LoadResult) -> f64| -> Vec<(f64, f64)> {
        bounds
            .iter()
            .filter_map(|&b| {
                find(r, "boundkv", "put", clients, Some(b)).map(|x| (b as f64 / 1000.0, f(x)))
            })
            .collect()
    };
    let floor_pts: Vec<(f64, f64)> = bounds
        .iter()
        .map(|&b| (b as f64 / 1000.0, r.floor.at_bound(Duration::from_micros(b)) / 1000.0))
        .collect();
    let chart = Chart {
        title: "Commit latency (1 client) against the clock bound".into(),
        x_label: "bound ε (ms)".into(),
        y_label: "latency (ms)".into(),
        log_x: false,
        log_y: false,
        series: vec![
            Series {
                name: "p50".into(),
                points: per_bound(1, &|x| x.p50_us as f64 / 1000.0),
                dashed: false,
            },
            Series {
                name: "p99".into(),
                points: per_bound(1, &|x| x.p99_us as f64 / 1000.0),
                dashed: false,
            },
            Series { name: "floor max(rtt+fsync, 2ε)".into(), points: floor_pts, dashed: true },
        ],
    };
    std::fs::write(out.join("commit-vs-bound.svg"), chart.svg())?;
    let chart = Chart {
        title: format!("Write throughput against the clock bound ({max_clients} clients)"),
        x_label: "bound ε (ms)".into(),
        y_label: "commits per second".into(),
        log_x: false,
        log_y: false,
        series: vec![Series {
            name: format!("{max_clients} clients"),
            points: per_bound(max_clients, &|x| x.ops_per_sec),
            dashed: false,
        }],
    };
    std::fs::write(out.join("throughput-vs-bound.svg"), chart.svg())?;
    Ok(())
}
