//! The `bank` workload: [`ACCOUNTS`] accounts holding [`INITIAL`] each, transfers between them
//! that never overdraw, and snapshot reads of every balance, which must always sum to the same
//! total.
//!
//! | op | `f` | invoke value | how | `ok` value |
//! |---|---|---|---|---|
//! | transfer | `"transfer"` | `{"from": a, "to": b, "amount": n}` | a read-write transaction at the leader: read both balances at `read_ts`, write both (`fail` if `a` holds less than `n`, or on a conflict) | the same; ts = commit, read_ts |
//! | read | `"read"` | `null` | a read-only snapshot of every account at `ReadAt::Latest` of a random live replica | `{"0": 100, "1": 97, ...}`; ts = the read timestamp |
//!
//! Account `a` lives under the key `acct{a}`, its balance as decimal text, as the process-level
//! suite stores it. Before the clients start, [`setup`] writes every balance in one blind
//! transaction (not recorded). For example:
//!
//! ```text
//! invoke transfer {"from": 0, "to": 3, "amount": 4}
//!   → n2 begin_read_write = 8_000; acct0 = "100", acct3 = "100"
//!   → n2 commit { read_ts 8_000, read {acct0, acct3}, writes {acct0: "96", acct3: "104"} } ← ts 8_050
//! ok     transfer {...}  node n2 ts 8_050 read_ts 8_000
//! invoke read null       → n1 snapshot @8_100
//! ok     read {"0": 96, "1": 100, "2": 100, "3": 104, "4": 100}   (sum 500)
//! ```

use std::collections::{BTreeMap, BTreeSet};

use bytes::Bytes;
use rand::Rng;
use serde_json::{Value, json};
use tokio::time::Instant;

use boundkv_storage::Engine;
use boundkv_tests::check::bank::BankParams;
use boundkv_txn::CommitRequest;

use super::client::{CommitOutcome, OP_TIMEOUT, SimClient, TxnOutcome};
use super::{Completion, Process};

/// How many accounts there are (`0..ACCOUNTS`).
pub const ACCOUNTS: u64 = 5;

/// Each account's balance before the first transfer.
pub const INITIAL: i64 = 100;

/// The largest amount one transfer moves.
pub const MAX_AMOUNT: i64 = 5;

/// The storage key of account `a`.
pub fn storage_key(a: u64) -> Bytes {
    Bytes::from(format!("acct{a}"))
}

/// A stored balance (`i64::MIN` if unparseable, which no write produces; 0 if absent).
pub fn parse_balance(b: Option<&[u8]>) -> i64 {
    match b {
        None => 0,
        Some(b) => std::str::from_utf8(b).ok().and_then(|s| s.parse().ok()).unwrap_or(i64::MIN),
    }
}

/// The accounts and the total, for the checker.
pub fn params() -> BankParams {
    BankParams {
        accounts: (0..ACCOUNTS).map(|a| a.to_string()).collect(),
        total: INITIAL * ACCOUNTS as i64,
        null_balance_is_zero: false,
    }
}

/// Writes every account's initial balance in one blind transaction, resending the same request
/// (same id, so it applies at most once) until it commits or the cluster's time reaches
/// `until_nanos`. Whether it committed.
pub async fn setup<E: Engine>(client: &mut SimClient<E>, until_nanos: u64) -> bool {
    let req = CommitRequest {
        txn_id: client.new_txn_id(),
        read_ts: None,
        read_keys: BTreeSet::new(),
        read_ranges: Vec::new(),
        writes: (0..ACCOUNTS)
            .map(|a| (storage_key(a), Some(Bytes::from(INITIAL.to_string()))))
            .collect(),
    };
    loop {
        client.set_deadline(Instant::now() + OP_TIMEOUT);
        match client.commit(req.clone()).await {
            CommitOutcome::Committed { .. } => return true,
            CommitOutcome::NotApplied { error, .. } | CommitOutcome::Unknown { error } => {
                tracing::debug!("bank setup: {error}");
            }
        }
        if client.cluster().now_nanos() >= until_nanos {
            return false;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// One bank operation: a snapshot read of every balance (40%) or a transfer.
pub async fn op<E: Engine>(process: &mut Process<E>) {
    if process.client.rng().random_bool(0.4) {
        read(process).await;
        return;
    }
    let rng = process.client.rng();
    let from = rng.random_range(0..ACCOUNTS);
    let to = (from + rng.random_range(1..ACCOUNTS)) % ACCOUNTS;
    let amount = rng.random_range(1..=MAX_AMOUNT);
    transfer(process, from, to, amount).await;
}

/// Moves `amount` from account `from` to account `to`, unless `from` holds less.
pub async fn transfer<E: Engine>(process: &mut Process<E>, from: u64, to: u64, amount: i64) {
    let value = json!({"from": from, "to": to, "amount": amount});
    process.invoke("transfer", value.clone());
    let (fk, tk) = (storage_key(from), storage_key(to));
    let keys = [fk.clone(), tk.clone()];
    let outcome = process
        .client
        .transaction(&keys, |values| {
            let (fb, tb) =
                (parse_balance(values[0].as_deref()), parse_balance(values[1].as_deref()));
            if fb < amount {
                return BTreeMap::new();
            }
            BTreeMap::from([
                (fk.clone(), Some(Bytes::from((fb - amount).to_string()))),
                (tk.clone(), Some(Bytes::from((tb + amount).to_string()))),
            ])
        })
        .await;
    let completion = match outcome {
        TxnOutcome::Done { node, read_ts, commit_ts: Some(ts), .. } => {
            Completion::ok(value).at(node).ts(ts.as_nanos()).read_ts(read_ts.as_nanos())
        }
        TxnOutcome::Done { node, .. } => Completion::fail("insufficient balance").at(node),
        TxnOutcome::NotApplied { error, .. } => Completion::fail(error),
        TxnOutcome::Unknown { error, .. } => Completion::info(error),
    };
    process.complete("transfer", completion);
}

/// Reads every balance in one snapshot at a random live replica.
pub async fn read<E: Engine>(process: &mut Process<E>) {
    process.invoke("read", Value::Null);
    let keys: Vec<Bytes> = (0..ACCOUNTS).map(storage_key).collect();
    let completion = match process.client.snapshot(&keys).await {
        Ok(read) => {
            let balances: serde_json::Map<String, Value> = read
                .values
                .iter()
                .enumerate()
                .map(|(a, v)| (a.to_string(), json!(v.as_deref().map(|b| parse_balance(Some(b))))))
                .collect();
            Completion::ok(Value::Object(balances)).at(read.node).ts(read.ts.as_nanos())
        }
        Err(e) => Completion::fail(e),
    };
    process.complete("read", completion);
}
