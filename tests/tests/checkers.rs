//! The history checkers (`boundkv_tests::check`) against hand-written histories: every anomaly
//! kind each checker knows, caught with the right name, next to valid histories that must pass;
//! then histories generated from sequential models (never invalid), mutations of them (caught),
//! and 20,000-operation histories (time-bounded).
//!
//! Histories are written with [`H`], which numbers events in order: `h.invoke(p, f, v)` then
//! `h.ok(p, f, v)` and so on. Index numbers in comments are the events' history indexes.

#[path = "checkers/gen.rs"]
mod generate;

use std::time::{Duration, Instant};

use proptest::prelude::*;
use serde_json::{Value, json};

use boundkv_tests::check::{
    self, CheckParams, CheckResult, Event, EventType, HistoryError, Op, Outcome, Validity, append,
    bank, causal, history, register, timestamps,
};
use generate::{Bank, Causal, Lists, Model, Registers, SimOptions, simulate};

/// A history under construction.
#[derive(Default)]
struct H {
    events: Vec<Event>,
}

impl H {
    fn new() -> H {
        H::default()
    }

    /// The index the next event gets.
    fn next(&self) -> u64 {
        self.events.len() as u64
    }

    fn push(&mut self, p: u64, kind: EventType, f: &str, v: Value, ts: Option<u64>) -> &mut H {
        let i = self.next();
        let mut e = Event::new(i, i * 10, p, kind, f, v);
        e.ts = ts;
        self.events.push(e);
        self
    }

    fn invoke(&mut self, p: u64, f: &str, v: Value) -> &mut H {
        self.push(p, EventType::Invoke, f, v, None)
    }

    fn ok(&mut self, p: u64, f: &str, v: Value) -> &mut H {
        self.push(p, EventType::Ok, f, v, None)
    }

    fn ok_ts(&mut self, p: u64, f: &str, v: Value, ts: u64) -> &mut H {
        self.push(p, EventType::Ok, f, v, Some(ts))
    }

    fn fail(&mut self, p: u64, f: &str, v: Value) -> &mut H {
        self.push(p, EventType::Fail, f, v, None)
    }

    fn info(&mut self, p: u64, f: &str, v: Value) -> &mut H {
        self.push(p, EventType::Info, f, v, None)
    }

    /// Sets the last event's `read_ts`.
    fn read_ts(&mut self, r: u64) -> &mut H {
        if let Some(e) = self.events.last_mut() {
            e.read_ts = Some(r);
        }
        self
    }

    /// An operation invoked and completed ok right away.
    fn op(&mut self, p: u64, f: &str, invoke: Value, ok: Value) -> &mut H {
        self.invoke(p, f, invoke).ok(p, f, ok)
    }

    fn ops(&self) -> Vec<Op> {
        history::pair(&self.events).expect("a well-formed history")
    }
}

/// Asserts `r` is valid, printing it otherwise.
fn assert_valid(r: &CheckResult) {
    assert_eq!(r.valid, Validity::Valid, "{}", pretty(r));
}

/// Asserts `r` is invalid with an anomaly of `kind` (and returns that anomaly's ops).
fn assert_anomaly(r: &CheckResult, kind: &str) -> Vec<u64> {
    assert_eq!(r.valid, Validity::Invalid, "{}", pretty(r));
    let a = r.anomalies.iter().find(|a| a.kind == kind);
    let Some(a) = a else { panic!("expected a {kind} anomaly: {}", pretty(r)) };
    assert!(r.count(kind) >= 1);
    a.ops.clone()
}

/// Asserts the only anomaly kinds of `r` are `kinds`.
fn assert_kinds(r: &CheckResult, kinds: &[&str]) {
    assert_eq!(r.kinds(), kinds, "{}", pretty(r));
}

fn pretty(r: &CheckResult) -> String {
    serde_json::to_string_pretty(r).unwrap_or_default()
}

// ---------------------------------------------------------------------------------------------
// register

fn w(k: i64, v: i64) -> Value {
    json!([k, v])
}

fn rd(k: i64) -> Value {
    json!([k, null])
}

#[test]
fn register_concurrent_history_is_valid() {
    let mut h = H::new();
    h.invoke(0, "write", w(1, 1)) // 0
        .invoke(1, "read", rd(1)) // 1
        .ok(0, "write", w(1, 1)) // 2
        .ok(1, "read", w(1, 1)) // 3: saw the concurrent write
        .invoke(2, "write", w(1, 2)) // 4
        .invoke(1, "read", rd(1)) // 5
        .ok(1, "read", w(1, 1)) // 6: write 2 not yet in effect
        .invoke(1, "read", rd(1)) // 7
        .ok(1, "read", w(1, 2)) // 8: now it is
        .ok(2, "write", w(1, 2)) // 9
        .op(0, "cas", json!([1, [2, 3]]), json!([1, [2, 3]]))
        .op(1, "read", rd(1), w(1, 3))
        // A string key, independent of key 1, read before any write.
        .op(3, "read", json!(["a", null]), json!(["a", null]))
        .op(3, "write", json!(["a", 1]), json!(["a", 1]))
        // A cas that did not match fails and changes nothing.
        .invoke(3, "cas", json!(["a", [7, 8]]))
        .fail(3, "cas", json!(["a", [7, 8]]))
        .op(3, "read", json!(["a", null]), json!(["a", 1]));
    let r = register::check(&h.ops());
    assert_valid(&r);
    assert_eq!(r.stats.extra["keys"], 2);
}

#[test]
fn register_stale_read_is_nonlinearizable() {
    let mut h = H::new();
    h.op(0, "write", w(1, 1), w(1, 1)) // 0, 1
        .op(0, "write", w(1, 2), w(1, 2)) // 2, 3
        .op(1, "read", rd(1), w(1, 1)); // 4, 5: write 2 was acknowledged before
    let r = register::check(&h.ops());
    let ops = assert_anomaly(&r, "nonlinearizable");
    assert!(ops.contains(&4), "{ops:?}");
    assert!(ops.contains(&2), "the acknowledged write is named: {ops:?}");
    assert!(r.anomalies[0].explanation.contains("index 4"));
}

#[test]
fn register_read_of_unwritten_value_is_nonlinearizable() {
    let mut h = H::new();
    h.op(0, "write", w(1, 1), w(1, 1)).op(1, "read", rd(1), w(1, 7));
    let r = register::check(&h.ops());
    assert_eq!(assert_anomaly(&r, "nonlinearizable"), vec![2]);
    assert!(r.anomalies[0].explanation.contains("no operation wrote that value"), "{}", pretty(&r));
}

#[test]
fn register_cas_against_wrong_value_is_nonlinearizable() {
    let mut h = H::new();
    h.op(0, "write", w(1, 1), w(1, 1))
        .op(0, "write", w(1, 2), w(1, 2))
        // The register holds 2, yet a cas expecting 1 succeeded.
        .op(1, "cas", json!([1, [1, 3]]), json!([1, [1, 3]]));
    let r = register::check(&h.ops());
    let ops = assert_anomaly(&r, "nonlinearizable");
    assert!(ops.contains(&4), "{ops:?}");
}

#[test]
fn register_info_write_may_take_effect_later() {
    let mut h = H::new();
    h.op(0, "write", w(1, 1), w(1, 1))
        .invoke(1, "write", w(1, 2))
        .info(1, "write", w(1, 2)) // timed out
        .op(2, "read", rd(1), w(1, 1)) // not yet
        .op(2, "read", rd(1), w(1, 2)); // there it is, long after the info
    assert_valid(&register::check(&h.ops()));
}

#[test]
fn register_info_write_may_never_take_effect() {
    let mut h = H::new();
    h.op(0, "write", w(1, 1), w(1, 1))
        .invoke(1, "write", w(1, 2))
        .info(1, "write", w(1, 2))
        .op(2, "read", rd(1), w(1, 1))
        .op(2, "read", rd(1), w(1, 1));
    assert_valid(&register::check(&h.ops()));
}

#[test]
fn register_info_write_that_must_have_taken_effect() {
    let mut h = H::new();
    h.invoke(1, "write", w(1, 2))
        .info(1, "write", w(1, 2))
        .op(2, "read", rd(1), w(1, 2))
        // And a write that never completed at all (the history ends first), also observed.
        .invoke(3, "write", w(1, 3))
        .op(2, "read", rd(1), w(1, 3))
        .invoke(4, "cas", json!([1, [3, 4]]))
        .op(2, "read", rd(1), w(1, 4));
    assert_valid(&register::check(&h.ops()));
}

#[test]
fn register_info_write_seen_then_gone_is_nonlinearizable() {
    let mut h = H::new();
    h.op(0, "write", w(1, 1), w(1, 1)) // 0, 1
        .invoke(1, "write", w(1, 2)) // 2
        .info(1, "write", w(1, 2)) // 3
        .op(2, "read", rd(1), w(1, 2)) // 4, 5: the info write happened
        .op(2, "read", rd(1), w(1, 1)); // 6, 7: ... and un-happened
    let r = register::check(&h.ops());
    let ops = assert_anomaly(&r, "nonlinearizable");
    assert!(ops.contains(&6), "{}", pretty(&r));
}

#[test]
fn register_observed_failed_write_is_nonlinearizable() {
    let mut h = H::new();
    h.op(0, "write", w(1, 1), w(1, 1))
        .invoke(1, "write", w(1, 2)) // 2
        .fail(1, "write", w(1, 2))
        .op(2, "read", rd(1), w(1, 2)); // 4
    let r = register::check(&h.ops());
    assert_eq!(assert_anomaly(&r, "nonlinearizable"), vec![2, 4]);
    assert!(r.anomalies[0].explanation.contains("failed"), "{}", pretty(&r));
}

#[test]
fn register_search_budget_gives_unknown_not_valid() {
    // Twenty concurrent writes, each seen by a read while all of them are in flight.
    let mut h = H::new();
    for p in 0..20 {
        h.invoke(p, "write", w(1, p as i64 + 1));
    }
    for v in 1..=20 {
        h.op(30, "read", rd(1), w(1, v));
    }
    for p in 0..20 {
        h.ok(p, "write", w(1, p as i64 + 1));
    }
    let ops = h.ops();
    assert_valid(&register::check(&ops));
    let tiny = register::RegisterOptions { max_states_per_key: 3 };
    let r = register::check_with(&ops, &tiny);
    assert_eq!(r.valid, Validity::Unknown, "{}", pretty(&r));
    assert_eq!(r.stats.extra["keys_unknown"], 1);
    assert!(r.notes[0].contains("gave up"));
}

#[test]
fn register_keys_are_independent_and_each_is_reported() {
    let mut h = H::new();
    for k in 0..3 {
        h.op(0, "write", w(k, 1), w(k, 1)).op(0, "write", w(k, 2), w(k, 2));
        if k != 1 {
            h.op(1, "read", rd(k), w(k, 1));
        }
    }
    let r = register::check(&h.ops());
    assert_eq!(r.count("nonlinearizable"), 2, "{}", pretty(&r));
}

// ---------------------------------------------------------------------------------------------
// append

fn app(k: i64, v: i64) -> Value {
    json!(["append", k, v])
}

fn r(k: i64, list: Option<&[i64]>) -> Value {
    json!(["r", k, list])
}

fn txn(micro: &[Value]) -> Value {
    Value::Array(micro.to_vec())
}

/// The invoke value of a transaction: its reads blanked.
fn invoke_value(micro: &[Value]) -> Value {
    Value::Array(
        micro
            .iter()
            .map(|m| if m[0] == "r" { json!(["r", m[1], null]) } else { m.clone() })
            .collect(),
    )
}

impl H {
    fn txn_invoke(&mut self, p: u64, micro: &[Value]) -> &mut H {
        self.invoke(p, "txn", invoke_value(micro))
    }

    fn txn_ok(&mut self, p: u64, micro: &[Value]) -> &mut H {
        self.ok(p, "txn", txn(micro))
    }

    fn txn(&mut self, p: u64, micro: &[Value]) -> &mut H {
        self.txn_invoke(p, micro).txn_ok(p, micro)
    }
}

#[test]
fn append_serial_history_is_valid() {
    let mut h = H::new();
    h.txn(0, &[app(1, 1)])
        .txn(1, &[r(1, Some(&[1])), app(1, 2), r(1, Some(&[1, 2]))])
        .txn(0, &[r(1, Some(&[1, 2])), r(2, None), app(2, 1)])
        .txn(1, &[r(2, Some(&[1])), r(3, Some(&[]))]);
    assert_valid(&append::check(&h.ops()));
}

#[test]
fn append_concurrent_history_is_valid() {
    // The module docs' worked example: T2 did not see T3's append, but they overlapped.
    let (t1, t2, t3, t4) = (
        [app(1, 1)],
        [app(1, 2), r(2, Some(&[]))],
        [app(2, 1)],
        [r(1, Some(&[1, 2])), r(2, Some(&[1]))],
    );
    let mut h = H::new();
    h.txn_invoke(1, &t1)
        .txn_ok(1, &t1)
        .txn_invoke(3, &t3)
        .txn_invoke(2, &t2)
        .txn_ok(3, &t3)
        .txn_ok(2, &t2)
        .txn(4, &t4);
    let r = append::check(&h.ops());
    assert_valid(&r);
    assert!(r.stats.extra["graph_edges"] >= 5, "{}", pretty(&r));
}

#[test]
fn append_g0_write_cycle() {
    // T1 and T2 overlap; x's order puts T1 first, y's puts T2 first.
    let (t1, t2) = ([app(1, 1), app(2, 2)], [app(1, 2), app(2, 1)]);
    let mut h = H::new();
    h.txn_invoke(1, &t1)
        .txn_invoke(2, &t2)
        .txn_ok(1, &t1)
        .txn_ok(2, &t2)
        .txn(3, &[r(1, Some(&[1, 2])), r(2, Some(&[1, 2]))]);
    let r = append::check(&h.ops());
    assert_eq!(assert_anomaly(&r, "G0"), vec![0, 1]);
    assert_kinds(&r, &["G0"]);
    assert!(r.anomalies[0].explanation.contains("ww[key 1]→"), "{}", pretty(&r));
}

#[test]
fn append_g1a_aborted_read() {
    let mut h = H::new();
    h.txn_invoke(1, &[app(1, 1)]).fail(1, "txn", txn(&[app(1, 1)])).txn(2, &[r(1, Some(&[1]))]);
    let r = append::check(&h.ops());
    assert_eq!(assert_anomaly(&r, "G1a"), vec![0, 2]);
    assert_kinds(&r, &["G1a"]);
}

#[test]
fn append_g1b_intermediate_read() {
    let t1 = [app(1, 1), app(1, 2)];
    let mut h = H::new();
    h.txn_invoke(1, &t1).txn(2, &[r(1, Some(&[1]))]).txn_ok(1, &t1).txn(2, &[r(1, Some(&[1, 2]))]);
    let r = append::check(&h.ops());
    assert_eq!(assert_anomaly(&r, "G1b"), vec![0, 1]);
    // Reading [1] also puts the reader between T1's two appends: T1 wr→ reader rw→ T1.
    assert_kinds(&r, &["G-single", "G1b"]);
}

#[test]
fn append_g1c_circular_information_flow() {
    // Each saw the other's append.
    let (t1, t2) = ([app(1, 1), r(2, Some(&[1]))], [app(2, 1), r(1, Some(&[1]))]);
    let mut h = H::new();
    h.txn_invoke(1, &t1).txn_invoke(2, &t2).txn_ok(1, &t1).txn_ok(2, &t2);
    let r = append::check(&h.ops());
    assert_eq!(assert_anomaly(&r, "G1c"), vec![0, 1]);
    assert_kinds(&r, &["G1c"]);
}

#[test]
fn append_g_single_read_skew() {
    // T1 saw T2's append to y but not its append to x.
    let (t1, t2) = ([r(1, Some(&[])), r(2, Some(&[1]))], [app(1, 1), app(2, 1)]);
    let mut h = H::new();
    h.txn_invoke(1, &t1)
        .txn_invoke(2, &t2)
        .txn_ok(2, &t2)
        .txn_ok(1, &t1)
        .txn(3, &[r(1, Some(&[1]))]);
    let r = append::check(&h.ops());
    assert_eq!(assert_anomaly(&r, "G-single"), vec![0, 1]);
    assert_kinds(&r, &["G-single"]);
    let e = &r.anomalies[0].explanation;
    assert!(e.contains("rw[key 1]→") && e.contains("wr[key 2]→"), "{e}");
}

#[test]
fn append_g2_item_write_skew() {
    // Each read the other's key empty and appended to its own.
    let (t1, t2) = ([r(1, Some(&[])), app(2, 1)], [r(2, Some(&[])), app(1, 1)]);
    let mut h = H::new();
    h.txn_invoke(1, &t1)
        .txn_invoke(2, &t2)
        .txn_ok(1, &t1)
        .txn_ok(2, &t2)
        .txn(3, &[r(1, Some(&[1])), r(2, Some(&[1]))]);
    let r = append::check(&h.ops());
    assert_eq!(assert_anomaly(&r, "G2-item"), vec![0, 1]);
    assert_kinds(&r, &["G2-item"]);
}

#[test]
fn append_g_single_realtime_stale_read_only_txn() {
    // T1's append was acknowledged; T2 began afterwards and did not see it.
    let mut h = H::new();
    h.txn(1, &[app(1, 1)]) // 0, 1
        .txn(2, &[r(1, Some(&[]))]) // 2, 3
        .txn(3, &[r(1, Some(&[1]))]);
    let r = append::check(&h.ops());
    assert_eq!(assert_anomaly(&r, "G-single-realtime"), vec![0, 2]);
    assert_kinds(&r, &["G-single-realtime"]);
    assert!(r.anomalies[0].explanation.contains("rt→"), "{}", pretty(&r));
}

#[test]
fn append_g0_realtime_write_order_against_real_time() {
    // T2 began after T1 was acknowledged, yet x's order puts T2's append first.
    let mut h = H::new();
    h.txn(1, &[app(1, 1)]).txn(2, &[app(1, 2)]).txn(3, &[r(1, Some(&[2, 1]))]);
    let r = append::check(&h.ops());
    assert_eq!(assert_anomaly(&r, "G0-realtime"), vec![0, 2]);
    assert_kinds(&r, &["G0-realtime"]);
}

#[test]
fn append_g1c_realtime_read_from_the_future() {
    // T1 saw an append of T2, which began only after T1 was acknowledged.
    let mut h = H::new();
    h.txn(1, &[r(1, Some(&[1]))]).txn(2, &[app(1, 1)]);
    let r = append::check(&h.ops());
    assert_eq!(assert_anomaly(&r, "G1c-realtime"), vec![0, 2]);
    assert_kinds(&r, &["G1c-realtime"]);
}

#[test]
fn append_g2_item_realtime() {
    // Two anti-dependencies closed by real time: T1 rw→ T2 (T1 missed T2's append to x),
    // T2 rw→ T3 (T2 missed T3's append to y), T3 rt→ T1.
    let (t1, t2) = ([r(1, Some(&[]))], [app(1, 1), r(2, Some(&[]))]);
    let mut h = H::new();
    h.txn_invoke(2, &t2)
        .txn(3, &[app(2, 1)])
        .txn_invoke(1, &t1)
        .txn_ok(2, &t2)
        .txn_ok(1, &t1)
        .txn(4, &[r(1, Some(&[1])), r(2, Some(&[1]))]);
    let r = append::check(&h.ops());
    assert_anomaly(&r, "G2-item-realtime");
    assert_kinds(&r, &["G2-item-realtime"]);
}

#[test]
fn append_incompatible_orders() {
    let (t1, t2) = ([app(1, 1)], [app(1, 2)]);
    let mut h = H::new();
    h.txn_invoke(1, &t1)
        .txn_invoke(2, &t2)
        .txn_ok(1, &t1)
        .txn_ok(2, &t2)
        .txn(3, &[r(1, Some(&[1, 2]))]) // 4
        .txn(3, &[r(1, Some(&[2, 1]))]); // 6
    let r = append::check(&h.ops());
    assert_eq!(assert_anomaly(&r, "incompatible-order"), vec![4, 6]);
}

#[test]
fn append_duplicate_elements() {
    let mut h = H::new();
    h.txn(1, &[app(1, 1)]).txn(2, &[r(1, Some(&[1, 1]))]);
    let r = append::check(&h.ops());
    assert_eq!(assert_anomaly(&r, "duplicate-elements"), vec![2]);
}

#[test]
fn append_garbage_element() {
    let mut h = H::new();
    h.txn(1, &[app(1, 1)]).txn(2, &[r(1, Some(&[1, 99]))]);
    let r = append::check(&h.ops());
    assert_eq!(assert_anomaly(&r, "garbage"), vec![2]);
    assert_kinds(&r, &["garbage"]);
}

#[test]
fn append_internal_inconsistency() {
    let mut h = H::new();
    h.txn(1, &[app(1, 1)]).txn(2, &[app(1, 2), r(1, Some(&[1]))]);
    let r = append::check(&h.ops());
    assert_eq!(assert_anomaly(&r, "internal"), vec![2]);
}

#[test]
fn append_info_txns_count_only_when_observed() {
    let mut h = H::new();
    // An info txn nobody saw: no edges (were it committed, T at 4 would be G-single-realtime...
    // but it was not invoked before T at 4 anyway); an info txn somebody saw: committed.
    h.txn_invoke(1, &[app(1, 1)])
        .info(1, "txn", invoke_value(&[app(1, 1)]))
        .txn_invoke(2, &[app(2, 1)])
        .info(2, "txn", invoke_value(&[app(2, 1)]))
        .txn(3, &[r(1, Some(&[])), r(2, Some(&[1]))])
        .txn(3, &[r(1, Some(&[])), r(2, Some(&[1]))]);
    let r = append::check(&h.ops());
    assert_valid(&r);
    assert_eq!(r.stats.extra["graph_nodes"], 3, "{}", pretty(&r));
}

#[test]
fn append_info_txn_seen_then_unseen_is_caught() {
    // Once someone saw the info txn's append, a later read that misses it is stale.
    let mut h = H::new();
    h.txn_invoke(1, &[app(1, 1)])
        .info(1, "txn", invoke_value(&[app(1, 1)]))
        .txn(3, &[r(1, Some(&[1]))])
        .txn(3, &[r(1, Some(&[]))]);
    let r = append::check(&h.ops());
    assert_anomaly(&r, "G-single-realtime");
}

// ---------------------------------------------------------------------------------------------
// bank

fn accounts() -> Vec<String> {
    vec!["0".into(), "1".into(), "2".into()]
}

fn transfer(h: &mut H, p: u64, from: u64, to: u64, amount: i64) {
    let v = json!({"from": from, "to": to, "amount": amount});
    h.op(p, "transfer", v.clone(), v);
}

#[test]
fn bank_valid_history() {
    let mut h = H::new();
    h.op(0, "read", Value::Null, json!({"0": 10, "1": 10, "2": 10}));
    transfer(&mut h, 1, 0, 1, 5);
    h.op(0, "read", Value::Null, json!({"0": 5, "1": 15, "2": 10}));
    let v = json!({"from": 2, "to": 0, "amount": 50});
    h.invoke(1, "transfer", v.clone()).fail(1, "transfer", v);
    let r = bank::check(&h.ops(), &accounts(), 30);
    assert_valid(&r);
    assert_eq!(r.stats.extra["transfers_failed"], 1);
}

#[test]
fn bank_wrong_total() {
    let mut h = H::new();
    transfer(&mut h, 1, 0, 1, 5);
    h.op(0, "read", Value::Null, json!({"0": 5, "1": 10, "2": 10})); // 2: saw the debit only
    let r = bank::check(&h.ops(), &accounts(), 30);
    assert_eq!(assert_anomaly(&r, "wrong-total"), vec![2]);
    assert_kinds(&r, &["wrong-total"]);
}

#[test]
fn bank_negative_balance() {
    let mut h = H::new();
    h.op(0, "read", Value::Null, json!({"0": -5, "1": 25, "2": 10}));
    let r = bank::check(&h.ops(), &accounts(), 30);
    assert_eq!(assert_anomaly(&r, "negative-balance"), vec![0]);
    assert_kinds(&r, &["negative-balance"]);
}

#[test]
fn bank_missing_and_unexpected_accounts() {
    let mut h = H::new();
    h.op(0, "read", Value::Null, json!({"0": 20, "1": 10}))
        .op(0, "read", Value::Null, json!({"0": 20, "1": 10, "2": null}))
        .op(0, "read", Value::Null, json!({"0": 20, "1": 10, "2": 0, "9": 0}));
    let r = bank::check(&h.ops(), &accounts(), 30);
    assert_eq!(r.count("missing-account"), 2, "{}", pretty(&r));
    assert_eq!(r.count("unexpected-account"), 1);
    assert_eq!(r.count("wrong-total"), 0, "a total over missing accounts is not reported");
    // With null meaning zero, the second read is fine.
    let params = bank::BankParams { accounts: accounts(), total: 30, null_balance_is_zero: true };
    assert_eq!(bank::check_with(&h.ops(), &params).count("missing-account"), 1);
}

// ---------------------------------------------------------------------------------------------
// causal

#[test]
fn causal_valid_history_with_reads_racing_a_write() {
    let mut h = H::new();
    h.op(0, "write", w(1, 1), w(1, 1)) // acknowledged
        .invoke(0, "write", w(1, 2)) // 2: in flight
        .op(1, "read", rd(1), w(1, 1)) // may miss 2
        .op(2, "read", rd(1), w(1, 2)) // may see 2 already
        .ok(0, "write", w(1, 2))
        .op(1, "read", rd(1), w(1, 2))
        .op(3, "read", rd(2), json!([2, null])); // key 2 never written
    let r = causal::check(&h.ops());
    assert_valid(&r);
    assert_eq!(r.stats.extra["reads"], 4);
}

#[test]
fn causal_read_missing_an_acknowledged_write() {
    let mut h = H::new();
    h.op(0, "write", w(1, 1), w(1, 1))
        .op(0, "write", w(1, 2), w(1, 2)) // 2, 3
        .op(1, "read", rd(1), w(1, 1)) // 4: after 2 was acknowledged
        .op(0, "write", w(2, 1), w(2, 1)) // 6
        .op(2, "read", rd(2), json!([2, null])); // 8: saw nothing
    let r = causal::check(&h.ops());
    assert_eq!(r.count("stale-read"), 2, "{}", pretty(&r));
    assert_eq!(r.anomalies[0].ops, vec![2, 4]);
    assert_eq!(r.anomalies[1].ops, vec![6, 8]);
}

#[test]
fn causal_unwritten_and_future_values() {
    let mut h = H::new();
    h.op(0, "write", w(1, 1), w(1, 1))
        .op(1, "read", rd(1), w(1, 5)) // 2: never written
        .op(1, "read", rd(1), w(1, 2)) // 4: written only later
        .op(0, "write", w(1, 2), w(1, 2)); // 6
    let r = causal::check(&h.ops());
    assert_eq!(assert_anomaly(&r, "unwritten-value"), vec![2]);
    assert_eq!(assert_anomaly(&r, "future-read"), vec![4, 6]);
}

// ---------------------------------------------------------------------------------------------
// timestamps

#[test]
fn timestamps_valid_history() {
    let mut h = H::new();
    h.invoke(0, "write", w(1, 1))
        .ok_ts(0, "write", w(1, 1), 100)
        .invoke(1, "read", rd(1))
        .ok_ts(1, "read", w(1, 1), 100) // reads may share the write's ts
        .invoke(0, "write", w(1, 2))
        .invoke(1, "read", rd(1))
        .ok_ts(1, "read", w(1, 1), 105) // concurrent with write 2 (ts 110)
        .ok_ts(0, "write", w(1, 2), 110)
        .invoke(2, "cas", json!([1, [2, 3]]))
        .ok_ts(2, "cas", json!([1, [2, 3]]), 120)
        .invoke(1, "read", rd(1))
        .ok_ts(1, "read", w(1, 3), 130)
        // An info write of unknown ts, read later: accepted.
        .invoke(3, "write", w(1, 4))
        .info(3, "write", w(1, 4))
        .invoke(1, "read", rd(1))
        .ok_ts(1, "read", w(1, 4), 140);
    let r = timestamps::check(&h.ops());
    assert_valid(&r);
    assert_eq!(r.stats.extra["register_reads_checked"], 4);
}

#[test]
fn timestamps_write_after_acknowledged_write_with_lower_ts() {
    let mut h = H::new();
    h.invoke(0, "write", w(1, 1))
        .ok_ts(0, "write", w(2, 1), 100) // 1
        .invoke(1, "write", w(1, 2)) // 2: began after ts 100 was acknowledged
        .ok_ts(1, "write", w(1, 2), 90);
    let r = timestamps::check(&h.ops());
    assert_eq!(assert_anomaly(&r, "timestamp-order"), vec![0, 2]);
    assert_kinds(&r, &["timestamp-order"]);
}

#[test]
fn timestamps_read_below_acknowledged_write_and_equal_write_ts() {
    let mut h = H::new();
    h.invoke(0, "write", w(1, 1))
        .ok_ts(0, "write", w(1, 1), 100)
        .invoke(1, "read", rd(2)) // 2: a read must not be below 100
        .ok_ts(1, "read", json!([2, null]), 99)
        .invoke(2, "write", w(3, 1)) // 4: a write must be above 100
        .ok_ts(2, "write", w(3, 1), 100);
    let r = timestamps::check(&h.ops());
    assert_eq!(r.count("timestamp-order"), 2, "{}", pretty(&r));
}

#[test]
fn timestamps_read_missing_a_lower_write() {
    let mut h = H::new();
    h.invoke(0, "write", w(1, 1))
        .ok_ts(0, "write", w(1, 1), 100) // 0
        .invoke(1, "read", rd(1)) // 2
        .invoke(0, "write", w(1, 2)) // 3
        .ok_ts(0, "write", w(1, 2), 140)
        .ok_ts(1, "read", w(1, 1), 150) // at 150 the latest is 2 (ts 140)
        .invoke(1, "read", rd(2)) // 6
        .invoke(2, "write", w(2, 1)) // 7
        .ok_ts(2, "write", w(2, 1), 160)
        .ok_ts(1, "read", json!([2, null]), 170); // missed write (ts 160)
    let r = timestamps::check(&h.ops());
    assert_eq!(r.count("stale-read"), 2, "{}", pretty(&r));
    assert_eq!(r.anomalies[0].ops, vec![0, 2, 3]);
    assert_eq!(r.anomalies[1].ops, vec![6, 7]);
    assert_kinds(&r, &["stale-read"]);
}

#[test]
fn timestamps_read_from_the_future() {
    let mut h = H::new();
    h.invoke(1, "read", rd(1)) // 0
        .invoke(0, "write", w(1, 1)) // 1
        .ok_ts(0, "write", w(1, 1), 200)
        .ok_ts(1, "read", w(1, 1), 150); // saw a version at 200 while reading at 150
    let r = timestamps::check(&h.ops());
    assert_eq!(assert_anomaly(&r, "future-read"), vec![0, 1]);
}

#[test]
fn timestamps_list_append_snapshots() {
    let mut h = H::new();
    h.txn_invoke(0, &[app(1, 1)]) // 0
        .ok_ts(0, "txn", txn(&[app(1, 1)]), 100)
        .txn_invoke(0, &[app(1, 2)]) // 2
        // Read-only at 105, concurrent with the append at 110: exactly [1].
        .txn_invoke(1, &[r(1, Some(&[1]))]) // 3
        .ok_ts(0, "txn", txn(&[app(1, 2)]), 110)
        .ok_ts(1, "txn", txn(&[r(1, Some(&[1]))]), 105)
        // Read-only at 115 missing 2 (ts 110).
        .txn_invoke(1, &[r(1, Some(&[1]))]) // 6
        .ok_ts(1, "txn", txn(&[r(1, Some(&[1]))]), 115)
        // A read-write txn whose reads at read_ts 112 see [1, 2] and its own append.
        .txn_invoke(2, &[app(1, 3), r(1, Some(&[1, 2, 3]))]) // 8
        .ok_ts(2, "txn", txn(&[app(1, 3), r(1, Some(&[1, 2, 3]))]), 120)
        .read_ts(112)
        // Read-only at 125 with 3 before 2: the right elements in the wrong order.
        .txn_invoke(3, &[r(1, Some(&[1, 3, 2]))]) // 10
        .ok_ts(3, "txn", txn(&[r(1, Some(&[1, 3, 2]))]), 125)
        // Read-only at 130, concurrent with an append at 140 it saw: from the future.
        .txn_invoke(3, &[r(2, Some(&[7]))]) // 12
        .txn_invoke(4, &[app(2, 7)]) // 13
        .ok_ts(3, "txn", txn(&[r(2, Some(&[7]))]), 130)
        .ok_ts(4, "txn", txn(&[app(2, 7)]), 140);
    let r = timestamps::check(&h.ops());
    assert_eq!(assert_anomaly(&r, "stale-read"), vec![2, 6]);
    assert_eq!(assert_anomaly(&r, "snapshot-order"), vec![10]);
    assert_eq!(assert_anomaly(&r, "future-read"), vec![12, 13]);
    assert_kinds(&r, &["future-read", "snapshot-order", "stale-read"]);
    assert_eq!(r.stats.extra["list_reads_checked"], 5);
}

#[test]
fn timestamps_collisions_and_read_ts_above_ts() {
    let mut h = H::new();
    h.invoke(0, "write", w(1, 1)) // 0
        .invoke(1, "write", w(1, 2)) // 1
        .ok_ts(0, "write", w(1, 1), 100)
        .ok_ts(1, "write", w(1, 2), 100) // two versions of key 1 at ts 100
        .txn_invoke(2, &[app(5, 1)]) // 4
        .txn_invoke(3, &[app(5, 2)]) // 5
        .ok_ts(2, "txn", txn(&[app(5, 1)]), 200)
        .ok_ts(3, "txn", txn(&[app(5, 2)]), 200) // two appends to key 5 at ts 200
        .txn_invoke(4, &[r(6, Some(&[])), app(6, 1)]) // 8
        .ok_ts(4, "txn", txn(&[r(6, Some(&[])), app(6, 1)]), 300)
        .read_ts(300); // reads must be below the commit ts
    let r = timestamps::check(&h.ops());
    assert_eq!(r.count("timestamp-collision"), 2, "{}", pretty(&r));
    assert_eq!(assert_anomaly(&r, "timestamp-order"), vec![8]);
    assert_kinds(&r, &["timestamp-collision", "timestamp-order"]);
}

#[test]
fn malformed_values_are_reported() {
    let mut h = H::new();
    h.op(0, "write", json!([1]), json!([1]))
        .op(0, "cas", json!([1, 2]), json!([1, 2]))
        .op(0, "txn", json!([["append", 1, "x"]]), json!([["append", 1, "x"]]))
        .op(0, "txn", json!([["r", 1, null]]), json!([["r", 1, 5]]))
        .op(0, "read", Value::Null, json!({"0": "many", "1": 10, "2": 10}))
        .op(0, "read", Value::Null, json!([1, 2]));
    let ops = h.ops();
    assert_eq!(register::check(&ops).count("malformed"), 3, "{}", pretty(&register::check(&ops)));
    assert_eq!(append::check(&ops).count("malformed"), 2);
    assert_eq!(bank::check(&ops, &accounts(), 30).count("malformed"), 2);
}

/// The worked examples of the module docs say what the checkers say.
#[test]
fn module_doc_examples_hold() {
    // timestamps
    let mut h = H::new();
    h.invoke(0, "write", w(1, 1))
        .ok_ts(0, "write", w(1, 1), 100)
        .invoke(1, "write", w(1, 2))
        .ok_ts(1, "write", w(1, 2), 90)
        .invoke(2, "read", rd(1))
        .ok_ts(2, "read", w(1, 2), 95)
        .invoke(2, "read", rd(1))
        .ok_ts(2, "read", w(1, 2), 150);
    let res = timestamps::check(&h.ops());
    assert_eq!(res.count("timestamp-order"), 2, "{}", pretty(&res));
    assert_eq!(
        res.anomalies.iter().find(|a| a.kind == "stale-read").map(|a| a.ops.clone()),
        Some(vec![0, 2, 6])
    );
    assert_kinds(&res, &["stale-read", "timestamp-order"]);

    // register
    let mut h = H::new();
    h.op(0, "write", w(1, 1), w(1, 1))
        .invoke(1, "write", w(1, 2))
        .op(2, "read", rd(1), w(1, 1))
        .ok(1, "write", w(1, 2))
        .op(2, "read", rd(1), w(1, 1));
    let res = register::check(&h.ops());
    assert!(assert_anomaly(&res, "nonlinearizable").contains(&6));
    assert!(
        res.anomalies[0].explanation.contains("write 2 (index 2) could not take effect"),
        "{}",
        pretty(&res)
    );

    // append: T2 invoked after T3's ok makes the G-single-realtime.
    let (t1, t2, t3, t4) = (
        [app(1, 1)],
        [app(1, 2), r(2, Some(&[]))],
        [app(2, 1)],
        [r(1, Some(&[1, 2])), r(2, Some(&[1]))],
    );
    let mut h = H::new();
    h.txn(1, &t1).txn(3, &t3).txn(2, &t2).txn(4, &t4);
    let res = append::check(&h.ops());
    assert_eq!(assert_anomaly(&res, "G-single-realtime"), vec![2, 4]);
    assert!(
        res.anomalies[0].explanation.contains("T1 (index 4) rw[key 2]→ T2 (index 2) rt→ T1"),
        "{}",
        pretty(&res)
    );

    // causal
    let mut h = H::new();
    h.op(0, "write", w(1, 1), w(1, 1))
        .invoke(1, "read", rd(1))
        .invoke(0, "write", w(1, 2))
        .ok(1, "read", w(1, 1))
        .ok(0, "write", w(1, 2))
        .op(2, "read", rd(1), w(1, 1));
    assert_eq!(assert_anomaly(&causal::check(&h.ops()), "stale-read"), vec![3, 6]);

    // bank
    let v = json!({"from": 0, "to": 1, "amount": 3});
    let mut h = H::new();
    h.invoke(0, "transfer", v.clone())
        .op(1, "read", Value::Null, json!({"0": 7, "1": 3}))
        .ok(0, "transfer", v)
        .op(1, "read", Value::Null, json!({"0": 7, "1": 0}));
    let res = bank::check(&h.ops(), &["0".into(), "1".into()], 10);
    assert_eq!(assert_anomaly(&res, "wrong-total"), vec![4]);
}

#[test]
fn timestamps_without_ts_are_unknown() {
    let mut h = H::new();
    h.op(0, "write", w(1, 1), w(1, 1));
    assert_eq!(timestamps::check(&h.ops()).valid, Validity::Unknown);
}

// ---------------------------------------------------------------------------------------------
// parsing, pairing, results

#[test]
fn history_file_round_trip() {
    let mut h = H::new();
    h.invoke(0, "write", w(1, 1)).ok_ts(0, "write", w(1, 1), 7).invoke(1, "read", rd(1));
    h.events[1].node = Some("n2".into());
    h.events[1].error = None;
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("history.jsonl");
    history::write_history_file(&path, &h.events).expect("write");
    let back = history::read_history(&path).expect("read");
    assert_eq!(back, h.events);
    let ops = history::read_ops(&path).expect("pair");
    assert_eq!(ops.len(), 2);
    assert_eq!(
        (ops[0].outcome, ops[0].ts, ops[0].node.as_deref()),
        (Outcome::Ok, Some(7), Some("n2"))
    );
    assert_eq!((ops[1].outcome, ops[1].complete_index), (Outcome::Open, None));
}

#[test]
fn history_accepts_the_recorders_lines() {
    // What tests/src/jepsen/recorder.rs writes: nulls, an error field, a completion value of
    // null (the invoke's is kept).
    let text = r#"{"time":5,"process":3,"type":"invoke","f":"write","value":[1,2],"node":null,"index":0}

{"time":9,"process":3,"type":"info","f":"write","value":null,"node":"n1","ts":null,"error":"timeout","index":1}
"#;
    let events = history::parse_history(text).expect("parse");
    assert_eq!(events[1].error.as_deref(), Some("timeout"));
    let ops = history::pair(&events).expect("pair");
    assert_eq!(ops[0].value, json!([1, 2]));
    assert_eq!(ops[0].outcome, Outcome::Info);
    assert_eq!(ops[0].node.as_deref(), Some("n1"));
}

#[test]
fn history_malformed_lines_name_their_line() {
    let good = r#"{"index":0,"time":0,"process":0,"type":"invoke","f":"read","value":[1,null]}"#;
    let text = format!("{good}\n\nnot json\n");
    match history::parse_history(&text) {
        Err(HistoryError::Parse { line: 3, .. }) => {}
        other => panic!("expected a parse error at line 3: {other:?}"),
    }
    let text =
        format!("{good}\n{}\n", r#"{"index":1,"time":0,"process":0,"type":"done","f":"read"}"#);
    let err = history::parse_history(&text).expect_err("bad type");
    assert!(matches!(err, HistoryError::Parse { line: 2, .. }), "{err}");
    assert!(err.to_string().starts_with("line 2:"), "{err}");
    let text = r#"{"index":0,"process":0,"type":"invoke","f":"read"}"#;
    assert!(matches!(history::parse_history(text), Err(HistoryError::Parse { line: 1, .. })));
}

#[test]
fn history_pairing_rejects_broken_conventions() {
    let mut h = H::new();
    h.invoke(0, "read", rd(1)).invoke(0, "read", rd(1));
    assert!(matches!(
        history::pair(&h.events),
        Err(HistoryError::TwoOutstanding { process: 0, first: 0, second: 1 })
    ));
    let mut h = H::new();
    h.ok(0, "read", rd(1));
    assert!(matches!(
        history::pair(&h.events),
        Err(HistoryError::CompletionWithoutInvoke { process: 0, index: 0 })
    ));
    let mut h = H::new();
    h.invoke(0, "write", w(1, 1)).info(0, "write", w(1, 1)).invoke(0, "read", rd(1));
    assert!(matches!(
        history::pair(&h.events),
        Err(HistoryError::ProcessReused { process: 0, info: 1, index: 2 })
    ));
    let mut h = H::new();
    h.invoke(0, "write", w(1, 1)).ok(0, "read", w(1, 1));
    assert!(matches!(history::pair(&h.events), Err(HistoryError::MismatchedF { .. })));
    let mut h = H::new();
    h.invoke(0, "write", w(1, 1)).invoke(1, "write", w(1, 2));
    h.events[1].index = 0;
    assert!(matches!(
        history::pair(&h.events),
        Err(HistoryError::IndexOrder { index: 0, previous: 0 })
    ));
    // ok and fail free the process for its next op.
    let mut h = H::new();
    h.op(0, "read", rd(1), w(1, 1)).invoke(0, "cas", json!([1, [1, 2]])).fail(
        0,
        "cas",
        json!([1, [1, 2]]),
    );
    h.invoke(0, "read", rd(1));
    assert_eq!(history::pair(&h.events).expect("valid").len(), 3);
}

#[test]
fn results_cap_examples_and_serialize() {
    let mut h = H::new();
    h.op(0, "write", w(1, 1), w(1, 1));
    for _ in 0..20 {
        h.op(1, "read", rd(1), json!([1, null]));
    }
    let r = causal::check(&h.ops());
    assert_eq!(r.count("stale-read"), 20);
    assert_eq!(r.anomalies.len(), check::MAX_EXAMPLES_PER_KIND);
    let json = serde_json::to_value(&r).expect("serialize");
    assert_eq!(json["valid"], "invalid");
    assert_eq!(json["anomaly_counts"]["stale-read"], 20);
    assert_eq!(json["stats"]["reads"], 20);
    assert!(json["elapsed_secs"].is_f64());
    let back: CheckResult = serde_json::from_value(json).expect("deserialize");
    assert_eq!(back.anomalies, r.anomalies);
}

#[test]
fn dispatcher_runs_workload_checker_and_timestamps() {
    let mut h = H::new();
    h.invoke(0, "write", w(1, 1)).ok_ts(0, "write", w(1, 1), 10);
    let ops = h.ops();
    for workload in ["register", "causal"] {
        let results = check::check_workload(workload, &ops, &CheckParams::default());
        assert_eq!(
            results.iter().map(|r| r.checker.as_str()).collect::<Vec<_>>(),
            [workload, "timestamps"]
        );
        assert_eq!(check::overall(&results), Validity::Valid);
    }
    let bank = check::check_workload("bank", &ops, &CheckParams::default());
    assert_eq!(bank[0].valid, Validity::Unknown);
    assert_eq!(check::overall(&bank), Validity::Unknown);
    let unknown = check::check_workload("sets", &ops, &CheckParams::default());
    assert_eq!(check::overall(&unknown), Validity::Unknown);
    assert_eq!(check::overall(&[]), Validity::Unknown);
}

// ---------------------------------------------------------------------------------------------
// generated histories

fn generated(model: &mut impl Model, seed: u64, ops: usize, slots: usize, crash: f64) -> Vec<Op> {
    let events = simulate(model, seed, SimOptions { ops, slots, crash });
    history::pair(&events).expect("the generator follows the conventions")
}

fn bank_params() -> CheckParams {
    CheckParams {
        bank: Some(bank::BankParams {
            accounts: (0..5).map(|a| a.to_string()).collect(),
            total: 100,
            null_balance_is_zero: false,
        }),
        ..CheckParams::default()
    }
}

/// Every checker of `workload` says valid on a generated history (and returns the results).
fn assert_all_valid(workload: &str, ops: &[Op], params: &CheckParams) -> Vec<CheckResult> {
    let results = check::check_workload(workload, ops, params);
    for r in &results {
        assert_valid(r);
    }
    results
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, .. ProptestConfig::default() })]

    #[test]
    fn generated_register_histories_are_valid(seed in any::<u64>(), slots in 1usize..8, keys in 1usize..4) {
        let ops = generated(&mut Registers::new(keys), seed, 150, slots, 0.05);
        assert_all_valid("register", &ops, &CheckParams::default());
    }

    #[test]
    fn generated_append_histories_are_valid(seed in any::<u64>(), slots in 1usize..8) {
        let ops = generated(&mut Lists::new(), seed, 150, slots, 0.05);
        assert_all_valid("append", &ops, &CheckParams::default());
    }

    #[test]
    fn generated_bank_and_causal_histories_are_valid(seed in any::<u64>(), slots in 3usize..8) {
        let ops = generated(&mut Bank { balances: vec![20; 5] }, seed, 150, slots, 0.05);
        assert_all_valid("bank", &ops, &bank_params());
        let ops = generated(&mut Causal::new(2), seed, 150, slots, 0.05);
        assert_all_valid("causal", &ops, &CheckParams::default());
    }
}

/// Makes the last read that can be made stale return the value of a write that was overwritten
/// before the read began; the read's history index.
fn make_register_read_stale(ops: &mut [Op]) -> u64 {
    let ok_write = |o: &Op| o.f == "write" && o.outcome == Outcome::Ok;
    let writer: std::collections::HashMap<String, usize> = (0..ops.len())
        .filter(|&i| ok_write(&ops[i]))
        .map(|i| (ops[i].value.to_string(), i))
        .collect();
    for r in (0..ops.len()).rev() {
        if ops[r].f != "read" || ops[r].outcome != Outcome::Ok {
            continue;
        }
        let Some(&b) = writer.get(&ops[r].value.to_string()) else { continue };
        if !ops[b].precedes(&ops[r]) {
            continue;
        }
        let a = (0..b).rev().find(|&a| {
            ok_write(&ops[a]) && ops[a].value[0] == ops[b].value[0] && ops[a].precedes(&ops[b])
        });
        if let Some(a) = a {
            ops[r].value = ops[a].value.clone();
            return ops[r].invoke_index;
        }
    }
    panic!("no read after two sequential writes");
}

/// Drops the last element of the last one-read txn whose read ends in an append acknowledged
/// before the txn began; the txn's history index.
fn make_append_read_stale(ops: &mut [Op]) -> u64 {
    let mut writer = std::collections::HashMap::new();
    for (i, o) in ops.iter().enumerate() {
        if o.outcome == Outcome::Ok {
            for m in o.value.as_array().into_iter().flatten() {
                if m[0] == "append" {
                    writer.insert((m[1].to_string(), m[2].to_string()), i);
                }
            }
        }
    }
    for i in (0..ops.len()).rev() {
        let op = &ops[i];
        // A read-only txn of one read, so the mutation breaks nothing inside the txn.
        let Some([m]) = op.value.as_array().map(Vec::as_slice) else { continue };
        if op.outcome != Outcome::Ok || op.f != "txn" || m[0] != "r" {
            continue;
        }
        let Some(last) = m[2].as_array().and_then(|l| l.last()) else { continue };
        if let Some(&w) = writer.get(&(m[1].to_string(), last.to_string()))
            && ops[w].precedes(op)
        {
            if let Some(list) = ops[i].value[0][2].as_array_mut() {
                list.pop();
            }
            return ops[i].invoke_index;
        }
    }
    panic!("no read-only txn read an acknowledged append");
}

/// Asserts a mutated history is caught by the workload checker (`kind`) and the timestamp
/// checker (`stale-read`), both naming the mutated op, within the time bound.
fn assert_mutation_caught(workload: &str, ops: &[Op], index: u64, kind: &str) {
    let start = Instant::now();
    let results = check::check_workload(workload, ops, &CheckParams::default());
    eprintln!(
        "{workload}: mutation at index {index} caught in {:?} ({:?})",
        start.elapsed(),
        results.iter().map(|r| r.elapsed).collect::<Vec<_>>()
    );
    assert!(assert_anomaly(&results[0], kind).contains(&index), "{}", pretty(&results[0]));
    assert!(assert_anomaly(&results[1], "stale-read").contains(&index), "{}", pretty(&results[1]));
    assert!(start.elapsed() < BOUND);
}

#[test]
fn mutated_register_history_is_caught() {
    let mut ops = generated(&mut Registers::new(3), 7, 2_000, 5, 0.02);
    let index = make_register_read_stale(&mut ops);
    assert_mutation_caught("register", &ops, index, "nonlinearizable");
}

#[test]
fn mutated_append_history_is_caught() {
    let mut ops = generated(&mut Lists::new(), 11, 2_000, 5, 0.02);
    let index = make_append_read_stale(&mut ops);
    assert_mutation_caught("append", &ops, index, "G-single-realtime");
}

/// A stale read near the end of 20,000 ops: the search must exhaust a long key to say so.
#[test]
fn mutated_20000_op_histories_are_caught() {
    for (keys, slots) in [(8, 10), (1, 20)] {
        let mut ops = generated(&mut Registers::new(keys), 12, 20_000, slots, 0.02);
        let index = make_register_read_stale(&mut ops);
        assert_mutation_caught("register", &ops, index, "nonlinearizable");
    }
    let mut ops = generated(&mut Lists::new(), 13, 20_000, 10, 0.02);
    let index = make_append_read_stale(&mut ops);
    assert_mutation_caught("append", &ops, index, "G-single-realtime");
}

/// Checks a generated `workload` history with every checker of the workload, asserting valid
/// and finishing within `bound`; prints each checker's time.
fn timed_check(workload: &str, ops: &[Op], params: &CheckParams, bound: Duration) {
    let start = Instant::now();
    let results = assert_all_valid(workload, ops, params);
    let took = start.elapsed();
    for r in &results {
        eprintln!(
            "{workload}: {} on {} ops: {:?} {:?}",
            r.checker,
            ops.len(),
            r.elapsed,
            r.stats.extra
        );
    }
    assert!(took < bound, "{workload} checkers took {took:?} on {} ops", ops.len());
}

const BOUND: Duration = Duration::from_secs(60);

#[test]
fn checkers_handle_2000_ops() {
    let n = 2_000;
    timed_check(
        "register",
        &generated(&mut Registers::new(8), 1, n, 10, 0.02),
        &CheckParams::default(),
        BOUND,
    );
    timed_check(
        "append",
        &generated(&mut Lists::new(), 2, n, 10, 0.02),
        &CheckParams::default(),
        BOUND,
    );
    timed_check(
        "bank",
        &generated(&mut Bank { balances: vec![20; 5] }, 3, n, 10, 0.02),
        &bank_params(),
        BOUND,
    );
    timed_check(
        "causal",
        &generated(&mut Causal::new(4), 4, n, 10, 0.02),
        &CheckParams::default(),
        BOUND,
    );
}

/// 20,000 register ops: 8 keys and 10 processes (the runner's shape), then all on one key
/// with 20 concurrent processes and 5% crashes (a hard search).
#[test]
fn register_checker_handles_20000_ops() {
    let ops = generated(&mut Registers::new(8), 5, 20_000, 10, 0.02);
    timed_check("register", &ops, &CheckParams::default(), BOUND);
    let ops = generated(&mut Registers::new(1), 6, 20_000, 20, 0.05);
    timed_check("register", &ops, &CheckParams::default(), BOUND);
}

/// 20,000 list-append transactions, 10 and then 30 concurrent processes.
#[test]
fn append_checker_handles_20000_ops() {
    let ops = generated(&mut Lists::new(), 7, 20_000, 10, 0.02);
    timed_check("append", &ops, &CheckParams::default(), BOUND);
    let ops = generated(&mut Lists::new(), 8, 20_000, 30, 0.05);
    timed_check("append", &ops, &CheckParams::default(), BOUND);
}

#[test]
fn bank_and_causal_checkers_handle_20000_ops() {
    let ops = generated(&mut Bank { balances: vec![20; 5] }, 9, 20_000, 10, 0.02);
    timed_check("bank", &ops, &bank_params(), BOUND);
    let ops = generated(&mut Causal::new(4), 10, 20_000, 12, 0.02);
    timed_check("causal", &ops, &CheckParams::default(), BOUND);
}

/// Linearizability of one key by brute force: try every order (no memo, no pruning).
fn brute_force_linearizable(ops: &[Op]) -> bool {
    #[derive(Clone, Copy)]
    enum A {
        R(Option<i64>),
        W(i64),
        Cas(Option<i64>, i64),
    }
    let parsed: Vec<(A, &Op)> = ops
        .iter()
        .filter(|o| o.outcome != Outcome::Fail)
        .filter(|o| !(o.f == "read" && o.outcome != Outcome::Ok))
        .map(|o| {
            let v = &o.value[1];
            let a = match o.f.as_str() {
                "read" => A::R(v.as_i64()),
                "write" => A::W(v.as_i64().unwrap_or(0)),
                _ => A::Cas(v[0].as_i64(), v[1].as_i64().unwrap_or(0)),
            };
            (a, o)
        })
        .collect();
    fn go(parsed: &[(A, &Op)], done: &mut Vec<bool>, state: Option<i64>) -> bool {
        if parsed.iter().zip(done.iter()).all(|((_, o), d)| *d || o.outcome != Outcome::Ok) {
            return true;
        }
        for x in 0..parsed.len() {
            if done[x] {
                continue;
            }
            // Every op that completed before x was invoked must already be done.
            let blocked =
                (0..parsed.len()).any(|y| !done[y] && y != x && parsed[y].1.precedes(parsed[x].1));
            if blocked {
                continue;
            }
            let next = match parsed[x].0 {
                A::R(v) if v == state => Some(state),
                A::W(v) => Some(Some(v)),
                A::Cas(e, n) if e == state => Some(Some(n)),
                _ => None,
            };
            if let Some(next) = next {
                done[x] = true;
                let ok = go(parsed, done, next);
                done[x] = false;
                if ok {
                    return true;
                }
            }
        }
        false
    }
    go(&parsed, &mut vec![false; parsed.len()], None)
}

/// A random small one-key history: processes invoke and complete in random order, with
/// random read results and outcomes, so most are not linearizable.
fn random_register_history(seed: u64, n: usize) -> Vec<Op> {
    use rand::{Rng, SeedableRng};
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut h = H::new();
    let mut pending: Vec<Option<(&'static str, Value)>> = vec![None; 3];
    let mut process = [0u64, 1, 2];
    let mut next_process = 3;
    let (mut invoked, mut next_value) = (0, 1);
    while invoked < n || pending.iter().any(Option::is_some) {
        let s = rng.random_range(0..3);
        match pending[s].take() {
            None if invoked < n => {
                invoked += 1;
                let (f, v) = match rng.random_range(0..3) {
                    0 => ("read", json!([1, null])),
                    1 => {
                        next_value += 1;
                        ("write", json!([1, next_value]))
                    }
                    _ => {
                        next_value += 1;
                        let e = if rng.random_bool(0.3) {
                            json!(null)
                        } else {
                            json!(rng.random_range(1..=next_value))
                        };
                        ("cas", json!([1, [e, next_value]]))
                    }
                };
                h.invoke(process[s], f, v.clone());
                pending[s] = Some((f, v));
            }
            None => {}
            Some((f, v)) => {
                if rng.random_bool(0.05) {
                    // Left open for good: the process never completes, its slot moves on.
                    process[s] = next_process;
                    next_process += 1;
                    continue;
                }
                let roll = rng.random_range(0..10);
                if roll == 0 {
                    h.info(process[s], f, v);
                    process[s] = next_process;
                    next_process += 1;
                } else if roll == 1 && f != "read" {
                    h.fail(process[s], f, v);
                } else if f == "read" {
                    let got = if rng.random_bool(0.2) {
                        json!(null)
                    } else {
                        json!(rng.random_range(1..=next_value))
                    };
                    h.ok(process[s], f, json!([1, got]));
                } else {
                    h.ok(process[s], f, v);
                }
            }
        }
    }
    h.ops()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, .. ProptestConfig::default() })]

    /// The optimized search agrees with brute force, on valid and invalid histories alike.
    #[test]
    fn register_search_agrees_with_brute_force(seed in any::<u64>(), n in 1usize..8) {
        let ops = random_register_history(seed, n);
        let expected = brute_force_linearizable(&ops);
        let r = register::check(&ops);
        let got = r.valid == Validity::Valid;
        prop_assert_eq!(got, expected, "{:#?}\n{}", ops, pretty(&r));
    }
}
