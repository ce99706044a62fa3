//! Shared test fixtures: one hand-written example of every variant, and proptest strategies for
//! every message type.
//!
//! The `*_variant` functions match exhaustively, with no wildcard arm, so adding a variant to the
//! protocol fails to compile here until it has an example and a strategy.

// Each test binary uses a different part of this module.
#![allow(dead_code)]

use std::ops::Bound;
use std::time::Duration;

use boundkv_wire::{
    ClockInfo, CommitInfo, CommitRequest, Member, NodeStatus, PeerClockInfo, ReadAt, Request,
    RequestFrame, Response, ResponseFrame, Role, Timestamp, WireError,
};
use bytes::Bytes;
use proptest::prelude::*;

/// The number of `Request` variants; `request_variant` returns `0..REQUEST_VARIANTS`.
pub(crate) const REQUEST_VARIANTS: usize = 8;
/// The number of `Response` variants.
pub(crate) const RESPONSE_VARIANTS: usize = 7;
/// The number of `WireError` variants.
pub(crate) const WIRE_ERROR_VARIANTS: usize = 17;

/// The variant index of a request, exhaustively.
pub(crate) fn request_variant(request: &Request) -> usize {
    match request {
        Request::BeginReadWrite => 0,
        Request::BeginReadOnly { .. } => 1,
        Request::Get { .. } => 2,
        Request::Scan { .. } => 3,
        Request::Commit(_) => 4,
        Request::Status => 5,
        Request::AddMember { .. } => 6,
        Request::RemoveMember { .. } => 7,
    }
}

/// The variant index of a response, exhaustively.
pub(crate) fn response_variant(response: &Response) -> usize {
    match response {
        Response::Timestamp(_) => 0,
        Response::Value(_) => 1,
        Response::Rows(_) => 2,
        Response::Committed(_) => 3,
        Response::Status(_) => 4,
        Response::Members(_) => 5,
        Response::Error(_) => 6,
    }
}

/// The variant index of a wire error, exhaustively.
pub(crate) fn wire_error_variant(error: &WireError) -> usize {
    match error {
        WireError::NotLeader { .. } => 0,
        WireError::Conflict { .. } => 1,
        WireError::Expired { .. } => 2,
        WireError::ClockUnavailable(_) => 3,
        WireError::ClockBehind { .. } => 4,
        WireError::BelowGcHorizon { .. } => 5,
        WireError::TimestampInFuture { .. } => 6,
        WireError::KeyTooLarge { .. } => 7,
        WireError::ValueTooLarge { .. } => 8,
        WireError::TransactionTooLarge { .. } => 9,
        WireError::FollowerBehind { .. } => 10,
        WireError::OutcomeUnknown(_) => 11,
        WireError::Unavailable(_) => 12,
        WireError::UnsupportedVersion { .. } => 13,
        WireError::Malformed(_) => 14,
        WireError::FrameTooLarge { .. } => 15,
        WireError::Fatal(_) => 16,
    }
}

pub(crate) fn ts(nanos: u64) -> Timestamp {
    Timestamp::from_nanos(nanos)
}

pub(crate) fn member(id: u64) -> Member {
    Member {
        id,
        peer_address: format!("10.0.0.{id}:7100"),
        client_address: format!("10.0.0.{id}:7000"),
        voter: id != 4,
        leap: if id == 3 { "smear".into() } else { "step".into() },
    }
}

/// One example of every request variant, with edge values (empty keys, `Timestamp::MAX`, every
/// `Bound` and `ReadAt`).
pub(crate) fn request_examples() -> Vec<Request> {
    vec![
        Request::BeginReadWrite,
        Request::BeginReadOnly { at: ReadAt::Latest },
        Request::BeginReadOnly { at: ReadAt::Exact(Timestamp::MAX) },
        Request::BeginReadOnly { at: ReadAt::MaxStaleness(Duration::new(u64::MAX, 999_999_999)) },
        Request::Get { ts: ts(1_700_000_000_000_000_000), key: Bytes::from_static(b"user/1") },
        Request::Get { ts: Timestamp::ZERO, key: Bytes::new() },
        Request::Scan {
            ts: ts(5),
            start: Bound::Included(Bytes::from_static(b"a")),
            end: Bound::Excluded(Bytes::from_static(b"b\xff")),
            limit: Some(100),
        },
        Request::Scan { ts: ts(5), start: Bound::Unbounded, end: Bound::Unbounded, limit: None },
        Request::Commit(CommitRequest {
            txn_id: [0xAB; 16],
            read_ts: Some(ts(10)),
            read_keys: vec![Bytes::from_static(b"x"), Bytes::new()],
            read_ranges: vec![
                (Bound::Included(Bytes::from_static(b"a")), Bound::Unbounded),
                (Bound::Unbounded, Bound::Excluded(Bytes::from_static(b"z"))),
            ],
            writes: vec![
                (Bytes::from_static(b"x"), Some(Bytes::from_static(b"2"))),
                (Bytes::from_static(b"y"), None),
            ],
        }),
        Request::Commit(CommitRequest {
            txn_id: [0; 16],
            read_ts: None,
            read_keys: vec![],
            read_ranges: vec![],
            writes: vec![],
        }),
        Request::Status,
        Request::AddMember {
            id: 4,
            peer_address: "[::1]:7104".into(),
            client_address: "[::1]:7004".into(),
            leap: "smear".into(),
        },
        Request::RemoveMember { id: u64::MAX },
    ]
}

/// One example of every wire error variant.
pub(crate) fn wire_error_examples() -> Vec<WireError> {
    vec![
        WireError::NotLeader { leader: Some(member(2)) },
        WireError::NotLeader { leader: None },
        WireError::Conflict {
            key: Bytes::from_static(b"k\x00"),
            read_ts: ts(1),
            conflicting_commit_ts: ts(2),
        },
        WireError::Expired { read_ts: ts(3) },
        WireError::ClockUnavailable("bound 80ms exceeds 50ms".into()),
        WireError::ClockBehind { ts: ts(9), latest: ts(8) },
        WireError::BelowGcHorizon { ts: ts(1), horizon: ts(100) },
        WireError::TimestampInFuture { ts: Timestamp::MAX, latest: ts(100) },
        WireError::KeyTooLarge { len: 5000, max: 4096 },
        WireError::ValueTooLarge { len: u64::MAX, max: 1 << 20 },
        WireError::TransactionTooLarge { what: "the number of writes".into(), max: 10_000 },
        WireError::FollowerBehind { requested: ts(10), safe_time: ts(5), leader: Some(member(1)) },
        WireError::OutcomeUnknown("leader changed during replication".into()),
        WireError::Unavailable("no leader elected yet".into()),
        WireError::UnsupportedVersion { server: 1, client: 2 },
        WireError::Malformed("empty key".into()),
        WireError::FrameTooLarge { len: 1 << 30, max: 16 << 20 },
        WireError::Fatal("storage failure: disk full".into()),
    ]
}

pub(crate) fn node_status_example() -> NodeStatus {
    NodeStatus {
        id: 1,
        role: Role::Leader,
        term: 7,
        leader: Some(member(1)),
        commit_index: 1234,
        applied_index: 1230,
        members: vec![member(1), member(2), member(3), member(4)],
        clock: ClockInfo {
            source: "clockbound:/var/run/clockbound/shm0".into(),
            status: "synchronized".into(),
            earliest: ts(1_700_000_000_000_000_000),
            latest: ts(1_700_000_000_000_500_000),
            bound: Duration::from_micros(250),
            problem: None,
            peers: vec![
                PeerClockInfo {
                    id: 2,
                    offset_nanos: -12_345,
                    uncertainty: Duration::from_micros(300),
                    round_trip: Duration::from_micros(180),
                    consistent: true,
                    age: Duration::from_millis(120),
                },
                PeerClockInfo {
                    id: 3,
                    offset_nanos: 250_000_000,
                    uncertainty: Duration::from_micros(310),
                    round_trip: Duration::from_micros(200),
                    consistent: false,
                    age: Duration::from_millis(80),
                },
            ],
            leap: "step; kernel: insert scheduled".into(),
        },
        safe_time: ts(1_699_999_999_999_000_000),
        closed_ts: ts(1_699_999_999_998_000_000),
        lease_valid: true,
    }
}

/// One example of every response variant, and every wire error inside `Response::Error`.
pub(crate) fn response_examples() -> Vec<Response> {
    let mut examples = vec![
        Response::Timestamp(ts(42)),
        Response::Timestamp(Timestamp::MAX),
        Response::Value(Some(Bytes::from_static(b"hi"))),
        Response::Value(Some(Bytes::new())),
        Response::Value(None),
        Response::Rows(vec![]),
        Response::Rows(vec![
            (Bytes::from_static(b"a"), Bytes::from_static(b"1")),
            (Bytes::from_static(b"b"), Bytes::new()),
        ]),
        Response::Committed(CommitInfo {
            ts: ts(1_700_000_000_000_000_000),
            commit_wait: Duration::from_micros(500),
            durable: Duration::from_micros(900),
            wait_beyond_durable: Duration::ZERO,
            latency: Duration::from_millis(1),
        }),
        Response::Status(Box::new(node_status_example())),
        Response::Status(Box::new(NodeStatus {
            role: Role::Learner,
            leader: None,
            clock: ClockInfo {
                problem: Some("daemon not running".into()),
                ..node_status_example().clock
            },
            ..node_status_example()
        })),
        Response::Members(vec![member(1), member(4)]),
        Response::Members(vec![]),
    ];
    examples.extend(wire_error_examples().into_iter().map(Response::Error));
    examples
}

// Strategies.

pub(crate) fn arb_bytes() -> impl Strategy<Value = Bytes> {
    prop::collection::vec(any::<u8>(), 0..12).prop_map(Bytes::from)
}

pub(crate) fn arb_ts() -> impl Strategy<Value = Timestamp> {
    prop_oneof![Just(Timestamp::ZERO), Just(Timestamp::MAX), any::<u64>().prop_map(ts)]
}

pub(crate) fn arb_duration() -> impl Strategy<Value = Duration> {
    (any::<u64>(), 0..1_000_000_000u32).prop_map(|(secs, nanos)| Duration::new(secs, nanos))
}

pub(crate) fn arb_bound() -> impl Strategy<Value = Bound<Bytes>> {
    prop_oneof![
        Just(Bound::Unbounded),
        arb_bytes().prop_map(Bound::Included),
        arb_bytes().prop_map(Bound::Excluded),
    ]
}

pub(crate) fn arb_string() -> impl Strategy<Value = String> {
    // Any Unicode, including multi-byte characters.
    ".{0,12}"
}

pub(crate) fn arb_member() -> impl Strategy<Value = Member> {
    (any::<u64>(), arb_string(), arb_string(), any::<bool>(), arb_string()).prop_map(
        |(id, peer_address, client_address, voter, leap)| Member {
            id,
            peer_address,
            client_address,
            voter,
            leap,
        },
    )
}

pub(crate) fn arb_read_at() -> impl Strategy<Value = ReadAt> {
    prop_oneof![
        Just(ReadAt::Latest),
        arb_ts().prop_map(ReadAt::Exact),
        arb_duration().prop_map(ReadAt::MaxStaleness),
    ]
}

pub(crate) fn arb_commit_request() -> impl Strategy<Value = CommitRequest> {
    (
        any::<[u8; 16]>(),
        prop::option::of(arb_ts()),
        prop::collection::vec(arb_bytes(), 0..4),
        prop::collection::vec((arb_bound(), arb_bound()), 0..4),
        prop::collection::vec((arb_bytes(), prop::option::of(arb_bytes())), 0..4),
    )
        .prop_map(|(txn_id, read_ts, read_keys, read_ranges, writes)| CommitRequest {
            txn_id,
            read_ts,
            read_keys,
            read_ranges,
            writes,
        })
}

pub(crate) fn arb_request() -> impl Strategy<Value = Request> {
    prop_oneof![
        Just(Request::BeginReadWrite),
        arb_read_at().prop_map(|at| Request::BeginReadOnly { at }),
        (arb_ts(), arb_bytes()).prop_map(|(ts, key)| Request::Get { ts, key }),
        (arb_ts(), arb_bound(), arb_bound(), prop::option::of(any::<u32>()))
            .prop_map(|(ts, start, end, limit)| Request::Scan { ts, start, end, limit }),
        arb_commit_request().prop_map(Request::Commit),
        Just(Request::Status),
        (any::<u64>(), arb_string(), arb_string(), arb_string()).prop_map(
            |(id, peer_address, client_address, leap)| {
                Request::AddMember { id, peer_address, client_address, leap }
            }
        ),
        any::<u64>().prop_map(|id| Request::RemoveMember { id }),
    ]
}

pub(crate) fn arb_wire_error() -> impl Strategy<Value = WireError> {
    let leader = || prop::option::of(arb_member());
    prop_oneof![
        leader().prop_map(|leader| WireError::NotLeader { leader }),
        (arb_bytes(), arb_ts(), arb_ts()).prop_map(|(key, read_ts, conflicting_commit_ts)| {
            WireError::Conflict { key, read_ts, conflicting_commit_ts }
        }),
        arb_ts().prop_map(|read_ts| WireError::Expired { read_ts }),
        arb_string().prop_map(WireError::ClockUnavailable),
        (arb_ts(), arb_ts()).prop_map(|(ts, latest)| WireError::ClockBehind { ts, latest }),
        (arb_ts(), arb_ts()).prop_map(|(ts, horizon)| WireError::BelowGcHorizon { ts, horizon }),
        (arb_ts(), arb_ts()).prop_map(|(ts, latest)| WireError::TimestampInFuture { ts, latest }),
        (any::<u64>(), any::<u64>()).prop_map(|(len, max)| WireError::KeyTooLarge { len, max }),
        (any::<u64>(), any::<u64>()).prop_map(|(len, max)| WireError::ValueTooLarge { len, max }),
        (arb_string(), any::<u64>())
            .prop_map(|(what, max)| WireError::TransactionTooLarge { what, max }),
        (arb_ts(), arb_ts(), leader()).prop_map(|(requested, safe_time, leader)| {
            WireError::FollowerBehind { requested, safe_time, leader }
        }),
        arb_string().prop_map(WireError::OutcomeUnknown),
        arb_string().prop_map(WireError::Unavailable),
        (any::<u16>(), any::<u16>())
            .prop_map(|(server, client)| WireError::UnsupportedVersion { server, client }),
        arb_string().prop_map(WireError::Malformed),
        (any::<u64>(), any::<u64>()).prop_map(|(len, max)| WireError::FrameTooLarge { len, max }),
        arb_string().prop_map(WireError::Fatal),
    ]
}

pub(crate) fn arb_role() -> impl Strategy<Value = Role> {
    prop_oneof![
        Just(Role::Leader),
        Just(Role::Follower),
        Just(Role::Candidate),
        Just(Role::PreCandidate),
        Just(Role::Learner),
    ]
}

pub(crate) fn arb_peer_clock() -> impl Strategy<Value = PeerClockInfo> {
    (any::<u64>(), any::<i64>(), arb_duration(), arb_duration(), any::<bool>(), arb_duration())
        .prop_map(|(id, offset_nanos, uncertainty, round_trip, consistent, age)| PeerClockInfo {
            id,
            offset_nanos,
            uncertainty,
            round_trip,
            consistent,
            age,
        })
}

pub(crate) fn arb_clock_info() -> impl Strategy<Value = ClockInfo> {
    (
        (arb_string(), arb_string(), arb_ts(), arb_ts(), arb_duration()),
        prop::option::of(arb_string()),
        prop::collection::vec(arb_peer_clock(), 0..4),
        arb_string(),
    )
        .prop_map(|((source, status, earliest, latest, bound), problem, peers, leap)| {
            ClockInfo { source, status, earliest, latest, bound, problem, peers, leap }
        })
}

pub(crate) fn arb_node_status() -> impl Strategy<Value = NodeStatus> {
    (
        (any::<u64>(), arb_role(), any::<u64>(), prop::option::of(arb_member())),
        (any::<u64>(), any::<u64>(), prop::collection::vec(arb_member(), 0..4)),
        (arb_clock_info(), arb_ts(), arb_ts(), any::<bool>()),
    )
        .prop_map(
            |(
                (id, role, term, leader),
                (commit_index, applied_index, members),
                (clock, safe_time, closed_ts, lease_valid),
            )| NodeStatus {
                id,
                role,
                term,
                leader,
                commit_index,
                applied_index,
                members,
                clock,
                safe_time,
                closed_ts,
                lease_valid,
            },
        )
}

pub(crate) fn arb_commit_info() -> impl Strategy<Value = CommitInfo> {
    (arb_ts(), arb_duration(), arb_duration(), arb_duration(), arb_duration()).prop_map(
        |(ts, commit_wait, durable, wait_beyond_durable, latency)| CommitInfo {
            ts,
            commit_wait,
            durable,
            wait_beyond_durable,
            latency,
        },
    )
}

pub(crate) fn arb_response() -> impl Strategy<Value = Response> {
    prop_oneof![
        arb_ts().prop_map(Response::Timestamp),
        prop::option::of(arb_bytes()).prop_map(Response::Value),
        prop::collection::vec((arb_bytes(), arb_bytes()), 0..6).prop_map(Response::Rows),
        arb_commit_info().prop_map(Response::Committed),
        arb_node_status().prop_map(|s| Response::Status(Box::new(s))),
        prop::collection::vec(arb_member(), 0..6).prop_map(Response::Members),
        arb_wire_error().prop_map(Response::Error),
    ]
}

pub(crate) fn arb_request_frame() -> impl Strategy<Value = RequestFrame> {
    (any::<u64>(), arb_request()).prop_map(|(id, request)| RequestFrame::new(id, request))
}

pub(crate) fn arb_response_frame() -> impl Strategy<Value = ResponseFrame> {
    (any::<u64>(), arb_response()).prop_map(|(id, response)| ResponseFrame::new(id, response))
}
