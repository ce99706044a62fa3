//! A node's answer to `Status`: its Raft state, the members, its clock, and what it can serve.
//!
//! The clock's `problem` is the clock watcher's state when that is not usable (`clock unusable,
//! bound ±6.1ms (ceiling ±125ms) for 12.3s: the clock's status is Unknown`), else judged by the
//! replica's own policy
//! ([`Replica::policy`](boundkv_txn::replica::Replica::policy)), which also refuses bounds too
//! wide for the lease: a leader that serves nothing because of its clock says why there
//! (`boundkv status` prints it as `UNUSABLE: ...`).

use boundkv_consensus::node::Role;
use boundkv_storage::SledEngine;
use boundkv_txn::replica::Replica;
use boundkv_wire as wire;

use crate::clock::ClockWatch;
use crate::convert::{member_out, members_out, ts_out};

/// This node's status, for the wire.
pub(crate) fn node_status(replica: &Replica<SledEngine>, watch: &ClockWatch) -> wire::NodeStatus {
    let state = replica.state();
    let members = replica.members();
    let voter = state.is_voter(replica.id());
    let role = match state.role {
        Role::Leader => wire::Role::Leader,
        _ if !voter => wire::Role::Learner,
        Role::Follower => wire::Role::Follower,
        Role::Candidate => wire::Role::Candidate,
        Role::PreCandidate => wire::Role::PreCandidate,
    };
    let leader = state.leader.and_then(|id| {
        members.iter().find(|m| m.member.id == id).map(|m| member_out(&m.member, m.voter))
    });
    wire::NodeStatus {
        id: replica.id(),
        role,
        term: state.term,
        leader,
        commit_index: state.commit_index,
        applied_index: state.applied_index,
        members: members_out(&members),
        clock: clock_info(replica, watch),
        safe_time: ts_out(replica.safe_time()),
        closed_ts: ts_out(replica.closed_ts()),
        lease_valid: replica.lease_valid(),
    }
}

fn clock_info(replica: &Replica<SledEngine>, watch: &ClockWatch) -> wire::ClockInfo {
    let clock = replica.clock();
    let now = clock.now();
    // A clock the peer clock checks fenced is unusable too, and `status` says why.
    let problem = replica
        .policy()
        .check(now.clone())
        .err()
        .map(|e| e.to_string())
        .or_else(|| replica.state().clock_fence.map(|why| format!("fenced {why}")));
    // The watcher's state says since when (and carries a step guard's or peer checks' verdict).
    let problem = match watch.report() {
        Some(report) if !report.health.is_usable() => Some(report.to_string()),
        _ => problem,
    };
    let peers: Vec<wire::PeerClockInfo> = replica
        .node()
        .clock_checks()
        .peers
        .into_iter()
        .map(|(id, p)| wire::PeerClockInfo {
            id,
            offset_nanos: p.offset_nanos,
            uncertainty: p.uncertainty,
            round_trip: p.round_trip,
            consistent: p.consistent,
            age: p.age,
        })
        .collect();
    let leap = match clock.leap_report() {
        Some(report) => report.to_string(),
        None => format!("{}; kernel: not read", replica.leap_policy()),
    };
    match now {
        Ok(r) => wire::ClockInfo {
            source: clock.describe(),
            status: r.status.to_string(),
            earliest: ts_out(r.earliest()),
            latest: ts_out(r.latest()),
            bound: r.bound(),
            problem,
            peers,
            leap,
        },
        Err(e) => wire::ClockInfo {
            source: clock.describe(),
            status: "error".into(),
            earliest: wire::Timestamp::ZERO,
            latest: wire::Timestamp::ZERO,
            bound: std::time::Duration::ZERO,
            problem: Some(problem.unwrap_or_else(|| e.to_string())),
            peers,
            leap,
        },
    }
}
