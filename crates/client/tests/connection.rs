//! One connection, many requests: answers matched by id, connection-level errors, and servers
//! that speak another protocol version.

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use boundkv_client::{
    Client, ClientOptions, Error, NodeRef, ReadAt, Request, Response, Timestamp, WireError,
};
use bytes::Bytes;
use common::{FakeKv, MockServer, Reply, single_leader, within};

fn quick() -> ClientOptions {
    ClientOptions {
        retry_backoff_min: Duration::from_millis(5),
        retry_backoff_max: Duration::from_millis(20),
        ..ClientOptions::default()
    }
}

/// Scenario: two Gets in flight on one connection; the mock holds the first and, when the
/// second arrives, answers the second and then the first. Each caller gets its own answer.
#[tokio::test]
async fn out_of_order_answers_are_matched_by_id() {
    within(async {
        let kv = FakeKv::new();
        kv.write("first", Some("1"));
        kv.write("second", Some("2"));
        let node = MockServer::start().await;
        let honest = single_leader(kv.clone(), node.member(1));
        let held: Mutex<Option<(u64, Response)>> = Mutex::new(None);
        let answered = Arc::new(Mutex::new(Vec::new()));
        node.set_handler({
            let answered = answered.clone();
            move |incoming| {
                let Request::Get { .. } = &incoming.request else { return honest(incoming) };
                let response = kv.answer(&incoming.request);
                let mut held = held.lock().unwrap();
                match held.take() {
                    None => *held = Some((incoming.id, response)),
                    Some((first_id, first_response)) => {
                        incoming.conn.answer(incoming.id, response);
                        incoming.conn.answer(first_id, first_response);
                        answered.lock().unwrap().extend([incoming.id, first_id]);
                    }
                }
                Reply::Later
            }
        });
        let client = Client::connect_with([node.address.clone()], quick()).await.unwrap();
        let snapshot = client.read_only().await.unwrap();
        let (first, second) = tokio::join!(snapshot.get("first"), snapshot.get("second"));
        assert_eq!(first.unwrap().as_deref(), Some(&b"1"[..]));
        assert_eq!(second.unwrap().as_deref(), Some(&b"2"[..]));

        let gets = node.received_where(|r| matches!(r, Request::Get { .. }));
        assert_eq!(gets.len(), 2);
        assert_eq!(gets[0].connection, gets[1].connection, "one connection");
        let answered = answered.lock().unwrap().clone();
        assert_eq!(answered, [gets[1].id, gets[0].id], "answered in reverse order");
        assert!(gets[0].id >= 1 && gets[1].id == gets[0].id + 1);
    })
    .await;
}

/// Scenario: with two requests in flight, the server sends a connection-level error (id 0) and
/// closes. Both requests fail with a connection error; the next request opens a new connection
/// and succeeds, and a high-level read retries on its own.
#[tokio::test]
async fn a_connection_error_frame_fails_requests_in_flight_and_reconnects() {
    within(async {
        let kv = FakeKv::new();
        kv.write("k", Some("v"));
        let node = MockServer::start().await;
        let honest = single_leader(kv.clone(), node.member(1));
        let in_flight = Mutex::new(0);
        node.set_handler(move |incoming| {
            if incoming.conn.number == 1 && matches!(incoming.request, Request::Get { .. }) {
                let mut in_flight = in_flight.lock().unwrap();
                *in_flight += 1;
                if *in_flight == 2 {
                    incoming.conn.answer(
                        0,
                        Response::Error(WireError::Malformed("garbage on the wire".into())),
                    );
                    incoming.conn.close();
                }
                return Reply::Later;
            }
            honest(incoming)
        });
        let client = Client::connect_with([node.address.clone()], quick()).await.unwrap();
        let get =
            |key: &'static str| Request::Get { ts: Timestamp::from_nanos(1_000), key: key.into() };
        let at = NodeRef::Address(node.address.clone());
        let (one, two) = tokio::join!(
            client.send_request(at.clone(), get("k")),
            client.send_request(at.clone(), get("k"))
        );
        for result in [one, two] {
            let err = result.unwrap_err();
            let Error::Connection { address, reason } = &err else { panic!("{err:?}") };
            assert_eq!(address, &node.address);
            assert!(reason.contains("garbage on the wire"), "{reason}");
        }
        assert_eq!(node.connections(), 1);

        let answer = client.send_request(at, get("k")).await.unwrap();
        assert_eq!(answer, Response::Value(Some(Bytes::from("v"))));
        assert_eq!(node.connections(), 2, "reconnected");
        assert_eq!(client.get("k").await.unwrap().as_deref(), Some(&b"v"[..]));
    })
    .await;
}

/// Scenario: a server that answers in frames of protocol version 3. `connect` fails at once
/// with the typed version mismatch instead of hanging or retrying.
#[tokio::test]
async fn a_server_of_another_protocol_version_is_a_clear_error() {
    within(async {
        let node = MockServer::with_handler(|incoming| {
            // Version 4 (varint 04), then the id, then a body this client cannot parse.
            let mut payload = vec![0x04];
            let mut id = incoming.id;
            loop {
                let byte = (id & 0x7F) as u8;
                id >>= 7;
                if id == 0 {
                    payload.push(byte);
                    break;
                }
                payload.push(byte | 0x80);
            }
            payload.extend([0xFF, 0xFF, 0xFF]);
            incoming.conn.send_payload(Bytes::from(payload));
            Reply::Later
        })
        .await;
        let started = Instant::now();
        let err = Client::connect_with([node.address.clone()], quick()).await.unwrap_err();
        assert_eq!(err, Error::Server(WireError::UnsupportedVersion { server: 4, client: 3 }));
        assert!(!err.is_retryable());
        assert!(started.elapsed() < Duration::from_secs(2));
        assert_eq!(
            err.to_string(),
            "unsupported protocol version: the server speaks version 4, the client version 3"
        );
    })
    .await;
}

/// Scenario: a server that refuses the client's version (it answers `UnsupportedVersion` in a
/// frame the client can read) is just as clear.
#[tokio::test]
async fn a_server_refusing_our_version_is_a_clear_error() {
    within(async {
        let node = MockServer::with_handler(|_| {
            Reply::Answer(Response::Error(WireError::UnsupportedVersion { server: 1, client: 7 }))
        })
        .await;
        let err = Client::connect_with([node.address.clone()], quick()).await.unwrap_err();
        assert!(matches!(err, Error::Server(WireError::UnsupportedVersion { .. })), "{err:?}");
    })
    .await;
}

/// Scenario: an answer of the wrong type is a protocol error, not a panic or a retry loop.
#[tokio::test]
async fn an_answer_of_the_wrong_type_is_a_protocol_error() {
    within(async {
        let kv = FakeKv::new();
        let node = MockServer::start().await;
        let honest = single_leader(kv, node.member(1));
        node.set_handler(move |incoming| match incoming.request {
            Request::BeginReadOnly { .. } => Reply::Answer(Response::Rows(Vec::new())),
            _ => honest(incoming),
        });
        let client = Client::connect_with([node.address.clone()], quick()).await.unwrap();
        let err = client.read_only().await.unwrap_err();
        assert_eq!(err, Error::Protocol("a BeginReadOnly request was answered with Rows".into()));
    })
    .await;
}

/// Scenario: a node that never answers reads: each attempt times out, the client retries until
/// the retry deadline, and then reports the timeout. The late answers are ignored.
#[tokio::test]
async fn a_silent_node_times_out_within_the_deadline() {
    within(async {
        let kv = FakeKv::new();
        let node = MockServer::start().await;
        let honest = single_leader(kv, node.member(1));
        node.set_handler(move |incoming| match incoming.request {
            Request::BeginReadOnly { at: ReadAt::Latest } => Reply::Later,
            _ => honest(incoming),
        });
        let options = ClientOptions {
            request_timeout: Duration::from_millis(50),
            retry_deadline: Duration::from_millis(200),
            ..quick()
        };
        let client = Client::connect_with([node.address.clone()], options).await.unwrap();
        let started = Instant::now();
        let err = client.get("k").await.unwrap_err();
        assert_eq!(err, Error::Timeout { address: node.address.clone() });
        let took = started.elapsed();
        assert!(took >= Duration::from_millis(200) && took < Duration::from_secs(2), "{took:?}");
        assert!(node.received_where(|r| matches!(r, Request::BeginReadOnly { .. })).len() >= 2);
        // The connection is still usable for other requests.
        assert_eq!(client.status().await.unwrap().id, 1);
        assert_eq!(node.connections(), 1);
    })
    .await;
}

/// Scenario: dropping every handle of the client closes its connections (the server sees its
/// connection end); a clone keeps them open until it is dropped too.
#[tokio::test]
async fn dropping_the_client_closes_its_connections() {
    within(async {
        let node = MockServer::start().await;
        node.set_handler(single_leader(FakeKv::new(), node.member(1)));
        let client = Client::connect_with([node.address.clone()], quick()).await.unwrap();
        let clone = client.clone();
        drop(client);
        clone.get("k").await.unwrap();
        assert_eq!(node.open_connections(), 1);
        drop(clone);
        let deadline = Instant::now() + Duration::from_secs(5);
        while node.open_connections() > 0 {
            assert!(Instant::now() < deadline, "the connection stayed open");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(node.connections(), 1);
    })
    .await;
}
