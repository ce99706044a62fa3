//! The server's edge: wire types in, replica types out, and back. The client crate depends only
//! on the wire crate, so every conversion between the protocol and the server's internals lives
//! here, in one place.

use std::collections::{BTreeMap, BTreeSet};

use boundkv_clockbound::Timestamp;
use boundkv_txn::replica::{Member, MemberInfo, ReadAt};
use boundkv_txn::{CommitInfo, CommitRequest, Error, TxnId};
use boundkv_wire as wire;

/// A wire timestamp as the clock crate's.
pub fn ts_in(ts: wire::Timestamp) -> Timestamp {
    Timestamp::from_nanos(ts.as_nanos())
}

/// A clock-crate timestamp as the wire's.
pub fn ts_out(ts: Timestamp) -> wire::Timestamp {
    wire::Timestamp::from_nanos(ts.as_nanos())
}

/// Which snapshot, from the wire.
pub fn read_at_in(at: wire::ReadAt) -> ReadAt {
    match at {
        wire::ReadAt::Latest => ReadAt::Latest,
        wire::ReadAt::Exact(ts) => ReadAt::Exact(ts_in(ts)),
        wire::ReadAt::MaxStaleness(d) => ReadAt::MaxStaleness(d),
    }
}

/// A commit request from the wire. Two writes to one key are refused: a client sends each key
/// once, with its final value.
pub fn commit_in(req: wire::CommitRequest) -> Result<CommitRequest, wire::WireError> {
    let mut writes = BTreeMap::new();
    for (key, value) in req.writes {
        if writes.insert(key.clone(), value).is_some() {
            return Err(wire::WireError::Malformed(format!(
                "key \"{}\" is written twice in one commit",
                key.escape_ascii()
            )));
        }
    }
    Ok(CommitRequest {
        txn_id: TxnId(req.txn_id),
        read_ts: req.read_ts.map(ts_in),
        read_keys: req.read_keys.into_iter().collect::<BTreeSet<_>>(),
        read_ranges: req.read_ranges,
        writes,
    })
}

/// What a commit reports, for the wire.
pub fn commit_out(info: CommitInfo) -> wire::CommitInfo {
    wire::CommitInfo {
        ts: ts_out(info.ts),
        commit_wait: info.commit_wait,
        durable: info.durable,
        wait_beyond_durable: info.wait_beyond_durable,
        latency: info.latency,
    }
}

/// A member for the wire.
pub fn member_out(m: &Member, voter: bool) -> wire::Member {
    wire::Member {
        id: m.id,
        peer_address: m.peer_address.clone(),
        client_address: m.client_address.clone(),
        voter,
        leap: m.leap.to_string(),
    }
}

/// The members for the wire.
pub fn members_out(members: &[MemberInfo]) -> Vec<wire::Member> {
    members.iter().map(|m| member_out(&m.member, m.voter)).collect()
}

/// A transaction error for the wire. `self_id` is this node (a "not the leader" naming this
/// node means it leads but cannot serve yet: `Unavailable`); `member` looks a node up.
pub fn error_out(
    e: Error,
    self_id: u64,
    member: impl Fn(u64) -> Option<wire::Member>,
) -> wire::WireError {
    use wire::WireError as W;
    let len = |n: usize| n as u64;
    match e {
        Error::Conflict { key, read_ts, conflicting_commit_ts } => W::Conflict {
            key,
            read_ts: ts_out(read_ts),
            conflicting_commit_ts: ts_out(conflicting_commit_ts),
        },
        Error::Expired { read_ts, .. } => W::Expired { read_ts: ts_out(read_ts) },
        Error::Clock(e) => W::ClockUnavailable(e.to_string()),
        // The wire keeps its variants: a fenced clock is, to a client, a clock this node cannot
        // use now (nothing happened; reads go elsewhere, commits find the leader it hands over to).
        e @ Error::ClockFenced { .. } => W::ClockUnavailable(e.to_string()),
        Error::BelowGcHorizon { ts, horizon } => {
            W::BelowGcHorizon { ts: ts_out(ts), horizon: ts_out(horizon) }
        }
        Error::TimestampInFuture { ts, latest } => {
            W::TimestampInFuture { ts: ts_out(ts), latest: ts_out(latest) }
        }
        Error::ClockBehind { ts, latest } => {
            W::ClockBehind { ts: ts_out(ts), latest: ts_out(latest) }
        }
        Error::KeyTooLarge { len: l, max } => W::KeyTooLarge { len: len(l), max: len(max) },
        Error::ValueTooLarge { len: l, max } => W::ValueTooLarge { len: len(l), max: len(max) },
        Error::TransactionTooLarge { what, max } => W::TransactionTooLarge { what, max: len(max) },
        Error::NotLeader { leader: Some(id), reason } if id == self_id => W::Unavailable(reason),
        Error::NotLeader { leader, .. } => W::NotLeader { leader: leader.and_then(member) },
        Error::Unavailable(why) => W::Unavailable(why),
        Error::FollowerBehind { requested, safe_time, leader } => W::FollowerBehind {
            requested: ts_out(requested),
            safe_time: ts_out(safe_time),
            leader: leader.and_then(member),
        },
        Error::Rejected(why) => W::Malformed(why),
        e @ Error::LeapPolicyMismatch { .. } => W::Malformed(e.to_string()),
        Error::OutcomeUnknown(why) => W::OutcomeUnknown(why),
        Error::ReadOnly => W::Malformed("a write in a read-only transaction".into()),
        Error::Storage(e) => W::Fatal(format!("storage failure: {e}")),
        Error::Fatal(why) => W::Fatal(why),
        other => W::Fatal(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    #[test]
    fn not_leader_naming_this_node_is_unavailable() {
        let m = |id: u64| {
            Some(member_out(
                &Member {
                    id,
                    peer_address: "p".into(),
                    client_address: format!("c{id}"),
                    leap: Default::default(),
                },
                true,
            ))
        };
        let e = error_out(Error::NotLeader { leader: Some(1), reason: "starting".into() }, 1, m);
        assert_eq!(e, wire::WireError::Unavailable("starting".into()));
        let e = error_out(Error::NotLeader { leader: Some(2), reason: "x".into() }, 1, m);
        assert!(
            matches!(e, wire::WireError::NotLeader { leader: Some(ref l) } if l.client_address == "c2")
        );
    }

    #[test]
    fn a_key_written_twice_is_malformed() {
        let req = wire::CommitRequest {
            txn_id: [1; 16],
            read_ts: None,
            read_keys: vec![],
            read_ranges: vec![],
            writes: vec![(Bytes::from("k"), None), (Bytes::from("k"), Some(Bytes::from("v")))],
        };
        assert!(matches!(commit_in(req), Err(wire::WireError::Malformed(_))));
    }
}
