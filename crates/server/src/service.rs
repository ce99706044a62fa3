//! The client service: one task per TCP connection reads request frames, runs each request in
//! a task of its own (so a `Get` is answered while a `Commit` waits out its commit wait), and
//! one writer task per connection sends the responses, in whatever order they finish.
//!
//! # Bad input
//!
//! | what arrives | what the server does |
//! |---|---|
//! | a length prefix above the limit | `FrameTooLarge` under id 0, then closes: the stream cannot be resynchronized |
//! | a frame of another protocol version | `UnsupportedVersion` under the frame's id; the connection stays open |
//! | a frame that does not decode | `Malformed` under its id if the id is readable (connection stays open), else under id 0 and closes |
//! | a request that makes no sense (a key written twice) | `Malformed`; nothing happens |
//! | a response too large for a frame (a huge scan) | `FrameTooLarge` instead: page with `limit` |
//! | the client half-closes (shuts down its sending side) | requests already read are answered, then the connection closes |
//! | more than `max_in_flight_per_connection` requests outstanding | the server stops reading until some finish (backpressure) |
//!
//! None of these affect other connections, and none of them can make the server crash.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc, watch};
use tokio_util::codec::{FramedRead, FramedWrite};

use boundkv_storage::SledEngine;
use boundkv_txn::replica::Replica;
use boundkv_wire::{
    self as wire, CONNECTION_ERROR_ID, DecodeError, PROTOCOL_VERSION, Request, Response,
    ResponseFrame, WireError,
};

use crate::clock::ClockWatch;
use crate::convert::{self, ts_in, ts_out};
use crate::metrics::Metrics;
use crate::status;

/// What every connection's requests are served from.
pub(crate) struct Service {
    pub(crate) replica: Arc<Replica<SledEngine>>,
    pub(crate) clock: Arc<ClockWatch>,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) max_request_frame: usize,
    pub(crate) max_in_flight: usize,
}

impl Service {
    /// Accepts connections until `shutdown` turns true.
    pub(crate) async fn serve(
        self: Arc<Self>,
        listener: TcpListener,
        mut shutdown: watch::Receiver<bool>,
        connections: Arc<tokio::sync::Semaphore>,
    ) {
        loop {
            tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok((stream, peer)) => {
                        let _ = stream.set_nodelay(true);
                        let this = self.clone();
                        let shutdown = shutdown.clone();
                        let Ok(permit) = connections.clone().acquire_owned().await else { return };
                        tokio::spawn(async move {
                            this.connection(stream, shutdown).await;
                            tracing::debug!(%peer, "client connection closed");
                            drop(permit);
                        });
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "accepting a client connection failed");
                        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    }
                },
                _ = shutdown.changed() => return,
            }
        }
    }

    async fn connection(self: Arc<Self>, stream: TcpStream, mut shutdown: watch::Receiver<bool>) {
        let (read, write) = stream.into_split();
        let max = self.max_request_frame.min(wire::MAX_FRAME_LEN);
        let mut frames = FramedRead::new(read, LimitedCodec { max });
        let (tx, mut rx) = mpsc::channel::<Bytes>(256);
        let writer = tokio::spawn(async move {
            let mut out = FramedWrite::new(write, wire::codec());
            while let Some(payload) = rx.recv().await {
                if let Err(e) = out.send(payload).await {
                    tracing::debug!(error = %e, "writing a response failed; closing");
                    return;
                }
            }
            let _ = SinkExt::<Bytes>::close(&mut out).await;
        });
        let in_flight = Arc::new(Semaphore::new(self.max_in_flight));
        loop {
            let next = tokio::select! {
                next = frames.next() => next,
                _ = shutdown.changed() => break,
            };
            match next {
                None => break, // EOF: the client is done sending (or gone).
                Some(Err(FrameError::TooLarge(len))) => {
                    tracing::warn!(
                        len,
                        max,
                        "a client sent a frame above the limit; closing its connection"
                    );
                    self.metrics.bad_frames.inc();
                    let error = WireError::FrameTooLarge { len, max: max as u64 };
                    send(&tx, CONNECTION_ERROR_ID, Response::Error(error)).await;
                    break;
                }
                Some(Err(FrameError::Io(e))) => {
                    tracing::debug!(error = %e, "client connection failed");
                    break;
                }
                Some(Ok(payload)) => match wire::decode_request(&payload) {
                    Ok(frame) => {
                        let Ok(permit) = in_flight.clone().acquire_owned().await else { break };
                        let this = self.clone();
                        let tx = tx.clone();
                        tokio::spawn(async move {
                            let response = this.handle(frame.request).await;
                            send(&tx, frame.id, response).await;
                            drop(permit);
                        });
                    }
                    Err(e) => {
                        let id = wire::peek_frame_id(&payload);
                        let client = match e {
                            DecodeError::UnsupportedVersion { got } => got,
                            _ => PROTOCOL_VERSION,
                        };
                        tracing::warn!(error = %e, ?id, "a client sent a frame that does not decode");
                        self.metrics.bad_frames.inc();
                        let error = match e {
                            DecodeError::UnsupportedVersion { .. } => {
                                WireError::UnsupportedVersion { server: PROTOCOL_VERSION, client }
                            }
                            DecodeError::Malformed(why) => WireError::Malformed(why),
                        };
                        send(&tx, id.unwrap_or(CONNECTION_ERROR_ID), Response::Error(error)).await;
                        if id.is_none() {
                            break;
                        }
                    }
                },
            }
        }
        // Let the requests already read finish and be answered, then close.
        drop(tx);
        let _ = writer.await;
    }

    /// Serves one request.
    pub(crate) async fn handle(&self, request: Request) -> Response {
        let kind = request_kind(&request);
        let start = Instant::now();
        let response = match self.dispatch(request).await {
            Ok(r) => r,
            Err(e) => Response::Error(e),
        };
        let outcome = match &response {
            Response::Error(e) => error_kind(e),
            _ => "ok",
        };
        self.metrics.observe_request(kind, outcome, start.elapsed());
        response
    }

    fn error(&self, e: boundkv_txn::Error) -> WireError {
        let replica = &self.replica;
        let e = convert::error_out(e, replica.id(), |id| {
            replica
                .members()
                .into_iter()
                .find(|m| m.member.id == id)
                .map(|m| convert::member_out(&m.member, m.voter))
        });
        match (e, self.clock.report()) {
            // Name the clock's state and bound, as the watcher last saw them.
            (WireError::ClockUnavailable(why), Some(report)) => {
                WireError::ClockUnavailable(format!("{why} (node {}: {report})", replica.id()))
            }
            (e, _) => e,
        }
    }

    async fn dispatch(&self, request: Request) -> Result<Response, WireError> {
        let r = &self.replica;
        match request {
            Request::BeginReadWrite => {
                let ts = r.begin_read_write().await.map_err(|e| self.error(e))?;
                Ok(Response::Timestamp(ts_out(ts)))
            }
            Request::BeginReadOnly { at } => {
                let ts =
                    r.begin_read_only(convert::read_at_in(at)).await.map_err(|e| self.error(e))?;
                Ok(Response::Timestamp(ts_out(ts)))
            }
            Request::Get { ts, key } => {
                let value = r.get(ts_in(ts), &key).await.map_err(|e| self.error(e))?;
                Ok(Response::Value(value))
            }
            Request::Scan { ts, start, end, limit } => {
                let rows = r
                    .scan(ts_in(ts), (start, end), limit.map(|l| l as usize))
                    .await
                    .map_err(|e| self.error(e))?;
                Ok(Response::Rows(rows))
            }
            Request::Commit(req) => {
                let req = convert::commit_in(req)?;
                let info = r.commit(req).await.map_err(|e| self.error(e))?;
                self.metrics.observe_commit(&info);
                Ok(Response::Committed(convert::commit_out(info)))
            }
            Request::Status => Ok(Response::Status(Box::new(status::node_status(r, &self.clock)))),
            Request::AddMember { id, peer_address, client_address, leap } => {
                let leap =
                    leap.parse().map_err(|e: boundkv_clockbound::ParseLeapPolicyError| {
                        wire::WireError::Malformed(e.to_string())
                    })?;
                let member =
                    boundkv_txn::replica::Member { id, peer_address, client_address, leap };
                let members = r.add_member(member).await.map_err(|e| self.error(e))?;
                Ok(Response::Members(convert::members_out(&members)))
            }
            Request::RemoveMember { id } => {
                let members = r.remove_member(id).await.map_err(|e| self.error(e))?;
                Ok(Response::Members(convert::members_out(&members)))
            }
        }
    }
}

/// Encodes and queues a response; a response too large for a frame becomes `FrameTooLarge`.
async fn send(tx: &mpsc::Sender<Bytes>, id: u64, response: Response) {
    let payload = match wire::encode_response(&ResponseFrame::new(id, response)) {
        Ok(p) => p,
        Err(e) => match wire::encode_response(&ResponseFrame::new(id, Response::Error(e))) {
            Ok(p) => p,
            Err(_) => return,
        },
    };
    let _ = tx.send(payload).await;
}

fn request_kind(r: &Request) -> &'static str {
    match r {
        Request::BeginReadWrite => "begin_read_write",
        Request::BeginReadOnly { .. } => "begin_read_only",
        Request::Get { .. } => "get",
        Request::Scan { .. } => "scan",
        Request::Commit(_) => "commit",
        Request::Status => "status",
        Request::AddMember { .. } => "add_member",
        Request::RemoveMember { .. } => "remove_member",
    }
}

fn error_kind(e: &WireError) -> &'static str {
    match e {
        WireError::NotLeader { .. } => "not_leader",
        WireError::Conflict { .. } => "conflict",
        WireError::Expired { .. } => "expired",
        WireError::ClockUnavailable(_) => "clock_unavailable",
        WireError::ClockBehind { .. } => "clock_behind",
        WireError::BelowGcHorizon { .. } => "below_gc_horizon",
        WireError::TimestampInFuture { .. } => "timestamp_in_future",
        WireError::KeyTooLarge { .. } | WireError::ValueTooLarge { .. } => "too_large",
        WireError::TransactionTooLarge { .. } | WireError::FrameTooLarge { .. } => "too_large",
        WireError::FollowerBehind { .. } => "follower_behind",
        WireError::OutcomeUnknown(_) => "outcome_unknown",
        WireError::Unavailable(_) => "unavailable",
        WireError::UnsupportedVersion { .. } | WireError::Malformed(_) => "malformed",
        WireError::Fatal(_) => "fatal",
    }
}

/// The client codec's decoding half, with a limit, reporting the length of a frame that exceeds
/// it (`LengthDelimitedCodec`'s error does not say). Stateless: a frame is a 4-byte big-endian
/// length and that many bytes, and nothing is consumed until a whole frame is there, so the
/// length at the front of the buffer is always a length.
struct LimitedCodec {
    max: usize,
}

enum FrameError {
    TooLarge(u64),
    Io(std::io::Error),
}

impl From<std::io::Error> for FrameError {
    fn from(e: std::io::Error) -> Self {
        FrameError::Io(e)
    }
}

impl tokio_util::codec::Decoder for LimitedCodec {
    type Item = bytes::BytesMut;
    type Error = FrameError;

    fn decode(&mut self, src: &mut bytes::BytesMut) -> Result<Option<Self::Item>, FrameError> {
        use bytes::Buf;
        let Some(prefix) = src.get(..wire::LENGTH_PREFIX_LEN) else {
            return Ok(None);
        };
        let len = u32::from_be_bytes(prefix.try_into().expect("4 bytes")) as usize;
        if len > self.max {
            return Err(FrameError::TooLarge(len as u64));
        }
        let whole = wire::LENGTH_PREFIX_LEN + len;
        if src.len() < whole {
            src.reserve(whole - src.len());
            return Ok(None);
        }
        src.advance(wire::LENGTH_PREFIX_LEN);
        Ok(Some(src.split_to(len)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio_util::codec::Decoder;

    /// A frame that arrives a byte at a time (as TCP may deliver it) is decoded once, whole; a
    /// length above the limit is refused before its payload arrives. (A decoder that peeked at
    /// the buffer's front while a frame was half-read took payload bytes for a length.)
    #[test]
    fn frames_split_anywhere_decode_whole() {
        let mut codec = LimitedCodec { max: 64 };
        let payloads: [&[u8]; 3] = [b"first frame", b"", &[0xff; 64]];
        let mut wire_bytes = Vec::new();
        for p in payloads {
            wire_bytes.extend_from_slice(&(p.len() as u32).to_be_bytes());
            wire_bytes.extend_from_slice(p);
        }
        let mut buf = bytes::BytesMut::new();
        let mut got = Vec::new();
        for b in wire_bytes {
            buf.extend_from_slice(&[b]);
            while let Ok(Some(frame)) = codec.decode(&mut buf) {
                got.push(frame.to_vec());
            }
        }
        assert_eq!(got, payloads.iter().map(|p| p.to_vec()).collect::<Vec<_>>());
        let mut big = bytes::BytesMut::from(&65u32.to_be_bytes()[..]);
        assert!(matches!(codec.decode(&mut big), Err(FrameError::TooLarge(65))));
    }
}
