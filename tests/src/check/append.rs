//! Strict serializability of the `append` workload (Elle's list-append), by Elle's method:
//! infer each key's version order from the reads, build the dependency graph between
//! transactions, add real-time edges, and look for cycles.
//!
//! # Method
//!
//! Every transaction is a list of micro-ops on keys holding lists: `append k v` adds `v` to the
//! end of `k`'s list; `r k` returns the whole list. Appended values are unique per key, so a read
//! tells exactly *which* appends happened before it, and in which order.
//!
//! 1. **Version orders.** Every read of `k` must be a prefix of the longest read of `k`;
//!    otherwise two reads disagree on the order of `k`'s appends (`incompatible-order`). The
//!    longest read is `k`'s version order. Appends that no read saw have unknown positions and
//!    give no ordering edges.
//! 2. **Single-read anomalies.** A read that contains an element twice (`duplicate-elements`),
//!    an element no transaction appended (`garbage`), an element appended by a transaction that
//!    failed (`G1a`, aborted read), or that ends in an element its writer followed with another
//!    append to the same key (`G1b`, intermediate read). A transaction's reads must also agree
//!    with its own earlier reads and appends (`internal`).
//! 3. **The graph.** Nodes are the committed transactions: the `ok` ones, and the `info`/open
//!    ones some read saw an append of (an indeterminate transaction nobody saw may never have
//!    happened, so it gets no edges). Edges, from `T1` to `T2`:
//!    * `ww`: `T1` appended `x_i` and `T2` appended the next element `x_{i+1}` of `x`'s order;
//!    * `wr`: `T2` read a list of `x` whose last element `T1` appended;
//!    * `rw`: `T1` read a list of `x` and `T2` appended the element that follows it in the
//!      version order (an anti-dependency: `T1` did not see `T2`'s append);
//!    * `rt`: `T1` completed ok before `T2` was invoked (real time, for *strict*
//!      serializability). Only the transitive reduction that a sweep over the history gives is
//!      added: each invoke gets edges from the "frontier" of latest completions, which is as
//!      small as the number of processes.
//! 4. **Cycles.** A serializable history has a serial order consistent with `ww`, `wr` and `rw`;
//!    a strictly serializable one, consistent with `rt` as well. So any cycle is a violation.
//!    Tarjan's algorithm finds the strongly connected components; inside each, the checker looks
//!    for the most telling short cycle (breadth-first search), in this order, and names it after
//!    Adya:
//!    `G0` (only `ww`), `G1c` (`ww` and `wr`), `G-single` (exactly one `rw`), `G2-item` (two or
//!    more `rw`), then the same four with `rt` edges allowed: `G0-realtime`, `G1c-realtime`,
//!    `G-single-realtime`, `G2-item-realtime` (cycles that exist only because of real time:
//!    the history is serializable but not strictly). One example is reported per component.
//!
//! # Worked example
//!
//! ```text
//! index  event
//! 0      T1 invoke  [append x 1]
//! 1      T1 ok      [append x 1]
//! 2      T3 invoke  [append y 1]
//! 3      T2 invoke  [append x 2, r y]
//! 4      T3 ok      [append y 1]
//! 5      T2 ok      [append x 2, r y []]
//! 6      T4 invoke  [r x, r y]
//! 7      T4 ok      [r x [1 2], r y [1]]
//! ```
//!
//! The version orders are `x: 1, 2` and `y: 1`. Edges: `T1 ww→ T2` (x), `T2 wr→ T4` (x),
//! `T3 wr→ T4` (y), `T2 rw→ T3` (T2 read `y = []`, and `y`'s next element is T3's), and real
//! time `T1 rt→ T2`, `T1 rt→ T3`, `T2 rt→ T4`, `T3 rt→ T4`. No cycle: T1, T2, T3, T4 is a serial
//! order that respects real time (T2 before T3 is allowed, they overlapped). Had T2 been invoked
//! after index 4, when T3 was already acknowledged, there would be an edge `T3 rt→ T2` and the
//! cycle `T2 rw[key y]→ T3 rt→ T2`: a `G-single-realtime`, a stale read of `y` (the checker
//! writes it as `T1 (index …) rw[key y]→ T2 (index …) rt→ T1`, numbering the cycle's txns).

use std::collections::{HashMap, VecDeque};
use std::time::Instant;

use serde_json::Value;

use super::history::{Op, Outcome};
use super::result::{Anomaly, AnomalyLog, CheckResult, Stats};

/// How many anti-dependency edges of one component the `G-single` search tries.
const G_SINGLE_TRIES: usize = 128;
/// How many start nodes the shortest-cycle search tries per component.
const CYCLE_STARTS: usize = 8;

type KeyId = u32;
type TxnId = u32;
const NONE: u32 = u32::MAX;

/// A parsed micro-op.
#[derive(Clone, Debug)]
enum MicroOp {
    Append(KeyId, i64),
    /// `None`: the read's result is unknown (an indeterminate or failed transaction).
    Read(KeyId, Option<Vec<i64>>),
}

/// A transaction of the history.
struct Txn {
    /// Index into the checker's op slice.
    op: usize,
    micro: Vec<MicroOp>,
}

/// Edge kinds, as bits.
const WW: u8 = 1;
const WR: u8 = 2;
const RW: u8 = 4;
const RT: u8 = 8;
const KIND_ORDER: [u8; 4] = [WW, WR, RT, RW];

fn kind_name(kind: u8) -> &'static str {
    match kind {
        WW => "ww",
        WR => "wr",
        RW => "rw",
        _ => "rt",
    }
}

/// Checks a list-append history for strict serializability (see the module docs).
pub fn check(ops: &[Op]) -> CheckResult {
    let start = Instant::now();
    let mut log = AnomalyLog::new();
    let mut stats = Stats::of(ops);
    let mut checker = Checker::default();
    checker.parse(ops, &mut log);
    checker.single_read_anomalies(ops, &mut log);
    checker.internal(ops, &mut log);
    checker.version_orders(ops, &mut log);
    checker.build_graph(ops);
    let edges = checker.edges.len();
    checker.cycles(ops, &mut log);
    stats.add("txns", checker.txns.len() as u64);
    stats.add("keys", checker.key_texts.len() as u64);
    stats.add("graph_nodes", checker.in_graph.iter().filter(|b| **b).count() as u64);
    stats.add("graph_edges", edges as u64);
    log.finish("append", stats, start.elapsed())
}

#[derive(Default)]
struct Checker {
    txns: Vec<Txn>,
    key_ids: HashMap<String, KeyId>,
    key_texts: Vec<String>,
    /// (key, element) -> (writer, whether it is the writer's last append to the key), for ok
    /// and indeterminate transactions.
    writer: HashMap<(KeyId, i64), (TxnId, bool)>,
    /// (key, element) -> failed writer.
    failed_writer: HashMap<(KeyId, i64), TxnId>,
    /// Per key: the longest read (the version order) and the transaction that read it.
    order: Vec<(Vec<i64>, TxnId)>,
    /// Per key: element -> position in the version order.
    position: Vec<HashMap<i64, usize>>,
    /// Which transactions are graph nodes (committed).
    in_graph: Vec<bool>,
    /// (from, to) -> kinds, and the key that made each dependency kind (ww, wr, rw).
    edges: HashMap<(TxnId, TxnId), (u8, [KeyId; 3])>,
}

impl Checker {
    fn key(&mut self, v: &Value) -> KeyId {
        let text = super::json_text(v);
        if let Some(id) = self.key_ids.get(&text) {
            return *id;
        }
        let id = self.key_texts.len() as KeyId;
        self.key_texts.push(text.clone());
        self.key_ids.insert(text, id);
        id
    }

    fn key_text(&self, k: KeyId) -> &str {
        &self.key_texts[k as usize]
    }

    fn op<'a>(&self, ops: &'a [Op], t: TxnId) -> &'a Op {
        &ops[self.txns[t as usize].op]
    }

    fn index(&self, ops: &[Op], t: TxnId) -> u64 {
        self.op(ops, t).invoke_index
    }

    /// Parses every `txn` op; indexes the appends by element.
    fn parse(&mut self, ops: &[Op], log: &mut AnomalyLog) {
        for (i, op) in ops.iter().enumerate() {
            if op.f != "txn" {
                continue;
            }
            match self.parse_txn(op) {
                Some(micro) => self.txns.push(Txn { op: i, micro }),
                None => log.push(Anomaly::new(
                    "malformed",
                    format!("txn (index {}) has an unexpected value {}", op.invoke_index, op.value),
                    vec![op.invoke_index],
                )),
            }
        }
        for t in 0..self.txns.len() {
            let outcome = ops[self.txns[t].op].outcome;
            // Each key's appends of this transaction, to know which is the last.
            let mut last: HashMap<KeyId, i64> = HashMap::new();
            for m in &self.txns[t].micro {
                if let MicroOp::Append(k, v) = m {
                    last.insert(*k, *v);
                }
            }
            for m in self.txns[t].micro.clone() {
                let MicroOp::Append(k, v) = m else { continue };
                if outcome == Outcome::Fail {
                    self.failed_writer.entry((k, v)).or_insert(t as TxnId);
                    continue;
                }
                let is_last = last.get(&k) == Some(&v);
                if let Some(&(other, _)) = self.writer.get(&(k, v)) {
                    let (a, b) = (self.index(ops, other), ops[self.txns[t].op].invoke_index);
                    log.push(Anomaly::new(
                        "malformed",
                        format!(
                            "txns (index {a}) and (index {b}) both append {v} to key {}; \
                             appended values must be unique per key",
                            self.key_text(k)
                        ),
                        vec![a, b],
                    ));
                    continue;
                }
                self.writer.insert((k, v), (t as TxnId, is_last));
            }
        }
    }

    fn parse_txn(&mut self, op: &Op) -> Option<Vec<MicroOp>> {
        let mut micro = Vec::new();
        for m in op.value.as_array()? {
            let [f, k, v] = m.as_array()?.as_slice() else { return None };
            let key = self.key(k);
            micro.push(match f.as_str()? {
                "append" => MicroOp::Append(key, v.as_i64()?),
                "r" => {
                    let list = match (op.outcome, v) {
                        (Outcome::Ok, Value::Null) => Some(Vec::new()),
                        (Outcome::Ok, Value::Array(a)) => {
                            Some(a.iter().map(Value::as_i64).collect::<Option<Vec<i64>>>()?)
                        }
                        (Outcome::Ok, _) => return None,
                        _ => None,
                    };
                    MicroOp::Read(key, list)
                }
                _ => return None,
            });
        }
        Some(micro)
    }

    /// The ok transactions' reads: (txn, key, list).
    fn reads(&self) -> impl Iterator<Item = (TxnId, KeyId, &Vec<i64>)> + '_ {
        self.txns.iter().enumerate().flat_map(|(t, txn)| {
            txn.micro.iter().filter_map(move |m| match m {
                MicroOp::Read(k, Some(list)) => Some((t as TxnId, *k, list)),
                _ => None,
            })
        })
    }

    fn describe(&self, ops: &[Op], t: TxnId) -> String {
        let mut text = super::json_text(&self.op(ops, t).value);
        if text.len() > 160 {
            let cut = (0..=160).rev().find(|i| text.is_char_boundary(*i)).unwrap_or(0);
            text.truncate(cut);
            text += "…";
        }
        format!("index {} ({:?}): {text}", self.index(ops, t), self.op(ops, t).outcome)
    }

    fn single_read_anomalies(&self, ops: &[Op], log: &mut AnomalyLog) {
        for (t, k, list) in self.reads() {
            let reader = self.index(ops, t);
            let key = self.key_text(k);
            let mut seen: HashMap<i64, usize> = HashMap::with_capacity(list.len());
            for (pos, &v) in list.iter().enumerate() {
                if let Some(first) = seen.insert(v, pos) {
                    log.push(Anomaly::new(
                        "duplicate-elements",
                        format!(
                            "txn (index {reader}) read key {key} = {list:?}, with {v} at \
                             positions {first} and {pos}"
                        ),
                        vec![reader],
                    ));
                    break;
                }
            }
            for &v in list {
                if self.writer.contains_key(&(k, v)) {
                    continue;
                }
                match self.failed_writer.get(&(k, v)) {
                    Some(&w) => log.push(Anomaly::new(
                        "G1a",
                        format!(
                            "aborted read: txn (index {reader}) read key {key} = {list:?}, \
                             but {v} was appended by txn {}, which failed",
                            self.describe(ops, w)
                        ),
                        vec![reader, self.index(ops, w)],
                    )),
                    None => log.push(Anomaly::new(
                        "garbage",
                        format!(
                            "txn (index {reader}) read key {key} = {list:?}, but no txn appended \
                             {v} to key {key}"
                        ),
                        vec![reader],
                    )),
                }
            }
            if let Some(&last) = list.last()
                && let Some(&(w, false)) = self.writer.get(&(k, last))
                && w != t
            {
                log.push(Anomaly::new(
                    "G1b",
                    format!(
                        "intermediate read: txn (index {reader}) read key {key} = {list:?}, but \
                         txn {} appended more to key {key} after {last}",
                        self.describe(ops, w)
                    ),
                    vec![reader, self.index(ops, w)],
                ));
            }
        }
    }

    /// Each transaction's reads agree with its own earlier reads and appends.
    fn internal(&self, ops: &[Op], log: &mut AnomalyLog) {
        for (t, txn) in self.txns.iter().enumerate() {
            if ops[txn.op].outcome != Outcome::Ok {
                continue;
            }
            // Per key: the list as of the last read plus later appends (known), or the appends
            // made before any read (a suffix the next read must end with).
            let mut known: HashMap<KeyId, Vec<i64>> = HashMap::new();
            let mut suffix: HashMap<KeyId, Vec<i64>> = HashMap::new();
            for m in &txn.micro {
                match m {
                    MicroOp::Append(k, v) => match known.get_mut(k) {
                        Some(list) => list.push(*v),
                        None => suffix.entry(*k).or_default().push(*v),
                    },
                    MicroOp::Read(k, Some(list)) => {
                        let (ok, expected) = match (known.get(k), suffix.get(k)) {
                            (Some(expected), _) => (expected == list, format!("{expected:?}")),
                            (None, Some(s)) => {
                                (list.ends_with(s), format!("a list ending in {s:?}"))
                            }
                            (None, None) => (true, String::new()),
                        };
                        if !ok {
                            let index = self.index(ops, t as TxnId);
                            log.push(Anomaly::new(
                                "internal",
                                format!(
                                    "txn (index {index}) read key {} = {list:?}, but its own \
                                     earlier reads and appends imply {expected}",
                                    self.key_text(*k)
                                ),
                                vec![index],
                            ));
                        }
                        known.insert(*k, list.clone());
                        suffix.remove(k);
                    }
                    MicroOp::Read(_, None) => {}
                }
            }
        }
    }

    /// Each key's version order (its longest read); reads that are not prefixes of it.
    fn version_orders(&mut self, ops: &[Op], log: &mut AnomalyLog) {
        let mut order: Vec<(Vec<i64>, TxnId)> = vec![(Vec::new(), NONE); self.key_texts.len()];
        for (t, k, list) in self.reads() {
            if list.len() > order[k as usize].0.len() {
                order[k as usize] = (list.clone(), t);
            }
        }
        for (t, k, list) in self.reads() {
            let (longest, by) = &order[k as usize];
            if let Some(pos) = list.iter().zip(longest).position(|(a, b)| a != b) {
                let (a, b) = (self.index(ops, t), self.index(ops, *by));
                log.push(Anomaly::new(
                    "incompatible-order",
                    format!(
                        "key {}: txn (index {a}) read {list:?} and txn (index {b}) read \
                         {longest:?}; they disagree at position {pos}, so no single order of \
                         appends explains both",
                        self.key_text(k)
                    ),
                    vec![a, b],
                ));
            }
        }
        self.position = order
            .iter()
            .map(|(list, _)| {
                let mut p = HashMap::with_capacity(list.len());
                for (i, v) in list.iter().enumerate() {
                    p.entry(*v).or_insert(i);
                }
                p
            })
            .collect();
        self.order = order;
    }

    fn add_edge(&mut self, from: TxnId, to: TxnId, kind: u8, key: KeyId) {
        if from == to || !self.in_graph[from as usize] || !self.in_graph[to as usize] {
            return;
        }
        let e = self.edges.entry((from, to)).or_insert((0, [NONE; 3]));
        e.0 |= kind;
        let slot = match kind {
            WW => 0,
            WR => 1,
            RW => 2,
            _ => return,
        };
        if e.1[slot] == NONE {
            e.1[slot] = key;
        }
    }

    /// The writer of `v` in key `k`, if a committed transaction.
    fn committed_writer(&self, k: KeyId, v: i64) -> Option<TxnId> {
        self.writer.get(&(k, v)).map(|w| w.0).filter(|w| self.in_graph[*w as usize])
    }

    fn build_graph(&mut self, ops: &[Op]) {
        // Nodes: ok transactions, and indeterminate ones whose appends someone read.
        self.in_graph = self.txns.iter().map(|t| ops[t.op].outcome == Outcome::Ok).collect();
        let mut observed = vec![false; self.txns.len()];
        for (_, k, list) in self.reads() {
            for v in list {
                if let Some(&(w, _)) = self.writer.get(&(k, *v)) {
                    observed[w as usize] = true;
                }
            }
        }
        for (t, txn) in self.txns.iter().enumerate() {
            if ops[txn.op].outcome.is_indeterminate() && observed[t] {
                self.in_graph[t] = true;
            }
        }

        // ww: consecutive elements of each version order.
        for k in 0..self.order.len() {
            let list = std::mem::take(&mut self.order[k].0);
            for pair in list.windows(2) {
                let (a, b) = (
                    self.committed_writer(k as KeyId, pair[0]),
                    self.committed_writer(k as KeyId, pair[1]),
                );
                if let (Some(a), Some(b)) = (a, b) {
                    self.add_edge(a, b, WW, k as KeyId);
                }
            }
            self.order[k].0 = list;
        }

        // wr and rw, from every read.
        let mut deps: Vec<(TxnId, TxnId, u8, KeyId)> = Vec::new();
        for (t, k, list) in self.reads() {
            if let Some(&last) = list.last()
                && let Some(w) = self.committed_writer(k, last)
            {
                deps.push((w, t, WR, k));
            }
            let longest = &self.order[k as usize].0;
            if longest.len() > list.len() && longest.starts_with(list) {
                let next = longest[list.len()];
                if let Some(w) = self.committed_writer(k, next) {
                    deps.push((t, w, RW, k));
                }
            }
        }
        for (a, b, kind, k) in deps {
            self.add_edge(a, b, kind, k);
        }

        // rt: sweep the history; each invoke gets edges from the frontier of completions not
        // already implied by a later one.
        let mut points: Vec<(u64, bool, TxnId)> = Vec::new();
        for (t, txn) in self.txns.iter().enumerate() {
            if !self.in_graph[t] {
                continue;
            }
            let op = &ops[txn.op];
            points.push((op.invoke_index, false, t as TxnId));
            if op.outcome == Outcome::Ok
                && let Some(c) = op.complete_index
            {
                points.push((c, true, t as TxnId));
            }
        }
        points.sort_unstable();
        let mut frontier: Vec<TxnId> = Vec::new();
        let mut rt: Vec<(TxnId, TxnId)> = Vec::new();
        for (_, is_completion, t) in points {
            if is_completion {
                let invoked = self.index(ops, t);
                frontier.retain(|a| self.op(ops, *a).complete_index.is_none_or(|c| c > invoked));
                frontier.push(t);
            } else {
                rt.extend(frontier.iter().map(|a| (*a, t)));
            }
        }
        for (a, b) in rt {
            self.add_edge(a, b, RT, NONE);
        }
    }

    fn cycles(&self, ops: &[Op], log: &mut AnomalyLog) {
        let n = self.txns.len();
        let mut adj: Vec<Vec<(u32, u8)>> = vec![Vec::new(); n];
        for (&(a, b), &(kinds, _)) in &self.edges {
            adj[a as usize].push((b, kinds));
        }
        for list in &mut adj {
            list.sort_unstable();
        }
        let graph = Graph { adj };
        let all: Vec<u32> = (0..n as u32).collect();
        let mut local = vec![NONE; n];
        for comp in graph.sccs(&all, WW | WR | RW | RT, &mut local) {
            if comp.len() < 2 {
                continue;
            }
            if let Some(cycle) = graph.classify(&comp, &mut local) {
                log.push(self.cycle_anomaly(ops, &cycle));
            }
        }
    }

    fn cycle_anomaly(&self, ops: &[Op], cycle: &[(u32, u8)]) -> Anomaly {
        let rw = cycle.iter().filter(|(_, k)| *k == RW).count();
        let wr = cycle.iter().any(|(_, k)| *k == WR);
        let realtime = cycle.iter().any(|(_, k)| *k == RT);
        let base = match rw {
            0 if wr => "G1c",
            0 => "G0",
            1 => "G-single",
            _ => "G2-item",
        };
        let kind = if realtime { format!("{base}-realtime") } else { base.to_string() };
        let mut chain = String::new();
        let mut whos = Vec::new();
        for (i, &(t, label)) in cycle.iter().enumerate() {
            let next = cycle[(i + 1) % cycle.len()].0;
            chain += &format!("T{} (index {}) ", i + 1, self.index(ops, t));
            let key = self.edges.get(&(t, next)).map_or(NONE, |e| match label {
                WW => e.1[0],
                WR => e.1[1],
                RW => e.1[2],
                _ => NONE,
            });
            if key == NONE {
                chain += &format!("{}→ ", kind_name(label));
            } else {
                chain += &format!("{}[key {}]→ ", kind_name(label), self.key_text(key));
            }
            whos.push(format!("T{} = {}", i + 1, self.describe(ops, t)));
        }
        chain += "T1";
        let what = match base {
            "G0" => "a write cycle",
            "G1c" => "circular information flow",
            "G-single" => "a cycle with a single anti-dependency",
            _ => "a cycle with two or more anti-dependencies",
        };
        let explanation = format!(
            "{kind} ({what}{}): {chain}; where {}",
            if realtime { ", with real-time order" } else { "" },
            whos.join("; ")
        );
        Anomaly::new(&kind, explanation, cycle.iter().map(|(t, _)| self.index(ops, *t)).collect())
    }
}

/// The dependency graph: adjacency with edge kinds.
struct Graph {
    adj: Vec<Vec<(u32, u8)>>,
}

impl Graph {
    /// Strongly connected components of the subgraph induced by `nodes` over edges of `mask`
    /// (iterative Tarjan). `local` maps nodes to positions in `nodes` and is left all `NONE`.
    fn sccs(&self, nodes: &[u32], mask: u8, local: &mut [u32]) -> Vec<Vec<u32>> {
        for (i, &v) in nodes.iter().enumerate() {
            local[v as usize] = i as u32;
        }
        let m = nodes.len();
        let mut index = vec![NONE; m];
        let mut low = vec![0u32; m];
        let mut on_stack = vec![false; m];
        let mut stack: Vec<u32> = Vec::new();
        let mut calls: Vec<(u32, usize)> = Vec::new();
        let mut counter = 0u32;
        let mut out = Vec::new();
        for s in 0..m as u32 {
            if index[s as usize] != NONE {
                continue;
            }
            index[s as usize] = counter;
            low[s as usize] = counter;
            counter += 1;
            stack.push(s);
            on_stack[s as usize] = true;
            calls.push((s, 0));
            while let Some(&mut (v, ref mut pos)) = calls.last_mut() {
                let edges = &self.adj[nodes[v as usize] as usize];
                if *pos < edges.len() {
                    let (w, kinds) = edges[*pos];
                    *pos += 1;
                    let w = local[w as usize];
                    if kinds & mask == 0 || w == NONE {
                        continue;
                    }
                    if index[w as usize] == NONE {
                        index[w as usize] = counter;
                        low[w as usize] = counter;
                        counter += 1;
                        stack.push(w);
                        on_stack[w as usize] = true;
                        calls.push((w, 0));
                    } else if on_stack[w as usize] {
                        low[v as usize] = low[v as usize].min(index[w as usize]);
                    }
                } else {
                    calls.pop();
                    if let Some(&(u, _)) = calls.last() {
                        low[u as usize] = low[u as usize].min(low[v as usize]);
                    }
                    if low[v as usize] == index[v as usize] {
                        let mut comp = Vec::new();
                        while let Some(w) = stack.pop() {
                            on_stack[w as usize] = false;
                            comp.push(nodes[w as usize]);
                            if w == v {
                                break;
                            }
                        }
                        out.push(comp);
                    }
                }
            }
        }
        for &v in nodes {
            local[v as usize] = NONE;
        }
        out
    }

    /// The label of an edge with `kinds` when only `mask` is allowed: the first of ww, wr, rt,
    /// rw it has.
    fn label(kinds: u8, mask: u8) -> u8 {
        KIND_ORDER.into_iter().find(|k| kinds & mask & k != 0).unwrap_or(0)
    }

    /// The shortest path from `from` to another node `to` over `mask` edges inside the
    /// component (`inside`), as (node, label of its outgoing edge) without `to` itself.
    fn path(
        &self,
        from: u32,
        to: u32,
        mask: u8,
        inside: &HashMap<u32, ()>,
    ) -> Option<Vec<(u32, u8)>> {
        let mut parent: HashMap<u32, (u32, u8)> = HashMap::new();
        let mut queue = VecDeque::from([from]);
        let mut reached = false;
        'bfs: while let Some(v) = queue.pop_front() {
            for &(w, kinds) in &self.adj[v as usize] {
                if kinds & mask == 0
                    || !inside.contains_key(&w)
                    || parent.contains_key(&w)
                    || w == from
                {
                    continue;
                }
                parent.insert(w, (v, Graph::label(kinds, mask)));
                if w == to {
                    reached = true;
                    break 'bfs;
                }
                queue.push_back(w);
            }
        }
        if !reached {
            return None;
        }
        let mut path = Vec::new();
        let mut v = to;
        while v != from {
            let (p, label) = parent[&v];
            path.push((p, label));
            v = p;
        }
        path.reverse();
        Some(path)
    }

    /// The shortest cycle through `v` over `mask` edges inside the component.
    fn cycle_through(&self, v: u32, mask: u8, inside: &HashMap<u32, ()>) -> Option<Vec<(u32, u8)>> {
        let mut best: Option<Vec<(u32, u8)>> = None;
        // Paths v -> u, then the edge u -> v.
        let mut parent: HashMap<u32, (u32, u8)> = HashMap::from([(v, (NONE, 0))]);
        let mut queue = VecDeque::from([v]);
        while let Some(u) = queue.pop_front() {
            for &(w, kinds) in &self.adj[u as usize] {
                if kinds & mask == 0 || !inside.contains_key(&w) {
                    continue;
                }
                if w == v {
                    let mut path = vec![(u, Graph::label(kinds, mask))];
                    let mut x = u;
                    while x != v {
                        let (p, label) = parent[&x];
                        path.push((p, label));
                        x = p;
                    }
                    path.reverse();
                    best = Some(path);
                    break;
                }
                if let std::collections::hash_map::Entry::Vacant(e) = parent.entry(w) {
                    e.insert((u, Graph::label(kinds, mask)));
                    queue.push_back(w);
                }
            }
            if best.is_some() {
                break;
            }
        }
        best
    }

    /// A short cycle over `mask` edges inside `comp`, if there is one.
    fn cycle(&self, comp: &[u32], mask: u8, local: &mut [u32]) -> Option<Vec<(u32, u8)>> {
        let mut best: Option<Vec<(u32, u8)>> = None;
        for sub in self.sccs(comp, mask, local) {
            if sub.len() < 2 {
                continue;
            }
            let inside: HashMap<u32, ()> = sub.iter().map(|v| (*v, ())).collect();
            for &start in sub.iter().take(CYCLE_STARTS) {
                if let Some(c) = self.cycle_through(start, mask, &inside)
                    && best.as_ref().is_none_or(|b| c.len() < b.len())
                {
                    best = Some(c);
                }
            }
            if best.as_ref().is_some_and(|b| b.len() == 2) {
                break;
            }
        }
        best
    }

    /// A cycle with exactly one `rw` edge, the rest over `path_mask`, inside `comp`.
    fn single_rw_cycle(&self, comp: &[u32], path_mask: u8) -> Option<Vec<(u32, u8)>> {
        let inside: HashMap<u32, ()> = comp.iter().map(|v| (*v, ())).collect();
        let mut best: Option<Vec<(u32, u8)>> = None;
        let mut tries = 0;
        for &a in comp {
            for &(b, kinds) in &self.adj[a as usize] {
                if kinds & RW == 0 || !inside.contains_key(&b) {
                    continue;
                }
                tries += 1;
                if let Some(path) = self.path(b, a, path_mask, &inside) {
                    let mut c = vec![(a, RW)];
                    c.extend(path);
                    if best.as_ref().is_none_or(|x| c.len() < x.len()) {
                        best = Some(c);
                    }
                }
                if tries >= G_SINGLE_TRIES {
                    return best;
                }
            }
        }
        best
    }

    /// The most telling cycle of a strongly connected component (see the module docs).
    fn classify(&self, comp: &[u32], local: &mut [u32]) -> Option<Vec<(u32, u8)>> {
        let deps = WW | WR | RW;
        self.cycle(comp, WW, local)
            .or_else(|| self.cycle(comp, WW | WR, local))
            .or_else(|| self.single_rw_cycle(comp, WW | WR))
            .or_else(|| self.cycle(comp, deps, local))
            .or_else(|| self.cycle(comp, WW | RT, local))
            .or_else(|| self.cycle(comp, WW | WR | RT, local))
            .or_else(|| self.single_rw_cycle(comp, WW | WR | RT))
            .or_else(|| self.cycle(comp, deps | RT, local))
    }
}
