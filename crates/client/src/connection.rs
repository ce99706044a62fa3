//! One multiplexed TCP connection per node, and the pool that keeps them.
//!
//! # Many requests on one connection
//!
//! A [`Connection`] carries any number of requests at once. Each caller takes the next request
//! id (from 1, by a counter), registers a oneshot channel under it in the *waiting map*, and
//! hands the encoded frame to a writer task through an mpsc channel. A reader task decodes each
//! response frame and sends it to the channel registered under its id. Responses may come back
//! in any order: a `Get` sent after a `Commit` is answered while the commit is still in commit
//! wait.
//!
//! ```text
//!  caller A ─ id 1: Commit ─┐                               ┌─► waiting[1] ─► caller A
//!  caller B ─ id 2: Get ────┼─► mpsc ─► writer ═══ TCP ═══ reader ─┤
//!                           │                               └─► waiting[2] ─► caller B
//!  on the wire:   → 1 Commit, → 2 Get, ← 2 Value, ← 1 Committed   (B is answered first)
//! ```
//!
//! A caller waits at most its timeout. If it stops waiting (timeout, or its future is dropped),
//! its id leaves the waiting map, and an answer that arrives later is dropped by the reader.
//!
//! # When the connection fails
//!
//! The connection is *closed* when the reader sees end of stream, a read error, a frame it
//! cannot decode, or a connection-level error frame (id 0, after which the server closes); when
//! the writer fails to write; or when the last handle to it is dropped. Closing happens once:
//! under the waiting map's lock it records why, fails every waiting caller with that reason, and
//! stops both tasks. A caller that arrives after that is refused with the same reason, without
//! sending, and the [`Pool`] opens a new connection on the next use. Nothing is retried here;
//! the routing layer decides what may be resent.
//!
//! Because resending a commit is only safe if the client knows it may have been delivered, a
//! failed call says which side of the send it failed on ([`CallError`]): `NotSent` (nothing left
//! the client: the connection was already closed, or the request could not be encoded) or
//! `NoAnswer` (the request was handed to the writer, so the server may have acted on it).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use boundkv_wire::{
    CONNECTION_ERROR_ID, DecodeError, Request, RequestFrame, Response, codec, decode_response,
    encode_request,
};
use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::{mpsc, oneshot};
use tokio_util::codec::{FramedRead, FramedWrite};
use tokio_util::sync::CancellationToken;

use crate::{Error, Result};

/// How many encoded requests may queue for the writer before callers wait for room.
const OUTGOING_QUEUE: usize = 1024;

/// Why a call on a connection failed, and whether the request may have reached the server.
#[derive(Debug)]
pub(crate) enum CallError {
    /// Nothing was sent: the connection could not be opened or was already closed, or the request
    /// could not be encoded. The server cannot have acted on it.
    NotSent(Error),
    /// The request was handed to the writer, but no usable answer came back (the connection
    /// broke, the timeout passed, or the answer could not be decoded). The server may have acted
    /// on it.
    NoAnswer(Error),
}

impl CallError {
    /// The error, whichever side of the send it happened on.
    pub(crate) fn into_error(self) -> Error {
        match self {
            CallError::NotSent(e) | CallError::NoAnswer(e) => e,
        }
    }
}

/// What a waiting caller receives: the answer, or why the connection closed.
type Answer = Result<Response>;

/// The callers waiting for answers, and whether the connection is still open.
struct Waiting {
    by_id: HashMap<u64, oneshot::Sender<Answer>>,
    /// Why the connection closed, once it has.
    closed: Option<Error>,
}

/// The state the reader and writer tasks share with the connection's handles.
struct Shared {
    address: String,
    waiting: Mutex<Waiting>,
    /// Cancelled when the connection closes; stops both tasks.
    stop: CancellationToken,
}

impl Shared {
    fn waiting(&self) -> MutexGuard<'_, Waiting> {
        // A panic while holding this lock cannot leave the map inconsistent (every operation is
        // a single insert, remove or drain), so a poisoned lock is still usable.
        self.waiting.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Closes the connection (once): records why, fails every waiting caller, stops the tasks.
    fn close(&self, why: Error) {
        let waiters = {
            let mut waiting = self.waiting();
            if waiting.closed.is_some() {
                return;
            }
            tracing::debug!(address = %self.address, reason = %why, "connection closed");
            waiting.closed = Some(why.clone());
            std::mem::take(&mut waiting.by_id)
        };
        for (_, waiter) in waiters {
            let _ = waiter.send(Err(why.clone()));
        }
        self.stop.cancel();
    }

    fn connection_error(&self, reason: impl Into<String>) -> Error {
        Error::Connection { address: self.address.clone(), reason: reason.into() }
    }
}

/// Removes a caller's id from the waiting map when the caller stops waiting, however it stops.
struct Registration<'a> {
    shared: &'a Shared,
    id: u64,
}

impl Drop for Registration<'_> {
    fn drop(&mut self) {
        self.shared.waiting().by_id.remove(&self.id);
    }
}

/// One open (or closed) connection to a node. Cheap to share behind an `Arc`; dropping the last
/// handle closes it.
pub(crate) struct Connection {
    shared: Arc<Shared>,
    outgoing: mpsc::Sender<Bytes>,
    next_id: AtomicU64,
}

impl Connection {
    /// Connects to `address` (within `connect_timeout`) and starts the reader and writer tasks.
    /// Must be called within a tokio runtime.
    pub(crate) async fn open(address: &str, connect_timeout: Duration) -> Result<Connection> {
        let connection_error =
            |reason: String| Error::Connection { address: address.to_string(), reason };
        let stream = match tokio::time::timeout(connect_timeout, TcpStream::connect(address)).await
        {
            Ok(Ok(stream)) => stream,
            Ok(Err(e)) => return Err(connection_error(format!("cannot connect: {e}"))),
            Err(_) => {
                return Err(connection_error(format!(
                    "cannot connect: no answer within {connect_timeout:?}"
                )));
            }
        };
        // Requests are small and latency-bound; don't let Nagle hold them back.
        let _ = stream.set_nodelay(true);
        let (read_half, write_half) = stream.into_split();
        let shared = Arc::new(Shared {
            address: address.to_string(),
            waiting: Mutex::new(Waiting { by_id: HashMap::new(), closed: None }),
            stop: CancellationToken::new(),
        });
        let (outgoing, queue) = mpsc::channel(OUTGOING_QUEUE);
        tokio::spawn(write_loop(shared.clone(), write_half, queue));
        tokio::spawn(read_loop(shared.clone(), read_half));
        tracing::debug!(address, "connected");
        Ok(Connection { shared, outgoing, next_id: AtomicU64::new(1) })
    }

    /// Whether the connection has closed (a new one must be opened to use the node).
    pub(crate) fn is_closed(&self) -> bool {
        self.shared.waiting().closed.is_some()
    }

    /// Sends `request` and waits at most `timeout` for its answer. A [`Response::Error`] is an
    /// answer like any other; turning it into an error is the caller's business.
    pub(crate) async fn call(
        &self,
        request: Request,
        timeout: Duration,
    ) -> Result<Response, CallError> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let payload = encode_request(&RequestFrame::new(id, request))
            .map_err(|e| CallError::NotSent(e.into()))?;
        let (answer_to, answer) = oneshot::channel();
        {
            let mut waiting = self.shared.waiting();
            if let Some(why) = &waiting.closed {
                return Err(CallError::NotSent(why.clone()));
            }
            waiting.by_id.insert(id, answer_to);
        }
        let _registration = Registration { shared: &self.shared, id };
        let exchange = async {
            if self.outgoing.send(payload).await.is_err() {
                // The writer has stopped, so the connection is closing; nothing was sent.
                return Err(CallError::NotSent(self.closed_reason()));
            }
            match answer.await {
                Ok(Ok(response)) => Ok(response),
                Ok(Err(why)) => Err(CallError::NoAnswer(why)),
                Err(_) => Err(CallError::NoAnswer(self.closed_reason())),
            }
        };
        match tokio::time::timeout(timeout, exchange).await {
            Ok(result) => result,
            Err(_) => {
                Err(CallError::NoAnswer(Error::Timeout { address: self.shared.address.clone() }))
            }
        }
    }

    fn closed_reason(&self) -> Error {
        self.shared
            .waiting()
            .closed
            .clone()
            .unwrap_or_else(|| self.shared.connection_error("the connection closed"))
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.shared.close(self.shared.connection_error("the client dropped the connection"));
    }
}

/// Writes queued frames until the queue ends, a write fails, or the connection closes. Frames
/// that are queued together are written with one flush.
async fn write_loop(
    shared: Arc<Shared>,
    write_half: OwnedWriteHalf,
    mut queue: mpsc::Receiver<Bytes>,
) {
    let mut sink = FramedWrite::new(write_half, codec());
    let stop = shared.stop.clone();
    let written = async {
        while let Some(payload) = queue.recv().await {
            sink.feed(payload).await?;
            while let Ok(more) = queue.try_recv() {
                sink.feed(more).await?;
            }
            SinkExt::<Bytes>::flush(&mut sink).await?;
        }
        Ok::<(), std::io::Error>(())
    };
    tokio::select! {
        _ = stop.cancelled() => {}
        result = written => {
            let why = match result {
                Ok(()) => "the client dropped the connection".to_string(),
                Err(e) => format!("write failed: {e}"),
            };
            shared.close(shared.connection_error(why));
        }
    }
    // Dropping the sink closes our half of the socket.
}

/// Reads and dispatches response frames until the stream ends, fails, or the connection closes.
async fn read_loop(shared: Arc<Shared>, read_half: OwnedReadHalf) {
    let mut frames = FramedRead::new(read_half, codec());
    let stop = shared.stop.clone();
    let why = loop {
        let next = tokio::select! {
            _ = stop.cancelled() => return,
            next = frames.next() => next,
        };
        let payload = match next {
            None => break shared.connection_error("the server closed the connection"),
            Some(Err(e)) => break shared.connection_error(format!("read failed: {e}")),
            Some(Ok(payload)) => payload,
        };
        match decode_response(&payload) {
            Ok(frame) if frame.id == CONNECTION_ERROR_ID => {
                let what = match frame.response {
                    Response::Error(e) => e.to_string(),
                    other => format!("an unexpected {other:?}"),
                };
                break shared
                    .connection_error(format!("the server reported a connection error: {what}"));
            }
            Ok(frame) => {
                let waiter = shared.waiting().by_id.remove(&frame.id);
                match waiter {
                    Some(waiter) => {
                        let _ = waiter.send(Ok(frame.response));
                    }
                    None => tracing::debug!(
                        address = %shared.address,
                        id = frame.id,
                        "dropped an answer nobody waits for (timed out?)"
                    ),
                }
            }
            // A frame of another version: the server speaks another protocol, so every answer on
            // this connection will be unreadable. Fail them all with the typed mismatch.
            Err(e @ DecodeError::UnsupportedVersion { .. }) => {
                break Error::Server(e.into_client_error());
            }
            Err(DecodeError::Malformed(why)) => {
                break Error::Protocol(format!(
                    "undecodable response from {}: {why}",
                    shared.address
                ));
            }
        }
    };
    shared.close(why);
}

/// One address's connection, if open. Its async lock is held while connecting, so concurrent
/// callers wait for one connection attempt instead of each opening a connection.
type Slot = Arc<tokio::sync::Mutex<Option<Arc<Connection>>>>;

/// The connections of one client, one per node address, opened on first use and reopened on the
/// first use after they close.
pub(crate) struct Pool {
    connect_timeout: Duration,
    slots: Mutex<HashMap<String, Slot>>,
}

impl Pool {
    /// An empty pool whose connections are opened within `connect_timeout`.
    pub(crate) fn new(connect_timeout: Duration) -> Self {
        Pool { connect_timeout, slots: Mutex::new(HashMap::new()) }
    }

    /// The open connection to `address`, opening one if there is none.
    pub(crate) async fn connection(&self, address: &str) -> Result<Arc<Connection>> {
        let slot = {
            let mut slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
            slots.entry(address.to_string()).or_default().clone()
        };
        let mut slot = slot.lock().await;
        if let Some(connection) = slot.as_ref().filter(|c| !c.is_closed()) {
            return Ok(connection.clone());
        }
        *slot = None;
        let connection = Arc::new(Connection::open(address, self.connect_timeout).await?);
        *slot = Some(connection.clone());
        Ok(connection)
    }

    /// Sends one request to `address` over its connection, opening the connection if needed.
    pub(crate) async fn call(
        &self,
        address: &str,
        request: Request,
        timeout: Duration,
    ) -> Result<Response, CallError> {
        let connection = self.connection(address).await.map_err(CallError::NotSent)?;
        connection.call(request, timeout).await
    }
}
