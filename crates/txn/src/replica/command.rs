//! What the replicated log carries: [`Command`]s, and the replicated metadata a replica keeps
//! beside the MVCC data.
//!
//! A Raft entry's data is a postcard-encoded [`Command`] (empty data is a new leader's no-op):
//!
//! - `Commit(record)`: a decided read-write transaction, applied at its timestamp. Every replica
//!   applies the same record to the same state, so the result is the same everywhere. A record
//!   whose transaction id was already applied is not applied again (a client that retried a
//!   commit whose first attempt did land).
//! - `Close(ts)`: written by earlier versions only (closed timestamps now travel beside the log,
//!   see the `closed` module): the leader's promise that no commit will ever get a timestamp at
//!   or below `ts` except those in earlier entries. Logs that hold it still apply it: it raises
//!   the closed timestamp, and a later commit at or below it is refused on every replica.
//! - `Gc(h)`: the GC horizon rises to `h`: reads below `h` are refused from then on, and every
//!   replica deletes, in the background, the versions no read at or above `h` can see. The
//!   leader proposes it every `gc_interval` with `h = min(now().earliest - gc_retention, its
//!   safe time)`, so every commit after it in the log lies above `h`.
//!   The horizon is replicated state (`boundkv_storage::mvcc::meta::GC_HORIZON`, written with the
//!   applied index, carried by snapshots), so every replica refuses the same reads.
//!
//! Changing these encodings changes the log format: entries already written would no longer
//! decode. Add variants at the end only, and never change an existing one.

use serde::{Deserialize, Serialize};

use boundkv_clockbound::{LeapPolicy, Timestamp};

use crate::record::CommitRecord;

/// One replicated command.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    /// Apply a decided transaction.
    Commit(CommitRecord),
    /// No commit at or below this timestamp will follow (older logs only; see the module docs).
    Close(Timestamp),
    /// Raise the GC horizon to this timestamp.
    Gc(Timestamp),
}

impl Command {
    /// The command as entry data.
    pub fn encode(&self) -> Vec<u8> {
        postcard::to_allocvec(self).expect("commands always encode")
    }

    /// The command in entry data.
    pub fn decode(data: &[u8]) -> Result<Command, DecodeError> {
        postcard::from_bytes(data).map_err(DecodeError::Command)
    }
}

/// Bytes from the log that do not decode. The same bytes fail the same way on every replica.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// An entry's data is not a [`Command`].
    #[error("entry data is not a command: {0}")]
    Command(postcard::Error),
    /// A membership change's context is not a [`Member`].
    #[error("membership change context is not a member: {0}")]
    Member(postcard::Error),
}

/// A member of the cluster, as the replicated membership records it.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Member {
    /// Its id, unique in the cluster, never 0.
    pub id: u64,
    /// Where it listens for Raft traffic, `host:port`.
    pub peer_address: String,
    /// Where it listens for clients, `host:port`.
    pub client_address: String,
    /// How its clock handles a leap second (`--leap`). Membership records written before the
    /// field existed decode as [`LeapPolicy::Step`], the default.
    #[serde(default)]
    pub leap: LeapPolicy,
}

/// A member as records written before [`Member::leap`] existed encode it. postcard writes no
/// field names or lengths, so `#[serde(default)]` alone cannot read them: a missing last field
/// is an unexpected end of input, and inside a list the next member's bytes would be read as
/// the field. [`Member::decode`] and the member list's key ([`meta::MEMBERS`] vs
/// [`meta::MEMBERS_WITH_LEAP`]) tell the two apart.
#[derive(Deserialize)]
pub(crate) struct LegacyMember {
    id: u64,
    peer_address: String,
    client_address: String,
}

impl From<LegacyMember> for Member {
    fn from(m: LegacyMember) -> Self {
        Member {
            id: m.id,
            peer_address: m.peer_address,
            client_address: m.client_address,
            leap: LeapPolicy::default(),
        }
    }
}

impl Member {
    /// The member as a membership change's context.
    pub fn encode(&self) -> Vec<u8> {
        postcard::to_allocvec(self).expect("members always encode")
    }

    /// The member in a membership change's context: the current encoding, or the one written
    /// before [`Member::leap`] existed (a context is exactly one member, so an old one ends
    /// before the policy and fails the current decoding).
    pub fn decode(data: &[u8]) -> Result<Member, DecodeError> {
        postcard::from_bytes(data).or_else(|e| {
            postcard::from_bytes::<LegacyMember>(data)
                .map(Member::from)
                .map_err(|_| DecodeError::Member(e))
        })
    }
}

/// Names of the replicated metadata a replica keeps in MVCC's metadata keyspace, written in the
/// same batch as what it describes (and so carried by snapshots).
pub mod meta {
    /// The highest closed timestamp applied (u64, big-endian).
    pub const CLOSED_TS: &str = "replica_closed_ts";
    /// The highest timestamp of any command applied (u64, big-endian): a new leader issues
    /// nothing at or below it.
    pub const MAX_LOG_TS: &str = "replica_max_log_ts";
    /// The members and their addresses as written before members recorded their leap policy
    /// (postcard `Vec` of id, peer address, client address); read when
    /// [`MEMBERS_WITH_LEAP`] is absent, deleted when it is written.
    pub const MEMBERS: &str = "replica_members";
    /// The members, their addresses and leap policies (postcard `Vec<Member>`).
    pub const MEMBERS_WITH_LEAP: &str = "replica_members_v2";
}

/// Metadata that is this node's alone and stays out of snapshots.
pub const LOCAL_META: &[&str] = &[
    boundkv_storage::mvcc::meta::CLOCK_HIGH_WATER_MARK,
    boundkv_storage::mvcc::meta::MAX_VERSION_TS,
];

/// A snapshot's data: every MVCC pair (versions, transaction records, replicated metadata).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotData {
    /// The applied index the state is at.
    pub applied_index: u64,
    /// The raw engine pairs, from `Mvcc::export`.
    pub pairs: Vec<(Vec<u8>, Vec<u8>)>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::{TxnId, Write};

    #[test]
    fn commands_round_trip_and_garbage_is_an_error() {
        let c = Command::Commit(CommitRecord {
            txn_id: TxnId([7; 16]),
            ts: Timestamp::from_nanos(42),
            writes: vec![Write { key: "k".into(), value: Some("v".into()) }],
        });
        assert_eq!(Command::decode(&c.encode()), Ok(c));
        let close = Command::Close(Timestamp::from_nanos(9));
        assert_eq!(Command::decode(&close.encode()), Ok(close));
        let gc = Command::Gc(Timestamp::from_nanos(5));
        assert_eq!(Command::decode(&gc.encode()), Ok(gc));
        // The log format: variants keep their indexes (Commit 0, Close 1, Gc 2).
        assert_eq!(Command::Close(Timestamp::from_nanos(1)).encode()[0], 1);
        assert_eq!(Command::Gc(Timestamp::from_nanos(1)).encode()[0], 2);
        assert!(matches!(Command::decode(&[0xff, 0x01]), Err(DecodeError::Command(_))));
        assert!(matches!(Member::decode(&[0xff]), Err(DecodeError::Member(_))));
    }

    #[test]
    fn members_written_before_the_leap_policy_still_decode() {
        #[derive(Serialize)]
        struct Old<'a>(u64, &'a str, &'a str);
        let old = postcard::to_allocvec(&Old(3, "p:1", "c:1")).unwrap();
        let m = Member::decode(&old).unwrap();
        assert_eq!((m.id, m.leap), (3, LeapPolicy::Step));
        assert_eq!(m.client_address, "c:1");
        let smear = Member { leap: LeapPolicy::Smear, ..m };
        assert_eq!(Member::decode(&smear.encode()), Ok(smear));
    }
}
