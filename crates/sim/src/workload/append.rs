//! The `append` workload: Elle's list-append transactions, checked for strict serializability.
//!
//! A transaction is 1–4 micro-ops over distinct keys: `["append", k, v]` (add the unique value
//! `v` to the end of list `k`) and `["r", k, null]` (read list `k`; the `ok` completion fills in
//! what was read). List `k` lives under the key `a{k}` as comma-separated decimals (`"3,9,12"`),
//! as the process-level suite stores it. So an append is a read and a write of the same key, in
//! one read-write transaction at the leader:
//!
//! ```text
//! invoke txn [["r", 1, null], ["append", 2, 40]]
//!   → n1 begin_read_write = 5_000; get a1 @5_000 = "3,9"; get a2 @5_000 = "12"
//!   → n1 commit { read_ts 5_000, read {a1, a2}, writes {a2: "12,40"} } ← ts 5_100
//! ok     txn [["r", 1, [3, 9]], ["append", 2, 40]]   node n1 ts 5_100 read_ts 5_000
//! ```
//!
//! A transaction that lost a conflict is run again (new reads, new id) while its deadline
//! allows: nothing of it applied. Half of the read-only transactions go through a read-only
//! snapshot at a random replica instead (`ts` = the snapshot's timestamp), so Elle sees
//! follower reads too; the others run through the leader's read-write path, which needs no
//! commit (`ts` = the read timestamp).
//!
//! The workload uses [`KEY_SLOTS`] keys at a time; a key that has had [`APPENDS_PER_KEY`]
//! appends is replaced by a fresh one, so lists (and the checker's work) stay small.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;

use bytes::Bytes;
use rand::Rng;
use serde_json::{Value, json};

use boundkv_storage::Engine;
use boundkv_tests::check::Event;

use super::client::TxnOutcome;
use super::{Completion, Process, Shared};

/// How many keys are in use at a time.
pub const KEY_SLOTS: u64 = 6;

/// How many appends a key gets before a fresh key replaces it.
pub const APPENDS_PER_KEY: u64 = 40;

/// How many times a transaction that lost a conflict runs again.
pub const MAX_RUNS: u32 = 5;

/// What the append processes share: the keys in use, their append counts, the next fresh key
/// and the next unique value.
#[derive(Debug)]
pub struct AppendKeys {
    slots: Vec<u64>,
    appends: BTreeMap<u64, u64>,
    next_key: u64,
    next_value: u64,
}

impl Default for AppendKeys {
    fn default() -> Self {
        AppendKeys {
            slots: (0..KEY_SLOTS).collect(),
            appends: BTreeMap::new(),
            next_key: KEY_SLOTS,
            next_value: 1,
        }
    }
}

/// One micro-op: an append of a value, or a read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MicroOp {
    /// `["append", key, value]`.
    Append(u64, u64),
    /// `["r", key, ...]`.
    Read(u64),
}

impl MicroOp {
    fn key(self) -> u64 {
        match self {
            MicroOp::Append(k, _) | MicroOp::Read(k) => k,
        }
    }
}

/// The storage key of list `key`.
pub fn storage_key(key: u64) -> Bytes {
    Bytes::from(format!("a{key}"))
}

/// A stored list (absent or empty: `[]`).
pub fn parse_list(b: Option<&[u8]>) -> Vec<u64> {
    match b.and_then(|b| std::str::from_utf8(b).ok()) {
        Some(s) if !s.is_empty() => s.split(',').filter_map(|x| x.parse().ok()).collect(),
        _ => Vec::new(),
    }
}

/// A list as stored.
pub fn format_list(list: &[u64]) -> String {
    list.iter().map(u64::to_string).collect::<Vec<_>>().join(",")
}

/// The micro-ops as the history has them, with the reads filled in if given (one list per
/// micro-op, in order; appends' entries are ignored).
pub fn micro_ops_json(ops: &[MicroOp], reads: Option<&[Vec<u64>]>) -> Value {
    Value::Array(
        ops.iter()
            .enumerate()
            .map(|(i, op)| match *op {
                MicroOp::Append(k, v) => json!(["append", k, v]),
                MicroOp::Read(k) => json!(["r", k, reads.map(|r| json!(r[i]))]),
            })
            .collect(),
    )
}

/// Draws a transaction: 1–4 distinct keys in use, each read or appended to with even odds.
fn plan<E: Engine>(process: &mut Process<E>, shared: &Mutex<Shared>) -> Vec<MicroOp> {
    let rng = process.client.rng();
    let mut guard = shared.lock().unwrap_or_else(|e| e.into_inner());
    let Shared::Append(state) = &mut *guard else {
        unreachable!("append operations run with append state")
    };
    let n = rng.random_range(1..=4usize).min(state.slots.len());
    let mut picked = BTreeSet::new();
    while picked.len() < n {
        picked.insert(state.slots[rng.random_range(0..state.slots.len())]);
    }
    let mut ops = Vec::with_capacity(n);
    for k in picked {
        if rng.random_bool(0.5) {
            ops.push(MicroOp::Append(k, state.next_value));
            state.next_value += 1;
            let count = state.appends.entry(k).or_default();
            *count += 1;
            if *count >= APPENDS_PER_KEY {
                let fresh = state.next_key;
                state.next_key += 1;
                if let Some(slot) = state.slots.iter_mut().find(|s| **s == k) {
                    *slot = fresh;
                }
            }
        } else {
            ops.push(MicroOp::Read(k));
        }
    }
    ops
}

/// One `append` transaction.
pub async fn op<E: Engine>(process: &mut Process<E>, shared: &Mutex<Shared>) {
    let ops = plan(process, shared);
    let read_only = ops.iter().all(|op| matches!(op, MicroOp::Read(_)));
    if read_only && process.client.rng().random_bool(0.5) {
        snapshot_txn(process, &ops).await;
        return;
    }
    process.invoke("txn", micro_ops_json(&ops, None));
    let keys: Vec<Bytes> = ops.iter().map(|op| storage_key(op.key())).collect();
    let mut completion = Completion::fail("not run");
    for _ in 0..MAX_RUNS {
        let outcome = process
            .client
            .transaction(&keys, |values| {
                let mut writes = BTreeMap::new();
                for (op, value) in ops.iter().zip(values) {
                    if let MicroOp::Append(k, v) = *op {
                        let mut list = parse_list(value.as_deref());
                        list.push(v);
                        writes.insert(storage_key(k), Some(Bytes::from(format_list(&list))));
                    }
                }
                writes
            })
            .await;
        completion = match outcome {
            TxnOutcome::Done { node, read_ts, commit_ts, values } => {
                let reads: Vec<Vec<u64>> =
                    values.iter().map(|v| parse_list(v.as_deref())).collect();
                let ok = Completion::ok(micro_ops_json(&ops, Some(&reads))).at(node);
                match commit_ts {
                    Some(ts) => ok.ts(ts.as_nanos()).read_ts(read_ts.as_nanos()),
                    None => ok.ts(read_ts.as_nanos()),
                }
            }
            TxnOutcome::NotApplied { conflict: true, error } => {
                completion = Completion::fail(error);
                continue;
            }
            TxnOutcome::NotApplied { error, .. } => Completion::fail(error),
            TxnOutcome::Unknown { error, .. } => Completion::info(error),
        };
        break;
    }
    process.complete("txn", completion);
}

/// A read-only transaction as one snapshot at a random replica.
async fn snapshot_txn<E: Engine>(process: &mut Process<E>, ops: &[MicroOp]) {
    process.invoke("txn", micro_ops_json(ops, None));
    let keys: Vec<Bytes> = ops.iter().map(|op| storage_key(op.key())).collect();
    let completion = match process.client.snapshot(&keys).await {
        Ok(read) => {
            let reads: Vec<Vec<u64>> =
                read.values.iter().map(|v| parse_list(v.as_deref())).collect();
            Completion::ok(micro_ops_json(ops, Some(&reads))).at(read.node).ts(read.ts.as_nanos())
        }
        Err(e) => Completion::fail(e),
    };
    process.complete("txn", completion);
}

/// Every key a `txn` invoke of `history` names, in order.
pub fn touched_keys(history: &[Event]) -> Vec<u64> {
    let mut keys = BTreeSet::new();
    for e in history.iter().filter(|e| e.f == "txn") {
        for op in e.value.as_array().into_iter().flatten() {
            if let Some(k) = op.get(1).and_then(Value::as_u64) {
                keys.insert(k);
            }
        }
    }
    keys.into_iter().collect()
}

/// The final read: every key in `keys`, in one snapshot (nothing if `keys` is empty).
pub async fn final_read<E: Engine>(process: &mut Process<E>, keys: &[u64]) {
    if keys.is_empty() {
        return;
    }
    let ops: Vec<MicroOp> = keys.iter().map(|&k| MicroOp::Read(k)).collect();
    snapshot_txn(process, &ops).await;
}
