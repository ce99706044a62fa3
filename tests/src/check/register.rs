//! Linearizability of the `register` workload: one read/write/cas register per key, keys
//! independent (linearizability is compositional, so each key is checked on its own).
//!
//! # Method
//!
//! A history is linearizable if every operation can be given a *linearization point* between
//! its invoke and its completion such that, in the order of those points, the operations are a
//! legal sequential run of a register: a read returns the last value written (`null` before the
//! first write), a write sets the value, and a `cas [e, n]` sets `n` when the value was `e`.
//! `fail` operations never happened and are dropped; `info` and never-completed operations may
//! take effect at any point after their invoke, or never.
//!
//! The search is Wing and Gong's, as improved by Lowe and as Porcupine runs it: put every
//! invoke ("call") and completion ("return") of the key's operations in one list, in history
//! order, and walk it from the front.
//!
//! * At a call, try to linearize that operation *now*: if the register model accepts it, record
//!   the choice on a stack, take the call and its return out of the list, and start again at the
//!   front.
//! * At a return, the operation it belongs to has not been linearized yet, and every operation
//!   still in the list before it was tried: undo the last choice (pop, put the entries back) and
//!   try the next call after it.
//! * Success once every `ok` operation is linearized; failure when there is nothing to undo.
//!
//! `info` and open operations have no return entry (they return "at the end of time") and are
//! not needed for success, which is exactly "any time after the invoke, or never".
//!
//! Six things keep the search small:
//!
//! * **Memoization.** A configuration is (set of linearized operations, register value). Every
//!   configuration the search has entered is remembered; entering one again is pointless (it
//!   either failed before or is being explored). The set is hashed incrementally, Zobrist-style:
//!   a random 128-bit word per operation, XORed in and out as operations are linearized and
//!   undone, XORed with a word for the value. Only the 128-bit hashes are stored (a collision
//!   has probability about `states² / 2¹²⁸`; it could only make the checker report a violation
//!   that is not one, never hide one).
//! * **Reads are never postponed.** If a read can be linearized now, doing so is never worse
//!   (it changes nothing and every operation that must precede it already did), so when the
//!   search backtracks over such a read it backtracks once more.
//! * **Unobserved indeterminate writes are dropped.** An `info` write (or cas) whose value no
//!   read returned and no cas expected can be removed from any linearization without breaking
//!   it (nothing can tell its value was there; only another write can replace it), so it is
//!   dropped before the search. This keeps the classic Knossos blow-up (every timed-out write
//!   concurrent with the rest of the history) away.
//! * **Observed indeterminate writes get a deadline.** Values are unique per key, so if an `ok`
//!   read returned (or an `ok` cas expected) the value of an `info` write, that write alone
//!   could have put it there: it must have taken effect, before the first such read completed.
//!   It becomes a required operation with that return point instead of lingering at the front
//!   of the list, where every subset of such writes would be tried.
//! * **Unobserved writes ride along.** All values nothing observes are one state to the search
//!   (no operation can tell them apart). Right after such a write only a plain write can be
//!   linearized, so an `ok` write of an unobserved value can always be placed just before the
//!   next plain write, and having linearized it is never worse than not (one obligation less,
//!   same register value). So whenever the search linearizes a plain write, it also linearizes
//!   every unobserved `ok` write that could go right before it (whose invoke precedes every
//!   pending return). Without this, `c` concurrent blind writes cost `2^c` configurations.
//! * **A value is not left while it is still needed.** Values are unique, so once the register
//!   moves off a value only one operation could write (or off the initial `null`, if nothing
//!   writes `null`), the value is gone for good; a step that does so while some `ok` read or cas
//!   still needs the value cannot lead anywhere and is not taken. Without this, `c` concurrent
//!   writes, each read while all are in flight, cost `2^c` configurations.
//!
//! Keys are searched in parallel, one thread per core.
//!
//! The search has a budget of configurations per key ([`RegisterOptions`]); a key that
//! exhausts it makes the verdict [`Validity::Unknown`](super::Validity::Unknown), never `Valid`.
//!
//! When a key cannot be linearized, the anomaly (one per key: the search stops there) names the
//! operation at which the search got furthest before being stuck (the one whose return it could
//! not get past), the register value there, the later operations that still needed that value,
//! the operations concurrent with it, and the last write that completed before it began. A value
//! read (or expected) that no operation that may have happened wrote is reported without a
//! search, naming the failed write that wrote it, if any.
//!
//! # Worked example
//!
//! ```text
//! index  process  event
//! 0      0        invoke write [k, 1]
//! 1      0        ok     write [k, 1]
//! 2      1        invoke write [k, 2]
//! 3      2        invoke read  [k, null]
//! 4      2        ok     read  [k, 1]
//! 5      1        ok     write [k, 2]
//! 6      2        invoke read  [k, null]
//! 7      2        ok     read  [k, 1]
//! ```
//!
//! The list is `call w1, ret w1, call w2, call r@3, ret r@3, ret w2, call r@6, ret r@6`. The
//! search linearizes `w1` (value 1), then `w2` (value 2); the read at 3 needs 1, so it hits
//! `ret r@3`, undoes `w2`, linearizes the read at 3 (value still 1), then `w2` (value 2). Now
//! only `call r@6, ret r@6` are left, and the read returned 1 while the register holds 2: stuck.
//! Undoing `w2` does not help either, because `ret w2` comes before `call r@6` (the write was
//! acknowledged before the read began). Nothing is left to undo: the read at index 6 is a stale
//! read and the history is not linearizable. Had the second read returned 2 it would be.
//!
//! (The last pruning above gets there sooner: while the register holds 1 and both reads still
//! need 1, `w2` may not be linearized at all, so the search is stuck at `ret w2` at once, and the
//! anomaly names `w2`, the value 1, and the read at index 6 that still needed it.)

use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasherDefault, Hasher};
use std::time::Instant;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::history::{Op, Outcome};
use super::result::{Anomaly, AnomalyLog, CheckResult, Stats};

/// Limits of the linearizability search.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegisterOptions {
    /// Configurations the search may enter per key before it gives up on the key (`Unknown`).
    pub max_states_per_key: u64,
}

impl Default for RegisterOptions {
    fn default() -> Self {
        RegisterOptions { max_states_per_key: 5_000_000 }
    }
}

/// Checks every key of a `register` history for linearizability, with the default limits.
pub fn check(ops: &[Op]) -> CheckResult {
    check_with(ops, &RegisterOptions::default())
}

/// Checks every key of a `register` history for linearizability.
pub fn check_with(ops: &[Op], options: &RegisterOptions) -> CheckResult {
    let start = Instant::now();
    let mut log = AnomalyLog::new();
    let mut stats = Stats::of(ops);

    // Group the operations by key, in history order.
    let mut keys: HashMap<String, KeyHistory> = HashMap::new();
    let mut key_order: Vec<String> = Vec::new();
    for (i, op) in ops.iter().enumerate() {
        if !matches!(op.f.as_str(), "read" | "write" | "cas") {
            continue;
        }
        let Some((key, action)) = parse(op) else {
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
        let text = super::json_text(key);
        let kh = keys.entry(text.clone()).or_insert_with(|| {
            key_order.push(text);
            KeyHistory::default()
        });
        kh.push(i, op, action);
    }

    let mut states = 0;
    let mut undecided_keys = 0;
    // Keys are independent: search them on every core, then report in key order.
    let workers =
        std::thread::available_parallelism().map_or(1, |n| n.get()).min(key_order.len()).max(1);
    let next = std::sync::atomic::AtomicUsize::new(0);
    let mut verdicts: Vec<(usize, KeyVerdict)> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..workers)
            .map(|_| {
                scope.spawn(|| {
                    let mut done = Vec::new();
                    loop {
                        let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        let Some(key) = key_order.get(i) else { break };
                        done.push((i, keys[key].check(ops, key, options.max_states_per_key)));
                    }
                    done
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap_or_else(|e| std::panic::resume_unwind(e)))
            .collect()
    });
    verdicts.sort_by_key(|(i, _)| *i);
    for (i, verdict) in verdicts {
        let key = &key_order[i];
        let kh = &keys[key];
        match verdict {
            KeyVerdict::Linearizable { states: s } => states += s,
            KeyVerdict::Violation { states: s, anomaly } => {
                states += s;
                log.push(anomaly);
            }
            KeyVerdict::GaveUp { states: s } => {
                states += s;
                undecided_keys += 1;
                log.undecided(format!(
                    "key {key}: the search gave up after {s} states ({} ops); this key is unchecked",
                    kh.ops.len()
                ));
            }
        }
    }
    stats.add("keys", key_order.len() as u64);
    stats.add("states", states);
    stats.add("keys_unknown", undecided_keys);
    log.finish("register", stats, start.elapsed())
}

/// A register operation's effect, with raw JSON values.
enum RawAction<'a> {
    Read(&'a Value),
    Write(&'a Value),
    Cas(&'a Value, &'a Value),
}

/// The key and action of a read, write or cas (`None`: malformed).
fn parse(op: &Op) -> Option<(&Value, RawAction<'_>)> {
    let [key, v] = op.value.as_array()?.as_slice() else { return None };
    let action = match op.f.as_str() {
        "read" => RawAction::Read(v),
        "write" => RawAction::Write(v),
        _ => match v.as_array()?.as_slice() {
            [e, n] => RawAction::Cas(e, n),
            _ => return None,
        },
    };
    Some((key, action))
}

/// A value interned as a small integer; 0 is `null` (never written).
type ValueId = u32;

/// What an operation does to the register, with interned values.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Action {
    Read(ValueId),
    Write(ValueId),
    Cas(ValueId, ValueId),
}

impl Action {
    /// The register value after this action from `state`, if the action is legal there.
    fn step(self, state: ValueId) -> Option<ValueId> {
        match self {
            Action::Read(v) => (v == state).then_some(state),
            Action::Write(v) => Some(v),
            Action::Cas(e, n) => (e == state).then_some(n),
        }
    }
}

/// One key's operations (failed ones kept apart), values interned.
#[derive(Default)]
struct KeyHistory {
    /// (index into the checker's op slice, action) of every not-failed operation.
    ops: Vec<(usize, Action)>,
    /// Interned value texts; `texts[0]` is `null`.
    texts: Vec<String>,
    ids: HashMap<String, ValueId>,
    /// Values written by failed writes and cas: value -> op index.
    failed_writes: HashMap<ValueId, usize>,
}

/// The result of one key's search.
enum KeyVerdict {
    Linearizable { states: u64 },
    Violation { states: u64, anomaly: Anomaly },
    GaveUp { states: u64 },
}

impl KeyHistory {
    fn intern(&mut self, v: &Value) -> ValueId {
        if self.texts.is_empty() {
            self.texts.push("null".into());
            self.ids.insert("null".into(), 0);
        }
        let text = super::json_text(v);
        if let Some(id) = self.ids.get(&text) {
            return *id;
        }
        let id = self.texts.len() as ValueId;
        self.texts.push(text.clone());
        self.ids.insert(text, id);
        id
    }

    fn push(&mut self, i: usize, op: &Op, action: RawAction<'_>) {
        let action = match action {
            RawAction::Read(v) => Action::Read(self.intern(v)),
            RawAction::Write(v) => Action::Write(self.intern(v)),
            RawAction::Cas(e, n) => Action::Cas(self.intern(e), self.intern(n)),
        };
        match (op.outcome, action) {
            (Outcome::Fail, Action::Write(v) | Action::Cas(_, v)) => {
                self.failed_writes.entry(v).or_insert(i);
            }
            (Outcome::Fail, Action::Read(_)) => {}
            // A read that may not have happened constrains nothing.
            (Outcome::Info | Outcome::Open, Action::Read(_)) => {}
            _ => self.ops.push((i, action)),
        }
    }

    fn text(&self, v: ValueId) -> &str {
        self.texts.get(v as usize).map_or("null", String::as_str)
    }

    fn describe(&self, ops: &[Op], i: usize, action: Action) -> String {
        let op = &ops[i];
        let what = match action {
            Action::Read(v) => format!("read → {}", self.text(v)),
            Action::Write(v) => format!("write {}", self.text(v)),
            Action::Cas(e, n) => format!("cas {}→{}", self.text(e), self.text(n)),
        };
        let outcome = match op.outcome {
            Outcome::Ok => "",
            Outcome::Fail => ", failed",
            Outcome::Info => ", info",
            Outcome::Open => ", never completed",
        };
        format!("{what} (index {}{outcome})", op.invoke_index)
    }

    fn check(&self, ops: &[Op], key: &str, budget: u64) -> KeyVerdict {
        // Values that some operation needs to have been there.
        let mut observed: HashSet<ValueId> = HashSet::new();
        for &(i, action) in &self.ops {
            match action {
                Action::Read(v) if ops[i].outcome == Outcome::Ok => {
                    observed.insert(v);
                }
                Action::Cas(e, _) => {
                    observed.insert(e);
                }
                _ => {}
            }
        }
        // Which values some operation that may have happened wrote.
        let mut written: HashSet<ValueId> = HashSet::from([0]);
        for &(_, action) in &self.ops {
            if let Action::Write(v) | Action::Cas(_, v) = action {
                written.insert(v);
            }
        }
        // A value read (or expected) that nothing wrote: no search needed to explain that.
        for &(i, action) in &self.ops {
            let (Action::Read(v) | Action::Cas(v, _)) = action else { continue };
            if written.contains(&v) || ops[i].outcome != Outcome::Ok {
                continue;
            }
            let mut involved = vec![ops[i].invoke_index];
            let why = match self.failed_writes.get(&v) {
                Some(&w) => {
                    involved.push(ops[w].invoke_index);
                    format!("only {} wrote that value", self.describe(ops, w, Action::Write(v)))
                }
                None => "no operation wrote that value".to_string(),
            };
            return KeyVerdict::Violation {
                states: 0,
                anomaly: Anomaly::new(
                    "nonlinearizable",
                    format!(
                        "key {key}: {} needed the register to hold {}, but {why}",
                        self.describe(ops, i, action),
                        self.text(v)
                    ),
                    involved,
                ),
            };
        }

        // The operations the search places: ok ones (required) and indeterminate writes whose
        // value is observed (optional).
        let placed: Vec<(usize, Action)> = self
            .ops
            .iter()
            .copied()
            .filter(|&(i, action)| match (ops[i].outcome, action) {
                (Outcome::Ok, _) => true,
                (_, Action::Write(v) | Action::Cas(_, v)) => observed.contains(&v),
                _ => false,
            })
            .collect();
        // An indeterminate write whose value an ok op needed is not optional: values are unique,
        // so it alone could have put the value there, and it must have taken effect before the
        // first such op completed. Giving it that deadline keeps it from lingering at the front
        // of the search list, where every subset of such writes would be tried.
        let mut producers: HashMap<ValueId, usize> = HashMap::new();
        for &(_, action) in &placed {
            if let Action::Write(v) | Action::Cas(_, v) = action {
                *producers.entry(v).or_insert(0) += 1;
            }
        }
        let mut needed_by: HashMap<ValueId, u64> = HashMap::new();
        for &(i, action) in &placed {
            if let (Outcome::Ok, Action::Read(v) | Action::Cas(v, _)) = (ops[i].outcome, action) {
                let r = needed_by.entry(v).or_insert(u64::MAX);
                *r = (*r).min(ops[i].return_position());
            }
        }
        let deadlines: Vec<Option<u64>> = placed
            .iter()
            .map(|&(i, action)| match (ops[i].outcome, action) {
                (Outcome::Ok, _) => Some(ops[i].return_position()),
                (_, Action::Write(v) | Action::Cas(_, v))
                    if v != 0 && producers.get(&v) == Some(&1) =>
                {
                    needed_by.get(&v).map(|&r| r.max(ops[i].invoke_index))
                }
                _ => None,
            })
            .collect();
        // Values nothing observes are all alike to the search: one state, `dead`.
        let dead = self.texts.len() as ValueId;
        let unobserved = |v: ValueId| if v != 0 && !observed.contains(&v) { dead } else { v };
        let actions: Vec<Action> = placed
            .iter()
            .map(|&(_, action)| match action {
                Action::Write(v) => Action::Write(unobserved(v)),
                Action::Cas(e, n) => Action::Cas(e, unobserved(n)),
                read => read,
            })
            .collect();
        let absorbable: Vec<bool> = placed
            .iter()
            .zip(&actions)
            .map(|(&(i, _), a)| ops[i].outcome == Outcome::Ok && *a == Action::Write(dead))
            .collect();
        // Once the register leaves a value only one op could have produced (or the initial
        // null, if nothing writes null), the value never comes back.
        let mut final_when_left = vec![true; dead as usize + 1];
        for (v, n) in &producers {
            if *n > 1 || *v == 0 {
                final_when_left[*v as usize] = false;
            }
        }
        let mut search = Search::new(ops, &placed, &deadlines);
        search.needs = placed
            .iter()
            .zip(&actions)
            .map(|(&(i, _), a)| match (ops[i].outcome, a) {
                (Outcome::Ok, Action::Read(v) | Action::Cas(v, _)) => Some(*v),
                _ => None,
            })
            .collect();
        search.waiting = vec![0; dead as usize + 1];
        for v in search.needs.iter().flatten() {
            search.waiting[*v as usize] += 1;
        }
        search.final_when_left = final_when_left;
        search.actions = actions;
        search.absorbable = absorbable;
        match search.run(budget) {
            SearchEnd::Linearized => KeyVerdict::Linearizable { states: search.states },
            SearchEnd::Budget => KeyVerdict::GaveUp { states: search.states },
            SearchEnd::Stuck => KeyVerdict::Violation {
                states: search.states,
                anomaly: self.explain(ops, key, &placed, &search),
            },
        }
    }

    /// The anomaly for a key the search could not linearize.
    fn explain(
        &self,
        ops: &[Op],
        key: &str,
        placed: &[(usize, Action)],
        search: &Search,
    ) -> Anomaly {
        let Some(stuck) = search.furthest else {
            return Anomaly::new("nonlinearizable", format!("key {key}: not linearizable"), vec![]);
        };
        let (si, saction) = placed[stuck.op];
        let s = &ops[si];
        let (call, ret) = (s.invoke_index, s.return_position());
        let mut involved = vec![s.invoke_index];
        // Concurrent with the stuck op: began before it ended, ended after it began.
        let mut concurrent: Vec<(usize, Action)> = placed
            .iter()
            .copied()
            .filter(|&(i, _)| {
                i != si && ops[i].invoke_index < ret && ops[i].return_position() > call
            })
            .collect();
        concurrent.sort_by_key(|&(i, _)| ops[i].invoke_index.abs_diff(call));
        concurrent.truncate(8);
        concurrent.sort_by_key(|&(i, _)| ops[i].invoke_index);
        // The last write that was acknowledged before the stuck op began.
        let before = placed
            .iter()
            .copied()
            .filter(|&(i, a)| {
                ops[i].outcome == Outcome::Ok
                    && matches!(a, Action::Write(_) | Action::Cas(..))
                    && ops[i].return_position() < call
            })
            .max_by_key(|&(i, _)| ops[i].return_position());
        let mut text = format!(
            "key {key}: no linearization; the search got furthest with {} ops linearized, \
             where {} could not take effect: the register held {}",
            stuck.depth,
            self.describe(ops, si, saction),
            if stuck.state as usize >= self.texts.len() {
                "a value no op observed"
            } else {
                self.text(stuck.state)
            },
        );
        // A write that could not go because ops after it still need the value it would replace.
        if matches!(saction, Action::Write(_) | Action::Cas(..)) {
            let needing: Vec<(usize, Action)> = placed
                .iter()
                .copied()
                .filter(|&(i, a)| {
                    ops[i].outcome == Outcome::Ok
                        && matches!(a, Action::Read(v) | Action::Cas(v, _) if v == stuck.state)
                        && ops[i].return_position() > call
                        && i != si
                })
                .take(4)
                .collect();
            if !needing.is_empty() {
                let list: Vec<String> =
                    needing.iter().map(|&(i, a)| self.describe(ops, i, a)).collect();
                text += &format!(
                    ", which {} still needed (written values are unique: once replaced, it cannot \
                     come back)",
                    list.join(", ")
                );
                involved.extend(needing.iter().map(|&(i, _)| ops[i].invoke_index));
            }
        }
        if let Some((w, a)) = before {
            involved.push(ops[w].invoke_index);
            text += &format!("; {} was acknowledged before it began", self.describe(ops, w, a));
        }
        if concurrent.is_empty() {
            text += "; no op was concurrent with it";
        } else {
            let list: Vec<String> =
                concurrent.iter().map(|&(i, a)| self.describe(ops, i, a)).collect();
            text += &format!("; concurrent with it: {}", list.join(", "));
            involved.extend(concurrent.iter().map(|&(i, _)| ops[i].invoke_index));
        }
        Anomaly::new("nonlinearizable", text, involved)
    }
}

const NIL: usize = usize::MAX;
const HEAD: usize = 0;

/// A call or return entry of the search list.
#[derive(Clone, Copy)]
struct Entry {
    prev: usize,
    next: usize,
    /// Index into the placed ops.
    op: usize,
    /// For a call: its return entry (or `NIL` for optional ops). For a return: `NIL`.
    matching: usize,
    is_call: bool,
}

/// Where the search got furthest before it was stuck.
#[derive(Clone, Copy)]
struct Stuck {
    depth: usize,
    op: usize,
    state: ValueId,
}

enum SearchEnd {
    Linearized,
    Stuck,
    Budget,
}

/// The Wing–Gong–Lowe search over one key (see the module docs).
struct Search {
    entries: Vec<Entry>,
    actions: Vec<Action>,
    required: Vec<bool>,
    /// Ok plain writes of a value nothing observes: linearized along with the next plain write.
    absorbable: Vec<bool>,
    /// The value each ok read (or ok cas) needs the register to hold.
    needs: Vec<Option<ValueId>>,
    /// Per value: how many not yet linearized ops need it.
    waiting: Vec<u32>,
    /// Per value: whether it can never come back once the register holds something else.
    final_when_left: Vec<bool>,
    zobrist: Vec<u128>,
    states: u64,
    furthest: Option<Stuck>,
}

/// A hasher for values that are already random (the Zobrist hashes).
#[derive(Default)]
struct FoldHasher(u64);

impl Hasher for FoldHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0 ^ u64::from(*b)).wrapping_mul(0x100_0000_01b3);
        }
    }
    fn write_u128(&mut self, v: u128) {
        self.0 = (v as u64) ^ ((v >> 64) as u64);
    }
}

fn splitmix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

fn random_word(seed: u64) -> u128 {
    (u128::from(splitmix(seed)) << 64) | u128::from(splitmix(seed ^ 0x5555_5555_5555_5555))
}

/// The Zobrist word of register value `v`.
fn state_word(v: ValueId) -> u128 {
    random_word(0xdead_beef_0000_0000 | u64::from(v))
}

impl Search {
    /// The search over `placed` ops; `deadlines[k]` is the position by which op `k` must have
    /// taken effect (its return entry), `None` for an op that may take effect at any time after
    /// its invoke or never.
    fn new(ops: &[Op], placed: &[(usize, Action)], deadlines: &[Option<u64>]) -> Search {
        // (position in history, is return, placed op); a return tied with its own call (a
        // clamped deadline) sorts right after it.
        let mut points: Vec<(u64, bool, usize)> = Vec::with_capacity(placed.len() * 2);
        let mut required = Vec::with_capacity(placed.len());
        for (k, &(i, _)) in placed.iter().enumerate() {
            points.push((ops[i].invoke_index, false, k));
            if let Some(d) = deadlines[k] {
                points.push((d, true, k));
            }
            required.push(deadlines[k].is_some());
        }
        points.sort_unstable();
        let mut entries =
            vec![Entry { prev: NIL, next: NIL, op: NIL, matching: NIL, is_call: false }];
        let mut call_entry = vec![NIL; placed.len()];
        for &(_, is_return, k) in &points {
            let e = entries.len();
            let prev = e - 1;
            entries[prev].next = e;
            entries.push(Entry { prev, next: NIL, op: k, matching: NIL, is_call: !is_return });
            if is_return {
                entries[call_entry[k]].matching = e;
            } else {
                call_entry[k] = e;
            }
        }
        let zobrist = (0..placed.len()).map(|k| random_word(k as u64)).collect();
        Search {
            entries,
            actions: placed.iter().map(|&(_, a)| a).collect(),
            absorbable: vec![false; placed.len()],
            needs: vec![None; placed.len()],
            waiting: Vec::new(),
            final_when_left: Vec::new(),
            required,
            zobrist,
            states: 0,
            furthest: None,
        }
    }

    fn required_total(&self) -> usize {
        self.required.iter().filter(|r| **r).count()
    }

    fn unlink(&mut self, e: usize) {
        let Entry { prev, next, .. } = self.entries[e];
        self.entries[prev].next = next;
        if next != NIL {
            self.entries[next].prev = prev;
        }
    }

    fn relink(&mut self, e: usize) {
        let Entry { prev, next, .. } = self.entries[e];
        self.entries[prev].next = e;
        if next != NIL {
            self.entries[next].prev = e;
        }
    }

    /// Takes a call entry and its return out of the list.
    fn lift(&mut self, call: usize) {
        self.unlink(call);
        let m = self.entries[call].matching;
        if m != NIL {
            self.unlink(m);
        }
    }

    /// Puts back what [`Search::lift`] took out (in reverse).
    fn unlift(&mut self, call: usize) {
        let m = self.entries[call].matching;
        if m != NIL {
            self.relink(m);
        }
        self.relink(call);
    }

    fn run(&mut self, budget: u64) -> SearchEnd {
        let mut remaining = self.required_total();
        let mut seen: HashSet<u128, BuildHasherDefault<FoldHasher>> = HashSet::default();
        // (call entry, register value before it, where its absorbed writes start in `absorbed`)
        let mut stack: Vec<(usize, ValueId, usize)> = Vec::new();
        let mut absorbed: Vec<usize> = Vec::new();
        let mut candidates: Vec<usize> = Vec::new();
        let mut state: ValueId = 0;
        let mut set_hash: u128 = 0;
        seen.insert(state_word(state));
        let mut entry = self.entries[HEAD].next;
        loop {
            if remaining == 0 {
                return SearchEnd::Linearized;
            }
            let mut backtrack = entry == NIL;
            if !backtrack {
                let current = entry;
                let Entry { op, is_call, next, .. } = self.entries[current];
                if is_call {
                    let action = self.actions[op];
                    entry = next;
                    let after = action.step(state).filter(|&after| {
                        // Leaving a value for good while ops still need it cannot succeed.
                        after == state
                            || !self.final_when_left[state as usize]
                            || self.waiting[state as usize]
                                <= u32::from(self.needs[op] == Some(state))
                    });
                    if let Some(after) = after {
                        let mut h = set_hash ^ self.zobrist[op];
                        // A plain write also takes every unobserved write that could go right
                        // before it (see the module docs).
                        candidates.clear();
                        if matches!(action, Action::Write(_)) {
                            let mut e = self.entries[HEAD].next;
                            while e != NIL && self.entries[e].is_call {
                                let k = self.entries[e].op;
                                if e != current && self.absorbable[k] {
                                    candidates.push(e);
                                    h ^= self.zobrist[k];
                                }
                                e = self.entries[e].next;
                            }
                        }
                        if seen.insert(h ^ state_word(after)) {
                            self.states += 1;
                            if self.states > budget {
                                return SearchEnd::Budget;
                            }
                            stack.push((current, state, absorbed.len()));
                            self.lift(current);
                            for &c in &candidates {
                                self.lift(c);
                                absorbed.push(c);
                                remaining -= usize::from(self.required[self.entries[c].op]);
                            }
                            state = after;
                            set_hash = h;
                            remaining -= usize::from(self.required[op]);
                            if let Some(v) = self.needs[op] {
                                self.waiting[v as usize] -= 1;
                            }
                            entry = self.entries[HEAD].next;
                        } else if matches!(action, Action::Read(_)) {
                            // That configuration failed before; a read is never worth postponing.
                            backtrack = true;
                        }
                    }
                } else {
                    let depth = stack.len() + absorbed.len();
                    if self.furthest.is_none_or(|f| depth > f.depth) {
                        self.furthest = Some(Stuck { depth, op, state });
                    }
                    backtrack = true;
                }
            }
            if backtrack {
                loop {
                    let Some((call, before, start)) = stack.pop() else { return SearchEnd::Stuck };
                    while absorbed.len() > start {
                        let c = absorbed.pop().unwrap_or(NIL);
                        self.unlift(c);
                        let k = self.entries[c].op;
                        set_hash ^= self.zobrist[k];
                        remaining += usize::from(self.required[k]);
                    }
                    self.unlift(call);
                    let op = self.entries[call].op;
                    state = before;
                    set_hash ^= self.zobrist[op];
                    remaining += usize::from(self.required[op]);
                    if let Some(v) = self.needs[op] {
                        self.waiting[v as usize] += 1;
                    }
                    entry = self.entries[call].next;
                    if !matches!(self.actions[op], Action::Read(_)) {
                        break;
                    }
                }
            }
        }
    }
}
