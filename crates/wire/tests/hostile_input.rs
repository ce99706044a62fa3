//! Decoding is total: whatever bytes arrive, `decode_request` and `decode_response` return a
//! frame or a `DecodeError`, never panic, check the version first, and call truncated, padded or
//! lying frames malformed.

mod common;

use boundkv_wire::{
    DecodeError, PROTOCOL_VERSION, Request, RequestFrame, Response, ResponseFrame, decode_request,
    decode_response, encode_request, encode_response,
};
use common::*;
use proptest::prelude::*;

/// Decodes `bytes` both ways; the point is that this returns at all.
fn decode_both(bytes: &[u8]) {
    if let Ok(frame) = decode_request(bytes) {
        assert_eq!(frame.version, PROTOCOL_VERSION);
    }
    if let Ok(frame) = decode_response(bytes) {
        assert_eq!(frame.version, PROTOCOL_VERSION);
    }
}

fn assert_malformed<T: std::fmt::Debug>(result: Result<T, DecodeError>, what: &str) {
    match result {
        Err(DecodeError::Malformed(_)) => {}
        other => panic!("{what}: expected Malformed, got {other:?}"),
    }
}

fn varint(v: u64) -> Vec<u8> {
    postcard::to_stdvec(&v).unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(20_000))]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        decode_both(&bytes);
    }

    #[test]
    fn bytes_after_a_valid_version_never_panic(
        rest in prop::collection::vec(any::<u8>(), 0..256),
    ) {
        let mut bytes = varint(u64::from(PROTOCOL_VERSION));
        bytes.extend(rest);
        decode_both(&bytes);
    }

    /// Version, id and a valid variant index, then garbage: reaches every variant's fields.
    #[test]
    fn bytes_after_a_valid_header_never_panic(
        id in any::<u64>(),
        variant in 0..8u8,
        rest in prop::collection::vec(any::<u8>(), 0..256),
    ) {
        let mut bytes = varint(u64::from(PROTOCOL_VERSION));
        bytes.extend(varint(id));
        bytes.push(variant);
        bytes.extend(rest);
        decode_both(&bytes);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(3000))]

    /// Valid frames with bytes overwritten, inserted or removed: garbage that is close to right.
    #[test]
    fn mutated_valid_frames_never_panic(
        request in arb_request_frame(),
        response in arb_response_frame(),
        edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>(), 0..3u8), 1..6),
    ) {
        for mut bytes in [
            encode_request(&request).unwrap().to_vec(),
            encode_response(&response).unwrap().to_vec(),
        ] {
            for (at, byte, kind) in &edits {
                let i = at.index(bytes.len() + 1);
                match kind {
                    0 if i < bytes.len() => bytes[i] = *byte,
                    1 => bytes.insert(i, *byte),
                    _ if i < bytes.len() => { bytes.remove(i); }
                    _ => {}
                }
            }
            decode_both(&bytes);
        }
    }

    /// Any other version is refused before the body is read, whatever the body is.
    #[test]
    fn another_version_is_unsupported_whatever_follows(
        version in any::<u16>().prop_filter("another version", |v| *v != PROTOCOL_VERSION),
        rest in prop::collection::vec(any::<u8>(), 0..64),
    ) {
        let mut bytes = varint(u64::from(version));
        bytes.extend(rest);
        prop_assert_eq!(
            decode_request(&bytes).unwrap_err(),
            DecodeError::UnsupportedVersion { got: version }
        );
        prop_assert_eq!(
            decode_response(&bytes).unwrap_err(),
            DecodeError::UnsupportedVersion { got: version }
        );
    }

    /// Every proper prefix of a valid frame is malformed, including the empty one.
    #[test]
    fn truncated_frames_are_malformed(
        request in arb_request_frame(),
        response in arb_response_frame(),
    ) {
        let bytes = encode_request(&request).unwrap();
        for len in 0..bytes.len() {
            assert_malformed(decode_request(&bytes[..len]), &format!("request prefix {len}"));
        }
        let bytes = encode_response(&response).unwrap();
        for len in 0..bytes.len() {
            assert_malformed(decode_response(&bytes[..len]), &format!("response prefix {len}"));
        }
    }

    #[test]
    fn trailing_bytes_are_malformed(
        request in arb_request_frame(),
        extra in prop::collection::vec(any::<u8>(), 1..8),
    ) {
        let mut bytes = encode_request(&request).unwrap().to_vec();
        bytes.extend(extra);
        assert_malformed(decode_request(&bytes), "trailing bytes");
    }
}

#[test]
fn a_whole_frame_of_another_version_is_unsupported() {
    for version in [0, 1, 2, 4, 127, 128, u16::MAX] {
        let request = RequestFrame { version, id: 9, request: Request::Status };
        let payload = encode_request(&request).unwrap();
        assert_eq!(decode_request(&payload), Err(DecodeError::UnsupportedVersion { got: version }));
        let response = ResponseFrame { version, id: 9, response: Response::Value(None) };
        let payload = encode_response(&response).unwrap();
        assert_eq!(
            decode_response(&payload),
            Err(DecodeError::UnsupportedVersion { got: version })
        );
    }
}

#[test]
fn a_version_that_is_no_u16_is_malformed() {
    // Empty, a varint cut short, and a varint too large for a u16 (2^16 and 2^63).
    for bytes in [&[][..], &[0x80], &[0x80, 0x80, 0x04], &[0xFF; 10]] {
        assert_malformed(decode_request(bytes), &format!("{bytes:02X?}"));
        assert_malformed(decode_response(bytes), &format!("{bytes:02X?}"));
    }
}

#[test]
fn lying_lengths_are_malformed_without_allocating_them() {
    // Version 1, id 7, then the variant index.
    let header = |variant: u8| vec![0x03, 0x07, variant];
    let huge = [0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x7F]; // 2^63 - 1
    let cases: Vec<(&str, Vec<u8>, bool)> = vec![
        // Get { ts: 0, key of length 2^63 - 1 }.
        ("get key", [header(2), vec![0x00], huge.to_vec(), b"ab".to_vec()].concat(), true),
        // Commit with 2^63 - 1 read keys.
        (
            "commit read_keys",
            [header(4), vec![0; 16], vec![0x00], huge.to_vec(), vec![0x00; 4]].concat(),
            true,
        ),
        // AddMember with an address of length 2^63 - 1.
        ("member address", [header(6), vec![0x01], huge.to_vec(), b"x".to_vec()].concat(), true),
        // Response::Rows with 2^63 - 1 rows.
        ("rows", [header(2), huge.to_vec(), vec![0x00; 8]].concat(), false),
        // Response::Value(Some) of length 2^63 - 1.
        ("value", [header(1), vec![0x01], huge.to_vec(), b"hi".to_vec()].concat(), false),
    ];
    for (what, bytes, is_request) in cases {
        if is_request {
            assert_malformed(decode_request(&bytes), what);
        } else {
            assert_malformed(decode_response(&bytes), what);
        }
    }
}

#[test]
fn invalid_tags_and_text_are_malformed() {
    // Request variant 8 does not exist; nor does Response variant 7.
    assert_malformed(decode_request(&[0x03, 0x07, 0x08]), "request variant 8");
    assert_malformed(decode_response(&[0x03, 0x07, 0x07]), "response variant 7");
    // AddMember { id: 1, address: [0xFF] }: not UTF-8.
    assert_malformed(decode_request(&[0x03, 0x07, 0x06, 0x01, 0x01, 0xFF]), "invalid UTF-8");
    // Response::Value with an Option tag of 2.
    assert_malformed(decode_response(&[0x03, 0x07, 0x01, 0x02]), "option tag 2");
    // Scan { ts: 0, start: Bound variant 3 }.
    assert_malformed(decode_request(&[0x03, 0x07, 0x03, 0x00, 0x03]), "bound variant 3");
    // BeginReadOnly { MaxStaleness(u64::MAX s + 10^9 ns) }: a Duration that overflows.
    let mut bytes = vec![0x03, 0x07, 0x01, 0x02];
    bytes.extend(varint(u64::MAX));
    bytes.extend(postcard::to_stdvec(&1_000_000_000u32).unwrap());
    assert_malformed(decode_request(&bytes), "overflowing duration");
    // Members([Member { id: 1, address: "", voter: 2 }]): a bool that is neither 0 nor 1.
    assert_malformed(decode_response(&[0x03, 0x07, 0x05, 0x01, 0x01, 0x00, 0x02]), "bool 2");
}
