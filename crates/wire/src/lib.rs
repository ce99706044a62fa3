//! boundkv's client protocol: the requests a client sends, the responses a server sends back,
//! and how both are framed on a TCP stream.
//!
//! # Frames
//!
//! A connection carries a stream of frames in each direction: [`RequestFrame`]s from client to
//! server, [`ResponseFrame`]s back. Each frame is a 4-byte big-endian length followed by that
//! many bytes of payload ([`codec`], a `tokio_util` `LengthDelimitedCodec`), and the payload is
//! the frame encoded with [postcard](https://docs.rs/postcard): fields in declaration order, no
//! names, integers as LEB128 varints (7 bits per byte, low bits first, the top bit set on every
//! byte but the last), an enum as its variant index (a varint) followed by its fields, and a byte
//! string as its length (a varint) followed by the bytes.
//!
//! For example, asking for key `ab` at timestamp 300 ns under request id 7,
//! `RequestFrame::new(7, Request::Get { ts: Timestamp::from_nanos(300), key: "ab".into() })`, is
//! these 12 bytes:
//!
//! ```text
//! 00 00 00 08   length prefix: 8 bytes of payload follow (u32, big-endian)
//! 03            version 3                      (varint)
//! 07            id 7                           (varint)
//! 02            Request::Get, variant index 2  (varint)
//! AC 02         ts 300: low 7 bits 0x2C with the continuation bit (0xAC), then 300 >> 7 = 0x02
//! 02 61 62      key: length 2, then "ab"
//! ```
//!
//! and the answer, `ResponseFrame::new(7, Response::Value(Some("hi".into())))`, is
//!
//! ```text
//! 00 00 00 07   length prefix: 7 bytes of payload
//! 03 07         version 3, id 7 (the request's)
//! 01            Response::Value, variant index 1
//! 01            Some
//! 02 68 69      value: length 2, then "hi"
//! ```
//!
//! In code (`tests/framing.rs` checks the same bytes):
//!
//! ```
//! use boundkv_wire::{Request, RequestFrame, Timestamp, codec, decode_request, encode_request};
//! use bytes::BytesMut;
//! use tokio_util::codec::{Decoder, Encoder};
//!
//! let get = Request::Get { ts: Timestamp::from_nanos(300), key: "ab".into() };
//! let frame = RequestFrame::new(7, get);
//! let payload = encode_request(&frame)?;
//! assert_eq!(payload[..], [0x03, 0x07, 0x02, 0xAC, 0x02, 0x02, 0x61, 0x62]);
//!
//! let mut stream = BytesMut::new();
//! codec().encode(payload, &mut stream)?;
//! assert_eq!(stream[..4], [0x00, 0x00, 0x00, 0x08]);
//!
//! let received = codec().decode(&mut stream)?.expect("a whole frame");
//! assert_eq!(decode_request(&received)?, frame);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! A payload is at most [`MAX_FRAME_LEN`] (16 MiB). The codec refuses a longer length prefix
//! before buffering it, and [`encode_request`] / [`encode_response`] refuse to produce a longer
//! payload ([`WireError::FrameTooLarge`]) rather than send one the peer will reject.
//!
//! # Versions
//!
//! Every frame of every protocol version, past and future, begins with the same two varints:
//! the sender's protocol version, then the request id. Everything after them belongs to the
//! version. There is no negotiation: a peer decodes only frames of its own
//! [`PROTOCOL_VERSION`], and [`decode_request`] / [`decode_response`] read the version *before*
//! the body, so a frame of another version is reported as [`DecodeError::UnsupportedVersion`]
//! even when its body is unreadable. A server answers such a request with
//! [`WireError::UnsupportedVersion`] (see [`DecodeError::into_server_error`]) under the id it can
//! still read ([`peek_frame_id`]), in a frame of its own version; the old client, reading that
//! frame, in turn sees a frame of another version and reports the mismatch too.
//!
//! Because postcard writes no names and no lengths for structs, any change to the encoding of a
//! type in this crate (a new variant or field, a reordering, a changed type) changes
//! `PROTOCOL_VERSION`.
//!
//! # Request ids
//!
//! The client picks each request's id, unique among its requests in flight on the connection,
//! and the server answers in a frame carrying the same id. A connection may have many requests
//! in flight, and their responses may come back in any order: a `Get` is answered while a
//! `Commit` sent before it is still in commit wait. So a client keeps a map from id to waiting
//! caller, and numbers its requests from 1 with a counter.
//!
//! Id 0 ([`CONNECTION_ERROR_ID`]) is reserved for errors about the connection rather than one
//! request, such as a length prefix above `MAX_FRAME_LEN` or a frame whose id cannot be read.
//! The server sends such an error and closes the connection, and the client fails every request
//! still in flight on it.
//!
//! # Errors
//!
//! Three things can go wrong, at three levels:
//!
//! - **The connection** breaks (an `io::Error`). Requests in flight have no answer. Reads can be
//!   resent; a `Commit` in flight may or may not have applied and must be treated like
//!   [`WireError::OutcomeUnknown`]: resent with the same transaction id.
//! - **A frame** cannot be decoded ([`DecodeError`]): another version, or malformed bytes.
//! - **A request** fails on the server, which answers [`Response::Error`] with a typed
//!   [`WireError`]. [`WireError::is_retryable`] and [`WireError::commit_may_have_applied`] tell a
//!   client what it may do next; the [`error`] module has the table.
//!
//! Decoding is total: on any input it returns a frame or a `DecodeError`, never panics, and
//! allocates at most a constant multiple of the input length (see [`frame`]).
//!
//! # Dependencies
//!
//! This crate is the whole contract between clients and servers, and the dependency runs one
//! way: the client crate depends only on `boundkv-wire`, never on the server or on the crates the
//! server is built from (clock, storage, consensus, transactions). The server depends on this
//! crate and converts at its edge. That is why the protocol has its own [`Timestamp`] rather
//! than the clock crate's, and its own error type rather than the server's: a client must build
//! without the server's dependencies, and the server's internals can change without changing the
//! protocol.

pub mod error;
pub mod frame;
pub mod message;
pub mod timestamp;

pub use error::{DecodeError, WireError};
pub use frame::{
    LENGTH_PREFIX_LEN, codec, decode_request, decode_response, encode_request, encode_response,
    peek_frame_id,
};
pub use message::{
    ClockInfo, CommitInfo, CommitRequest, Member, NodeStatus, PeerClockInfo, ReadAt, Request,
    RequestFrame, Response, ResponseFrame, Role,
};
pub use timestamp::Timestamp;

/// The protocol version this crate speaks: the first field of every frame. Version 2 added the
/// peer clock measurements to `ClockInfo`; version 3 the leap-second policy to `Member`,
/// `AddMember` and `ClockInfo`.
pub const PROTOCOL_VERSION: u16 = 3;

/// The largest frame payload, in bytes, either side sends or accepts (16 MiB). The 4-byte length
/// prefix is not counted.
pub const MAX_FRAME_LEN: usize = 16 << 20;

/// The id of a response that answers no particular request: an error about the connection as a
/// whole, after which the server closes it. Clients never use it for requests.
pub const CONNECTION_ERROR_ID: u64 = 0;
