//! Framing: turning frames into bytes on a stream and back.
//!
//! Two layers, kept apart so each can be tested alone:
//!
//! 1. [`codec`] cuts the byte stream into payloads: a 4-byte big-endian length, then that many
//!    bytes. It refuses a length above [`MAX_FRAME_LEN`] before buffering anything, so a peer
//!    cannot make us allocate more than that per frame.
//! 2. [`encode_request`] / [`decode_request`] (and the response pair) turn one payload into one
//!    frame and back with postcard.
//!
//! Decoding reads the leading version varint first, with postcard's own varint reader, and
//! rejects a frame of another version with [`DecodeError::UnsupportedVersion`] before looking at
//! the rest, which it may not be able to parse. Only then is the whole payload decoded, and it
//! must be consumed exactly: trailing bytes are [`DecodeError::Malformed`].
//!
//! # Allocation on hostile input
//!
//! Decoding never allocates more than a constant multiple of the payload's length, whatever
//! lengths the payload claims. postcard checks a byte string's or string's claimed length against
//! the bytes left before copying it, and serde preallocates at most 1 MiB for a sequence whatever
//! length it claims; beyond that a vector grows only as elements are actually decoded, and every
//! element consumes at least one input byte.
//!
//! The constant is not small, though. The worst element is a read range `(Unbounded, Unbounded)`:
//! 2 bytes on the wire, 80 in memory, so 40 bytes per input byte; and while a vector grows its
//! capacity may reach twice what it holds, with the old buffer still held during a copying
//! reallocation. `tests/allocation.rs` measures 48x the input for lists of empty keys or rows
//! and 96x for read ranges, so a hostile frame of [`MAX_FRAME_LEN`] can cost a server up to about
//! 1.5 GiB for a moment. A server that must bound memory per connection more tightly should read
//! requests with a smaller codec limit.

use bytes::Bytes;
use postcard::ser_flavors::Flavor;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio_util::codec::LengthDelimitedCodec;

use crate::{DecodeError, MAX_FRAME_LEN, PROTOCOL_VERSION, RequestFrame, ResponseFrame, WireError};

/// The length of the length prefix in front of every frame, in bytes.
pub const LENGTH_PREFIX_LEN: usize = 4;

/// The codec that cuts a byte stream into frame payloads: a [`LENGTH_PREFIX_LEN`]-byte big-endian
/// length, then the payload, at most [`MAX_FRAME_LEN`] bytes.
///
/// Use it with `tokio_util::codec::Framed` on a TCP stream, then [`decode_request`] or
/// [`decode_response`] each payload it yields. Decoding a length above `MAX_FRAME_LEN` fails with
/// an `io::Error` of kind `InvalidData`; the stream cannot be resynchronized after that, so the
/// connection must be closed.
pub fn codec() -> LengthDelimitedCodec {
    LengthDelimitedCodec::builder()
        .length_field_offset(0)
        .length_field_length(LENGTH_PREFIX_LEN)
        .length_adjustment(0)
        .num_skip(LENGTH_PREFIX_LEN)
        .big_endian()
        .max_frame_length(MAX_FRAME_LEN)
        .new_codec()
}

/// Encodes a request frame into its payload (without the length prefix, which the codec adds).
///
/// Fails with [`WireError::FrameTooLarge`] if the payload would exceed [`MAX_FRAME_LEN`], which the
/// peer would refuse; memory use stays bounded by `MAX_FRAME_LEN` even then.
pub fn encode_request(frame: &RequestFrame) -> Result<Bytes, WireError> {
    encode_frame(frame)
}

/// Encodes a response frame into its payload (without the length prefix, which the codec adds).
///
/// Fails with [`WireError::FrameTooLarge`] if the payload would exceed [`MAX_FRAME_LEN`].
pub fn encode_response(frame: &ResponseFrame) -> Result<Bytes, WireError> {
    encode_frame(frame)
}

/// Decodes one request payload, as the codec yields it.
///
/// The version is checked first: a frame of another version is
/// [`DecodeError::UnsupportedVersion`] whatever follows it. Never panics, and allocates at most a
/// constant multiple of `payload.len()` (see the module docs).
pub fn decode_request(payload: &[u8]) -> Result<RequestFrame, DecodeError> {
    decode_frame(payload)
}

/// Decodes one response payload, as the codec yields it.
///
/// The version is checked first, as for [`decode_request`].
pub fn decode_response(payload: &[u8]) -> Result<ResponseFrame, DecodeError> {
    decode_frame(payload)
}

/// The id of a frame payload of any version, if its header is readable, even when the body is
/// not: every version begins with the version varint and the id varint.
///
/// A server that cannot decode a request uses this to answer under the request's id, and falls
/// back to [`CONNECTION_ERROR_ID`](crate::CONNECTION_ERROR_ID) when it returns `None`.
pub fn peek_frame_id(payload: &[u8]) -> Option<u64> {
    let (_version, rest) = postcard::take_from_bytes::<u16>(payload).ok()?;
    let (id, _rest) = postcard::take_from_bytes::<u64>(rest).ok()?;
    Some(id)
}

fn encode_frame<T: Serialize>(frame: &T) -> Result<Bytes, WireError> {
    let payload = postcard::serialize_with_flavor(frame, CappedVec::new(MAX_FRAME_LEN))
        .map_err(|e| WireError::Malformed(format!("cannot encode frame: {e}")))?;
    if payload.len > MAX_FRAME_LEN {
        return Err(WireError::FrameTooLarge {
            len: payload.len as u64,
            max: MAX_FRAME_LEN as u64,
        });
    }
    Ok(Bytes::from(payload.buf))
}

fn decode_frame<T: DeserializeOwned>(payload: &[u8]) -> Result<T, DecodeError> {
    let (version, _) = postcard::take_from_bytes::<u16>(payload)
        .map_err(|e| DecodeError::Malformed(format!("cannot read the protocol version: {e}")))?;
    if version != PROTOCOL_VERSION {
        return Err(DecodeError::UnsupportedVersion { got: version });
    }
    let (frame, rest) = postcard::take_from_bytes::<T>(payload)
        .map_err(|e| DecodeError::Malformed(e.to_string()))?;
    if !rest.is_empty() {
        return Err(DecodeError::Malformed(format!(
            "{} trailing bytes after the frame",
            rest.len()
        )));
    }
    Ok(frame)
}

/// A postcard output that stores at most `cap` bytes but counts them all, so an over-large frame
/// is reported with its true length without being held in memory.
struct CappedVec {
    buf: Vec<u8>,
    /// Bytes produced so far, stored or not.
    len: usize,
    cap: usize,
}

impl CappedVec {
    fn new(cap: usize) -> Self {
        CappedVec { buf: Vec::new(), len: 0, cap }
    }
}

impl Flavor for CappedVec {
    type Output = CappedVec;

    fn try_extend(&mut self, data: &[u8]) -> postcard::Result<()> {
        self.len = self.len.saturating_add(data.len());
        if self.len <= self.cap {
            self.buf.extend_from_slice(data);
        } else if !self.buf.is_empty() {
            // Over the cap: the frame will be refused, so stop holding it.
            self.buf = Vec::new();
        }
        Ok(())
    }

    fn try_push(&mut self, byte: u8) -> postcard::Result<()> {
        self.try_extend(&[byte])
    }

    fn finalize(self) -> postcard::Result<CappedVec> {
        Ok(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capped_vec_counts_past_the_cap_but_stores_nothing() {
        let mut out = CappedVec::new(4);
        out.try_extend(b"abc").unwrap();
        out.try_push(b'd').unwrap();
        assert_eq!((out.buf.as_slice(), out.len), (&b"abcd"[..], 4));
        out.try_push(b'e').unwrap();
        out.try_extend(b"fg").unwrap();
        assert_eq!((out.buf.len(), out.len), (0, 7));
    }

    #[test]
    fn peek_frame_id_reads_the_header_of_any_version() {
        // Version 300 (AC 02), id 7, then garbage.
        assert_eq!(peek_frame_id(&[0xAC, 0x02, 0x07, 0xFF, 0xFF]), Some(7));
        assert_eq!(peek_frame_id(&[0x01]), None);
        assert_eq!(peek_frame_id(&[]), None);
    }
}
