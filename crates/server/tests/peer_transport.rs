//! The Raft peer transport over loopback TCP: delivery in order, queueing while a peer is down,
//! drops when a queue is full, chunked snapshots and their reports, hostile input against the
//! listener, address changes, unknown peers and shutdown.
//!
//! Each test builds its own multi-threaded tokio runtime and calls `Transport::send` from the
//! test's own thread, as the Raft thread would: a plain thread outside the runtime. Every wait is
//! bounded by [`WAIT`]; addresses are 127.0.0.1 with ports chosen by the OS.

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use boundkv_consensus::clock_check::{ClockFrame, ClockMessage};
use boundkv_consensus::codec::encode_message;
use boundkv_consensus::raft::prelude::{ConfState, Entry, Message, MessageType, Snapshot};
use boundkv_consensus::testing::{Report, TestEndpoint};
use boundkv_consensus::transport::Transport;
use boundkv_server::peer::{
    PEER_PROTOCOL_VERSION, PeerFrame, PeerOptions, PeerTransport, encode_frame, frame_codec,
    serve_peers,
};
use bytes::{Bytes, BytesMut};
use tokio::net::TcpListener;
use tokio::runtime::Runtime;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::codec::Encoder;

const CLUSTER: &str = "peer-test";

/// The longest any single wait in these tests may take.
const WAIT: Duration = Duration::from_secs(10);

/// How long to wait for something that should *not* happen.
const QUIET: Duration = Duration::from_millis(300);

/// A runtime for one test. Also routes the transport's logs to the test's output (shown when a
/// test fails, or with `--nocapture`), filtered by `RUST_LOG` (default `warn`).
fn runtime() -> Runtime {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_test_writer().try_init();
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime")
}

/// Options with fast reconnection, so that tests about down peers finish quickly.
fn options() -> PeerOptions {
    PeerOptions {
        backoff_min: Duration::from_millis(10),
        backoff_max: Duration::from_millis(100),
        ..PeerOptions::default()
    }
}

/// A loopback address nothing listens on (bound once by the OS, then released).
fn unused_addr() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap()
}

/// The receiving half of one node: `serve_peers` on a listener, delivering into an endpoint.
struct Server {
    endpoint: TestEndpoint,
    addr: SocketAddr,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl Server {
    fn start(rt: &Runtime, id: u64, addr: SocketAddr, options: PeerOptions) -> Server {
        Server::start_with(rt, id, addr, options, TestEndpoint::new())
    }

    fn start_with(
        rt: &Runtime,
        id: u64,
        addr: SocketAddr,
        options: PeerOptions,
        endpoint: TestEndpoint,
    ) -> Server {
        let listener = rt.block_on(TcpListener::bind(addr)).expect("bind the peer listener");
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = watch::channel(false);
        let serve =
            serve_peers(listener, id, CLUSTER.into(), options, endpoint.deliverer(), None, stopped);
        let task = rt.spawn(serve);
        Server { endpoint, addr, stop, task }
    }

    fn addr(&self) -> String {
        self.addr.to_string()
    }
}

/// A whole node: a transport sending with its endpoint's reporter, and a server delivering
/// into the same endpoint.
struct Node {
    id: u64,
    transport: Arc<PeerTransport>,
    server: Server,
}

impl Node {
    fn start(rt: &Runtime, id: u64, options: PeerOptions) -> Node {
        let server = Server::start(rt, id, "127.0.0.1:0".parse().unwrap(), options.clone());
        let transport = PeerTransport::new(id, CLUSTER.into(), options, rt.handle().clone());
        Node { id, transport, server }
    }

    fn endpoint(&self) -> &TestEndpoint {
        &self.server.endpoint
    }

    fn send(&self, msg: Message) {
        self.transport.send(msg, &self.endpoint().reporter());
    }
}

/// A transport with its own endpoint (for its reports), and no server.
fn sender(rt: &Runtime, id: u64, options: PeerOptions) -> (Arc<PeerTransport>, TestEndpoint) {
    (PeerTransport::new(id, CLUSTER.into(), options, rt.handle().clone()), TestEndpoint::new())
}

/// An append from `from` to `to` whose index is `index`, with one entry carrying `index`.
fn append(from: u64, to: u64, index: u64) -> Message {
    let mut msg = Message::default();
    msg.set_msg_type(MessageType::MsgAppend);
    (msg.from, msg.to, msg.term, msg.log_term, msg.index, msg.commit) =
        (from, to, 3, 2, index, index / 2);
    let data = format!("entry {index}").into_bytes();
    msg.entries =
        vec![Entry { index: index + 1, term: 3, data: data.into(), ..Entry::default() }].into();
    msg.context = Bytes::from(index.to_be_bytes().to_vec());
    msg
}

fn check_append(got: &Message, from: u64, to: u64, index: u64) {
    assert_eq!(got, &append(from, to, index), "append {index} arrives intact");
}

/// A `MsgSnapshot` from `from` to `to` carrying `len` bytes of state.
fn snapshot(from: u64, to: u64, len: usize) -> Message {
    let data = Bytes::from((0..len).map(|i| (i % 251) as u8).collect::<Vec<u8>>());
    let mut snap = Snapshot { data, ..Snapshot::default() };
    let meta = snap.mut_metadata();
    (meta.index, meta.term) = (42, 7);
    meta.set_conf_state(ConfState { voters: vec![1, 2, 3], ..ConfState::default() });
    let mut msg = Message::default();
    msg.set_msg_type(MessageType::MsgSnapshot);
    (msg.from, msg.to, msg.term) = (from, to, 7);
    msg.set_snapshot(snap);
    msg
}

fn recv(endpoint: &TestEndpoint, what: &str) -> Message {
    endpoint.recv_message(WAIT).unwrap_or_else(|| panic!("no message within {WAIT:?}: {what}"))
}

/// Collects reports until one satisfies `done`, waiting at most [`WAIT`]; returns all of them.
fn reports_until(endpoint: &TestEndpoint, done: impl Fn(&Report) -> bool) -> Vec<Report> {
    let deadline = Instant::now() + WAIT;
    let mut all = Vec::new();
    while Instant::now() < deadline {
        all.extend(endpoint.reports(Duration::from_millis(20)));
        if all.iter().any(&done) {
            return all;
        }
    }
    panic!("no matching report within {WAIT:?}; got {all:?}");
}

/// Waits until `check` holds, at most [`WAIT`].
fn eventually(what: &str, check: impl Fn() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !check() {
        assert!(Instant::now() < deadline, "not within {WAIT:?}: {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A frame as it goes on the wire: the 4-byte big-endian length, then the payload.
fn framed(payload: &[u8]) -> Vec<u8> {
    let mut out = (payload.len() as u32).to_be_bytes().to_vec();
    out.extend_from_slice(payload);
    out
}

fn frame(frame: &PeerFrame) -> Vec<u8> {
    framed(&encode_frame(frame, 1 << 20).unwrap())
}

fn hello(from: u64, to: u64) -> PeerFrame {
    PeerFrame::Hello {
        version: PEER_PROTOCOL_VERSION,
        cluster: CLUSTER.into(),
        from,
        to,
        reply_to: String::new(),
    }
}

#[test]
fn two_transports_exchange_messages_in_order_and_intact() {
    let rt = runtime();
    let a = Node::start(&rt, 1, options());
    let b = Node::start(&rt, 2, options());
    a.transport.set_peers([(2, b.server.addr()), (1, a.server.addr())]);
    b.transport.set_peers([(1, a.server.addr())]);

    for index in 1..=100 {
        a.send(append(1, 2, index));
    }
    for index in 1..=100 {
        check_append(&recv(b.endpoint(), "A to B"), 1, 2, index);
    }
    for index in 1..=10 {
        b.send(append(2, 1, index));
    }
    for index in 1..=10 {
        check_append(&recv(a.endpoint(), "B to A"), 2, 1, index);
    }
    assert_eq!(b.endpoint().recv_message(QUIET), None, "nothing more arrives");

    eventually("A counts 100 messages sent", || a.transport.stats().peers[&2].messages_sent == 100);
    let stats = a.transport.stats();
    assert_eq!(stats.peers.len(), 1, "a node has no link to itself: {stats:?}");
    let link = &stats.peers[&2];
    assert!(link.connected, "{link:?}");
    assert_eq!((link.messages_dropped, link.reconnects, link.connect_failures), (0, 0, 0));
    assert!(link.bytes_sent > 100 * 20, "{link:?}");
    assert_eq!(link.address, b.server.addr());
    assert_eq!(a.endpoint().reports(Duration::ZERO), vec![], "no reports on a healthy link");
}

/// A clock probe and its answer travel the same links as Raft messages, intact (the readings
/// are what the peer clock checks rest on; the contradiction is what the cluster clock fences on).
#[test]
fn clock_frames_travel_intact() {
    use boundkv_clockbound::{ClockReading, ClockStatus, TimeInterval, Timestamp};
    let rt = runtime();
    let a = Node::start(&rt, 1, options());
    let b = Node::start(&rt, 2, options());
    a.transport.set_peers([(2, b.server.addr())]);
    let reading = ClockReading {
        interval: TimeInterval::around(Timestamp::from_nanos(1 << 60), Duration::from_micros(50)),
        status: ClockStatus::Synchronized,
    };
    let probe = ClockFrame {
        from: 1,
        to: 2,
        message: ClockMessage::Probe { probe: 7, sent: Some(reading), contradicts: Some(5) },
    };
    a.transport.send_clock(probe.clone());
    let reports = reports_until(b.endpoint(), |r| matches!(r, Report::Clock(_)));
    assert!(reports.contains(&Report::Clock(probe)), "{reports:?}");
}

#[test]
fn messages_queued_while_a_peer_is_down_arrive_when_it_comes_up() {
    let rt = runtime();
    let addr = unused_addr();
    let (a, reports) = sender(&rt, 1, PeerOptions { queue_capacity: 8, ..options() });
    a.set_peers([(2, addr.to_string())]);

    for index in 1..=5 {
        a.send(append(1, 2, index), &reports.reporter());
    }
    reports_until(&reports, |r| *r == Report::Unreachable(2));
    let stats = a.stats().peers[&2].clone();
    assert!(!stats.connected && stats.connect_failures >= 1, "{stats:?}");

    let b = Server::start(&rt, 2, addr, options());
    for index in 1..=5 {
        check_append(&recv(&b.endpoint, "queued while down"), 1, 2, index);
    }
    eventually("the link is connected and counts 5 sent", || {
        let link = &a.stats().peers[&2];
        link.connected && link.messages_sent == 5
    });
}

#[test]
fn a_full_queue_drops_the_excess_without_blocking() {
    const CAPACITY: usize = 16;
    const SENT: u64 = 10 * CAPACITY as u64;
    let rt = runtime();
    let addr = unused_addr();
    let (a, reports) = sender(&rt, 1, PeerOptions { queue_capacity: CAPACITY, ..options() });
    a.set_peers([(2, addr.to_string())]);

    let reporter = reports.reporter();
    let started = Instant::now();
    for index in 1..=SENT {
        a.send(append(1, 2, index), &reporter);
    }
    let took = started.elapsed();
    assert!(took < WAIT, "the burst of {SENT} sends returned (took {took:?})");

    // The queue holds CAPACITY; the link may already hold one more, taken out to connect.
    let dropped = a.stats().peers[&2].messages_dropped;
    let accepted = SENT - dropped;
    assert!(
        accepted == CAPACITY as u64 || accepted == CAPACITY as u64 + 1,
        "{dropped} of {SENT} dropped with capacity {CAPACITY}"
    );
    reports_until(&reports, |r| *r == Report::Unreachable(2));

    let b = Server::start(&rt, 2, addr, options());
    let mut last = 0;
    for _ in 0..accepted {
        let msg = recv(&b.endpoint, "an accepted message");
        assert!(msg.index > last, "in order: {} after {last}", msg.index);
        check_append(&msg, 1, 2, msg.index);
        last = msg.index;
    }
    assert_eq!(b.endpoint.recv_message(QUIET), None, "dropped messages never arrive");
    assert_eq!(a.stats().peers[&2].messages_dropped, dropped, "drops happen only in send");
}

#[test]
fn a_large_snapshot_arrives_in_chunks_and_is_reported_delivered() {
    const LEN: usize = 5 << 20;
    let rt = runtime();
    let a = Node::start(&rt, 1, options());
    let b = Node::start(&rt, 2, options());
    a.transport.set_peers([(2, b.server.addr())]);

    let sent = snapshot(1, 2, LEN);
    a.send(sent.clone());
    // Ordinary messages sent behind the snapshot travel between its chunks.
    for index in 1..=3 {
        a.send(append(1, 2, index));
    }
    let mut got_snapshot = None;
    let mut appends = Vec::new();
    for _ in 0..4 {
        let msg = recv(b.endpoint(), "the snapshot and three appends");
        if msg.get_msg_type() == MessageType::MsgSnapshot {
            got_snapshot = Some(msg);
        } else {
            appends.push(msg.index);
        }
    }
    let got = got_snapshot.expect("the snapshot arrived");
    assert_eq!(got.get_snapshot().get_data().len(), LEN);
    // Not assert_eq: a failure would print 5 MiB.
    assert!(got == sent, "the snapshot arrives intact");
    assert_eq!(appends, vec![1, 2, 3]);

    let reports = reports_until(a.endpoint(), |r| matches!(r, Report::Snapshot { .. }));
    assert_eq!(reports, vec![Report::Snapshot { to: 2, delivered: true }]);
    let stats = a.transport.stats().peers[&2].clone();
    assert_eq!((stats.snapshots_sent, stats.snapshots_failed), (1, 0), "{stats:?}");
    // Six 1 MiB chunks, each with its prefix and header, and the Hello and appends.
    assert!(stats.bytes_sent > LEN as u64 && stats.bytes_sent < LEN as u64 + 4096, "{stats:?}");
    assert_eq!(a.endpoint().reports(QUIET), vec![], "reported exactly once");
}

#[test]
fn a_snapshot_to_an_unreachable_peer_is_reported_not_delivered() {
    let rt = runtime();
    let (a, reports) = sender(&rt, 1, options());
    a.set_peers([(3, unused_addr().to_string())]);

    a.send(snapshot(1, 3, 64 << 10), &reports.reporter());
    let mut all = reports_until(&reports, |r| matches!(r, Report::Snapshot { .. }));
    all.extend(reports.reports(QUIET));
    assert!(all.contains(&Report::Unreachable(3)), "{all:?}");
    let snapshots: Vec<_> = all.iter().filter(|r| matches!(r, Report::Snapshot { .. })).collect();
    assert_eq!(snapshots, vec![&Report::Snapshot { to: 3, delivered: false }], "exactly once");
    let stats = a.stats().peers[&3].clone();
    assert_eq!((stats.snapshots_sent, stats.snapshots_failed), (0, 1), "{stats:?}");
}

#[test]
fn an_append_too_large_for_one_frame_travels_in_chunks() {
    let small = PeerOptions { max_frame: 64 << 10, snapshot_chunk: 16 << 10, ..options() };
    let rt = runtime();
    let a = Node::start(&rt, 1, small.clone());
    let b = Node::start(&rt, 2, small);
    a.transport.set_peers([(2, b.server.addr())]);

    let mut big = append(1, 2, 7);
    big.entries[0].data = Bytes::from(vec![0xAB; 200 << 10]);
    a.send(big.clone());
    a.send(append(1, 2, 8));
    assert!(recv(b.endpoint(), "the large append") == big, "the large append arrives intact");
    check_append(&recv(b.endpoint(), "the next append"), 1, 2, 8);
    assert_eq!(a.endpoint().reports(QUIET), vec![], "no snapshot report for an append");
}

#[test]
fn hostile_input_is_refused_and_the_listener_keeps_serving() {
    let hello_timeout = Duration::from_millis(500);
    let rt = runtime();
    let b = Server::start(
        &rt,
        2,
        "127.0.0.1:0".parse().unwrap(),
        PeerOptions { hello_timeout, ..options() },
    );
    let (a, a_reports) = sender(&rt, 1, options());
    a.set_peers([(2, b.addr())]);
    let mut index = 0;
    let mut well_behaved = |what: &str| {
        // Over A's connection, opened before the hostile one and still open...
        index += 1;
        a.send(append(1, 2, index), &a_reports.reporter());
        check_append(&recv(&b.endpoint, what), 1, 2, index);
        // ... and over a new one, which the listener still accepts.
        let (c, c_reports) = sender(&rt, 3, options());
        c.set_peers([(2, b.addr())]);
        c.send(append(3, 2, 1000 + index), &c_reports.reporter());
        check_append(&recv(&b.endpoint, what), 3, 2, 1000 + index);
        c.shutdown();
    };
    well_behaved("before any hostile input");

    let heartbeat = {
        let mut m = Message::default();
        m.set_msg_type(MessageType::MsgHeartbeat);
        (m.from, m.to, m.term) = (1, 2, 1);
        Bytes::from(encode_message(&m).unwrap())
    };
    let mut trailing = encode_frame(&hello(1, 2), 1 << 20).unwrap().to_vec();
    trailing.push(0);
    let misaddressed = {
        let msg = encode_message(&append(5, 2, 1)).unwrap();
        [frame(&hello(1, 2)), frame(&PeerFrame::Raft(msg.into()))].concat()
    };
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("garbage bytes", b"GET / HTTP/1.1\r\nHost: peer\r\n\r\n".to_vec()),
        ("an oversized length prefix", [vec![0x7F, 0xFF, 0xFF, 0xFF], vec![0; 64]].concat()),
        ("a frame cut short by the end of the stream", vec![0, 0, 0, 16, 0x00, 0x01]),
        ("a payload that is no frame", framed(&[0x09, 0x00])),
        ("a Hello with trailing bytes", framed(&trailing)),
        ("a Raft frame before the Hello", frame(&PeerFrame::Raft(heartbeat.clone()))),
        (
            "a Hello of an unknown version",
            frame(&PeerFrame::Hello {
                version: PEER_PROTOCOL_VERSION + 1,
                cluster: CLUSTER.into(),
                from: 1,
                to: 2,
                reply_to: String::new(),
            }),
        ),
        (
            "a Hello for another cluster",
            frame(&PeerFrame::Hello {
                version: PEER_PROTOCOL_VERSION,
                cluster: "other".into(),
                from: 1,
                to: 2,
                reply_to: String::new(),
            }),
        ),
        ("a Hello for another node", frame(&hello(1, 9))),
        (
            "a Raft payload that does not decode",
            [frame(&hello(1, 2)), frame(&PeerFrame::Raft(Bytes::from_static(&[0xFF; 3])))].concat(),
        ),
        ("a message not from the Hello's sender", misaddressed),
        ("a second Hello", [frame(&hello(1, 2)), frame(&hello(1, 2))].concat()),
        (
            "a clock probe not from the Hello's sender",
            [
                frame(&hello(1, 2)),
                frame(&PeerFrame::Clock(ClockFrame {
                    from: 5,
                    to: 2,
                    message: ClockMessage::Probe { probe: 1, sent: None, contradicts: None },
                })),
            ]
            .concat(),
        ),
        (
            "a snapshot chunk out of order",
            [
                frame(&hello(1, 2)),
                frame(&PeerFrame::SnapshotChunk {
                    snapshot: 1,
                    seq: 1,
                    last: true,
                    data: heartbeat.clone(),
                }),
            ]
            .concat(),
        ),
    ];
    for (what, bytes) in cases {
        let mut raw = std::net::TcpStream::connect(b.addr).unwrap();
        let _ = raw.write_all(&bytes); // The listener may close before reading it all.
        if what.contains("cut short") {
            raw.shutdown(std::net::Shutdown::Write).unwrap();
        }
        assert_closed(&mut raw, what);
        well_behaved(what);
    }

    // A connection that sends nothing is closed once the Hello timeout passes.
    let started = Instant::now();
    let mut silent = std::net::TcpStream::connect(b.addr).unwrap();
    assert_closed(&mut silent, "a connection that sends nothing");
    assert!(started.elapsed() >= hello_timeout / 2, "closed by the Hello timeout");
    // So is one that starts a Hello and never finishes it.
    let mut stalled = std::net::TcpStream::connect(b.addr).unwrap();
    stalled.write_all(&frame(&hello(1, 2))[..5]).unwrap();
    assert_closed(&mut stalled, "a Hello never finished");
    well_behaved("after the silent connections");

    assert_eq!(b.endpoint.recv_message(QUIET), None, "no hostile message was delivered");
    assert!(a.stats().peers[&2].connected, "A's connection survived it all");
    assert_eq!(a.stats().peers[&2].reconnects, 0, "on one connection");
}

/// Reads until the listener closes `raw`, failing if it stays open for [`WAIT`].
fn assert_closed(raw: &mut std::net::TcpStream, what: &str) {
    raw.set_read_timeout(Some(WAIT)).unwrap();
    let mut buf = [0u8; 256];
    match raw.read(&mut buf) {
        Ok(0) => {}
        Ok(n) => panic!("{what}: the listener wrote {n} bytes; it never writes"),
        // Closing with our bytes unread makes the kernel reset the connection.
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
        Err(e) => panic!("{what}: not closed within {WAIT:?} ({e})"),
    }
}

#[test]
fn a_changed_address_moves_the_link() {
    let rt = runtime();
    let old = Server::start(&rt, 2, "127.0.0.1:0".parse().unwrap(), options());
    let new = Server::start(&rt, 2, "127.0.0.1:0".parse().unwrap(), options());
    let (a, reports) = sender(&rt, 1, options());

    a.set_peers([(2, old.addr())]);
    a.send(append(1, 2, 1), &reports.reporter());
    check_append(&recv(&old.endpoint, "to the old address"), 1, 2, 1);

    a.set_peers([(2, new.addr())]);
    for index in 2..=4 {
        a.send(append(1, 2, index), &reports.reporter());
    }
    for index in 2..=4 {
        check_append(&recv(&new.endpoint, "to the new address"), 1, 2, index);
    }
    assert_eq!(old.endpoint.recv_message(QUIET), None, "nothing more at the old address");
    eventually("4 messages counted sent", || a.stats().peers[&2].messages_sent == 4);
    let stats = a.stats().peers[&2].clone();
    assert_eq!(stats.address, new.addr());
    assert_eq!(stats.reconnects, 1, "{stats:?}");
    assert_eq!(reports.reports(Duration::ZERO), vec![], "moving is not unreachability");
}

#[test]
fn an_unknown_peer_is_reported_unreachable() {
    let rt = runtime();
    let (a, reports) = sender(&rt, 1, options());
    a.set_peers([(2, unused_addr().to_string())]);

    a.send(append(1, 9, 1), &reports.reporter());
    assert_eq!(reports.reports(QUIET), vec![Report::Unreachable(9)]);
    a.send(snapshot(1, 9, 1024), &reports.reporter());
    assert_eq!(
        reports.reports(QUIET),
        vec![Report::Unreachable(9), Report::Snapshot { to: 9, delivered: false }]
    );
    let stats = a.stats();
    assert_eq!(stats.unknown_peer_drops, 2);
    assert_eq!(stats.peers.keys().copied().collect::<Vec<_>>(), vec![2]);
}

#[test]
fn a_removed_peer_loses_its_link() {
    let rt = runtime();
    let b = Server::start(&rt, 2, "127.0.0.1:0".parse().unwrap(), options());
    let (a, reports) = sender(&rt, 1, options());
    a.set_peers([(2, b.addr())]);
    a.send(append(1, 2, 1), &reports.reporter());
    check_append(&recv(&b.endpoint, "before removal"), 1, 2, 1);

    a.set_peers([]);
    assert!(a.stats().peers.is_empty());
    a.send(append(1, 2, 2), &reports.reporter());
    assert_eq!(reports.reports(QUIET), vec![Report::Unreachable(2)]);
    assert_eq!(b.endpoint.recv_message(QUIET), None);

    // Added back, it gets a fresh link.
    a.set_peers([(2, b.addr())]);
    a.send(append(1, 2, 3), &reports.reporter());
    check_append(&recv(&b.endpoint, "after adding it back"), 1, 2, 3);
}

#[test]
fn shutdown_stops_both_halves() {
    let rt = runtime();
    let a = Node::start(&rt, 1, options());
    let b = Node::start(&rt, 2, options());
    a.transport.set_peers([(2, b.server.addr())]);
    a.send(append(1, 2, 1));
    check_append(&recv(b.endpoint(), "before shutdown"), 1, 2, 1);

    // The receiving half: serve_peers returns and closes A's connection, which A notices.
    b.server.stop.send_replace(true);
    let Node { server: Server { task, .. }, .. } = b;
    rt.block_on(async { tokio::time::timeout(WAIT, task).await })
        .expect("serve_peers returns after shutdown")
        .expect("serve_peers did not panic");
    reports_until(a.endpoint(), |r| *r == Report::Unreachable(2));
    eventually("A sees the connection closed", || !a.transport.stats().peers[&2].connected);

    // The sending half: links stop and later messages are unknown-peer drops.
    a.transport.shutdown();
    assert!(a.transport.stats().peers.is_empty());
    a.send(append(1, 2, 2));
    a.send(snapshot(1, 2, 16));
    let reports = a.endpoint().reports(QUIET);
    assert_eq!(
        reports,
        vec![
            Report::Unreachable(2),
            Report::Unreachable(2),
            Report::Snapshot { to: 2, delivered: false }
        ]
    );
    a.transport.set_peers([(2, a.server.addr())]);
    assert!(a.transport.stats().peers.is_empty(), "set_peers after shutdown does nothing");
    assert_eq!(a.id, 1);
}

#[test]
fn chunk_bytes_match_the_module_docs() {
    let data = Bytes::from(vec![0x5A; 1 << 20]);
    let chunk = PeerFrame::SnapshotChunk { snapshot: 7, seq: 0, last: false, data };
    let max_frame = PeerOptions::default().max_frame;
    let mut stream = BytesMut::new();
    frame_codec(max_frame).encode(encode_frame(&chunk, max_frame).unwrap(), &mut stream).unwrap();
    assert_eq!(stream[..11], [0x00, 0x10, 0x00, 0x07, 0x02, 0x07, 0x00, 0x00, 0x80, 0x80, 0x40]);
    assert_eq!(stream.len(), 4 + 1_048_583);
}
