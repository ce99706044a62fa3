//! `loadgen`: the closed-loop load generator on its own, against a running boundkv cluster, an
//! etcd cluster (with the `etcd` feature) or a fresh embedded database.
//!
//! ```text
//! cargo run --release -p boundkv-bench --bin loadgen -- --cluster 127.0.0.1:7001 --workload txn-zipf --clients 16 --duration 20s
//! cargo run --release -p boundkv-bench --bin loadgen -- --embedded --workload mixed --read-fraction 0.9
//! cargo run --release -p boundkv-bench --features etcd --bin loadgen -- --etcd http://127.0.0.1:2379 --workload put
//! ```
//!
//! Prints a summary line (throughput, p50/p90/p99/p99.9/max) and, with `--json FILE`, writes the
//! result with completions per second.

use std::sync::Arc;
use std::time::Duration;

use anyhow::bail;
use boundkv_bench::load::{self, Driver, LoadOptions, Workload};
use boundkv_client::{Client, ClientOptions, ReadPreference};
use clap::Parser;

#[derive(Parser)]
struct Args {
    /// A boundkv cluster's client addresses, comma-separated.
    #[arg(long, value_delimiter = ',')]
    cluster: Vec<String>,
    /// Read through this node (follower reads) instead of the leader.
    #[arg(long)]
    read_from: Option<u64>,
    /// A fresh embedded database in a temporary directory instead (system clock, ±BOUND).
    #[arg(long)]
    embedded: bool,
    /// The embedded database's assumed clock bound.
    #[arg(long, default_value = "0", value_parser = parse_bound)]
    bound: Duration,
    /// An etcd cluster's endpoints instead, comma-separated (needs the `etcd` feature).
    #[arg(long, value_delimiter = ',')]
    etcd: Vec<String>,
    /// put, get, txn-uniform, txn-zipf, snapshot, bank, mixed.
    #[arg(long, default_value = "put")]
    workload: String,
    /// Concurrent clients.
    #[arg(long, default_value_t = 1)]
    clients: usize,
    /// How long to run.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// Stop after this many operations in all.
    #[arg(long)]
    ops: Option<u64>,
    /// The key space.
    #[arg(long, default_value_t = 100_000)]
    keys: u64,
    /// Value size, bytes.
    #[arg(long, default_value_t = 256)]
    value_size: usize,
    /// For `mixed`: the fraction of reads.
    #[arg(long, default_value_t = 0.5)]
    read_fraction: f64,
    /// Keys per transaction, `MIN-MAX`.
    #[arg(long, default_value = "2-8")]
    txn_keys: String,
    /// Write the result as JSON here.
    #[arg(long)]
    json: Option<std::path::PathBuf>,
}

fn parse_bound(s: &str) -> Result<Duration, String> {
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    humantime::parse_duration(s).map_err(|e| e.to_string())
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let workload = match args.workload.as_str() {
        "put" => Workload::Put,
        "get" => Workload::Get,
        "txn-uniform" | "txn" => Workload::Txn { zipf: false },
        "txn-zipf" => Workload::Txn { zipf: true },
        "snapshot" => Workload::Snapshot,
        "bank" => Workload::Bank,
        "mixed" => Workload::Mixed,
        other => bail!("unknown workload {other}"),
    };
    let (kmin, kmax) = args
        .txn_keys
        .split_once('-')
        .and_then(|(a, b)| Some((a.parse().ok()?, b.parse().ok()?)))
        .ok_or_else(|| anyhow::anyhow!("--txn-keys MIN-MAX"))?;
    let opts = LoadOptions {
        clients: args.clients,
        duration: args.duration,
        max_ops: args.ops,
        keys: args.keys,
        value_size: args.value_size,
        progress: true,
        read_fraction: args.read_fraction,
        txn_keys: (kmin, kmax),
    };
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let _dir;
    let (system, bound, driver) = if !args.cluster.is_empty() {
        let preference = args.read_from.map_or(ReadPreference::Leader, ReadPreference::Node);
        let client = runtime.block_on(Client::connect_with(
            args.cluster.clone(),
            ClientOptions { read_preference: preference, ..ClientOptions::default() },
        ))?;
        ("boundkv", None, Driver::Boundkv(client))
    } else if args.embedded {
        let dir = tempfile::tempdir()?;
        let source: boundkv::ClockSource = format!("system:{}ns", args.bound.as_nanos()).parse()?;
        let db = boundkv::Db::open(dir.path(), boundkv::Options::with_clock(source))?;
        _dir = dir;
        ("embedded", Some(args.bound.as_micros() as u64), Driver::Embedded(Arc::new(db)))
    } else if !args.etcd.is_empty() {
        #[cfg(feature = "etcd")]
        {
            let client = runtime.block_on(etcd_client::Client::connect(args.etcd.clone(), None))?;
            ("etcd", None, Driver::Etcd(Box::new(client.kv_client())))
        }
        #[cfg(not(feature = "etcd"))]
        bail!("built without the `etcd` feature: cargo run --features etcd ...")
    } else {
        bail!("say what to drive: --cluster ADDRS, --embedded, or --etcd ENDPOINTS");
    };
    let result = runtime.block_on(load::run(system, bound, &driver, workload, &opts))?;
    println!("{}", result.line());
    if let Some(path) = args.json {
        std::fs::write(path, serde_json::to_vec_pretty(&result)?)?;
    }
    Ok(())
}
