//! A simulated client: the retry rules of `boundkv_client`, spoken directly to the replicas of a
//! [`SimCluster`], with every choice drawn from one seeded generator.
//!
//! The real client talks to servers over TCP; here a client holds `Arc<Replica>`s and calls
//! them, but it decides the same things the same way:
//!
//! | call | goes to | on a definite refusal | on an indeterminate answer |
//! |---|---|---|---|
//! | read-only snapshot | a random live replica (followers too), or the client's home replica ([`HOME_READERS`] of the clients have one) | back off, start over at another random replica (the home replica again) | (cannot happen: nothing is written) |
//! | `begin_read_write`, reads at its timestamp | the leader it knows of | back off, start over (follow `NotLeader`'s hint) | (cannot happen) |
//! | commit | the leader it knows of | `NotLeader`/`Unavailable`/clock errors: resend the *same* request; `Conflict`/`Expired`: give up, it did not apply | `OutcomeUnknown`, a timeout, anything else: resend the same request (same transaction id) a few times, and only within the cluster's resend window (the GC retention: [`SimCluster::resend_window`]); still unknown: report unknown |
//!
//! Every operation has a deadline in simulated time ([`SimClient::begin_op`] sets it
//! [`OP_TIMEOUT`] ahead); every call to a replica is cut off at it. Each *attempt* also has the
//! client's own request timeout (drawn per client, [`ATTEMPT_TIMEOUT`]), as a real client has:
//! a replica that does not answer in time (paused, its Raft loop stalled, cut off from the
//! leader) is left for another one. The abandoned request is not withdrawn: it reached the
//! server, which still acts on it (it keeps running, detached, and a commit may still apply),
//! so a commit whose attempt timed out may have applied and is resent under the same id. A commit whose request may
//! have reached a leader and whose outcome was never learned is [`CommitOutcome::Unknown`], which
//! the workload records as `info`; one that surely never applied is
//! [`CommitOutcome::NotApplied`], recorded as `fail`.
//!
//! # Example: a commit across a leader change
//!
//! ```text
//! known leader n1
//!  → n1 commit(id 7f..)   ← OutcomeUnknown   may_have_applied = true; back off
//!  → n1 commit(id 7f..)   ← NotLeader(n2)    remember n2; back off (still may have applied)
//!  → n2 commit(id 7f..)   ← Ok(ts 1_040)     Committed at 1_040 (n2 found the record, or applied it now)
//! ```
//!
//! Had the deadline passed after the first answer, the outcome would be `Unknown` (an `info`);
//! had it passed after only `NotLeader` answers, `NotApplied` (a `fail`).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::time::Instant;

use boundkv_clockbound::Timestamp;
use boundkv_storage::Engine;
use boundkv_txn::replica::{ReadAt, Replica};
use boundkv_txn::{CommitInfo, CommitRequest, Error, TxnId};

use super::SimCluster;

/// How long one operation may take, in simulated time, before it completes as `info` (it may
/// have committed) or `fail` (it surely did not).
pub const OP_TIMEOUT: Duration = Duration::from_secs(5);

/// How many times a commit whose outcome is unknown is resent (same transaction id) before the
/// operation gives up and reports it unknown.
pub const MAX_UNKNOWN_RESENDS: u32 = 5;

/// How many attempts a step that was definitely refused (`NotLeader`, `Unavailable`, a clock
/// error, a replica that is down) gets within one operation.
pub const MAX_ATTEMPTS: u32 = 30;

/// The share of clients that read from a home replica of their own rather than from a random
/// one (see [`SimClient`]'s `home`).
pub const HOME_READERS: f64 = 0.4;

/// The shortest and longest request timeout a client uses per attempt, in milliseconds (each
/// client draws its own, uniformly).
pub const ATTEMPT_TIMEOUT: (u64, u64) = (200, 3_000);

/// The shortest and longest pause before a retry (drawn uniformly).
const BACKOFF: (u64, u64) = (5, 40);

/// A replica of the cluster and its id.
pub type NodeRef<E> = (u64, Arc<Replica<E>>);

/// How a commit ended, as far as the client can tell.
#[derive(Debug)]
pub enum CommitOutcome {
    /// It applied, at `info.ts`, through node `node`.
    Committed {
        /// The node that answered.
        node: u64,
        /// Its answer.
        info: CommitInfo,
    },
    /// It surely did not apply (every answer was a definite refusal, or none was ever sent).
    NotApplied {
        /// Whether the refusal was a conflict (`Conflict`, `Expired`): the reads are stale, so
        /// the transaction must run again with new reads (and a new id) to succeed.
        conflict: bool,
        /// What happened, for people.
        error: String,
    },
    /// It may or may not have applied.
    Unknown {
        /// What happened, for people.
        error: String,
    },
}

/// How a read-write transaction ([`SimClient::transaction`]) ended.
#[derive(Debug)]
pub enum TxnOutcome {
    /// It committed (or, having nothing to write, needed no commit).
    Done {
        /// The node it read and committed at (the last leader it spoke to).
        node: u64,
        /// Its read timestamp.
        read_ts: Timestamp,
        /// Its commit timestamp; `None` when it wrote nothing.
        commit_ts: Option<Timestamp>,
        /// The values it read, in the order of its keys.
        values: Vec<Option<Bytes>>,
    },
    /// It surely did not apply; see [`CommitOutcome::NotApplied`].
    NotApplied {
        /// Whether it lost a conflict.
        conflict: bool,
        /// What happened, for people.
        error: String,
    },
    /// It may have applied.
    Unknown {
        /// What happened, for people.
        error: String,
        /// The read timestamp of the attempt whose commit is unknown.
        read_ts: Timestamp,
    },
}

/// A snapshot read: the node that served it, its timestamp, the values in key order.
#[derive(Debug)]
pub struct SnapshotRead {
    /// The node that served it.
    pub node: u64,
    /// Its read timestamp.
    pub ts: Timestamp,
    /// The values, in the order of the keys asked for.
    pub values: Vec<Option<Bytes>>,
}

/// Whether `e`, the answer to a commit, says this attempt surely did not apply (nothing was
/// proposed, or the proposal was dropped). `OutcomeUnknown`, storage failures and anything new
/// count as "may have applied".
pub fn commit_surely_not_applied(e: &Error) -> bool {
    matches!(
        e,
        Error::Conflict { .. }
            | Error::Expired { .. }
            | Error::Clock(_)
            | Error::ClockBehind { .. }
            | Error::ClockFenced { .. }
            | Error::NotLeader { .. }
            | Error::Unavailable(_)
            | Error::FollowerBehind { .. }
            | Error::BelowGcHorizon { .. }
            | Error::TimestampInFuture { .. }
            | Error::KeyTooLarge { .. }
            | Error::ValueTooLarge { .. }
            | Error::TransactionTooLarge { .. }
            | Error::Rejected(_)
            | Error::ReadOnly
    )
}

/// One client: where it thinks the leader is, its generator, and its current operation's
/// deadline.
pub struct SimClient<E: Engine> {
    cluster: Arc<dyn SimCluster<E>>,
    rng: StdRng,
    known_leader: Option<u64>,
    deadline: Instant,
    /// This client's request timeout: how long it waits for one attempt's answer.
    attempt_timeout: Duration,
    /// The replica whose last attempt timed out: the next attempt goes elsewhere.
    unresponsive: Option<u64>,
    /// The replica this client reads from, if it has one (as an application reads from the
    /// replica next to it): it keeps reading there whatever happens to that replica.
    home: Option<u64>,
    /// Whether the client resets a connection it gives up on (so a request held at a paused
    /// replica is discarded), or just stops waiting (so it still runs when the replica resumes).
    resets_abandoned: bool,
}

/// How one attempt at a replica ended.
enum Attempt<T> {
    /// The replica answered.
    Answered(T),
    /// The client's request timeout passed first (the request keeps running at the replica).
    TimedOut,
    /// The operation's deadline passed first.
    Deadline,
}

impl<E: Engine> SimClient<E> {
    /// A client of `cluster` whose choices all come from `seed`.
    pub fn new(cluster: Arc<dyn SimCluster<E>>, seed: u64) -> Self {
        let mut rng = StdRng::seed_from_u64(seed);
        let attempt_timeout =
            Duration::from_millis(rng.random_range(ATTEMPT_TIMEOUT.0..=ATTEMPT_TIMEOUT.1));
        let nodes = cluster.node_ids();
        let resets_abandoned = rng.random_bool(0.5);
        let home = rng.random_bool(HOME_READERS).then(|| nodes[rng.random_range(0..nodes.len())]);
        SimClient {
            cluster,
            rng,
            known_leader: None,
            deadline: Instant::now() + OP_TIMEOUT,
            attempt_timeout,
            unresponsive: None,
            home,
            resets_abandoned,
        }
    }

    /// The cluster.
    pub fn cluster(&self) -> &Arc<dyn SimCluster<E>> {
        &self.cluster
    }

    /// The client's generator (the workloads draw their operations from it too).
    pub fn rng(&mut self) -> &mut StdRng {
        &mut self.rng
    }

    /// Starts an operation: its calls are cut off [`OP_TIMEOUT`] from now.
    pub fn begin_op(&mut self) {
        self.deadline = Instant::now() + OP_TIMEOUT;
    }

    /// Sets the current operation's deadline explicitly (setup and final reads take longer).
    pub fn set_deadline(&mut self, deadline: Instant) {
        self.deadline = deadline;
    }

    /// The replica this client reads from, if it has one of its own.
    pub fn home(&self) -> Option<u64> {
        self.home
    }

    /// A fresh transaction id from the client's generator.
    pub fn new_txn_id(&mut self) -> TxnId {
        TxnId(self.rng.random())
    }

    /// The replicas that are up, less the one that just failed to answer (unless it is the
    /// only one).
    fn live(&self) -> Vec<NodeRef<E>> {
        let up: Vec<NodeRef<E>> = self
            .cluster
            .node_ids()
            .into_iter()
            .filter_map(|id| self.cluster.replica(id).map(|r| (id, r)))
            .collect();
        if up.len() > 1 && up.iter().any(|(id, _)| Some(*id) == self.unresponsive) {
            up.into_iter().filter(|(id, _)| Some(*id) != self.unresponsive).collect()
        } else {
            up
        }
    }

    /// A random live replica.
    fn any_node(&mut self) -> Option<NodeRef<E>> {
        let live = self.live();
        if live.is_empty() {
            return None;
        }
        let i = self.rng.random_range(0..live.len());
        live.into_iter().nth(i)
    }

    /// Where a snapshot read goes: the client's home replica if it has one and it is up, else a
    /// random live replica.
    fn read_node(&mut self) -> Option<NodeRef<E>> {
        if let Some(r) = self.home.and_then(|id| self.cluster.replica(id)) {
            return self.home.map(|id| (id, r));
        }
        self.any_node()
    }

    /// The leader as best known: the remembered one if it is up, else the first live replica's
    /// idea of the leader, else a random live replica (it will redirect).
    fn leader_node(&mut self) -> Option<NodeRef<E>> {
        if self.known_leader.is_some() && self.known_leader == self.unresponsive {
            self.known_leader = None;
        }
        if let Some(r) = self.known_leader.and_then(|id| self.cluster.replica(id)) {
            return self.known_leader.map(|id| (id, r));
        }
        let live = self.live();
        let named =
            live.iter().find_map(|(_, r)| r.leader()).filter(|&l| Some(l) != self.unresponsive);
        if let Some(r) = named.and_then(|id| self.cluster.replica(id)) {
            self.known_leader = named;
            return named.map(|id| (id, r));
        }
        self.known_leader = None;
        self.any_node()
    }

    /// Learns from an error where the leader is.
    fn learn(&mut self, e: &Error) {
        match e {
            Error::NotLeader { leader, .. } => self.known_leader = *leader,
            Error::FollowerBehind { leader: Some(l), .. } => self.known_leader = Some(*l),
            _ => {}
        }
    }

    /// Pauses before a retry; false if the deadline passed (or would pass meanwhile).
    async fn back_off(&mut self) -> bool {
        let pause = Duration::from_millis(self.rng.random_range(BACKOFF.0..=BACKOFF.1));
        if Instant::now() + pause >= self.deadline {
            return false;
        }
        tokio::time::sleep(pause).await;
        true
    }

    /// One attempt: `call` to node `id`, held while the node is paused (as a request to a
    /// stopped process is) and sent the moment it resumes, waited for until the client's request
    /// timeout or the operation's deadline. The call runs as a task of its own, so that a request
    /// the client stopped waiting for still runs at the replica, as it would on a server.
    async fn attempt<T: Send + 'static>(
        &mut self,
        id: u64,
        call: impl Future<Output = T> + Send + 'static,
    ) -> Attempt<T> {
        let resumed = self.cluster.until_resumed(id);
        let started = Arc::new(AtomicBool::new(false));
        let task = {
            let started = started.clone();
            tokio::spawn(async move {
                resumed.await;
                started.store(true, Ordering::Release);
                call.await
            })
        };
        // A client waits for its home replica as long as the operation may take.
        let patience = if self.home == Some(id) { OP_TIMEOUT } else { self.attempt_timeout };
        let give_up = (Instant::now() + patience).min(self.deadline);
        let abort = task.abort_handle();
        match tokio::time::timeout_at(give_up, task).await {
            Ok(Ok(answer)) => {
                if self.unresponsive == Some(id) {
                    self.unresponsive = None;
                }
                Attempt::Answered(answer)
            }
            Ok(Err(e)) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Ok(Err(_)) => Attempt::Deadline, // cancelled: the run is ending
            Err(_) => {
                if self.resets_abandoned && !started.load(Ordering::Acquire) {
                    // The client reset the connection: a request still in the socket buffers of
                    // a stopped process is discarded with it, and never runs.
                    abort.abort();
                }
                if give_up >= self.deadline {
                    return Attempt::Deadline;
                }
                self.unresponsive = Some(id);
                Attempt::TimedOut
            }
        }
    }

    /// Reads `keys` in one snapshot at `ReadAt::Latest` of a random live replica, starting over
    /// (new replica, new timestamp) after any error. `Err` when the deadline or the attempts ran
    /// out: nothing was read.
    pub async fn snapshot(&mut self, keys: &[Bytes]) -> Result<SnapshotRead, String> {
        self.snapshot_at(keys, ReadAt::Latest).await
    }

    /// As [`SimClient::snapshot`], at `at` (a bounded-staleness read reads at a replica's
    /// closed timestamp, exactly where a closed timestamp's promise is tested).
    pub async fn snapshot_at(
        &mut self,
        keys: &[Bytes],
        at: ReadAt,
    ) -> Result<SnapshotRead, String> {
        let mut last = String::from("no attempt");
        for _ in 0..MAX_ATTEMPTS {
            match self.read_node() {
                None => last = "no replica is up".into(),
                Some((id, node)) => {
                    let keys = keys.to_vec();
                    let read = async move {
                        let ts = node.begin_read_only(at).await?;
                        let mut values = Vec::with_capacity(keys.len());
                        for k in &keys {
                            values.push(node.get(ts, k).await?);
                        }
                        Ok::<_, Error>((ts, values))
                    };
                    match self.attempt(id, read).await {
                        Attempt::Answered(Ok((ts, values))) => {
                            return Ok(SnapshotRead { node: id, ts, values });
                        }
                        Attempt::Answered(Err(e)) => {
                            self.learn(&e);
                            last = format!("n{id}: {e}");
                        }
                        Attempt::TimedOut => last = format!("n{id}: no answer in time"),
                        Attempt::Deadline => {
                            return Err(format!("n{id}: no answer before the deadline"));
                        }
                    }
                }
            }
            if !self.back_off().await {
                break;
            }
        }
        Err(last)
    }

    /// A read-write timestamp from the leader, retried on definite refusals.
    async fn begin_read_write(&mut self) -> Result<(NodeRef<E>, Timestamp), String> {
        let mut last = String::from("no attempt");
        for _ in 0..MAX_ATTEMPTS {
            match self.leader_node() {
                None => last = "no replica is up".into(),
                Some((id, node)) => {
                    let call = {
                        let node = node.clone();
                        async move { node.begin_read_write().await }
                    };
                    match self.attempt(id, call).await {
                        Attempt::Answered(Ok(ts)) => return Ok(((id, node), ts)),
                        Attempt::Answered(Err(e)) => {
                            self.learn(&e);
                            if matches!(e, Error::NotLeader { .. }) && self.known_leader == Some(id)
                            {
                                self.known_leader = None;
                            }
                            last = format!("n{id}: {e}");
                        }
                        Attempt::TimedOut => last = format!("n{id}: no read timestamp in time"),
                        Attempt::Deadline => {
                            return Err(format!("n{id}: no read timestamp before the deadline"));
                        }
                    }
                }
            }
            if !self.back_off().await {
                break;
            }
        }
        Err(last)
    }

    /// Commits `req` at the leader, resending the same request (same transaction id) until a
    /// definite answer, [`MAX_UNKNOWN_RESENDS`] unknown answers, or the deadline (see the module
    /// docs).
    pub async fn commit(&mut self, req: CommitRequest) -> CommitOutcome {
        let mut may_have_applied = false;
        let mut unknown_answers = 0;
        let mut last = String::from("no attempt");
        let first_attempt = Instant::now();
        let resend_window = self.cluster.resend_window();
        for _ in 0..MAX_ATTEMPTS {
            if may_have_applied && resend_window.is_some_and(|w| first_attempt.elapsed() >= w) {
                // Past the window a resend may apply a second time (see `resend_window`).
                return CommitOutcome::Unknown {
                    error: format!("stopped resending after the GC retention: {last}"),
                };
            }
            match self.leader_node() {
                None => last = "no replica is up".into(),
                Some((id, node)) => match self
                    .attempt(id, {
                        let req = req.clone();
                        async move { node.commit(req).await }
                    })
                    .await
                {
                    Attempt::Answered(Ok(info)) => {
                        self.known_leader = Some(id);
                        return CommitOutcome::Committed { node: id, info };
                    }
                    Attempt::Answered(Err(e)) if commit_surely_not_applied(&e) => {
                        self.learn(&e);
                        if matches!(e, Error::NotLeader { .. }) && self.known_leader == Some(id) {
                            self.known_leader = None;
                        }
                        last = format!("n{id}: {e}");
                        if matches!(e, Error::Conflict { .. } | Error::Expired { .. }) {
                            // A resend cannot succeed: its reads are stale.
                            return if may_have_applied {
                                CommitOutcome::Unknown { error: last }
                            } else {
                                CommitOutcome::NotApplied { conflict: true, error: last }
                            };
                        }
                        if matches!(
                            e,
                            Error::KeyTooLarge { .. }
                                | Error::ValueTooLarge { .. }
                                | Error::TransactionTooLarge { .. }
                                | Error::Rejected(_)
                                | Error::ReadOnly
                        ) && !may_have_applied
                        {
                            return CommitOutcome::NotApplied { conflict: false, error: last };
                        }
                    }
                    Attempt::Answered(Err(e)) => {
                        may_have_applied = true;
                        unknown_answers += 1;
                        last = format!("n{id}: {e}");
                        if unknown_answers > MAX_UNKNOWN_RESENDS {
                            return CommitOutcome::Unknown { error: last };
                        }
                    }
                    Attempt::TimedOut => {
                        // The request is still at that replica and may yet apply.
                        may_have_applied = true;
                        unknown_answers += 1;
                        last = format!("n{id}: no commit answer in time");
                        if unknown_answers > MAX_UNKNOWN_RESENDS {
                            return CommitOutcome::Unknown { error: last };
                        }
                    }
                    Attempt::Deadline => {
                        // The request may be in flight at the leader.
                        return CommitOutcome::Unknown {
                            error: format!("n{id}: no commit answer before the deadline"),
                        };
                    }
                },
            }
            if !self.back_off().await {
                break;
            }
        }
        if may_have_applied {
            CommitOutcome::Unknown { error: format!("gave up resending: {last}") }
        } else {
            CommitOutcome::NotApplied { conflict: false, error: format!("gave up: {last}") }
        }
    }

    /// Commits blind `writes` (no reads) with a fresh transaction id.
    pub async fn blind_write(&mut self, writes: BTreeMap<Bytes, Option<Bytes>>) -> CommitOutcome {
        let req = CommitRequest {
            txn_id: self.new_txn_id(),
            read_ts: None,
            read_keys: BTreeSet::new(),
            read_ranges: Vec::new(),
            writes,
        };
        self.commit(req).await
    }

    /// One attempt of a read-write transaction at the leader: reads `keys` at a read-write
    /// timestamp, asks `decide` for the writes (given the values read), and commits them (with
    /// the keys as its read set) under a fresh transaction id. A transaction that writes nothing
    /// needs no commit. Failures before the commit are retried inside; a conflict at commit is
    /// returned ([`TxnOutcome::NotApplied`] with `conflict`), for the caller to decide whether
    /// to run it again.
    pub async fn transaction(
        &mut self,
        keys: &[Bytes],
        decide: impl Fn(&[Option<Bytes>]) -> BTreeMap<Bytes, Option<Bytes>>,
    ) -> TxnOutcome {
        let mut last = String::from("no attempt");
        for _ in 0..MAX_ATTEMPTS {
            let ((id, node), read_ts) = match self.begin_read_write().await {
                Ok(begun) => begun,
                Err(e) => return TxnOutcome::NotApplied { conflict: false, error: e },
            };
            let reads = {
                let (node, keys) = (node.clone(), keys.to_vec());
                async move {
                    let mut values = Vec::with_capacity(keys.len());
                    for k in &keys {
                        values.push(node.get(read_ts, k).await?);
                    }
                    Ok::<_, Error>(values)
                }
            };
            let values = match self.attempt(id, reads).await {
                Attempt::Answered(Ok(values)) => values,
                Attempt::Answered(Err(e)) => {
                    self.learn(&e);
                    last = format!("n{id}: {e}");
                    if self.back_off().await {
                        continue;
                    }
                    break;
                }
                Attempt::TimedOut => {
                    last = format!("n{id}: no read answer in time");
                    if self.back_off().await {
                        continue;
                    }
                    break;
                }
                Attempt::Deadline => {
                    last = format!("n{id}: no read answer before the deadline");
                    break;
                }
            };
            let writes = decide(&values);
            if writes.is_empty() {
                return TxnOutcome::Done { node: id, read_ts, commit_ts: None, values };
            }
            let req = CommitRequest {
                txn_id: self.new_txn_id(),
                read_ts: Some(read_ts),
                read_keys: keys.iter().cloned().collect(),
                read_ranges: Vec::new(),
                writes,
            };
            return match self.commit(req).await {
                CommitOutcome::Committed { node, info } => {
                    TxnOutcome::Done { node, read_ts, commit_ts: Some(info.ts), values }
                }
                CommitOutcome::NotApplied { conflict, error } => {
                    TxnOutcome::NotApplied { conflict, error }
                }
                CommitOutcome::Unknown { error } => TxnOutcome::Unknown { error, read_ts },
            };
        }
        TxnOutcome::NotApplied { conflict: false, error: last }
    }
}
