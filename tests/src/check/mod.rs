//! The checkers of the Jepsen-style consistency suite: from a recorded history to a verdict.
//!
//! A run of the suite drives a cluster with client *processes* while a nemesis injects faults,
//! and records every operation it attempts as a *history*. Afterwards, the checkers here decide
//! whether that history could have come from a store with the promised guarantees:
//!
//! | Module | Workload | Property | Method |
//! |---|---|---|---|
//! | [`register`] | `register` | per-key linearizability of a read/write/cas register | Wing–Gong–Lowe search, memoized (Porcupine) |
//! | [`append`] | `append` | strict serializability | Elle: version orders from list reads, dependency graph, cycles |
//! | [`bank`] | `bank` | snapshot reads sum to the invariant total | one pass |
//! | [`causal`] | `causal` | reads see every acknowledged write (external consistency) | sorted sweep |
//! | [`timestamps`] | all | commit timestamps respect real time; reads at `ts` see exactly the writes `<= ts` | sorted sweeps |
//!
//! [`check_workload`] runs a workload's own checker plus [`timestamps`]; [`overall`] folds their
//! verdicts. Every checker returns a [`CheckResult`] (all of it `Serialize`, so `results.json`
//! embeds it) whose [`Anomaly`]s name operations by their *history index*, the `index` of the
//! operation's invoke event.
//!
//! # The history format
//!
//! JSON Lines, one event per line, in the order events happened:
//!
//! ```text
//! {"index": i, "time": ns since run start (monotonic u64), "process": p (u64),
//!  "type": "invoke"|"ok"|"fail"|"info", "f": <string>, "value": <json>,
//!  "node": "n1" (string, optional/null), "ts": <u64 nanoseconds, optional/null>,
//!  "read_ts": <u64, optional/null>}
//! ```
//!
//! (An optional `"error"` string, for people, is accepted and kept; other unknown fields are
//! ignored.)
//!
//! * Jepsen's conventions: a process has at most one outstanding operation; every invoke is
//!   followed (later in the file) by at most one completion of the same process: `ok` (it
//!   happened), `fail` (it definitely did not happen), `info` (unknown: it may or may not have
//!   happened, at any time after its invoke, possibly never). After an `info` the process id is
//!   retired (never reused). A history may end with invokes that have no completion; those are
//!   treated like `info` ([`Outcome::Open`]).
//! * `ts` is the operation's commit timestamp (writes and read-write transactions) or read
//!   timestamp (read-only operations), when known (only on `ok` completions). `read_ts`
//!   (optional) is a read-write transaction's read timestamp: its reads happened at `read_ts`,
//!   its writes at `ts > read_ts`.
//! * Workload `register` (independent keys, ints as values, every written value unique per key):
//!   `f` = `"read"` | `"write"` | `"cas"`; `value` = `[key, v]`. A read's invoke has
//!   `[key, null]`, its ok has the value read (`null` if never written); a write `[key, v]`; a cas
//!   `[key, [expected, new]]`. A cas whose expected value did not match completes as `fail`.
//!   Keys are ints or strings (compared as JSON values).
//! * Workload `append` (Elle's list-append): `f` = `"txn"`; `value` = a list of micro-ops
//!   `["append", key, int]` and `["r", key, null]`. In the ok completion the reads are filled in:
//!   `["r", key, [1, 2, 3]]` (a list of ints, `[]` or `null` for empty). Appended values are
//!   unique per key. Transactions span several keys; read-only transactions are included.
//! * Workload `bank`: `f` = `"transfer"` with `value` `{"from": a, "to": b, "amount": n}` (ok, or
//!   fail when the balance was insufficient); `f` = `"read"` with invoke value `null` and ok
//!   value `{account: balance, ...}` read in one snapshot. The initial total and the accounts are
//!   given to the checker.
//! * Workload `causal` (the external-consistency probe commit wait exists for): `f` = `"write"`
//!   `[key, v]` and `"read"` `[key, v]` (`v` null if none). Per key, one writer process writes
//!   increasing ints 1, 2, 3, ... through one node; after each acknowledgement, reader processes
//!   read that key through *other* nodes. A read's value must be `>=` the largest value whose
//!   write completed ok before the read was invoked, and must not be a value never written.
//!
//! # Real time
//!
//! "A completed before B was invoked" is decided by the order of events in the file (Jepsen's
//! and Knossos's convention): A's completion event precedes B's invoke event. The recorder
//! writes an invoke before sending the request and a completion after the answer arrived, under
//! one lock, so file order is a real-time order; `time` is kept for people and plots.
//!
//! # Example
//!
//! ```
//! use boundkv_tests::check::{self, history, CheckParams, Validity};
//!
//! let jsonl = r#"
//! {"index":0,"time":0,"process":0,"type":"invoke","f":"write","value":[1,5]}
//! {"index":1,"time":9,"process":0,"type":"ok","f":"write","value":[1,5],"ts":100}
//! {"index":2,"time":10,"process":1,"type":"invoke","f":"read","value":[1,null]}
//! {"index":3,"time":19,"process":1,"type":"ok","f":"read","value":[1,null],"ts":120}
//! "#;
//! let ops = history::pair(&history::parse_history(jsonl).unwrap()).unwrap();
//! let results = check::check_workload("register", &ops, &CheckParams::default());
//! // The read began after the write was acknowledged, yet saw nothing: a stale read, which
//! // both the linearizability checker and the timestamp checker catch.
//! assert_eq!(check::overall(&results), Validity::Invalid);
//! assert_eq!(results[0].anomalies[0].kind, "nonlinearizable");
//! assert_eq!(results[1].anomalies[0].kind, "stale-read");
//! ```

pub mod append;
pub mod bank;
pub mod causal;
pub mod history;
pub mod register;
pub mod result;
pub mod timestamps;

use serde::{Deserialize, Serialize};

pub use history::{Event, EventType, HistoryError, Op, Outcome, pair, parse_history, read_history};
pub use result::{
    Anomaly, AnomalyLog, CheckResult, MAX_EXAMPLES_PER_KIND, Stats, Validity, overall,
};

/// What some checkers need to know besides the history.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct CheckParams {
    /// The `bank` workload's accounts and invariant total (required for `bank`).
    pub bank: Option<bank::BankParams>,
    /// Limits of the `register` search.
    #[serde(default)]
    pub register: register::RegisterOptions,
}

/// The workload names [`check_workload`] knows.
pub const WORKLOADS: [&str; 4] = ["register", "append", "bank", "causal"];

/// Runs the checkers of `workload` (one of [`WORKLOADS`]) over `ops`: the workload's own checker
/// first, then [`timestamps::check`].
///
/// An unknown workload name, or `bank` without [`CheckParams::bank`], gives an
/// [`Validity::Unknown`] result in the first place (never a silent `Valid`).
pub fn check_workload(workload: &str, ops: &[Op], params: &CheckParams) -> Vec<CheckResult> {
    let own = match workload {
        "register" => register::check_with(ops, &params.register),
        "append" => append::check(ops),
        "causal" => causal::check(ops),
        "bank" => match &params.bank {
            Some(b) => bank::check_with(ops, b),
            None => CheckResult::unknown("bank", "no accounts and total were given to the checker"),
        },
        other => CheckResult::unknown(other, &format!("unknown workload {other:?}")),
    };
    vec![own, timestamps::check(ops)]
}

/// The canonical text of a JSON value (keys, values): what equal JSON values share. serde_json
/// keeps object keys sorted, so this is canonical for every value a history holds.
pub(crate) fn json_text(v: &serde_json::Value) -> String {
    serde_json::to_string(v).unwrap_or_else(|_| "?".into())
}
