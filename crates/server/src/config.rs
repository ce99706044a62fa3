//! A server's settings ([`ServerConfig`]) and the one text format users write members in.
//!
//! # Members
//!
//! A member is written `ID=PEER_ADDRESS/CLIENT_ADDRESS`: its id, where it listens for Raft
//! traffic from other members, and where it listens for clients; a member whose clock smears
//! leap seconds (`--leap smear`) adds `/smear` (`/step`, the default, may be written too). A
//! cluster is a comma-separated list of them:
//!
//! ```text
//! --initial-cluster 1=127.0.0.1:7101/127.0.0.1:7001,2=127.0.0.1:7102/127.0.0.1:7002,3=127.0.0.1:7103/127.0.0.1:7003
//! ```
//!
//! Every founding member is started with the same list (it becomes the first configuration of
//! the group); a member that joins later is started without one and added with
//! `boundkv member add`.
//!
//! # The data directory
//!
//! ```text
//! DIR/identity   "boundkv-node v1\ncluster NAME\nnode ID\n": which node of which cluster this is
//! DIR/db/        the sled database: the Raft log, the hard state, and the MVCC data
//! ```
//!
//! The identity file is written on first start and checked on every later one, so a data
//! directory is never started as another node or in another cluster by mistake.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use boundkv_clockbound::{Clock, ClockPolicy, LeapPolicy};
use boundkv_consensus::cluster_clock::{ClusterClock, ClusterClockOptions};
use boundkv_consensus::node::NodeConfig;
use boundkv_storage::Durability;
use boundkv_txn::replica::{Member, ReplicaOptions, ReplicaOptionsError};
use boundkv_txn::{Limits, TxnOptions};

/// Everything a server needs to start.
#[derive(Clone)]
pub struct ServerConfig {
    /// This node's id (non-zero, unique in the cluster).
    pub id: u64,
    /// The cluster's name; peers of another cluster are refused. Default `boundkv`.
    pub cluster: String,
    /// Where to listen for clients.
    pub client_listen: SocketAddr,
    /// Where to listen for peers.
    pub peer_listen: SocketAddr,
    /// The peer address the other nodes dial to reach this one, sent to them in every `Hello`
    /// (`None`: this node's entry in `initial_cluster`, else the bound `peer_listen`). Differs from
    /// `peer_listen` behind NAT, a proxy, or a name.
    pub advertise_peer: Option<String>,
    /// The founding members, for a brand-new cluster (empty: join an existing one, or restart).
    pub initial_cluster: Vec<Member>,
    /// How this node's clock handles a leap second (`--leap`); the membership records it, and
    /// a node whose policy differs from its record refuses to start. Default step.
    pub leap: LeapPolicy,
    /// The data directory.
    pub data_dir: PathBuf,
    /// Where to serve Prometheus metrics (`GET /metrics`), if anywhere.
    pub metrics_listen: Option<SocketAddr>,
    /// The clock, and a description of it for status and logs.
    pub clock: Arc<dyn Clock>,
    /// The cluster clock, when it is `clock` ([`ServerConfig::set_cluster_clock`]).
    pub cluster_clock: Option<Arc<ClusterClock>>,
    /// Which clock readings may be used.
    pub policy: ClockPolicy,
    /// What an acknowledged write survives. Default power loss ([`Durability::Sync`]).
    pub durability: Durability,
    /// Raft timing: tick, election and heartbeat ticks, lease.
    pub raft: NodeConfig,
    /// Transaction limits.
    pub limits: Limits,
    /// How often the leader sends every member a closed timestamp (beside the log). Follower
    /// reads at `latest` ask for one at once; stale and exact ones may wait up to this long.
    pub close_interval: Duration,
    /// How long a follower waits to catch up to a read before answering `FollowerBehind`.
    pub follower_wait: Duration,
    /// How long a commit may take before the client hears `OutcomeUnknown`.
    pub commit_timeout: Duration,
    /// How long shutdown waits for requests in flight.
    pub shutdown_grace: Duration,
    /// How far back reads may go before old versions are collected (`None`: keep every
    /// version). Default 1 h.
    pub gc_retention: Option<Duration>,
    /// How often the leader raises the GC horizon. Default 60 s.
    pub gc_interval: Duration,
    /// The largest request frame accepted from a client (at most `boundkv_wire::MAX_FRAME_LEN`).
    pub max_request_frame: usize,
    /// Requests in flight per client connection before the server stops reading more.
    pub max_in_flight_per_connection: usize,
    /// **Test only; breaks external consistency.** Acknowledge commits without commit wait.
    pub unsafe_skip_commit_wait: bool,
}

impl ServerConfig {
    /// Settings with the defaults for everything but what must be given.
    pub fn new(
        id: u64,
        client_listen: SocketAddr,
        peer_listen: SocketAddr,
        data_dir: impl Into<PathBuf>,
        clock: Arc<dyn Clock>,
    ) -> Self {
        ServerConfig {
            id,
            cluster: "boundkv".into(),
            client_listen,
            peer_listen,
            advertise_peer: None,
            initial_cluster: Vec::new(),
            leap: LeapPolicy::Step,
            data_dir: data_dir.into(),
            metrics_listen: None,
            clock,
            cluster_clock: None,
            policy: ClockPolicy::default(),
            durability: Durability::Sync,
            raft: NodeConfig { id, ..NodeConfig::default() },
            limits: Limits::default(),
            close_interval: Duration::from_millis(25),
            follower_wait: Duration::from_secs(2),
            commit_timeout: Duration::from_secs(10),
            shutdown_grace: Duration::from_secs(10),
            gc_retention: Some(Duration::from_secs(3600)),
            gc_interval: Duration::from_secs(60),
            max_request_frame: boundkv_wire::MAX_FRAME_LEN,
            max_in_flight_per_connection: 1024,
            unsafe_skip_commit_wait: false,
        }
    }
}

impl ServerConfig {
    /// The replica's settings these make.
    pub fn replica_options(&self) -> ReplicaOptions {
        ReplicaOptions {
            node: NodeConfig { id: self.id, ..self.raft.clone() },
            txn: TxnOptions {
                limits: self.limits.clone(),
                unsafe_skip_commit_wait: self.unsafe_skip_commit_wait,
                ..TxnOptions::default()
            },
            policy: self.policy.clone(),
            close_interval: self.close_interval,
            follower_wait: self.follower_wait,
            commit_timeout: self.commit_timeout,
            gc_retention: self.gc_retention,
            gc_interval: self.gc_interval,
            founding: (!self.initial_cluster.is_empty()).then(|| self.initial_cluster.clone()),
            leap: self.leap,
            cluster_clock: self.cluster_clock.clone(),
            ..ReplicaOptions::default()
        }
    }

    /// The cluster clock of member `id` (`--clock cluster:RHO`), on real time: every member's
    /// time derives from its Raft leader's monotonic clock, assuming only that no oscillator
    /// drifts faster than `rho_ppm` (`boundkv_consensus::cluster_clock`). Hand it to
    /// [`ServerConfig::set_cluster_clock`].
    pub fn cluster_clock(id: u64, rho_ppm: u32) -> Arc<ClusterClock> {
        let options = ClusterClockOptions { rho_ppm, ..ClusterClockOptions::default() };
        Arc::new(ClusterClock::real(id, options))
    }

    /// Runs this node on `cluster` ([`ServerConfig::cluster_clock`]), which replaces `clock`.
    /// The peer clock checks are off under it: every interval derives from the leader's, and
    /// the estimate's own consistency is the check.
    pub fn set_cluster_clock(&mut self, cluster: Arc<ClusterClock>) {
        self.clock = cluster.clone();
        self.cluster_clock = Some(cluster);
        self.raft.clock_checks = None;
    }

    /// Refuses settings the replica cannot work with ([`ReplicaOptions::validate`]: a lease no
    /// clock bound fits), before anything is opened. [`crate::Server::start`] calls it first.
    pub fn validate(&self) -> Result<(), ReplicaOptionsError> {
        self.replica_options().validate()
    }
}

impl std::fmt::Debug for ServerConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerConfig")
            .field("id", &self.id)
            .field("cluster", &self.cluster)
            .field("client_listen", &self.client_listen)
            .field("peer_listen", &self.peer_listen)
            .field("advertise_peer", &self.advertise_peer)
            .field("gc_retention", &self.gc_retention)
            .field("gc_interval", &self.gc_interval)
            .field("initial_cluster", &self.initial_cluster)
            .field("data_dir", &self.data_dir)
            .field("metrics_listen", &self.metrics_listen)
            .field("clock", &self.clock.describe())
            .field("durability", &self.durability)
            .finish_non_exhaustive()
    }
}

/// Why a member list does not parse.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid member `{spec}`: {why} (expected ID=PEER_ADDRESS/CLIENT_ADDRESS[/smear], e.g. 1=127.0.0.1:7101/127.0.0.1:7001)"
)]
pub struct MemberSpecError {
    /// The text.
    pub spec: String,
    /// What is wrong with it.
    pub why: String,
}

/// Parses one member, `ID=PEER_ADDRESS/CLIENT_ADDRESS[/step|/smear]`.
pub fn parse_member(spec: &str) -> Result<Member, MemberSpecError> {
    let err = |why: &str| MemberSpecError { spec: spec.into(), why: why.into() };
    let (id, addresses) = spec.trim().split_once('=').ok_or_else(|| err("no `=`"))?;
    let id: u64 = id.trim().parse().map_err(|_| err("the id is not a number"))?;
    if id == 0 {
        return Err(err("id 0 is reserved"));
    }
    let (peer, rest) =
        addresses.split_once('/').ok_or_else(|| err("no `/` between the addresses"))?;
    let (client, leap) = match rest.split_once('/') {
        Some((client, leap)) => (client, leap.parse().map_err(|e| err(&format!("{e}")))?),
        None => (rest, LeapPolicy::Step),
    };
    for (what, a) in [("peer", peer), ("client", client)] {
        if !a.contains(':') || a.trim().is_empty() {
            return Err(err(&format!("the {what} address `{a}` is not host:port")));
        }
    }
    Ok(Member { id, peer_address: peer.trim().into(), client_address: client.trim().into(), leap })
}

/// Parses a comma-separated member list; ids must be distinct.
pub fn parse_members(list: &str) -> Result<Vec<Member>, MemberSpecError> {
    let mut members: Vec<Member> = Vec::new();
    for spec in list.split(',').filter(|s| !s.trim().is_empty()) {
        let m = parse_member(spec)?;
        if members.iter().any(|o| o.id == m.id) {
            return Err(MemberSpecError { spec: spec.into(), why: "the id appears twice".into() });
        }
        members.push(m);
    }
    Ok(members)
}

/// Writes a member list in the format [`parse_members`] reads.
pub fn format_members(members: &[Member]) -> String {
    members
        .iter()
        .map(|m| match m.leap {
            LeapPolicy::Step => format!("{}={}/{}", m.id, m.peer_address, m.client_address),
            LeapPolicy::Smear => format!("{}={}/{}/smear", m.id, m.peer_address, m.client_address),
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// Why a data directory cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// The directory belongs to another node or cluster.
    #[error(
        "{dir} holds node {found_node} of cluster `{found_cluster}`, not node {node} of `{cluster}`; \
         use another --data directory"
    )]
    Mismatch {
        /// The directory.
        dir: String,
        /// What it holds.
        found_node: u64,
        /// Its cluster.
        found_cluster: String,
        /// What was asked for.
        node: u64,
        /// The cluster asked for.
        cluster: String,
    },
    /// The identity file cannot be read or written, or does not parse.
    #[error("{0}")]
    Io(String),
}

const IDENTITY_HEADER: &str = "boundkv-node v1";

/// Checks (or, in a new directory, writes and syncs) the identity file.
pub fn check_identity(dir: &Path, cluster: &str, node: u64) -> Result<(), IdentityError> {
    let io = |e: std::io::Error| IdentityError::Io(format!("{}: {e}", dir.display()));
    std::fs::create_dir_all(dir).map_err(io)?;
    let path = dir.join("identity");
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            let mut lines = text.lines();
            let bad = || IdentityError::Io(format!("{} does not parse", path.display()));
            if lines.next() != Some(IDENTITY_HEADER) {
                return Err(bad());
            }
            let found_cluster =
                lines.next().and_then(|l| l.strip_prefix("cluster ")).ok_or_else(bad)?.to_string();
            let found_node: u64 = lines
                .next()
                .and_then(|l| l.strip_prefix("node "))
                .and_then(|n| n.parse().ok())
                .ok_or_else(bad)?;
            if found_cluster != cluster || found_node != node {
                return Err(IdentityError::Mismatch {
                    dir: dir.display().to_string(),
                    found_node,
                    found_cluster,
                    node,
                    cluster: cluster.into(),
                });
            }
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let tmp = dir.join("identity.tmp");
            std::fs::write(&tmp, format!("{IDENTITY_HEADER}\ncluster {cluster}\nnode {node}\n"))
                .map_err(io)?;
            std::fs::File::open(&tmp).and_then(|f| f.sync_all()).map_err(io)?;
            std::fs::rename(&tmp, &path).map_err(io)?;
            std::fs::File::open(dir).and_then(|d| d.sync_all()).map_err(io)?;
            Ok(())
        }
        Err(e) => Err(io(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn members_parse_and_format() {
        let list = "1=127.0.0.1:7101/127.0.0.1:7001, 2=h:2/h:3, 3=h:4/h:5/smear, 4=h:6/h:7/step";
        let members = parse_members(list).unwrap();
        assert_eq!(members.len(), 4);
        assert_eq!(members[1].client_address, "h:3");
        assert_eq!(members[1].leap, LeapPolicy::Step);
        assert_eq!(
            (members[2].client_address.as_str(), members[2].leap),
            ("h:5", LeapPolicy::Smear)
        );
        assert_eq!(members[3].leap, LeapPolicy::Step);
        assert_eq!(parse_members(&format_members(&members)).unwrap(), members);
        for bad in [
            "x=1:1/1:1",
            "0=a:1/a:2",
            "1=a:1",
            "1:a:1/a:2",
            "1=a/b:2",
            "1=a:1/b:2,1=c:3/d:4",
            "1=a:1/b:2/slew",
        ] {
            let e = parse_members(bad).unwrap_err();
            assert!(e.to_string().contains("expected ID=PEER_ADDRESS/CLIENT_ADDRESS"), "{e}");
        }
    }

    #[test]
    fn settings_that_leave_no_usable_lease_are_refused() {
        let clock: Arc<dyn Clock> = Arc::new(boundkv_clockbound::SimClock::real_time());
        let addr: SocketAddr = "127.0.0.1:0".parse().unwrap();
        let mut config = ServerConfig::new(1, addr, addr, "/nonexistent", clock);
        assert_eq!(config.validate(), Ok(()));
        // What `boundkv serve --lease 10ms` makes: renewed every 10 ms, no room for any bound.
        config.raft.lease = Duration::from_millis(10);
        config.raft.lease_renewal = Duration::from_millis(10);
        let e = config.validate().unwrap_err().to_string();
        assert!(
            e.contains("a lease of 10ms renewed every 10ms leaves no usable lease")
                && e.contains("--lease"),
            "{e}"
        );
    }

    #[test]
    fn identity_is_written_once_and_checked() {
        let dir = tempfile::tempdir().unwrap();
        check_identity(dir.path(), "c", 1).unwrap();
        check_identity(dir.path(), "c", 1).unwrap();
        let e = check_identity(dir.path(), "c", 2).unwrap_err();
        assert!(e.to_string().contains("holds node 1 of cluster `c`, not node 2"), "{e}");
        assert!(check_identity(dir.path(), "other", 1).is_err());
    }
}
