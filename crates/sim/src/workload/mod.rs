//! The simulator's clients and the history they record: the same three workloads the
//! process-level Jepsen suite runs (`tests/src/jepsen/workload.rs`), played against the
//! replicas of a simulated cluster, recorded in the checkers' history format
//! ([`boundkv_tests::check`]) and checked by the same checkers.
//!
//! # Pieces
//!
//! | piece | what it is |
//! |---|---|
//! | [`SimCluster`] | what the cluster driver offers: the nodes, the replica of each live one, the simulated time |
//! | [`client::SimClient`] | one client: `boundkv_client`'s retry rules over `Arc<Replica>` calls, its choices drawn from a seed |
//! | [`Recorder`] | the history: one lock, events in the order they happen, process ids |
//! | [`register`], [`append`], [`bank`] | what a client process does in each workload, and how it records it |
//! | [`run_clients`], [`final_read`], [`check`] | run the processes; read everything once at the end; run the checkers |
//!
//! # Processes and outcomes
//!
//! [`run_clients`] spawns `clients` tasks. Each is one Jepsen *process* at a time: it invokes an
//! operation (an `invoke` event, written before any request leaves), runs it, and completes it
//! (`ok`, `fail` or `info`, written after the answer came back, under the same lock, so the
//! order of the events is a real-time order). An `info` (the operation may or may not have
//! happened) retires the process id; the task carries on under a fresh one. Between operations
//! a task thinks for a random 0–[`THINK_MAX_MS`] ms; it invokes nothing at or after
//! `until_nanos`, and every operation ends within [`client::OP_TIMEOUT`] of its invoke, so a
//! run returns by `until_nanos + OP_TIMEOUT` of simulated time.
//!
//! # Example
//!
//! Two register processes, a leader `n1` and a follower `n2`:
//!
//! ```text
//! index time(ns)  process type    f      value     node ts
//! 0     1_000     0       invoke  write  [3, 1]
//! 1     1_200     1       invoke  read   [3, null]
//! 2     4_100     0       ok      write  [3, 1]    n1   4_000     (commit ts)
//! 3     6_000     1       ok      read   [3, 1]    n2   5_500     (read ts: n2 waited for its closed timestamp)
//! 4     7_000     0       invoke  cas    [3, [1, 2]]
//! 5     9_000     0       info    cas    [3, [1, 2]]               (leader crashed mid-commit: process 0 retires)
//! 6     9_500     2       invoke  read   [3, null]                 (the same task, now process 2)
//! ```
//!
//! Everything random (which node, which key, how long to think, transaction ids) comes from
//! `StdRng`s seeded from the run's seed, one per client; no `HashMap` order, wall clock or
//! thread RNG is consulted, so a run of the deterministic cluster is a function of its seed.

pub mod append;
pub mod bank;
pub mod client;
pub mod register;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::Value;

use boundkv_storage::Engine;
use boundkv_tests::check::{
    Anomaly, CheckParams, CheckResult, Event, EventType, Validity, check_workload, pair,
};
use boundkv_txn::replica::Replica;

use client::SimClient;

/// What the cluster driver offers the clients.
pub trait SimCluster<E: Engine>: Send + Sync + 'static {
    /// Node ids, in order.
    fn node_ids(&self) -> Vec<u64>;
    /// The running replica of node `id`, or None while it is down (crashed/paused).
    fn replica(&self, id: u64) -> Option<Arc<Replica<E>>>;
    /// Nanoseconds of simulated time since the run began (history event time; monotonic).
    fn now_nanos(&self) -> u64;
    /// How long after a commit's first attempt a resend is still recognised as the same
    /// transaction (`None`: always). A transaction record below the GC horizon counts for
    /// nothing, so a resend later than the GC retention may apply a second time: a documented
    /// limit a client must respect (`docs/architecture/replication.md`, "Garbage collection").
    fn resend_window(&self) -> Option<Duration> {
        None
    }
    /// Completes once node `id` is not paused (at once if it is not): a request to a paused
    /// node waits, as one to a stopped process does, and is served the moment it resumes,
    /// racing the node's own catching up (which is what leases are for).
    fn until_resumed(
        &self,
        _id: u64,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send + 'static>> {
        Box::pin(std::future::ready(()))
    }
}

/// The longest pause a client takes between two operations, in ms.
pub const THINK_MAX_MS: u64 = 40;

/// The workloads the simulator's clients can run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Workload {
    /// Independent read/write/cas registers, checked for linearizability (see [`register`]).
    Register,
    /// Elle's list-append transactions, checked for strict serializability (see [`append`]).
    Append,
    /// Transfers between accounts and snapshot reads of all of them (see [`bank`]).
    Bank,
}

impl Workload {
    /// Every workload.
    pub const ALL: [Workload; 3] = [Workload::Register, Workload::Append, Workload::Bank];

    /// The workload's name, as the checkers know it.
    pub fn name(self) -> &'static str {
        match self {
            Workload::Register => "register",
            Workload::Append => "append",
            Workload::Bank => "bank",
        }
    }

    /// The workload named `name`, if there is one.
    pub fn from_name(name: &str) -> Option<Workload> {
        Workload::ALL.into_iter().find(|w| w.name() == name)
    }

    /// What the checkers need besides the history.
    pub fn check_params(self) -> CheckParams {
        match self {
            Workload::Bank => CheckParams { bank: Some(bank::params()), ..CheckParams::default() },
            _ => CheckParams::default(),
        }
    }
}

impl std::fmt::Display for Workload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// How an operation completed, before it becomes an event.
#[derive(Clone, Debug)]
pub struct Completion {
    /// `ok`, `fail` or `info`.
    pub kind: EventType,
    /// The completion's value (`None`: the invoke's value, as the format allows with `null`).
    pub value: Option<Value>,
    /// The node that served it.
    pub node: Option<u64>,
    /// The commit timestamp (writes) or read timestamp (read-only operations).
    pub ts: Option<u64>,
    /// A read-write transaction's read timestamp.
    pub read_ts: Option<u64>,
    /// What went wrong, for people.
    pub error: Option<String>,
}

impl Completion {
    /// An `ok` completion with `value`.
    pub fn ok(value: Value) -> Completion {
        Completion {
            kind: EventType::Ok,
            value: Some(value),
            node: None,
            ts: None,
            read_ts: None,
            error: None,
        }
    }

    /// A `fail` (it surely did not happen) for `error`.
    pub fn fail(error: impl Into<String>) -> Completion {
        Completion {
            kind: EventType::Fail,
            value: None,
            error: Some(error.into()),
            ..Self::ok(Value::Null)
        }
    }

    /// An `info` (it may have happened) for `error`.
    pub fn info(error: impl Into<String>) -> Completion {
        Completion {
            kind: EventType::Info,
            value: None,
            error: Some(error.into()),
            ..Self::ok(Value::Null)
        }
    }

    /// This completion, served by `node`.
    pub fn at(mut self, node: u64) -> Completion {
        self.node = Some(node);
        self
    }

    /// This completion, with timestamp `ts`.
    pub fn ts(mut self, ts: u64) -> Completion {
        self.ts = Some(ts);
        self
    }

    /// This completion, with read timestamp `read_ts`.
    pub fn read_ts(mut self, read_ts: u64) -> Completion {
        self.read_ts = Some(read_ts);
        self
    }
}

/// The name of node `id` in a history (`"n1"`).
pub fn node_name(id: u64) -> String {
    format!("n{id}")
}

/// The history being recorded: events in the order they happen, under one lock, each stamped
/// with the cluster's simulated time taken under that lock (so times never go backwards).
pub struct Recorder {
    events: Mutex<Vec<Event>>,
    next_process: AtomicU64,
    now: Box<dyn Fn() -> u64 + Send + Sync>,
}

impl Recorder {
    /// An empty history whose events are stamped with `now()`, with process ids from
    /// `first_process` on.
    pub fn new(now: Box<dyn Fn() -> u64 + Send + Sync>, first_process: u64) -> Recorder {
        Recorder {
            events: Mutex::new(Vec::new()),
            next_process: AtomicU64::new(first_process),
            now,
        }
    }

    /// A process id never handed out before.
    pub fn new_process(&self) -> u64 {
        self.next_process.fetch_add(1, Ordering::Relaxed)
    }

    fn push(&self, make: impl FnOnce(u64, u64) -> Event) {
        let mut events = self.events.lock().unwrap_or_else(|e| e.into_inner());
        let index = events.len() as u64;
        let time = (self.now)();
        let time = events.last().map_or(time, |e: &Event| time.max(e.time));
        events.push(make(index, time));
    }

    /// Records that `process` invokes `f` with `value`.
    pub fn invoke(&self, process: u64, f: &str, value: Value) {
        self.push(|index, time| Event::new(index, time, process, EventType::Invoke, f, value));
    }

    /// Records the completion of `process`'s outstanding `f`.
    pub fn complete(&self, process: u64, f: &str, completion: Completion) {
        self.push(|index, time| Event {
            node: completion.node.map(node_name),
            ts: completion.ts,
            read_ts: completion.read_ts,
            error: completion.error,
            ..Event::new(
                index,
                time,
                process,
                completion.kind,
                f,
                completion.value.unwrap_or(Value::Null),
            )
        });
    }

    /// The events recorded so far.
    pub fn events(&self) -> Vec<Event> {
        self.events.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// A client process: a [`SimClient`], the history it records into, and its current process id.
pub struct Process<E: Engine> {
    /// The client.
    pub client: SimClient<E>,
    recorder: Arc<Recorder>,
    id: u64,
}

impl<E: Engine> Process<E> {
    /// A process recording into `recorder`, its client's choices drawn from `seed`.
    pub fn new(cluster: Arc<dyn SimCluster<E>>, recorder: Arc<Recorder>, seed: u64) -> Self {
        let id = recorder.new_process();
        Process { client: SimClient::new(cluster, seed), recorder, id }
    }

    /// Starts an operation: records the invoke of `f` with `value` and gives the client a fresh
    /// deadline. [`Process::complete`] must follow.
    pub fn invoke(&mut self, f: &str, value: Value) {
        self.recorder.invoke(self.id, f, value);
        self.client.begin_op();
    }

    /// Records the completion of the outstanding `f`, and retires the process id after an
    /// `info` (the next operation gets a fresh one).
    pub fn complete(&mut self, f: &str, completion: Completion) -> EventType {
        let kind = completion.kind;
        self.recorder.complete(self.id, f, completion);
        if kind == EventType::Info {
            self.id = self.recorder.new_process();
        }
        kind
    }
}

/// State the processes of one run share (keys in use, unique values).
pub enum Shared {
    /// See [`register::Registers`].
    Register(register::Registers),
    /// See [`append::AppendKeys`].
    Append(append::AppendKeys),
    /// The bank shares nothing.
    Bank,
}

impl Shared {
    fn new(workload: Workload) -> Shared {
        match workload {
            Workload::Register => Shared::Register(register::Registers::default()),
            Workload::Append => Shared::Append(append::AppendKeys::default()),
            Workload::Bank => Shared::Bank,
        }
    }
}

/// Runs `clients` client processes of `workload` against `cluster`, each for at most
/// `ops_per_client` operations, invoking none at or after `until_nanos` (of
/// [`SimCluster::now_nanos`]), and returns the history. Every choice derives from `seed`.
///
/// The bank's initial balances are written first (not recorded; retried until `until_nanos`);
/// if they never land, the history is empty.
pub async fn run_clients<E: Engine>(
    cluster: Arc<dyn SimCluster<E>>,
    workload: Workload,
    clients: usize,
    ops_per_client: usize,
    until_nanos: u64,
    seed: u64,
) -> Vec<Event> {
    let now_cluster = cluster.clone();
    let recorder = Arc::new(Recorder::new(Box::new(move || now_cluster.now_nanos()), 0));
    let mut seeds = StdRng::seed_from_u64(seed);
    if workload == Workload::Bank {
        let mut setup = SimClient::new(cluster.clone(), seeds.random());
        if !bank::setup(&mut setup, until_nanos).await {
            tracing::warn!("bank setup did not land before the end of the run");
            return Vec::new();
        }
    }
    let shared = Arc::new(Mutex::new(Shared::new(workload)));
    let mut tasks = Vec::with_capacity(clients);
    for _ in 0..clients {
        let mut process = Process::new(cluster.clone(), recorder.clone(), seeds.random());
        let shared = shared.clone();
        let cluster = cluster.clone();
        tasks.push(tokio::spawn(async move {
            for _ in 0..ops_per_client {
                let think = process.client.rng().random_range(0..=THINK_MAX_MS);
                tokio::time::sleep(Duration::from_millis(think)).await;
                if cluster.now_nanos() >= until_nanos {
                    break;
                }
                match workload {
                    Workload::Register => register::op(&mut process, &shared).await,
                    Workload::Append => append::op(&mut process, &shared).await,
                    Workload::Bank => bank::op(&mut process).await,
                }
            }
        }));
    }
    for task in tasks {
        if let Err(e) = task.await {
            tracing::error!("a client task failed: {e}");
        }
    }
    recorder.events()
}

/// Reads everything the workload wrote, once, appending the reads to `history` under a fresh
/// process id: every register, every append key the history touched, every bank account. Call
/// it after [`run_clients`], once the cluster has healed: a lost write then shows as a read that
/// misses it.
pub async fn final_read<E: Engine>(
    cluster: Arc<dyn SimCluster<E>>,
    workload: Workload,
    history: &mut Vec<Event>,
    seed: u64,
) {
    let first_process = history.iter().map(|e| e.process + 1).max().unwrap_or(0);
    let first_index = history.last().map_or(0, |e| e.index + 1);
    let last_time = history.last().map_or(0, |e| e.time);
    let now_cluster = cluster.clone();
    let recorder = Arc::new(Recorder::new(
        Box::new(move || now_cluster.now_nanos().max(last_time)),
        first_process,
    ));
    let mut process = Process::new(cluster, recorder.clone(), seed);
    match workload {
        Workload::Register => {
            for key in 0..register::KEYS {
                register::read(&mut process, key).await;
            }
        }
        Workload::Append => append::final_read(&mut process, &append::touched_keys(history)).await,
        Workload::Bank => bank::read(&mut process).await,
    }
    history.extend(recorder.events().into_iter().map(|mut e| {
        e.index += first_index;
        e
    }));
}

/// Runs `workload`'s checkers (its own, then the timestamp checker) over `events`. A history
/// that breaks Jepsen's conventions (a recorder bug) gives one `Invalid` result saying how.
pub fn check(workload: Workload, events: &[Event]) -> Vec<CheckResult> {
    match pair(events) {
        Ok(ops) => check_workload(workload.name(), &ops, &workload.check_params()),
        Err(e) => {
            let mut result = CheckResult::unknown("history", &e.to_string());
            result.valid = Validity::Invalid;
            result.anomalies.push(Anomaly::new("malformed-history", e.to_string(), Vec::new()));
            vec![result]
        }
    }
}
