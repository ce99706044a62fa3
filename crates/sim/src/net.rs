//! [`SimNet`]: the simulated network between Raft members, a [`Transport`] whose every loss,
//! delay, duplicate and partition is drawn from the simulation's seed.
//!
//! # How a message travels
//!
//! [`Transport::send`] never blocks and never delivers. It decides the message's *fate* at once,
//! with the network's own seeded rng, and records it in the trace:
//!
//! 1. dropped if the sending incarnation is dead (a stray task of a crashed node), silently;
//! 2. dropped if the link `from -> to` is cut or `to` is down, reporting `unreachable(to)`;
//! 3. lost with probability [`NetFaults::loss`], silently (a lost packet tells nobody);
//! 4. otherwise queued for delivery after a delay drawn uniformly from
//!    `[min_delay, max_delay]`, and, with probability [`NetFaults::duplicate`], queued a second
//!    time after a second, independent delay.
//!
//! Independent delays are what reorders messages: a heartbeat sent after an append may overtake
//! it. The queue is ordered by `(deliver_at, seq)`, `seq` being the send order, so two messages
//! due at the same nanosecond leave in the order they were sent and the run stays a function of
//! the seed.
//!
//! The delivery loop, [`SimNet::run`] (the simulator spawns it), sleeps in virtual time until the
//! earliest message is due, or until a send wakes it. Before handing a message over it checks
//! the world *again*, because it may have changed while the message was in flight: a link cut or
//! a partition since the send drops it, and so does a target that crashed or restarted since
//! (each [`SimNet::register`] starts a new *incarnation* of a node, and a message addressed to
//! incarnation 3 is never handed to incarnation 4). Messages *from* a node that crashed after
//! sending them are still delivered: they were already on the wire.
//!
//! # Snapshots
//!
//! raft-rs keeps a follower in snapshot state until it hears how the snapshot went, so every
//! `MsgSnapshot` is reported exactly once through [`Reporter::snapshot`]: `false` at once if it
//! was dropped or lost at send, otherwise when its first copy is delivered (`true`) or dropped
//! at delivery (`false`). A duplicate copy never reports.
//!
//! # Example
//!
//! With `min_delay` 1 ms, `max_delay` 10 ms and `loss` 0.1, node 1 leading in term 3 sends
//! append #7 (index 17, two entries) to node 2, and a heartbeat #8 to node 3 behind a one-way
//! cut. The trace reads:
//!
//! ```text
//!     0.120000s net #7 1->2 MsgAppend t3 i17 n2 delay 6.4ms
//!     0.120000s net #8 1->3 MsgHeartbeat t3 i0 n0 DROP(cut)
//!     0.127000s net #7 1->2 MsgAppend t3 i17 n2 deliver
//! ```
//!
//! (the delivery lands on tokio's millisecond timer tick at or after its deadline).
//!
//! # Clock probes
//!
//! The peer clock checks' probes and answers ([`ClockFrame`], sent through
//! [`Transport::send_clock`]) travel the same way: the same fates, drawn from the same rng in
//! send order, the same delays, cuts and incarnations; they only report nothing (a lost probe
//! is a peer not heard from). In the trace: `net #9 1->3 ClockProbe p4 delay 2.0ms`.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use boundkv_consensus::clock_check::{ClockFrame, ClockMessage};
use boundkv_consensus::raft::prelude::{Message, MessageType};
use boundkv_consensus::transport::{Deliverer, Reporter, Transport};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::sync::Notify;

use crate::trace::Trace;

/// What the network does to messages. The default is a perfect network: no loss, no
/// duplicates, no delay.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct NetFaults {
    /// Probability in `[0, 1]` that a message is lost.
    pub loss: f64,
    /// Probability in `[0, 1]` that a delivered message is delivered twice.
    pub duplicate: f64,
    /// The shortest delay.
    pub min_delay: Duration,
    /// The longest delay (taken as `min_delay` if smaller).
    pub max_delay: Duration,
}

/// Counters of what the network did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NetStats {
    /// Messages handed to `send`.
    pub sent: u64,
    /// Copies handed to a node.
    pub delivered: u64,
    /// Extra copies queued by duplication.
    pub duplicated: u64,
    /// Messages lost at random.
    pub lost: u64,
    /// Copies dropped because the link was cut (at send or at delivery).
    pub dropped_cut: u64,
    /// Copies dropped because the target was down or had restarted.
    pub dropped_down: u64,
    /// Messages dropped because their sender's incarnation was dead.
    pub dropped_dead_sender: u64,
}

/// The simulated network. Cheap to clone; clones share one network.
#[derive(Clone)]
pub struct SimNet {
    inner: Arc<NetInner>,
}

struct NetInner {
    state: Mutex<NetState>,
    /// Wakes the delivery loop after a send or a shutdown.
    wake: Notify,
    trace: Trace,
}

struct NetState {
    rng: StdRng,
    faults: NetFaults,
    nodes: BTreeMap<u64, Member>,
    /// Directed links that drop everything: (from, to).
    cut: BTreeSet<(u64, u64)>,
    /// In flight, by (deliver_at in ns since the simulation's origin, seq).
    queue: BTreeMap<(u64, u64), InFlight>,
    next_seq: u64,
    stats: NetStats,
    shutdown: bool,
}

/// A node as the network knows it.
struct Member {
    /// Bumped by every `register`; 0 = never registered.
    incarnation: u64,
    /// `Some` while the current incarnation is up.
    deliverer: Option<Deliverer>,
}

/// What a message on the wire carries.
#[derive(Clone)]
enum Payload {
    /// A Raft message.
    Raft(Message),
    /// A clock probe or answer.
    Clock(ClockFrame),
}

/// One copy of a message on the wire.
struct InFlight {
    from: u64,
    to: u64,
    /// The target's incarnation when the message was sent.
    to_incarnation: u64,
    msg: Payload,
    /// Where a Raft message's fate is reported (clock frames report nothing).
    reporter: Option<Reporter>,
    /// Whether this copy reports the snapshot's fate (the first copy of a `MsgSnapshot`).
    reports_snapshot: bool,
    /// The message's sequence number, shared by its duplicate, for the trace.
    id: u64,
}

/// A compact description of a message for the trace: `#7 1->2 MsgAppend t3 i17 n2`.
struct Summary<'a> {
    id: u64,
    from: u64,
    msg: &'a Payload,
}

impl fmt::Display for Summary<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let m = match self.msg {
            Payload::Raft(m) => m,
            Payload::Clock(c) => {
                let (kind, probe) = match c.message {
                    ClockMessage::Probe { probe, .. } => ("ClockProbe", probe),
                    ClockMessage::Reply { probe, .. } => ("ClockReply", probe),
                    ClockMessage::Closed { term, closed, applied } => {
                        return write!(
                            f,
                            "net #{} {}->{} Closed t{term} {closed} i{applied}",
                            self.id, self.from, c.to
                        );
                    }
                    ClockMessage::CloseRequest { ts } => {
                        return write!(
                            f,
                            "net #{} {}->{} CloseRequest {ts}",
                            self.id, self.from, c.to
                        );
                    }
                };
                return write!(f, "net #{} {}->{} {kind} p{probe}", self.id, self.from, c.to);
            }
        };
        write!(
            f,
            "net #{} {}->{} {:?} t{} i{} n{}",
            self.id,
            self.from,
            m.to,
            m.get_msg_type(),
            m.term,
            m.index,
            m.entries.len()
        )
    }
}

fn millis(nanos: u64) -> f64 {
    nanos as f64 / 1e6
}

impl NetState {
    fn draw_delay(&mut self) -> u64 {
        let lo = u64::try_from(self.faults.min_delay.as_nanos()).unwrap_or(u64::MAX);
        let hi = u64::try_from(self.faults.max_delay.as_nanos()).unwrap_or(u64::MAX).max(lo);
        self.rng.random_range(lo..=hi)
    }

    fn is_up(&self, id: u64, incarnation: u64) -> Option<&Deliverer> {
        let member = self.nodes.get(&id)?;
        if member.incarnation != incarnation {
            return None;
        }
        member.deliverer.as_ref()
    }
}

impl SimNet {
    /// A network with no members, no cuts and no faults, its fates drawn from `seed`; it records
    /// into `trace` and reads time from it.
    pub fn new(seed: u64, trace: Trace) -> Self {
        SimNet {
            inner: Arc::new(NetInner {
                state: Mutex::new(NetState {
                    rng: StdRng::seed_from_u64(seed),
                    faults: NetFaults::default(),
                    nodes: BTreeMap::new(),
                    cut: BTreeSet::new(),
                    queue: BTreeMap::new(),
                    next_seq: 1,
                    stats: NetStats::default(),
                    shutdown: false,
                }),
                wake: Notify::new(),
                trace,
            }),
        }
    }

    fn state(&self) -> MutexGuard<'_, NetState> {
        self.inner.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Node `id` (re)started and receives through `deliverer`: a new incarnation, to which
    /// nothing sent to an earlier one will be delivered.
    pub fn register(&self, id: u64, deliverer: Deliverer) {
        let incarnation = {
            let mut s = self.state();
            let member = s.nodes.entry(id).or_insert(Member { incarnation: 0, deliverer: None });
            member.incarnation += 1;
            member.deliverer = Some(deliverer);
            member.incarnation
        };
        self.inner.trace.record(format_args!("net node {id} up (incarnation {incarnation})"));
    }

    /// Node `id` crashed or stopped: everything sent to it from now on, or still in flight to
    /// it, is dropped, and its transports' sends are dropped too.
    pub fn unregister(&self, id: u64) {
        if let Some(member) = self.state().nodes.get_mut(&id) {
            member.deliverer = None;
        }
        self.inner.trace.record(format_args!("net node {id} down"));
    }

    /// A transport for node `id`, bound to its current incarnation if it is up, or else to the
    /// one its next [`SimNet::register`] starts (so a restarting node may take its transport
    /// before or after registering). Its sends are dropped once that incarnation ends.
    pub fn transport(&self, id: u64) -> Arc<dyn Transport> {
        let incarnation = match self.state().nodes.get(&id) {
            Some(m) if m.deliverer.is_some() => m.incarnation,
            Some(m) => m.incarnation + 1,
            None => 1,
        };
        Arc::new(SimTransport { id, incarnation, net: self.clone() })
    }

    /// Sets what the network does to messages sent from now on.
    ///
    /// # Panics
    /// If a probability is outside `[0, 1]`.
    pub fn set_faults(&self, faults: NetFaults) {
        for p in [faults.loss, faults.duplicate] {
            assert!((0.0..=1.0).contains(&p), "a NetFaults probability must be in [0, 1]: {p}");
        }
        self.state().faults = faults;
        self.inner.trace.record(format_args!(
            "net faults loss {} dup {} delay {:.1}..{:.1}ms",
            faults.loss,
            faults.duplicate,
            millis(faults.min_delay.as_nanos() as u64),
            millis(faults.max_delay.as_nanos() as u64)
        ));
    }

    /// Cuts every link between members of different `groups`, both ways, on top of any cuts
    /// already made. Nodes in no group keep their links.
    pub fn partition(&self, groups: &[Vec<u64>]) {
        {
            let mut s = self.state();
            for (i, a) in groups.iter().enumerate() {
                for b in groups.iter().skip(i + 1) {
                    for &x in a {
                        for &y in b {
                            s.cut.insert((x, y));
                            s.cut.insert((y, x));
                        }
                    }
                }
            }
        }
        self.inner.trace.record(format_args!("net partition {groups:?}"));
    }

    /// Cuts the link from `from` to `to` (one way: `to` can still reach `from`).
    pub fn cut(&self, from: u64, to: u64) {
        self.state().cut.insert((from, to));
        self.inner.trace.record(format_args!("net cut {from}->{to}"));
    }

    /// Restores every link.
    pub fn heal(&self) {
        self.state().cut.clear();
        self.inner.trace.record("net heal");
    }

    /// Whether the link from `from` to `to` is cut.
    pub fn is_cut(&self, from: u64, to: u64) -> bool {
        self.state().cut.contains(&(from, to))
    }

    /// What the network has done so far.
    pub fn stats(&self) -> NetStats {
        self.state().stats
    }

    /// Copies still on the wire.
    pub fn in_flight(&self) -> usize {
        self.state().queue.len()
    }

    /// Makes [`SimNet::run`] return (messages still in flight are never delivered).
    pub fn shutdown(&self) {
        self.state().shutdown = true;
        self.inner.wake.notify_one();
    }

    /// The delivery loop: hands each message over when it is due, in `(deliver_at, seq)` order,
    /// until [`SimNet::shutdown`]. Spawn it on the simulation's runtime.
    pub async fn run(self) {
        let time = self.inner.trace.time();
        loop {
            let next_due = {
                let s = self.state();
                if s.shutdown {
                    return;
                }
                s.queue.keys().next().map(|&(at, _)| at)
            };
            match next_due {
                Some(at) if at <= time.now_nanos() => self.deliver_first(),
                Some(at) => {
                    tokio::select! {
                        biased;
                        () = self.inner.wake.notified() => {}
                        () = tokio::time::sleep_until(time.instant_at(at)) => {}
                    }
                }
                None => self.inner.wake.notified().await,
            }
        }
    }

    /// Delivers or drops the earliest message in flight.
    fn deliver_first(&self) {
        let (copy, target) = {
            let mut s = self.state();
            let Some((_, copy)) = s.queue.pop_first() else { return };
            let target = if s.cut.contains(&(copy.from, copy.to)) {
                s.stats.dropped_cut += 1;
                Err("DROP(cut)")
            } else if let Some(deliverer) = s.is_up(copy.to, copy.to_incarnation) {
                Ok(deliverer.clone())
            } else {
                s.stats.dropped_down += 1;
                Err("DROP(down)")
            };
            (copy, target)
        };
        let summary = Summary { id: copy.id, from: copy.from, msg: &copy.msg };
        let line = format!("{summary}");
        let (to, reporter, reports_snapshot) = (copy.to, copy.reporter, copy.reports_snapshot);
        let delivered = match target {
            Ok(deliverer) => {
                let delivered = match copy.msg {
                    Payload::Raft(msg) => deliverer.deliver(msg),
                    Payload::Clock(frame) => deliverer.deliver_clock(frame),
                };
                if delivered {
                    self.state().stats.delivered += 1;
                    self.inner.trace.record(format_args!("{line} deliver"));
                } else {
                    self.state().stats.dropped_down += 1;
                    self.inner.trace.record(format_args!("{line} DROP(stopped)"));
                }
                delivered
            }
            Err(why) => {
                self.inner.trace.record(format_args!("{line} {why}"));
                false
            }
        };
        let Some(reporter) = reporter else { return };
        if !delivered {
            reporter.unreachable(to);
        }
        if reports_snapshot {
            reporter.snapshot(to, delivered);
        }
    }

    fn send(&self, from: u64, incarnation: u64, msg: Payload, reporter: Option<&Reporter>) {
        let now = self.inner.trace.time().now_nanos();
        let (to, is_snapshot) = match &msg {
            Payload::Raft(m) => (m.to, m.get_msg_type() == MessageType::MsgSnapshot),
            Payload::Clock(c) => (c.to, false),
        };
        let mut s = self.state();
        s.stats.sent += 1;
        let id = s.next_seq;
        s.next_seq += 1;
        let line = format!("{}", Summary { id, from, msg: &msg });

        // The sender's own incarnation must be alive: a dead node sends nothing, and tells nobody.
        if s.is_up(from, incarnation).is_none() {
            s.stats.dropped_dead_sender += 1;
            drop(s);
            self.inner.trace.record(format_args!("{line} DROP(dead sender)"));
            if is_snapshot && let Some(reporter) = reporter {
                reporter.snapshot(to, false);
            }
            return;
        }
        let refused = if s.cut.contains(&(from, to)) {
            s.stats.dropped_cut += 1;
            Some("DROP(cut)")
        } else if s.nodes.get(&to).is_none_or(|m| m.deliverer.is_none()) {
            s.stats.dropped_down += 1;
            Some("DROP(down)")
        } else {
            None
        };
        if let Some(why) = refused {
            drop(s);
            self.inner.trace.record(format_args!("{line} {why}"));
            if let Some(reporter) = reporter {
                reporter.unreachable(to);
                if is_snapshot {
                    reporter.snapshot(to, false);
                }
            }
            return;
        }
        let faults = s.faults;
        if faults.loss > 0.0 && s.rng.random_bool(faults.loss) {
            s.stats.lost += 1;
            drop(s);
            self.inner.trace.record(format_args!("{line} DROP(loss)"));
            if is_snapshot && let Some(reporter) = reporter {
                reporter.snapshot(to, false);
            }
            return;
        }
        let to_incarnation = s.nodes[&to].incarnation;
        let delay = s.draw_delay();
        let dup_delay =
            (faults.duplicate > 0.0 && s.rng.random_bool(faults.duplicate)).then(|| s.draw_delay());
        if let Some(dup_delay) = dup_delay {
            s.stats.duplicated += 1;
            let dup_seq = s.next_seq;
            s.next_seq += 1;
            let copy = InFlight {
                from,
                to,
                to_incarnation,
                msg: msg.clone(),
                reporter: reporter.cloned(),
                reports_snapshot: false,
                id,
            };
            s.queue.insert((now.saturating_add(dup_delay), dup_seq), copy);
        }
        let copy = InFlight {
            from,
            to,
            to_incarnation,
            msg,
            reporter: reporter.cloned(),
            reports_snapshot: is_snapshot,
            id,
        };
        s.queue.insert((now.saturating_add(delay), id), copy);
        drop(s);
        match dup_delay {
            Some(dup) => self.inner.trace.record(format_args!(
                "{line} delay {:.1}ms dup {:.1}ms",
                millis(delay),
                millis(dup)
            )),
            None => self.inner.trace.record(format_args!("{line} delay {:.1}ms", millis(delay))),
        }
        self.inner.wake.notify_one();
    }
}

/// One incarnation's way onto the network.
struct SimTransport {
    id: u64,
    incarnation: u64,
    net: SimNet,
}

impl Transport for SimTransport {
    fn send(&self, msg: Message, reporter: &Reporter) {
        self.net.send(self.id, self.incarnation, Payload::Raft(msg), Some(reporter));
    }

    fn send_clock(&self, frame: ClockFrame) {
        self.net.send(self.id, self.incarnation, Payload::Clock(frame), None);
    }
}
