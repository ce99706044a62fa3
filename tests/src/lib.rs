//! Process-level testing of boundkv: a [`TestCluster`] of real `boundkv serve` processes on
//! 127.0.0.1, each with its own data directory and log, that tests kill (SIGKILL), stop
//! (SIGTERM), pause (SIGSTOP/SIGCONT) and restart on the same data.
//!
//! ```no_run
//! # async fn example() -> anyhow::Result<()> {
//! use boundkv_tests::{ClusterOptions, TestCluster};
//! let mut cluster = TestCluster::start(ClusterOptions::default())?;
//! let client = cluster.client().await?;
//! client.put("k", "v").await?;
//! let leader = cluster.leader().await?;
//! cluster.kill(leader);
//! client.put("k", "w").await?;      // the client finds the new leader
//! cluster.restart(leader)?;          // the old one catches up from the log
//! # Ok(()) }
//! ```
//!
//! The binary is the workspace's `boundkv` (built by `cargo test --workspace`, or built here with
//! `cargo build --bin boundkv` when it is missing). Every node logs to `DIR/node-N/node.log`;
//! a failing test prints the tail of each log.

pub mod check;
pub mod jepsen;

use std::collections::BTreeSet;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use boundkv_client::{Client, ClientOptions, ReadPreference, Role};

/// Where the `boundkv` binary is (building it if needed).
pub fn boundkv_bin() -> anyhow::Result<PathBuf> {
    if let Some(p) = std::env::var_os("BOUNDKV_BIN") {
        return Ok(PathBuf::from(p));
    }
    built("boundkv", &["-p", "boundkv-cli", "--bin", "boundkv"], false)
}

/// Where the bad-oscillator library (`tests/oscillator`) is (building it if needed): next to
/// the `boundkv` binary.
pub fn oscillator_lib() -> anyhow::Result<PathBuf> {
    let lib = boundkv_bin()?.with_file_name("libboundkv_oscillator.so");
    // Under cargo (the tests), build it every time (a no-op when it is fresh): a stale library
    // with another control-file layout than the runner's would drift the nodes' clocks wrong.
    let under_cargo = std::env::var_os("CARGO").is_some();
    if lib.exists() && !under_cargo {
        return Ok(lib);
    }
    built("libboundkv_oscillator.so", &["-p", "boundkv-oscillator"], under_cargo)
}

/// `file` in this build's target directory (`target/<profile>/`), built with `cargo build
/// ARGS` (in the same profile) if it is not there, or `always`.
fn built(file: &str, args: &[&str], always: bool) -> anyhow::Result<PathBuf> {
    // target/<profile>/deps/<test binary> -> target/<profile>/<file>
    let exe = std::env::current_exe()?;
    let profile_dir = exe
        .parent()
        .and_then(|deps| if deps.ends_with("deps") { deps.parent() } else { Some(deps) })
        .ok_or_else(|| anyhow!("cannot find the target directory from {}", exe.display()))?;
    let path = profile_dir.join(file);
    if always || !path.exists() {
        let release = profile_dir.ends_with("release");
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut cmd = Command::new(cargo);
        cmd.args(["build", "-q"]).args(args);
        if release {
            cmd.arg("--release");
        }
        let status = cmd.status().with_context(|| format!("building {file}"))?;
        if !status.success() || !path.exists() {
            bail!("could not build {}", path.display());
        }
    }
    Ok(path)
}

/// A free port on 127.0.0.1, never one this process was handed before.
///
/// The port is bound and released, so another process could take it in between (in practice
/// none does). Within this process the kernel may hand out the same ephemeral port twice,
/// and two nodes given one port would collide: one fails to bind and exits, and whatever asks
/// its address reaches the other (the likeliest cause of one CI failure, a `/metrics` page
/// without the metric every node exports), so the ports handed out are remembered and never
/// repeated.
pub fn free_port() -> u16 {
    static HANDED_OUT: std::sync::Mutex<BTreeSet<u16>> = std::sync::Mutex::new(BTreeSet::new());
    let mut handed_out = HANDED_OUT.lock().unwrap_or_else(|e| e.into_inner());
    loop {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("a free port");
        if handed_out.insert(port) {
            return port;
        }
    }
}

/// A node's `/metrics` page (`address` is its metrics address), the HTTP response whole.
pub fn scrape_metrics(address: &str) -> anyhow::Result<String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(address)?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")?;
    let mut body = String::new();
    s.read_to_string(&mut body)?;
    Ok(body)
}

/// The value of the sample `name` (with its labels, if any, exactly as exposed) in a
/// `/metrics` page.
pub fn metric_value(page: &str, name: &str) -> Option<f64> {
    page.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

/// Where and how one node runs, for clusters whose nodes need more than a port on 127.0.0.1
/// (the consistency suite's: a network namespace each, a clock segment and libfaketime each).
#[derive(Clone, Debug, Default)]
pub struct NodeSetup {
    /// The address the node listens on (default 127.0.0.1).
    pub host: Option<String>,
    /// Fixed ports (client, peer, metrics) instead of free ones on 127.0.0.1.
    pub ports: Option<(u16, u16, u16)>,
    /// The peer address the other nodes dial (`--advertise-peer`), when it is not the one the
    /// node listens on: the consistency suite's partition proxy stands there.
    pub advertise_peer: Option<String>,
    /// A command prefix the node runs under (e.g. `ip netns exec NS`).
    pub prefix: Vec<String>,
    /// Extra environment for this node.
    pub env: Vec<(String, String)>,
    /// This node's clock source, instead of the cluster's.
    pub clock: Option<String>,
}

/// Builds each node's [`NodeSetup`] from its id.
pub type SetupFn = std::sync::Arc<dyn Fn(u64) -> NodeSetup + Send + Sync>;

/// How to start a test cluster.
#[derive(Clone)]
pub struct ClusterOptions {
    /// Founding members.
    pub nodes: u64,
    /// The clock source every node uses.
    pub clock: String,
    /// Extra arguments for every `boundkv serve`.
    pub serve_args: Vec<String>,
    /// Extra environment for every node.
    pub env: Vec<(String, String)>,
    /// Per-node placement (see [`NodeSetup`]); `None`: every node on 127.0.0.1.
    pub setup: Option<SetupFn>,
    /// The cluster's base directory (default: a temporary directory, removed on drop).
    pub dir: Option<PathBuf>,
}

impl std::fmt::Debug for ClusterOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterOptions")
            .field("nodes", &self.nodes)
            .field("clock", &self.clock)
            .field("serve_args", &self.serve_args)
            .field("env", &self.env)
            .field("setup", &self.setup.is_some())
            .field("dir", &self.dir)
            .finish()
    }
}

impl Default for ClusterOptions {
    fn default() -> Self {
        ClusterOptions {
            nodes: 3,
            clock: "system:1ms".into(),
            serve_args: vec!["--tick".into(), "20ms".into(), "--lease".into(), "400ms".into()],
            env: Vec::new(),
            setup: None,
            dir: None,
        }
    }
}

/// One node's addresses and process.
#[derive(Debug)]
pub struct TestNode {
    /// Its id.
    pub id: u64,
    /// Client address.
    pub client: String,
    /// Peer address: the one the other nodes dial (see [`NodeSetup::advertise_peer`]).
    pub peer: String,
    /// The peer address the node listens on (the same as `peer` unless a proxy stands between).
    pub peer_listen: String,
    /// Metrics address.
    pub metrics: String,
    /// Its data directory.
    pub dir: PathBuf,
    child: Option<Child>,
    founding: bool,
}

/// Real `boundkv serve` processes (see the module docs). Killed when dropped.
pub struct TestCluster {
    base: tempfile::TempDir,
    /// A name of its own, so that a node of another test cluster that happens to get a port
    /// this one released cannot join it.
    name: String,
    keep: bool,
    options: ClusterOptions,
    /// The nodes, by id order.
    pub nodes: Vec<TestNode>,
    bin: PathBuf,
}

impl TestCluster {
    fn new_node(options: &ClusterOptions, base: &Path, id: u64, founding: bool) -> TestNode {
        let setup = options.setup.as_ref().map(|f| f(id)).unwrap_or_default();
        let host = setup.host.unwrap_or_else(|| "127.0.0.1".into());
        let (c, p, m) = setup.ports.unwrap_or_else(|| (free_port(), free_port(), free_port()));
        let peer_listen = format!("{host}:{p}");
        TestNode {
            id,
            client: format!("{host}:{c}"),
            peer: setup.advertise_peer.unwrap_or_else(|| peer_listen.clone()),
            peer_listen,
            metrics: format!("{host}:{m}"),
            dir: base.join(format!("node-{id}")),
            child: None,
            founding,
        }
    }

    /// Starts `options.nodes` founding members (use [`TestCluster::leader`] to wait for one to
    /// lead).
    pub fn start(options: ClusterOptions) -> anyhow::Result<TestCluster> {
        let base = match &options.dir {
            Some(dir) => {
                std::fs::create_dir_all(dir)?;
                tempfile::Builder::new().prefix("cluster-").tempdir_in(dir)?
            }
            None => tempfile::Builder::new().prefix("boundkv-cluster-").tempdir()?,
        };
        let nodes: Vec<TestNode> =
            (1..=options.nodes).map(|id| Self::new_node(&options, base.path(), id, true)).collect();
        let name = format!(
            "test-{}-{}",
            std::process::id(),
            base.path().file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default()
        );
        let mut cluster =
            TestCluster { base, name, keep: false, options, nodes, bin: boundkv_bin()? };
        for id in 1..=cluster.options.nodes {
            cluster.spawn(id)?;
        }
        Ok(cluster)
    }

    /// The cluster's base directory.
    pub fn dir(&self) -> &Path {
        self.base.path()
    }

    /// Keep the base directory (data and logs) when the cluster is dropped.
    pub fn keep_dir(&mut self) {
        self.keep = true;
    }

    fn initial_cluster(&self) -> String {
        self.nodes
            .iter()
            .filter(|n| n.founding)
            .map(|n| format!("{}={}/{}", n.id, n.peer, n.client))
            .collect::<Vec<_>>()
            .join(",")
    }

    fn node_mut(&mut self, id: u64) -> &mut TestNode {
        self.nodes.iter_mut().find(|n| n.id == id).expect("a node of the cluster")
    }

    /// The node with id `id`.
    pub fn node(&self, id: u64) -> &TestNode {
        self.nodes.iter().find(|n| n.id == id).expect("a node of the cluster")
    }

    fn spawn(&mut self, id: u64) -> anyhow::Result<()> {
        let initial = self.initial_cluster();
        let name = self.name.clone();
        let bin = self.bin.clone();
        let options = self.options.clone();
        let setup = options.setup.as_ref().map(|f| f(id)).unwrap_or_default();
        let node = self.node_mut(id);
        std::fs::create_dir_all(&node.dir)?;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(node.dir.join("node.log"))?;
        let mut args: Vec<String> = vec![
            "--clock".into(),
            setup.clock.clone().unwrap_or_else(|| options.clock.clone()),
            "--data".into(),
            node.dir.display().to_string(),
            "serve".into(),
            "--id".into(),
            id.to_string(),
            "--listen-client".into(),
            node.client.clone(),
            "--listen-peer".into(),
            node.peer_listen.clone(),
            "--metrics".into(),
            node.metrics.clone(),
            "--cluster-name".into(),
            name,
        ];
        if node.founding {
            args.extend(["--initial-cluster".into(), initial]);
        }
        if node.peer != node.peer_listen {
            args.extend(["--advertise-peer".into(), node.peer.clone()]);
        }
        args.extend(options.serve_args.iter().cloned());
        let mut cmd = match setup.prefix.split_first() {
            Some((program, rest)) => {
                let mut c = Command::new(program);
                c.args(rest).arg(&bin);
                c
            }
            None => Command::new(&bin),
        };
        cmd.args(&args)
            .env("RUST_LOG", std::env::var("BOUNDKV_TEST_LOG").unwrap_or_else(|_| "info".into()))
            .envs(options.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .envs(setup.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .env_remove("BOUNDKV_CLUSTER")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        node.child = Some(cmd.spawn().with_context(|| format!("starting node {id}"))?);
        Ok(())
    }

    /// Attaches `strace -f` to node `id` (all its threads), tracing the syscalls in `filter`
    /// (an `-e` expression) to `out`, with paths and socket addresses of file descriptors (`-yy`)
    /// and wall-clock
    /// times (`-ttt`). Waits until strace is attached. It exits when the node does.
    pub fn strace(&self, id: u64, filter: &str, out: &Path) -> anyhow::Result<Child> {
        let pid =
            self.node(id).child.as_ref().ok_or_else(|| anyhow!("node {id} is not running"))?.id();
        let child = Command::new("strace")
            .args(["-f", "-yy", "-ttt", "-e", filter, "-o"])
            .arg(out)
            .args(["-p", &pid.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .context("strace is needed: run scripts/setup.sh")?;
        // strace writes its own lines (e.g. the threads it attached to) once attached.
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::fs::metadata(out).map(|m| m.len()).unwrap_or(0) == 0 {
            if Instant::now() > deadline {
                bail!("strace did not attach to node {id} within 10 s");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        std::thread::sleep(Duration::from_millis(200));
        Ok(child)
    }

    /// Adds a node that is not a founding member (it waits to be added with `add_member`).
    pub fn spawn_joiner(&mut self, id: u64) -> anyhow::Result<&TestNode> {
        let node = Self::new_node(&self.options, self.base.path(), id, false);
        self.nodes.push(node);
        self.spawn(id)?;
        Ok(self.node(id))
    }

    /// Re-adds node `id` (stopped and removed from the membership) as a joiner with an empty
    /// data directory, at its old addresses.
    pub fn respawn_as_joiner(&mut self, id: u64) -> anyhow::Result<()> {
        if self.node(id).child.is_some() {
            bail!("node {id} is running");
        }
        let node = self.node_mut(id);
        node.founding = false;
        let _ = std::fs::remove_dir_all(&node.dir);
        self.spawn(id)
    }

    /// The process id of node `id`, if it runs.
    pub fn pid(&self, id: u64) -> Option<u32> {
        self.node(id).child.as_ref().map(|c| c.id())
    }

    fn signal(&mut self, id: u64, sig: libc::c_int) {
        if let Some(child) = &self.node_mut(id).child {
            // SAFETY: kill sends a signal to a process we started; no memory is involved.
            unsafe {
                libc::kill(child.id() as libc::pid_t, sig);
            }
        }
    }

    /// SIGKILL: the process dies at once, with whatever it had written (the page cache keeps it).
    pub fn kill(&mut self, id: u64) {
        self.signal(id, libc::SIGKILL);
        if let Some(mut child) = self.node_mut(id).child.take() {
            let _ = child.wait();
        }
    }

    /// SIGTERM, then waits (at most 20 s) for a graceful exit; returns whether it exited cleanly.
    pub fn stop(&mut self, id: u64) -> bool {
        self.signal(id, libc::SIGTERM);
        let Some(mut child) = self.node_mut(id).child.take() else { return false };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            match child.try_wait() {
                Ok(Some(status)) => return status.success(),
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20))
                }
                _ => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return false;
                }
            }
        }
    }

    /// SIGSTOP: the whole process stops, as in a VM pause.
    pub fn pause(&mut self, id: u64) {
        self.signal(id, libc::SIGSTOP);
    }

    /// SIGCONT.
    pub fn resume(&mut self, id: u64) {
        self.signal(id, libc::SIGCONT);
    }

    /// Restarts a stopped or killed node on its data.
    pub fn restart(&mut self, id: u64) -> anyhow::Result<()> {
        if self.node(id).child.is_some() {
            bail!("node {id} is running");
        }
        self.spawn(id)
    }

    /// Whether node `id`'s process runs.
    pub fn is_running(&mut self, id: u64) -> bool {
        match &mut self.node_mut(id).child {
            Some(c) => matches!(c.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// Every node's client address.
    pub fn client_addresses(&self) -> Vec<String> {
        self.nodes.iter().map(|n| n.client.clone()).collect()
    }

    /// A client of the whole cluster, once a leader serves; retries for up to 30 s.
    pub async fn client(&self) -> anyhow::Result<Client> {
        self.client_with(ClientOptions::default()).await
    }

    /// A client with `options`.
    pub async fn client_with(&self, options: ClientOptions) -> anyhow::Result<Client> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            match Client::connect_with(self.client_addresses(), options.clone()).await {
                Ok(c) => return Ok(c),
                Err(e) if Instant::now() < deadline => {
                    tracing::debug!("no cluster yet: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(e) => {
                    return Err(anyhow!("no node answered within 30 s: {e}\n{}", self.logs()));
                }
            }
        }
    }

    /// A client whose read-only transactions go to node `id`.
    pub async fn client_reading_from(&self, id: u64) -> anyhow::Result<Client> {
        self.client_with(ClientOptions {
            read_preference: ReadPreference::Node(id),
            ..ClientOptions::default()
        })
        .await
    }

    /// The id of the node that leads with a valid lease, waiting up to 30 s.
    pub async fn leader(&self) -> anyhow::Result<u64> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            for n in &self.nodes {
                if n.child.is_none() {
                    continue;
                }
                let status = tokio::time::timeout(Duration::from_millis(500), async {
                    let c = Client::connect_with(
                        [n.client.clone()],
                        ClientOptions {
                            connect_timeout: Duration::from_millis(200),
                            retry_deadline: Duration::from_millis(300),
                            ..ClientOptions::default()
                        },
                    )
                    .await?;
                    c.status_of(n.client.as_str()).await
                })
                .await;
                if let Ok(Ok(s)) = status
                    && s.role == Role::Leader
                    && s.lease_valid
                {
                    return Ok(s.id);
                }
            }
            if Instant::now() > deadline {
                bail!("no leader within 30 s\n{}", self.logs());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The last lines of every node's log, for failure messages.
    pub fn logs(&self) -> String {
        let mut out = String::new();
        for n in &self.nodes {
            let text = std::fs::read_to_string(n.dir.join("node.log")).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            out.push_str(&format!("--- node {} ({}):\n", n.id, n.dir.display()));
            for l in &lines[lines.len().saturating_sub(20)..] {
                out.push_str(l);
                out.push('\n');
            }
        }
        out
    }
}

impl Drop for TestCluster {
    fn drop(&mut self) {
        let ids: Vec<u64> = self.nodes.iter().map(|n| n.id).collect();
        for id in ids {
            self.resume(id);
            self.kill(id);
        }
        if std::thread::panicking() {
            eprintln!("{}", self.logs());
        }
        if self.keep || std::env::var_os("BOUNDKV_TEST_KEEP").is_some() {
            let dir = std::mem::replace(&mut self.base, tempfile::tempdir().expect("a temp dir"));
            let kept = dir.keep();
            if !self.keep {
                eprintln!("kept the cluster's directory: {}", kept.display());
            }
        }
    }
}
