//! Timestamps against real time and against what reads returned: the checks that tie a run's
//! recorded commit and read timestamps to TrueTime's promises. Works on every workload whose
//! operations record `ts`.
//!
//! boundkv orders transactions by timestamp, and commit wait makes timestamp order agree with
//! real time: a commit at `s` is acknowledged only once every clock is past `s`, so anything
//! that begins afterwards gets a later timestamp. And an MVCC read at `t` must see exactly the
//! versions at or below `t`. The recorded `ts` (and `read_ts`) of `ok` operations let the
//! checker test both directly, independently of the other checkers' inference.
//!
//! # Method
//!
//! 1. **Real-time order** (`timestamp-order`). Whenever an `ok` operation A that wrote (a
//!    `write`, `cas`, `transfer`, or a `txn` with an append) completed before an `ok` operation B
//!    was invoked: `ts(B) > ts(A)` if B writes, `ts(B) >= ts(A)` if B only reads. One sweep over
//!    the invokes and completions in history order, keeping the largest writer `ts` completed so
//!    far: O(n log n) for the sort. A read-write transaction must also have `read_ts < ts`.
//!    A `read-stale` (a bounded-staleness read: it may lawfully read the past) is not held to
//!    real-time order.
//! 2. **Register reads** (`register` and `causal`: `read`/`read-stale`/`write`/`cas` on
//!    `[key, v]`). Per key,
//!    the `ok` writes with a `ts` (a cas writes its new value) sorted by `ts`. A read at `t` must
//!    return the value of the write with the greatest `ts <= t` (`null` if there is none). It is
//!    a `future-read` if it returned the value of an `ok` write with `ts > t`, a `stale-read` if
//!    it returned an older write's value (or `null`) while a later write `<= t` exists. A value
//!    only an `info`/open write (or an `ok` write without `ts`) could have produced is accepted:
//!    its timestamp is unknown. Values nobody wrote are left to the workload's own checker.
//! 3. **List-append reads** (`append`). A read-only transaction at `ts`, or a read-write
//!    transaction's reads at `read_ts`, must see for each key it reads exactly the appends of
//!    `ok` transactions with `ts <=` that timestamp, in `ts` order, followed by its own earlier
//!    appends. Elements of transactions with unknown timestamps (`info`, open) are taken out of
//!    the read before comparing. A read with an element from above its timestamp is a
//!    `future-read`; one missing an element from at or below it, a `stale-read`; one with the
//!    right elements in another order, a `snapshot-order`.
//!
//! Two `ok` writes of one key with the same `ts` are a `timestamp-collision` (one version would
//! hide the other). Operations without `ts` are skipped (counted in the stats); if no `ok`
//! operation has one, the verdict is `Unknown`.
//!
//! # Worked example
//!
//! ```text
//! index  event                            ts
//! 0      p0 invoke write [k, 1]
//! 1      p0 ok     write [k, 1]           100
//! 2      p1 invoke write [k, 2]
//! 3      p1 ok     write [k, 2]            90   timestamp-order: began after ts 100 was acked
//! 4      p2 invoke read  [k, null]
//! 5      p2 ok     read  [k, 2]            95   timestamp-order (began after 100 was acked),
//!                                               though the value fits: 2 (ts 90) is the
//!                                               latest version at or below 95
//! 6      p2 invoke read  [k, null]
//! 7      p2 ok     read  [k, 2]           150   stale-read: 1 (ts 100) is the latest at or
//!                                               below 150
//! ```
//!
//! Rule 1 catches the writes and reads whose timestamps run against real time (what commit wait
//! prevents); rule 2 catches reads that do not match the versions at their own timestamp (what
//! MVCC and safe time must prevent), whatever real time says.

use std::collections::{HashMap, HashSet};
use std::time::Instant;

use serde_json::Value;

use super::history::{Op, Outcome};
use super::result::{Anomaly, AnomalyLog, CheckResult, Stats};

/// Whether an operation writes (`Some(true)`), only reads (`Some(false)`), or is not one the
/// checker knows (`None`).
fn writes(op: &Op) -> Option<bool> {
    match op.f.as_str() {
        "write" | "cas" | "transfer" => Some(true),
        "read" => Some(false),
        "txn" => Some(op.value.as_array()?.iter().any(|m| {
            m.as_array().and_then(|m| m.first()).and_then(Value::as_str) == Some("append")
        })),
        _ => None,
    }
}

/// Checks the recorded timestamps (see the module docs).
pub fn check(ops: &[Op]) -> CheckResult {
    let start = Instant::now();
    let mut log = AnomalyLog::new();
    let mut stats = Stats::of(ops);
    let with_ts = ops.iter().filter(|o| o.outcome == Outcome::Ok && o.ts.is_some()).count();
    let ok = ops.iter().filter(|o| o.outcome == Outcome::Ok).count();
    stats.add("ok_with_ts", with_ts as u64);
    stats.add("ok_without_ts", (ok - with_ts) as u64);
    if with_ts == 0 {
        log.undecided("no ok operation recorded a ts: nothing to check".into());
        return log.finish("timestamps", stats, start.elapsed());
    }
    real_time(ops, &mut log, &mut stats);
    registers(ops, &mut log, &mut stats);
    lists(ops, &mut log, &mut stats);
    log.finish("timestamps", stats, start.elapsed())
}

/// Rule 1: timestamps respect real time.
fn real_time(ops: &[Op], log: &mut AnomalyLog, stats: &mut Stats) {
    // (position, is completion, op)
    let mut points: Vec<(u64, bool, usize)> = Vec::new();
    for (i, op) in ops.iter().enumerate() {
        let (Outcome::Ok, Some(ts), Some(w)) = (op.outcome, op.ts, writes(op)) else { continue };
        if let Some(r) = op.read_ts
            && w
            && r >= ts
        {
            log.push(Anomaly::new(
                "timestamp-order",
                format!(
                    "{} (index {}) read at read_ts {r} but committed at ts {ts}; it must commit \
                     above its read timestamp",
                    op.f, op.invoke_index
                ),
                vec![op.invoke_index],
            ));
        }
        points.push((op.invoke_index, false, i));
        if w && let Some(c) = op.complete_index {
            points.push((c, true, i));
        }
    }
    points.sort_unstable();
    let mut checked = 0;
    // The greatest ts of a writer that completed so far, and which op it was.
    let mut max: Option<(u64, usize)> = None;
    for (_, is_completion, i) in points {
        let op = &ops[i];
        let ts = op.ts.unwrap_or(0);
        if is_completion {
            if max.is_none_or(|(m, _)| ts > m) {
                max = Some((ts, i));
            }
            continue;
        }
        checked += 1;
        let Some((bound, a)) = max else { continue };
        let b_writes = writes(op) == Some(true);
        let bad = if b_writes { ts <= bound } else { ts < bound };
        if bad {
            let (ai, bi) = (ops[a].invoke_index, op.invoke_index);
            let need = if b_writes { "above" } else { "at or above" };
            log.push(Anomaly::new(
                "timestamp-order",
                format!(
                    "{} (index {bi}) has ts {ts}, but it began after {} (index {ai}) with ts \
                     {bound} was acknowledged, so its ts must be {need} {bound}",
                    op.f, ops[a].f
                ),
                vec![ai, bi],
            ));
        }
    }
    stats.add("real_time_checked", checked);
}

/// An ok write with a known timestamp: (ts, value text, invoke index).
type Version = (u64, String, u64);

/// Rule 2: register reads return the latest version at or below their timestamp.
fn registers(ops: &[Op], log: &mut AnomalyLog, stats: &mut Stats) {
    struct Key {
        versions: Vec<Version>,
        /// value text -> (ts if ok with ts, invoke index), for writes that may have happened.
        writers: HashMap<String, (Option<u64>, u64)>,
    }
    let mut keys: HashMap<String, Key> = HashMap::new();
    let mut reads: Vec<(String, &Op, String, u64)> = Vec::new();
    for op in ops {
        if !matches!(op.f.as_str(), "read" | "read-stale" | "write" | "cas")
            || op.outcome == Outcome::Fail
        {
            continue;
        }
        let Some([key, v]) = op.value.as_array().map(Vec::as_slice) else { continue };
        let key = super::json_text(key);
        let written = match op.f.as_str() {
            "read" | "read-stale" => {
                if op.outcome == Outcome::Ok
                    && let Some(ts) = op.ts
                {
                    reads.push((key, op, super::json_text(v), ts));
                }
                continue;
            }
            "write" => v,
            _ => match v.as_array().map(Vec::as_slice) {
                Some([_, new]) => new,
                _ => continue,
            },
        };
        let k = keys
            .entry(key)
            .or_insert_with(|| Key { versions: Vec::new(), writers: HashMap::new() });
        let text = super::json_text(written);
        let known = if op.outcome == Outcome::Ok { op.ts } else { None };
        if let Some(ts) = known {
            k.versions.push((ts, text.clone(), op.invoke_index));
        }
        let entry = k.writers.entry(text).or_insert((known, op.invoke_index));
        if known.is_none() {
            // An indeterminate producer of the value makes any timestamp possible.
            *entry = (None, op.invoke_index);
        }
    }
    for (key, k) in &mut keys {
        k.versions.sort_unstable();
        for pair in k.versions.windows(2) {
            if pair[0].0 == pair[1].0 {
                log.push(Anomaly::new(
                    "timestamp-collision",
                    format!(
                        "key {key}: writes (index {}) and (index {}) both committed at ts {}",
                        pair[0].2, pair[1].2, pair[0].0
                    ),
                    vec![pair[0].2, pair[1].2],
                ));
            }
        }
    }
    stats.add("register_reads_checked", reads.len() as u64);
    for (key, op, got, t) in reads {
        let index = op.invoke_index;
        let (versions, writer) = match keys.get(&key) {
            Some(k) => (k.versions.as_slice(), k.writers.get(&got).copied()),
            None => (&[][..], None),
        };
        let n = versions.partition_point(|v| v.0 <= t);
        let latest = n.checked_sub(1).map(|i| &versions[i]);
        // Every version at the latest timestamp is acceptable (a collision is reported above).
        let matches_latest = latest.is_some_and(|l| {
            versions[..n].iter().rev().take_while(|v| v.0 == l.0).any(|v| v.1 == got)
        });
        if matches_latest || (latest.is_none() && got == "null") {
            continue;
        }
        match (got.as_str(), writer) {
            ("null", _) => {
                let Some((lts, _, li)) = latest else { continue };
                log.push(Anomaly::new(
                    "stale-read",
                    format!(
                        "read (index {index}) of key {key} at ts {t} returned null, but write \
                         (index {li}) committed at ts {lts} <= {t}"
                    ),
                    vec![index, *li],
                ));
            }
            (_, Some((Some(wts), wi))) if wts > t => log.push(Anomaly::new(
                "future-read",
                format!(
                    "read (index {index}) of key {key} at ts {t} returned {got}, written at ts \
                     {wts} (index {wi}), above the read's timestamp"
                ),
                vec![index, wi],
            )),
            (_, Some((Some(wts), wi))) => {
                let Some((lts, lv, li)) = latest else { continue };
                log.push(Anomaly::new(
                    "stale-read",
                    format!(
                        "read (index {index}) of key {key} at ts {t} returned {got} (written at \
                         ts {wts}, index {wi}), but write {lv} (index {li}) at ts {lts} is the \
                         latest at or below {t}"
                    ),
                    vec![index, wi, *li],
                ));
            }
            // Written only by writes of unknown timestamp, or by none: not this rule's to judge.
            _ => {}
        }
    }
}

/// Rule 3: list-append reads see exactly the appends at or below their snapshot.
fn lists(ops: &[Op], log: &mut AnomalyLog, stats: &mut Stats) {
    /// A txn's micro-ops as (is append, key text, element or read list).
    fn micro(op: &Op) -> Vec<(bool, String, &Value)> {
        let mut out = Vec::new();
        for m in op.value.as_array().into_iter().flatten() {
            if let Some([f, k, v]) = m.as_array().map(Vec::as_slice) {
                out.push((f.as_str() == Some("append"), super::json_text(k), v));
            }
        }
        out
    }
    // Per key: (ts, position in txn, element, writer invoke index) of ok appends with a ts.
    let mut versions: HashMap<String, Vec<(u64, usize, i64, u64)>> = HashMap::new();
    // (key, element) -> Some(ts) for ok appends with ts, None for unknown timestamps.
    let mut element_ts: HashMap<(String, i64), Option<u64>> = HashMap::new();
    let mut readers: Vec<usize> = Vec::new();
    for (i, op) in ops.iter().enumerate() {
        if op.f != "txn" || op.outcome == Outcome::Fail {
            continue;
        }
        let known = if op.outcome == Outcome::Ok { op.ts } else { None };
        for (pos, (is_append, key, v)) in micro(op).into_iter().enumerate() {
            let Some(e) = v.as_i64().filter(|_| is_append) else { continue };
            if let Some(ts) = known {
                versions.entry(key.clone()).or_default().push((ts, pos, e, op.invoke_index));
            }
            element_ts.insert((key, e), known);
        }
        if op.outcome == Outcome::Ok {
            readers.push(i);
        }
    }
    for (key, list) in &mut versions {
        list.sort_unstable();
        let mut last: Option<(u64, u64)> = None;
        for &(ts, _, _, w) in list.iter() {
            if let Some((lts, lw)) = last
                && lts == ts
                && lw != w
            {
                log.push(Anomaly::new(
                    "timestamp-collision",
                    format!(
                        "key {key}: txns (index {lw}) and (index {w}) both appended at ts {ts}"
                    ),
                    vec![lw, w],
                ));
            }
            last = Some((ts, w));
        }
    }
    let mut checked = 0;
    for i in readers {
        let op = &ops[i];
        let snapshot = if writes(op) == Some(true) { op.read_ts } else { op.ts };
        let Some(s) = snapshot else { continue };
        let index = op.invoke_index;
        let mut own: HashMap<String, Vec<i64>> = HashMap::new();
        for (is_append, key, v) in micro(op) {
            if is_append {
                if let Some(e) = v.as_i64() {
                    own.entry(key).or_default().push(e);
                }
                continue;
            }
            let Some(read) = (match v {
                Value::Null => Some(Vec::new()),
                Value::Array(a) => a.iter().map(Value::as_i64).collect::<Option<Vec<i64>>>(),
                _ => None,
            }) else {
                continue;
            };
            checked += 1;
            let mine: &[i64] = own.get(&key).map_or(&[], Vec::as_slice);
            let empty = Vec::new();
            let vs = versions.get(&key).unwrap_or(&empty);
            let n = vs.partition_point(|v| v.0 <= s);
            // Other txns' appends at or below the snapshot, then this txn's own so far.
            let below = || vs[..n].iter().filter(|v| v.3 != index);
            let expected: Vec<i64> = below().map(|v| v.2).chain(mine.iter().copied()).collect();
            // The read without elements of unknown timestamp (or unknown origin).
            let stripped: Vec<i64> = read
                .iter()
                .copied()
                .filter(|e| {
                    mine.contains(e) || matches!(element_ts.get(&(key.clone(), *e)), Some(Some(_)))
                })
                .collect();
            if stripped == expected {
                continue;
            }
            let writer = |e: i64| vs.iter().find(|v| v.2 == e).map(|v| (v.0, v.3));
            let future =
                stripped.iter().find(|e| !mine.contains(e) && writer(**e).is_some_and(|w| w.0 > s));
            if let Some(&e) = future {
                let (wts, wi) = writer(e).unwrap_or((0, 0));
                log.push(Anomaly::new(
                    "future-read",
                    format!(
                        "txn (index {index}) read key {key} = {read:?} at ts {s}, but {e} was \
                         appended at ts {wts} (index {wi}), above the read's timestamp"
                    ),
                    vec![index, wi],
                ));
                continue;
            }
            let present: HashSet<i64> = stripped.iter().copied().collect();
            if let Some(&(wts, _, e, wi)) = below().find(|v| !present.contains(&v.2)) {
                log.push(Anomaly::new(
                    "stale-read",
                    format!(
                        "txn (index {index}) read key {key} = {read:?} at ts {s}, missing {e}, \
                         appended at ts {wts} <= {s} (index {wi})"
                    ),
                    vec![index, wi],
                ));
                continue;
            }
            log.push(Anomaly::new(
                "snapshot-order",
                format!(
                    "txn (index {index}) read key {key} = {read:?} at ts {s}, but in timestamp \
                     order the appends at or below {s} are {expected:?}"
                ),
                vec![index],
            ));
        }
    }
    stats.add("list_reads_checked", checked);
}
