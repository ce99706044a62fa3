//! Framing: the byte-level examples in the crate docs, the length-delimited codec over a byte
//! buffer, and the frame size limit on both the encoding and the decoding side.

mod common;

use std::io;

use boundkv_wire::{
    CONNECTION_ERROR_ID, LENGTH_PREFIX_LEN, MAX_FRAME_LEN, Request, RequestFrame, Response,
    ResponseFrame, Timestamp, WireError, codec, decode_request, decode_response, encode_request,
    encode_response, peek_frame_id,
};
use bytes::{Bytes, BytesMut};
use common::*;
use tokio_util::codec::{Decoder, Encoder};

/// Frames `payloads` onto one stream, as a connection would carry them.
fn frame_all(payloads: impl IntoIterator<Item = Bytes>) -> BytesMut {
    let mut codec = codec();
    let mut stream = BytesMut::new();
    for payload in payloads {
        codec.encode(payload, &mut stream).expect("frames");
    }
    stream
}

/// Cuts every whole frame off the front of `stream`.
fn unframe_all(stream: &mut BytesMut) -> Vec<Bytes> {
    let mut codec = codec();
    let mut payloads = Vec::new();
    while let Some(payload) = codec.decode(stream).expect("a valid stream") {
        payloads.push(payload.freeze());
    }
    payloads
}

#[test]
fn the_request_example_in_the_docs_is_exact() {
    let frame = RequestFrame::new(
        7,
        Request::Get { ts: Timestamp::from_nanos(300), key: Bytes::from_static(b"ab") },
    );
    let payload = encode_request(&frame).unwrap();
    assert_eq!(payload[..], [0x03, 0x07, 0x02, 0xAC, 0x02, 0x02, 0x61, 0x62]);
    let stream = frame_all([payload]);
    assert_eq!(
        stream[..],
        [0x00, 0x00, 0x00, 0x08, 0x03, 0x07, 0x02, 0xAC, 0x02, 0x02, 0x61, 0x62]
    );
    assert_eq!(decode_request(&stream[LENGTH_PREFIX_LEN..]).unwrap(), frame);
}

#[test]
fn the_response_example_in_the_docs_is_exact() {
    let frame = ResponseFrame::new(7, Response::Value(Some(Bytes::from_static(b"hi"))));
    let stream = frame_all([encode_response(&frame).unwrap()]);
    assert_eq!(stream[..], [0x00, 0x00, 0x00, 0x07, 0x03, 0x07, 0x01, 0x01, 0x02, 0x68, 0x69]);
    assert_eq!(decode_response(&stream[LENGTH_PREFIX_LEN..]).unwrap(), frame);
}

#[test]
fn the_codec_carries_several_frames_on_one_stream() {
    let requests: Vec<RequestFrame> = request_examples()
        .into_iter()
        .enumerate()
        .map(|(i, request)| RequestFrame::new(i as u64 + 1, request))
        .collect();
    let mut stream = frame_all(requests.iter().map(|frame| encode_request(frame).unwrap()));
    let received = unframe_all(&mut stream);
    assert!(stream.is_empty());
    let decoded: Vec<RequestFrame> =
        received.iter().map(|payload| decode_request(payload).unwrap()).collect();
    assert_eq!(decoded, requests);

    let responses: Vec<ResponseFrame> = response_examples()
        .into_iter()
        .enumerate()
        .map(|(i, response)| ResponseFrame::new(i as u64 + 1, response))
        .collect();
    let mut stream = frame_all(responses.iter().map(|frame| encode_response(frame).unwrap()));
    let decoded: Vec<ResponseFrame> =
        unframe_all(&mut stream).iter().map(|payload| decode_response(payload).unwrap()).collect();
    assert_eq!(decoded, responses);
}

#[test]
fn the_codec_reassembles_frames_delivered_a_byte_at_a_time() {
    let requests: Vec<RequestFrame> =
        request_examples().into_iter().map(|request| RequestFrame::new(3, request)).collect();
    let stream = frame_all(requests.iter().map(|frame| encode_request(frame).unwrap()));

    let mut codec = codec();
    let mut buffer = BytesMut::new();
    let mut decoded = Vec::new();
    for byte in stream {
        buffer.extend_from_slice(&[byte]);
        if let Some(payload) = codec.decode(&mut buffer).unwrap() {
            decoded.push(decode_request(&payload).unwrap());
        }
    }
    assert_eq!(decoded, requests);
    assert!(buffer.is_empty());
}

#[test]
fn the_codec_rejects_a_length_prefix_above_the_maximum() {
    for len in [MAX_FRAME_LEN as u32 + 1, u32::MAX] {
        let mut stream = BytesMut::from(&len.to_be_bytes()[..]);
        let err = codec().decode(&mut stream).expect_err("refused before the body arrives");
        assert_eq!(err.kind(), io::ErrorKind::InvalidData, "{err}");
    }
    // Exactly the maximum is accepted: the codec waits for the body.
    let mut stream = BytesMut::from(&(MAX_FRAME_LEN as u32).to_be_bytes()[..]);
    assert!(codec().decode(&mut stream).unwrap().is_none());
}

#[test]
fn the_codec_refuses_to_send_a_payload_above_the_maximum() {
    let mut stream = BytesMut::new();
    let err = codec().encode(Bytes::from(vec![0; MAX_FRAME_LEN + 1]), &mut stream).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::InvalidInput, "{err}");
    assert!(stream.is_empty());
}

/// A `Get` whose payload is `key_len + 8` bytes: version, id 1, variant, ts 0, then a
/// four-byte varint length (for lengths from 2^21 to 2^28) and the key.
fn get_with_key_of(key_len: usize) -> RequestFrame {
    RequestFrame::new(
        1,
        Request::Get { ts: Timestamp::ZERO, key: Bytes::from(vec![b'k'; key_len]) },
    )
}

#[test]
fn an_over_large_request_fails_to_encode() {
    let err = encode_request(&get_with_key_of(MAX_FRAME_LEN - 7)).unwrap_err();
    assert_eq!(
        err,
        WireError::FrameTooLarge { len: MAX_FRAME_LEN as u64 + 1, max: MAX_FRAME_LEN as u64 }
    );
    assert_eq!(
        err.to_string(),
        "a frame of 16777217 bytes exceeds the maximum frame length of 16777216 bytes"
    );
    assert!(!err.is_retryable());
}

#[test]
fn a_request_of_exactly_the_maximum_encodes_and_travels() {
    let frame = get_with_key_of(MAX_FRAME_LEN - 8);
    let payload = encode_request(&frame).unwrap();
    assert_eq!(payload.len(), MAX_FRAME_LEN);
    let mut stream = frame_all([payload]);
    let received = unframe_all(&mut stream);
    assert_eq!(received.len(), 1);
    assert_eq!(decode_request(&received[0]).unwrap(), frame);
}

#[test]
fn an_over_large_response_fails_to_encode() {
    // 1 MiB rows of 17 bytes each (1 + 8 key, 1 + 7 value): 17 MiB in all.
    let row = (Bytes::from_static(b"key-0001"), Bytes::from_static(b"value-1"));
    let frame = ResponseFrame::new(1, Response::Rows(vec![row; 1 << 20]));
    match encode_response(&frame) {
        Err(WireError::FrameTooLarge { len, max }) => {
            assert!(len > max, "{len} > {max}");
            assert_eq!(max, MAX_FRAME_LEN as u64);
        }
        other => panic!("expected FrameTooLarge, got {other:?}"),
    }
}

#[test]
fn the_id_of_an_undecodable_frame_can_still_be_read() {
    let frame = RequestFrame { version: 4, id: 41, request: Request::Status };
    let payload = encode_request(&frame).unwrap();
    assert!(decode_request(&payload).is_err());
    assert_eq!(peek_frame_id(&payload), Some(41));
    // A body that is garbage after a readable header.
    assert_eq!(peek_frame_id(&[0x01, 0x2A, 0xFF, 0xFF, 0xFF]), Some(42));
    // No readable id: the server answers under the connection error id.
    assert_eq!(peek_frame_id(&[0x01]).unwrap_or(CONNECTION_ERROR_ID), CONNECTION_ERROR_ID);
}
