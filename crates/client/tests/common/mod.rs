//! A scripted mock of a boundkv node for the client's tests, and a tiny honest store to script
//! it with.
//!
//! [`MockServer`] listens on `127.0.0.1:0` and speaks the wire protocol: it decodes each request
//! frame, records it, and asks the test's handler what to do. The handler answers at once
//! ([`Reply::Answer`]) or takes the request's [`Conn`] handle to answer later, out of order,
//! with raw bytes, or never, and to drop the connection. [`FakeKv`] is an in-memory versioned
//! store with increasing timestamps, conflict checks and commit deduplication by transaction id:
//! enough of a server for the client to run real transactions against.

// Each test binary uses a different part of this module.
#![allow(dead_code, unreachable_pub)]

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::ops::Bound;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use boundkv_wire::{
    ClockInfo, CommitInfo, Member, NodeStatus, ReadAt, Request, Response, ResponseFrame, Role,
    Timestamp, WireError, codec, decode_request, encode_response, peek_frame_id,
};
use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_util::codec::{FramedRead, FramedWrite};
use tokio_util::sync::CancellationToken;

/// Runs a test body, failing the test if it takes longer than 20 s (no test may hang).
pub async fn within<F: Future>(body: F) -> F::Output {
    tokio::time::timeout(Duration::from_secs(20), body).await.expect("the test took over 20 s")
}

/// A request as the mock received it.
#[derive(Clone, Debug)]
pub struct Received {
    /// Which connection it came on: 1 for the server's first, 2 for its second, ...
    pub connection: usize,
    /// The request id.
    pub id: u64,
    /// The request.
    pub request: Request,
}

/// What the handler does with a request.
// Built and consumed at once, one per request: its size does not matter.
#[allow(clippy::large_enum_variant)]
pub enum Reply {
    /// Answer it now with this response.
    Answer(Response),
    /// Nothing now: the handler answered (or will answer, or never answers) through the `Conn`.
    Later,
}

/// One request, handed to the handler.
pub struct Incoming {
    /// The request id.
    pub id: u64,
    /// The request.
    pub request: Request,
    /// The connection it came on, to answer later or to drop it.
    pub conn: Conn,
}

/// A handle on one of the mock's connections.
#[derive(Clone)]
pub struct Conn {
    /// Which connection: 1 for the server's first, 2 for its second, ...
    pub number: usize,
    outgoing: mpsc::UnboundedSender<Outgoing>,
    closed: CancellationToken,
}

enum Outgoing {
    Payload(Bytes),
    Close,
}

impl Conn {
    /// Sends `response` as the answer to request `id`.
    pub fn answer(&self, id: u64, response: Response) {
        let payload = encode_response(&ResponseFrame::new(id, response)).expect("encode");
        self.send_payload(payload);
    }

    /// Sends a raw frame payload (the codec adds the length prefix).
    pub fn send_payload(&self, payload: Bytes) {
        let _ = self.outgoing.send(Outgoing::Payload(payload));
    }

    /// Closes the connection once everything sent before is written.
    pub fn close(&self) {
        let _ = self.outgoing.send(Outgoing::Close);
        self.closed.cancel();
    }
}

type Handler = Arc<dyn Fn(Incoming) -> Reply + Send + Sync>;

struct Shared {
    handler: Mutex<Handler>,
    log: Mutex<Vec<Received>>,
    connections: AtomicUsize,
    open: AtomicUsize,
    stop: CancellationToken,
}

/// A mock node listening on a loopback port. Dropping it stops it and its connections.
pub struct MockServer {
    /// Its client address, `127.0.0.1:PORT`.
    pub address: String,
    shared: Arc<Shared>,
}

impl MockServer {
    /// Starts listening. Until a handler is set, every request is answered `Unavailable`.
    pub async fn start() -> MockServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let address = listener.local_addr().expect("local address").to_string();
        let handler: Handler = Arc::new(|_| {
            Reply::Answer(Response::Error(WireError::Unavailable("no handler".into())))
        });
        let shared = Arc::new(Shared {
            handler: Mutex::new(handler),
            log: Mutex::new(Vec::new()),
            connections: AtomicUsize::new(0),
            open: AtomicUsize::new(0),
            stop: CancellationToken::new(),
        });
        tokio::spawn(accept_loop(listener, shared.clone()));
        MockServer { address, shared }
    }

    /// Starts listening with `handler` deciding every answer.
    pub async fn with_handler(handler: impl Fn(Incoming) -> Reply + Send + Sync + 'static) -> Self {
        let server = MockServer::start().await;
        server.set_handler(handler);
        server
    }

    /// Replaces the handler.
    pub fn set_handler(&self, handler: impl Fn(Incoming) -> Reply + Send + Sync + 'static) {
        *self.shared.handler.lock().unwrap() = Arc::new(handler);
    }

    /// Every request received so far, in order.
    pub fn received(&self) -> Vec<Received> {
        self.shared.log.lock().unwrap().clone()
    }

    /// The requests received so far that `pick` selects.
    pub fn received_where(&self, pick: impl Fn(&Request) -> bool) -> Vec<Received> {
        self.received().into_iter().filter(|r| pick(&r.request)).collect()
    }

    /// How many connections the server has accepted.
    pub fn connections(&self) -> usize {
        self.shared.connections.load(Ordering::SeqCst)
    }

    /// How many of its connections are open now.
    pub fn open_connections(&self) -> usize {
        self.shared.open.load(Ordering::SeqCst)
    }

    /// This node as a voting member.
    pub fn member(&self, id: u64) -> Member {
        member(id, &self.address)
    }
}

impl Drop for MockServer {
    fn drop(&mut self) {
        self.shared.stop.cancel();
    }
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    loop {
        let accepted = tokio::select! {
            _ = shared.stop.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        let Ok((stream, _)) = accepted else { return };
        let number = shared.connections.fetch_add(1, Ordering::SeqCst) + 1;
        shared.open.fetch_add(1, Ordering::SeqCst);
        tokio::spawn(serve_connection(stream, number, shared.clone()));
    }
}

async fn serve_connection(stream: TcpStream, number: usize, shared: Arc<Shared>) {
    let (read_half, write_half) = stream.into_split();
    let (outgoing, mut queue) = mpsc::unbounded_channel();
    let closed = shared.stop.child_token();
    let conn = Conn { number, outgoing, closed: closed.clone() };
    tokio::spawn(async move {
        let mut sink = FramedWrite::new(write_half, codec());
        while let Some(out) = queue.recv().await {
            match out {
                Outgoing::Payload(payload) => {
                    if sink.send(payload).await.is_err() {
                        break;
                    }
                }
                Outgoing::Close => break,
            }
        }
    });
    let mut frames = FramedRead::new(read_half, codec());
    loop {
        let next = tokio::select! {
            _ = closed.cancelled() => break,
            next = frames.next() => next,
        };
        let Some(Ok(payload)) = next else { break };
        match decode_request(&payload) {
            Ok(frame) => {
                shared.log.lock().unwrap().push(Received {
                    connection: number,
                    id: frame.id,
                    request: frame.request.clone(),
                });
                let handler = shared.handler.lock().unwrap().clone();
                let incoming =
                    Incoming { id: frame.id, request: frame.request, conn: conn.clone() };
                if let Reply::Answer(response) = handler(incoming) {
                    conn.answer(frame.id, response);
                }
            }
            Err(e) => {
                let id = peek_frame_id(&payload).unwrap_or(0);
                conn.answer(id, Response::Error(e.into_server_error()));
            }
        }
    }
    // Stop the writer too, so the socket closes.
    conn.close();
    shared.open.fetch_sub(1, Ordering::SeqCst);
}

/// A voting member with the same peer and client address.
pub fn member(id: u64, address: &str) -> Member {
    Member {
        id,
        peer_address: address.to_string(),
        client_address: address.to_string(),
        voter: true,
        leap: "step".into(),
    }
}

/// A node's status, with a made-up clock.
pub fn status(id: u64, role: Role, leader: Option<Member>, members: Vec<Member>) -> NodeStatus {
    NodeStatus {
        id,
        role,
        term: 1,
        leader,
        commit_index: 0,
        applied_index: 0,
        members,
        clock: ClockInfo {
            source: "mock".into(),
            status: "synchronized".into(),
            earliest: Timestamp::ZERO,
            latest: Timestamp::ZERO,
            bound: Duration::ZERO,
            problem: None,
            peers: Vec::new(),
            leap: String::new(),
        },
        safe_time: Timestamp::ZERO,
        closed_ts: Timestamp::ZERO,
        lease_valid: role == Role::Leader,
    }
}

/// `Response::Error(NotLeader { leader })`.
pub fn not_leader(leader: Option<Member>) -> Response {
    Response::Error(WireError::NotLeader { leader })
}

/// Whether a request needs the leader.
pub fn needs_leader(request: &Request) -> bool {
    matches!(
        request,
        Request::BeginReadWrite
            | Request::Commit(_)
            | Request::AddMember { .. }
            | Request::RemoveMember { .. }
    )
}

#[derive(Default)]
struct Store {
    /// Nanoseconds; every timestamp handed out is a new, larger one.
    clock: u64,
    /// Each key's versions, oldest first: `(commit ts, value or None for a delete)`.
    versions: BTreeMap<Bytes, Vec<(u64, Option<Bytes>)>>,
    /// Commits applied, by transaction id: resending one returns its first outcome.
    committed: HashMap<[u8; 16], CommitInfo>,
    applications: usize,
}

impl Store {
    fn tick(&mut self) -> u64 {
        self.clock += 10;
        self.clock
    }

    fn value_at(&self, key: &Bytes, ts: u64) -> Option<Bytes> {
        let versions = self.versions.get(key)?;
        versions.iter().rev().find(|(at, _)| *at <= ts).and_then(|(_, v)| v.clone())
    }

    fn changed_after(&self, key: &Bytes, ts: u64) -> Option<u64> {
        let (at, _) = self.versions.get(key)?.last()?;
        (*at > ts).then_some(*at)
    }
}

/// A tiny honest store: increasing timestamps, versioned reads, conflict checks on read keys
/// and ranges, and commits applied at most once per transaction id.
#[derive(Clone, Default)]
pub struct FakeKv {
    store: Arc<Mutex<Store>>,
}

impl FakeKv {
    /// An empty store.
    pub fn new() -> Self {
        FakeKv::default()
    }

    /// How many commits have been applied (resends of an applied one not counted).
    pub fn applications(&self) -> usize {
        self.store.lock().unwrap().applications
    }

    /// Writes `key` directly (as another client's transaction would), at a new timestamp.
    pub fn write(&self, key: &str, value: Option<&str>) -> Timestamp {
        let mut store = self.store.lock().unwrap();
        let ts = store.tick();
        let value = value.map(|v| Bytes::copy_from_slice(v.as_bytes()));
        store.versions.entry(Bytes::copy_from_slice(key.as_bytes())).or_default().push((ts, value));
        Timestamp::from_nanos(ts)
    }

    /// The honest answer to a data request (not `Status` or membership changes).
    pub fn answer(&self, request: &Request) -> Response {
        let mut store = self.store.lock().unwrap();
        match request {
            Request::BeginReadWrite
            | Request::BeginReadOnly { at: ReadAt::Latest | ReadAt::MaxStaleness(_) } => {
                Response::Timestamp(Timestamp::from_nanos(store.tick()))
            }
            Request::BeginReadOnly { at: ReadAt::Exact(ts) } => {
                if ts.as_nanos() > store.clock {
                    let latest = Timestamp::from_nanos(store.clock);
                    return Response::Error(WireError::TimestampInFuture { ts: *ts, latest });
                }
                Response::Timestamp(*ts)
            }
            Request::Get { ts, key } => Response::Value(store.value_at(key, ts.as_nanos())),
            Request::Scan { ts, start, end, limit } => {
                let limit = limit.map_or(usize::MAX, |l| l as usize);
                let rows = store
                    .versions
                    .range::<Bytes, _>((start.clone(), end.clone()))
                    .filter_map(|(k, _)| store.value_at(k, ts.as_nanos()).map(|v| (k.clone(), v)))
                    .take(limit)
                    .collect();
                Response::Rows(rows)
            }
            Request::Commit(commit) => {
                if let Some(info) = store.committed.get(&commit.txn_id) {
                    return Response::Committed(*info);
                }
                if let Some(read_ts) = commit.read_ts {
                    let rt = read_ts.as_nanos();
                    let mut read: Vec<Bytes> = commit.read_keys.clone();
                    for range in &commit.read_ranges {
                        read.extend(
                            store.versions.range::<Bytes, _>(range.clone()).map(|(k, _)| k.clone()),
                        );
                    }
                    for key in read {
                        if let Some(at) = store.changed_after(&key, rt) {
                            return Response::Error(WireError::Conflict {
                                key,
                                read_ts,
                                conflicting_commit_ts: Timestamp::from_nanos(at),
                            });
                        }
                    }
                }
                let ts = store.tick();
                for (key, value) in &commit.writes {
                    store.versions.entry(key.clone()).or_default().push((ts, value.clone()));
                }
                let info = CommitInfo {
                    ts: Timestamp::from_nanos(ts),
                    commit_wait: Duration::from_micros(10),
                    durable: Duration::from_micros(5),
                    wait_beyond_durable: Duration::from_micros(5),
                    latency: Duration::from_micros(20),
                };
                store.committed.insert(commit.txn_id, info);
                store.applications += 1;
                Response::Committed(info)
            }
            Request::Status | Request::AddMember { .. } | Request::RemoveMember { .. } => {
                Response::Error(WireError::Malformed("not a data request".into()))
            }
        }
    }
}

/// A handler for a single node that is the leader of a one-node cluster backed by `kv`.
pub fn single_leader(kv: FakeKv, me: Member) -> impl Fn(Incoming) -> Reply + Send + Sync {
    move |incoming| {
        Reply::Answer(match &incoming.request {
            Request::Status => Response::Status(Box::new(status(
                me.id,
                Role::Leader,
                Some(me.clone()),
                vec![me.clone()],
            ))),
            request => kv.answer(request),
        })
    }
}

/// `Bound::Excluded` of a string key.
pub fn excluded(key: &str) -> Bound<Bytes> {
    Bound::Excluded(Bytes::copy_from_slice(key.as_bytes()))
}

/// `Bound::Included` of a string key.
pub fn included(key: &str) -> Bound<Bytes> {
    Bound::Included(Bytes::copy_from_slice(key.as_bytes()))
}
