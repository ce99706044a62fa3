//! What the client knows about the cluster, and the loops that route a request to a node that
//! can serve it.
//!
//! # The view
//!
//! The client starts from the addresses it was given (the *seeds*), learns the membership and
//! the leader from every `Status` answer (and every `AddMember`/`RemoveMember` answer), and
//! remembers the leader that the last `NotLeader { leader: Some(..) }` or `FollowerBehind`
//! pointed to. The *known addresses* are the members' client addresses followed by any seed not
//! among them; seeds are never forgotten, so a client can always find its way back.
//!
//! # Requests that need the leader
//!
//! `BeginReadWrite`, `Commit`, `AddMember` and `RemoveMember` go to the remembered leader, or,
//! when none is known, to the known addresses in turn. [`Cluster::call_leader`] keeps going
//! until an answer or its deadline:
//!
//! ```text
//! seeds [a, b]; the leader is c, which the client has not heard of
//!  → a  Commit                ← NotLeader { leader: c }    redirect: to c at once
//!  → c  Commit                   (connection refused)      forget c; back off; next address
//!  → b  Commit                ← NotLeader { leader: None } back off; next address
//!  → a  Commit                ← NotLeader { leader: c }    c was tried already: back off first
//!  → c  Commit                ← Committed                  done; c is remembered as the leader
//! ```
//!
//! `ClockUnavailable` is an answer, not a reason to retry: the node waited its clock policy's
//! `unavailable_timeout` (5 s by default) for a usable reading before giving it, and nothing was
//! done. Only a commit that an earlier attempt may have applied is resent after it.
//!
//! A redirect to an address not yet tried by this call is followed at once; every other retry
//! waits a jittered backoff first, so two nodes pointing at each other cannot make the client
//! spin. How a request may be resent after its connection broke or timed out (the server may
//! have acted on it) is the caller's choice of [`Resend`]: reads of a timestamp always; a commit
//! only as itself, with the same transaction id, and while tracking that it may have applied;
//! membership changes never.
//!
//! # Requests any node can serve
//!
//! `BeginReadOnly` and reads at a timestamp start at the node chosen by the
//! [`ReadPreference`](crate::ReadPreference) (or the node a snapshot began at), and
//! [`Cluster::call_reader`] moves on only when it must: after [`FOLLOWER_BEHIND_RETRIES`]
//! `FollowerBehind` answers in a row, or at once when the node is unreachable, unavailable, or
//! stopped, or its clock is unusable (until every known node has answered `ClockUnavailable`:
//! that is then the answer). It moves to the leader if one is known and it is not the node that failed, otherwise
//! to the next known address. A read at a fixed timestamp has the same answer on every node that
//! serves it, so moving is always safe.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use boundkv_wire::{Member, NodeStatus, Request, Response, Role, WireError};
use tokio::time::Instant;

use crate::backoff::Backoff;
use crate::connection::{CallError, Pool};
use crate::{ClientOptions, Error, ReadPreference, Result, TxnId};

/// How many `FollowerBehind` answers in a row a read accepts from one node (backing off between
/// them) before it moves to the leader or another node.
pub(crate) const FOLLOWER_BEHIND_RETRIES: u32 = 3;

/// The shortest timeout an attempt gets, even when its deadline has (nearly) passed.
const MIN_ATTEMPT_TIMEOUT: Duration = Duration::from_millis(1);

/// Whether a leader request may be sent again after it may have reached the server without an
/// answer coming back (its connection broke, or it timed out).
#[derive(Clone, Copy, Debug)]
pub(crate) enum Resend {
    /// Yes: doing it twice is harmless (`BeginReadWrite`).
    Always,
    /// Only as itself: a commit, deduplicated by this transaction id. The loop tracks whether it
    /// may have applied, and reports [`Error::OutcomeUnknown`] if so when the deadline passes.
    SameTxn(TxnId),
    /// No: the error is returned to the caller (`AddMember`, `RemoveMember`).
    Never,
}

/// Where the client thinks the cluster is.
struct View {
    seeds: Vec<String>,
    members: Vec<Member>,
    leader: Option<Member>,
}

/// The client's shared state: options, connections, and its view of the cluster.
pub(crate) struct Cluster {
    pub(crate) options: ClientOptions,
    pool: Pool,
    view: Mutex<View>,
    /// Picks the next known address for round-robin.
    rotation: AtomicUsize,
}

impl Cluster {
    /// A cluster known only by its seed addresses.
    pub(crate) fn new(seeds: Vec<String>, options: ClientOptions) -> Self {
        Cluster {
            pool: Pool::new(options.connect_timeout),
            options,
            view: Mutex::new(View { seeds, members: Vec::new(), leader: None }),
            rotation: AtomicUsize::new(0),
        }
    }

    fn view(&self) -> MutexGuard<'_, View> {
        // Every update is a plain assignment, so a poisoned lock still holds a consistent view.
        self.view.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A fresh backoff with the configured bounds.
    pub(crate) fn backoff(&self) -> Backoff {
        Backoff::new(self.options.retry_backoff_min, self.options.retry_backoff_max)
    }

    /// The members, as last learned.
    pub(crate) fn members(&self) -> Vec<Member> {
        self.view().members.clone()
    }

    /// The leader, as last learned.
    pub(crate) fn leader(&self) -> Option<Member> {
        self.view().leader.clone()
    }

    /// The members' client addresses, then the seeds not among them.
    pub(crate) fn known_addresses(&self) -> Vec<String> {
        let view = self.view();
        let mut addresses: Vec<String> = Vec::new();
        let candidates = view.members.iter().map(|m| &m.client_address).chain(view.seeds.iter());
        for address in candidates {
            if !addresses.contains(address) {
                addresses.push(address.clone());
            }
        }
        addresses
    }

    /// The client address of node `id`, if it is a known member (or the known leader).
    pub(crate) fn address_of(&self, id: u64) -> Option<String> {
        let view = self.view();
        view.members
            .iter()
            .chain(view.leader.iter())
            .find(|m| m.id == id)
            .map(|m| m.client_address.clone())
    }

    fn leader_address(&self) -> Option<String> {
        self.view().leader.as_ref().map(|m| m.client_address.clone())
    }

    /// The next known address in round-robin order, skipping `except` unless it is the only one.
    fn next_address(&self, except: Option<&str>) -> Option<String> {
        let addresses = self.known_addresses();
        let others: Vec<&String> =
            addresses.iter().filter(|a| Some(a.as_str()) != except).collect();
        let pool = if others.is_empty() { addresses.iter().collect() } else { others };
        if pool.is_empty() {
            return None;
        }
        let turn = self.rotation.fetch_add(1, Ordering::Relaxed);
        Some(pool[turn % pool.len()].clone())
    }

    /// Where to go after `failed` could not serve a read: the leader unless it is `failed`, else
    /// the next other known address, else `failed` again.
    fn fallback_address(&self, failed: &str) -> String {
        match self.leader_address() {
            Some(leader) if leader != failed => leader,
            _ => self.next_address(Some(failed)).unwrap_or_else(|| failed.to_string()),
        }
    }

    /// Where a read-only transaction begins, by the read preference.
    pub(crate) fn read_address(&self) -> Result<String> {
        let address = match self.options.read_preference {
            ReadPreference::Leader => self.leader_address().or_else(|| self.next_address(None)),
            ReadPreference::Any => self.next_address(None),
            ReadPreference::Node(id) => Some(self.address_of(id).ok_or(Error::UnknownNode { id })?),
        };
        address.ok_or(Error::NoNodeReachable { tried: Vec::new(), last_error: None })
    }

    /// Learns the membership and the leader from a node's status.
    pub(crate) fn learn_status(&self, status: &NodeStatus) {
        let mut view = self.view();
        if !status.members.is_empty() {
            view.members = status.members.clone();
        }
        let leader = match (&status.leader, status.role) {
            (Some(leader), _) => Some(leader.clone()),
            (None, Role::Leader) => status.members.iter().find(|m| m.id == status.id).cloned(),
            (None, _) => None,
        };
        if let Some(leader) = leader {
            view.leader = Some(leader);
        }
    }

    /// Learns the membership after a change.
    pub(crate) fn learn_members(&self, members: &[Member]) {
        let mut view = self.view();
        view.members = members.to_vec();
        let leader_left =
            view.leader.as_ref().is_some_and(|l| !members.iter().any(|m| m.id == l.id));
        if leader_left {
            view.leader = None;
        }
    }

    fn learn_leader(&self, leader: &Member) {
        let mut view = self.view();
        if view.leader.as_ref() != Some(leader) {
            tracing::debug!(leader = %leader, "learned the leader");
            view.leader = Some(leader.clone());
        }
    }

    fn forget_leader_at(&self, address: &str) {
        let mut view = self.view();
        if view.leader.as_ref().is_some_and(|l| l.client_address == address) {
            tracing::debug!(address, "forgetting the leader");
            view.leader = None;
        }
    }

    /// How long the next attempt may take: the request timeout, cut to what is left before
    /// `deadline`.
    fn attempt_timeout(&self, deadline: Instant) -> Duration {
        let left = deadline.saturating_duration_since(Instant::now());
        self.options.request_timeout.min(left).max(MIN_ATTEMPT_TIMEOUT)
    }

    /// Sends one request to one node, with the request timeout, and no retries. A
    /// [`Response::Error`] becomes [`Error::Server`].
    pub(crate) async fn call_once(&self, address: &str, request: Request) -> Result<Response> {
        match self.pool.call(address, request, self.options.request_timeout).await {
            Ok(Response::Error(e)) => Err(Error::Server(e)),
            Ok(response) => Ok(response),
            Err(e) => Err(e.into_error()),
        }
    }

    /// The status of the node at `address`, which the view learns from.
    pub(crate) async fn status_at(&self, address: &str) -> Result<NodeStatus> {
        match self.call_once(address, Request::Status).await? {
            Response::Status(status) => {
                self.learn_status(&status);
                Ok(*status)
            }
            other => Err(unexpected("Status", &other)),
        }
    }

    /// The status of the first node that answers, trying the leader first and then every known
    /// address once.
    pub(crate) async fn status_of_any(&self) -> Result<NodeStatus> {
        let mut order: Vec<String> = self.leader_address().into_iter().collect();
        for address in self.known_addresses() {
            if !order.contains(&address) {
                order.push(address);
            }
        }
        let mut last_error = None;
        for address in &order {
            match self.status_at(address).await {
                Ok(status) => return Ok(status),
                Err(e) if e.is_retryable() || matches!(e, Error::Server(WireError::Fatal(_))) => {
                    tracing::debug!(address, error = %e, "status failed; trying the next node");
                    last_error = Some(e);
                }
                Err(e) => return Err(e),
            }
        }
        Err(Error::NoNodeReachable { tried: order, last_error: last_error.map(Box::new) })
    }

    /// Sends a request that needs the leader, following redirects and retrying until an answer
    /// or the deadline (see the module docs). Returns the answer and the address that gave it.
    ///
    /// For a commit ([`Resend::SameTxn`]) the error it returns is [`Error::OutcomeUnknown`]
    /// whenever an earlier attempt may have applied and no later answer settled it; any other
    /// error means the transaction did not apply.
    pub(crate) async fn call_leader(
        &self,
        request: Request,
        resend: Resend,
    ) -> Result<(Response, String)> {
        let deadline = Instant::now()
            + match resend {
                Resend::SameTxn(_) => self.options.commit_deadline,
                Resend::Always | Resend::Never => self.options.retry_deadline,
            };
        let mut backoff = self.backoff();
        let mut tried: Vec<String> = Vec::new();
        let mut stopped: Vec<String> = Vec::new();
        let mut last_error: Option<Error> = None;
        let mut may_have_applied = false;
        let mut pause = false;
        // How the call ends with `error`: for a commit that may have applied, unknown.
        let fail = |error: Error, may_have_applied: bool| match resend {
            Resend::SameTxn(txn_id) if may_have_applied => {
                Err(Error::OutcomeUnknown { txn_id, reason: error.to_string() })
            }
            _ => Err(error),
        };
        for attempt in 1u64.. {
            if attempt > 1 {
                let time_left =
                    if pause { backoff.wait(deadline).await } else { Instant::now() < deadline };
                if !time_left {
                    break;
                }
            }
            pause = true;
            let Some(address) = self.leader_address().or_else(|| self.next_address(None)) else {
                break;
            };
            if !tried.contains(&address) {
                tried.push(address.clone());
            }
            if attempt > 1 {
                tracing::debug!(
                    attempt,
                    address,
                    request = request_kind(&request),
                    last_error = %last_error.as_ref().map(ToString::to_string).unwrap_or_default(),
                    "retrying at the leader"
                );
            }
            let timeout = self.attempt_timeout(deadline);
            let error = match self.pool.call(&address, request.clone(), timeout).await {
                Ok(Response::Error(e)) => {
                    match &e {
                        WireError::NotLeader { leader: Some(leader) }
                            if leader.client_address != address =>
                        {
                            tracing::debug!(from = address, to = %leader, "redirected to the leader");
                            pause = tried.contains(&leader.client_address);
                            self.learn_leader(leader);
                        }
                        WireError::NotLeader { .. } => self.forget_leader_at(&address),
                        WireError::Fatal(_) => {
                            self.forget_leader_at(&address);
                            if !stopped.contains(&address) {
                                stopped.push(address.clone());
                            }
                            // Another node may serve it, but not if every node has stopped.
                            if self.known_addresses().iter().all(|a| stopped.contains(a)) {
                                return fail(Error::Server(e), may_have_applied);
                            }
                        }
                        // The server already waited its clock policy's `unavailable_timeout`
                        // for a usable reading: a definite "nothing was done", answered as soon
                        // as it comes. Resending would only repeat that wait into the deadline
                        // (and a commit's last attempt, cut short by it, would end as "outcome
                        // unknown"). After an attempt that may have applied it settles nothing,
                        // so a commit is resent then, as after `Unavailable`.
                        WireError::ClockUnavailable(_) if !may_have_applied => {
                            return Err(Error::Server(e));
                        }
                        WireError::Unavailable(_) | WireError::ClockUnavailable(_) => {}
                        WireError::OutcomeUnknown(_) if matches!(resend, Resend::SameTxn(_)) => {
                            may_have_applied = true;
                        }
                        // The server could not read the request, so it could not look up its
                        // transaction id either: this answer says nothing about earlier attempts.
                        WireError::UnsupportedVersion { .. }
                        | WireError::Malformed(_)
                        | WireError::FrameTooLarge { .. } => {
                            return fail(Error::Server(e), may_have_applied);
                        }
                        // A definite answer. For a commit it means the transaction did not apply,
                        // even after earlier attempts whose outcome was unknown: the server
                        // deduplicates by transaction id, so had one applied, it would say
                        // `Committed`.
                        _ => return Err(Error::Server(e)),
                    }
                    Error::Server(e)
                }
                Ok(response) => return Ok((response, address)),
                Err(CallError::NotSent(e @ Error::Connection { .. })) => {
                    self.forget_leader_at(&address);
                    e
                }
                // Could not be encoded (too large), or the connection had closed on a frame it
                // could not read: resending will not help.
                Err(CallError::NotSent(e)) => return fail(e, may_have_applied),
                Err(CallError::NoAnswer(
                    e @ (Error::Connection { .. } | Error::Timeout { .. }),
                )) => {
                    match resend {
                        Resend::Always => {}
                        Resend::SameTxn(_) => may_have_applied = true,
                        Resend::Never => return Err(e),
                    }
                    if matches!(e, Error::Connection { .. }) {
                        self.forget_leader_at(&address);
                    }
                    e
                }
                // The answer came but could not be read (another protocol version, garbage):
                // the server may have acted on the request, and resending will not help.
                Err(CallError::NoAnswer(e)) => return fail(e, true),
            };
            last_error = Some(error);
        }
        fail(give_up(tried, last_error), may_have_applied)
    }

    /// Sends a request any node can serve (`BeginReadOnly`, or a read at a timestamp), starting
    /// at `address` and moving on as the module docs describe, until an answer or the retry
    /// deadline. Returns the answer and the address that gave it.
    pub(crate) async fn call_reader(
        &self,
        request: Request,
        address: String,
    ) -> Result<(Response, String)> {
        let deadline = Instant::now() + self.options.retry_deadline;
        let mut backoff = self.backoff();
        let mut address = address;
        let mut tried: Vec<String> = Vec::new();
        let mut last_error: Option<Error> = None;
        let mut stopped: Vec<String> = Vec::new();
        let mut clock_refused: Vec<String> = Vec::new();
        let mut behind_here = 0;
        for attempt in 1u64.. {
            if attempt > 1 && !backoff.wait(deadline).await {
                break;
            }
            if !tried.contains(&address) {
                tried.push(address.clone());
            }
            let timeout = self.attempt_timeout(deadline);
            let (error, move_on) = match self.pool.call(&address, request.clone(), timeout).await {
                Ok(Response::Error(e)) => {
                    let move_on = match &e {
                        WireError::FollowerBehind { leader, .. } => {
                            if let Some(leader) = leader {
                                self.learn_leader(leader);
                            }
                            behind_here += 1;
                            behind_here >= FOLLOWER_BEHIND_RETRIES
                        }
                        WireError::NotLeader { leader } => {
                            if let Some(leader) = leader {
                                self.learn_leader(leader);
                            }
                            true
                        }
                        WireError::Fatal(_) => {
                            if !stopped.contains(&address) {
                                stopped.push(address.clone());
                            }
                            if self.known_addresses().iter().all(|a| stopped.contains(a)) {
                                return Err(Error::Server(e));
                            }
                            true
                        }
                        WireError::Unavailable(_) => true,
                        // Another node's clock may serve it; once every known node has said
                        // so (each after waiting its own `unavailable_timeout`), that is the
                        // answer.
                        WireError::ClockUnavailable(_) => {
                            if !clock_refused.contains(&address) {
                                clock_refused.push(address.clone());
                            }
                            if self.known_addresses().iter().all(|a| clock_refused.contains(a)) {
                                return Err(Error::Server(e));
                            }
                            true
                        }
                        _ => return Err(Error::Server(e)),
                    };
                    (Error::Server(e), move_on)
                }
                Ok(response) => return Ok((response, address)),
                Err(
                    CallError::NotSent(e @ Error::Connection { .. })
                    | CallError::NoAnswer(e @ (Error::Connection { .. } | Error::Timeout { .. })),
                ) => {
                    if matches!(e, Error::Connection { .. }) {
                        self.forget_leader_at(&address);
                    }
                    (e, true)
                }
                Err(e) => return Err(e.into_error()),
            };
            if move_on {
                let next = self.fallback_address(&address);
                tracing::debug!(
                    from = address,
                    to = next,
                    request = request_kind(&request),
                    error = %error,
                    "moving a read to another node"
                );
                address = next;
                behind_here = 0;
            } else {
                tracing::debug!(
                    address,
                    request = request_kind(&request),
                    error = %error,
                    "retrying a read"
                );
            }
            last_error = Some(error);
        }
        Err(give_up(tried, last_error))
    }
}

/// The error a retry loop ends with: its last error, or, when several nodes were tried and the
/// last failure was the transport's, that no node could be reached.
fn give_up(tried: Vec<String>, last_error: Option<Error>) -> Error {
    match last_error {
        Some(e @ (Error::Connection { .. } | Error::Timeout { .. })) if tried.len() > 1 => {
            Error::NoNodeReachable { tried, last_error: Some(Box::new(e)) }
        }
        Some(e) => e,
        None => Error::NoNodeReachable { tried, last_error: None },
    }
}

/// The error for an answer of the wrong type.
pub(crate) fn unexpected(request: &str, response: &Response) -> Error {
    Error::Protocol(format!("a {request} request was answered with {}", response_kind(response)))
}

fn response_kind(response: &Response) -> &'static str {
    match response {
        Response::Timestamp(_) => "Timestamp",
        Response::Value(_) => "Value",
        Response::Rows(_) => "Rows",
        Response::Committed(_) => "Committed",
        Response::Status(_) => "Status",
        Response::Members(_) => "Members",
        Response::Error(_) => "Error",
    }
}

fn request_kind(request: &Request) -> &'static str {
    match request {
        Request::BeginReadWrite => "BeginReadWrite",
        Request::BeginReadOnly { .. } => "BeginReadOnly",
        Request::Get { .. } => "Get",
        Request::Scan { .. } => "Scan",
        Request::Commit(_) => "Commit",
        Request::Status => "Status",
        Request::AddMember { .. } => "AddMember",
        Request::RemoveMember { .. } => "RemoveMember",
    }
}
