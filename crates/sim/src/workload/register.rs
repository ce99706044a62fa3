//! The `register` workload: [`KEYS`] independent integer registers, each read, written and
//! compare-and-set by many processes, checked for per-key linearizability.
//!
//! | op | `f` | invoke value | how | `ok` value, `ts`, `read_ts` |
//! |---|---|---|---|---|
//! | read | `"read"` | `[k, null]` | a read-only snapshot at `ReadAt::Latest` of a *random* live replica | `[k, v]` (`null` if never written), ts = the read timestamp |
//! | stale read | `"read-stale"` | `[k, null]` | a snapshot at `ReadAt::MaxStaleness(0–300 ms)` of a random live replica (at its closed timestamp, typically) | as `read`; checked against the versions at its ts, not against real time |
//! | write | `"write"` | `[k, v]` | a blind commit at the leader | `[k, v]`, ts = the commit timestamp |
//! | cas | `"cas"` | `[k, [old, new]]` | `begin_read_write`, `get`, and if the value is `old` a commit of `new` with the key as its read set | ts = commit, read_ts = the read's; `fail` if the value was not `old` |
//!
//! Register `k` is stored under the key `r{k}`, its value as decimal text, as the process-level
//! suite stores it. Every value written is unique (one counter for the whole run), so the
//! checker can tell writes apart. Reads go to followers half the time and more (any live
//! replica): a follower serves `ReadAt::Latest` only once its closed timestamp passes it, which
//! is what makes a read there linearizable; a bug in closed timestamps or commit wait shows up
//! as a read that misses an acknowledged write.
//!
//! For example, with `n1` leading:
//!
//! ```text
//! p0 invoke write [2, 7]                      → n1 commit {r2: "7"}       ← ts 1_000
//! p0 ok     write [2, 7]  node n1 ts 1_000
//! p1 invoke cas [2, [7, 8]]                   → n1 begin_read_write = 1_100; get r2 @1_100 = "7";
//!                                               commit {r2: "8"} read_ts 1_100 read {r2} ← ts 1_200
//! p1 ok     cas [2, [7, 8]] node n1 ts 1_200 read_ts 1_100
//! p2 invoke read [2, null]                    → n3 begin_read_only(Latest) = 1_300 (waits for close ≥ 1_300)
//! p2 ok     read [2, 8]   node n3 ts 1_300
//! ```

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use bytes::Bytes;
use rand::Rng;
use serde_json::json;

use boundkv_storage::Engine;
use boundkv_txn::replica::ReadAt;

use super::client::{CommitOutcome, TxnOutcome};
use super::{Completion, EventType, Process, Shared};

/// How many registers there are (`0..KEYS`).
pub const KEYS: u64 = 5;

/// What the register processes share: the next unique value and the last value invoked per key
/// (which a cas expects, most of the time).
#[derive(Debug)]
pub struct Registers {
    next_value: u64,
    last_written: BTreeMap<u64, u64>,
}

impl Default for Registers {
    fn default() -> Self {
        Registers { next_value: 1, last_written: BTreeMap::new() }
    }
}

impl Registers {
    fn unique(&mut self, key: u64) -> u64 {
        let v = self.next_value;
        self.next_value += 1;
        self.last_written.insert(key, v);
        v
    }
}

/// The storage key of register `key`.
pub fn storage_key(key: u64) -> Bytes {
    Bytes::from(format!("r{key}"))
}

/// A stored decimal value (`u64::MAX` for anything unparseable, which no write produces).
pub fn parse_int(b: &[u8]) -> u64 {
    std::str::from_utf8(b).ok().and_then(|s| s.parse().ok()).unwrap_or(u64::MAX)
}

fn registers<T>(shared: &Mutex<Shared>, f: impl FnOnce(&mut Registers) -> T) -> T {
    match &mut *shared.lock().unwrap_or_else(|e| e.into_inner()) {
        Shared::Register(r) => f(r),
        _ => unreachable!("register operations run with register state"),
    }
}

/// One register operation on a random key: a read (30%), a bounded-staleness read (20%), a
/// write (30%) or a cas (20%).
pub async fn op<E: Engine>(process: &mut Process<E>, shared: &Mutex<Shared>) {
    let key = process.client.rng().random_range(0..KEYS);
    let roll = process.client.rng().random_range(0..10u32);
    if roll < 3 {
        read(process, key).await;
    } else if roll < 5 {
        let staleness = Duration::from_millis(process.client.rng().random_range(0..300));
        read_stale(process, key, staleness).await;
    } else if roll < 8 {
        let v = registers(shared, |r| r.unique(key));
        let written = write(process, key, v).await;
        if written && process.client.home().is_some() {
            // Read it back where this client reads: it must be there, whichever replica that is.
            read(process, key).await;
        }
    } else {
        let stale = process.client.rng().random_bool(0.25);
        let (expected, new) = registers(shared, |r| {
            let last = r.last_written.get(&key).copied().unwrap_or(1);
            // Mostly the last value written; sometimes an older one (a cas bound to fail).
            let expected = if stale { r.next_value.saturating_sub(3).max(1) } else { last };
            (expected, r.unique(key))
        });
        cas(process, key, expected, new).await;
    }
}

/// Reads register `key` at a random live replica.
pub async fn read<E: Engine>(process: &mut Process<E>, key: u64) {
    process.invoke("read", json!([key, null]));
    let completion = match process.client.snapshot(&[storage_key(key)]).await {
        Ok(read) => {
            let v = read.values[0].as_deref().map(parse_int);
            Completion::ok(json!([key, v])).at(read.node).ts(read.ts.as_nanos())
        }
        Err(e) => Completion::fail(e),
    };
    process.complete("read", completion);
}

/// Reads register `key` at a random live replica, at most `staleness` old (`f` =
/// `"read-stale"`: not linearizable by design, so the register checker leaves it out, but the
/// timestamp checker holds it to the versions at its timestamp).
pub async fn read_stale<E: Engine>(process: &mut Process<E>, key: u64, staleness: Duration) {
    process.invoke("read-stale", json!([key, null]));
    let completion = match process
        .client
        .snapshot_at(&[storage_key(key)], ReadAt::MaxStaleness(staleness))
        .await
    {
        Ok(read) => {
            let v = read.values[0].as_deref().map(parse_int);
            Completion::ok(json!([key, v])).at(read.node).ts(read.ts.as_nanos())
        }
        Err(e) => Completion::fail(e),
    };
    process.complete("read-stale", completion);
}

/// Writes `v` to register `key` with a blind commit at the leader; whether it was acknowledged.
pub async fn write<E: Engine>(process: &mut Process<E>, key: u64, v: u64) -> bool {
    let value = json!([key, v]);
    process.invoke("write", value.clone());
    let writes = BTreeMap::from([(storage_key(key), Some(Bytes::from(v.to_string())))]);
    let completion = match process.client.blind_write(writes).await {
        CommitOutcome::Committed { node, info } => {
            Completion::ok(value).at(node).ts(info.ts.as_nanos())
        }
        CommitOutcome::NotApplied { error, .. } => Completion::fail(error),
        CommitOutcome::Unknown { error } => Completion::info(error),
    };
    process.complete("write", completion) == EventType::Ok
}

/// Sets register `key` to `new` if it holds `expected`, in one read-write transaction.
pub async fn cas<E: Engine>(process: &mut Process<E>, key: u64, expected: u64, new: u64) {
    let value = json!([key, [expected, new]]);
    process.invoke("cas", value.clone());
    let k = storage_key(key);
    let outcome = process
        .client
        .transaction(std::slice::from_ref(&k), |values| {
            if values[0].as_deref().map(parse_int) == Some(expected) {
                BTreeMap::from([(k.clone(), Some(Bytes::from(new.to_string())))])
            } else {
                BTreeMap::new()
            }
        })
        .await;
    let completion = match outcome {
        TxnOutcome::Done { node, read_ts, commit_ts: Some(ts), .. } => {
            Completion::ok(value).at(node).ts(ts.as_nanos()).read_ts(read_ts.as_nanos())
        }
        TxnOutcome::Done { node, values, .. } => {
            let found = values[0].as_deref().map(parse_int);
            Completion::fail(format!("the register holds {found:?}, not {expected}")).at(node)
        }
        TxnOutcome::NotApplied { error, .. } => Completion::fail(error),
        TxnOutcome::Unknown { error, .. } => Completion::info(error),
    };
    process.complete("cas", completion);
}
