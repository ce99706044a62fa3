//! The Raft peer transport: how a node's Raft messages reach the other members over TCP, and
//! how it receives theirs.
//!
//! Two halves, one per direction:
//!
//! - [`PeerTransport`] is the sending half, the node's [`Transport`]. It keeps one outbound
//!   *link* per peer in its address book ([`PeerTransport::set_peers`]): a bounded queue and a
//!   task on the tokio runtime that owns one TCP connection to that peer and writes the queue
//!   into it.
//! - [`serve_peers`] is the receiving half: it accepts the connections other nodes' links open,
//!   checks who they are, and hands every message that arrives to the local node through its
//!   [`Deliverer`].
//!
//! A connection carries messages one way only. Node 1's messages to node 2 travel on the
//! connection node 1 opened; node 2's answers travel on the one node 2 opened to node 1. The
//! receiving side never writes, so the sender learns that the receiver has gone (it closed the
//! connection, or refused it) by reading end-of-stream, without waiting for its next write to
//! fail.
//!
//! # Frames
//!
//! A connection is a stream of frames, each a 4-byte big-endian length followed by that many
//! bytes of payload ([`frame_codec`], a `tokio_util` `LengthDelimitedCodec`). The payload is a
//! [`PeerFrame`] encoded with [postcard](https://docs.rs/postcard), as in boundkv's client
//! protocol: fields in declaration order, no names, integers as LEB128 varints (7 bits per byte,
//! low bits first, the top bit set on every byte but the last), an enum as its variant index (a
//! varint) followed by its fields, a `bool` as one byte `00` or `01`, and a string or byte
//! string as its length (a varint) followed by its bytes.
//!
//! | variant | index | fields, in order |
//! |---|---|---|
//! | [`PeerFrame::Hello`] | `00` | `version` (u16), `cluster` (string), `from` (u64), `to` (u64), `reply_to` (string) |
//! | [`PeerFrame::Raft`] | `01` | one Raft message, protobuf-encoded by [`encode_message`] (bytes) |
//! | [`PeerFrame::SnapshotChunk`] | `02` | `snapshot` (u64), `seq` (u32), `last` (bool), `data` (bytes) |
//! | [`PeerFrame::Clock`] | `03` | a peer clock check's probe or answer: `from` (u64), `to` (u64), then the message: `00` probe (`probe` u64, `sent` optional reading, `contradicts` optional u64: the term of the cluster-clock leader whose answers contradicted each other) or `01` answer (`probe` u64, `reading` optional reading, `leads` optional u64: the term whose cluster-clock reference the reading is); a reading is `earliest`, `latest` (u64 ns) and `status` (variant index) |
//!
//! The first frame on a connection is a `Hello`, and only the first. For example, node 1 of
//! cluster `kv` connecting to node 2, not saying where it listens, sends
//! `PeerFrame::Hello { version: 5, cluster: "kv".into(), from: 1, to: 2, reply_to: "".into() }`,
//! these 12 bytes:
//!
//! ```text
//! 00 00 00 08   length prefix: 8 bytes of payload follow (u32, big-endian)
//! 00            PeerFrame::Hello, variant index 0
//! 05            version 5                      (varint)
//! 02 6B 76      cluster: length 2, then "kv"
//! 01            from node 1                    (varint)
//! 02            to node 2                      (varint)
//! 00            reply_to: length 0 (the sender's own peer address, when it gives one)
//! ```
//!
//! `reply_to` is how a node that joins a cluster learns where to answer: it starts with an
//! empty address book (the membership reaches it only with its first snapshot), so a transport
//! serving with [`serve_peers`] and a `learn` transport adds a caller it does not know yet at
//! the address its `Hello` names. The replicated membership replaces the book as soon as it is
//! known.
//!
//! and then, say, a heartbeat at term 5 with commit index 3, which raft-rs's protobuf encoding
//! turns into 10 bytes (five fields, each a tag byte `field << 3` and a varint) and which travels
//! as `PeerFrame::Raft` in 16 bytes:
//!
//! ```text
//! 00 00 00 0C   length prefix: 12 bytes of payload
//! 01            PeerFrame::Raft, variant index 1
//! 0A            the message: length 10, then
//! 08 08           field 1, msg_type = 8 (MsgHeartbeat)
//! 10 02           field 2, to = 2
//! 18 01           field 3, from = 1
//! 20 05           field 4, term = 5
//! 40 03           field 8, commit = 3
//! ```
//!
//! A snapshot of a few MiB travels as [`PeerFrame::SnapshotChunk`]s instead (see below). The
//! first chunk of the sender's snapshot number 7, 1 MiB of it, not the last, begins
//!
//! ```text
//! 00 10 00 07   length prefix: 1,048,583 bytes of payload
//! 02            PeerFrame::SnapshotChunk, variant index 2
//! 07            snapshot 7                     (varint)
//! 00            seq 0                          (varint)
//! 00            last: false
//! 80 80 40      data: length 1,048,576 = 2^20 (three 7-bit groups: 0, 0, 64), then the bytes
//! ```
//!
//! In code:
//!
//! ```
//! use boundkv_consensus::codec::encode_message;
//! use boundkv_consensus::raft::prelude::{Message, MessageType};
//! use boundkv_server::peer::{PeerFrame, decode_frame, encode_frame, frame_codec};
//! use bytes::BytesMut;
//! use tokio_util::codec::{Decoder, Encoder};
//!
//! let max_frame = 1 << 20;
//! let hello =
//!     PeerFrame::Hello { version: 5, cluster: "kv".into(), from: 1, to: 2, reply_to: String::new() };
//! let payload = encode_frame(&hello, max_frame)?;
//! assert_eq!(payload[..], [0x00, 0x05, 0x02, 0x6B, 0x76, 0x01, 0x02, 0x00]);
//!
//! let mut heartbeat = Message::default();
//! heartbeat.set_msg_type(MessageType::MsgHeartbeat);
//! (heartbeat.to, heartbeat.from, heartbeat.term, heartbeat.commit) = (2, 1, 5, 3);
//! let raft = PeerFrame::Raft(encode_message(&heartbeat)?.into());
//! let mut stream = BytesMut::new();
//! frame_codec(max_frame).encode(encode_frame(&raft, max_frame)?, &mut stream)?;
//! assert_eq!(
//!     stream[..],
//!     [0, 0, 0, 12, 0x01, 0x0A, 8, 8, 0x10, 2, 0x18, 1, 0x20, 5, 0x40, 3]
//! );
//!
//! let received = frame_codec(max_frame).decode(&mut stream)?.expect("a whole frame");
//! assert_eq!(decode_frame(&received)?, raft);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! A payload is at most [`PeerOptions::max_frame`] bytes (2 MiB + 64 KiB by default, room for a
//! Raft append of `max_size_per_msg` = 1 MiB with a large entry or two). The receiving codec
//! refuses a longer length prefix before buffering anything, so every member of a cluster must
//! use the same `max_frame`, or at least no sender a larger one than its receivers.
//!
//! # Versions
//!
//! The `Hello` carries the sender's [`PEER_PROTOCOL_VERSION`], and the receiver accepts only its
//! own. Every version, past and future, begins its first frame with the same two varints, the
//! `Hello` variant index `00` and the version, so [`decode_frame`] reads them before the rest
//! and reports another version as [`FrameError::UnsupportedVersion`] even when it cannot parse
//! what follows. Everything else belongs to the version: since postcard writes no names, any
//! change to [`PeerFrame`] changes `PEER_PROTOCOL_VERSION`. There is no negotiation; a rolling
//! upgrade that changes the version must change it on a quiet cluster.
//!
//! Version 2 added [`PeerFrame::Clock`]. A version-1 node cannot decode it and would close the
//! connection on the first probe, taking the Raft traffic on it down too; so a version-1 node
//! and a version-2 node refuse each other at the `Hello` instead, plainly, and the upgrade is
//! done on a quiet cluster like any other.
//!
//! Version 3 added `leads` to a clock answer (the cluster clock, `--clock cluster:RHO`).
//! Version 4 added `contradicts` to a probe (the cluster clock's fencing). Version 5 added the
//! closed timestamp side transport to the clock frames (`ClockMessage::Closed`,
//! `ClockMessage::CloseRequest`): a leader's closed timestamps no longer travel in the log.
//!
//! # Queueing and loss
//!
//! Raft calls [`Transport::send`] from its own thread, which must never wait on the network. So
//! `send` only puts the message on the peer's bounded queue ([`PeerOptions::queue_capacity`],
//! 1024 messages by default) with `try_send`, and returns. If the queue is full (the peer is
//! slow, or down and the link is waiting to reconnect) the message is dropped and counted in
//! [`PeerLinkStats::messages_dropped`]. Messages already queued when a connection fails stay
//! queued and go out on the next connection; the ones being written when it failed are lost.
//!
//! Raft is built for this. Every message it sends is either repeated until it has an effect or
//! made obsolete by a later one: a leader resends appends from a follower's last acknowledged
//! index, heartbeats come every tick, candidates retry elections, and a lost acknowledgement
//! only delays the commit index. Loss costs time, never safety. What Raft must hear about is
//! reported through the [`Reporter`]:
//!
//! - [`Reporter::unreachable`] when a connection attempt fails, when a connection breaks and
//!   when a message names a peer the address book doesn't have, so the leader stops pipelining
//!   appends to that follower and probes it instead. Reports are per failed attempt, not per
//!   message: a peer that is down for a minute costs at most one report per reconnection
//!   attempt, however many messages queue up for it.
//! - [`Reporter::snapshot`] exactly once for every `MsgSnapshot`, because raft-rs keeps the
//!   follower in snapshot state, sending it nothing else, until it hears. Each queued snapshot
//!   carries a report that fires when the snapshot is fully written (`true`) or when it is
//!   dropped for any reason (`false`): queue full, connection failed, peer removed, transport
//!   shut down, runtime gone. Dropping is reporting, so no path can forget.
//!
//! Snapshots have their own small queue per peer (4 of them; raft-rs sends one at a time per
//! follower), so a burst of ordinary messages cannot crowd one out and a connection failure can
//! fail every waiting snapshot at once, without touching the ordinary messages queued with it.
//!
//! A message sent after [`PeerTransport::set_peers`] returns goes to the address that call set:
//! a link compares its address before every write.
//!
//! # Reconnection
//!
//! A link connects when it first has something to send, sends its `Hello`, and keeps the
//! connection until a write fails or takes longer than [`PeerOptions::write_timeout`], the peer
//! closes it, or the peer's address changes. After a failure the link reports the peer
//! unreachable and waits before the next attempt: a random delay between half the current
//! ceiling and the ceiling, where the ceiling starts at [`PeerOptions::backoff_min`] (50 ms) and
//! doubles on every failure up to [`PeerOptions::backoff_max`] (2 s). The jitter keeps the
//! members of a cluster from reconnecting in lockstep after a partition heals. The ceiling goes
//! back to the minimum once a connection has lasted `backoff_max`, so a peer that accepts and
//! immediately hangs up (because it refuses our `Hello`, say) is retried ever more slowly
//! instead of in a tight loop. A changed address is tried at once.
//!
//! # Snapshots and large messages
//!
//! A `MsgSnapshot` carries the state machine's whole state, up to
//! [`MAX_MESSAGE_LEN`] (64 MiB) encoded. The link encodes it whole, cuts the encoding into
//! pieces of [`PeerOptions::snapshot_chunk`] bytes (1 MiB) and sends them as
//! [`PeerFrame::SnapshotChunk`]s numbered from `seq` 0, the last with `last: true`, all under
//! one `snapshot` id that the sender chooses and never reuses on the connection. Between two
//! chunks it writes whatever ordinary messages are waiting, so heartbeats and votes don't stall
//! behind a snapshot for seconds. It reports the snapshot delivered once the last chunk has been
//! written and flushed to the socket. (Flushed, not applied: raft-rs learns whether the follower
//! installed it from the follower's next append response.)
//!
//! The receiver reassembles one snapshot at a time per connection: chunks must come in order
//! under one id, the total may not exceed `MAX_MESSAGE_LEN`, and a partial snapshot is dropped
//! when its connection closes. Once the last chunk is in, the whole message is decoded and
//! delivered like any other.
//!
//! Any other message too large for one frame (an append with one huge entry, which raft-rs
//! sends whatever `max_size_per_msg` says) travels the same way, without a report and without
//! interleaving: its chunks go out back to back, so it keeps its place among the messages
//! around it. (Raft would survive the reordering, but a follower rejects an append that
//! overtakes the one before it, and the leader falls back to probing.)
//!
//! # Hostile input
//!
//! A peer connection is refused, and closed, with a warning naming the remote address and the
//! reason, when:
//!
//! - no complete `Hello` arrives within [`PeerOptions::hello_timeout`] (5 s), so a connection
//!   that sends nothing holds nothing for long;
//! - a length prefix exceeds `max_frame` (garbage, such as an HTTP request, usually reads as an
//!   enormous length), or the stream ends inside a frame;
//! - a payload is not a [`PeerFrame`], or has bytes left over after one;
//! - the first frame is not a `Hello`, or a later one is; the `Hello` has another version,
//!   another cluster name, or a `to` that is not this node;
//! - a Raft payload does not decode ([`decode_message`]), or its message is not from the
//!   `Hello`'s `from` to this node;
//! - a chunk comes out of order, or a reassembled snapshot would exceed `MAX_MESSAGE_LEN`.
//!
//! Each connection is served by its own task; a refusal closes that connection only, and
//! nothing on any of these paths panics.
//!
//! This is not authentication. The cluster name only catches misconfiguration (a node pointed
//! at the wrong cluster or port); anyone who can reach the peer port can pose as a member. A
//! connection that has passed the `Hello` is trusted with memory, up to one frame buffer and one
//! snapshot being reassembled (`max_frame` + `MAX_MESSAGE_LEN`), and nothing limits how many
//! connections there are. Deploy the peer port on a private network.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Duration;

use boundkv_consensus::clock_check::ClockFrame;
use boundkv_consensus::codec::{CodecError, MAX_MESSAGE_LEN, decode_message, encode_message};
use boundkv_consensus::raft::prelude::{Message, MessageType};
use boundkv_consensus::transport::{Deliverer, Reporter, Transport};
use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use rand::Rng;
use serde::{Deserialize, Serialize};
use tokio::io::AsyncReadExt;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::runtime::Handle;
use tokio::sync::{mpsc, watch};
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::{Instant, sleep, sleep_until, timeout};
use tokio_util::codec::{FramedRead, FramedWrite, LengthDelimitedCodec};
use tracing::{debug, info, warn};

/// The peer protocol version this module speaks, carried in every [`PeerFrame::Hello`].
pub const PEER_PROTOCOL_VERSION: u16 = 5;

/// The length of the length prefix in front of every frame, in bytes.
pub const LENGTH_PREFIX_LEN: usize = 4;

/// The most bytes a [`PeerFrame::SnapshotChunk`] payload adds around its data: the variant
/// index (1 byte), the snapshot id (a u64 varint, at most 10), the sequence number (a u32
/// varint, at most 5), `last` (1) and the data's length (a varint, at most 5 below 32 GiB).
pub const CHUNK_FRAME_OVERHEAD: usize = 1 + 10 + 5 + 1 + 5;

/// The smallest [`PeerOptions::max_frame`] accepted: room for a `Hello` with a short cluster
/// name and for chunks of at least a few hundred bytes.
pub const MIN_MAX_FRAME: usize = 512;

/// The largest [`PeerOptions::max_frame`] accepted: one frame for the largest Raft message.
pub const MAX_MAX_FRAME: usize = MAX_MESSAGE_LEN + 64;

/// How many snapshots may wait for one peer. raft-rs sends a follower one snapshot at a time
/// and waits for its report, so more than one or two waiting means reports are being lost.
const SNAPSHOT_QUEUE_CAPACITY: usize = 4;

/// How many clock probes and answers may wait for one link. They go out ahead of every Raft
/// message (see [`Link::pump`]): their round trip is the peer clock checks' uncertainty, which
/// every member's clock is widened by.
const CLOCK_QUEUE_CAPACITY: usize = 64;

/// The most ordinary messages written between two flushes.
const MAX_BATCH: usize = 256;

/// How long the listener pauses after a failed `accept` (out of file descriptors, say) before
/// trying again, so that it does not spin.
const ACCEPT_RETRY_DELAY: Duration = Duration::from_millis(100);

// ---------------------------------------------------------------------------------------------
// Options
// ---------------------------------------------------------------------------------------------

/// Tuning for both halves of the peer transport. Every member of a cluster should use the same
/// `max_frame`; the rest is local.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerOptions {
    /// Ordinary messages queued per peer before `send` starts dropping (default 1024).
    pub queue_capacity: usize,
    /// How long one connection attempt may take (default 1 s).
    pub connect_timeout: Duration,
    /// The first delay ceiling between connection attempts (default 50 ms).
    pub backoff_min: Duration,
    /// The largest delay ceiling between connection attempts (default 2 s).
    pub backoff_max: Duration,
    /// The data bytes per [`PeerFrame::SnapshotChunk`] (default 1 MiB). At most
    /// `max_frame - CHUNK_FRAME_OVERHEAD`.
    pub snapshot_chunk: usize,
    /// The largest frame payload sent or accepted, in bytes, not counting the length prefix
    /// (default 2 MiB + 64 KiB).
    pub max_frame: usize,
    /// How long an inbound connection may take to send its `Hello` (default 5 s).
    pub hello_timeout: Duration,
    /// How long one write (or flush) to a peer may take before the connection is given up as
    /// stuck (default 10 s).
    pub write_timeout: Duration,
    /// This node's own peer address, sent in every `Hello` as `reply_to` (default none).
    pub advertise: Option<String>,
}

impl Default for PeerOptions {
    fn default() -> Self {
        PeerOptions {
            queue_capacity: 1024,
            connect_timeout: Duration::from_secs(1),
            backoff_min: Duration::from_millis(50),
            backoff_max: Duration::from_secs(2),
            snapshot_chunk: 1 << 20,
            max_frame: (2 << 20) + (64 << 10),
            advertise: None,
            hello_timeout: Duration::from_secs(5),
            write_timeout: Duration::from_secs(10),
        }
    }
}

/// Why a [`PeerOptions`] is unusable, from [`PeerOptions::validate`].
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PeerOptionsError {
    /// `queue_capacity` is 0.
    #[error("queue_capacity must be at least 1")]
    ZeroQueueCapacity,
    /// A timeout is zero.
    #[error("{name} must be non-zero")]
    ZeroTimeout {
        /// The option's name.
        name: &'static str,
    },
    /// `backoff_min` is zero or above `backoff_max`.
    #[error("backoff_min ({min:?}) must be non-zero and at most backoff_max ({max:?})")]
    Backoff {
        /// `backoff_min`.
        min: Duration,
        /// `backoff_max`.
        max: Duration,
    },
    /// `max_frame` is outside [`MIN_MAX_FRAME`]..=[`MAX_MAX_FRAME`].
    #[error("max_frame {max_frame} must be between {MIN_MAX_FRAME} and {MAX_MAX_FRAME}")]
    MaxFrame {
        /// `max_frame`.
        max_frame: usize,
    },
    /// `snapshot_chunk` is zero or does not fit in a frame.
    #[error(
        "snapshot_chunk {chunk} must be non-zero and at most max_frame ({max_frame}) - \
         {CHUNK_FRAME_OVERHEAD}"
    )]
    SnapshotChunk {
        /// `snapshot_chunk`.
        chunk: usize,
        /// `max_frame`.
        max_frame: usize,
    },
}

impl PeerOptions {
    /// Checks that these options can be used as they are. [`PeerTransport::new`] and
    /// [`serve_peers`] accept any options, clamping each bad value to the nearest usable one
    /// (and logging a warning), so call this where configuration is read to reject it instead.
    pub fn validate(&self) -> Result<(), PeerOptionsError> {
        if self.queue_capacity == 0 {
            return Err(PeerOptionsError::ZeroQueueCapacity);
        }
        for (name, value) in [
            ("connect_timeout", self.connect_timeout),
            ("hello_timeout", self.hello_timeout),
            ("write_timeout", self.write_timeout),
        ] {
            if value.is_zero() {
                return Err(PeerOptionsError::ZeroTimeout { name });
            }
        }
        if self.backoff_min.is_zero() || self.backoff_min > self.backoff_max {
            return Err(PeerOptionsError::Backoff { min: self.backoff_min, max: self.backoff_max });
        }
        if !(MIN_MAX_FRAME..=MAX_MAX_FRAME).contains(&self.max_frame) {
            return Err(PeerOptionsError::MaxFrame { max_frame: self.max_frame });
        }
        if self.snapshot_chunk == 0 || self.snapshot_chunk > self.max_frame - CHUNK_FRAME_OVERHEAD {
            return Err(PeerOptionsError::SnapshotChunk {
                chunk: self.snapshot_chunk,
                max_frame: self.max_frame,
            });
        }
        Ok(())
    }

    /// These options with every unusable value replaced by the nearest usable one.
    fn clamped(&self) -> PeerOptions {
        if let Err(e) = self.validate() {
            warn!(error = %e, "unusable peer options; clamping them");
        }
        let nonzero = |d: Duration| d.max(Duration::from_millis(1));
        let max_frame = self.max_frame.clamp(MIN_MAX_FRAME, MAX_MAX_FRAME);
        let backoff_max = nonzero(self.backoff_max);
        PeerOptions {
            queue_capacity: self.queue_capacity.max(1),
            connect_timeout: nonzero(self.connect_timeout),
            backoff_min: nonzero(self.backoff_min).min(backoff_max),
            backoff_max,
            snapshot_chunk: self.snapshot_chunk.clamp(1, max_frame - CHUNK_FRAME_OVERHEAD),
            max_frame,
            hello_timeout: nonzero(self.hello_timeout),
            write_timeout: nonzero(self.write_timeout),
            advertise: self.advertise.clone(),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Frames
// ---------------------------------------------------------------------------------------------

/// One frame of the peer protocol; see the module docs for its bytes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum PeerFrame {
    /// The first frame on every connection: who is calling whom.
    Hello {
        /// The sender's [`PEER_PROTOCOL_VERSION`]. Must stay the first field of variant 0.
        version: u16,
        /// The cluster the sender belongs to.
        cluster: String,
        /// The sender's node id.
        from: u64,
        /// The node id the sender means to reach.
        to: u64,
        /// Where the sender listens for peers (`host:port`), or empty: how a joining node,
        /// which knows no one yet, can answer.
        reply_to: String,
    },
    /// One Raft message, as [`encode_message`] encodes it.
    Raft(Bytes),
    /// A piece of a message too large for one frame (every `MsgSnapshot`, and any other message
    /// that does not fit), as the module docs describe.
    SnapshotChunk {
        /// The sender's id for the message being cut up, unique on the connection.
        snapshot: u64,
        /// The piece's position, from 0.
        seq: u32,
        /// Whether this is the final piece.
        last: bool,
        /// The piece's bytes of the encoded message.
        data: Bytes,
    },
    /// A peer clock check's probe or answer (see `boundkv_consensus::clock_check`), queued
    /// and lost like Raft messages, never chunked (it is a few dozen bytes).
    Clock(ClockFrame),
}

/// Why a frame payload could not be encoded or decoded.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// The payload is not a [`PeerFrame`].
    #[error("malformed peer frame: {0}")]
    Malformed(String),
    /// A `Hello` of another protocol version.
    #[error("unsupported peer protocol version {got} (this node speaks {PEER_PROTOCOL_VERSION})")]
    UnsupportedVersion {
        /// The version the peer sent.
        got: u16,
    },
    /// The payload would exceed the frame limit.
    #[error("peer frame of {len} bytes exceeds the limit of {max}")]
    TooLarge {
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
}

/// The codec that cuts a byte stream into frame payloads: a [`LENGTH_PREFIX_LEN`]-byte
/// big-endian length, then the payload, at most `max_frame` bytes.
///
/// Decoding a longer length fails with an `io::Error` of kind `InvalidData` before anything is
/// buffered; the stream cannot be resynchronized after that, so the connection must be closed.
pub fn frame_codec(max_frame: usize) -> LengthDelimitedCodec {
    LengthDelimitedCodec::builder()
        .length_field_offset(0)
        .length_field_length(LENGTH_PREFIX_LEN)
        .length_adjustment(0)
        .num_skip(LENGTH_PREFIX_LEN)
        .big_endian()
        .max_frame_length(max_frame)
        .new_codec()
}

/// Encodes a frame into its payload (without the length prefix, which the codec adds).
/// Fails with [`FrameError::TooLarge`] rather than produce a payload above `max_frame`, which
/// the peer would refuse.
pub fn encode_frame(frame: &PeerFrame, max_frame: usize) -> Result<Bytes, FrameError> {
    let payload = postcard::to_allocvec(frame)
        .map_err(|e| FrameError::Malformed(format!("cannot encode frame: {e}")))?;
    if payload.len() > max_frame {
        return Err(FrameError::TooLarge { len: payload.len(), max: max_frame });
    }
    Ok(Bytes::from(payload))
}

/// Decodes one frame payload, as the codec yields it.
///
/// A `Hello`'s version is read before the rest of it, so a `Hello` of another version is
/// [`FrameError::UnsupportedVersion`] whatever follows. The payload must be consumed exactly.
/// Never panics, and allocates at most about the payload's length.
pub fn decode_frame(payload: &[u8]) -> Result<PeerFrame, FrameError> {
    let malformed = |e: postcard::Error| FrameError::Malformed(e.to_string());
    let (variant, rest) = postcard::take_from_bytes::<u32>(payload).map_err(malformed)?;
    if variant == 0 {
        let (version, _) = postcard::take_from_bytes::<u16>(rest).map_err(malformed)?;
        if version != PEER_PROTOCOL_VERSION {
            return Err(FrameError::UnsupportedVersion { got: version });
        }
    }
    let (frame, rest) = postcard::take_from_bytes::<PeerFrame>(payload).map_err(malformed)?;
    if !rest.is_empty() {
        return Err(FrameError::Malformed(format!("{} bytes after the frame", rest.len())));
    }
    Ok(frame)
}

/// The payload length of a [`PeerFrame::Raft`] carrying `len` bytes: the variant index, the
/// length varint, the bytes.
fn raft_frame_len(len: usize) -> usize {
    let mut varint = 1;
    let mut rest = len >> 7;
    while rest > 0 {
        varint += 1;
        rest >>= 7;
    }
    1 + varint + len
}

// ---------------------------------------------------------------------------------------------
// The sending half
// ---------------------------------------------------------------------------------------------

/// The sending half of the peer transport: one outbound link per peer, each a bounded queue and
/// a task on the runtime that owns one TCP connection. See the module docs.
///
/// Dropping it stops every link, like [`PeerTransport::shutdown`].
pub struct PeerTransport {
    id: u64,
    cluster: Arc<str>,
    options: Arc<PeerOptions>,
    runtime: Handle,
    book: RwLock<AddressBook>,
    unknown_peer_drops: AtomicU64,
}

#[derive(Default)]
struct AddressBook {
    links: HashMap<u64, LinkHandle>,
    shut_down: bool,
}

/// What the transport keeps of one link; dropping it stops the link's task.
struct LinkHandle {
    queue: mpsc::Sender<Outbound>,
    snapshots: mpsc::Sender<Outbound>,
    clocks: mpsc::Sender<Outbound>,
    address: watch::Sender<String>,
    counters: Arc<LinkCounters>,
    task: JoinHandle<()>,
}

impl Drop for LinkHandle {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Counters one link shares with the transport, for [`PeerTransport::stats`].
#[derive(Default)]
struct LinkCounters {
    connected: AtomicBool,
    messages_sent: AtomicU64,
    messages_dropped: AtomicU64,
    reconnects: AtomicU64,
    connect_failures: AtomicU64,
    bytes_sent: AtomicU64,
    snapshots_sent: AtomicU64,
    snapshots_failed: AtomicU64,
}

impl LinkCounters {
    fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }
}

/// What [`PeerTransport::stats`] returns: a point-in-time view of every link.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PeerStats {
    /// One entry per peer in the address book, by node id.
    pub peers: BTreeMap<u64, PeerLinkStats>,
    /// Messages dropped because they named a node id not in the address book.
    pub unknown_peer_drops: u64,
}

/// Counters of one outbound link, since the peer entered the address book. An address change
/// keeps them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PeerLinkStats {
    /// The peer's address, `host:port`.
    pub address: String,
    /// Whether the link holds an open connection (that has sent its `Hello`).
    pub connected: bool,
    /// Messages written and flushed to the socket.
    pub messages_sent: u64,
    /// Messages dropped by `send` because the peer's queue was full.
    pub messages_dropped: u64,
    /// Connections established after the first one.
    pub reconnects: u64,
    /// Connection attempts that failed (connect, or sending the `Hello`).
    pub connect_failures: u64,
    /// Bytes flushed to the socket, length prefixes included.
    pub bytes_sent: u64,
    /// Snapshots reported delivered.
    pub snapshots_sent: u64,
    /// Snapshots reported not delivered.
    pub snapshots_failed: u64,
}

/// What waits in a link's queue.
enum Outbound {
    /// A Raft message.
    Raft(RaftOutbound),
    /// A clock probe or answer. It reports nothing: a lost one is a peer not heard from.
    Clock(ClockFrame),
}

/// A Raft message waiting in a link's queue.
struct RaftOutbound {
    msg: Message,
    reporter: Reporter,
    /// For a `MsgSnapshot`: its report, which fires when this is dropped.
    snapshot: Option<SnapshotReport>,
}

/// The promise to report one snapshot exactly once: `delivered` consumes it and reports
/// `true`; dropping it any other way reports `false`.
struct SnapshotReport {
    reporter: Reporter,
    to: u64,
    counters: Arc<LinkCounters>,
    delivered: bool,
}

impl SnapshotReport {
    fn delivered(mut self) {
        self.delivered = true;
    }
}

impl Drop for SnapshotReport {
    fn drop(&mut self) {
        // Count first, so that whoever reacts to the report sees it counted.
        let counter = if self.delivered {
            &self.counters.snapshots_sent
        } else {
            &self.counters.snapshots_failed
        };
        LinkCounters::add(counter, 1);
        self.reporter.snapshot(self.to, self.delivered);
    }
}

impl PeerTransport {
    /// A transport for node `id` of cluster `cluster`, with an empty address book (see
    /// [`PeerTransport::set_peers`]). Its links run on `runtime`; `send` may be called from any
    /// thread, inside the runtime or not.
    ///
    /// Unusable `options` are clamped (see [`PeerOptions::validate`]).
    pub fn new(id: u64, cluster: String, options: PeerOptions, runtime: Handle) -> Arc<Self> {
        Arc::new(PeerTransport {
            id,
            cluster: cluster.into(),
            options: Arc::new(options.clamped()),
            runtime,
            book: RwLock::default(),
            unknown_peer_drops: AtomicU64::new(0),
        })
    }

    /// This node's id.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// Replaces the address book with `peers`, pairs of node id and `host:port`.
    ///
    /// A peer that is new gets a link (which connects when it first has something to send); a
    /// peer no longer listed loses its link, whose queued messages are dropped (and queued
    /// snapshots reported not delivered); a peer whose address changed keeps its link and its
    /// queue, and the link moves to the new address before its next write, so every message
    /// sent after this returns goes to the new address. This node's own id is ignored. Does
    /// nothing after [`PeerTransport::shutdown`].
    pub fn set_peers(&self, peers: impl IntoIterator<Item = (u64, String)>) {
        let peers: HashMap<u64, String> =
            peers.into_iter().filter(|(peer, _)| *peer != self.id).collect();
        let mut book = self.write_book();
        if book.shut_down {
            warn!(node = self.id, "set_peers after shutdown; ignored");
            return;
        }
        book.links.retain(|peer, _| {
            let keep = peers.contains_key(peer);
            if !keep {
                info!(node = self.id, peer, "peer removed from the address book");
            }
            keep
        });
        for (peer, address) in peers {
            match book.links.get(&peer) {
                Some(link) if *link.address.borrow() == address => {}
                Some(link) => {
                    info!(node = self.id, peer, %address, "peer address changed");
                    link.address.send_replace(address);
                }
                None => {
                    debug!(node = self.id, peer, %address, "peer added to the address book");
                    let link = self.spawn_link(peer, address);
                    book.links.insert(peer, link);
                }
            }
        }
    }

    /// Adds `peer` at `address` if the address book has no entry for it (an entry it has is
    /// never changed: the replicated membership is the authority).
    pub fn learn(&self, peer: u64, address: String) {
        if peer == self.id || self.read_book().links.contains_key(&peer) {
            return;
        }
        let mut book = self.write_book();
        if book.shut_down || book.links.contains_key(&peer) {
            return;
        }
        info!(node = self.id, peer, %address, "learned a peer's address from its hello");
        let link = self.spawn_link(peer, address);
        book.links.insert(peer, link);
    }

    /// A point-in-time view of every link's counters.
    pub fn stats(&self) -> PeerStats {
        let book = self.read_book();
        let peers = book
            .links
            .iter()
            .map(|(&peer, link)| {
                let c = &link.counters;
                let get = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
                let stats = PeerLinkStats {
                    address: link.address.borrow().clone(),
                    connected: c.connected.load(Ordering::Relaxed),
                    messages_sent: get(&c.messages_sent),
                    messages_dropped: get(&c.messages_dropped),
                    reconnects: get(&c.reconnects),
                    connect_failures: get(&c.connect_failures),
                    bytes_sent: get(&c.bytes_sent),
                    snapshots_sent: get(&c.snapshots_sent),
                    snapshots_failed: get(&c.snapshots_failed),
                };
                (peer, stats)
            })
            .collect();
        PeerStats { peers, unknown_peer_drops: self.unknown_peer_drops.load(Ordering::Relaxed) }
    }

    /// Stops every link: their connections close, their queued messages are dropped (queued
    /// snapshots reported not delivered), and from then on every message is treated as one to
    /// an unknown peer. Idempotent.
    pub fn shutdown(&self) {
        let links = {
            let mut book = self.write_book();
            book.shut_down = true;
            std::mem::take(&mut book.links)
        };
        if !links.is_empty() {
            info!(node = self.id, peers = links.len(), "peer transport shutting down");
        }
        drop(links);
    }

    fn spawn_link(&self, peer: u64, address: String) -> LinkHandle {
        let (queue_tx, queue) = mpsc::channel(self.options.queue_capacity);
        let (snapshots_tx, snapshots) = mpsc::channel(SNAPSHOT_QUEUE_CAPACITY);
        let (clocks_tx, clocks) = mpsc::channel(CLOCK_QUEUE_CAPACITY);
        let (address_tx, address) = watch::channel(address);
        let counters = Arc::new(LinkCounters::default());
        let link = Link {
            node: self.id,
            peer,
            cluster: self.cluster.clone(),
            options: self.options.clone(),
            queue,
            snapshots,
            clocks,
            address,
            counters: counters.clone(),
            reporter: None,
            held: None,
            backoff: Backoff::new(self.options.backoff_min, self.options.backoff_max),
            retry_at: None,
            failures: 0,
            ever_connected: false,
            next_chunked_id: 0,
        };
        let task = self.runtime.spawn(link.run());
        LinkHandle {
            queue: queue_tx,
            snapshots: snapshots_tx,
            clocks: clocks_tx,
            address: address_tx,
            counters,
            task,
        }
    }

    fn read_book(&self) -> RwLockReadGuard<'_, AddressBook> {
        self.book.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write_book(&self) -> RwLockWriteGuard<'_, AddressBook> {
        self.book.write().unwrap_or_else(|e| e.into_inner())
    }
}

impl Transport for PeerTransport {
    /// Queues `msg` for `msg.to` and returns at once; see the module docs for what happens to
    /// it then. Takes a read lock on the address book, held for a `try_send`.
    fn send(&self, msg: Message, reporter: &Reporter) {
        let to = msg.to;
        let is_snapshot = msg.get_msg_type() == MessageType::MsgSnapshot;
        let book = self.read_book();
        let Some(link) = book.links.get(&to) else {
            drop(book);
            self.unknown_peer_drops.fetch_add(1, Ordering::Relaxed);
            debug!(node = self.id, peer = to, msg_type = ?msg.get_msg_type(),
                "message to a peer not in the address book dropped");
            reporter.unreachable(to);
            if is_snapshot {
                reporter.snapshot(to, false);
            }
            return;
        };
        let snapshot = is_snapshot.then(|| SnapshotReport {
            reporter: reporter.clone(),
            to,
            counters: link.counters.clone(),
            delivered: false,
        });
        let item = Outbound::Raft(RaftOutbound { msg, reporter: reporter.clone(), snapshot });
        let queue = if is_snapshot { &link.snapshots } else { &link.queue };
        match queue.try_send(item) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_dropped)) => {
                // `_dropped` goes out of scope here; a snapshot's report fires `false`.
                LinkCounters::add(&link.counters.messages_dropped, 1);
            }
            Err(mpsc::error::TrySendError::Closed(_dropped)) => {
                // The link's task is gone: the runtime has shut down.
                reporter.unreachable(to);
            }
        }
    }
    /// Queues a clock probe or answer on the peer's ordinary queue; dropped if the peer is
    /// unknown or its queue is full.
    fn send_clock(&self, frame: ClockFrame) {
        self.queue_clock(frame);
    }
}

impl PeerTransport {
    /// Queues a clock frame like an ordinary message (see [`Transport::send_clock`]).
    fn queue_clock(&self, frame: ClockFrame) {
        let book = self.read_book();
        let Some(link) = book.links.get(&frame.to) else {
            drop(book);
            self.unknown_peer_drops.fetch_add(1, Ordering::Relaxed);
            return;
        };
        if let Err(mpsc::error::TrySendError::Full(_)) =
            link.clocks.try_send(Outbound::Clock(frame))
        {
            LinkCounters::add(&link.counters.messages_dropped, 1);
        }
    }
}

impl Drop for PeerTransport {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Delays between connection attempts: exponential, with jitter (see the module docs).
struct Backoff {
    min: Duration,
    max: Duration,
    ceiling: Duration,
}

impl Backoff {
    fn new(min: Duration, max: Duration) -> Self {
        Backoff { min, max, ceiling: min }
    }

    /// The next delay: uniform between half the ceiling (but at least `min`) and the ceiling,
    /// which then doubles, up to `max`.
    fn next_delay(&mut self) -> Duration {
        let high = self.ceiling;
        let low = (high / 2).max(self.min).min(high);
        let delay = rand::rng().random_range(low..=high);
        self.ceiling = self.ceiling.saturating_mul(2).min(self.max);
        delay
    }

    fn reset(&mut self) {
        self.ceiling = self.min;
    }
}

/// Why a link's connection ended, or could not be made.
#[derive(Debug, thiserror::Error)]
enum LinkError {
    #[error("cannot connect: {0}")]
    Connect(#[source] std::io::Error),
    #[error("no connection within {0:?}")]
    ConnectTimeout(Duration),
    #[error("cannot write: {0}")]
    Write(#[source] std::io::Error),
    #[error("a write took longer than {0:?}")]
    WriteTimeout(Duration),
    #[error("the peer closed the connection")]
    PeerClosed,
    #[error("the peer sent data on a send-only connection")]
    PeerSentData,
    #[error("cannot read: {0}")]
    Read(#[source] std::io::Error),
    #[error(transparent)]
    Frame(#[from] FrameError),
}

/// How a link's connected phase (or connection attempt) ended.
enum LinkEnd {
    Failed(LinkError),
    AddressChanged,
    /// The peer left the address book, or the transport shut down.
    Removed,
}

/// One open connection to a peer: frames out, and the read half only to notice the peer
/// closing it.
struct Connection {
    frames: FramedWrite<OwnedWriteHalf, LengthDelimitedCodec>,
    read: OwnedReadHalf,
    write_timeout: Duration,
    /// Bytes fed since the last flush, length prefixes included.
    unflushed: u64,
}

impl Connection {
    async fn feed(&mut self, payload: Bytes) -> Result<(), LinkError> {
        let len = (LENGTH_PREFIX_LEN + payload.len()) as u64;
        timeout(self.write_timeout, self.frames.feed(payload))
            .await
            .map_err(|_| LinkError::WriteTimeout(self.write_timeout))?
            .map_err(LinkError::Write)?;
        self.unflushed += len;
        Ok(())
    }

    /// Flushes everything fed; returns how many bytes that was.
    async fn flush(&mut self) -> Result<u64, LinkError> {
        timeout(self.write_timeout, SinkExt::<Bytes>::flush(&mut self.frames))
            .await
            .map_err(|_| LinkError::WriteTimeout(self.write_timeout))?
            .map_err(LinkError::Write)?;
        Ok(std::mem::take(&mut self.unflushed))
    }

    /// Waits for the peer to close the connection (it never writes). Cancel-safe.
    async fn closed(&mut self) -> LinkError {
        let mut byte = [0u8; 1];
        match self.read.read(&mut byte).await {
            Ok(0) => LinkError::PeerClosed,
            Ok(_) => LinkError::PeerSentData,
            Err(e) => LinkError::Read(e),
        }
    }
}

/// A ready-to-write message: one frame, or one to cut into chunks.
enum Payload {
    Frame(Bytes),
    Chunked(ChunkedSend),
}

/// A message being sent as [`PeerFrame::SnapshotChunk`]s.
struct ChunkedSend {
    id: u64,
    message: Bytes,
    offset: usize,
    seq: u32,
    finished: bool,
    /// Whether ordinary messages may go out between its chunks: only for snapshots, which
    /// raft-rs sends alone; any other message keeps its place in the stream.
    interleave: bool,
    report: Option<SnapshotReport>,
}

impl ChunkedSend {
    /// The next chunk's payload; sets `finished` when it is the last.
    fn next_frame(&mut self, chunk: usize, max_frame: usize) -> Result<Bytes, FrameError> {
        let end = self.message.len().min(self.offset + chunk);
        let last = end == self.message.len();
        let frame = PeerFrame::SnapshotChunk {
            snapshot: self.id,
            seq: self.seq,
            last,
            data: self.message.slice(self.offset..end),
        };
        let payload = encode_frame(&frame, max_frame)?;
        self.offset = end;
        self.seq += 1;
        self.finished = last;
        Ok(payload)
    }
}

/// One outbound link: the task behind a [`LinkHandle`].
struct Link {
    node: u64,
    peer: u64,
    cluster: Arc<str>,
    options: Arc<PeerOptions>,
    queue: mpsc::Receiver<Outbound>,
    snapshots: mpsc::Receiver<Outbound>,
    /// Clock probes and answers, written ahead of the ordinary queue.
    clocks: mpsc::Receiver<Outbound>,
    address: watch::Receiver<String>,
    counters: Arc<LinkCounters>,
    /// The reporter of the latest message taken from a queue, for `unreachable` reports.
    reporter: Option<Reporter>,
    /// A message taken from a queue and not yet written.
    held: Option<Outbound>,
    backoff: Backoff,
    /// When the next connection attempt may start, after a failure.
    retry_at: Option<Instant>,
    /// Consecutive failures, for logging the first at `warn` and the rest at `debug`.
    failures: u64,
    ever_connected: bool,
    next_chunked_id: u64,
}

impl Link {
    async fn run(mut self) {
        loop {
            // Disconnected: wait for something to send.
            if self.held.is_none() {
                let item = tokio::select! {
                    biased;
                    item = self.clocks.recv() => item,
                    item = self.snapshots.recv() => item,
                    item = self.queue.recv() => item,
                };
                match item {
                    Some(item) => self.hold(item),
                    None => return,
                }
            }
            let mut conn = match self.connect().await {
                Ok(conn) => conn,
                Err(LinkEnd::Failed(e)) => {
                    LinkCounters::add(&self.counters.connect_failures, 1);
                    self.fail(e);
                    continue;
                }
                Err(LinkEnd::AddressChanged) => continue,
                Err(LinkEnd::Removed) => return,
            };
            let up_since = Instant::now();
            let end = self.pump(&mut conn).await;
            drop(conn);
            self.counters.connected.store(false, Ordering::Relaxed);
            match end {
                LinkEnd::Failed(e) => {
                    if up_since.elapsed() >= self.options.backoff_max {
                        self.backoff.reset();
                    }
                    self.fail(e);
                }
                LinkEnd::AddressChanged => {
                    debug!(node = self.node, peer = self.peer, "leaving the old peer address");
                    self.backoff.reset();
                    self.retry_at = None;
                }
                LinkEnd::Removed => return,
            }
        }
    }

    /// Opens a connection to the current address and sends the `Hello`, after waiting out the
    /// backoff delay (cut short by an address change).
    async fn connect(&mut self) -> Result<Connection, LinkEnd> {
        if let Some(at) = self.retry_at.take() {
            tokio::select! {
                () = sleep_until(at) => {}
                changed = self.address.changed() => {
                    if changed.is_err() {
                        return Err(LinkEnd::Removed);
                    }
                    self.backoff.reset();
                }
            }
        }
        let address = self.address.borrow_and_update().clone();
        let connect_timeout = self.options.connect_timeout;
        let stream = match timeout(connect_timeout, TcpStream::connect(address.as_str())).await {
            Err(_) => return Err(LinkEnd::Failed(LinkError::ConnectTimeout(connect_timeout))),
            Ok(Err(e)) => return Err(LinkEnd::Failed(LinkError::Connect(e))),
            Ok(Ok(stream)) => stream,
        };
        // Raft's small messages (heartbeats, votes, acks) should not wait for Nagle.
        let _ = stream.set_nodelay(true);
        let (read, write) = stream.into_split();
        let mut conn = Connection {
            frames: FramedWrite::new(write, frame_codec(self.options.max_frame)),
            read,
            write_timeout: self.options.write_timeout,
            unflushed: 0,
        };
        let hello = PeerFrame::Hello {
            version: PEER_PROTOCOL_VERSION,
            cluster: self.cluster.to_string(),
            from: self.node,
            to: self.peer,
            reply_to: self.options.advertise.clone().unwrap_or_default(),
        };
        let hello =
            encode_frame(&hello, self.options.max_frame).map_err(|e| LinkEnd::Failed(e.into()))?;
        conn.feed(hello).await.map_err(LinkEnd::Failed)?;
        let bytes = conn.flush().await.map_err(LinkEnd::Failed)?;
        LinkCounters::add(&self.counters.bytes_sent, bytes);
        self.counters.connected.store(true, Ordering::Relaxed);
        if self.ever_connected {
            LinkCounters::add(&self.counters.reconnects, 1);
        }
        self.ever_connected = true;
        if self.failures > 0 {
            info!(node = self.node, peer = self.peer, %address, "connected to peer");
        } else {
            debug!(node = self.node, peer = self.peer, %address, "connected to peer");
        }
        self.failures = 0;
        Ok(conn)
    }

    /// After a failed attempt or a broken connection: report, fail every waiting snapshot,
    /// schedule the next attempt.
    fn fail(&mut self, error: LinkError) {
        self.failures += 1;
        let address = self.address.borrow().clone();
        if self.failures == 1 {
            warn!(node = self.node, peer = self.peer, %address, %error, "peer unreachable");
        } else {
            debug!(node = self.node, peer = self.peer, %address, %error, failures = self.failures,
                "peer still unreachable");
        }
        if let Some(reporter) = &self.reporter {
            reporter.unreachable(self.peer);
        }
        if self
            .held
            .as_ref()
            .is_some_and(|item| matches!(item, Outbound::Raft(r) if r.snapshot.is_some()))
        {
            self.held = None; // Reports `false`.
        }
        while self.snapshots.try_recv().is_ok() {} // Each reports `false`.
        self.retry_at = Some(Instant::now() + self.backoff.next_delay());
    }

    /// Writes messages into `conn` until it fails, the address changes or the link is removed.
    async fn pump(&mut self, conn: &mut Connection) -> LinkEnd {
        let mut chunked: Option<ChunkedSend> = None;
        loop {
            match self.address.has_changed() {
                Ok(false) => {}
                Ok(true) => return LinkEnd::AddressChanged,
                Err(_) => return LinkEnd::Removed,
            }
            // Ordinary messages ready now, as one batch.
            let mut batch = 0;
            let mut moved = false;
            while batch < MAX_BATCH {
                // Clock frames first: their round trip is what the clock checks measure.
                let next = self.held.take().or_else(|| self.clocks.try_recv().ok());
                let Some(item) = next.or_else(|| self.queue.try_recv().ok()) else {
                    break;
                };
                // Checked after taking the message: if it was sent after `set_peers` changed
                // the address, taking it made the change visible.
                if self.address.has_changed().unwrap_or(true) {
                    self.held = Some(item);
                    moved = true;
                    break;
                }
                match self.prepare(item) {
                    None => {}
                    Some(Payload::Frame(frame)) => {
                        if let Err(e) = conn.feed(frame).await {
                            return LinkEnd::Failed(e);
                        }
                        batch += 1;
                    }
                    Some(Payload::Chunked(mut next)) => {
                        // One chunked message at a time per connection.
                        if let Some(mut current) = chunked.take()
                            && let Err(e) = self.finish_chunks(conn, &mut current).await
                        {
                            return LinkEnd::Failed(e);
                        }
                        if next.interleave {
                            chunked = Some(next);
                        } else if let Err(e) = self.finish_chunks(conn, &mut next).await {
                            return LinkEnd::Failed(e);
                        }
                    }
                }
            }
            if batch > 0 {
                match conn.flush().await {
                    Ok(bytes) => {
                        LinkCounters::add(&self.counters.bytes_sent, bytes);
                        LinkCounters::add(&self.counters.messages_sent, batch as u64);
                    }
                    Err(e) => return LinkEnd::Failed(e),
                }
            }
            if moved {
                continue; // To the address check at the top.
            }
            // One chunk of the message being cut up, then the ordinary messages again.
            if let Some(current) = chunked.as_mut() {
                if let Err(e) = self.write_chunk(conn, current).await {
                    return LinkEnd::Failed(e);
                }
                if current.finished {
                    chunked = None;
                }
                continue;
            }
            // The next snapshot waiting.
            if let Ok(item) = self.snapshots.try_recv() {
                self.hold(item);
                continue;
            }
            // Nothing to write: wait for work, an address change, or the peer hanging up.
            tokio::select! {
                biased;
                changed = self.address.changed() => {
                    return if changed.is_ok() { LinkEnd::AddressChanged } else { LinkEnd::Removed };
                }
                error = conn.closed() => return LinkEnd::Failed(error),
                item = self.clocks.recv() => match item {
                    Some(item) => self.hold(item),
                    None => return LinkEnd::Removed,
                },
                item = self.snapshots.recv() => match item {
                    Some(item) => self.hold(item),
                    None => return LinkEnd::Removed,
                },
                item = self.queue.recv() => match item {
                    Some(item) => self.hold(item),
                    None => return LinkEnd::Removed,
                },
            }
        }
    }

    /// Keeps a message taken from a queue for the next write, and its reporter for reports.
    fn hold(&mut self, item: Outbound) {
        if let Outbound::Raft(r) = &item {
            self.reporter = Some(r.reporter.clone());
        }
        self.held = Some(item);
    }

    /// Encodes a message taken from a queue. `None` if it cannot be sent at all (logged; a
    /// snapshot's report fires `false`).
    fn prepare(&mut self, item: Outbound) -> Option<Payload> {
        let RaftOutbound { msg, reporter, snapshot } = match item {
            Outbound::Raft(r) => r,
            Outbound::Clock(frame) => {
                return match encode_frame(&PeerFrame::Clock(frame), self.options.max_frame) {
                    Ok(frame) => Some(Payload::Frame(frame)),
                    Err(e) => {
                        warn!(node = self.node, peer = self.peer, error = %e, "cannot frame a clock probe; dropped");
                        None
                    }
                };
            }
        };
        self.reporter = Some(reporter);
        let interleave = snapshot.is_some();
        let encoded = match encode_message(&msg) {
            Ok(encoded) => Bytes::from(encoded),
            Err(e) => {
                warn!(node = self.node, peer = self.peer, error = %e, "cannot encode a raft message; dropped");
                return None;
            }
        };
        if encoded.len() > MAX_MESSAGE_LEN {
            warn!(node = self.node, peer = self.peer, msg_type = ?msg.get_msg_type(),
                len = encoded.len(), max = MAX_MESSAGE_LEN,
                "raft message too large for any peer to accept; dropped");
            return None;
        }
        if snapshot.is_none() && raft_frame_len(encoded.len()) <= self.options.max_frame {
            return match encode_frame(&PeerFrame::Raft(encoded), self.options.max_frame) {
                Ok(frame) => Some(Payload::Frame(frame)),
                Err(e) => {
                    warn!(node = self.node, peer = self.peer, error = %e, "cannot frame a raft message; dropped");
                    None
                }
            };
        }
        self.next_chunked_id += 1;
        Some(Payload::Chunked(ChunkedSend {
            id: self.next_chunked_id,
            message: encoded,
            offset: 0,
            seq: 0,
            finished: false,
            interleave,
            report: snapshot,
        }))
    }

    /// Writes and flushes the next chunk of `current`; after the last, counts the message sent
    /// and reports a snapshot delivered.
    async fn write_chunk(
        &mut self,
        conn: &mut Connection,
        current: &mut ChunkedSend,
    ) -> Result<(), LinkError> {
        let frame = current.next_frame(self.options.snapshot_chunk, self.options.max_frame)?;
        conn.feed(frame).await?;
        let bytes = conn.flush().await?;
        LinkCounters::add(&self.counters.bytes_sent, bytes);
        if current.finished {
            LinkCounters::add(&self.counters.messages_sent, 1);
            if let Some(report) = current.report.take() {
                debug!(
                    node = self.node,
                    peer = self.peer,
                    len = current.message.len(),
                    chunks = current.seq,
                    "snapshot sent"
                );
                report.delivered();
            }
        }
        Ok(())
    }

    async fn finish_chunks(
        &mut self,
        conn: &mut Connection,
        current: &mut ChunkedSend,
    ) -> Result<(), LinkError> {
        while !current.finished {
            self.write_chunk(conn, current).await?;
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// The receiving half
// ---------------------------------------------------------------------------------------------

/// Serves node `id`'s peer port: accepts connections on `listener`, checks each one's `Hello`
/// against `cluster` and `id`, and delivers every Raft message that arrives through
/// `deliverer`. With `learn`, a caller that transport does not know yet is added to its address
/// book at the `Hello`'s `reply_to` (see the module docs). Returns once `shutdown` turns `true` (or its sender is dropped), after closing
/// the listener and every connection.
///
/// Each connection is served by its own task; one that breaks the protocol is closed with a
/// warning (see the module docs) and affects no other. Unusable `options` are clamped (see
/// [`PeerOptions::validate`]); only `max_frame` and `hello_timeout` matter here.
pub async fn serve_peers(
    listener: TcpListener,
    id: u64,
    cluster: String,
    options: PeerOptions,
    deliverer: Deliverer,
    learn: Option<Arc<PeerTransport>>,
    mut shutdown: watch::Receiver<bool>,
) {
    let local = listener.local_addr().ok();
    let options = options.clamped();
    let inbound = Arc::new(Inbound {
        node: id,
        cluster,
        max_frame: options.max_frame,
        hello_timeout: options.hello_timeout,
        deliverer,
        learn,
    });
    info!(node = id, address = ?local, "serving peers");
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            biased;
            () = wait_for_shutdown(&mut shutdown) => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, remote)) => {
                    debug!(node = id, %remote, "peer connection accepted");
                    connections.spawn(inbound.clone().serve(stream, remote));
                }
                Err(error) => {
                    warn!(node = id, %error, "cannot accept a peer connection");
                    tokio::select! {
                        () = wait_for_shutdown(&mut shutdown) => break,
                        () = sleep(ACCEPT_RETRY_DELAY) => {}
                    }
                }
            },
            Some(joined) = connections.join_next(), if !connections.is_empty() => {
                if let Err(error) = joined
                    && error.is_panic()
                {
                    warn!(node = id, %error, "a peer connection task panicked");
                }
            }
        }
    }
    drop(listener);
    let open = connections.len();
    connections.shutdown().await;
    info!(node = id, closed = open, "stopped serving peers");
}

/// Returns when `shutdown` is `true` or its sender is gone.
async fn wait_for_shutdown(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|stop| *stop).await;
}

/// What every inbound connection of one node shares.
struct Inbound {
    node: u64,
    cluster: String,
    max_frame: usize,
    hello_timeout: Duration,
    deliverer: Deliverer,
    learn: Option<Arc<PeerTransport>>,
}

/// Why an inbound connection was closed.
#[derive(Debug, thiserror::Error)]
enum Refusal {
    #[error("no Hello within {0:?}")]
    HelloTimeout(Duration),
    #[error("cannot read a frame: {0}")]
    Framing(#[source] std::io::Error),
    #[error(transparent)]
    Frame(#[from] FrameError),
    #[error("the first frame is not a Hello")]
    NotHello,
    #[error("a second Hello")]
    SecondHello,
    #[error("Hello for cluster {got:?}, but this is cluster {want:?}")]
    WrongCluster { got: String, want: String },
    #[error("Hello for node {got}, but this is node {want}")]
    WrongNode { got: u64, want: u64 },
    #[error("undecodable raft message: {0}")]
    Raft(#[from] CodecError),
    #[error("a message from {from} to {to} on a connection from {peer} to {node}")]
    Misaddressed { from: u64, to: u64, peer: u64, node: u64 },
    #[error("chunk {seq} of snapshot {snapshot} out of order: {expected}")]
    ChunkOutOfOrder { snapshot: u64, seq: u32, expected: Expected },
    #[error("a snapshot of more than {MAX_MESSAGE_LEN} bytes")]
    SnapshotTooLarge,
}

/// What chunk a connection was waiting for, for [`Refusal::ChunkOutOfOrder`].
#[derive(Debug)]
enum Expected {
    First,
    Next { snapshot: u64, seq: u32 },
}

impl fmt::Display for Expected {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Expected::First => write!(f, "expected the first chunk of a snapshot"),
            Expected::Next { snapshot, seq } => {
                write!(f, "expected chunk {seq} of snapshot {snapshot}")
            }
        }
    }
}

/// How an inbound connection ended without a refusal.
enum InboundEnd {
    /// The peer closed it.
    Closed,
    /// The local node has stopped taking messages.
    NodeStopped,
}

impl Inbound {
    async fn serve(self: Arc<Self>, stream: TcpStream, remote: SocketAddr) {
        let mut peer = None;
        match self.read_connection(stream, &mut peer).await {
            Ok(InboundEnd::Closed) => {
                debug!(node = self.node, peer, %remote, "peer connection closed")
            }
            Ok(InboundEnd::NodeStopped) => {
                info!(node = self.node, peer, %remote, "node stopped; closing peer connection")
            }
            Err(reason) => {
                warn!(node = self.node, peer, %remote, %reason, "closing peer connection")
            }
        }
    }

    async fn read_connection(
        &self,
        stream: TcpStream,
        peer: &mut Option<u64>,
    ) -> Result<InboundEnd, Refusal> {
        let mut frames = FramedRead::new(stream, frame_codec(self.max_frame));
        let first = match timeout(self.hello_timeout, frames.next()).await {
            Err(_) => return Err(Refusal::HelloTimeout(self.hello_timeout)),
            Ok(None) => return Ok(InboundEnd::Closed),
            Ok(Some(frame)) => frame.map_err(Refusal::Framing)?,
        };
        let PeerFrame::Hello { version: _, cluster, from, to, reply_to } = decode_frame(&first)?
        else {
            return Err(Refusal::NotHello);
        };
        if cluster != self.cluster {
            return Err(Refusal::WrongCluster { got: cluster, want: self.cluster.clone() });
        }
        if to != self.node {
            return Err(Refusal::WrongNode { got: to, want: self.node });
        }
        *peer = Some(from);
        debug!(node = self.node, peer = from, %reply_to, "peer said hello");
        if let Some(transport) = &self.learn
            && !reply_to.is_empty()
        {
            transport.learn(from, reply_to);
        }

        let mut reassembly: Option<Reassembly> = None;
        while let Some(frame) = frames.next().await {
            let payload = frame.map_err(Refusal::Framing)?;
            let message = match decode_frame(&payload)? {
                PeerFrame::Hello { .. } => return Err(Refusal::SecondHello),
                PeerFrame::Raft(bytes) => decode_message(&bytes)?,
                PeerFrame::Clock(clock) => {
                    if clock.from != from || clock.to != self.node {
                        return Err(Refusal::Misaddressed {
                            from: clock.from,
                            to: clock.to,
                            peer: from,
                            node: self.node,
                        });
                    }
                    if !self.deliverer.deliver_clock(clock) {
                        return Ok(InboundEnd::NodeStopped);
                    }
                    continue;
                }
                PeerFrame::SnapshotChunk { snapshot, seq, last, data } => {
                    match Reassembly::accept(&mut reassembly, snapshot, seq, last, &data)? {
                        Some(whole) => decode_message(&whole)?,
                        None => continue,
                    }
                }
            };
            if message.from != from || message.to != self.node {
                return Err(Refusal::Misaddressed {
                    from: message.from,
                    to: message.to,
                    peer: from,
                    node: self.node,
                });
            }
            if !self.deliverer.deliver(message) {
                return Ok(InboundEnd::NodeStopped);
            }
        }
        if let Some(partial) = reassembly {
            debug!(
                node = self.node,
                peer = from,
                snapshot = partial.snapshot,
                received = partial.data.len(),
                "connection closed mid-snapshot; partial snapshot dropped"
            );
        }
        Ok(InboundEnd::Closed)
    }
}

/// A chunked message being put back together on one connection.
struct Reassembly {
    snapshot: u64,
    next_seq: u32,
    data: Vec<u8>,
}

impl Reassembly {
    /// Adds one chunk to `slot`; returns the whole message when `last`.
    fn accept(
        slot: &mut Option<Reassembly>,
        snapshot: u64,
        seq: u32,
        last: bool,
        data: &[u8],
    ) -> Result<Option<Vec<u8>>, Refusal> {
        let current = match slot {
            None if seq == 0 => slot.insert(Reassembly { snapshot, next_seq: 0, data: Vec::new() }),
            Some(current) if current.snapshot == snapshot && current.next_seq == seq => current,
            other => {
                let expected = match other {
                    None => Expected::First,
                    Some(c) => Expected::Next { snapshot: c.snapshot, seq: c.next_seq },
                };
                return Err(Refusal::ChunkOutOfOrder { snapshot, seq, expected });
            }
        };
        if current.data.len() + data.len() > MAX_MESSAGE_LEN {
            return Err(Refusal::SnapshotTooLarge);
        }
        current.data.extend_from_slice(data);
        current.next_seq = current.next_seq.wrapping_add(1);
        Ok(if last { slot.take().map(|whole| whole.data) } else { None })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_options_are_valid() {
        assert_eq!(PeerOptions::default().validate(), Ok(()));
        assert_eq!(PeerOptions::default().clamped(), PeerOptions::default());
    }

    #[test]
    fn bad_options_are_reported_and_clamped() {
        let bad = PeerOptions {
            queue_capacity: 0,
            max_frame: 10,
            snapshot_chunk: 1 << 30,
            ..PeerOptions::default()
        };
        assert_eq!(bad.validate(), Err(PeerOptionsError::ZeroQueueCapacity));
        let clamped = bad.clamped();
        assert_eq!(clamped.validate(), Ok(()));
        assert_eq!(clamped.queue_capacity, 1);
        assert_eq!(clamped.max_frame, MIN_MAX_FRAME);
        assert_eq!(clamped.snapshot_chunk, MIN_MAX_FRAME - CHUNK_FRAME_OVERHEAD);
    }

    #[test]
    fn raft_frame_len_matches_postcard() {
        for len in [0, 1, 127, 128, 16_383, 16_384, 1 << 20, (1 << 21) + 5] {
            let frame = PeerFrame::Raft(Bytes::from(vec![7u8; len]));
            assert_eq!(postcard::to_allocvec(&frame).unwrap().len(), raft_frame_len(len));
        }
    }

    #[test]
    fn chunk_overhead_is_an_upper_bound() {
        let data = Bytes::from(vec![0u8; 1 << 20]);
        let frame =
            PeerFrame::SnapshotChunk { snapshot: u64::MAX, seq: u32::MAX, last: true, data };
        let len = postcard::to_allocvec(&frame).unwrap().len();
        assert!(len <= (1 << 20) + CHUNK_FRAME_OVERHEAD, "{len}");
    }

    #[test]
    fn backoff_grows_with_jitter_and_resets() {
        let (min, max) = (Duration::from_millis(50), Duration::from_millis(400));
        let mut backoff = Backoff::new(min, max);
        let ceilings = [50, 100, 200, 400, 400, 400];
        for ceiling in ceilings {
            let ceiling = Duration::from_millis(ceiling);
            let delay = backoff.next_delay();
            assert!(delay <= ceiling && delay >= (ceiling / 2).max(min), "{delay:?} {ceiling:?}");
        }
        backoff.reset();
        assert_eq!(backoff.next_delay(), min);
    }

    #[test]
    fn reassembly_rules() {
        let mut slot = None;
        assert!(matches!(
            Reassembly::accept(&mut slot, 1, 1, false, b"x"),
            Err(Refusal::ChunkOutOfOrder { .. })
        ));
        assert_eq!(Reassembly::accept(&mut slot, 1, 0, false, b"ab").unwrap(), None);
        assert!(matches!(
            Reassembly::accept(&mut slot, 2, 1, false, b"x"),
            Err(Refusal::ChunkOutOfOrder { .. })
        ));
        assert_eq!(Reassembly::accept(&mut slot, 1, 1, true, b"c").unwrap(), Some(b"abc".to_vec()));
        assert!(slot.is_none());
        assert_eq!(Reassembly::accept(&mut slot, 2, 0, true, b"").unwrap(), Some(Vec::new()));
    }

    #[test]
    fn decode_frame_checks_version_first_and_trailing_bytes() {
        // A Hello of version 6 whose body is unreadable is still reported as version 6, and
        // version-1 to -4 Hellos (before clock frames; before `leads`; before `contradicts`;
        // before closed timestamps beside the log) are refused.
        assert_eq!(
            decode_frame(&[0x00, 0x06, 0xFF]),
            Err(FrameError::UnsupportedVersion { got: 6 })
        );
        for old in [0x01, 0x02, 0x03, 0x04] {
            assert_eq!(
                decode_frame(&[0x00, old, 0x00, 0x01, 0x02, 0x00]),
                Err(FrameError::UnsupportedVersion { got: u16::from(old) })
            );
        }
        let hello = PeerFrame::Hello {
            version: PEER_PROTOCOL_VERSION,
            cluster: "kv".into(),
            from: 1,
            to: 2,
            reply_to: String::new(),
        };
        let mut payload = encode_frame(&hello, 1024).unwrap().to_vec();
        assert_eq!(decode_frame(&payload), Ok(hello));
        payload.push(0);
        assert!(matches!(decode_frame(&payload), Err(FrameError::Malformed(_))));
        assert!(matches!(decode_frame(&[0x09]), Err(FrameError::Malformed(_))));
        assert!(matches!(decode_frame(&[]), Err(FrameError::Malformed(_))));
    }
}
