//! Every message survives encode then decode unchanged: one hand-written example of every
//! variant (checked to cover them all), then arbitrary messages from proptest.

mod common;

use std::collections::BTreeSet;

use boundkv_wire::{
    RequestFrame, Response, ResponseFrame, decode_request, decode_response, encode_request,
    encode_response,
};
use common::*;
use proptest::prelude::*;

fn roundtrip_request(frame: &RequestFrame) {
    let payload = encode_request(frame).expect("encodes");
    assert_eq!(&decode_request(&payload).expect("decodes"), frame);
}

fn roundtrip_response(frame: &ResponseFrame) {
    let payload = encode_response(frame).expect("encodes");
    assert_eq!(&decode_response(&payload).expect("decodes"), frame);
}

#[test]
fn examples_cover_every_variant() {
    let requests: BTreeSet<_> = request_examples().iter().map(request_variant).collect();
    assert_eq!(requests, (0..REQUEST_VARIANTS).collect());
    let responses: BTreeSet<_> = response_examples().iter().map(response_variant).collect();
    assert_eq!(responses, (0..RESPONSE_VARIANTS).collect());
    let errors: BTreeSet<_> = wire_error_examples().iter().map(wire_error_variant).collect();
    assert_eq!(errors, (0..WIRE_ERROR_VARIANTS).collect());
}

#[test]
fn every_request_variant_roundtrips() {
    for (id, request) in request_examples().into_iter().enumerate() {
        roundtrip_request(&RequestFrame::new(id as u64 + 1, request));
    }
}

#[test]
fn every_response_variant_roundtrips() {
    for (id, response) in response_examples().into_iter().enumerate() {
        roundtrip_response(&ResponseFrame::new(id as u64 + 1, response));
    }
}

#[test]
fn every_wire_error_roundtrips_inside_a_response() {
    for error in wire_error_examples() {
        roundtrip_response(&ResponseFrame::new(u64::MAX, Response::Error(error)));
    }
}

#[test]
fn frames_carry_the_current_version_and_any_id() {
    let frame = RequestFrame::new(u64::MAX, request_examples().remove(0));
    assert_eq!(frame.version, boundkv_wire::PROTOCOL_VERSION);
    roundtrip_request(&frame);
    let frame = ResponseFrame::new(0, response_examples().remove(0));
    assert_eq!(frame.version, boundkv_wire::PROTOCOL_VERSION);
    roundtrip_response(&frame);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn arbitrary_requests_roundtrip(frame in arb_request_frame()) {
        let payload = encode_request(&frame).unwrap();
        prop_assert_eq!(decode_request(&payload).unwrap(), frame);
    }

    #[test]
    fn arbitrary_responses_roundtrip(frame in arb_response_frame()) {
        let payload = encode_response(&frame).unwrap();
        prop_assert_eq!(decode_response(&payload).unwrap(), frame);
    }
}
