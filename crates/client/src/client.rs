//! [`Client`]: the handle applications hold.

use std::ops::RangeBounds;
use std::sync::Arc;
use std::time::Duration;

use boundkv_wire::{
    CommitInfo, Member, NodeStatus, ReadAt, Request, Response, Timestamp, WireError,
};
use bytes::Bytes;

use crate::cluster::{Cluster, Resend, unexpected};
use crate::transaction::to_bounds;
use crate::{ClientOptions, Error, Result, Snapshot, Transaction};

/// A node, by id or by client address, for [`Client::status_of`] and [`Client::send_request`].
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum NodeRef {
    /// The member with this id (its client address comes from the membership the client knows).
    Id(u64),
    /// Whatever node listens at this client address, `host:port`.
    Address(String),
}

impl From<u64> for NodeRef {
    fn from(id: u64) -> Self {
        NodeRef::Id(id)
    }
}

impl From<&str> for NodeRef {
    fn from(address: &str) -> Self {
        NodeRef::Address(address.to_string())
    }
}

impl From<String> for NodeRef {
    fn from(address: String) -> Self {
        NodeRef::Address(address)
    }
}

/// A client of a boundkv cluster. Cheap to clone (the clones share connections and what they
/// learn about the cluster), and usable from many tasks at once. Must be used within a tokio
/// runtime.
///
/// See the crate docs for an example and for how it retries.
#[derive(Clone)]
pub struct Client {
    cluster: Arc<Cluster>,
}

impl Client {
    /// Connects to a cluster with [`ClientOptions::default`]; see [`Client::connect_with`].
    pub async fn connect(addrs: impl IntoIterator<Item = impl Into<String>>) -> Result<Client> {
        Client::connect_with(addrs, ClientOptions::default()).await
    }

    /// Connects to a cluster through the nodes at `addrs` (client addresses, `host:port`): asks
    /// them for their status in turn until one answers, and learns the membership and the leader
    /// from it.
    ///
    /// # Errors
    ///
    /// [`Error::NoNodeReachable`] if no node answers (or `addrs` is empty); a definite error
    /// such as a protocol version mismatch at once.
    pub async fn connect_with(
        addrs: impl IntoIterator<Item = impl Into<String>>,
        options: ClientOptions,
    ) -> Result<Client> {
        let seeds: Vec<String> = addrs.into_iter().map(Into::into).collect();
        let cluster = Arc::new(Cluster::new(seeds.clone(), options));
        let mut last_error = None;
        for address in &seeds {
            match cluster.status_at(address).await {
                Ok(status) => {
                    tracing::debug!(
                        address,
                        node = status.id,
                        role = %status.role,
                        leader = ?status.leader.as_ref().map(|l| l.id),
                        members = status.members.len(),
                        "connected to the cluster"
                    );
                    return Ok(Client { cluster });
                }
                Err(e) if e.is_retryable() || matches!(e, Error::Server(WireError::Fatal(_))) => {
                    tracing::debug!(address, error = %e, "no status; trying the next address");
                    last_error = Some(e);
                }
                Err(e) => return Err(e),
            }
        }
        Err(Error::NoNodeReachable { tried: seeds, last_error: last_error.map(Box::new) })
    }

    /// The options the client was created with.
    pub fn options(&self) -> &ClientOptions {
        &self.cluster.options
    }

    /// Begins a read-write transaction. Nothing is sent until its first read (see
    /// [`Transaction`]).
    pub fn begin(&self) -> Transaction {
        Transaction::new(self.cluster.clone())
    }

    /// Runs `f` in a read-write transaction and commits it, re-running both (each time as a new
    /// transaction, with a new id) when they fail with an error after which starting over is
    /// safe and may help: a conflict, an expired read timestamp, no leader, an unavailable node
    /// or clock, an unreachable cluster. Waits a jittered, doubling backoff between runs, and
    /// runs at most [`ClientOptions::max_transaction_attempts`] times. Returns `f`'s result and
    /// the commit's information, or the last error.
    ///
    /// `f` may run several times, so it should not have effects outside the transaction. A
    /// commit whose outcome is unknown ([`Error::OutcomeUnknown`]) is never re-run: it may have
    /// applied.
    ///
    /// ```no_run
    /// # async fn example(client: boundkv_client::Client) -> boundkv_client::Result<()> {
    /// let (old, _info) = client
    ///     .transaction(async |txn| {
    ///         let old = txn.get("counter").await?;
    ///         let n: u64 = old.as_deref().map_or(0, |v| String::from_utf8_lossy(v).parse().unwrap_or(0));
    ///         txn.put("counter", (n + 1).to_string())?;
    ///         Ok(n)
    ///     })
    ///     .await?;
    /// # let _ = old; Ok(()) }
    /// ```
    pub async fn transaction<T>(
        &self,
        mut f: impl AsyncFnMut(&mut Transaction) -> Result<T>,
    ) -> Result<(T, CommitInfo)> {
        let attempts = self.cluster.options.max_transaction_attempts.max(1);
        let mut backoff = self.cluster.backoff();
        let mut attempt = 1;
        loop {
            let mut txn = self.begin();
            let txn_id = txn.id();
            let result = match f(&mut txn).await {
                Ok(value) => txn.commit().await.map(|info| (value, info)),
                Err(e) => Err(e),
            };
            match result {
                // Not after `ClockUnavailable`: the server already waited for its clock.
                Err(e)
                    if e.is_retryable()
                        && !e.commit_may_have_applied()
                        && !matches!(e.server_error(), Some(WireError::ClockUnavailable(_)))
                        && attempt < attempts =>
                {
                    let delay = backoff.next_delay();
                    tracing::debug!(attempt, %txn_id, error = %e, ?delay, "re-running the transaction");
                    tokio::time::sleep(delay).await;
                    attempt += 1;
                }
                other => return other,
            }
        }
    }

    async fn begin_read_only(&self, at: ReadAt) -> Result<Snapshot> {
        let start = self.cluster.read_address()?;
        let (response, home) =
            self.cluster.call_reader(Request::BeginReadOnly { at }, start).await?;
        match response {
            Response::Timestamp(ts) => Ok(Snapshot::new(self.cluster.clone(), ts, home)),
            other => Err(unexpected("BeginReadOnly", &other)),
        }
    }

    /// A read-only snapshot of the latest state: it sees every transaction acknowledged before
    /// this call. Served by the node the [`ReadPreference`](crate::ReadPreference) picks.
    pub async fn read_only(&self) -> Result<Snapshot> {
        self.begin_read_only(ReadAt::Latest).await
    }

    /// A read-only snapshot at exactly `ts` (time travel). Fails with `BelowGcHorizon` if the
    /// versions are gone, or `TimestampInFuture` if `ts` lies beyond the server's clock.
    pub async fn read_at(&self, ts: Timestamp) -> Result<Snapshot> {
        self.begin_read_only(ReadAt::Exact(ts)).await
    }

    /// A read-only snapshot at most `max_staleness` old, which the node serves without waiting
    /// when it can (a nearby follower, say).
    pub async fn read_stale(&self, max_staleness: Duration) -> Result<Snapshot> {
        self.begin_read_only(ReadAt::MaxStaleness(max_staleness)).await
    }

    /// The latest value of `key` (a read-only transaction of one read).
    pub async fn get(&self, key: impl AsRef<[u8]>) -> Result<Option<Bytes>> {
        self.read_only().await?.get(key).await
    }

    /// The latest pairs in `range`, in key order, at most `limit` of them (a read-only
    /// transaction of one scan, paged as needed).
    pub async fn scan<B: AsRef<[u8]> + ?Sized>(
        &self,
        range: impl RangeBounds<B>,
        limit: Option<usize>,
    ) -> Result<Vec<(Bytes, Bytes)>> {
        let range = to_bounds(range);
        self.read_only().await?.scan(range, limit).await
    }

    /// Sets `key` to `value` in a transaction of its own (a blind write, which cannot conflict).
    pub async fn put(&self, key: impl AsRef<[u8]>, value: impl AsRef<[u8]>) -> Result<CommitInfo> {
        let mut txn = self.begin();
        txn.put(key, value)?;
        txn.commit().await
    }

    /// Deletes `key` in a transaction of its own (a blind write).
    pub async fn delete(&self, key: impl AsRef<[u8]>) -> Result<CommitInfo> {
        let mut txn = self.begin();
        txn.delete(key)?;
        txn.commit().await
    }

    /// The status of a node that answers, the leader first if one is known. The client learns
    /// the membership and the leader from it.
    pub async fn status(&self) -> Result<NodeStatus> {
        self.cluster.status_of_any().await
    }

    /// The status of one node, by id or client address, without trying any other.
    pub async fn status_of(&self, node: impl Into<NodeRef>) -> Result<NodeStatus> {
        let address = self.address_of(node.into())?;
        self.cluster.status_at(&address).await
    }

    /// The members as the client last learned them (from a status, or a membership change).
    pub fn members(&self) -> Vec<Member> {
        self.cluster.members()
    }

    /// The leader as the client last learned it, if it knows one.
    pub fn leader(&self) -> Option<Member> {
        self.cluster.leader()
    }

    /// Adds node `id` to the cluster, which listens for its peers at `peer_address` and for
    /// clients at `client_address`. Returns the membership after the change.
    ///
    /// The request follows redirects to the leader, but is not resent once it may have reached
    /// the leader: if the connection breaks or the request times out, the error is returned,
    /// and [`Client::status`] tells whether the change happened.
    pub async fn add_member(
        &self,
        id: u64,
        peer_address: impl Into<String>,
        client_address: impl Into<String>,
    ) -> Result<Vec<Member>> {
        self.add_member_with_leap(id, peer_address, client_address, "step").await
    }

    /// As [`Client::add_member`], for a node whose clock handles leap seconds as `leap` says
    /// (`step` or `smear`, its `--leap`). The leader refuses a policy other than the
    /// membership's.
    pub async fn add_member_with_leap(
        &self,
        id: u64,
        peer_address: impl Into<String>,
        client_address: impl Into<String>,
        leap: impl Into<String>,
    ) -> Result<Vec<Member>> {
        let request = Request::AddMember {
            id,
            peer_address: peer_address.into(),
            client_address: client_address.into(),
            leap: leap.into(),
        };
        self.change_members(request, "AddMember").await
    }

    /// Removes node `id` from the cluster. Returns the membership after the change. Resent as
    /// [`Client::add_member`] is.
    pub async fn remove_member(&self, id: u64) -> Result<Vec<Member>> {
        self.change_members(Request::RemoveMember { id }, "RemoveMember").await
    }

    async fn change_members(&self, request: Request, kind: &str) -> Result<Vec<Member>> {
        match self.cluster.call_leader(request, Resend::Never).await? {
            (Response::Members(members), _) => {
                self.cluster.learn_members(&members);
                Ok(members)
            }
            (other, _) => Err(unexpected(kind, &other)),
        }
    }

    /// Sends one request to one node as it is: no redirects, no retries, the request timeout.
    /// An answer of [`Response::Error`] comes back as [`Error::Server`]. For tools and tests;
    /// the other methods are what applications want.
    pub async fn send_request(
        &self,
        node: impl Into<NodeRef>,
        request: Request,
    ) -> Result<Response> {
        let address = self.address_of(node.into())?;
        self.cluster.call_once(&address, request).await
    }

    fn address_of(&self, node: NodeRef) -> Result<String> {
        match node {
            NodeRef::Id(id) => self.cluster.address_of(id).ok_or(Error::UnknownNode { id }),
            NodeRef::Address(address) => Ok(address),
        }
    }
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("addresses", &self.cluster.known_addresses())
            .field("leader", &self.cluster.leader().map(|l| l.id))
            .finish()
    }
}
