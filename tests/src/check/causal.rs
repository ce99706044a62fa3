//! The external-consistency probe (`causal` workload): once a write is acknowledged, every read
//! that begins afterwards, through any node, sees it.
//!
//! This is the property commit wait exists for. A leader that acknowledges a commit at `ts`
//! before every clock is past `ts` lets a read on another node pick a read timestamp below `ts`
//! and miss the write, although the reader learned of the acknowledgement first ("causal
//! reverse"). The workload makes that easy to catch: per key, one writer writes 1, 2, 3, ...
//! through one node; after each acknowledgement readers read the key through *other* nodes.
//!
//! # Method
//!
//! Per key, sort the `ok` writes by completion and keep the running maximum of their values.
//! For each `ok` read, binary-search the largest value whose write completed before the read was
//! invoked; the read's value must be at least that (`null` counts as below every value).
//! Anomalies:
//!
//! * `stale-read`: the read returned less than an acknowledged value (or `null`);
//! * `unwritten-value`: it returned a value no write that may have happened wrote (never
//!   written, or written only by a failed write);
//! * `future-read`: it returned a value whose write was invoked after the read completed.
//!
//! # Worked example
//!
//! ```text
//! index  event
//! 0      writer invoke write [k, 1]   (through n1)
//! 1      writer ok     write [k, 1]
//! 2      reader invoke read  [k, null] (through n2)
//! 3      writer invoke write [k, 2]
//! 4      reader ok     read  [k, 1]    fine: 2 was not acknowledged when the read began
//! 5      writer ok     write [k, 2]
//! 6      reader invoke read  [k, null] (through n3)
//! 7      reader ok     read  [k, 1]    stale-read: write 2 was acknowledged at index 5
//! ```

use std::collections::HashMap;
use std::time::Instant;

use serde_json::Value;

use super::history::{Op, Outcome};
use super::result::{Anomaly, AnomalyLog, CheckResult, Stats};

/// One key's writes.
#[derive(Default)]
struct KeyWrites {
    /// (completion index, value, invoke index) of ok writes, sorted by completion.
    acked: Vec<(u64, i64, u64)>,
    /// Prefix maxima of `acked`'s values: (value, invoke index of its write).
    max_prefix: Vec<(i64, u64)>,
    /// value -> (outcome, invoke index) of every write.
    by_value: HashMap<i64, (Outcome, u64)>,
}

/// Checks a causal-probe history (see the module docs).
pub fn check(ops: &[Op]) -> CheckResult {
    let start = Instant::now();
    let mut log = AnomalyLog::new();
    let mut stats = Stats::of(ops);
    let mut keys: HashMap<String, KeyWrites> = HashMap::new();
    let mut reads: Vec<(&Op, String, Option<i64>)> = Vec::new();
    for op in ops {
        if !matches!(op.f.as_str(), "read" | "write") {
            continue;
        }
        let parsed = match op.value.as_array().map(Vec::as_slice) {
            Some([k, Value::Null]) => Some((k, None)),
            Some([k, v]) => v.as_i64().map(|v| (k, Some(v))),
            _ => None,
        };
        let Some((key, value)) = parsed else {
            log.push(Anomaly::new(
                "malformed",
                format!(
                    "{} (index {}) has an unexpected value {}",
                    op.f, op.invoke_index, op.value
                ),
                vec![op.invoke_index],
            ));
            continue;
        };
        let key = super::json_text(key);
        match (op.f.as_str(), value) {
            ("write", Some(v)) => {
                let w = keys.entry(key).or_default();
                let entry = w.by_value.entry(v).or_insert((op.outcome, op.invoke_index));
                // An ok write of the value wins over a failed or indeterminate one.
                if op.outcome == Outcome::Ok || entry.0 == Outcome::Fail {
                    *entry = (op.outcome, op.invoke_index);
                }
                if op.outcome == Outcome::Ok
                    && let Some(c) = op.complete_index
                {
                    w.acked.push((c, v, op.invoke_index));
                }
            }
            ("read", value) if op.outcome == Outcome::Ok => reads.push((op, key, value)),
            _ => {}
        }
    }
    for w in keys.values_mut() {
        w.acked.sort_unstable();
        let mut best: Option<(i64, u64)> = None;
        w.max_prefix = w
            .acked
            .iter()
            .map(|&(_, v, i)| {
                if best.is_none_or(|(b, _)| v > b) {
                    best = Some((v, i));
                }
                best.unwrap_or((v, i))
            })
            .collect();
    }
    stats.add("keys", keys.len() as u64);
    stats.add("reads", reads.len() as u64);
    let empty = KeyWrites::default();
    for (op, key, value) in reads {
        let w = keys.get(&key).unwrap_or(&empty);
        let index = op.invoke_index;
        // The largest value acknowledged before the read was invoked.
        let n = w.acked.partition_point(|&(c, _, _)| c < op.invoke_index);
        let floor = n.checked_sub(1).map(|i| w.max_prefix[i]);
        if let Some(v) = value {
            match w.by_value.get(&v) {
                None | Some((Outcome::Fail, _)) => {
                    let why = match w.by_value.get(&v) {
                        Some((_, wi)) => {
                            format!("only the write at index {wi}, which failed, wrote it")
                        }
                        None => "no write wrote it".into(),
                    };
                    let mut involved = vec![index];
                    if let Some((_, wi)) = w.by_value.get(&v) {
                        involved.push(*wi);
                    }
                    log.push(Anomaly::new(
                        "unwritten-value",
                        format!("read (index {index}) of key {key} returned {v}, but {why}"),
                        involved,
                    ));
                    continue;
                }
                Some(&(_, wi)) if op.complete_index.is_some_and(|c| c < wi) => {
                    log.push(Anomaly::new(
                        "future-read",
                        format!(
                            "read (index {index}) of key {key} returned {v}, but the write of {v} \
                             (index {wi}) began only after the read completed"
                        ),
                        vec![index, wi],
                    ));
                    continue;
                }
                _ => {}
            }
        }
        if let Some((acked, wi)) = floor
            && value.is_none_or(|v| v < acked)
        {
            let got = value.map_or("nothing".to_string(), |v| v.to_string());
            log.push(Anomaly::new(
                "stale-read",
                format!(
                    "read (index {index}) of key {key} through {} returned {got}, but write {acked} \
                     (index {wi}) was acknowledged before the read began",
                    op.node.as_deref().unwrap_or("an unknown node")
                ),
                vec![index, wi],
            ));
        }
    }
    log.finish("causal", stats, start.elapsed())
}
