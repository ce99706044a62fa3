//! Golden-script tests of the replica protocols: a [`Runner`] for the `goldenscript` crate that
//! runs a small cluster of real [`Replica`]s (over [`MemoryEngine`]s) on virtual time, with every
//! Raft message held until the script delivers it. Modelled on toydb's
//! `src/raft/testscripts/node/*`; the scripts live in `crates/sim/testscripts/replica/`.
//!
//! # The world
//!
//! - **Time** is virtual: a tokio current-thread runtime with paused time, and one manual
//!   [`SimClock`] per node (its *true* time; each node's clock error is set on top). Time moves
//!   only when the script says `advance` or `run`, in steps of 1 ms: tokio's clock and every node's
//!   true time move together, then every task that can run runs, and every node takes the turns
//!   that are due (input queued, a tick, a lease renewal). Nothing depends on real time, and Raft
//!   is seeded, so a script's output is the same on every run (the test runs each script twice).
//! - **Messages** are held: whatever a node sends waits in one queue, in send order, until the
//!   script delivers it (`deliver`, `stabilize`) or drops it (`drop`); `run` delivers everything
//!   as it is sent. A partitioned link drops at send time (and at delivery, for a message queued
//!   before the partition).
//! - **Clients** are tokio tasks: `put`, `resend`, `read` start one and return; the runner prints
//!   the outcome the moment the task finishes, so a script can deliver messages one by one and
//!   see exactly which one completes a commit.
//!
//! # Output
//!
//! Every line an event prints starts with the true time relative to the cluster's start
//! (`1.250s`). Timestamps are printed relative to the same origin (`+1.250s`; sub-millisecond
//! parts in full, `+1.250000001s`), including those inside error messages.
//!
//! ```text
//! 0.000s n1→n2 MsgAppend term=2 prev=5@2 commit=5 entries=[6@2 Close(+0.800s)]   delivered
//! 0.000s n1→n3 MsgHeartbeat term=2 commit=5 ✗ partitioned                         dropped
//! 0.000s n2@2 follower(n1) commit=6                                              a state change
//! 0.000s c1@n1: put txn=a k=v → ok ts=+0.801s                                     a client's outcome
//! ```
//!
//! # Commands
//!
//! | command | what it does |
//! |---|---|
//! | `cluster [nodes=3] [tick=100ms] [election=10] [heartbeat=2] [lease=1s] [renewal=400ms] [close=200ms] [follower_wait=1s] [commit_timeout=10s] [gc_retention=off] [gc_interval=1h] [keep_entries=10000] [bound=1ms] [read_timeout=3s]` | starts the cluster (founding members `1..=nodes`) |
//! | `campaign N` | node N campaigns now |
//! | `deliver [from=N] [to=N]` | delivers the messages queued now (not those they cause) |
//! | `stabilize` | delivers until nothing is queued, without time passing |
//! | `drop [from=N] [to=N]` | drops queued messages |
//! | `pending` | lists the queued messages |
//! | `advance D` | time passes; messages stay queued |
//! | `run D [msgs=false]` | time passes; messages are delivered as sent (`msgs=false`: not printed, and only role changes are) |
//! | `partition N...` | cuts every link between the nodes given and the others; `heal` restores them |
//! | `pause N` / `resume N` | node N takes no turns (its inbox fills) / takes them again |
//! | `crash N` / `restart N` | stops node N (failing what it had in flight) / starts it again on the same engine |
//! | `clock N [offset=D] [bound=D] [step=D]` | node N's clock error (durations may be negative) |
//! | `put N k=v... [txn=NAME]` | a blind commit at node N (a client task) |
//! | `resend N txn=NAME` | the same commit request again, at node N |
//! | `read N KEY [at=latest\|+1.2s]` | `begin_read_only` + `get` at node N (a client task) |
//! | `status` | per node: role, term, indexes, lease, ready_at, closed timestamp, safe time, GC horizon |
//! | `versions N KEY` | the raw MVCC versions of KEY stored at node N |

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::error::Error as StdError;
use std::fmt::Write as _;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use tokio::time::Instant;

use boundkv_clockbound::{SimClock, Timestamp};
use boundkv_consensus::clock_check::{ClockFrame, ClockMessage};
use boundkv_consensus::node::{NodeConfig, Role};
use boundkv_consensus::raft::prelude::{EntryType, Message, MessageType};
use boundkv_consensus::transport::{Deliverer, Reporter, Transport};
use boundkv_storage::{Engine, MemoryEngine};
use boundkv_txn::replica::{Command, Member, RaftNode, ReadAt, Replica, ReplicaOptions};
use boundkv_txn::{CommitRequest, TxnId};

type Result<T> = std::result::Result<T, Box<dyn StdError>>;

/// True time at the cluster's start (2027-01-15T08:00:00Z): every timestamp is printed relative
/// to it.
const ORIGIN_SECS: u64 = 1_800_000_000;

/// How far time moves between two rounds of turns.
const STEP: Duration = Duration::from_millis(1);

/// Yields to the runtime per settling round: enough for a chain of task wake-ups to run out.
const YIELDS: usize = 8;

/// The goldenscript runner (see the module docs).
pub struct Runner {
    rt: tokio::runtime::Runtime,
    cluster: Option<Cluster>,
}

impl Runner {
    /// A runner with no cluster yet (a script starts with `cluster`).
    pub fn new() -> Self {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .expect("a tokio runtime");
        Runner { rt, cluster: None }
    }
}

impl Default for Runner {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for Runner {
    fn drop(&mut self) {
        if let Some(c) = self.cluster.as_mut() {
            let _g = self.rt.enter();
            for n in c.nodes.values_mut() {
                if let Some(live) = n.live.take() {
                    live.replica.shutdown();
                }
            }
        }
    }
}

impl goldenscript::Runner for Runner {
    type Command = goldenscript::Command;

    fn run(
        &mut self,
        command: &goldenscript::Command,
        _context: &goldenscript::Context,
    ) -> std::result::Result<String, Box<dyn StdError>> {
        let mut args = command.consume_args();
        if command.name == "cluster" {
            if self.cluster.is_some() {
                return Err("the cluster is already running".into());
            }
            let config = ClusterConfig::parse(&mut args)?;
            args.reject_next()?;
            let _g = self.rt.enter();
            let mut cluster = Cluster::new(config)?;
            let out = self.rt.block_on(async {
                cluster.settle(false).await;
                cluster.status()
            });
            self.cluster = Some(cluster);
            return Ok(out);
        }
        let cluster = self.cluster.as_mut().ok_or("no cluster: start with `cluster`")?;
        self.rt.block_on(cluster.execute(&command.name, args))
    }
}

/// The cluster's settings, from the `cluster` command.
struct ClusterConfig {
    nodes: u64,
    options: ReplicaOptions,
    bound: Duration,
}

impl ClusterConfig {
    fn parse(args: &mut goldenscript::ArgumentConsumer<'_>) -> Result<Self> {
        let mut nodes = 3;
        let mut bound = Duration::from_millis(1);
        let mut options = ReplicaOptions {
            node: NodeConfig {
                tick: Duration::from_millis(100),
                election_ticks: 10,
                heartbeat_ticks: 2,
                lease: Duration::from_secs(1),
                lease_renewal: Duration::from_millis(400),
                read_timeout: Duration::from_secs(3),
                clock_checks: None,
                ..NodeConfig::default()
            },
            close_interval: Duration::from_millis(200),
            follower_wait: Duration::from_secs(1),
            commit_timeout: Duration::from_secs(10),
            gc_retention: None,
            gc_interval: Duration::from_secs(3600),
            collect_garbage_inline: true,
            ..ReplicaOptions::default()
        };
        while let Some((key, value)) = args.next_key() {
            match key {
                "nodes" => nodes = value.parse()?,
                "tick" => options.node.tick = duration(value)?,
                "election" => options.node.election_ticks = value.parse()?,
                "heartbeat" => options.node.heartbeat_ticks = value.parse()?,
                "lease" => options.node.lease = duration(value)?,
                "renewal" => options.node.lease_renewal = duration(value)?,
                "read_timeout" => options.node.read_timeout = duration(value)?,
                "keep_entries" => options.node.keep_entries = value.parse()?,
                "close" => options.close_interval = duration(value)?,
                "follower_wait" => options.follower_wait = duration(value)?,
                "commit_timeout" => options.commit_timeout = duration(value)?,
                "gc_retention" => {
                    options.gc_retention =
                        if value == "off" { None } else { Some(duration(value)?) }
                }
                "gc_interval" => options.gc_interval = duration(value)?,
                "bound" => bound = duration(value)?,
                _ => return Err(format!("unknown cluster option {key}").into()),
            }
        }
        options.founding = Some(
            (1..=nodes)
                .map(|id| Member {
                    id,
                    peer_address: format!("n{id}"),
                    client_address: format!("n{id}"),
                    leap: Default::default(),
                })
                .collect(),
        );
        Ok(ClusterConfig { nodes, options, bound })
    }
}

/// What the transport, the client tasks and the runner share: the output so far, the held
/// messages, the cut links.
struct Net {
    out: String,
    queue: VecDeque<Held>,
    cut: BTreeSet<(u64, u64)>,
    /// Print deliveries, drops and commit-index changes (off in `run msgs=false`).
    show: bool,
    origin: Timestamp,
    start: Instant,
}

impl Net {
    fn line(&mut self, text: impl AsRef<str>) {
        let t = self.start.elapsed();
        let _ = writeln!(self.out, "{}.{:03}s {}", t.as_secs(), t.subsec_millis(), text.as_ref());
    }
}

/// A message on its way: Raft's, or the closed timestamp side transport's.
enum Held {
    Raft { msg: Message, reporter: Reporter },
    Closed(ClockFrame),
}

impl Held {
    /// (from, to).
    fn ends(&self) -> (u64, u64) {
        match self {
            Held::Raft { msg, .. } => (msg.from, msg.to),
            Held::Closed(f) => (f.from, f.to),
        }
    }

    fn text(&self, origin: Timestamp) -> String {
        match self {
            Held::Raft { msg, .. } => fmt_msg(msg, origin),
            Held::Closed(f) => fmt_closed(f, origin),
        }
    }

    /// Tells the sender it was lost (Raft's transport contract; a closed timestamp frame is
    /// simply lost).
    fn report_lost(&self) {
        if let Held::Raft { msg, reporter } = self {
            report_dropped(msg, reporter);
        }
    }
}

fn lock(net: &Mutex<Net>) -> MutexGuard<'_, Net> {
    net.lock().unwrap_or_else(|e| e.into_inner())
}

/// The transport every node sends through: queues, or drops on a cut link.
struct HeldTransport {
    id: u64,
    net: Arc<Mutex<Net>>,
}

impl Transport for HeldTransport {
    fn send(&self, msg: Message, reporter: &Reporter) {
        let mut net = lock(&self.net);
        if net.cut.contains(&(self.id, msg.to)) {
            if net.show {
                let text = format!("{} ✗ partitioned", fmt_msg(&msg, net.origin));
                net.line(text);
            }
            drop(net);
            report_dropped(&msg, reporter);
            return;
        }
        net.queue.push_back(Held::Raft { msg, reporter: reporter.clone() });
    }

    /// The scripts run without peer clock checks (`NodeConfig::clock_checks` is `None`), so
    /// only the closed timestamp side transport sends here: held like a Raft message.
    fn send_clock(&self, frame: ClockFrame) {
        if !frame.message.is_closed_timestamps() {
            return;
        }
        let mut net = lock(&self.net);
        if net.cut.contains(&(self.id, frame.to)) {
            if net.show {
                let text = format!("{} ✗ partitioned", fmt_closed(&frame, net.origin));
                net.line(text);
            }
            return;
        }
        net.queue.push_back(Held::Closed(frame));
    }
}

fn report_dropped(msg: &Message, reporter: &Reporter) {
    reporter.unreachable(msg.to);
    if msg.get_msg_type() == MessageType::MsgSnapshot {
        reporter.snapshot(msg.to, false);
    }
}

/// A running node.
struct Live {
    replica: Arc<Replica<MemoryEngine>>,
    node: RaftNode<MemoryEngine>,
    deliverer: Deliverer,
    /// The time of the last turn taken because a deadline was due (one per instant).
    last_deadline_turn: Option<Instant>,
}

/// A node slot: its clock and engine outlive crashes.
struct SimNode {
    id: u64,
    clock: SimClock,
    engine: Arc<MemoryEngine>,
    woken: Arc<AtomicBool>,
    live: Option<Live>,
    paused: bool,
    /// The state last printed: (role, term, leader, commit index).
    seen: Option<(Role, u64, Option<u64>, u64)>,
}

struct Cluster {
    config: ClusterConfig,
    net: Arc<Mutex<Net>>,
    nodes: BTreeMap<u64, SimNode>,
    origin: Timestamp,
    next_client: u64,
    /// Commit requests by transaction name, for `resend`.
    txns: BTreeMap<String, CommitRequest>,
}

impl Cluster {
    fn new(config: ClusterConfig) -> Result<Self> {
        let origin = Timestamp::from_nanos(ORIGIN_SECS * 1_000_000_000);
        let net = Arc::new(Mutex::new(Net {
            out: String::new(),
            queue: VecDeque::new(),
            cut: BTreeSet::new(),
            show: true,
            origin,
            start: Instant::now(),
        }));
        let mut cluster = Cluster {
            nodes: BTreeMap::new(),
            net,
            origin,
            next_client: 1,
            txns: BTreeMap::new(),
            config,
        };
        for id in 1..=cluster.config.nodes {
            let clock = SimClock::manual(origin);
            clock.set_bound(cluster.config.bound);
            cluster.nodes.insert(
                id,
                SimNode {
                    id,
                    clock,
                    engine: Arc::new(MemoryEngine::new()),
                    woken: Arc::new(AtomicBool::new(false)),
                    live: None,
                    paused: false,
                    seen: None,
                },
            );
            cluster.start_node(id)?;
        }
        Ok(cluster)
    }

    fn start_node(&mut self, id: u64) -> Result<()> {
        let mut options = self.config.options.clone();
        options.node.id = id;
        options.node.seed = Some(id * 1000 + 7);
        let n = self.nodes.get_mut(&id).ok_or("no such node")?;
        let woken = n.woken.clone();
        let transport = Arc::new(HeldTransport { id, net: self.net.clone() });
        let (replica, node) = Replica::start_driven(
            options,
            n.engine.clone(),
            Arc::new(n.clock.clone()),
            transport,
            Some(Arc::new(move || woken.store(true, Ordering::SeqCst))),
            Instant::now().into_std(),
        )?;
        let deliverer = replica.deliverer();
        n.live = Some(Live { replica, node, deliverer, last_deadline_turn: None });
        n.seen = None;
        Ok(())
    }

    fn take_output(&self) -> String {
        std::mem::take(&mut lock(&self.net).out)
    }

    fn live(&self, id: u64) -> Result<&Live> {
        let n = self.nodes.get(&id).ok_or_else(|| format!("no node {id}"))?;
        n.live.as_ref().ok_or_else(|| format!("node {id} is down").into())
    }

    fn rel(&self, ts: Timestamp) -> String {
        rel(ts, self.origin)
    }

    async fn execute(
        &mut self,
        name: &str,
        mut args: goldenscript::ArgumentConsumer<'_>,
    ) -> Result<String> {
        match name {
            "campaign" => {
                let id = node_arg(&mut args)?;
                args.reject_next()?;
                self.live(id)?.replica.node().campaign();
                self.settle(false).await;
            }
            "deliver" | "drop" => {
                let from = args.take_key("from").map(str::parse::<u64>).transpose()?;
                let to = args.take_key("to").map(str::parse::<u64>).transpose()?;
                args.reject_next()?;
                let matches = |(f, t): (u64, u64)| {
                    from.is_none_or(|from| f == from) && to.is_none_or(|to| t == to)
                };
                if name == "deliver" {
                    self.deliver(matches);
                } else {
                    self.drop_queued(matches);
                }
                self.settle(false).await;
            }
            "stabilize" => {
                args.reject_next()?;
                for round in 0.. {
                    if round > 1000 {
                        return Err("messages keep flowing".into());
                    }
                    if self.deliver(|_| true) == 0 {
                        break;
                    }
                    self.settle(false).await;
                }
            }
            "pending" => {
                args.reject_next()?;
                let mut net = lock(&self.net);
                let lines: Vec<String> = net.queue.iter().map(|h| h.text(self.origin)).collect();
                if lines.is_empty() {
                    net.line("no messages queued");
                }
                for l in lines {
                    net.line(format!("queued: {l}"));
                }
            }
            "advance" | "run" => {
                let d = duration(args.next_pos().ok_or("a duration")?)?;
                let show = args.take_key("msgs").map(str::parse::<bool>).transpose()?;
                args.reject_next()?;
                let auto = name == "run";
                lock(&self.net).show = show.unwrap_or(true);
                self.advance(d, auto).await;
                lock(&self.net).show = true;
            }
            "partition" => {
                let group: BTreeSet<u64> = std::iter::from_fn(|| args.next_pos())
                    .map(str::parse::<u64>)
                    .collect::<std::result::Result<_, _>>()?;
                args.reject_next()?;
                let ids: Vec<u64> = self.nodes.keys().copied().collect();
                let mut net = lock(&self.net);
                for &a in &group {
                    for &b in &ids {
                        if !group.contains(&b) {
                            net.cut.insert((a, b));
                            net.cut.insert((b, a));
                        }
                    }
                }
                let rest: Vec<String> =
                    ids.iter().filter(|i| !group.contains(i)).map(|i| format!("n{i}")).collect();
                let group: Vec<String> = group.iter().map(|i| format!("n{i}")).collect();
                net.line(format!("partition: {} | {}", group.join(" "), rest.join(" ")));
            }
            "heal" => {
                args.reject_next()?;
                let mut net = lock(&self.net);
                net.cut.clear();
                net.line("healed: every node reaches every other");
            }
            "pause" | "resume" => {
                let id = node_arg(&mut args)?;
                args.reject_next()?;
                let n = self.nodes.get_mut(&id).ok_or("no such node")?;
                n.paused = name == "pause";
                lock(&self.net)
                    .line(format!("n{id} {}", if n.paused { "paused" } else { "resumed" }));
                self.settle(false).await;
            }
            "crash" => {
                let id = node_arg(&mut args)?;
                args.reject_next()?;
                let n = self.nodes.get_mut(&id).ok_or("no such node")?;
                let mut live = n.live.take().ok_or("the node is down")?;
                live.replica.shutdown();
                live.node.turn(Instant::now().into_std());
                drop(live);
                lock(&self.net).line(format!("n{id} crashed"));
                self.settle(false).await;
            }
            "restart" => {
                let id = node_arg(&mut args)?;
                args.reject_next()?;
                if self.live(id).is_ok() {
                    return Err("the node is running".into());
                }
                self.start_node(id)?;
                lock(&self.net).line(format!("n{id} restarted"));
                self.settle(false).await;
            }
            "clock" => {
                let id = node_arg(&mut args)?;
                let clock = self.nodes.get(&id).ok_or("no such node")?.clock.clone();
                let mut said = Vec::new();
                while let Some((key, value)) = args.next_key() {
                    match key {
                        "offset" => {
                            clock.set_offset_nanos(signed_nanos(value)?);
                        }
                        "bound" => {
                            clock.set_bound(duration(value)?);
                        }
                        "step" => {
                            clock.step_nanos(signed_nanos(value)?);
                        }
                        _ => return Err(format!("unknown clock setting {key}").into()),
                    }
                    said.push(format!("{key}={value}"));
                }
                args.reject_next()?;
                lock(&self.net).line(format!("n{id} clock {}", said.join(" ")));
                self.settle(false).await;
            }
            "put" => {
                let id = node_arg(&mut args)?;
                let name = match args.take_key("txn") {
                    Some(n) => n.to_string(),
                    None => format!("t{}", self.next_client),
                };
                let mut writes = BTreeMap::new();
                while let Some((k, v)) = args.next_key() {
                    writes.insert(Bytes::from(k.to_string()), Some(Bytes::from(v.to_string())));
                }
                args.reject_next()?;
                if writes.is_empty() {
                    return Err("put needs key=value writes".into());
                }
                let req = CommitRequest {
                    txn_id: txn_id(&name),
                    read_ts: None,
                    read_keys: BTreeSet::new(),
                    read_ranges: Vec::new(),
                    writes,
                };
                self.txns.insert(name.clone(), req.clone());
                self.commit(id, "put", &name, req)?;
                self.settle(false).await;
            }
            "resend" => {
                let id = node_arg(&mut args)?;
                let name = args.take_key("txn").ok_or("resend needs txn=NAME")?.to_string();
                args.reject_next()?;
                let req = self.txns.get(&name).ok_or("no such transaction")?.clone();
                self.commit(id, "resend", &name, req)?;
                self.settle(false).await;
            }
            "read" => {
                let id = node_arg(&mut args)?;
                let key = args.next_pos().ok_or("read needs a key")?.to_string();
                let at = match args.take_key("at") {
                    None | Some("latest") => ReadAt::Latest,
                    Some(t) => ReadAt::Exact(self.timestamp_arg(t)?),
                };
                args.reject_next()?;
                let replica = self.live(id)?.replica.clone();
                let origin = self.origin;
                let label = format!(
                    "read {key} at={}",
                    match at {
                        ReadAt::Exact(ts) => rel(ts, origin),
                        _ => "latest".into(),
                    }
                );
                self.spawn_client(id, label, async move {
                    let ts = match replica.begin_read_only(at).await {
                        Ok(ts) => ts,
                        Err(e) => return format!("error: {}", rel_text(&e.to_string(), origin)),
                    };
                    match replica.get(ts, key.as_bytes()).await {
                        Ok(v) => format!("ok ts={} {key}={}", rel(ts, origin), value_text(v)),
                        Err(e) => format!(
                            "error (read ts {}): {}",
                            rel(ts, origin),
                            rel_text(&e.to_string(), origin)
                        ),
                    }
                });
                self.settle(false).await;
            }
            "status" => {
                args.reject_next()?;
                let s = self.status();
                lock(&self.net).out.push_str(&s);
            }
            "versions" => {
                let id = node_arg(&mut args)?;
                let key = args.next_pos().ok_or("versions needs a key")?.to_string();
                args.reject_next()?;
                let s = self.versions(id, key.as_bytes())?;
                lock(&self.net).out.push_str(&s);
            }
            _ => return Err(format!("unknown command {name}").into()),
        }
        Ok(self.take_output())
    }

    fn timestamp_arg(&self, t: &str) -> Result<Timestamp> {
        let nanos = signed_nanos(t)?;
        let ts = i128::from(self.origin.as_nanos()) + i128::from(nanos);
        Ok(Timestamp::from_nanos(u64::try_from(ts)?))
    }

    fn commit(&mut self, id: u64, verb: &str, name: &str, req: CommitRequest) -> Result<()> {
        let replica = self.live(id)?.replica.clone();
        let origin = self.origin;
        let writes: Vec<String> = req
            .writes
            .iter()
            .map(|(k, v)| format!("{}={}", String::from_utf8_lossy(k), value_text(v.clone())))
            .collect();
        let label = format!("{verb} txn={name} {}", writes.join(" "));
        self.spawn_client(id, label, async move {
            match replica.commit(req).await {
                Ok(info) => format!("ok ts={}", rel(info.ts, origin)),
                Err(e) => format!("error: {}", rel_text(&e.to_string(), origin)),
            }
        });
        Ok(())
    }

    /// Starts a client task; prints its start now and its outcome when it finishes.
    fn spawn_client(
        &mut self,
        node: u64,
        label: String,
        op: impl Future<Output = String> + Send + 'static,
    ) {
        let client = self.next_client;
        self.next_client += 1;
        let net = self.net.clone();
        lock(&net).line(format!("c{client}@n{node}: {label}"));
        tokio::spawn(async move {
            let outcome = op.await;
            lock(&net).line(format!("c{client}@n{node}: {label} → {outcome}"));
        });
    }

    /// Delivers the messages queued now that `matches` selects; returns how many.
    fn deliver(&mut self, matches: impl Fn((u64, u64)) -> bool) -> usize {
        let batch = self.take_queued(matches);
        let count = batch.len();
        for h in batch {
            let (from, to) = h.ends();
            let target = self.nodes.get(&to).and_then(|n| n.live.as_ref().map(|l| &l.deliverer));
            let mut net = lock(&self.net);
            let text = h.text(self.origin);
            let why = if net.cut.contains(&(from, to)) {
                Some("partitioned")
            } else if target.is_none() {
                Some("node down")
            } else {
                None
            };
            match why {
                Some(why) => {
                    if net.show {
                        net.line(format!("{text} ✗ {why}"));
                    }
                    drop(net);
                    h.report_lost();
                }
                None => {
                    if net.show {
                        net.line(text);
                    }
                    drop(net);
                    let Some(d) = target else { continue };
                    match h {
                        Held::Raft { msg, reporter } => {
                            let snapshot = msg.get_msg_type() == MessageType::MsgSnapshot;
                            d.deliver(msg);
                            if snapshot {
                                reporter.snapshot(to, true);
                            }
                        }
                        Held::Closed(frame) => {
                            d.deliver_clock(frame);
                        }
                    }
                }
            }
        }
        count
    }

    fn drop_queued(&mut self, matches: impl Fn((u64, u64)) -> bool) {
        for h in self.take_queued(matches) {
            let text = format!("{} ✗ dropped", h.text(self.origin));
            lock(&self.net).line(text);
            h.report_lost();
        }
    }

    fn take_queued(&mut self, matches: impl Fn((u64, u64)) -> bool) -> Vec<Held> {
        let mut net = lock(&self.net);
        let (take, keep): (Vec<Held>, Vec<Held>) =
            std::mem::take(&mut net.queue).into_iter().partition(|h| matches(h.ends()));
        net.queue = keep.into();
        take
    }

    /// Moves time forward by `d` in steps of [`STEP`], settling after each.
    async fn advance(&mut self, d: Duration, auto: bool) {
        let start = lock(&self.net).start;
        let target = start.elapsed() + d;
        self.settle(auto).await;
        while start.elapsed() < target {
            let step = STEP.min(target - start.elapsed());
            for n in self.nodes.values() {
                n.clock.advance(step);
            }
            tokio::time::advance(step).await;
            self.settle(auto).await;
        }
    }

    /// Runs everything that can run at this instant: tasks, queued inputs, due deadlines (and,
    /// with `auto`, message deliveries), until nothing moves.
    async fn settle(&mut self, auto: bool) {
        for round in 0.. {
            assert!(round < 100_000, "the cluster does not settle");
            for _ in 0..YIELDS {
                tokio::task::yield_now().await;
            }
            let mut moved = false;
            if auto {
                moved |= self.deliver(|_| true) > 0;
            }
            let now = Instant::now();
            for n in self.nodes.values_mut() {
                if n.paused {
                    continue;
                }
                let Some(live) = n.live.as_mut() else { continue };
                let due = live.node.next_deadline() <= now.into_std()
                    && live.last_deadline_turn != Some(now);
                let woken = n.woken.swap(false, Ordering::SeqCst);
                if woken || due {
                    if due {
                        live.last_deadline_turn = Some(now);
                    }
                    live.node.turn(now.into_std());
                    moved = true;
                }
            }
            self.print_states();
            if !moved {
                break;
            }
        }
    }

    /// Prints every node whose role, term, leader or commit index changed.
    fn print_states(&mut self) {
        let mut net = lock(&self.net);
        for n in self.nodes.values_mut() {
            let Some(live) = n.live.as_ref() else { continue };
            let s = live.replica.state();
            let now = (s.role, s.term, s.leader, s.commit_index);
            let Some(before) = n.seen.replace(now) else { continue };
            let role_changed = (before.0, before.1, before.2) != (now.0, now.1, now.2);
            if before == now || (!role_changed && !net.show) {
                continue;
            }
            let mut text = format!("n{}@{} {}", n.id, s.term, role_text(s.role, s.leader));
            if role_changed {
                write!(text, " (was {}@{})", role_text(before.0, before.2), before.1).ok();
            }
            write!(text, " commit={}", s.commit_index).ok();
            if role_changed && let Some(ls) = s.leader_state {
                write!(text, " ready_at={}", rel(ls.ready_at, self.origin)).ok();
            }
            net.line(text);
        }
    }

    fn status(&self) -> String {
        let mut out = String::new();
        let t = lock(&self.net).start.elapsed();
        writeln!(out, "{}.{:03}s status:", t.as_secs(), t.subsec_millis()).ok();
        for n in self.nodes.values() {
            let Some(live) = n.live.as_ref() else {
                writeln!(out, "  n{} down", n.id).ok();
                continue;
            };
            let r = &live.replica;
            let s = r.state();
            write!(
                out,
                "  n{}@{} {} commit={} applied={} last={}",
                n.id,
                s.term,
                role_text(s.role, s.leader),
                s.commit_index,
                s.applied_index,
                s.last_index
            )
            .ok();
            if let Some(ls) = s.leader_state {
                let lease = ls.lease_until.map_or("none".to_string(), |u| self.rel(u));
                write!(
                    out,
                    " lease_until={lease}{} ready_at={}",
                    if r.lease_valid() { " (valid)" } else { " (not valid)" },
                    self.rel(ls.ready_at)
                )
                .ok();
            }
            write!(
                out,
                " closed={} safe={} gc={}",
                self.rel(r.closed_ts()),
                self.rel(r.safe_time()),
                self.rel(r.gc_horizon())
            )
            .ok();
            let err = n.clock.local_error_nanos();
            if err != 0 {
                write!(out, " clock_error={}", signed_ms(err)).ok();
            }
            if n.paused {
                out.push_str(" [paused]");
            }
            out.push('\n');
        }
        out
    }

    fn versions(&self, id: u64, key: &[u8]) -> Result<String> {
        let live = self.live(id)?;
        let mut out = String::new();
        // MVCC's engine keys: 0x01 (versions), the escaped key, the inverted timestamp.
        let mut prefix = vec![0x01];
        boundkv_storage::keycode::encode_key_into(key, &mut prefix);
        let mut end = prefix.clone();
        end.push(0xff);
        let mut listed = Vec::new();
        for pair in live
            .replica
            .mvcc()
            .engine()
            .scan((std::ops::Bound::Included(prefix.clone()), std::ops::Bound::Excluded(end)))
        {
            let (k, v) = pair?;
            if !k.starts_with(&prefix) || k.len() != prefix.len() + 8 {
                continue;
            }
            let ts =
                Timestamp::from_nanos(boundkv_storage::keycode::decode_ts(&k[prefix.len()..])?);
            let value = match v.split_first() {
                Some((1, rest)) => String::from_utf8_lossy(rest).into_owned(),
                _ => "<deleted>".into(),
            };
            listed.push(format!("{}@{}", value, self.rel(ts)));
        }
        let t = lock(&self.net).start.elapsed();
        writeln!(
            out,
            "{}.{:03}s n{id} versions of {}: [{}] (gc horizon {})",
            t.as_secs(),
            t.subsec_millis(),
            String::from_utf8_lossy(key),
            listed.join(", "),
            self.rel(live.replica.gc_horizon())
        )
        .ok();
        Ok(out)
    }
}

fn node_arg(args: &mut goldenscript::ArgumentConsumer<'_>) -> Result<u64> {
    Ok(args.next_pos().ok_or("a node id")?.parse()?)
}

/// A transaction id from a script's name for it (its bytes, zero-padded).
fn txn_id(name: &str) -> TxnId {
    let mut id = [0u8; 16];
    let n = name.len().min(16);
    id[..n].copy_from_slice(&name.as_bytes()[..n]);
    TxnId(id)
}

fn txn_name(id: &TxnId) -> String {
    let end = id.0.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1);
    String::from_utf8_lossy(&id.0[..end]).into_owned()
}

fn value_text(v: Option<Bytes>) -> String {
    v.map_or("<none>".to_string(), |v| String::from_utf8_lossy(&v).into_owned())
}

fn role_text(role: Role, leader: Option<u64>) -> String {
    match role {
        Role::Leader => "leader".into(),
        Role::Follower => match leader {
            Some(l) => format!("follower(n{l})"),
            None => "follower()".into(),
        },
        Role::Candidate => "candidate".into(),
        Role::PreCandidate => "precandidate".into(),
    }
}

/// A duration like `50ms`, `1.5s`.
fn duration(s: &str) -> Result<Duration> {
    Ok(humantime::parse_duration(s)?)
}

/// A signed duration in ns: `-5ms`, `+1.2s`, `3ms`.
fn signed_nanos(s: &str) -> Result<i64> {
    let (sign, rest) = match s.strip_prefix('-') {
        Some(rest) => (-1, rest),
        None => (1, s.strip_prefix('+').unwrap_or(s)),
    };
    Ok(sign * i64::try_from(duration(rest)?.as_nanos())?)
}

fn signed_ms(nanos: i64) -> String {
    let sign = if nanos < 0 { "-" } else { "+" };
    let abs = nanos.unsigned_abs();
    if abs.is_multiple_of(1_000_000) {
        format!("{sign}{}ms", abs / 1_000_000)
    } else {
        format!("{sign}{abs}ns")
    }
}

/// `ts` relative to `origin`: `+1.250s`, `+1.250000001s`, `-0.002s`.
fn rel(ts: Timestamp, origin: Timestamp) -> String {
    if ts == Timestamp::MAX {
        return "MAX".into();
    }
    if ts == Timestamp::ZERO {
        return "0".into();
    }
    let d = ts.signed_nanos_since(origin);
    let sign = if d < 0 { "-" } else { "+" };
    let abs = d.unsigned_abs();
    let (secs, nanos) = (abs / 1_000_000_000, abs % 1_000_000_000);
    if nanos.is_multiple_of(1_000_000) {
        format!("{sign}{secs}.{:03}s", nanos / 1_000_000)
    } else {
        format!("{sign}{secs}.{nanos:09}s")
    }
}

/// Replaces every RFC 3339 timestamp in `text` (as `Timestamp`'s `Display` writes them) with
/// the relative form.
fn rel_text(text: &str, origin: Timestamp) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find(|c: char| c.is_ascii_digit()) {
        let candidate = &rest[i..];
        let looks_like = candidate.len() > 20
            && candidate.as_bytes()[4] == b'-'
            && candidate.as_bytes()[10] == b'T'
            && candidate[..4].bytes().all(|b| b.is_ascii_digit());
        if looks_like
            && let Some(z) = candidate.find('Z')
            && let Ok(t) = humantime::parse_rfc3339(&candidate[..=z])
        {
            out.push_str(&rest[..i]);
            out.push_str(&rel(Timestamp::from_system_time(t), origin));
            rest = &candidate[z + 1..];
            continue;
        }
        let next = i + candidate.chars().next().map_or(1, char::len_utf8);
        out.push_str(&rest[..next]);
        rest = &rest[next..];
    }
    out.push_str(rest);
    out
}

/// A Raft message, readably: `n1→n2 MsgAppend term=2 prev=5@2 commit=5 entries=[6@2 Close(+0.8s)]`.
/// A closed timestamp frame for the transcript: `n1→n2 Closed term=2 +1.201s applied=4`.
fn fmt_closed(f: &ClockFrame, origin: Timestamp) -> String {
    match &f.message {
        ClockMessage::Closed { term, closed, applied } => {
            format!(
                "n{}→n{} Closed term={term} {} applied={applied}",
                f.from,
                f.to,
                rel(*closed, origin)
            )
        }
        ClockMessage::CloseRequest { ts } => {
            format!("n{}→n{} CloseRequest {}", f.from, f.to, rel(*ts, origin))
        }
        other => format!("n{}→n{} {other:?}", f.from, f.to),
    }
}

fn fmt_msg(m: &Message, origin: Timestamp) -> String {
    let t = m.get_msg_type();
    let mut s = format!("n{}→n{} {:?} term={}", m.from, m.to, t, m.term);
    match t {
        MessageType::MsgAppend => {
            write!(s, " prev={}@{} commit={}", m.index, m.log_term, m.commit).ok();
            let entries: Vec<String> = m
                .get_entries()
                .iter()
                .map(|e| {
                    let what = match e.get_entry_type() {
                        EntryType::EntryNormal if e.get_data().is_empty() => "noop".to_string(),
                        EntryType::EntryNormal => match Command::decode(e.get_data()) {
                            Ok(c) => command_text(&c, origin),
                            Err(err) => format!("<undecodable: {err}>"),
                        },
                        _ => "conf-change".to_string(),
                    };
                    format!("{}@{} {what}", e.index, e.term)
                })
                .collect();
            write!(s, " entries=[{}]", entries.join(", ")).ok();
        }
        MessageType::MsgAppendResponse => {
            if m.reject {
                write!(s, " reject index={} hint={}", m.index, m.reject_hint).ok();
            } else {
                write!(s, " index={}", m.index).ok();
            }
        }
        MessageType::MsgRequestVote | MessageType::MsgRequestPreVote => {
            write!(s, " last={}@{}", m.index, m.log_term).ok();
        }
        MessageType::MsgRequestVoteResponse | MessageType::MsgRequestPreVoteResponse => {
            s.push_str(if m.reject { " rejected" } else { " granted" });
        }
        MessageType::MsgHeartbeat => {
            write!(s, " commit={}", m.commit).ok();
        }
        MessageType::MsgSnapshot => {
            let meta = m.get_snapshot().get_metadata();
            write!(s, " snapshot={}@{}", meta.index, meta.term).ok();
        }
        MessageType::MsgReadIndex | MessageType::MsgReadIndexResp => {
            write!(s, " index={}", m.index).ok();
        }
        _ => {}
    }
    if !m.get_context().is_empty() {
        match <[u8; 8]>::try_from(m.get_context()) {
            Ok(b) => write!(s, " read=#{}", u64::from_be_bytes(b)).ok(),
            Err(_) => write!(s, " context={:02x?}", m.get_context()).ok(),
        };
    }
    s
}

fn command_text(c: &Command, origin: Timestamp) -> String {
    match c {
        Command::Commit(r) => {
            let writes: Vec<String> = r
                .writes
                .iter()
                .map(|w| {
                    format!("{}={}", String::from_utf8_lossy(&w.key), value_text(w.value.clone()))
                })
                .collect();
            format!("Commit({} ts={} {})", txn_name(&r.txn_id), rel(r.ts, origin), writes.join(" "))
        }
        Command::Close(ts) => format!("Close({})", rel(*ts, origin)),
        Command::Gc(h) => format!("Gc({})", rel(*h, origin)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_print_relative_to_the_origin() {
        let o = Timestamp::from_nanos(ORIGIN_SECS * 1_000_000_000);
        assert_eq!(rel(o.saturating_add(Duration::from_millis(1250)), o), "+1.250s");
        assert_eq!(rel(o.saturating_add(Duration::from_nanos(1_000_000_001)), o), "+1.000000001s");
        let text = format!("waits until {} for", o.saturating_add(Duration::from_millis(7)));
        assert_eq!(rel_text(&text, o), "waits until +0.007s for");
        assert_eq!(txn_name(&txn_id("abc")), "abc");
    }
}
