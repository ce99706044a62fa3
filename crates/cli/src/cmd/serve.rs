//! `boundkv serve`: run one node of a cluster.
//!
//! Settings come from flags, then environment variables (`BOUNDKV_*`, shown in `--help`), then
//! an optional TOML file (`--config FILE`), then defaults, in that order of precedence. The file
//! uses the flags' long names with `-` or `_`:
//!
//! ```toml
//! id = 1
//! listen-client = "127.0.0.1:7001"
//! listen-peer = "127.0.0.1:7101"
//! initial-cluster = "1=127.0.0.1:7101/127.0.0.1:7001,2=127.0.0.1:7102/127.0.0.1:7002,3=127.0.0.1:7103/127.0.0.1:7003"
//! data = "/var/lib/boundkv/node1"
//! metrics = "127.0.0.1:9001"
//! clock = "clockbound"
//! leap = "step"
//! lease = "1s"
//! ```

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use boundkv_clockbound::{ClockSource, LeapPolicy};
use boundkv_server::{Server, ServerConfig, parse_members};
use boundkv_storage::Durability;
use clap::Args;
use serde::Deserialize;

use crate::clock_args::{ClockArgs, LEAP_ENV};
use crate::data_args::DataArgs;

/// The file in a node's data directory where its step guard remembers a leap second it is
/// absorbing.
pub(crate) const LEAP_RECORD_FILE: &str = "leap-second";

/// The environment variable that must be set to `1` for the test-only unsafe flags.
pub(crate) const ALLOW_UNSAFE_ENV: &str = "BOUNDKV_ALLOW_UNSAFE";

/// Below this GC retention a resent commit may outlive its transaction record: the node warns
/// (see `--gc-retention`).
const MIN_SAFE_GC_RETENTION: Duration = Duration::from_secs(60);

/// `boundkv serve`.
#[derive(Args, Debug, Clone)]
pub(crate) struct Serve {
    /// This node's id: a number, unique in the cluster, never 0.
    #[arg(long, env = "BOUNDKV_NODE_ID", value_name = "N")]
    id: Option<u64>,
    /// Where to listen for clients [default: 127.0.0.1:7001].
    #[arg(long, env = "BOUNDKV_LISTEN_CLIENT", value_name = "ADDR")]
    listen_client: Option<SocketAddr>,
    /// Where to listen for Raft traffic from the other nodes [default: 127.0.0.1:7101].
    #[arg(long, env = "BOUNDKV_LISTEN_PEER", value_name = "ADDR")]
    listen_peer: Option<SocketAddr>,
    /// The peer address the other nodes should dial to reach this node, when it is not
    /// --listen-peer (behind NAT, a proxy, or a host name) [default: this node's entry in
    /// --initial-cluster, else --listen-peer].
    #[arg(long, env = "BOUNDKV_ADVERTISE_PEER", value_name = "HOST:PORT")]
    advertise_peer: Option<String>,
    /// The founding members of a NEW cluster, the same list on every founding node:
    /// `ID=PEER_ADDR/CLIENT_ADDR,...`, e.g.
    /// `1=127.0.0.1:7101/127.0.0.1:7001,2=127.0.0.1:7102/127.0.0.1:7002`; a member whose clock
    /// smears leap seconds ends in `/smear` (each node's own entry must match its --leap, and
    /// every member should have the same policy). Ignored once the node
    /// has data. Leave it out on a node that joins an existing cluster (add it with
    /// `boundkv member add`).
    #[arg(long, env = "BOUNDKV_INITIAL_CLUSTER", value_name = "MEMBERS")]
    initial_cluster: Option<String>,
    /// The cluster's name; nodes of another cluster are refused [default: boundkv].
    #[arg(long, env = "BOUNDKV_CLUSTER_NAME", value_name = "NAME")]
    cluster_name: Option<String>,
    /// Serve Prometheus metrics at http://ADDR/metrics.
    #[arg(long, env = "BOUNDKV_METRICS", value_name = "ADDR")]
    metrics: Option<SocketAddr>,
    /// What an acknowledged write survives: `sync` (fdatasync; power loss) or `buffered`
    /// (process crash only; for benchmarks) [default: sync].
    #[arg(long, env = "BOUNDKV_DURABILITY", value_name = "MODE", value_parser = parse_durability)]
    durability: Option<Durability>,
    /// Raft's tick [default: 50ms]; elections start after 20-40 ticks without a leader.
    #[arg(long, env = "BOUNDKV_TICK", value_parser = humantime::parse_duration, value_name = "DURATION")]
    tick: Option<Duration>,
    /// How long a quorum's confirmation keeps a leader's lease valid [default: 1s]. A new leader
    /// waits this long before its first timestamp. The lease is renewed every fifth of it, and it
    /// lasts from one renewal to the next only while 2 × clock bound + renewal ≤ lease: clock
    /// bounds above 0.4 × the lease are unusable (at most ±400ms with the default).
    #[arg(long, env = "BOUNDKV_LEASE", value_parser = humantime::parse_duration, value_name = "DURATION")]
    lease: Option<Duration>,
    /// How often the leader sends every member a closed timestamp (beside the log; nothing is
    /// written). Reads at `latest` on a follower ask for one at once and do not wait for it;
    /// stale and exact reads there may wait up to this long [default: 25ms].
    #[arg(long, env = "BOUNDKV_CLOSE_INTERVAL", value_parser = humantime::parse_duration, value_name = "DURATION")]
    close_interval: Option<Duration>,
    /// How long a follower waits to catch up to a read before answering that it is behind
    /// [default: 2s].
    #[arg(long, env = "BOUNDKV_FOLLOWER_WAIT", value_parser = humantime::parse_duration, value_name = "DURATION")]
    follower_wait: Option<Duration>,
    /// How far back reads may go: versions older than this that no newer read can see are
    /// deleted on every node, and reads below the horizon are refused. `0` keeps every version
    /// [default: 1h]. Set the same on every node (the leader's counts). It is also how long a
    /// resent commit is recognised as the same transaction: keep it well above the clients'
    /// resend window (the boundkv client resends for up to 30 s), or a late resend may apply
    /// twice; below 1 minute the node warns at start.
    #[arg(long, env = "BOUNDKV_GC_RETENTION", value_parser = humantime::parse_duration, value_name = "DURATION")]
    gc_retention: Option<Duration>,
    /// How often the leader raises the GC horizon [default: 1m].
    #[arg(long, env = "BOUNDKV_GC_INTERVAL", value_parser = humantime::parse_duration, value_name = "DURATION")]
    gc_interval: Option<Duration>,
    /// A TOML file with any of these settings (flags and environment take precedence).
    #[arg(long, env = "BOUNDKV_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,
    /// Test only: acknowledge commits without commit wait. Breaks external consistency.
    /// Refused unless BOUNDKV_ALLOW_UNSAFE=1.
    #[arg(long, hide = true)]
    unsafe_skip_commit_wait: bool,
    /// Test only: read the clock without the step guard (a clock that steps or lies reaches
    /// commit wait, leases and read timestamps). Breaks external consistency under clock faults.
    /// Refused unless BOUNDKV_ALLOW_UNSAFE=1.
    #[arg(long, hide = true)]
    unsafe_no_step_guard: bool,
    /// Test only: the peer clock checks measure but never fence (a clock that lies
    /// consistently is trusted). Refused unless BOUNDKV_ALLOW_UNSAFE=1.
    #[arg(long, hide = true)]
    unsafe_no_peer_clock_checks: bool,
}

/// The settings a `--config` file may hold.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct FileConfig {
    #[serde(alias = "node_id", alias = "node-id")]
    id: Option<u64>,
    #[serde(alias = "listen_client")]
    listen_client: Option<SocketAddr>,
    #[serde(alias = "listen_peer")]
    listen_peer: Option<SocketAddr>,
    #[serde(alias = "advertise_peer")]
    advertise_peer: Option<String>,
    #[serde(alias = "initial_cluster")]
    initial_cluster: Option<String>,
    #[serde(alias = "cluster_name")]
    cluster_name: Option<String>,
    metrics: Option<SocketAddr>,
    data: Option<PathBuf>,
    clock: Option<String>,
    leap: Option<String>,
    durability: Option<String>,
    tick: Option<String>,
    lease: Option<String>,
    #[serde(alias = "close_interval")]
    close_interval: Option<String>,
    #[serde(alias = "follower_wait")]
    follower_wait: Option<String>,
    #[serde(alias = "gc_retention")]
    gc_retention: Option<String>,
    #[serde(alias = "gc_interval")]
    gc_interval: Option<String>,
}

fn parse_durability(s: &str) -> Result<Durability, String> {
    match s {
        "sync" => Ok(Durability::Sync),
        "buffered" => Ok(Durability::Buffered),
        other => Err(format!("unknown durability `{other}`: use `sync` or `buffered`")),
    }
}

fn file_duration(what: &str, v: &Option<String>) -> anyhow::Result<Option<Duration>> {
    v.as_deref()
        .map(|s| {
            humantime::parse_duration(s).with_context(|| format!("`{what}` in the config file"))
        })
        .transpose()
}

impl Serve {
    /// Builds the server's settings (flags > environment > file > defaults).
    pub(crate) fn config(
        &self,
        clock: &ClockArgs,
        data: &DataArgs,
    ) -> anyhow::Result<ServerConfig> {
        let file: FileConfig = match &self.config {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("reading the config file {}", path.display()))?;
                toml::from_str(&text)
                    .with_context(|| format!("parsing the config file {}", path.display()))?
            }
            None => FileConfig::default(),
        };
        let id = self.id.or(file.id).ok_or_else(|| {
            anyhow!("no node id: pass --id N (or set BOUNDKV_NODE_ID, or `id` in the config file)")
        })?;
        if id == 0 {
            bail!("the node id must not be 0");
        }
        let client = self
            .listen_client
            .or(file.listen_client)
            .unwrap_or_else(|| "127.0.0.1:7001".parse().expect("a valid address"));
        let peer = self
            .listen_peer
            .or(file.listen_peer)
            .unwrap_or_else(|| "127.0.0.1:7101".parse().expect("a valid address"));
        let data_dir = data.data.clone().or(file.data).ok_or_else(|| {
            anyhow!("no data directory: pass --data DIR (or set BOUNDKV_DATA, or `data` in the config file)")
        })?;
        // The clock: --clock / BOUNDKV_CLOCK unless left at its default and the file names one.
        let clock_args = match (&file.clock, clock.clock.is_default_clockbound()) {
            (Some(src), true) if std::env::var_os(boundkv_clockbound::CLOCK_ENV).is_none() => {
                ClockArgs {
                    clock: src
                        .parse::<ClockSource>()
                        .map_err(|e| anyhow!("`clock` in the config file: {e}"))?,
                    vmclock: clock.vmclock.clone(),
                    leap: clock.leap,
                }
            }
            _ => clock.clone(),
        };
        // The leap policy: --leap / BOUNDKV_LEAP unless left at its default and the file names one.
        let mut clock_args = clock_args;
        if let Some(leap) = &file.leap
            && clock_args.leap == LeapPolicy::default()
            && std::env::var_os(LEAP_ENV).is_none()
        {
            clock_args.leap =
                leap.parse().map_err(|e| anyhow!("`leap` in the config file: {e}"))?;
        }
        let mut config = match clock_args.clock {
            // The cluster clock is built around the Raft node: nothing to open here, and no
            // step guard (it runs on the monotonic clock, which does not step).
            ClockSource::Cluster { rho_ppm } => {
                let cluster = ServerConfig::cluster_clock(id, rho_ppm);
                let mut config = ServerConfig::new(id, client, peer, data_dir, cluster.clone());
                config.set_cluster_clock(cluster);
                config
            }
            _ => {
                // The step guard remembers a leap second it is absorbing in the data directory,
                // so that a restart inside the absorption goes on correcting the clock as the
                // other members do.
                let opened =
                    clock_args.open_recording_leaps(Some(&data_dir.join(LEAP_RECORD_FILE)))?;
                let clock = if self.unsafe_no_step_guard {
                    if std::env::var(ALLOW_UNSAFE_ENV).as_deref() != Ok("1") {
                        bail!(
                            "--unsafe-no-step-guard breaks external consistency under clock faults \
                             and exists only for the consistency suite's mutation checks; set \
                             {ALLOW_UNSAFE_ENV}=1 to allow it"
                        );
                    }
                    tracing::error!("UNSAFE: the clock is read without its step guard");
                    opened.unguarded
                } else {
                    opened.clock
                };
                ServerConfig::new(id, client, peer, data_dir, clock)
            }
        };
        config.leap = clock_args.leap;
        if self.unsafe_no_peer_clock_checks {
            if std::env::var(ALLOW_UNSAFE_ENV).as_deref() != Ok("1") {
                bail!(
                    "--unsafe-no-peer-clock-checks breaks external consistency under clock faults \
                     and exists only for the consistency suite's mutation checks; set \
                     {ALLOW_UNSAFE_ENV}=1 to allow it"
                );
            }
            tracing::error!("UNSAFE: the peer clock checks never fence this node");
            if let Some(checks) = config.raft.clock_checks.as_mut() {
                checks.unsafe_never_fence = true;
            }
        }
        if let Some(list) = self.initial_cluster.as_ref().or(file.initial_cluster.as_ref()) {
            config.initial_cluster = parse_members(list)?;
        }
        config.advertise_peer = self.advertise_peer.clone().or(file.advertise_peer);
        if let Some(name) = self.cluster_name.clone().or(file.cluster_name) {
            config.cluster = name;
        }
        config.metrics_listen = self.metrics.or(file.metrics);
        if let Some(d) = self.durability {
            config.durability = d;
        } else if let Some(d) = &file.durability {
            config.durability = parse_durability(d).map_err(|e| anyhow!("config file: {e}"))?;
        }
        if let Some(t) = self.tick.or(file_duration("tick", &file.tick)?) {
            config.raft.tick = t;
        }
        if let Some(l) = self.lease.or(file_duration("lease", &file.lease)?) {
            config.raft.lease = l;
            config.raft.lease_renewal = (l / 5).max(Duration::from_millis(10));
        }
        if let Some(c) =
            self.close_interval.or(file_duration("close-interval", &file.close_interval)?)
        {
            config.close_interval = c;
        }
        if let Some(w) = self.follower_wait.or(file_duration("follower-wait", &file.follower_wait)?)
        {
            config.follower_wait = w;
        }
        if let Some(r) = self.gc_retention.or(file_duration("gc-retention", &file.gc_retention)?) {
            config.gc_retention = (!r.is_zero()).then_some(r);
            if !r.is_zero() && r < MIN_SAFE_GC_RETENTION {
                tracing::warn!(
                    gc_retention = %humantime::format_duration(r),
                    "the GC retention is below 1 minute: a commit resent later than that after its \
                     first attempt (the boundkv client resends for up to 30 s) is no longer \
                     recognised and may apply twice"
                );
            }
        }
        if let Some(i) = self.gc_interval.or(file_duration("gc-interval", &file.gc_interval)?) {
            if i.is_zero() {
                bail!("--gc-interval must be above 0 (use --gc-retention 0 to keep every version)");
            }
            config.gc_interval = i;
        }
        if self.unsafe_skip_commit_wait {
            if std::env::var(ALLOW_UNSAFE_ENV).as_deref() != Ok("1") {
                bail!(
                    "--unsafe-skip-commit-wait breaks external consistency and exists only for the \
                     consistency suite's mutation checks; set {ALLOW_UNSAFE_ENV}=1 to allow it"
                );
            }
            config.unsafe_skip_commit_wait = true;
        }
        config.validate()?;
        Ok(config)
    }

    pub(crate) fn run(&self, clock: &ClockArgs, data: &DataArgs) -> anyhow::Result<ExitCode> {
        let config = self.config(clock, data)?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .thread_name("boundkv-server")
            .build()
            .context("starting the runtime")?;
        runtime.block_on(async move {
            let server = Server::start(config).await?;
            eprintln!(
                "boundkv node {} serving clients on {} (peers on {}{})",
                server.replica().id(),
                server.client_addr(),
                server.peer_addr(),
                server
                    .metrics_addr()
                    .map(|m| format!(", metrics on http://{m}/metrics"))
                    .unwrap_or_default()
            );
            server.run_until_signal().await;
            anyhow::Ok(())
        })?;
        Ok(ExitCode::SUCCESS)
    }
}
