//! `SimNet`: delivery, loss, duplication, partitions, one-way cuts, snapshot reports, crashed
//! and restarted nodes, and the same seed giving the same run.

use std::time::Duration;

use boundkv_consensus::raft::prelude::{Message, MessageType};
use boundkv_consensus::testing::{Report, TestEndpoint};
use boundkv_sim::net::{NetFaults, SimNet};
use boundkv_sim::time::SimTime;
use boundkv_sim::trace::Trace;

/// Runs `f` in a paused current-thread runtime, as the simulator does.
fn sim<F: Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .unwrap()
        .block_on(f)
}

fn msg(from: u64, to: u64, ty: MessageType, index: u64) -> Message {
    let mut m = Message::default();
    m.set_msg_type(ty);
    m.from = from;
    m.to = to;
    m.term = 1;
    m.index = index;
    m
}

/// A network with nodes `1..=n` up and its delivery loop running.
fn network(seed: u64, n: u64) -> (SimNet, Trace, Vec<TestEndpoint>) {
    let trace = Trace::new(SimTime::new(), false);
    let net = SimNet::new(seed, trace.clone());
    let endpoints: Vec<_> = (1..=n).map(|_| TestEndpoint::new()).collect();
    for (i, e) in endpoints.iter().enumerate() {
        net.register(i as u64 + 1, e.deliverer());
    }
    tokio::spawn(net.clone().run());
    (net, trace, endpoints)
}

/// Sends `m` from node `m.from` through a fresh transport of it.
fn send(net: &SimNet, endpoints: &[TestEndpoint], m: Message) {
    let from = m.from;
    net.transport(from).send(m, &endpoints[from as usize - 1].reporter());
}

/// Indexes of the messages `e` has received, in order.
fn received(e: &TestEndpoint) -> Vec<u64> {
    std::iter::from_fn(|| e.recv_message(Duration::ZERO)).map(|m| m.index).collect()
}

async fn settle() {
    tokio::time::sleep(Duration::from_secs(1)).await;
}

#[test]
fn a_perfect_network_delivers_everything_in_order() {
    sim(async {
        let (net, trace, eps) = network(1, 2);
        for i in 1..=5 {
            send(&net, &eps, msg(1, 2, MessageType::MsgAppend, i));
        }
        assert_eq!(net.in_flight(), 5, "send only queues");
        settle().await;
        assert_eq!(received(&eps[1]), [1, 2, 3, 4, 5]);
        assert_eq!(net.stats().delivered, 5);
        assert!(eps[0].reports(Duration::ZERO).is_empty());
        assert!(
            trace.lines().iter().any(|l| l.ends_with("net #1 1->2 MsgAppend t1 i1 n0 deliver"))
        );
    });
}

#[test]
fn delays_reorder_and_take_virtual_time() {
    sim(async {
        let (net, _trace, eps) = network(3, 2);
        net.set_faults(NetFaults {
            min_delay: Duration::from_millis(5),
            max_delay: Duration::from_millis(50),
            ..NetFaults::default()
        });
        let start = tokio::time::Instant::now();
        for i in 1..=50 {
            send(&net, &eps, msg(1, 2, MessageType::MsgAppend, i));
        }
        tokio::time::sleep(Duration::from_millis(4)).await;
        assert!(received(&eps[1]).is_empty(), "nothing arrives before min_delay");
        tokio::time::sleep(Duration::from_millis(100)).await;
        let got = received(&eps[1]);
        assert_eq!(got.len(), 50);
        assert!(got.windows(2).any(|w| w[0] > w[1]), "independent delays reorder: {got:?}");
        assert!(start.elapsed() < Duration::from_millis(200));
    });
}

#[test]
fn loss_drops_silently() {
    sim(async {
        let (net, _trace, eps) = network(5, 2);
        net.set_faults(NetFaults { loss: 0.5, ..NetFaults::default() });
        for i in 1..=1000 {
            send(&net, &eps, msg(1, 2, MessageType::MsgHeartbeat, i));
        }
        settle().await;
        let got = received(&eps[1]).len() as u64;
        let stats = net.stats();
        assert_eq!(got + stats.lost, 1000);
        assert!((350..650).contains(&got), "{got} of 1000 at 50% loss");
        assert!(eps[0].reports(Duration::ZERO).is_empty(), "a lost packet tells nobody");
    });
}

#[test]
fn duplicates_arrive_twice() {
    sim(async {
        let (net, _trace, eps) = network(9, 2);
        net.set_faults(NetFaults { duplicate: 1.0, ..NetFaults::default() });
        send(&net, &eps, msg(1, 2, MessageType::MsgAppend, 7));
        settle().await;
        assert_eq!(received(&eps[1]), [7, 7]);
        assert_eq!((net.stats().delivered, net.stats().duplicated), (2, 1));
    });
}

#[test]
fn a_partition_cuts_between_groups_both_ways_until_healed() {
    sim(async {
        let (net, trace, eps) = network(1, 3);
        net.partition(&[vec![1], vec![2, 3]]);
        send(&net, &eps, msg(1, 2, MessageType::MsgAppend, 1));
        send(&net, &eps, msg(3, 1, MessageType::MsgAppend, 2));
        send(&net, &eps, msg(2, 3, MessageType::MsgAppend, 3));
        settle().await;
        assert!(received(&eps[0]).is_empty());
        assert!(received(&eps[1]).is_empty());
        assert_eq!(received(&eps[2]), [3], "links inside a group work");
        assert_eq!(eps[0].reports(Duration::ZERO), [Report::Unreachable(2)]);
        assert_eq!(eps[2].reports(Duration::ZERO), [Report::Unreachable(1)]);
        assert!(trace.lines().iter().any(|l| l.ends_with("1->2 MsgAppend t1 i1 n0 DROP(cut)")));

        net.heal();
        send(&net, &eps, msg(1, 2, MessageType::MsgAppend, 4));
        settle().await;
        assert_eq!(received(&eps[1]), [4]);
    });
}

#[test]
fn a_one_way_cut_drops_one_direction_only() {
    sim(async {
        let (net, _trace, eps) = network(1, 2);
        net.cut(1, 2);
        assert!(net.is_cut(1, 2) && !net.is_cut(2, 1));
        send(&net, &eps, msg(1, 2, MessageType::MsgAppend, 1));
        send(&net, &eps, msg(2, 1, MessageType::MsgAppendResponse, 2));
        settle().await;
        assert!(received(&eps[1]).is_empty());
        assert_eq!(received(&eps[0]), [2]);
    });
}

#[test]
fn a_cut_made_while_a_message_is_in_flight_drops_it_at_delivery() {
    sim(async {
        let (net, trace, eps) = network(1, 2);
        net.set_faults(NetFaults { min_delay: Duration::from_millis(10), ..Default::default() });
        send(&net, &eps, msg(1, 2, MessageType::MsgAppend, 1));
        tokio::time::sleep(Duration::from_millis(5)).await;
        net.cut(1, 2);
        settle().await;
        assert!(received(&eps[1]).is_empty());
        assert_eq!(eps[0].reports(Duration::ZERO), [Report::Unreachable(2)]);
        let last = trace.tail(1).pop().unwrap();
        assert!(
            last.starts_with("    0.010000s net #1 1->2 MsgAppend") && last.ends_with("DROP(cut)")
        );
    });
}

#[test]
fn every_snapshot_is_reported_exactly_once() {
    sim(async {
        let (net, _trace, eps) = network(1, 3);
        let snap = |to| msg(1, to, MessageType::MsgSnapshot, 10);
        let snapshot = |to, delivered| Report::Snapshot { to, delivered };

        send(&net, &eps, snap(2));
        settle().await;
        assert_eq!(received(&eps[1]), [10]);
        assert_eq!(eps[0].reports(Duration::ZERO), [snapshot(2, true)]);

        net.set_faults(NetFaults { duplicate: 1.0, ..NetFaults::default() });
        send(&net, &eps, snap(2));
        settle().await;
        assert_eq!(received(&eps[1]), [10, 10], "the duplicate arrives too");
        assert_eq!(eps[0].reports(Duration::ZERO), [snapshot(2, true)], "but reports nothing");

        net.set_faults(NetFaults { loss: 1.0, ..NetFaults::default() });
        send(&net, &eps, snap(2));
        settle().await;
        assert_eq!(eps[0].reports(Duration::ZERO), [snapshot(2, false)], "lost");

        net.set_faults(NetFaults::default());
        net.cut(1, 3);
        send(&net, &eps, snap(3));
        settle().await;
        assert_eq!(
            eps[0].reports(Duration::ZERO),
            [Report::Unreachable(3), snapshot(3, false)],
            "cut at send"
        );

        net.heal();
        net.set_faults(NetFaults { min_delay: Duration::from_millis(10), ..Default::default() });
        send(&net, &eps, snap(3));
        net.unregister(3);
        settle().await;
        assert_eq!(
            eps[0].reports(Duration::ZERO),
            [Report::Unreachable(3), snapshot(3, false)],
            "target down at delivery"
        );
        assert!(received(&eps[2]).is_empty());
    });
}

#[test]
fn a_crashed_node_receives_nothing_and_its_old_incarnation_sends_nothing() {
    sim(async {
        let (net, trace, eps) = network(1, 2);
        net.set_faults(NetFaults { min_delay: Duration::from_millis(10), ..Default::default() });
        let old_transport = net.transport(2);
        send(&net, &eps, msg(1, 2, MessageType::MsgAppend, 1)); // in flight to incarnation 1

        // Node 2 crashes and restarts before the message is due, with a new inbox.
        net.unregister(2);
        send(&net, &eps, msg(1, 2, MessageType::MsgAppend, 2)); // to a node that is down
        assert_eq!(eps[0].reports(Duration::ZERO), [Report::Unreachable(2)]);
        let new_transport = net.transport(2); // taken before registering: bound to the next one
        let reborn = TestEndpoint::new();
        net.register(2, reborn.deliverer());
        send(&net, &eps, msg(1, 2, MessageType::MsgAppend, 3));
        old_transport.send(msg(2, 1, MessageType::MsgAppendResponse, 4), &eps[1].reporter());
        new_transport.send(msg(2, 1, MessageType::MsgAppendResponse, 5), &reborn.reporter());
        settle().await;

        assert!(received(&eps[1]).is_empty(), "the old inbox got nothing");
        assert_eq!(received(&reborn), [3], "the new incarnation gets only what was sent to it");
        assert_eq!(received(&eps[0]), [5], "the old incarnation's send was dropped");
        assert!(eps[1].reports(Duration::ZERO).is_empty(), "silently");
        assert_eq!(eps[0].reports(Duration::ZERO), [Report::Unreachable(2)], "in-flight drop");
        let stats = net.stats();
        assert_eq!((stats.dropped_down, stats.dropped_dead_sender), (2, 1));
        assert!(trace.lines().iter().any(|l| l.contains("i4 n0 DROP(dead sender)")));
    });
}

/// A busy, faulty run: what arrived where, in which order, and the trace's hash.
fn chaotic_run(seed: u64) -> (Vec<Vec<(u64, u64)>>, u64, usize) {
    sim(async move {
        let (net, trace, eps) = network(seed, 3);
        net.set_faults(NetFaults {
            loss: 0.2,
            duplicate: 0.2,
            min_delay: Duration::from_micros(100),
            max_delay: Duration::from_millis(20),
        });
        for round in 0..100u64 {
            for from in 1..=3 {
                for to in (1..=3).filter(|&t| t != from) {
                    send(&net, &eps, msg(from, to, MessageType::MsgAppend, round));
                }
            }
            if round == 40 {
                net.partition(&[vec![1], vec![2, 3]]);
            }
            if round == 60 {
                net.heal();
            }
            tokio::time::sleep(Duration::from_millis(3)).await;
        }
        settle().await;
        let order = eps
            .iter()
            .map(|e| {
                std::iter::from_fn(|| e.recv_message(Duration::ZERO))
                    .map(|m| (m.from, m.index))
                    .collect()
            })
            .collect();
        (order, trace.hash(), trace.len())
    })
}

#[test]
fn the_same_seed_gives_the_same_run() {
    let a = chaotic_run(42);
    let b = chaotic_run(42);
    assert_eq!(a, b);
    assert!(a.2 > 600, "the trace covers every send and delivery: {} lines", a.2);
    let c = chaotic_run(43);
    assert_ne!(a.1, c.1, "another seed, another run");
}
