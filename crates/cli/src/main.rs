//! `boundkv`: the command-line tool of boundkv.
//!
//! ```text
//! boundkv [--clock SOURCE] clock [--watch] [--interval 1s] [--count N] [--json]
//! boundkv [--clock SOURCE] demo [--accounts N] [--threads N] [--duration 10s] [--data DIR]
//! boundkv [--clock SOURCE] up [--dir DIR] [--nodes N]          a local cluster on 127.0.0.1
//! boundkv [--clock SOURCE] --data DIR serve --id N ...          one node of a cluster
//! boundkv [TARGET] put KEY VALUE
//! boundkv [TARGET] get KEY [--at TS | --max-staleness DURATION]
//! boundkv [TARGET] delete KEY
//! boundkv [TARGET] scan [FROM] [TO] [--limit N] [--at TS | --max-staleness D]
//! boundkv [TARGET] txn 'get a; put b 2; delete c'
//! boundkv [TARGET] status
//! boundkv [--cluster ADDRS] member add ID=PEER_ADDR/CLIENT_ADDR | member remove ID
//! ```
//!
//! TARGET is `--cluster ADDRS` (a running cluster), `--data DIR` (an embedded database), or
//! nothing: the local cluster `boundkv up` runs.
//!
//! Every command that needs a clock takes `--clock SOURCE` (or `BOUNDKV_CLOCK`):
//! `clockbound` (the default: the ClockBound daemon's segment at `/var/run/clockbound/shm0`),
//! `clockbound:PATH`, or `system:BOUND` (the system clock with an assumed bound, e.g.
//! `system:500us`). Logs go to stderr; set their level with `RUST_LOG` (default `warn`).

mod clock_args;
mod cmd;
mod data_args;
mod fmt;
mod local;
mod target;

use clap::{Parser, Subcommand};

use clock_args::ClockArgs;
use data_args::DataArgs;
use target::{ClusterArgs, Target};

/// boundkv: a Spanner-style transactional key-value store with commit wait on AWS ClockBound.
#[derive(Parser, Debug)]
#[command(name = "boundkv", version, propagate_version = true)]
#[command(long_about = "boundkv: a Spanner-style transactional key-value store.\n\n\
    Every replica reads a bounded time interval [earliest, latest] from the AWS ClockBound \
    daemon's shared memory; read-write transactions commit at `latest` and are acknowledged only \
    once `earliest` has passed their timestamp (commit wait), which makes the store externally \
    consistent.\n\n\
    Without a ClockBound daemon, pass `--clock system:500us` (or set BOUNDKV_CLOCK) to run on \
    the system clock with an assumed bound.")]
struct Cli {
    #[command(flatten)]
    clock: ClockArgs,

    #[command(flatten)]
    data: DataArgs,

    #[command(flatten)]
    cluster: ClusterArgs,

    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Show the clock boundkv would use: source, status, earliest, latest and bound.
    #[command(long_about = "Show the clock boundkv would use: its source, status, the interval \
        [earliest, latest] that contains true time, and its half-width (the bound).\n\n\
        For the ClockBound source it also shows the segment's raw state: generation, how long \
        ago the daemon last measured the bound, the bound at that moment, the drift allowance \
        and whether the VMClock disruption check is on.\n\n\
        Exit status: 0 when the clock is usable for issuing timestamps, 1 when it is not \
        (an error, a status of Unknown or Disrupted, or a bound above the 1 s ceiling), 2 on bad \
        arguments.")]
    Clock(cmd::clock::ClockCommand),
    /// Run a bank-transfer workload on an embedded database and show what boundkv does.
    #[command(long_about = "Run a bank-transfer workload on an embedded database: writer threads \
        move money between accounts in read-write transactions while a reader checks, in \
        read-only snapshots, that the total never changes. Prints commits per second, commit \
        latency, the commit-wait distribution against the clock's bound, and the verdict.\n\n\
        Uses a fresh temporary database unless --data is given. Exit status 0 when every \
        snapshot saw the right total.")]
    Demo(cmd::demo::Demo),
    /// Start a local cluster on 127.0.0.1 (three nodes by default) as child processes.
    #[command(long_about = "Start a local cluster on 127.0.0.1 (three nodes by default) as child \
        processes of this one, with data and logs under --dir. Prints how to connect, then runs \
        until Ctrl-C or SIGTERM, when it stops every node gracefully. Running it again on the same \
        directory restarts the same cluster with its data.\n\n\
        While it runs, the key-value commands (put, get, scan, txn, status, member) find the \
        cluster by themselves; elsewhere pass --cluster with the addresses it prints.")]
    Up(cmd::up::Up),
    /// Run one node of a cluster (see --help for the settings).
    #[command(
        long_about = "Run one node of a boundkv cluster: a Raft replica that serves clients \
        on --listen-client and its peers on --listen-peer, with its data in --data DIR.\n\n\
        To found a new cluster, start every founding node with the same --initial-cluster list. \
        To grow one, start the new node without --initial-cluster and add it with \
        `boundkv member add`. Settings come from flags, environment variables, then a --config \
        TOML file, then defaults. SIGTERM or Ctrl-C shuts down gracefully: requests in flight \
        finish, the data is flushed."
    )]
    Serve(Box<cmd::serve::Serve>),
    /// Set KEY to VALUE in a transaction of its own; prints the commit timestamp and commit wait.
    Put(cmd::kv::Put),
    /// Print the value of KEY (exit status 1 if there is none).
    Get(cmd::kv::Get),
    /// Delete KEY in a transaction of its own.
    Delete(cmd::kv::Delete),
    /// Print the pairs from FROM (inclusive) to TO (exclusive), one per line, tab-separated.
    Scan(cmd::kv::Scan),
    /// Run a short script of get/put/delete/scan statements as one atomic transaction.
    Txn(cmd::kv::TxnCmd),
    /// Show an embedded database's storage and clock, or a cluster's members, leader and clocks.
    Status(cmd::kv::Status),
    /// Add or remove a cluster member.
    Member(cmd::cluster::MemberCmd),
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    init_logging();
    let (clock, data, cluster) = (&cli.clock, &cli.data, &cli.cluster);
    let target = || Target::choose(cluster, data, clock);
    let result = match &cli.command {
        Command::Clock(c) => c.run(clock, cluster, data),
        Command::Demo(c) => c.run(clock, data),
        Command::Up(c) => c.run(clock),
        Command::Serve(c) => c.run(clock, data),
        Command::Put(c) => target().and_then(|t| c.run(t)),
        Command::Get(c) => target().and_then(|t| c.run(t)),
        Command::Delete(c) => target().and_then(|t| c.run(t)),
        Command::Scan(c) => target().and_then(|t| c.run(t)),
        Command::Txn(c) => target().and_then(|t| c.run(t)),
        Command::Status(c) => target().and_then(|t| c.run(t)),
        Command::Member(c) => Target::cluster_only(cluster, data, "member").and_then(|t| c.run(t)),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::from(1)
        }
    }
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}
