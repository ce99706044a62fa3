//! Valid histories from sequential models: a simulated store that applies every operation
//! atomically at one instant between its invoke and its completion (its linearization point),
//! and hands out timestamps from one counter at that instant, so the histories are linearizable,
//! strictly serializable and timestamp-consistent by construction. Processes interleave at
//! random, so operations overlap in random windows; some crash (info) before or after taking
//! effect, some never complete.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};

use boundkv_tests::check::{Event, EventType};

/// What a model did with an operation at its linearization point.
pub(crate) struct Applied {
    /// Completed ok (else fail).
    pub(crate) ok: bool,
    /// The completion's value.
    pub(crate) value: Value,
    pub(crate) ts: Option<u64>,
    pub(crate) read_ts: Option<u64>,
}

/// A sequential store model.
pub(crate) trait Model {
    /// A new operation for process slot `slot`, if the slot should start one now.
    fn invoke(&mut self, rng: &mut StdRng, slot: usize) -> Option<(&'static str, Value)>;
    /// Applies the operation atomically; `clock` is the timestamp counter.
    fn apply(&mut self, rng: &mut StdRng, f: &str, value: &Value, clock: &mut u64) -> Applied;
}

/// How to interleave.
#[derive(Clone, Copy)]
pub(crate) struct SimOptions {
    /// Operations to invoke.
    pub(crate) ops: usize,
    /// Concurrent process slots.
    pub(crate) slots: usize,
    /// Probability that a process crashes (info) at a step.
    pub(crate) crash: f64,
}

enum Phase {
    Idle,
    Invoked { f: &'static str, value: Value },
    Applied { f: &'static str, applied: Applied },
}

/// Runs `model` under random interleavings; the events of the history.
pub(crate) fn simulate(model: &mut impl Model, seed: u64, opts: SimOptions) -> Vec<Event> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut events: Vec<Event> = Vec::new();
    let mut time = 0u64;
    let mut clock = 1_000u64;
    let mut next_process = opts.slots as u64;
    let mut processes: Vec<u64> = (0..opts.slots as u64).collect();
    let mut phases: Vec<Phase> = (0..opts.slots).map(|_| Phase::Idle).collect();
    let mut invoked = 0usize;
    let mut emit =
        |events: &mut Vec<Event>, p: u64, kind: EventType, f: &str, value: Value, ts, read_ts| {
            time += 1 + (events.len() as u64 % 7);
            let mut e = Event::new(events.len() as u64, time, p, kind, f, value);
            e.ts = ts;
            e.read_ts = read_ts;
            e.node = Some(format!("n{}", 1 + p % 3));
            events.push(e);
        };
    loop {
        let busy = phases.iter().filter(|p| !matches!(p, Phase::Idle)).count();
        if invoked >= opts.ops && busy == 0 {
            break;
        }
        // At the very end, leave the remaining operations open now and then.
        if invoked >= opts.ops && rng.random_bool(0.002) {
            break;
        }
        let slot = rng.random_range(0..opts.slots);
        let p = processes[slot];
        let phase = std::mem::replace(&mut phases[slot], Phase::Idle);
        phases[slot] = match phase {
            Phase::Idle => {
                if invoked >= opts.ops {
                    Phase::Idle
                } else if let Some((f, value)) = model.invoke(&mut rng, slot) {
                    invoked += 1;
                    emit(&mut events, p, EventType::Invoke, f, value.clone(), None, None);
                    Phase::Invoked { f, value }
                } else {
                    Phase::Idle
                }
            }
            Phase::Invoked { f, value } => {
                if rng.random_bool(opts.crash) {
                    // Crashed before taking effect.
                    emit(&mut events, p, EventType::Info, f, value, None, None);
                    processes[slot] = next_process;
                    next_process += 1;
                    Phase::Idle
                } else {
                    let applied = model.apply(&mut rng, f, &value, &mut clock);
                    Phase::Applied { f, applied }
                }
            }
            Phase::Applied { f, applied } => {
                if rng.random_bool(opts.crash) {
                    // Took effect, but the client never heard.
                    let value = if applied.ok { applied.value } else { Value::Null };
                    emit(&mut events, p, EventType::Info, f, value, None, None);
                    processes[slot] = next_process;
                    next_process += 1;
                } else {
                    let kind = if applied.ok { EventType::Ok } else { EventType::Fail };
                    let (ts, read_ts) =
                        if applied.ok { (applied.ts, applied.read_ts) } else { (None, None) };
                    emit(&mut events, p, kind, f, applied.value, ts, read_ts);
                }
                Phase::Idle
            }
        };
    }
    events
}

/// Independent read/write/cas registers with unique written values.
pub(crate) struct Registers {
    keys: usize,
    values: Vec<Option<i64>>,
    history: Vec<Vec<i64>>,
    next: i64,
}

impl Registers {
    pub(crate) fn new(keys: usize) -> Registers {
        Registers { keys, values: vec![None; keys], history: vec![Vec::new(); keys], next: 1 }
    }
}

impl Model for Registers {
    fn invoke(&mut self, rng: &mut StdRng, _slot: usize) -> Option<(&'static str, Value)> {
        let k = rng.random_range(0..self.keys);
        let key = if k % 2 == 0 { json!(k) } else { json!(format!("k{k}")) };
        let roll = rng.random_range(0..10);
        Some(if roll < 4 {
            ("read", json!([key, null]))
        } else if roll < 8 {
            self.next += 1;
            ("write", json!([key, self.next]))
        } else {
            let h = &self.history[k];
            let expected = if h.is_empty() || rng.random_bool(0.3) {
                json!(null)
            } else if rng.random_bool(0.6) {
                json!(self.values[k])
            } else {
                json!(h[rng.random_range(0..h.len())])
            };
            self.next += 1;
            ("cas", json!([key, [expected, self.next]]))
        })
    }

    fn apply(&mut self, rng: &mut StdRng, f: &str, value: &Value, clock: &mut u64) -> Applied {
        let key = value[0].clone();
        let k = match &key {
            Value::String(s) => s[1..].parse::<usize>().unwrap_or(0),
            v => v.as_u64().unwrap_or(0) as usize,
        };
        match f {
            "read" => Applied {
                ok: true,
                value: json!([key, self.values[k]]),
                ts: Some(*clock),
                read_ts: None,
            },
            "write" => {
                let v = value[1].as_i64();
                self.values[k] = v;
                self.history[k].extend(v);
                *clock += rng.random_range(1..10);
                Applied { ok: true, value: value.clone(), ts: Some(*clock), read_ts: None }
            }
            _ => {
                let (expected, new) = (value[1][0].as_i64(), value[1][1].as_i64());
                if expected != self.values[k] {
                    return Applied { ok: false, value: value.clone(), ts: None, read_ts: None };
                }
                self.values[k] = new;
                self.history[k].extend(new);
                *clock += rng.random_range(1..10);
                Applied { ok: true, value: value.clone(), ts: Some(*clock), read_ts: None }
            }
        }
    }
}

/// List-append over a sliding window of keys (so lists stay short), with aborts.
pub(crate) struct Lists {
    lists: Vec<Vec<i64>>,
    txns: usize,
    window: usize,
    next: i64,
}

impl Lists {
    pub(crate) fn new() -> Lists {
        Lists { lists: Vec::new(), txns: 0, window: 5, next: 1 }
    }
}

impl Model for Lists {
    fn invoke(&mut self, rng: &mut StdRng, _slot: usize) -> Option<(&'static str, Value)> {
        self.txns += 1;
        let base = self.txns / 60;
        let n = rng.random_range(1..=4);
        let read_only = rng.random_bool(0.25);
        let mut micro = Vec::new();
        for _ in 0..n {
            let k = base + rng.random_range(0..self.window);
            if read_only || rng.random_bool(0.5) {
                micro.push(json!(["r", k, null]));
            } else {
                self.next += 1;
                micro.push(json!(["append", k, self.next]));
            }
        }
        Some(("txn", Value::Array(micro)))
    }

    fn apply(&mut self, rng: &mut StdRng, _f: &str, value: &Value, clock: &mut u64) -> Applied {
        let micro = value.as_array().cloned().unwrap_or_default();
        let writes = micro.iter().any(|m| m[0] == "append");
        if writes && rng.random_bool(0.05) {
            return Applied { ok: false, value: value.clone(), ts: None, read_ts: None };
        }
        let mut out = Vec::new();
        for m in micro {
            let k = m[1].as_u64().unwrap_or(0) as usize;
            if self.lists.len() <= k {
                self.lists.resize(k + 1, Vec::new());
            }
            if m[0] == "append" {
                self.lists[k].extend(m[2].as_i64());
                out.push(m);
            } else {
                out.push(json!(["r", k, self.lists[k]]));
            }
        }
        let read_ts = *clock;
        if writes {
            *clock += rng.random_range(1..10);
            Applied { ok: true, value: Value::Array(out), ts: Some(*clock), read_ts: Some(read_ts) }
        } else {
            Applied { ok: true, value: Value::Array(out), ts: Some(read_ts), read_ts: None }
        }
    }
}

/// Bank transfers and snapshot reads.
pub(crate) struct Bank {
    pub(crate) balances: Vec<i64>,
}

impl Model for Bank {
    fn invoke(&mut self, rng: &mut StdRng, _slot: usize) -> Option<(&'static str, Value)> {
        let n = self.balances.len();
        Some(if rng.random_bool(0.4) {
            ("read", Value::Null)
        } else {
            let from = rng.random_range(0..n);
            let to = (from + rng.random_range(1..n)) % n;
            ("transfer", json!({"from": from, "to": to, "amount": rng.random_range(1..=5)}))
        })
    }

    fn apply(&mut self, rng: &mut StdRng, f: &str, value: &Value, clock: &mut u64) -> Applied {
        if f == "read" {
            let map: serde_json::Map<String, Value> =
                self.balances.iter().enumerate().map(|(a, b)| (a.to_string(), json!(b))).collect();
            return Applied {
                ok: true,
                value: Value::Object(map),
                ts: Some(*clock),
                read_ts: None,
            };
        }
        let (from, to) = (
            value["from"].as_u64().unwrap_or(0) as usize,
            value["to"].as_u64().unwrap_or(0) as usize,
        );
        let amount = value["amount"].as_i64().unwrap_or(0);
        if self.balances[from] < amount {
            return Applied { ok: false, value: value.clone(), ts: None, read_ts: None };
        }
        self.balances[from] -= amount;
        self.balances[to] += amount;
        *clock += rng.random_range(1..10);
        Applied { ok: true, value: value.clone(), ts: Some(*clock), read_ts: None }
    }
}

/// The causal probe: slot `k < keys` is key `k`'s only writer (1, 2, 3, ...); the rest read.
pub(crate) struct Causal {
    keys: usize,
    values: Vec<Option<i64>>,
    next: Vec<i64>,
}

impl Causal {
    pub(crate) fn new(keys: usize) -> Causal {
        Causal { keys, values: vec![None; keys], next: vec![0; keys] }
    }
}

impl Model for Causal {
    fn invoke(&mut self, rng: &mut StdRng, slot: usize) -> Option<(&'static str, Value)> {
        if slot < self.keys {
            self.next[slot] += 1;
            Some(("write", json!([slot, self.next[slot]])))
        } else {
            Some(("read", json!([rng.random_range(0..self.keys), null])))
        }
    }

    fn apply(&mut self, rng: &mut StdRng, f: &str, value: &Value, clock: &mut u64) -> Applied {
        let k = value[0].as_u64().unwrap_or(0) as usize;
        if f == "read" {
            return Applied {
                ok: true,
                value: json!([k, self.values[k]]),
                ts: Some(*clock),
                read_ts: None,
            };
        }
        self.values[k] = value[1].as_i64();
        *clock += rng.random_range(1..10);
        Applied { ok: true, value: value.clone(), ts: Some(*clock), read_ts: None }
    }
}
